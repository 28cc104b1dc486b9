"""Host threading for the blocked routines: single-threaded BLAS, our own tile workers.

OpenBLAS does not give the same bits for one GEMM run with 1 thread and with 2
(its threaded driver walks the product in another order). To make results
independent of the BLAS thread setting, the host routines pin BLAS to one
thread while they run (through threadpoolctl, already a dependency of
scikit-learn; imported lazily and optional) and spread a fixed grid of tiles
over Python threads instead. Which thread computes a tile never changes the
tile's bits, so results are also independent of the number of workers. It is
also faster on small machines: the elementwise passes (exp, sums), which NumPy
runs on one core, now run on every core, and no BLAS thread spins while they do.

Without threadpoolctl the tiles run in order on the calling thread and BLAS
keeps its own threads: results are then deterministic for a fixed BLAS thread
count only.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

__all__ = ["usable_cpus", "n_workers", "pinned_blas", "run_tasks", "can_pin_blas", "worker_pool"]

_lock = threading.Lock()
_depth = 0
_limiter = None
_controller: Any = None
_controller_loaded = False
# The pool kept alive by ``worker_pool`` in this thread: ``.pool = (executor, workers)``.
_local = threading.local()
_DONE = object()


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _get_controller():
    global _controller, _controller_loaded
    if not _controller_loaded:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional

            _controller = ThreadpoolController()
        except Exception:  # not installed, or no introspectable BLAS
            _controller = None
        _controller_loaded = True
    return _controller


def can_pin_blas() -> bool:
    """Whether BLAS can be pinned to one thread (threadpoolctl importable)."""
    return _get_controller() is not None


@contextlib.contextmanager
def pinned_blas():
    """Run the body with host BLAS limited to one thread (no-op without threadpoolctl).

    Re-entrant and safe to nest from several Python threads: the first entry sets
    the limit, the last exit restores the previous setting.
    """
    global _depth, _limiter
    ctl = _get_controller()
    if ctl is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _limiter = ctl.limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def n_workers(n_jobs: int | None, n_tasks: int) -> int:
    """Worker threads for ``n_tasks`` tasks: ``n_jobs`` or the usable CPUs, at most n_tasks."""
    want = usable_cpus() if n_jobs is None else n_jobs
    return max(1, min(want, n_tasks))


@contextlib.contextmanager
def worker_pool(n_jobs: int | None = None):
    """Keep BLAS pinned and one set of worker threads alive for the body.

    A loop that calls :func:`run_tasks` thousands of times (the selection loop)
    otherwise pays for a thread pool and a threadpoolctl round trip on every
    call. Inside the body, ``run_tasks`` reuses these threads (at most
    ``n_jobs`` of them, default the usable CPUs; a call asking for fewer still
    gets at most what it asked for). Results are unchanged: which thread runs a
    task never changes its bits. Nested use keeps the outer pool. The pool belongs to
    the calling thread: other threads keep making their own.
    """
    with pinned_blas():
        if getattr(_local, "pool", None) is not None or not can_pin_blas():
            yield
            return
        workers = max(1, usable_cpus() if n_jobs is None else int(n_jobs))
        # The calling thread is one of the workers (see run_tasks).
        ex = ThreadPoolExecutor(max_workers=max(1, workers - 1), thread_name_prefix="schedgen-kernels")
        _local.pool = (ex, workers)
        try:
            yield
        finally:
            _local.pool = None
            ex.shutdown(wait=True)


def run_tasks(
    fn: Callable[[Any, Any], None],
    items: Iterable[Any],
    make_state: Callable[[], Any],
    n_jobs: int | None,
) -> None:
    """Call ``fn(item, state)`` for every item, on worker threads with pinned BLAS.

    ``make_state()`` builds one scratch state (tile buffers) per worker; each
    worker takes the next item in turn and reuses its buffers. Results must be
    written by ``fn`` to disjoint places: which worker runs which item is not
    fixed. Inside :func:`worker_pool` the calling thread works too.
    """
    items = list(items)
    if not items:
        return
    shared = getattr(_local, "pool", None)  # only the thread that opened worker_pool sees it
    workers = n_workers(n_jobs, len(items)) if can_pin_blas() else 1
    if shared is not None:
        workers = min(workers, shared[1])
    with pinned_blas():
        if workers == 1:
            state = make_state()
            for item in items:
                fn(item, state)
            return
        # One runner per worker, each with its own state, pulling items in order.
        it = iter(items)
        it_lock = threading.Lock()

        def runner():
            state = make_state()
            while True:
                with it_lock:
                    item = next(it, _DONE)
                if item is _DONE:
                    return
                fn(item, state)

        if shared is not None:
            # The calling thread is one of the runners: one thread wake-up fewer per call.
            futs = [shared[0].submit(runner) for _ in range(workers - 1)]
            try:
                runner()
            finally:
                for fut in futs:
                    fut.result()
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="schedgen-kernels") as ex:
            for fut in [ex.submit(runner) for _ in range(workers)]:
                fut.result()
