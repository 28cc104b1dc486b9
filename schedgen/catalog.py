"""Looking at built schedules: info, verify, list, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .data import load_dataset
from .errors import ParameterError, StoreError
from .store import atomic_directory, check_format, read_attrs, read_schedule

__all__ = ["info", "verify", "list_schedules", "export", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("npy", "jsonl")


def info(path) -> dict:
    """Summary of a store: its attributes plus batch-size statistics (reads and checks it)."""
    s = read_schedule(path)
    sizes = np.diff(s.batch_offsets)
    out = {
        "path": str(path),
        "method": s.method,
        "k": s.k,
        "n_batches": s.n_batches,
        "n_epochs": s.n_epochs,
        "n_indices": int(len(s.indices)),
        "batch_size_min": int(sizes.min()) if len(sizes) else 0,
        "batch_size_max": int(sizes.max()) if len(sizes) else 0,
        "digest": s.digest,
        "dataset": s.dataset,
        "params": s.params,
        "batch_arrays": sorted(s.batch_arrays),
        "epoch_arrays": sorted(s.epoch_arrays),
        "schedgen_version": s.schedgen_version,
    }
    return out


def verify(path, *, dataset: str | None = None, split: str | None = None, data_dir=None) -> dict:
    """Recompute the digests (and, given a dataset, its fingerprint) and compare.

    Raises :class:`StoreError` on any mismatch.
    """
    s = read_schedule(path, verify=True)  # raises on a digest mismatch
    result = {"path": str(path), "digest": s.digest, "digest_ok": True}
    if dataset is not None:
        ds = load_dataset(dataset, split=split or s.dataset.get("split", "train"), data_dir=data_dir)
        if ds.fingerprint != s.dataset.get("fingerprint"):
            raise StoreError(
                f"{path}: dataset fingerprint mismatch: the schedule was built on "
                f"{str(s.dataset.get('fingerprint'))[:16]}..., {ds.name} ({ds.split}) is {ds.fingerprint[:16]}..."
            )
        result["fingerprint_ok"] = True
        result["fingerprint"] = ds.fingerprint
    return result


def list_schedules(directory) -> list[dict]:
    """One row per schedule store directly under ``directory`` (sorted by name).

    Stores that cannot be read, and stores of another format than
    :data:`~schedgen.store.FORMAT_VERSION` (whose other attributes may mean something
    else), are listed with an ``error`` field instead of failing.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ParameterError(f"{d} is not a directory; expected a folder of .zarr schedule stores")
    rows = []
    for p in sorted(d.glob("*.zarr")):
        try:
            a = read_attrs(p)
            check_format(a, str(p))
            ds = a.get("dataset", {}) if isinstance(a.get("dataset"), dict) else {}
            rows.append(
                {
                    "path": str(p),
                    "method": a.get("method"),
                    "dataset": ds.get("name"),
                    "split": ds.get("split"),
                    "k": a.get("k"),
                    "n_batches": a.get("n_batches"),
                    "n_epochs": a.get("n_epochs"),
                    "digest": a.get("digest"),
                }
            )
        except StoreError as exc:
            rows.append({"path": str(p), "error": str(exc)})
    return rows


def export(path, out=None, *, fmt: str = "npy", overwrite: bool = False) -> Path:
    """Write a schedule for trainers without Zarr.

    ``npy``: a directory with ``indices.npy``, ``batch_offsets.npy``, ``epoch_offsets.npy``,
    each optional array as ``<name>.npy`` and ``meta.json`` (the store's attributes).
    ``jsonl``: one JSON object per batch, ``{"epoch": e, "batch": b, "indices": [...]}``,
    in replay order. Written atomically. ``out`` defaults to the store's path with
    ``.zarr`` replaced by ``.npy.d`` or ``.jsonl``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ParameterError(f"export format must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
    s = read_schedule(path)
    if out is None:
        out = str(path).rstrip("/").removesuffix(".zarr") + (".npy.d" if fmt == "npy" else ".jsonl")
    out = Path(out)
    if fmt == "npy":
        with atomic_directory(out, replace=overwrite) as tmp:
            tmp.mkdir()
            arrays = {
                "indices": s.indices,
                "batch_offsets": s.batch_offsets,
                "epoch_offsets": s.epoch_offsets,
                **s.batch_arrays,
                **s.epoch_arrays,
            }
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", a)
            (tmp / "meta.json").write_text(json.dumps(s.attrs(), indent=2, sort_keys=True) + "\n")
        return out
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; expected a new path (or pass --force to replace it)")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            for e in range(s.n_epochs):
                for b in s.epoch_batches(e):
                    f.write(json.dumps({"epoch": e, "batch": b, "indices": s.batch(b).tolist()}) + "\n")
        os.replace(tmp, out)
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
