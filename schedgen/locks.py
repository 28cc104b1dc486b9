"""Build locks: one process builds a store, concurrent builds of the same store wait.

A build of ``<out>/<name>.zarr`` holds an exclusive :func:`fcntl.flock` on the file
``<out>/<name>.zarr.lock`` (see :func:`lock_path`) around its check-build-write
sequence. A second build of the same cache key blocks on that lock, polling, and
once it is released finds the finished store and returns it as a cache hit.

Why ``flock`` and not an ``O_CREAT | O_EXCL`` lock file
-------------------------------------------------------
The kernel releases a ``flock`` when its holder's last file descriptor closes,
which includes every way a process can die (``SIGKILL``, OOM killer, power-off of
the process). A lock left by a dead build is therefore never "stale": the file may
remain on disk, but it is unlocked and the next build takes it at once. An
``O_EXCL`` lock file would need a liveness test of the recorded pid, which is
unreliable (pid reuse, pid namespaces of containers sharing a volume, other hosts).

The lock file also holds JSON about the holder (``pid``, ``hostname``,
``started`` as a Unix time and ``target``). It is for people and messages only;
the lock itself is the ``flock``. The holder deletes the file when it releases the
lock (while still holding it), and an acquirer that got the lock on a file that was
deleted or replaced in the meantime retries on the new file, so two holders never
exist at once.

Caveats
-------
* NFS: Linux emulates ``flock`` on NFS with POSIX byte-range locks through the NFS
  lock manager. It works between clients when locking is enabled, but a crashed
  client's lock is only released when its lease expires (about 90 s on NFSv4) or its
  lock state is recovered (NFSv3 ``statd``), and a mount with ``nolock`` (or
  ``local_lock=flock``) makes the lock local to one machine. Builds on different
  machines then do not exclude each other; they still never corrupt a store (each
  writes its own temporary directory and renames it into place), but both compute.
* Filesystems without ``flock`` support (some FUSE mounts report ``ENOLCK`` or
  ``EOPNOTSUPP``), and platforms without :mod:`fcntl`, build without a lock, with a
  logged warning; the same "both compute, one store" guarantee holds.
* The lock is advisory: only schedgen builds take it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .errors import StoreError

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "LockTimeoutError",
    "LockOwner",
    "lock_path",
    "read_owner",
    "exclusive_lock",
    "Held",
]

#: Seconds a build waits for another build of the same store (long MMD builds take hours).
DEFAULT_LOCK_TIMEOUT = 24 * 3600.0

#: Polling interval: starts small (a short build finishes quickly), grows to at most 1 s.
_POLL_FIRST, _POLL_MAX = 0.02, 1.0

#: Seconds a waiter waits for the holder's JSON before saying "an unknown process".
_OWNER_GRACE = 2.0

#: errnos meaning "this filesystem cannot flock", not "someone holds it".
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}

_log = logging.getLogger("schedgen.locks")


class LockTimeoutError(StoreError):
    """Another build of the same store held its lock longer than the timeout."""


@dataclass(frozen=True)
class Held:
    """What :func:`exclusive_lock` yields: seconds waited, and whether the lock is really
    held (False where the filesystem has no locking: then other builds may run too)."""

    waited: float
    locked: bool


@dataclass(frozen=True)
class LockOwner:
    """What a lock file says about its holder (informational; may be absent or stale)."""

    pid: int | None
    hostname: str | None
    started: float | None

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        if self.hostname:
            who += f" on {self.hostname}"
        if self.started is not None:
            who += f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}"
        return who


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``<target>.lock`` beside it."""
    t = Path(target)
    return t.with_name(t.name + ".lock")


def read_owner(lock: str | os.PathLike) -> LockOwner | None:
    """The holder recorded in a lock file, or None if it is absent or unreadable."""
    try:
        with open(lock, "rb") as f:
            raw = f.read(4096)
        d = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict):
        return None

    def num(v, kind):
        return v if isinstance(v, kind) and not isinstance(v, bool) else None

    host = d.get("hostname")
    return LockOwner(num(d.get("pid"), int), host if isinstance(host, str) else None, num(d.get("started"), (int, float)))


def _same_file(fd: int, path: Path) -> bool:
    """True while ``path`` still names the file open as ``fd`` (not deleted or replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _write_owner(fd: int, target: Path) -> None:
    info = {"pid": os.getpid(), "hostname": socket.gethostname(), "started": time.time(), "target": str(target)}
    data = json.dumps(info).encode()
    try:
        os.pwrite(fd, data, 0)  # write, then cut: a reader never sees an empty file between
        os.ftruncate(fd, len(data))
    except OSError:
        pass  # the JSON only feeds messages; a full disk must not stop a build here


def _open_lock_file(lock: Path, target: Path) -> int:
    cloexec = getattr(os, "O_CLOEXEC", 0)
    try:
        # 0o666 minus the umask: builds of several users can share a cache directory.
        return os.open(lock, os.O_RDWR | os.O_CREAT | cloexec, 0o666)
    except PermissionError:
        try:  # another user's lock file: flock works on a read-only descriptor too
            return os.open(lock, os.O_RDONLY | cloexec)
        except OSError:
            pass
        err = "Permission denied"
    except OSError as exc:
        err = exc.strerror or str(exc)
    raise StoreError(f"cannot write the schedule to {target}: cannot create the lock file {lock}: {err}")


@contextlib.contextmanager
def exclusive_lock(
    target: str | os.PathLike,
    *,
    timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    on_wait: Callable[[LockOwner | None, Path], None] | None = None,
) -> Iterator[Held]:
    """Hold the build lock of ``target`` for the duration of the ``with`` block.

    Parameters
    ----------
    target : path
        The store the lock protects; the lock file is :func:`lock_path` ``(target)``.
        Its parent directory must exist.
    timeout : float or None, default :data:`DEFAULT_LOCK_TIMEOUT`
        Seconds to wait for another holder; None waits forever, 0 tries once.
    on_wait : callable(owner, lock_file), optional
        Called once while waiting: as soon as the holder's JSON can be read, or with
        None when it still cannot after ``_OWNER_GRACE`` seconds (not at all when the
        timeout comes first; the timeout's message then names the holder if it can).

    Yields
    ------
    Held
        Seconds spent waiting, and whether the lock is held (not on a filesystem
        without locking, where the body runs unprotected after a warning).

    Raises
    ------
    LockTimeoutError
        The lock was still held after ``timeout`` seconds.
    StoreError
        The lock file cannot be created (read-only or full output directory).
    """
    target = Path(target)
    lock = lock_path(target)
    if fcntl is None:  # pragma: no cover - Windows
        _log.warning("no file locking on this platform; concurrent builds of %s may both compute", target)
        yield Held(0.0, locked=False)
        return
    t0 = time.monotonic()
    deadline = None if timeout is None else t0 + max(0.0, float(timeout))
    poll = _POLL_FIRST
    told = False
    held_since: float | None = None
    while True:
        fd = _open_lock_file(lock, target)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKING:
                _log.warning(
                    "cannot lock %s (%s); building without a lock: a concurrent build of the same "
                    "store may compute it too", lock, exc.strerror,
                )
                yield Held(time.monotonic() - t0, locked=False)
                return
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"cannot lock {lock} to build {target}: {exc.strerror or exc}") from None
            if not told:
                # The holder writes its JSON just after taking the flock: a waiter that
                # arrives in between finds the file empty, so give the holder a moment.
                owner = read_owner(lock)
                if held_since is None:
                    held_since = time.monotonic()
                if owner is not None or time.monotonic() - held_since >= _OWNER_GRACE:
                    told = True
                    if on_wait is not None:
                        on_wait(owner, lock)
            if deadline is not None and time.monotonic() >= deadline:
                owner = read_owner(lock)
                raise LockTimeoutError(
                    f"timed out after {time.monotonic() - t0:.0f} s waiting for another build of {target} "
                    f"({owner.describe() if owner else 'holder unknown'}); it holds {lock}. "
                    "Wait for it to finish or raise the lock timeout"
                ) from None
            sleep = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            time.sleep(sleep)
            poll = min(_POLL_MAX, poll * 1.5)
            continue
        # Locked, but the file may have been deleted (its holder released it) or
        # replaced between our open and our flock: then the lock guards nothing.
        if not _same_file(fd, lock):
            os.close(fd)
            continue
        break
    waited = time.monotonic() - t0
    try:
        _write_owner(fd, target)
        yield Held(waited, locked=True)
    finally:
        # Unlink while still holding the lock, so that a waiter that then gets the
        # lock on this (deleted) file notices and retries on a fresh one.
        try:
            if _same_file(fd, lock):
                os.unlink(lock)
        except OSError:
            pass  # read-only now, or gone: the next build reuses or recreates it
        os.close(fd)
