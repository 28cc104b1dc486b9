"""Replay a precomputed schedule store: :class:`ScheduleBatchSampler`.

Epochs, sharding and the resume protocol are described in :mod:`schedgen.torch`;
the resume position itself is a :class:`~schedgen.torch._resume.Cursor`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from ..errors import ParameterError
from ..store import Schedule, read_schedule, schedule_digest
from ._resume import Cursor, check_keys, read_position
from ._validate import check_dataset, check_int, check_str

__all__ = ["ScheduleBatchSampler"]

#: Keys of :meth:`ScheduleBatchSampler.state_dict`.
_STATE_KEYS = ("epoch", "yielded", "digest", "rank", "world_size")


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
    dataset : map-style dataset, optional
        The dataset the ``DataLoader`` will index, checked against the
        schedule: ``len(dataset)`` must equal the store's ``n_samples``, and a
        dataset with a ``schedgen_fingerprint`` attribute (as
        :func:`schedule_dataset` returns) must carry the store's dataset
        fingerprint. The sampler keeps no reference to it. Pass it: a
        ``DataLoader`` never tells its batch sampler which dataset it indexes,
        so without it a schedule replays over any dataset with enough rows.

    Attributes
    ----------
    schedule : Schedule
        The schedule in memory (read-only int64 arrays).
    digest : str
        The schedule digest (hex sha256 of ``indices`` and ``batch_offsets``).

    Raises
    ------
    ParameterError
        Bad ``rank``/``world_size``/``epoch``, a schedule without epochs, a
        batch smaller than ``world_size``, or a ``dataset`` of another length or
        fingerprint than the schedule's.
    StoreError
        The store is missing, malformed or fails its digest check.

    Examples
    --------
    >>> dataset = schedule_dataset("runs/mmd.zarr")  # doctest: +SKIP
    >>> sampler = ScheduleBatchSampler("runs/mmd.zarr", rank=rank, world_size=ws, dataset=dataset)  # doctest: +SKIP
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
        dataset: Any = None,
    ) -> None:
        world_size = check_int("world_size", world_size, low=1)
        rank = check_int("rank", rank, low=0, high=world_size)
        epoch = check_int("epoch", epoch, low=0)
        self.schedule = _load(source)
        if dataset is not None:
            check_dataset(dataset, self.schedule)
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
        # The position state_dict reports, and a loaded one not yet consumed by __iter__.
        self._cursor = Cursor(epoch)
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
        epoch = check_int("epoch", epoch, low=0)
        pending = self._cursor.pending
        if pending is not None:
            self._cursor.settle(epoch, *pending, self._n_batches(pending[0]))
        self._epoch = epoch
        self._epoch_pinned = True
        if epoch != self._cursor.epoch:
            self._cursor.restart(epoch)

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
        epoch, start, token = self._cursor.begin(self._epoch)
        self._epoch = epoch
        # A copy: the cached lists are reused by later epochs.
        return self._cursor.play(self._batches(epoch), start, token, self._copy_batch)

    #: How a cached batch is handed out (a subclass whose batches carry more than a list overrides it).
    _copy_batch = staticmethod(list.copy)

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
            **self._cursor.position(),
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
        check_keys(state_dict, _STATE_KEYS, "ScheduleBatchSampler")
        digest = check_str("state_dict['digest']", state_dict["digest"], hex64=True)
        if digest != self.digest:
            raise ParameterError(
                f"state_dict comes from another schedule: its digest is {digest[:16]}..., "
                f"this sampler's schedule has {self.digest[:16]}..."
            )
        world_size = check_int("state_dict['world_size']", state_dict["world_size"], low=1)
        rank = check_int("state_dict['rank']", state_dict["rank"], low=0)
        for key, theirs, mine in (("world_size", world_size, self.world_size), ("rank", rank, self.rank)):
            if theirs != mine:
                raise ParameterError(
                    f"state_dict was saved with {key}={theirs}, this sampler has {key}={mine}; "
                    "a state resumes only the same sharding"
                )
        epoch, yielded = read_position(state_dict, self._n_batches)
        if self._epoch_pinned and epoch != self._epoch:
            # a finished epoch's state is dropped (the pinned epoch starts at batch 0); a mid-epoch one refused
            self._cursor.settle(self._epoch, epoch, yielded, self._n_batches(epoch))
            return
        self._cursor.load(epoch, yielded)
        self._epoch = epoch
        self._epoch_pinned = False

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
            schedgen_format=source.schedgen_format,
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

