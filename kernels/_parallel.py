"""Host threading for the blocked routines: single-threaded BLAS, our own tile workers.

OpenBLAS does not give the same bits for one GEMM run with 1 thread and with 2
(its threaded driver walks the product in another order), and neither does the
LAPACK on top of it (``scipy.linalg.eigh`` of the PCA). To make results
independent of the BLAS thread setting, the host routines pin BLAS to one
thread while they run (through threadpoolctl, already a dependency of
scikit-learn; imported lazily and optional) and spread a fixed grid of tiles
over Python threads instead. Which thread computes a tile never changes the
tile's bits, so results are also independent of the number of workers. It is
also faster on small machines: the elementwise passes (exp, sums), which NumPy
runs on one core, now run on every core, and no BLAS thread spins while they do.

The pin is process-wide (see :func:`pinned_blas`): run builds in their own
process when the rest of the process needs its BLAS threads.

Without threadpoolctl the tiles run in order on the calling thread and BLAS
keeps its own threads: results are then deterministic for a fixed BLAS thread
count only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from schedgen.errors import SchedgenWarning

__all__ = ["usable_cpus", "n_workers", "pinned_blas", "run_tasks", "can_pin_blas", "worker_pool"]

_lock = threading.Lock()
_depth = 0
# The BLAS libraries pinned by the open pinned_blas windows: filepath -> (LibController,
# its thread count before the pin).
_pinned: dict[str, tuple[Any, int]] = {}
_controller: Any = None
# len(sys.modules) when _controller was made: a library imported since may have
# loaded another BLAS (SciPy ships its own OpenBLAS), which a controller made
# before it does not see.
_controller_modules = -1
_scipy_loaded = False
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
    """A threadpoolctl controller over the libraries loaded now (None without threadpoolctl)."""
    global _controller, _controller_modules
    if _controller_modules != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional

            _controller = ThreadpoolController()
        except Exception:  # not installed, or no introspectable BLAS
            _controller = None
        _controller_modules = len(sys.modules)
    return _controller


def can_pin_blas() -> bool:
    """Whether BLAS can be pinned to one thread (threadpoolctl importable)."""
    return _get_controller() is not None


def _load_scipy_blas() -> None:
    """Load SciPy's LAPACK/BLAS (a separate OpenBLAS in SciPy's wheels), when installed.

    The PCA calls ``scipy.linalg.eigh`` inside a pinned window; a BLAS first loaded
    there would escape the pin (its bits then follow OPENBLAS_NUM_THREADS: measured).
    Loaded before the pin instead, once per process (about 0.3 s).
    """
    global _scipy_loaded
    if not _scipy_loaded:
        _scipy_loaded = True
        if "scipy.linalg" not in sys.modules and importlib.util.find_spec("scipy") is not None:
            try:
                import scipy.linalg  # noqa: F401, PLC0415 - for its BLAS only
            except ImportError:
                pass  # a broken SciPy fails where it is used, not here


def _pin_loaded_blas(ctl) -> None:
    """Set every BLAS the controller sees, and not pinned yet, to one thread (holding _lock)."""
    for lib in ctl.lib_controllers:
        if lib.user_api == "blas" and lib.filepath not in _pinned:
            _pinned[lib.filepath] = (lib, lib.get_num_threads())
            lib.set_num_threads(1)


def _release() -> list[str]:
    """Give every pinned BLAS its thread count back (holding _lock); the libraries whose
    count other code changed while pinned."""
    changed = []
    for path, (lib, before) in _pinned.items():
        now = lib.get_num_threads()
        if now != 1:
            changed.append(f"{os.path.basename(path)} at {now} threads")
        lib.set_num_threads(before)
    _pinned.clear()
    return changed


@contextlib.contextmanager
def pinned_blas():
    """Run the body with host BLAS limited to one thread (no-op without threadpoolctl).

    Re-entrant and safe to nest from several Python threads: the first entry sets
    the limit, the last exit restores the previous setting. Every BLAS loaded in
    the process is pinned: NumPy's, SciPy's (loaded here if SciPy is installed,
    for the PCA's LAPACK calls), and any loaded before a nested entry.

    The limit is process-wide: BLAS libraries have one thread setting per process
    (``openblas_set_num_threads_local`` of OpenBLAS's pthreads builds, as NumPy and
    SciPy ship them, sets the same global), and no per-thread way exists. So while
    a build's kernel passes run (features and PCA, bandwidth, row sums, the whole
    selection loop; a learn2mix build throughout), every other thread of the
    process also gets one BLAS thread: a trainer that calls ``schedgen.build`` from
    a thread is throttled for that time, and its own GEMMs give their one-thread
    bits. The other way round, code in another thread that sets the BLAS thread
    count during the window (``threadpoolctl.threadpool_limits``, which
    scikit-learn uses, or ``openblas_set_num_threads``) undoes the pin, and the
    build's bits may then depend on the timing: the last exit warns
    (:class:`~schedgen.errors.SchedgenWarning`) when it finds the count changed.

    Neither can be avoided inside one process. Run builds in their own process
    instead: the CLI (``subprocess.run(["schedgen", "build", ...], check=True)``)
    or ``multiprocessing`` with the ``"spawn"`` context (e.g.
    ``ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))``);
    the schedule is the same bytes, and the trainer keeps its BLAS threads.
    """
    global _depth
    if _get_controller() is None:
        yield
        return
    _load_scipy_blas()  # not under _lock: an import takes the import lock
    with _lock:
        ctl = _get_controller()  # made again when modules were imported since
        if ctl is not None:
            _pin_loaded_blas(ctl)
        _depth += 1
    try:
        yield
    finally:
        changed: list[str] = []
        with _lock:
            _depth -= 1
            if _depth == 0:
                changed = _release()
        if changed:
            warnings.warn(
                "the BLAS thread count was changed by other code while schedgen ran with BLAS "
                f"pinned to one thread ({', '.join(changed)}, expected 1): results computed in "
                "that time may differ from a pinned run's in the last bits; run builds in their "
                "own process (the CLI, or multiprocessing with the spawn context)",
                SchedgenWarning,
                stacklevel=3,
            )


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

    An exception in the calling thread (Ctrl-C's KeyboardInterrupt among them) stops
    every worker after the item it is on, instead of letting them drain the queue: a
    row-sum pass of minutes stops within one tile.
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
        stop = threading.Event()

        def runner():
            state = make_state()
            while not stop.is_set():
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
            except BaseException:
                stop.set()
                raise
            finally:
                for fut in futs:
                    fut.result()
            return
        ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="schedgen-kernels")
        try:
            for fut in [ex.submit(runner) for _ in range(workers)]:
                fut.result()
        except BaseException:
            stop.set()
            raise
        finally:
            ex.shutdown(wait=True)


def rows_done(progress: Callable[[int, int], None] | None, total: int) -> Callable[[int], None]:
    """A thread-safe ``advance(rows)`` that reports ``progress(rows done so far, total)``.

    Worker threads finish blocks in any order; the count is taken and reported under one
    lock, so the reported values only grow. Without ``progress`` it does nothing.
    """
    if progress is None:
        return lambda rows: None
    lock = threading.Lock()
    done = [0]

    def advance(rows: int) -> None:
        with lock:
            done[0] += rows
            progress(done[0], total)

    return advance

