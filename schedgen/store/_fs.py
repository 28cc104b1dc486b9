"""Filesystem steps of a write: the atomic directory, the ``renameat2`` exchange and
the removal of temporaries left by writers that died."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from pathlib import Path

from .._proc import pid_alive
from ..errors import StoreError


def atomic_directory(final: str | os.PathLike, *, replace: bool = False):
    """Context manager yielding a temporary sibling directory renamed to ``final`` on success.

    On any exception the temporary directory is removed and ``final`` is untouched.
    With ``replace=True`` an existing ``final`` is replaced only after the new one is
    complete, by one atomic exchange where the system has it (Linux ``renameat2``; else
    moved aside, then the new one renamed in, then the old one deleted).

    Parameters
    ----------
    final : str or os.PathLike
        The directory to create (or replace).
    replace : bool, default False
        Replace an existing ``final``; without it an existing one raises
        :class:`~schedgen.errors.StoreError` on entry.

    Returns
    -------
    context manager
        Its ``__enter__`` returns the temporary directory's :class:`~pathlib.Path`
        (it does not exist yet: the caller creates and fills it).
    """
    return _AtomicDir(Path(final), replace)


class _AtomicDir:
    def __init__(self, final: Path, replace: bool) -> None:
        self.final = final
        self.replace = replace
        self.tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create output directory {self.final.parent}: {exc.strerror or exc}") from None
        if self.final.exists() and not self.replace:
            raise StoreError(f"{self.final} already exists; expected a new path (or pass --force to replace it)")
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            _settle_zarr()
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        try:
            if self.final.exists() and self.replace:
                if _exchange(self.tmp, self.final):
                    # One atomic step: ``final`` is the old store, then the new one, never
                    # absent; the old one now sits at the temporary name.
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    return False
                # No atomic exchange here (not Linux, or a filesystem without it): a
                # crash between these two renames leaves the old store at ``old``
                # (readers say so, see _read._open_group).
                old = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(self.final, old)
            os.replace(self.tmp, self.final)
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if old is not None and not self.final.exists():
                os.replace(old, self.final)
            raise StoreError(f"cannot move the finished store to {self.final}: {exc.strerror or exc}") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _settle_zarr(timeout: float = 5.0) -> None:
    """Wait until zarr's IO loop has no task left (at most ``timeout`` seconds).

    A zarr call that fails returns at its first error, while the writes it started
    beside it go on in zarr's IO thread; one of them could recreate a file in the
    temporary folder after it was removed. Waiting for them first leaves nothing.
    The bound keeps a failure from hanging on unrelated long-lived tasks (a remote
    store's session, say); local writes in flight end within milliseconds.
    """
    import asyncio

    try:
        from zarr.core import sync as zsync
    except ImportError:  # pragma: no cover - another zarr layout: nothing to wait for
        return
    loops = getattr(zsync, "loop", None)
    lp = loops[0] if isinstance(loops, list) and loops else None
    if not isinstance(lp, asyncio.AbstractEventLoop) or lp.is_closed() or not lp.is_running():
        return

    async def others() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(others(), lp).result(timeout=timeout + 1)
    except Exception:  # a timeout or a closing loop: remove what is there anyway
        pass


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when this system or filesystem cannot (then nothing happened);
    raises OSError on any other failure.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False  # glibc < 2.28, musl without the wrapper
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_orphans(final: str | os.PathLike) -> list[Path]:
    """Delete the temporary directories of ``final`` left by writers that died.

    A temporary is ``.<name>.tmp-<pid>-<hex>`` beside ``final``; it is removed when no
    process with that pid runs on this machine. Call it only while holding the build
    lock of ``final`` (:mod:`schedgen.locks`), so no live writer of it can exist here.

    Parameters
    ----------
    final : str or os.PathLike
        The store whose temporaries to look for (it need not exist).

    Returns
    -------
    list of Path
        The temporaries removed.
    """
    final = Path(final)
    prefix = f".{final.name}.tmp-"
    removed = []
    try:
        siblings = list(final.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed
