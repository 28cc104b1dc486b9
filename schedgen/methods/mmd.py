"""``mmd`` (the default method): each next batch minimises MMD²(P ∪ B, Q \\ B).

``--approx nystrom:M`` replaces the exact row sums (one N² pass) by those of a rank-M
Nyström factor Φ of the kernel (:mod:`schedgen.kernels.nystrom`, seeded k-means
landmarks): ``s_tot = Φ(Φᵀ1)`` and ``s_P`` kept through Φ, N·M a step. The solvers still
read exact kernel values. The factor's measured error (relative error of ``s_tot``,
median and max, and Frobenius error, on 2,000 seeded rows against exact sums) is
recorded in the store's params as ``approx_error``, and ``batch_mmd2`` is then the MMD²
of the Nyström kernel ΦΦᵀ (``batch_mmd2_kernel: "nystrom"`` in the params), not of the
exact kernel: an exact one would cost the N² pass the option avoids.

This module holds what a cache hit needs (the parameters, the option checks, the
memory estimate) and imports nothing heavy; the computation is in
:mod:`schedgen.methods._mmd_build`, imported by :meth:`MMDMethod.run`.
"""

from __future__ import annotations

from ..errors import ParameterError
from ..memory import MemoryNeed
from ..params import approx_landmarks, parse_bandwidth
from ._base import Method, MethodOutput, RunContext, feature_needs, feature_spec

__all__ = ["MMDMethod", "DEFAULT_SOLVER", "KERNEL_OPTIONS", "check_landmarks", "nystrom_needs",
           "check_kernel_options", "check_approx_kernel"]

#: ``schedgen.methods.solvers.DEFAULT_SOLVER``, spelled out: importing the solvers loads HiGHS and
#: SciPy, which a cache hit must not pay for (a test keeps the two equal).
DEFAULT_SOLVER = "swap"
#: The solvers schedgen registers (``schedgen.methods.solvers.SOLVERS``); another name is checked
#: against the registry itself.
BUILTIN_SOLVERS = frozenset({"swap", "greedy", "lp"})
#: Kernel parameters, by kernel: another kernel's parameter set away from its default is refused.
KERNEL_OPTIONS: dict[str, frozenset] = {"rbf": frozenset({"bandwidth"}), "poly": frozenset({"degree", "coef0"})}


#: Rows of the subsample the Nyström factor's error is measured on (``kernels.nystrom.ERROR_ROWS``).
_ERROR_ROWS = 2000


def check_landmarks(approx: str, n: int) -> int:
    """M of ``--approx nystrom:M``, refused unless ``M <= N``.

    Raises
    ------
    ParameterError
        One line naming M and N.
    """
    m = approx_landmarks(approx)
    if m > n:
        raise ParameterError(f"--approx nystrom:M needs M <= N (landmarks are k-means centres of the N={n} samples), "
                             f"got --approx {approx}")
    return m


def nystrom_needs(approx: str, n: int, d: int) -> list[MemoryNeed]:
    """What measuring the factor of ``--approx nystrom:M`` and fitting its k-means allocate
    (besides Φ itself, which each method counts with what it does to it)."""
    m = check_landmarks(approx, n)
    r = min(n, _ERROR_ROWS)
    # the error's float64 rows, K_SS and Φ_S Φ_Sᵀ, and k-means' centres and distances
    return [MemoryNeed(2 * r * r * 8 + r * d * 8 + 2 * m * d * 8 + min(n, 100_000) * (d * 4 + 16),
                       "the factor's error and k-means", f"--approx {approx} with N={n} samples")]


def check_kernel_options(config) -> None:
    """Refuse another kernel's parameter set away from its default (``--degree`` with rbf)."""
    if config.kernel not in KERNEL_OPTIONS:
        return
    for kernel, names in sorted(KERNEL_OPTIONS.items()):
        for name in sorted(names):
            if kernel != config.kernel and not config.is_default(name):
                raise ParameterError(
                    f"--{name.replace('_', '-')} applies only to --kernel {kernel}, "
                    f"got it with {config.given('kernel')}"
                )


def check_approx_kernel(config) -> None:
    """Refuse ``--approx`` with a kernel that can be negative (poly of odd degree): the
    LP's bound needs the negative row sums ``Σ_j min(K_ij, 0)``, an exact N² pass."""
    if config.approx is not None and config.kernel == "poly" and config.degree % 2:
        raise ParameterError(
            f"--approx needs a kernel that is never negative (rbf, or poly with an even --degree): the "
            f"negative row sums need the N² pass it avoids; got --kernel poly with --degree {config.degree}"
        )


class MMDMethod(Method):
    """Batches by MMD selection (``schedgen.methods.selection`` with a ``schedgen.methods.solvers`` solver)."""

    name = "mmd"
    #: 2: the exact loop runs over fixed row blocks (any number of shards or engines gives the
    #: same bytes); batch_mmd2 differs from revision 1 in its last bits.
    revision = 2
    options = frozenset({"solver", "kernel", "bandwidth", "degree", "coef0", "paper_coefficients", "pca",
                         "standardize", "approx"})

    def params(self, config, ds) -> dict:
        if config.solver is not None and config.solver not in BUILTIN_SOLVERS:
            from .solvers import get_solver

            get_solver(config.solver)  # refuses an unknown solver before its name enters the store's
        p = {
            "seed": config.seed,
            "solver": config.solver or DEFAULT_SOLVER,
            "coefficients": "paper" if config.paper_coefficients else "exact",
            "kernel": config.kernel,
            **feature_spec(config).params(ds.n_features),
        }
        if config.kernel == "rbf":
            p["bandwidth"] = parse_bandwidth(config.bandwidth)
        else:
            p["degree"] = config.degree
            p["coef0"] = float(config.coef0)
            if config.kernel == "poly":
                from ..kernels import Polynomial

                Polynomial(config.degree, p["coef0"])  # refuses a kernel that is not PSD (coef0 < 0) before any work
        if config.approx is not None:  # only then: the exact builds' params and cache keys stay as they were
            approx_landmarks(config.approx)
            p["approx"] = config.approx
        from ..kernels.backend import resolve_device  # NumPy only; cupy only if installed, to look for a GPU

        if resolve_device(config.device) == "cuda":
            # A GPU's GEMM rounds differently from the host's BLAS, and its tiles differ, so the
            # row sums (and near-ties, hence choices) can differ in the last bits: a cuda build is
            # its own artifact, recorded as such and cached under its own key. CPU builds keep
            # their params and keys (no "device" entry).
            p["device"] = "cuda"
        return p

    def check_options(self, config) -> None:
        check_kernel_options(config)
        check_approx_kernel(config)

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        # One pass over the data (the indices, in a list and then one array), the kernel's
        # working set (operands of N x (D + 2), per-sample sums), and what k multiplies.
        n = ds.n_samples
        d, needs = feature_needs(config, ds)
        solver = config.solver or DEFAULT_SOLVER
        data = f"the dataset ({n} samples of {d} features)"
        needs += [
            MemoryNeed(3 * n * 8, "the schedule's indices", data),
            MemoryNeed(3 * n * (d + 2) * 4 + 10 * n * 8, "the kernel's working set", data),
            MemoryNeed(k * k * 12, "the batch's kernel block", f"k={k}"),
        ]
        if k < n:
            subject = f"k={k} with --solver {solver} and N={n} samples"
            if solver in ("greedy", "swap"):
                needs.append(MemoryNeed(k * n * 8, "the solver's kernel columns", subject))
            elif solver == "lp":
                side = 2 * min(k, n - k)  # the LP of the k or of the N - k left out, whichever is smaller
                needs.append(MemoryNeed(2 * side * side * 8, "the LP's pair block", subject))
        if config.approx is not None:
            m = check_landmarks(config.approx, n)
            nys = f"--approx {config.approx} with N={n} samples"
            needs += [MemoryNeed(n * m * 8, "the Nyström factor", nys), *nystrom_needs(config.approx, n, d)]
        return needs

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ._mmd_build import run_mmd

        if config.approx is not None:
            check_landmarks(config.approx, ds.n_samples)
        return run_mmd(config, ds, k, progress=ctx.progress, cache_dir=ctx.cache_dir, warn=ctx.warn,
                       checkpoint=ctx.checkpoint)
