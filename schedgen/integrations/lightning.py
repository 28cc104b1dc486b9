"""Replay a schedule under PyTorch Lightning: :class:`ScheduleDataModule`.

Importing this module imports ``lightning`` and ``torchdata`` (``pip install -e
'.[lightning]'``); ``import schedgen.integrations`` does not.

The data module's ``train_dataloader`` is a torchdata ``StatefulDataLoader`` over
a :class:`~schedgen.torch.ScheduleBatchSampler` built with the trainer's
``global_rank`` and ``world_size``, so every rank replays its documented part of
each global batch (see Sharding in :mod:`schedgen.torch`). Three facts of
Lightning 2.6 shape it:

* **The distributed sampler.** Under a distributed strategy (DDP, FSDP,
  DeepSpeed, ...) with ``Trainer(use_distributed_sampler=True)``, the default,
  Lightning re-creates the loader around a ``DistributedSampler``; for a
  custom batch sampler it fails with a ``TypeError``, and a sampler it managed
  to inject would deal the samples anew. ``train_dataloader`` refuses that
  configuration in one line: pass ``Trainer(use_distributed_sampler=False)``.
  A single-device run never injects one, so it needs nothing.
* **Epochs.** Lightning calls ``set_epoch`` on ``loader.sampler`` and on
  ``loader.batch_sampler.sampler``, never on the batch sampler itself, so the
  sampler carries a small relay at ``.sampler`` whose ``set_epoch`` forwards
  the trainer's epoch. Lightning calls it after making the epoch's first
  iterator when a fit starts or resumes, so ``train_dataloader`` builds the
  sampler at the epoch the fit loop plays next (which after an epoch-end
  checkpoint is ``trainer.current_epoch + 1``).
* **Resume.** Lightning's fit loop saves the ``state_dict`` of every stateful
  train loader in the checkpoint (``FitLoop.on_save_checkpoint``, key
  ``"combined_loader"``) and loads it before the first ``iter`` after
  ``Trainer.fit(ckpt_path=...)``. The loader's state holds the sampler's
  position (epoch, global batches consumed, schedule digest), so a run
  resumed from a mid-epoch checkpoint continues with the next batch of the
  schedule; ``tests/test_integrations_lightning.py`` checks that it sees
  exactly the batches of an uninterrupted run. Lightning loads that state only
  when it restarts mid-epoch (an epoch-end checkpoint needs none: the next epoch
  starts at batch 0). A checkpoint taken after an epoch's last batch but before
  its end hooks (``ModelCheckpoint(every_n_train_steps=)`` dividing the epoch)
  holds a finished epoch; Lightning then plays the next epoch from the loader's
  first iterator, so that state resumes at batch 0 of the next epoch. A plain
  ``DataLoader`` has no state: Lightning would restart its epoch at batch 0.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from lightning.pytorch import LightningDataModule
from torchdata.stateful_dataloader import StatefulDataLoader

from ..errors import ParameterError
from ..store import Schedule
from ..torch import ScheduleBatchSampler

__all__ = ["ScheduleDataModule"]

#: DataLoader arguments that the schedule decides (the batch sampler replaces them all).
_OWNED = ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last")


class _LightningScheduleSampler(ScheduleBatchSampler):
    """A :class:`~schedgen.torch.ScheduleBatchSampler` as Lightning's fit loop needs it.

    * ``sampler``: an :class:`_EpochRelay`, where Lightning looks for ``set_epoch``.
    * A loaded state whose epoch is finished (``yielded`` equals the epoch's batch
      count: a checkpoint taken after the epoch's last batch) resumes at batch 0 of
      the next epoch. Lightning counts that epoch as done and plays the next one
      from the loader's first iterator, without a new ``iter``; loaded as it is,
      that iterator would have nothing left and the next epoch would pass empty.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sampler = _EpochRelay(self)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        # A malformed state is left to the base class, which refuses it in one line.
        epoch = state_dict.get("epoch") if isinstance(state_dict, Mapping) else None
        yielded = state_dict.get("yielded") if isinstance(state_dict, Mapping) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            off = self.schedule.epoch_offsets
            e = epoch % self.n_epochs
            if yielded == int(off[e + 1] - off[e]):
                state_dict = {**state_dict, "epoch": epoch + 1, "yielded": 0}
        super().load_state_dict(state_dict)


class _EpochRelay:
    """Found by Lightning at ``loader.batch_sampler.sampler``: forwards ``set_epoch`` to the batch sampler.

    Lightning's ``_set_sampler_epoch`` looks for ``set_epoch`` on ``loader.sampler``
    and ``loader.batch_sampler.sampler`` only. A separate object, not the sampler
    itself, so that code walking ``.sampler`` chains does not loop.
    """

    __slots__ = ("_target",)

    def __init__(self, target: ScheduleBatchSampler) -> None:
        self._target = target

    def set_epoch(self, epoch: int) -> None:
        self._target.set_epoch(epoch)


class ScheduleDataModule(LightningDataModule):
    """A ``LightningDataModule`` whose training batches are a precomputed schedule's.

    Parameters
    ----------
    source : str, os.PathLike or Schedule
        The schedule store (local path or fsspec URL) or a loaded
        :class:`~schedgen.store.Schedule`; read once, digest-verified.
    dataset : map-style dataset
        The dataset the schedule indexes (for example
        :func:`schedgen.torch.schedule_dataset`); checked against the schedule
        (length, and fingerprint when it carries one).
    uneven : {"split", "drop", "pad"}, default "split"
        How a global batch that ``world_size`` does not divide is shared
        (see :class:`~schedgen.torch.ScheduleBatchSampler`).
    collate_fn : callable, optional
        Passed to the loader (default: PyTorch's default collation).
    num_workers : int, default 0
        Loader worker processes. A loader state resumes only into a loader with
        the same ``num_workers`` (torchdata's rule).
    **loader_kwargs
        Further ``StatefulDataLoader`` arguments (``pin_memory``,
        ``persistent_workers``, ``snapshot_every_n_steps``, ...). Not
        ``batch_size``, ``shuffle``, ``sampler``, ``batch_sampler`` or
        ``drop_last``: the schedule decides the batches.

    Attributes
    ----------
    schedule : Schedule
        The verified schedule (read-only arrays).
    sampler : ScheduleBatchSampler or None
        The sampler of the newest ``train_dataloader`` (None before the first).

    Raises
    ------
    ParameterError
        Bad ``uneven``, a ``dataset`` that is not the schedule's, a loader
        argument the schedule owns; from ``train_dataloader``: no trainer
        attached, or a trainer that would insert a distributed sampler.
    StoreError
        The store is missing, malformed or fails its digest check.

    Notes
    -----
    Only the training loader is provided; subclass and add ``val_dataloader``
    for validation data (it needs no schedule). Under DDP use
    ``Trainer(strategy="ddp", use_distributed_sampler=False)``; every rank then
    yields as many batches, so the ranks step in lockstep.

    Examples
    --------
    >>> dm = ScheduleDataModule("runs/mmd.zarr", schedule_dataset("runs/mmd.zarr"))  # doctest: +SKIP
    >>> trainer = L.Trainer(max_epochs=10, use_distributed_sampler=False)  # doctest: +SKIP
    >>> trainer.fit(model, datamodule=dm)  # doctest: +SKIP
    >>> trainer.fit(model, datamodule=dm, ckpt_path="last.ckpt")  # resumes mid-epoch # doctest: +SKIP
    """

    def __init__(
        self,
        source: str | os.PathLike | Schedule,
        dataset: Any,
        *,
        uneven: str = "split",
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int = 0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__()
        owned = [k for k in _OWNED if k in loader_kwargs]
        if owned:
            raise ParameterError(
                f"the schedule decides the batches, so ScheduleDataModule takes no {', '.join(owned)}; "
                f"got {', '.join(f'{k}={loader_kwargs[k]!r}' for k in owned)}"
            )
        # Read and verify once (dataset and uneven checked here, before any trainer runs).
        self.schedule = ScheduleBatchSampler(source, dataset=dataset, uneven=uneven).schedule
        self.dataset = dataset
        self.uneven = uneven
        self._loader_kwargs = dict(loader_kwargs, collate_fn=collate_fn, num_workers=num_workers)
        self.sampler: ScheduleBatchSampler | None = None

    def train_dataloader(self) -> StatefulDataLoader:
        """A ``StatefulDataLoader`` over this rank's part of the schedule, at the trainer's epoch."""
        trainer = self.trainer
        if trainer is None:
            raise ParameterError(
                "ScheduleDataModule.train_dataloader needs the Trainer's rank and epoch: "
                "pass the module to Trainer.fit(datamodule=...), got no trainer attached"
            )
        # Lightning's own test (DataConnector._requires_distributed_sampler): it would rebuild
        # the loader around a DistributedSampler, which a schedule's batch sampler cannot take.
        connector = getattr(trainer, "_accelerator_connector", None)
        if getattr(connector, "use_distributed_sampler", False) and getattr(connector, "is_distributed", False):
            raise ParameterError(
                "under a distributed strategy Lightning would replace the schedule's sampler with its own "
                "DistributedSampler: pass Trainer(use_distributed_sampler=False), got use_distributed_sampler=True"
            )
        # The epoch Lightning plays next: the value its fit loop passes to set_epoch. After an
        # epoch-end checkpoint, trainer.current_epoch still names the finished epoch, and the
        # first iterator (made before set_epoch is called) plays the next one. Not pinned with
        # set_epoch: a loaded loader state (a fit resumed mid-epoch) sets its own.
        sampler = _LightningScheduleSampler(
            self.schedule,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            epoch=trainer.fit_loop.epoch_progress.current.processed,
            uneven=self.uneven,
        )
        self.sampler = sampler
        return StatefulDataLoader(self.dataset, batch_sampler=sampler, **self._loader_kwargs)
