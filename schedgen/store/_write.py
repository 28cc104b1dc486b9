"""Writing a schedule store: validate, fill a temporary directory, rename it in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import StoreError
from . import _append
from ._append import Unchanged, _link_chunks
from ._format import FORMAT_VERSION
from ._fs import atomic_directory
from ._schedule import Schedule

#: Indices are chunked so that a replay can read a remote store in a few requests.
_CHUNK = 1 << 20


def _codecs():
    import zarr

    # Checksummed chunks: a flipped byte in a compressed chunk is caught on read.
    return [zarr.codecs.ZstdCodec(level=3, checksum=True)]


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

    Parameters
    ----------
    schedule : Schedule
        The schedule to write; validated first.
    path : str or os.PathLike
        The store directory to create (a local path).
    overwrite : bool, default False
        Replace a store already at ``path`` (atomically, see
        :func:`~schedgen.store.atomic_directory`).
    unchanged : Unchanged, optional
        What the caller knows the new schedule shares with the store it replaces.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    StoreError
        When ``schedule`` is invalid (or its attributes are not plain JSON), ``path``
        exists without ``overwrite``, or the write fails (disk full, permissions).
    """
    schedule.validate()
    attrs = schedule._attributes(FORMAT_VERSION)  # before anything is written: refuses non-JSON params
    final = Path(path)
    old_fd = None
    try:
        with atomic_directory(final, replace=overwrite) as tmp:
            # looked up in _append at call time: the tests replace it there
            old_fd = _append._open_linkable(final, unchanged) if overwrite else None
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
