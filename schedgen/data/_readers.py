"""Readers of the on-disk layouts of the built-in datasets (torchvision's).

Each ``_read_<family>(key, split, root, download)`` returns the raw ``(X, y)``
as stored, fetching missing files first when ``download`` is true;
:class:`~schedgen.data.Dataset` runs :func:`~schedgen.data.validate_arrays` on them.
scipy and scikit-learn are imported by the readers that need them.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import shlex
import struct
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from ._dataset import _integral
from ._download import _atomic_path, _download
from ._sources import _CIFAR_DIR, _CIFAR_FILES, _CIFAR_URL, _MNIST_URLS, _SVHN_URL, default_data_dir

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def _missing(
    key: str, split: str, root: Path, paths: list[str], url: str, *, alternatives: bool = False
) -> DataError:
    """The error for absent dataset files.

    Every caller of :func:`~schedgen.data.load_dataset` can get it (``build``, ``verify``,
    ``plot``, Python code), and only ``schedgen build`` has ``--download``, so
    the hint names that full command (with ``--split``/``--data-dir`` when
    they are not the defaults, so the files land where this caller looked)
    rather than a bare ``--download`` that ``verify`` would not accept.
    """
    joined = (" or " if alternatives else " and ").join(paths)
    command = f"schedgen build --dataset {key}"
    if split != "train":
        command += f" --split {split}"
    if root != Path(os.path.abspath(default_data_dir())):
        command += f" --data-dir {shlex.quote(str(root))}"
    return DataError(
        f"{key} {split} split not found; expected {joined}. Place the file(s) there, or fetch them "
        f"from {url} with `{command} --download` (download=True in Python)"
    )


def _read_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # heavy; only this reader needs it

    X, y = load_digits(return_X_y=True)
    test = np.arange(len(y)) % 5 == 0
    keep = test if split == "test" else ~test
    return X[keep], y[keep]


def _read_svhn(key: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    filename = f"{split}_32x32.mat"
    url = _SVHN_URL + filename
    candidates = [root / "svhn" / filename, root / filename]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        if not download:
            raise _missing(key, split, root, [str(p) for p in candidates], url, alternatives=True)
        path = candidates[0]
        _download(url, path)

    import scipy.io  # only this reader needs scipy

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises several types for a file that is not a .mat
        raise DataError(f"{path}: cannot read as a MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        # loadmat read only X and y; list every variable the file holds.
        found = sorted(entry[0] for entry in scipy.io.whosmat(path))
        raise DataError(f"{path}: expected variables 'X' and 'y' in the .mat file, found {found}")
    X, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if X.ndim != 4:
        raise DataError(f"{path}: expected X of shape (32, 32, 3, n_samples), got shape {X.shape}")
    n = X.shape[3]
    if y.size != n or y.ndim > 2:
        raise DataError(f"{path}: expected y of shape ({n}, 1) to match X {X.shape}, got shape {y.shape}")
    y = _integral(y.reshape(-1), "labels", str(path))
    out = (y < 0) | (y > 10)
    if out.any():
        first = int(np.argmax(out))
        raise DataError(
            f"{path}: SVHN labels must be 1..10 (10 = digit 0), found {int(y[first])} at row {first}"
        )
    # torchvision: (H, W, C, N) -> (N, C, H, W); label 10 is digit 0.
    X = np.ascontiguousarray(np.transpose(X, (3, 2, 0, 1))).reshape(n, -1)
    return X, y % 10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and nothing else (no arbitrary code)."""

    def find_class(self, module: str, name: str):
        allowed = _pickle_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a dataset pickle")


@functools.lru_cache(maxsize=1)
def _pickle_globals() -> dict[tuple[str, str], object]:
    import codecs

    # Take the functions from numpy's own reductions, so this works whichever
    # module path (numpy.core or numpy._core) the installed numpy uses.
    reconstruct = np.ndarray(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 pickles
    scalar = np.float64(0).__reduce__()[0]
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            entry = _ArrayUnpickler(fh, encoding="latin1").load()
    except Exception as exc:  # pickle raises many types on a corrupt or hostile file
        raise DataError(
            f"{path}: cannot read as a CIFAR-10 batch pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(entry, dict):
        raise DataError(
            f"{path}: expected a pickled dict with 'data' and 'labels', got {type(entry).__name__}"
        )
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise DataError(f"{path}: expected keys 'data' and 'labels', found {sorted(map(str, entry))}")
    X = np.asarray(entry["data"])
    y = np.asarray(entry["labels"])
    if X.ndim != 2 or X.shape[1] != 3072:
        raise DataError(f"{path}: expected data of shape (n_samples, 3072), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"{path}: expected {len(X)} labels to match data {X.shape}, got shape {y.shape}")
    y = _integral(y, "labels", str(path))
    _check_label_range(y, 10, path)
    return X, y


def _read_cifar10(key: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    folder = root / _CIFAR_DIR
    paths = [folder / f for f in _CIFAR_FILES[split]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        if not download:
            raise _missing(key, split, root, [str(p) for p in missing], _CIFAR_URL)
        archive = root / "cifar-10-python.tar.gz"
        if not archive.is_file():
            _download(_CIFAR_URL, archive)
        _extract_cifar(archive, folder)
    parts = [_read_cifar_batch(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _extract_cifar(archive: Path, folder: Path) -> None:
    """Extract the CIFAR-10 batch files from ``archive`` into ``folder``.

    Only regular files with known names are written, each under its base name
    via a temporary file and ``os.replace``; an archive with a member that
    would land outside its directory is refused as a whole.
    """
    wanted = {f"{_CIFAR_DIR}/{f}" for files in _CIFAR_FILES.values() for f in files}
    wanted.add(f"{_CIFAR_DIR}/batches.meta")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                for target in (m.name, m.linkname if (m.issym() or m.islnk()) else ""):
                    parts = PurePosixPath(target.replace("\\", "/")).parts
                    if target and (target.startswith(("/", "\\")) or ".." in parts or ":" in target):
                        raise DataError(
                            f"{archive}: refusing to extract: member {m.name!r} points outside the "
                            "target directory"
                        )
            by_name = {PurePosixPath(m.name).as_posix(): m for m in members}
            required = {f"{_CIFAR_DIR}/{f}" for files in _CIFAR_FILES.values() for f in files}
            absent = sorted(required - by_name.keys())
            if absent:
                raise DataError(f"{archive}: not a CIFAR-10 archive; missing members {absent}")
            folder.mkdir(parents=True, exist_ok=True)
            for member_name in sorted(wanted & by_name.keys()):
                m = by_name[member_name]
                if not m.isfile():
                    raise DataError(f"{archive}: member {m.name!r} is not a regular file")
                src = tar.extractfile(m)
                if src is None:
                    raise DataError(f"{archive}: member {m.name!r} has no data")
                with _atomic_path(folder / PurePosixPath(member_name).name) as tmp, open(tmp, "wb") as fh:
                    _copy(src, fh)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{archive}: cannot extract ({type(exc).__name__}: {exc}); delete it and retry the download"
        ) from exc


def _copy(src, dst) -> None:
    while chunk := src.read(1 << 20):
        dst.write(chunk)


def _read_mnist(key: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    folder, base_url = _MNIST_URLS[key]
    raw = root / folder / "raw"
    stem = _IDX_PREFIX[split]
    names = (f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte")
    pairs = [(raw / n, raw / f"{n}.gz") for n in names]
    missing = [packed for plain, packed in pairs if not (plain.is_file() or packed.is_file())]
    if missing and not download:
        expected = [f"{p.with_suffix('')} (or {p.name})" for p in missing]
        raise _missing(key, split, root, expected, " and ".join(base_url + p.name for p in missing))
    for packed in missing:
        _download(base_url + packed.name, packed)
    paths = [plain if plain.is_file() else packed for plain, packed in pairs]
    images = _read_idx(paths[0], _IDX_IMAGES_MAGIC, "images")
    labels = _read_idx(paths[1], _IDX_LABELS_MAGIC, "labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{paths[1]}: has {labels.shape[0]} labels but {paths[0]} has {images.shape[0]} images"
        )
    _check_label_range(labels, 10, paths[1])
    return images.reshape(images.shape[0], -1), labels


def _read_idx(path: Path, magic: int, what: str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (big-endian int32 header), gzipped or not."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file: expected at least 4 bytes of header, got {len(raw)}")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise DataError(f"{path}: not an IDX {what} file: magic number {got_magic}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path}: truncated IDX file: expected at least {header} bytes of header, got {len(raw)}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "oversized"
        raise DataError(
            f"{path}: {state} IDX {what} file: expected {expected} bytes for shape {dims}, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _check_label_range(y: np.ndarray, n_classes: int, path) -> None:
    out = (y < 0) | (y >= n_classes)
    if out.any():
        first = int(np.argmax(out))
        raise DataError(f"{path}: labels must be 0..{n_classes - 1}, found {int(y[first])} at row {first}")

