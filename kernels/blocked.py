"""Blocked sums of kernel values: the N² pass without an N × N matrix.

Each routine walks a fixed grid of tiles. A tile is one GEMM in the data's dtype
(float32 data → float32 GEMM and exp) followed by an in-place finish; its rows
are then summed with float64 accumulation and added, column tile after column
tile in a fixed order, into float64 accumulators. On the host, row tiles are
spread over worker threads with BLAS pinned to one thread (see ``_parallel``).
The grid depends only on the shapes, the dtype and the array library, never on
the number of threads, so results are the same bytes run after run, for any
``n_jobs`` and any BLAS thread setting.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import numpy as np

from schedgen.errors import ParameterError

from ._parallel import rows_done, run_tasks
from .backend import get_namespace, to_numpy
from .families import Kernel, as_float_matrix, sq_norms

__all__ = ["RowSums", "RowSumPlan", "row_sums", "plan_row_sums", "row_block_sums", "checked_row_sums",
           "block_sums", "gram", "default_blocks", "GRAM_TILE"]

# Tile shapes (rows, cols), chosen by measurement on a 2-core AVX-512 host with
# OpenBLAS (one worker thread per core, single-threaded GEMM): a 2 MiB tile stays
# in cache between the GEMM and the elementwise passes (exp, row sums); shapes
# from 128 × 1024 to 512 × 2048 measured within noise of each other. GPU tiles
# are large (64 MiB) to amortise kernel launches.
_HOST_BLOCKS = {4: (256, 2048), 8: (256, 1024)}
_DEVICE_BLOCKS = {4: (2048, 8192), 8: (2048, 4096)}
#: Elements per row chunk of :func:`gram` (2 MiB of float32).
GRAM_TILE = 1 << 19


class RowSums(NamedTuple):
    """Row sums of a kernel matrix; both float64 NumPy arrays of shape (n_samples,).

    ``s[i] = Σ_j K(x_i, x_j)`` (all j, diagonal included);
    ``neg[i] = Σ_{j≠i} min(K(x_i, x_j), 0)``.
    """

    s: np.ndarray
    neg: np.ndarray


def default_blocks(dtype: Any, *, device: bool = False) -> tuple[int, int]:
    """The (block_rows, block_cols) tile shape used when none is given."""
    table = _DEVICE_BLOCKS if device else _HOST_BLOCKS
    return table[np.dtype(dtype).itemsize]


def _block_size(value: Any, default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ParameterError(f"{what} must be a positive integer or None, got {value!r}")
    return int(value)


def _check_kernel(kernel: Any) -> None:
    if not isinstance(kernel, Kernel):
        raise ParameterError(
            f"kernel must be a schedgen.kernels kernel (RBF, Polynomial, see make_kernel), got {type(kernel).__name__}"
        )


def _indices(idx: Any, n: int, xp, what: str) -> Any:
    if get_namespace(idx) is not xp:
        idx = xp.asarray(to_numpy(idx))
    idx = xp.asarray(idx)
    if idx.ndim != 1:
        raise ParameterError(f"{what} must be a 1-D array of sample indices, got ndim={idx.ndim}")
    if idx.size == 0:
        return idx.astype(xp.int64)
    if idx.dtype.kind not in "iu":
        raise ParameterError(f"{what} must hold integer sample indices, got dtype {idx.dtype}")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= n:
        raise ParameterError(f"{what} must lie in [0, {n}) (N={n}), got values from {lo} to {hi}")
    return idx.astype(xp.int64, copy=False)


def _given_sq(kernel: Kernel, X: Any, sq: Any) -> Any:
    """A caller's full-length ``sq`` (validated, in X's dtype), or None."""
    if sq is None or not kernel.uses_sq:
        return None
    xp = get_namespace(X)
    sq = xp.asarray(sq)
    if sq.shape != (X.shape[0],):
        raise ParameterError(f"sq must have shape ({X.shape[0]},) to match X, got {tuple(sq.shape)}")
    return sq.astype(X.dtype, copy=False)


def _operand(kernel: Kernel, X: Any, idx: Any, sq: Any, side: str) -> Any:
    """``_lhs``/``_rhs`` of the rows ``X[idx]``; norms from ``sq`` or of the gathered rows only.

    The rows are range-checked first (:meth:`Kernel.check_range`): a product of two
    operands that each passed cannot overflow."""
    Xi = X[idx]
    sqi = None
    if kernel.uses_sq:
        # Row norms do not depend on the other rows: same bits as sq_norms(X)[idx].
        sqi = sq[idx] if sq is not None else sq_norms(Xi)
    kernel.check_range(Xi, sq=sqi)
    return kernel._lhs(Xi, sqi) if side == "lhs" else kernel._rhs(Xi, sqi)


def _blocks(X: Any, xp, block_rows: Any, block_cols: Any) -> tuple[int, int]:
    dr, dc = default_blocks(X.dtype, device=xp is not np)
    return (
        _block_size(block_rows, dr, "block_rows"),
        _block_size(block_cols, dc, "block_cols"),
    )


def _tile_sums(kernel, L, R, acc, neg, xp, bc, diag_offset, state):
    """``acc[r] += Σ_j K`` (and ``neg[r] += Σ_j min(K, 0)``) for the rows r of L.

    Walks the column tiles of R (``bc`` columns each) in order. ``diag_offset`` is
    None, or the int o such that row r of L and column r + o of R are the same
    sample (that pair is left out of ``neg``). ``state`` holds the flat tile
    buffer (and scratch) of at least ``len(L) * bc`` elements.
    """
    n_rows, n_cols = L.shape[0], R.shape[0]
    buf, scratch = state
    f64 = xp.float64
    for j0 in range(0, n_cols, bc):
        j1 = min(j0 + bc, n_cols)
        shape = (n_rows, j1 - j0)
        size = shape[0] * shape[1]
        # Reshaping a prefix of one flat buffer keeps every tile, edges included, C-contiguous.
        tile = buf[:size].reshape(shape)
        xp.matmul(L, R[j0:j1].T, out=tile)
        kernel._finish(tile, None if scratch is None else scratch[:size].reshape(shape), xp)
        acc += xp.sum(tile, axis=1, dtype=f64)
        if neg is None:
            continue
        if xp is np and tile.min() >= 0:
            continue  # no negative value: the tile adds exactly 0 to neg
        xp.minimum(tile, 0, out=tile)
        if diag_offset is not None:
            # Columns j = r + o for a row r of this tile are the pairs (i, i).
            lo = max(diag_offset, j0)
            hi = min(n_rows + diag_offset, j1)
            if lo < hi:
                cols = xp.arange(lo, hi)
                tile[cols - diag_offset, cols - j0] = 0
        neg += xp.sum(tile, axis=1, dtype=f64)


def _state_maker(kernel, xp, dtype, size):
    def make():
        buf = xp.empty(size, dtype=dtype)
        return buf, (xp.empty_like(buf) if kernel.needs_scratch else None)

    return make


def _execute(xp, fn, items, make_state, n_jobs):
    """Host: tasks over worker threads with BLAS pinned to one thread. Device: in order."""
    if xp is np:
        run_tasks(fn, items, make_state, n_jobs)
        return
    state = make_state()
    for item in items:
        fn(item, state)


def _check_n_jobs(n_jobs: Any) -> int | None:
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or int(n_jobs) < 1:
        raise ParameterError(f"n_jobs must be a positive integer or None, got {n_jobs!r}")
    return int(n_jobs)


class RowSumPlan(NamedTuple):
    """The operands and tile grid of one row-sum pass (:func:`plan_row_sums`).

    Everything a worker needs to compute any row block's sums with the bits of
    :func:`row_sums`: a distributed engine ships the plan once and calls
    :func:`row_block_sums` on it for the blocks it is given.
    """

    kernel: Kernel
    L: Any  #: ``kernel._lhs`` of every row, in X's dtype
    R: Any  #: ``kernel._rhs`` of every row, in X's dtype
    block_rows: int
    block_cols: int

    @property
    def n_samples(self) -> int:
        return int(self.L.shape[0])

    def block_starts(self) -> range:
        """The first row of every row block, in order (the grid of :func:`row_sums`)."""
        return range(0, self.n_samples, self.block_rows)

    def make_state(self):
        """One worker's tile buffer (and scratch), as :func:`row_sums`'s workers have."""
        n = self.n_samples
        xp = get_namespace(self.L)
        return _state_maker(self.kernel, xp, self.L.dtype, min(self.block_rows, n) * min(self.block_cols, n))()


def plan_row_sums(
    kernel: Kernel, X: Any, *, block_rows: int | None = None, block_cols: int | None = None
) -> RowSumPlan:
    """Check X and the kernel and compute the operands of :func:`row_sums` (O(N·D)).

    Raises
    ------
    ParameterError
        For non-finite X, and for features or parameters on which the kernel overflows
        X's dtype (:meth:`Kernel.check_range`).
    """
    _check_kernel(kernel)
    X = as_float_matrix(X)
    xp = get_namespace(X)
    if not bool(xp.isfinite(X).all()):
        raise ParameterError("X must hold finite values only, got NaN or infinity")
    br, bc = _blocks(X, xp, block_rows, block_cols)
    sq = sq_norms(X) if kernel.uses_sq else None
    kernel.check_range(X, sq=sq)
    return RowSumPlan(kernel, kernel._lhs(X, sq), kernel._rhs(X, sq), br, bc)


def row_block_sums(plan: RowSumPlan, i0: int, state: Any = None) -> tuple[Any, Any]:
    """``(s, neg)`` of the row block starting at row ``i0`` (a multiple of ``plan.block_rows``),
    bitwise what :func:`row_sums` computes for those rows; ``neg`` is None for kernels that
    cannot be negative. ``state``: a buffer from ``plan.make_state()`` to reuse (else one is made).
    """
    br, n = plan.block_rows, plan.n_samples
    if i0 % br or not 0 <= i0 < n:
        raise ParameterError(f"i0 must be a multiple of block_rows={br} in [0, {n}), got {i0}")
    xp = get_namespace(plan.L)
    i1 = min(i0 + br, n)
    s = xp.zeros(i1 - i0, dtype=xp.float64)
    neg = None if plan.kernel.nonnegative else xp.zeros(i1 - i0, dtype=xp.float64)
    _tile_sums(plan.kernel, plan.L[i0:i1], plan.R, s, neg, xp, plan.block_cols, i0,
               plan.make_state() if state is None else state)
    return s, neg


def checked_row_sums(plan: RowSumPlan, s: Any, neg: Any) -> RowSums:
    """The pass's result as :class:`RowSums` on the host (``neg`` None: zeros), refusing
    non-finite sums with the one-line error of :func:`row_sums`."""
    n = plan.n_samples
    s, neg = to_numpy(s), np.zeros(n) if neg is None else to_numpy(neg)
    # O(N) on the results: check_range makes this unreachable for RBF and Polynomial,
    # but an overflowed sum must never reach the selection loop as if it were data.
    if not (np.isfinite(s).all() and np.isfinite(neg).all()):
        bad = int(np.count_nonzero(~np.isfinite(s)) + np.count_nonzero(~np.isfinite(neg)))
        raise ParameterError(
            f"kernel row sums must be finite, got {bad} NaN or infinite values with {plan.kernel.params()} "
            f"on {plan.L.dtype} features: the kernel overflows; rescale the features or change the kernel's parameters"
        )
    return RowSums(s, neg)


def row_sums(
    kernel: Kernel,
    X: Any,
    *,
    block_rows: int | None = None,
    block_cols: int | None = None,
    n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RowSums:
    """Row sums of the full kernel matrix, in tiles (never N × N in memory).

    ``s[i] = Σ_j K(x_i, x_j)`` over all j (diagonal included) and
    ``neg[i] = Σ_{j≠i} min(K(x_i, x_j), 0)`` (all zeros, without any work, for
    kernels that cannot be negative such as RBF).

    Each row block (``block_rows`` rows from a multiple of ``block_rows``) is summed
    over the column tiles in order, whoever computes it: :func:`plan_row_sums` and
    :func:`row_block_sums` give the same bits block by block to a distributed engine.

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
        NumPy or CuPy; tiles are computed in X's dtype (float32 → float32 GEMM).
    block_rows, block_cols : int, optional
        Tile shape; defaults from :func:`default_blocks`. The tile shape fixes the
        summation order, hence the exact bits of the result.
    n_jobs : int, optional
        Host worker threads (default: the usable CPUs). Does not change the result.
    progress : callable(rows_done, n_samples), optional
        Called after each row block (from the worker that finished it, under a lock).

    Returns
    -------
    RowSums
        ``(s, neg)``, float64 NumPy arrays of shape (n_samples,).

    Raises
    ------
    ParameterError
        For non-finite X; for features or parameters on which the kernel overflows
        X's dtype (:meth:`Kernel.check_range`, before any tile); and, as a last guard,
        for row sums that are not finite.
    """
    n_jobs = _check_n_jobs(n_jobs)
    plan = plan_row_sums(kernel, X, block_rows=block_rows, block_cols=block_cols)
    kernel, L, R, br, bc = plan
    xp = get_namespace(L)
    n = plan.n_samples
    s = xp.zeros(n, dtype=xp.float64)
    neg = None if kernel.nonnegative else xp.zeros(n, dtype=xp.float64)

    advance = rows_done(progress, n)

    def task(i0, state):
        i1 = min(i0 + br, n)
        _tile_sums(kernel, L[i0:i1], R, s[i0:i1], None if neg is None else neg[i0:i1], xp, bc, i0, state)
        advance(i1 - i0)

    _execute(xp, task, plan.block_starts(), plan.make_state, n_jobs)
    return checked_row_sums(plan, s, neg)


def block_sums(
    kernel: Kernel,
    X: Any,
    rows: Any,
    cols: Any,
    *,
    sq: Any = None,
    block_rows: int | None = None,
    block_cols: int | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """``out[i] = Σ_{j ∈ cols} K(x_{rows[i]}, x_j)``, in tiles, float64 accumulation.

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
    rows, cols : integer arrays of shape (n_rows,) and (n_cols,)
        Indices into X (NumPy index arrays are accepted with CuPy X).
    sq : array of shape (n_samples,), optional
        ``sq_norms(X)``, to avoid recomputing it in a loop.
    block_rows, block_cols : int, optional
        Tile shape (see :func:`row_sums`).
    n_jobs : int, optional
        Host worker threads (default: the usable CPUs). Does not change the result.

    Returns
    -------
    ndarray of shape (n_rows,), float64 (NumPy).
    """
    _check_kernel(kernel)
    X = as_float_matrix(X)
    xp = get_namespace(X)
    n_jobs = _check_n_jobs(n_jobs)
    n = X.shape[0]
    rows = _indices(rows, n, xp, "rows")
    cols = _indices(cols, n, xp, "cols")
    br, bc = _blocks(X, xp, block_rows, block_cols)
    sq = _given_sq(kernel, X, sq)
    nr, nc = rows.shape[0], cols.shape[0]
    out = xp.zeros(nr, dtype=xp.float64)
    if nr == 0 or nc == 0:
        return to_numpy(out)
    R = _operand(kernel, X, cols, sq, "rhs")

    def task(i0, state):
        L = _operand(kernel, X, rows[i0 : i0 + br], sq, "lhs")
        _tile_sums(kernel, L, R, out[i0 : i0 + br], None, xp, bc, None, state)

    size = min(br, nr) * min(bc, nc)
    _execute(xp, task, range(0, nr, br), _state_maker(kernel, xp, X.dtype, size), n_jobs)
    return to_numpy(out)


def gram(kernel: Kernel, X: Any, rows: Any, cols: Any, *, sq: Any = None, n_jobs: int | None = None) -> np.ndarray:
    """The dense block ``G[i, j] = K(x_{rows[i]}, x_{cols[j]})`` as float64 NumPy.

    Computed in X's dtype and cast to float64, in row chunks of a fixed size
    (about :data:`GRAM_TILE` elements each); meant for the blocks of the
    selection loop, not for N × N.

    Parameters
    ----------
    kernel : Kernel
    X : array of shape (n_samples, n_features)
    rows, cols : integer arrays of shape (n_rows,) and (n_cols,)
    sq : array of shape (n_samples,), optional
        ``sq_norms(X)``, to avoid recomputing it in a loop.
    n_jobs : int, optional
        Host worker threads (default: the usable CPUs). Does not change the result.

    Returns
    -------
    ndarray of shape (n_rows, n_cols), float64.
    """
    _check_kernel(kernel)
    X = as_float_matrix(X)
    xp = get_namespace(X)
    n_jobs = _check_n_jobs(n_jobs)
    n = X.shape[0]
    rows = _indices(rows, n, xp, "rows")
    cols = _indices(cols, n, xp, "cols")
    sq = _given_sq(kernel, X, sq)
    nr, nc = rows.shape[0], cols.shape[0]
    out = xp.empty((nr, nc), dtype=xp.float64)
    if nr == 0 or nc == 0:
        return to_numpy(out)
    R = _operand(kernel, X, cols, sq, "rhs")
    chunk = max(1, GRAM_TILE // nc)

    def task(i0, state):
        L = _operand(kernel, X, rows[i0 : i0 + chunk], sq, "lhs")
        buf, scratch = state
        shape = (L.shape[0], nc)
        size = shape[0] * shape[1]
        tile = buf[:size].reshape(shape)
        xp.matmul(L, R.T, out=tile)
        kernel._finish(tile, None if scratch is None else scratch[:size].reshape(shape), xp)
        out[i0 : i0 + chunk] = tile

    size = min(chunk, nr) * nc
    _execute(xp, task, range(0, nr, chunk), _state_maker(kernel, xp, X.dtype, size), n_jobs)
    return to_numpy(out)
