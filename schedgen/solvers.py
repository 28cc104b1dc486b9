"""Batch solvers: choose the next mini-batch B by minimising ``mᵀ Z m``.

One call answers one selection step of the MMD schedule (DESIGN.md §1): among the
``n`` unselected samples Q pick ``k`` positions minimising ``mᵀZm`` over binary ``m``
with ``Σm = k``. ``Z`` off the diagonal is the kernel ``K``; its diagonal carries the
linear terms and is built by the caller (exact factor-2 expansion or the paper's
literal coefficients -- not this module's business).

Solvers never see an ``n × n`` matrix. They read kernel values through
``BatchProblem.block(rows, cols)`` (small blocks) and ``BatchProblem.columns(cols)``
(full columns ``K(c, Q)``, one ``(n,)`` row per requested sample):

``lp``
    The paper's LP relaxation (eq. 10) solved exactly through its reduced form (``w``
    eliminated). Fast path: ``m = ½`` on the 2k smallest ``a``, accepted only with a
    dual certificate computed from one ``(2k × 2k)`` block; otherwise HiGHS on a
    candidate set grown until a reduced-cost certificate holds, with pair rows added
    lazily. ``2k > n`` is solved as its complement ``m' = 1 - m`` (the same LP with
    ``n - k < n/2``). Rounded to the ``k`` largest ``m``. HiGHS runs in a worker thread
    so that Ctrl-C stops it (``_run_interruptible``).
``greedy``
    Adds the sample of least objective increase ``Z_jj + 2 Σ_{i∈S} K_ij`` one at a time;
    identical (same positions, same order) to greedy on the dense matrix. k full
    columns per call.
``swap``
    ``greedy`` followed by 1-swap local search (slots visited in turn) until no single
    swap improves: k + (number of swaps) full columns per call.

All arrays are NumPy float64 (positions int64); HiGHS is the LP engine.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    """
    pos = _as_positions(positions, problem.n, "positions")
    if np.unique(pos).size != pos.size:
        raise ParameterError("positions must be distinct, got a repeated position")
    return float(problem.diag[pos].sum() + _kblock(problem, pos, pos).sum())


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


def _native_run(h: highspy.Highs) -> highspy.HighsStatus:
    """``h.run()``: the one native call, in the solver thread (a seam for tests)."""
    return h.run()


def _run_interruptible(h: highspy.Highs, poll: float = 0.1) -> highspy.HighsStatus:
    """``h.run()`` that Ctrl-C stops.

    A native call holds the main thread, and Python runs its SIGINT handler only
    between bytecodes, so a long ``run()`` on the main thread ignores Ctrl-C until it
    returns. HiGHS runs here in a worker thread while the calling thread waits in short
    interruptible joins; a KeyboardInterrupt there sets a flag that HiGHS's simplex and
    IPM interrupt callbacks read (``cbSimplexInterrupt``/``cbIpmInterrupt``, called every
    few iterations), the solve stops within an iteration, and the KeyboardInterrupt is
    raised again with a message. Not highspy's own ``HandleKeyboardInterrupt``: that
    prints, exits the process after five presses, and keeps its solver lock on the
    class, which serialises solves of different threads.
    """
    stop = threading.Event()

    def interrupt(e) -> None:
        if stop.is_set():
            e.interrupt()

    h.cbSimplexInterrupt += interrupt
    h.cbIpmInterrupt += interrupt
    out: dict = {}

    def target() -> None:
        try:
            out["status"] = _native_run(h)
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc

    worker = threading.Thread(target=target, name="schedgen-highs", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(poll)
    except KeyboardInterrupt:
        stop.set()
        worker.join()
        raise KeyboardInterrupt("interrupted while HiGHS was solving an LP") from None
    if "error" in out:
        raise out["error"]
    return out["status"]


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
    status = _run_interruptible(h)
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
        Dual of ``Σm = k`` (HiGHS: ``∂value/∂k``; the fast path: the μ of its
        certificate); the certificate is ``a_l >= mu`` for every ``l`` outside
        ``candidates``.
    candidates : array of int64
        The final candidate set C (the ``|C|`` smallest ``a``, ties by position; the
        fast path: the 2k samples with ``m = ½``).
    pair_rows : int
        Pair rows ``t_ij >= m_i + m_j - 1`` in the final model (0 on the fast path).
    solves : int
        HiGHS solves in total (0: the certified half-integral fast path).
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


#: Residual tolerance of the half-integral certificate, relative to max(1, |a|, |μ|).
_CERT_TOL = 1e-9


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest values, ties by smaller position, in that order."""
    n = values.size
    count = min(count, n)
    if count <= 0:
        return np.zeros(0, np.int64)
    if count == n:
        return _order_by(values)
    v = np.partition(values, count - 1)[count - 1]
    cand = np.flatnonzero(values <= v)  # every tie of the boundary value
    return cand[np.lexsort((cand, values[cand]))][:count].astype(np.int64)


def _symmetric_scaling(W: np.ndarray, d: np.ndarray, tol: float) -> np.ndarray | None:
    """``β >= 0`` with ``β_i (Wβ)_i = d_i`` to within ``tol`` (``W >= 0`` symmetric, zero
    diagonal), or None.

    Zero demands get ``β_i = 0``. Symmetric Sinkhorn steps ``β <- sqrt(β d / Wβ)``
    (about 30 on the selection loop's problems), then Newton's method on
    ``x + log(W e^x) = log d`` (``β = e^x``) if they have not converged. Only a
    candidate: the certificate checks the result itself.
    """
    beta = np.zeros(d.size)
    P = np.flatnonzero(d > 0)
    if P.size == 0:
        return beta
    Wp = W[np.ix_(P, P)]
    dp = d[P]
    rs = Wp.sum(axis=1)
    if (rs <= 0).any():
        return None
    b = np.sqrt(dp / rs)
    with np.errstate(all="ignore"):
        for _ in range(60):
            Wb = Wp @ b
            if np.abs(dp - b * Wb).max() <= 0.25 * tol:
                beta[P] = b
                return beta
            b = np.sqrt(b * dp / Wb)
        x = np.log(b)
        logd = np.log(dp)
        for _ in range(20):
            e = np.exp(x)
            We = Wp @ e
            G = x + np.log(We) - logd
            if not np.isfinite(G).all():
                return None
            if np.abs(dp - e * We).max() <= 0.25 * tol:
                break
            J = (Wp * e[None, :]) / We[:, None]  # ∂G_i/∂x_j = δ_ij + W_ij e_j / (We)_i
            J[np.diag_indices_from(J)] += 1.0
            try:
                x = x - np.linalg.solve(J, G)
            except np.linalg.LinAlgError:
                return None
    beta[P] = np.exp(x)
    return beta if np.isfinite(beta).all() else None


#: Largest certificate support that ``_box_flow`` is tried on (2k for the half certificate).
_BOX_FLOW_MAX = 4096


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _box_flow(W: np.ndarray, d: np.ndarray, tol: float, *, max_iter: int = 60) -> np.ndarray | None:
    """A symmetric ``y`` with ``0 <= y <= W`` and row sums ``d`` (to within ``tol``), or None.

    ``W >= 0`` symmetric; its diagonal is a capacity of its own (the certificates' ``v_i``).
    ``y_ij = W_ij σ(x_i + x_j)`` stays inside the box by construction; ``x`` minimises the
    convex ``Φ(x) = Σ_{i<j} W_ij softplus(x_i+x_j) + Σ_i ½ W_ii softplus(2x_i) - dᵀx``
    (``∇Φ`` = row sums of ``y`` minus ``d``), by Newton's method with backtracking. A
    minimiser exists when ``d`` lies strictly inside the feasible set; demands at a bound
    (a row that needs nothing or everything) make ``x`` diverge and give None, as does
    an infeasible ``d``. Only a candidate: the callers check the result.
    """
    n = d.size
    cap = W.sum(axis=1)
    if n == 0:
        return np.zeros((0, 0))
    if (d <= 0).any() or (d >= cap).any():
        return None
    Wd = W.diagonal().copy()
    Wo = W.copy()
    np.fill_diagonal(Wo, 0.0)
    iu = np.triu_indices(n, 1)

    def phi(x):
        return (float((Wo * _softplus(x[:, None] + x[None, :]))[iu].sum())
                + float(0.5 * Wd @ _softplus(2.0 * x)) - float(d @ x))

    r = d / cap
    x = 0.5 * np.log(r / (1.0 - r))
    with np.errstate(over="ignore", under="ignore"):
        f = phi(x)
        for _ in range(max_iter):
            sig = 1.0 / (1.0 + np.exp(-(x[:, None] + x[None, :])))
            s2 = 1.0 / (1.0 + np.exp(-2.0 * x))
            y = Wo * sig
            g = y.sum(axis=1) + Wd * s2 - d
            if not np.isfinite(g).all():
                return None
            if np.abs(g).max() <= 0.25 * tol:
                y[np.diag_indices(n)] = Wd * s2
                return y
            Hs = y * (1.0 - sig)
            Hm = Hs.copy()
            Hm[np.diag_indices(n)] = Hs.sum(axis=1) + 2.0 * Wd * s2 * (1.0 - s2)
            try:
                step = np.linalg.solve(Hm, g)
            except np.linalg.LinAlgError:
                return None
            t, slope = 1.0, float(g @ step)
            while True:
                xn = x - t * step
                fn = phi(xn)
                if fn <= f - 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            if t < 1e-10 or not np.isfinite(fn):
                return None
            x, f = xn, fn
    return None


def _flow_fits(W: np.ndarray, d: np.ndarray, tol: float) -> bool:
    """Whether a symmetric ``y`` in ``[0, W]`` with row sums ``d`` (to within ``tol``) was
    found: ``y = min(W ∘ ββᵀ, W)`` with ``β`` from ``_symmetric_scaling`` (cheap; fails when
    the clipping bites, i.e. demands near the capacities), else ``_box_flow``."""
    beta = _symmetric_scaling(W, d, tol)
    if beta is not None:
        y = np.minimum(W * np.outer(beta, beta), W)
        if np.abs(d - y.sum(axis=1)).max() <= tol:
            return True
    if d.size > _BOX_FLOW_MAX:
        return False  # Newton's dense n×n steps: O(n³) time and several n×n arrays
    y = _box_flow(W, d, tol)
    return y is not None and bool(np.abs(d - y.sum(axis=1)).max() <= tol)


def _half_certificate(problem: BatchProblem, a: np.ndarray):
    """Try ``m = ½`` on the 2k smallest ``a`` (ties by position); certify it by LP duality.

    With S those 2k samples and μ in ``[max_S a, min_{l∉S} a_l]`` (so ``a_l >= μ`` outside
    S), ``m`` is optimal when some ``y_ij ∈ [0, max(Z_ij, 0)]`` on the pairs of S (symmetric) has
    ``Σ_j y_ij = μ - a_i`` for every i in S (``v = 0``, ``w = 0``): then every reduced
    cost is >= 0 and the dual value ``kμ - Σ_{i<j} y_ij`` equals the primal ``½ Σ_S a``.
    ``y = W ∘ ββᵀ`` from a symmetric scaling of ``W = max(Z_S, 0)``, clipped to
    ``[0, W]``, is accepted when its row sums match to ``_CERT_TOL`` (relative).

    Returns ``(LPRelaxation or None, S, W)``.
    """
    n, k = problem.n, problem.k
    S = _smallest(a, 2 * k + 1)
    a_next = float(a[S[-1]]) if S.size > 2 * k else None
    S = S[: 2 * k]
    W = np.maximum(_kblock(problem, S, S), 0.0)
    aS = a[S]
    lo = float(aS[-1])
    # μ may be anything in [a_(2k), a_(2k+1)]: the middle gives every sample of S some
    # demand (better conditioned), the bottom the least demand in total; try both.
    mus = [lo] if a_next is None or not a_next > lo else [0.5 * (lo + a_next), lo]
    for mu in mus:
        d = mu - aS
        tol = _CERT_TOL * max(1.0, float(np.abs(aS).max()), abs(mu))
        if _flow_fits(W, d, tol):
            break
    else:
        return None, S, W
    m = np.zeros(n)
    m[S] = 0.5
    res = LPRelaxation(
        value=0.5 * float(aS.sum()),
        m=m,
        mu=mu,
        candidates=S.copy(),
        pair_rows=0,
        solves=0,
        positions=S[:k].copy(),  # all m = ½: the rounding is the k smallest a, ties by position
    )
    return res, S, W


def solve_lp_relaxation(
    problem: BatchProblem, *, initial_size: int | None = None, certify_half: bool = True
) -> LPRelaxation:
    """Solve the paper's LP relaxation (eq. 10) exactly, in its reduced form.

    Eliminating ``w`` from eq. 10 (``w_ij`` for every ordered pair, ``i = j`` included)
    gives ``min Σ a_i m_i + Σ_{i<j, Z_ij>0} Z_ij·max(0, m_i+m_j-1)
    + Σ_{Z_ii>=0} Z_ii·max(0, m_i-½)`` over ``0 <= m <= 1, Σm = k``, with
    ``a = min(diag, 0) + neg``.

    **2k > n** is solved through its complement ``m' = 1 - m``: with
    ``x⁺ = x + (-x)⁺`` the LP becomes the same LP in ``m'`` with ``Σm' = n - k < n/2``,
    linear coefficients ``a' = -(a + R + max(diag, 0))`` (``R_i = Σ_{j≠i} max(Z_ij, 0)``,
    one blocked pass over the ``n²`` kernel values) and the same pair and diagonal terms,
    plus the constant ``Σa + ½ΣR + ½Σmax(diag, 0)``. Everything below then works on the
    small side: before, ``2k > n`` started HiGHS with every one of the ``n²/2`` pair rows
    (minutes at ``n`` ≈ 1,000, in one native call).

    Fast path (``certify_half``): the typical optimum ``m = ½`` on the 2k smallest ``a``
    (ties by position) is tried first and accepted only with a dual certificate built
    from ``block(S, S)`` (see ``_half_certificate``), without HiGHS. Its rounding is the k
    smallest ``a`` (ties by position). The LP is not always half-integral (nor is ½ on
    the 2k smallest ``a`` always optimal when it is), so when the certificate fails the
    general procedure below runs, starting with the pair rows of S. On the benchmark's
    RBF problems the certificate held at every step but one.

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
    certify_half : bool, default True
        Try the certified half-integral fast path first.
    """
    n, k = problem.n, problem.k
    a = problem.a
    if 2 * k <= n:
        return _solve_reduced(problem, a, initial_size, certify_half)
    R = _positive_row_sums(problem)
    dpos = np.maximum(problem.diag, 0.0)
    const = float(a.sum() + 0.5 * R.sum() + 0.5 * dpos.sum())
    if k == n:  # the one feasible point m = 1; μ: the smallest dual that prices every m_i at 1
        m = np.ones(n)
        return LPRelaxation(value=const, m=m, mu=float((a + R + dpos).max()), candidates=np.zeros(0, np.int64),
                            pair_rows=0, solves=0, positions=_round_lp(m, a, k))
    comp = _solve_reduced(replace(problem, k=n - k), -(a + R + dpos), initial_size, certify_half)
    m = 1.0 - comp.m
    return LPRelaxation(
        value=const + comp.value, m=m, mu=-comp.mu, candidates=comp.candidates,
        pair_rows=comp.pair_rows, solves=comp.solves, positions=_round_lp(m, a, k),
    )


def _positive_row_sums(problem: BatchProblem) -> np.ndarray:
    """``R_i = Σ_{j≠i} max(K_ij, 0)`` over the problem's samples, shape (n,), in column
    blocks of at most ~2M kernel values (16 MB)."""
    n = problem.n
    out = np.empty(n)
    step = max(1, (1 << 21) // n)
    for s in range(0, n, step):
        cols = np.arange(s, min(n, s + step), dtype=np.int64)
        out[s:s + cols.size] = np.maximum(_columns(problem, cols), 0.0).sum(axis=1)
    return out


def _solve_reduced(problem: BatchProblem, a: np.ndarray, initial_size: int | None,
                   certify_half: bool) -> LPRelaxation:
    """The LP with linear coefficients ``a`` (``problem``'s pair and diagonal terms), for
    ``2k <= n``: the certified fast path, then candidate sets with lazy pair rows."""
    n, k = problem.n, problem.k
    S = W = None
    if certify_half:
        res, S, W = _half_certificate(problem, a)
        if res is not None:
            return res
    order = _order_by(a)
    size = min(n, 4 * k) if initial_size is None else int(initial_size)
    size = min(n, max(k, size))
    # Pair rows, kept across rounds as global positions (lo < hi) with their Z value.
    p_lo = np.zeros(0, np.int64)
    p_hi = np.zeros(0, np.int64)
    p_z = np.zeros(0)
    if S is not None:
        # Start from the pair rows of S (inside the first C): the half-integral guess
        # failed, but the optimum's support is mostly there; this saves lazy rounds.
        inC = np.zeros(n, bool)
        inC[order[:size]] = True
        ii, jj = np.nonzero(np.triu(W, 1) > 0.0)
        ok = inC[S[ii]] & inC[S[jj]]
        gi, gj = S[ii[ok]], S[jj[ok]]
        p_lo, p_hi, p_z = np.minimum(gi, gj), np.maximum(gi, gj), W[ii[ok], jj[ok]]
    keys = p_lo * n + p_hi
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

class _ColumnCache:
    """Full kernel columns ``K[c][:, all]`` (self entry 0) computed so far in one call."""

    def __init__(self, problem: BatchProblem) -> None:
        self.problem = problem
        self.rows: dict[int, np.ndarray] = {}

    def __getitem__(self, j: int) -> np.ndarray:
        return self.rows[j]

    def fetch(self, wanted) -> None:
        """Compute the columns of ``wanted`` not computed yet, in one request."""
        need = list(dict.fromkeys(int(j) for j in wanted if int(j) not in self.rows))
        if not need:
            return
        block = _columns(self.problem, np.asarray(need, dtype=np.int64))
        for r, j in enumerate(need):
            self.rows[j] = block[r]


def _greedy(problem: BatchProblem):
    """Greedy on ``mᵀZm`` with exact scores for every sample at every step.

    Step t adds ``argmin_j Z_jj + 2 g_j`` (ties: smaller position) over the samples not
    chosen, ``g_j = Σ_{i∈S} K_ij`` accumulated column by column in selection order:
    the same floating-point operations as greedy on the dense matrix. Each step asks
    for one full column, the winner's. (Bounds cannot skip samples here: on MMD
    problems the scores are so close that almost every sample needs the new column
    before the next choice is certain, and the picks a few steps ahead are spread over
    the whole score order, so guessing them wastes more than it saves.)

    Returns ``(positions in selection order, g, cache)``; ``cache`` holds the column of
    every chosen sample.
    """
    n, k = problem.n, problem.k
    diag = problem.diag
    g = np.zeros(n)
    score = np.empty(n)
    cache = _ColumnCache(problem)
    chosen: list[int] = []
    for _ in range(k):
        np.multiply(g, 2.0, out=score)
        score += diag
        if chosen:
            score[chosen] = np.inf
        j = int(np.argmin(score))
        cache.fetch([j])
        g += cache[j]
        chosen.append(j)
    return np.asarray(chosen, np.int64), g, cache


def _swap(problem: BatchProblem, max_swaps: int | None) -> np.ndarray:
    """Greedy, then 1-swap local search visiting the batch slots in turn.

    Slot c holds b = B[c]; replacing it by j changes the objective by
    ``Δ_j = u_j - 2K_jb - r_b`` with ``u = diag + 2g`` (``g_j = Σ_{i∈B} K_ij``) and
    ``r_b = Z_bb + 2 Σ_{i∈B\b} K_ib``. Visiting slots 0, 1, ..., k-1, 0, ... in turn,
    each visit takes the best replacement j (least ``u_j - 2K_jb``, i.e. least Δ; ties
    by smaller position) when ``(u_j - 2K_jb) - r_b < -tol``; it stops after k
    consecutive visits without a swap (every swap checked: a 1-swap local optimum) or
    after ``max_swaps`` swaps. A visit costs one pass over the samples with the cached
    column of b, a swap one new column.

    Why not best improvement over all (b, j): after greedy almost every sample has an
    improving swap, so nothing can be pruned and each swap would cost a pass over the
    k x n matrix of Δ; visiting slots in turn costs k times less per swap and reached
    lower MMD² on the benchmark data.
    """
    n, k = problem.n, problem.k
    B, g, cache = _greedy(problem)
    if k == n:
        return B
    cap = 10 * k if max_swaps is None else int(max_swaps)
    diag = problem.diag
    B = B.copy()
    cols = [cache[int(b)] for b in B]
    u = np.multiply(g, 2.0)
    u += diag
    d = np.empty(n)
    swaps = quiet = c = 0
    tol = None
    while quiet < k and swaps < cap:
        gB = g[B]
        if tol is None:  # the objective's scale changes only with a swap
            obj = float(diag[B].sum() + gB.sum())  # Σ_b g_b counts each ordered pair once
            scale = abs(obj) + float(np.abs(diag[B]).sum()) + 2.0 * float(np.abs(gB).sum())
            tol = _SWAP_RTOL * scale
        r_c = diag[B[c]] + 2.0 * gB[c]  # the self entry of a cached column is 0
        np.multiply(cols[c], -2.0, out=d)
        d += u  # u_j - 2 K_jb: Δ_j up to the constant r_b
        d[B] = np.inf
        j = int(np.argmin(d))
        if d[j] - r_c < -tol:
            cache.fetch([j])
            col = cache[j]
            g += col
            g -= cols[c]
            np.multiply(g, 2.0, out=u)
            u += diag
            B[c] = j  # the added sample takes the removed one's slot
            cols[c] = col
            swaps += 1
            quiet = 0
            tol = None
        else:
            quiet += 1
        c = (c + 1) % k
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
    certify_half: bool = True

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return solve_lp_relaxation(
            problem, initial_size=self.initial_size, certify_half=self.certify_half
        ).positions


@dataclass(frozen=True)
class GreedySolver:
    """Greedy on ``mᵀZm``: add ``argmin_j Z_jj + 2 Σ_{i∈S} K_ij``, ties by smaller position.

    Scores are exact for every sample at every step (``g`` accumulated in selection
    order, as greedy on the dense matrix does), so the result is greedy on the dense
    matrix: one full column per step (see ``_greedy``).
    """

    name: str = "greedy"

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return _greedy(problem)[0]


@dataclass(frozen=True)
class SwapSolver:
    """Greedy, then 1-swap local search until no single swap improves.

    Visits the batch slots in turn (selection order, cyclically); at each visit the
    slot's sample ``b`` is replaced by the ``j`` of least
    ``Δ = Z_jj - Z_bb + 2(g_j - K_bj) - 2(g_b - K_bb)`` (ties by smaller ``j`` position)
    when that lowers the objective by more than ``1e-12 × scale`` (``scale`` = ``|obj|``
    plus the absolute terms of it); the added sample takes ``b``'s slot. Stops after k
    consecutive visits without a swap (a 1-swap local optimum) or after ``max_swaps``
    (default ``10k``) swaps. See ``_swap``.
    """

    name: str = "swap"
    max_swaps: int | None = None

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return _swap(problem, self.max_swaps)


SOLVERS: dict[str, Solver] = {
    "lp": LPSolver(),
    "greedy": GreedySolver(),
    "swap": SwapSolver(),
}


#: ``swap``: the lowest MMD² of the three, at a cost that is fine offline. Measured
#: (README, benchmarks/solver_quality.py and mmd_scale.py): against the brute-forced
#: optimum swap is 1.006x on average, greedy 1.025x, the paper's LP 1.34x; over a whole
#: SVHN-shaped schedule (N = 73,257, k = 50, 2 cores) swap takes under 3 minutes, greedy
#: 45 s, lp 15 s, and lp's mean MMD² is above a random order's. ``--solver lp`` reproduces
#: the paper.
DEFAULT_SOLVER = "swap"


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
