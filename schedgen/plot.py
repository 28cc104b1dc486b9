"""Pictures of schedules (``schedgen plot``): matplotlib is imported lazily (extra ``plot``).

* ``mmd``, ``dpp`` and ``submodular`` stores: the recorded per-batch MMD² of the
  first epoch's prefix (``batch_mmd2``: MMD² between the samples scheduled so far in
  the epoch and the rest; for dpp, whose batches may repeat samples, of the distinct
  samples drawn so far), beside that of a seeded random order of the same data under
  the same kernel (the baseline needs the dataset; ``baseline=False`` skips it).
* ``learn2mix`` stores: the class proportions α per class over epochs, and the
  class-wise losses beside them.
* Several stores of one dataset (:func:`plot_schedules`): their first epochs' prefix
  MMD² curves on one axes, one line per store. A store that recorded ``batch_mmd2``
  is drawn from it; a ``random`` store (which records none) is scored by
  :func:`order_mmd2` with the recorded stores' features and kernel. Stores whose
  kernels or features differ are refused rather than recomputed: their recorded
  values are not comparable, and recomputing them would draw numbers the stores
  do not hold.

The file format follows the output's extension (PNG, PDF or SVG). MMD² is drawn on
a log axis, or on a symlog axis when some values are <= 0 (float rounding near 0),
so no batch drops off the curve; a note in the title says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ._proc import atomic_write
from .errors import ParameterError, StoreError
from .rng import MAX_WORD, STREAMS, rng
from .store import Schedule, read_schedule

__all__ = [
    "PlotResult", "plot_schedule", "draw_schedule", "plot_format", "order_mmd2", "random_baseline_mmd2",
    "OverlayCurve", "overlay_curves", "draw_schedules", "plot_schedules", "BASELINE_STREAM", "PLOT_FORMATS",
    "RECORDED_METHODS", "plot_stores",
]

#: Output formats, chosen by the output's extension.
PLOT_FORMATS = ("png", "pdf", "svg")

#: Tag of the random baseline's stream ``rng(seed, "plot")``: ``default_rng([seed, BASELINE_STREAM])``.
BASELINE_STREAM = STREAMS["plot"][0]  # 0x706C6F74, "plot"


#: Methods whose stores record ``batch_mmd2``, the prefix MMD² drawn from the store.
RECORDED_METHODS = ("mmd", "dpp", "submodular")
#: The parameters that fix the features and the kernel of a recorded MMD² (``seed`` only with a PCA,
#: whose fit is seeded): stores overlaid must agree on them.
_KERNEL_KEYS = ("kernel", "bandwidth", "degree", "coef0", "scale", "pca", "standardize")


def _recorded_on_nystrom(s: Schedule) -> bool:
    """An ``mmd --approx nystrom:M`` store records MMD² of the Nyström kernel ΦΦᵀ, not of the
    kernel: plots rescore it on the exact kernel (from the dataset), so that every curve on one
    axes measures the same thing."""
    return s.params.get("batch_mmd2_kernel") == "nystrom"


@dataclass(frozen=True)
class PlotResult:
    path: Path
    method: str  # the store's method, or "overlay" for several stores
    series: dict  # name -> summary numbers drawn (e.g. mean MMD²)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParameterError("plotting needs matplotlib; install it with pip install 'schedgen[plot]'") from None
    return plt


def _scorer(ds_attr: dict, params: dict, *, data_dir, hint: str):
    """``(X, kernel, s_tot)``: the features and kernel ``params`` record, on the dataset
    ``ds_attr`` names (loaded; its fingerprint must match), rebuilt as the build did."""
    from .data import load_dataset
    from .features import FeatureSpec, prepare_features
    from .kernels import kernel_from_params, pinned_blas, row_sums

    ds = load_dataset(ds_attr["name"], split=ds_attr.get("split", "train"), data_dir=data_dir)
    if ds.fingerprint != ds_attr.get("fingerprint"):
        raise StoreError(
            f"the dataset {ds.name} ({ds.split}) found here is not the one the schedule was built on "
            f"(fingerprint mismatch); {hint}"
        )
    p = params
    spec = FeatureSpec(pca=p.get("pca", 0), standardize=bool(p.get("standardize", False)), seed=int(p.get("seed", 0)))
    with pinned_blas():  # the features the build used, bit for bit
        X = prepare_features(ds, spec)
    kernel = kernel_from_params({k: p[k] for k in ("kernel", "bandwidth", "degree", "coef0", "scale") if k in p})
    s_tot, _ = row_sums(kernel, X)
    return X, kernel, s_tot


def _first_epoch(schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """The first epoch's indices and its batch offsets (from 0)."""
    e0 = schedule.epoch_batches(0)
    start, stop = int(schedule.batch_offsets[e0.start]), int(schedule.batch_offsets[e0.stop])
    return schedule.indices[start:stop], schedule.batch_offsets[e0.start : e0.stop + 1] - start


def order_mmd2(schedule: Schedule, order: np.ndarray | None = None, *, data_dir=None,
               params: dict | None = None) -> np.ndarray:
    """Per-batch MMD² of ``order`` cut like ``schedule``'s first epoch, same data and kernel.

    ``order`` : a permutation of the dataset's samples; default: the schedule's own
    first epoch, which then scores as its recorded ``batch_mmd2`` (to the float32
    rounding of the kernel columns its solver reused, see ``schedgen.evaluate``).
    A given order is cut into batches of k (the last short) when the schedule's first
    epoch does not cover the N samples once (dpp draws).
    ``params`` : the features' and kernel's parameters (default: the schedule's own;
    :func:`overlay_curves` passes another store's to score a random store).
    Loads the schedule's dataset (its fingerprint must match), rebuilds its features,
    kernel and row sums from the ``params`` as the build did, and scores with
    :func:`schedgen.evaluate.prefix_mmd2`, the selection loop's formula.
    """
    from .evaluate import prefix_mmd2

    X, kernel, s_tot = _scorer(schedule.dataset, schedule.params if params is None else params,
                               data_dir=data_dir, hint="pass --no-baseline to plot the schedule alone")
    own, offsets = _first_epoch(schedule)
    n = schedule.n_samples
    if order is None:
        order = own
    elif int(offsets[-1]) != n:
        offsets = np.minimum(np.arange(-(-n // schedule.k) + 1, dtype=np.int64) * schedule.k, n)
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


def _mmd_axis(ax, curves) -> str | None:
    """Set the y scale for the MMD² ``curves`` (label, values, ...): log, or symlog when some
    values are <= 0; the note to add to the title, if any."""
    values = np.concatenate([np.asarray(c[1], dtype=np.float64) for c in curves])
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    n_batches = max(len(c[1]) for c in curves)
    if values.size == 0:
        ax.set_yticks([])
        return (
            "nothing to draw: MMD² is undefined (NaN) after the last batch,\nand here (k = N) the only batch is the last"
            if n_batches == 1 else "nothing to draw: every batch's MMD² is undefined (NaN)"
        )
    if positive.size == values.size:
        ax.set_yscale("log")
        return None
    if positive.size:
        # MMD² <= 0 (float rounding near 0) cannot sit on a log axis: symlog, linear
        # below the smallest positive value, so those batches stay on the curve.
        ax.set_yscale("symlog", linthresh=float(positive.min()))
        return (
            f"{values.size - positive.size} value(s) <= 0 (float rounding near 0): "
            f"symlog axis, linear within ±{positive.min():.2g}"
        )
    return "every MMD² <= 0 (float rounding near 0): linear axis"


def _batch_axis(ax, n_batches: int, epochs: int) -> None:
    ax.set_xlabel("batch" if epochs <= 1 else f"batch of epoch 0 (of {epochs} epochs)")
    ax.set_ylabel("MMD²(scheduled, not yet scheduled)")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlim(0.5, n_batches + 0.5)


def _kernel_text(p: dict) -> str:
    if p.get("kernel") == "rbf" and isinstance(p.get("bandwidth"), (int, float)):
        return f"kernel rbf (σ={p['bandwidth']:.3g})"
    return f"kernel {p.get('kernel')}"


def _draw_mmd(plt, s: Schedule, *, data_dir, baseline: bool, seed: int):
    series: dict = {}
    e0 = s.epoch_batches(0)
    if _recorded_on_nystrom(s):
        y = np.asarray(order_mmd2(s, data_dir=data_dir), dtype=np.float64)
    else:
        y = np.asarray(s.batch_arrays["batch_mmd2"], dtype=np.float64)[e0.start : e0.stop]
    label = f"schedule ({s.params.get('solver', '?')})" if s.method == "mmd" else f"{s.method} schedule"
    curves = [(label, y, 1.5)]
    series["schedule_mean_mmd2"] = _finite_mean(y)
    if baseline:
        r = np.asarray(random_baseline_mmd2(s, data_dir=data_dir, seed=seed), dtype=np.float64)
        curves.append((f"random order (seed {seed})", r, 1.0))
        series["random_mean_mmd2"] = _finite_mean(r)
    fig, ax = plt.subplots(figsize=(7, 4.6), layout="constrained")
    note = _mmd_axis(ax, curves)
    for label, v, lw in curves:
        ax.plot(np.arange(1, len(v) + 1), v, label=label, lw=lw, alpha=1.0 if lw > 1 else 0.8, **_markers(len(v)))
    _batch_axis(ax, len(y), s.n_epochs)
    ds = s.dataset
    title = f"{s.method} on {ds.get('name')} ({ds.get('split')}), k={s.k}, kernel {s.params.get('kernel')}"
    if s.method == "dpp":
        note = "dpp: MMD² of the distinct samples drawn so far" + (f"; {note}" if note else "")
    if _recorded_on_nystrom(s):
        note = (f"built with --approx {s.params.get('approx')}; MMD² rescored on the exact kernel"
                + (f"; {note}" if note else ""))
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
    if s.method not in (*RECORDED_METHODS, "learn2mix"):
        overlay = " (a random store is drawn beside an mmd, dpp or submodular store of its data: give both)"
        raise ParameterError(f"plot draws dpp, submodular, mmd and learn2mix schedules, got a {s.method!r} schedule"
                             + (overlay if s.method == "random" else ""))
    if s.method in RECORDED_METHODS and "batch_mmd2" not in s.batch_arrays:
        raise StoreError(f"{where}: a {s.method} store without 'batch_mmd2'; nothing to plot")
    if s.method == "learn2mix" and "class_proportions" not in s.epoch_arrays:
        raise StoreError(f"{where}: a learn2mix store without 'class_proportions'; nothing to plot")
    plt = _pyplot()
    if s.method in RECORDED_METHODS:
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
    _save(fig, out, fmt)
    return PlotResult(path=out, method=s.method, series=series)


def _save(fig, out: Path, fmt: str) -> None:
    """Write ``fig`` to ``out`` whole or not at all, and close it."""
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120))
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        _pyplot().close(fig)


# --------------------------------------------------------------------------- several stores


@dataclass(frozen=True)
class OverlayCurve:
    """One store's line in an overlay.

    Attributes
    ----------
    label : str
        The legend's text: the method, with the parameters that tell apart stores of
        one method (``"mmd (solver=greedy)"``).
    method : str
    mmd2 : array of shape (n_batches,), float64
        MMD² of the first epoch's prefix after each of its batches (NaN after the last).
    recorded : bool
        Drawn from the store's ``batch_mmd2`` (True) or computed by :func:`order_mmd2` (random stores).
    """

    label: str
    method: str
    mmd2: np.ndarray
    recorded: bool


_UNSET = object()


def _plain(v) -> str:
    """A parameter's value in a label or message: text bare, the rest as JSON, an absent one "unset"."""
    if v is _UNSET:
        return "unset"
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))


def _check_same_data(schedules: Sequence[Schedule], names: Sequence[str]) -> None:
    """Refuse stores of different datasets, sizes or batch sizes, naming what differs."""
    def facts(s: Schedule) -> dict:
        d = s.dataset
        fp = str(d.get("fingerprint"))
        return {"dataset": f"{d.get('name')} ({d.get('split')}, fingerprint {fp[:12]})", "N": s.n_samples, "k": s.k}

    ref = facts(schedules[0])
    for s, name in zip(schedules[1:], names[1:]):
        got = facts(s)
        fp_differs = s.dataset.get("fingerprint") != schedules[0].dataset.get("fingerprint")
        diff = [f"{key} {got[key]} vs {ref[key]}" for key in ref
                if (fp_differs if key == "dataset" else got[key] != ref[key])]
        if diff:
            raise ParameterError(
                f"plot overlays stores of one dataset and batch size; {name} differs from {names[0]} in "
                + "; ".join(diff)
            )


def _kernel_signature(params: dict) -> dict:
    sig = {key: params.get(key) for key in _KERNEL_KEYS if key in params}
    if params.get("pca"):
        sig["seed"] = params.get("seed")  # the PCA's fit is seeded
    return sig


def _labels(schedules: Sequence[Schedule], names: Sequence[str]) -> list[str]:
    """The method, and where stores share one, the parameters that tell them apart."""
    labels = []
    for i, s in enumerate(schedules):
        same = [t for t in schedules if t.method == s.method]
        if len(same) == 1:
            labels.append(s.method)
            continue
        keys = sorted({key for t in same for key in (*t.params, *s.params)
                       if t.params.get(key, _UNSET) != s.params.get(key, _UNSET)},
                      key=lambda key: (key != "solver", key))
        detail = ", ".join(f"{key}={_plain(s.params.get(key, _UNSET))}" for key in keys) or Path(str(names[i])).name
        labels.append(f"{s.method} ({detail})")
    alike = {label for label in labels if labels.count(label) > 1}  # e.g. one store given twice
    return [f"{label} [{name}]" if label in alike else label for label, name in zip(labels, names)]


def overlay_curves(schedules: Sequence[Schedule], *, names: Sequence[str] | None = None,
                   data_dir=None) -> list[OverlayCurve]:
    """The first epoch's prefix MMD² of every schedule, on one dataset, features and kernel.

    Parameters
    ----------
    schedules : sequence of Schedule
        Stores of ``mmd``, ``dpp`` or ``submodular`` (drawn from their ``batch_mmd2``)
        and of ``random`` (scored by :func:`order_mmd2` with the features and kernel of
        the first of the others), all of one dataset (fingerprint), N and k.
    names : sequence of str, optional
        How errors name the stores (their paths); default "store 1", "store 2", ...
    data_dir : optional
        Where the dataset lives (needed only for random stores).

    Returns
    -------
    list of OverlayCurve, in the order given.

    Raises
    ------
    ParameterError
        No store; a store of another method; stores of different datasets, N or k;
        recorded stores whose features or kernels differ (their MMD² are not comparable:
        refused, not recomputed); only random stores (no kernel to score them with).
    StoreError
        A recorded store without ``batch_mmd2``; the dataset found is not the stores'.
    """
    schedules = list(schedules)
    names = [str(n) for n in names] if names is not None else [f"store {i + 1}" for i in range(len(schedules))]
    if not schedules:
        raise ParameterError("plot needs at least one store to overlay, got none")
    for s, name in zip(schedules, names):
        if s.method not in (*RECORDED_METHODS, "random"):
            raise ParameterError(
                f"plot overlays mmd, dpp, submodular and random stores (the first three record batch_mmd2), "
                f"got a {s.method} store: {name}"
            )
        if s.method != "random" and "batch_mmd2" not in s.batch_arrays:
            raise StoreError(f"{name}: a {s.method} store without 'batch_mmd2'; nothing to overlay")
    _check_same_data(schedules, names)
    recorded = [i for i, s in enumerate(schedules) if s.method != "random"]
    if not recorded:
        raise ParameterError(
            "plot scores random stores with the kernel of an mmd, dpp or submodular store of the same dataset; "
            f"got only random stores ({len(schedules)})"
        )
    ref = recorded[0]
    ref_sig = _kernel_signature(schedules[ref].params)
    for i in recorded[1:]:
        sig = _kernel_signature(schedules[i].params)
        if sig != ref_sig:  # e.g. another bandwidth: refused, as the recorded values are not comparable
            diff = ", ".join(f"{key}={_plain(sig.get(key, _UNSET))} vs {_plain(ref_sig.get(key, _UNSET))}"
                             for key in sorted(set(sig) | set(ref_sig)) if sig.get(key) != ref_sig.get(key))
            raise ParameterError(
                f"plot overlays MMD² recorded on one kernel and features; {names[i]} differs from {names[ref]} in "
                f"{diff} (rebuild with the same --kernel, --bandwidth, --degree, --coef0, --pca, --standardize)"
            )
    scorer = None
    curves = []
    for s, label in zip(schedules, _labels(schedules, names)):
        if s.method == "random" or _recorded_on_nystrom(s):
            if scorer is None:  # the data, features and row sums once for every store scored here
                scorer = _scorer(schedules[ref].dataset, schedules[ref].params, data_dir=data_dir,
                                 hint="random stores and --approx mmd stores are scored on it; leave them out to plot the others")
            from .evaluate import prefix_mmd2

            order, offsets = _first_epoch(s)
            y = prefix_mmd2(scorer[0], scorer[1], np.asarray(order, dtype=np.int64), offsets, scorer[2])
        else:
            e0 = s.epoch_batches(0)
            y = np.asarray(s.batch_arrays["batch_mmd2"], dtype=np.float64)[e0.start : e0.stop]
        curves.append(OverlayCurve(label=label, method=s.method, mmd2=np.asarray(y, dtype=np.float64),
                                   recorded=s.method != "random"))
    return curves


def draw_schedules(schedules: Sequence[Schedule], *, names: Sequence[str] | None = None, data_dir=None):
    """The overlay figure of :func:`overlay_curves` and its summary numbers: ``(fig, series)``.

    One line per store (x: batches of the first epoch, from 1), labelled as the curves;
    ``series`` maps each label to the curve's mean finite MMD² (None when it has none).
    The caller closes ``fig``.
    """
    curves = overlay_curves(schedules, names=names, data_dir=data_dir)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6), layout="constrained")
    note = _mmd_axis(ax, [(c.label, c.mmd2) for c in curves])
    for c in curves:
        style = {"lw": 1.5} if c.recorded else {"lw": 1.0, "ls": "--", "alpha": 0.8}
        ax.plot(np.arange(1, len(c.mmd2) + 1), c.mmd2, label=c.label, **style, **_markers(len(c.mmd2)))
    first = schedules[0]
    ref = next(s for s in schedules if s.method != "random")
    _batch_axis(ax, max(len(c.mmd2) for c in curves), max(s.n_epochs for s in schedules))
    ds = first.dataset
    notes = [n for n in (note,) if n]
    if any(s.method == "dpp" for s in schedules):
        notes.insert(0, "dpp: MMD² of the distinct samples drawn so far")
    title = f"{ds.get('name')} ({ds.get('split')}), k={first.k}, {_kernel_text(ref.params)}, epoch 0"
    ax.set_title("\n".join([title, *notes]), fontsize="medium")
    fig.legend(loc="outside lower center", ncol=min(len(curves), 4), fontsize="small")
    return fig, {c.label: _finite_mean(c.mmd2) for c in curves}


def plot_schedules(paths: Sequence, out, *, data_dir=None, overwrite: bool = False) -> PlotResult:
    """Overlay the stores at ``paths`` (:func:`draw_schedules`) and write ``out``
    atomically, as PNG, PDF or SVG after its extension. An existing ``out`` is refused
    unless ``overwrite``. ``series`` maps each line's label to its mean MMD²."""
    out = Path(out)
    fmt = plot_format(out)
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; expected a new path (or pass --force to replace it)")
    paths = list(paths)
    fig, series = draw_schedules([read_schedule(p) for p in paths], names=[str(p) for p in paths], data_dir=data_dir)
    _save(fig, out, fmt)
    return PlotResult(path=out, method="overlay", series=series)


def plot_stores(
    paths: Sequence, out, *, data_dir=None, baseline: bool = True, seed: int | str | None = None,
    overwrite: bool = False,
) -> PlotResult:
    """``schedgen plot``: one store as :func:`plot_schedule`, several as :func:`plot_schedules`.

    ``seed`` (default 0) and ``baseline=False`` shape the one-store plot's random baseline; with
    several stores they are refused, since the overlay draws only the stores given (add a
    ``random`` store to draw a random order beside them).
    """
    paths = list(paths)
    if not paths:
        raise ParameterError("plot needs at least one store, got none")
    if len(paths) == 1:
        return plot_schedule(paths[0], out, data_dir=data_dir, baseline=baseline,
                             seed=0 if seed is None else seed, overwrite=overwrite)
    if seed is not None or not baseline:
        given = "--seed" if seed is not None else "--no-baseline"
        raise ParameterError(
            f"{given} applies to a plot of one store; with several stores ({len(paths)} given) give a "
            "random store among them to draw a random order"
        )
    return plot_schedules(paths, out, data_dir=data_dir, overwrite=overwrite)
