"""``submodular``: SMDL's greedy batches (Joseph et al. 2019), one permutation an epoch.

Each batch maximises U + R + MC + FM greedily over a seeded candidate pool, weights
(0.2, 0.1, 0.5, 0.2); ``--submodular-normalize`` uses the authors' code's per-term
normalisation by the sum instead. The rule, whole: :mod:`schedgen.methods._submodular`
(imported by ``run`` only).

Per batch it records ``batch_mmd2``, MMD² between the epoch's batches so far and the
rest, on the kernel of ``mmd`` (``--kernel``, ``--bandwidth``, ``--degree``, ``--coef0``,
recorded and in the cache key) and the same prepared features, as mmd and dpp record
it: a diagnostic that ``schedgen plot`` draws; the kernel does not change the batches.
"""

from __future__ import annotations

from ..memory import MemoryNeed
from ._base import Method, MethodOutput, RunContext, feature_needs, feature_spec
from .mmd import MMDMethod

__all__ = ["SubmodularMethod"]


class SubmodularMethod(Method):
    """SMDL's submodular batch selection, without replacement within an epoch."""

    name = "submodular"
    # 2: batch_mmd2 recorded, the kernel options in the params (the batches are those of 1)
    revision = 2
    options = frozenset({"epochs", "pca", "standardize", "submodular_normalize", "kernel", "bandwidth", "degree",
                         "coef0"})

    def params(self, config, ds) -> dict:
        # The kernel and feature parameters exactly as mmd records them (minus its solver's).
        p = MMDMethod().params(config, ds)
        for name in ("solver", "coefficients"):
            p.pop(name, None)
        return {
            **p,
            "epochs": config.epochs,
            "normalize": bool(config.submodular_normalize),
            "weights": [0.2, 0.1, 0.5, 0.2],
            "ltl_log_eps": 5,
            "refresh": "epoch",
            "lr": "auto",
        }

    # The kernel options are refused as for mmd (another kernel's option away from its default).
    check_options = MMDMethod.check_options

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        n, epochs = ds.n_samples, config.epochs
        d, needs = feature_needs(config, ds)
        per_epoch = -(-n // k)
        data = f"the dataset ({n} samples of {d} features)"
        subject = f"--epochs {epochs} with N={n} samples"
        return needs + [
            MemoryNeed(2 * n * d * 8 + 3 * n * 8 + d * ds.n_classes * 8,
                       "the float64 features, soft features, scores and proxy", data),
            # batch_mmd2's prefix sums: the kernel's working set, as mmd's (never N x N)
            MemoryNeed(3 * n * (d + 2) * 4 + 10 * n * 8, "the kernel's working set", data),
            MemoryNeed(k * k * 12, "the batch's kernel block", f"k={k}"),
            MemoryNeed(epochs * n * 8, "the schedule's indices", subject),
            MemoryNeed(3 * (epochs * per_epoch + 1) * 8, "the batch offsets and MMD²", subject + f" and k={k}"),
        ]

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ..kernels import make_kernel, pinned_blas
        from ._mmd_build import cached_features, cached_row_sums
        from ._submodular import submodular_schedule

        spec = feature_spec(config)
        with pinned_blas():  # the same bits for any BLAS thread count
            X = cached_features(ds, spec, ctx.cache_dir)  # = prepare_features(ds, spec), memoised as mmd's
            kernel = make_kernel(config.kernel, bandwidth=config.bandwidth, degree=config.degree,
                                 coef0=config.coef0, X=X, seed=config.seed)
            kernel.check_range(X)
            s_tot, _ = cached_row_sums(kernel, X, fingerprint=ds.fingerprint,
                                       feature_params=spec.params(ds.n_features), cache_dir=ctx.cache_dir,
                                       progress=ctx.progress)
            r = submodular_schedule(X, ds.y, k, epochs=config.epochs, seed=config.seed,
                                    normalize=config.submodular_normalize, kernel=kernel, s_tot=s_tot,
                                    progress=ctx.progress, checkpoint=ctx.checkpoint)
        rule = config.bandwidth if config.kernel == "rbf" and isinstance(config.bandwidth, str) else None
        return MethodOutput(indices=r.indices, batch_offsets=r.batch_offsets, epoch_offsets=r.epoch_offsets,
                            params={**kernel.params(), "bandwidth_rule": rule},
                            batch_arrays={"batch_mmd2": r.batch_mmd2})
