"""The median heuristic for the RBF bandwidth, and the "numerically diagonal/constant" checks.

Both look at the same fixed subsample: all samples when N <= max_samples,
otherwise ``max_samples`` rows drawn without replacement by
``schedgen.rng.rng(seed, "bandwidth")`` (a pure function of the seed, in a stream
of its own: see the table in :mod:`schedgen.rng`).
Distances are computed in float64 on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from schedgen.errors import ParameterError
from schedgen.params import check_int
from schedgen.rng import rng as _rng

from ._parallel import pinned_blas
from .backend import get_namespace, to_numpy
from .families import Kernel, as_float_matrix

__all__ = [
    "FALLBACK_BANDWIDTH",
    "DIAGONAL_TOL",
    "subsample_indices",
    "median_sq_distance",
    "median_bandwidth",
    "median_offdiag",
    "is_numerically_diagonal",
    "is_numerically_constant",
    "numerical_degeneracy",
]

#: σ returned when the median squared distance is 0 (e.g. constant data).
FALLBACK_BANDWIDTH = 1.0
#: A kernel is numerically diagonal when its median |off-diagonal| value is below
#: this fraction of its median diagonal value, and numerically constant when its
#: median squared feature-space distance between samples is.
DIAGONAL_TOL = 1e-6


def subsample_indices(n: int, *, seed: int = 0, max_samples: int = 2000) -> np.ndarray:
    """Sorted int64 indices of the rows the median heuristic looks at.

    ``arange(n)`` when ``n <= max_samples``; otherwise ``max_samples`` distinct rows
    drawn by ``rng(seed, "bandwidth").choice(n, max_samples, replace=False)``, sorted.
    """
    n = check_int("n", n, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    max_samples = check_int("max_samples", max_samples, minimum=2)
    if n <= max_samples:
        return np.arange(n, dtype=np.int64)
    return np.sort(_rng(seed, "bandwidth").choice(n, size=max_samples, replace=False)).astype(np.int64)


def _subsample64(X: Any, seed: int, max_samples: int) -> np.ndarray:
    X = as_float_matrix(X)
    xp = get_namespace(X)
    idx = subsample_indices(X.shape[0], seed=seed, max_samples=max_samples)
    Y = to_numpy(X[xp.asarray(idx)]).astype(np.float64)
    if not np.isfinite(Y).all():
        raise ParameterError("X must hold finite values only, got NaN or infinity")
    return Y


def _upper(M: np.ndarray) -> np.ndarray:
    return M[np.triu_indices(M.shape[0], k=1)]


def median_sq_distance(X: Any, *, seed: int = 0, max_samples: int = 2000) -> float:
    """Median of ``‖x_i - x_j‖²`` over distinct pairs i < j of the subsample.

    Float64, ``‖x‖² + ‖y‖² - 2xᵀy`` clamped at 0; an even number of pairs takes
    the mean of the two middle values (``np.median``). 0.0 when there is no pair.
    """
    Y = _subsample64(X, seed, max_samples)
    if Y.shape[0] < 2:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", Y, Y)
        if not np.isfinite(sq).all():  # only float64 data beyond ~1e154 gets here
            raise ParameterError(
                "features overflow float64 in the squared distances of the median heuristic: expected every "
                f"||x||^2 <= {np.finfo(np.float64).max:.3g}, got max |x| = {np.abs(Y).max():.3g}; rescale the features"
            )
        with pinned_blas():  # the same bits for any BLAS thread count (see _parallel)
            G = Y @ Y.T
        D2 = sq[:, None] + sq[None, :] - 2.0 * G
    np.maximum(D2, 0.0, out=D2)
    return float(np.median(_upper(D2)))


def median_bandwidth(X: Any, *, seed: int = 0, max_samples: int = 2000) -> float:
    """σ of the median heuristic: ``2σ² = median_sq_distance(X)``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    seed : int
        Seeds the subsample when ``n_samples > max_samples``.
    max_samples : int
        Largest subsample (all pairs of it are used).

    Returns
    -------
    float
        ``sqrt(median / 2)``; :data:`FALLBACK_BANDWIDTH` (1.0) when the median is 0
        (e.g. constant data), which callers should warn about.
    """
    m = median_sq_distance(X, seed=seed, max_samples=max_samples)
    if not m > 0:
        return FALLBACK_BANDWIDTH
    return math.sqrt(m / 2.0)


def _subsample_gram(kernel: Kernel, X: Any, seed: int, max_samples: int) -> np.ndarray:
    if not isinstance(kernel, Kernel):
        raise ParameterError(f"kernel must be a schedgen.kernels kernel, got {type(kernel).__name__}")
    Y = _subsample64(X, seed, max_samples)
    with pinned_blas():
        return kernel.block(Y, Y)


def _offdiag_and_diag(kernel: Kernel, X: Any, seed: int, max_samples: int):
    K = _subsample_gram(kernel, X, seed, max_samples)
    return _upper(K), np.diagonal(K)


def median_offdiag(kernel: Kernel, X: Any, *, seed: int = 0, max_samples: int = 2000) -> float:
    """Median of ``K(x_i, x_j)`` over pairs i < j of the subsample (float64); nan without pairs."""
    off, _ = _offdiag_and_diag(kernel, X, seed, max_samples)
    return float(np.median(off)) if off.size else math.nan


def is_numerically_diagonal(
    kernel: Kernel, X: Any, *, seed: int = 0, max_samples: int = 2000, tol: float = DIAGONAL_TOL
) -> bool:
    """Whether the kernel matrix is numerically diagonal on the subsample.

    True when ``median |K(x_i, x_j)|`` (i < j) ``< tol · median K(x_i, x_i)``; for RBF
    (diagonal 1) that is "median off-diagonal value below 1e-6". False with fewer
    than two samples.
    """
    return numerical_degeneracy(kernel, X, seed=seed, max_samples=max_samples, tol=tol) == "diagonal"


def is_numerically_constant(
    kernel: Kernel, X: Any, *, seed: int = 0, max_samples: int = 2000, tol: float = DIAGONAL_TOL
) -> bool:
    """Whether the kernel is numerically constant on the subsample: it maps the samples
    to (nearly) one point of its feature space, so every MMD² is (nearly) 0.

    True when the median squared feature-space distance
    ``K(x_i, x_i) + K(x_j, x_j) - 2 K(x_i, x_j)`` (i < j) is ``< tol · median |K(x_i, x_i)|``;
    for RBF that is ``2(1 - K) < 1e-6``, e.g. a bandwidth far above the data's scale.
    False with fewer than two samples.
    """
    return numerical_degeneracy(kernel, X, seed=seed, max_samples=max_samples, tol=tol) == "constant"


def numerical_degeneracy(
    kernel: Kernel, X: Any, *, seed: int = 0, max_samples: int = 2000, tol: float = DIAGONAL_TOL
) -> str | None:
    """``"diagonal"`` (:func:`is_numerically_diagonal`), ``"constant"``
    (:func:`is_numerically_constant`) or None, from one kernel block of the subsample.

    The two cannot both hold while the median diagonal value is > 0 (an off-diagonal
    value near the diagonal's is not near 0). Either way MMD² no longer tells batches
    apart and a schedule would follow rounding noise or tie-breaking.
    """
    K = _subsample_gram(kernel, X, seed, max_samples)
    if K.shape[0] < 2:
        return None
    diag = np.diagonal(K)
    scale = tol * float(np.median(np.abs(diag)))
    iu = np.triu_indices(K.shape[0], k=1)
    off = K[iu]
    if float(np.median(np.abs(off))) < scale:
        return "diagonal"
    off *= -2.0
    off += diag[iu[0]]
    off += diag[iu[1]]
    if float(np.median(off)) < scale:
        return "constant"
    return None
