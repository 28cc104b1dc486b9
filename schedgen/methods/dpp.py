"""``dpp``: every batch an independent k-DPP draw on the mmd kernel (DM-SGD, Zhang et al. 2017).

``P(B) = det(L_B) / e_k(λ(L))`` for every k-subset B, with L the kernel of ``mmd`` (RBF
with the median bandwidth by default, or ``--kernel poly``) on the same prepared
features, so the two methods differ only in how batches are chosen. An epoch is
⌈N/k⌉ independent draws, every batch exactly k distinct samples (the last one too);
within an epoch a sample may repeat or be missed, as in DM-SGD. Draw (e, b) is seeded by
``schedgen.rng.rng(seed, "dpp", e, b)``.

Samplers:

* exact (the default): Kulesza & Taskar's spectral sampler (2012, Alg. 7/8) from one
  float64 eigendecomposition of the N × N matrix L per build, so N is limited by memory
  (about 24·N² bytes); a build past that is refused, naming ``--approx nystrom:M``.
* ``--approx nystrom:M``: the dual sampler on a rank-M Nyström factor L ≈ ΦΦᵀ
  (:mod:`schedgen.kernels.nystrom`, seeded k-means landmarks): the M × M matrix C = ΦᵀΦ
  is eigendecomposed, eigenvectors are chosen by the same e_k recursion on C's
  eigenvalues and mapped to L's (V = Φ·v/sqrt(λ)); O(N·M) memory. The draws are exact
  k-DPP draws of ΦΦᵀ, not of L: the factor's measured error (relative error of the row
  sums, median and max, and Frobenius error of L on 2,000 seeded rows) is recorded in
  the store's params as ``approx_error``.

``batch_mmd2`` is always computed on the exact kernel. A build saves the draws done to
its checkpoint and a rerun after a kill continues from there, to the same bytes.

This module holds what a cache hit needs and imports nothing heavy; the computation is
in :mod:`schedgen.methods._dpp_build`, imported by :meth:`DPPMethod.run`.
"""

from __future__ import annotations

from ..errors import ParameterError
from ..memory import MemoryNeed, available_memory, format_bytes
from ..params import approx_landmarks
from ._base import Method, MethodOutput, RunContext, feature_needs
from .mmd import MMDMethod, check_kernel_options, check_landmarks, nystrom_needs

__all__ = ["DPPMethod", "SAMPLER", "DUAL_SAMPLER", "exact_bytes", "check_exact_fits", "check_approx"]

#: The sampler recorded in the params (and the cache key).
SAMPLER = "exact-spectral"
#: The sampler of ``--approx nystrom:M``.
DUAL_SAMPLER = "dual-nystrom"


def exact_bytes(n: int) -> int:
    """Memory of the exact sampler: L, its eigenvectors and LAPACK's workspace, ``8·N²·3`` bytes."""
    return 8 * n * n * 3


def check_exact_fits(n: int, available: int | None = None) -> None:
    """Refuse an N whose exact sampler would not fit in the memory available now.

    Raises
    ------
    ParameterError
        Naming N, the memory needed, what is available and ``--approx nystrom:M``.
    """
    available = available_memory() if available is None else available
    need = exact_bytes(n)
    if available is not None and need > available:
        raise ParameterError(
            f"--method dpp's exact k-DPP sampler eigendecomposes the N x N kernel: N={n} samples need "
            f"{format_bytes(need)} of memory (8·N²·3 bytes); {format_bytes(available)} is available; "
            f"pass --approx nystrom:M (e.g. nystrom:500) for the dual sampler on a rank-M Nyström factor "
            f"(8·N·M bytes)"
        )


def check_approx(approx: str, n: int, k: int) -> int:
    """M of ``--approx nystrom:M``, refused unless ``k <= M <= N``.

    Raises
    ------
    ParameterError
        One line naming M, N and k.
    """
    m = check_landmarks(approx, n)
    if m < k:
        raise ParameterError(f"--approx nystrom:M needs M >= k (a k-DPP of a rank-M kernel draws at most M "
                             f"samples), got --approx {approx} with k={k}")
    return m


class DPPMethod(Method):
    """Independent k-DPP batches on the mmd kernel (exact spectral sampler, or the dual
    sampler on a Nyström factor with ``--approx nystrom:M``)."""

    name = "dpp"
    revision = 1
    options = frozenset({"epochs", "kernel", "bandwidth", "degree", "coef0", "pca", "standardize", "approx"})

    def params(self, config, ds) -> dict:
        # The kernel and feature parameters exactly as mmd records them (minus its solver's).
        p = MMDMethod().params(config, ds)
        for name in ("solver", "coefficients"):
            p.pop(name, None)
        if config.approx is None:  # the exact sampler's params (and cache keys) as before --approx
            return {**p, "epochs": config.epochs, "sampler": SAMPLER}
        approx_landmarks(config.approx)
        return {**p, "epochs": config.epochs, "sampler": DUAL_SAMPLER, "approx": config.approx}

    def check_options(self, config) -> None:
        # The kernel options are refused as for mmd (another kernel's option away from its
        # default); the dual sampler takes any PSD kernel, so no check of its sign.
        check_kernel_options(config)

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        n, epochs = ds.n_samples, config.epochs
        d, needs = feature_needs(config, ds)
        per_epoch = -(-n // k)
        data = f"the dataset ({n} samples of {d} features)"
        subject = f"--epochs {epochs} with k={k} and N={n} samples"
        if config.approx is None:
            check_exact_fits(n)  # its own message: the limit is the sampler's, not an option's
            sampler = [MemoryNeed(exact_bytes(n), "the kernel matrix and its eigendecomposition", data),
                       MemoryNeed((k + 1) * (n + 1) * 8 + 2 * n * k * 8, "the k-DPP sampler's tables",
                                  f"k={k} and N={n}")]
        else:
            m = check_approx(config.approx, n, k)
            nys = f"--approx {config.approx} with N={n} samples"
            sampler = [
                # Φ, overwritten in place by the eigenvectors V = Φ·v/sqrt(λ); C and its eigenvectors
                MemoryNeed(n * m * 8 + 3 * m * m * 8, "the Nyström factor and its dual eigenvectors", nys),
                *nystrom_needs(config.approx, n, d),
                MemoryNeed((k + 1) * (m + 1) * 8 + 3 * n * k * 8 + 4 * n * 8,
                           "the k-DPP sampler's tables and the exact batch columns", f"k={k} and N={n}"),
            ]
        return needs + sampler + [
            MemoryNeed(epochs * per_epoch * k * 8 * 2, "the schedule's indices", subject),
            MemoryNeed(3 * (epochs * per_epoch + 1) * 8, "the batch offsets and MMD²", subject),
        ]

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ._dpp_build import run_dpp

        if config.approx is None:
            check_exact_fits(ds.n_samples)
        else:
            check_approx(config.approx, ds.n_samples, k)
        return run_dpp(config, ds, k, progress=ctx.progress, cache_dir=ctx.cache_dir, warn=ctx.warn,
                       checkpoint=ctx.checkpoint)
