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
import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import Checkpoint, code_digest
from .data import Dataset, load_dataset
from .errors import ParameterError, StoreError
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
    "parse_float",
    "parse_int",
    "SchedgenWarning",
]

DEFAULT_OUT_DIR = Path("schedules")
DEFAULT_METHOD = "mmd"
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


def _offsets(sizes) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


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
    n = ds.n_samples
    sizes = [k] * (n // k) + ([n % k] if n % k else [])
    perms = [
        np.random.default_rng([cfg.seed, RANDOM_STREAM, e]).permutation(n).astype(np.int64)
        for e in range(cfg.epochs)
    ]
    per_epoch = len(sizes)
    return MethodOutput(
        indices=np.concatenate(perms),
        batch_offsets=_offsets(sizes * cfg.epochs),
        epoch_offsets=np.arange(cfg.epochs + 1, dtype=np.int64) * per_epoch,
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
    from .solvers import DEFAULT_SOLVER

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
        groups = f"kmeans:{parse_groups(cfg.groups)}"
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
        from .solvers import DEFAULT_SOLVER

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
    ds = load_dataset(config.dataset, split=config.split, data_dir=config.data_dir, download=config.download)
    n = ds.n_samples
    k = parse_int("k", config.k, minimum=1)
    if k > n:
        raise ParameterError(f"k must be a positive integer no larger than the dataset (N={n}), got k={k}")
    params_fn, run_fn = METHODS[config.method]
    params = params_fn(config, ds)
    key = cache_key(ds.fingerprint, config.method, k, params, ds.split)
    out_dir = Path(config.out_dir)
    path = out_dir / f"{_slug(ds.name)}-{ds.split}-{config.method}-k{k}-{key[:16]}.zarr"

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
            return hit

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
