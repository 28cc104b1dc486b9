"""What runs in a build worker process: one build, then its publication into the served
registry, reporting progress to the server through a queue.

Worker processes are started with ``spawn`` (the server has threads: ``fork`` could copy a
held lock) and import only the build and registry layers. They ignore SIGINT: a Ctrl-C in
the terminal reaches the whole process group, and the server decides what happens to a
running build (it sends SIGTERM, which this module turns into the KeyboardInterrupt every
build already handles: nothing is written under the final name, the checkpoint stays).
"""

from __future__ import annotations

import os
import signal
import time

from ..build import BuildConfig, build
from ..errors import SchedgenError
from ..registry import push

#: Seconds between two progress events of one stage (a stage's first and last are always sent).
PROGRESS_INTERVAL = 0.2

_EVENTS = None  # the server's event queue, set by init() in each worker
_STOP = None  # set by the server when it stops: a job picked up after that does not start


def _interrupt(signum, frame):  # SIGTERM from the stopping server -> the build's usual path
    raise KeyboardInterrupt


def init(events, stop) -> None:
    """Worker initializer: keep the server's event queue and stop event; SIGINT ignored,
    SIGTERM interrupts."""
    global _EVENTS, _STOP
    _EVENTS, _STOP = events, stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)


def _send(*item) -> None:
    if _EVENTS is not None:
        _EVENTS.put(item)


def run(job_id: str, options: dict, out_dir: str, data_dir: str | None, root: str) -> dict:
    """Build ``options`` (client options, already checked by the server) into ``out_dir``
    and push the store to the registry ``root``.

    Returns ``{"ok": True, "name", "key", "digest", "cache_hit", "uploaded", "n_batches",
    "n_epochs", "seconds"}`` or ``{"ok": False, "error": one line}``; an unexpected
    exception (a bug) propagates to the server, which reports it without details.
    """
    _send(job_id, "started", os.getpid())
    # After "started": a server stopping from now on either sees our pid and sends SIGTERM,
    # or has set the event before this check (see BuildPool.shutdown).
    if _STOP is not None and _STOP.is_set():
        return {"ok": False, "error": "cancelled: the server stopped before the build started"}
    last = {"t": 0.0, "stage": None}

    def progress(done: int, total: int, stage: str = "batches") -> None:
        now = time.monotonic()
        if stage != last["stage"] or done >= total or now - last["t"] >= PROGRESS_INTERVAL:
            last["t"], last["stage"] = now, stage
            _send(job_id, "progress", (stage, int(done), int(total)))

    try:
        config = BuildConfig(**options, out_dir=out_dir, data_dir=data_dir, download=False, force=False)
        result = build(config, progress=progress)
        progress(0, 1, stage="publish")
        pushed = push(result.path, root)
        progress(1, 1, stage="publish")
    except SchedgenError as exc:
        return {"ok": False, "error": " ".join(str(exc).split())}
    except KeyboardInterrupt:
        return {"ok": False, "error": "interrupted: the server stopped during the build; nothing was published "
                                      "(the same request on a restarted server continues from its checkpoint)"}
    return {"ok": True, "name": pushed.name, "key": pushed.key, "digest": result.digest,
            "cache_hit": result.cache_hit, "uploaded": pushed.uploaded, "n_batches": result.n_batches,
            "n_epochs": result.n_epochs, "seconds": round(result.seconds, 3)}
