"""The hardened reader: a store is untrusted input.

A local store must not link outside itself or hold FIFOs or devices; array sizes
are checked against the attributes and the memory budget (:mod:`._budget`) before
anything is allocated; every failure inside zarr or the codecs becomes a
:class:`~schedgen.errors.StoreError` naming the path.
"""

from __future__ import annotations

import glob
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import StoreError
from ._budget import _Budget
from ._format import (
    _HEX64,
    _INT64_MAX,
    _NAME,
    _REQUIRED,
    array_digest,
    check_format,
    schedule_digest,
)
from ._messages import _one_line, _short
from ._schedule import Schedule, _check_structure

#: Largest metadata document (zarr.json) a reader parses; real ones are a few KiB.
_MAX_METADATA_BYTES = 16 << 20


def is_remote(path: str | os.PathLike) -> bool:
    """True for an fsspec URL such as ``s3://b/x.zarr`` or ``http://h/x.zarr``.

    Parameters
    ----------
    path : str or os.PathLike
        A store path or URL (``file://`` URLs are local).

    Returns
    -------
    bool
    """
    s = str(path)
    return "://" in s and not s.startswith("file://")


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



@dataclass(frozen=True)
class _Header:
    """The attributes :func:`read_schedule` relies on, each checked (no array read)."""

    method: str
    params: dict
    dataset: dict
    k: int
    n_batches: int
    n_epochs: int
    digest: str
    version: str | None
    n_samples: int
    batch_names: list
    epoch_names: list
    digests: dict


def _read_header(attrs: Mapping, where: str, *, verify: bool) -> _Header:
    """Check the attributes of a store whose format was checked; raise StoreError on a defect."""
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
    return _Header(method, params, dataset, k, n_batches, n_epochs, digest, version_str, n_samples,
                   batch_names, epoch_names, digests)


def _read_arrays(group, h: _Header, where: str, *, verify: bool) -> tuple:
    """``(indices, batch_offsets, epoch_offsets, batch_arrays, epoch_arrays)``, each
    checked against ``h`` before it is read (and against its digest when ``verify``)."""
    # Small arrays first, each checked against the attributes before it is read,
    # so that no claimed size is allocated before it has been cross-checked.
    required = {n: _open_array(group, n, where) for n in _REQUIRED}
    for name, (_, shape, dtype) in required.items():
        if len(shape) != 1 or dtype != np.dtype("<i8"):
            raise StoreError(f"{where}: array {name!r} must be 1-D int64, got {len(shape)}-D {dtype}")
    stored_batches = required["batch_offsets"][1][0] - 1
    stored_epochs = required["epoch_offsets"][1][0] - 1
    if stored_batches != h.n_batches or stored_epochs != h.n_epochs:
        raise StoreError(
            f"{where}: attributes say {h.n_batches} batches in {h.n_epochs} epochs, "
            f"arrays hold {stored_batches} batches in {stored_epochs} epochs"
        )
    budget = _Budget()
    epoch_offsets = _load_array(group, "epoch_offsets", where, budget, rows=h.n_epochs + 1, required=True)
    batch_offsets = _load_array(group, "batch_offsets", where, budget, rows=h.n_batches + 1, required=True)
    n_indices = int(batch_offsets[-1])
    if n_indices < 0:
        raise StoreError(f"{where}: batch_offsets must end at len(indices) >= 0, got {n_indices}")
    indices = _load_array(group, "indices", where, budget, rows=n_indices, required=True)
    _check_structure(indices, batch_offsets, epoch_offsets, h.n_samples, where=where)
    if verify:
        actual = schedule_digest(indices, batch_offsets)
        if actual != h.digest:
            raise StoreError(
                f"{where}: digest mismatch (stored {h.digest[:16]}..., computed {actual[:16]}...): "
                "the store was modified or is corrupt"
            )
    batch_arrays = {n: _load_array(group, n, where, budget, rows=h.n_batches) for n in h.batch_names}
    epoch_arrays = {n: _load_array(group, n, where, budget, rows=h.n_epochs) for n in h.epoch_names}
    if PARTNERS in batch_arrays:
        _check_partners(batch_arrays[PARTNERS], h.n_samples, where)
    if verify:
        covered = {"epoch_offsets": epoch_offsets, **batch_arrays, **epoch_arrays}
        for name, a in covered.items():
            if h.digests.get(name) != array_digest(a):
                raise StoreError(f"{where}: array {name!r} does not match its recorded digest")
    return indices, batch_offsets, epoch_offsets, batch_arrays, epoch_arrays


#: The per-batch array of partner batches (``schedgen build --pair``), docs/FORMAT.md.
PARTNERS = "partner_indices"


def _check_partners(p: np.ndarray, n_samples: int, where: str) -> None:
    """``partner_indices``: 2-D int64 (n_batches, M) with M >= 1, every value in ``[0, n_samples)``
    (a trainer indexes its dataset with them, like ``indices``)."""
    if p.ndim != 2 or p.dtype != np.dtype("<i8") or p.shape[1] < 1:
        raise StoreError(f"{where}: array {PARTNERS!r} must be 2-D int64 (n_batches, M >= 1), "
                         f"got {p.ndim}-D {p.dtype} of shape {p.shape}")
    if p.size and (int(p.min()) < 0 or int(p.max()) >= n_samples):
        raise StoreError(f"{where}: array {PARTNERS!r} holds values outside [0, {n_samples}): "
                         f"{int(p.min())}..{int(p.max())}")


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

    Parameters
    ----------
    path : str or os.PathLike
        A local store directory, a ``file://`` URL or an fsspec URL (``s3://...``).
    verify : bool, default True
        Also check the digests of the arrays (the attributes digest is always checked).

    Returns
    -------
    Schedule
        The validated schedule.

    Raises
    ------
    StoreError
        On any defect of the store, or when it cannot be opened.
    """
    where = str(path)
    group = _open_group(path)
    attrs = _read_attrs(group, where)
    fmt = check_format(attrs, where)
    h = _read_header(attrs, where, verify=verify)
    indices, batch_offsets, epoch_offsets, batch_arrays, epoch_arrays = _read_arrays(group, h, where, verify=verify)
    schedule = Schedule(
        indices=indices,
        batch_offsets=batch_offsets,
        epoch_offsets=epoch_offsets,
        method=h.method,
        params=h.params,
        dataset=h.dataset,
        k=h.k,
        batch_arrays=batch_arrays,
        epoch_arrays=epoch_arrays,
        schedgen_version=h.version,
        schedgen_format=fmt,
    )
    schedule.validate()
    return schedule


def read_attrs(path: str | os.PathLike) -> dict:
    """The group attributes of a store, without reading its arrays (for listings).

    Neither the format nor any digest is checked (see :func:`check_format`).

    Parameters
    ----------
    path : str or os.PathLike
        A local store directory, a ``file://`` URL or an fsspec URL.

    Returns
    -------
    dict
        The attributes, as plain JSON values (a copy).

    Raises
    ------
    StoreError
        When the store cannot be opened or its attributes are not plain JSON.
    """
    group = _open_group(path)
    where = str(path)
    attrs = _read_attrs(group, where)
    try:
        return json.loads(json.dumps(attrs))
    except Exception as exc:  # RecursionError on absurdly deep values, TypeError on non-JSON
        raise StoreError(f"{where}: attributes are not plain JSON: {_one_line(exc)}") from None
