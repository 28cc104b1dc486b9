"""The MMD selection loop: one batch at a time, never an N x N matrix.

P = samples already scheduled, Q = not yet (nP + nQ = N). Each step picks the
batch B (|B| = k, B in Q) minimising ``m^T Z m`` (``schedgen.methods.solvers``), where,
with ``s_tot(i) = sum_{j in D} K_ij`` computed once and ``s_P(i) = sum_{j in P} K_ij``
kept up to date (DESIGN.md section 1)::

    Z_ij = K_ij                                          (i != j)
    Z_ii = K_ii - 2 c s_tot(i) + 2 s_P(i),   c = (nP + k) / N    (exact expansion)
    Z_ii = K_ii -   c s_tot(i) +   s_P(i)                        (paper's eq. 6, literal)

After B is chosen, ``s_P(i) += sum_{j in B} K_ij`` for the remaining samples: one
(nQ x k) kernel block per step, about N^2/2 kernel values over a schedule (half the
row-sum pass), computed from GEMM operands prepared once (``WorkingSet``) or reused
from the columns the solver already computed. The MMD^2(P u B, Q \\ B) after each
step is tracked from running kernel sums, in float64, by ``schedgen.mmd2`` (the form
``schedgen.evaluate.prefix_mmd2`` scores any order with).

With a Nyström factor Φ (``K ≈ ΦΦᵀ``, ``--approx nystrom:M``) the row sums come from Φ
instead: ``s_tot = Φ(Φᵀ1)`` (no N² pass) and ``s_P(i) = φ_iᵀ a`` with ``a = Σ_{j∈P} φ_j``
(``a += Σ_{b∈B} φ_b`` after a batch), one GEMV of N·M a step
(:class:`~schedgen.kernels.nystrom.ShrinkingFactor`) instead of the (nQ x k) block.
The solvers still read exact kernel values (the pair terms ``Z_ij = K_ij``, greedy's and
swap's columns, the LP's candidate blocks); the recorded MMD² is then the one of the
Nyström kernel ΦΦᵀ, ``‖a/|P| - (Φᵀ1 - a)/|Q|‖²`` (the factor's measured error says
how far it is from the exact kernel). Measured (benchmarks/large_n.py, D = 128, k = 256,
2 cores): ``lp`` with M = 256 at N = 73,257 in 10 s (exact: 24 s) and at N = 1,000,000
in 4 min and 4.7 GB; greedy and swap keep their exact columns (N·D each), so they gain
only the row-sum pass.

Cost on SVHN-shaped data (benchmarks/mmd_scale.py, N = 73,257, k = 50, 2 cores), as
multiples of one row-sum pass, row sums included: ``lp`` about 1.9-2.0x, ``greedy``
about 6.4x (one memory-bound full column per step), ``swap`` about 23x (greedy's 50
columns per batch and one more per swap, ~170 in all). The exact loop runs over row
shards (``_sharded_loop``): one in this process, or Ray actors with ``--engine ray``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..errors import ParameterError
from ..kernels import WorkingSet, to_numpy, worker_pool
from ..kernels.nystrom import ShrinkingFactor
from ._sharded_loop import sharded_schedule
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
    With a Nyström factor, negP, S_AA and S_AD stay 0 and sP follows from the batches
    (``mmd_schedule`` recomputes it when it continues a state).
    """

    Q: np.ndarray
    sP: np.ndarray
    negP: np.ndarray
    S_AA: float = 0.0
    S_AD: float = 0.0
    batches: list = field(default_factory=list)
    mmd2: list = field(default_factory=list)
    #: Set while the exact loop runs: ``sP``/``negP`` are then None (they live in the loop's
    #: row shards) and ``gather()`` returns ``(Q, sP, negP)`` between steps.
    gather: Callable | None = field(default=None, repr=False, compare=False)

    def complete(self) -> "MMDState":
        """This state with its sums in hand (gathered from the row shards if needed): what a
        checkpoint saves. Call it between steps (``on_step``)."""
        if self.gather is None:
            if self.sP is None:
                raise ParameterError("this state's sums were lost with the loop's shards (it stopped inside a "
                                     "step): continue from the last checkpoint")
            return self
        Q, sP, negP = self.gather()
        return replace(self, Q=Q, sP=sP, negP=negP, batches=list(self.batches), mmd2=list(self.mmd2), gather=None)

    @classmethod
    def start(cls, n: int) -> "MMDState":
        return cls(Q=np.arange(n, dtype=np.int64), sP=np.zeros(n), negP=np.zeros(n))

    @property
    def done(self) -> bool:
        return len(self.Q) == 0


def mmd_schedule(
    X,
    k: int,
    *,
    kernel,
    solver: Callable[[BatchProblem], np.ndarray],
    s_tot: np.ndarray | None = None,
    neg_tot: np.ndarray | None = None,
    factor: np.ndarray | None = None,
    coefficients: str = "exact",
    state: MMDState | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_step: Callable[[MMDState], None] | None = None,
    n_jobs: int | None = None,
    engine=None,
    shards: int | None = None,
    snapshot_every: float | None = None,
    stats: dict | None = None,
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
        Maps a :class:`~schedgen.methods.solvers.BatchProblem` to k positions in Q.
    s_tot, neg_tot : arrays of shape (n_samples,), float64
        ``sum_j K_ij`` over the whole dataset (diagonal included) and
        ``sum_{j != i} min(K_ij, 0)``. Not with ``factor``.
    factor : ndarray of shape (n_samples, M), float64, optional
        A Nyström factor Φ (``K ≈ ΦΦᵀ``) of a kernel that is never negative: the row
        sums come from it (``s_tot = Φ(Φᵀ1)``, ``s_P = Φ_Q a``, the negative sums 0) and
        ``mmd2`` is the MMD² of ΦΦᵀ. **Overwritten** (its rows compacted in place).
    coefficients : {"exact", "paper"}
    state : MMDState, optional
        Continue from a checkpoint instead of starting afresh.
    progress : callable(done_batches, total_batches), optional
    on_step : callable(state), optional
        Called after every batch (checkpointing hooks in here).
    n_jobs : int, optional
        Host worker threads for the kernel blocks (default: the usable CPUs). Does
        not change the result.
    engine : Engine, optional
        Where the exact loop's row shards run (default: the build's ``--engine``,
        :func:`~schedgen.methods.engines.current_engine`, in this process unless told).
        Does not change the result. The Nyström loop runs in this process only.
    shards : int, optional
        Row shards of the exact loop (default: the engine's choice, 1 in this process,
        one per CPU of a Ray cluster). Does not change the result.
    snapshot_every : float, optional
        Seconds between the driver's copies of the shards' state, which a lost shard is
        restarted from (default 60).
    stats : dict, optional
        Filled with the exact loop's counts: ``steps``, ``lp_certified`` (steps the LP's
        half-integral certificate solved), ``gathered`` (steps solved on the whole gathered
        diagonal), ``columns`` (full kernel columns computed) and ``calls`` per shard call.

    Notes
    -----
    The exact loop runs over row shards (``schedgen.methods._sharded_loop``): every
    row-wise computation happens in fixed blocks of consecutive samples, each with its own
    :class:`~schedgen.kernels.WorkingSet` (GEMM operands prepared once, shrinking with
    Q), and the reductions across blocks are order-free, so the result is the same bytes
    for any number of shards, threads or engines. Greedy's and swap's full columns are
    reused for the ``s_P`` update; ``lp``'s batch is added in one (nQ x k) pass. BLAS stays
    pinned to one thread.
    """
    coef = diag_coefficient(coefficients)
    n = int(X.shape[0])
    if factor is None:
        if s_tot is None or neg_tot is None:
            raise ParameterError("s_tot and neg_tot are needed without a factor, got None")
    elif s_tot is not None or neg_tot is not None:
        raise ParameterError("s_tot and neg_tot come from the factor when one is given, got them both")
    elif not kernel.nonnegative:
        raise ParameterError(f"a factor needs a kernel that is never negative (the negative row sums are "
                             f"taken as 0), got {kernel.params()}")
    elif factor.shape[0] != n:
        raise ParameterError(f"factor must have shape ({n}, M) to match X, got {factor.shape}")
    if factor is None:
        return sharded_schedule(X, k, kernel=kernel, solver=solver, s_tot=s_tot, neg_tot=neg_tot, coef=coef,
                                state=state if state is not None else MMDState.start(n), progress=progress, on_step=on_step, n_jobs=n_jobs, engine=engine,
                                shards=shards, snapshot_every=snapshot_every, stats=stats)
    if engine is not None and getattr(engine, "name", "local") != "local":
        raise ParameterError(f"the Nyström loop (--approx) runs in this process; got --engine {engine.name}")
    kdiag = np.asarray(to_numpy(kernel.diag(X)), dtype=np.float64)
    st = state if state is not None else MMDState.start(n)
    total = -(-n // k)
    if progress:
        progress(len(st.batches), total)
    with worker_pool(n_jobs):
        # Kernel values carry the last bits of the GEMM tile they come from, and tiles
        # follow the working set's slot layout, which depends on the removal history:
        # replaying the batches (bookkeeping only) makes a resumed run identical.
        ws = WorkingSet(kernel, X, n_jobs=n_jobs)
        low = _LowRank(ShrinkingFactor(factor, n_jobs=n_jobs))
        s_tot = low.s_tot
        for B in st.batches:
            pos = np.searchsorted(ws.ids, B)
            low.add(pos)  # the same additions and removals as the run that made the state
            ws.remove(pos)
        if not np.array_equal(ws.ids, st.Q):
            raise ParameterError(
                "state is inconsistent: its unscheduled samples Q must be all samples "
                "minus its batches, in increasing order"
            )
        if st.batches and not st.done:
            # s_P from the replayed a and layout: the bits the interrupted run had after its step
            st.sP, st.negP = low.sP(), np.zeros(len(st.Q))
        while not st.done:
            _step(st, ws, k, n, coef, kdiag, s_tot, solver, low)
            if on_step:
                on_step(st)
            if progress:
                progress(len(st.batches), total)
    return st


class _LowRank:
    """The loop's sums through a Nyström factor: ``T = Φᵀ1``, ``s_tot = Φ T`` and
    ``a = Σ_{j∈P} φ_j`` (the rows of Φ follow Q)."""

    def __init__(self, rows: ShrinkingFactor) -> None:
        self.rows = rows
        self.T = rows.column_sum()
        self.s_tot = rows.matvec(self.T)
        self.a = np.zeros(rows.rank)

    def add(self, pos: np.ndarray) -> None:
        """Move the samples at positions ``pos`` (of Q) into P."""
        self.a += self.rows.rows_sum(pos)
        self.rows.remove(pos)

    def sP(self) -> np.ndarray:
        """``s_P(i) = φ_iᵀ a`` for i in Q."""
        return self.rows.matvec(self.a)

    def mmd2(self, n_p: int, n_q: int) -> float:
        """MMD²(P, Q) of the kernel ΦΦᵀ: ``‖a/|P| - (T - a)/|Q|‖²`` (NaN with a side empty)."""
        if n_p == 0 or n_q == 0:
            return float("nan")
        d = self.a / n_p - (self.T - self.a) / n_q
        return float(d @ d)


def _step(st: MMDState, ws, k, n, coef, kdiag, s_tot, solver, low) -> None:
    """Choose one batch of the Nyström loop and update the state (and the working set) in place."""
    Q = st.Q
    nQ = len(Q)
    nP = n - nQ
    if nQ <= k:
        pos = np.arange(nQ)
    else:
        c = (nP + k) / n
        diag = kdiag[Q] - coef * c * s_tot[Q] + coef * st.sP
        problem = BatchProblem(diag=diag, neg=np.zeros(nQ), k=k, block=lambda r, cc: ws.block(Q[r], Q[cc]),
                               columns=lambda cc: ws.columns(Q[cc]))
        pos = np.asarray(solver(problem), dtype=np.int64)
        if len(pos) != k or len(np.unique(pos)) != k or pos.min() < 0 or pos.max() >= nQ:
            raise RuntimeError(f"solver returned an invalid batch: {pos!r} (k={k}, nQ={nQ})")
    B = Q[pos]
    keep = np.ones(nQ, dtype=bool)
    keep[pos] = False
    # s_P(rest) = Φ_rest (a + Σ_{b∈B} φ_b): N·M, whatever columns the solver computed
    low.add(pos)
    ws.remove(pos)
    st.Q = Q[keep]
    st.sP = low.sP() if len(st.Q) else np.zeros(0)
    st.negP = np.zeros(len(st.Q))
    st.batches.append(B)
    st.mmd2.append(low.mmd2(n - len(st.Q), len(st.Q)))
