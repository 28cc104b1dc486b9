"""The HiGHS wrapper: a silent instance, a Ctrl-C-interruptible run, one LP solve.

Silence: highspy's Python ``Highs`` class registers its callback dispatcher
(``setCallback``) in its constructor, before any option can be set, and HiGHS writes
its banner ("Running HiGHS ...") to stdout at the first log line of an instance whose
``output_flag`` is on (the default) -- that ``setCallback``. ``highspy._Highs`` (in
highspy's ``__all__``) is the pybind11 binding of the C++ ``Highs`` class underneath,
so the C++ order is available there: ``output_flag`` off first, callbacks after, and
HiGHS writes nothing. No file descriptor is redirected. HiGHS reads no environment
variable for its output, and ``HighsOptions`` can only be passed to an existing
instance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp


class LPSolveError(RuntimeError):
    """HiGHS did not return an optimal solution (an internal failure, not bad input)."""


def _new_highs() -> highspy._Highs:
    """A silent HiGHS instance that solves with the simplex method.

    ``output_flag`` is set before anything that logs (see the module docstring).
    """
    h = highspy._Highs()
    h.setOptionValue("output_flag", False)
    # Simplex: a basic (vertex) solution with duals consistent with its basis.
    h.setOptionValue("solver", "simplex")
    return h


def _native_run(h: highspy._Highs) -> highspy.HighsStatus:
    """``h.run()``: the one native call, in the solver thread (a seam for tests)."""
    return h.run()


_INTERRUPT_CALLBACKS = (
    highspy.cb.HighsCallbackType.kCallbackSimplexInterrupt,
    highspy.cb.HighsCallbackType.kCallbackIpmInterrupt,
)


def _run_interruptible(h: highspy._Highs, poll: float = 0.1) -> highspy.HighsStatus:
    """``h.run()`` that Ctrl-C stops.

    A native call holds the main thread, and Python runs its SIGINT handler only
    between bytecodes, so a long ``run()`` on the main thread ignores Ctrl-C until it
    returns. HiGHS runs here in a worker thread while the calling thread waits in short
    interruptible joins; a KeyboardInterrupt there sets a flag that HiGHS's simplex and
    IPM interrupt callbacks read (``kCallbackSimplexInterrupt``/``kCallbackIpmInterrupt``,
    called every few iterations), the solve stops within an iteration, and the
    KeyboardInterrupt is raised again with a message. Not highspy's own
    ``HandleKeyboardInterrupt``: that prints, exits the process after five presses, and
    keeps its solver lock on the class, which serialises solves of different threads.
    """
    stop = threading.Event()

    def interrupt(callback_type, message, data_out, data_in, user_data) -> None:
        if stop.is_set() and data_in is not None:
            data_in.user_interrupt = True

    h.setCallback(interrupt, None)
    for kind in _INTERRUPT_CALLBACKS:
        h.startCallback(kind)
    out: dict = {}
    # Waits on an event, not on Thread.join: on Python 3.11 a Ctrl-C inside
    # join(timeout) marks the still-running thread as stopped (bpo-45274's handler), so
    # a second join() returned at once and a process exiting then aborted in HiGHS.
    done = threading.Event()

    def target() -> None:
        try:
            out["status"] = _native_run(h)
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="schedgen-highs", daemon=True).start()
    try:
        while not done.wait(poll):
            pass
    except KeyboardInterrupt:
        stop.set()
        while True:  # HiGHS stops within an iteration; more Ctrl-Cs meanwhile must not leave it running
            try:
                done.wait()
                break
            except KeyboardInterrupt:
                continue
        raise KeyboardInterrupt("interrupted while HiGHS was solving an LP") from None
    if "error" in out:
        raise out["error"]
    return out["status"]


@dataclass(frozen=True)
class _LPSolution:
    x: np.ndarray
    row_dual: np.ndarray
    col_dual: np.ndarray
    value: float


def _solve_lp(cost, lower, upper, A: sp.csr_matrix, row_lower, row_upper) -> _LPSolution:
    """Minimise ``costᵀx`` s.t. ``row_lower <= A x <= row_upper``, ``lower <= x <= upper``.

    HiGHS convention (checked in tests): ``row_dual = ∂ value / ∂ rhs`` and
    ``col_dual = cost - Aᵀ row_dual`` (reduced costs).
    """
    A = sp.csr_matrix(A, dtype=np.float64)
    A.sum_duplicates()
    A.sort_indices()
    lp = highspy.HighsLp()
    lp.num_col_ = A.shape[1]
    lp.num_row_ = A.shape[0]
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_ = np.asarray(lower, dtype=np.float64)
    lp.col_upper_ = np.asarray(upper, dtype=np.float64)
    lp.row_lower_ = np.asarray(row_lower, dtype=np.float64)
    lp.row_upper_ = np.asarray(row_upper, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_ = A.shape[1]
    lp.a_matrix_.num_row_ = A.shape[0]
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data
    h = _new_highs()
    status = h.passModel(lp)
    if status != highspy.HighsStatus.kOk:
        raise LPSolveError(f"HiGHS rejected the LP model (status {status})")
    status = _run_interruptible(h)
    model_status = h.getModelStatus()
    if status != highspy.HighsStatus.kOk or model_status != highspy.HighsModelStatus.kOptimal:
        raise LPSolveError(
            f"HiGHS did not solve the LP to optimality: run status {status}, "
            f"model status {h.modelStatusToString(model_status)}"
        )
    sol = h.getSolution()
    return _LPSolution(
        x=np.array(sol.col_value, dtype=np.float64),
        row_dual=np.array(sol.row_dual, dtype=np.float64),
        col_dual=np.array(sol.col_dual, dtype=np.float64),
        value=float(h.getInfo().objective_function_value),
    )
