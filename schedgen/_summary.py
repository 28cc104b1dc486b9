"""Dataset summaries: what a cache hit needs of a dataset, without loading it.

A cache hit needs the dataset only for its key: the fingerprint, N and D. For a
built-in dataset whose source files are known without loading it (digits: the CSV
bundled with scikit-learn, found without importing scikit-learn), these are kept in
``$XDG_CACHE_HOME/schedgen/datasets/<dataset>-<split>-<key>.json`` (default
``~/.cache/schedgen``), keyed by the files' paths, sizes and mtimes and the data
revision (``schedgen.revisions.DATA``), so that a hit neither imports scikit-learn nor reads the data. (Not in
the output folder, which holds the stores and the mmd caches of ``.cache/``.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import revisions
from ._proc import atomic_write
from .data import Dataset

__all__ = ["DatasetSummary", "summary_dir", "summary_path", "read_summary", "summary_of", "write_summary"]


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`cache_key` and the parameter functions read of a :class:`Dataset`."""

    name: str
    split: str
    n_samples: int
    n_features: int
    n_classes: int
    fingerprint: str
    groups: None = None  # built-in datasets have no groups


def _dataset_sources(dataset: str) -> list[Path] | None:
    """The files ``dataset`` is read from, when they are known without loading it."""
    if not isinstance(dataset, str) or dataset.strip().lower() != "digits":
        return None
    try:
        spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        f = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if f.is_file():
            return [f]
    return None


def summary_dir() -> Path:
    """Where dataset summaries are kept: ``$XDG_CACHE_HOME/schedgen/datasets`` (``~/.cache`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "schedgen" / "datasets"


def summary_path(dataset: str, split: str) -> Path | None:
    """Where the summary of ``dataset``'s ``split`` is kept, or None when its files are not known."""
    sources = _dataset_sources(dataset)
    if sources is None or split not in ("train", "test"):
        return None
    try:
        stats = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in sources]
    except OSError:
        return None
    name = dataset.strip().lower()
    blob = json.dumps({"dataset": name, "split": split, "sources": stats, "revision": revisions.DATA}, sort_keys=True)
    return summary_dir() / f"{name}-{split}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def read_summary(path: Path | None) -> DatasetSummary | None:
    if path is None:
        return None
    try:
        d = json.loads(path.read_text())
        return DatasetSummary(
            name=str(d["name"]), split=str(d["split"]), n_samples=int(d["n_samples"]),
            n_features=int(d["n_features"]), n_classes=int(d["n_classes"]), fingerprint=str(d["fingerprint"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: the dataset is loaded instead


def summary_of(ds: Dataset) -> DatasetSummary:
    return DatasetSummary(name=ds.name, split=ds.split, n_samples=ds.n_samples, n_features=ds.n_features,
                           n_classes=ds.n_classes, fingerprint=ds.fingerprint)


def write_summary(path: Path | None, ds: Dataset, known: DatasetSummary | None) -> None:
    """Remember ``ds``'s summary at ``path`` unless ``known`` (what was read there) already
    says it, atomically (a cache: failures are ignored), and remove the summaries of the
    same dataset and split made for other files or code."""
    if path is None or ds.groups is not None or known == summary_of(ds):
        return
    text = json.dumps({
        "name": ds.name, "split": ds.split, "n_samples": ds.n_samples, "n_features": ds.n_features,
        "n_classes": ds.n_classes, "fingerprint": ds.fingerprint,
    })
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text))
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for old in path.parent.glob(f"{prefix}*.json"):
            if old != path and len(old.name) == len(path.name):
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache: the next build loads the dataset instead
