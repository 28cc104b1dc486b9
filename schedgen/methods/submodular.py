"""``submodular``: SMDL's greedy batches (Joseph et al. 2019), one permutation an epoch.

Each batch maximises U + R + MC + FM greedily over a seeded candidate pool, weights
(0.2, 0.1, 0.5, 0.2); ``--submodular-normalize`` uses the authors' code's per-term
normalisation by the sum instead. The rule, whole: :mod:`schedgen.methods._submodular`
(imported by ``run`` only).
"""

from __future__ import annotations

from ..memory import MemoryNeed
from ._base import Method, MethodOutput, RunContext, feature_needs, feature_spec

__all__ = ["SubmodularMethod"]


class SubmodularMethod(Method):
    """SMDL's submodular batch selection, without replacement within an epoch."""

    name = "submodular"
    revision = 1
    options = frozenset({"epochs", "pca", "standardize", "submodular_normalize"})

    def params(self, config, ds) -> dict:
        return {
            "seed": config.seed,
            "epochs": config.epochs,
            "normalize": bool(config.submodular_normalize),
            "weights": [0.2, 0.1, 0.5, 0.2],
            "ltl_log_eps": 5,
            "refresh": "epoch",
            "lr": "auto",
            **feature_spec(config).params(ds.n_features),
        }

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        n, epochs = ds.n_samples, config.epochs
        d, needs = feature_needs(config, ds)
        per_epoch = -(-n // k)
        data = f"the dataset ({n} samples of {d} features)"
        subject = f"--epochs {epochs} with N={n} samples"
        return needs + [
            MemoryNeed(2 * n * d * 8 + 3 * n * 8 + d * ds.n_classes * 8,
                       "the float64 features, soft features, scores and proxy", data),
            MemoryNeed(epochs * n * 8, "the schedule's indices", subject),
            MemoryNeed(2 * (epochs * per_epoch + 1) * 8, "the batch offsets", subject + f" and k={k}"),
        ]

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ..kernels import pinned_blas
        from ..features import prepare_features
        from ._submodular import submodular_schedule

        with pinned_blas():  # the same bits for any BLAS thread count
            X = prepare_features(ds, feature_spec(config))
            r = submodular_schedule(X, ds.y, k, epochs=config.epochs, seed=config.seed,
                                    normalize=config.submodular_normalize, progress=ctx.progress,
                                    checkpoint=ctx.checkpoint)
        return MethodOutput(indices=r.indices, batch_offsets=r.batch_offsets, epoch_offsets=r.epoch_offsets,
                            params=self.params(config, ds))
