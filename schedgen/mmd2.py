"""MMD² between a scheduled prefix A and the rest R = D \\ A, from running kernel sums.

One formula for the selection loop (``schedgen.methods.selection``) and for scoring any
batch order (``schedgen.evaluate``, hence ``schedgen plot`` and the benchmarks), so
that a schedule and a random order are scored alike. NumPy only, below every layer
that uses it. With ``s_A(i) = sum_{j in A} K_ij`` and ``s_tot(i) = sum_{j in D} K_ij``::

    MMD²(A, R) = S_AA/a² - 2 S_AR/(a b) + S_RR/b²
    S_AR = sum_{i in R} s_A(i)        S_RR = sum_{i in R} s_tot(i) - S_AR

S_AR and S_RR come from the rows of R, not from ``T - 2 S_AD + S_AA`` (T = sum
s_tot, S_AD = sum_{i in A} s_tot(i)): near the end R is small and that difference
of O(N²) sums loses ~N²/b² of the relative precision (s_tot and s_A are float32
kernel values from different GEMMs, which need not share their rounding), this one
~N/b.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mmd2_from_sums", "grow_prefix_sum", "split_mmd2"]


def mmd2_from_sums(S_AA: float, S_AR: float, S_RR: float, a: int, b: int) -> float:
    """MMD² between A (a samples) and R (b samples) from the kernel sums over A x A,
    A x R and R x R: ``S_AA/a² - 2 S_AR/(a b) + S_RR/b²``; NaN when a or b is 0
    (MMD is undefined with one side empty)."""
    if a == 0 or b == 0:
        return float("nan")
    return S_AA / a**2 - 2.0 * S_AR / (a * b) + S_RR / b**2


def grow_prefix_sum(S_AA: float, sA_B: np.ndarray, K_BB: np.ndarray) -> float:
    """S_AA of A ∪ B from S_AA of A: ``S_AA + (2 sum_{i in B} s_A(i) + sum K_BB)``.

    ``sA_B`` : shape (|B|,), s_A(i) for i in B (A before B is added);
    ``K_BB`` : shape (|B|, |B|), the batch's own kernel block.
    """
    return S_AA + (2.0 * float(np.sum(sA_B)) + float(np.sum(K_BB)))


def split_mmd2(S_AA: float, sA_R: np.ndarray, stot_R: np.ndarray, a: int) -> float:
    """MMD²(A, R) from S_AA and the rows of R (the precise form, see the module).

    Parameters
    ----------
    S_AA : float
        ``sum_{i, j in A} K_ij``.
    sA_R, stot_R : arrays of shape (b,), float64
        ``s_A(i)`` and ``s_tot(i)`` for i in R, in the same order.
    a : int
        |A|.
    """
    S_AR = float(np.sum(sA_R))
    S_RR = float(np.sum(stot_R)) - S_AR
    return mmd2_from_sums(S_AA, S_AR, S_RR, a, len(sA_R))
