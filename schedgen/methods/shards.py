"""Row shards of the exact selection loop: the state and the per-step work of some rows.

The loop (``schedgen.methods.selection``) keeps, for every unscheduled sample i, ``s_P(i)``
and the kernel operands that form its kernel values. A :class:`Shard` holds these for the
samples of a range of **row blocks**: fixed ranges of :data:`HOST_BLOCK` consecutive sample
indices (``DEVICE_BLOCK`` on a GPU). Every row-wise computation runs block by block, and a
block's work depends on that block's own history only (its :class:`~schedgen.kernels.WorkingSet`
compacts on its own removals), never on which shard holds it or how many shards there are.
Reductions across blocks are order-free: minima with ties broken by the smaller sample
index, and sums of per-block partial sums added exactly (``math.fsum``). So one shard
in this process and three actors on a cluster give the same bits.

A shard answers the driver's few calls per step (:mod:`schedgen.methods.engines` carries
them, in this process or to a Ray actor): ``begin`` (the step's ``Z`` diagonal, and the
``lp`` candidates or the first greedy choice), ``add_column`` (a greedy addition),
``swap_visit`` (one visit of the 1-swap search), ``apply`` (the chosen batch: the ``s_P``
update and the removals), ``gather`` and ``snapshot``. Replies are small: a few candidates,
one best sample, the batch members' values, per-block partial sums.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..kernels import WorkingSet, get_namespace, rhs_rows, to_numpy
from ..kernels._parallel import run_tasks

__all__ = ["HOST_BLOCK", "DEVICE_BLOCK", "block_size", "shard_bounds", "Shard", "fsum_parts"]

#: Samples per row block on the host: 13 blocks at N = 200,000 share two workers (or
#: shards) within ~8%, while a request's per-block overhead (~40 µs) stays near 5% of
#: greedy's one-column GEMV over the block (measured: 8,192 cost greedy 1.6x at N = 20,000).
HOST_BLOCK = 16384
#: On a GPU, blocks as large as the device's kernel tiles (launch overhead dominates).
DEVICE_BLOCK = 1 << 20

_INF = np.inf
#: A one-column request (greedy, swap) is a memory-bound GEMV: worker threads pay off only
#: when the shard's live rows are this many (the WorkingSet's own threshold).
_THREADED_ROWS = 24576
#: A shard keeps the right GEMM operand of all of X (one row gather per request, as the
#: WorkingSet does) when it takes at most this many bytes; else it forms the requested rows.
OPERAND_CACHE_BYTES = 1 << 30


def block_size(X: Any) -> int:
    """The row-block size for features ``X`` (host or device)."""
    return HOST_BLOCK if get_namespace(X) is np else DEVICE_BLOCK


def shard_bounds(n: int, block: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` (at most one per block) ranges of whole blocks covering ``0..n``, as even
    in blocks as possible: ``[(lo, hi), ...]`` in sample indices."""
    nb = max(1, -(-n // block))
    s = max(1, min(int(n_shards), nb))
    counts = [nb // s + (i < nb % s) for i in range(s)]
    edges = np.concatenate([[0], np.cumsum(counts)]) * block
    return [(int(a), int(min(b, n))) for a, b in zip(edges[:-1], edges[1:])]


def fsum_parts(parts) -> float:
    """The correctly rounded sum of per-block partial sums: the same float whatever the
    order the blocks (and shards) report them in."""
    return math.fsum(float(p) for p in parts)


def _best(values: np.ndarray, gids: np.ndarray):
    """``(value, index)`` of the least value (first on ties: the smaller index), or None."""
    if values.size == 0:
        return None
    i = int(np.argmin(values))
    return (float(values[i]), int(gids[i]))


def _merge_best(bests):
    """The least of ``(value, index)`` pairs: ties by the smaller sample index."""
    found = [b for b in bests if b is not None]
    return min(found) if found else None


class _Block:
    """One row block: its operands, its slices of the row sums and its running sums."""

    def __init__(self, kernel, X, lo: int, hi: int, s_tot, neg_tot, n_jobs):
        self.lo = lo
        self.size = hi - lo
        # Its chunks (a function of its own layout) run on worker threads for requests of
        # many samples; a one-sample request is one GEMV on the calling thread.
        self.ws = WorkingSet(kernel, X[lo:hi], n_jobs=n_jobs)
        self.kdiag = np.asarray(to_numpy(kernel.diag(X[lo:hi])), dtype=np.float64)
        self.s_tot = np.asarray(s_tot[lo:hi], dtype=np.float64)
        self.neg_tot = np.asarray(neg_tot[lo:hi], dtype=np.float64)
        self.sP = np.zeros(self.size)
        self.negP = np.zeros(self.size)
        self._relabel()
        self.step_clear()

    def _relabel(self) -> None:
        self.ids = self.ws.ids  # local indices of the live samples, ascending
        self.gids = self.ids + self.lo

    def step_clear(self) -> None:
        self.diag = self.neg = self.g = self.u = None
        self.members: dict[int, int] = {}  # index -> position, this step's batch members here
        self._mpos = None
        self.cols: dict[int, np.ndarray] = {}

    @property
    def n(self) -> int:
        return self.ids.size

    def position(self, j: int) -> int:
        """Position (among the live) of sample j, or -1 when it is not live here."""
        loc = j - self.lo
        if not 0 <= loc < self.size:
            return -1
        p = int(np.searchsorted(self.ids, loc))
        return p if p < self.ids.size and self.ids[p] == loc else -1

    def local(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of those of ``gids`` live here, and the mask of ``gids`` they come from."""
        loc = np.asarray(gids, np.int64) - self.lo
        pos = np.searchsorted(self.ids, loc).clip(0, max(self.ids.size - 1, 0))
        mask = (loc >= 0) & (loc < self.size) & (self.ids.size > 0)
        if self.ids.size:
            mask &= self.ids[pos] == loc
        return pos[mask], mask

    def remove(self, pos: np.ndarray) -> None:
        keep = np.ones(self.n, bool)
        keep[pos] = False
        self.sP = self.sP[keep]
        self.negP = self.negP[keep]
        self.ws.remove(pos)
        self._relabel()

    def column(self, j: int, R) -> np.ndarray:
        """The kernel column of sample j (its self entry 0), computed once per step."""
        col = self.cols.get(j)
        if col is None:
            col = self.ws.columns_of(R)[0]
            p = self.position(j)
            if p >= 0:
                col[p] = 0.0  # the self entry, as BatchProblem's columns have it
            if not np.isfinite(col.sum()) and not np.isfinite(col).all():
                raise ParameterError("block returned NaN or infinity off the diagonal")
            self.cols[j] = col
        return col

    def join(self, j: int) -> None:
        p = self.position(j)
        if p >= 0:
            self.members[j] = p
            self._mpos = None

    def leave(self, j: int) -> None:
        if self.members.pop(j, None) is not None:
            self._mpos = None

    def best_of(self, values: np.ndarray):
        """The least of ``values`` over the non-members, ties by index."""
        if self.members:
            if self._mpos is None:
                self._mpos = np.fromiter(self.members.values(), np.int64, len(self.members))
            values[self._mpos] = _INF
        i = int(np.argmin(values))
        return (float(values[i]), int(self.gids[i]))


def _timed(fn):
    """Count a shard call's compute seconds in ``self.busy`` (what :meth:`Shard.stats` reports)."""

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            self.busy[fn.__name__] = self.busy.get(fn.__name__, 0.0) + time.perf_counter() - t

    return call


class Shard:
    """The loop's state for the samples ``lo..hi`` (whole row blocks) and its per-step work.

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
        All the features (a Ray actor maps the node's one shared copy): the shard forms
        operands of its own rows, and of the batch rows it is sent by index.
    s_tot, neg_tot : arrays of shape (n_samples,), float64
        The row sums (the shard reads its own rows).
    lo, hi : int
        The shard's samples; ``lo`` and ``hi`` lie on block boundaries (or ``hi = n``).
    block : int
        Row-block size (:func:`block_size`); the same for every shard of a loop.
    has_neg : bool
        Whether negative kernel values occur (then ``negP`` is kept).
    cache_operand : bool
        Keep the right GEMM operand of all of X (at most ``OPERAND_CACHE_BYTES``): a
        request then gathers rows instead of forming them (~40 µs). Off for Ray actors,
        which would each hold a copy. Does not change the result.
    n_jobs : int, optional
        Worker threads over the blocks (results do not depend on it).
    """

    def __init__(self, kernel, X, s_tot, neg_tot, *, lo: int, hi: int, block: int, has_neg: bool,
                 cache_operand: bool = True, n_jobs: int | None = None) -> None:
        self.kernel = kernel
        self.X = X
        self.has_neg = bool(has_neg)
        self.n_jobs = n_jobs
        self._host = get_namespace(X) is np
        self.busy: dict[str, float] = {}
        self.blocks = [_Block(kernel, X, b, min(b + block, hi), s_tot, neg_tot, n_jobs)
                       for b in range(lo, hi, block)]
        self._R = None
        if cache_operand and X.shape[0] * (X.shape[1] + 2) * X.dtype.itemsize <= OPERAND_CACHE_BYTES:
            # The rows of this operand have the bits of operands of the gathered rows.
            self._R = rhs_rows(kernel, X, np.arange(X.shape[0]))

    # ------------------------------------------------------------------ helpers

    def _each(self, fn, *, light: bool = False) -> list:
        """``[fn(block) for block in blocks]`` over the live blocks. ``light`` work (one-column
        GEMVs, elementwise passes) runs on worker threads across the blocks when there are
        enough rows for the hand-off to pay; other work runs block after block, each block's
        GEMM chunks on the worker threads (even shares however unequal the blocks are)."""
        if len(self.blocks) == 1:
            b = self.blocks[0]
            return [fn(b) if b.n else None]
        out: list = [None] * len(self.blocks)
        live = [i for i, b in enumerate(self.blocks) if b.n]

        def task(i, state):
            out[i] = fn(self.blocks[i])

        threads = self._host and len(live) > 1 and light
        if threads:
            threads = sum(self.blocks[i].n for i in live) >= _THREADED_ROWS
        if threads:
            run_tasks(task, live, lambda: None, self.n_jobs)
        else:
            for i in live:
                task(i, None)
        return out

    def _members(self) -> tuple[list, list, list]:
        """The current batch members in this shard: indices, ``g`` and ``Z_ii``."""
        gid, g, d = [], [], []
        for b in self.blocks:
            if b.members:
                pos = np.fromiter(b.members.values(), np.int64, len(b.members))
                gid += list(b.members)
                g += b.g[pos].tolist()
                d += b.diag[pos].tolist()
        return gid, g, d

    def _rhs(self, samples) -> Any:
        idx = np.asarray(samples, np.int64)
        if self._R is not None:
            return self._R[idx if self._host else get_namespace(self.X).asarray(idx)]
        return rhs_rows(self.kernel, self.X, idx)

    # ------------------------------------------------------------------ calls

    @_timed
    def restore(self, batches: list, sP: np.ndarray, negP: np.ndarray) -> int:
        """Replay the removals of ``batches`` (bookkeeping only: the blocks' layouts then
        are the ones the run that made the state had) and take ``sP``/``negP`` of this
        shard's unscheduled samples (in index order). Returns their indices."""
        for B in batches:
            B = np.asarray(B, np.int64)
            for b in self.blocks:
                pos, _ = b.local(B)
                if pos.size:
                    b.remove(pos)
        off = 0
        for b in self.blocks:
            n = b.n
            b.sP = np.array(sP[off:off + n], dtype=np.float64)
            b.negP = np.array(negP[off:off + n], dtype=np.float64)
            off += n
        if off != len(sP) or len(negP) != len(sP):
            raise ParameterError(f"state is inconsistent: {off} unscheduled samples in the shard, got sums of {len(sP)}")
        live = [b.gids for b in self.blocks if b.n]
        return np.concatenate(live) if live else np.zeros(0, np.int64)

    @_timed
    def begin(self, c: float, coef: float, mode: str, count: int = 0):
        """Start a step: ``Z_ii = K_ii - coef·c·s_tot(i) + coef·s_P(i)`` and the negative sums.

        ``mode`` "lp": the ``count`` smallest ``a = min(Z_ii, 0) + neg`` as ``(a, index,
        Z_ii, neg)`` arrays (ties by index); "local": the least ``Z_ii`` (greedy's first
        choice); "none": nothing.
        """

        def one(b):
            b.step_clear()
            ids = b.ids
            b.diag = b.kdiag[ids] - coef * c * b.s_tot[ids] + coef * b.sP
            # <= 0 by definition; rounding may leave a few ulps above 0 once every negative
            # value of a row is in P (BatchProblem refuses neg > 0)
            b.neg = np.minimum(b.neg_tot[ids] - b.negP, 0.0)
            if not (np.isfinite(b.diag).all() and np.isfinite(b.neg).all()):
                raise ParameterError("diag and neg must be finite, got NaN or infinity")
            if mode == "lp":
                a = np.minimum(b.diag, 0.0) + b.neg
                take = _smallest_ids(a, count)
                return a[take], b.gids[take], b.diag[take], b.neg[take]
            if mode == "local":
                b.g = np.zeros(b.n)
                return _best(b.diag, b.gids)
            return None

        parts = self._each(one, light=True)
        if mode == "lp":
            got = [p for p in parts if p is not None]
            if not got:
                return tuple(np.zeros(0) for _ in range(4))
            a, gid, d, ng = (np.concatenate(x) for x in zip(*got))
            take = np.lexsort((gid, a))[:count]
            return a[take], gid[take], d[take], ng[take]
        if mode == "local":
            return _merge_best(parts)
        return None

    @_timed
    def gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This step's ``(index, Z_ii, neg)`` of every unscheduled sample, in index order."""
        live = [b for b in self.blocks if b.n]
        if not live:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        return (np.concatenate([b.gids for b in live]), np.concatenate([b.diag for b in live]),
                np.concatenate([b.neg for b in live]))

    @_timed
    def add_column(self, j: int):
        """Greedy: sample j joins the batch (``g += K(j, ·)``); returns the least score
        ``Z_ii + 2 g_i`` over the non-members (ties by index)."""
        R = self._rhs([j])

        def one(b):
            b.g += b.column(j, R)
            b.join(j)
            score = np.multiply(b.g, 2.0)
            score += b.diag
            return b.best_of(score)

        return _merge_best(self._each(one, light=True))

    @_timed
    def swap_visit(self, pending, b_gid: int):
        """Swap search: first apply ``pending`` (None, ``("add", j)`` the greedy phase's last
        sample, or ``("swap", out, in)``), then, for the slot holding ``b_gid``, the least
        ``u_j - 2 K(j, b)`` over the non-members (``u = Z_ii + 2 g``; ties by index), and
        the members' values when ``pending`` changed them (else None)."""
        apply = self._pending(pending)

        def one(b):
            apply(b)
            if b.u is None:  # u changes with g only
                b.u = np.multiply(b.g, 2.0)
                b.u += b.diag
            d = np.multiply(b.cols[b_gid], -2.0)
            d += b.u
            return b.best_of(d)

        return _merge_best(self._each(one, light=True)), (None if pending is None else self._members())

    def _pending(self, pending):
        """The per-block update of a pending addition or swap (a no-op for None)."""
        if pending is None:
            return lambda b: None
        if pending[0] == "add":
            j = int(pending[1])
            R = self._rhs([j])

            def add(b):
                b.g += b.column(j, R)
                b.join(j)

            return add
        out, new = int(pending[1]), int(pending[2])
        R = self._rhs([new])

        def swap(b):
            b.g += b.column(new, R)
            b.g -= b.cols[out]
            b.u = None
            b.leave(out)
            b.join(new)

        return swap

    @_timed
    def apply(self, B, pending=None, cached: bool = False):
        """The batch ``B`` (indices, the solver's order) leaves Q.

        ``s_P(i) += Σ_{b∈B} K(b, i)`` for the samples left: from the step's cached columns
        added in batch order when ``cached`` (greedy, swap: every member's column is
        there), else from one fused pass (:meth:`WorkingSet.column_sums_of`). Returns
        ``(index -> s_P before the update for members of B here, [Σ s_P over the rest of
        each block], [Σ s_tot over the rest of each block], samples left)``.
        """
        first = self._pending(pending)
        B = np.asarray(B, np.int64)
        R = None if cached else self._rhs(B)
        has_neg = self.has_neg
        order = B.tolist()

        def one(b):
            first(b)
            pos, mask = b.local(B)
            before = dict(zip(B[mask].tolist(), b.sP[pos].tolist()))
            keep = np.ones(b.n, bool)
            keep[pos] = False
            if keep.any():
                if cached:
                    inc = inc_neg = None
                    for j in order:
                        col = b.cols[j]
                        inc = col.copy() if inc is None else np.add(inc, col, out=inc)
                        if has_neg:
                            m = np.minimum(col, 0.0)
                            inc_neg = m if inc_neg is None else np.add(inc_neg, m, out=inc_neg)
                else:
                    inc, inc_neg = b.ws.column_sums_of(R, negative=has_neg)
                b.sP = b.sP[keep] + inc[keep]
                b.negP = b.negP[keep] + inc_neg[keep] if has_neg else np.zeros(int(keep.sum()))
            else:
                b.sP = b.sP[keep]
                b.negP = b.negP[keep]
            if pos.size:
                b.ws.remove(pos)
                b._relabel()
            b.step_clear()
            return before, float(np.sum(b.sP)), float(np.sum(b.s_tot[b.ids]))

        parts = self._each(one, light=cached)  # cached: sums of columns, no GEMM
        for b in self.blocks:
            b.step_clear()
        before: dict = {}
        sA, st = [], []
        for p in parts:
            if p is not None:
                before.update(p[0])
                sA.append(p[1])
                st.append(p[2])
        return before, sA, st, sum(b.n for b in self.blocks)

    @_timed
    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(index, s_P, negP)`` of this shard's unscheduled samples, in index order."""
        live = [b for b in self.blocks if b.n]
        if not live:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        return (np.concatenate([b.gids for b in live]), np.concatenate([b.sP for b in live]),
                np.concatenate([b.negP for b in live]))

    def ping(self) -> int:
        """The number of unscheduled samples here (a cheap call: the engine's round trip)."""
        return sum(b.n for b in self.blocks)

    def stats(self) -> dict:
        """Seconds of compute so far, by call (benchmarks/engine_loop.py reads them)."""
        return dict(self.busy)


def _smallest_ids(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest values, ties by smaller position, in that order."""
    n = values.size
    count = min(count, n)
    if count <= 0:
        return np.zeros(0, np.int64)
    if count == n:
        return np.argsort(values, kind="stable").astype(np.int64)
    v = np.partition(values, count - 1)[count - 1]
    cand = np.flatnonzero(values <= v)
    return cand[np.lexsort((cand, values[cand]))][:count].astype(np.int64)
