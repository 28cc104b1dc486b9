"""Scoring a batch order: MMD^2 between the scheduled prefix and the rest, after each batch.

Used to compare a schedule with a seeded random order of the same data
(``schedgen plot``), independently of how the schedule was built.
"""

from __future__ import annotations

import numpy as np

from .kernels import block_sums, gram, sq_norms

__all__ = ["prefix_mmd2"]


def prefix_mmd2(X, kernel, indices: np.ndarray, batch_offsets: np.ndarray, s_tot: np.ndarray) -> np.ndarray:
    """MMD²(A_t, D \\ A_t) for every prefix A_t = batches 0..t of a one-epoch order.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    kernel : a ``schedgen.kernels`` kernel
    indices : array of shape (n_samples,)
        A permutation of the samples (one epoch).
    batch_offsets : array of shape (n_batches + 1,)
    s_tot : array of shape (n_samples,)
        ``sum_j K_ij`` over all samples (``row_sums``).

    Returns
    -------
    array of shape (n_batches,), float64; NaN where D \\ A_t is empty.

    Notes
    -----
    With S_AA = sum over A x A, S_AD = sum_{i in A} s_tot(i) and T = sum s_tot::

        MMD^2 = S_AA/a^2 - 2 (S_AD - S_AA)/(a b) + (T - 2 S_AD + S_AA)/b^2

    S_AA grows by 2 sum_{i in B, j in P} K_ij + sum_{B x B} K per batch: about N^2/2
    kernel values over a whole epoch, never an N x N array.
    """
    n = int(s_tot.shape[0])
    sq = sq_norms(X)
    T = float(np.sum(s_tot))
    S_AA = S_AD = 0.0
    out = np.empty(len(batch_offsets) - 1)
    for t in range(len(batch_offsets) - 1):
        P = indices[: batch_offsets[t]]
        B = indices[batch_offsets[t] : batch_offsets[t + 1]]
        cross = float(np.sum(block_sums(kernel, X, B, P, sq=sq))) if len(P) else 0.0
        S_AA += 2.0 * cross + float(np.sum(gram(kernel, X, B, B, sq=sq)))
        S_AD += float(np.sum(s_tot[B]))
        a = int(batch_offsets[t + 1])
        b = n - a
        if b == 0:
            out[t] = np.nan
            continue
        out[t] = S_AA / a**2 - 2.0 * (S_AD - S_AA) / (a * b) + (T - 2.0 * S_AD + S_AA) / b**2
    return out
