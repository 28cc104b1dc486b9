"""Replay a precomputed schedule store: :class:`ScheduleBatchSampler`.

Epochs, sharding (with the ``uneven`` rules of :func:`local_part`) and the
resume protocol are described in :mod:`schedgen.torch`; the resume position
itself is a :class:`~schedgen.torch._resume.Cursor`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from ..errors import ParameterError
from ..store import Schedule, is_remote, read_schedule, schedule_digest
from ._resume import Cursor, check_keys, read_position
from ._validate import check_choice, check_dataset, check_int, check_str

__all__ = ["ScheduleBatchSampler", "UNEVEN", "local_part"]

#: Keys of :meth:`ScheduleBatchSampler.state_dict`.
_STATE_KEYS = ("epoch", "yielded", "digest", "rank", "world_size")

#: How a global batch whose size does not divide by ``world_size`` is shared (see :func:`local_part`).
UNEVEN = ("split", "drop", "pad")


def local_part(
    sizes: np.ndarray, rank: int, world_size: int, uneven: str = "split"
) -> tuple[np.ndarray, np.ndarray]:
    """Where ``rank``'s part of each global batch starts, and its length.

    Rank ``rank`` takes the batch's positions ``(start + j) % size`` for
    ``0 <= j < length``, with ``q, r = divmod(size, world_size)``:

    * ``split``: ``np.array_split``'s contiguous parts, the first ``r`` ranks
      take ``q + 1`` samples, the others ``q``; the parts reunite to the batch.
    * ``drop``: ``q`` samples each, contiguous: the batch's last ``r`` samples
      (in stored order) go to no rank; the parts reunite to ``batch[:q * world_size]``.
    * ``pad``: ``c = ceil(size / world_size)`` samples each, contiguous in the
      batch followed by its first ``c * world_size - size`` samples again; the
      parts reunite to ``batch + batch[:c * world_size - size]``. A part never
      holds a sample twice (``c <= size``).

    Parameters
    ----------
    sizes : array of shape (n_batches,), int
        Global batch sizes, each at least ``world_size``.
    rank, world_size : int
        ``0 <= rank < world_size``.
    uneven : {"split", "drop", "pad"}

    Returns
    -------
    start, length : arrays of shape (n_batches,), int64
    """
    q, r = np.divmod(np.asarray(sizes, dtype=np.int64), world_size)
    if uneven == "split":
        return rank * q + np.minimum(rank, r), q + (rank < r)
    if uneven == "drop":
        return rank * q, q
    c = q + (r > 0)
    return rank * c, c


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
    uneven : {"split", "drop", "pad"}, default "split"
        How a global batch of ``b`` samples is shared when ``world_size`` does
        not divide ``b`` (``q, r = divmod(b, world_size)``). ``split``: every
        sample once, local batches of ``q + 1`` (first ``r`` ranks) and ``q``.
        ``drop``: ``q`` each, the batch's last ``r`` samples unused. ``pad``:
        ``ceil(b / world_size)`` each, the batch's first ones repeated. The
        trade-off is under Notes; an even batch is split the same way by all three.

    Attributes
    ----------
    schedule : Schedule
        The schedule in memory (read-only int64 arrays).
    digest : str
        The schedule digest (hex sha256 of ``indices`` and ``batch_offsets``).
    uneven : str
        The ``uneven`` rule.

    Raises
    ------
    ParameterError
        Bad ``rank``/``world_size``/``epoch``/``uneven``, a schedule without
        epochs, a batch smaller than ``world_size``, or a ``dataset`` of
        another length or fingerprint than the schedule's.
    StoreError
        The store is missing, malformed or fails its digest check.

    Notes
    -----
    **Uneven global batches.** DDP averages the ranks' gradients with equal
    weights, and each rank's loss is (usually) the mean over its local batch, so
    local batches of different sizes weigh their samples differently:

    * ``split`` (default) trains on every sample of the batch once, but a sample
      on a rank with ``q`` samples weighs ``(q + 1) / q`` times one on a rank
      with ``q + 1``: the step's gradient is not the batch mean. It is exact if
      the loss is summed (``reduction="sum"``) and scaled by ``world_size / b``.
    * ``drop`` gives the exact mean gradient of the ``q * world_size`` samples
      kept, but the batch's last ``b mod world_size`` samples (stored order) are
      not trained on in that step. A schedule replays the same batches every
      time it cycles, so a dropped sample of a one-epoch schedule is never
      trained on; and the batch trained on is not the batch the method chose.
    * ``pad`` trains on every sample and gives equal sizes, but the batch's
      first ``ceil(b / world_size) * world_size - b`` samples (fewer than
      ``world_size``) count twice in the step's mean (batch-norm statistics
      see them twice too). No local batch holds a sample twice. It is
      ``DistributedSampler``'s rule (repeat the first ones), applied per batch.

    The rule changes what each rank gets, never the global batch order or the
    number of steps.

    **Elastic resume.** ``state_dict()["yielded"]`` counts global batches
    consumed in ``epoch`` (each rank hands out one part of each), and the
    global order does not depend on ``world_size``. So
    :meth:`load_state_dict` accepts a state saved at another ``rank``,
    ``world_size`` or ``uneven``: the next ``__iter__`` plays this sampler's
    part of the global batches from ``yielded`` on. Ranks step in lockstep
    under DDP, so every rank's state of one step holds the same
    ``(epoch, yielded)``: save one (say rank 0's) and load it on every rank of
    the restarted job, whatever its size. The same holds of a torchdata
    ``StatefulDataLoader`` state (whose sampler part is this state) when
    every rank snapshots at the same steps (the same
    ``snapshot_every_n_steps``); torchdata itself loads a loader state only
    into a loader with the same ``num_workers``. The digest is still checked:
    a state of another schedule is refused.

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
        uneven: str = "split",
    ) -> None:
        world_size = check_int("world_size", world_size, low=1)
        rank = check_int("rank", rank, low=0, high=world_size)
        epoch = check_int("epoch", epoch, low=0)
        self.uneven = check_choice("uneven", uneven, UNEVEN)
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
            sizes = np.diff(offsets)
            start, length = local_part(sizes, self.rank, self.world_size, self.uneven)
            ends = np.cumsum(length)
            # Position j of each local batch, then (start + j) % size in its global batch (pad wraps).
            j = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - length, length)
            pos = np.repeat(offsets[:-1], length) + (np.repeat(start, length) + j) % np.repeat(sizes, length)
            flat = s.indices[pos].tolist()
            self._cache = [flat[a:b] for a, b in zip((ends - length).tolist(), ends.tolist())]
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
            ``epoch``, ``yielded`` (global batches of that epoch consumed: this
            sampler handed out its part of each), ``digest``, and the ``rank``
            and ``world_size`` it was saved at (a record; any rank, world size
            and ``uneven`` rule resumes it).
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

        Notes
        -----
        Elastic: the state's ``rank`` and ``world_size`` need not be this
        sampler's. The global batch order does not depend on the world size,
        and ``yielded`` counts global batches, so the next ``__iter__`` plays
        this rank's part (under this sampler's ``world_size`` and ``uneven``)
        of the global batches from ``yielded`` on. All ranks of a step have
        consumed the same count, so one rank's state resumes every rank.

        Raises
        ------
        ParameterError
            The state is malformed (its ``rank`` not below its ``world_size``),
            comes from another schedule, points past the end of its epoch, or
            is a mid-epoch state of another epoch than the one chosen with
            :meth:`set_epoch`.
        """
        check_keys(state_dict, _STATE_KEYS, "ScheduleBatchSampler")
        digest = check_str("state_dict['digest']", state_dict["digest"], hex64=True)
        if digest != self.digest:
            raise ParameterError(
                f"state_dict comes from another schedule: its digest is {digest[:16]}..., "
                f"this sampler's schedule has {self.digest[:16]}..."
            )
        # Where the state was saved: checked as a record, never required to match (elastic resume).
        world_size = check_int("state_dict['world_size']", state_dict["world_size"], low=1)
        rank = check_int("state_dict['rank']", state_dict["rank"], low=0)
        if rank >= world_size:
            raise ParameterError(
                f"state_dict['rank'] must be below state_dict['world_size']={world_size}, got {rank}"
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
            f"epoch={self._epoch}, rank={self.rank}, world_size={self.world_size}, uneven={self.uneven!r})"
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
        if isinstance(source, str) and is_remote(source):
            from ..registry import fetch, registry_store

            if registry_store(source) is not None:
                # A registry store: every file checked against its manifest, then cached
                # locally under its content-addressed name (and reused from there).
                source = fetch(source)
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

