"""Adapters for the trainers people use: PyTorch Lightning and the Hugging Face Trainer.

* :mod:`schedgen.integrations.lightning`: ``ScheduleDataModule``, a
  ``LightningDataModule`` replaying a schedule through torchdata's
  ``StatefulDataLoader`` (``pip install -e '.[lightning]'``).
* :mod:`schedgen.integrations.hf`: ``ScheduleTrainerMixin`` and ``ScheduleTrainer``,
  a ``transformers.Trainer`` consuming a schedule's batches in order on one or
  several processes (``pip install -e '.[hf]'``).

Each adapter is its own module and imports its framework only when imported; ``import
schedgen.integrations`` loads none of them.
"""

__all__: list[str] = []
