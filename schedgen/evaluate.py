"""Scoring a batch order: MMD^2 between the scheduled prefix and the rest, after each batch.

Used to compare a schedule with a seeded random order of the same data
(``schedgen plot``, ``benchmarks/mmd_scale.py``), independently of how the schedule
was built. The score is the one the selection loop records (``batch_mmd2``): the
same formula (``schedgen.mmd2``), the same kernel values and the same float64
accumulation, so a schedule's own order scores as recorded.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError
from .kernels import WorkingSet, worker_pool
from .mmd2 import grow_prefix_sum, split_mmd2

__all__ = ["prefix_mmd2"]


def _check_order(indices, batch_offsets, n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(indices)
    off = np.asarray(batch_offsets)
    if idx.ndim != 1 or idx.shape[0] != n or not (n == 0 or idx.dtype.kind in "iu"):
        raise ParameterError(
            f"indices must be a 1-D integer array of the {n} samples (one epoch), "
            f"got dtype {idx.dtype} and shape {idx.shape}"
        )
    idx = idx.astype(np.int64, copy=False)
    if not np.array_equal(np.sort(idx), np.arange(n)):
        raise ParameterError(f"indices must be a permutation of 0..{n - 1} (one epoch), got repeated or out-of-range samples")
    if off.ndim != 1 or off.shape[0] < 2 or off.dtype.kind not in "iu":
        raise ParameterError(f"batch_offsets must be a 1-D integer array of at least 2 entries, got dtype {off.dtype} and shape {off.shape}")
    off = off.astype(np.int64, copy=False)
    if off[0] != 0 or off[-1] != n or np.any(np.diff(off) <= 0):
        raise ParameterError(
            f"batch_offsets must increase strictly from 0 to N={n} (non-empty batches), "
            f"got {off[0]} .. {off[-1]} with {int(np.sum(np.diff(off) <= 0))} empty or negative batch(es)"
        )
    return idx, off


def prefix_mmd2(
    X, kernel, indices: np.ndarray, batch_offsets: np.ndarray, s_tot: np.ndarray, *, n_jobs: int | None = None
) -> np.ndarray:
    """MMD²(A_t, D \\ A_t) for every prefix A_t = batches 0..t of a one-epoch order.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    kernel : a ``schedgen.kernels`` kernel
    indices : array of shape (n_samples,)
        A permutation of the samples (one epoch).
    batch_offsets : array of shape (n_batches + 1,)
        Strictly increasing, from 0 to n_samples.
    s_tot : array of shape (n_samples,)
        ``sum_j K_ij`` over all samples (``row_sums``).
    n_jobs : int, optional
        Host worker threads for the kernel blocks (default: the usable CPUs). Does
        not change the result.

    Returns
    -------
    array of shape (n_batches,), float64; NaN where D \\ A_t is empty.

    Notes
    -----
    Exactly the selection loop's bookkeeping (``schedgen.methods.selection``), with the batches
    given instead of chosen: ``s_A(i) = sum_{j in A} K_ij`` is kept for the samples
    not yet reached, in a :class:`~schedgen.kernels.WorkingSet` that loses each batch
    as the loop's does, and after every batch::

        S_AA += 2 sum_{i in B} s_A(i) + sum_{B x B} K
        MMD^2 = S_AA/a^2 - 2 S_AR/(a b) + S_RR/b^2,  S_AR = sum_R s_A,  S_RR = sum_R s_tot - S_AR

    (``schedgen.mmd2.split_mmd2``, from the rows of R: precise near the end, where R is
    small). About N^2/2 kernel values over a whole epoch, never an N x N array. A
    schedule's own order reproduces its recorded ``batch_mmd2`` to float64 rounding,
    bit for bit when its solver's kernel columns were not reused for the update (they
    come from GEMMs of other shapes, whose float32 rounding may differ in the last bit).
    """
    s_tot = np.asarray(s_tot, dtype=np.float64)
    n = int(s_tot.shape[0])
    if X.shape[0] != n:
        raise ParameterError(f"s_tot must have one entry per sample of X ({X.shape[0]}), got {n}")
    indices, batch_offsets = _check_order(indices, batch_offsets, n)
    out = np.empty(len(batch_offsets) - 1)
    with worker_pool(n_jobs):
        ws = WorkingSet(kernel, X, n_jobs=n_jobs)
        Q = np.arange(n, dtype=np.int64)  # the samples not reached yet, ascending (= ws.ids)
        sA = np.zeros(n)  # s_A(i) for i in Q
        S_AA = 0.0
        for t in range(len(batch_offsets) - 1):
            B = indices[batch_offsets[t] : batch_offsets[t + 1]]
            pos = np.searchsorted(Q, B)
            keep = np.ones(len(Q), dtype=bool)
            keep[pos] = False
            S_AA = grow_prefix_sum(S_AA, sA[pos], ws.block(B, B))
            rest = Q[keep]
            if len(rest):
                inc, _ = ws.column_sums(B)  # Σ_{b∈B} K(b, i), summed in batch order, as the loop does
                sA = sA[keep] + inc[keep]
            else:
                sA = sA[keep]
            ws.remove(pos)
            Q = rest
            out[t] = split_mmd2(S_AA, sA, s_tot[rest], n - len(rest))
    return out
