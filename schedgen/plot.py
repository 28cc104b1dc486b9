"""Pictures of schedules (``schedgen plot``): matplotlib is imported lazily (extra ``plot``).

* ``mmd`` stores: the per-batch MMD²(P∪B, Q\\B) of the schedule, beside that of a
  seeded random order of the same data under the same kernel (the baseline needs
  the dataset; ``baseline=False`` skips it).
* ``learn2mix`` stores: the class proportions α per class over epochs, and the
  class-wise losses beside them.

The file format follows the output's extension (PNG, PDF or SVG). MMD² is drawn on
a log axis, or on a symlog axis when some values are <= 0 (float rounding near 0),
so no batch drops off the curve; a note in the title says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._proc import atomic_write
from .errors import ParameterError, StoreError
from .rng import MAX_WORD, STREAMS, rng
from .store import Schedule, read_schedule

__all__ = [
    "PlotResult", "plot_schedule", "draw_schedule", "plot_format", "order_mmd2", "random_baseline_mmd2",
    "BASELINE_STREAM", "PLOT_FORMATS",
]

#: Output formats, chosen by the output's extension.
PLOT_FORMATS = ("png", "pdf", "svg")

#: Tag of the random baseline's stream ``rng(seed, "plot")``: ``default_rng([seed, BASELINE_STREAM])``.
BASELINE_STREAM = STREAMS["plot"][0]  # 0x706C6F74, "plot"


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


def order_mmd2(schedule: Schedule, order: np.ndarray | None = None, *, data_dir=None) -> np.ndarray:
    """Per-batch MMD² of ``order`` cut like ``schedule``'s first epoch, same data and kernel.

    ``order`` : a permutation of the dataset's samples; default: the schedule's own
    first epoch, which then scores as its recorded ``batch_mmd2`` (to the float32
    rounding of the kernel columns its solver reused, see ``schedgen.evaluate``).
    Loads the schedule's dataset (its fingerprint must match), rebuilds its features,
    kernel and row sums from the stored ``params`` as the build did, and scores with
    :func:`schedgen.evaluate.prefix_mmd2`, the selection loop's formula.
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
    e0 = schedule.epoch_batches(0)
    start, stop = int(schedule.batch_offsets[e0.start]), int(schedule.batch_offsets[e0.stop])
    offsets = schedule.batch_offsets[e0.start : e0.stop + 1] - start
    if order is None:
        order = schedule.indices[start:stop]
    return prefix_mmd2(X, kernel, np.asarray(order, dtype=np.int64), offsets, s_tot)


def random_baseline_mmd2(schedule: Schedule, *, data_dir=None, seed: int = 0) -> np.ndarray:
    """Per-batch MMD² of a seeded random order (``rng(seed, "plot")``, :mod:`schedgen.rng`)
    cut like ``schedule``, same data and kernel, scored as the selection loop scores
    the schedule (:func:`order_mmd2`)."""
    order = rng(seed, "plot").permutation(schedule.n_samples).astype(np.int64)
    return order_mmd2(schedule, order, data_dir=data_dir)


def plot_format(out) -> str:
    """The file format of ``out``, from its extension (one of :data:`PLOT_FORMATS`)."""
    suffix = Path(out).suffix
    fmt = suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        got = f"'{suffix}'" if suffix else "no extension"
        exts = [f".{f}" for f in PLOT_FORMATS]
        raise ParameterError(
            f"plot output {out} must end in {', '.join(exts[:-1])} or {exts[-1]} "
            f"(the format follows the extension), got {got}"
        )
    return fmt


def _finite_mean(a: np.ndarray) -> float | None:
    """Mean of the finite values, or None when there is none (e.g. k = N: one batch, NaN)."""
    f = np.asarray(a, dtype=np.float64)
    f = f[np.isfinite(f)]
    return float(f.mean()) if f.size else None


def _markers(n_points: int) -> dict:
    """Markers on short series, so a one-point curve is still visible."""
    return {"marker": "o", "markersize": 4} if n_points <= 30 else {}


def _draw_mmd(plt, s: Schedule, *, data_dir, baseline: bool, seed: int):
    series: dict = {}
    y = np.asarray(s.batch_arrays["batch_mmd2"], dtype=np.float64)
    curves = [(f"schedule ({s.params.get('solver', '?')})", y, 1.5)]
    series["schedule_mean_mmd2"] = _finite_mean(y)
    if baseline:
        r = np.asarray(random_baseline_mmd2(s, data_dir=data_dir, seed=seed), dtype=np.float64)
        curves.append((f"random order (seed {seed})", r, 1.0))
        series["random_mean_mmd2"] = _finite_mean(r)
    fig, ax = plt.subplots(figsize=(7, 4.6), layout="constrained")
    x = np.arange(1, len(y) + 1)
    values = np.concatenate([c[1] for c in curves])
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    note = None
    if values.size == 0:
        note = (
            "nothing to draw: MMD² is undefined (NaN) after the last batch,\nand here (k = N) the only batch is the last"
            if len(y) == 1 else "nothing to draw: every batch's MMD² is undefined (NaN)"
        )
        ax.set_yticks([])
    elif positive.size == values.size:
        ax.set_yscale("log")
    elif positive.size:
        # MMD² <= 0 (float rounding near 0) cannot sit on a log axis: symlog, linear
        # below the smallest positive value, so those batches stay on the curve.
        ax.set_yscale("symlog", linthresh=float(positive.min()))
        note = (
            f"{values.size - positive.size} value(s) <= 0 (float rounding near 0): "
            f"symlog axis, linear within ±{positive.min():.2g}"
        )
    else:
        note = "every MMD² <= 0 (float rounding near 0): linear axis"
    for label, v, lw in curves:
        ax.plot(x, v, label=label, lw=lw, alpha=1.0 if lw > 1 else 0.8, **_markers(len(v)))
    ax.set_xlabel("batch")
    ax.set_ylabel("MMD²(scheduled, not yet scheduled)")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlim(0.5, len(y) + 0.5)
    ds = s.dataset
    title = f"mmd on {ds.get('name')} ({ds.get('split')}), k={s.k}, kernel {s.params.get('kernel')}"
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize="medium")
    fig.legend(loc="outside lower center", ncol=len(curves), fontsize="small")
    return fig, series


def _draw_learn2mix(plt, s: Schedule):
    alpha = np.asarray(s.epoch_arrays["class_proportions"], dtype=np.float64)
    losses = s.epoch_arrays.get("class_losses")
    n_epochs, n_classes = alpha.shape
    ncols = 2 if losses is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.8), squeeze=False, layout="constrained")
    e = np.arange(n_epochs)
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    mk = _markers(n_epochs)
    for c in range(n_classes):
        axes[0, 0].plot(e, alpha[:, c], color=cmap(c % cmap.N), label=str(c), **mk)
        if losses is not None:
            axes[0, 1].plot(e, losses[:, c], color=cmap(c % cmap.N), **mk)
    axes[0, 0].set_ylabel("class proportion α (drawn with)")
    if losses is not None:
        axes[0, 1].set_ylabel("class-wise mean loss (after the epoch)")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_xlim(-0.5, n_epochs - 0.5)
    ds, p = s.dataset, s.params
    epochs = "1 epoch (one point per class)" if n_epochs == 1 else f"{n_epochs} epochs"
    rate = f", γ={p['mixing_rate']}" if "mixing_rate" in p else ""
    online = ", online record" if p.get("online") else ""
    fig.suptitle(f"learn2mix on {ds.get('name')} ({ds.get('split')}), k={s.k}{rate}, {epochs}{online}")
    fig.legend(
        loc="outside lower center", title="class", fontsize="small", ncol=min(n_classes, 10),
    )
    return fig, {"final_alpha": alpha[-1].tolist()}


def draw_schedule(s: Schedule, *, data_dir=None, baseline: bool = True, seed: int = 0, where: str | None = None):
    """The matplotlib figure of schedule ``s`` and its summary numbers: ``(fig, series)``.

    The caller closes ``fig``. ``where`` names the store in errors.
    """
    where = where or f"the {s.method} schedule"
    if s.method not in ("mmd", "learn2mix"):
        raise ParameterError(f"plot draws mmd and learn2mix schedules, got a {s.method!r} schedule")
    if s.method == "mmd" and "batch_mmd2" not in s.batch_arrays:
        raise StoreError(f"{where}: an mmd store without 'batch_mmd2'; nothing to plot")
    if s.method == "learn2mix" and "class_proportions" not in s.epoch_arrays:
        raise StoreError(f"{where}: a learn2mix store without 'class_proportions'; nothing to plot")
    plt = _pyplot()
    if s.method == "mmd":
        return _draw_mmd(plt, s, data_dir=data_dir, baseline=baseline, seed=seed)
    return _draw_learn2mix(plt, s)


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True, min_n_ticks=1)


def plot_schedule(
    path, out, *, data_dir=None, baseline: bool = True, seed: int | str = 0, overwrite: bool = False
) -> PlotResult:
    """Draw ``path``'s schedule to ``out`` (written atomically), as PNG, PDF or SVG
    after ``out``'s extension (:data:`PLOT_FORMATS`). An existing ``out`` is refused
    unless ``overwrite``. ``seed`` (of the random baseline) may be text, as from the CLI.

    Summary numbers in ``series`` are None where undefined (an MMD² mean when no
    batch has one: a k = N schedule's only batch is NaN by design).
    """
    from .params import parse_int

    seed = parse_int("seed", seed, minimum=0, maximum=MAX_WORD)
    out = Path(out)
    fmt = plot_format(out)
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; expected a new path (or pass --force to replace it)")
    s = read_schedule(path)
    fig, series = draw_schedule(s, data_dir=data_dir, baseline=baseline, seed=seed, where=str(path))
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120))
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        _pyplot().close(fig)
    return PlotResult(path=out, method=s.method, series=series)
