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

This module is the public front; the work is done in private modules, one job each:

* ``_format``: format constants, digests, canonical JSON, :func:`check_format`;
* ``_schedule``: :class:`Schedule` and its structural checks;
* ``_fs``: :func:`atomic_directory` (``renameat2`` exchange), :func:`remove_orphans`;
* ``_append``: :class:`Unchanged` and the hard-linking of unchanged chunks;
* ``_write``: :func:`write_schedule`;
* ``_budget``: the memory budget of a read;
* ``_read``: the hardened reader, :func:`read_schedule`, :func:`read_attrs`;
* ``_messages``: bounded one-line renderings for error messages.
"""

from __future__ import annotations

from ._append import Unchanged
from ._format import (
    FORMAT1_NOTE,
    FORMAT_VERSION,
    READ_FORMATS,
    array_digest,
    attributes_digest,
    canonical_json,
    check_format,
    schedule_digest,
)
from ._fs import atomic_directory, remove_orphans
from ._read import is_remote, read_attrs, read_schedule
from ._schedule import Schedule
from ._write import write_schedule

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
