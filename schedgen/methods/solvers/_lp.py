"""The paper's LP relaxation (eq. 10), solved exactly through its reduced form.

The certified half-integral fast path (``_certificate``) first; otherwise HiGHS on a
candidate set grown until a reduced-cost certificate holds, with pair rows added
lazily; ``2k > n`` through its complement ``m' = 1 - m``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ...errors import ParameterError
from ._certificate import _half_certificate
from ._highs import _LPSolution, _solve_lp
from ._problem import BatchProblem, _kblock, _order_by
from ._relaxation import LPRelaxation, _round_lp

#: Primal tolerance: a pair row is violated when ``m_i + m_j - 1 - t_ij`` exceeds it.
_PRIMAL_TOL = 1e-9
#: Relative tolerance of the reduced-cost certificate ``a_l >= μ``.
_DUAL_TOL = 1e-9


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
        The selection step.
    initial_size : int, optional
        Initial ``|C|`` (default ``min(n, 4k)``); clipped to ``[k, n]``.
    certify_half : bool, default True
        Try the certified half-integral fast path first.

    Returns
    -------
    LPRelaxation
        The optimal value, ``m``, ``μ``, the final candidate set and the rounding.
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
    blocks of at most ~2M kernel values (16 MB).

    Through ``block``, not ``columns``: the selection loop keeps every full column a
    solver asks for (to reuse it in the ``s_P`` update), which here would be all ``n``.
    """
    n = problem.n
    out = np.empty(n)
    rows = np.arange(n, dtype=np.int64)
    step = max(1, (1 << 21) // n)
    for s in range(0, n, step):
        cols = np.arange(s, min(n, s + step), dtype=np.int64)
        out[s:s + cols.size] = np.maximum(_kblock(problem, rows, cols), 0.0).sum(axis=0)
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

    Parameters
    ----------
    problem : BatchProblem
        The selection step.
    m : array-like of float, shape (n,)
        A point of the relaxation (e.g. :attr:`LPRelaxation.m`).

    Returns
    -------
    float
        The objective at ``m``.
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
