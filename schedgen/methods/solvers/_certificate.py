"""The half-integral certificate: ``m = ½`` on the 2k smallest ``a``, proved optimal by
LP duality from one ``(2k × 2k)`` kernel block, without HiGHS.

The proof is a symmetric flow ``y`` in the box ``[0, max(Z_S, 0)]`` with given row
sums: tried by a symmetric scaling (``_symmetric_scaling``), then by a box-constrained
Newton flow (``_box_flow``).
"""

from __future__ import annotations

import numpy as np

from ._problem import BatchProblem, _kblock, _order_by
from ._relaxation import LPRelaxation


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


def certify_half(aS: np.ndarray, a_next: float | None, W: np.ndarray) -> float | None:
    """The μ that proves ``m = ½`` on S optimal, or None (see :func:`_half_certificate`).

    ``aS``: the 2k smallest ``a`` in order (ties by position); ``a_next``: the next one
    (None when there is none); ``W = max(K_S, 0)`` with a zero diagonal. The selection
    loop calls this directly on candidates merged from its row shards.
    """
    lo = float(aS[-1])
    # μ may be anything in [a_(2k), a_(2k+1)]: the middle gives every sample of S some
    # demand (better conditioned), the bottom the least demand in total; try both.
    mus = [lo] if a_next is None or not a_next > lo else [0.5 * (lo + a_next), lo]
    for mu in mus:
        d = mu - aS
        tol = _CERT_TOL * max(1.0, float(np.abs(aS).max()), abs(mu))
        if _flow_fits(W, d, tol):
            return mu
    return None


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
    mu = certify_half(aS, a_next, W)
    if mu is None:
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
