"""The exact selection loop, driven over row shards (:mod:`schedgen.methods.shards`).

Written once over the engine's shard calls (:meth:`~schedgen.methods.engines.Engine.call_shards`):
one shard in this process is the default build; Ray actors are ``--engine ray``. Per step:

``lp``
    one ``begin`` call: each shard returns its 2k+1 smallest ``a`` with their ``Z_ii`` and
    negative sums; the driver merges them (ties by sample index), forms the (2k × 2k)
    kernel block itself and tries the half-integral certificate (``certify_half``). When
    it fails (rare) or near the end (``2k > |Q|``) the driver gathers the whole diagonal
    and runs the LP solver on it, reading kernel blocks itself.
``greedy``
    one call per added sample (``add_column``): every shard adds the new member's column
    to its scores and returns its best; the driver takes the least (ties by index).
``swap``
    greedy, then one call per visited slot (``swap_visit``, which first applies the
    previous visit's swap).

Then one ``apply`` call updates ``s_P`` and removes the batch. The driver tracks
MMD²(P ∪ B, Q \\ B) from the shards' per-block partial sums.

**A lost shard** (:class:`~schedgen.methods.engines.ShardLost`, e.g. a killed actor)
restarts every shard from the last state the driver gathered (every ``snapshot_every``
seconds, and at the start) and repeats the steps since: the loop is a function of that
state, so the schedule and its bits do not change.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ParameterError
from ..kernels import get_namespace, pair_block, worker_pool
from ..mmd2 import grow_prefix_sum, mmd2_from_sums
from .engines import EngineError, InProcessEngine, ShardLost, current_engine
from .shards import Shard, block_size, fsum_parts, shard_bounds
from .solvers import SWAP_RTOL, BatchProblem, GreedySolver, LPSolver, SwapSolver, certify_half

#: Consecutive shard losses without a completed step before the build gives up.
MAX_LOSSES = 3
#: Seconds between the driver's copies of the shards' state (what a lost shard restarts from).
SNAPSHOT_EVERY = 60.0


class ShardedLoop:
    """The driver's side: the shards, the kernel blocks it reads itself, the recovery copy."""

    def __init__(self, engine, X, k: int, kernel, s_tot, neg_tot, coef: float, solver, n_shards: int | None,
                 snapshot_every: float | None):
        self.engine = engine
        self.X, self.k, self.kernel, self.coef, self.solver = X, k, kernel, coef, solver
        self.n = int(X.shape[0])
        self.s_tot = np.asarray(s_tot, dtype=np.float64)
        self.neg_tot = np.asarray(neg_tot, dtype=np.float64)
        self.has_neg = bool(np.any(self.neg_tot < 0))
        n_shards = engine.default_shards() if n_shards is None else n_shards
        if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
            raise ParameterError(f"shards must be a positive integer or None, got {n_shards!r}")
        self.bounds = shard_bounds(self.n, block_size(X), int(n_shards))
        self.block = block_size(X)
        if snapshot_every is None:
            snapshot_every = SNAPSHOT_EVERY
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, (int, float)) or not snapshot_every >= 0:
            raise ParameterError(f"snapshot_every must be a non-negative number of seconds or None, "
                                 f"got {snapshot_every!r}")
        self.snapshot_every = float(snapshot_every)
        self.handles: list = []
        #: method -> (calls, seconds) as the driver saw them (round trips included)
        self.stats: dict[str, tuple[int, float]] = {}
        #: steps solved by the LP certificate, steps gathered whole, full columns computed
        self.counts = {"steps": 0, "lp_certified": 0, "gathered": 0, "columns": 0}
        self._shared = None
        self.consistent = True
        self._recover = None
        self._last_snap = 0.0

    # ------------------------------------------------------------------ shards

    def _call(self, method: str, *args, each: list | None = None) -> list:
        argv = each if each is not None else [args] * len(self.handles)
        t = time.perf_counter()
        out = self.engine.call_shards(self.handles, method, argv)
        calls, sec = self.stats.get(method, (0, 0.0))
        self.stats[method] = (calls + 1, sec + time.perf_counter() - t)
        return out

    def start(self, st) -> None:
        """Start the shards on state ``st`` (a fresh one or a checkpoint's)."""
        self.consistent = False  # until every shard has restored the state
        if self.handles:
            self.engine.stop_shards(self.handles)
            self.handles = []
        if self._shared is None:
            self._shared = tuple(self.engine.broadcast(v) for v in (self.kernel, self.X, self.s_tot, self.neg_tot))
        # One shard in this process keeps the right operand of X (a Ray actor, or each of
        # several shards in one process, would hold a copy of its own).
        cache = isinstance(self.engine, InProcessEngine) and len(self.bounds) == 1
        specs = [dict(lo=lo, hi=hi, block=self.block, has_neg=self.has_neg, cache_operand=cache)
                 for lo, hi in self.bounds]
        self.handles = self.engine.start_shards(Shard, self._shared, specs)
        Q = st.Q
        each = []
        for lo, hi in self.bounds:
            a, b = np.searchsorted(Q, [lo, hi])
            each.append((st.batches, st.sP[a:b], st.negP[a:b]))
        live = self._call("restore", each=each)
        if not np.array_equal(np.concatenate(live), Q):
            raise ParameterError("state is inconsistent: its unscheduled samples Q must be all samples "
                                 "minus its batches, in increasing order")
        self.consistent = True
        self.remember(st)
        self._last_snap = time.monotonic()

    def stop(self) -> None:
        if self.handles:
            self.engine.stop_shards(self.handles)
            self.handles = []

    def gather_state(self):
        """``(Q, s_P, negP)`` from the shards (a consistent point: between steps)."""
        parts = self._call("snapshot")
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    def _keep(self, st) -> None:
        """Copy the shards' state for recovery (every ``snapshot_every`` seconds)."""
        now = time.monotonic()
        if now - self._last_snap < self.snapshot_every:
            return
        Q, sP, negP = self.gather_state()
        self._recover = (len(st.batches), st.S_AA, st.S_AD, Q, sP, negP)
        self._last_snap = now

    def remember(self, st) -> None:
        """Take ``st`` (its sums in hand) as the recovery copy before the shards start."""
        self._recover = (len(st.batches), st.S_AA, st.S_AD, st.Q.copy(), st.sP.copy(), st.negP.copy())

    def rewind(self, st) -> None:
        """Restart every shard from the recovery copy; ``st`` goes back to it (in place)."""
        nb, S_AA, S_AD, Q, sP, negP = self._recover
        del st.batches[nb:]
        del st.mmd2[nb:]
        st.S_AA, st.S_AD, st.Q, st.sP, st.negP = S_AA, S_AD, Q, sP, negP
        self.start(st)

    # ------------------------------------------------------------------ one step

    def _block(self, rows, cols) -> np.ndarray:
        """``K(x_rows, x_cols)`` from operands of those rows only (the bits of
        :meth:`~schedgen.kernels.WorkingSet.block`; no operand of the whole of X is kept here)."""
        return pair_block(self.kernel, self.X, rows, cols)

    def step(self, st) -> None:
        """Choose one batch and update ``st`` and the shards."""
        k, n = self.k, self.n
        Q = st.Q
        nQ = len(Q)
        c = (n - nQ + k) / n
        pending, cached = None, False
        solver = self.solver
        if nQ <= k:
            B = Q.copy()
        elif isinstance(solver, LPSolver) and solver.certify_half and 2 * k <= nQ:
            B = self._lp(c)
        elif isinstance(solver, (GreedySolver, SwapSolver)):
            B, pending = self._greedy(c)
            if isinstance(solver, SwapSolver):
                B, pending = self._swap(B, pending)
            cached = True
        else:
            B = self._gathered(c)
        self.consistent = False
        self.counts["steps"] += 1
        replies = self._call("apply", B, pending, cached)
        before: dict = {}
        sA, stot = [], []
        for r in replies:
            before.update(r[0])
            sA += r[1]
            stot += r[2]
        sP_B = np.array([before[int(b)] for b in B])
        st.S_AA = grow_prefix_sum(st.S_AA, sP_B, self._block(B, B))
        st.S_AD += float(np.sum(self.s_tot[B]))
        keep = np.ones(nQ, bool)
        keep[np.searchsorted(Q, np.sort(B))] = False
        st.Q = Q[keep]
        st.batches.append(B)
        # S_AR and S_RR from the rows left (schedgen.mmd2), added exactly over the blocks.
        S_AR = fsum_parts(sA)
        S_RR = fsum_parts(stot) - S_AR
        st.mmd2.append(mmd2_from_sums(st.S_AA, S_AR, S_RR, n - len(st.Q), len(st.Q)))
        self.consistent = True

    def _lp(self, c: float) -> np.ndarray:
        k = self.k
        count = 2 * k + 1
        parts = self._call("begin", c, self.coef, "lp", count)
        a, gid = (np.concatenate([p[i] for p in parts]) for i in range(2))
        order = np.lexsort((gid, a))[:count]
        S, aS = gid[order][: 2 * k], a[order][: 2 * k]
        a_next = float(a[order][2 * k]) if order.size > 2 * k else None
        W = self._block(S, S)
        np.fill_diagonal(W, 0.0)
        if not np.isfinite(W).all():
            raise ParameterError("block returned NaN or infinity off the diagonal")
        if certify_half(aS, a_next, np.maximum(W, 0.0)) is not None:
            self.counts["lp_certified"] += 1
            return S[:k].copy()  # all m = ½: the k smallest a, ties by index
        return self._solve_gathered()

    def _gathered(self, c: float) -> np.ndarray:
        self._call("begin", c, self.coef, "none")
        return self._solve_gathered()

    def _solve_gathered(self) -> np.ndarray:
        """The solver on the whole step, its kernel blocks read here (rare for ``lp``)."""
        self.counts["gathered"] += 1
        parts = self._call("gather")
        gids, diag, neg = (np.concatenate([p[i] for p in parts]) for i in range(3))
        problem = BatchProblem(diag=diag, neg=neg, k=self.k, block=lambda r, cc: self._block(gids[r], gids[cc]))
        pos = np.asarray(self.solver(problem), dtype=np.int64)
        nQ, k = gids.size, self.k
        if len(pos) != k or len(np.unique(pos)) != k or pos.min() < 0 or pos.max() >= nQ:
            raise RuntimeError(f"solver returned an invalid batch: {pos!r} (k={k}, nQ={nQ})")
        return gids[pos]

    def _greedy(self, c: float):
        best = _least(self._call("begin", c, self.coef, "local"))
        chosen = [best[1]]
        for _ in range(1, self.k):
            best = _least(self._call("add_column", chosen[-1]))
            chosen.append(best[1])
        self.counts["columns"] += self.k
        return np.asarray(chosen, np.int64), ("add", chosen[-1])

    def _swap(self, B: np.ndarray, pending):
        """``schedgen.methods.solvers._local._swap``'s search, its passes run by the shards.

        Visits go out one at a time until k/2 visits in a row found no swap (near a local
        optimum), then the rest of the k quiet visits that would end the search in one
        call. A visit without a swap changes nothing, so the answers up to the first swap
        are the sequential ones and the rest of the window is dropped: the same decisions
        with fewer calls (a visit's pass costs more than a call in process, so windows
        are kept for where they are likely all quiet)."""
        k = self.k
        cap = 10 * k if self.solver.max_swaps is None else int(self.solver.max_swaps)
        B = B.copy()
        vals: dict = {}
        swaps = quiet = c = 0
        tol = None
        while quiet < k and swaps < cap:
            m = k - quiet if 2 * quiet >= k else 1
            slots = [int(B[(c + i) % k]) for i in range(m)]
            replies = self._call("swap_visits", pending, slots)
            if pending is not None:  # the members' g changed: every shard sent its members' values
                vals = {}
                for _, (gid, g, d) in replies:
                    vals.update(zip(gid, zip(g, d)))
            pending = None
            swapped = False
            for i in range(m):
                best = _least([r[0][i] for r in replies])
                if tol is None:  # the objective's scale changes only with a swap
                    gB = np.array([vals[int(b)][0] for b in B])
                    dB = np.array([vals[int(b)][1] for b in B])
                    obj = float(dB.sum() + gB.sum())
                    scale = abs(obj) + float(np.abs(dB).sum()) + 2.0 * float(np.abs(gB).sum())
                    tol = SWAP_RTOL * scale
                g_c, d_c = vals[int(B[c])]
                r_c = d_c + 2.0 * g_c
                if best[0] - r_c < -tol:
                    pending = ("swap", int(B[c]), best[1])
                    self.counts["columns"] += 1  # (or fewer: a column swapped out and back is kept)
                    B[c] = best[1]  # the added sample takes the removed one's slot
                    swaps += 1
                    quiet = 0
                    tol = None
                    swapped = True
                else:
                    quiet += 1
                c = (c + 1) % k
                if swapped or quiet >= k:
                    break
        return B, pending


def _least(bests):
    found = [b for b in bests if b is not None]
    if not found:
        raise RuntimeError("no shard has an unscheduled sample left to choose")
    return min(found)


def sharded_schedule(X, k: int, *, kernel, solver, s_tot, neg_tot, coef: float, state, progress, on_step,
                     n_jobs: int | None, engine=None, shards: int | None = None,
                     snapshot_every: float | None = None, stats: dict | None = None):
    """The exact loop of :func:`~schedgen.methods.selection.mmd_schedule` over row shards."""
    n = int(X.shape[0])
    eng = engine if engine is not None else current_engine()
    if get_namespace(X) is not np and not isinstance(eng, InProcessEngine):
        raise EngineError(f"--engine {eng.name} computes on host CPUs, got the features on a GPU; pass --device cpu")
    st = state
    if len(st.sP) != len(st.Q) or len(st.negP) != len(st.Q):
        raise ParameterError(f"state is inconsistent: sP and negP must match its {len(st.Q)} unscheduled samples, "
                             f"got {len(st.sP)} and {len(st.negP)}")
    loop = ShardedLoop(eng, X, k, kernel, s_tot, neg_tot, coef, solver, shards, snapshot_every)
    total = -(-n // k)
    if progress:
        progress(len(st.batches), total)
    losses = 0
    with worker_pool(n_jobs):
        try:
            loop.remember(st)
            try:
                loop.start(st)
            except ShardLost:
                losses = _recover(loop, st, losses)
            st.sP = st.negP = None  # they live in the shards now
            st.gather = loop.gather_state
            while not st.done:
                try:
                    loop.step(st)
                    if not st.done:
                        loop._keep(st)
                    if on_step:
                        on_step(st)  # may gather the shards' sums (a checkpoint)
                except ShardLost:
                    # A shard lost during the step, the copy or the checkpoint: back to the
                    # copy, then the same steps again (on_step sees them again: harmless).
                    losses = _recover(loop, st, losses)
                    st.sP = st.negP = None
                    if progress:
                        progress(len(st.batches), total)
                    continue
                losses = 0
                if progress:
                    progress(len(st.batches), total)
        except KeyboardInterrupt:
            # Between steps the shards hold the state after the last whole step: keep it
            # (run_mmd checkpoints it); inside ``apply`` they may be half-updated: keep nothing.
            st.gather = None
            if loop.consistent and loop.handles:
                try:
                    st.Q, st.sP, st.negP = loop.gather_state()
                except Exception:  # noqa: BLE001 - a lost cluster: the last checkpoint stands
                    st.sP = st.negP = None
            raise
        finally:
            st.gather = None  # the shards go now: nothing can gather their sums later
            loop.stop()
            if stats is not None:
                stats.update(loop.counts, calls={m: c for m, (c, _) in loop.stats.items()})
    st.sP = np.zeros(0)
    st.negP = np.zeros(0)
    return st


def _recover(loop: ShardedLoop, st, losses: int) -> int:
    """Rewind to the loop's copy, retrying a restart that loses a shard too; gives up after
    :data:`MAX_LOSSES` losses without a completed step (one line)."""
    while True:
        losses += 1
        if losses > MAX_LOSSES:
            raise EngineError(f"shards were lost {losses} times without a completed step; "
                              "check the cluster's nodes") from None
        try:
            loop.rewind(st)
            return losses
        except ShardLost:
            continue


__all__ = ["sharded_schedule", "ShardedLoop", "MAX_LOSSES", "SNAPSHOT_EVERY"]

