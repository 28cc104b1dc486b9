"""Schedules in PyTorch: replay a store, or run learn2mix online and record it.

This is the only schedgen module that imports :mod:`torch`; ``import schedgen``
does not load it. Both samplers are batch samplers: use them as
``DataLoader(dataset, batch_sampler=sampler)`` or with torchdata's
``StatefulDataLoader`` for mid-epoch resume.

* :class:`ScheduleBatchSampler` replays a precomputed store, rank-sharded;
  given ``dataset=``, it refuses a dataset of another length (or schedgen
  fingerprint) than the one the schedule was built on.
* :func:`schedule_dataset` loads that dataset, fingerprint-checked, as a
  ``TensorDataset`` (:class:`ScheduleDataset`).
* :class:`Learn2MixBatchSampler` draws learn2mix batches online from the
  trainer's class losses and can record them to a store that
  :class:`ScheduleBatchSampler` replays exactly (see its docstring for the
  recording rule and the resume protocol).

The rest of this docstring describes :class:`ScheduleBatchSampler`.

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

import hashlib
import numbers
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

try:
    import torch
    from torch.utils.data import Sampler, TensorDataset
except ModuleNotFoundError as _exc:
    if _exc.name != "torch":
        raise  # torch is there but broken (a module of it or of its dependencies is missing): show that
    raise ModuleNotFoundError(
        f"schedgen.torch needs PyTorch, which is not installed ({_exc}); install the CPU build first "
        "(pip install torch==2.13.0, or see pytorch.org), then pip install -e '.[torch]'",
        name="torch",
    ) from None

from .data import DATASETS, Dataset, load_dataset
from .errors import ParameterError, SchedgenError, StoreError
from .learn2mix import Learn2MixPlanner, class_mean_losses, update_alpha
from .store import (
    Schedule,
    Unchanged,
    check_format,
    is_remote,
    read_attrs,
    read_schedule,
    schedule_digest,
    write_schedule,
)

__all__ = ["Learn2MixBatchSampler", "ScheduleBatchSampler", "ScheduleDataset", "schedule_dataset"]

#: Keys of :meth:`ScheduleBatchSampler.state_dict`.
_STATE_KEYS = ("epoch", "yielded", "digest", "rank", "world_size")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _shown(value: Any) -> str:
    """``repr`` of a received value on one line, at most 80 characters (arrays can be huge)."""
    try:
        r = " ".join(repr(value).split())
    except Exception:  # a broken __repr__
        r = f"<{type(value).__name__}>"
    return r if len(r) <= 80 else r[:77] + "..."


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high)``.

    The one integer check of this module (arguments and state dicts alike):
    a Python int or a NumPy integer scalar; bools (``bool``, ``np.bool_``),
    floats (even ``1.0``), arrays (even 0-d) and strings are refused.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {_shown(value)} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ParameterError(f"{name} must be an integer {bound}, got {name}={value}")
    return value


def _check_real(name: str, value: Any) -> float:
    """Return ``value`` as a float: a Python or NumPy real scalar, not a bool."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {_shown(value)} ({type(value).__name__})")
    return float(value)


def _check_str(name: str, value: Any, *, hex64: bool = False) -> str:
    """Return ``value``, a str (64 lowercase hex digits with ``hex64``)."""
    if not isinstance(value, str) or (hex64 and not _HEX64.fullmatch(value)):
        what = "a sha256 digest (64 lowercase hex digits)" if hex64 else "a string"
        raise ParameterError(f"{name} must be {what}, got {_shown(value)} ({type(value).__name__})")
    return value


def _labels_sha256(labels: np.ndarray) -> str:
    """Hex sha256 of integer labels as little-endian int64 (an online record's default fingerprint)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


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
        world_size = _check_int("world_size", world_size, low=1)
        rank = _check_int("rank", rank, low=0, high=world_size)
        epoch = _check_int("epoch", epoch, low=0)
        self.schedule = _load(source)
        if dataset is not None:
            _check_dataset(dataset, self.schedule)
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
        digest = _check_str("state_dict['digest']", state_dict["digest"], hex64=True)
        if digest != self.digest:
            raise ParameterError(
                f"state_dict comes from another schedule: its digest is {digest[:16]}..., "
                f"this sampler's schedule has {self.digest[:16]}..."
            )
        world_size = _check_int("state_dict['world_size']", state_dict["world_size"], low=1)
        rank = _check_int("state_dict['rank']", state_dict["rank"], low=0)
        for key, theirs, mine in (("world_size", world_size, self.world_size), ("rank", rank, self.rank)):
            if theirs != mine:
                raise ParameterError(
                    f"state_dict was saved with {key}={theirs}, this sampler has {key}={mine}; "
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


def _describe(d: Mapping[str, Any]) -> str:
    """``name (split)`` of a store's ``dataset`` attribute, for messages."""
    name, split = d.get("name"), d.get("split", "train")
    return f"{name if isinstance(name, str) else _shown(name)} ({split if isinstance(split, str) else _shown(split)})"


def _fp(value: Any) -> str:
    """A fingerprint or digest for messages: its first 16 characters."""
    return f"{value[:16]}..." if isinstance(value, str) and len(value) > 16 else _shown(value)


def _same_data(fingerprint: str, labels_sha256: str | None, d: Mapping[str, Any], params: Any) -> bool:
    """Whether data of this fingerprint (and labels hash) is the store's dataset ``d``.

    An online learn2mix record without ``dataset_info`` carries the labels' sha256
    as its fingerprint, so for online records the labels hash matches too.
    """
    want = d.get("fingerprint")
    if fingerprint == want:
        return True
    online = isinstance(params, Mapping) and params.get("online") is True
    return online and labels_sha256 is not None and labels_sha256 == want


def _check_dataset(dataset: Any, schedule: Schedule) -> None:
    """Refuse a dataset whose length (or schedgen fingerprint) is not the schedule's."""
    d = schedule.dataset
    n = schedule.n_samples
    try:
        size = len(dataset)
    except TypeError:
        raise ParameterError(
            f"dataset must be a map-style dataset with a length, like the one given to DataLoader; "
            f"got {type(dataset).__name__}, which has no len()"
        ) from None
    if size != n:
        raise ParameterError(
            f"dataset has {size} samples but the schedule was built on the {n} of {_describe(d)}: "
            "its indices would fetch other samples; pass the dataset it was built on, "
            "e.g. schedgen.torch.schedule_dataset(store)"
        )
    fingerprint = getattr(dataset, "schedgen_fingerprint", None)
    if fingerprint is None or d.get("fingerprint") is None:
        return
    if not _same_data(fingerprint, getattr(dataset, "schedgen_labels_sha256", None), d, schedule.params):
        raise ParameterError(
            f"dataset is not the one the schedule was built on: the schedule's dataset {_describe(d)} has "
            f"fingerprint {_fp(d.get('fingerprint'))}, the dataset's schedgen_fingerprint is {_fp(fingerprint)}"
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


# =========================================================================== the dataset of a schedule


class ScheduleDataset(TensorDataset):
    """A schedgen :class:`~schedgen.data.Dataset` as a torch ``TensorDataset`` of ``(x, y)`` pairs.

    What :func:`schedule_dataset` returns; item ``i`` is sample ``i`` of the data
    the schedule's indices refer to.

    Parameters
    ----------
    dataset : schedgen.data.Dataset
        The loaded data (e.g. from :func:`schedgen.data.load_dataset`).
    scale : bool, default False
        Divide the features by the dataset's ``pixel_max`` (16 for digits, 255
        for 8-bit images), giving values in [0, 1]; features of a dataset without
        ``pixel_max`` (``npz:``) are used as given.

    Attributes
    ----------
    tensors : tuple of Tensor
        ``X``, float32 of shape (n_samples, n_features), the values as
        :class:`~schedgen.data.Dataset` holds them (flattened, raw unless
        ``scale``), and ``y``, int64 labels of shape (n_samples,). Without
        ``scale`` ``X`` shares memory with the loaded array (no copy).
    groups : Tensor or None
        int64 group ids of an ``npz:`` dataset that has them.
    name, split : str
    pixel_max : float or None
    schedgen_fingerprint : str
        The dataset fingerprint (:func:`schedgen.data.fingerprint` of the raw
        data, so the same with or without ``scale``); ``ScheduleBatchSampler(...,
        dataset=...)`` compares it with the store's.
    schedgen_labels_sha256 : str
        Hex sha256 of the labels as little-endian int64 (the fingerprint an
        online learn2mix record carries by default).
    """

    def __init__(self, dataset: Dataset, *, scale: bool = False) -> None:
        if not isinstance(dataset, Dataset):
            raise ParameterError(
                f"dataset must be a schedgen.data.Dataset (e.g. from load_dataset), got {type(dataset).__name__}"
            )
        if not isinstance(scale, (bool, np.bool_)):
            raise ParameterError(f"scale must be True or False, got {_shown(scale)} ({type(scale).__name__})")
        X = dataset.X
        if scale and dataset.pixel_max is not None:
            X = X / np.float32(dataset.pixel_max)
        super().__init__(_tensor(X), _tensor(dataset.y))
        self.groups = None if dataset.groups is None else _tensor(dataset.groups)
        self.name = dataset.name
        self.split = dataset.split
        self.pixel_max = dataset.pixel_max
        self.scaled = bool(scale) and dataset.pixel_max is not None
        self.schedgen_fingerprint = dataset.fingerprint
        self.schedgen_labels_sha256 = _labels_sha256(dataset.y)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n_samples={len(self)}, "
            f"n_features={self.tensors[0].shape[1]}, scaled={self.scaled}, "
            f"fingerprint={self.schedgen_fingerprint[:16]!r}...)"
        )


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor over ``a``'s memory; schedgen's arrays are read-only views of writable memory."""
    view = a.view()
    try:
        view.flags.writeable = True
    except ValueError:  # memory that is really read-only: copy it
        view = np.array(a)
    return torch.from_numpy(view)


def schedule_dataset(
    source: str | os.PathLike | Schedule | ScheduleBatchSampler,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    scale: bool = False,
) -> ScheduleDataset:
    """The exact dataset a schedule was built on, as a torch dataset of ``(x, y)`` pairs.

    Loads the split named by the store's ``dataset`` attribute with
    :func:`schedgen.data.load_dataset` (e.g. digits ``train``: the 1,437 images,
    not scikit-learn's full 1,797) and checks its fingerprint against the
    store's, so the schedule's indices fetch the samples it was built on.

    Parameters
    ----------
    source : str, os.PathLike, Schedule or ScheduleBatchSampler
        A store (local path or fsspec URL; only its attributes are read), a
        loaded schedule, or a sampler replaying one.
    data_dir, download
        As :func:`schedgen.data.load_dataset` (``svhn``, ``cifar10``, ``mnist``,
        ``fashion-mnist``; unused by ``digits`` and ``npz:``).
    scale : bool, default False
        Features divided by the dataset's ``pixel_max`` (see :class:`ScheduleDataset`).

    Returns
    -------
    ScheduleDataset
        A ``TensorDataset`` (float32 features, int64 labels) that also carries
        the fingerprint ``ScheduleBatchSampler(..., dataset=...)`` checks.

    Raises
    ------
    StoreError
        The store cannot be read, names no loadable dataset in its attributes,
        or the data loaded here has another fingerprint (or length) than the
        store's.
    ParameterError
        The store's dataset is not one schedgen can load (e.g. an online
        learn2mix record's default ``"online"``), or bad arguments.
    DataError
        The dataset's files are missing or malformed (from ``load_dataset``).

    Examples
    --------
    >>> train_set = schedule_dataset("schedules/digits-train-mmd-k50-....zarr", scale=True)  # doctest: +SKIP
    >>> len(train_set), train_set.tensors[0].shape  # doctest: +SKIP
    (1437, torch.Size([1437, 64]))
    """
    if isinstance(source, ScheduleBatchSampler):
        source = source.schedule
    if isinstance(source, Schedule):
        where, d, params = "the schedule", source.dataset, source.params
    elif isinstance(source, (str, os.PathLike)):
        where = str(os.fspath(source))
        attrs = read_attrs(source)
        check_format(attrs, where)
        d, params = attrs.get("dataset"), attrs.get("params")
    else:
        raise ParameterError(
            f"source must be a store path, an fsspec URL, a Schedule or a ScheduleBatchSampler, "
            f"got {type(source).__name__}"
        )
    if not isinstance(d, Mapping):
        raise StoreError(f"{where}: attribute 'dataset' must be an object, got {_shown(d)}")
    for key, kind in (("name", str), ("split", str), ("fingerprint", str), ("n_samples", int)):
        value = d.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise StoreError(
                f"{where}: dataset.{key} must be {kind.__name__} to find the dataset, got {_shown(value)}"
            )
    name = d["name"]
    if name not in DATASETS and not name.startswith("npz:"):
        online = isinstance(params, Mapping) and params.get("online") is True
        hint = (
            "; an online learn2mix record names its data only through dataset_info: pass your own dataset, "
            "in the order of the labels the run was given, to ScheduleBatchSampler(..., dataset=...)"
            if online
            else ""
        )
        raise ParameterError(
            f"{where}: the schedule was built on dataset {name!r}, which schedgen cannot load "
            f"(expected one of {', '.join(DATASETS)} or npz:PATH){hint}"
        )
    ds = load_dataset(name, split=d["split"], data_dir=data_dir, download=download)
    out = ScheduleDataset(ds, scale=scale)
    if len(out) != d["n_samples"] or not _same_data(
        out.schedgen_fingerprint, out.schedgen_labels_sha256, d, params
    ):
        raise StoreError(
            f"{where}: dataset fingerprint mismatch: the schedule was built on {_describe(d)} with "
            f"{d['n_samples']} samples and fingerprint {_fp(d['fingerprint'])}, the {ds.name} ({ds.split}) "
            f"loaded here has {ds.n_samples} samples and fingerprint {_fp(ds.fingerprint)}"
        )
    return out


# =========================================================================== learn2mix online

#: Keys of :meth:`Learn2MixBatchSampler.state_dict`.
_L2M_STATE_KEYS = (
    "epoch",
    "yielded",
    "alpha",
    "losses",
    "labels_sha256",
    "k",
    "seed",
    "mixing_rate",
    "batches_per_epoch",
)
#: What ``dataset_info`` may set; ``n_samples`` and ``n_classes`` come from the labels.
_DATASET_INFO_KEYS = ("name", "split", "fingerprint")


class Learn2MixBatchSampler(Sampler[list[int]]):
    """learn2mix online: batches of exactly k whose class mix follows the trainer's losses.

    Epoch e yields the ``batches_per_epoch`` batches of
    ``Learn2MixPlanner.epoch_matrix(e, α_e)``, the same batches the offline
    precompute plays for the same α: each holds ``largest_remainder_counts(α_e, k)[j]``
    samples of class j, drawn through the per-class cyclic pointers of
    :mod:`schedgen.learn2mix`. α_0 is the class proportions of ``labels``;
    :meth:`update` closes an epoch with its class-wise mean losses L and starts
    the next one with ``α_{e+1} = α_e + γ (L / ΣL − α_e)``.

    Parameters
    ----------
    labels : array or tensor of shape (n_samples,)
        Integer class ids; every class ``0..max(labels)`` must occur.
    k : int
        Batch size, ``1 <= k <= n_samples``; every batch holds exactly k samples.
    mixing_rate : float
        γ in (0, 1].
    seed : int
        Non-negative; epoch e visits class j in the order of
        ``default_rng([seed, e, j])``.
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    record_to : str or os.PathLike, optional
        A local path where the run is recorded as a format-v1 store (see Notes).
        An existing path must be a store recorded by this class (it is replaced);
        anything else there is refused rather than deleted.
    dataset_info : mapping, optional
        ``name``, ``split`` and ``fingerprint`` (non-empty strings) for the
        store's ``dataset`` attribute. Defaults: ``"online"``, ``"train"`` and
        the hex sha256 of the labels as little-endian int64. ``n_samples`` and
        ``n_classes`` always come from the labels.

    Attributes
    ----------
    planner : Learn2MixPlanner
        The core that draws the batches.
    labels_sha256 : str
        Hex sha256 of the labels as little-endian int64 (checked on resume).
    record_to : pathlib.Path or None
    dataset : dict
        The ``dataset`` attribute of the record.

    Raises
    ------
    ParameterError, DataError
        From the core on a bad k, γ, seed, ``batches_per_epoch`` or labels; here
        on a bad ``record_to`` or ``dataset_info``.

    Notes
    -----
    **Iteration.** ``iter(sampler)`` plays the current epoch from batch 0, or
    from the position of a state loaded since the last ``iter()``; the start is
    fixed when ``iter()`` is called. Calling ``iter()`` again without
    :meth:`update` replays the *same* epoch from its first batch (α only moves
    in ``update``). Only the newest iterator moves the position and writes the
    record; an older one still yields its epoch's batches. ``update`` may come
    before an epoch's batches are all drawn: the next epoch starts at batch 0.
    No ``set_epoch``: the epoch advances by ``update`` alone.

    **Recording.** With ``record_to``, the whole store is rewritten atomically
    (``write_schedule(..., overwrite=True)``: built in a temporary sibling, then
    renamed) at two points:

    * when the newest iterator hands out the first batch of a pass (at
      ``next()``, not at ``iter()``, so the throw-away iterators
      ``StatefulDataLoader`` creates write nothing): epochs ``0..e``, the
      current epoch e included, its ``class_losses`` row NaN;
    * in :meth:`update`, before it returns: epochs ``0..e`` with row e of
      ``class_losses`` set to the losses just given.

    A rewrite that would not change the store is skipped, and one that adds an
    epoch hard-links the old store's whole chunks of the epochs already recorded
    instead of compressing them again (see :class:`~schedgen.store.Unchanged`), so a
    write costs about the new epoch, not the whole run. Every recorded epoch
    holds all its ``batches_per_epoch`` batches, also those not handed out yet
    (they are fixed by α_e). The store has method ``"learn2mix"``, params
    ``seed``, ``mixing_rate``, ``k``, ``batches_per_epoch``, ``n_classes`` and
    ``online: true``, and the per-epoch arrays ``class_proportions``
    (n_epochs, n_classes), the α each epoch used, and ``class_losses``
    (n_epochs, n_classes), the losses given to ``update`` (NaN for an epoch not
    yet updated). :class:`ScheduleBatchSampler` replays it exactly.

    A crash leaves the last complete store: every epoch that was started or
    updated before the last write, valid and digest-checked. If a write fails
    (:class:`~schedgen.errors.StoreError`), ``update`` leaves the sampler as it
    was, so it can be retried. A run that does not load a state replaces the
    store at ``record_to`` at its first write.

    **Resume.** :meth:`state_dict` holds the epoch, the batches of it handed
    out, α and the losses given so far, plus what identifies the run (labels
    sha256, k, seed, γ, batches per epoch), all plain JSON. The protocol is
    :class:`ScheduleBatchSampler`'s, that is torchdata's: ``load_state_dict``
    restores epoch, α and losses at once, and the next ``iter()`` continues the
    epoch from the saved position. The record is a function of the state, so a
    resumed sampler recording to the same path continues the same store, and
    its next write puts it where the uninterrupted run would have it (dropping
    epochs recorded after the state was saved).

    Where to checkpoint a ``StatefulDataLoader``: mid-epoch (any batch) always
    works. At an epoch boundary the state must be taken after ``update``; with
    ``num_workers=0`` the loader's state then holds it, but a multi-worker
    loader's state lags (it holds the sampler's last snapshot, from before
    ``update``, and torchdata restarts that finished pass, replaying the epoch).
    So at a boundary save ``sampler.state_dict()`` and resume with
    ``sampler.load_state_dict(...)`` and a fresh loader (nothing of the loader's
    position is left to restore there). A state taken after the loop but before
    ``update`` resumes the same way, followed by ``update``.

    Examples
    --------
    >>> sampler = Learn2MixBatchSampler(y, 64, mixing_rate=0.1, seed=0, record_to="run.zarr")  # doctest: +SKIP
    >>> loader = StatefulDataLoader(dataset, batch_sampler=sampler)  # doctest: +SKIP
    >>> for epoch in range(n_epochs):  # doctest: +SKIP
    ...     for x, t in loader:
    ...         ...
    ...     losses = per_sample_losses(model, train_set)  # (n_samples,)
    ...     sampler.update(Learn2MixBatchSampler.class_losses(losses, y, sampler.n_classes))
    """

    def __init__(
        self,
        labels,
        k: int,
        *,
        mixing_rate: float,
        seed: int,
        batches_per_epoch: int | None = None,
        record_to: str | os.PathLike | None = None,
        dataset_info: Mapping[str, str] | None = None,
    ) -> None:
        self.planner = Learn2MixPlanner(
            _to_numpy(labels), k, mixing_rate=mixing_rate, seed=seed, batches_per_epoch=batches_per_epoch
        )
        self.labels_sha256 = _labels_sha256(self.planner.labels)
        self.dataset = _dataset_attr(dataset_info, self.planner, self.labels_sha256)
        self.record_to = _check_record_to(record_to)

        self._epoch = 0
        # α of epochs 0..epoch and the losses that closed epochs 0..epoch-1.
        self._alphas: list[np.ndarray] = [self.planner.initial_alpha]
        self._losses: list[np.ndarray] = []
        # True once the current epoch handed out a batch (it then belongs to the record).
        self._started = False
        # Start position loaded but not yet consumed by __iter__.
        self._pending: int | None = None
        # Batches of the current epoch handed out by the newest iterator.
        self._pos = 0
        self._live: object | None = None
        self._matrices: dict[int, np.ndarray] = {}
        # (n_epochs, n_losses) of the last store this object wrote, and its digest.
        self._recorded: tuple[int, int] | None = None
        self._recorded_digest: str | None = None

    # ------------------------------------------------------------------ properties

    @property
    def epoch(self) -> int:
        """The epoch in progress (the number of :meth:`update` calls so far)."""
        return self._epoch

    @property
    def alpha(self) -> np.ndarray:
        """α of the epoch in progress, float64 (n_classes,) (a copy)."""
        return self._alphas[-1].copy()

    @property
    def k(self) -> int:
        return self.planner.k

    @property
    def n_classes(self) -> int:
        return self.planner.n_classes

    @property
    def n_samples(self) -> int:
        return self.planner.n_samples

    @property
    def mixing_rate(self) -> float:
        return self.planner.mixing_rate

    @property
    def seed(self) -> int:
        return self.planner.seed

    @property
    def batches_per_epoch(self) -> int:
        return self.planner.batches_per_epoch

    def __len__(self) -> int:
        """Batches per epoch (every epoch has as many)."""
        return self.planner.batches_per_epoch

    # ------------------------------------------------------------------ losses

    @staticmethod
    def class_losses(per_sample_losses, labels, n_classes: int) -> np.ndarray:
        """Class-wise mean losses ``L_j = mean{loss_i : y_i = j}`` (0 for a class with no sample).

        Parameters
        ----------
        per_sample_losses : array or tensor of shape (n,)
            Finite per-sample losses (a tensor is detached and moved to the CPU).
        labels : array or tensor of shape (n,)
            Integer class ids in ``0..n_classes-1``.
        n_classes : int

        Returns
        -------
        class_losses : ndarray of shape (n_classes,), float64
            Ready for :meth:`update`.
        """
        return class_mean_losses(_to_numpy(per_sample_losses), _to_numpy(labels), n_classes)

    def update(self, class_losses) -> np.ndarray:
        """Close the epoch in progress: ``α ← α + γ (L / ΣL − α)``; the next ``iter()`` plays the next epoch.

        With ``record_to`` the store is rewritten (the closed epoch with its
        losses) before this returns; if that fails, nothing changes.

        Parameters
        ----------
        class_losses : array or tensor of shape (n_classes,)
            Class-wise mean losses of the epoch, finite and >= 0 (see
            :meth:`class_losses`).

        Returns
        -------
        alpha : ndarray of shape (n_classes,), float64
            α of the new epoch.

        Raises
        ------
        ParameterError
            Wrong length, negative, NaN or infinite losses (from the core).
        StoreError
            The record could not be written.
        """
        L = _to_numpy(class_losses)
        alpha = update_alpha(self._alphas[-1], L, self.planner.mixing_rate)
        L = np.array(L, dtype=np.float64)
        saved = (self._epoch, self._started, self._pending, self._pos, self._live)
        self._alphas.append(alpha)
        self._losses.append(L)
        self._epoch += 1
        self._started, self._pending, self._pos, self._live = False, None, 0, None
        try:
            self._record(self._epoch)
        except BaseException:
            self._alphas.pop()
            self._losses.pop()
            self._epoch, self._started, self._pending, self._pos, self._live = saved
            raise
        return alpha.copy()

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the remaining batches of the epoch in progress, each a list of k ints.

        Starts at batch 0, or at the loaded position if a state was loaded since
        the last ``__iter__``. The start is fixed when ``iter()`` is called.
        """
        start = 0
        if self._pending is not None:
            start, self._pending = self._pending, None
        batches = self._matrix(self._epoch)
        token = object()
        self._live = token
        self._pos = start
        return self._play(batches, start, token)

    def _play(self, batches: np.ndarray, start: int, token: object) -> Iterator[list[int]]:
        if self._live is token:
            # The pass hands out its first batch: the epoch joins the record.
            self._record(self._epoch + 1)
            self._started = True
        for i in range(start, len(batches)):
            if self._live is token:
                # Counted before it is handed out: torchdata snapshots right after next().
                self._pos = i + 1
            yield batches[i].tolist()

    def _matrix(self, epoch: int) -> np.ndarray:
        """The batches of ``epoch`` under its α, (batches_per_epoch, k) int64, read-only (cached)."""
        m = self._matrices.get(epoch)
        if m is None:
            m = self.planner.epoch_matrix(epoch, self._alphas[epoch])
            m.setflags(write=False)
            self._matrices[epoch] = m
        return m

    # ------------------------------------------------------------------ record

    def to_schedule(self) -> Schedule:
        """The record as of now: every epoch started or updated so far (what ``record_to`` holds)."""
        return self._schedule(self._epoch + int(self._started))

    def _schedule(self, n_epochs: int) -> Schedule:
        B, k, C = self.planner.batches_per_epoch, self.planner.k, self.planner.n_classes
        if n_epochs:
            indices = np.concatenate([self._matrix(e).ravel() for e in range(n_epochs)])
        else:
            indices = np.empty(0, dtype=np.int64)
        proportions = np.asarray(self._alphas[:n_epochs], dtype=np.float64).reshape(n_epochs, C)
        losses = np.full((n_epochs, C), np.nan)
        done = min(len(self._losses), n_epochs)
        if done:
            losses[:done] = self._losses[:done]
        return Schedule(
            indices=indices.astype(np.int64, copy=False),
            batch_offsets=np.arange(n_epochs * B + 1, dtype=np.int64) * k,
            epoch_offsets=np.arange(n_epochs + 1, dtype=np.int64) * B,
            method="learn2mix",
            params={
                "seed": self.planner.seed,
                "mixing_rate": self.planner.mixing_rate,
                "k": k,
                "batches_per_epoch": B,
                "n_classes": C,
                "online": True,
            },
            dataset=dict(self.dataset),
            k=k,
            epoch_arrays={"class_proportions": proportions, "class_losses": losses},
        )

    def _record(self, n_epochs: int) -> None:
        """Rewrite the store with epochs ``0..n_epochs-1`` unless it already holds exactly that."""
        if self.record_to is None:
            return
        key = (n_epochs, len(self._losses))
        if key == self._recorded:
            return
        schedule = self._schedule(n_epochs)
        unchanged = None
        if self._recorded is not None and self._recorded_digest is not None:
            # Epochs already recorded never change (epoch e is fixed by α_e): the old
            # store's chunks holding them are linked, not compressed again.
            same = min(self._recorded[0], n_epochs)
            B, k = self.planner.batches_per_epoch, self.planner.k
            unchanged = Unchanged(self._recorded_digest, {"indices": same * B * k, "batch_offsets": same * B + 1})
        write_schedule(schedule, self.record_to, overwrite=True, unchanged=unchanged)
        self._recorded, self._recorded_digest = key, schedule.digest

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The resume state, plain JSON.

        Returns
        -------
        dict
            ``epoch``, ``yielded`` (batches of that epoch handed out), ``alpha``
            (list of floats, α of that epoch), ``losses`` (one list of floats per
            :meth:`update` so far) and the run's ``labels_sha256``, ``k``,
            ``seed``, ``mixing_rate`` and ``batches_per_epoch``.
        """
        return {
            "epoch": self._epoch,
            "yielded": self._pos,
            "alpha": [float(v) for v in self._alphas[-1]],
            "losses": [[float(v) for v in L] for L in self._losses],
            "labels_sha256": self.labels_sha256,
            "k": self.planner.k,
            "seed": self.planner.seed,
            "mixing_rate": self.planner.mixing_rate,
            "batches_per_epoch": self.planner.batches_per_epoch,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the next ``__iter__`` continues from it.

        Epoch, α and losses are restored at once (α is recomputed from α_0 and
        the losses and must equal the saved one exactly); the record is
        rewritten at the next write point.

        Raises
        ------
        ParameterError
            The state is malformed, belongs to another run (labels, k, seed,
            mixing rate or batches per epoch differ), points past the end of its
            epoch, or its α disagrees with its losses.
        """
        if not isinstance(state_dict, Mapping):
            raise ParameterError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [key for key in _L2M_STATE_KEYS if key not in state_dict]
        if missing:
            raise ParameterError(
                f"state_dict must have keys {list(_L2M_STATE_KEYS)}; missing {missing} "
                "(is it a Learn2MixBatchSampler state?)"
            )
        p = self.planner
        # Types first (one check per kind), so a malformed value is not called "another run".
        theirs_all = {
            "labels_sha256": _check_str("state_dict['labels_sha256']", state_dict["labels_sha256"], hex64=True),
            "k": _check_int("state_dict['k']", state_dict["k"], low=1),
            "seed": _check_int("state_dict['seed']", state_dict["seed"], low=0),
            "mixing_rate": _check_real("state_dict['mixing_rate']", state_dict["mixing_rate"]),
            "batches_per_epoch": _check_int("state_dict['batches_per_epoch']", state_dict["batches_per_epoch"], low=1),
        }
        for key, mine in (
            ("labels_sha256", self.labels_sha256),
            ("k", p.k),
            ("seed", p.seed),
            ("mixing_rate", p.mixing_rate),
            ("batches_per_epoch", p.batches_per_epoch),
        ):
            theirs = theirs_all[key]
            if theirs != mine:
                if key == "labels_sha256":
                    shown, own = f"{theirs[:16]}...", f"{mine[:16]}..."
                else:
                    shown, own = repr(theirs), repr(mine)
                raise ParameterError(
                    f"state_dict belongs to another run: it has {key}={shown}, this sampler has {key}={own}; "
                    "a state resumes only the same labels, k, seed, mixing rate and batches per epoch"
                )
        epoch = _check_int("state_dict['epoch']", state_dict["epoch"], low=0)
        yielded = _check_int("state_dict['yielded']", state_dict["yielded"], low=0)
        if yielded > p.batches_per_epoch:
            raise ParameterError(
                f"state_dict['yielded'] must be at most the {p.batches_per_epoch} batches of an epoch, got {yielded}"
            )
        losses = state_dict["losses"]
        if not isinstance(losses, (list, tuple)) or len(losses) != epoch:
            got = f"{len(losses)} entries" if isinstance(losses, (list, tuple)) else type(losses).__name__
            raise ParameterError(
                f"state_dict['losses'] must be a list with one entry per finished epoch: "
                f"expected {epoch} (the epoch), got {got}"
            )
        alphas = [p.initial_alpha]
        rows = []
        for e, L in enumerate(losses):
            try:
                alphas.append(update_alpha(alphas[-1], L, p.mixing_rate))
            except ParameterError as exc:
                raise ParameterError(f"state_dict['losses'][{e}]: {exc}") from None
            rows.append(np.array(L, dtype=np.float64))
        try:
            alpha = np.asarray(state_dict["alpha"], dtype=np.float64)
        except (TypeError, ValueError):
            alpha = None
        if alpha is None or alpha.shape != alphas[-1].shape or not np.array_equal(alpha, alphas[-1]):
            raise ParameterError(
                f"state_dict['alpha'] disagrees with the alpha its losses give for epoch {epoch} "
                f"(expected {[float(v) for v in alphas[-1]]}, got {state_dict['alpha']!r}); "
                "the state was altered or comes from another run"
            )
        self._epoch = epoch
        self._alphas = alphas
        self._losses = rows
        self._started = yielded > 0
        self._pending = yielded
        self._pos = yielded
        self._live = None
        self._matrices = {}
        # the next write point rewrites the store from this state
        self._recorded, self._recorded_digest = None, None

    def __repr__(self) -> str:
        p = self.planner
        return (
            f"{type(self).__name__}(n_samples={p.n_samples}, n_classes={p.n_classes}, k={p.k}, "
            f"mixing_rate={p.mixing_rate}, seed={p.seed}, batches_per_epoch={p.batches_per_epoch}, "
            f"epoch={self._epoch}, record_to={None if self.record_to is None else str(self.record_to)!r})"
        )


def _to_numpy(x: Any) -> Any:
    """A tensor as a NumPy array (detached, on the CPU); anything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def _dataset_attr(info: Any, planner: Learn2MixPlanner, labels_sha256: str) -> dict:
    """The record's ``dataset`` attribute: ``dataset_info`` over the defaults."""
    d = {"name": "online", "split": "train", "fingerprint": labels_sha256}
    if info is not None:
        if not isinstance(info, Mapping):
            raise ParameterError(
                f"dataset_info must be a mapping with keys among {list(_DATASET_INFO_KEYS)}, "
                f"got {type(info).__name__}"
            )
        unknown = sorted(str(key) for key in info if key not in _DATASET_INFO_KEYS)
        if unknown:
            raise ParameterError(
                f"dataset_info may set only {list(_DATASET_INFO_KEYS)} (n_samples and n_classes come "
                f"from the labels), got {unknown}"
            )
        for key, value in info.items():
            if not isinstance(value, str) or not value:
                raise ParameterError(f"dataset_info[{key!r}] must be a non-empty string, got {value!r}")
            d[key] = value
    return {
        "name": d["name"],
        "split": d["split"],
        "n_samples": planner.n_samples,
        "n_classes": planner.n_classes,
        "fingerprint": d["fingerprint"],
    }


def _check_record_to(path: Any) -> Path | None:
    """A local path that is free or holds an online learn2mix record (which may be replaced)."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ParameterError(f"record_to must be a local path (str or os.PathLike), got {type(path).__name__}")
    s = os.fspath(path)
    if not isinstance(s, str):
        raise ParameterError(f"record_to must be a str path, got {s!r}")
    if is_remote(s):
        raise ParameterError(
            f"record_to must be a local path (the record is replaced by renaming a directory), got {s!r}"
        )
    p = Path(s[len("file://") :] if s.startswith("file://") else s)
    if p.exists() or p.is_symlink():
        try:
            attrs = read_attrs(p)
        except SchedgenError:
            attrs = {}
        params = attrs.get("params")
        if attrs.get("method") != "learn2mix" or not isinstance(params, dict) or params.get("online") is not True:
            raise ParameterError(
                f"record_to={str(p)!r} exists and is not an online learn2mix record; "
                "refusing to replace it (choose a new path or remove it)"
            )
    return p
