"""Schedules in PyTorch: replay a store, or run learn2mix online and record it.

This is the only schedgen package that imports :mod:`torch`; ``import schedgen``
does not load it. The samplers are batch samplers: use them as
``DataLoader(dataset, batch_sampler=sampler)`` or with torchdata's
``StatefulDataLoader`` for mid-epoch resume.

* :class:`ScheduleBatchSampler` replays a precomputed store, rank-sharded;
  given ``dataset=``, it refuses a dataset of another length (or schedgen
  fingerprint) than the one the schedule was built on.
* :func:`schedule_dataset` loads that dataset, fingerprint-checked, as a
  ``TensorDataset`` (:class:`ScheduleDataset`).
* :class:`PairedScheduleBatchSampler` replays a store built with ``--pair``:
  each step is one :class:`PairedBatch`, this rank's part of S1 then of its
  partner batch S2; :class:`RoleTaggedDataset` and :func:`paired_collate`
  carry the roles through a ``DataLoader`` (workers included), which then
  yields ``(s1, s2)``. Epochs, sharding and resume are as below.
* :class:`Learn2MixBatchSampler` draws learn2mix batches online from the
  trainer's class losses and can record them to a store that
  :class:`ScheduleBatchSampler` replays exactly (see its docstring for the
  recording rule and the resume protocol).
* :class:`AdaptiveBatchSampler` serves batches whose sizes the trainer picks as
  it runs (``request()`` or a callable of the step), slices of a seeded
  permutation, and can record them to a store that :class:`ScheduleBatchSampler`
  replays exactly, ragged sizes included.

The rest of this docstring describes :class:`ScheduleBatchSampler`.

Epochs
------
A schedule holds ``n_epochs`` epochs. ``set_epoch(e)`` plays schedule epoch
``e % n_epochs``: a one-epoch schedule repeats every epoch, a multi-epoch
schedule cycles through its epochs.

Sharding
--------
Every global batch of b samples is split into ``world_size`` (W) contiguous parts
by the ``uneven`` rule: ``split`` (default, ``np.array_split``: sizes differ by at
most one, earlier ranks get the extra sample, the parts reunite to the global
batch), ``drop`` (each rank gets ⌊b/W⌋; the batch's last b mod W samples are
unused) or ``pad`` (each rank gets ⌈b/W⌉; the batch's first ⌈b/W⌉·W − b samples
are repeated). Rank ``r`` yields part ``r``; every rank yields the same number of
batches. The trade-offs are in :class:`ScheduleBatchSampler`'s Notes.

Resume
------
The state is a few plain values: ``epoch``, ``yielded`` (global batches of that
epoch already consumed), the schedule ``digest`` (must match on load), and the
``rank`` and ``world_size`` it was saved at (a record: any rank and world size
resumes it, since the global order does not depend on the world size; see Elastic
resume in :class:`ScheduleBatchSampler`'s Notes). It follows the protocol of torchdata's
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

# Checked here, before any submodule imports torch, so that a missing PyTorch
# gives one ModuleNotFoundError with the install hint.
from .._optional import import_torch

torch = import_torch("schedgen.torch")
from torch.utils.data import Sampler, TensorDataset  # noqa: E402, F401

from ._adaptive import AdaptiveBatchSampler
from ._dataset import ScheduleDataset, schedule_dataset
from ._learn2mix import Learn2MixBatchSampler
from ._paired import PairedBatch, PairedScheduleBatchSampler, RoleTaggedDataset, paired_collate
from ._replay import ScheduleBatchSampler

__all__ = [
    "AdaptiveBatchSampler",
    "Learn2MixBatchSampler",
    "PairedBatch",
    "PairedScheduleBatchSampler",
    "RoleTaggedDataset",
    "ScheduleBatchSampler",
    "ScheduleDataset",
    "paired_collate",
    "schedule_dataset",
]
