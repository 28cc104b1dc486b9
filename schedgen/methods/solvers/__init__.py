"""Batch solvers: choose the next mini-batch B by minimising ``mᵀ Z m``.

One call answers one selection step of the MMD schedule (DESIGN.md §1): among the
``n`` unselected samples Q pick ``k`` positions minimising ``mᵀZm`` over binary ``m``
with ``Σm = k``. ``Z`` off the diagonal is the kernel ``K``; its diagonal carries the
linear terms and is built by the caller (exact factor-2 expansion or the paper's
literal coefficients -- not this module's business).

Solvers never see an ``n × n`` matrix. They read kernel values through
``BatchProblem.block(rows, cols)`` (small blocks) and ``BatchProblem.columns(cols)``
(full columns ``K(c, Q)``, one ``(n,)`` row per requested sample):

``lp``
    The paper's LP relaxation (eq. 10) solved exactly through its reduced form (``w``
    eliminated). Fast path: ``m = ½`` on the 2k smallest ``a``, accepted only with a
    dual certificate computed from one ``(2k × 2k)`` block; otherwise HiGHS on a
    candidate set grown until a reduced-cost certificate holds, with pair rows added
    lazily. ``2k > n`` is solved as its complement ``m' = 1 - m`` (the same LP with
    ``n - k < n/2``). Rounded to the ``k`` largest ``m``. HiGHS runs in a worker thread
    so that Ctrl-C stops it (``_run_interruptible``).
``greedy``
    Adds the sample of least objective increase ``Z_jj + 2 Σ_{i∈S} K_ij`` one at a time;
    identical (same positions, same order) to greedy on the dense matrix. k full
    columns per call.
``swap``
    ``greedy`` followed by 1-swap local search (slots visited in turn) until no single
    swap improves: k + (number of swaps) full columns per call.

All arrays are NumPy float64 (positions int64); HiGHS is the LP engine.

The test oracles (brute force, the full n²-variable LP) live in
``schedgen.methods.solvers._oracles``.
"""

from __future__ import annotations

from ._highs import LPSolveError
from ._certificate import _smallest as smallest
from ._certificate import certify_half
from ._local import SWAP_RTOL
from ._lp import reduced_lp_objective, solve_lp_relaxation
from ._problem import BatchProblem, objective
from ._registry import (
    DEFAULT_SOLVER,
    SOLVERS,
    GreedySolver,
    LPSolver,
    Solver,
    SwapSolver,
    get_solver,
)
from ._relaxation import LPRelaxation

__all__ = [
    "BatchProblem",
    "objective",
    "Solver",
    "LPSolver",
    "GreedySolver",
    "SwapSolver",
    "SOLVERS",
    "DEFAULT_SOLVER",
    "get_solver",
    "LPRelaxation",
    "solve_lp_relaxation",
    "reduced_lp_objective",
    "LPSolveError",
    "certify_half",
    "smallest",
    "SWAP_RTOL",
]
