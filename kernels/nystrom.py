"""Nyström features: a rank-M factor ``K ≈ ΦΦᵀ`` of a kernel, in O(N·M) memory, and its error.

``Φ = K(X, Z) · K(Z, Z)^{-1/2}`` with M landmarks Z (seeded k-means centres of the
features, :func:`kmeans_landmarks`) and the pseudo-inverse square root of the M × M
landmark kernel: its eigenvalues at or below ``EIG_RTOL · μ_max`` are treated as zero
(their directions are dropped, as a pseudo-inverse does). ``ΦΦᵀ = K_XZ K_ZZ⁺ K_ZX`` is
the Nyström approximation of K; when Z holds every row of X it is K itself (up to the
dropped eigenvalues). Everything is float64 and computed in row blocks of X, on worker
threads with BLAS pinned to one thread, on a grid that depends only on the shapes: the
same inputs give the same bytes whatever the thread count.

:func:`nystrom_error` measures the approximation on a seeded subsample of rows against
exact float64 kernel values (the row sums by :func:`~schedgen.kernels.block_sums`): the
relative error of the row sums ``s_tot`` (median and max) and the relative Frobenius
error of K on the subsample.

Random draws come from the ``nystrom`` stream of :mod:`schedgen.rng`:
``rng(seed, "nystrom")`` seeds k-means (first its ``random_state``, then the rows it is
fitted on when N exceeds ``fit_rows``); the rows an error is measured on come from its
first child stream, ``rng(seed, "nystrom").spawn(1)[0]``, so that they do not depend on
how the landmarks were drawn.

:class:`ShrinkingFactor` serves the MMD selection loop's row sums from Φ (``--approx
nystrom:M`` of ``--method mmd``): ``s_tot = Φ(Φᵀ1)`` and ``s_P = Φ_Q (Σ_{j∈P} φ_j)``
for the samples Q not scheduled yet, one GEMV of N·M a step instead of an (N × k)
kernel block.

Host (NumPy) only: device arrays are brought to the host first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from schedgen.errors import ParameterError
from schedgen.params import check_int
from schedgen.rng import rng

from ._parallel import pinned_blas, rows_done, run_tasks
from .backend import to_numpy
from .blocked import block_sums, gram
from .families import Kernel, as_float_matrix

__all__ = [
    "NystromFactor",
    "NystromError",
    "ShrinkingFactor",
    "kmeans_landmarks",
    "nystrom_features",
    "nystrom",
    "nystrom_error",
    "error_rows",
    "EIG_RTOL",
    "KMEANS_MAX_ITER",
    "KMEANS_FIT_ROWS",
    "ERROR_ROWS",
]

#: Eigenvalues of K(Z, Z) at or below this fraction of the largest are zero for the
#: pseudo-inverse square root. float64 rounding of an M × M kernel matrix moves its
#: eigenvalues by about M·ε·μ_max (1e-13 at M = 500): the cut-off stays above that
#: noise for M up to a few thousand, and what it drops changes ΦΦᵀ by at most about
#: EIG_RTOL·μ_max per entry.
EIG_RTOL = 1e-12
#: Lloyd iterations of k-means at most (scikit-learn's tolerance may stop it earlier):
#: landmarks need to cover the data, not to be converged centres.
KMEANS_MAX_ITER = 50
#: k-means is fitted on at most this many rows (a seeded subsample beyond), so that its
#: cost does not grow with N; every row is used up to SVHN's size.
KMEANS_FIT_ROWS = 100_000
#: Rows of the subsample an error is measured on (all rows when N is smaller).
ERROR_ROWS = 2000
# Rows of X per block of Φ, and of exact float64 columns per pass of the error's row sums.
_BLOCK_ROWS = 2048
_ERROR_COLS = 32768
# Rows per GEMV task of ShrinkingFactor, and the dead fraction of its rows that triggers a compaction.
_SHRINK_ROWS = 8192
_DEAD_FRACTION = 0.125


@dataclass(frozen=True)
class NystromFactor:
    """A Nyström factor ``K ≈ ΦΦᵀ``.

    Attributes
    ----------
    features : ndarray of shape (n_samples, n_landmarks), float64
        Φ, one row per sample.
    landmarks : ndarray of shape (n_landmarks, n_features), float64
        Z.
    rank : int
        Eigenvalues of K(Z, Z) kept by the pseudo-inverse (the rank of ΦΦᵀ at most).
    cutoff : float
        The absolute eigenvalue cut-off used, ``EIG_RTOL · μ_max``.
    """

    features: np.ndarray
    landmarks: np.ndarray
    rank: int
    cutoff: float


@dataclass(frozen=True)
class NystromError:
    """The measured error of a Nyström factor on ``rows`` sampled rows S.

    Attributes
    ----------
    s_tot_median, s_tot_max : float
        Median and max over i in S of ``|φ_iᵀ Σ_j φ_j - Σ_j K(x_i, x_j)| / |Σ_j K(x_i, x_j)|``
        (j over all N samples).
    frobenius : float
        ``‖K_SS - Φ_S Φ_Sᵀ‖_F / ‖K_SS‖_F``.
    rows : int
        |S|.
    """

    s_tot_median: float
    s_tot_max: float
    frobenius: float
    rows: int

    def params(self) -> dict:
        """Plain JSON, as a store records it."""
        return {"s_tot_median": float(self.s_tot_median), "s_tot_max": float(self.s_tot_max),
                "frobenius": float(self.frobenius), "rows": int(self.rows)}


def _host_matrix(X: Any) -> np.ndarray:
    X = as_float_matrix(to_numpy(X) if not isinstance(X, np.ndarray) else X)
    if not np.isfinite(X).all():
        raise ParameterError("X must hold finite values only, got NaN or infinity")
    return X


def _check_kernel(kernel: Any) -> None:
    if not isinstance(kernel, Kernel):
        raise ParameterError(
            f"kernel must be a schedgen.kernels kernel (RBF, Polynomial, see make_kernel), got {type(kernel).__name__}"
        )


def kmeans_landmarks(
    X: Any, n_landmarks: int, *, seed: int, max_iter: int = KMEANS_MAX_ITER, fit_rows: int = KMEANS_FIT_ROWS
) -> np.ndarray:
    """M landmarks: the centres of scikit-learn's k-means (k-means++, one init) on the rows of X.

    Seeded from ``rng(seed, "nystrom")``: its first draw is k-means' ``random_state``;
    with more than ``fit_rows`` rows, k-means is fitted on ``fit_rows`` of them drawn
    next (without replacement, in index order). Runs with one OpenMP thread and BLAS
    pinned to one thread: scikit-learn adds the threads' partial centre sums in the
    order the threads finish, so more threads would make the last bits vary run to run.
    With fewer distinct rows than M, some centres coincide (the factor's rank then says so).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    n_landmarks : int
        M, ``1 <= M <= n_samples``.
    seed : int
    max_iter, fit_rows : int
        Lloyd iterations at most; rows k-means is fitted on at most.

    Returns
    -------
    ndarray of shape (n_landmarks, n_features), float64
    """
    from sklearn.cluster import KMeans  # heavy: only when landmarks are computed
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    X = _host_matrix(X)
    n = X.shape[0]
    m = check_int("number of landmarks M", n_landmarks, minimum=1)
    if m > n:
        raise ParameterError(f"the number of landmarks M must be at most the number of samples (N={n}), got M={m}")
    max_iter = check_int("max_iter", max_iter, minimum=1)
    fit_rows = check_int("fit_rows", fit_rows, minimum=1)
    gen = rng(seed, "nystrom")
    state = int(gen.integers(0, 2**32 - 1))
    if n > max(fit_rows, m):
        X = X[np.sort(gen.choice(n, max(fit_rows, m), replace=False))]
    km = KMeans(n_clusters=m, init="k-means++", n_init=1, max_iter=max_iter, random_state=state)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"), pinned_blas():
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate centres: visible in the rank
        km.fit(X)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def _inv_sqrt(K_zz: np.ndarray, rtol: float) -> tuple[np.ndarray, int, float]:
    """``K_zz^{-1/2}`` (pseudo-inverse: eigenvalues <= rtol·μ_max dropped), the rank kept, the cut-off."""
    with pinned_blas():  # LAPACK's bits must not depend on the thread count
        mu, U = np.linalg.eigh((K_zz + K_zz.T) / 2.0)
    cutoff = rtol * max(float(mu.max(initial=0.0)), 0.0)
    keep = mu > cutoff
    Uk = U[:, keep]
    with pinned_blas():
        A = (Uk / np.sqrt(mu[keep])) @ Uk.T
    return A, int(keep.sum()), cutoff


def nystrom_features(
    kernel: Kernel, X: Any, landmarks: Any, *, rtol: float = EIG_RTOL, n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> NystromFactor:
    """``Φ = K(X, Z) · K(Z, Z)^{-1/2}`` (pseudo-inverse square root), float64, in row blocks.

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
    landmarks : array of shape (n_landmarks, n_features)
        Z (any rows: k-means centres, or rows of X).
    rtol : float
        Eigenvalues of K(Z, Z) at or below ``rtol · μ_max`` are treated as zero.
    n_jobs : int, optional
        Worker threads (default: the usable CPUs). Does not change the result.
    progress : callable(rows_done, n_samples), optional
        Called after each row block.

    Returns
    -------
    NystromFactor
        Memory: Φ (N·M float64) and one block of 2048 × M per worker; never N × N.
    """
    _check_kernel(kernel)
    X = _host_matrix(X)
    Z = np.ascontiguousarray(_host_matrix(landmarks), dtype=np.float64)
    if Z.shape[1] != X.shape[1] or Z.shape[0] == 0:
        raise ParameterError(f"landmarks must have shape (M >= 1, {X.shape[1]}) to match X, got {Z.shape}")
    if not (isinstance(rtol, float) and 0.0 <= rtol < 1.0):
        raise ParameterError(f"rtol must be a float in [0, 1), got {rtol!r}")
    n, m = X.shape[0], Z.shape[0]
    A, rank, cutoff = _inv_sqrt(kernel.block(Z, Z), rtol)
    Phi = np.empty((n, m), dtype=np.float64)

    advance = rows_done(progress, n)

    def task(i0, state):
        # float64 rows and landmarks: the block is computed in float64 (Kernel.block's rule)
        Kb = kernel.block(np.asarray(X[i0 : i0 + _BLOCK_ROWS], dtype=np.float64), Z)
        np.matmul(Kb, A, out=Phi[i0 : i0 + _BLOCK_ROWS])
        advance(Kb.shape[0])

    run_tasks(task, range(0, n, _BLOCK_ROWS), lambda: None, n_jobs)
    return NystromFactor(features=Phi, landmarks=Z, rank=rank, cutoff=cutoff)


def nystrom(kernel: Kernel, X: Any, n_landmarks: int, *, seed: int, n_jobs: int | None = None) -> NystromFactor:
    """The Nyström factor of ``kernel`` on X with M k-means landmarks (:func:`kmeans_landmarks`
    then :func:`nystrom_features`, with the module's defaults)."""
    _check_kernel(kernel)
    return nystrom_features(kernel, X, kmeans_landmarks(X, n_landmarks, seed=seed), n_jobs=n_jobs)


def error_rows(n_samples: int, *, seed: int, n_rows: int = ERROR_ROWS) -> np.ndarray:
    """The rows :func:`nystrom_error` measures on: all when ``n_samples <= n_rows``, else
    ``n_rows`` drawn without replacement from ``rng(seed, "nystrom").spawn(1)[0]``, ascending."""
    n = check_int("n_samples", n_samples, minimum=1)
    r = check_int("n_rows", n_rows, minimum=1)
    if n <= r:
        return np.arange(n, dtype=np.int64)
    gen = rng(seed, "nystrom").spawn(1)[0]
    return np.sort(gen.choice(n, r, replace=False)).astype(np.int64)


def nystrom_error(
    kernel: Kernel, X: Any, features: Any, *, seed: int, n_rows: int = ERROR_ROWS, n_jobs: int | None = None
) -> NystromError:
    """Measure ``K ≈ ΦΦᵀ`` on a seeded subsample S of rows (:func:`error_rows`) against float64 K.

    The exact row sums ``Σ_j K(x_i, x_j)`` (i in S, j over all N) come from
    :func:`~schedgen.kernels.block_sums` on float64 copies of the rows, 32,768 columns
    at a time; their approximation is ``φ_iᵀ (Φᵀ1)``. Cost O(|S|·N·D) time; memory a float64 copy of
    S's rows and of one column chunk, and K_SS and Φ_S Φ_Sᵀ (|S|² each).

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
    features : array of shape (n_samples, n_landmarks)
        Φ.
    seed : int
    n_rows : int
        |S| (all rows when N is smaller).
    n_jobs : int, optional
        Worker threads. Does not change the result.

    Returns
    -------
    NystromError
        A row whose exact sum is 0 (possible with a polynomial kernel) has an infinite
        (or NaN) relative error, which then shows in the max.
    """
    _check_kernel(kernel)
    X = _host_matrix(X)
    Phi = np.asarray(to_numpy(features) if not isinstance(features, np.ndarray) else features, dtype=np.float64)
    n = X.shape[0]
    if Phi.ndim != 2 or Phi.shape[0] != n:
        raise ParameterError(f"features must have shape ({n}, M) to match X, got {Phi.shape}")
    S = error_rows(n, seed=seed, n_rows=n_rows)
    r = len(S)
    XS = np.asarray(X[S], dtype=np.float64)
    exact = np.zeros(r)
    for c0 in range(0, n, _ERROR_COLS):
        # S's rows then the chunk's columns, in one float64 array: block_sums computes in its dtype
        stack = np.concatenate([XS, np.asarray(X[c0 : c0 + _ERROR_COLS], dtype=np.float64)])
        exact += block_sums(kernel, stack, np.arange(r), np.arange(r, len(stack)), n_jobs=n_jobs)
    with pinned_blas():
        approx = Phi[S] @ Phi.sum(axis=0)
        P_SS = Phi[S] @ Phi[S].T
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(approx - exact) / np.abs(exact)
    K_SS = gram(kernel, XS, np.arange(r), np.arange(r), n_jobs=n_jobs)
    frob = float(np.linalg.norm(K_SS - P_SS) / np.linalg.norm(K_SS))
    return NystromError(s_tot_median=float(np.median(rel)), s_tot_max=float(rel.max()), frobenius=frob, rows=r)


class ShrinkingFactor:
    """The rows of Φ of a set of samples that only shrinks, for products ``Φ_live · v``.

    The selection loop of ``--method mmd --approx nystrom:M`` keeps
    ``s_P(i) = φ_iᵀ a`` with ``a = Σ_{j∈P} φ_j`` for every i not scheduled yet: one
    :meth:`matvec` of N·M a step. Removed rows are only marked dead until more than
    1/8 of the rows are, then the live rows are moved up *in place* (row blocks, in
    increasing order: a block's sources lie at or after its destination), so Φ's
    memory is never copied whole and the GEMVs waste at most 1/8 of their work.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_landmarks), float64, C-contiguous
        Φ. **Taken over and overwritten** (compacted in place); pass a copy to keep it.
    n_jobs : int, optional
        Worker threads for the GEMVs (default: the usable CPUs). Does not change results:
        each task is a fixed block of rows (a function of the layout, which is a function
        of the removals) computed with BLAS pinned to one thread.

    Notes
    -----
    "Position" p is the p-th live sample, in the order of the rows of ``features``
    (the selection loop's Q order), as :class:`~schedgen.kernels.WorkingSet` counts them.
    """

    def __init__(self, features: np.ndarray, *, n_jobs: int | None = None) -> None:
        if not (isinstance(features, np.ndarray) and features.ndim == 2 and features.dtype == np.float64
                and features.flags.c_contiguous and features.flags.writeable):
            raise ParameterError(
                "features must be a writeable C-contiguous float64 array of shape (n_samples, n_landmarks), got "
                + (f"{features.dtype} of shape {features.shape}" if isinstance(features, np.ndarray)
                   else type(features).__name__)
            )
        if not np.isfinite(features).all():
            raise ParameterError("features must hold finite values only, got NaN or infinity")
        self._Phi = features
        self._rows = features.shape[0]  # rows in use (live and dead): Φ[:rows]
        self._alive = np.ones(self._rows, dtype=bool)
        self._dead = 0
        self._n_jobs = n_jobs

    @property
    def n(self) -> int:
        """Number of live rows."""
        return self._rows - self._dead

    @property
    def rank(self) -> int:
        """M, the number of columns of Φ."""
        return int(self._Phi.shape[1])

    def _blocks(self) -> range:
        return range(0, self._rows, _SHRINK_ROWS)

    def column_sum(self) -> np.ndarray:
        """``Σ_{live i} φ_i`` (float64 of shape (M,)): block sums added in block order."""
        parts = np.zeros((len(self._blocks()), self.rank))
        alive, Phi, rows = self._alive, self._Phi, self._rows

        def task(t, state):
            r0 = t * _SHRINK_ROWS
            r1 = min(r0 + _SHRINK_ROWS, rows)
            blk, live = Phi[r0:r1], alive[r0:r1]
            parts[t] = (blk if live.all() else blk[live]).sum(axis=0)

        run_tasks(task, range(len(parts)), lambda: None, self._n_jobs)
        out = np.zeros(self.rank)
        for row in parts:  # in block order: the bits do not depend on which thread ran which block
            out += row
        return out

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``Φ_live · v`` (float64 of shape (n_live,)), one GEMV per fixed row block."""
        v = np.ascontiguousarray(v, dtype=np.float64)
        if v.shape != (self.rank,):
            raise ParameterError(f"v must have shape ({self.rank},), got {v.shape}")
        rows, Phi = self._rows, self._Phi
        out = np.empty(rows)

        def task(r0, state):
            r1 = min(r0 + _SHRINK_ROWS, rows)
            np.matmul(Phi[r0:r1], v, out=out[r0:r1])

        run_tasks(task, self._blocks(), lambda: None, self._n_jobs)
        return out if self._dead == 0 else out[self._alive[: self._rows]]

    def _slots(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions)
        if pos.ndim != 1 or not (pos.size == 0 or pos.dtype.kind in "iu"):
            raise ParameterError(f"positions must be a 1-D integer array, got dtype {pos.dtype} and shape {pos.shape}")
        if pos.size and (pos.min() < 0 or pos.max() >= self.n):
            raise ParameterError(f"positions must lie in [0, {self.n}), got values from {pos.min()} to {pos.max()}")
        slots = np.flatnonzero(self._alive)[pos] if self._dead else pos.astype(np.int64)
        if np.unique(slots).size != slots.size:
            raise ParameterError("positions must be distinct, got a repeated position")
        return slots

    def rows_sum(self, positions) -> np.ndarray:
        """``Σ_r φ_{positions[r]}`` over live positions, rows added in the given order (float64 (M,))."""
        slots = self._slots(positions)
        out = np.zeros(self.rank)
        for s in slots.tolist():
            out += self._Phi[s]
        return out

    def remove(self, positions) -> None:
        """Drop the live rows at ``positions``; compact in place past 1/8 dead rows."""
        slots = self._slots(positions)
        if slots.size == 0:
            return
        self._alive[slots] = False
        self._dead += slots.size
        if self._dead > _DEAD_FRACTION * self._rows:
            src = np.flatnonzero(self._alive)
            Phi = self._Phi
            # Destination block [t0, t1) reads rows src[t0:t1] >= t0, which no earlier block has
            # written (they write below t0), and the fancy index copies them before the write.
            for t0 in range(0, src.size, _SHRINK_ROWS):
                part = src[t0 : t0 + _SHRINK_ROWS]
                if part[0] != t0 or part[-1] != t0 + part.size - 1:
                    Phi[t0 : t0 + part.size] = Phi[part]
            self._rows = int(src.size)
            self._alive = np.ones(self._rows, dtype=bool)
            self._dead = 0
