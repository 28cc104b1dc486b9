"""What an online record is written with: its ``dataset`` attribute and its path.

Shared by the recording samplers (:class:`Learn2MixBatchSampler`,
:class:`AdaptiveBatchSampler`); the defaults are learn2mix's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ParameterError, SchedgenError
from ..methods.learn2mix import Learn2MixPlanner
from ..store import is_remote, read_attrs

__all__ = ["check_record_to", "dataset_attr", "online_dataset_attr"]

#: What ``dataset_info`` may set; ``n_samples`` and ``n_classes`` come from the labels.
_DATASET_INFO_KEYS = ("name", "split", "fingerprint")


def dataset_attr(info: Any, planner: Learn2MixPlanner, labels_sha256: str) -> dict:
    """The learn2mix record's ``dataset`` attribute: ``dataset_info`` over the defaults."""
    return online_dataset_attr(
        info, n_samples=planner.n_samples, n_classes=planner.n_classes, fingerprint=labels_sha256
    )


def online_dataset_attr(
    info: Any, *, n_samples: int, n_classes: int | None, fingerprint: str | None, source: str = "the labels"
) -> dict:
    """A record's ``dataset`` attribute: ``dataset_info`` (name, split, fingerprint) over the defaults.

    ``fingerprint=None`` and no fingerprint in ``info``: the attribute has none (a
    replay then checks the dataset's length only). ``source`` names where
    ``n_samples`` and ``n_classes`` come from, for the message.
    """
    d = {"name": "online", "split": "train", "fingerprint": fingerprint}
    if info is not None:
        if not isinstance(info, Mapping):
            raise ParameterError(
                f"dataset_info must be a mapping with keys among {list(_DATASET_INFO_KEYS)}, "
                f"got {type(info).__name__}"
            )
        unknown = sorted(str(key) for key in info if key not in _DATASET_INFO_KEYS)
        if unknown:
            raise ParameterError(
                f"dataset_info may set only {list(_DATASET_INFO_KEYS)} (n_samples and n_classes come "
                f"from {source}), got {unknown}"
            )
        for key, value in info.items():
            if not isinstance(value, str) or not value:
                raise ParameterError(f"dataset_info[{key!r}] must be a non-empty string, got {value!r}")
            d[key] = value
    out = {"name": d["name"], "split": d["split"], "n_samples": n_samples, "n_classes": n_classes}
    if d["fingerprint"] is not None:
        out["fingerprint"] = d["fingerprint"]
    return out


def check_record_to(path: Any, *, method: str = "learn2mix", name: str = "record_to") -> Path | None:
    """A local path that is free or holds an online ``method`` record (which may be replaced).

    ``name`` is the argument's name in messages.
    """
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ParameterError(f"{name} must be a local path (str or os.PathLike), got {type(path).__name__}")
    s = os.fspath(path)
    if not isinstance(s, str):
        raise ParameterError(f"{name} must be a str path, got {s!r}")
    if is_remote(s):
        raise ParameterError(
            f"{name} must be a local path (the record is replaced by renaming a directory), got {s!r}"
        )
    p = Path(s[len("file://") :] if s.startswith("file://") else s)
    if p.exists() or p.is_symlink():
        try:
            attrs = read_attrs(p)
        except SchedgenError:
            attrs = {}
        params = attrs.get("params")
        if attrs.get("method") != method or not isinstance(params, dict) or params.get("online") is not True:
            raise ParameterError(
                f"{name}={str(p)!r} exists and is not an online {method} record; "
                "refusing to replace it (choose a new path or remove it)"
            )
    return p
