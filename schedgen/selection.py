"""The MMD selection loop: one batch at a time, never an N x N matrix.

P = samples already scheduled, Q = not yet (nP + nQ = N). Each step picks the
batch B (|B| = k, B in Q) minimising ``m^T Z m`` (``schedgen.solvers``), where,
with ``s_tot(i) = sum_{j in D} K_ij`` computed once and ``s_P(i) = sum_{j in P} K_ij``
kept up to date (DESIGN.md section 1)::

    Z_ij = K_ij                                          (i != j)
    Z_ii = K_ii - 2 c s_tot(i) + 2 s_P(i),   c = (nP + k) / N    (exact expansion)
    Z_ii = K_ii -   c s_tot(i) +   s_P(i)                        (paper's eq. 6, literal)

After B is chosen, ``s_P(i) += sum_{j in B} K_ij`` for the remaining samples: one
(nQ x k) kernel block per step. The MMD^2(P u B, Q \\ B) after each step is tracked
from running kernel sums, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ParameterError
from .kernels import gram, sq_norms, to_numpy
from .solvers import BatchProblem

__all__ = ["COEFFICIENTS", "MMDState", "mmd_schedule", "diag_coefficient"]

#: Linear-term coefficient of Z's diagonal: "exact" expansion (factor 2) or the "paper"'s eq. 6.
COEFFICIENTS = {"exact": 2.0, "paper": 1.0}


def diag_coefficient(coefficients: str) -> float:
    try:
        return COEFFICIENTS[coefficients]
    except KeyError:
        raise ParameterError(
            f"coefficients must be one of {sorted(COEFFICIENTS)}, got {coefficients!r}"
        ) from None


@dataclass
class MMDState:
    """Everything the loop needs to continue: a checkpoint is exactly this.

    Q : remaining global indices (ascending); sP, negP : sum_{j in P} K_ij and
    sum_{j in P} min(K_ij, 0) for i in Q (aligned with Q); S_AA = sum_{i,j in P} K_ij;
    S_AD = sum_{i in P} s_tot(i); batches : the chosen batches so far; mmd2 : per batch.
    """

    Q: np.ndarray
    sP: np.ndarray
    negP: np.ndarray
    S_AA: float = 0.0
    S_AD: float = 0.0
    batches: list = field(default_factory=list)
    mmd2: list = field(default_factory=list)

    @classmethod
    def start(cls, n: int) -> "MMDState":
        return cls(Q=np.arange(n, dtype=np.int64), sP=np.zeros(n), negP=np.zeros(n))

    @property
    def done(self) -> bool:
        return len(self.Q) == 0


def _mmd2(S_AA: float, S_AD: float, T: float, a: int, b: int) -> float:
    """MMD^2 between A (a samples) and D \\ A (b samples) from kernel sums over A x A, A x D, D x D."""
    if a == 0 or b == 0:
        return float("nan")  # one side is empty: MMD is undefined
    S_AB = S_AD - S_AA
    S_BB = T - 2.0 * S_AD + S_AA
    return S_AA / a**2 - 2.0 * S_AB / (a * b) + S_BB / b**2


def mmd_schedule(
    X,
    k: int,
    *,
    kernel,
    solver: Callable[[BatchProblem], np.ndarray],
    s_tot: np.ndarray,
    neg_tot: np.ndarray,
    coefficients: str = "exact",
    state: MMDState | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_step: Callable[[MMDState], None] | None = None,
) -> MMDState:
    """Run the selection loop to the end and return its final state.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Features (NumPy or CuPy); kernel blocks are computed in X's dtype.
    k : int
        Batch size; the last batch holds what remains (short by design).
    kernel : a ``schedgen.kernels`` kernel object
    solver : callable
        Maps a :class:`~schedgen.solvers.BatchProblem` to k positions in Q.
    s_tot, neg_tot : arrays of shape (n_samples,), float64
        ``sum_j K_ij`` over the whole dataset (diagonal included) and
        ``sum_{j != i} min(K_ij, 0)``.
    coefficients : {"exact", "paper"}
    state : MMDState, optional
        Continue from a checkpoint instead of starting afresh.
    progress : callable(done_batches, total_batches), optional
    on_step : callable(state), optional
        Called after every batch (checkpointing hooks in here).
    """
    coef = diag_coefficient(coefficients)
    n = int(s_tot.shape[0])
    kdiag = np.asarray(to_numpy(kernel.diag(X)), dtype=np.float64)
    sq = sq_norms(X)  # once: every kernel block below reuses the norms
    T = float(np.sum(s_tot))
    has_neg = bool(np.any(neg_tot < 0))
    st = state if state is not None else MMDState.start(n)
    total = -(-n // k)
    if progress:
        progress(len(st.batches), total)
    while not st.done:
        Q = st.Q
        nQ = len(Q)
        nP = n - nQ
        if nQ <= k:
            pos = np.arange(nQ)
        else:
            c = (nP + k) / n
            diag = kdiag[Q] - coef * c * s_tot[Q] + coef * st.sP
            neg = neg_tot[Q] - st.negP
            problem = BatchProblem(
                diag=diag,
                neg=neg,
                k=k,
                block=lambda r, cc, Q=Q: gram(kernel, X, Q[r], Q[cc], sq=sq),
            )
            pos = np.asarray(solver(problem), dtype=np.int64)
            if len(pos) != k or len(np.unique(pos)) != k or pos.min() < 0 or pos.max() >= nQ:
                raise RuntimeError(f"solver returned an invalid batch: {pos!r} (k={k}, nQ={nQ})")
        B = Q[pos]
        keep = np.ones(nQ, dtype=bool)
        keep[pos] = False
        KBB = gram(kernel, X, B, B, sq=sq)
        st.S_AA += 2.0 * float(np.sum(st.sP[pos])) + float(np.sum(KBB))
        st.S_AD += float(np.sum(s_tot[B]))
        rest = Q[keep]
        if len(rest):
            G = gram(kernel, X, rest, B, sq=sq)
            st.sP = st.sP[keep] + np.sum(G, axis=1)
            st.negP = st.negP[keep] + (np.sum(np.minimum(G, 0.0), axis=1) if has_neg else 0.0)
        else:
            st.sP = st.sP[keep]
            st.negP = st.negP[keep]
        st.Q = rest
        st.batches.append(B)
        st.mmd2.append(_mmd2(st.S_AA, st.S_AD, T, n - len(rest), len(rest)))
        if on_step:
            on_step(st)
        if progress:
            progress(len(st.batches), total)
    return st
