"""The SVM-generalised update (papers/svm-generalized-updates.txt, DESIGN.md §3).

Per batch ``(x, y)`` of ``ℓ`` samples and a model with ``K`` outputs:

* ``g_ij = ∇_w f^j(w, x_i)`` for every sample ``i`` and output ``j`` (``torch.func``:
  ``vmap`` over samples of ``jacrev`` of a ``functional_call``), flattened over the
  trainable parameters in ``model.named_parameters()`` order;
* ``y_ij = +1`` for the label, ``-1`` otherwise; ``z_ij = y_ij g_ij``; ``κ = Z Zᵀ``;
* the dual ``max ε Σα − ½ αᵀκα`` s.t. ``0 ≤ α ≤ C`` (no bias, so no equality row),
  solved by HiGHS's active-set QP solver;
* ``δw = Σ α_ij y_ij g_ij`` and ``w += step · δw``;
* the bound term ``B · sqrt(tr κ) / ℓ`` with ``B = ‖δw‖`` (Theorem 2's data-dependent
  term without its constant ``4/γ``, as §3.2 and Algorithm 2 compute it).

It is the primal ``min ½‖δw‖² + C Σ ξ_ij`` s.t. ``y_ij ⟨δw, g_ij⟩ ≥ ε − ξ_ij``,
``ξ ≥ 0``: a bias-free linear L1-SVM on the ``ℓK`` vectors ``g_ij``, with target ``ε``
instead of 1. Hence ``δw(ε, C) = ε · δw(1, C/ε)``, which the solver uses to scale the
QP (below).

Loose bound. With ``threshold`` set and the bound above it, §3.2's text (``rule="text"``,
the default): the update is not applied ("we do not apply updates that have a loose
bound"), the next batch is asked to be twice as large and ``C ← 0.1·C``. Algorithm 2
read literally (``rule="pseudocode"``) doubles the batch and scales C the same way but
applies the update anyway (``w ← w + step size · δw`` follows the ``if``). The
pseudo-code also returns from inside its per-sample loop (an SVM on one gradient); like
the text, this module collects every gradient of the batch and solves once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

import numpy as np
import torch

from ..errors import DataError, ParameterError
from ..params import check_choice, check_flag, check_int, check_real

__all__ = ["SVMUpdate", "SVMStepResult", "QPSolveError", "DualQPSolution", "solve_dual_qp"]

RULES = ("text", "pseudocode")
# Entries of the scaled Hessian (mean diagonal 1) at or below this are dropped: HiGHS
# would drop them anyway (``small_matrix_value``) and report a warning for it.
_TINY = 1e-12


class QPSolveError(RuntimeError):
    """HiGHS did not return an optimal solution of the dual QP (an internal failure)."""


# --------------------------------------------------------------------------- the QP


@dataclass(frozen=True)
class DualQPSolution:
    """What :func:`solve_dual_qp` returns.

    Attributes
    ----------
    alpha : array of shape (n,)
        The maximiser, float64; bounded entries exactly 0 or C.
    objective : float
        ``ε Σα − ½ αᵀκα`` at ``alpha``.
    kkt_residual : float
        Worst KKT violation in units of ε (see ``_kkt_residual``).
    iterations : int
        HiGHS's active-set QP iterations.
    """

    alpha: np.ndarray
    objective: float
    kkt_residual: float
    iterations: int


def _kkt_residual(Q: np.ndarray, beta: np.ndarray, upper: float) -> float:
    """Largest KKT violation of ``min ½βᵀQβ − Σβ, 0 ≤ β ≤ upper``.

    ``(Qβ − 1)_ij = y_ij⟨δw, g_ij⟩/ε − 1`` (the scaled problem), so this is the worst
    margin error in units of ε: ``|m/ε − 1|`` for a free α, ``max(1 − m/ε, 0)`` at 0,
    ``max(m/ε − 1, 0)`` at C, plus any bound violation (relative to ``upper``).
    """
    grad = Q @ beta - 1.0
    at_lo = beta <= 0.0
    at_hi = beta >= upper
    r = np.where(at_lo, np.maximum(-grad, 0.0), np.where(at_hi, np.maximum(grad, 0.0), np.abs(grad)))
    box = max(float(np.max(-beta, initial=0.0)), float(np.max(beta - upper, initial=0.0))) / max(upper, 1.0)
    return max(float(np.max(r, initial=0.0)), box)


def _polish(Q: np.ndarray, beta: np.ndarray, upper: float) -> np.ndarray | None:
    """The exact solution on HiGHS's active set, or None if it leaves the box.

    HiGHS stops at tolerance 1e-7 (plus its 1e-7 Hessian regularisation); with the
    bounded variables fixed, the free ones solve ``Q_FF β_F = 1 − Q_FU·upper``
    (LU; least squares if ``Q_FF`` is exactly singular -- δw is unique all the same).
    """
    at_lo = beta <= 0.0
    at_hi = beta >= upper
    free = ~(at_lo | at_hi)
    out = np.where(at_hi, upper, 0.0)
    if free.any():
        rhs = 1.0 - Q[np.ix_(free, at_hi)].sum(axis=1) * upper
        A = Q[np.ix_(free, free)]
        try:  # LU first (several times faster than the SVD of lstsq); the caller checks the result
            out[free] = np.linalg.solve(A, rhs)
        except np.linalg.LinAlgError:
            out[free] = np.linalg.lstsq(A, rhs, rcond=None)[0]
    if not np.isfinite(out).all() or out.min() < 0.0 or out.max() > upper:
        return None
    return out


def _highs_box_qp(Q: np.ndarray, upper: float, iteration_limit: int | None) -> tuple[np.ndarray, int]:
    """``min ½βᵀQβ − Σβ`` s.t. ``0 ≤ β ≤ upper`` with HiGHS (dense lower triangle, CSC)."""
    import highspy  # at call time: schedgen.optim must not load HiGHS on import

    n = Q.shape[0]
    # highspy._Highs, not highspy.Highs: the latter logs a banner to stdout before
    # output_flag can be turned off (see schedgen/methods/solvers/_highs.py).
    h = highspy._Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("small_matrix_value", _TINY)
    # The active-set solver gives up above this many free variables (default 4000).
    h.setOptionValue("qp_nullspace_limit", max(4000, n))
    if iteration_limit is not None:
        h.setOptionValue("qp_iteration_limit", int(iteration_limit))
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = 0
    lp.col_cost_ = np.full(n, -1.0)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.full(n, upper)
    lp.a_matrix_.num_col_ = n
    lp.a_matrix_.num_row_ = 0
    lp.a_matrix_.start_ = np.zeros(n + 1, dtype=np.int32)
    status = h.passModel(lp)
    if status != highspy.HighsStatus.kOk:
        raise QPSolveError(f"HiGHS rejected the dual QP's bounds (status {status})")
    # Column c of the lower triangle is row c of the upper one: triu_indices' order.
    r, c = np.triu_indices(n)
    v = Q[r, c]
    keep = np.abs(v) > _TINY
    counts = np.bincount(r[keep], minlength=n)
    hess = highspy.HighsHessian()
    hess.dim_ = n
    hess.format_ = highspy.HessianFormat.kTriangular
    hess.start_ = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    hess.index_ = c[keep].astype(np.int32)
    hess.value_ = v[keep]
    status = h.passHessian(hess)
    if status != highspy.HighsStatus.kOk:
        raise QPSolveError(f"HiGHS rejected the dual QP's Hessian (status {status})")
    status = h.run()
    model_status = h.getModelStatus()
    if status != highspy.HighsStatus.kOk or model_status != highspy.HighsModelStatus.kOptimal:
        raise QPSolveError(f"HiGHS did not solve the SVM dual QP to optimality: run status {status}, "
                           f"model status {h.modelStatusToString(model_status)}")
    beta = np.clip(np.array(h.getSolution().col_value, dtype=np.float64), 0.0, upper)
    # HiGHS leaves bounded variables a rounding error (~1e-16) off their bound; its
    # active set says which they are, and the KKT check and polish need them exact.
    basis = h.getBasis()
    if basis.valid:
        status = np.array([int(st) for st in basis.col_status])
        beta[status == int(highspy.HighsBasisStatus.kLower)] = 0.0
        beta[status == int(highspy.HighsBasisStatus.kUpper)] = upper
    return beta, int(h.getInfo().qp_iteration_count)


def solve_dual_qp(kappa: np.ndarray, epsilon: float, C: float, *, polish: bool = True,
                  iteration_limit: int | None = None) -> DualQPSolution:
    """``argmax ε Σα − ½ αᵀκα`` s.t. ``0 ≤ α ≤ C``, with HiGHS.

    Scaled first: with ``s = tr κ / n`` and ``α = (ε/s) β``, it is
    ``min ½ βᵀ(κ/s)β − Σβ`` s.t. ``0 ≤ β ≤ C s/ε``, whose Hessian has mean diagonal 1 and
    whose linear term is 1, so HiGHS's absolute tolerances (1e-7) are relative ones:
    the margins ``y⟨δw, g⟩`` come out within about 1e-7·ε of their KKT values whatever
    the scale of the gradients. ``polish`` then solves the free variables exactly on
    HiGHS's active set (kept only if it stays in the box and lowers the KKT residual).

    Parameters
    ----------
    kappa : array of shape (n, n)
        Symmetric positive semi-definite (a Gram matrix), float64.
    epsilon, C : float
        Positive.
    polish : bool
    iteration_limit : int, optional
        HiGHS's ``qp_iteration_limit`` (for tests of the failure path).

    Raises
    ------
    QPSolveError
        HiGHS's run status is not ``kOk`` or its model status not ``kOptimal``.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    n = kappa.shape[0]
    s = float(np.trace(kappa)) / n
    if s <= 0.0:  # every g is 0: the quadratic term vanishes and α = C maximises ε Σα
        alpha = np.full(n, C)
        return DualQPSolution(alpha=alpha, objective=epsilon * C * n, kkt_residual=0.0, iterations=0)
    Q = kappa / s
    upper = C * s / epsilon
    beta, iterations = _highs_box_qp(Q, upper, iteration_limit)
    residual = _kkt_residual(Q, beta, upper)
    if polish:
        exact = _polish(Q, beta, upper)
        if exact is not None:
            r_exact = _kkt_residual(Q, exact, upper)
            if r_exact <= residual:
                beta, residual = exact, r_exact
    # Bounded variables exactly at C (``C·s/ε·ε/s`` may be off by an ulp).
    alpha = np.where(beta >= upper, C, beta * (epsilon / s))
    objective = epsilon * float(alpha.sum()) - 0.5 * float(alpha @ kappa @ alpha)
    return DualQPSolution(alpha=alpha, objective=objective, kkt_residual=residual, iterations=iterations)


# --------------------------------------------------------------------------- the update


@dataclass(frozen=True)
class SVMStepResult:
    """What one batch gave.

    Attributes
    ----------
    bound : float
        ``B · sqrt(tr κ) / ℓ``.
    norm : float
        ``B = ‖δw‖`` (before the step size).
    trace : float
        ``tr κ = Σ_ij ‖g_ij‖²``.
    batch_size, n_outputs : int
        ``ℓ`` and ``K``.
    C : float
        The C this batch's QP used.
    loose : bool
        ``threshold`` is set and ``bound > threshold``.
    applied : bool
        Whether ``w += step · δw`` was done.
    requested_batch_size : int or None
        The batch size asked for after this batch (None: no request).
    objective : float
        The dual objective ``ε Σα − ½ αᵀκα`` at the solution (= the primal optimum).
    kkt_residual : float
        Worst KKT violation of the margins, in units of ε (see :func:`solve_dual_qp`).
    qp_iterations : int
        HiGHS's active-set iterations.
    alpha : array of shape (batch_size, n_outputs)
        The dual solution, float64.
    delta : torch.Tensor of shape (n_parameters,)
        ``δw`` (float64, trainable parameters flattened in ``named_parameters()`` order).
    """

    bound: float
    norm: float
    trace: float
    batch_size: int
    n_outputs: int
    C: float
    loose: bool
    applied: bool
    requested_batch_size: int | None
    objective: float
    kkt_residual: float
    qp_iterations: int
    alpha: np.ndarray
    delta: torch.Tensor

    def summary(self) -> dict[str, Any]:
        """The scalar fields as a plain dict (for logs and JSON)."""
        keys = ("bound", "norm", "trace", "batch_size", "n_outputs", "C", "loose", "applied",
                "requested_batch_size", "objective", "kkt_residual", "qp_iterations")
        out = {k: getattr(self, k) for k in keys}
        out["n_at_zero"] = int((self.alpha <= 0.0).sum())
        out["n_at_C"] = int((self.alpha >= self.C).sum())
        return out


def _check_positive(name: str, value) -> float:
    v = check_real(name, value, "a positive finite number")
    if v <= 0.0:
        raise ParameterError(f"{name} must be a positive finite number, got {value!r}")
    return v


class SVMUpdate:
    """The SVM-generalised update rule: ``w += step · δw``, δw from a dual QP per batch.

    Not a ``torch.optim.Optimizer``: it needs the batch's inputs and labels, not a loss.
    Call :meth:`step` with each batch; it changes the model's trainable parameters in
    place and returns an :class:`SVMStepResult`.

    Size. The QP has ``ℓK`` variables and a dense ``ℓK × ℓK`` Hessian, and the
    per-sample Jacobian holds ``ℓ·K·P`` numbers (``P`` trainable parameters), so it is
    meant for small models and batches: ``ℓK`` up to a few thousand. Measured on a
    shared 2-core machine: 64 samples of a 10-class MLP with 2,410 weights (64→32→10) (640 QP
    variables) take about 0.4 s a step -- HiGHS ~0.13 s (~850 active-set iterations),
    the polish ~0.08 s, κ (``(ℓK)²·P`` multiply-adds in float64) ~0.1 s -- against
    ~0.5 ms for an SGD step of the same batch.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch ``x`` of shape ``(ℓ, ...)`` to outputs of shape ``(ℓ, K)``. It is
        evaluated one sample at a time under ``torch.func.vmap``: layers that mix samples
        (BatchNorm in training mode) or draw random numbers (dropout in training mode)
        are not supported; put them in ``eval()`` mode.
    C : float, default 1.0
        Box bound of the dual (the SVM's penalty on the slacks); positive.
    epsilon : float, default 1.0
        Target margin improvement ε of every output of every sample; positive.
    step : float, default 0.1
        Step size (the paper's 0.1); positive.
    threshold : float, optional
        Bound above which the loose-bound rule fires; None (default) never fires (the
        bound is still computed and reported).
    rule : {"text", "pseudocode"}, default "text"
        On a loose bound, "text" skips the update; "pseudocode" (Algorithm 2 literally)
        applies it. Both then request a larger batch and scale C by ``c_decay``.
    sampler : object, optional
        Anything with a ``request(size: int)`` method, e.g.
        :class:`schedgen.torch.AdaptiveBatchSampler`: told the doubled batch size. Its
        ``batch_size`` attribute, when it has one, is the size that gets doubled.
    batch_size : int, optional
        The current batch size, doubled on a loose bound when the sampler does not say
        it; default: the size of the first batch seen.
    c_decay : float, default 0.1
        ``C ← c_decay · C`` on a loose bound (the paper's 0.1); in (0, 1].
    batch_growth : int, default 2
        Requested batch size = ``batch_growth ×`` the current one (the paper's 2).
    max_batch_size : int, optional
        Cap on the requested batch size.
    polish : bool, default True
        Refine HiGHS's solution exactly on its active set (see :func:`solve_dual_qp`).

    Attributes
    ----------
    C : float
        The current C.
    last : SVMStepResult or None
        The last step's result (None after :meth:`load_state_dict`).
    last_bound : float or None
        The last step's bound term (kept in the state).
    requested_batch_size : int or None
        The last size requested (None before any request).
    steps, n_applied, n_loose : int
        Counters.
    """

    def __init__(self, model: torch.nn.Module, C: float = 1.0, epsilon: float = 1.0, step: float = 0.1,
                 threshold: float | None = None, *, rule: str = "text", sampler: Any = None,
                 batch_size: int | None = None, c_decay: float = 0.1, batch_growth: int = 2,
                 max_batch_size: int | None = None, polish: bool = True) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self._names = [name for name, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise ParameterError(f"model must have trainable parameters (requires_grad=True), got none in "
                                 f"{type(model).__name__}")
        self.C = _check_positive("C", C)
        self.epsilon = _check_positive("epsilon", epsilon)
        self.step_size = _check_positive("step", step)
        if threshold is not None:
            threshold = check_real("threshold", threshold, "None or a finite number >= 0")
            if threshold < 0.0:
                raise ParameterError(f"threshold must be None or a finite number >= 0, got {threshold!r}")
        self.threshold = threshold
        self.rule = check_choice("rule", rule, RULES)
        if sampler is not None and not callable(getattr(sampler, "request", None)):
            raise ParameterError(f"sampler must have a request(size) method, got {type(sampler).__name__}")
        self.sampler = sampler
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, minimum=1)
        self.c_decay = _check_positive("c_decay", c_decay)
        if self.c_decay > 1.0:
            raise ParameterError(f"c_decay must be in (0, 1], got {c_decay!r}")
        self.batch_growth = check_int("batch_growth", batch_growth, minimum=1)
        self.max_batch_size = None if max_batch_size is None else check_int("max_batch_size", max_batch_size,
                                                                            minimum=1)
        self.polish = check_flag("polish", polish)
        self.last: SVMStepResult | None = None
        self.last_bound: float | None = None
        self.requested_batch_size: int | None = None
        self.steps = 0
        self.n_applied = 0
        self.n_loose = 0

    # ----------------------------------------------------------------- pieces

    def _check_batch(self, x, y) -> tuple[int, int]:
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ParameterError(f"x must be a tensor of shape (batch, ...) with batch >= 1, got {got}")
        n = x.shape[0]
        if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype.is_complex \
                or y.dtype == torch.bool:
            got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
            raise ParameterError(f"y must be an integer tensor of class labels, got {got}")
        if tuple(y.shape) != (n,):
            raise ParameterError(f"y must have shape ({n},) to match x, got {tuple(y.shape)}")
        with torch.no_grad():
            out = self.model(x[:1])
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ParameterError(f"model must map x of shape (batch, ...) to outputs of shape (batch, K), "
                                 f"got {got} for a batch of 1")
        k = out.shape[1]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise ParameterError(f"labels must be in [0, {k - 1}] for a model with {k} outputs, "
                                 f"got values in [{lo}, {hi}]")
        return n, k

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-output gradients ``g_ij``: a tensor of shape (ℓ, K, P).

        ``P`` = number of trainable parameters, flattened in ``named_parameters()``
        order; the model's dtype. Frozen parameters and buffers enter as constants.
        """
        from torch.func import functional_call, jacrev, vmap

        named = dict(self.model.named_parameters())
        train = {name: named[name].detach() for name in self._names}
        frozen = {name: p.detach() for name, p in named.items() if name not in train}
        buffers = dict(self.model.named_buffers())

        def f(params, xi):
            return functional_call(self.model, (params, frozen, buffers), (xi.unsqueeze(0),)).squeeze(0)

        jac = vmap(jacrev(f), in_dims=(None, 0))(train, x)
        n, k = x.shape[0], jac[self._names[0]].shape[1]
        return torch.cat([jac[name].reshape(n, k, -1) for name in self._names], dim=2)

    def solve(self, x: torch.Tensor, y: torch.Tensor) -> SVMStepResult:
        """δw, α and the bound for one batch at the current C; changes nothing.

        Parameters
        ----------
        x : torch.Tensor of shape (ℓ, ...)
        y : torch.Tensor of shape (ℓ,), integer labels in [0, K)
        """
        n, k = self._check_batch(x, y)
        G = self.jacobian(x).to(torch.float64)  # κ accumulated in float64 whatever the model's dtype
        if not bool(torch.isfinite(G).all()):
            raise DataError("the per-sample gradients must be finite, got NaN or inf (check the batch and the "
                            "model's weights)")
        # The QP is solved by HiGHS on the host: everything from here is on G's device until
        # κ goes to the host, and δw comes back to each parameter's device (_apply).
        sign = torch.full((n, k), -1.0, dtype=torch.float64, device=G.device)
        sign[torch.arange(n, device=G.device), y.to(G.device).long()] = 1.0
        Z = (G * sign.unsqueeze(2)).reshape(n * k, -1)
        kappa = Z @ Z.T
        sol = solve_dual_qp(kappa.cpu().numpy(), self.epsilon, self.C, polish=self.polish)
        delta = Z.T @ torch.from_numpy(sol.alpha).to(Z.device)
        norm = float(torch.linalg.vector_norm(delta))
        trace = float(torch.diagonal(kappa).sum())
        bound = norm * math.sqrt(trace) / n
        loose = self.threshold is not None and bound > self.threshold
        return SVMStepResult(bound=bound, norm=norm, trace=trace, batch_size=n, n_outputs=k, C=self.C,
                             loose=loose, applied=False, requested_batch_size=None, objective=sol.objective,
                             kkt_residual=sol.kkt_residual, qp_iterations=sol.iterations,
                             alpha=sol.alpha.reshape(n, k), delta=delta)

    def _apply(self, delta: torch.Tensor) -> None:
        named = dict(self.model.named_parameters())
        offset = 0
        with torch.no_grad():
            for name in self._names:
                p = named[name]
                size = p.numel()
                p.add_(delta[offset : offset + size].view_as(p).to(device=p.device, dtype=p.dtype), alpha=self.step_size)
                offset += size

    def _current_batch_size(self, n: int) -> int:
        size = getattr(self.sampler, "batch_size", None)
        if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
            return size
        return self.batch_size if self.batch_size is not None else n

    # ----------------------------------------------------------------- the step

    def step(self, x: torch.Tensor, y: torch.Tensor) -> SVMStepResult:
        """One update on the batch ``(x, y)``; returns what it did.

        On a loose bound (see the class docstring) the requested batch size is
        ``batch_growth ×`` the current one (capped at ``max_batch_size``), sent to
        ``sampler.request`` and kept in :attr:`requested_batch_size`; ``C`` is scaled
        for the next batch.
        """
        res = self.solve(x, y)
        current = self._current_batch_size(res.batch_size)
        apply = not res.loose or self.rule == "pseudocode"
        requested = None
        if res.loose:
            requested = current * self.batch_growth
            if self.max_batch_size is not None:
                requested = min(requested, self.max_batch_size)
            if self.sampler is not None:  # first: if the sampler refuses, nothing has changed
                self.sampler.request(requested)
        if apply:
            self._apply(res.delta)
            self.n_applied += 1
        self.batch_size = current
        if res.loose:
            self.n_loose += 1
            self.batch_size = self.requested_batch_size = requested
            self.C *= self.c_decay
        self.steps += 1
        self.last = replace(res, applied=apply, requested_batch_size=requested)
        self.last_bound = res.bound
        return self.last

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """C, the batch sizes, the counters and the last bound (plain Python values).

        The model's weights are not included: save ``model.state_dict()`` beside it.
        """
        return {"C": self.C, "batch_size": self.batch_size, "requested_batch_size": self.requested_batch_size,
                "steps": self.steps, "n_applied": self.n_applied, "n_loose": self.n_loose,
                "last_bound": self.last_bound}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (``last`` keeps only its bound)."""
        expected = {"C", "batch_size", "requested_batch_size", "steps", "n_applied", "n_loose", "last_bound"}
        if not isinstance(state, dict) or set(state) != expected:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ParameterError(f"state must be a dict with keys {sorted(expected)}, got {got}")
        C = _check_positive("state['C']", state["C"])
        sizes = {key: None if state[key] is None else check_int(f"state[{key!r}]", state[key], minimum=1)
                 for key in ("batch_size", "requested_batch_size")}
        counts = {key: check_int(f"state[{key!r}]", state[key], minimum=0)
                  for key in ("steps", "n_applied", "n_loose")}
        bound = state["last_bound"]
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, Real)):
            raise ParameterError(f"state['last_bound'] must be None or a number, got {bound!r}")
        self.C = C
        self.batch_size, self.requested_batch_size = sizes["batch_size"], sizes["requested_batch_size"]
        self.steps, self.n_applied, self.n_loose = counts["steps"], counts["n_applied"], counts["n_loose"]
        self.last_bound = None if bound is None else float(bound)
        self.last = None

    def __repr__(self) -> str:
        return (f"SVMUpdate(C={self.C:g}, epsilon={self.epsilon:g}, step={self.step_size:g}, "
                f"threshold={self.threshold}, rule={self.rule!r}, steps={self.steps})")
