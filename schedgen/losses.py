"""The ITRA alignment loss: MMD between the features of a batch S1 and of its partner S2.

ITRA (papers/itra-representation-alignment.txt) adds ``λ · Match`` to the cross-entropy
of S1, where Match is the MMD between the features ``h = E(x)`` of S1 and of a partner
batch S2 (eq. 3), or, for ITRA-c (eq. 5, the variant of every experiment in the paper),
``(1/K) Σ_k MMD(H1^k, H2^k)`` over the class-k rows of both batches. The partner batches
come from a schedule built with ``--pair``; this module only computes the loss.

The facts fixed here (DESIGN.md §3):

* MMD is the square root of the *biased* V-statistic (the i = j terms included)::

      MMD²(A, B) = mean_{i,j} K(a_i, a_j) + mean_{i,j} K(b_i, b_j) - 2 mean_{i,j} K(a_i, b_j)

  with ``K(x, y) = exp(-‖x - y‖² / σ)``, and ``MMD = sqrt(max(MMD², 0) + eps)``: the
  square root alone has an infinite gradient at MMD² = 0.
* σ by default is the median *squared* distance between distinct rows of h1 ∪ h2,
  taken from the detached features (the paper does not back-propagate σ; its text
  divides a squared distance by a "median distance", which is read as the median
  squared distance, as in the references it cites).
* Gradients come from autograd. The paper's eqs. 7–9 drop a factor 2 in the cross term;
  nothing here uses them.

This module imports :mod:`torch`; ``import schedgen`` does not load it.
"""

from __future__ import annotations

import math
from numbers import Real

from ._optional import import_torch

# Checked on import, so that a missing PyTorch gives one ModuleNotFoundError with the hint.
torch = import_torch("schedgen.losses")

from .errors import ParameterError

__all__ = ["itra_match_loss", "ABSENT_MODES"]

#: How ITRA-c treats a class that is missing from S1 or from S2 (it has no MMD).
ABSENT_MODES = ("paper", "present")


def itra_match_loss(
    h1: torch.Tensor,
    y1: torch.Tensor | None,
    h2: torch.Tensor,
    y2: torch.Tensor | None,
    *,
    sigma: str | float = "median",
    conditional: bool = True,
    squared: bool = False,
    absent: str = "paper",
    num_classes: int | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """ITRA's matching loss between the features of S1 and of its partner S2.

    ``conditional=False`` (ITRA, eq. 3): ``MMD(H1, H2)``.
    ``conditional=True`` (ITRA-c, eq. 5): ``(1/K) Σ_k MMD(H1^k, H2^k)``.

    Parameters
    ----------
    h1 : tensor of shape (m1, d), floating point
        Features E(x) of S1 (the batch of the cross-entropy).
    y1 : integer tensor of shape (m1,), or None when ``conditional=False``
        Labels of S1.
    h2 : tensor of shape (m2, d), the dtype and device of ``h1``
        Features of the partner batch S2.
    y2 : integer tensor of shape (m2,), or None when ``conditional=False``
        Labels of S2.
    sigma : "median" or positive float
        Kernel ``exp(-‖x - y‖² / sigma)``. ``"median"``: the median squared distance
        between distinct rows of h1 ∪ h2 (all ``(m1+m2)(m1+m2-1)/2`` pairs, the mean of
        the two middle values for an even count), from the detached features, so no
        gradient flows through it; when that median is 0 (more than half of the pairs
        coincide, e.g. collapsed features) sigma is 1.0. The same sigma serves every
        class of ITRA-c.
    conditional : bool
        ITRA-c (True, the paper's experiments) or ITRA (False).
    squared : bool
        Return MMD² (each class's MMD² for ITRA-c, averaged alike) instead of MMD.
    absent : {"paper", "present"}
        ITRA-c only. A class with no row in S1 or in S2 has no MMD. ``"paper"``: it
        contributes 0 and the sum is divided by K, the total number of classes, as in
        eq. 5 (a class missing from one batch then silently weakens the loss: with a
        uniform S2 of 200 on 100 classes, each class is missing from S2 with
        probability 0.99²⁰⁰ ≈ 13%; class-matched partners avoid it). ``"present"``:
        the mean over the classes present in both batches (0 when there is none).
    num_classes : int or None
        K for ``absent="paper"``: the paper's K is the total number of classes, which
        the labels of two batches do not tell. Given, labels must lie in
        ``[0, num_classes)``; None: K is the number of distinct labels in y1 ∪ y2.
    eps : positive float
        ``MMD = sqrt(max(MMD², 0) + eps)``, so the gradient at MMD² = 0 is finite; the
        value is then at least ``sqrt(eps)`` (1e-4 by default). Unused with ``squared``.

    Returns
    -------
    0-d tensor of the dtype of ``h1``, differentiable w.r.t. ``h1`` and ``h2``.

    Notes
    -----
    The kernel matrix of all ``m1 + m2`` rows is computed once in float64 (float32 on
    MPS, which has no float64), as ‖x‖² + ‖y‖² - 2 x·y clamped at 0; ITRA-c then reads
    every class from it at once: ``MMD²_k = w_kᵀ K w_k`` with ``w_k`` holding
    ``1/m1_k`` on the class-k rows of S1 and ``-1/m2_k`` on those of S2.
    """
    m1, m2 = _check_features(h1, h2)
    _check_options(sigma, conditional, squared, absent, num_classes, eps)
    work = torch.float32 if h1.device.type == "mps" else torch.float64
    z = torch.cat([h1, h2]).to(work)
    sq = (z * z).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    s = _median_sigma(dist.detach()) if sigma == "median" else float(sigma)
    kern = torch.exp(-dist / s)

    if conditional:
        _check_labels(y1, "y1", m1, h1.device, num_classes)
        _check_labels(y2, "y2", m2, h1.device, num_classes)
        classes, inverse = torch.unique(torch.cat([y1, y2]), return_inverse=True)
        onehot = torch.nn.functional.one_hot(inverse, len(classes)).to(work)  # (m1+m2, C)
        n1, n2 = onehot[:m1].sum(0), onehot[m1:].sum(0)
        present = (n1 > 0) & (n2 > 0)
        w = torch.cat([onehot[:m1] / n1.clamp_min(1), -onehot[m1:] / n2.clamp_min(1)])
    else:
        for y, name, m in ((y1, "y1", m1), (y2, "y2", m2)):
            if y is not None:
                _check_labels(y, name, m, h1.device, None)
        w = torch.cat([z.new_full((m1, 1), 1.0 / m1), z.new_full((m2, 1), -1.0 / m2)])
        present = torch.ones(1, dtype=torch.bool, device=z.device)

    mmd2 = (w * (kern @ w)).sum(0)  # (C,): w_kᵀ K w_k
    per_class = mmd2 if squared else torch.sqrt(mmd2.clamp_min(0.0) + eps)
    # torch.where, not indexing: an absent class gets value 0 and gradient 0.
    total = torch.where(present, per_class, torch.zeros_like(per_class)).sum()
    if not conditional:
        denom = 1
    elif absent == "present":
        denom = max(int(present.sum()), 1)
    else:
        denom = num_classes if num_classes is not None else len(classes)
    return (total / denom).to(h1.dtype)


def _median_sigma(dist: torch.Tensor) -> float:
    """Median of the off-diagonal (i < j) entries of a detached squared-distance matrix;
    1.0 when it is 0."""
    n = dist.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=dist.device)
    vals = torch.sort(dist[i, j]).values
    if not bool(torch.isfinite(vals[-1])):  # NaN and inf sort last
        raise ParameterError(
            f"sigma='median' needs finite features, got a squared distance of {float(vals[-1])} in h1 and h2"
        )
    p = vals.numel()
    med = float(vals[p // 2]) if p % 2 else 0.5 * (float(vals[p // 2 - 1]) + float(vals[p // 2]))
    return med if med > 0.0 else 1.0


def _check_features(h1, h2) -> tuple[int, int]:
    for h, name in ((h1, "h1"), (h2, "h2")):
        if not isinstance(h, torch.Tensor):
            raise ParameterError(f"{name} must be a torch.Tensor of shape (m, d), got {type(h).__name__}")
        if h.ndim != 2 or h.shape[0] < 1 or h.shape[1] < 1:
            raise ParameterError(
                f"{name} must be a 2-D tensor of shape (m, d) with m >= 1 and d >= 1, got shape {tuple(h.shape)}"
            )
        if not h.is_floating_point():
            raise ParameterError(f"{name} must have a floating-point dtype, got {h.dtype}")
    if h1.dtype != h2.dtype:
        raise ParameterError(f"h1 and h2 must have the same dtype, got {h1.dtype} and {h2.dtype}")
    if h1.device != h2.device:
        raise ParameterError(f"h1 and h2 must be on the same device, got {h1.device} and {h2.device}")
    if h1.shape[1] != h2.shape[1]:
        raise ParameterError(
            f"h1 and h2 must have the same feature dimension d, got {h1.shape[1]} and {h2.shape[1]}"
        )
    return h1.shape[0], h2.shape[0]


def _check_labels(y, name: str, m: int, device, num_classes: int | None) -> None:
    if y is None:
        raise ParameterError(f"{name} is required with conditional=True (ITRA-c), got None")
    if not isinstance(y, torch.Tensor):
        raise ParameterError(f"{name} must be an integer torch.Tensor of shape ({m},), got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ParameterError(f"{name} must have an integer dtype, got {y.dtype}")
    if tuple(y.shape) != (m,):
        raise ParameterError(f"{name} must have shape ({m},) (one label per row of its features), got {tuple(y.shape)}")
    if y.device != device:
        raise ParameterError(f"{name} must be on the device of h1 ({device}), got {y.device}")
    if num_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ParameterError(
                f"{name} must hold labels in [0, num_classes={num_classes}), got values in [{lo}, {hi}]"
            )


def _check_options(sigma, conditional, squared, absent, num_classes, eps) -> None:
    if isinstance(sigma, str):
        if sigma != "median":
            raise ParameterError(f"sigma must be 'median' or a positive finite number, got sigma={sigma!r}")
    elif isinstance(sigma, bool) or not isinstance(sigma, Real) or not (0 < float(sigma) < math.inf):
        raise ParameterError(f"sigma must be 'median' or a positive finite number, got sigma={sigma!r}")
    for flag, name in ((conditional, "conditional"), (squared, "squared")):
        if not isinstance(flag, bool):
            raise ParameterError(f"{name} must be True or False, got {name}={flag!r}")
    if absent not in ABSENT_MODES:
        raise ParameterError(f"absent must be one of {', '.join(map(repr, ABSENT_MODES))}, got absent={absent!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ParameterError(f"num_classes must be a positive integer or None, got num_classes={num_classes!r}")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not (0 < float(eps) < math.inf):
        raise ParameterError(f"eps must be a positive finite number, got eps={eps!r}")
