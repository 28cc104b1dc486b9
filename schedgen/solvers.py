"""Batch solvers: choose the next mini-batch B by minimising ``mᵀ Z m``.

One call answers one selection step of the MMD schedule (DESIGN.md §1): among the
``n`` unselected samples Q pick ``k`` positions minimising ``mᵀZm`` over binary ``m``
with ``Σm = k``. ``Z`` off the diagonal is the kernel ``K``; its diagonal carries the
linear terms and is built by the caller (exact factor-2 expansion or the paper's
literal coefficients -- not this module's business).

Solvers never see an ``n × n`` matrix. They read kernel values through
``BatchProblem.block(rows, cols)``, requesting at most ``O(pool²)`` entries for a pool of
a few ``k`` or ``(n × k)`` entries once per call, and certify that the restricted
computation equals the unrestricted one with cheap lower bounds:

``lp``
    The paper's LP relaxation (eq. 10) solved exactly through its reduced form (``w``
    eliminated), on a candidate set grown until a reduced-cost certificate holds, with
    pair rows added lazily. Rounded to the ``k`` largest ``m``.
``greedy``
    Adds the sample of least objective increase ``Z_jj + 2 Σ_{i∈S} K_ij`` one at a time;
    identical (same positions, same order) to greedy on the dense matrix.
``swap``
    ``greedy`` followed by best-improvement 1-swap local search.

All arrays are NumPy float64 (positions int64); HiGHS is the LP engine.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import highspy
import numpy as np
import scipy.sparse as sp

from .errors import ParameterError

__all__ = [
    "BatchProblem",
    "objective",
    "Solver",
    "LPSolver",
    "GreedySolver",
    "SwapSolver",
    "SOLVERS",
    "DEFAULT_SOLVER",
    "get_solver",
    "LPRelaxation",
    "solve_lp_relaxation",
    "reduced_lp_objective",
    "brute_force",
    "full_lp",
    "LPSolveError",
]

_EPS = np.finfo(np.float64).eps
#: Primal tolerance: a pair row is violated when ``m_i + m_j - 1 - t_ij`` exceeds it.
_PRIMAL_TOL = 1e-9
#: Relative tolerance of the reduced-cost certificate ``a_l >= μ``.
_DUAL_TOL = 1e-9
#: A swap is taken only when it lowers the objective by more than this (relative).
_SWAP_RTOL = 1e-12
#: Decimals ``m`` is rounded to before ranking, so 0.4999999999 ties with 0.5.
_ROUND_DECIMALS = 9


class LPSolveError(RuntimeError):
    """HiGHS did not return an optimal solution (an internal failure, not bad input)."""


# --------------------------------------------------------------------------- problem


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
    """

    diag: np.ndarray
    neg: np.ndarray
    k: int
    block: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)

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
        n = Z.shape[0]
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


def objective(problem: BatchProblem, positions) -> float:
    """``mᵀZm`` for the batch ``positions`` (float64).

    ``= Σ_{i∈B} Z_ii + Σ_{i≠j ∈ B} K_ij``.
    """
    pos = _as_positions(positions, problem.n, "positions")
    if np.unique(pos).size != pos.size:
        raise ParameterError("positions must be distinct, got a repeated position")
    return float(problem.diag[pos].sum() + _kblock(problem, pos, pos).sum())


def _safe_lower_bound(problem: BatchProblem) -> np.ndarray:
    """``lb_j = Z_jj + 2 neg_j``: a lower bound of ``Z_jj + 2 Σ_{i∈S} K_ij`` for any S.

    ``neg`` is inflated by a few ulps per summand so that the bound also holds for the
    floating-point sums the solvers compute (negative terms summed in any order have
    relative error below ``(n+k)·eps``). With ``neg == 0`` the bound is exact: a sum of
    non-negative floats is non-negative.
    """
    n, k = problem.n, problem.k
    slack = 1.0 + 4.0 * (n + k + 2) * _EPS
    return problem.diag + 2.0 * (problem.neg * slack)


def _order_by(values: np.ndarray) -> np.ndarray:
    """Positions sorted by ``values``, ties by smaller position (a stable argsort)."""
    return np.argsort(values, kind="stable").astype(np.int64)


# --------------------------------------------------------------------------- HiGHS

_BANNER_LOCK = threading.Lock()
_BANNER_DONE = False


def _new_highs() -> highspy.Highs:
    """A silent ``Highs`` object.

    The first construction in a process prints a banner to file descriptor 1 before
    ``output_flag`` can be set; redirect fd 1 to /dev/null around it (once), flushing
    C stdio inside the redirection so the banner is not written later.
    """
    global _BANNER_DONE
    with _BANNER_LOCK:
        if not _BANNER_DONE:
            try:
                sys.stdout.flush()
            except (AttributeError, ValueError):  # closed or replaced stdout
                pass
            saved = devnull = None
            try:
                saved = os.dup(1)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
            except OSError:  # no fd 1 to protect
                pass
            try:
                h = highspy.Highs()
                try:
                    ctypes.CDLL(None).fflush(None)
                except (OSError, AttributeError):
                    pass
            finally:
                if saved is not None:
                    os.dup2(saved, 1)
                    os.close(saved)
                if devnull is not None:
                    os.close(devnull)
            _BANNER_DONE = True
        else:
            h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    # Simplex: a basic (vertex) solution with duals consistent with its basis.
    h.setOptionValue("solver", "simplex")
    return h


@dataclass(frozen=True)
class _LPSolution:
    x: np.ndarray
    row_dual: np.ndarray
    col_dual: np.ndarray
    value: float


def _solve_lp(cost, lower, upper, A: sp.csr_matrix, row_lower, row_upper) -> _LPSolution:
    """Minimise ``costᵀx`` s.t. ``row_lower <= A x <= row_upper``, ``lower <= x <= upper``.

    HiGHS convention (checked in tests): ``row_dual = ∂ value / ∂ rhs`` and
    ``col_dual = cost - Aᵀ row_dual`` (reduced costs).
    """
    A = sp.csr_matrix(A, dtype=np.float64)
    A.sum_duplicates()
    A.sort_indices()
    lp = highspy.HighsLp()
    lp.num_col_ = A.shape[1]
    lp.num_row_ = A.shape[0]
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_ = np.asarray(lower, dtype=np.float64)
    lp.col_upper_ = np.asarray(upper, dtype=np.float64)
    lp.row_lower_ = np.asarray(row_lower, dtype=np.float64)
    lp.row_upper_ = np.asarray(row_upper, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_ = A.shape[1]
    lp.a_matrix_.num_row_ = A.shape[0]
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data
    h = _new_highs()
    status = h.passModel(lp)
    if status != highspy.HighsStatus.kOk:
        raise LPSolveError(f"HiGHS rejected the LP model (status {status})")
    status = h.run()
    model_status = h.getModelStatus()
    if status != highspy.HighsStatus.kOk or model_status != highspy.HighsModelStatus.kOptimal:
        raise LPSolveError(
            f"HiGHS did not solve the LP to optimality: run status {status}, "
            f"model status {h.modelStatusToString(model_status)}"
        )
    sol = h.getSolution()
    return _LPSolution(
        x=np.array(sol.col_value, dtype=np.float64),
        row_dual=np.array(sol.row_dual, dtype=np.float64),
        col_dual=np.array(sol.col_dual, dtype=np.float64),
        value=float(h.getInfo().objective_function_value),
    )


# --------------------------------------------------------------------------- LP


def _reduced_lp(a, diag, k, pair_i, pair_j, pair_z, m_bounds=None) -> tuple[_LPSolution, int]:
    """The reduced LP on ``c`` candidates with the given pair rows.

    Columns: ``m`` (c), ``u`` (one per ``diag >= 0``), ``t`` (one per pair). Rows:
    ``Σ m = k`` first (its dual is ``μ``), then ``u_i - m_i >= -½``, then
    ``t_ij - m_i - m_j >= -1``. ``m_bounds`` (lower, upper) default to ``[0, 1]``.
    Returns the solution and the number of ``u`` columns.
    """
    c = a.size
    ucand = np.flatnonzero(diag >= 0.0)
    nu, npair = ucand.size, pair_i.size
    ncol = c + nu + npair
    cost = np.concatenate([a, diag[ucand], pair_z])
    m_lo, m_hi = (np.zeros(c), np.ones(c)) if m_bounds is None else m_bounds
    lower = np.concatenate([m_lo, np.zeros(nu + npair)])
    upper = np.concatenate([m_hi, np.full(nu + npair, np.inf)])
    # CSR rows: [Σm], [u_i - m_i], [t_ij - m_i - m_j]
    r_sum = (np.zeros(c, np.int64), np.arange(c), np.ones(c))
    ur = 1 + np.arange(nu)
    r_u = (
        np.concatenate([ur, ur]),
        np.concatenate([c + np.arange(nu), ucand]),
        np.concatenate([np.ones(nu), -np.ones(nu)]),
    )
    pr = 1 + nu + np.arange(npair)
    r_p = (
        np.concatenate([pr, pr, pr]),
        np.concatenate([c + nu + np.arange(npair), pair_i, pair_j]),
        np.concatenate([np.ones(npair), -np.ones(npair), -np.ones(npair)]),
    )
    rows = np.concatenate([r_sum[0], r_u[0], r_p[0]])
    cols = np.concatenate([r_sum[1], r_u[1], r_p[1]])
    vals = np.concatenate([r_sum[2], r_u[2], r_p[2]])
    nrow = 1 + nu + npair
    A = sp.csr_matrix((vals, (rows, cols)), shape=(nrow, ncol))
    row_lower = np.concatenate([[float(k)], np.full(nu, -0.5), np.full(npair, -1.0)])
    row_upper = np.concatenate([[float(k)], np.full(nu + npair, np.inf)])
    return _solve_lp(cost, lower, upper, A, row_lower, row_upper), nu


@dataclass(frozen=True)
class LPRelaxation:
    """The solved LP relaxation of one selection step.

    Attributes
    ----------
    value : float
        Optimal value of the relaxation (eq. 10 relaxed; equal to the reduced form).
    m : array of shape (n,)
        An optimal ``m`` (zero outside ``candidates``).
    mu : float
        Dual of ``Σm = k`` (HiGHS: ``∂value/∂k``); the certificate is ``a_l >= mu``
        for every ``l`` outside ``candidates``.
    candidates : array of int64
        The final candidate set C (the ``|C|`` smallest ``a``, ties by position).
    pair_rows : int
        Pair rows ``t_ij >= m_i + m_j - 1`` added lazily in the final model.
    solves : int
        HiGHS solves in total.
    positions : array of shape (k,), int64
        The rounding: the ``k`` largest ``m`` (rounded to 9 decimals), ties by smaller
        ``a``, then smaller position; in that order.
    """

    value: float
    m: np.ndarray
    mu: float
    candidates: np.ndarray
    pair_rows: int
    solves: int
    positions: np.ndarray


def _round_lp(m: np.ndarray, a: np.ndarray, k: int) -> np.ndarray:
    key_m = np.round(m, _ROUND_DECIMALS)
    order = np.lexsort((np.arange(m.size), a, -key_m))
    return order[:k].astype(np.int64)


def solve_lp_relaxation(problem: BatchProblem, *, initial_size: int | None = None) -> LPRelaxation:
    """Solve the paper's LP relaxation (eq. 10) exactly, in its reduced form.

    Eliminating ``w`` from eq. 10 (``w_ij`` for every ordered pair, ``i = j`` included)
    gives ``min Σ a_i m_i + Σ_{i<j, Z_ij>0} Z_ij·max(0, m_i+m_j-1)
    + Σ_{Z_ii>=0} Z_ii·max(0, m_i-½)`` over ``0 <= m <= 1, Σm = k``, with
    ``a = min(diag, 0) + neg``.

    The LP is solved on a candidate set C (the smallest ``a``), starting at
    ``min(n, 4k)``; pair rows are added only for pairs of C that the current solution
    violates (found through ``block(H, S)``, H = ``{m > ½}``, S = ``{m > 0}``: a violated
    pair needs ``m_i + m_j > 1``). The restricted optimum is optimal for the full LP when
    every ``l`` outside C has reduced cost ``a_l - μ >= 0``; otherwise C doubles.

    Parameters
    ----------
    problem : BatchProblem
    initial_size : int, optional
        Initial ``|C|`` (default ``min(n, 4k)``); clipped to ``[k, n]``.
    """
    n, k = problem.n, problem.k
    a = problem.a
    order = _order_by(a)
    size = min(n, 4 * k) if initial_size is None else int(initial_size)
    size = min(n, max(k, size))
    # Pair rows, kept across rounds as global positions (lo < hi) with their Z value.
    p_lo = np.zeros(0, np.int64)
    p_hi = np.zeros(0, np.int64)
    p_z = np.zeros(0)
    keys = np.zeros(0, np.int64)
    solves = 0
    while True:
        C = order[:size]
        loc = np.full(n, -1, np.int64)
        loc[C] = np.arange(size)
        while True:
            sol, _ = _reduced_lp(a[C], problem.diag[C], k, loc[p_lo], loc[p_hi], p_z)
            solves += 1
            m = np.clip(sol.x[:size], 0.0, 1.0)
            hi = np.flatnonzero(m > 0.5 + _PRIMAL_TOL / 2)
            if hi.size == 0:
                break  # m_i + m_j > 1 needs one of them above ½: nothing can be violated
            sup = np.flatnonzero(m > _PRIMAL_TOL / 2)
            Hg, Sg = C[hi], C[sup]
            Kb = _kblock(problem, Hg, Sg)
            viol = (
                (Kb > 0.0)
                & (Hg[:, None] != Sg[None, :])
                & (m[hi][:, None] + m[sup][None, :] - 1.0 > _PRIMAL_TOL)
            )
            ri, ci = np.nonzero(viol)
            lo = np.minimum(Hg[ri], Sg[ci])
            hg = np.maximum(Hg[ri], Sg[ci])
            new_keys, first = np.unique(lo * n + hg, return_index=True)
            fresh = ~np.isin(new_keys, keys)
            if not fresh.any():
                break  # every violated pair already has its row: satisfied within tolerance
            sel = first[fresh]
            p_lo = np.concatenate([p_lo, lo[sel]])
            p_hi = np.concatenate([p_hi, hg[sel]])
            p_z = np.concatenate([p_z, Kb[ri[sel], ci[sel]]])
            keys = np.concatenate([keys, new_keys[fresh]])
        mu = float(sol.row_dual[0])
        if size == n:
            break
        a_out = a[order[size]]  # the smallest a outside C
        scale = max(1.0, float(np.abs(a[C]).max()), abs(mu))
        if a_out >= mu - _DUAL_TOL * scale:
            break
        size = min(n, 2 * size)
    m_full = np.zeros(n)
    m_full[C] = m
    return LPRelaxation(
        value=sol.value,
        m=m_full,
        mu=mu,
        candidates=C.copy(),
        pair_rows=int(p_lo.size),
        solves=solves,
        positions=_round_lp(m_full, a, k),
    )


def reduced_lp_objective(problem: BatchProblem, m) -> float:
    """The reduced LP objective at ``m`` (shape (n,)), evaluated in closed form.

    ``Σ a_i m_i + Σ_{i<j, Z_ij>0} Z_ij·max(0, m_i+m_j-1) + Σ_{Z_ii>=0} Z_ii·max(0, m_i-½)``.
    Reads ``block`` on the support of ``m`` only.
    """
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (problem.n,):
        raise ParameterError(f"m must have shape ({problem.n},), got {m.shape}")
    a = problem.a
    val = float(a @ m)
    pos_d = problem.diag >= 0.0
    val += float(problem.diag[pos_d] @ np.maximum(0.0, m[pos_d] - 0.5))
    sup = np.flatnonzero(m > 0.0)
    if sup.size > 1:
        Kb = _kblock(problem, sup, sup)
        excess = np.maximum(0.0, m[sup][:, None] + m[sup][None, :] - 1.0)
        upper = np.triu(np.ones_like(Kb, dtype=bool), 1)
        val += float((np.maximum(Kb, 0.0) * excess)[upper].sum())
    return val


def full_lp(
    problem: BatchProblem, *, literal: bool = True, fixed_m=None
) -> tuple[float, np.ndarray]:
    """The oracle: eq. 10's LP relaxation built on all ``n`` samples (``n <= 80``).

    ``literal=True``: exactly eq. 10 relaxed, with ``n²`` variables ``w_ij`` (every
    ordered pair, ``i = j`` included), ``min Σ_ij z_ij w_ij`` s.t.
    ``-m_i - m_j + 2w_ij <= 0`` (``z_ij < 0``), ``m_i + m_j <= 1 + 2w_ij``
    (``z_ij >= 0``), ``0 <= m, w <= 1``, ``Σm = k``.
    ``literal=False``: the reduced form with every pair row and every sample (no
    candidate set, no lazy rows).

    Parameters
    ----------
    fixed_m : array of shape (n,), optional
        Fix ``m`` (bounds ``m <= m <= m``): the value is then the LP's objective at
        that ``m`` with ``w`` (or ``t``, ``u``) optimised; used to check the
        elimination of ``w``.

    Returns
    -------
    value : float
    m : array of shape (n,)
    """
    n, k = problem.n, problem.k
    if n > 80:
        raise ParameterError(f"full_lp builds n² variables and accepts n <= 80, got n={n}")
    idx = np.arange(n, dtype=np.int64)
    Z = _kblock(problem, idx, idx)
    Z[idx, idx] = problem.diag
    m_lo, m_hi = np.zeros(n), np.ones(n)
    if fixed_m is not None:
        fm = np.asarray(fixed_m, dtype=np.float64)
        if fm.shape != (n,) or (fm < 0).any() or (fm > 1).any() or abs(fm.sum() - k) > 1e-9 * k:
            raise ParameterError(
                f"fixed_m must have shape ({n},), values in [0, 1] and sum k={k}, "
                f"got shape {fm.shape} and sum {fm.sum() if fm.size else 0}"
            )
        m_lo, m_hi = fm.copy(), fm.copy()
    if literal:
        ii, jj = np.divmod(np.arange(n * n, dtype=np.int64), n)
        z = Z[ii, jj]
        negz = z < 0.0
        r = np.arange(n * n, dtype=np.int64)
        sgn = np.where(negz, -1.0, 1.0)  # the m coefficients of row (i, j)
        rows = np.concatenate([r, r, r, np.full(n, n * n)])
        cols = np.concatenate([ii, jj, n + r, idx])
        vals = np.concatenate([sgn, sgn, np.where(negz, 2.0, -2.0), np.ones(n)])
        A = sp.csr_matrix((vals, (rows, cols)), shape=(n * n + 1, n + n * n))
        cost = np.concatenate([np.zeros(n), z])
        lower = np.concatenate([m_lo, np.zeros(n * n)])
        upper = np.concatenate([m_hi, np.ones(n * n)])
        row_lower = np.concatenate([np.full(n * n, -np.inf), [float(k)]])
        row_upper = np.concatenate([np.where(negz, 0.0, 1.0), [float(k)]])
        sol = _solve_lp(cost, lower, upper, A, row_lower, row_upper)
        return sol.value, sol.x[:n].copy()
    iu, ju = np.triu_indices(n, 1)
    keep = Z[iu, ju] > 0.0
    iu, ju = iu[keep], ju[keep]
    sol, _ = _reduced_lp(problem.a, problem.diag, k, iu, ju, Z[iu, ju], (m_lo, m_hi))
    return sol.value, sol.x[:n].copy()


# --------------------------------------------------------------------------- greedy


def _greedy(
    problem: BatchProblem, initial_pool: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Certified pool greedy.

    Returns ``(positions in selection order, pool members, KB)`` with
    ``KB[r, c] = K[pool[r], positions[c]]`` (``K_ii`` zeroed), reused by the swap search.
    """
    n, k = problem.n, problem.k
    lb = _safe_lower_bound(problem)
    order = _order_by(lb)
    size0 = min(n, 4 * k) if initial_pool is None else min(n, max(k, int(initial_pool)))
    chosen: list[int] = []
    KB = np.zeros((0, k))  # columns of the chosen samples, rows = pool members
    g = np.zeros(0)  # Σ_{i∈S} K_ij for pool members, accumulated in selection order
    taken = np.zeros(0, bool)
    size = 0

    def grow(new_size: int) -> None:
        nonlocal KB, g, taken, size
        new = order[size:new_size]
        rows = np.zeros((new.size, k))
        g_new = np.zeros(new.size)
        if chosen:
            rows[:, : len(chosen)] = _kblock(problem, new, np.asarray(chosen, np.int64))
            for c in range(len(chosen)):  # the same order of additions as for old members
                g_new += rows[:, c]
        KB = np.vstack([KB, rows])
        g = np.concatenate([g, g_new])
        taken = np.concatenate([taken, np.isin(new, chosen)])
        size = new_size

    grow(size0)
    while len(chosen) < k:
        members = order[:size]
        score = problem.diag[members] + 2.0 * g
        score[taken] = np.inf
        s = score.min()
        j = int(members[score == s].min())
        if size < n:
            # Outside scores are >= lb >= L; an outside tie at L wins only with a smaller
            # position, and order[size] is the smallest position with lb == L outside.
            L, j_out = float(lb[order[size]]), int(order[size])
            if not (s < L or (s == L and j < j_out)):
                grow(min(n, 2 * size))
                continue
        col = _kblock(problem, members, np.array([j], np.int64))[:, 0]
        KB[:, len(chosen)] = col
        g += col
        taken[members == j] = True
        chosen.append(j)
    return np.asarray(chosen, np.int64), order[:size].copy(), KB


def _swap(problem: BatchProblem, initial_pool: int | None, max_swaps: int | None) -> np.ndarray:
    """Greedy, then best-improvement 1-swap local search on a certified pool."""
    n, k = problem.n, problem.k
    B, members, KB = _greedy(problem, initial_pool)  # KB[r, c] = K[members[r], B[c]]
    if k == n:
        return B
    lb = _safe_lower_bound(problem)
    order = _order_by(lb)  # the greedy pool is a prefix of this order
    size = members.size
    in_pool = np.full(n, -1, np.int64)
    in_pool[members] = np.arange(size)
    cap = 10 * k if max_swaps is None else int(max_swaps)
    swaps = 0
    while True:
        g = KB.sum(axis=1)  # Σ_{i∈B} K_ij, recomputed (no drift from incremental updates)
        bl = in_pool[B]
        r = problem.diag[B] + 2.0 * g[bl]  # removal gain: Z_bb + 2 Σ_{i∈B\b} K_ib
        D = (problem.diag[members] + 2.0 * g)[None, :] - 2.0 * KB.T - r[:, None]
        D[:, bl] = np.inf
        best = D.min()
        obj = float(problem.diag[B].sum() + g[bl].sum())  # Σ_b g_b counts each ordered pair once
        scale = abs(obj) + float(np.abs(problem.diag[B]).sum()) + 2.0 * float(np.abs(g[bl]).sum())
        tol = _SWAP_RTOL * scale
        if size < n:
            L = float(lb[order[size]])
            R = float(r.max())
            # Round-off allowance of the computed Δ (differences of sums of size ~scale).
            eps_d = 64 * _EPS * (1.0 + abs(L) + abs(R) + 2.0 * float(np.abs(g).max()) + scale)
            bound = L - R - eps_d  # every outside Δ is >= bound
            certified = bound > best if best < -tol else bound >= -tol
            if not certified:
                new_size = min(n, 2 * size)
                new = order[size:new_size]
                KB = np.vstack([KB, _kblock(problem, new, B)])
                in_pool[new] = np.arange(size, new_size)
                members = order[:new_size]
                size = new_size
                continue
        if best >= -tol or swaps >= cap:
            break
        # Tie-break: smallest Δ, then smaller removed position b, then smaller added j.
        cs, js = np.nonzero(D == best)
        pick = np.lexsort((members[js], B[cs]))[0]
        c, j = int(cs[pick]), int(members[js[pick]])
        B = B.copy()
        B[c] = j  # the added sample takes the removed one's slot
        KB[:, c] = _kblock(problem, members, np.array([j], np.int64))[:, 0]
        swaps += 1
    return B


# --------------------------------------------------------------------------- registry


@runtime_checkable
class Solver(Protocol):
    """A batch solver: ``solver(problem) -> k distinct int64 positions`` (selection order)."""

    name: str

    def __call__(self, problem: BatchProblem) -> np.ndarray: ...


def _check_problem(problem) -> None:
    if not isinstance(problem, BatchProblem):
        raise ParameterError(f"expected a BatchProblem, got {type(problem).__name__}")


@dataclass(frozen=True)
class LPSolver:
    """The paper's LP relaxation (eq. 10), solved exactly, rounded to the k largest m.

    Ties in the rounding: larger ``m`` (9 decimals) first, then smaller ``a_i``, then
    smaller position. See :func:`solve_lp_relaxation`.
    """

    name: str = "lp"
    initial_size: int | None = None

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return solve_lp_relaxation(problem, initial_size=self.initial_size).positions


@dataclass(frozen=True)
class GreedySolver:
    """Greedy on ``mᵀZm``: add ``argmin_j Z_jj + 2 Σ_{i∈S} K_ij``, ties by smaller position.

    Runs on a pool of the smallest lower bounds ``lb_j = Z_jj + 2 neg_j`` (initially
    ``min(n, 4k)``), doubled whenever a step's choice is not certified against every
    sample outside the pool, so the result equals greedy on the dense matrix.
    """

    name: str = "greedy"
    initial_pool: int | None = None

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return _greedy(problem, self.initial_pool)[0]


@dataclass(frozen=True)
class SwapSolver:
    """Greedy, then best-improvement 1-swap local search.

    Each round takes the swap (remove ``b``, add ``j``) of least
    ``Δ = Z_jj - Z_bb + 2(g_j - K_bj) - 2(g_b - K_bb)``; ties by smaller ``b``
    position, then smaller ``j`` position; the added sample takes ``b``'s slot. Stops
    when no swap lowers the objective by more than ``1e-12 × scale`` (``scale`` = ``|obj|``
    plus the absolute terms of it) or after ``max_swaps`` (default ``10k``) swaps.
    Samples outside the pool are excluded by ``Δ >= lb_j - max_b(Z_bb + 2 Σ_{B\\b} K)``.
    """

    name: str = "swap"
    initial_pool: int | None = None
    max_swaps: int | None = None

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return _swap(problem, self.initial_pool, self.max_swaps)


SOLVERS: dict[str, Solver] = {
    "lp": LPSolver(),
    "greedy": GreedySolver(),
    "swap": SwapSolver(),
}


#: The paper's algorithm (eq. 10 + rounding); ``swap`` is the better-quality choice.
DEFAULT_SOLVER = "lp"


def get_solver(name: str | None = None) -> Solver:
    """The registered solver called ``name`` (``None``: :data:`DEFAULT_SOLVER`).

    Raises ParameterError listing the registered names on an unknown one.
    """
    if name is None:
        name = DEFAULT_SOLVER
    if not isinstance(name, str) or name not in SOLVERS:
        raise ParameterError(
            f"unknown solver {name!r}; expected one of {', '.join(sorted(SOLVERS))}"
        )
    return SOLVERS[name]


# --------------------------------------------------------------------------- oracle


def brute_force(problem: BatchProblem) -> np.ndarray:
    """The exact optimum by enumeration (``n <= 40``, ``k <= 4``).

    Ties: the lexicographically smallest sorted position tuple. Returns positions in
    increasing order.
    """
    _check_problem(problem)
    n, k = problem.n, problem.k
    if n > 40 or k > 4:
        raise ParameterError(
            f"brute_force enumerates C(n, k) batches and needs n <= 40 and k <= 4, "
            f"got n={n}, k={k}"
        )
    idx = np.arange(n, dtype=np.int64)
    K = _kblock(problem, idx, idx)
    combos = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    val = problem.diag[combos].sum(axis=1)
    for p, q in itertools.combinations(range(k), 2):
        val = val + 2.0 * K[combos[:, p], combos[:, q]]
    return combos[int(np.argmin(val))].copy()
