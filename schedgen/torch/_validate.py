"""Checks shared by the samplers and the dataset: arguments, state dicts, dataset identity.

One integer check (arguments and state dicts alike), one real, one string
and one choice check, the labels' sha256, and the test that a dataset is the one a schedule
was built on. Messages say what was expected and what was received.
"""

from __future__ import annotations

import hashlib
import numbers
import re
from typing import Any, Mapping

import numpy as np

from ..errors import ParameterError
from ..store import Schedule

_HEX64 = re.compile(r"[0-9a-f]{64}")


def shown(value: Any) -> str:
    """``repr`` of a received value on one line, at most 80 characters (arrays can be huge)."""
    try:
        r = " ".join(repr(value).split())
    except Exception:  # a broken __repr__
        r = f"<{type(value).__name__}>"
    return r if len(r) <= 80 else r[:77] + "..."


def check_int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high)``.

    The one integer check of :mod:`schedgen.torch` (arguments and state dicts
    alike): a Python int or a NumPy integer scalar; bools (``bool``,
    ``np.bool_``), floats (even ``1.0``), arrays (even 0-d) and strings are refused.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {shown(value)} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ParameterError(f"{name} must be an integer {bound}, got {name}={value}")
    return value


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as a float: a Python or NumPy real scalar, not a bool."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {shown(value)} ({type(value).__name__})")
    return float(value)


def check_str(name: str, value: Any, *, hex64: bool = False) -> str:
    """Return ``value``, a str (64 lowercase hex digits with ``hex64``)."""
    if not isinstance(value, str) or (hex64 and not _HEX64.fullmatch(value)):
        what = "a sha256 digest (64 lowercase hex digits)" if hex64 else "a string"
        raise ParameterError(f"{name} must be {what}, got {shown(value)} ({type(value).__name__})")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value``, one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(f"{name} must be one of {list(choices)}, got {shown(value)} ({type(value).__name__})")
    return value


def labels_sha256(labels: np.ndarray) -> str:
    """Hex sha256 of integer labels as little-endian int64 (an online record's default fingerprint)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


# ---------------------------------------------------------------------- dataset identity


def describe(d: Mapping[str, Any]) -> str:
    """``name (split)`` of a store's ``dataset`` attribute, for messages."""
    name, split = d.get("name"), d.get("split", "train")
    return f"{name if isinstance(name, str) else shown(name)} ({split if isinstance(split, str) else shown(split)})"


def short(value: Any) -> str:
    """A fingerprint or digest for messages: its first 16 characters."""
    return f"{value[:16]}..." if isinstance(value, str) and len(value) > 16 else shown(value)


def same_data(fingerprint: str, labels_hash: str | None, d: Mapping[str, Any], params: Any) -> bool:
    """Whether data of this fingerprint (and labels hash) is the store's dataset ``d``.

    An online learn2mix record without ``dataset_info`` carries the labels' sha256
    as its fingerprint, so for online records the labels hash matches too.
    """
    want = d.get("fingerprint")
    if fingerprint == want:
        return True
    online = isinstance(params, Mapping) and params.get("online") is True
    return online and labels_hash is not None and labels_hash == want


def check_dataset(dataset: Any, schedule: Schedule) -> None:
    """Refuse a dataset whose length (or schedgen fingerprint) is not the schedule's."""
    d = schedule.dataset
    n = schedule.n_samples
    try:
        size = len(dataset)
    except TypeError:
        raise ParameterError(
            f"dataset must be a map-style dataset with a length, like the one given to DataLoader; "
            f"got {type(dataset).__name__}, which has no len()"
        ) from None
    if size != n:
        raise ParameterError(
            f"dataset has {size} samples but the schedule was built on the {n} of {describe(d)}: "
            "its indices would fetch other samples; pass the dataset it was built on, "
            "e.g. schedgen.torch.schedule_dataset(store)"
        )
    fingerprint = getattr(dataset, "schedgen_fingerprint", None)
    if fingerprint is None or d.get("fingerprint") is None:
        return
    if not same_data(fingerprint, getattr(dataset, "schedgen_labels_sha256", None), d, schedule.params):
        raise ParameterError(
            f"dataset is not the one the schedule was built on: the schedule's dataset {describe(d)} has "
            f"fingerprint {short(d.get('fingerprint'))}, the dataset's schedgen_fingerprint is {short(fingerprint)}"
        )
