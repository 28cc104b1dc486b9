"""Tests of schedgen.optim.StochasticBatchSizeSGD (stochastic batch size, Algorithm 2).

Oracles: torch.optim.SGD (p ≡ 1, and the union batches under shared masks), hand-computed
weights for gradients that do not depend on w, eq. 21 worked out by hand on three groups.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

torch = pytest.importorskip("torch")

from schedgen.errors import ParameterError  # noqa: E402
from schedgen.optim import StochasticBatchSizeSGD  # noqa: E402
from schedgen.rng import rng  # noqa: E402

N, D, C, K = 48, 5, 3, 4  # samples, features, classes, batch size: 12 batches per epoch


def data(seed: int = 0, dtype=torch.float64):
    g = np.random.default_rng([seed, 1])
    X = torch.from_numpy(g.standard_normal((N, D))).to(dtype)
    y = torch.from_numpy(g.integers(0, C, N)).to(torch.int64)
    return X, y


def mlp(seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """A 5 -> 7 -> 3 tanh MLP with weights from NumPy (no global torch RNG)."""
    m = torch.nn.Sequential(torch.nn.Linear(D, 7), torch.nn.Tanh(), torch.nn.Linear(7, C)).to(dtype)
    g = np.random.default_rng([seed, 2])
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.from_numpy(0.5 * g.standard_normal(tuple(p.shape))))
    return m


def batches(epoch: int):
    """Batches of K indices: a seeded permutation per epoch."""
    order = np.random.default_rng([7, epoch]).permutation(N)
    return [torch.from_numpy(order[i : i + K]) for i in range(0, N, K)]


def loss_on(model, X, y, idx):
    return torch.nn.functional.cross_entropy(model(X[idx]), y[idx])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(torch.int64 if a.element_size() == 8 else torch.int32),
                                              b.view(torch.int64 if b.element_size() == 8 else torch.int32))


class ForcedP(StochasticBatchSizeSGD):
    """p ≡ ``p_forced`` (the masks are still drawn from the generator)."""

    def __init__(self, *args, p_forced: float = 1.0, **kwargs):
        self.p_forced = p_forced
        super().__init__(*args, **kwargs)

    def update_probabilities(self, grads, *, alphas, lams):
        return [torch.full_like(g, self.p_forced) for g in grads]


class Injected(StochasticBatchSizeSGD):
    """Masks from a list: per step a bool (shared by every entry) or a list of arrays."""

    def __init__(self, *args, masks, **kwargs):
        self.injected = list(masks)
        super().__init__(*args, **kwargs)

    def sample_masks(self, probs):
        m = self.injected.pop(0)
        if isinstance(m, bool):
            return [torch.full(p.shape, m) for p in probs]
        return [torch.as_tensor(np.asarray(a, dtype=bool)) for a in m]


# ---------------------------------------------------------------------- SGD oracles


@pytest.mark.parametrize("lr_scaling", ["plain", "count"])
def test_p_one_is_sgd_bit_for_bit(lr_scaling):
    X, y = data()
    a, b = mlp(), mlp()
    sbs = ForcedP(a.parameters(), lr=0.3, lr_scaling=lr_scaling)
    sgd = torch.optim.SGD(b.parameters(), lr=0.3)
    for epoch in range(3):
        for idx in batches(epoch):
            for model, opt in ((a, sbs), (b, sgd)):
                opt.zero_grad()
                loss_on(model, X, y, idx).backward()
                opt.step()
        assert sbs.end_epoch() == 0  # p ≡ 1: nothing is ever pending
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert same_bits(pa, pb)
    assert not torch.equal(a[0].weight, mlp()[0].weight)  # it did train


MASKS = [False, False, True, True, False, True, False, False, False, True, False, False]


@pytest.mark.parametrize("lr_scaling", ["plain", "count"])
def test_shared_masks_equal_sgd_on_union_batches(lr_scaling):
    """While every entry is held, w does not move, so the average of k equal-size batch
    gradients is the gradient of the union: one SGD step on the union (rate η, or k·η)."""
    X, y = data(1)
    eta = 0.4
    a = mlp(1)
    sbs = Injected(a.parameters(), lr=eta, masks=MASKS, lr_scaling=lr_scaling)
    for idx in batches(0):
        sbs.zero_grad()
        loss_on(a, X, y, idx).backward()
        sbs.step()
    b = mlp(1)
    union, n_steps = [], 0
    for idx, m in zip(batches(0), MASKS):
        union.append(idx)
        if m:
            lr = eta * (len(union) if lr_scaling == "count" else 1)
            opt = torch.optim.SGD(b.parameters(), lr=lr)
            opt.zero_grad()
            loss_on(b, X, y, torch.cat(union)).backward()
            opt.step()
            union, n_steps = [], n_steps + 1
    assert n_steps == 4 and len(union) == 2  # two trailing held batches change nothing
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert_allclose(pa.detach().numpy(), pb.detach().numpy(), rtol=1e-12, atol=1e-14)
    # The oracle discriminates: per-batch SGD ends elsewhere.
    c = mlp(1)
    opt = torch.optim.SGD(c.parameters(), lr=eta)
    for idx in batches(0):
        opt.zero_grad()
        loss_on(c, X, y, idx).backward()
        opt.step()
    assert not np.allclose(c[0].weight.detach().numpy(), a[0].weight.detach().numpy(), rtol=1e-6)


def test_end_epoch_discards_pending_gradients():
    X, y = data(2)
    a = mlp(2)
    sbs = Injected(a.parameters(), lr=0.5, masks=[False, False, True])
    bs = batches(0)
    for idx in bs[:2]:
        sbs.zero_grad()
        loss_on(a, X, y, idx).backward()
        sbs.step()
    n_entries = sum(p.numel() for p in a.parameters())
    assert sbs.end_epoch() == n_entries
    assert all(not st["count"].any() and not st["avg_grad"].any() for st in sbs.state.values())
    sbs.zero_grad()
    loss_on(a, X, y, bs[2]).backward()
    sbs.step()
    b = mlp(2)  # after the reset only the third batch counts
    opt = torch.optim.SGD(b.parameters(), lr=0.5)
    loss_on(b, X, y, bs[2]).backward()
    opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert same_bits(pa, pb)


# ---------------------------------------------------------------------- w-independent gradients


def linear_problem(grads_w, grads_b, w0, b0):
    """Parameters w, b and a loss Σ c_w·w + Σ c_b·b whose gradient (c_w, c_b) ignores w."""
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor(b0, dtype=torch.float64))

    def loss(t):
        return (torch.as_tensor(grads_w[t]) * w).sum() + (torch.as_tensor(grads_b[t]) * b).sum()

    return w, b, loss


@pytest.mark.parametrize("lr_scaling, expected", [("plain", [-3.5, -3.0]), ("count", [-5.0, -5.0])])
def test_hand_computed_weights(lr_scaling, expected):
    # Entry 0: held at g=2, updated at mean(2, 4)=3, updated at 6: 1 − .5·3 − .5·6 = −3.5
    #          (count: k=2 at the first update: 1 − .5·2·3 − .5·6 = −5).
    # Entry 1: updated at 4, held at 8, updated at mean(8, 0)=4: 1 − .5·4 − .5·4 = −3
    #          (count: 1 − 2 − .5·2·4 = −5).
    gw = [[2.0, 4.0], [4.0, 8.0], [6.0, 0.0]]
    w, _, loss = linear_problem(gw, [[0.0]] * 3, [1.0, 1.0], [0.0])
    masks = [[[0, 1]], [[1, 0]], [[1, 1]]]
    opt = Injected([w], lr=0.5, masks=masks, lr_scaling=lr_scaling)
    for t in range(3):
        opt.zero_grad()
        (torch.as_tensor(gw[t], dtype=torch.float64) * w).sum().backward()
        opt.step()
    assert_array_equal(w.detach().numpy(), expected)


@pytest.mark.parametrize("lr_scaling", ["plain", "count"])
def test_arbitrary_masks_match_a_plain_loop(lr_scaling):
    g = np.random.default_rng(11)
    T, eta = 15, 0.3
    gw = g.standard_normal((T, 2, 3))
    gb = g.standard_normal((T, 4))
    mw = g.random((T, 2, 3)) < 0.4
    mb = g.random((T, 4)) < 0.6
    w0, b0 = g.standard_normal((2, 3)), g.standard_normal(4)
    w, b, loss = linear_problem(gw, gb, w0.tolist(), b0.tolist())
    opt = Injected([w, b], lr=eta, masks=[[mw[t], mb[t]] for t in range(T)], lr_scaling=lr_scaling)
    for t in range(T):
        opt.zero_grad()
        loss(t).backward()
        opt.step()
        if t == 7:
            opt.end_epoch()
    # Float64 reference: per entry, a list of the batch gradients held since the last update.
    for grads, masks, start, got in ((gw, mw, w0, w), (gb, mb, b0, b)):
        ref = start.copy().ravel()
        held = [[] for _ in ref]
        for t in range(T):
            for j in range(ref.size):
                held[j].append(grads[t].ravel()[j])
                if masks[t].ravel()[j]:
                    k = len(held[j]) if lr_scaling == "count" else 1
                    ref[j] -= eta * k * (sum(held[j]) / len(held[j]))
                    held[j] = []
            if t == 7:
                held = [[] for _ in ref]
        assert_allclose(got.detach().numpy().ravel(), ref, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------- eq. 21


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def three_groups():
    # |g| per group: A = {1, 3} (μ=2, σ=1, v=∓1), B = {4, 4, 4, 4} (μ=4, σ=0 → v=0),
    # C = {5, 7} (μ=6, σ=1, v=∓1). Weighted by size (2, 4, 2): μ = 32/8 = 4,
    # σ² = (2·4 + 0 + 2·4)/8 = 2 → μ̃ = (−√2, 0, √2). Unweighted: σ² = 8/3 → μ̃ = (−√1.5, 0, √1.5).
    return [torch.tensor([1.0, -3.0], dtype=torch.float64),
            torch.tensor([[4.0, -4.0], [-4.0, 4.0]], dtype=torch.float64),
            torch.tensor([-5.0, 7.0], dtype=torch.float64)]


@pytest.mark.parametrize("weighting, mt", [("count", math.sqrt(2.0)), ("uniform", math.sqrt(1.5))])
def test_eq21_by_hand(weighting, mt):
    alpha, lam = 0.1, -4.0
    opt = StochasticBatchSizeSGD([torch.zeros(1)], lr=0.1, group_weighting=weighting)
    p = opt.update_probabilities(three_groups(), alphas=[alpha] * 3, lams=[lam] * 3)
    expected = [
        [sigmoid(-alpha + lam * -mt), sigmoid(alpha + lam * -mt)],
        [[0.5, 0.5], [0.5, 0.5]],
        [sigmoid(-alpha + lam * mt), sigmoid(alpha + lam * mt)],
    ]
    for got, exp in zip(p, expected):
        assert got.dtype == torch.float64
        assert_allclose(got.numpy(), exp, rtol=1e-14)


def test_eq21_degenerate_groups_give_zero():
    opt = StochasticBatchSizeSGD([torch.zeros(1)], lr=0.1)
    # Equal values whose float64 mean does not round back to them (σ ≈ 1e-17): still v = 0.
    flat = torch.full((3,), 0.1, dtype=torch.float64)
    assert flat.std(correction=0) > 0
    other = torch.tensor([0.0, 2.0], dtype=torch.float64)
    p_flat, _ = opt.update_probabilities([flat, other], alphas=[0.1, 0.1], lams=[-4.0, -4.0])
    assert torch.all(p_flat == p_flat[0])
    # Equal group means (and a lone tensor): μ̃ = 0, so p = sigmoid(α·v).
    a = torch.tensor([1.0, 3.0], dtype=torch.float64)
    b = torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    pa, pb = opt.update_probabilities([a, b], alphas=[0.1, 0.1], lams=[-4.0, -4.0])
    assert_allclose(pa.numpy(), [sigmoid(-0.1), sigmoid(0.1)], rtol=1e-15)
    assert_array_equal(pb.numpy(), 0.5)
    (pa1,) = opt.update_probabilities([a], alphas=[0.1], lams=[-4.0])
    assert_allclose(pa1.numpy(), [sigmoid(-0.1), sigmoid(0.1)], rtol=1e-15)
    # A one-entry tensor has σ = 0: v = 0.
    p_one, _ = opt.update_probabilities([torch.tensor([3.0], dtype=torch.float64), a],
                                        alphas=[0.1, 0.1], lams=[0.0, 0.0])
    assert_array_equal(p_one.numpy(), 0.5)


def random_groups(seed=3):
    g = np.random.default_rng(seed)
    return [torch.from_numpy(g.standard_normal(s) * sc) for s, sc in (((4, 5), 1.0), ((7,), 3.0), ((2, 3, 2), 0.1))]


def test_eq21_scaling_one_group_keeps_its_v():
    opt = StochasticBatchSizeSGD([torch.zeros(1)], lr=0.1)
    grads = random_groups()
    scaled = [grads[0], 3.7 * grads[1], grads[2]]
    # λ = 0: p = sigmoid(α·v), so equal p means equal v.
    base = opt.update_probabilities(grads, alphas=[1.0] * 3, lams=[0.0] * 3)
    after = opt.update_probabilities(scaled, alphas=[1.0] * 3, lams=[0.0] * 3)
    for x, z in zip(base, after):
        assert_allclose(z.numpy(), x.numpy(), rtol=1e-13)
    # ... while μ̃ moves (α = 0: p = sigmoid(λ·μ̃)), so the check above is not vacuous.
    base = opt.update_probabilities(grads, alphas=[0.0] * 3, lams=[-4.0] * 3)
    after = opt.update_probabilities(scaled, alphas=[0.0] * 3, lams=[-4.0] * 3)
    assert not np.allclose(base[1].numpy(), after[1].numpy())


def test_eq21_scaling_all_groups_keeps_mu_tilde():
    opt = StochasticBatchSizeSGD([torch.zeros(1)], lr=0.1)
    grads = random_groups()
    for c in (0.01, 250.0):
        base = opt.update_probabilities(grads, alphas=[0.0] * 3, lams=[-4.0] * 3)
        after = opt.update_probabilities([c * g for g in grads], alphas=[0.0] * 3, lams=[-4.0] * 3)
        for x, z in zip(base, after):
            assert len(torch.unique(x)) == 1  # α = 0: one p per group
            assert_allclose(z.numpy(), x.numpy(), rtol=1e-13)
    assert len({float(x[(0,) * x.dim()]) for x in base}) == 3  # three different μ̃


def test_step_feeds_eq21_the_chosen_gradient():
    seen = []

    class Spy(StochasticBatchSizeSGD):
        def update_probabilities(self, grads, *, alphas, lams):
            seen.append([g.clone() for g in grads])
            return super().update_probabilities(grads, alphas=alphas, lams=lams)

    X, y = data()
    for source in ("batch", "accumulated"):
        seen.clear()
        m = mlp()
        opt = Spy(m.parameters(), lr=0.1, norm_source=source)
        for idx in batches(0)[:3]:
            opt.zero_grad()
            loss_on(m, X, y, idx).backward()
            batch = [p.grad.clone() for p in m.parameters()]
            before = {p: (opt.state[p]["avg_grad"].clone(), opt.state[p]["count"].clone())
                      for p in m.parameters() if opt.state[p]}
            opt.step()
            for p, g, s in zip(m.parameters(), batch, seen[-1]):
                if source == "batch":
                    assert torch.equal(s, g)
                else:
                    avg, n = before.get(p, (torch.zeros_like(p), torch.zeros(p.shape, dtype=torch.int64)))
                    assert_allclose(s.numpy(), (avg + (g - avg) / (n + 1)).numpy(), rtol=1e-14)


# ---------------------------------------------------------------------- masks, seeds, resume


def test_masks_follow_p_and_the_seed():
    w = torch.nn.Parameter(torch.zeros(20_000, dtype=torch.float64))

    def updated(seed):
        w.data.zero_()
        opt = ForcedP([w], lr=1.0, p_forced=0.3, seed=seed)
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        return (w.detach() != 0).numpy()

    a, b, c = updated(5), updated(5), updated(6)
    assert abs(a.mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / a.size)
    assert_array_equal(a, b)
    assert (a != c).any()
    expected = int(rng(5, "sbs").integers(0, 2**63 - 1))
    assert ForcedP([w], lr=1.0, seed=5).generator.initial_seed() == expected


def test_parameters_without_gradients_are_left_alone():
    used = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    idle = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = ForcedP([used, idle], lr=0.5)
    (2.0 * used).sum().backward()
    opt.step()
    assert_array_equal(used.detach().numpy(), 0.0)
    assert_array_equal(idle.detach().numpy(), 1.0)
    assert not opt.state[idle]


def run(model, opt, X, y, epochs, *, stop=None):
    """Train; with ``stop=(epoch, step)`` return right before that step."""
    for epoch in range(epochs):
        for t, idx in enumerate(batches(epoch)):
            if stop == (epoch, t):
                return
            opt.zero_grad()
            loss_on(model, X, y, idx).backward()
            opt.step()
        opt.end_epoch()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resume_mid_epoch_is_bit_identical(dtype):
    X, y = data(4, dtype)
    full = mlp(4, dtype)
    run(full, StochasticBatchSizeSGD(full.parameters(), lr=0.2, seed=9), X, y, 2)

    part = mlp(4, dtype)
    opt = StochasticBatchSizeSGD(part.parameters(), lr=0.2, seed=9)
    run(part, opt, X, y, 2, stop=(1, 5))
    assert any(int(st["count"].max()) > 1 for st in opt.state.values())  # mid-accumulation
    buf = io.BytesIO()
    torch.save({"model": part.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)

    resumed = mlp(99, dtype)  # other weights and another seed: everything comes from the checkpoint
    resumed.load_state_dict(ckpt["model"])
    opt2 = StochasticBatchSizeSGD(resumed.parameters(), lr=0.2, seed=1)
    opt2.load_state_dict(ckpt["opt"])
    assert all(st["count"].dtype == torch.int64 for st in opt2.state.values())
    for t, idx in enumerate(batches(1)[5:]):
        opt2.zero_grad()
        loss_on(resumed, X, y, idx).backward()
        opt2.step()
    opt2.end_epoch()
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        assert same_bits(pa.detach(), pb.detach())


# ---------------------------------------------------------------------- bad input


def params():
    return [torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -0.1}, r"lr must be a finite real number >= 0, got lr=-0.1"),
    ({"lr": True}, r"lr must be a finite real number >= 0, got lr=True \(bool\)"),
    ({"lr": float("nan")}, r"lr must be a finite real number >= 0, got lr=nan"),
    ({"lr": "0.1"}, r"lr must be .*, got lr='0.1' \(str\)"),
    ({"lr": 0.1, "alpha": float("inf")}, r"alpha must be a finite real number, got alpha=inf"),
    ({"lr": 0.1, "lam": None}, r"lam must be a finite real number, got lam=None"),
    ({"lr": 0.1, "lr_scaling": "k"}, r"lr_scaling must be one of \['plain', 'count'\], got lr_scaling='k'"),
    ({"lr": 0.1, "norm_source": 1}, r"norm_source must be one of \['batch', 'accumulated'\], got norm_source=1"),
    ({"lr": 0.1, "group_weighting": "x"}, r"group_weighting must be one of \['count', 'uniform'\]"),
    ({"lr": 0.1, "seed": -1}, r"seed must be an integer in 0\.\.4294967295, got -1"),
    ({"lr": 0.1, "seed": 1.0}, r"seed must be an integer in 0\.\.4294967295, got 1\.0"),
    ({"lr": 0.1, "seed": True}, r"seed must be an integer"),
])
def test_bad_arguments_one_line(kwargs, match):
    with pytest.raises(ParameterError, match=match) as exc:
        StochasticBatchSizeSGD(params(), **kwargs)
    assert "\n" not in str(exc.value)


def test_bad_param_group_and_state_dict():
    opt = StochasticBatchSizeSGD(params(), lr=0.1)
    with pytest.raises(ParameterError, match=r"^lr must be a finite real number >= 0, got lr=-1 \(int\)$"):
        opt.add_param_group({"params": params(), "lr": -1})
    with pytest.raises(ParameterError, match=r"^lam must be a finite real number, got lam='a' \(str\)$"):
        StochasticBatchSizeSGD([{"params": params(), "lam": "a"}], lr=0.1)
    sgd = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(ParameterError, match=r"^state_dict must be a dict from StochasticBatchSizeSGD.state_dict\(\) "
                                             r"with key 'sbs_generator', got dict with keys \['param_groups', 'state'\]$"):
        opt.load_state_dict(sgd.state_dict())
    sd = opt.state_dict()
    sd["sbs_generator"] = torch.zeros(3)
    with pytest.raises(ParameterError, match=r"^sbs_generator must be a uint8 tensor"):
        opt.load_state_dict(sd)
    # A state of the wrong shape (a checkpoint of another model).
    p = params()
    opt = StochasticBatchSizeSGD(p, lr=0.1)
    p[0].grad = torch.ones(2)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["avg_grad"] = torch.zeros(5)
    with pytest.raises(ParameterError, match=r"^state of parameter 0 must hold tensors \['avg_grad', 'count'\] "
                                             r"of shape \(2,\), got \{'avg_grad': \(5,\), 'count': \(2,\)\}$"):
        opt.load_state_dict(sd)
