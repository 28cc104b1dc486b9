"""Checkpoints of long builds, so that a killed build continues where it stopped.

A checkpoint is one ``.npz`` file of arrays under a deterministic path (beside the
store being built), tagged with the build's cache key. It is written atomically
(temporary file, then rename), so a kill during a save leaves the previous one.
A checkpoint whose key does not match, or that cannot be read, is ignored. A
checkpoint that cannot be written (disk full, folder read-only) does not stop the
build: the first failure of each :class:`Checkpoint` is reported as a
:class:`~schedgen.errors.SchedgenWarning` naming the path and the reason.
"""

from __future__ import annotations

import os
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ._proc import atomic_write
from .errors import SchedgenWarning

__all__ = ["Checkpoint", "checkpoint_interval", "CHECKPOINT_SECONDS_ENV"]

#: Seconds between checkpoints (environment override, e.g. 0 = after every step).
CHECKPOINT_SECONDS_ENV = "SCHEDGEN_CHECKPOINT_SECONDS"
DEFAULT_CHECKPOINT_SECONDS = 30.0


def checkpoint_interval() -> float:
    """The checkpoint period in seconds: ``$SCHEDGEN_CHECKPOINT_SECONDS`` or 30."""
    raw = os.environ.get(CHECKPOINT_SECONDS_ENV, "")
    try:
        v = float(raw)
    except ValueError:
        return DEFAULT_CHECKPOINT_SECONDS
    return v if v >= 0 else DEFAULT_CHECKPOINT_SECONDS


class Checkpoint:
    """Save and load a build's resumable state.

    Parameters
    ----------
    path : path of the ``.npz`` file
    key : str
        The build's cache key; a checkpoint with another key is not loaded.
    every : float, optional
        Minimum seconds between two saves by :meth:`maybe_save` (default
        :func:`checkpoint_interval`).
    warn : callable, optional
        Called with a one-line message the first time a save fails (default: a
        :class:`~schedgen.errors.SchedgenWarning` through :func:`warnings.warn`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        key: str,
        *,
        every: float | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.key = key
        self.every = checkpoint_interval() if every is None else float(every)
        self._last = time.monotonic()
        self._warn = warn
        self.saves = 0
        #: Saves that failed (each left the previous checkpoint in place).
        self.failures = 0

    def load(self) -> dict | None:
        """The saved arrays, or None when there is no usable checkpoint for this key."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if "__key__" not in z.files or str(z["__key__"]) != self.key:
                    return None
                return {name: z[name] for name in z.files if name != "__key__"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # absent, truncated or foreign: start afresh

    def save(self, state: Mapping[str, np.ndarray]) -> None:
        """Write ``state`` atomically.

        A failed write (disk full, read-only folder) keeps the previous checkpoint and
        does not raise: checkpoints only save time, and the final store write reports
        disk problems itself. The first failure warns (see ``warn``); later ones of
        this checkpoint are counted in :attr:`failures` only, so a build saving every
        few seconds onto a full disk warns once, not on every save.
        """
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, __key__=np.array(self.key), **{k: np.asarray(v) for k, v in state.items()})

        try:
            atomic_write(self.path, write)  # a temporary that outlives a kill: clear() removes it
            self.saves += 1
        except OSError as exc:
            self._failed(exc)
        self._last = time.monotonic()

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        if self.failures > 1:
            return
        reason = exc.strerror or str(exc) or type(exc).__name__
        msg = (
            f"cannot save the build's checkpoint {self.path}: {reason}; the build goes on, "
            "but if it is killed a rerun continues only from an earlier checkpoint, if any "
            "(further failures of this checkpoint are not reported)"
        )
        if self._warn is not None:
            self._warn(msg)
        else:
            warnings.warn(msg, SchedgenWarning, stacklevel=3)

    def maybe_save(self, make_state: Callable[[], Mapping[str, np.ndarray]], *, force: bool = False) -> bool:
        """Save ``make_state()`` when ``every`` seconds have passed (or ``force``)."""
        if force or time.monotonic() - self._last >= self.every:
            self.save(make_state())
            return True
        return False

    def clear(self) -> None:
        """Remove the checkpoint (after the store is complete), with any temporary of a
        save that was killed, and its folder when that is then empty."""
        for p in [self.path, *self.path.parent.glob(f".{self.path.name}.*.tmp")]:
            try:
                p.unlink()
            except OSError:
                pass
        try:
            self.path.parent.rmdir()  # the partial directory, when empty
        except OSError:
            pass
