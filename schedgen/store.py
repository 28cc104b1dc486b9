"""The schedule artifact: format v1, a Zarr v3 group (see ``docs/FORMAT.md``).

A schedule is a flat array of sample ``indices`` in replay order, cut into
batches by ``batch_offsets`` and batches into epochs by ``epoch_offsets``.
Writes are atomic (build in a temporary sibling, then rename); reads check
everything a trainer relies on (format version, dtypes, offsets, index range
and the digest) and raise :class:`~schedgen.errors.StoreError` on any defect.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import StoreError

__all__ = [
    "FORMAT_VERSION",
    "Schedule",
    "schedule_digest",
    "array_digest",
    "write_schedule",
    "read_schedule",
    "is_remote",
    "atomic_directory",
    "read_attrs",
]

FORMAT_VERSION = 1

#: Arrays every v1 store has; everything else is an optional per-batch or per-epoch array.
_REQUIRED = ("indices", "batch_offsets", "epoch_offsets")
#: Indices are chunked so that a replay can read a remote store in a few requests.
_CHUNK = 1 << 20


def schedule_digest(indices: np.ndarray, batch_offsets: np.ndarray) -> str:
    """Hex sha256 over the little-endian int64 bytes of ``indices`` then ``batch_offsets``."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(indices, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(batch_offsets, dtype="<i8").tobytes())
    return h.hexdigest()


def array_digest(a: np.ndarray) -> str:
    """Hex sha256 over an optional array's dtype string, shape and little-endian bytes."""
    a = np.asarray(a)
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h = hashlib.sha256()
    h.update(le.dtype.str.encode())
    h.update(np.asarray(a.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(le).tobytes())
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays inside ``obj`` to plain JSON values (zarr attrs need it)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass(frozen=True, eq=False)
class Schedule:
    """A batch schedule held in memory.

    Parameters
    ----------
    indices : array of shape (n_indices,), int64
        Sample indices in replay order.
    batch_offsets : array of shape (n_batches + 1,), int64
        Batch ``b`` is ``indices[batch_offsets[b]:batch_offsets[b + 1]]``.
    epoch_offsets : array of shape (n_epochs + 1,), int64
        Epoch ``e`` is batches ``epoch_offsets[e]`` to ``epoch_offsets[e + 1] - 1``.
    method : str
        The method that built it (``"random"``, ``"mmd"``, ``"learn2mix"``).
    params : dict
        Every option that shaped the schedule (plain JSON).
    dataset : dict
        ``name``, ``split``, ``n_samples``, ``n_classes``, ``fingerprint``.
    k : int
        The nominal batch size.
    batch_arrays, epoch_arrays : dict of name to array
        Optional arrays whose first axis is the batch (or epoch) axis.
    """

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    method: str
    params: dict
    dataset: dict
    k: int
    batch_arrays: dict = field(default_factory=dict)
    epoch_arrays: dict = field(default_factory=dict)
    schedgen_version: str | None = None

    @property
    def n_batches(self) -> int:
        return len(self.batch_offsets) - 1

    @property
    def n_epochs(self) -> int:
        return len(self.epoch_offsets) - 1

    @property
    def n_samples(self) -> int:
        n = self.dataset.get("n_samples") if isinstance(self.dataset, dict) else None
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise StoreError(f"dataset.n_samples must be a non-negative integer, got {n!r}")
        return int(n)

    @property
    def digest(self) -> str:
        # Cached: the arrays of a Schedule are not meant to change after construction.
        d = self.__dict__.get("_digest")
        if d is None:
            d = schedule_digest(self.indices, self.batch_offsets)
            object.__setattr__(self, "_digest", d)
        return d

    def _covered_arrays(self) -> dict:
        """Arrays covered by ``array_digests``: epoch_offsets and every optional array."""
        return {"epoch_offsets": self.epoch_offsets, **self.batch_arrays, **self.epoch_arrays}

    def batch(self, b: int) -> np.ndarray:
        """Indices of global batch ``b`` (a view)."""
        return self.indices[self.batch_offsets[b] : self.batch_offsets[b + 1]]

    def epoch_batches(self, e: int) -> range:
        """Global batch numbers of epoch ``e``."""
        return range(int(self.epoch_offsets[e]), int(self.epoch_offsets[e + 1]))

    def attrs(self) -> dict:
        """The group attributes of format v1 (plain JSON)."""
        from . import __version__

        return _plain(
            {
                "schedgen_format": FORMAT_VERSION,
                "method": self.method,
                "params": self.params,
                "dataset": self.dataset,
                "k": self.k,
                "n_batches": self.n_batches,
                "n_epochs": self.n_epochs,
                "digest": self.digest,
                "batch_arrays": sorted(self.batch_arrays),
                "epoch_arrays": sorted(self.epoch_arrays),
                "array_digests": {name: array_digest(a) for name, a in sorted(self._covered_arrays().items())},
                "schedgen_version": self.schedgen_version or __version__,
            }
        )

    def validate(self) -> None:
        """Check the structural invariants; raise :class:`StoreError` on the first defect."""
        _check_structure(
            self.indices, self.batch_offsets, self.epoch_offsets, self.n_samples, where="schedule"
        )
        for name, a in self.batch_arrays.items():
            if len(a) != self.n_batches:
                raise StoreError(
                    f"per-batch array {name!r} must have {self.n_batches} rows (one per batch), "
                    f"got {len(a)}"
                )
        for name, a in self.epoch_arrays.items():
            if len(a) != self.n_epochs:
                raise StoreError(
                    f"per-epoch array {name!r} must have {self.n_epochs} rows (one per epoch), "
                    f"got {len(a)}"
                )


def _check_structure(
    indices: np.ndarray,
    batch_offsets: np.ndarray,
    epoch_offsets: np.ndarray,
    n_samples: int,
    *,
    where: str,
) -> None:
    for name, a in (("indices", indices), ("batch_offsets", batch_offsets), ("epoch_offsets", epoch_offsets)):
        if a.ndim != 1 or a.dtype != np.int64:
            raise StoreError(
                f"{where}: array {name!r} must be 1-D int64, got {a.ndim}-D {a.dtype}"
            )
    if len(batch_offsets) < 1 or batch_offsets[0] != 0 or batch_offsets[-1] != len(indices):
        raise StoreError(
            f"{where}: batch_offsets must start at 0 and end at len(indices)={len(indices)}, "
            f"got {batch_offsets[:1].tolist()}...{batch_offsets[-1:].tolist()}"
        )
    if np.any(np.diff(batch_offsets) < 0):
        first = int(np.flatnonzero(np.diff(batch_offsets) < 0)[0])
        raise StoreError(f"{where}: batch_offsets must be non-decreasing; they fall at batch {first}")
    n_batches = len(batch_offsets) - 1
    if len(epoch_offsets) < 1 or epoch_offsets[0] != 0 or epoch_offsets[-1] != n_batches:
        raise StoreError(
            f"{where}: epoch_offsets must start at 0 and end at n_batches={n_batches}, "
            f"got {epoch_offsets[:1].tolist()}...{epoch_offsets[-1:].tolist()}"
        )
    if np.any(np.diff(epoch_offsets) < 0):
        raise StoreError(f"{where}: epoch_offsets must be non-decreasing")
    if len(indices):
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_samples:
            bad = lo if lo < 0 else hi
            raise StoreError(
                f"{where}: indices must lie in [0, n_samples={n_samples}), found {bad}"
            )


# --------------------------------------------------------------------------- writing


def atomic_directory(final: str | os.PathLike, *, replace: bool = False):
    """Context manager yielding a temporary sibling directory renamed to ``final`` on success.

    On any exception the temporary directory is removed and ``final`` is untouched.
    With ``replace=True`` an existing ``final`` is swapped out (moved aside, then deleted)
    only after the new one is complete.
    """
    return _AtomicDir(Path(final), replace)


class _AtomicDir:
    def __init__(self, final: Path, replace: bool) -> None:
        self.final = final
        self.replace = replace
        self.tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create output directory {self.final.parent}: {exc.strerror or exc}") from None
        if self.final.exists() and not self.replace:
            raise StoreError(f"{self.final} already exists; expected a new path (or pass --force to replace it)")
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        try:
            if self.final.exists() and self.replace:
                old = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(self.final, old)
            os.replace(self.tmp, self.final)
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if old is not None and not self.final.exists():
                os.replace(old, self.final)
            raise StoreError(f"cannot move the finished store to {self.final}: {exc.strerror or exc}") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _codecs():
    import zarr

    # Checksummed chunks: a flipped byte in a compressed chunk is caught on read.
    return [zarr.codecs.ZstdCodec(level=3, checksum=True)]


def _write_group(schedule: Schedule, path: Path) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arrays = {
        "indices": schedule.indices,
        "batch_offsets": schedule.batch_offsets,
        "epoch_offsets": schedule.epoch_offsets,
        **schedule.batch_arrays,
        **schedule.epoch_arrays,
    }
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        chunks = (max(1, min(len(a), _CHUNK)),) + a.shape[1:] if a.ndim else ()
        group.create_array(name, data=a, chunks=chunks, compressors=_codecs())
    # Attributes last: a reader that sees the digest sees complete arrays.
    group.attrs.update(schedule.attrs())


def write_schedule(schedule: Schedule, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Validate ``schedule`` and write it atomically to ``path`` (a ``.zarr`` directory).

    Returns the final path. On any failure (including disk full) nothing is left
    under ``path``; an existing store there is kept unless ``overwrite`` is true.
    """
    schedule.validate()
    final = Path(path)
    try:
        with atomic_directory(final, replace=overwrite) as tmp:
            _write_group(schedule, tmp)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot write the schedule to {final}: {exc.strerror or exc}") from None
    return final


# --------------------------------------------------------------------------- reading


def is_remote(path: str | os.PathLike) -> bool:
    """True for an fsspec URL such as ``s3://b/x.zarr`` or ``http://h/x.zarr``."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def _open_group(path: str | os.PathLike):
    import zarr

    s = str(path)
    if not is_remote(s):
        if s.startswith("file://"):
            s = s[len("file://") :]
        p = Path(s)
        if not p.exists():
            raise StoreError(f"no schedule store at {p}: the path does not exist")
        if not (p / "zarr.json").is_file():
            raise StoreError(f"{p} is not a schedule store: expected a Zarr v3 group with zarr.json")
        s = str(p)
    try:
        return zarr.open_group(s, mode="r")
    except StoreError:
        raise
    except ImportError as exc:
        raise StoreError(f"cannot open {s}: reading remote stores needs an extra ({exc}); pip install 'schedgen[remote]'") from None
    except Exception as exc:  # zarr/fsspec raise many types; all mean "not a readable store"
        raise StoreError(f"cannot open schedule store {s}: {type(exc).__name__}: {exc}") from None


def _load_array(group, name: str, where: str) -> np.ndarray:
    try:
        arr = group[name]
    except KeyError:
        raise StoreError(f"{where}: array {name!r} is missing") from None
    except Exception as exc:
        raise StoreError(f"{where}: array {name!r} cannot be opened: {type(exc).__name__}: {exc}") from None
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise StoreError(f"{where}: {name!r} must be an array, found a group")
    n_bytes = math.prod(arr.shape) * arr.dtype.itemsize if arr.shape else arr.dtype.itemsize
    if n_bytes > (1 << 36):  # 64 GiB: no honest schedule is this large; refuse to allocate
        raise StoreError(f"{where}: array {name!r} claims shape {arr.shape}, too large to be a schedule")
    try:
        return np.asarray(arr[...])
    except Exception as exc:
        raise StoreError(f"{where}: array {name!r} is truncated or corrupt: {type(exc).__name__}: {exc}") from None


def _attr(attrs: Mapping, key: str, kind, where: str):
    if key not in attrs:
        raise StoreError(f"{where}: attribute {key!r} is missing")
    val = attrs[key]
    ok = isinstance(val, kind) and not (kind is int and isinstance(val, bool))
    if not ok:
        raise StoreError(f"{where}: attribute {key!r} must be {getattr(kind, '__name__', kind)}, got {val!r}")
    return val


def read_schedule(path: str | os.PathLike, *, verify: bool = True) -> Schedule:
    """Read and check a format-v1 schedule store (local path or fsspec URL).

    Checks the format version, dtypes, offsets (monotone, in range), indices in
    ``[0, n_samples)``, per-batch/per-epoch array lengths and, when ``verify``,
    the digests. Any defect raises :class:`StoreError` naming what is wrong.
    """
    where = str(path)
    group = _open_group(path)
    try:
        attrs = dict(group.attrs)
    except Exception as exc:
        raise StoreError(f"{where}: attributes are unreadable: {exc}") from None
    version = attrs.get("schedgen_format")
    if version is None:
        raise StoreError(f"{where} is not a schedgen schedule: attribute 'schedgen_format' is missing")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise StoreError(
            f"{where}: unsupported schedule format {version!r}; this schedgen reads format {FORMAT_VERSION}"
        )
    method = _attr(attrs, "method", str, where)
    params = _attr(attrs, "params", dict, where)
    dataset = _attr(attrs, "dataset", dict, where)
    k = _attr(attrs, "k", int, where)
    n_batches = _attr(attrs, "n_batches", int, where)
    n_epochs = _attr(attrs, "n_epochs", int, where)
    digest = _attr(attrs, "digest", str, where)
    n_samples = dataset.get("n_samples")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 0:
        raise StoreError(f"{where}: dataset.n_samples must be a non-negative integer, got {n_samples!r}")
    batch_names = attrs.get("batch_arrays", [])
    epoch_names = attrs.get("epoch_arrays", [])
    digests = attrs.get("array_digests", {})
    if not (isinstance(batch_names, list) and isinstance(epoch_names, list) and isinstance(digests, dict)):
        raise StoreError(f"{where}: attributes batch_arrays/epoch_arrays/array_digests are malformed")
    for name in [*batch_names, *epoch_names]:
        if not isinstance(name, str) or name in _REQUIRED or "/" in name or name.startswith("."):
            raise StoreError(f"{where}: optional array name {name!r} is not allowed")

    indices, batch_offsets, epoch_offsets = (_load_array(group, n, where) for n in _REQUIRED)
    _check_structure(indices, batch_offsets, epoch_offsets, n_samples, where=where)
    if len(batch_offsets) - 1 != n_batches or len(epoch_offsets) - 1 != n_epochs:
        raise StoreError(
            f"{where}: attributes say {n_batches} batches in {n_epochs} epochs, "
            f"arrays hold {len(batch_offsets) - 1} batches in {len(epoch_offsets) - 1} epochs"
        )
    if verify:
        actual = schedule_digest(indices, batch_offsets)
        if actual != digest:
            raise StoreError(
                f"{where}: digest mismatch (stored {digest[:16]}..., computed {actual[:16]}...): "
                "the store was modified or is corrupt"
            )
    batch_arrays = {n: _load_array(group, n, where) for n in batch_names}
    epoch_arrays = {n: _load_array(group, n, where) for n in epoch_names}
    if verify:
        covered = {"epoch_offsets": epoch_offsets, **batch_arrays, **epoch_arrays}
        for name, a in covered.items():
            if digests.get(name) != array_digest(a):
                raise StoreError(f"{where}: array {name!r} does not match its recorded digest")
    schedule = Schedule(
        indices=indices,
        batch_offsets=batch_offsets,
        epoch_offsets=epoch_offsets,
        method=method,
        params=params,
        dataset=dataset,
        k=k,
        batch_arrays=batch_arrays,
        epoch_arrays=epoch_arrays,
        schedgen_version=attrs.get("schedgen_version"),
    )
    schedule.validate()
    return schedule


def read_attrs(path: str | os.PathLike) -> dict:
    """The group attributes of a store, without reading its arrays (for listings)."""
    group = _open_group(path)
    return json.loads(json.dumps(dict(group.attrs)))
