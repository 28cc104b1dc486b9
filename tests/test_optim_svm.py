"""SVMUpdate (the SVM-generalised update) against float64 references and exact oracles.

References: per-sample gradients by a plain loop of ``torch.autograd.grad``; the dual QP
by enumerating active sets (exact for tiny sizes); a linear model's δW by liblinear's
bias-free one-vs-rest L1-SVM (scikit-learn's LinearSVC, a second solver of the primal);
output changes by central finite differences.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

from schedgen.errors import DataError, ParameterError
from schedgen.optim import SVMUpdate
from schedgen.optim._svm import QPSolveError, solve_dual_qp

# --------------------------------------------------------------------------- references


def mlp(d=5, h=6, k=3, seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), act(), nn.Linear(h, k)).double()


def batch(n=8, d=5, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g)


def ref_jacobian(model, x):
    """g_ij by one autograd.grad per (sample, output): shape (ℓ, K, P), float64."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])[0]
        rows.append(torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[j], params, retain_graph=True)])
            for j in range(out.shape[0])
        ]))
    return torch.stack(rows).double()


def signed(G, y):
    n, k, _ = G.shape
    s = -torch.ones(n, k, dtype=torch.float64)
    s[torch.arange(n), y] = 1.0
    return s, (G * s[..., None]).reshape(n * k, -1)


def enumerate_box_qp(K, eps, C):
    """Exact argmax ε Σα − ½αᵀKα on [0, C]^n by trying every active set (n ≤ 7).

    For a positive definite K the KKT point is unique: the partition (at 0, free, at C)
    whose free block solve stays inside the box and whose bounded gradients have the
    right sign.
    """
    n = len(K)
    for parts in itertools.product((0, 1, 2), repeat=n):
        parts = np.array(parts)
        F, U = parts == 1, parts == 2
        a = np.where(U, C, 0.0)
        if F.any():
            a[F] = np.linalg.solve(K[np.ix_(F, F)], eps - K[np.ix_(F, U)].sum(1) * C)
            if a[F].min() < 0 or a[F].max() > C:
                continue
        grad = eps - K @ a  # ascent direction of the dual
        if (grad[parts == 0] <= 1e-12).all() and (grad[U] >= -1e-12).all():
            return a
    raise AssertionError("no KKT point found")


class StandInSampler:
    """What SVMUpdate needs of schedgen.torch.AdaptiveBatchSampler: request() and batch_size."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.requests = []

    def request(self, size):
        self.requests.append(size)
        self.batch_size = size


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# --------------------------------------------------------------------------- the QP


def test_jacobian_matches_autograd_loop():
    model = mlp()
    x, _ = batch()
    assert_allclose(SVMUpdate(model).jacobian(x).numpy(), ref_jacobian(model, x).numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("C", [1e3, 1e-3])
@pytest.mark.parametrize("eps", [1.0, 0.3])
def test_one_sample_one_output(C, eps):
    """κ = ‖g‖²: α* = clip(ε/‖g‖², 0, C) and δw = α* g."""
    model = mlp(k=1, act=nn.Tanh)
    x, _ = batch(n=1, k=1)
    res = SVMUpdate(model, C=C, epsilon=eps).solve(x, torch.zeros(1, dtype=torch.int64))
    g = ref_jacobian(model, x)[0, 0]
    alpha = min(max(eps / float(g @ g), 0.0), C)
    assert_allclose(res.alpha, [[alpha]], rtol=1e-10)
    assert_allclose(res.delta.numpy(), alpha * g.numpy(), rtol=1e-10, atol=1e-15)
    assert res.C == C


def test_one_sample_linear_model_outputs_decouple():
    """Bias-free linear model: g_ij = e_j ⊗ x_i are orthogonal across outputs, so each
    α_j = clip(ε/‖x‖², 0, C) and δW = α_j y_j x."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False).double()
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    for C, eps in [(10.0, 2.0), (0.01, 2.0)]:
        res = SVMUpdate(model, C=C, epsilon=eps).solve(x, torch.tensor([2]))
        alpha = min(eps / float((x * x).sum()), C)
        assert_allclose(res.alpha, np.full((1, 3), alpha), rtol=1e-10)
        expect = alpha * np.outer([-1.0, -1.0, 1.0], x[0].numpy())
        assert_allclose(res.delta.numpy().reshape(3, 4), expect, rtol=1e-10)


def test_epsilon_scaling():
    """δw(ε, C) = ε · δw(1, C/ε)."""
    model = mlp()
    x, y = batch(n=10)
    for eps, C in [(0.25, 0.05), (4.0, 2.0), (1e-3, 1e-4)]:
        a = SVMUpdate(model, C=C, epsilon=eps).solve(x, y).delta
        b = SVMUpdate(model, C=C / eps, epsilon=1.0).solve(x, y).delta
        assert_allclose(a.numpy(), eps * b.numpy(), rtol=1e-8, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("C", [0.02, 0.5, 50.0])
def test_dual_matches_active_set_enumeration(C):
    model = mlp(d=4, h=5, k=2)
    x, y = batch(n=3, d=4, k=2, seed=3)
    _, Z = signed(ref_jacobian(model, x), y)
    K = (Z @ Z.T).numpy()
    exact = enumerate_box_qp(K, 0.7, C)
    for polish, tol in ((True, 1e-10), (False, 1e-5)):
        res = SVMUpdate(model, C=C, epsilon=0.7, polish=polish).solve(x, y)
        assert_allclose(res.alpha.reshape(-1), exact, rtol=tol, atol=tol * C)


def test_linear_model_rows_are_one_vs_rest_l1_svms():
    """Row j of δW = ε × LinearSVC(one-vs-rest, hinge, no intercept, penalty C/ε).coef_[j]."""
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng([14, 1])
    n, d, k = 40, 3, 3
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    X[np.arange(n), y % d] += 1.0  # some classes are separable, some are not: slack binds
    torch.manual_seed(0)
    model = nn.Linear(d, k, bias=False).double()
    eps, C = 0.5, 0.2
    res = SVMUpdate(model, C=C, epsilon=eps).solve(torch.from_numpy(X), torch.from_numpy(y))
    assert (res.alpha >= C).any() and ((res.alpha > 0) & (res.alpha < C)).any()  # both kinds of support
    svc = LinearSVC(C=C / eps, loss="hinge", dual=True, fit_intercept=False, tol=1e-12, max_iter=1_000_000)
    svc.fit(X, y)
    assert_allclose(res.delta.numpy().reshape(k, d), eps * svc.coef_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("polish, tol", [(True, 1e-9), (False, 1e-5)])
@pytest.mark.parametrize("n, d, h, k, C", [(16, 6, 8, 4, 0.05), (48, 10, 16, 6, 1.0)])
def test_kkt_and_strong_duality(polish, tol, n, d, h, k, C):
    """Margins m_ij = y_ij⟨δw, g_ij⟩ from the reference Jacobian: m ≥ ε where α = 0,
    m = ε where 0 < α < C, m ≤ ε where α = C (within tol·ε); dual value = primal value.
    (The second case is one where HiGHS leaves bounded α ~1e-16 off their bound.)"""
    model = mlp(d=d, h=h, k=k, seed=2)
    x, y = batch(n=n, d=d, k=k, seed=5)
    eps = 0.8
    res = SVMUpdate(model, C=C, epsilon=eps, polish=polish).solve(x, y)
    _, Z = signed(ref_jacobian(model, x), y)
    m = (Z @ res.delta).numpy()
    a = res.alpha.reshape(-1)
    lo, hi = a <= 0, a >= C
    assert lo.any() and (hi.any() or C == 1.0) and (~lo & ~hi).any()  # the cases are exercised
    assert (m[lo] >= eps * (1 - tol)).all()
    assert_allclose(m[~lo & ~hi], eps, rtol=tol)
    assert (m[hi] <= eps * (1 + tol)).all()
    assert a.min() >= 0 and a.max() <= C
    primal = 0.5 * float(res.delta @ res.delta) + C * np.maximum(eps - m, 0).sum()
    assert_allclose(res.objective, primal, rtol=10 * tol)
    assert res.kkt_residual <= tol


@pytest.mark.parametrize("scale", [1e-10, 1e10])
def test_scale_of_gradients_does_not_matter(scale):
    """α(c·κ, ε, C) = α(κ, ε, C)/c while C·c binds nowhere: the QP is scaled before HiGHS
    (unscaled, entries of 1e-10 fall under HiGHS's small_matrix_value)."""
    rng = np.random.default_rng([14, 2])
    A = rng.standard_normal((12, 30))
    K = A @ A.T
    base = solve_dual_qp(K, 1.0, 1e30)
    scaled = solve_dual_qp(K * scale, 1.0, 1e30)
    assert_allclose(scaled.alpha * scale, base.alpha, rtol=1e-8)
    assert scaled.kkt_residual <= 1e-9


def test_zero_gradients_give_alpha_C_and_no_step():
    model = nn.Linear(3, 2, bias=False).double()
    res = SVMUpdate(model, C=0.3).solve(torch.zeros(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0]))
    assert_allclose(res.alpha, 0.3)
    assert float(res.delta.abs().max()) == 0.0 and res.bound == 0.0


class _HighsProxy:
    """A real HiGHS instance that lies about one status (each check must stand alone)."""

    def __init__(self, real, lie):
        self._real, self._lie = real, lie

    def __getattr__(self, name):
        return getattr(self._real, name)

    def run(self):
        status = self._real.run()
        return self._lie.get("run", status)

    def getModelStatus(self):
        return self._lie.get("model", self._real.getModelStatus())


@pytest.mark.parametrize("lie", ["none", "run", "model"])
def test_highs_failure_is_one_line_error(monkeypatch, lie):
    """Stopped by its iteration limit, HiGHS reports it twice (run status kWarning, model
    status kIterationLimit); either one alone must raise."""
    import highspy

    lies = {"none": {}, "run": {"run": highspy.HighsStatus.kOk},
            "model": {"model": highspy.HighsModelStatus.kOptimal}}[lie]
    fake = type(sys)("highspy")
    fake.__dict__.update(highspy.__dict__)
    fake._Highs = lambda: _HighsProxy(highspy._Highs(), lies)
    monkeypatch.setitem(sys.modules, "highspy", fake)
    rng = np.random.default_rng([14, 3])
    A = rng.standard_normal((30, 40))
    with pytest.raises(QPSolveError, match=r"^HiGHS did not solve the SVM dual QP to optimality: .*model status"):
        solve_dual_qp(A @ A.T, 1.0, 0.05, iteration_limit=1)
    # The same problem without the limit solves (so the error above is the limit's).
    assert solve_dual_qp(A @ A.T, 1.0, 0.05).kkt_residual <= 1e-9


# --------------------------------------------------------------------------- the update


def test_finite_differences_of_the_step():
    """⟨δw, ∇f^j(x_i)⟩ = the directional derivative of every output, by central differences
    on a ReLU MLP whose activation pattern is unchanged along ±t·δw (the outputs are then
    quadratic in t, so central differences are exact up to rounding)."""
    model = mlp(d=5, h=7, k=3, seed=4)
    x, y = batch(n=6, seed=6)
    res = SVMUpdate(model).solve(x, y)
    predicted = (ref_jacobian(model, x) @ res.delta).numpy()  # (ℓ, K)
    w0 = flat(model)
    t = 1e-4 / max(float(res.delta.abs().max()), 1e-12)

    def at(w):
        torch.nn.utils.vector_to_parameters(w, model.parameters())
        with torch.no_grad():
            return model(x).numpy(), (model[0](x) > 0).numpy()

    f0, pat0 = at(w0)
    fp, patp = at(w0 + t * res.delta)
    fm, patm = at(w0 - t * res.delta)
    assert (pat0 == patp).all() and (pat0 == patm).all()  # no kink between w ± tδw
    assert_allclose((fp - fm) / (2 * t), predicted, rtol=1e-6, atol=1e-8 * np.abs(predicted).max())


def test_step_applies_step_times_delta_and_reports_the_bound():
    model = mlp()
    x, y = batch(n=9)
    G = ref_jacobian(model, x)
    w0 = flat(model)
    u = SVMUpdate(model, step=0.25)
    res = u.step(x, y)
    assert res.applied and not res.loose and res.requested_batch_size is None
    assert_allclose(flat(model).numpy(), (w0 + 0.25 * res.delta).numpy(), rtol=0, atol=1e-15)
    trace = float((G * G).sum())
    assert_allclose(res.trace, trace, rtol=1e-12)
    assert_allclose(res.bound, float(res.delta.norm()) * math.sqrt(trace) / 9, rtol=1e-12)
    assert u.last is res and u.last_bound == res.bound and u.steps == 1 and u.n_applied == 1


def test_same_inputs_same_bytes():
    x, y = batch(n=12)
    a = SVMUpdate(mlp()).solve(x, y)
    b = SVMUpdate(mlp()).solve(x, y)
    assert a.delta.numpy().tobytes() == b.delta.numpy().tobytes()


@pytest.mark.parametrize("rule", ["text", "pseudocode"])
def test_loose_bound_rule(rule):
    model = mlp()
    x, y = batch(n=8)
    sampler = StandInSampler(8)
    u = SVMUpdate(model, C=2.0, threshold=1e-6, rule=rule, sampler=sampler)
    w0 = flat(model)
    res = u.step(x, y)
    assert res.loose and res.bound > 1e-6 and res.C == 2.0
    assert sampler.requests == [16] and u.requested_batch_size == 16 and res.requested_batch_size == 16
    assert u.C == pytest.approx(0.2) and u.n_loose == 1
    if rule == "text":  # skipped
        assert not res.applied and torch.equal(flat(model), w0) and u.n_applied == 0
    else:  # Algorithm 2 read literally: applied anyway
        assert res.applied and torch.allclose(flat(model), w0 + 0.1 * res.delta, rtol=0, atol=1e-15)
    # The next batch (now twice as large) is solved with the scaled C and doubled again.
    x2, y2 = batch(n=16, seed=2)
    res2 = u.step(x2, y2)
    assert res2.C == pytest.approx(0.2) and sampler.requests == [16, 32] and u.C == pytest.approx(0.02)


def test_with_the_adaptive_sampler_the_doubled_batches_are_served_and_replayed(tmp_path):
    from schedgen.torch import AdaptiveBatchSampler, ScheduleBatchSampler

    X, Y = batch(n=40, seed=7)
    sampler = AdaptiveBatchSampler(40, 8, seed=3, record=tmp_path / "run.zarr")
    u = SVMUpdate(mlp(), threshold=0.0, sampler=sampler, max_batch_size=32)
    served = []
    for idx in sampler:
        served.append(list(idx))
        u.step(X[idx], Y[idx])
    assert [len(b) for b in served] == [8, 16, 16]  # 8, then 16, then 32 asked with 16 left
    assert sampler.batch_size == 32 and u.C == pytest.approx(1e-3)
    assert list(ScheduleBatchSampler(tmp_path / "run.zarr")) == served


def test_the_size_doubled_is_the_samplers_not_the_short_batchs():
    sampler = StandInSampler(20)  # e.g. the short last batch of an epoch: 8 served, 20 in force
    u = SVMUpdate(mlp(), threshold=0.0, sampler=sampler)
    u.step(*batch(n=8))
    assert sampler.requests == [40]
    sampler.batch_size = 5  # the trainer changed it meanwhile: the sampler's word counts
    u.step(*batch(n=8))
    assert sampler.requests == [40, 10]


class _Refusing(StandInSampler):
    def request(self, size):
        raise ParameterError(f"size too large, got {size}")


def test_a_refused_request_changes_nothing():
    model = mlp()
    u = SVMUpdate(model, threshold=0.0, rule="pseudocode", sampler=_Refusing(8))
    w0, state = flat(model), u.state_dict()
    with pytest.raises(ParameterError, match="size too large, got 16"):
        u.step(*batch(n=8))
    assert torch.equal(flat(model), w0) and u.state_dict() == state


def test_tight_bound_changes_nothing_and_caps():
    model = mlp()
    x, y = batch(n=8)
    sampler = StandInSampler(8)
    u = SVMUpdate(model, threshold=1e9, sampler=sampler)
    assert u.step(x, y).applied and sampler.requests == [] and u.C == 1.0 and u.requested_batch_size is None
    # Without a sampler the current size is the first batch's; max_batch_size caps the request.
    u = SVMUpdate(mlp(), threshold=0.0, max_batch_size=12)
    assert u.step(x, y).requested_batch_size == 12 and u.batch_size == 12
    u = SVMUpdate(mlp(), threshold=0.0, batch_growth=3)
    assert u.step(x, y).requested_batch_size == 24


def test_state_dict_round_trip():
    x1, y1 = batch(n=8, seed=11)
    x2, y2 = batch(n=16, seed=12)
    a_model, b_model = mlp(seed=3), mlp(seed=9)
    sampler = StandInSampler(8)
    a = SVMUpdate(a_model, threshold=2.4, sampler=sampler)
    for _ in range(2):
        a.step(x1, y1)
    assert a.n_loose >= 1 and a.n_applied >= 1  # C and the sizes are not their defaults
    state = json.loads(json.dumps(a.state_dict()))  # plain values
    b_model.load_state_dict(a_model.state_dict())
    b = SVMUpdate(b_model, threshold=2.4)
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    for xb, yb in ((x2, y2), (x1, y1)):
        ra, rb = a.step(xb, yb), b.step(xb, yb)
        assert ra.summary() == rb.summary()
    assert flat(a_model).numpy().tobytes() == flat(b_model).numpy().tobytes()
    assert a.state_dict() == b.state_dict()


def test_import_does_not_load_highspy():
    code = "import sys, schedgen.optim; print('highspy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# --------------------------------------------------------------------------- bad input


class _Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.lin.requires_grad_(False)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("kwargs, match", [
    ({"C": 0.0}, r"^C must be a positive finite number, got 0\.0$"),
    ({"C": float("inf")}, r"^C must be a positive finite number, got inf$"),
    ({"epsilon": -1.0}, r"^epsilon must be a positive finite number, got -1\.0$"),
    ({"step": "0.1"}, r"^step must be a positive finite number, got '0\.1'$"),
    ({"threshold": -1.0}, r"^threshold must be None or a finite number >= 0, got -1\.0$"),
    ({"rule": "paper"}, r"^rule must be one of 'text', 'pseudocode', got 'paper'$"),
    ({"sampler": object()}, r"^sampler must have a request\(size\) method, got object$"),
    ({"batch_size": 0}, r"^batch_size must be an integer >= 1, got 0$"),
    ({"c_decay": 2.0}, r"^c_decay must be in \(0, 1\], got 2\.0$"),
    ({"batch_growth": True}, r"^batch_growth must be an integer, got True$"),
    ({"max_batch_size": 1.5}, r"^max_batch_size must be an integer, got 1\.5$"),
    ({"polish": 1}, r"^polish must be True or False, got 1$"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        SVMUpdate(mlp(), **kwargs)


def test_bad_models():
    with pytest.raises(ParameterError, match=r"^model must be a torch\.nn\.Module, got function$"):
        SVMUpdate(lambda x: x)
    with pytest.raises(ParameterError, match=r"^model must have trainable parameters .*got none in _Frozen$"):
        SVMUpdate(_Frozen())
    flat_out = nn.Sequential(nn.Linear(5, 1), nn.Flatten(0)).double()
    with pytest.raises(ParameterError, match=r"^model must map x .* to outputs of shape \(batch, K\), got \(1,\)"):
        SVMUpdate(flat_out).solve(*batch(k=1))


@pytest.mark.parametrize("make, match", [
    (lambda x, y: (x.numpy(), y), r"^x must be a tensor of shape \(batch, \.\.\.\) with batch >= 1, got ndarray$"),
    (lambda x, y: (x[:0], y[:0]), r"^x must be a tensor .* got \(0, 5\)$"),
    (lambda x, y: (x, y.double()), r"^y must be an integer tensor of class labels, got torch\.float64$"),
    (lambda x, y: (x, y > 0), r"^y must be an integer tensor of class labels, got torch\.bool$"),
    (lambda x, y: (x, y.tolist()), r"^y must be an integer tensor of class labels, got list$"),
    (lambda x, y: (x, y[:3]), r"^y must have shape \(8,\) to match x, got \(3,\)$"),
    (lambda x, y: (x, torch.where(y == 0, 3, y)), r"^labels must be in \[0, 2\] for a model with 3 outputs, "
                                                    r"got values in \[1, 3\]$"),
    (lambda x, y: (x, y - 1), r"^labels must be in \[0, 2\] .*got values in \[-1, 1\]$"),
])
def test_bad_batches(make, match):
    x, y = batch()
    with pytest.raises(ParameterError, match=match):
        SVMUpdate(mlp()).step(*make(x, y))


def test_non_finite_gradients():
    x, y = batch()
    x[2, 1] = float("nan")
    with pytest.raises(DataError, match=r"^the per-sample gradients must be finite, got NaN or inf"):
        SVMUpdate(mlp()).step(x, y)


@pytest.mark.parametrize("change, match", [
    ({"C": -1.0}, r"^state\['C'\] must be a positive finite number, got -1\.0$"),
    ({"steps": -1}, r"^state\['steps'\] must be an integer >= 0, got -1$"),
    ({"batch_size": 2.5}, r"^state\['batch_size'\] must be an integer, got 2\.5$"),
    ({"last_bound": "x"}, r"^state\['last_bound'\] must be None or a number, got 'x'$"),
    ({"extra": 1}, r"^state must be a dict with keys \[.*\], got \[.*'extra'.*\]$"),
])
def test_bad_state(change, match):
    u = SVMUpdate(mlp())
    with pytest.raises(ParameterError, match=match):
        u.load_state_dict({**u.state_dict(), **change})
