"""The result of the LP relaxation of one selection step, and its rounding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Decimals ``m`` is rounded to before ranking, so 0.4999999999 ties with 0.5.
_ROUND_DECIMALS = 9


@dataclass(frozen=True)
class LPRelaxation:
    """The solved LP relaxation of one selection step.

    Attributes
    ----------
    value : float
        Optimal value of the relaxation (eq. 10 relaxed; equal to the reduced form).
    m : array of shape (n,)
        An optimal ``m`` (zero outside ``candidates``).
    mu : float
        Dual of ``Σm = k`` (HiGHS: ``∂value/∂k``; the fast path: the μ of its
        certificate); the certificate is ``a_l >= mu`` for every ``l`` outside
        ``candidates``.
    candidates : array of int64
        The final candidate set C (the ``|C|`` smallest ``a``, ties by position; the
        fast path: the 2k samples with ``m = ½``).
    pair_rows : int
        Pair rows ``t_ij >= m_i + m_j - 1`` in the final model (0 on the fast path).
    solves : int
        HiGHS solves in total (0: the certified half-integral fast path).
    positions : array of shape (k,), int64
        The rounding: the ``k`` largest ``m`` (rounded to 9 decimals), ties by smaller
        ``a``, then smaller position; in that order.
    """

    value: float
    m: np.ndarray
    mu: float
    candidates: np.ndarray
    pair_rows: int
    solves: int
    positions: np.ndarray


def _round_lp(m: np.ndarray, a: np.ndarray, k: int) -> np.ndarray:
    key_m = np.round(m, _ROUND_DECIMALS)
    order = np.lexsort((np.arange(m.size), a, -key_m))
    return order[:k].astype(np.int64)
