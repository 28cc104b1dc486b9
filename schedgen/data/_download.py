"""Downloads of dataset files: an overall deadline, progress on stderr, an MD5
check, and no partial file left under a final name (removed on failure, on
SIGTERM, or by the next download once its process is gone)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from .._proc import pid_alive
from ..errors import DataError, ParameterError
from ._sources import _CIFAR_FILES, _MD5

#: Seconds one download may take in all, unless ``$SCHEDGEN_DOWNLOAD_TIMEOUT`` says otherwise.
DEFAULT_DOWNLOAD_TIMEOUT = 1800.0
_DOWNLOAD_TIMEOUT_ENV = "SCHEDGEN_DOWNLOAD_TIMEOUT"
# Longest wait for the connection or for any one read (also capped by the deadline).
_READ_TIMEOUT = 60.0
_READ_SIZE = 1 << 16
# Seconds between two progress lines on stderr.
_PROGRESS_EVERY = 5.0
# A partial file that no live process on this machine can own (another host's, or
# one named by an older schedgen without a pid) is removed once unmodified this long.
# A live download writes at least once per _READ_TIMEOUT.
_STALE_PART_SECONDS = 24 * 3600.0
# ".<name>.<pid>-<host tag>.<random>.part" (see _atomic_path).
_PART_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[a-z0-9_]+\.part$")
# ".<name>.<random>.part": partial files of schedgen versions before the pid was named.
_LEGACY_PART_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.part$")
_KNOWN_FILES = frozenset(
    [url.rsplit("/", 1)[1] for url in _MD5]
    + [f for files in _CIFAR_FILES.values() for f in files]
    + ["batches.meta"]
)


def download_timeout() -> float:
    """Seconds one download may take in all: ``$SCHEDGEN_DOWNLOAD_TIMEOUT`` if set, else 1800.

    Returns
    -------
    float
        The deadline in seconds, positive and finite.

    Raises
    ------
    ParameterError
        If the variable is set to anything but a positive finite number.
    """
    raw = os.environ.get(_DOWNLOAD_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_DOWNLOAD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(
            f"{_DOWNLOAD_TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}"
        )
    return value


def _fetch(
    url: str,
    dest: str,
    *,
    timeout: float | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Write the body of ``url`` to the (existing, empty) file ``dest``.

    The one place that touches the network; tests replace it. ``timeout`` is the
    deadline of the whole transfer in seconds (default :func:`download_timeout`),
    checked between reads; no single wait lasts more than
    ``min(60 s, timeout)``. ``progress(done, total)`` is called before the first
    read and after every read (``total`` is None without a Content-Length).
    """
    import urllib.request

    deadline = download_timeout() if timeout is None else float(timeout)
    start = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "schedgen"})
    opened = urllib.request.urlopen(request, timeout=min(_READ_TIMEOUT, deadline))
    with opened as response, open(dest, "wb") as fh:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        read = getattr(response, "read1", response.read)  # read1: whatever has arrived
        done = 0
        if progress is not None:
            progress(done, total)
        while True:
            if time.monotonic() - start > deadline:
                of = "" if total is None else f" of {total}"
                raise TimeoutError(
                    f"not complete after the deadline of {deadline:g} s ({done}{of} bytes received); "
                    f"set {_DOWNLOAD_TIMEOUT_ENV} to a longer time in seconds"
                )
            chunk = read(_READ_SIZE)
            if not chunk:
                break
            fh.write(chunk)
            fh.flush()  # the part file's mtime shows a live download (see _remove_stale_parts)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    size = os.path.getsize(dest)
    if total is not None and size != total:
        raise OSError(f"connection closed after {size} of {total} bytes")


def _stderr_progress(url: str, every: float) -> Callable[[int, int | None], None]:
    """A ``progress(done, total)`` writing one line to stderr at the start, every
    ``every`` seconds and at the end (when the size is known)."""
    last = -math.inf

    def report(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - last < every and not finished:
            return
        last = now
        if total:
            amount = f"{_size(done)} of {_size(total)} ({100 * done // total}%)"
        else:
            amount = _size(done) if total is None else "0 B of 0 B"
        sys.stderr.write(f"downloading {url}: {amount}\n")
        sys.stderr.flush()

    return report


def _size(n: int) -> str:
    if n < 10_000:
        return f"{n} B"
    if n < 10_000_000:
        return f"{n / 1e3:.0f} kB"
    return f"{n / 1e6:.1f} MB"


def _download(
    url: str,
    dest: Path,
    *,
    timeout: float | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Fetch ``url`` to ``dest``, checked against its MD5 when one is known.

    The body goes to a temporary file beside ``dest`` that is renamed only once
    complete and verified, so a failed or partial download never leaves a file
    under the final name. The temporary file is removed on any exception, on a
    SIGTERM during the transfer (see :func:`_sigterm_raises`), and, if the
    process dies otherwise, by the next download into the same directory (see
    :func:`_remove_stale_parts`).

    Parameters
    ----------
    timeout : float, optional
        Deadline of the whole transfer in seconds; default :func:`download_timeout`
        (``$SCHEDGEN_DOWNLOAD_TIMEOUT`` or 30 minutes).
    progress : callable, optional
        ``progress(done, total)`` after every read; default: a line on stderr
        every 5 seconds with the bytes received and the total.
    """
    deadline = download_timeout() if timeout is None else timeout
    if progress is None:
        progress = _stderr_progress(url, _PROGRESS_EVERY)
    with _sigterm_raises(url), _atomic_path(dest) as tmp:
        try:
            _fetch(url, tmp, timeout=deadline, progress=progress)
        except Exception as exc:  # any failure of the transfer is reported the same way
            reason = getattr(exc, "reason", None) or exc
            raise DataError(f"could not download {url}: {type(exc).__name__}: {reason}") from exc
        expected = _MD5.get(url)
        if expected is not None:
            got = _md5(tmp)
            if got != expected:
                raise DataError(
                    f"downloaded {url} is corrupt: MD5 {got}, expected {expected}; the file was discarded"
                )


class _Terminated(BaseException):
    """A SIGTERM received during a download (a BaseException, like KeyboardInterrupt)."""


@contextlib.contextmanager
def _sigterm_raises(url: str):
    """Turn a SIGTERM inside the block into an exception, so the cleanup of the
    block (the temporary file) runs; then deliver the SIGTERM again to the
    handler that was in place before (by default, the process ends with it).

    Only on the main thread (where Python can install handlers) and only when
    SIGTERM is neither ignored nor handled outside Python; otherwise the block
    runs with the disposition unchanged. If the previous handler returns, the
    download ends with a DataError.
    """
    previous = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN:
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)
        raise DataError(
            f"download of {url} stopped by SIGTERM; the partial file was removed"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _remove_stale_parts(directory: Path) -> list[Path]:
    """Remove the partial files of dead downloads (and extractions) in ``directory``.

    A partial file ``.<name>.<pid>-<host tag>.<random>.part`` is removed when it
    was made on this machine (same host tag) and no process ``pid`` runs; one
    from another machine sharing the directory, or one of an older schedgen
    (``.<name>.<random>.part`` with a known dataset file name), only once it has
    not been modified for 24 hours. Returns the paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    here = _host_tag()
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".part")):
            continue
        m = _PART_RE.match(name)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            old = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_PART_SECONDS
        except OSError:
            continue
        if m is not None:
            stale = not pid_alive(int(m["pid"])) if m["host"] == here else old
        else:
            legacy = _LEGACY_PART_RE.match(name)
            stale = legacy is not None and legacy["name"] in _KNOWN_FILES and old
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def _atomic_path(dest: Path):
    """Yield a fresh temporary path beside ``dest``; rename it to ``dest`` on
    success, delete it on any exception (including KeyboardInterrupt).

    The temporary is ``.<name>.<pid>-<host tag>.<random>.part``, so that the
    file of a process that died can be told from a live one; such files are
    removed first (:func:`_remove_stale_parts`).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(dest.parent)
        fd, tmp = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}-{_host_tag()}.", suffix=".part"
        )
        os.close(fd)
    except OSError as exc:
        raise DataError(f"cannot write to {dest.parent} ({type(exc).__name__}: {exc})") from exc
    try:
        yield tmp
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise DataError(f"cannot move the download into place at {dest}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _md5(path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
