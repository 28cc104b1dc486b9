"""Pictures of schedules (``schedgen plot``): matplotlib is imported lazily (extra ``plot``).

* ``mmd`` stores: the per-batch MMD²(P∪B, Q\\B) of the schedule, beside that of a
  seeded random order of the same data under the same kernel (the baseline needs
  the dataset; ``baseline=False`` skips it).
* ``learn2mix`` stores: the class proportions α per class over epochs, and the
  class-wise losses beside them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ParameterError, StoreError
from .store import Schedule, read_schedule

__all__ = ["PlotResult", "plot_schedule", "random_baseline_mmd2", "BASELINE_STREAM"]

#: Stream tag of the random baseline's permutation: default_rng([seed, BASELINE_STREAM]).
BASELINE_STREAM = 0x706C6F74  # "plot"


@dataclass(frozen=True)
class PlotResult:
    path: Path
    method: str
    series: dict  # name -> summary numbers drawn (e.g. mean MMD²)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParameterError("plotting needs matplotlib; install it with pip install 'schedgen[plot]'") from None
    return plt


def random_baseline_mmd2(schedule: Schedule, *, data_dir=None, seed: int = 0) -> np.ndarray:
    """Per-batch MMD² of a seeded random order cut like ``schedule``, same data and kernel.

    Loads the schedule's dataset (its fingerprint must match), rebuilds its features
    and kernel from the stored ``params``.
    """
    from .data import load_dataset
    from .features import FeatureSpec, prepare_features
    from .kernels import kernel_from_params, pinned_blas, row_sums
    from .evaluate import prefix_mmd2

    ds_attr = schedule.dataset
    ds = load_dataset(ds_attr["name"], split=ds_attr.get("split", "train"), data_dir=data_dir)
    if ds.fingerprint != ds_attr.get("fingerprint"):
        raise StoreError(
            f"the dataset {ds.name} ({ds.split}) found here is not the one the schedule was built on "
            "(fingerprint mismatch); pass --no-baseline to plot the schedule alone"
        )
    p = schedule.params
    spec = FeatureSpec(pca=p.get("pca", 0), standardize=bool(p.get("standardize", False)), seed=int(p.get("seed", 0)))
    with pinned_blas():  # the features the build used, bit for bit
        X = prepare_features(ds, spec)
    kernel = kernel_from_params({k: p[k] for k in ("kernel", "bandwidth", "degree", "coef0", "scale") if k in p})
    s_tot, _ = row_sums(kernel, X)
    order = np.random.default_rng([seed, BASELINE_STREAM]).permutation(ds.n_samples).astype(np.int64)
    e0 = schedule.epoch_batches(0)
    offsets = schedule.batch_offsets[e0.start : e0.stop + 1] - schedule.batch_offsets[e0.start]
    return prefix_mmd2(X, kernel, order, offsets, s_tot)


def plot_schedule(
    path, out, *, data_dir=None, baseline: bool = True, seed: int | str = 0, overwrite: bool = True
) -> PlotResult:
    """Draw ``path``'s schedule to the PNG ``out`` (written atomically). ``seed`` (of the
    random baseline) may be text, as from the CLI."""
    from .build import parse_int

    seed = parse_int("seed", seed, minimum=0)
    s = read_schedule(path)
    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; expected a new path")
    plt = _pyplot()
    series: dict = {}
    if s.method == "mmd":
        if "batch_mmd2" not in s.batch_arrays:
            raise StoreError(f"{path}: an mmd store without 'batch_mmd2'; nothing to plot")
        fig, ax = plt.subplots(figsize=(7, 4))
        y = s.batch_arrays["batch_mmd2"]
        x = np.arange(1, len(y) + 1)
        label = f"schedule ({s.params.get('solver', '?')})"
        ax.semilogy(x, np.where(y > 0, y, np.nan), label=label, lw=1.5)
        series["schedule_mean_mmd2"] = float(np.nanmean(y))
        if baseline:
            r = random_baseline_mmd2(s, data_dir=data_dir, seed=seed)
            ax.semilogy(x, np.where(r > 0, r, np.nan), label=f"random order (seed {seed})", lw=1.0, alpha=0.8)
            series["random_mean_mmd2"] = float(np.nanmean(r))
        ax.set_xlabel("batch")
        ax.set_ylabel("MMD²(scheduled, not yet scheduled)")
        ds = s.dataset
        ax.set_title(f"{ds.get('name')} ({ds.get('split')}), k={s.k}, kernel {s.params.get('kernel')}")
        ax.legend()
    elif s.method == "learn2mix":
        if "class_proportions" not in s.epoch_arrays:
            raise StoreError(f"{path}: a learn2mix store without 'class_proportions'; nothing to plot")
        alpha = s.epoch_arrays["class_proportions"]
        losses = s.epoch_arrays.get("class_losses")
        ncols = 2 if losses is not None else 1
        fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
        e = np.arange(alpha.shape[0])
        cmap = plt.get_cmap("tab10" if alpha.shape[1] <= 10 else "tab20")
        for c in range(alpha.shape[1]):
            axes[0, 0].plot(e, alpha[:, c], color=cmap(c % cmap.N), label=str(c))
            if losses is not None:
                axes[0, 1].plot(e, losses[:, c], color=cmap(c % cmap.N))
        axes[0, 0].set_xlabel("epoch")
        axes[0, 0].set_ylabel("class proportion α")
        axes[0, 0].legend(title="class", fontsize="small", ncol=2)
        if losses is not None:
            axes[0, 1].set_xlabel("epoch")
            axes[0, 1].set_ylabel("class-wise mean loss (after the epoch)")
        series["final_alpha"] = alpha[-1].tolist()
    else:
        raise ParameterError(f"plot draws mmd and learn2mix schedules, got a {s.method!r} schedule")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, out)
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return PlotResult(path=out, method=s.method, series=series)
