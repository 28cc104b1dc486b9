"""Kernel functions as small frozen dataclasses, and the array helpers they share.

Every kernel evaluates a block as one GEMM on augmented operands followed by an
in-place elementwise finish, so that a block costs one matrix product and a few
passes over memory that is still in cache::

    K[rows, cols] = finish(lhs(X_rows) @ rhs(X_cols).T)

* RBF: ``lhs = [2γx, -γ‖x‖², 1]``, ``rhs = [y, 1, -γ‖y‖²]`` with ``γ = 1/(2σ²)``, so
  the product is ``-γ(‖x‖² + ‖y‖² - 2xᵀy) = -γ‖x-y‖²``; finish = clamp at 0, exp.
* Polynomial: ``lhs = [s·x, c]``, ``rhs = [y, 1]``; finish = integer power.

Blocks are computed in the floating dtype of the data (float32 stays float32,
float64 stays float64, anything else is promoted to float64). Before values are
computed, :meth:`Kernel.check_range` bounds every intermediate of the recipe from
the largest squared row norm (O(N·D), no kernel value formed) and refuses data or
parameters that would overflow that dtype: an overflowed exponent or power turns
into inf, NaN or a silent 0, never into a usable schedule.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from schedgen.errors import ParameterError

from .backend import get_namespace

__all__ = ["Kernel", "RBF", "Polynomial", "as_float_matrix", "sq_norms", "kernel_from_params"]

# Rows per chunk when accumulating squared norms in float64 (bounds the float64
# temporary to ~8 MB at D = 128).
_NORM_CHUNK = 8192


def as_float_matrix(X: Any, name: str = "X") -> Any:
    """``X`` as a 2-D float32 or float64 array in its own namespace.

    float32 and float64 pass through uncopied; integer, boolean and float16 data
    are promoted to float64. Complex data is rejected.
    """
    xp = get_namespace(X)
    X = xp.asarray(X)
    if X.ndim != 2:
        raise ParameterError(f"{name} must be a 2-D array of shape (n_samples, n_features), got ndim={X.ndim}")
    if X.dtype == xp.float32 or X.dtype == xp.float64:
        return X
    if X.dtype.kind not in "biuf":
        raise ParameterError(f"{name} must hold real numbers, got dtype {X.dtype}")
    return X.astype(xp.float64)


def _result_dtype(xp, *arrays):
    # float32 only when every operand is float32: mixing never silently loses precision.
    return xp.float32 if all(a.dtype == xp.float32 for a in arrays) else xp.float64


def sq_norms(X: Any) -> Any:
    """Squared row norms ``‖x_i‖²``, accumulated in float64, returned in X's dtype.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)

    Returns
    -------
    array of shape (n_samples,)
        Same namespace as X; float32 for float32 X, else float64. Compute once and
        pass it as ``sq=`` / ``sq_rows=`` / ``sq_cols=`` in hot loops. A norm beyond
        the dtype's range is inf (without a NumPy warning): :meth:`RBF.check_range`
        refuses it with a message naming the cause.
    """
    X = as_float_matrix(X)
    xp = get_namespace(X)
    n = X.shape[0]
    out = xp.empty(n, dtype=X.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, n, _NORM_CHUNK):
            chunk = X[a : a + _NORM_CHUNK].astype(xp.float64)
            out[a : a + _NORM_CHUNK] = xp.sum(chunk * chunk, axis=1)
    return out


def _sq_norms64(X: Any) -> Any:
    xp = get_namespace(X)
    n = X.shape[0]
    out = xp.empty(n, dtype=xp.float64)
    for a in range(0, n, _NORM_CHUNK):
        chunk = X[a : a + _NORM_CHUNK].astype(xp.float64)
        out[a : a + _NORM_CHUNK] = xp.sum(chunk * chunk, axis=1)
    return out


def _max_sq64(X: Any) -> float:
    """The largest squared row norm, accumulated in float64, as a host float (0.0 without
    rows; inf when it overflows even float64)."""
    if X.shape[0] == 0:
        return 0.0
    xp = get_namespace(X)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(xp.max(_sq_norms64(X)))


def _max_abs(X: Any) -> float:
    xp = get_namespace(X)
    return float(xp.max(xp.abs(X))) if X.size else 0.0


def _dtype_limits(X: Any) -> tuple[str, float]:
    dt = np.dtype(X.dtype)
    return dt.name, float(np.finfo(dt).max)


def _round_up(v: float) -> float:
    """``v`` rounded up to two significant digits (a bound that, quoted, still holds)."""
    if not (v > 0 and math.isfinite(v)):
        return v
    step = 10.0 ** (math.floor(math.log10(v)) - 1)
    return math.ceil(v / step * (1 - 1e-12)) * step


def _check_sq(sq: Any, X: Any, name: str) -> Any:
    xp = get_namespace(X)
    if sq is None:
        return sq_norms(X)
    sq = xp.asarray(sq)
    if sq.shape != (X.shape[0],):
        raise ParameterError(f"{name} must have shape ({X.shape[0]},) to match the data, got {tuple(sq.shape)}")
    return sq


def _positive_finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{what} must be a positive finite number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ParameterError(f"{what} must be a positive finite number, got {v!r}")
    return v


class Kernel(ABC):
    """The interface of a kernel ``K(x, y)``; implementations are frozen dataclasses.

    Public methods take and return arrays in the namespace of their inputs
    (NumPy or CuPy). The ``_lhs``/``_rhs``/``_finish`` hooks are the block
    recipe shared with :mod:`schedgen.kernels.blocked`.
    """

    #: Name stored in ``params()["kernel"]`` and accepted by ``make_kernel``.
    name: ClassVar[str]
    #: Whether ``_lhs``/``_rhs`` need squared norms.
    uses_sq: ClassVar[bool] = False
    #: Whether ``_finish`` needs a scratch buffer of the block's shape.
    needs_scratch: ClassVar[bool] = False

    @property
    @abstractmethod
    def nonnegative(self) -> bool:
        """True when every value ``K(x, y)`` is >= 0 whatever the data (the
        negative-part sums are then skipped and exactly zero)."""

    @abstractmethod
    def params(self) -> dict:
        """Plain-JSON description, inverted by :func:`kernel_from_params`."""

    @abstractmethod
    def diag(self, X: Any) -> Any:
        """``K(x_i, x_i)`` as float64, shape (n_samples,), in X's namespace."""

    def check_range(self, X: Any, *, sq: Any = None) -> None:
        """Refuse data on which computing this kernel in X's dtype would overflow.

        Called by every routine before it forms kernel values (:meth:`block`,
        :func:`~schedgen.kernels.row_sums`, ``block_sums``, ``gram``,
        :class:`~schedgen.kernels.WorkingSet`), on the rows it is about to use;
        a pair of rows is safe when each of them is. Costs O(n·D) (O(n) for RBF
        with ``sq``), never a kernel value.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        sq : array of shape (n_samples,), optional
            ``sq_norms(X)`` in X's dtype, when the caller has it.

        Raises
        ------
        ParameterError
            Naming the cause (the features' scale or a parameter), what was
            expected and what was received. The base class accepts everything.
        """

    @abstractmethod
    def _lhs(self, X: Any, sq: Any) -> Any:
        """Left GEMM operand, shape (n, D + a), in X's dtype."""

    @abstractmethod
    def _rhs(self, X: Any, sq: Any) -> Any:
        """Right GEMM operand, shape (n, D + a), in X's dtype."""

    @abstractmethod
    def _finish(self, tile: Any, scratch: Any, xp) -> None:
        """Turn ``lhs @ rhs.T`` into kernel values, in place."""

    def block(self, X_rows: Any, X_cols: Any, *, sq_rows: Any = None, sq_cols: Any = None) -> Any:
        """Dense kernel block ``K[i, j] = K(X_rows[i], X_cols[j])``.

        Parameters
        ----------
        X_rows : array of shape (n_rows, n_features)
        X_cols : array of shape (n_cols, n_features)
        sq_rows, sq_cols : arrays of shape (n_rows,) and (n_cols,), optional
            Precomputed :func:`sq_norms` (used by kernels that need them).

        Returns
        -------
        array of shape (n_rows, n_cols)
            float32 when both inputs are float32, else float64; same namespace.

        Notes
        -----
        One GEMM under the caller's BLAS settings: its last bits may depend on the
        BLAS thread count. :func:`~schedgen.kernels.gram` pins them.
        """
        X_rows = as_float_matrix(X_rows, "X_rows")
        X_cols = as_float_matrix(X_cols, "X_cols")
        xp = get_namespace(X_rows, X_cols)
        if X_rows.shape[1] != X_cols.shape[1]:
            raise ParameterError(
                f"X_rows and X_cols must have the same number of features, "
                f"got {X_rows.shape[1]} and {X_cols.shape[1]}"
            )
        dtype = _result_dtype(xp, X_rows, X_cols)
        X_rows = X_rows.astype(dtype, copy=False)
        X_cols = X_cols.astype(dtype, copy=False)
        if self.uses_sq:
            sq_rows = _check_sq(sq_rows, X_rows, "sq_rows").astype(dtype, copy=False)
            sq_cols = _check_sq(sq_cols, X_cols, "sq_cols").astype(dtype, copy=False)
        self.check_range(X_rows, sq=sq_rows)
        self.check_range(X_cols, sq=sq_cols)
        out = xp.matmul(self._lhs(X_rows, sq_rows), self._rhs(X_cols, sq_cols).T)
        scratch = xp.empty_like(out) if self.needs_scratch else None
        self._finish(out, scratch, xp)
        return out


@dataclass(frozen=True)
class RBF(Kernel):
    """Gaussian kernel ``K(x, y) = exp(-‖x - y‖² / (2σ²))``.

    Parameters
    ----------
    sigma : float
        Bandwidth σ, finite and > 0.
    """

    sigma: float
    name: ClassVar[str] = "rbf"
    uses_sq: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "sigma", _positive_finite(self.sigma, "bandwidth"))

    @property
    def gamma(self) -> float:
        """``γ = 1/(2σ²)``."""
        return 1.0 / (2.0 * self.sigma * self.sigma)

    @property
    def nonnegative(self) -> bool:
        return True

    def params(self) -> dict:
        return {"kernel": self.name, "bandwidth": float(self.sigma)}

    def diag(self, X: Any) -> Any:
        X = as_float_matrix(X)
        xp = get_namespace(X)
        return xp.ones(X.shape[0], dtype=xp.float64)

    def check_range(self, X: Any, *, sq: Any = None) -> None:
        """Refuse features or a bandwidth for which the GEMM recipe overflows X's dtype.

        With m = max ‖x‖² over the rows and γ = 1/(2σ²), the recipe forms ‖x‖² in X's
        dtype, the operand entries 2γx and -γ‖x‖², and partial sums of
        ``2γxᵀy - γ‖x‖² - γ‖y‖²`` bounded by 4γm (‖x - y‖² <= 4m). All are finite when
        ``m <= max``, ``2γ <= max`` and ``4γm <= max`` (max: the dtype's largest value).
        Past these the exponent becomes -inf or NaN: K = 0 or NaN everywhere.
        """
        X = as_float_matrix(X)
        if X.shape[0] == 0:
            return
        xp = get_namespace(X)
        dt, fmax = _dtype_limits(X)
        m = float(xp.max(sq)) if sq is not None else _max_sq64(X)
        if not m <= fmax:  # inf or NaN included
            m = _max_sq64(X)
            raise ParameterError(
                f"features overflow {dt} in the RBF kernel's squared distances: expected every ||x||^2 <= "
                f"{fmax:.3g}, got max ||x||^2 = {m:.3g} (max |x| = {_max_abs(X):.3g}); "
                "rescale the features (e.g. --standardize)"
            )
        g = self.gamma
        if not (2.0 * g <= fmax and 4.0 * g * m <= fmax):
            low = _round_up(max(math.sqrt(2.0 * m / fmax), 1.0 / math.sqrt(fmax)))
            raise ParameterError(
                f"bandwidth is too small for these features: the RBF exponent ||x - y||^2 / (2 sigma^2) can reach "
                f"{max(4.0 * g * m, 2.0 * g):.3g}, beyond {dt}'s {fmax:.3g} (max ||x||^2 = {m:.3g}); expected a "
                f"bandwidth >= {low:.2g}, got {self.sigma:.3g}; pass --bandwidth median or a larger --bandwidth"
            )

    def _lhs(self, X, sq):
        xp = get_namespace(X)
        n, d = X.shape
        g = self.gamma
        out = xp.empty((n, d + 2), dtype=X.dtype)
        xp.multiply(X, X.dtype.type(2.0 * g), out=out[:, :d])
        out[:, d] = (-g) * sq.astype(xp.float64)
        out[:, d + 1] = 1.0
        return out

    def _rhs(self, X, sq):
        xp = get_namespace(X)
        n, d = X.shape
        out = xp.empty((n, d + 2), dtype=X.dtype)
        out[:, :d] = X
        out[:, d] = 1.0
        out[:, d + 1] = (-self.gamma) * sq.astype(xp.float64)
        return out

    def _finish(self, tile, scratch, xp):
        # -γ‖x-y‖² must be <= 0; rounding can push it above for (near-)equal points.
        # On the host, clamping only the blocks that need it saves a full pass.
        if xp is np:
            if tile.size and tile.max() > 0:
                np.minimum(tile, 0, out=tile)
        else:
            xp.minimum(tile, 0, out=tile)
        xp.exp(tile, out=tile)


def _ipow(tile, degree: int, scratch, xp) -> None:
    """``tile **= degree`` by left-to-right binary exponentiation, in place."""
    if degree == 1:
        return
    bits = bin(degree)[3:]  # the bits after the leading 1
    if "1" in bits:
        scratch[...] = tile
    for bit in bits:
        xp.multiply(tile, tile, out=tile)
        if bit == "1":
            xp.multiply(tile, scratch, out=tile)


@dataclass(frozen=True)
class Polynomial(Kernel):
    """Polynomial kernel ``K(x, y) = (s·xᵀy + c)^d``.

    Positive semi-definite (PSD) for every data set exactly when c >= 0, which MMD
    needs (with a kernel that is not PSD, MMD² can be negative and the schedule's
    objective means nothing), so ``coef0 < 0`` is refused:

    * c >= 0 suffices: ``(s·xᵀy + c)^d = Σ_k C(d,k) c^(d-k) s^k (xᵀy)^k``, and each
      ``(xᵀy)^k`` is PSD (Schur product theorem), with coefficients >= 0;
    * c < 0 fails on some data: for odd d, a sample at the origin has
      ``K(0, 0) = c^d < 0``; for even d, a sample with ``s‖x‖² = -c`` has
      ``K(x, x) = 0`` and a second sample y with ``s·xᵀy ≠ -c`` gives the 2 × 2
      Gram matrix ``[[0, a], [a, b]]``, a ≠ 0, whose determinant is ``-a² < 0``.

    Parameters
    ----------
    degree : int
        d >= 1 (an ``int``; ``bool`` and floats are rejected).
    coef0 : float
        c, finite and >= 0 (see above).
    scale : float or None
        s, finite and > 0; ``None`` means ``1/n_features``, resolved at call time
        (and stored as ``null`` by :meth:`params`).
    """

    degree: int
    coef0: float = 1.0
    scale: float | None = None
    name: ClassVar[str] = "poly"
    needs_scratch: ClassVar[bool] = True

    def __post_init__(self):
        d = self.degree
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or int(d) < 1:
            raise ParameterError(f"degree must be an integer >= 1, got {d!r}")
        object.__setattr__(self, "degree", int(d))
        c = self.coef0
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(float(c)):
            raise ParameterError(f"coef0 must be a finite number, got {c!r}")
        if float(c) < 0:
            raise ParameterError(
                "coef0 must be >= 0: with coef0 < 0 the polynomial kernel is not positive semi-definite "
                f"and MMD^2 can be negative, got {float(c)!r}"
            )
        object.__setattr__(self, "coef0", float(c) + 0.0)  # -0.0 -> 0.0: one cache key
        if self.scale is not None:
            object.__setattr__(self, "scale", _positive_finite(self.scale, "scale"))

    @property
    def nonnegative(self) -> bool:
        # An even power is a final squaring in _ipow: never negative in floating point.
        return self.degree % 2 == 0

    def params(self) -> dict:
        return {"kernel": self.name, "degree": self.degree, "coef0": self.coef0, "scale": self.scale}

    def resolved_scale(self, n_features: int) -> float:
        """``scale``, or ``1/n_features`` when it is None."""
        return self.scale if self.scale is not None else 1.0 / max(int(n_features), 1)

    def diag(self, X: Any) -> Any:
        X = as_float_matrix(X)
        return (self.resolved_scale(X.shape[1]) * _sq_norms64(X) + self.coef0) ** self.degree

    def check_range(self, X: Any, *, sq: Any = None) -> None:
        """Refuse features, degree or coef0 for which kernel values overflow X's dtype.

        By Cauchy-Schwarz ``|s·xᵀy + c| <= s·m + |c|`` (m = max ‖x‖²), so every value,
        every partial sum of the GEMM and every intermediate power of ``_ipow`` is at
        most ``(s·m + |c|)^d`` in magnitude (the largest diagonal value); the operand
        entries ``s·x`` at most ``s·√m``. Both must fit the dtype.
        """
        X = as_float_matrix(X)
        n, dim = X.shape
        if n == 0:
            return
        dt, fmax = _dtype_limits(X)
        s, c, d = self.resolved_scale(dim), abs(self.coef0), self.degree
        m = _max_sq64(X)
        base = s * m + c  # Python floats: inf, never an exception
        log_max = math.log(fmax)
        log_peak = d * math.log(base) if base > 0 else -math.inf
        if log_peak <= log_max and s * math.sqrt(m) <= fmax:
            return
        if not math.isfinite(log_peak):
            shown = "inf"
        elif log_peak < 700:
            shown = f"{math.exp(log_peak):.3g}"
        else:
            shown = f"about 1e+{log_peak / math.log(10):.0f}"
        term = f"x.y/{dim}" if self.scale is None else f"{s:g}*x.y"
        advice = []
        if base > 1 and math.isfinite(base) and log_max / math.log(base) >= 1:
            advice.append(f"lower --degree (at most {math.floor(log_max / math.log(base))} with these features and coef0)")
        room = fmax ** (1.0 / d) - s * m
        if room > 0:
            advice.append(f"lower --coef0 (at most {room:.3g} with degree {d})")
        advice.append("rescale the features (e.g. --standardize)")
        raise ParameterError(
            f"polynomial kernel values overflow {dt}: ({term} + coef0)^degree reaches {shown} on these features "
            f"(degree={d}, coef0={self.coef0:g}, max ||x||^2 = {m:.3g}), expected at most {fmax:.3g}; "
            + ", or ".join(advice)
        )

    def _lhs(self, X, sq):
        xp = get_namespace(X)
        n, d = X.shape
        out = xp.empty((n, d + 1), dtype=X.dtype)
        xp.multiply(X, X.dtype.type(self.resolved_scale(d)), out=out[:, :d])
        out[:, d] = self.coef0
        return out

    def _rhs(self, X, sq):
        xp = get_namespace(X)
        n, d = X.shape
        out = xp.empty((n, d + 1), dtype=X.dtype)
        out[:, :d] = X
        out[:, d] = 1.0
        return out

    def _finish(self, tile, scratch, xp):
        _ipow(tile, self.degree, scratch, xp)


def kernel_from_params(params: dict) -> Kernel:
    """Rebuild a kernel from its :meth:`Kernel.params` dict."""
    if not isinstance(params, dict) or "kernel" not in params:
        raise ParameterError(f"kernel params must be a dict with a 'kernel' key, got {params!r}")
    name = params["kernel"]
    if name == RBF.name:
        return RBF(params.get("bandwidth"))
    if name == Polynomial.name:
        return Polynomial(params.get("degree"), params.get("coef0", 1.0), params.get("scale"))
    raise ParameterError(f"kernel must be one of 'rbf', 'poly', got {name!r}")
