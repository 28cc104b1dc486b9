"""``mmd`` (the default method): each next batch minimises MMD²(P ∪ B, Q \\ B).

This module holds what a cache hit needs (the parameters, the option checks, the
memory estimate) and imports nothing heavy; the computation is in
:mod:`schedgen.methods._mmd_build`, imported by :meth:`MMDMethod.run`.
"""

from __future__ import annotations

from ..errors import ParameterError
from ..memory import MemoryNeed
from ..params import parse_bandwidth
from ._base import Method, MethodOutput, RunContext, feature_needs, feature_spec

__all__ = ["MMDMethod", "DEFAULT_SOLVER", "KERNEL_OPTIONS"]

#: ``schedgen.methods.solvers.DEFAULT_SOLVER``, spelled out: importing the solvers loads HiGHS and
#: SciPy, which a cache hit must not pay for (a test keeps the two equal).
DEFAULT_SOLVER = "swap"
#: The solvers schedgen registers (``schedgen.methods.solvers.SOLVERS``); another name is checked
#: against the registry itself.
BUILTIN_SOLVERS = frozenset({"swap", "greedy", "lp"})
#: Kernel parameters, by kernel: another kernel's parameter set away from its default is refused.
KERNEL_OPTIONS: dict[str, frozenset] = {"rbf": frozenset({"bandwidth"}), "poly": frozenset({"degree", "coef0"})}


class MMDMethod(Method):
    """Batches by MMD selection (``schedgen.methods.selection`` with a ``schedgen.methods.solvers`` solver)."""

    name = "mmd"
    revision = 1
    options = frozenset({"solver", "kernel", "bandwidth", "degree", "coef0", "paper_coefficients", "pca",
                         "standardize"})

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
        return p

    def check_options(self, config) -> None:
        if config.kernel not in KERNEL_OPTIONS:
            return
        for kernel, names in sorted(KERNEL_OPTIONS.items()):
            for name in sorted(names):
                if kernel != config.kernel and not config.is_default(name):
                    raise ParameterError(
                        f"--{name.replace('_', '-')} applies only to --kernel {kernel}, "
                        f"got it with {config.given('kernel')}"
                    )

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
        return needs

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        from ._mmd_build import run_mmd

        return run_mmd(config, ds, k, progress=ctx.progress, cache_dir=ctx.cache_dir, warn=ctx.warn,
                       checkpoint=ctx.checkpoint)
