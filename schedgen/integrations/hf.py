"""Replay a schedule under the Hugging Face ``Trainer``: :class:`ScheduleTrainerMixin`.

Importing this module imports ``transformers`` and ``accelerate`` (``pip install -e
'.[hf]'``); ``import schedgen.integrations`` does not.

How the batches reach each process
----------------------------------
The ``Trainer`` hands its training ``DataLoader`` to ``accelerate``'s ``prepare``,
which, on more than one process, wraps the batch sampler in a ``BatchSamplerShard``
that deals *whole batches* to the ranks round-robin (rank r takes batches r, r + W,
...) and, with ``even_batches=True`` (the default), loops back to the first batches
so that every rank gets as many. For a schedule both are wrong: a step's global
batch would be W different schedule batches, and the loop-back replays batches the
schedule did not put there. ``split_batches=True`` (slice each batch into W parts)
would be closer, but accelerate then needs a fixed ``batch_size`` divisible by W and
silently drops every batch of another size (a schedule's last, or ragged, batches).

So the mixin gives each rank its own part of every global batch and switches
accelerate's sharding off: the loader's batch sampler is a
:class:`~schedgen.torch.ScheduleBatchSampler` built with accelerate's
``process_index`` and ``num_processes`` (the documented ``uneven`` rules apply),
and the ``BatchSamplerShard`` that ``prepare`` puts around it is made a
pass-through (one process, index 0), as ``transformers`` does for its own
rank-aware ``BatchRebalanceSampler``. Every rank yields as many batches, one part of
each global batch, in the schedule's order. ``split_batches=True`` and
``dispatch_batches=True`` are refused.

Epochs and resume
-----------------
The ``Trainer`` calls ``set_epoch(epoch)`` on the batch sampler before each epoch,
so epoch e plays schedule epoch ``e % n_epochs``. ``train(resume_from_checkpoint=)``
does not save the loader's state: it recomputes the epoch and the batches already
trained in it from ``global_step`` and skips them with accelerate's
``skip_first_batches``. The sampler therefore starts each run at batch 0 of its
epoch and keeps no state of its own, so nothing is skipped twice; accelerate's
``use_stateful_dataloader=True`` (which would add the loader's own resume to the
Trainer's skipping) is refused. That arithmetic assumes every epoch has the same
number of batches: a schedule whose epochs differ in batch count is refused.

``per_device_train_batch_size`` has no effect (the schedule sizes the batches; it
only appears in the Trainer's log), nor do ``dataloader_drop_last`` and
``train_sampling_strategy``; ``auto_find_batch_size=True``, which would retry with
smaller batches, is refused. ``ignore_data_skip=True`` makes a resumed run restart
its epoch at batch 0, as for any dataset.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import seed_worker
from transformers.utils import is_datasets_available

from ..errors import ParameterError
from ..store import Schedule
from ..torch import ScheduleBatchSampler

__all__ = ["ScheduleTrainer", "ScheduleTrainerMixin"]


class ScheduleTrainerMixin:
    """Mix into a ``transformers.Trainer`` subclass to train on a schedule's batches.

    Put it before ``Trainer`` in the bases (``class T(ScheduleTrainerMixin, Trainer)``)
    or use :class:`ScheduleTrainer`. It replaces ``get_train_dataloader``; evaluation
    loaders are the Trainer's own.

    Parameters
    ----------
    *args, **kwargs
        The ``Trainer``'s arguments; ``train_dataset`` is required and must be the
        dataset the schedule indexes (length, and fingerprint when it carries one).
    schedule : str, os.PathLike or Schedule
        The schedule store (local path or fsspec URL) or a loaded
        :class:`~schedgen.store.Schedule`; read once, digest-verified.
    uneven : {"split", "drop", "pad"}, default "split"
        How a global batch that the number of processes does not divide is
        shared (see :class:`~schedgen.torch.ScheduleBatchSampler`).

    Attributes
    ----------
    schedule : Schedule
        The verified schedule.
    schedule_sampler : ScheduleBatchSampler or None
        The sampler of the newest training loader.

    Raises
    ------
    ParameterError
        No ``train_dataset`` or not the schedule's; bad ``uneven``; epochs of
        different batch counts; ``auto_find_batch_size=True``; accelerate's
        ``split_batches``, ``dispatch_batches`` or ``use_stateful_dataloader``;
        a data-parallel layout other than one rank per process.
    StoreError
        The store is missing, malformed or fails its digest check.

    Examples
    --------
    >>> trainer = ScheduleTrainer(model=model, args=args, train_dataset=ds, schedule="runs/mmd.zarr")  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> trainer.train(resume_from_checkpoint=True)  # the same batches from the last checkpoint # doctest: +SKIP
    """

    def __init__(
        self, *args: Any, schedule: str | os.PathLike | Schedule, uneven: str = "split", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.train_dataset is None:
            raise ParameterError(
                "a schedule replays over the dataset it was built on: pass train_dataset=, got None"
            )
        self.schedule = ScheduleBatchSampler(schedule, dataset=self.train_dataset, uneven=uneven).schedule
        self.schedule_uneven = uneven
        self.schedule_sampler: ScheduleBatchSampler | None = None
        counts = np.diff(self.schedule.epoch_offsets)
        if len(set(counts.tolist())) > 1:
            raise ParameterError(
                "the Trainer resumes by counting batches per epoch, so every epoch must hold as many batches; "
                f"got epochs of {sorted(set(counts.tolist()))} batches"
            )
        if self.args.auto_find_batch_size:
            raise ParameterError(
                "the schedule sizes the batches, so auto_find_batch_size cannot shrink them: "
                "pass auto_find_batch_size=False, got True"
            )
        acc = self.accelerator
        for name in ("split_batches", "dispatch_batches", "use_stateful_dataloader"):
            if getattr(acc, name, False):
                raise ParameterError(
                    f"each process replays its own part of the schedule, so accelerate's {name} must be off "
                    f"(TrainingArguments(accelerator_config=...)), got {name}=True"
                )

    def get_train_dataloader(self) -> DataLoader:
        """This process's part of the schedule, prepared by accelerate without its batch sharding."""
        dataset = self.train_dataset
        collate = self.data_collator
        # The Trainer's column handling, as in Trainer._get_dataloader.
        if _is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collate = self._get_collator_with_removed_columns(collate, description="training")
        acc = self.accelerator
        sampler = ScheduleBatchSampler(
            self.schedule, rank=acc.process_index, world_size=acc.num_processes, uneven=self.schedule_uneven
        )
        args = self.args
        params: dict[str, Any] = {
            "batch_sampler": sampler,
            "collate_fn": collate,
            "num_workers": args.dataloader_num_workers,
            "pin_memory": args.dataloader_pin_memory,
            "persistent_workers": args.dataloader_persistent_workers,
            "worker_init_fn": partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        }
        if args.dataloader_num_workers > 0:
            params["prefetch_factor"] = args.dataloader_prefetch_factor
            params["multiprocessing_context"] = args.dataloader_multiprocessing_context
        loader = acc.prepare(DataLoader(dataset, **params))
        _own_shard(loader, sampler)
        self.schedule_sampler = sampler
        return loader


class ScheduleTrainer(ScheduleTrainerMixin, Trainer):
    """``transformers.Trainer`` with :class:`ScheduleTrainerMixin`: ``ScheduleTrainer(..., schedule=store)``."""


def _is_hf_dataset(dataset: Any) -> bool:
    if not is_datasets_available():
        return False
    import datasets

    return isinstance(dataset, datasets.Dataset)


def _own_shard(loader: Any, sampler: ScheduleBatchSampler) -> None:
    """Make accelerate's ``BatchSamplerShard`` around ``sampler`` a pass-through, in place.

    ``sampler`` already yields only its rank's part of each global batch;
    accelerate would deal those parts round-robin again (and loop back to even
    them out). With one process and index 0 the wrapper yields every batch once,
    in order, and adds none (``batch_size`` is None: no loop-back). The wrapper
    also gets the sampler's ``set_epoch``: on resume the Trainer wraps the loader's
    batch sampler in accelerate's ``SkipBatchSampler`` and then looks for
    ``set_epoch`` only one level down, on this wrapper.

    Parameters
    ----------
    loader : accelerate ``DataLoaderShard``
        What ``Accelerator.prepare`` returned for a loader over ``sampler``.
    sampler : ScheduleBatchSampler
        Built with accelerate's ``process_index`` and ``num_processes``.

    Raises
    ------
    ParameterError
        accelerate prepared the loader in another way (dispatching, or a
        device mesh whose data-parallel rank is not the process index).
    """
    shard = getattr(loader, "batch_sampler", None)
    if shard is sampler:  # one process: accelerate did not wrap it
        return
    if not isinstance(shard, BatchSamplerShard) or shard.batch_sampler is not sampler:
        raise ParameterError(
            "accelerate must wrap the schedule's batch sampler in a BatchSamplerShard (one data-parallel rank "
            f"per process, no dispatch_batches), got a {type(loader).__name__} whose batch sampler is a "
            f"{type(shard).__name__}"
        )
    if (shard.process_index, shard.num_processes) != (sampler.rank, sampler.world_size):
        raise ParameterError(
            f"accelerate shards data over {shard.num_processes} ranks (this one {shard.process_index}) but the "
            f"schedule sampler was built for rank {sampler.rank} of {sampler.world_size} processes "
            "(tensor or context parallel meshes are not supported)"
        )
    shard.num_processes, shard.process_index = 1, 0
    shard.set_epoch = sampler.set_epoch
