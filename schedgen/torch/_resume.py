"""The resume logic of both samplers, in torchdata ``StatefulDataLoader``'s protocol.

A :class:`Cursor` is where a sampler's newest pass stands (``epoch``,
``yielded``: what ``state_dict`` reports) and a loaded position that the next
pass starts from (``pending``). ``load_state_dict`` stores the position and the
next ``__iter__`` continues from it; without a freshly loaded state,
``__iter__`` starts its epoch at batch 0. Only the newest iterator moves the
position (an abandoned one still yields, but must not), and a batch is counted
before it is handed out, since torchdata snapshots the state right after
``next()``. :func:`check_keys` and :func:`read_position` are the state-dict
checks both samplers share.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import ParameterError
from ._validate import check_int


class Cursor:
    """The resume position of a batch sampler.

    Parameters
    ----------
    epoch : int, default 0
        The epoch of the initial position (batch 0 of it).

    Attributes
    ----------
    epoch : int
        The epoch of the position ``state_dict`` reports.
    yielded : int
        Batches of ``epoch`` handed out by the newest iterator.
    pending : tuple of (int, int) or None
        A loaded ``(epoch, yielded)`` the next :meth:`begin` starts from.
    """

    __slots__ = ("epoch", "yielded", "pending", "_live")

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch
        self.yielded = 0
        self.pending: tuple[int, int] | None = None
        self._live: object | None = None

    def position(self) -> dict[str, int]:
        """``{"epoch": ..., "yielded": ...}``, the head of a ``state_dict``."""
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load(self, epoch: int, yielded: int) -> None:
        """Take a loaded position: the next :meth:`begin` continues from it; running iterators stop counting."""
        self.pending = (epoch, yielded)
        self.epoch, self.yielded, self._live = epoch, yielded, None

    def restart(self, epoch: int) -> None:
        """Move to batch 0 of ``epoch``, dropping any loaded position; running iterators stop counting."""
        self.pending = None
        self.epoch, self.yielded, self._live = epoch, 0, None

    def settle(self, wanted: int, epoch: int, yielded: int, n_batches: int) -> None:
        """Reconcile a loaded ``(epoch, yielded)`` with the ``wanted`` epoch of ``set_epoch``.

        Nothing to do when they agree; a finished epoch's state (``yielded ==
        n_batches``) is dropped for batch 0 of ``wanted``; a mid-epoch state of
        another epoch is refused, since it would replay the wrong batches.
        """
        if wanted == epoch:
            return
        if yielded < n_batches:
            raise ParameterError(
                f"the loaded state is in the middle of epoch {epoch} ({yielded} of {n_batches} batches yielded) "
                f"but epoch {wanted} was requested with set_epoch; call set_epoch({epoch}) to resume it"
            )
        self.restart(wanted)

    def begin(self, epoch: int) -> tuple[int, int, object]:
        """Fix the start of a new pass when ``iter()`` is called.

        Returns
        -------
        epoch, start : int
            The loaded position if one is pending (it is consumed), else
            batch 0 of ``epoch``.
        token : object
            The pass's identity for :meth:`play`; it makes this pass the newest.
        """
        start = 0
        if self.pending is not None:
            (epoch, start), self.pending = self.pending, None
        token = object()
        self._live = token
        self.epoch, self.yielded = epoch, start
        return epoch, start, token

    def play(
        self,
        batches: Sequence[Any],
        start: int,
        token: object,
        convert: Callable[[Any], list[int]],
        on_start: Callable[[], None] | None = None,
    ) -> Iterator[list[int]]:
        """Yield ``convert(batches[i])`` for ``i >= start``, counting them while this pass is the newest.

        ``on_start`` runs when the newest pass hands out its first batch (at
        ``next()``, not at ``iter()``).
        """
        if on_start is not None and self._live is token:
            on_start()
        for i in range(start, len(batches)):
            if self._live is token:
                # Counted before it is handed out: torchdata snapshots right after next().
                self.yielded = i + 1
            yield convert(batches[i])

    def is_live(self, token: object) -> bool:
        """Whether the pass of ``token`` (from :meth:`begin`) is the newest, whose batches count."""
        return self._live is token

    def save(self) -> tuple:
        """Everything :meth:`restore` needs to undo later moves."""
        return (self.epoch, self.yielded, self.pending, self._live)

    def restore(self, saved: tuple) -> None:
        """Go back to a :meth:`save`d position (the pass that was newest is newest again)."""
        self.epoch, self.yielded, self.pending, self._live = saved


def check_keys(state_dict: Any, keys: Sequence[str], owner: str) -> None:
    """Refuse a ``state_dict`` that is not a mapping or lacks some of ``keys`` (of an ``owner`` state)."""
    if not isinstance(state_dict, Mapping):
        raise ParameterError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ParameterError(
            f"state_dict must have keys {list(keys)}; missing {missing} (is it a {owner} state?)"
        )


def read_position(
    state_dict: Mapping[str, Any], n_batches: Callable[[int], int], *, same_length: bool = False
) -> tuple[int, int]:
    """The ``(epoch, yielded)`` of a state, ``yielded`` at most the epoch's ``n_batches(epoch)``.

    ``same_length``: every epoch has as many batches (the message then says "an epoch").
    """
    epoch = check_int("state_dict['epoch']", state_dict["epoch"], low=0)
    yielded = check_int("state_dict['yielded']", state_dict["yielded"], low=0)
    n = n_batches(epoch)
    if yielded > n:
        where = "an epoch" if same_length else f"epoch {epoch}"
        raise ParameterError(f"state_dict['yielded'] must be at most the {n} batches of {where}, got {yielded}")
    return epoch, yielded
