"""Where the N² work runs: in this process (the reference) or on a Ray cluster.

An engine has the operations a pass split by row blocks and a loop over row shards need
(broadcast, map over blocks or shards, gather):

* :meth:`Engine.broadcast` ships a read-only value (the features, a
  :class:`~schedgen.kernels.blocked.RowSumPlan`) once; Ray keeps one shared-memory copy
  per node (``ray.put``), the in-process engine hands the object itself;
* :meth:`Engine.map_row_blocks` calls ``fn(value, item)`` for every item, wherever the
  engine runs it, and gathers the results in item order;
* :meth:`Engine.start_shards`, :meth:`Engine.call_shards` and :meth:`Engine.stop_shards`
  keep stateful row shards (objects here, actors on Ray) for the selection loop
  (``schedgen.methods._sharded_loop``); a lost actor raises :class:`ShardLost`;
* :meth:`Engine.close` releases what the engine started.

:func:`engine_row_sums` is the row-sum pass written once over that interface: tasks over
consecutive row blocks of :func:`~schedgen.kernels.row_sums`'s grid, each block summed
over the column tiles in the same fixed order (:func:`~schedgen.kernels.blocked.row_block_sums`)
with BLAS pinned to one thread in the worker, so ``s_tot`` and ``neg_tot`` are bitwise the
in-process result whatever the number of workers or blocks per task.

The build chooses its engine with ``--engine`` (:func:`use_engine` around the method's
run); :func:`current_engine` starts it on first use, so a cache hit never starts Ray.
Ray is imported only by :class:`RayEngine`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import socket
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import SchedgenError
from ..kernels._parallel import n_workers, pinned_blas, rows_done, run_tasks
from ..kernels.blocked import RowSums, checked_row_sums, plan_row_sums, row_block_sums
from ..params import parse_engine

__all__ = [
    "Engine",
    "EngineError",
    "ShardLost",
    "InProcessEngine",
    "RayEngine",
    "make_engine",
    "engine_row_sums",
    "use_engine",
    "current_engine",
    "CONNECT_TIMEOUT",
]

#: Seconds a :class:`RayEngine` waits for a cluster's head to answer before giving up.
CONNECT_TIMEOUT = 10.0
#: Seconds the shard actors of a loop may take to start (and map the features) before the
#: build gives up with one line instead of waiting for CPUs that never free up.
START_TIMEOUT = 300.0
_RAY_HINT = "pip install 'schedgen[ray]' (or pip install 'ray>=2.40')"


class EngineError(SchedgenError):
    """The engine cannot start (Ray missing, cluster unreachable) or a task on it failed."""


class ShardLost(EngineError):
    """A shard's worker died (a lost actor or node): the loop restarts its shards from the
    last state it holds."""


class Engine:
    """The operations a pass split over workers needs. Subclasses implement them.

    Row shards (the selection loop): :meth:`start_shards` builds one stateful shard per
    spec, :meth:`call_shards` calls a method of each and gathers the replies in shard
    order, :meth:`stop_shards` releases them.
    """

    #: ``--engine`` text of this engine ("local", "ray", "ray:ADDRESS").
    name: str = ""

    def broadcast(self, value: Any) -> Any:
        """A handle to the read-only ``value`` for :meth:`map_row_blocks` (shipped once)."""
        raise NotImplementedError

    def map_row_blocks(
        self,
        fn: Callable[[Any, Any], Any],
        shared: Any,
        items: Sequence[Any],
        *,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list:
        """``[fn(value, item) for item in items]``, computed by the engine's workers.

        Parameters
        ----------
        fn : callable(value, item)
            A module-level function (workers import it by name); ``value`` is what
            ``shared`` (a :meth:`broadcast` handle) stands for. Runs with BLAS pinned to one thread.
        shared : handle from :meth:`broadcast`
        items : sequence
            Small picklable work descriptions (row-block starts).
        on_result : callable(index, result), optional
            Called in the calling thread as results arrive, in any order (progress).

        Returns
        -------
        list
            The results, in the order of ``items``.
        """
        raise NotImplementedError

    def workers(self) -> int:
        """How many tasks the engine runs at once (to size tasks; never changes results)."""
        raise NotImplementedError

    def default_shards(self) -> int:
        """How many row shards a loop uses when not told (never changes results)."""
        return 1

    def start_shards(self, cls: type, shared: tuple, specs: Sequence[dict]) -> list:
        """``[cls(*shared, **spec) for spec in specs]``, wherever the engine keeps state
        (``shared``: large read-only values, shipped once)."""
        raise NotImplementedError

    def call_shards(self, handles: Sequence[Any], method: str, args: Sequence[tuple]) -> list:
        """``[getattr(h, method)(*a) for h, a in zip(handles, args)]``, run by the shards at
        once; raises :class:`ShardLost` when a shard's worker is gone."""
        raise NotImplementedError

    def stop_shards(self, handles: Sequence[Any]) -> None:
        """Release the shards (idempotent)."""

    def close(self) -> None:
        """Release what the engine started (idempotent)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessEngine(Engine):
    """Worker threads of this process with BLAS pinned to one thread (:func:`run_tasks`):
    today's behaviour and the reference every other engine must match bit for bit."""

    name = "local"

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = n_jobs

    def broadcast(self, value: Any) -> Any:
        return value

    def map_row_blocks(self, fn, shared, items, *, on_result=None) -> list:
        items = list(items)
        out: list = [None] * len(items)

        def task(i, state):
            out[i] = fn(shared, items[i])

        run_tasks(task, range(len(items)), lambda: None, self.n_jobs)
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out

    def workers(self) -> int:
        return n_workers(self.n_jobs, 1 << 30)

    def start_shards(self, cls, shared, specs) -> list:
        return [cls(*shared, **spec, n_jobs=self.n_jobs) for spec in specs]

    def call_shards(self, handles, method, args) -> list:
        return [getattr(h, method)(*a) for h, a in zip(handles, args)]


def _pinned_call(fn, shared, item):
    """What a Ray worker runs: ``fn(shared, item)`` with BLAS pinned to one thread, as the
    in-process workers run it (OpenBLAS's threaded GEMM gives other bits)."""
    with pinned_blas():
        return fn(shared, item)


# The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server (a Ray head's GCS,
# a Ray Client server) answers with its own SETTINGS frame (type 4).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _check_reachable(address: str, timeout: float) -> None:
    """Refuse, within about ``timeout`` seconds, a HOST:PORT (or ray://HOST:PORT) that is not a
    gRPC server: ``ray.init`` would retry for a minute and then terminate the process."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise EngineError(f"engine address must be HOST:PORT, 'auto' or ray://HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_HELLO)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        why = "no answer" if isinstance(exc, socket.timeout) else exc.strerror or str(exc)
        raise EngineError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s: {why}; "
            "start it with `ray start --head` or check the address"
        ) from None
    if len(head) < 9 or head[3] != 4:
        raise EngineError(f"{address} does not answer as a Ray cluster (no gRPC server there); check the address "
                          "(the head's GCS port, 6379 by default, or ray://HOST:10001)")


class RayEngine(Engine):
    """Tasks on a Ray cluster (``ray.remote``, one CPU each).

    Parameters
    ----------
    address : str, optional
        The cluster's head (``HOST:PORT``, ``auto`` or ``ray://HOST:PORT``). None: the
        running ``ray`` session of this process if there is one, else ``RAY_ADDRESS``, else
        a new local cluster on 127.0.0.1 (stopped by :meth:`close`).
    connect_timeout : float
        Seconds to wait for the head to answer.

    Workers import schedgen: every node needs the same schedgen (and NumPy) as the driver.

    Raises
    ------
    EngineError
        Ray is not installed, or the cluster cannot be reached (one line).
    """

    def __init__(self, address: str | None = None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        try:
            import ray  # noqa: PLC0415 - optional, and heavy: only with --engine ray
        except ModuleNotFoundError as exc:
            if exc.name != "ray":
                raise
            raise EngineError(f"--engine ray needs Ray, which is not installed: {_RAY_HINT}") from None
        self._ray = ray
        self.name = "ray" if address is None else f"ray:{address}"
        self._owned = False
        if address is None and ray.is_initialized():
            pass  # a session this process opened (a notebook, the tests): use it, leave it open
        else:
            target = address if address is not None else os.environ.get("RAY_ADDRESS") or None
            if target is not None and target != "auto":
                _check_reachable(target, connect_timeout)
            if ray.is_initialized():
                raise EngineError(f"--engine {self.name}: this process is already connected to another Ray "
                                  "cluster; call ray.shutdown() first or use --engine ray")
            kwargs: dict = {"logging_level": "ERROR", "log_to_driver": False}
            if target is None:  # a new local cluster: nothing listens beyond this machine
                kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
            else:
                kwargs.update(address=target)
            try:
                ray.init(**kwargs)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                raise EngineError(f"cannot connect to the Ray cluster at {target or 'a new local cluster'}: "
                                  f"{_first_line(exc)}") from None
            self._owned = True
        self._remote = ray.remote(num_cpus=1)(_pinned_call)
        self._shards: list = []
        #: Seconds the shard actors of a loop may take to start.
        self.start_timeout = START_TIMEOUT

    def broadcast(self, value: Any) -> Any:
        return self._ray.put(value)

    def default_shards(self) -> int:
        return self.workers()

    def start_shards(self, cls, shared, specs) -> list:
        ray = self._ray
        cpus_total = self.workers()
        if len(specs) > 100 * cpus_total:
            raise EngineError(f"at most 100 shards per CPU of the Ray cluster ({cpus_total} CPUs), got {len(specs)}")
        refs = [v if isinstance(v, ray.ObjectRef) else ray.put(v) for v in shared]
        # One CPU per shard when the cluster has them; more shards than CPUs share them.
        cpus = min(1.0, math.floor(100 * cpus_total / max(1, len(specs))) / 100)
        actor = ray.remote(cls).options(num_cpus=cpus, max_restarts=0)
        handles: list = []
        try:
            for spec in specs:
                handles.append(actor.remote(*refs, **spec, n_jobs=1))
            self._shards.extend(handles)
            # Up (or failed) within the timeout: a cluster without room would keep them pending.
            ready, pending = ray.wait([h.ping.remote() for h in handles], num_returns=len(handles),
                                      timeout=self.start_timeout)
            if pending:
                raise EngineError(f"{len(pending)} of {len(handles)} shard actors did not start on the Ray cluster "
                                  f"within {self.start_timeout:g} s (it has {cpus_total} CPUs; are they busy?)")
            self.call_shards(handles, "ping", [()] * len(handles))
        except BaseException:
            self.stop_shards(handles)
            raise
        return handles

    def call_shards(self, handles, method, args) -> list:
        ray = self._ray
        refs = [getattr(h, method).remote(*a) for h, a in zip(handles, args)]
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):  # its constructor raised: not a lost node
                raise EngineError(f"a shard's actor failed to start on the Ray cluster: {_last_line(exc)}") from None
            raise ShardLost(f"a shard's actor on the Ray cluster died: {_describe(exc)}") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, SchedgenError):
                raise cause from None
            raise EngineError(f"a shard on the Ray cluster failed: {_describe(cause or exc)}") from None
        except ray.exceptions.RayError as exc:
            raise EngineError(f"the Ray cluster failed during the loop: {_describe(exc)}") from None

    def stop_shards(self, handles) -> None:
        for h in handles:
            with contextlib.suppress(Exception):
                self._ray.kill(h)
            with contextlib.suppress(ValueError):
                self._shards.remove(h)

    def workers(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def map_row_blocks(self, fn, shared, items, *, on_result=None) -> list:
        ray = self._ray
        refs = [self._remote.remote(fn, shared, item) for item in items]
        where = {ref: i for i, ref in enumerate(refs)}
        out: list = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = where[ref]
                    out[i] = ray.get(ref)
                    if on_result is not None:
                        on_result(i, out[i])
        except BaseException as exc:
            # Ctrl-C (or a failed task): the outstanding tasks stop now, not after the pass.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if isinstance(exc, ray.exceptions.RayTaskError):
                cause = getattr(exc, "cause", None)
                if isinstance(cause, SchedgenError):
                    raise cause from None  # the worker's one-line error, as in process
                raise EngineError(f"a task on the Ray cluster failed: {_describe(cause or exc)}") from None
            if isinstance(exc, ray.exceptions.RayError):
                raise EngineError(f"the Ray cluster failed during the pass: {_describe(exc)}") from None
            raise
        return out

    def close(self) -> None:
        self.stop_shards(list(self._shards))
        if self._owned:
            self._owned = False
            self._ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _last_line(exc: BaseException) -> str:
    """The last line of a remote traceback's text: the exception and its message."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"


def make_engine(spec: str | None) -> Engine:
    """The engine of an ``--engine`` text (:func:`~schedgen.params.parse_engine`)."""
    spec = parse_engine("local" if spec is None else spec)
    if spec == "local":
        return InProcessEngine()
    return RayEngine(None if spec == "ray" else spec.split(":", 1)[1])


def _row_blocks_task(plan, starts) -> tuple[np.ndarray, np.ndarray | None]:
    """The sums of consecutive row blocks (their starts), concatenated: one engine task."""
    state = plan.make_state()
    parts = [row_block_sums(plan, i0, state) for i0 in starts]
    s = np.concatenate([p[0] for p in parts])
    neg = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
    return s, neg


def engine_row_sums(
    engine: Engine,
    kernel,
    X,
    *,
    block_rows: int | None = None,
    block_cols: int | None = None,
    blocks_per_task: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RowSums:
    """:func:`~schedgen.kernels.row_sums` computed by ``engine``: the same bytes.

    Parameters
    ----------
    engine : Engine
    kernel, X, block_rows, block_cols
        As for :func:`~schedgen.kernels.row_sums` (X on the host).
    blocks_per_task : int, optional
        Row blocks per task (default: about four tasks per worker). Does not change the result.
    progress : callable(rows_done, n_samples), optional

    Returns
    -------
    RowSums
    """
    from ..kernels import backend  # noqa: PLC0415

    if backend.get_namespace(X) is not np and not isinstance(engine, InProcessEngine):
        raise EngineError(f"--engine {engine.name} computes on host CPUs, got the features on a GPU; "
                          "pass --device cpu")
    plan = plan_row_sums(kernel, X, block_rows=block_rows, block_cols=block_cols)
    starts = list(plan.block_starts())
    n = plan.n_samples
    if blocks_per_task is None:
        blocks_per_task = max(1, math.ceil(len(starts) / (4 * engine.workers())))
    elif isinstance(blocks_per_task, bool) or not isinstance(blocks_per_task, int) or blocks_per_task < 1:
        raise EngineError(f"blocks_per_task must be a positive integer or None, got {blocks_per_task!r}")
    tasks = [starts[i : i + blocks_per_task] for i in range(0, len(starts), blocks_per_task)]
    advance = rows_done(progress, n)
    parts = engine.map_row_blocks(
        _row_blocks_task, engine.broadcast(plan), tasks, on_result=lambda i, r: advance(len(r[0]))
    )
    s = np.concatenate([p[0] for p in parts])
    neg = None if plan.kernel.nonnegative else np.concatenate([p[1] for p in parts])
    return checked_row_sums(plan, s, neg)


class _Lazy:
    """An engine named by ``--engine``, started on first use and closed with its scope."""

    def __init__(self, spec: str | Engine | None) -> None:
        self.spec = spec
        self.engine: Engine | None = spec if isinstance(spec, Engine) else None
        self._started = False

    def get(self) -> Engine:
        if self.engine is None:
            self.engine = make_engine(self.spec)  # type: ignore[arg-type]
            self._started = True
        return self.engine

    def close(self) -> None:
        if self._started and self.engine is not None:
            self.engine.close()


_current: contextvars.ContextVar[_Lazy | None] = contextvars.ContextVar("schedgen_engine", default=None)


@contextlib.contextmanager
def use_engine(spec: str | Engine | None) -> Iterator[None]:
    """Within the body, :func:`current_engine` is the engine ``spec`` names (an ``--engine``
    text, or an Engine, which the body does not close); one started here is closed at the end."""
    lazy = _Lazy(spec)
    token = _current.set(lazy)
    try:
        yield
    finally:
        _current.reset(token)
        lazy.close()


def current_engine() -> Engine:
    """The engine of the innermost :func:`use_engine` (started now if not yet), else in process."""
    lazy = _current.get()
    return InProcessEngine() if lazy is None else lazy.get()

