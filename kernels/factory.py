"""``make_kernel``: from option values (as the CLI and configs hold them) to a kernel."""

from __future__ import annotations

from typing import Any

from schedgen.errors import ParameterError

from .bandwidth import median_bandwidth
from .families import RBF, Kernel, Polynomial

__all__ = ["KERNELS", "make_kernel"]

#: Kernel names accepted by :func:`make_kernel`.
KERNELS = {RBF.name: RBF, Polynomial.name: Polynomial}


def make_kernel(
    name: str,
    *,
    bandwidth: float | str | None = None,
    degree: int = 3,
    coef0: float = 1.0,
    X: Any = None,
    seed: int = 0,
) -> Kernel:
    """Build a kernel by name.

    Parameters
    ----------
    name : {"rbf", "poly"}
    bandwidth : float, "median" or None
        RBF only. None or "median": the median heuristic on X
        (:func:`~schedgen.kernels.median_bandwidth`, seeded by ``seed``); a number: σ.
        For "poly" only None and "median" (the option's default) are accepted, and ignored.
    degree, coef0 : int, float
        Polynomial only (ignored for "rbf"); the scale is 1/n_features.
    X : array of shape (n_samples, n_features), optional
        Needed for the median heuristic.
    seed : int
        Seeds the median heuristic's subsample.
    """
    if not isinstance(name, str) or name not in KERNELS:
        raise ParameterError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {name!r}")
    is_rule = bandwidth is None or (isinstance(bandwidth, str) and bandwidth == "median")
    if name == Polynomial.name:
        if not is_rule:
            raise ParameterError(f"bandwidth applies only to the 'rbf' kernel, got bandwidth={bandwidth!r} with 'poly'")
        return Polynomial(degree, coef0)
    if is_rule:
        if X is None:
            raise ParameterError("the median bandwidth heuristic needs the data: pass X, or give a numeric bandwidth")
        return RBF(median_bandwidth(X, seed=seed))
    if isinstance(bandwidth, str):
        raise ParameterError(f"bandwidth must be a positive finite number or 'median', got {bandwidth!r}")
    return RBF(bandwidth)
