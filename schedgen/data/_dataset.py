"""The :class:`Dataset` record, the validation of its arrays and the dataset fingerprint.

The fingerprint's byte layout is specified in ``docs/FORMAT.md``: a store
references its dataset by it, so nothing here may change the bytes hashed.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, ParameterError

#: Splits accepted by :func:`~schedgen.data.load_dataset`.
SPLITS: tuple[str, ...] = ("train", "test")

_FINGERPRINT_MAGIC = b"schedgen-dataset-v1\0"
_INT64_MAX = np.iinfo(np.int64).max
# Rows are scanned for NaN/inf in blocks of about this many values, so a
# boolean mask the size of the whole dataset never exists.
_FINITE_BLOCK = 1 << 22
#: Labels are class ids below ``max(n_samples, _LABEL_FLOOR)``; see :func:`validate_arrays`.
_LABEL_FLOOR = 1 << 16


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One split of a labelled dataset, as flat raw features and integer labels.

    Construction validates and canonicalises the arrays with
    :func:`validate_arrays`; the stored arrays are read-only views. Arrays that
    are already canonical (float32 C-contiguous ``X``, int64 ``y``) are not
    copied, so the caller must not modify them afterwards; a read-only
    memory-mapped float32 ``X`` (``array:DIR``) stays a mapping of its file.

    Parameters
    ----------
    name : str
        Canonical dataset name: one of :data:`~schedgen.data.DATASETS`, ``"npz:<absolute path>"``
        or ``"array:<absolute path>"``.
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

    def compute_fingerprint(self, progress=None) -> str:
        """:attr:`fingerprint`, computed now (once) with ``progress(rows_hashed, n_samples)``
        after each block of rows; the same digest, for a large memory-mapped ``X`` the
        stage a user otherwise waits through without a word."""
        if "fingerprint" not in self.__dict__:  # functools.cached_property's own slot
            self.__dict__["fingerprint"] = _hash_canonical(self.X, self.y, self.groups, progress=progress)
        return self.fingerprint

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


def _check_split(split) -> None:
    if not isinstance(split, str) or split not in SPLITS:
        raise ParameterError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")


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
        Real-valued features (checked and cast as by :func:`validate_arrays`).
    y : array-like of shape (n_samples,)
        Integer class labels.
    groups : array-like of shape (n_samples,), optional
        Integer group ids; when given, they enter the digest.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    X, y = validate_arrays(X, y, source="fingerprint")
    if groups is not None:
        groups = _validate_groups(groups, len(y), source="fingerprint")
    return _hash_canonical(X, y, groups)


def _hash_canonical(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, progress=None) -> str:
    h = hashlib.sha256(_FINGERPRINT_MAGIC)
    h.update(np.array(X.shape, dtype="<i8").tobytes())
    # Row blocks of about 64 MiB: the same bytes in the same order as one update of the whole
    # array, without a whole-array copy when X is not little-endian float32 already.
    n = X.shape[0]
    step = max(1, (64 << 20) // max(1, X.shape[1] * 4))
    for start in range(0, n, step):
        h.update(np.ascontiguousarray(X[start : start + step].astype("<f4", copy=False)))
        if progress is not None:
            progress(min(n, start + step), n)
    h.update(np.ascontiguousarray(y.astype("<i8", copy=False)))
    if groups is not None:
        h.update(b"groups")
        h.update(np.ascontiguousarray(groups.astype("<i8", copy=False)))
    return h.hexdigest()
