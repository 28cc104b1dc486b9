"""Build a schedule: dataset -> method -> store, with a content-addressed cache.

The store's name carries a key over the dataset fingerprint, the method, every
parameter that shapes the schedule and the format version; building again with
the same inputs returns the existing store without recomputing.

Concurrent builds of one key (two jobs of a sweep, two ranks) are serialised by a
lock beside the store (:mod:`schedgen.locks`): one computes, the others wait for
it, logging once on the ``schedgen.locks`` logger (stderr by default) who holds the
lock, and then return its store as a cache hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import memory
from .checkpoint import Checkpoint, code_digest
from .data import Dataset, load_dataset
from .errors import ParameterError, SchedgenError, StoreError
from .locks import DEFAULT_LOCK_TIMEOUT, LockOwner, LockTimeoutError, exclusive_lock
from .store import FORMAT_VERSION, Schedule, read_schedule, remove_orphans, write_schedule

__all__ = [
    "BuildConfig",
    "checkpoint_path",
    "BuildResult",
    "METHODS",
    "DEFAULT_METHOD",
    "DEFAULT_OUT_DIR",
    "build",
    "cache_key",
    "check_memory",
    "memory_needs",
    "MemoryNeed",
    "parse_float",
    "parse_int",
    "SchedgenWarning",
]

DEFAULT_OUT_DIR = Path("schedules")
DEFAULT_METHOD = "mmd"
#: ``schedgen.solvers.DEFAULT_SOLVER``, spelled out: importing the solvers loads HiGHS and
#: SciPy, which a cache hit must not pay for (a test keeps the two equal).
DEFAULT_SOLVER = "swap"
#: The solvers schedgen registers (``schedgen.solvers.SOLVERS``); another name is checked
#: against the registry itself.
_BUILTIN_SOLVERS = frozenset({"swap", "greedy", "lp"})
_log = logging.getLogger("schedgen.locks")

Progress = Callable[[int, int], None]


class SchedgenWarning(UserWarning):
    """Something is legal but probably not what the user wants (e.g. a diagonal kernel)."""


def parse_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (str digits accepted), else a ParameterError naming ``name``.

    Rejects bool and non-integral numbers.
    """
    v = value
    if isinstance(v, str):
        s = v.strip()
        if not re.fullmatch(r"[+-]?\d+", s):
            raise ParameterError(f"{name} must be an integer, got {value!r}")
        v = int(s)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    v = int(v)
    if minimum is not None and v < minimum or maximum is not None and v > maximum:
        lo = "" if minimum is None else f" >= {minimum}"
        hi = "" if maximum is None else f" <= {maximum}"
        both = " and".join(p for p in (lo, hi) if p)
        raise ParameterError(f"{name} must be an integer{both}, got {v}")
    return v


def parse_float(name: str, value, expected: str = "a finite number") -> float:
    """``value`` (a number, or an option's text) as a finite float, else a one-line
    :class:`ParameterError` naming ``name``. Ranges are checked where the value is used."""
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be {expected}, got {value!r}")
    try:
        v = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be {expected}, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be {expected}, got {value!r}")
    return v


@dataclass(frozen=True)
class BuildConfig:
    """Every input of ``schedgen build``. Fields that do not shape the schedule
    (``data_dir``, ``download``, ``out_dir``, ``force``, ``device``, ``lock_timeout``)
    stay out of the cache key.

    ``lock_timeout`` is how many seconds a build waits while another process builds
    the same store (None: forever); then it raises :class:`~schedgen.locks.LockTimeoutError`.
    """

    dataset: str = "digits"
    k: int | str = 50
    method: str = DEFAULT_METHOD
    split: str = "train"
    seed: int = 0
    epochs: int = 1
    # MMD
    solver: str | None = None
    kernel: str = "rbf"
    bandwidth: str | float = "median"
    degree: int = 3
    coef0: float = 1.0
    paper_coefficients: bool = False
    pca: int | None = None
    standardize: bool = False
    # learn2mix
    mixing_rate: float = 0.1
    groups: str | None = None
    batches_per_epoch: int | str | None = None
    # where and how
    data_dir: str | None = None
    download: bool = False
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR
    force: bool = False
    device: str = "auto"
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` did: ``cache_hit`` is true when an existing store was returned."""

    path: Path
    cache_hit: bool
    digest: str
    method: str
    k: int
    n_batches: int
    n_epochs: int
    seconds: float
    params: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass(frozen=True)
class MethodOutput:
    """What a method function returns; ``params`` are stored in the schedule."""

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    params: dict
    batch_arrays: dict = field(default_factory=dict)
    epoch_arrays: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- methods


def _random_params(cfg: BuildConfig, ds: Dataset) -> dict:
    return {"seed": cfg.seed, "epochs": cfg.epochs}


#: Stream tag of the random method's draws (keeps them apart from other methods' keys:
#: SeedSequence pads keys with zeros, so [seed, e] and [seed, e, 0] would collide).
RANDOM_STREAM = 0x72616E64  # "rand"


def _random(cfg: BuildConfig, ds: Dataset, k: int, progress: Progress | None, ctx: dict) -> MethodOutput:
    """Seeded permutations cut into batches of k (the last batch short).

    Epoch e is ``default_rng([seed, RANDOM_STREAM, e]).permutation(N)``.
    """
    n, epochs = ds.n_samples, cfg.epochs
    per_epoch = -(-n // k)
    # Written in place (memory_needs counts exactly these): no list of batch sizes and
    # no second copy of the permutations, whatever the number of epochs.
    indices = np.empty(epochs * n, dtype=np.int64)
    for e in range(epochs):
        indices[e * n : (e + 1) * n] = np.random.default_rng([cfg.seed, RANDOM_STREAM, e]).permutation(n)
    ends = np.minimum(np.arange(1, per_epoch + 1, dtype=np.int64) * k, n)  # batch ends within an epoch
    batch_offsets = np.zeros(epochs * per_epoch + 1, dtype=np.int64)
    np.add(np.arange(epochs, dtype=np.int64)[:, None] * n, ends[None, :],
           out=batch_offsets[1:].reshape(epochs, per_epoch))
    return MethodOutput(
        indices=indices,
        batch_offsets=batch_offsets,
        epoch_offsets=np.arange(epochs + 1, dtype=np.int64) * per_epoch,
        params=_random_params(cfg, ds),
    )


def _bandwidth(value) -> str | float:
    """``"median"`` or a positive finite σ (numeric strings from the CLI accepted)."""
    if isinstance(value, str) and value.strip().lower() == "median":
        return "median"
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"bandwidth must be 'median' or a positive number, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(sigma) or sigma <= 0:
        raise ParameterError(f"bandwidth must be 'median' or a positive number, got {value!r}")
    return sigma


def _mmd_params(cfg: BuildConfig, ds: Dataset) -> dict:
    if cfg.solver is not None and cfg.solver not in _BUILTIN_SOLVERS:
        from .solvers import get_solver

        get_solver(cfg.solver)  # refuses an unknown solver before its name enters the store's
    spec = _feature_spec(cfg)
    p = {
        "seed": cfg.seed,
        "solver": cfg.solver or DEFAULT_SOLVER,
        "coefficients": "paper" if cfg.paper_coefficients else "exact",
        "kernel": cfg.kernel,
        **spec.params(ds.n_features),
    }
    if cfg.kernel == "rbf":
        p["bandwidth"] = _bandwidth(cfg.bandwidth)
    else:
        p["degree"] = cfg.degree
        p["coef0"] = float(cfg.coef0)
        if cfg.kernel == "poly":
            from .kernels import Polynomial

            Polynomial(cfg.degree, p["coef0"])  # refuses a kernel that is not PSD (coef0 < 0) before any work
    return p


def _mmd(cfg: BuildConfig, ds: Dataset, k: int, progress: Progress | None, ctx: dict) -> MethodOutput:
    from .mmd import run_mmd

    if cfg.kernel == "rbf":
        cfg = replace(cfg, bandwidth=_bandwidth(cfg.bandwidth))
    return run_mmd(
        cfg, ds, k, progress=progress, cache_dir=ctx["cache_dir"], warn=ctx["warn"], checkpoint=ctx.get("checkpoint")
    )


def _learn2mix_params(cfg: BuildConfig, ds: Dataset) -> dict:
    from .learn2mix import parse_groups

    if not (isinstance(cfg.mixing_rate, (int, float)) and 0 < cfg.mixing_rate <= 1):
        raise ParameterError(f"mixing rate must be in (0, 1], got {cfg.mixing_rate!r}")
    if cfg.groups is not None:
        g = parse_groups(cfg.groups)
        if g > ds.n_samples:  # before memory_needs prices g centers
            raise ParameterError(
                f"groups must be 'kmeans:C' with C in 2..{ds.n_samples} (the number of samples), got {cfg.groups!r}"
            )
        groups = f"kmeans:{g}"
    else:
        groups = "dataset" if ds.groups is not None else "labels"
    return {
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "mixing_rate": float(cfg.mixing_rate),
        "groups": groups,
        # only when set, so that the keys of default builds stay as they were
        **({} if cfg.batches_per_epoch is None else {"batches_per_epoch": cfg.batches_per_epoch}),
        "lr": "auto",
        **_feature_spec(cfg).params(ds.n_features),
    }


def _feature_spec(cfg: BuildConfig):
    from .features import FeatureSpec

    return FeatureSpec(pca=cfg.pca, standardize=cfg.standardize, seed=cfg.seed)


def _learn2mix(cfg: BuildConfig, ds: Dataset, k: int, progress: Progress | None, ctx: dict) -> MethodOutput:
    from .kernels import pinned_blas

    with pinned_blas():  # PCA and the proxy's products: the same bits for any BLAS thread count
        return _learn2mix_pinned(cfg, ds, k, progress, ctx)


def _learn2mix_pinned(cfg: BuildConfig, ds: Dataset, k: int, progress: Progress | None, ctx: dict) -> MethodOutput:
    from .features import prepare_features
    from .learn2mix import kmeans_groups, learn2mix_schedule, parse_groups

    X = prepare_features(ds, _feature_spec(cfg))
    extra = {}
    if cfg.groups is not None:
        groups = kmeans_groups(X, parse_groups(cfg.groups), seed=cfg.seed)
    elif ds.groups is not None:
        # Any integer ids: α's columns follow the sorted distinct ids, recorded when
        # they are not already 0..G-1.
        ids, groups = np.unique(ds.groups, return_inverse=True)
        if not np.array_equal(ids, np.arange(len(ids))):
            extra["group_ids"] = ids.tolist()
    else:
        groups = ds.y
    # The proxy always learns the labels; with groups, its losses are averaged per group.
    r = learn2mix_schedule(
        X, groups, k, epochs=cfg.epochs, mixing_rate=cfg.mixing_rate, seed=cfg.seed, progress=progress,
        checkpoint=ctx.get("checkpoint"), labels=None if groups is ds.y else ds.y,
        batches_per_epoch=cfg.batches_per_epoch,
    )
    return MethodOutput(
        indices=r.indices,
        batch_offsets=r.batch_offsets,
        epoch_offsets=r.epoch_offsets,
        params={**r.params, **extra},
        epoch_arrays={"class_proportions": r.class_proportions, "class_losses": r.class_losses},
    )


#: name -> (params(cfg, dataset), run(cfg, dataset, k, progress, ctx))
METHODS: dict[str, tuple] = {
    "random": (_random_params, _random),
    "mmd": (_mmd_params, _mmd),
    "learn2mix": (_learn2mix_params, _learn2mix),
}


#: The options each method reads (besides dataset, split, k and seed). Any other
#: method-specific option set away from its default is refused: silently ignoring
#: ``--solver lp`` on a random build would hand the user a schedule they did not ask for.
METHOD_OPTIONS: dict[str, frozenset] = {
    "random": frozenset({"epochs"}),
    "mmd": frozenset({"solver", "kernel", "bandwidth", "degree", "coef0", "paper_coefficients", "pca", "standardize"}),
    "learn2mix": frozenset({"epochs", "mixing_rate", "groups", "batches_per_epoch", "pca", "standardize"}),
}
#: Kernel parameters, by kernel.
KERNEL_OPTIONS: dict[str, frozenset] = {"rbf": frozenset({"bandwidth"}), "poly": frozenset({"degree", "coef0"})}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_default(config: BuildConfig, name: str) -> bool:
    """True when option ``name`` is unset or spelled out at its default value."""
    value, default = getattr(config, name), BuildConfig.__dataclass_fields__[name].default
    if name == "bandwidth" and isinstance(value, str):
        return value.strip().lower() == default
    if name == "solver" and value is not None:
        return value == DEFAULT_SOLVER
    return value == default


def _given(config: BuildConfig, name: str) -> str:
    """``--name value`` as the user set it, marked when it is the default they did not type."""
    value = getattr(config, name)
    return f"--{name} {value}" + (" (the default)" if _is_default(config, name) else "")


def check_options(config: BuildConfig) -> None:
    """Refuse an option that the chosen method (or kernel) does not read.

    Raises
    ------
    ParameterError
        Naming the option, the methods (or kernel) it applies to and what was given.
    """
    used = METHOD_OPTIONS.get(config.method, frozenset())
    for name in sorted(set().union(*METHOD_OPTIONS.values()) - used):
        if not _is_default(config, name):
            owners = " or ".join(f"--method {m}" for m in sorted(METHOD_OPTIONS) if name in METHOD_OPTIONS[m])
            hint = "; an mmd schedule is one pass over the data, the sampler replays it every epoch" \
                if name == "epochs" and config.method == "mmd" else ""
            raise ParameterError(
                f"{_flag(name)} applies only to {owners}, got it with {_given(config, 'method')}{hint}"
            )
    if config.method == "mmd" and config.kernel in KERNEL_OPTIONS:
        for kernel, names in sorted(KERNEL_OPTIONS.items()):
            for name in sorted(names):
                if kernel != config.kernel and not _is_default(config, name):
                    raise ParameterError(
                        f"{_flag(name)} applies only to --kernel {kernel}, got it with {_given(config, 'kernel')}"
                    )


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a build will allocate for ``what``, and the options that multiply them (``subject``)."""

    n_bytes: int
    what: str
    subject: str


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _feature_needs(config: BuildConfig, ds: Dataset) -> tuple[int, list[MemoryNeed]]:
    """The prepared features' dimension and memory (a scaled float32 copy, and the PCA's fit)."""
    from .features import PCA_FIT_ROWS

    n, d = ds.n_samples, ds.n_features
    pca = _feature_spec(config).resolved_pca(d)
    b = n * d * 4
    if pca:
        b += min(n, PCA_FIT_ROWS) * d * 8 + d * d * 8 + n * pca * 4
    return (pca or d), [MemoryNeed(b, "the features", f"the dataset ({n} samples of {d} features)")]


def memory_needs(config: BuildConfig, ds: Dataset, k: int) -> list[MemoryNeed]:
    """What a build of ``config`` on ``ds`` allocates at least, from the sizes alone.

    Every size an option multiplies is here: the schedule's indices and offsets
    (epochs x batches x k for learn2mix, epochs x N for random), learn2mix's per-epoch
    arrays, proxy and k-means groups, and the MMD solvers' kernel columns and blocks
    (k x N for greedy and swap, (2k)^2 for lp). Lower bounds of the peak: a build
    refused by :func:`check_memory` could not have finished.
    """
    n = ds.n_samples
    if config.method == "random":
        E, per_epoch = config.epochs, -(-n // k)
        subject = f"--epochs {E} with N={n} samples"
        return [
            MemoryNeed(E * n * 8 + n * 8, "the schedule's indices", subject),
            MemoryNeed(2 * (E * per_epoch + 1) * 8, "the batch offsets", subject + f" and k={k}"),
        ]
    d, needs = _feature_needs(config, ds)
    if config.method == "learn2mix":
        from .learn2mix import parse_groups, schedule_memory

        E, B = config.epochs, config.batches_per_epoch
        g = parse_groups(config.groups) if config.groups is not None else None
        if g is not None:
            n_groups = g
        elif ds.groups is not None:
            n_groups = int(np.unique(ds.groups).size)
        else:
            n_groups = ds.n_classes
        parts = schedule_memory(n, d, k, epochs=E, batches_per_epoch=B, n_groups=n_groups,
                                n_outputs=ds.n_classes, kmeans_groups=g)
        per_epoch = -(-n // k) if B is None else B
        batches = (f"--batches-per-epoch {B} with k={k} and {_plural(E, 'epoch')}" if B is not None
                   else f"--epochs {E} with k={k} and {per_epoch} batches an epoch")
        data = f"the dataset ({n} samples of {d} features)"
        kmeans = f"--groups kmeans:{g} with N={n} samples of {d} features"
        labels = {
            "indices": ("the schedule's indices", batches),
            "batch_offsets": ("the batch offsets", batches),
            "epoch_arrays": ("the class proportions and losses per epoch", f"--epochs {E} with {n_groups} groups"),
            "proxy": ("the proxy's weights and losses", data),
            "kmeans_centers": ("the k-means centers", kmeans),
            "kmeans_distances": ("the k-means distances", kmeans),
        }
        return needs + [MemoryNeed(b, *labels[name]) for name, b in parts.items()]
    # mmd: one pass over the data (the indices, in a list and then one array), the
    # kernel's working set (operands of N x (D + 2), per-sample sums), and what k multiplies.
    solver = config.solver or DEFAULT_SOLVER
    data = f"the dataset ({n} samples of {d} features)"
    needs += [
        MemoryNeed(3 * n * 8, "the schedule's indices", data),
        MemoryNeed(3 * n * (d + 2) * 4 + 10 * n * 8, "the kernel's working set", data),
        MemoryNeed(k * k * 12, "the batch's kernel block", f"k={k}"),
    ]
    if k < n:
        subject = f"k={k} with --solver {solver} and N={n} samples"
        if solver in ("greedy", "swap"):
            needs.append(MemoryNeed(k * n * 8, "the solver's kernel columns", subject))
        elif solver == "lp":
            side = 2 * min(k, n - k)  # the LP of the k or of the N - k left out, whichever is smaller
            needs.append(MemoryNeed(2 * side * side * 8, "the LP's pair block", subject))
    return needs


def check_memory(config: BuildConfig, ds: Dataset, k: int) -> None:
    """Refuse a build whose :func:`memory_needs` exceed the memory available now.

    Raises
    ------
    ParameterError
        ``SUBJECT needs X GB of memory (A GB for WHAT, ...); Y GB is available``:
        SUBJECT names the options behind the largest need, then the needs of at least
        1% of the total, largest first.
    """
    available = memory.available_memory()
    if available is None:
        return
    needs = memory_needs(config, ds, k)
    total = sum(x.n_bytes for x in needs)
    if total <= available:
        return
    by_what: dict[str, int] = {}
    for x in sorted(needs, key=lambda x: -x.n_bytes):
        by_what[x.what] = by_what.get(x.what, 0) + x.n_bytes
    shown = [(w, b) for w, b in by_what.items() if b >= 0.01 * total]
    rest = total - sum(b for _, b in shown)
    parts = [f"{memory.format_bytes(b)} for {w}" for w, b in shown]
    if rest >= 0.0005 * total:  # what would show as 0.0 is left out
        parts.append(f"{memory.format_bytes(rest)} for the rest")
    raise ParameterError(
        f"{max(needs, key=lambda x: x.n_bytes).subject} needs {memory.format_bytes(total)} of memory "
        f"({', '.join(parts)}); {memory.format_bytes(available)} is available"
    )


# --------------------------------------------------------------------------- cache


def cache_key(fingerprint: str, method: str, k: int, params: dict, split: str) -> str:
    """Hex sha256 over the canonical JSON of everything that shapes a schedule."""
    blob = json.dumps(
        {
            "format": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "split": split,
            "method": method,
            "k": k,
            "params": params,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _slug(name: str) -> str:
    if name.startswith("npz:"):
        name = Path(name[4:]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "dataset"


def store_name(dataset: str, split: str, method: str, k: int, params: dict, key: str) -> str:
    """``<dataset>-<split>-<method>[-<solver>[-<kernel>]]-k<k>-<key[:16]>.zarr``.

    An mmd store names its solver, and its kernel when it is not ``rbf``, so that a
    listing tells stores of one dataset apart; the key part is the cache key
    (:func:`cache_key`), which the name's other parts do not change.
    """
    parts = [_slug(dataset), split, method]
    if method == "mmd":
        parts.append(_slug(str(params["solver"])))
        if params.get("kernel", "rbf") != "rbf":
            parts.append(_slug(str(params["kernel"])))
    return "-".join(parts + [f"k{k}", key[:16]]) + ".zarr"


# --------------------------------------------------------------------------- dataset summaries
#
# A cache hit needs the dataset only for its key: the fingerprint, N and D. For a
# built-in dataset whose source files are known without loading it (digits: the CSV
# bundled with scikit-learn, found without importing scikit-learn), these are kept in
# ``$XDG_CACHE_HOME/schedgen/datasets/<dataset>-<split>-<key>.json`` (default
# ``~/.cache/schedgen``), keyed by the files' paths, sizes and mtimes and schedgen's
# code digest, so that a hit neither imports scikit-learn nor reads the data. (Not in
# the output folder: a build leaves nothing there but its store.)


@dataclass(frozen=True)
class _DatasetSummary:
    """What :func:`cache_key` and the parameter functions read of a :class:`Dataset`."""

    name: str
    split: str
    n_samples: int
    n_features: int
    n_classes: int
    fingerprint: str
    groups: None = None  # built-in datasets have no groups


def _dataset_sources(config: BuildConfig) -> list[Path] | None:
    """The files ``config.dataset`` is read from, when they are known without loading it."""
    if not isinstance(config.dataset, str) or config.dataset.strip().lower() != "digits":
        return None
    try:
        spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        f = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if f.is_file():
            return [f]
    return None


def summary_dir() -> Path:
    """Where dataset summaries are kept: ``$XDG_CACHE_HOME/schedgen/datasets`` (``~/.cache`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "schedgen" / "datasets"


def _summary_path(config: BuildConfig) -> Path | None:
    sources = _dataset_sources(config)
    if sources is None or config.split not in ("train", "test"):
        return None
    try:
        stats = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in sources]
    except OSError:
        return None
    name = config.dataset.strip().lower()
    blob = json.dumps({"dataset": name, "split": config.split, "sources": stats, "code": code_digest()}, sort_keys=True)
    return summary_dir() / f"{name}-{config.split}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def _read_summary(path: Path | None) -> _DatasetSummary | None:
    if path is None:
        return None
    try:
        d = json.loads(path.read_text())
        return _DatasetSummary(
            name=str(d["name"]), split=str(d["split"]), n_samples=int(d["n_samples"]),
            n_features=int(d["n_features"]), n_classes=int(d["n_classes"]), fingerprint=str(d["fingerprint"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: the dataset is loaded instead


def _summary_of(ds: Dataset) -> _DatasetSummary:
    return _DatasetSummary(name=ds.name, split=ds.split, n_samples=ds.n_samples, n_features=ds.n_features,
                           n_classes=ds.n_classes, fingerprint=ds.fingerprint)


def _write_summary(path: Path | None, ds: Dataset, known: _DatasetSummary | None) -> None:
    """Remember ``ds``'s summary at ``path`` unless ``known`` (what was read there) already
    says it, atomically (a cache: failures are ignored), and remove the summaries of the
    same dataset and split made for other files or code."""
    if path is None or ds.groups is not None or known == _summary_of(ds):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({
            "name": ds.name, "split": ds.split, "n_samples": ds.n_samples, "n_features": ds.n_features,
            "n_classes": ds.n_classes, "fingerprint": ds.fingerprint,
        }))
        os.replace(tmp, path)
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for old in path.parent.glob(f"{prefix}*.json"):
            if old != path and len(old.name) == len(path.name):
                old.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _summary_hit(config: BuildConfig, known: _DatasetSummary, out_dir: Path, t0: float) -> BuildResult | None:
    """The cached store of ``config`` found from a dataset summary, or None (then the
    dataset is loaded and everything, errors included, is settled as without one)."""
    try:
        k = parse_int("k", config.k, minimum=1)
        if k > known.n_samples or known.split != config.split:
            return None
        params = METHODS[config.method][0](config, known)
        key = cache_key(known.fingerprint, config.method, k, params, known.split)
        path = out_dir / store_name(known.name, known.split, config.method, k, params, key)
        if not path.exists() or checkpoint_path(path).parent.exists():
            return None
        return _cache_hit(path, t0)
    except SchedgenError:
        return None


def build(config: BuildConfig, *, progress: Progress | None = None) -> BuildResult:
    """Build (or fetch from the cache) the schedule ``config`` describes.

    A concurrent build of the same store is waited for (up to
    ``config.lock_timeout`` seconds) and its store returned as a cache hit.

    Raises
    ------
    SchedgenError
        On any bad input; nothing is written under the final name then.
    LockTimeoutError
        Another build of the same store held its lock longer than ``config.lock_timeout``.
    StoreError
        The output directory is not writable or full (the message names the path and the reason).
    """
    t0 = time.perf_counter()
    if config.method not in METHODS:
        raise ParameterError(f"unknown method {config.method!r}; expected one of {sorted(METHODS)}")
    # Numbers may come as text (the CLI passes its options through): parsed here, once.
    config = replace(
        config,
        epochs=parse_int("epochs", config.epochs, minimum=1),
        seed=parse_int("seed", config.seed, minimum=0),
        degree=parse_int("degree", config.degree, minimum=1),
        coef0=parse_float("coef0", config.coef0),
        pca=None if config.pca is None else parse_int("pca", config.pca, minimum=0),
        mixing_rate=parse_float("mixing rate", config.mixing_rate, "a number in (0, 1]"),
        batches_per_epoch=None if config.batches_per_epoch is None
        else parse_int("batches per epoch", config.batches_per_epoch, minimum=1),
    )
    check_options(config)
    timeout = config.lock_timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ParameterError(f"lock timeout must be a non-negative number of seconds or None, got {timeout!r}")
    out_dir = Path(config.out_dir)
    summary = _summary_path(config)
    known = None if config.force else _read_summary(summary)
    if known is not None:
        hit = _summary_hit(config, known, out_dir, t0)
        if hit is not None:
            return hit
    ds = load_dataset(config.dataset, split=config.split, data_dir=config.data_dir, download=config.download)
    n = ds.n_samples
    k = parse_int("k", config.k, minimum=1)
    if k > n:
        raise ParameterError(f"k must be a positive integer no larger than the dataset (N={n}), got k={k}")
    params_fn, run_fn = METHODS[config.method]
    params = params_fn(config, ds)
    key = cache_key(ds.fingerprint, config.method, k, params, ds.split)
    path = out_dir / store_name(ds.name, ds.split, config.method, k, params, key)

    # Fast path without the lock: a finished store only ever appears whole (renamed into
    # place), so a readable one is the answer. A read that fails (damaged, or being
    # replaced by a --force build right now) is settled under the lock below.
    damaged: StoreError | None = None
    hit: BuildResult | None = None
    if not config.force and path.exists():
        try:
            hit = _cache_hit(path, t0)
        except StoreError as exc:
            damaged = exc
        # A checkpoint beside a finished store was left by a build killed just after its
        # write: the locked path below returns the hit and removes it.
        if hit is not None and not checkpoint_path(path).parent.exists():
            _write_summary(summary, ds, known)
            return hit
    if hit is None:
        check_memory(config, ds, k)  # before any file, lock or allocation of the build
    result = _lock_and_build(config, ds, k, params, key, path, run_fn, progress, t0, hit, damaged)
    _write_summary(summary, ds, known)  # only beside a store: a failed build leaves nothing
    return result


def _lock_and_build(config, ds, k, params, key, path, run_fn, progress, t0, hit, damaged) -> BuildResult:
    """Take the lock of ``path`` and return the store another process finished meanwhile,
    or build it (``hit``/``damaged``: what the unlocked look at ``path`` found)."""
    out_dir = path.parent
    with contextlib.ExitStack() as stack:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write the schedule to {path}: cannot create the output directory "
                             f"{out_dir}: {exc.strerror or exc}") from None
        try:
            held = stack.enter_context(exclusive_lock(path, timeout=config.lock_timeout, on_wait=_waiting_message))
        except StoreError as exc:
            if hit is not None:  # cannot lock (a read-only folder): the store is still good
                return hit
            if damaged is not None and not isinstance(exc, LockTimeoutError):
                # a damaged store in a read-only folder: the damage is the news
                raise StoreError(f"{damaged} (the cached store is damaged; pass --force to rebuild it)") from None
            raise
        # Another process may have built it while we waited for the lock.
        if not config.force and path.exists():
            try:
                hit = _cache_hit(path, t0)
            except StoreError as exc:
                raise StoreError(f"{exc} (the cached store is damaged; pass --force to rebuild it)") from None
            if held.locked:  # a build killed between writing the store and clearing its checkpoint
                Checkpoint(checkpoint_path(path), key="").clear()
            return hit
        # Holding the lock, no other schedgen build is writing this store: temporaries
        # of it left by a killed build are garbage. Without a working lock (NFS with
        # nolock) a live build on another machine may own one: leave them.
        if held.locked:
            remove_orphans(path)
        return _build_locked(config, ds, k, params, key, path, run_fn, progress, t0)


def _waiting_message(owner: LockOwner | None, lock: Path) -> None:
    who = owner.describe() if owner is not None else "another process"
    _log.warning("waiting for another build of the same schedule (%s; lock %s)", who, lock)


def _cache_hit(path: Path, t0: float) -> BuildResult:
    sched = read_schedule(path)
    return BuildResult(
        path=path, cache_hit=True, digest=sched.digest, method=sched.method, k=sched.k,
        n_batches=sched.n_batches, n_epochs=sched.n_epochs, seconds=time.perf_counter() - t0,
        params=sched.params,
    )


def checkpoint_path(path: str | os.PathLike) -> Path:
    """Where a build of the store ``path`` keeps its checkpoint: ``.<name>.partial/checkpoint.npz``.

    Deterministic (a rerun of the same build finds it) and beside the store, on the
    same filesystem; removed once the store is written.
    """
    path = Path(path)
    return path.parent / f".{path.name}.partial" / "checkpoint.npz"


def _build_locked(config, ds, k, params, key, path, run_fn, progress, t0) -> BuildResult:
    """Run the method and write the store (the caller holds the lock of ``path``).

    Long methods save their state to a :class:`~schedgen.checkpoint.Checkpoint`
    tagged with the cache key and :func:`~schedgen.checkpoint.code_digest`; a build
    killed before it wrote the store continues from there when rerun by the same code
    (``--force`` starts afresh).
    """
    n = ds.n_samples
    caught: list[str] = []

    def warn(msg: str) -> None:
        caught.append(msg)
        warnings.warn(msg, SchedgenWarning, stacklevel=2)

    ckpt = Checkpoint(checkpoint_path(path), key=f"{key}:{code_digest()}")
    if config.force:
        ckpt.clear()
    ctx = {"cache_dir": path.parent / ".cache", "warn": warn, "checkpoint": ckpt}
    out = run_fn(config, ds, k, progress, ctx)
    schedule = Schedule(
        indices=out.indices,
        batch_offsets=out.batch_offsets,
        epoch_offsets=out.epoch_offsets,
        method=config.method,
        params={**params, **out.params},
        dataset={
            "name": ds.name,
            "split": ds.split,
            "n_samples": n,
            "n_classes": ds.n_classes,
            "fingerprint": ds.fingerprint,
        },
        k=k,
        batch_arrays=out.batch_arrays,
        epoch_arrays=out.epoch_arrays,
    )
    try:
        write_schedule(schedule, path, overwrite=config.force)
    except StoreError:
        # Without a working lock (NFS mounted with nolock, no flock support) another
        # machine may have renamed the same store into place first: same key, same
        # content, so it is a cache hit. Anything else is a real write error.
        if config.force or not path.exists():
            raise
        try:
            return _cache_hit(path, t0)
        except StoreError:
            pass
        raise
    ckpt.clear()
    return BuildResult(
        path=path, cache_hit=False, digest=schedule.digest, method=config.method, k=k,
        n_batches=schedule.n_batches, n_epochs=schedule.n_epochs, seconds=time.perf_counter() - t0,
        params=schedule.params, warnings=caught,
    )
