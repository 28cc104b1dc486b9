"""The data layer: load a labelled dataset as flat float32 features and int64 labels.

Every reader returns a :class:`Dataset` whose ``X`` holds the raw values as
stored (pixels ``0..255``, sklearn digits ``0..16``, user features as given),
flattened to ``(n_samples, n_features)``. Scaling is the job of the feature
layer, which reads :attr:`Dataset.pixel_max`.

Known datasets and the on-disk layouts read (the torchvision layouts, so a
``root`` shared with torchvision works)::

    digits         sklearn.datasets.load_digits (bundled with scikit-learn, offline)
    svhn           <data_dir>/svhn/{train,test}_32x32.mat  or  <data_dir>/{train,test}_32x32.mat
    cifar10        <data_dir>/cifar-10-batches-py/data_batch_{1..5}, test_batch
    mnist          <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    fashion-mnist  <data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    npz:PATH       an .npz archive with arrays X, y and optionally groups

``data_dir`` defaults to ``$SCHEDGEN_DATA_DIR`` when set, else
``~/.cache/schedgen/data``. A download has an overall deadline of
``$SCHEDGEN_DOWNLOAD_TIMEOUT`` seconds (default 1800) and reports its progress
on stderr every 5 seconds. Only numpy and the standard library are imported at
module level; scipy and scikit-learn are imported by the readers that need them.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import math
import os
import pickle
import re
import shlex
import signal
import socket
import struct
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ._proc import pid_alive
from .errors import DataError, ParameterError

__all__ = [
    "DATASETS",
    "SPLITS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "Dataset",
    "default_data_dir",
    "download_timeout",
    "fingerprint",
    "load_dataset",
    "validate_arrays",
]

#: Names accepted by :func:`load_dataset` besides ``"npz:PATH"``.
DATASETS: tuple[str, ...] = ("digits", "svhn", "cifar10", "mnist", "fashion-mnist")

#: Splits accepted by :func:`load_dataset`.
SPLITS: tuple[str, ...] = ("train", "test")

#: Default data directory; ``~`` is expanded at call time and the environment
#: variable ``SCHEDGEN_DATA_DIR`` overrides it (see :func:`default_data_dir`).
DEFAULT_DATA_DIR = "~/.cache/schedgen/data"

_DATA_DIR_ENV = "SCHEDGEN_DATA_DIR"
_NPZ_PREFIX = "npz:"
_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}
_FINGERPRINT_MAGIC = b"schedgen-dataset-v1\0"
_NPY_MAGIC = b"\x93NUMPY"
# A zip (np.load's test): a local file header, or the end record of an empty archive.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_INT64_MAX = np.iinfo(np.int64).max
# Rows are scanned for NaN/inf in blocks of about this many values, so a
# boolean mask the size of the whole dataset never exists.
_FINITE_BLOCK = 1 << 22
#: Labels are class ids below ``max(n_samples, _LABEL_FLOOR)``; see :func:`validate_arrays`.
_LABEL_FLOOR = 1 << 16

_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_MNIST_URLS = {
    "mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion-mnist": ("FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

# MD5 of each downloadable file, as published by torchvision. Checked after a
# download only (files placed by hand are read as they are).
_MD5: dict[str, str] = {
    _SVHN_URL + "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    _SVHN_URL + "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    _CIFAR_URL: "c58f30108f718f92721af3b95e74349a",
    _MNIST_URLS["mnist"][1] + "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    _MNIST_URLS["mnist"][1] + "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    _MNIST_URLS["mnist"][1] + "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    _MNIST_URLS["mnist"][1] + "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    _MNIST_URLS["fashion-mnist"][1] + "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    _MNIST_URLS["fashion-mnist"][1] + "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    _MNIST_URLS["fashion-mnist"][1] + "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    _MNIST_URLS["fashion-mnist"][1] + "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One split of a labelled dataset, as flat raw features and integer labels.

    Construction validates and canonicalises the arrays with
    :func:`validate_arrays`; the stored arrays are read-only views. Arrays that
    are already canonical (float32 C-contiguous ``X``, int64 ``y``) are not
    copied, so the caller must not modify them afterwards.

    Parameters
    ----------
    name : str
        Canonical dataset name: one of :data:`DATASETS` or ``"npz:<absolute path>"``.
    split : {"train", "test"}
        Which split the arrays hold.
    X : array of shape (n_samples, n_features)
        Raw feature values as stored (pixels ``0..255``, digits ``0..16``);
        stored as float32, C-contiguous. Arrays with more than two dimensions
        are flattened per sample.
    y : array of shape (n_samples,)
        Integer class labels in ``0..max(n_samples, 65536) - 1`` (see
        :func:`validate_arrays`); stored as int64.
    pixel_max : float or None
        Largest possible raw value (255 for 8-bit images, 16 for digits), or
        None for user features that are used as given.
    groups : array of shape (n_samples,), optional
        Integer group ids; stored as int64.

    Attributes
    ----------
    n_samples, n_features, n_classes : int
        ``X.shape[0]``, ``X.shape[1]`` and ``max(y) + 1``.
    fingerprint : str
        :func:`fingerprint` of ``(X, y, groups)``, computed once.
    """

    name: str
    split: str
    X: np.ndarray
    y: np.ndarray
    pixel_max: float | None
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ParameterError(f"dataset name must be a non-empty string, got {self.name!r}")
        _check_split(self.split)
        source = f"dataset {self.name!r} ({self.split})"
        X, y = validate_arrays(self.X, self.y, source=source)
        groups = None if self.groups is None else _validate_groups(self.groups, len(y), source=source)
        pixel_max = self.pixel_max
        if pixel_max is not None:
            if isinstance(pixel_max, (bool, np.bool_)) or not isinstance(
                pixel_max, (int, float, np.integer, np.floating)
            ):
                raise ParameterError(f"pixel_max must be a positive number or None, got {pixel_max!r}")
            pixel_max = float(pixel_max)
            if not (math.isfinite(pixel_max) and pixel_max > 0):
                raise ParameterError(f"pixel_max must be a positive finite number or None, got {pixel_max!r}")
        object.__setattr__(self, "X", _read_only(X))
        object.__setattr__(self, "y", _read_only(y))
        object.__setattr__(self, "groups", None if groups is None else _read_only(groups))
        object.__setattr__(self, "pixel_max", pixel_max)

    @property
    def n_samples(self) -> int:
        """Number of samples (rows of ``X``)."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features (columns of ``X``)."""
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        """``max(y) + 1``: labels are taken as indices ``0..n_classes-1``."""
        return int(self.y.max()) + 1

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the data; see :func:`fingerprint`."""
        return _hash_canonical(self.X, self.y, self.groups)

    def __repr__(self) -> str:
        groups = "" if self.groups is None else ", groups=yes"
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"pixel_max={self.pixel_max!r}{groups})"
        )


def _read_only(a: np.ndarray) -> np.ndarray:
    # A view, so the caller's own array keeps its flags.
    view = a.view()
    view.flags.writeable = False
    return view


# --------------------------------------------------------------------------- #
# Validation and fingerprint
# --------------------------------------------------------------------------- #


def validate_arrays(X, y, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a feature matrix and its labels; return them in canonical form.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples, d1, d2, ...)
        Real-valued features; more than two dimensions are flattened per sample.
    y : array-like of shape (n_samples,)
        Integer class ids, each in ``0..max(n_samples, 65536) - 1``. A float
        array is accepted when every value is integral.
    source : str
        Where the arrays came from (a path or a dataset name), used as the
        prefix of every error message.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float32, C-contiguous
    y : ndarray of shape (n_samples,), int64

    Raises
    ------
    DataError
        If ``X`` is not real-valued, has fewer than two dimensions, no rows or
        no columns, holds NaN or inf (also after the cast to float32); if ``y``
        is not 1-D, has another length than ``X`` has rows, is not integral,
        has a negative value or a value of ``max(n_samples, 65536)`` or more.

    Notes
    -----
    Why labels are bounded, and not remapped: labels are used as class indices
    (``n_classes = max(y) + 1``; learn2mix keeps per-class arrays of that
    length), so a label such as 2**62 made ``schedgen info`` report 4.6e18
    classes and learn2mix fail inside ``np.bincount``. Remapping labels to
    dense ids would change ``y`` -- and so the fingerprint that existing stores
    reference -- for every dataset whose labels are not already ``0..C-1``.
    Refusing only absurd labels changes no fingerprint: a label below ``N``
    can always be a real class (every class occurs at least once when all of
    ``0..C-1`` are used), and the floor of 65,536 keeps datasets with a few
    sparse ids (a subset of a larger taxonomy, a tiny test set) loading as
    before, at a cost of at most 512 KiB per per-class array.
    """
    X = _as_array(X, "features", source)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{source}: features must be real numbers, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(
            f"{source}: features must be an array of shape (n_samples, n_features), got shape "
            f"{X.shape}; reshape a single feature with X.reshape(-1, 1)"
        )
    n = X.shape[0]
    if n == 0:
        raise DataError(f"{source}: features must have at least 1 row, got shape {X.shape}")
    if X.ndim > 2:
        X = X.reshape(n, -1)
    if X.shape[1] == 0:
        raise DataError(f"{source}: features must have at least 1 column, got shape {X.shape}")

    y = _as_array(y, "labels", source)
    if y.ndim != 1:
        raise DataError(f"{source}: labels must be 1-D of shape (n_samples,), got shape {y.shape}")
    if y.shape[0] != n:
        raise DataError(f"{source}: labels have length {y.shape[0]} but features have {n} rows")
    y = _integral(y, "labels", source)
    negative = y < 0
    if negative.any():
        first = int(np.argmax(negative))
        raise DataError(
            f"{source}: labels must be non-negative integers; found {int(negative.sum())} negative, "
            f"first {int(y[first])} at row {first}"
        )
    limit = max(n, _LABEL_FLOOR)
    too_big = y >= limit
    if too_big.any():
        first = int(np.argmax(too_big))
        raise DataError(
            f"{source}: labels must be class ids in 0..{limit - 1} (below max(n_samples, {_LABEL_FLOOR})); "
            f"found {int(too_big.sum())} larger, first {int(y[first])} at row {first}; map sparse ids "
            "to 0..C-1 first, e.g. np.unique(y, return_inverse=True)[1]"
        )

    # Casting finite float64 values beyond the float32 range gives inf, which the
    # scan below reports; the cast itself should not warn.
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = np.ascontiguousarray(X, dtype=np.float32)
    if X.dtype.kind == "f":
        _check_finite(X32, X, source)
    return X32, np.ascontiguousarray(y)


def _as_array(a, what: str, source: str) -> np.ndarray:
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise DataError(
            f"{source}: {what} must be a rectangular array, got {type(a).__name__} ({exc})"
        ) from exc


def _integral(a: np.ndarray, what: str, source: str) -> np.ndarray:
    """``a`` (1-D) as int64, if every value is an integer that fits."""
    kind = a.dtype.kind
    if kind == "u" and a.dtype.itemsize == 8 and a.size and a.max() > _INT64_MAX:
        raise DataError(f"{source}: {what} must fit in int64, got a maximum of {int(a.max())}")
    if kind in "iu":
        return a.astype(np.int64, copy=False)
    if kind != "f":
        raise DataError(f"{source}: {what} must be integers, got dtype {a.dtype}")
    bad = ~np.isfinite(a)
    with np.errstate(invalid="ignore"):
        bad |= a != np.floor(a)
        bad |= np.abs(a) >= 2.0**63
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{source}: {what} must be integers; found {int(bad.sum())} non-integral value(s), "
            f"first {float(a[first])!r} at row {first}"
        )
    return a.astype(np.int64)


def _check_finite(X32: np.ndarray, X: np.ndarray, source: str) -> None:
    n, d = X32.shape
    step = max(1, _FINITE_BLOCK // d)
    count = 0
    overflow = 0
    first = -1
    for start in range(0, n, step):
        block = X32[start : start + step]
        ok = np.isfinite(block)
        if ok.all():
            continue
        bad_here = block.size - int(np.count_nonzero(ok))
        count += bad_here
        if first < 0:
            first = start + int(np.argmax(~ok.all(axis=1)))
        if X.dtype != np.float32:
            overflow += bad_here - (block.size - int(np.count_nonzero(np.isfinite(X[start : start + step]))))
    if count:
        extra = (
            f" ({overflow} of them finite {X.dtype} values beyond the float32 range, |x| > 3.4e38)"
            if overflow
            else ""
        )
        raise DataError(
            f"{source}: features contain {count} non-finite values (NaN or inf); first at row {first}{extra}"
        )


def _validate_groups(groups, n: int, *, source: str) -> np.ndarray:
    g = _as_array(groups, "groups", source)
    if g.ndim != 1 or g.shape[0] != n:
        raise DataError(f"{source}: groups must have shape ({n},) like the labels, got shape {g.shape}")
    return np.ascontiguousarray(_integral(g, "groups", source))


def fingerprint(X, y, groups=None) -> str:
    """Hex SHA-256 of a dataset's content, stable across runs, machines and input dtypes.

    The arrays are first brought to canonical form by :func:`validate_arrays`;
    then the digest is taken over, in order::

        b"schedgen-dataset-v1\\0"
        + X.shape as two little-endian int64
        + X as little-endian float32, C order
        + y as little-endian int64
        [+ b"groups" + groups as little-endian int64, only when groups is given]

    so a float64 input gives the same fingerprint as the float32 array it casts
    to, and the name, split and ``pixel_max`` of a :class:`Dataset` do not enter.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    groups : array-like of shape (n_samples,), optional

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    X, y = validate_arrays(X, y, source="fingerprint")
    if groups is not None:
        groups = _validate_groups(groups, len(y), source="fingerprint")
    return _hash_canonical(X, y, groups)


def _hash_canonical(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> str:
    h = hashlib.sha256(_FINGERPRINT_MAGIC)
    h.update(np.array(X.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(X.astype("<f4", copy=False)))
    h.update(np.ascontiguousarray(y.astype("<i8", copy=False)))
    if groups is not None:
        h.update(b"groups")
        h.update(np.ascontiguousarray(groups.astype("<i8", copy=False)))
    return h.hexdigest()


# --------------------------------------------------------------------------- #
# load_dataset
# --------------------------------------------------------------------------- #


def default_data_dir() -> Path:
    """``$SCHEDGEN_DATA_DIR`` if set and non-empty, else :data:`DEFAULT_DATA_DIR`, with ``~`` expanded."""
    return Path(os.environ.get(_DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def load_dataset(
    name: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """Load one split of a known dataset or of an ``.npz`` file.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive; ``_`` may stand for ``-``),
        or ``"npz:PATH"`` for an ``.npz`` archive holding ``X`` of shape
        ``(n_samples, ...)``, integer ``y`` of shape ``(n_samples,)`` and
        optionally integer ``groups`` of shape ``(n_samples,)``. For
        ``split="test"`` the archive must hold ``X_test``, ``y_test`` (and
        optionally ``groups_test``) instead.
    split : {"train", "test"}
        For ``digits``, which has no official split, the test split is every
        5th image (index ``i % 5 == 0``, 360 images) and the train split the
        other 1,437. The other datasets use their published splits.
    data_dir : path, optional
        Root of the torchvision-style layout (see the module docstring).
        Defaults to :func:`default_data_dir`. Unused by ``digits`` and ``npz:``.
    download : bool
        Fetch missing files of ``svhn``, ``cifar10``, ``mnist`` and
        ``fashion-mnist`` from their canonical URLs into ``data_dir`` (checked
        against torchvision's MD5 sums), each file within the deadline of
        :func:`download_timeout`, with a progress line on stderr every 5
        seconds. Ignored by ``digits`` and ``npz:``.

    Returns
    -------
    Dataset
        ``X`` float32 of shape (n_samples, n_features) with the raw stored
        values, ``y`` int64 labels. SVHN images are flattened in torchvision's
        (channel, height, width) order and its label 10 is digit 0.

    Raises
    ------
    ParameterError
        On an unknown name, a split other than "train"/"test", or a
        non-boolean ``download``.
    DataError
        If files are missing (the message names the expected paths), malformed
        or truncated, if a download fails, or if :func:`validate_arrays` rejects
        the arrays.
    """
    if not isinstance(name, str):
        raise ParameterError(f"dataset name must be a string, got {type(name).__name__}")
    _check_split(split)
    if not isinstance(download, (bool, np.bool_)):
        raise ParameterError(f"download must be True or False, got {download!r}")

    if name[: len(_NPZ_PREFIX)].lower() == _NPZ_PREFIX:
        return _load_npz(name[len(_NPZ_PREFIX) :], split)

    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ParameterError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}, "
            "or npz:PATH for an .npz file with arrays X and y"
        )
    if key == "digits":
        X, y = _read_digits(split)
        return Dataset(key, split, X, y, pixel_max=16.0)
    root = _resolve_data_dir(data_dir)
    X, y = _READERS[key](key, split, root, bool(download))
    return Dataset(key, split, X, y, pixel_max=255.0)


def _check_split(split) -> None:
    if not isinstance(split, str) or split not in SPLITS:
        raise ParameterError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")


def _resolve_data_dir(data_dir) -> Path:
    if data_dir is None:
        root = default_data_dir()
    else:
        try:
            root = Path(os.fspath(data_dir)).expanduser()
        except TypeError as exc:
            raise ParameterError(f"data_dir must be a path, got {type(data_dir).__name__}") from exc
    root = Path(os.path.abspath(root))
    if root.exists() and not root.is_dir():
        raise DataError(f"data directory {root} exists but is not a directory")
    return root


def _missing(
    key: str, split: str, root: Path, paths: list[str], url: str, *, alternatives: bool = False
) -> DataError:
    """The error for absent dataset files.

    Every caller of :func:`load_dataset` can get it (``build``, ``verify``,
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


# --------------------------------------------------------------------------- #
# Readers. Each returns raw (X, y); Dataset() runs validate_arrays on them.
# --------------------------------------------------------------------------- #


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


def _load_npz(spec: str, split: str) -> Dataset:
    if not spec.strip():
        raise ParameterError("npz dataset needs a path, as in npz:/data/features.npz; got 'npz:'")
    path = Path(spec).expanduser().resolve()
    name = _NPZ_PREFIX + str(path)
    if path.is_dir():
        raise DataError(f"npz:{path} is a directory, expected an .npz file")
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    suffix = "" if split == "train" else "_test"
    x_key, y_key, g_key = f"X{suffix}", f"y{suffix}", f"groups{suffix}"
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    # np.load takes anything that is neither a zip nor an .npy file for a pickle
    # and answers with advice to load it unsafely; sniff the magic first.
    if not head.startswith(_ZIP_MAGICS + (_NPY_MAGIC,)):
        raise DataError(f"{path} is not an npz archive (expected a zip of .npy arrays)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not hasattr(archive, "files"):  # a .npy file loads as a bare array
            raise DataError(
                f"{path}: expected an .npz archive with arrays {x_key!r} and {y_key!r}, "
                f"got a single .npy array of shape {archive.shape}"
            )
        with archive:
            found = list(archive.files)
            for k in (x_key, y_key):
                if k not in found:
                    raise DataError(
                        f"{path}: npz archive has no array {k!r} for split {split!r}; expected {x_key!r} "
                        f"(n_samples, n_features) and {y_key!r} (n_samples,), found {found}"
                    )
            X = _npz_member(archive, x_key, path)
            y = _npz_member(archive, y_key, path)
            groups = _npz_member(archive, g_key, path) if g_key in found else None
    except DataError:
        raise
    except Exception as exc:  # np.load raises several types on a corrupt file or an object array
        if "allow_pickle" in str(exc):  # never pass on numpy's advice to unpickle
            raise DataError(
                f"{path}: holds pickled Python objects, expected numeric arrays (an npz archive of "
                f"{x_key!r} and {y_key!r})"
            ) from exc
        raise DataError(f"{path}: cannot read as an .npz archive ({type(exc).__name__}: {exc})") from exc
    return Dataset(name, split, X, y, pixel_max=None, groups=groups)


def _npz_member(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DataError(
            f"{path}: array {key!r} holds Python objects (dtype object), expected a numeric array"
        ) from exc


_READERS: dict[str, Callable[[str, str, Path, bool], tuple[np.ndarray, np.ndarray]]] = {
    "svhn": _read_svhn,
    "cifar10": _read_cifar10,
    "mnist": _read_mnist,
    "fashion-mnist": _read_mnist,
}


# --------------------------------------------------------------------------- #
# Download
# --------------------------------------------------------------------------- #

#: Seconds one download may take in all, unless ``$SCHEDGEN_DOWNLOAD_TIMEOUT`` says otherwise.
DEFAULT_DOWNLOAD_TIMEOUT = 1800.0
_DOWNLOAD_TIMEOUT_ENV = "SCHEDGEN_DOWNLOAD_TIMEOUT"
# Longest wait for the connection or for any one read (also capped by the deadline).
_READ_TIMEOUT = 60.0
_READ_SIZE = 1 << 16
# Seconds between two progress lines on stderr.
_PROGRESS_EVERY = 5.0
# A partial file that no live process on this machine can own (another host's, or
# one named by an older schedgen without a pid) is removed once unmodified this long.
# A live download writes at least once per _READ_TIMEOUT.
_STALE_PART_SECONDS = 24 * 3600.0
# ".<name>.<pid>-<host tag>.<random>.part" (see _atomic_path).
_PART_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[a-z0-9_]+\.part$")
# ".<name>.<random>.part": partial files of schedgen versions before the pid was named.
_LEGACY_PART_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.part$")
_KNOWN_FILES = frozenset(
    [url.rsplit("/", 1)[1] for url in _MD5]
    + [f for files in _CIFAR_FILES.values() for f in files]
    + ["batches.meta"]
)


def download_timeout() -> float:
    """Seconds one download may take in all: ``$SCHEDGEN_DOWNLOAD_TIMEOUT`` if set, else 1800.

    Raises
    ------
    ParameterError
        If the variable is set to anything but a positive finite number.
    """
    raw = os.environ.get(_DOWNLOAD_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_DOWNLOAD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(
            f"{_DOWNLOAD_TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}"
        )
    return value


def _fetch(
    url: str,
    dest: str,
    *,
    timeout: float | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Write the body of ``url`` to the (existing, empty) file ``dest``.

    The one place that touches the network; tests replace it. ``timeout`` is the
    deadline of the whole transfer in seconds (default :func:`download_timeout`),
    checked between reads; no single wait lasts more than
    ``min(60 s, timeout)``. ``progress(done, total)`` is called before the first
    read and after every read (``total`` is None without a Content-Length).
    """
    import urllib.request

    deadline = download_timeout() if timeout is None else float(timeout)
    start = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "schedgen"})
    opened = urllib.request.urlopen(request, timeout=min(_READ_TIMEOUT, deadline))
    with opened as response, open(dest, "wb") as fh:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        read = getattr(response, "read1", response.read)  # read1: whatever has arrived
        done = 0
        if progress is not None:
            progress(done, total)
        while True:
            if time.monotonic() - start > deadline:
                of = "" if total is None else f" of {total}"
                raise TimeoutError(
                    f"not complete after the deadline of {deadline:g} s ({done}{of} bytes received); "
                    f"set {_DOWNLOAD_TIMEOUT_ENV} to a longer time in seconds"
                )
            chunk = read(_READ_SIZE)
            if not chunk:
                break
            fh.write(chunk)
            fh.flush()  # the part file's mtime shows a live download (see _remove_stale_parts)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    size = os.path.getsize(dest)
    if total is not None and size != total:
        raise OSError(f"connection closed after {size} of {total} bytes")


def _stderr_progress(url: str, every: float) -> Callable[[int, int | None], None]:
    """A ``progress(done, total)`` writing one line to stderr at the start, every
    ``every`` seconds and at the end (when the size is known)."""
    last = -math.inf

    def report(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - last < every and not finished:
            return
        last = now
        if total:
            amount = f"{_size(done)} of {_size(total)} ({100 * done // total}%)"
        else:
            amount = _size(done) if total is None else "0 B of 0 B"
        sys.stderr.write(f"downloading {url}: {amount}\n")
        sys.stderr.flush()

    return report


def _size(n: int) -> str:
    if n < 10_000:
        return f"{n} B"
    if n < 10_000_000:
        return f"{n / 1e3:.0f} kB"
    return f"{n / 1e6:.1f} MB"


def _download(
    url: str,
    dest: Path,
    *,
    timeout: float | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Fetch ``url`` to ``dest``, checked against its MD5 when one is known.

    The body goes to a temporary file beside ``dest`` that is renamed only once
    complete and verified, so a failed or partial download never leaves a file
    under the final name. The temporary file is removed on any exception, on a
    SIGTERM during the transfer (see :func:`_sigterm_raises`), and, if the
    process dies otherwise, by the next download into the same directory (see
    :func:`_remove_stale_parts`).

    Parameters
    ----------
    timeout : float, optional
        Deadline of the whole transfer in seconds; default :func:`download_timeout`
        (``$SCHEDGEN_DOWNLOAD_TIMEOUT`` or 30 minutes).
    progress : callable, optional
        ``progress(done, total)`` after every read; default: a line on stderr
        every 5 seconds with the bytes received and the total.
    """
    deadline = download_timeout() if timeout is None else timeout
    if progress is None:
        progress = _stderr_progress(url, _PROGRESS_EVERY)
    with _sigterm_raises(url), _atomic_path(dest) as tmp:
        try:
            _fetch(url, tmp, timeout=deadline, progress=progress)
        except Exception as exc:  # any failure of the transfer is reported the same way
            reason = getattr(exc, "reason", None) or exc
            raise DataError(f"could not download {url}: {type(exc).__name__}: {reason}") from exc
        expected = _MD5.get(url)
        if expected is not None:
            got = _md5(tmp)
            if got != expected:
                raise DataError(
                    f"downloaded {url} is corrupt: MD5 {got}, expected {expected}; the file was discarded"
                )


class _Terminated(BaseException):
    """A SIGTERM received during a download (a BaseException, like KeyboardInterrupt)."""


@contextlib.contextmanager
def _sigterm_raises(url: str):
    """Turn a SIGTERM inside the block into an exception, so the cleanup of the
    block (the temporary file) runs; then deliver the SIGTERM again to the
    handler that was in place before (by default, the process ends with it).

    Only on the main thread (where Python can install handlers) and only when
    SIGTERM is neither ignored nor handled outside Python; otherwise the block
    runs with the disposition unchanged. If the previous handler returns, the
    download ends with a DataError.
    """
    previous = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN:
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)
        raise DataError(
            f"download of {url} stopped by SIGTERM; the partial file was removed"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _remove_stale_parts(directory: Path) -> list[Path]:
    """Remove the partial files of dead downloads (and extractions) in ``directory``.

    A partial file ``.<name>.<pid>-<host tag>.<random>.part`` is removed when it
    was made on this machine (same host tag) and no process ``pid`` runs; one
    from another machine sharing the directory, or one of an older schedgen
    (``.<name>.<random>.part`` with a known dataset file name), only once it has
    not been modified for 24 hours. Returns the paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    here = _host_tag()
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".part")):
            continue
        m = _PART_RE.match(name)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            old = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_PART_SECONDS
        except OSError:
            continue
        if m is not None:
            stale = not pid_alive(int(m["pid"])) if m["host"] == here else old
        else:
            legacy = _LEGACY_PART_RE.match(name)
            stale = legacy is not None and legacy["name"] in _KNOWN_FILES and old
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def _atomic_path(dest: Path):
    """Yield a fresh temporary path beside ``dest``; rename it to ``dest`` on
    success, delete it on any exception (including KeyboardInterrupt).

    The temporary is ``.<name>.<pid>-<host tag>.<random>.part``, so that the
    file of a process that died can be told from a live one; such files are
    removed first (:func:`_remove_stale_parts`).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(dest.parent)
        fd, tmp = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}-{_host_tag()}.", suffix=".part"
        )
        os.close(fd)
    except OSError as exc:
        raise DataError(f"cannot write to {dest.parent} ({type(exc).__name__}: {exc})") from exc
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _md5(path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
