"""Looking at built schedules: info, verify, list, export (local stores, stores at a URL,
and registries: :mod:`schedgen.registry`)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import numpy as np

from ._proc import atomic_write
from .data import load_dataset
from .errors import ParameterError, SchedgenError, StoreError
from .registry import display_url, fetch, is_registry, list_registry, registry_store
from .store import FORMAT1_NOTE, atomic_directory, check_format, is_remote, read_attrs, read_schedule

__all__ = ["info", "verify", "list_schedules", "export", "EXPORT_FORMATS", "INDEX_DTYPES"]

EXPORT_FORMATS = ("npy", "jsonl")

#: Choices of ``export(..., index_dtype=)``: ``auto`` is uint32 when the dataset has fewer than 2**32 samples.
INDEX_DTYPES = ("int64", "uint32", "auto")

#: The exported arrays that hold sample indices (values in ``[0, n_samples)``), the ones ``index_dtype`` narrows.
#: Offsets stay int64: they count positions in ``indices``, which can pass 2**32 over many epochs even when N does not.
_INDEX_ARRAYS = ("indices", "partner_indices")


def info(path) -> dict:
    """Summary of a store: its attributes plus batch-size statistics (reads and checks it).

    A store in a registry (a URL whose ``manifest.json`` exists) is first fetched into the
    local cache and verified (:func:`schedgen.registry.fetch`); its summary gets
    ``registry`` (name, catalog key, content digest, files, bytes).
    """
    if is_remote(path):
        m = registry_store(str(path))
        if m is not None:
            out = info(fetch(str(path)))
            out["path"] = display_url(str(path))  # never a user:password@ part
            out["registry"] = {"name": m.name, "key": m.key, "content": m.content,
                               "files": len(m.files), "bytes": m.n_bytes}
            return out
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
        "format": s.schedgen_format,
    }
    return out


def verify(path, *, dataset: str | None = None, split: str | None = None, data_dir=None) -> dict:
    """Recompute the digests (and, given a dataset, its fingerprint) and compare.

    ``attributes_ok`` is true when the attributes are covered by a digest that was
    checked (format 2); a format-1 store's result carries ``note`` (:data:`FORMAT1_NOTE`).
    Raises :class:`StoreError` on any mismatch.
    """
    s = read_schedule(path, verify=True)  # raises on a digest mismatch
    result = {"path": str(path), "digest": s.digest, "digest_ok": True, "format": s.schedgen_format,
              "attributes_ok": s.attributes_covered}
    if not s.attributes_covered:
        result["note"] = FORMAT1_NOTE
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


def list_schedules(directory, *, verify: bool = False) -> list[dict]:
    """One row per schedule store directly under ``directory`` (sorted by name).

    Without ``verify`` only the attributes are read: a truncated or tampered store
    can look healthy. With ``verify`` every store is also read in full and its
    digests recomputed (as :func:`verify` does, without the dataset check): each row
    gets ``verified`` (True or False; when False, ``error`` says why).

    Stores that cannot be read, and stores of a format this schedgen does not read
    (:data:`~schedgen.store.READ_FORMATS`; their other attributes may mean something
    else), are listed with an ``error`` field instead of failing.

    A registry (a URL, or a local folder holding ``index.json``) is listed from its
    catalog (:func:`schedgen.registry.list_registry`): stores without a manifest are not
    in it; with ``verify`` each store is fetched into the cache and verified.
    """
    s = str(directory)
    if is_remote(s) or s.startswith("file://"):
        if not is_registry(s):
            raise ParameterError(
                f"cannot list {display_url(s)}: list needs a local folder of .zarr stores, got a URL with no registry catalog "
                "(index.json) there (a store at a URL works with info, verify, export and plot, e.g. schedgen info URL)"
            )
        return list_registry(s, verify=verify)
    if (Path(s) / "index.json").is_file():
        return list_registry(s, verify=verify)
    d = Path(directory)
    if not d.is_dir():
        raise ParameterError(f"{d} is not a directory; expected a folder of .zarr schedule stores")
    rows = []
    for p in sorted(d.glob("*.zarr")):
        try:
            a = read_attrs(p)
            check_format(a, str(p))
        except StoreError as exc:
            rows.append({"path": str(p), "error": str(exc), **({"verified": False} if verify else {})})
            continue
        ds = a.get("dataset", {}) if isinstance(a.get("dataset"), dict) else {}
        params = a.get("params") if isinstance(a.get("params"), dict) else {}
        row = {
            "path": str(p),
            "method": a.get("method"),
            "solver": params.get("solver"),
            "kernel": params.get("kernel"),
            "dataset": ds.get("name"),
            "split": ds.get("split"),
            "k": a.get("k"),
            "n_batches": a.get("n_batches"),
            "n_epochs": a.get("n_epochs"),
            "digest": a.get("digest"),
        }
        if verify:
            try:
                read_schedule(p, verify=True)
                row["verified"] = True
            except SchedgenError as exc:
                row["verified"] = False
                row["error"] = str(exc)
        rows.append(row)
    return rows


def default_export_path(path, fmt: str) -> Path:
    """Where :func:`export` writes without ``out``: beside a local store (``.zarr``
    replaced by ``.npy.d`` or ``.jsonl``); for a store at a URL, its base name in the
    current directory (as ``curl -O`` does), e.g. ``http://h/a/X.zarr`` -> ``X.npy.d``."""
    suffix = ".npy.d" if fmt == "npy" else ".jsonl"
    s = str(path)
    if is_remote(s) or s.startswith("file://"):
        url_path = unquote(urlsplit(s).path).rstrip("/")
        if s.startswith("file://"):
            return Path(url_path.removesuffix(".zarr") + suffix)
        name = PurePosixPath(url_path).name.removesuffix(".zarr")
        if name in ("", ".", ".."):
            raise ParameterError(
                f"cannot name the export of {s}: expected a URL ending in a store name (e.g. .../X.zarr), "
                "got none; pass -o/--output PATH"
            )
        return Path(name + suffix)
    return Path(s.rstrip("/").removesuffix(".zarr") + suffix)


def _make_parent(out: Path) -> None:
    """Create ``out``'s folder (and its parents), or raise the one ``cannot write`` error."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where the folder should be
        raise StoreError(f"cannot write {out}: Not a directory ({out.parent} is a file)") from None
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None


def export(path, out=None, *, fmt: str = "npy", overwrite: bool = False, index_dtype: str = "int64") -> Path:
    """Write a schedule for trainers without Zarr.

    ``npy``: a directory with ``indices.npy``, ``batch_offsets.npy``, ``epoch_offsets.npy``,
    each optional array as ``<name>.npy`` and ``meta.json`` (the store's attributes).
    ``jsonl``: one JSON object per batch, ``{"epoch": e, "batch": b, "indices": [...]}``,
    in replay order. Written atomically; missing parent folders are created; a
    destination that cannot be written raises :class:`StoreError` ``cannot write OUT:
    REASON`` and leaves nothing. ``out`` defaults to :func:`default_export_path`.

    ``index_dtype`` (``npy`` only) is the dtype of the arrays of sample indices
    (``indices`` and, for a ``--pair`` store, ``partner_indices``): ``int64`` (the
    default, the store's own dtype), ``uint32`` (half the bytes, as OLMo's
    ``global_indices.npy``; refused when the dataset has ``N >= 2**32`` samples) or
    ``auto`` (uint32 when ``N < 2**32``, else int64). Offsets and the other arrays
    keep their dtypes. Every file is a plain ``.npy`` (``np.save`` with
    ``allow_pickle=False``: never a pickle), readable with ``np.load(f,
    allow_pickle=False)`` or ``np.load(f, mmap_mode="r")``; the dtype is in its header.
    int64 stays the default because a uint32 array changes what a reader gets:
    ``torch.from_numpy`` of it is a uint32 tensor, which torch refuses as an index.
    """
    if fmt not in EXPORT_FORMATS:
        raise ParameterError(f"export format must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
    if index_dtype not in INDEX_DTYPES:
        raise ParameterError(f"index dtype must be one of {list(INDEX_DTYPES)}, got {index_dtype!r}")
    if fmt != "npy" and index_dtype != "int64":
        raise ParameterError(
            f"index dtype {index_dtype!r} applies to --format npy only (jsonl writes decimal integers), got --format {fmt}"
        )
    out = default_export_path(path, fmt) if out is None else Path(out)
    s = read_schedule(path)
    narrow = fmt == "npy" and _narrow_indices(index_dtype, s.n_samples)  # refused before anything is written
    _make_parent(out)
    if fmt == "npy":
        try:
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
                    if narrow and name in _INDEX_ARRAYS:
                        a = _as_uint32(a, name)
                    # allow_pickle=False: an object array raises instead of being written as a pickle.
                    np.save(tmp / f"{name}.npy", a, allow_pickle=False)
                (tmp / "meta.json").write_text(json.dumps(s.attrs(), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
        return out
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; expected a new path (or pass --force to replace it)")
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            for e in range(s.n_epochs):
                for b in s.epoch_batches(e):
                    f.write(json.dumps({"epoch": e, "batch": b, "indices": s.batch(b).tolist()}) + "\n")

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def _narrow_indices(index_dtype: str, n_samples: int) -> bool:
    """Whether the index arrays are written as uint32; ``uint32`` with ``N >= 2**32`` is refused."""
    fits = n_samples < 2**32  # the largest index, N - 1, is then at most 2**32 - 2
    if index_dtype == "uint32" and not fits:
        raise ParameterError(
            f"index dtype uint32 holds indices below 2**32 = {2**32}, but the dataset has N={n_samples} samples; "
            "use int64 (or auto)"
        )
    return index_dtype == "uint32" or (index_dtype == "auto" and fits)


def _as_uint32(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` as uint32, refusing any value the cast would change (the store's checks make this unreachable)."""
    if a.size and (int(a.min()) < 0 or int(a.max()) >= 2**32):
        raise StoreError(f"{name} holds values outside [0, 2**32) and cannot be written as uint32")
    return a.astype(np.uint32)
