"""Process and file facts shared by every layer: whether a process is alive (to clean
up after dead ones) and the one temp-then-rename writer. Standard library only."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Callable

__all__ = ["pid_alive", "temporary_sibling", "atomic_write"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine.

    ``True`` when it is unknowable (another user's process, a pid out of range): callers
    use this to decide whether to remove a file a process may still own, and keep it when
    in doubt.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A name beside ``path`` that no other writer uses, in this process or another:
    ``.<name>.<pid>-<random>`` + ``suffix`` (hidden, on the same filesystem, so a rename
    onto ``path`` is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def atomic_write(path: Path, write: Callable[[Path], None], *, suffix: str = ".tmp") -> None:
    """Write ``path`` whole or not at all: ``write(tmp)`` on a :func:`temporary_sibling`,
    then ``os.replace`` onto ``path`` (its folder created first).

    Parameters
    ----------
    path : Path
    write : callable(Path)
        Writes the content to the path it is given.
    suffix : str, default ".tmp"
        The temporary's suffix (a writer such as ``np.save`` that appends its own
        extension needs the final one, e.g. ``".tmp.npy"``).

    Raises
    ------
    OSError
        From the folder's creation, ``write`` or the rename; the temporary is removed
        and ``path`` keeps what it held.
    """
    tmp = temporary_sibling(path, suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
