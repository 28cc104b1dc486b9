"""Exact references for tests and benchmarks (not part of the public API).

``brute_force`` enumerates every batch (``n <= 40``, ``k <= 4``); ``full_lp`` builds
eq. 10's relaxation with all ``n²`` variables (``n <= 80``).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from ...errors import ParameterError
from ._highs import _solve_lp
from ._lp import _reduced_lp
from ._problem import BatchProblem, _check_problem, _kblock

__all__ = ["brute_force", "full_lp"]


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
    problem : BatchProblem
        The selection step (``n <= 80``).
    literal : bool, default True
        Eq. 10 with its ``n²`` variables ``w``; False: the reduced form, every pair row.
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


def brute_force(problem: BatchProblem) -> np.ndarray:
    """The exact optimum by enumeration (``n <= 40``, ``k <= 4``).

    Ties: the lexicographically smallest sorted position tuple.

    Parameters
    ----------
    problem : BatchProblem
        The selection step (``n <= 40``, ``k <= 4``).

    Returns
    -------
    array of shape (k,), int64
        The optimal batch, positions in increasing order.
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
