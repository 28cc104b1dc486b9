"""Replay a schedule store in PyTorch: a resumable, rank-sharded batch sampler.

This is the only schedgen module that imports :mod:`torch`; ``import schedgen``
does not load it. Use it as ``DataLoader(dataset, batch_sampler=sampler)`` or
with torchdata's ``StatefulDataLoader`` for mid-epoch resume.

Epochs
------
A schedule holds ``n_epochs`` epochs. ``set_epoch(e)`` plays schedule epoch
``e % n_epochs``: a one-epoch schedule repeats every epoch, a multi-epoch
schedule cycles through its epochs.

Sharding
--------
Every global batch is split into ``world_size`` contiguous parts whose sizes
differ by at most one (``np.array_split``: earlier ranks get the extra sample);
rank ``r`` yields part ``r``. Every rank yields the same number of batches and
the parts of one step reunite to the global batch.

Resume
------
The state is a few plain values: ``epoch``, ``yielded`` (batches of that epoch
already handed out), and the schedule ``digest``, ``rank`` and ``world_size``,
which must match on load. It follows the protocol of torchdata's
``StatefulDistributedSampler``: :meth:`ScheduleBatchSampler.load_state_dict`
stores the position and the next ``__iter__`` continues from it; without a
freshly loaded state, ``__iter__`` starts the epoch at batch 0.
``StatefulDataLoader`` calls ``load_state_dict`` inside ``iter(loader)``, that
is after the ``set_epoch`` at the top of a training loop, so a loaded state
interacts with :meth:`~ScheduleBatchSampler.set_epoch` as follows:

* without a ``set_epoch`` call since construction (or since the last load), the
  state's epoch becomes the sampler's epoch;
* ``set_epoch`` with the state's epoch, before or after the load, continues it;
* ``set_epoch`` with another epoch drops a state whose epoch was finished
  (``yielded`` equals its batch count; the other epoch starts at batch 0) and
  raises :class:`~schedgen.errors.ParameterError` for a mid-epoch state, since
  continuing it in another epoch would replay the wrong batches.

A loader state taken after a ``for`` loop ran out is marked finished by
torchdata, which then starts a new pass: resume it with ``set_epoch(e + 1)``.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from .errors import ParameterError
from .store import Schedule, read_schedule, schedule_digest

__all__ = ["ScheduleBatchSampler"]

#: Keys of :meth:`ScheduleBatchSampler.state_dict`.
_STATE_KEYS = ("epoch", "yielded", "digest", "rank", "world_size")


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high)``; reject bools, floats and others."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ParameterError(f"{name} must be an integer {bound}, got {name}={value}")
    return value


class ScheduleBatchSampler(Sampler[list[int]]):
    """Yield this rank's part of each batch of a precomputed schedule.

    Parameters
    ----------
    source : str, os.PathLike or Schedule
        A schedule store (local path or fsspec URL such as ``http://host/s.zarr``
        or ``s3://bucket/s.zarr``), read once with digest verification, or an
        already loaded :class:`~schedgen.store.Schedule` (validated and copied).
    rank : int, default 0
        This process's rank, ``0 <= rank < world_size``.
    world_size : int, default 1
        Number of ranks sharing each global batch; every batch of the schedule
        must hold at least ``world_size`` samples.
    epoch : int, default 0
        Initial epoch, as :meth:`set_epoch` (a loaded state's epoch replaces it).

    Attributes
    ----------
    schedule : Schedule
        The schedule in memory (read-only int64 arrays).
    digest : str
        The schedule digest (hex sha256 of ``indices`` and ``batch_offsets``).

    Raises
    ------
    ParameterError
        Bad ``rank``/``world_size``/``epoch``, a schedule without epochs, or a
        batch smaller than ``world_size``.
    StoreError
        The store is missing, malformed or fails its digest check.

    Examples
    --------
    >>> sampler = ScheduleBatchSampler("runs/mmd.zarr", rank=rank, world_size=ws)  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_sampler=sampler)  # doctest: +SKIP
    >>> for epoch in range(n_epochs):  # doctest: +SKIP
    ...     sampler.set_epoch(epoch)
    ...     for x, y in loader:
    ...         ...
    """

    def __init__(
        self,
        source: str | os.PathLike | Schedule,
        *,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
    ) -> None:
        world_size = _check_int("world_size", world_size, low=1)
        rank = _check_int("rank", rank, low=0, high=world_size)
        epoch = _check_int("epoch", epoch, low=0)
        self.schedule = _load(source)
        self.digest = schedule_digest(self.schedule.indices, self.schedule.batch_offsets)
        self.rank = rank
        self.world_size = world_size
        self._n_epochs = self.schedule.n_epochs
        if self._n_epochs < 1:
            raise ParameterError(f"the schedule must hold at least one epoch to replay, got n_epochs={self._n_epochs}")
        self._check_shardable()

        self._epoch = epoch
        # True once set_epoch chose the epoch (a loaded state must then agree with it).
        self._epoch_pinned = False
        # (epoch, yielded) loaded but not yet consumed by __iter__.
        self._pending: tuple[int, int] | None = None
        # Position reported by state_dict: batches of _pos_epoch handed out so far.
        self._pos_epoch = epoch
        self._pos = 0
        # Only the newest iterator moves _pos (an abandoned one must not).
        self._live: object | None = None
        self._cache_epoch = -1
        self._cache: list[list[int]] = []

    # ------------------------------------------------------------------ epochs

    @property
    def epoch(self) -> int:
        """The epoch the next ``__iter__`` plays (schedule epoch ``epoch % n_epochs``)."""
        return self._epoch

    @property
    def n_epochs(self) -> int:
        """Number of epochs stored in the schedule."""
        return self._n_epochs

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next ``__iter__``.

        Plays schedule epoch ``epoch % n_epochs``: a one-epoch schedule repeats,
        a multi-epoch schedule cycles. An iterator already running keeps its epoch.

        Parameters
        ----------
        epoch : int
            A non-negative integer.

        Raises
        ------
        ParameterError
            ``epoch`` is not a non-negative integer, or it differs from the
            epoch of a loaded mid-epoch state not yet resumed.
        """
        epoch = _check_int("epoch", epoch, low=0)
        if self._pending is not None:
            self._reconcile(epoch, *self._pending)
        self._epoch = epoch
        self._epoch_pinned = True
        if epoch != self._pos_epoch:
            self._pos_epoch, self._pos, self._live = epoch, 0, None

    def _n_batches(self, epoch: int) -> int:
        e = epoch % self._n_epochs
        off = self.schedule.epoch_offsets
        return int(off[e + 1] - off[e])

    def __len__(self) -> int:
        """Number of batches of the current epoch (every rank yields as many)."""
        return self._n_batches(self._epoch)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's part of each remaining batch of the current epoch.

        Starts at batch 0, or at the loaded position if a state was loaded since
        the last ``__iter__``. The start is fixed when ``iter()`` is called.
        """
        start = 0
        if self._pending is not None:
            p_epoch, start = self._pending
            self._pending = None
            self._epoch = p_epoch
        epoch = self._epoch
        batches = self._batches(epoch)
        token = object()
        self._live = token
        self._pos_epoch, self._pos = epoch, start
        return self._play(batches, start, token)

    def _play(self, batches: list[list[int]], start: int, token: object) -> Iterator[list[int]]:
        for i in range(start, len(batches)):
            if self._live is token:
                # Count the batch before handing it out: a state taken right after
                # next() (torchdata snapshots then) must include it.
                self._pos = i + 1
            # A copy: the cached lists are reused by later epochs.
            yield batches[i][:]

    def _batches(self, epoch: int) -> list[list[int]]:
        """This rank's parts of every batch of ``epoch``, as Python lists (cached per epoch)."""
        e = epoch % self._n_epochs
        if e != self._cache_epoch:
            s = self.schedule
            b0, b1 = int(s.epoch_offsets[e]), int(s.epoch_offsets[e + 1])
            offsets = s.batch_offsets[b0 : b1 + 1]
            q, r = np.divmod(np.diff(offsets), self.world_size)
            # np.array_split: the first r ranks take q + 1 samples, the others q.
            starts = offsets[:-1] + self.rank * q + np.minimum(self.rank, r)
            stops = starts + q + (self.rank < r)
            lo = int(offsets[0])
            flat = s.indices[lo : int(offsets[-1])].tolist()
            self._cache = [flat[a:b] for a, b in zip((starts - lo).tolist(), (stops - lo).tolist())]
            self._cache_epoch = e
        return self._cache

    def _check_shardable(self) -> None:
        sizes = np.diff(self.schedule.batch_offsets)
        small = np.flatnonzero(sizes < self.world_size)
        if len(small):
            b = int(small[0])
            e = int(np.searchsorted(self.schedule.epoch_offsets, b, side="right")) - 1
            raise ParameterError(
                f"every batch must hold at least world_size={self.world_size} samples to give each rank "
                f"one, but batch {b} (epoch {e}) holds {int(sizes[b])}"
                + (f" ({len(small)} batches are too small)" if len(small) > 1 else "")
            )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The resume state: plain ints and the schedule digest.

        Returns
        -------
        dict
            ``epoch``, ``yielded`` (batches of that epoch this sampler has handed
            out), ``digest``, ``rank`` and ``world_size``.
        """
        return {
            "epoch": self._pos_epoch,
            "yielded": self._pos,
            "digest": self.digest,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the next ``__iter__`` continues from it.

        Parameters
        ----------
        state_dict : mapping
            As returned by :meth:`state_dict`.

        Raises
        ------
        ParameterError
            The state is malformed, comes from another schedule, rank or
            world size, points past the end of its epoch, or is a mid-epoch
            state of another epoch than the one chosen with :meth:`set_epoch`.
        """
        if not isinstance(state_dict, Mapping):
            raise ParameterError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in _STATE_KEYS if k not in state_dict]
        if missing:
            raise ParameterError(
                f"state_dict must have keys {list(_STATE_KEYS)}; missing {missing} "
                "(is it a ScheduleBatchSampler state?)"
            )
        digest = state_dict["digest"]
        if digest != self.digest:
            shown = digest[:16] + "..." if isinstance(digest, str) else repr(digest)
            raise ParameterError(
                f"state_dict comes from another schedule: its digest is {shown}, "
                f"this sampler's schedule has {self.digest[:16]}..."
            )
        for key, mine in (("world_size", self.world_size), ("rank", self.rank)):
            theirs = state_dict[key]
            if isinstance(theirs, bool) or theirs != mine:
                raise ParameterError(
                    f"state_dict was saved with {key}={theirs!r}, this sampler has {key}={mine}; "
                    "a state resumes only the same sharding"
                )
        epoch = _check_int("state_dict['epoch']", state_dict["epoch"], low=0)
        yielded = _check_int("state_dict['yielded']", state_dict["yielded"], low=0)
        n = self._n_batches(epoch)
        if yielded > n:
            raise ParameterError(
                f"state_dict['yielded'] must be at most the {n} batches of epoch {epoch}, got {yielded}"
            )
        if self._epoch_pinned and epoch != self._epoch:
            self._reconcile(self._epoch, epoch, yielded)
            return  # a finished epoch's state: the pinned epoch starts at batch 0
        self._pending = (epoch, yielded)
        self._epoch = epoch
        self._epoch_pinned = False
        self._pos_epoch, self._pos, self._live = epoch, yielded, None

    def _reconcile(self, wanted: int, epoch: int, yielded: int) -> None:
        """Drop a finished-epoch state for another epoch; refuse a mid-epoch one."""
        if wanted == epoch:
            return
        n = self._n_batches(epoch)
        if yielded < n:
            raise ParameterError(
                f"the loaded state is in the middle of epoch {epoch} ({yielded} of {n} batches yielded) "
                f"but epoch {wanted} was requested with set_epoch; call set_epoch({epoch}) to resume it"
            )
        self._pending = None
        self._pos_epoch, self._pos, self._live = wanted, 0, None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(method={self.schedule.method!r}, n_epochs={self._n_epochs}, "
            f"epoch={self._epoch}, rank={self.rank}, world_size={self.world_size})"
        )


def _load(source: str | os.PathLike | Schedule) -> Schedule:
    """Read (verified) or validate and copy a schedule; arrays become read-only int64."""
    if isinstance(source, Schedule):
        try:
            source.validate()
        except (KeyError, TypeError) as exc:
            raise ParameterError(f"the Schedule is malformed: {type(exc).__name__}: {exc}") from None
        schedule = Schedule(
            indices=_frozen(source.indices),
            batch_offsets=_frozen(source.batch_offsets),
            epoch_offsets=_frozen(source.epoch_offsets),
            method=source.method,
            params=source.params,
            dataset=source.dataset,
            k=source.k,
            batch_arrays=source.batch_arrays,
            epoch_arrays=source.epoch_arrays,
            schedgen_version=source.schedgen_version,
        )
        return schedule
    if isinstance(source, (str, os.PathLike)):
        schedule = read_schedule(source, verify=True)
        for a in (schedule.indices, schedule.batch_offsets, schedule.epoch_offsets):
            a.setflags(write=False)
        return schedule
    raise ParameterError(
        f"source must be a store path, an fsspec URL or a Schedule, got {type(source).__name__}"
    )


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.int64, copy=True)
    out.setflags(write=False)
    return out

