"""Kernel columns against a shrinking set of samples, from operands prepared once.

The selection loop asks, thousands of times, for ``K(x_q, x_c)`` between a few
samples c (a batch, a solver's chosen sample) and every sample q not scheduled
yet. Gathering ``X[Q]`` and rebuilding the augmented GEMM operands on every
request costs more than the GEMM itself. :class:`WorkingSet` builds the left
operand ``lhs(X[q])`` of every live sample once and keeps it in a slot array;
removing samples only marks their slots dead, and the array is compacted (one
copy) when more than 1/8 of it is dead, so the copies cost O(N) rows in total
while the GEMMs waste at most that fraction.

A request is one GEMM per chunk of slots, ``rhs(X[c]) @ lhs[chunk].T`` (``len(c)``
rows by a chunk of samples), finished in place and written out for the live
slots only. A value is ``lhs(x_q) · rhs(x_c)``, the product :func:`row_sums`
forms for row q. Chunks run on worker threads with BLAS pinned to one thread
(``_parallel``); the chunk grid is a function of the slot layout and of the
number of requested samples only, and the layout a function of the removals, so
results are the same bytes for any thread count. (Requests of one sample are
GEMVs, whose rounding differs slightly from GEMMs'.)
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np

from schedgen.errors import ParameterError

from ._parallel import pinned_blas, run_tasks
from .backend import get_namespace, to_numpy
from .blocked import _check_kernel, _check_n_jobs, _given_sq, _operand
from .families import Kernel, as_float_matrix, sq_norms

__all__ = ["WorkingSet", "WORKSET_CHUNK", "rhs_rows", "pair_block"]

#: Slots per GEMM chunk on the host: a (k x 2048) float32 tile is 400 KB at k = 50;
#: narrower chunks balance two workers better and cost the same GEMM time per value.
WORKSET_CHUNK = 2048
_DEVICE_CHUNK = 1 << 16
#: Requests of fewer samples are memory-bound GEMVs: a second thread gains little
#: and its hand-off costs more at moderate sizes, so they run on the calling thread.
_THREADED_M = 4
#: ... unless the live set is large enough for two threads to share the memory traffic.
_THREADED_N = 24576
#: Compact the slot array once more than this fraction of it is dead.
_DEAD_FRACTION = 0.125


class SumJobs(NamedTuple):
    """The chunk tasks of a :meth:`WorkingSet.column_sums_jobs` request: run
    ``task(entry, state)`` for every entry of ``plan`` (any thread, BLAS pinned), each with a
    ``state`` from ``make()`` (buffers of ``size`` elements; larger ones do too), then
    ``result()`` gives ``(s, neg)``."""

    plan: list
    task: Any
    make: Any
    size: int
    result: Any


class WorkingSet:
    """Prepared operands of a set of samples that only shrinks.

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
        NumPy or CuPy; GEMMs run in X's dtype.
    ids : integer array of shape (n_live,), optional
        The live samples, distinct indices into X in the order they are to be
        reported (default ``arange(n_samples)``).
    sq : array of shape (n_samples,), optional
        ``sq_norms(X)``, if already computed.
    n_jobs : int, optional
        Host worker threads (default: the usable CPUs). Does not change results.

    Notes
    -----
    Live samples keep their relative order: "position" p always means the p-th
    live sample, ``ids[p]``. Memory: the live samples' operand, plus the full
    ``lhs``/``rhs`` operands of X once :meth:`columns` or :meth:`block` have needed
    them (each n_samples x (n_features + 2) in X's dtype).
    """

    def __init__(self, kernel: Kernel, X: Any, ids: Any = None, *, sq: Any = None, n_jobs: int | None = None):
        _check_kernel(kernel)
        X = as_float_matrix(X)
        xp = get_namespace(X)
        n = X.shape[0]
        self.kernel = kernel
        self.X = X
        self._xp = xp
        self._n_jobs = _check_n_jobs(n_jobs)
        if kernel.uses_sq:
            self._sq = sq_norms(X) if sq is None else _given_sq(kernel, X, sq)
        else:
            self._sq = None
        if ids is None:
            host_ids = np.arange(n, dtype=np.int64)
        else:
            host_ids = np.asarray(to_numpy(ids))
            if host_ids.ndim != 1 or not (host_ids.size == 0 or host_ids.dtype.kind in "iu"):
                raise ParameterError(f"ids must be a 1-D array of sample indices, got shape {host_ids.shape}")
            host_ids = host_ids.astype(np.int64)
            if host_ids.size and (host_ids.min() < 0 or host_ids.max() >= n):
                raise ParameterError(f"ids must lie in [0, {n}) (N={n}), got values from {host_ids.min()} to {host_ids.max()}")
            if np.unique(host_ids).size != host_ids.size:
                raise ParameterError("ids must be distinct, got a repeated sample index")
        self._chunk = WORKSET_CHUNK if xp is np else _DEVICE_CHUNK
        self._full: dict[str, Any] = {}
        self._ids = host_ids
        # The live samples' *left* operands: a value K(x_q, x_s) is then computed as
        # lhs(x_q) · rhs(x_s), exactly as row_sums computes row q's values, so that
        # MMD² differences of these sums and the row sums share their rounding.
        self._L = _operand(kernel, X, xp.asarray(host_ids), self._sq, "lhs") if host_ids.size else None
        self._alive = np.ones(host_ids.size, dtype=bool)
        self._dead = 0
        self._replan()

    # ------------------------------------------------------------------ layout

    @property
    def n(self) -> int:
        """Number of live samples."""
        return int(self._slots.size)

    @property
    def sq(self) -> Any:
        """``sq_norms(X)`` as used here (None for kernels without norms)."""
        return self._sq

    @property
    def ids(self) -> np.ndarray:
        """The live samples' indices into X (host int64), in their order."""
        return self._ids[self._slots]

    def _replan(self) -> None:
        """Forget the chunk tables (rebuilt on demand for the new layout)."""
        self._slots = np.flatnonzero(self._alive)
        self._plans: dict[int, list] = {}

    def _plan_for(self, m: int) -> list:
        """The chunk table for requests of m samples: (slot range, output range, live
        offsets or None when all live). Few samples make a memory-bound GEMV: wider
        chunks then (fewer, longer tasks), or one on the calling thread; the width
        is a function of m and of the layout only."""
        if m >= _THREADED_M:
            width = self._chunk * (2 if m < 8 else 1)
        elif self.n >= _THREADED_N:
            width = self._chunk * 4  # a GEMV shared by the workers
        else:
            width = max(1, self._alive.size)  # one GEMV on the calling thread
        plan = self._plans.get(width)
        if plan is not None:
            return plan
        xp = self._xp
        alive = self._alive
        starts = np.arange(0, alive.size, width)
        counts = np.add.reduceat(alive, starts, dtype=np.intp).tolist() if alive.size else []
        plan = []
        d = 0
        for s0, cnt in zip(starts.tolist(), counts):
            if cnt == 0:
                continue
            s1 = min(s0 + width, alive.size)
            li = None if cnt == s1 - s0 else xp.asarray(np.flatnonzero(alive[s0:s1]))
            plan.append((s0, s1, d, d + cnt, li))
            d += cnt
        self._plans[width] = plan
        return plan

    def remove(self, positions: Any) -> None:
        """Drop the live samples at ``positions`` (int array, positions among the live)."""
        pos = np.asarray(to_numpy(positions))
        if pos.size == 0:
            return
        if pos.ndim != 1 or pos.dtype.kind not in "iu":
            raise ParameterError(f"positions must be a 1-D integer array, got dtype {pos.dtype} and shape {pos.shape}")
        if pos.min() < 0 or pos.max() >= self.n:
            raise ParameterError(f"positions must lie in [0, {self.n}), got values from {pos.min()} to {pos.max()}")
        slots = self._slots[pos]
        if np.unique(slots).size != slots.size:
            raise ParameterError("positions must be distinct, got a repeated position")
        self._alive[slots] = False
        self._dead += slots.size
        if self._dead > _DEAD_FRACTION * self._alive.size:
            keep = np.flatnonzero(self._alive)
            self._ids = self._ids[keep]
            self._L = self._L[self._xp.asarray(keep)] if keep.size else None
            self._alive = np.ones(keep.size, dtype=bool)
            self._dead = 0
        self._replan()

    # ------------------------------------------------------------------ requests

    def _operand(self, samples: Any, side: str, what: str = "samples") -> tuple[int, Any]:
        """Rows ``samples`` of the full ``lhs``/``rhs`` operand of X (built on first use:
        requests of one sample then cost one row gather, and the rows have the same
        bits as operands built from the gathered samples)."""
        n = self.X.shape[0]
        idx = np.asarray(to_numpy(samples))
        if idx.ndim != 1 or not (idx.size == 0 or idx.dtype.kind in "iu"):
            raise ParameterError(f"{what} must be a 1-D array of sample indices, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ParameterError(f"{what} must lie in [0, {n}) (N={n}), got values from {idx.min()} to {idx.max()}")
        full = self._full.get(side)
        if full is None:
            full = self._full[side] = _operand(self.kernel, self.X, self._xp.arange(n), self._sq, side)
        return idx.size, full[self._xp.asarray(idx.astype(np.int64, copy=False))]

    def _jobs(self, R: Any, m: int, per_chunk) -> tuple[list, Any, int]:
        """The chunk tasks of one request: ``(plan, task(entry, state), elements per buffer)``."""
        xp, kernel = self._xp, self.kernel
        plan = self._plan_for(m)
        size = m * max(e[1] - e[0] for e in plan)

        def task(entry, state):
            s0, s1, d0, d1, li = entry
            buf, scratch = state
            shape = (m, s1 - s0)
            tile = buf[: shape[0] * shape[1]].reshape(shape)
            xp.matmul(R, self._L[s0:s1].T, out=tile)
            kernel._finish(tile, None if scratch is None else scratch[: tile.size].reshape(shape), xp)
            per_chunk(tile, d0, d1, li)

        return plan, task, size

    def buffers(self, size: int):
        """A scratch state for chunk tasks: a buffer of ``size`` elements (and its scratch twin)."""
        xp = self._xp
        buf = xp.empty(size, dtype=self.X.dtype)
        return buf, (xp.empty_like(buf) if self.kernel.needs_scratch else None)

    def _run(self, R: Any, m: int, per_chunk) -> None:
        plan, task, size = self._jobs(R, m, per_chunk)
        self._dispatch(plan, task, lambda: self.buffers(size))

    def _dispatch(self, plan: list, task, make) -> None:
        """Run ``task(entry, state)`` for every chunk: on the worker threads, or on the
        calling thread with BLAS pinned (the same bits either way)."""
        if self._xp is np and len(plan) > 1:
            run_tasks(task, plan, make, self._n_jobs)
            return
        with pinned_blas() if self._xp is np else contextlib.nullcontext():
            state = make()
            for entry in plan:
                task(entry, state)

    def columns(self, samples: Any) -> np.ndarray:
        """``out[r, p] = K(x_{samples[r]}, x_{ids[p]})`` for every live position p.

        Parameters
        ----------
        samples : integer array of shape (m,)
            Indices into X (live or not).

        Returns
        -------
        ndarray of shape (m, n_live), float64 (NumPy), a fresh array.
        """
        m, R = self._operand(samples, "rhs")
        return self.columns_of(R)

    def columns_of(self, R: Any, out: Any = None) -> np.ndarray:
        """:meth:`columns` of samples given by their right operand ``R`` (:func:`rhs_rows`
        of any features with this kernel): the same bits as :meth:`columns` of the same samples.
        ``out``: a float64 array of shape (m, n_live) in X's namespace to write them into."""
        xp = self._xp
        m = int(R.shape[0])
        if out is None:
            out = xp.empty((m, self.n), dtype=xp.float64)
        elif out.shape != (m, self.n) or out.dtype != xp.float64:
            raise ParameterError(f"out must be a float64 array of shape {(m, self.n)}, got {out.dtype} {out.shape}")
        if m == 0 or self.n == 0:
            return to_numpy(out)

        def write(tile, d0, d1, li):
            out[:, d0:d1] = tile if li is None else tile[:, li]

        self._run(R, m, write)
        return to_numpy(out)

    def column_sums(self, samples: Any, *, negative: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``s[p] = Σ_r K(x_{samples[r]}, x_{ids[p]})`` (and the sum of the negative values).

        Sums run over r in order, in float64. Pairs of a sample with itself are
        included. Returns ``(s, neg)``, float64 NumPy arrays of shape (n_live,);
        ``neg`` is None unless ``negative`` (it is all zeros for a
        non-negative kernel).
        """
        m, R = self._operand(samples, "rhs")
        return self.column_sums_of(R, negative=negative)

    def column_sums_of(self, R: Any, *, negative: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`column_sums` of samples given by their right operand ``R`` (:func:`rhs_rows`)."""
        jobs = self.column_sums_jobs(R, negative=negative)
        if jobs.plan:
            self._dispatch(jobs.plan, jobs.task, jobs.make)
        return jobs.result()

    def column_sums_jobs(self, R: Any, *, negative: bool = False) -> "SumJobs":
        """:meth:`column_sums_of` as chunk tasks not yet run, for a caller that runs the tasks
        of several working sets in one :func:`~schedgen.kernels._parallel.run_tasks` call
        (each task gives the same bits wherever it runs)."""
        xp = self._xp
        m = int(R.shape[0])
        s = xp.zeros(self.n, dtype=xp.float64)
        neg = xp.zeros(self.n, dtype=xp.float64) if negative else None

        def result():
            return to_numpy(s), None if neg is None else to_numpy(neg)

        if m == 0 or self.n == 0:
            return SumJobs([], None, lambda: None, 0, result)
        f64 = xp.float64
        want_neg = negative and not self.kernel.nonnegative

        def add(tile, d0, d1, li):
            # A reduction over axis 0 of a C-contiguous tile adds its rows in order.
            row = xp.sum(tile, axis=0, dtype=f64)
            s[d0:d1] = row if li is None else row[li]
            if want_neg and not (xp is np and tile.min() >= 0):
                xp.minimum(tile, 0, out=tile)
                row = xp.sum(tile, axis=0, dtype=f64)
                neg[d0:d1] = row if li is None else row[li]

        plan, task, size = self._jobs(R, m, add)
        return SumJobs(plan, task, lambda: self.buffers(size), size, result)

    def block(self, rows: Any, cols: Any) -> np.ndarray:
        """The small dense block ``K(x_{rows[i]}, x_{cols[j]})`` (indices into X), float64 NumPy.

        One GEMM with BLAS pinned to one thread; meant for blocks of a few
        thousand rows at most (use :meth:`columns` against every live sample).
        """
        xp = self._xp
        nr, L = self._operand(rows, "lhs", "rows")
        nc, R = self._operand(cols, "rhs", "cols")
        if nr == 0 or nc == 0:
            return np.zeros((nr, nc))
        with pinned_blas():
            tile = xp.matmul(L, R.T)
        scratch = xp.empty_like(tile) if self.kernel.needs_scratch else None
        self.kernel._finish(tile, scratch, xp)
        return to_numpy(tile.astype(xp.float64))



def rhs_rows(kernel: Kernel, X: Any, samples: Any) -> Any:
    """The right GEMM operand of the rows ``X[samples]`` (for :meth:`WorkingSet.columns_of`):
    row norms do not depend on the other rows, so these are the bits of the full operand's rows."""
    _check_kernel(kernel)
    X = as_float_matrix(X)
    idx = np.asarray(to_numpy(samples), dtype=np.int64)
    return _operand(kernel, X, get_namespace(X).asarray(idx), None, "rhs")


def pair_block(kernel: Kernel, X: Any, rows: Any, cols: Any) -> np.ndarray:
    """``K(x_{rows[i]}, x_{cols[j]})``, float64 NumPy: the bits of :meth:`WorkingSet.block`,
    from the requested rows only (no operand of the whole of X is built)."""
    _check_kernel(kernel)
    X = as_float_matrix(X)
    xp = get_namespace(X)
    r = np.asarray(to_numpy(rows), dtype=np.int64)
    c = np.asarray(to_numpy(cols), dtype=np.int64)
    if r.size == 0 or c.size == 0:
        return np.zeros((r.size, c.size))
    if r.shape == c.shape and np.array_equal(r, c):  # a square block of some samples: gather them once
        Xi = X[xp.asarray(r)]
        sqi = sq_norms(Xi) if kernel.uses_sq else None
        kernel.check_range(Xi, sq=sqi)
        L, R = kernel._lhs(Xi, sqi), kernel._rhs(Xi, sqi)
    else:
        L = _operand(kernel, X, xp.asarray(r), None, "lhs")
        R = _operand(kernel, X, xp.asarray(c), None, "rhs")
    with pinned_blas():
        tile = xp.matmul(L, R.T)
    scratch = xp.empty_like(tile) if kernel.needs_scratch else None
    kernel._finish(tile, scratch, xp)
    return to_numpy(tile.astype(xp.float64))
