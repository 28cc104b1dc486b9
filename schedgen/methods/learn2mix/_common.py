"""The checks every learn2mix module shares (labels, features, mixing rate) and the
row-block size of its passes over the data."""

from __future__ import annotations

import numbers

import numpy as np

from ...errors import DataError, ParameterError
from ...params import check_int

__all__ = ["BLOCK_ROWS", "check_features", "check_labels", "check_mixing_rate", "check_present", "resolve_n_classes"]

#: Rows per block for distances (k-means) and the proxy's passes over the whole data.
BLOCK_ROWS = 8192


def check_mixing_rate(mixing_rate) -> float:
    """γ as a float in (0, 1] (not a bool, not text, not NaN)."""
    if isinstance(mixing_rate, (bool, np.bool_)) or not isinstance(mixing_rate, numbers.Real):
        raise ParameterError(f"mixing rate must be a number in (0, 1], got {mixing_rate!r}")
    g = float(mixing_rate)
    if not (0.0 < g <= 1.0):  # also rejects NaN
        raise ParameterError(f"mixing rate must be in (0, 1], got {mixing_rate!r}")
    return g


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """Integer labels as int64 (N,), all >= 0."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise DataError(f"{name} must be an integer array, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of shape (n_samples,), got shape {y.shape}")
    y = y.astype(np.int64)
    if y.min() < 0:
        first = int(np.argmax(y < 0))
        raise DataError(f"{name} must be >= 0, found {int(y[first])} at row {first}")
    return y


def resolve_n_classes(y: np.ndarray, n_classes) -> int:
    """``n_classes``, or ``max(y) + 1`` when None; every label must be below it."""
    top = int(y.max()) + 1
    if n_classes is None:
        return top
    c = check_int("n_classes", n_classes, minimum=1)
    if top > c:
        first = int(np.argmax(y >= c))
        raise DataError(f"labels must be in 0..{c - 1} (n_classes={c}), found {int(y[first])} at row {first}")
    return c


def check_present(counts: np.ndarray) -> None:
    """Refuse a class with no samples: learn2mix cannot draw from it."""
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"class {int(empty[0])}{more} has no samples; learn2mix needs every class present")


def check_features(X, n: int | None = None) -> np.ndarray:
    """Real, finite features of shape (n_samples, n_features), as given (no copy)."""
    A = np.asarray(X)
    if A.dtype.kind not in "biuf":
        raise DataError(f"features must be real numbers, got dtype {A.dtype}")
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise DataError(f"features must be a non-empty array of shape (n_samples, n_features), got shape {A.shape}")
    if n is not None and A.shape[0] != n:
        raise DataError(f"features have {A.shape[0]} rows but there are {n} labels")
    if A.dtype.kind == "f" and not np.isfinite(A).all():
        raise DataError("features must be finite, found NaN or inf")
    return A
