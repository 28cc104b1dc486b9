"""``random``: a seeded permutation per epoch, cut into batches of k (the last batch short)."""

from __future__ import annotations

import numpy as np

from ..memory import MemoryNeed
from ..rng import rng
from ._base import Method, MethodOutput, RunContext

__all__ = ["RandomMethod"]


class RandomMethod(Method):
    """Epoch e is ``rng(seed, "random", e).permutation(N)`` (:mod:`schedgen.rng`) cut into batches of k."""

    name = "random"
    revision = 1
    options = frozenset({"epochs"})

    def params(self, config, ds) -> dict:
        return {"seed": config.seed, "epochs": config.epochs}

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        n, epochs = ds.n_samples, config.epochs
        per_epoch = -(-n // k)
        subject = f"--epochs {epochs} with N={n} samples"
        return [
            MemoryNeed(epochs * n * 8 + n * 8, "the schedule's indices", subject),
            MemoryNeed(2 * (epochs * per_epoch + 1) * 8, "the batch offsets", subject + f" and k={k}"),
        ]

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        n, epochs = ds.n_samples, config.epochs
        per_epoch = -(-n // k)
        # Written in place (memory_needs counts exactly these): no list of batch sizes and
        # no second copy of the permutations, whatever the number of epochs.
        indices = np.empty(epochs * n, dtype=np.int64)
        for e in range(epochs):
            indices[e * n : (e + 1) * n] = rng(config.seed, "random", e).permutation(n)
        ends = np.minimum(np.arange(1, per_epoch + 1, dtype=np.int64) * k, n)  # batch ends within an epoch
        batch_offsets = np.zeros(epochs * per_epoch + 1, dtype=np.int64)
        np.add(np.arange(epochs, dtype=np.int64)[:, None] * n, ends[None, :],
               out=batch_offsets[1:].reshape(epochs, per_epoch))
        return MethodOutput(
            indices=indices,
            batch_offsets=batch_offsets,
            epoch_offsets=np.arange(epochs + 1, dtype=np.int64) * per_epoch,
            params=self.params(config, ds),
        )
