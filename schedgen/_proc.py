"""Process facts shared by the layers that clean up after dead processes (data's
partial downloads, the store's temporaries). Standard library only."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


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
