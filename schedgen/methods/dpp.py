"""``dpp``: every batch an independent k-DPP draw on the mmd kernel (DM-SGD, Zhang et al. 2017).

``P(B) = det(L_B) / e_k(λ(L))`` for every k-subset B, with L the kernel of ``mmd`` (RBF
with the median bandwidth by default, or ``--kernel poly``) on the same prepared
features, so the two methods differ only in how batches are chosen. An epoch is
⌈N/k⌉ independent draws, every batch exactly k distinct samples (the last one too);
within an epoch a sample may repeat or be missed, as in DM-SGD. Draw (e, b) is seeded by
``schedgen.rng.rng(seed, "dpp", e, b)``.

Sampler: exact spectral sampling (Kulesza & Taskar 2012, Alg. 7/8) from one float64
eigendecomposition of the N × N matrix L per build, so N is limited by memory
(about 24·N² bytes); a build past that is refused. The dual / Nyström sampler for
large N is not implemented yet.

This module holds what a cache hit needs and imports nothing heavy; the computation is
in :mod:`schedgen.methods._dpp_build`, imported by :meth:`DPPMethod.run`.
"""

from __future__ import annotations

from ..errors import ParameterError
from ..memory import MemoryNeed, available_memory, format_bytes
from ._base import Method, MethodOutput, RunContext, feature_needs
from .mmd import MMDMethod

__all__ = ["DPPMethod", "SAMPLER", "exact_bytes", "check_exact_fits"]

#: The sampler recorded in the params (and the cache key).
SAMPLER = "exact-spectral"


def exact_bytes(n: int) -> int:
    """Memory of the exact sampler: L, its eigenvectors and LAPACK's workspace, ``8·N²·3`` bytes."""
    return 8 * n * n * 3


def check_exact_fits(n: int, available: int | None = None) -> None:
    """Refuse an N whose exact sampler would not fit in the memory available now.

    Raises
    ------
    ParameterError
        Naming N, the memory needed and what is available.
    """
    available = available_memory() if available is None else available
    need = exact_bytes(n)
    if available is not None and need > available:
        raise ParameterError(
            f"--method dpp's exact k-DPP sampler eigendecomposes the N x N kernel: N={n} samples need "
            f"{format_bytes(need)} of memory (8·N²·3 bytes); {format_bytes(available)} is available "
            f"(the dual/Nyström sampler for large N is not implemented)"
        )


class DPPMethod(Method):
    """Independent k-DPP batches on the mmd kernel (exact spectral sampler)."""

    name = "dpp"
    revision = 1
    options = frozenset({"epochs", "kernel", "bandwidth", "degree", "coef0", "pca", "standardize"})

    def params(self, config, ds) -> dict:
        # The kernel and feature parameters exactly as mmd records them (minus its solver's).
        p = MMDMethod().params(config, ds)
        for name in ("solver", "coefficients"):
            p.pop(name, None)
        return {**p, "epochs": config.epochs, "sampler": SAMPLER}

    # The kernel options are refused as for mmd (another kernel's option away from its default).
    check_options = MMDMethod.check_options

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        n, epochs = ds.n_samples, config.epochs
        check_exact_fits(n)  # its own message: the limit is the sampler's, not an option's
        d, needs = feature_needs(config, ds)
        per_epoch = -(-n // k)
        data = f"the dataset ({n} samples of {d} features)"
        subject = f"--epochs {epochs} with k={k} and N={n} samples"
        return needs + [
            MemoryNeed(exact_bytes(n), "the kernel matrix and its eigendecomposition", data),
            MemoryNeed((k + 1) * (n + 1) * 8 + 2 * n * k * 8, "the k-DPP sampler's tables", f"k={k} and N={n}"),
            MemoryNeed(epochs * per_epoch * k * 8 * 2, "the schedule's indices", subject),
            MemoryNeed(3 * (epochs * per_epoch + 1) * 8, "the batch offsets and MMD²", subject),
        ]

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ._dpp_build import run_dpp

        check_exact_fits(ds.n_samples)
        return run_dpp(config, ds, k, progress=ctx.progress, cache_dir=ctx.cache_dir, warn=ctx.warn)
