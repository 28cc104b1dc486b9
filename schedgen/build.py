"""Build a schedule: dataset -> method -> store, with a content-addressed cache.

The store's name carries a key over the dataset fingerprint, the method and its
revision, every parameter that shapes the schedule and the format version; building
again with the same inputs returns the existing store without recomputing.

Concurrent builds of one key (two jobs of a sweep, two ranks) are serialised by a
lock beside the store (:mod:`schedgen.locks`): one computes, the others wait for
it, logging once on the ``schedgen.locks`` logger (stderr by default) who holds the
lock, and then return its store as a cache hit.

The methods themselves live in :mod:`schedgen.methods`; this module holds the typed
:class:`BuildConfig`, the cache key and the orchestration (lock, checkpoint, store).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from . import memory, revisions
from ._summary import read_summary, summary_dir, summary_path, write_summary
from .checkpoint import Checkpoint
from .data import SPLITS, Dataset, load_dataset
from .errors import ParameterError, SchedgenError, SchedgenWarning, StoreError
from .locks import DEFAULT_LOCK_TIMEOUT, LockOwner, LockTimeoutError, exclusive_lock
from .memory import MemoryNeed
from .methods import DEFAULT_METHOD, DEFAULT_SOLVER, METHODS, Method, RunContext, get_method
from .methods.engines import use_engine
from .methods.partners import pair_kind, parse_pair, partner_batches
from .rng import MAX_WORD
from .kernels import KERNELS
from .kernels.backend import DEVICES
from .params import (check_choice, check_flag, check_int, check_real, parse_approx, parse_bandwidth, parse_engine,
                     parse_float, parse_int)
from .store import FORMAT_VERSION, Schedule, read_schedule, remove_orphans, write_schedule

__all__ = [
    "BuildConfig",
    "checkpoint_path",
    "BuildResult",
    "DEFAULT_OUT_DIR",
    "build",
    "cache_key",
    "check_memory",
    "memory_needs",
    "store_name",
    "summary_dir",
    "SchedgenWarning",
]

DEFAULT_OUT_DIR = Path("schedules")
_log = logging.getLogger("schedgen.locks")

Progress = Callable[[int, int], None]


#: BuildConfig's integer options: name -> (how messages name it, minimum, maximum).
_INTS = {"k": ("k", 1, None), "seed": ("seed", 0, MAX_WORD), "epochs": ("epochs", 1, None),
         "degree": ("degree", 1, None), "pca": ("pca", 0, None), "batches_per_epoch": ("batches per epoch", 1, None),
         "partner_size": ("partner size", 1, None)}
#: BuildConfig's real options: name -> (how messages name it, what is expected).
_REALS = {"coef0": ("coef0", "a finite number"), "mixing_rate": ("mixing rate", "a number in (0, 1]")}
#: Options that may be None (unset).
_OPTIONAL = {"pca", "batches_per_epoch", "partner_size"}
#: BuildConfig's on/off options.
_FLAGS = ("paper_coefficients", "standardize", "submodular_normalize", "download", "force")


#: Methods whose exact kernel work ``--engine`` runs (mmd's row sums and selection loop,
#: dpp's and submodular's row sums).
_ENGINE_METHODS = frozenset({"mmd", "dpp", "submodular"})


@dataclass(frozen=True)
class BuildConfig:
    """Every input of ``schedgen build``, typed. Fields that do not shape the schedule
    (``data_dir``, ``download``, ``out_dir``, ``force``, ``device``, ``engine``,
    ``lock_timeout``) stay out of the cache key.

    Numbers are numbers here (``k=50``, not ``k="50"``): construction checks every
    option's type and range once and raises a one-line
    :class:`~schedgen.errors.ParameterError`; the command line's text goes through
    :meth:`from_text`. ``bandwidth`` is ``"median"`` or a positive σ.

    ``pair`` (``"random"``, ``"class-matched"``, ``"shifted"``, ``"shifted:S"``; stored in
    its canonical form, ``"shifted:1"`` for ``"shifted"``) adds partner batches of
    ``partner_size`` samples (default k) to any method's schedule
    (:mod:`schedgen.methods.partners`); ``partner_size`` without ``pair`` is refused.

    ``approx`` (``"nystrom:M"``, stored canonical; None: exact) replaces the kernel by a
    rank-M Nyström factor where a method can use one (``dpp``'s dual sampler, ``mmd``'s
    row sums); another method refuses it.

    ``engine`` (``"local"``, ``"ray"`` or ``"ray:ADDRESS"``, stored canonical, see
    :func:`~schedgen.params.parse_engine`) is where the exact N² row-sum pass runs (mmd, and
    submodular and dpp where they need row sums): in process, or as tasks on a Ray cluster
    (:mod:`schedgen.methods.engines`). The row sums are the same bytes either way, so the
    engine is not part of the cache key and is recorded nowhere in the store.

    ``lock_timeout`` is how many seconds a build waits while another process builds
    the same store (None: forever); then it raises :class:`~schedgen.locks.LockTimeoutError`.
    """

    dataset: str = "digits"
    k: int = 50
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
    batches_per_epoch: int | None = None
    # submodular
    submodular_normalize: bool = False
    # a low-rank kernel instead of the exact one (dpp, mmd): None (exact) or "nystrom:M"
    approx: str | None = None
    # partner batches (every method): see schedgen.methods.partners
    pair: str | None = None
    partner_size: int | None = None
    # where and how
    data_dir: str | None = None
    download: bool = False
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR
    force: bool = False
    device: str = "auto"
    engine: str = "local"
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT

    def __post_init__(self) -> None:
        get_method(self.method)
        check_choice("split", self.split, SPLITS)
        check_choice("kernel", self.kernel, KERNELS)
        check_choice("device", self.device, DEVICES)
        for name in _FLAGS:
            object.__setattr__(self, name, check_flag(name.replace("_", " "), getattr(self, name)))
        for name, (label, minimum, maximum) in _INTS.items():
            value = getattr(self, name)
            if not (value is None and name in _OPTIONAL):
                object.__setattr__(self, name, check_int(label, value, minimum=minimum, maximum=maximum))
        for name, (label, expected) in _REALS.items():
            object.__setattr__(self, name, check_real(label, getattr(self, name), expected))
        bw = self.bandwidth
        if isinstance(bw, str) and bw.strip().lower() != "median":
            raise ParameterError(f"bandwidth must be 'median' or a positive number, got {bw!r}")
        object.__setattr__(self, "bandwidth", parse_bandwidth(bw))
        object.__setattr__(self, "approx", parse_approx(self.approx))
        object.__setattr__(self, "engine", parse_engine(self.engine))
        if self.engine != "local":
            # The engine runs exact N² work; refuse what would leave it silently unused.
            if self.approx is not None:
                raise ParameterError(f"--engine runs the exact N² work and --approx {self.approx} avoids it (it runs "
                                     f"in this process): drop one of them, got --engine {self.engine} with --approx")
            if self.method not in _ENGINE_METHODS:
                raise ParameterError(f"--engine applies to --method {', '.join(sorted(_ENGINE_METHODS))} (their "
                                     f"exact kernel sums), got --engine {self.engine} with --method {self.method}")
        if self.pair is not None:
            object.__setattr__(self, "pair", parse_pair(self.pair))
        elif self.partner_size is not None:
            raise ParameterError(f"--partner-size applies only with --pair (random, class-matched or shifted:S), "
                                 f"got --partner-size {self.partner_size} without --pair")
        timeout = self.lock_timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ParameterError(f"lock timeout must be a non-negative number of seconds or None, got {timeout!r}")

    @classmethod
    def from_text(cls, **options) -> "BuildConfig":
        """A config from option text as typed on the command line (``k="50"``,
        ``bandwidth="0.5"``): numbers are parsed by :mod:`schedgen.params`, with the same
        one-line errors as typed values get."""
        for name, (label, minimum, maximum) in _INTS.items():
            if isinstance(options.get(name), str):
                options[name] = parse_int(label, options[name], minimum=minimum, maximum=maximum)
        for name, (label, expected) in _REALS.items():
            if isinstance(options.get(name), str):
                options[name] = parse_float(label, options[name], expected)
        if isinstance(options.get("bandwidth"), str):
            options["bandwidth"] = parse_bandwidth(options["bandwidth"])
        return cls(**options)

    def is_default(self, name: str) -> bool:
        """True when option ``name`` is unset or spelled out at its default value."""
        value, default = getattr(self, name), _DEFAULTS[name]
        if name == "solver" and value is not None:
            return value == DEFAULT_SOLVER
        return value == default

    def given(self, name: str) -> str:
        """``--name value`` as the user set it, marked when it is the default they did not type."""
        return f"--{name} {getattr(self, name)}" + (" (the default)" if self.is_default(name) else "")


_DEFAULTS = {f.name: f.default for f in fields(BuildConfig)}


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


def check_options(config: BuildConfig) -> None:
    """Refuse an option that the chosen method (or kernel) does not read: silently
    ignoring ``--solver lp`` on a random build would hand the user a schedule they did
    not ask for.

    Raises
    ------
    ParameterError
        Naming the option, the methods (or kernel) it applies to and what was given.
    """
    method = get_method(config.method)
    every = set().union(*(m.options for m in METHODS.values()))
    for name in sorted(every - method.options):
        if not config.is_default(name):
            owners = " or ".join(f"--method {m}" for m in sorted(METHODS) if name in METHODS[m].options)
            hint = "; an mmd schedule is one pass over the data, the sampler replays it every epoch" \
                if name == "epochs" and config.method == "mmd" else ""
            raise ParameterError(
                f"--{name.replace('_', '-')} applies only to {owners}, got it with {config.given('method')}{hint}"
            )
    method.check_options(config)


def memory_needs(config: BuildConfig, ds: Dataset, k: int) -> list[MemoryNeed]:
    """What a build of ``config`` on ``ds`` allocates at least, from the sizes alone
    (the method's :meth:`~schedgen.methods.Method.memory_needs`): lower bounds of the
    peak, so that a build refused by :func:`check_memory` could not have finished.
    With ``--pair``, the partner batches: n_batches × M int64."""
    needs = get_method(config.method).memory_needs(config, ds, k)
    if config.pair is not None:
        m = _partner_size(config)
        # every method makes `epochs` epochs of `batches_per_epoch` (default ceil(N/k)) batches
        n_batches = config.epochs * (config.batches_per_epoch or -(-ds.n_samples // k))
        needs.append(MemoryNeed(n_batches * m * 8, "the partner batches",
                                f"--pair {config.pair} with --partner-size {m} and {n_batches} batches"))
    return needs


def _partner_size(config: BuildConfig) -> int:
    """M, the partner batch size of ``config`` (``--partner-size``, default k)."""
    return config.k if config.partner_size is None else config.partner_size


def _check_partner_size(config: BuildConfig, n: int) -> None:
    if config.pair is not None and _partner_size(config) > n:
        raise ParameterError(f"partner size must be a positive integer no larger than the dataset (N={n}), "
                             f"got partner size={_partner_size(config)}")


def check_memory(config: BuildConfig, ds: Dataset, k: int) -> None:
    """Refuse a build whose :func:`memory_needs` exceed the memory available now
    (:func:`schedgen.memory.check_needs`)."""
    memory.check_needs(memory_needs(config, ds, k))


# --------------------------------------------------------------------------- cache


def cache_key(fingerprint: str, method: str, k: int, params: dict, split: str) -> str:
    """Hex sha256 over the canonical JSON of everything that shapes a schedule: the store
    format, the dataset, the method and its revision, k and the parameters (with partner
    batches, ``params["pair"]``, also the partners' revision)."""
    key = {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "split": split,
        "method": method,
        "revision": get_method(method).revision,
        "k": k,
        "params": params,
    }
    if "pair" in params:  # only then: the keys of builds without partners stay as they were
        key["partners_revision"] = revisions.PARTNERS
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _slug(name: str) -> str:
    if name.startswith(("npz:", "array:")):  # the file's or folder's own name
        name = Path(name.split(":", 1)[1]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "dataset"


def store_name(dataset: str, split: str, method: str, k: int, params: dict, key: str) -> str:
    """``<dataset>-<split>-<method>[-<solver>[-<kernel>]][-<approx>]-k<k>-<key[:16]>.zarr``.

    An mmd store names its solver, and its kernel when it is not ``rbf``, a store of a
    low-rank kernel its ``--approx`` (``nystrom500``), and a store with partner batches ``pair-<kind>`` (``pair-random``, ``pair-class-matched``,
    ``pair-shifted``), so that a listing tells stores of one dataset apart; the key
    part is the cache key (:func:`cache_key`), which the name's other parts do not change.
    """
    parts = [_slug(dataset), split, method]
    if method == "mmd":
        parts.append(_slug(str(params["solver"])))
        if params.get("kernel", "rbf") != "rbf":
            parts.append(_slug(str(params["kernel"])))
    if "approx" in params:  # e.g. nystrom500: a low-rank kernel's store beside the exact one
        parts.append(_slug(str(params["approx"]).replace(":", "")))
    if "pair" in params:
        parts.append("pair-" + pair_kind(params["pair"]))
    return "-".join(parts + [f"k{k}", key[:16]]) + ".zarr"


def _locate(config: BuildConfig, method: Method, ds, out_dir: Path) -> tuple[dict, str, Path]:
    """The parameters, cache key and store path of ``config`` on ``ds`` (a dataset or its summary).

    ``--pair`` applies to every method: its parameters join the method's (only when
    given, so the keys of builds without partners are unchanged)."""
    params = method.params(config, ds)
    if config.pair is not None:
        params = {**params, "pair": config.pair, "partner_size": _partner_size(config)}
    key = cache_key(ds.fingerprint, config.method, config.k, params, ds.split)
    return params, key, out_dir / store_name(ds.name, ds.split, config.method, config.k, params, key)


def _summary_hit(config: BuildConfig, method: Method, known, out_dir: Path, t0: float) -> BuildResult | None:
    """The cached store of ``config`` found from a dataset summary, or None (then the
    dataset is loaded and everything, errors included, is settled as without one)."""
    try:
        if config.k > known.n_samples or known.split != config.split or \
                config.pair is not None and _partner_size(config) > known.n_samples:
            return None
        _, _, path = _locate(config, method, known, out_dir)
        if not path.exists() or checkpoint_path(path).parent.exists():
            return None
        return _cache_hit(path, t0)
    except SchedgenError:
        return None


def _staged(progress):
    """``progress`` as a ``(done, total, stage="batches")`` callable: a callback that takes
    no ``stage`` keyword keeps its ``(done, total)`` contract and sees the batches only."""
    if progress is None:
        return None
    try:
        params = inspect.signature(progress).parameters.values()
        takes_stage = any(p.name == "stage" or p.kind is p.VAR_KEYWORD for p in params)
    except (TypeError, ValueError):  # a builtin without a signature
        takes_stage = False
    if takes_stage:
        return lambda done, total, stage="batches": progress(done, total, stage=stage)
    return lambda done, total, stage="batches": progress(done, total) if stage == "batches" else None


def build(config: BuildConfig, *, progress: Progress | None = None) -> BuildResult:
    """Build (or fetch from the cache) the schedule ``config`` describes.

    A concurrent build of the same store is waited for (up to
    ``config.lock_timeout`` seconds) and its store returned as a cache hit.

    Parameters
    ----------
    config : BuildConfig
    progress : callable(done, total), optional
        Called with the batches done. A callable that also takes a ``stage`` keyword is
        called for the stages before the batches too (``stage="fingerprint"``, ``"row
        sums"``, ``"k-means landmarks"``, ``"Nyström features"``, ``"eigendecomposition"``,
        and ``"batches"``), with rows (or 0/1 for a stage that cannot count) as done/total.

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
    progress = _staged(progress)
    method = get_method(config.method)
    check_options(config)
    out_dir = Path(config.out_dir)
    summary = summary_path(config.dataset, config.split)
    known = None if config.force else read_summary(summary)
    if known is not None:
        hit = _summary_hit(config, method, known, out_dir, t0)
        if hit is not None:
            return hit
    ds = load_dataset(config.dataset, split=config.split, data_dir=config.data_dir, download=config.download)
    k = config.k
    if k > ds.n_samples:
        raise ParameterError(f"k must be a positive integer no larger than the dataset (N={ds.n_samples}), got k={k}")
    _check_partner_size(config, ds.n_samples)
    # After the checks on k: a bad option is one line, never a bar and then an error.
    ds.compute_fingerprint(None if progress is None else lambda d, t: progress(d, t, stage="fingerprint"))
    params, key, path = _locate(config, method, ds, out_dir)

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
            write_summary(summary, ds, known)
            return hit
    if hit is None:
        check_memory(config, ds, k)  # before any file, lock or allocation of the build
    result = _lock_and_build(config, ds, k, params, key, path, method, progress, t0, hit, damaged)
    write_summary(summary, ds, known)  # only beside a store: a failed build leaves nothing
    return result


def _lock_and_build(config, ds, k, params, key, path, method, progress, t0, hit, damaged) -> BuildResult:
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
        return _build_locked(config, ds, k, params, key, path, method, progress, t0)


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


def _build_locked(config, ds, k, params, key, path, method, progress, t0) -> BuildResult:
    """Run the method and write the store (the caller holds the lock of ``path``).

    Long methods save their state to a :class:`~schedgen.checkpoint.Checkpoint`
    tagged with the cache key (which carries the method's revision); a build killed
    before it wrote the store continues from there when rerun with the same inputs by
    a schedgen whose method has the same revision (``--force`` starts afresh).
    """
    n = ds.n_samples
    caught: list[str] = []

    def warn(msg: str) -> None:
        caught.append(msg)
        warnings.warn(msg, SchedgenWarning, stacklevel=2)

    ckpt = Checkpoint(checkpoint_path(path), key=key, warn=warn)
    if config.force:
        ckpt.clear()
    ctx = RunContext(progress=progress, warn=warn, checkpoint=ckpt, cache_dir=path.parent / ".cache")
    with use_engine(config.engine):  # started only if the method needs it (a row-sum pass on a cache miss)
        out = method.run(config, ds, k, ctx)
    if config.pair is not None:
        partners = partner_batches(config.pair, out.indices, out.batch_offsets, out.epoch_offsets, ds.y,
                                   n_samples=n, size=_partner_size(config), seed=config.seed)
        out = replace(out, batch_arrays={**out.batch_arrays, "partner_indices": partners})
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
