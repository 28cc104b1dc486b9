"""The solver interface, the three registered solvers and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ...errors import ParameterError
from ._local import _greedy, _swap
from ._lp import solve_lp_relaxation
from ._problem import BatchProblem, _check_problem


@runtime_checkable
class Solver(Protocol):
    """A batch solver: ``solver(problem) -> k distinct int64 positions`` (selection order)."""

    name: str

    def __call__(self, problem: BatchProblem) -> np.ndarray: ...


@dataclass(frozen=True)
class LPSolver:
    """The paper's LP relaxation (eq. 10), solved exactly, rounded to the k largest m.

    Ties in the rounding: larger ``m`` (9 decimals) first, then smaller ``a_i``, then
    smaller position. See :func:`solve_lp_relaxation`.
    """

    name: str = "lp"
    initial_size: int | None = None
    certify_half: bool = True

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return solve_lp_relaxation(
            problem, initial_size=self.initial_size, certify_half=self.certify_half
        ).positions


@dataclass(frozen=True)
class GreedySolver:
    """Greedy on ``mᵀZm``: add ``argmin_j Z_jj + 2 Σ_{i∈S} K_ij``, ties by smaller position.

    Scores are exact for every sample at every step (``g`` accumulated in selection
    order, as greedy on the dense matrix does), so the result is greedy on the dense
    matrix: one full column per step (see ``_greedy``).
    """

    name: str = "greedy"

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return _greedy(problem)[0]


@dataclass(frozen=True)
class SwapSolver:
    """Greedy, then 1-swap local search until no single swap improves.

    Visits the batch slots in turn (selection order, cyclically); at each visit the
    slot's sample ``b`` is replaced by the ``j`` of least
    ``Δ = Z_jj - Z_bb + 2(g_j - K_bj) - 2(g_b - K_bb)`` (ties by smaller ``j`` position)
    when that lowers the objective by more than ``1e-12 × scale`` (``scale`` = ``|obj|``
    plus the absolute terms of it); the added sample takes ``b``'s slot. Stops after k
    consecutive visits without a swap (a 1-swap local optimum) or after ``max_swaps``
    (default ``10k``) swaps. See ``_swap``.
    """

    name: str = "swap"
    max_swaps: int | None = None

    def __call__(self, problem: BatchProblem) -> np.ndarray:
        _check_problem(problem)
        return _swap(problem, self.max_swaps)


SOLVERS: dict[str, Solver] = {
    "lp": LPSolver(),
    "greedy": GreedySolver(),
    "swap": SwapSolver(),
}


#: ``swap``: the lowest MMD² of the three, at a cost that is fine offline. Measured
#: (README, benchmarks/solver_quality.py and mmd_scale.py): against the brute-forced
#: optimum swap is 1.006x on average, greedy 1.025x, the paper's LP 1.34x; over a whole
#: SVHN-shaped schedule (N = 73,257, k = 50, 2 cores) swap takes about 3 minutes, greedy
#: 50 s, lp 15 s, and lp's mean MMD² is above a random order's. ``--solver lp`` reproduces
#: the paper.
DEFAULT_SOLVER = "swap"


def get_solver(name: str | None = None) -> Solver:
    """The registered solver called ``name`` (``None``: :data:`DEFAULT_SOLVER`).

    Parameters
    ----------
    name : str or None, default None
        A key of :data:`SOLVERS`.

    Returns
    -------
    Solver

    Raises
    ------
    ParameterError
        On an unknown name, listing the registered ones.
    """
    if name is None:
        name = DEFAULT_SOLVER
    if not isinstance(name, str) or name not in SOLVERS:
        raise ParameterError(
            f"unknown solver {name!r}; expected one of {', '.join(sorted(SOLVERS))}"
        )
    return SOLVERS[name]
