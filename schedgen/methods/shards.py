"""Row shards of the exact selection loop: the state and the per-step work of some rows.

The loop (``schedgen.methods.selection``) keeps, for every unscheduled sample i, ``s_P(i)``
and the kernel operands that form its kernel values. A :class:`Shard` holds these for the
samples of a range of **row blocks**: fixed ranges of :data:`HOST_BLOCK` consecutive sample
indices (``DEVICE_BLOCK`` on a GPU). Every kernel value comes from its block's own
:class:`~schedgen.kernels.WorkingSet`, whose GEMM tiles follow that block's removals only,
never which shard holds it or how many shards there are; elementwise passes (the same
bits whatever the array they run over) run over the shard's live samples at once.
Reductions across blocks are order-free: minima with ties broken by the smaller sample
index, and per-block partial sums added exactly (``math.fsum``). So one shard in this
process and three actors on a cluster give the same bits.

A shard answers the driver's few calls per step (:mod:`schedgen.methods.engines` carries
them, in this process or to a Ray actor): ``begin`` (the step's ``Z`` diagonal, and the
``lp`` candidates or the first greedy choice), ``add_column`` (a greedy addition),
``swap_visits`` (visits of the 1-swap search), ``apply`` (the chosen batch: the ``s_P``
update and the removals), ``gather`` and ``snapshot``. Replies are small: a few candidates,
one best sample, the batch members' values, per-block partial sums.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..kernels import WorkingSet, get_namespace, rhs_rows, to_numpy
from ..kernels._parallel import pinned_blas, run_tasks
from .solvers import smallest

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
    """``n_shards`` (at most one per block) ranges of whole blocks covering ``0..n``, each
    ending at the block boundary nearest to its even share of the samples (a short last
    block then does not unbalance them): ``[(lo, hi), ...]`` in sample indices."""
    nb = max(1, -(-n // block))
    s = max(1, min(int(n_shards), nb))
    edges = [0]
    for i in range(1, s):
        e = int(round(i * n / s / block))
        edges.append(min(max(e, edges[-1] + 1), nb - (s - i)))  # every shard gets a block
    edges.append(nb)
    return [(a * block, min(b * block, n)) for a, b in zip(edges[:-1], edges[1:])]


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


class _Block:
    """One row block: its working set (GEMM operands, compacted on its own removals) and
    its constant slices. Running sums live in the shard, in arrays over its live samples."""

    def __init__(self, kernel, X, lo: int, hi: int, s_tot, neg_tot):
        self.lo = lo
        self.size = hi - lo
        # One thread: the shard spreads the work over its worker threads itself (blocks of
        # a GEMV, or the GEMM chunks of every block at once); a nested pool would be
        # started per request.
        self.ws = WorkingSet(kernel, X[lo:hi], n_jobs=1)
        self.kdiag = np.asarray(to_numpy(kernel.diag(X[lo:hi])), dtype=np.float64)
        self.s_tot = np.asarray(s_tot[lo:hi], dtype=np.float64)
        self.neg_tot = np.asarray(neg_tot[lo:hi], dtype=np.float64)
        self.ids = self.ws.ids  # local indices of the live samples, ascending

    @property
    def n(self) -> int:
        return self.ids.size

    def remove_local(self, loc: np.ndarray) -> None:
        """Remove the live samples with local indices ``loc``."""
        if loc.size:
            self.ws.remove(np.searchsorted(self.ids, loc))
            self.ids = self.ws.ids


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
        Worker threads (results do not depend on it).

    Notes
    -----
    Kernel values come block by block (each block's GEMM tiles follow its own layout);
    everything elementwise (``Z_ii``, greedy's scores, swap's deltas, the ``s_P`` update)
    runs on arrays over the shard's live samples in index order: the same bits as block
    by block, in one NumPy call each.
    """

    def __init__(self, kernel, X, s_tot, neg_tot, *, lo: int, hi: int, block: int, has_neg: bool,
                 cache_operand: bool = True, n_jobs: int | None = None) -> None:
        self.kernel = kernel
        self.X = X
        self.has_neg = bool(has_neg)
        self.n_jobs = n_jobs
        self._host = get_namespace(X) is np
        self.busy: dict[str, float] = {}
        self.blocks = [_Block(kernel, X, b, min(b + block, hi), s_tot, neg_tot) for b in range(lo, hi, block)]
        self._R = None
        if cache_operand and X.shape[0] * (X.shape[1] + 2) * X.dtype.itemsize <= OPERAND_CACHE_BYTES:
            # The rows of this operand have the bits of operands of the gathered rows.
            self._R = rhs_rows(kernel, X, np.arange(X.shape[0]))
        self._scratch = np.zeros(0)
        self._relayout()
        self.sP = np.zeros(self.gids.size)
        self.negP = np.zeros(self.gids.size)
        self._step_clear()

    # ------------------------------------------------------------------ layout

    def _relayout(self) -> None:
        """The shard's live samples (index order) and its constant arrays over them."""
        live = [b for b in self.blocks if b.n]
        cat = (lambda xs, dt=np.float64: np.concatenate(xs) if xs else np.zeros(0, dt))
        self.gids = cat([b.ids + b.lo for b in live], np.int64)
        self.kd = cat([b.kdiag[b.ids] for b in live])
        self.st = cat([b.s_tot[b.ids] for b in live])
        self.nt = cat([b.neg_tot[b.ids] for b in live])
        self.offs = np.cumsum([0] + [b.n for b in self.blocks])

    def _step_clear(self) -> None:
        self.diag = self.neg = self.g = self.u = None
        self.members: dict[int, int] = {}  # index -> position, this step's batch members here
        self._mpos = None
        self.cols: dict[int, np.ndarray] = {}

    @property
    def n(self) -> int:
        return int(self.gids.size)

    def _position(self, j: int) -> int:
        """Position (among the live) of sample j, or -1 when it is not live here."""
        p = int(np.searchsorted(self.gids, j))
        return p if p < self.gids.size and self.gids[p] == j else -1

    def _positions(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of those of ``B`` live here, and the mask of ``B`` they come from."""
        if self.gids.size == 0:
            return np.zeros(0, np.int64), np.zeros(B.size, bool)
        pos = np.searchsorted(self.gids, B).clip(0, self.gids.size - 1)
        mask = self.gids[pos] == B
        return pos[mask], mask

    def _rhs(self, samples) -> Any:
        idx = np.asarray(samples, np.int64)
        if self._R is not None:
            return self._R[idx if self._host else get_namespace(self.X).asarray(idx)]
        return rhs_rows(self.kernel, self.X, idx)

    def _blocks_do(self, fn, threads: bool) -> None:
        """``fn(block, offset)`` for the live blocks, on worker threads when ``threads``."""
        live = [(b, int(o)) for b, o in zip(self.blocks, self.offs[:-1]) if b.n]
        if threads and self._host and len(live) > 1:
            run_tasks(lambda item, state: fn(*item), live, lambda: None, self.n_jobs)
        else:
            for b, o in live:
                fn(b, o)

    def _column(self, j: int) -> np.ndarray:
        """The kernel column of sample j over the live samples (self entry 0), once per step."""
        col = self.cols.get(j)
        if col is not None:
            return col
        R = self._rhs([j])
        col = np.empty(self.n)

        def one(b, o):
            if self._host:
                b.ws.columns_of(R, out=col[o:o + b.n].reshape(1, b.n))  # written in place
            else:
                col[o:o + b.n] = b.ws.columns_of(R)[0]

        # a one-column GEMV: worker threads pay only on enough rows
        self._blocks_do(one, threads=self.n >= _THREADED_ROWS)
        p = self._position(j)
        if p >= 0:
            col[p] = 0.0  # the self entry, as BatchProblem's columns have it
        if not np.isfinite(col.sum()) and not np.isfinite(col).all():
            raise ParameterError("block returned NaN or infinity off the diagonal")
        self.cols[j] = col
        return col

    def _buffer(self) -> np.ndarray:
        """A scratch array over the live samples, reused across calls: a fresh one a call
        would be mapped and its pages faulted in every time (over a few hundred kB)."""
        if self._scratch.size != self.n:
            self._scratch = np.empty(self.n)
        return self._scratch

    def _join(self, j: int) -> None:
        p = self._position(j)
        if p >= 0:
            self.members[j] = p
            self._mpos = None

    def _best_of(self, values: np.ndarray):
        """The least of ``values`` over the non-members, ties by index."""
        if self.members:
            if self._mpos is None:
                self._mpos = np.fromiter(self.members.values(), np.int64, len(self.members))
            values[self._mpos] = _INF
        return _best(values, self.gids)

    def _members(self) -> tuple[list, list, list]:
        """The current batch members in this shard: indices, ``g`` and ``Z_ii``."""
        if not self.members:
            return [], [], []
        pos = np.fromiter(self.members.values(), np.int64, len(self.members))
        return list(self.members), self.g[pos].tolist(), self.diag[pos].tolist()

    # ------------------------------------------------------------------ calls

    @_timed
    def restore(self, batches: list, sP: np.ndarray, negP: np.ndarray) -> np.ndarray:
        """Replay the removals of ``batches`` (bookkeeping only: the blocks' layouts then
        are the ones the run that made the state had) and take ``sP``/``negP`` of this
        shard's unscheduled samples (in index order). Returns their indices."""
        for B in batches:
            B = np.asarray(B, np.int64)
            for b in self.blocks:
                loc = B[(B >= b.lo) & (B < b.lo + b.size)] - b.lo
                b.remove_local(np.sort(loc[np.isin(loc, b.ids)]))
        self._relayout()
        if len(sP) != self.n or len(negP) != self.n:
            raise ParameterError(f"state is inconsistent: {self.n} unscheduled samples in the shard, "
                                 f"got sums of {len(sP)}")
        self.sP = np.array(sP, dtype=np.float64)
        self.negP = np.array(negP, dtype=np.float64)
        return self.gids.copy()

    @_timed
    def begin(self, c: float, coef: float, mode: str, count: int = 0):
        """Start a step: ``Z_ii = K_ii - coef·c·s_tot(i) + coef·s_P(i)`` and the negative sums.

        ``mode`` "lp": the ``count`` smallest ``a = min(Z_ii, 0) + neg`` as ``(a, index,
        Z_ii, neg)`` arrays (ties by index); "local": the least ``Z_ii`` (greedy's first
        choice); "none": nothing.
        """
        self._step_clear()
        self.diag = self.kd - coef * c * self.st + coef * self.sP
        # <= 0 by definition; rounding may leave a few ulps above 0 once every negative
        # value of a row is in P (BatchProblem refuses neg > 0)
        self.neg = np.minimum(self.nt - self.negP, 0.0)
        # one reduction each: a sum is finite only if every term is (overflow aside)
        if not np.isfinite(float(np.sum(self.diag)) + float(np.sum(self.neg))):
            if not (np.isfinite(self.diag).all() and np.isfinite(self.neg).all()):
                raise ParameterError("diag and neg must be finite, got NaN or infinity")
        if mode == "lp":
            a = np.minimum(self.diag, 0.0) + self.neg
            take = smallest(a, count)
            return a[take], self.gids[take], self.diag[take], self.neg[take]
        if mode == "local":
            self.g = np.zeros(self.n)
            return _best(self.diag, self.gids)
        return None

    @_timed
    def gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This step's ``(index, Z_ii, neg)`` of every unscheduled sample, in index order."""
        return self.gids.copy(), self.diag.copy(), self.neg.copy()

    @_timed
    def add_column(self, j: int):
        """Greedy: sample j joins the batch (``g += K(j, ·)``); returns the least score
        ``Z_ii + 2 g_i`` over the non-members (ties by index)."""
        self._add(j)
        score = np.multiply(self.g, 2.0, out=self._buffer())
        score += self.diag
        return self._best_of(score)

    def _add(self, j: int) -> None:
        self.g += self._column(j)
        self._join(j)

    @_timed
    def swap_visits(self, pending, slots):
        """Swap search: first apply ``pending`` (None, ``("add", j)`` the greedy phase's last
        sample, or ``("swap", out, in)``), then for each slot's sample b in ``slots`` (in
        visiting order, as if none of them swapped) the least ``u_j - 2 K(j, b)`` over the
        non-members (``u = Z_ii + 2 g``; ties by index). Returns those and the members'
        values when ``pending`` changed them (else None). A visit without a swap changes
        nothing, so the driver uses the answers up to the first swap and drops the rest."""
        self._pending(pending)
        if self.u is None:  # u changes with g only
            self.u = np.multiply(self.g, 2.0)
            self.u += self.diag
        out = []
        for b_gid in slots:
            d = np.multiply(self.cols[int(b_gid)], -2.0, out=self._buffer())
            d += self.u
            out.append(self._best_of(d))
        return out, (None if pending is None else self._members())

    def _pending(self, pending) -> None:
        if pending is None:
            return
        if pending[0] == "add":
            self._add(int(pending[1]))
            return
        out, new = int(pending[1]), int(pending[2])
        self.g += self._column(new)
        self.g -= self.cols[out]
        self.u = None
        if self.members.pop(out, None) is not None:
            self._mpos = None
        self._join(new)

    @_timed
    def apply(self, B, pending=None, cached: bool = False):
        """The batch ``B`` (indices, the solver's order) leaves Q.

        ``s_P(i) += Σ_{b∈B} K(b, i)`` for the samples left: from the step's cached columns
        added in batch order when ``cached`` (greedy, swap: every member's column is
        there), else from one pass of GEMM chunks over every block at once
        (:meth:`WorkingSet.column_sums_jobs`). Returns ``(index -> s_P before the update
        for members of B here, [Σ s_P over the rest of each block], [Σ s_tot over the rest
        of each block], samples left)``.
        """
        self._pending(pending)
        B = np.asarray(B, np.int64)
        has_neg = self.has_neg
        pos, mask = self._positions(B)
        before = dict(zip(B[mask].tolist(), self.sP[pos].tolist()))
        keep = np.ones(self.n, bool)
        keep[pos] = False
        if keep.any():
            if cached:
                inc = inc_neg = None
                for j in B.tolist():
                    col = self.cols[j]
                    inc = col.copy() if inc is None else np.add(inc, col, out=inc)
                    if has_neg:
                        m = np.minimum(col, 0.0)
                        inc_neg = m if inc_neg is None else np.add(inc_neg, m, out=inc_neg)
            else:
                inc, inc_neg = self._column_sums(B)
            self.sP = self.sP[keep] + inc[keep]
            self.negP = self.negP[keep] + inc_neg[keep] if has_neg else np.zeros(int(keep.sum()))
        else:
            self.sP = self.sP[keep]
            self.negP = self.negP[keep]
        for b in self.blocks:
            if b.n:
                loc = B[(B >= b.lo) & (B < b.lo + b.size)] - b.lo
                b.remove_local(np.sort(loc))
        self._relayout()
        self._step_clear()
        sA, st = [], []
        for b, o in zip(self.blocks, self.offs[:-1]):  # a block's own sums (0.0 once empty)
            sA.append(float(np.sum(self.sP[o:o + b.n])))
            st.append(float(np.sum(self.st[o:o + b.n])))
        return before, sA, st, self.n

    def _column_sums(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``Σ_{b∈B} K(b, ·)`` (and its negative part) over the live samples: the GEMM chunks
        of every block in one pass, so the worker threads share them evenly."""
        R = self._rhs(B)
        live = [(b, int(o)) for b, o in zip(self.blocks, self.offs[:-1]) if b.n]
        jobs = [b.ws.column_sums_jobs(R, negative=self.has_neg) for b, _ in live]
        items = [(i, e) for i, j in enumerate(jobs) for e in j.plan]
        if items:
            size = max(j.size for j in jobs)
            ws0 = live[0][0].ws

            def make():
                return ws0.buffers(size)

            def task(item, state):
                jobs[item[0]].task(item[1], state)

            if self._host and len(items) > 1:
                run_tasks(task, items, make, self.n_jobs)
            else:
                state = make()
                with pinned_blas() if self._host else contextlib.nullcontext():
                    for item in items:
                        task(item, state)
        inc = np.empty(self.n)
        inc_neg = np.empty(self.n) if self.has_neg else None
        for (b, o), j in zip(live, jobs):
            s_b, n_b = j.result()
            inc[o:o + b.n] = s_b
            if inc_neg is not None:
                inc_neg[o:o + b.n] = n_b
        return inc, inc_neg

    @_timed
    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(index, s_P, negP)`` of this shard's unscheduled samples, in index order."""
        return self.gids.copy(), self.sP.copy(), self.negP.copy()

    def ping(self) -> int:
        """The number of unscheduled samples here (a cheap call: the engine's round trip)."""
        return self.n

    def stats(self) -> dict:
        """Seconds of compute so far, by call (benchmarks/engine_loop.py reads them)."""
        return dict(self.busy)
