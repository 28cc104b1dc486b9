"""α, the class proportions: their start, their rounding into a batch's counts and
their update from class-wise losses (DESIGN.md section 2)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ...errors import ParameterError
from ...params import check_int
from ._common import check_labels, check_mixing_rate, check_present, resolve_n_classes

__all__ = [
    "ALPHA_TOLERANCE",
    "check_alpha",
    "class_mean_losses",
    "initial_alpha",
    "largest_remainder_counts",
    "update_alpha",
]

#: How far ``sum(alpha)`` may stray from 1 before α is rejected.
ALPHA_TOLERANCE = 1e-9


def check_alpha(alpha, n_classes: int | None = None) -> np.ndarray:
    """α as float64 (C,): finite, >= 0, summing to 1 within :data:`ALPHA_TOLERANCE`."""
    a = np.asarray(alpha)
    if a.dtype.kind not in "iuf":
        raise ParameterError(f"alpha must be an array of real numbers, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] == 0:
        raise ParameterError(f"alpha must be a non-empty 1-D array of class proportions, got shape {a.shape}")
    if n_classes is not None and a.shape[0] != n_classes:
        raise ParameterError(f"alpha must have one entry per class: expected length {n_classes}, got {a.shape[0]}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        j = int(np.argmax(bad))
        raise ParameterError(
            f"alpha must be finite and >= 0: {int(bad.sum())} bad value(s), first at class {j} ({float(a[j])!r})"
        )
    s = float(a.sum())
    if abs(s - 1.0) > ALPHA_TOLERANCE:
        raise ParameterError(f"alpha must sum to 1 (within {ALPHA_TOLERANCE:g}), got sum {s!r}")
    return a


def largest_remainder_counts(alpha, k: int) -> np.ndarray:
    """Per-class counts summing exactly to k, by largest-remainder rounding of α·k.

    ``c_j = floor(α_j k)``; the ``k − Σ c_j`` units left go one each to the classes
    with the largest fractional parts ``α_j k − floor(α_j k)``, ties broken by the
    smaller class id. The products are exact (each float64 ``α_j`` as a rational),
    so ties and order do not depend on round-off.

    Parameters
    ----------
    alpha : array of shape (n_classes,)
        Class proportions: finite, >= 0, summing to 1 within :data:`ALPHA_TOLERANCE`.
    k : int
        Batch size, >= 1.

    Returns
    -------
    counts : ndarray of shape (n_classes,), int64, summing to k

    Raises
    ------
    ParameterError
        On an invalid α or k.
    """
    a = check_alpha(alpha)
    k = check_int("k", k, minimum=1)
    floors = []
    remainders = []
    for v in a.tolist():
        num, den = v.as_integer_ratio()
        prod = num * k
        fl = prod // den
        floors.append(fl)
        remainders.append(Fraction(prod - fl * den, den))
    left = k - sum(floors)
    if not 0 <= left <= len(a):
        # only possible when k * |sum(alpha) - 1| >= 1, i.e. an enormous k
        raise ParameterError(
            f"alpha sums to {float(a.sum())!r}, too far from 1 for k={k}: rounding leaves {left} units "
            f"for {len(a)} classes"
        )
    order = sorted(range(len(a)), key=lambda j: (-remainders[j], j))
    for j in order[:left]:
        floors[j] += 1
    return np.asarray(floors, dtype=np.int64)


def update_alpha(alpha, class_losses, mixing_rate) -> np.ndarray:
    """One learn2mix step: ``α ← α + γ (L / ΣL − α)``.

    When ``ΣL = 0`` the target ``L / ΣL`` is uniform (no class is harder than
    another). The result is put back on the simplex: round-off negatives are
    clipped to 0, then it is divided by its sum.

    Parameters
    ----------
    alpha : array of shape (n_classes,)
        Current class proportions (on the simplex within :data:`ALPHA_TOLERANCE`).
    class_losses : array of shape (n_classes,)
        Class-wise mean losses L, finite and >= 0.
    mixing_rate : float
        γ in (0, 1].

    Returns
    -------
    alpha : ndarray of shape (n_classes,), float64

    Raises
    ------
    ParameterError
        If γ is outside (0, 1], or the losses have the wrong length, are negative
        or not finite, or α is invalid.
    """
    g = check_mixing_rate(mixing_rate)
    a = check_alpha(alpha)
    L = np.asarray(class_losses)
    if L.dtype.kind not in "iuf":
        raise ParameterError(f"class losses must be real numbers, got dtype {L.dtype}")
    if L.ndim != 1 or L.shape[0] != a.shape[0]:
        got = L.shape[0] if L.ndim == 1 else f"shape {L.shape}"
        raise ParameterError(f"class losses must have one value per class: expected length {a.shape[0]}, got {got}")
    L = L.astype(np.float64)
    bad = ~np.isfinite(L) | (L < 0)
    if bad.any():
        j = int(np.argmax(bad))
        raise ParameterError(
            f"class losses must be finite and >= 0: {int(bad.sum())} bad value(s) (negative, NaN or inf), "
            f"first at class {j} ({float(L[j])!r})"
        )
    total = float(L.sum())
    target = L / total if total > 0 else np.full_like(a, 1.0 / a.shape[0])
    out = a + g * (target - a)
    np.clip(out, 0.0, None, out=out)
    return out / out.sum()


def class_mean_losses(losses, labels, n_classes: int) -> np.ndarray:
    """Class-wise means of per-sample losses: ``L_j = mean{loss_i : y_i = j}``.

    A class with no sample in the input gets ``L_j = 0`` (an online trainer that
    averages over a subset may miss a class; 0 makes that class no harder, and
    :func:`update_alpha` then moves its share towards 0 only as fast as γ allows).

    Parameters
    ----------
    losses : array of shape (n_samples,)
        Per-sample losses, finite and >= 0.
    labels : array of shape (n_samples,)
        Integer class ids in ``0..n_classes-1``.
    n_classes : int
        The number of classes, >= 1.

    Returns
    -------
    class_losses : ndarray of shape (n_classes,), float64

    Raises
    ------
    ParameterError, DataError
        On losses that are not finite and >= 0 or not one per label, or labels
        outside ``0..n_classes-1``.
    """
    C = check_int("n_classes", n_classes, minimum=1)
    y = check_labels(labels)
    resolve_n_classes(y, C)
    v = np.asarray(losses)
    if v.dtype.kind not in "iuf":
        raise ParameterError(f"losses must be real numbers, got dtype {v.dtype}")
    if v.shape != y.shape:
        raise ParameterError(f"losses must have one value per label: expected shape {y.shape}, got {v.shape}")
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        first = int(np.argmax(~np.isfinite(v)))
        raise ParameterError(f"losses must be finite, found {float(v[first])!r} at row {first}")
    if np.any(v < 0):
        first = int(np.argmax(v < 0))
        raise ParameterError(f"losses must be non-negative, found {float(v[first])!r} at row {first}")
    sums = np.bincount(y, weights=v, minlength=C)
    counts = np.bincount(y, minlength=C)
    out = np.zeros(C, dtype=np.float64)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def initial_alpha(labels, n_classes: int | None = None) -> np.ndarray:
    """The dataset's class proportions ``α_0,j = n_j / N``.

    Parameters
    ----------
    labels : array of shape (n_samples,)
        Integer class ids (group ids), >= 0.
    n_classes : int, optional
        Number of classes; ``max(labels) + 1`` by default.

    Returns
    -------
    alpha : ndarray of shape (n_classes,), float64

    Raises
    ------
    DataError
        If the labels are not integers, or some class below ``n_classes`` has no
        samples (learn2mix cannot draw from an empty class).
    """
    y = check_labels(labels)
    C = resolve_n_classes(y, n_classes)
    counts = np.bincount(y, minlength=C)
    check_present(counts)
    return counts / float(len(y))
