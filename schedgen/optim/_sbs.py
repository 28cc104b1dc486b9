"""Stochastic batch size (SBS): :class:`StochasticBatchSizeSGD`.

Algorithm 2 of the stochastic-batch-size paper (``papers/stochastic-batch-size.txt``):
every parameter entry j keeps a cumulative moving average g̃_j of the batch gradients
it has seen since its last update (eq. 14) and is updated only when a Bernoulli draw
χ_j ~ B(p_j) says so; p_j follows eq. 21. A parameter left alone for k batches is thus
updated with the gradient of the union of those k batches: its batch size is stochastic.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable

import torch

from ..errors import ParameterError
from ..rng import rng

__all__ = ["StochasticBatchSizeSGD"]

#: How the step of an update scales with the number of batches k averaged in g̃.
LR_SCALINGS = ("plain", "count")
#: Which gradient's magnitudes |g_j| enter eq. 21.
NORM_SOURCES = ("batch", "accumulated")
#: How the groups' means are weighted when μ̃ is formed (eq. 19).
GROUP_WEIGHTINGS = ("count", "uniform")
#: Keys of one parameter's state.
_STATE_KEYS = ("avg_grad", "count")
#: Key of the mask generator's state in :meth:`StochasticBatchSizeSGD.state_dict`.
_GEN_KEY = "sbs_generator"


def _shown(value: Any) -> str:
    r = " ".join(repr(value).split())
    return r if len(r) <= 80 else r[:77] + "..."


def _real(name: str, value: Any, *, nonnegative: bool = False) -> float:
    """``value`` as a finite float (``>= 0`` with ``nonnegative``); bools and tensors refused."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
    if not ok or (nonnegative and float(value) < 0):
        what = "a finite real number >= 0" if nonnegative else "a finite real number"
        raise ParameterError(f"{name} must be {what}, got {name}={_shown(value)} ({type(value).__name__})")
    return float(value)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ParameterError(f"{name} must be one of {list(allowed)}, got {name}={_shown(value)}")
    return value


class StochasticBatchSizeSGD(torch.optim.Optimizer):
    """SGD with a stochastic batch size per parameter entry (SBS, Algorithm 2).

    Per step, for every parameter entry j that has a gradient g_j (the mean over the
    current batch, as the loss gives it), with n_j the batches averaged so far::

        n_j ← n_j + 1;  g̃_j ← g̃_j + (g_j − g̃_j) / n_j          (eq. 14)
        χ_j ~ Bernoulli(p_j)
        w_j ← w_j − χ_j · η · g̃_j    (``lr_scaling="count"``: χ_j · n_j · η · g̃_j, eq. 15)
        where χ_j = 1: g̃_j ← 0, n_j ← 0

    and p follows eq. 21, one group l per parameter tensor::

        p_j = sigmoid(α · v_j + λ · μ̃_l),  v_j = (|g_j| − μ_l) / σ_l,  μ̃_l = (μ_l − μ) / σ

    μ_l, σ_l are the mean and population standard deviation of {|g_j|, j ∈ l}; μ, σ are
    the mean and population standard deviation of the μ_l over the tensors that have a
    gradient this step, each μ_l weighted by its tensor's number of entries
    (``group_weighting="count"``, the paper's "weighted average considering the number of
    parameters"). A group whose |g_j| are all equal has σ_l = 0 and gets v = 0; tensors
    whose μ_l are all equal (or a single tensor) get μ̃ = 0. p ≡ 1 is plain SGD, α = λ = 0
    gives p = ½. With λ < 0 (the default, −4) tensors whose gradients are large relative
    to the others' are updated rarely, i.e. with large accumulated batches.

    Parameters
    ----------
    params : iterable of tensors or of dicts
        As for any :class:`torch.optim.Optimizer`; groups may set their own ``lr``,
        ``alpha`` and ``lam``.
    lr : float
        η, ``>= 0``.
    alpha : float, default 0.1
        α of eq. 21, the weight of an entry's standing within its tensor (paper: 0.1).
    lam : float, default -4.0
        λ of eq. 21, the weight of a tensor's standing among the tensors (paper: −4).
    lr_scaling : {"plain", "count"}, default "plain"
        ``"plain"``: step η·g̃, as Algorithm 2. ``"count"``: step k·η·g̃ with k the number
        of batches averaged in g̃, as eqs. 13/15 (η̃ = kη): the step of SGD with rate η
        applied once to the summed gradients of the k batches.
    norm_source : {"batch", "accumulated"}, default "batch"
        The |g_j| of eq. 21: the current batch's gradient (Algorithm 2's g^t, default) or
        the accumulated average g̃_j after this step's accumulation. The paper writes
        |g_j^t| without saying which; this is the open choice.
    group_weighting : {"count", "uniform"}, default "count"
        How the tensors' means are weighted in μ and σ: by number of entries (default,
        as the paper and DESIGN.md) or one weight per tensor.
    seed : int, default 0
        ``0 <= seed < 2**32``. The masks come from a ``torch.Generator`` (CPU) seeded
        with a 63-bit word drawn from ``schedgen.rng.rng(seed, "sbs")``; its state is part
        of :meth:`state_dict`.

    Raises
    ------
    ParameterError
        A bad ``lr``, ``alpha``, ``lam``, option or ``seed`` (also for a group added later).

    Notes
    -----
    *Epochs.* Algorithm 2 sets g̃ = 0 and k = 1 at the start of every epoch: call
    :meth:`end_epoch` when an epoch's batches are done. It discards every pending
    accumulated gradient (entries not updated since their last χ = 1 lose the batches
    they had averaged). Without the call the accumulators run on across epochs.

    *Draws.* Every step draws one float64 uniform per parameter entry that has a
    gradient (tensor by tensor, in ``param_groups`` order) and sets χ = [u < p]; masks
    are drawn on the CPU and moved to the parameter's device. p = 1 always updates.
    Tensors whose ``grad`` is None are skipped: they neither accumulate nor draw, and
    they take no part in μ, σ.

    *Hooks for tests and experiments.* :meth:`update_probabilities` (the p of eq. 21)
    and :meth:`sample_masks` (the χ) are ordinary methods that a subclass may override,
    e.g. to force p ≡ 1 or to inject fixed masks; everything else is unchanged.

    *Small tensors.* With count weighting, μ and σ are set by the big tensors; a small
    tensor whose mean |g| sits far above theirs (a last layer, biases) gets a μ̃ of many
    σ and, with λ = −4, p ≈ 0. On a 64→64→64→64→10 MLP on digits the last weight matrix
    was updated at about 0.1% of steps per entry (``benchmarks/results/sbs_compare.md``).

    *Resume.* :meth:`state_dict` holds, per parameter, ``avg_grad`` (g̃) and ``count``
    (the batches averaged in it, int64), plus the generator's state under
    ``"sbs_generator"``: loading it mid-epoch continues the run bit for bit.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        alpha: float = 0.1,
        lam: float = -4.0,
        *,
        lr_scaling: str = "plain",
        norm_source: str = "batch",
        group_weighting: str = "count",
        seed: int = 0,
    ) -> None:
        defaults = {"lr": _real("lr", lr, nonnegative=True), "alpha": _real("alpha", alpha),
                    "lam": _real("lam", lam)}
        self.lr_scaling = _choice("lr_scaling", lr_scaling, LR_SCALINGS)
        self.norm_source = _choice("norm_source", norm_source, NORM_SOURCES)
        self.group_weighting = _choice("group_weighting", group_weighting, GROUP_WEIGHTINGS)
        # rng() checks the seed (an int in 0..2**32-1, not a bool) with a one-line message.
        word = int(rng(seed, "sbs").integers(0, 2**63 - 1))
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(word)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.add_param_group`, checking ``lr``, ``alpha``, ``lam``."""
        for key in ("lr", "alpha", "lam"):
            if key in param_group:
                param_group[key] = _real(key, param_group[key], nonnegative=key == "lr")
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ the update

    def _active(self) -> list[tuple[dict[str, Any], torch.Tensor]]:
        """(group, parameter) for every parameter that has a gradient, in ``param_groups`` order."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ParameterError(
                        "StochasticBatchSizeSGD needs dense gradients, got a sparse gradient for a "
                        f"parameter of shape {tuple(p.shape)}")
                out.append((group, p))
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Accumulate this batch's gradients, draw the masks, update the drawn entries.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (as for any optimizer).

        Returns
        -------
        The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        active = self._active()
        if not active:
            return loss
        for _, p in active:
            st = self.state[p]
            if not st:
                st["avg_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["count"] = torch.zeros(p.shape, dtype=torch.int64, device=p.device)
            st["count"].add_(1)
            avg = st["avg_grad"]
            # (g − g̃)/n added to g̃: with n = 1 this is g itself, bit for bit (0 + g/1).
            avg.add_((p.grad - avg).div_(st["count"].to(avg.dtype)))
        params = [p for _, p in active]
        norms = [p.grad if self.norm_source == "batch" else self.state[p]["avg_grad"] for p in params]
        probs = self.update_probabilities(
            norms, alphas=[g["alpha"] for g, _ in active], lams=[g["lam"] for g, _ in active])
        masks = self.sample_masks(probs)
        for (group, p), mask in zip(active, masks):
            st = self.state[p]
            avg, count = st["avg_grad"], st["count"]
            mask = mask.to(device=p.device, dtype=torch.bool)
            upd = torch.where(mask, avg, torch.zeros((), dtype=avg.dtype, device=avg.device))
            if self.lr_scaling == "count":
                upd.mul_(count.to(avg.dtype))
            # The same add_ as torch.optim.SGD (param += −lr · grad): p ≡ 1 is SGD bit for bit.
            p.add_(upd, alpha=-group["lr"])
            avg.masked_fill_(mask, 0)
            count.masked_fill_(mask, 0)
        return loss

    def update_probabilities(
        self, grads: list[torch.Tensor], *, alphas: list[float], lams: list[float]
    ) -> list[torch.Tensor]:
        """p of eq. 21 for each tensor, one group per tensor.

        Overridable (tests force p ≡ 1 this way).

        Parameters
        ----------
        grads : list of tensors
            The gradients whose magnitudes |g_j| enter eq. 21, one per parameter tensor.
        alphas, lams : list of float
            α and λ of each tensor's parameter group.

        Returns
        -------
        list of tensors
            p per tensor, each of its tensor's shape and dtype, in [0, 1].
        """
        stats = []
        for g in grads:
            a = g.abs()
            mu = a.mean()
            sigma = a.std(correction=0) if a.numel() > 1 else torch.zeros((), dtype=a.dtype, device=a.device)
            # "σ_l = 0 gives v = 0" tested on the values, not on σ: the mean of n equal
            # values need not round back to them, which would leave a tiny spurious σ.
            flat = a.numel() == 1 or bool(a.max() == a.min())
            stats.append((a, mu, sigma, flat))
        mus = torch.stack([mu.to(torch.float64).cpu() for _, mu, _, _ in stats])
        if self.group_weighting == "count":
            w = torch.tensor([float(a.numel()) for a, _, _, _ in stats], dtype=torch.float64)
        else:
            w = torch.ones(len(stats), dtype=torch.float64)
        w = w / w.sum()
        mu_all = (w * mus).sum()
        sigma_all = (w * (mus - mu_all) ** 2).sum().sqrt()
        same = bool(mus.max() == mus.min())
        mu_tilde = torch.zeros_like(mus) if same else (mus - mu_all) / sigma_all
        out = []
        for (a, mu, sigma, flat), mt, alpha, lam in zip(stats, mu_tilde.tolist(), alphas, lams):
            v = torch.zeros_like(a) if flat else (a - mu) / sigma
            out.append(torch.sigmoid(alpha * v + lam * mt))
        return out

    def sample_masks(self, probs: list[torch.Tensor]) -> list[torch.Tensor]:
        """χ per tensor: ``u < p`` with u uniform float64 drawn from :attr:`generator` (CPU).

        Overridable (tests inject fixed masks this way). A mask is a bool tensor (or
        anything ``.to(torch.bool)`` turns into one) of its tensor's shape.
        """
        out = []
        for p in probs:
            u = torch.rand(p.shape, generator=self.generator, dtype=torch.float64)
            out.append(u < p.detach().to(device="cpu", dtype=torch.float64))
        return out

    @torch.no_grad()
    def end_epoch(self) -> int:
        """Algorithm 2's per-epoch reset: every g̃ ← 0 and count ← 0.

        Call it after an epoch's last step. Pending accumulated gradients (entries not
        updated since their last draw of χ = 1) are discarded, as the paper's re-
        initialisation does; the generator runs on.

        Returns
        -------
        int
            How many parameter entries had a pending gradient that was discarded.
        """
        discarded = 0
        for st in self.state.values():
            if "count" in st:
                discarded += int((st["count"] > 0).sum())
                st["count"].zero_()
                st["avg_grad"].zero_()
        return discarded

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """:meth:`torch.optim.Optimizer.state_dict` plus the mask generator's state.

        Per parameter: ``avg_grad`` (g̃) and ``count`` (int64, batches averaged in g̃).
        """
        sd = super().state_dict()
        sd[_GEN_KEY] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: accumulators, counts and the generator.

        Raises
        ------
        ParameterError
            The dict lacks the generator state, or a parameter's state is not the
            ``avg_grad``/``count`` pair of its parameter's shape.
        """
        if not isinstance(state_dict, dict) or _GEN_KEY not in state_dict:
            raise ParameterError(
                f"state_dict must be a dict from StochasticBatchSizeSGD.state_dict() with key {_GEN_KEY!r}, "
                f"got {type(state_dict).__name__} with keys "
                f"{sorted(map(str, state_dict)) if isinstance(state_dict, dict) else None}")
        gen = state_dict[_GEN_KEY]
        if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
            raise ParameterError(f"{_GEN_KEY} must be a uint8 tensor (torch.Generator.get_state()), "
                                 f"got {_shown(gen)} ({type(gen).__name__})")
        saved_ids = [i for g in state_dict.get("param_groups", []) for i in g.get("params", [])]
        params = [p for g in self.param_groups for p in g["params"]]
        counts = {}
        for i, p in zip(saved_ids, params):
            st = state_dict.get("state", {}).get(i)
            if not st:
                continue
            if set(st) != set(_STATE_KEYS) or any(
                    not isinstance(st[k], torch.Tensor) or st[k].shape != p.shape for k in _STATE_KEYS):
                raise ParameterError(
                    f"state of parameter {i} must hold tensors {list(_STATE_KEYS)} of shape {tuple(p.shape)}, "
                    f"got { {k: tuple(v.shape) if isinstance(v, torch.Tensor) else _shown(v) for k, v in st.items()} }")
            counts[p] = st["count"]
        rest = {k: v for k, v in state_dict.items() if k != _GEN_KEY}
        super().load_state_dict(rest)
        # torch casts every tensor of a float parameter's state to its dtype: restore the int64 counts.
        for p, c in counts.items():
            self.state[p]["count"] = c.to(device=p.device, dtype=torch.int64).clone()
        self.generator.set_state(gen.clone())
