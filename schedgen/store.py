"""The schedule artifact: format v2, a Zarr v3 group (see ``docs/FORMAT.md``).

A schedule is a flat array of sample ``indices`` in replay order, cut into
batches by ``batch_offsets`` and batches into epochs by ``epoch_offsets``.
Writes are atomic (build in a temporary sibling, then rename); reads check
everything a trainer relies on (format version, dtypes, offsets, index range
and the digests) and raise :class:`~schedgen.errors.StoreError` on any defect.

Format 2 adds ``attributes_digest``, a sha256 over the canonical JSON of every
other attribute (method, k, params, dataset, the array digests, ...), so an edited
attribute is refused like an edited array. Format-1 stores (no such digest: their
attributes are not covered) are still read; only format 2 is written.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._proc import pid_alive
from .errors import ParameterError, StoreError

__all__ = [
    "FORMAT_VERSION",
    "READ_FORMATS",
    "FORMAT1_NOTE",
    "Schedule",
    "schedule_digest",
    "array_digest",
    "canonical_json",
    "attributes_digest",
    "write_schedule",
    "Unchanged",
    "read_schedule",
    "is_remote",
    "atomic_directory",
    "read_attrs",
    "check_format",
    "remove_orphans",
]

#: The format this schedgen writes.
FORMAT_VERSION = 2
#: The formats it reads: 1 (attributes not covered by a digest) and 2.
READ_FORMATS = (1, 2)
#: What ``verify`` should say of a format-1 store.
FORMAT1_NOTE = (
    "format 1: the attributes (method, k, params, dataset, ...) are not covered by a digest; "
    "only the arrays were verified (rebuild to get a format-2 store)"
)
#: The format-2 attribute holding the digest of all the other attributes.
_ATTRS_DIGEST = "attributes_digest"

#: Arrays every store has; everything else is an optional per-batch or per-epoch array.
_REQUIRED = ("indices", "batch_offsets", "epoch_offsets")
#: Indices are chunked so that a replay can read a remote store in a few requests.
_CHUNK = 1 << 20


def schedule_digest(indices: np.ndarray, batch_offsets: np.ndarray) -> str:
    """Hex sha256 over the little-endian int64 bytes of ``indices`` then ``batch_offsets``."""
    h = hashlib.sha256()
    # memoryview: no copy of arrays already contiguous little-endian int64
    h.update(memoryview(np.ascontiguousarray(indices, dtype="<i8")).cast("B"))
    h.update(memoryview(np.ascontiguousarray(batch_offsets, dtype="<i8")).cast("B"))
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


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (docs/FORMAT.md, "Canonical JSON").

    Keys sorted by code point, no whitespace, ASCII only (``\\uXXXX`` escapes,
    lowercase hex), floats as Python's ``repr`` (shortest round-trip digits),
    non-finite floats as ``NaN``/``Infinity``/``-Infinity``.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    ).encode("ascii")


def attributes_digest(attrs: Mapping) -> str:
    """Hex sha256 over the canonical JSON of every attribute but ``attributes_digest``.

    Raises TypeError, ValueError or RecursionError when ``attrs`` is not plain JSON.
    """
    return hashlib.sha256(canonical_json({k: v for k, v in attrs.items() if k != _ATTRS_DIGEST})).hexdigest()


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
    schedgen_version : str, optional
        The version that wrote it (default: this one).
    schedgen_format : int
        The format of the store it was read from (:data:`FORMAT_VERSION` for a
        schedule made in memory). :func:`write_schedule` always writes
        :data:`FORMAT_VERSION`.
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
    schedgen_format: int = FORMAT_VERSION

    @property
    def attributes_covered(self) -> bool:
        """True when the attributes were (or will be) covered by a digest: format >= 2.

        False for a schedule read from a format-1 store: its method, k, params and
        dataset were not verified (say so with :data:`FORMAT1_NOTE`).
        """
        return self.schedgen_format >= 2

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
        """The group attributes (plain JSON) in this schedule's format (:attr:`schedgen_format`)."""
        return self._attributes(self.schedgen_format)

    def _attributes(self, fmt: int) -> dict:
        """The group attributes of format ``fmt`` (1 or 2; format 2 adds ``attributes_digest``)."""
        from . import __version__

        if fmt not in READ_FORMATS:
            raise ParameterError(f"schedule format must be one of {list(READ_FORMATS)}, got {fmt!r}")
        attrs = _plain(
            {
                "schedgen_format": fmt,
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
        if fmt >= 2:
            try:
                attrs[_ATTRS_DIGEST] = attributes_digest(attrs)
            except (TypeError, ValueError, RecursionError) as exc:
                raise StoreError(
                    f"schedule attributes must be plain JSON (params, dataset), got {_one_line(exc)}"
                ) from None
        return attrs

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
    With ``replace=True`` an existing ``final`` is replaced only after the new one is
    complete, by one atomic exchange where the system has it (Linux ``renameat2``; else
    moved aside, then the new one renamed in, then the old one deleted).
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
            _settle_zarr()
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        try:
            if self.final.exists() and self.replace:
                if _exchange(self.tmp, self.final):
                    # One atomic step: ``final`` is the old store, then the new one, never
                    # absent; the old one now sits at the temporary name.
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    return False
                # No atomic exchange here (not Linux, or a filesystem without it): a
                # crash between these two renames leaves the old store at ``old``
                # (readers say so, see _open_group).
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


def _settle_zarr(timeout: float = 5.0) -> None:
    """Wait until zarr's IO loop has no task left (at most ``timeout`` seconds).

    A zarr call that fails returns at its first error, while the writes it started
    beside it go on in zarr's IO thread; one of them could recreate a file in the
    temporary folder after it was removed. Waiting for them first leaves nothing.
    The bound keeps a failure from hanging on unrelated long-lived tasks (a remote
    store's session, say); local writes in flight end within milliseconds.
    """
    import asyncio

    try:
        from zarr.core import sync as zsync
    except ImportError:  # pragma: no cover - another zarr layout: nothing to wait for
        return
    loops = getattr(zsync, "loop", None)
    lp = loops[0] if isinstance(loops, list) and loops else None
    if not isinstance(lp, asyncio.AbstractEventLoop) or lp.is_closed() or not lp.is_running():
        return

    async def others() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(others(), lp).result(timeout=timeout + 1)
    except Exception:  # a timeout or a closing loop: remove what is there anyway
        pass


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when this system or filesystem cannot (then nothing happened);
    raises OSError on any other failure.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False  # glibc < 2.28, musl without the wrapper
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_orphans(final: str | os.PathLike) -> list[Path]:
    """Delete the temporary directories of ``final`` left by writers that died.

    A temporary is ``.<name>.tmp-<pid>-<hex>`` beside ``final``; it is removed when no
    process with that pid runs on this machine. Call it only while holding the build
    lock of ``final`` (:mod:`schedgen.locks`), so no live writer of it can exist here.
    Returns the paths removed.
    """
    final = Path(final)
    prefix = f".{final.name}.tmp-"
    removed = []
    try:
        siblings = list(final.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


def _codecs():
    import zarr

    # Checksummed chunks: a flipped byte in a compressed chunk is caught on read.
    return [zarr.codecs.ZstdCodec(level=3, checksum=True)]


@dataclass(frozen=True)
class Unchanged:
    """What a caller rewriting a store knows about the store it replaces.

    The promise: *if* the store now at the path has digest ``digest``, then for each
    name in ``prefix`` the first ``prefix[name]`` elements of its array equal those of
    the new schedule's array. :func:`write_schedule` then hard-links the whole chunks
    inside those prefixes from the old store instead of compressing them again (the
    bytes are the same: the codecs are deterministic), so appending to a long store
    costs the new part only. Anything it cannot confirm (another digest, other array
    metadata, a missing chunk file, a filesystem without hard links) is simply written.

    Linked chunk files are shared with the old store until it is removed, which is
    safe because no schedgen writer changes a store's files in place (zarr 3 writes a
    chunk to a temporary file and renames it). A chunk damaged on disk is linked
    forward as it is; the read-side checksum and digest then reject the store.
    """

    digest: str
    prefix: Mapping[str, int]

    def __post_init__(self) -> None:
        import operator

        try:
            clean = {str(k): operator.index(v) for k, v in dict(self.prefix).items()}
        except TypeError:
            raise ParameterError(f"Unchanged.prefix must map array names to integers, got {self.prefix!r}") from None
        if any(v < 0 for v in clean.values()):
            raise ParameterError(f"Unchanged.prefix lengths must be >= 0, got {clean}")
        object.__setattr__(self, "prefix", clean)


def _json_at(dir_fd: int | None, rel: str) -> Any:
    """The JSON of a small regular file at ``rel`` under ``dir_fd`` (None: the working
    directory), or None."""
    try:
        st = os.stat(rel, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size > (1 << 20):
            return None
        fd = os.open(rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            return json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None


def _open_linkable(final: Path, unchanged: Unchanged | None) -> int | None:
    """A descriptor of the store directory at ``final`` if it is the one ``unchanged``
    describes, else None. Reading and linking through this one descriptor means that
    a store swapped in at ``final`` meanwhile is never mixed in: the chunks come from
    the directory whose digest was checked (or, if it is gone, are written)."""
    if unchanged is None or not unchanged.prefix or os.link not in os.supports_dir_fd:
        return None
    try:
        fd = os.open(final, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    meta = _json_at(fd, "zarr.json")
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if isinstance(attrs, dict) and attrs.get("digest") == unchanged.digest:
        return fd
    os.close(fd)
    return None


_hard_link = os.link  # a seam for the tests


def _link_chunks(old_fd: int, name: str, new: Path, n_elements: int, chunk: int) -> int:
    """Hard-link the chunk files of array ``name`` of the old store (directory
    ``old_fd``) holding its first ``n_elements`` elements, whole chunks only, into the
    array directory ``new``, whose metadata must be the same but for the shape.
    Returns how many elements are now covered (a multiple of ``chunk``)."""
    meta_old, meta_new = _json_at(old_fd, f"{name}/zarr.json"), _json_at(None, str(new / "zarr.json"))
    if not isinstance(meta_old, dict) or not isinstance(meta_new, dict):
        return 0
    shape_old = meta_old.pop("shape", None)
    meta_new.pop("shape", None)
    if meta_old != meta_new or not (isinstance(shape_old, list) and len(shape_old) == 1):
        return 0
    if not isinstance(shape_old[0], int):
        return 0
    done = 0
    for c in range(min(n_elements, shape_old[0]) // chunk):
        src, dst = f"{name}/c/{c}", new / "c" / str(c)
        try:
            if not stat.S_ISREG(os.stat(src, dir_fd=old_fd, follow_symlinks=False).st_mode):
                break
            dst.parent.mkdir(exist_ok=True)
            _hard_link(src, dst, src_dir_fd=old_fd, follow_symlinks=False)
        except OSError:  # absent (an all-fill chunk), or no hard links here: written instead
            break
        done += 1
    return done * chunk


def _write_group(schedule: Schedule, path: Path, *, old_fd: int | None = None,
                 prefix: Mapping[str, int] | None = None, attrs: dict | None = None) -> None:
    import zarr

    if attrs is None:
        attrs = schedule._attributes(FORMAT_VERSION)

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
        n_same = (prefix or {}).get(name, 0)
        if old_fd is not None and a.ndim == 1 and n_same >= chunks[0]:
            arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, compressors=_codecs())
            start = _link_chunks(old_fd, name, path / name, min(n_same, len(a)), chunks[0])
            if start < len(a):
                arr[start:] = a[start:]
        else:
            group.create_array(name, data=a, chunks=chunks, compressors=_codecs())
    # Attributes last: a reader that sees the digest sees complete arrays.
    group.attrs.update(attrs)


def write_schedule(schedule: Schedule, path: str | os.PathLike, *, overwrite: bool = False,
                   unchanged: Unchanged | None = None) -> Path:
    """Validate ``schedule`` and write it atomically to ``path`` (a ``.zarr`` directory).

    Always writes format :data:`FORMAT_VERSION` (whatever ``schedule.schedgen_format``).
    Returns the final path. On any failure (including disk full) nothing is left
    under ``path``; an existing store there is kept unless ``overwrite`` is true.
    With ``overwrite`` and ``unchanged`` (see :class:`Unchanged`), the chunks the
    old store shares with the new one are hard-linked rather than written again.
    """
    schedule.validate()
    attrs = schedule._attributes(FORMAT_VERSION)  # before anything is written: refuses non-JSON params
    final = Path(path)
    old_fd = None
    try:
        with atomic_directory(final, replace=overwrite) as tmp:
            old_fd = _open_linkable(final, unchanged) if overwrite else None
            _write_group(schedule, tmp, old_fd=old_fd, prefix=unchanged.prefix if old_fd is not None else None,
                         attrs=attrs)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot write the schedule to {final}: {exc.strerror or exc}") from None
    finally:
        if old_fd is not None:
            os.close(old_fd)
    return final


# --------------------------------------------------------------------------- reading


def is_remote(path: str | os.PathLike) -> bool:
    """True for an fsspec URL such as ``s3://b/x.zarr`` or ``http://h/x.zarr``."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


#: Largest metadata document (zarr.json) a reader parses; real ones are a few KiB.
_MAX_METADATA_BYTES = 16 << 20
#: Hard cap on the bytes one read may allocate, whatever the machine (64 GiB).
_MAX_READ_BYTES = 1 << 36
#: Optional array names: plain keys inside the store, never paths.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_INT64_MAX = 2**63 - 1


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of a foreign exception, on one line and of bounded length."""
    msg = " ".join(str(exc).split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _memory_budget() -> int:
    """Bytes a read may allocate: the memory available now, at most :data:`_MAX_READ_BYTES`.

    A store states its array shapes; a hostile or damaged one can claim terabytes
    (zarr fills absent chunks with the fill value, so no data is needed). Refusing
    claims beyond the available memory turns an OOM kill into a StoreError.
    """
    avail = None
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = _MAX_READ_BYTES
    return max(0, min(avail, _MAX_READ_BYTES))


def _check_local_tree(root: Path) -> None:
    """Refuse a local store that reaches outside itself or holds non-files.

    Symbolic links are allowed only when they resolve inside the store; FIFOs,
    devices and sockets are refused (reading them blocks or never ends), and so
    are metadata documents larger than :data:`_MAX_METADATA_BYTES`.
    """
    real_root = os.path.realpath(root)
    inside = real_root.rstrip(os.sep) + os.sep
    for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False, onerror=_raise_walk):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, real_root)
            try:
                lst = os.lstat(full)
                if stat.S_ISLNK(lst.st_mode):
                    target = os.path.realpath(full)
                    if not target.startswith(inside):
                        raise StoreError(
                            f"{root}: {rel} is a link to {target}, outside the store; "
                            "a schedule store must be self-contained"
                        )
                st_ = os.stat(full)
            except StoreError:
                raise
            except OSError as exc:
                raise StoreError(f"{root}: {rel} cannot be inspected: {exc.strerror or exc}") from None
            if not (stat.S_ISREG(st_.st_mode) or stat.S_ISDIR(st_.st_mode)):
                raise StoreError(f"{root}: {rel} is not a regular file or folder (a FIFO, device or socket)")
            if name == "zarr.json" and st_.st_size > _MAX_METADATA_BYTES:
                raise StoreError(
                    f"{root}: {rel} is {st_.st_size} bytes; expected a metadata document of at most "
                    f"{_MAX_METADATA_BYTES} bytes"
                )


def _raise_walk(exc: OSError) -> None:
    raise StoreError(f"{exc.filename}: cannot list the store: {exc.strerror or exc}")


def _open_group(path: str | os.PathLike):
    import zarr

    s = str(path)
    if not is_remote(s):
        if s.startswith("file://"):
            s = s[len("file://") :]
        p = Path(s)
        if not p.exists():
            aside = sorted(p.parent.glob(f".{glob.escape(p.name)}.old-*")) if p.parent.is_dir() else []
            if aside:
                raise StoreError(
                    f"no schedule store at {p}: a replacement of it was interrupted; "
                    f"its previous version is at {aside[-1]} (rename it back to recover)"
                )
            raise StoreError(f"no schedule store at {p}: the path does not exist")
        if not p.is_dir() or not (p / "zarr.json").is_file():
            raise StoreError(f"{p} is not a schedule store: expected a Zarr v3 group with zarr.json")
        _check_local_tree(p)
        s = str(p)
    try:
        group = zarr.open_group(s, mode="r")
    except StoreError:
        raise
    except ImportError as exc:
        raise StoreError(f"cannot open {s}: reading remote stores needs an extra ({exc}); pip install 'schedgen[remote]'") from None
    except Exception as exc:  # zarr/fsspec raise many types (RecursionError on deep JSON too)
        raise StoreError(f"cannot open schedule store {s}: {_one_line(exc)}") from None
    return group


def _read_attrs(group, where: str) -> dict:
    """The group attributes as plain JSON values, or StoreError."""
    try:
        attrs = group.attrs.asdict() if hasattr(group.attrs, "asdict") else dict(group.attrs)
    except Exception as exc:
        raise StoreError(f"{where}: attributes are unreadable: {_one_line(exc)}") from None
    if not isinstance(attrs, dict):
        raise StoreError(f"{where}: attributes must be a JSON object, got {type(attrs).__name__}")
    return attrs


class _Budget:
    """Bytes a read may still allocate (shared by all arrays of one store)."""

    def __init__(self) -> None:
        self.left = _memory_budget()

    def take(self, n_bytes: int, what: str) -> None:
        if n_bytes > self.left:
            raise StoreError(
                f"{what} would need {n_bytes} bytes, more than the {self.left} bytes of memory "
                "available; too large to be a schedule (the store is damaged or hostile)"
            )
        self.left -= n_bytes


def _open_array(group, name: str, where: str):
    """The zarr array ``name`` (metadata only, no data read)."""
    try:
        arr = group.get(name) if hasattr(group, "get") else group[name]
    except Exception as exc:
        raise StoreError(f"{where}: array {name!r} cannot be opened: {_one_line(exc)}") from None
    if arr is None:
        raise StoreError(f"{where}: array {name!r} is missing")
    try:
        shape, dtype = tuple(int(d) for d in arr.shape), np.dtype(arr.dtype)
    except Exception:
        raise StoreError(f"{where}: {name!r} must be an array, found {type(arr).__name__}") from None
    return arr, shape, dtype


def _chunk_elements(arr) -> int | None:
    """Elements of one (outer) chunk, or None when the grid is not a plain regular one."""
    try:
        return math.prod(int(c) for c in arr.metadata.chunk_grid.chunk_shape)
    except Exception:
        return None


def _load_array(group, name: str, where: str, budget: _Budget, *, rows: int | None = None,
                required: bool = False) -> np.ndarray:
    """Read array ``name`` after checking its metadata: kind, rows, and size against ``budget``."""
    arr, shape, dtype = _open_array(group, name, where)
    if required:
        if len(shape) != 1 or dtype != np.dtype("<i8"):
            raise StoreError(f"{where}: array {name!r} must be 1-D int64, got {len(shape)}-D {dtype}")
    else:
        if len(shape) < 1:
            raise StoreError(f"{where}: optional array {name!r} must have a first (row) axis, got shape {shape}")
        if dtype.hasobject or dtype.kind not in "biufcmMSU":
            # Variable-length strings and records have no defined bytes to digest.
            raise StoreError(
                f"{where}: optional array {name!r} must have a fixed-size dtype (numbers, dates or "
                f"fixed-width strings), got {dtype}"
            )
    if rows is not None and shape[0] != rows:
        raise StoreError(f"{where}: array {name!r} must have {rows} rows, got shape {shape}")
    if any(d < 0 for d in shape):
        raise StoreError(f"{where}: array {name!r} has a negative shape {shape}")
    n_bytes = math.prod(shape) * dtype.itemsize
    budget.take(n_bytes, f"{where}: array {name!r} of shape {shape}")
    # zarr decodes whole chunks: a chunk larger than the array must also fit in memory.
    chunk = _chunk_elements(arr)
    if chunk is not None and chunk * dtype.itemsize > max(n_bytes, budget.left):
        raise StoreError(f"{where}: array {name!r} claims chunks of {chunk} elements, too large to decode")
    try:
        out = np.asarray(arr[...])
    except Exception as exc:  # zarr, numcodecs and numpy raise many types (MemoryError included)
        raise StoreError(f"{where}: array {name!r} is truncated or corrupt: {_one_line(exc)}") from None
    if out.shape != shape or out.dtype != dtype:
        raise StoreError(f"{where}: array {name!r} read as {out.shape} {out.dtype}, its metadata says {shape} {dtype}")
    return out


def _attr(attrs: Mapping, key: str, kind, where: str, *, minimum: int | None = None):
    if key not in attrs:
        raise StoreError(f"{where}: attribute {key!r} is missing")
    val = attrs[key]
    ok = isinstance(val, kind) and not (kind is int and isinstance(val, bool))
    if not ok:
        raise StoreError(f"{where}: attribute {key!r} must be {getattr(kind, '__name__', kind)}, got {_short(val)}")
    if minimum is not None and not minimum <= val <= _INT64_MAX:
        raise StoreError(f"{where}: attribute {key!r} must be an integer in [{minimum}, 2**63), got {_short(val)}")
    return val


def _short(val: Any) -> str:
    """``repr`` of an attribute value, bounded (a hostile value can be huge or deep)."""
    try:
        r = repr(val)
    except Exception:  # RecursionError on absurdly deep values
        r = f"<{type(val).__name__}>"
    return r if len(r) <= 80 else r[:77] + "..."


def read_schedule(path: str | os.PathLike, *, verify: bool = True) -> Schedule:
    """Read and check a schedule store of format 1 or 2 (local path or fsspec URL).

    Checks the format version, the attributes digest (format 2; always, it reads no
    array), dtypes, offsets (monotone, in range), indices in ``[0, n_samples)``,
    per-batch/per-epoch array lengths and, when ``verify``, the array digests. Any
    defect raises :class:`StoreError` naming what is wrong. The result's
    ``schedgen_format`` says which format was read: a format-1 store's attributes
    are not covered by any digest (:data:`FORMAT1_NOTE`).

    A store is untrusted input: a local store must not link outside itself or hold
    FIFOs or devices, array sizes are checked against the attributes and the
    available memory before anything is allocated, and every failure inside zarr
    or the codecs becomes a :class:`StoreError` naming the path.
    """
    where = str(path)
    group = _open_group(path)
    attrs = _read_attrs(group, where)
    fmt = check_format(attrs, where)
    method = _attr(attrs, "method", str, where)
    params = _attr(attrs, "params", dict, where)
    dataset = _attr(attrs, "dataset", dict, where)
    k = _attr(attrs, "k", int, where, minimum=1)
    n_batches = _attr(attrs, "n_batches", int, where, minimum=0)
    n_epochs = _attr(attrs, "n_epochs", int, where, minimum=0)
    digest = _attr(attrs, "digest", str, where)
    if not _HEX64.fullmatch(digest):
        raise StoreError(f"{where}: attribute 'digest' must be 64 lowercase hex digits, got {_short(digest)}")
    version_str = attrs.get("schedgen_version")
    if version_str is not None and not isinstance(version_str, str):
        raise StoreError(f"{where}: attribute 'schedgen_version' must be str, got {_short(version_str)}")
    n_samples = dataset.get("n_samples")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or not 0 <= n_samples <= _INT64_MAX:
        raise StoreError(f"{where}: dataset.n_samples must be a non-negative integer, got {_short(n_samples)}")
    for key in ("name", "split", "fingerprint"):
        if key in dataset and not isinstance(dataset[key], str):
            raise StoreError(f"{where}: dataset.{key} must be str, got {_short(dataset[key])}")
    n_classes = dataset.get("n_classes")
    if n_classes is not None and (
        not isinstance(n_classes, int) or isinstance(n_classes, bool) or not 0 <= n_classes <= _INT64_MAX
    ):
        raise StoreError(f"{where}: dataset.n_classes must be a non-negative integer or null, got {_short(n_classes)}")
    batch_names = attrs.get("batch_arrays", [])
    epoch_names = attrs.get("epoch_arrays", [])
    digests = attrs.get("array_digests", {})
    if not (isinstance(batch_names, list) and isinstance(epoch_names, list) and isinstance(digests, dict)):
        raise StoreError(f"{where}: attributes batch_arrays/epoch_arrays/array_digests are malformed")
    names = [*batch_names, *epoch_names]
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _REQUIRED or name == "zarr.json":
            raise StoreError(
                f"{where}: optional array name {_short(name)} is not allowed "
                "(expected letters, digits, '_', '.', '-', not a path)"
            )
    if len(set(names)) != len(names):
        raise StoreError(f"{where}: batch_arrays/epoch_arrays name an array twice: {_short(names)}")
    if verify and set(digests) != {"epoch_offsets", *names}:
        # In format 1 the name lists are not covered by a digest; array_digests must agree
        # with them, so that dropping a name from batch_arrays cannot silently drop its array.
        raise StoreError(
            f"{where}: array_digests covers {_short(sorted(map(str, digests)))}, but the store lists "
            f"{_short(sorted(['epoch_offsets', *names]))}"
        )

    # Small arrays first, each checked against the attributes before it is read,
    # so that no claimed size is allocated before it has been cross-checked.
    required = {n: _open_array(group, n, where) for n in _REQUIRED}
    for name, (_, shape, dtype) in required.items():
        if len(shape) != 1 or dtype != np.dtype("<i8"):
            raise StoreError(f"{where}: array {name!r} must be 1-D int64, got {len(shape)}-D {dtype}")
    stored_batches = required["batch_offsets"][1][0] - 1
    stored_epochs = required["epoch_offsets"][1][0] - 1
    if stored_batches != n_batches or stored_epochs != n_epochs:
        raise StoreError(
            f"{where}: attributes say {n_batches} batches in {n_epochs} epochs, "
            f"arrays hold {stored_batches} batches in {stored_epochs} epochs"
        )
    budget = _Budget()
    epoch_offsets = _load_array(group, "epoch_offsets", where, budget, rows=n_epochs + 1, required=True)
    batch_offsets = _load_array(group, "batch_offsets", where, budget, rows=n_batches + 1, required=True)
    n_indices = int(batch_offsets[-1])
    if n_indices < 0:
        raise StoreError(f"{where}: batch_offsets must end at len(indices) >= 0, got {n_indices}")
    indices = _load_array(group, "indices", where, budget, rows=n_indices, required=True)
    _check_structure(indices, batch_offsets, epoch_offsets, n_samples, where=where)
    if verify:
        actual = schedule_digest(indices, batch_offsets)
        if actual != digest:
            raise StoreError(
                f"{where}: digest mismatch (stored {digest[:16]}..., computed {actual[:16]}...): "
                "the store was modified or is corrupt"
            )
    batch_arrays = {n: _load_array(group, n, where, budget, rows=n_batches) for n in batch_names}
    epoch_arrays = {n: _load_array(group, n, where, budget, rows=n_epochs) for n in epoch_names}
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
        schedgen_version=version_str,
        schedgen_format=fmt,
    )
    schedule.validate()
    return schedule


def check_format(attrs: Mapping, where: str) -> int:
    """Return the format of ``attrs`` (a store's attributes), or raise :class:`StoreError`.

    The format must be one of :data:`READ_FORMATS` (the other attributes of another
    format may mean something else), and a format-2 store's ``attributes_digest`` must
    match its other attributes (:func:`attributes_digest`), so that nothing read from
    them (k, method, params, dataset) can have been edited. Cheap: no array is read.
    """
    version = attrs.get("schedgen_format")
    if version is None:
        raise StoreError(f"{where} is not a schedgen schedule: attribute 'schedgen_format' is missing")
    if isinstance(version, bool) or not isinstance(version, int) or version not in READ_FORMATS:
        raise StoreError(
            f"{where}: unsupported schedule format {_short(version)}; this schedgen reads format "
            + " or ".join(map(str, READ_FORMATS))
        )
    if version == 1 and _ATTRS_DIGEST in attrs:
        # No writer of format 1 made this key: a format-2 store whose format was edited.
        raise StoreError(
            f"{where}: a format-1 store has no attribute {_ATTRS_DIGEST!r}, this one has: its "
            "schedgen_format was changed from 2 (the attributes were edited)"
        )
    if version >= 2:
        stored = attrs.get(_ATTRS_DIGEST)
        if stored is None:
            raise StoreError(
                f"{where}: attribute {_ATTRS_DIGEST!r} is missing; expected the digest of the attributes "
                f"in a format-{version} store"
            )
        if not isinstance(stored, str) or not _HEX64.fullmatch(stored):
            raise StoreError(f"{where}: attribute {_ATTRS_DIGEST!r} must be 64 lowercase hex digits, got {_short(stored)}")
        try:
            actual = attributes_digest(attrs)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"{where}: attributes cannot be written as canonical JSON: {_one_line(exc)}") from None
        if actual != stored:
            raise StoreError(
                f"{where}: attributes digest mismatch (stored {stored[:16]}..., computed {actual[:16]}...): "
                "the attributes do not match the digest; they were edited or are corrupt"
            )
    return version


def read_attrs(path: str | os.PathLike) -> dict:
    """The group attributes of a store, without reading its arrays (for listings)."""
    group = _open_group(path)
    where = str(path)
    attrs = _read_attrs(group, where)
    try:
        return json.loads(json.dumps(attrs))
    except Exception as exc:  # RecursionError on absurdly deep values, TypeError on non-JSON
        raise StoreError(f"{where}: attributes are not plain JSON: {_one_line(exc)}") from None
