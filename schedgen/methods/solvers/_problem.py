"""The batch problem of one selection step, and the kernel reads every solver shares.

``BatchProblem`` holds ``Z``'s diagonal, the negative row sums and ``k``, and reads
kernel values through its ``block``/``columns`` callables; ``_kblock`` and ``_columns``
are those reads with the self entries set to 0 and the shapes checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...errors import ParameterError


def _as_positions(x, n: int, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise ParameterError(
            f"{what} must be a 1-D array of integer positions, got dtype {arr.dtype} "
            f"and shape {arr.shape}"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ParameterError(
            f"{what} must lie in 0..{n - 1}, got values in {arr.min()}..{arr.max()}"
        )
    return arr


@dataclass(frozen=True)
class BatchProblem:
    """One selection step: choose ``k`` of ``n`` samples minimising ``mᵀZm``.

    Parameters
    ----------
    diag : array of shape (n,)
        ``Z_ii`` (float64).
    neg : array of shape (n,)
        ``Σ_{j≠i} min(K_ij, 0)`` over Q (all zeros for non-negative kernels such as
        RBF; ``<= 0``). It must not exceed the sum of the negative values ``block``
        returns: solvers use it as a lower bound.
    k : int
        Batch size, ``1 <= k <= n``.
    block : callable ``(rows, cols) -> array of shape (len(rows), len(cols))``
        ``K[rows][:, cols]`` for int64 positions in ``0..n-1``. Off-diagonal ``Z``
        equals ``K``. Entries where a row equals a column are ``K_ii`` (not ``Z_ii``);
        solvers never use them. Assumed symmetric: ``K_ij == K_ji``.
    columns : callable ``(cols) -> array of shape (len(cols), n)``, optional
        ``K[cols][:, all]``: the kernel between a few samples and every sample, as rows.
        The fast path for full columns (the selection loop serves it from GEMM operands
        prepared once); without it solvers call ``block(arange(n), cols)``. Each call
        hands over a fresh array: solvers may overwrite its self entries ``(r, cols[r])``
        (``K_ii``) with 0, and nothing else.
    """

    diag: np.ndarray
    neg: np.ndarray
    k: int
    block: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    columns: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        diag = np.ascontiguousarray(self.diag, dtype=np.float64)
        neg = np.ascontiguousarray(self.neg, dtype=np.float64)
        if diag.ndim != 1 or diag.size == 0:
            raise ParameterError(
                f"diag must be a non-empty 1-D array, got shape {diag.shape}"
            )
        if neg.shape != diag.shape:
            raise ParameterError(
                f"neg must have the shape of diag {diag.shape}, got {neg.shape}"
            )
        if not (np.isfinite(diag).all() and np.isfinite(neg).all()):
            raise ParameterError("diag and neg must be finite, got NaN or infinity")
        if (neg > 0).any():
            raise ParameterError(
                f"neg sums negative kernel values and must be <= 0, got max {neg.max()}"
            )
        n = diag.size
        k = self.k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ParameterError(
                f"k must be a positive integer no larger than the number of unselected "
                f"samples (n={n}), got k={k!r}"
            )
        if not callable(self.block):
            raise ParameterError(f"block must be callable, got {type(self.block).__name__}")
        if self.columns is not None and not callable(self.columns):
            raise ParameterError(f"columns must be callable or None, got {type(self.columns).__name__}")
        object.__setattr__(self, "diag", diag)
        object.__setattr__(self, "neg", neg)
        object.__setattr__(self, "k", int(k))

    @property
    def n(self) -> int:
        """Number of unselected samples."""
        return int(self.diag.size)

    @property
    def a(self) -> np.ndarray:
        """Linear LP coefficients ``a_i = min(Z_ii, 0) + neg_i``, shape (n,)."""
        return np.minimum(self.diag, 0.0) + self.neg

    @classmethod
    def from_dense(cls, Z, k, *, kdiag=0.0) -> "BatchProblem":
        """Wrap a dense symmetric ``Z`` (tests and small cases).

        Parameters
        ----------
        Z : array of shape (n, n)
            Symmetric; off-diagonal = ``K``, diagonal = ``Z_ii``.
        k : int
        kdiag : float or array of shape (n,), default 0.0
            What ``block`` returns where a row equals a column (``K_ii``). Tests pass
            NaN to prove that no solver reads it.
        """
        Z = np.array(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[0] != Z.shape[1]:
            raise ParameterError(f"Z must be a square matrix, got shape {Z.shape}")
        if not np.isfinite(Z).all():
            raise ParameterError("Z must be finite, got NaN or infinity")
        if not np.array_equal(Z, Z.T):
            raise ParameterError("Z must be exactly symmetric (Z == Z.T), got an asymmetric matrix")
        K = Z.copy()
        np.fill_diagonal(K, kdiag)
        off = Z.copy()
        np.fill_diagonal(off, 0.0)
        neg = np.minimum(off, 0.0).sum(axis=1)

        def block(rows, cols):
            return K[np.ix_(rows, cols)]

        return cls(diag=Z.diagonal().copy(), neg=neg, k=k, block=block)


def _kblock(problem: BatchProblem, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``K[rows][:, cols]`` with entries where a row equals a column set to 0.

    Zeroing (instead of subtracting ``K_ii`` later) keeps the ``K_ii`` values out of every
    sum, so ``g_i = Σ_{j∈S} K_ij`` never counts ``i`` itself.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if rows.size == 0 or cols.size == 0:
        return np.zeros((rows.size, cols.size))
    out = np.array(problem.block(rows, cols), dtype=np.float64, copy=True)
    if out.shape != (rows.size, cols.size):
        raise ParameterError(
            f"block(rows, cols) must return shape {(rows.size, cols.size)}, got {out.shape}"
        )
    same = rows[:, None] == cols[None, :]
    if same.any():
        out[same] = 0.0
    if not np.isfinite(out).all():
        raise ParameterError("block returned NaN or infinity off the diagonal")
    return out


def _columns(problem: BatchProblem, cols) -> np.ndarray:
    """``K[cols][:, all]``: float64 of shape (len(cols), n) with the self entries set to 0."""
    cols = np.asarray(cols, dtype=np.int64)
    n, m = problem.n, cols.size
    if problem.columns is not None:
        out = np.asarray(problem.columns(cols), dtype=np.float64)
        if out.shape != (m, n):
            raise ParameterError(f"columns(cols) must return shape {(m, n)}, got {out.shape}")
    else:
        blk = np.asarray(problem.block(np.arange(n, dtype=np.int64), cols), dtype=np.float64)
        if blk.shape != (n, m):
            raise ParameterError(f"block(rows, cols) must return shape {(n, m)}, got {blk.shape}")
        out = np.ascontiguousarray(blk.T)
    out[np.arange(m), cols] = 0.0
    # One cheap pass first; the exact test only when the sum is not finite (or overflowed).
    if not np.isfinite(out.sum()) and not np.isfinite(out).all():
        raise ParameterError("block returned NaN or infinity off the diagonal")
    return out


def objective(problem: BatchProblem, positions) -> float:
    """``mᵀZm`` for the batch ``positions`` (float64).

    ``= Σ_{i∈B} Z_ii + Σ_{i≠j ∈ B} K_ij``.

    Parameters
    ----------
    problem : BatchProblem
        The selection step.
    positions : array-like of int, shape (|B|,)
        Distinct positions in ``0..n-1``: the batch B.

    Returns
    -------
    float
        The objective of B.
    """
    pos = _as_positions(positions, problem.n, "positions")
    if np.unique(pos).size != pos.size:
        raise ParameterError("positions must be distinct, got a repeated position")
    return float(problem.diag[pos].sum() + _kblock(problem, pos, pos).sum())


def _order_by(values: np.ndarray) -> np.ndarray:
    """Positions sorted by ``values``, ties by smaller position (a stable argsort)."""
    return np.argsort(values, kind="stable").astype(np.int64)


def _check_problem(problem) -> None:
    if not isinstance(problem, BatchProblem):
        raise ParameterError(f"expected a BatchProblem, got {type(problem).__name__}")
