"""learn2mix's face to the build: its parameters, memory estimate, and running it on a dataset.

Revision 2 (from 1): every class order is drawn from the tagged stream
``rng(seed, "learn2mix", e, j)`` instead of ``default_rng([seed, e, j])``, which
changed the bytes of every learn2mix schedule and, through the cache key, its path.
"""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ...memory import MemoryNeed
from .._base import Method, MethodOutput, RunContext, feature_needs, feature_spec, plural
from ._driver import learn2mix_schedule, schedule_memory
from ._kmeans import kmeans_groups, parse_groups

__all__ = ["Learn2MixMethod"]


class Learn2MixMethod(Method):
    """learn2mix batches (exactly k samples, α_j·k of class j), α moved by a proxy's losses."""

    name = "learn2mix"
    revision = 2
    options = frozenset({"epochs", "mixing_rate", "groups", "batches_per_epoch", "pca", "standardize"})

    def params(self, config, ds) -> dict:
        if not (isinstance(config.mixing_rate, (int, float)) and 0 < config.mixing_rate <= 1):
            raise ParameterError(f"mixing rate must be in (0, 1], got {config.mixing_rate!r}")
        if config.groups is not None:
            g = parse_groups(config.groups)
            if g > ds.n_samples:  # before memory_needs prices g centers
                raise ParameterError(
                    f"groups must be 'kmeans:C' with C in 2..{ds.n_samples} (the number of samples), "
                    f"got {config.groups!r}"
                )
            groups = f"kmeans:{g}"
        else:
            groups = "dataset" if ds.groups is not None else "labels"
        return {
            "seed": config.seed,
            "epochs": config.epochs,
            "mixing_rate": float(config.mixing_rate),
            "groups": groups,
            # only when set, so that the keys of default builds stay as they were
            **({} if config.batches_per_epoch is None else {"batches_per_epoch": config.batches_per_epoch}),
            "lr": "auto",
            **feature_spec(config).params(ds.n_features),
        }

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        n = ds.n_samples
        d, needs = feature_needs(config, ds)
        E, B = config.epochs, config.batches_per_epoch
        g = parse_groups(config.groups) if config.groups is not None else None
        if g is not None:
            n_groups = g
        elif ds.groups is not None:
            n_groups = int(np.unique(ds.groups).size)
        else:
            n_groups = ds.n_classes
        parts = schedule_memory(n, d, k, epochs=E, batches_per_epoch=B, n_groups=n_groups,
                                n_outputs=ds.n_classes, kmeans_groups=g)
        per_epoch = -(-n // k) if B is None else B
        batches = (f"--batches-per-epoch {B} with k={k} and {plural(E, 'epoch')}" if B is not None
                   else f"--epochs {E} with k={k} and {per_epoch} batches an epoch")
        data = f"the dataset ({n} samples of {d} features)"
        kmeans = f"--groups kmeans:{g} with N={n} samples of {d} features"
        labels = {
            "indices": ("the schedule's indices", batches),
            "batch_offsets": ("the batch offsets", batches),
            "epoch_arrays": ("the class proportions and losses per epoch", f"--epochs {E} with {n_groups} groups"),
            "proxy": ("the proxy's weights and losses", data),
            "kmeans_centers": ("the k-means centers", kmeans),
            "kmeans_distances": ("the k-means distances", kmeans),
        }
        return needs + [MemoryNeed(b, *labels[name]) for name, b in parts.items()]

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ...kernels import pinned_blas

        with pinned_blas():  # PCA and the proxy's products: the same bits for any BLAS thread count
            return self._run(config, ds, k, ctx)

    def _run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ...features import prepare_features

        X = prepare_features(ds, feature_spec(config))
        extra = {}
        if config.groups is not None:
            groups = kmeans_groups(X, parse_groups(config.groups), seed=config.seed)
        elif ds.groups is not None:
            # Any integer ids: α's columns follow the sorted distinct ids, recorded when
            # they are not already 0..G-1.
            ids, groups = np.unique(ds.groups, return_inverse=True)
            if not np.array_equal(ids, np.arange(len(ids))):
                extra["group_ids"] = ids.tolist()
        else:
            groups = ds.y
        # The proxy always learns the labels; with groups, its losses are averaged per group.
        r = learn2mix_schedule(
            X, groups, k, epochs=config.epochs, mixing_rate=config.mixing_rate, seed=config.seed,
            progress=ctx.progress, checkpoint=ctx.checkpoint, labels=None if groups is ds.y else ds.y,
            batches_per_epoch=config.batches_per_epoch,
        )
        return MethodOutput(
            indices=r.indices,
            batch_offsets=r.batch_offsets,
            epoch_offsets=r.epoch_offsets,
            params={**r.params, **extra},
            epoch_arrays={"class_proportions": r.class_proportions, "class_losses": r.class_losses},
        )
