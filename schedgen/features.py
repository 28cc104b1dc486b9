"""Features: from a dataset's raw values to the float32 matrix the kernels see.

Image pixels are scaled to [0, 1]; ``npz:`` features are used exactly as given.
Optionally standardised (opt-in), then projected by a deterministic PCA fitted on
a seeded subsample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .data import Dataset
from .errors import ParameterError
from .rng import rng

__all__ = ["FeatureSpec", "prepare_features", "pca_basis", "DEFAULT_PCA", "PCA_THRESHOLD"]

#: PCA dimension used by default when the input has more than PCA_THRESHOLD dims.
DEFAULT_PCA = 128
PCA_THRESHOLD = 256
#: Rows the PCA is fitted on (a seeded subsample when the dataset is larger).
PCA_FIT_ROWS = 20_000


@dataclass(frozen=True)
class FeatureSpec:
    """How features are derived from a dataset.

    pca : int or None
        ``None``: DEFAULT_PCA when the input has more than PCA_THRESHOLD dims, else
        keep the features; ``0``: keep; ``D > 0``: project to D dims, which must be
        below the number of features (a projection to as many dims as the input
        is a rotation, not a reduction: refused rather than silently ignored).
    standardize : bool
        Scale each feature to zero mean and unit variance (before PCA).
    seed : int
        Seeds the PCA subsample.
    """

    pca: int | None = None
    standardize: bool = False
    seed: int = 0

    def resolved_pca(self, n_features: int) -> int:
        """The PCA dimension actually used (0 = no projection).

        Raises
        ------
        ParameterError
            For a negative or non-integer ``pca``, or one at or above ``n_features``.
        """
        if self.pca is None:
            return DEFAULT_PCA if n_features > PCA_THRESHOLD else 0
        if isinstance(self.pca, bool) or not isinstance(self.pca, (int, np.integer)) or self.pca < 0:
            raise ParameterError(f"--pca must be a non-negative integer (0 keeps the features), got {self.pca!r}")
        if self.pca >= n_features:
            raise ParameterError(
                f"--pca must be below the number of features ({n_features}), got {int(self.pca)}; "
                "--pca 0 keeps the features"
            )
        return int(self.pca)

    def params(self, n_features: int) -> dict:
        return {"pca": self.resolved_pca(n_features), "standardize": bool(self.standardize)}


def pca_basis(
    X: np.ndarray,
    dim: int,
    *,
    seed: int = 0,
    fit_rows: int = PCA_FIT_ROWS,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    block_rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-``dim`` principal axes of ``transform(X)``, deterministic.

    Fitted in float64 on all rows when ``N <= fit_rows``, else on ``fit_rows`` rows drawn
    without replacement by ``rng(seed, "pca")`` (:mod:`schedgen.rng`). Each axis' sign is fixed so
    that its largest-magnitude coordinate is positive (first such coordinate on ties).
    The mean and the covariance ``Σ (x - mean)(x - mean)ᵀ / (n - 1)`` are accumulated
    over blocks of ``block_rows`` rows, so the float64 copy of the fitted rows never
    exists whole (SVHN: 20,000 × 3,072 would be 491 MB).

    Parameters
    ----------
    transform : callable, optional
        Maps a block of raw rows to float64 features (scaling, standardisation);
        default: the rows as float64.

    Returns
    -------
    mean : array of shape (n_features,), float64
    axes : array of shape (n_features, dim), float64
    """
    n = X.shape[0]
    rows = None
    if n > fit_rows:
        rows = np.sort(rng(seed, "pca").choice(n, size=fit_rows, replace=False))
    m = n if rows is None else len(rows)
    f = transform if transform is not None else (lambda b: np.array(b, dtype=np.float64))  # a copy: centred in place

    def blocks():
        for s in range(0, m, block_rows):
            yield f(X[s : s + block_rows] if rows is None else X[rows[s : s + block_rows]])

    mean = np.zeros(X.shape[1])
    for B in blocks():
        mean += B.sum(axis=0)
    mean /= m
    cov = np.zeros((X.shape[1], X.shape[1]))
    for B in blocks():
        B -= mean
        cov += B.T @ B
    cov /= max(m - 1, 1)
    # Only the top ``dim`` eigenpairs (LAPACK's syevr): less time and workspace than a
    # full decomposition of an (n_features²) matrix.
    from scipy.linalg import eigh

    d = cov.shape[0]
    w, V = eigh(cov, subset_by_index=[d - dim, d - 1], driver="evr", overwrite_a=True)
    order = np.argsort(-w, kind="stable")
    axes = V[:, order]
    pivot = np.argmax(np.abs(axes), axis=0)
    signs = np.sign(axes[pivot, np.arange(axes.shape[1])])
    signs[signs == 0] = 1.0
    return mean, axes * signs


def prepare_features(dataset: Dataset, spec: FeatureSpec = FeatureSpec(), *, block_rows: int = 2048) -> np.ndarray:
    """The feature matrix the kernels use, float32 of shape (n_samples, n_dims).

    ``x = raw / pixel_max`` for images (raw values for ``npz:``), then optional
    standardisation, then ``(x - mean) @ axes`` when a PCA dimension is in force.
    Works in row blocks: besides the dataset and the result, memory holds a few
    blocks and the (n_features²) covariance, never a full scaled copy.

    Bits depend on the BLAS thread count (GEMM splits); builds call it under
    ``schedgen.kernels.worker_pool``/``pinned_blas`` so that they do not.
    """
    X = dataset.X
    scale = None if dataset.pixel_max is None else np.float32(1.0 / dataset.pixel_max)

    def scaled(B: np.ndarray) -> np.ndarray:
        # float32 scaling, as a whole-array ``X * scale`` would give, then float64
        return (B * scale if scale is not None else np.asarray(B, dtype=np.float32)).astype(np.float64)

    f = scaled
    if spec.standardize:
        total = np.zeros(X.shape[1])
        for s in range(0, X.shape[0], block_rows):
            total += scaled(X[s : s + block_rows]).sum(axis=0)
        mu = total / X.shape[0]
        ss = np.zeros(X.shape[1])
        for s in range(0, X.shape[0], block_rows):
            ss += ((scaled(X[s : s + block_rows]) - mu) ** 2).sum(axis=0)
        sd = np.sqrt(ss / X.shape[0])
        sd[sd == 0] = 1.0  # constant columns stay constant (zero) instead of dividing by 0

        def standardized(B: np.ndarray) -> np.ndarray:
            return ((scaled(B) - mu) / sd).astype(np.float32).astype(np.float64)

        f = standardized

    dim = spec.resolved_pca(X.shape[1])
    if dim == 0:
        if scale is None and not spec.standardize:
            return np.ascontiguousarray(X, dtype=np.float32)
        out = np.empty(X.shape, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # reported by _check_fits below
            for s in range(0, X.shape[0], block_rows):
                out[s : s + block_rows] = f(X[s : s + block_rows])
        return _check_fits(out, "the pixel scaling")
    mean, axes = pca_basis(X, dim, seed=spec.seed, transform=f)
    shift = mean @ axes  # (x - mean) @ axes = x @ axes - mean @ axes: no centred copy
    out = np.empty((X.shape[0], dim), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, X.shape[0], block_rows):
            out[start : start + block_rows] = f(X[start : start + block_rows]) @ axes - shift
    return _check_fits(out, f"the PCA projection (--pca {dim})")


def _check_fits(out: np.ndarray, step: str) -> np.ndarray:
    """``out``, unless a value overflowed float32 in ``step`` (finite input, inf output)."""
    bad = ~np.isfinite(out)
    if bad.any():
        raise ParameterError(
            f"features overflow float32 after {step}: expected values within +-{np.finfo(np.float32).max:.3g}, "
            f"got {int(np.count_nonzero(bad))} beyond it; rescale the features or pass --standardize"
        )
    return out
