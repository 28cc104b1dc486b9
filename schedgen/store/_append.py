"""Appends: hard-link the chunks a rewritten store shares with the one it replaces."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import ParameterError


@dataclass(frozen=True)
class Unchanged:
    """What a caller rewriting a store knows about the store it replaces.

    The promise: *if* the store now at the path has digest ``digest``, then for each
    name in ``prefix`` the first ``prefix[name]`` elements of its array equal those of
    the new schedule's array. :func:`~schedgen.store.write_schedule` then hard-links the whole chunks
    inside those prefixes from the old store instead of compressing them again (the
    bytes are the same: the codecs are deterministic), so appending to a long store
    costs the new part only. Anything it cannot confirm (another digest, other array
    metadata, a missing chunk file, a filesystem without hard links) is simply written.

    Linked chunk files are shared with the old store until it is removed, which is
    safe because no schedgen writer changes a store's files in place (zarr 3 writes a
    chunk to a temporary file and renames it). A chunk damaged on disk is linked
    forward as it is; the read-side checksum and digest then reject the store.

    Parameters
    ----------
    digest : str
        The digest (:attr:`Schedule.digest`) of the store expected at the path.
    prefix : Mapping of str to int
        Array name to the number of leading elements that the new schedule's array
        shares with that store's (integers >= 0).

    Raises
    ------
    ParameterError
        When a length in ``prefix`` is not an integer >= 0.
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
