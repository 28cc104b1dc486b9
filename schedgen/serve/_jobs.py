"""The server's build jobs: a bounded queue in front of a pool of worker processes.

**Processes, not threads.** A build is CPU-bound and much of it is Python holding the GIL
(the selection loops, the store writing): in a thread it would stall the event loop
that serves store files and status requests. A worker process also keeps a crash of
native code (HiGHS, BLAS, an out-of-memory kill) away from the server: the job fails,
the pool is replaced. Progress comes back through a ``multiprocessing`` queue drained by
one thread of the server.

**Dedupe.** A job's id is a hash of its normalised options (every client option at its
checked value, defaults filled in), so identical requests, however spelled, are one job:
while it is queued or running, or done with its store still in the registry, a request
returns it. Requests that differ in spelling only the build itself settles: they share
the cache key, so the second is a cache hit, and the build lock serialises it with any
other build of that store (another server, a ``schedgen build`` on the same folder).

**Bounds.** At most ``workers`` builds run; at most ``queue`` more wait (in this process,
not in the pool, so that cancelling them is exact); beyond that :class:`QueueFull`.

**Stopping.** :meth:`BuildPool.shutdown` cancels the queued jobs and sends SIGTERM to the
workers running a build, which interrupts it by the build's usual KeyboardInterrupt
path (nothing under the final name; its checkpoint stays, so the same build on a
restarted server continues from there).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from ..registry import MANIFEST
from . import _worker

_log = logging.getLogger("schedgen.serve")

#: Finished jobs kept for their status (the oldest are forgotten first).
MAX_FINISHED = 1000


class QueueFull(Exception):
    """No room for another job (``workers`` running and ``queue`` waiting)."""


class PoolClosed(Exception):
    """The server is stopping."""


@dataclass
class Job:
    id: str
    options: dict
    state: str = "queued"  # queued -> running -> done | failed (| cancelled)
    stage: str | None = None
    done: int = 0
    total: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    result: dict | None = None
    error: str | None = None
    pid: int | None = None

    def status(self) -> dict:
        out = {"id": self.id, "state": self.state, "options": self.options,
               "progress": {"stage": self.stage, "done": self.done, "total": self.total},
               "created": _iso(self.created), "started": _iso(self.started), "finished": _iso(self.finished)}
        if self.result is not None:
            out.update({k: v for k, v in self.result.items() if k != "ok"})
            out["store"] = out.pop("name")
        if self.error is not None:
            out["error"] = self.error
        return out


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def job_id(options: dict) -> str:
    """16 hex digits of the sha256 of the canonical JSON of the normalised options."""
    blob = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class BuildPool:
    """Build jobs for one served registry ``root`` (see the module docstring).

    Parameters
    ----------
    root : Path
        The registry the results are pushed to.
    out_dir : Path
        The builds' own store folder (their cache), not served.
    data_dir : str or None
        The datasets' folder of every build.
    workers, queue : int
        Builds running at once; builds waiting beyond those.
    scrub : callable(str) -> str
        Applied to every error message (removes the server's paths).
    """

    def __init__(self, root: Path, out_dir: Path, data_dir: str | None, workers: int, queue: int, scrub) -> None:
        self.root, self.out_dir, self.data_dir = root, out_dir, data_dir
        self.workers, self.queue = workers, queue
        self._scrub = scrub
        self._lock = threading.RLock()  # a future already done calls back at once, inside _dispatch
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[str] = collections.deque()
        self._running: set[str] = set()
        self._finished: collections.deque[str] = collections.deque()
        self._executor: ProcessPoolExecutor | None = None
        self._events = None
        self._stop = None
        self._drainer: threading.Thread | None = None
        self._closed = False
        self.counts = {"accepted": 0, "deduplicated": 0, "computed": 0, "cache_hits": 0, "failed": 0}

    # ------------------------------------------------------------------ requests

    def submit(self, options: dict) -> tuple[dict, bool]:
        """The status of the job of ``options`` and whether it is new.

        Raises :class:`QueueFull` or :class:`PoolClosed`."""
        jid = job_id(options)
        with self._lock:
            if self._closed:
                raise PoolClosed
            job = self._jobs.get(jid)
            if job is not None and (job.state in ("queued", "running") or
                                    (job.state == "done" and self._published(job))):
                self.counts["deduplicated"] += 1
                return job.status(), False
            if len(self._waiting) + len(self._running) >= self.workers + self.queue:
                raise QueueFull
            job = Job(jid, options, created=time.time())
            self._jobs[jid] = job
            self._waiting.append(jid)
            self.counts["accepted"] += 1
            self._dispatch()
            return job.status(), True

    def status(self, jid: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(jid)
            return None if job is None else job.status()

    def stats(self) -> dict:
        with self._lock:
            return {**self.counts, "queued": len(self._waiting), "running": len(self._running),
                    "workers": self.workers, "queue": self.queue}

    def _published(self, job: Job) -> bool:
        """Whether a done job's store is still in the registry (else the request builds again)."""
        return (self.root / job.result["name"] / MANIFEST).is_file()

    # ------------------------------------------------------------------ the pool

    def _ensure_executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            ctx = multiprocessing.get_context("spawn")
            if self._events is None:
                self._events, self._stop = ctx.Queue(), ctx.Event()
                self._drainer = threading.Thread(target=self._drain, name="schedgen-serve-events", daemon=True)
                self._drainer.start()
            self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker.init,
                                                 initargs=(self._events, self._stop))
        return self._executor

    def _dispatch(self) -> None:
        """Start waiting jobs while a worker is free (caller holds the lock)."""
        while self._waiting and len(self._running) < self.workers and not self._closed:
            jid = self._waiting.popleft()
            job = self._jobs[jid]
            try:
                executor = self._ensure_executor()
                fut = executor.submit(_worker.run, jid, job.options, str(self.out_dir), self.data_dir, str(self.root))
            except (BrokenProcessPool, RuntimeError) as exc:
                self._executor = None
                self._fail(job, f"cannot start a build worker: {exc}")
                continue
            self._running.add(jid)
            fut.add_done_callback(lambda f, jid=jid, ex=executor: self._done(jid, f, ex))

    def _done(self, jid: str, fut: Future, executor: ProcessPoolExecutor | None = None) -> None:
        with self._lock:
            self._running.discard(jid)
            job = self._jobs[jid]
            try:
                r = fut.result()
            except CancelledError:  # still in the pool's own queue when the server stopped
                r = {"ok": False, "error": "cancelled: the server stopped"}
            except BrokenProcessPool:
                if executor is None or self._executor is executor:
                    self._executor = None  # replaced at the next dispatch (never a newer pool)
                # A pool breaks as a whole: every build running in it fails, not only the killed one.
                r = {"ok": False, "error": "a build worker process died (killed, or out of memory), which stops "
                                          "every build running beside it; send the request again"}
            except BaseException:  # a bug in a build: logged here, not sent to the client
                _log.exception("build %s failed", jid)
                r = {"ok": False, "error": "internal error in the build (see the server's log)"}
            if r.get("ok"):
                job.state, job.result, job.finished = "done", r, time.time()
                # the workers' last events may still be on their way (another queue): done is done
                job.stage, job.done, job.total = "publish", 1, 1
                self.counts["cache_hits" if r["cache_hit"] else "computed"] += 1
                self._retire(jid)
            else:
                self._fail(job, r["error"])
                if r["error"].startswith("cancelled"):
                    job.state = "cancelled"
            self._dispatch()

    def _fail(self, job: Job, error: str) -> None:
        job.state, job.error, job.finished = "failed", self._scrub(error), time.time()
        self.counts["failed"] += 1
        self._retire(job.id)

    def _retire(self, jid: str) -> None:
        self._finished.append(jid)
        while len(self._finished) > MAX_FINISHED:
            old = self._finished.popleft()
            if self._jobs.get(old) is not None and self._jobs[old].state in ("done", "failed", "cancelled"):
                del self._jobs[old]

    def _drain(self) -> None:
        """Apply the workers' events (started, progress) to the jobs; None ends it."""
        while True:
            try:
                item = self._events.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            jid, kind, value = item
            with self._lock:
                job = self._jobs.get(jid)
                if job is None or job.state not in ("queued", "running"):
                    continue
                if kind == "started":
                    job.state, job.started, job.pid = "running", time.time(), value
                elif kind == "progress":
                    job.stage, job.done, job.total = value

    # ------------------------------------------------------------------ stopping

    def shutdown(self, grace: float = 10.0) -> None:
        """Cancel the queued jobs, interrupt the running builds (SIGTERM: the build's
        KeyboardInterrupt path) and stop the workers, without waiting for them to end.

        A job handed to a worker announces itself ("started", with its pid) before it
        checks the stop event: so once the event is set, every such job either returns
        at that check or gets SIGTERM here. ``grace`` bounds the wait for announcements
        of jobs handed over just before the stop.
        """
        with self._lock:
            self._closed = True
            for jid in self._waiting:
                job = self._jobs[jid]
                job.state, job.error, job.finished = "cancelled", "cancelled: the server stopped", time.time()
            self._waiting.clear()
            executor, self._executor = self._executor, None
        if executor is None:
            return
        self._stop.set()
        executor.shutdown(wait=False, cancel_futures=True)  # those still in the pool's queue
        signalled: set[int] = set()
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                jobs = [self._jobs[j] for j in self._running]
            for pid in {j.pid for j in jobs if j.pid} - signalled:
                signalled.add(pid)
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:  # already gone
                    pass
            if all(j.pid for j in jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self._events.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the running builds have ended (for tests and a clean exit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._running:
                    return
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.05)
