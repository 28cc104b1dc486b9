"""Format constants, digests and canonical JSON (``docs/FORMAT.md``).

Format 2 adds ``attributes_digest``, a sha256 over the canonical JSON of every
other attribute (method, k, params, dataset, the array digests, ...), so an edited
attribute is refused like an edited array. Format-1 stores (no such digest: their
attributes are not covered) are still read; only format 2 is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

import numpy as np

from ..errors import StoreError
from ._messages import _one_line, _short

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
#: Optional array names: plain keys inside the store, never paths.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_INT64_MAX = 2**63 - 1


def schedule_digest(indices: np.ndarray, batch_offsets: np.ndarray) -> str:
    """Hex sha256 over the little-endian int64 bytes of ``indices`` then ``batch_offsets``.

    Parameters
    ----------
    indices : array of shape (n_indices,), integer
        Sample indices in replay order.
    batch_offsets : array of shape (n_batches + 1,), integer
        Batch boundaries into ``indices``.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    h = hashlib.sha256()
    # memoryview: no copy of arrays already contiguous little-endian int64
    h.update(memoryview(np.ascontiguousarray(indices, dtype="<i8")).cast("B"))
    h.update(memoryview(np.ascontiguousarray(batch_offsets, dtype="<i8")).cast("B"))
    return h.hexdigest()


def array_digest(a: np.ndarray) -> str:
    """Hex sha256 over an optional array's dtype string, shape and little-endian bytes.

    Parameters
    ----------
    a : array_like of shape (n_rows, ...)
        A fixed-size dtype array (numbers, dates or fixed-width strings).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
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

    Parameters
    ----------
    value : object
        Plain JSON: dicts with str keys, lists, str, int, float, bool, None.

    Returns
    -------
    bytes
        ASCII bytes.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    ).encode("ascii")


def attributes_digest(attrs: Mapping) -> str:
    """Hex sha256 over the canonical JSON of every attribute but ``attributes_digest``.

    Parameters
    ----------
    attrs : Mapping
        A store's group attributes (plain JSON).

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    TypeError, ValueError or RecursionError
        When ``attrs`` is not plain JSON.
    """
    return hashlib.sha256(canonical_json({k: v for k, v in attrs.items() if k != _ATTRS_DIGEST})).hexdigest()


def check_format(attrs: Mapping, where: str) -> int:
    """Return the format of ``attrs`` (a store's attributes), or raise :class:`StoreError`.

    The format must be one of :data:`READ_FORMATS` (the other attributes of another
    format may mean something else), and a format-2 store's ``attributes_digest`` must
    match its other attributes (:func:`attributes_digest`), so that nothing read from
    them (k, method, params, dataset) can have been edited. Cheap: no array is read.

    Parameters
    ----------
    attrs : Mapping
        The group attributes of a store.
    where : str
        The store's path or URL, to start each message with.

    Returns
    -------
    int
        The format, one of :data:`READ_FORMATS`.

    Raises
    ------
    StoreError
        On an unknown or missing format, or a format-2 attributes digest that is
        missing or does not match.
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
