"""Batches whose sizes the trainer picks as it runs, recorded for replay: :class:`AdaptiveBatchSampler`."""

from __future__ import annotations

import itertools
import math
import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from ..errors import ParameterError
from ..rng import MAX_WORD, rng
from ..store import Schedule, Unchanged, write_schedule
from ._record import check_record_to, online_dataset_attr
from ._resume import Cursor, check_keys
from ._validate import check_int, shown

__all__ = ["AdaptiveBatchSampler"]

#: Keys of :meth:`AdaptiveBatchSampler.state_dict`.
_STATE_KEYS = ("epoch", "yielded", "sizes", "batch_size", "initial_batch_size", "n_samples", "seed")


class AdaptiveBatchSampler(Sampler[list[int]]):
    """Consecutive slices of a seeded permutation, each as long as the trainer asks; recorded.

    Epoch e walks the permutation ``rng(seed, "adaptive", e).permutation(n_samples)``
    (:mod:`schedgen.rng`) from its start: each batch is the next ``min(size,
    remaining)`` indices, ``size`` being the batch size in force when the batch
    is drawn. The epoch ends when the permutation is exhausted, so its last batch
    may be shorter than asked; every epoch is a permutation of ``0..n_samples-1``
    (unless :meth:`end_epoch` cuts it short). The next ``iter()`` then plays the
    next epoch by itself; :meth:`set_epoch` may be called too, in order.

    Parameters
    ----------
    n_samples : int
        The dataset's length, ``>= 1``.
    batch_size : int or callable
        An int ``>= 1``: the size of every batch until :meth:`request` changes
        it. A callable: ``batch_size(step) -> int`` is called once for each
        batch drawn, with ``step`` the batch's number in the run (the batches
        served in the earlier epochs plus its index in its epoch, from 0); it
        must return an int ``>= 1``. A size above what remains of the epoch
        serves the rest of it.
    seed : int, default 0
        ``0 <= seed < 2**32``.
    record : str or os.PathLike, optional
        A local path where the served batches are recorded as a store of the
        current format (see Notes). An existing path must be a store recorded
        by this class (it is replaced); anything else there is refused.
        One recording sampler per path: writes are atomic but not locked, so
        under DDP record on rank 0 only (the sampler serves global batches;
        shard them when replaying with ``ScheduleBatchSampler(rank=, world_size=)``).
    dataset_info : mapping, optional
        ``name``, ``split`` and ``fingerprint`` (non-empty strings) for the
        store's ``dataset`` attribute; defaults ``"online"``, ``"train"`` and no
        fingerprint. ``n_samples`` comes from the sampler, ``n_classes`` is null.

    Attributes
    ----------
    n_samples, seed : int
    record : pathlib.Path or None
    dataset : dict
        The ``dataset`` attribute of the record.

    Raises
    ------
    ParameterError
        A bad ``n_samples``, ``batch_size``, ``seed``, ``record`` or ``dataset_info``.

    Notes
    -----
    **Requests and prefetch.** A batch's size is fixed when the sampler draws
    it, that is when the ``DataLoader`` asks for the batch's indices. With
    ``num_workers=0`` that is when the trainer asks for the batch, so a
    :meth:`request` made after batch t shapes batch t + 1. With workers the
    loader draws ``prefetch_factor * num_workers`` batches ahead of the trainer,
    so a request takes effect that many batches later (a callable likewise sees
    the steps of batches drawn ahead). The record holds the batches actually
    served, so a replay is exact either way.

    **Iteration.** ``iter(sampler)`` plays the epoch in progress from its first
    batch, or from the position of a state loaded since the last ``iter()``;
    after an epoch ended it plays the next one. Only the newest iterator counts
    and records its batches (an older one still yields, with the sizes in force).

    **Recording.** With ``record`` the whole store is rewritten atomically
    (``write_schedule(..., overwrite=True)``: built in a temporary sibling, then
    renamed), holding every ended epoch: when an epoch ends (as its last batch
    is handed out, or in :meth:`end_epoch`), and once when the first batch after
    construction or :meth:`load_state_dict` is handed out (so the path holds
    this run from its start: zero epochs, or the loaded state's ended epochs).
    Writes that add an epoch hard-link the chunks of the epochs already stored
    (:class:`~schedgen.store.Unchanged`). The store has method ``"adaptive"``,
    params ``seed``, ``batch_size`` (the initial size, null for a callable) and
    ``online: true``, ``k`` the initial size (for a callable, the run's first
    batch's size), and ragged ``batch_offsets``. :class:`ScheduleBatchSampler`
    replays it batch for batch; with ``world_size > 1`` every recorded batch must
    hold at least ``world_size`` samples, the short last batch of an epoch too.
    A crash leaves the last complete store (the epochs ended before it). If a
    write fails (:class:`~schedgen.errors.StoreError`) the batch being handed
    out is not counted, and :meth:`end_epoch` changes nothing.

    **Resume.** :meth:`state_dict` holds the epoch, the batches of it handed
    out, every batch size served so far (run-length coded, one list per epoch),
    the size in force and what identifies the run, all plain JSON. The protocol
    is :class:`ScheduleBatchSampler`'s (torchdata's): ``load_state_dict``
    stores the position and the next ``iter()`` continues from it. A state
    taken after epoch e's last batch resumes with ``set_epoch(e + 1)`` (without
    it, the first ``iter()`` finishes epoch e, yielding nothing). A resumed sampler recording to the same path serves and records
    what the uninterrupted run would: the record is a function of the state.
    A callable ``batch_size`` must then give the same sizes for the same steps
    (restore the trainer's own state with it). With a ``StatefulDataLoader``
    and ``num_workers=0`` the loader's state is the sampler's own at the time of
    ``loader.state_dict()``; with workers it is the sampler's state when the
    last consumed batch was drawn, so a :meth:`request` made within the last
    ``prefetch_factor * num_workers`` batches before the checkpoint is not in
    it (make it again after resuming, or use the callable form, which is a
    function of the step).

    Examples
    --------
    >>> sampler = AdaptiveBatchSampler(len(dataset), 32, seed=0, record="run.zarr")  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_sampler=sampler)  # doctest: +SKIP
    >>> for epoch in range(n_epochs):  # doctest: +SKIP
    ...     sampler.set_epoch(epoch)
    ...     for x, y in loader:
    ...         if bound_is_loose(model, x, y):
    ...             sampler.request(2 * sampler.batch_size)
    >>> replay = ScheduleBatchSampler("run.zarr")  # the same batches, sizes included  # doctest: +SKIP
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int | Callable[[int], int],
        *,
        seed: int = 0,
        record: str | os.PathLike | None = None,
        dataset_info: Mapping[str, str] | None = None,
    ) -> None:
        self.n_samples = check_int("n_samples", n_samples, low=1)
        self._fn: Callable[[int], int] | None = None
        self._size: int | None = None
        if callable(batch_size):
            self._fn = batch_size
        else:
            self._size = check_int("batch_size", batch_size, low=1)
        #: The constructor's size (None for a callable): part of the run's identity.
        self._initial = self._size
        self._last: int | None = None  # the callable's last answer
        self.seed = check_int("seed", seed, low=0, high=MAX_WORD + 1)
        self.dataset = online_dataset_attr(
            dataset_info, n_samples=self.n_samples, n_classes=None, fingerprint=None, source="the sampler"
        )
        self.record = check_record_to(record, method="adaptive", name="record")

        # Batch sizes served in epochs 0..epoch (the last: by the newest pass), and the
        # step number of each epoch's first batch.
        self._sizes: list[list[int]] = [[]]
        self._steps: list[int] = [0]
        self._cursor = Cursor(0)
        # An epoch asked with set_epoch on a fresh sampler, awaiting a state to load.
        self._pinned: int | None = None
        self._loaded = False
        self._order_cache: tuple[int, np.ndarray | None, list[int]] = (-1, None, [])
        self._closed: list[np.ndarray] = []  # served indices of ended epochs 0..len-1 (a cache)
        # Number of epochs in the last store this object wrote, and its digest.
        self._recorded: int | None = None
        self._recorded_digest: str | None = None

    # ------------------------------------------------------------------ sizes

    @property
    def batch_size(self) -> int | None:
        """The size in force: the last requested one (the constructor's int at first).

        With a callable (and no :meth:`request` since), the size it returned for
        the last batch drawn, None before its first call.
        """
        return self._size if self._fn is None else self._last

    def request(self, size: int) -> None:
        """Make every following batch ``size`` long, until the next request.

        Replaces a callable ``batch_size``. A batch already drawn keeps its size
        (see the prefetch note in the class docstring).

        Raises
        ------
        ParameterError
            ``size`` is not an integer >= 1 (bools refused).
        """
        self._size = check_int("size", size, low=1)
        self._fn = None

    def _next_size(self, step: int) -> int:
        if self._fn is None:
            return self._size  # type: ignore[return-value]
        v = self._fn(step)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ParameterError(
                f"the batch_size callable must return an integer >= 1, got {shown(v)} ({type(v).__name__}) "
                f"for step {step}"
            )
        self._last = int(v)
        return self._last

    # ------------------------------------------------------------------ epochs

    @property
    def epoch(self) -> int:
        """The epoch in progress (or just ended: the next ``iter()`` then plays the next one)."""
        return self._cursor.epoch

    def _ended(self) -> bool:
        """Whether the epoch in progress has served its whole permutation."""
        return sum(self._sizes[-1]) == self.n_samples

    def _advance(self) -> None:
        """Close the epoch in progress as it stands and move to batch 0 of the next."""
        self._steps.append(self._steps[-1] + len(self._sizes[-1]))
        self._sizes.append([])
        self._cursor.restart(self._cursor.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Say which epoch the next ``iter()`` plays: the one in progress, or the next once it ended.

        Epochs are played in order from 0 (the record is one run). On a sampler
        that has served nothing and loaded no state, any epoch is accepted until
        a state is loaded (torchdata loads it after the ``set_epoch`` at the top
        of a training loop); ``iter()`` refuses it if no state agreed with it.

        Raises
        ------
        ParameterError
            ``epoch`` is not a non-negative integer, or not the epoch this run
            (or the loaded state) plays next.
        """
        epoch = check_int("epoch", epoch, low=0)
        c = self._cursor
        if c.pending is not None:
            self._reconcile(epoch, *c.pending, self._ended())
            if epoch != c.epoch:
                self._advance()
            return
        if epoch == c.epoch and not self._ended():
            self._pinned = None
        elif epoch == c.epoch + 1 and self._ended():
            self._advance()
            self._pinned = None
        elif len(self._sizes) == 1 and not self._sizes[0] and not self._loaded:
            self._pinned = epoch
        else:
            raise ParameterError(self._order_message(epoch))

    def _order_message(self, epoch: int) -> str:
        c = self._cursor
        if self._ended():
            where = f"epoch {c.epoch} ended, so the next is {c.epoch + 1}"
        else:
            where = f"epoch {c.epoch} is in progress ({c.yielded} batches served; end_epoch() ends it early)"
        return f"epochs are played in order: {where}, got set_epoch({epoch})"

    def _reconcile(self, wanted: int, epoch: int, yielded: int, ended: bool) -> None:
        """Refuse a ``wanted`` epoch that a loaded state at ``(epoch, yielded)`` does not continue."""
        if wanted == epoch or (ended and wanted == epoch + 1):
            return
        nxt = f"{epoch + 1}" if ended else f"{epoch}"
        raise ParameterError(
            f"the loaded state is at epoch {epoch} ({yielded} batches served{', the last' if ended else ''}), "
            f"so it continues with epoch {nxt}, but set_epoch({wanted}) was called; epochs are played in order"
        )

    def end_epoch(self) -> None:
        """End the epoch in progress with the batches served so far; the next ``iter()`` plays the next epoch.

        For a trainer that stops an epoch early (a step budget): the epoch is
        recorded as served, so the record stays a replay of the run. Nothing to
        do if the epoch already ended. With ``record`` the store is rewritten
        before this returns; if that fails, nothing changes.

        Raises
        ------
        StoreError
            The record could not be written.
        """
        if self._ended():
            self._record(self._cursor.epoch + 1)
            return
        saved = (self._cursor.save(), len(self._sizes))
        self._advance()
        try:
            self._record(self._cursor.epoch)
        except BaseException:
            self._cursor.restore(saved[0])
            del self._sizes[saved[1] :], self._steps[saved[1] :]
            raise

    def __len__(self) -> int:
        """``ceil(n_samples / batch_size)``: an epoch's batches at the size in force (an estimate).

        Raises
        ------
        TypeError
            With a callable ``batch_size``: the length is not known in advance.
        """
        if self._fn is not None:
            raise TypeError("an AdaptiveBatchSampler with a callable batch_size has no length")
        return math.ceil(self.n_samples / self._size)  # type: ignore[operator]

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the batches of the epoch in progress (or of the next, once it ended), each a fresh list.

        Raises
        ------
        ParameterError
            At the first ``next()``: ``set_epoch`` asked for an epoch this run
            does not play next (and no loaded state agreed with it).
        """
        if self._pinned is not None:
            # Refused at next(), not here: torchdata calls iter() once before it loads the state.
            return _refuse(
                f"set_epoch({self._pinned}) asked for epoch {self._pinned}, but this run plays epoch "
                f"{self._cursor.epoch} next: epochs are played in order from 0 (load a state to resume a run)"
            )
        c = self._cursor
        if c.pending is None:
            if self._ended():
                self._advance()
            else:
                self._sizes[-1] = []  # a new pass restarts the epoch
        epoch, start, token = c.begin(c.epoch)
        return self._play(epoch, start, token)

    def _order(self, epoch: int) -> tuple[np.ndarray, list[int]]:
        """Epoch ``epoch``'s permutation, as an int64 array and as a list (cached for one epoch)."""
        if self._order_cache[0] != epoch:
            perm = rng(self.seed, "adaptive", epoch).permutation(self.n_samples).astype(np.int64)
            self._order_cache = (epoch, perm, perm.tolist())
        return self._order_cache[1], self._order_cache[2]  # type: ignore[return-value]

    def _play(self, epoch: int, start: int, token: object) -> Iterator[list[int]]:
        c, n = self._cursor, self.n_samples
        served = self._sizes[epoch]  # this pass's list: a newer pass replaces it
        step0 = self._steps[epoch]
        order = self._order(epoch)[1]
        pos = sum(served)
        i = start
        while pos < n:
            size = min(self._next_size(step0 + i), n - pos)
            batch = order[pos : pos + size]
            pos += size
            if c.is_live(token):
                served.append(size)
                c.yielded = i + 1  # counted before it is handed out: torchdata snapshots after next()
                if i == start or pos == n:
                    try:
                        self._record(epoch + (pos == n))
                    except BaseException:
                        served.pop()
                        c.yielded = i
                        raise
            i += 1
            yield batch

    # ------------------------------------------------------------------ record

    def to_schedule(self) -> Schedule:
        """The record as of now: every ended epoch (what ``record`` holds after its last write)."""
        return self._schedule(self._cursor.epoch + self._ended())

    def _indices(self, epoch: int) -> np.ndarray:
        """The indices ended epoch ``epoch`` served, int64 (cached)."""
        while len(self._closed) <= epoch:
            e = len(self._closed)
            cached = self._order_cache
            perm = cached[1] if cached[0] == e else rng(self.seed, "adaptive", e).permutation(self.n_samples)
            part = np.asarray(perm, dtype=np.int64)[: sum(self._sizes[e])]
            part.setflags(write=False)
            self._closed.append(part)
        return self._closed[epoch]

    def _schedule(self, n_epochs: int) -> Schedule:
        sizes = [s for e in range(n_epochs) for s in self._sizes[e]]
        batch_offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=batch_offsets[1:])
        epoch_offsets = np.zeros(n_epochs + 1, dtype=np.int64)
        np.cumsum([len(self._sizes[e]) for e in range(n_epochs)], out=epoch_offsets[1:])
        if n_epochs:
            indices = np.concatenate([self._indices(e) for e in range(n_epochs)])
        else:
            indices = np.empty(0, dtype=np.int64)
        first = next((s[0] for s in self._sizes if s), 1)
        return Schedule(
            indices=indices,
            batch_offsets=batch_offsets,
            epoch_offsets=epoch_offsets,
            method="adaptive",
            params={"seed": self.seed, "batch_size": self._initial, "online": True},
            dataset=dict(self.dataset),
            k=self._initial if self._initial is not None else first,
        )

    def _record(self, n_epochs: int) -> None:
        """Rewrite the store with epochs ``0..n_epochs-1`` unless it already holds exactly that."""
        if self.record is None or n_epochs == self._recorded:
            return
        schedule = self._schedule(n_epochs)
        unchanged = None
        if self._recorded is not None and self._recorded_digest is not None:
            # Ended epochs never change: the old store's chunks holding them are linked.
            same = min(self._recorded, n_epochs)
            n_batches = int(schedule.epoch_offsets[same])
            unchanged = Unchanged(
                self._recorded_digest,
                {"indices": int(schedule.batch_offsets[n_batches]), "batch_offsets": n_batches + 1},
            )
        try:
            write_schedule(schedule, self.record, overwrite=True, unchanged=unchanged)
        except BaseException:
            # The caller rolls back the epoch this write would have ended (its indices were cached).
            del self._closed[max(n_epochs - 1, 0) :]
            raise
        self._recorded, self._recorded_digest = n_epochs, schedule.digest

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The resume state, plain JSON.

        Returns
        -------
        dict
            ``epoch``, ``yielded`` (batches of that epoch handed out), ``sizes``
            (for each epoch 0..epoch the sizes served, as ``[size, count]``
            runs), ``batch_size`` (the size in force, None while a callable
            gives them), and the run's ``initial_batch_size`` (None for a
            callable), ``n_samples`` and ``seed``.
        """
        return {
            **self._cursor.position(),
            "sizes": [_runs(s) for s in self._sizes],
            "batch_size": self._size if self._fn is None else None,
            "initial_batch_size": self._initial,
            "n_samples": self.n_samples,
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the next ``iter()`` continues from it.

        Raises
        ------
        ParameterError
            The state is malformed, belongs to another run (``n_samples``,
            ``seed`` or initial batch size differ), needs a callable this
            sampler lacks, or does not continue the epoch chosen with
            :meth:`set_epoch`. Nothing changes then.
        """
        check_keys(state_dict, _STATE_KEYS, "AdaptiveBatchSampler")
        for key, mine in (("n_samples", self.n_samples), ("seed", self.seed)):
            theirs = check_int(f"state_dict[{key!r}]", state_dict[key], low=0)
            if theirs != mine:
                raise ParameterError(_another_run(key, theirs, mine))
        initial = _optional_size("initial_batch_size", state_dict["initial_batch_size"])
        if initial != self._initial:
            raise ParameterError(_another_run("initial_batch_size", initial, self._initial))
        size = _optional_size("batch_size", state_dict["batch_size"])
        if size is None and self._fn is None and self._initial is None:
            raise ParameterError("state_dict['batch_size'] is None (sizes from a callable) but this sampler's "
                                 "callable was replaced by request(); load the state into a fresh sampler")
        if size is None and self._initial is not None:
            raise ParameterError("state_dict['batch_size'] is None (sizes from a callable) but this sampler "
                                 f"was built with batch_size={self._initial}")
        epoch = check_int("state_dict['epoch']", state_dict["epoch"], low=0)
        yielded = check_int("state_dict['yielded']", state_dict["yielded"], low=0)
        sizes = _read_sizes(state_dict["sizes"], epoch, yielded, self.n_samples)
        ended = sum(sizes[-1]) == self.n_samples
        if self._pinned is not None:
            self._reconcile(self._pinned, epoch, yielded, ended)
        # Committed from here on: nothing above changed the sampler.
        self._sizes = sizes
        self._steps = list(itertools.accumulate((len(s) for s in sizes[:-1]), initial=0))
        if size is not None:
            self._size, self._fn = size, None
        self._closed = []
        self._loaded = True
        self._cursor.load(epoch, yielded)
        if self._pinned is not None and self._pinned != epoch:
            self._advance()  # a finished epoch's state and set_epoch(epoch + 1)
        self._pinned = None
        # the next write point rewrites the store from this state
        self._recorded, self._recorded_digest = None, None

    def __repr__(self) -> str:
        size = "<callable>" if self._fn is not None else self._size
        return (
            f"{type(self).__name__}(n_samples={self.n_samples}, batch_size={size}, seed={self.seed}, "
            f"epoch={self._cursor.epoch}, record={None if self.record is None else str(self.record)!r})"
        )


def _refuse(message: str) -> Iterator[list[int]]:
    raise ParameterError(message)
    yield  # a generator: raises at next()


def _runs(sizes: list[int]) -> list[list[int]]:
    """Run-length code of a list of sizes: ``[[size, count], ...]``."""
    out: list[list[int]] = []
    for s in sizes:
        if out and out[-1][0] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return out


def _another_run(key: str, theirs: Any, mine: Any) -> str:
    return (
        f"state_dict belongs to another run: it has {key}={theirs!r}, this sampler has {key}={mine!r}; "
        "a state resumes only the same n_samples, seed and initial batch size"
    )


def _optional_size(key: str, value: Any) -> int | None:
    return None if value is None else check_int(f"state_dict[{key!r}]", value, low=1)


def _read_sizes(value: Any, epoch: int, yielded: int, n: int) -> list[list[int]]:
    """The sizes of a state: ``epoch + 1`` lists of runs, <= n samples each, the last of ``yielded`` batches."""
    if not isinstance(value, (list, tuple)) or len(value) != epoch + 1:
        got = f"{len(value)} entries" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ParameterError(
            f"state_dict['sizes'] must be a list with one entry per epoch up to state_dict['epoch']: "
            f"expected {epoch + 1}, got {got}"
        )
    out = []
    for e, runs in enumerate(value):
        sizes: list[int] = []
        if not isinstance(runs, (list, tuple)):
            raise ParameterError(f"state_dict['sizes'][{e}] must be a list of [size, count] pairs, got {shown(runs)}")
        for r in runs:
            if not isinstance(r, (list, tuple)) or len(r) != 2:
                raise ParameterError(f"state_dict['sizes'][{e}] must hold [size, count] pairs, got {shown(r)}")
            s = check_int(f"a size in state_dict['sizes'][{e}]", r[0], low=1)
            count = check_int(f"a count in state_dict['sizes'][{e}]", r[1], low=1)
            if sum(sizes) + s * count > n:  # checked first: a huge count allocates nothing
                raise ParameterError(
                    f"state_dict['sizes'][{e}] serves more than the n_samples={n} samples of an epoch"
                )
            sizes.extend([s] * count)
        out.append(sizes)
    if len(out[-1]) != yielded:
        raise ParameterError(
            f"state_dict['sizes'][{epoch}] must hold the yielded={yielded} batches of the epoch in progress, "
            f"got {len(out[-1])}"
        )
    return out
