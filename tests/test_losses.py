"""schedgen.losses.itra_match_loss against oracles: plain float64 loops, closed forms,
finite differences (issue 12, "The loss")."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

torch = pytest.importorskip("torch")

from schedgen.errors import ParameterError  # noqa: E402
from schedgen.losses import itra_match_loss  # noqa: E402

# ----------------------------------------------------------------------------- oracles


def loop_mmd2(a, b, sigma):
    """The biased V-statistic MMD², i = j terms included, as plain float64 loops."""
    k = lambda x, y: math.exp(-sum((xi - yi) ** 2 for xi, yi in zip(x, y)) / sigma)  # noqa: E731
    saa = sum(k(x, y) for x in a for y in a) / len(a) ** 2
    sbb = sum(k(x, y) for x in b for y in b) / len(b) ** 2
    sab = sum(k(x, y) for x in a for y in b) / (len(a) * len(b))
    return saa + sbb - 2.0 * sab


def loop_median_sigma(a, b):
    """Median of ‖z_i - z_j‖² over the pairs i < j of the rows of a ∪ b (loops + np.median)."""
    z = [list(map(float, r)) for r in np.concatenate([a, b])]
    d = [sum((p - q) ** 2 for p, q in zip(z[i], z[j])) for i in range(len(z)) for j in range(i + 1, len(z))]
    return float(np.median(d))


def loop_itra_c(a, ya, b, yb, sigma, *, K=None, present_only=False, squared=False, eps=1e-8):
    """Eq. 5 with loops: per-class MMD over the classes in both batches, divided by K
    (absent classes count 0) or by the number of classes present in both."""
    classes = sorted(set(ya.tolist()) | set(yb.tolist()))
    vals = []
    for c in classes:
        ac, bc = a[ya == c], b[yb == c]
        if len(ac) and len(bc):
            m2 = loop_mmd2(ac.tolist(), bc.tolist(), sigma)
            vals.append(m2 if squared else math.sqrt(max(m2, 0.0) + eps))
    denom = max(len(vals), 1) if present_only else (K if K is not None else len(classes))
    return sum(vals) / denom


def rand(m, d, seed, dtype=torch.float64):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(m, d))).to(dtype)


def labels(values):
    return torch.tensor(values, dtype=torch.int64)


# ----------------------------------------------------------------------------- values


def test_mmd_of_a_set_with_itself_is_zero():
    h = rand(6, 4, 0)
    y = labels([0, 1, 0, 1, 2, 2])
    for cond in (False, True):
        v2 = itra_match_loss(h, y, h.clone(), y, conditional=cond, squared=True)
        assert abs(float(v2)) < 1e-12
        v = itra_match_loss(h, y, h.clone(), y, conditional=cond, eps=1e-8)
        assert_allclose(float(v), 1e-4, rtol=1e-6)  # the floor: sqrt(0 + eps)


def test_one_pair_closed_form():
    x, y = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64), torch.tensor([[0.5, 0.0, 1.0]], dtype=torch.float64)
    d2 = 0.25 + 4.0 + 4.0
    for sigma in (0.7, 3.0, 20.0):
        v2 = itra_match_loss(x, None, y, None, conditional=False, squared=True, sigma=sigma)
        assert_allclose(float(v2), 2 - 2 * math.exp(-d2 / sigma), rtol=1e-12)
        v = itra_match_loss(x, None, y, None, conditional=False, sigma=sigma, eps=1e-12)
        assert_allclose(float(v), math.sqrt(2 - 2 * math.exp(-d2 / sigma) + 1e-12), rtol=1e-12)
    # one pair: the median squared distance is d² itself, so MMD² = 2 - 2/e
    v2 = itra_match_loss(x, None, y, None, conditional=False, squared=True)
    assert_allclose(float(v2), 2 - 2 * math.exp(-1.0), rtol=1e-12)


@pytest.mark.parametrize("sigma", [2.5, "median"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorised_equals_the_double_loop(sigma, seed):
    h1, h2 = rand(7, 5, seed), rand(9, 5, seed + 100) + 0.3
    s = loop_median_sigma(h1.numpy(), h2.numpy()) if sigma == "median" else sigma
    want2 = loop_mmd2(h1.tolist(), h2.tolist(), s)
    got2 = itra_match_loss(h1, None, h2, None, conditional=False, squared=True, sigma=sigma)
    assert_allclose(float(got2), want2, rtol=1e-10, atol=1e-14)
    got = itra_match_loss(h1, None, h2, None, conditional=False, sigma=sigma)
    assert_allclose(float(got), math.sqrt(want2 + 1e-8), rtol=1e-10)


@pytest.mark.parametrize("sigma", [1.5, "median"])
def test_conditional_equals_the_loop(sigma):
    rng = np.random.default_rng(7)
    h1, h2 = rand(12, 3, 8), rand(10, 3, 9)
    y1, y2 = rng.integers(0, 3, 12), rng.integers(0, 3, 10)
    y1[:3], y2[:3] = [0, 1, 2], [0, 1, 2]  # every class present in both
    s = loop_median_sigma(h1.numpy(), h2.numpy()) if sigma == "median" else sigma
    for squared in (False, True):
        got = itra_match_loss(h1, labels(y1), h2, labels(y2), sigma=sigma, squared=squared)
        want = loop_itra_c(h1.numpy(), y1, h2.numpy(), y2, s, squared=squared)
        assert_allclose(float(got), want, rtol=1e-10)


def test_permutation_invariance():
    h1, h2 = rand(8, 4, 11), rand(6, 4, 12)
    y1, y2 = labels([0, 1, 2, 0, 1, 2, 0, 1]), labels([2, 1, 0, 0, 1, 2])
    p1, p2 = torch.from_numpy(np.random.default_rng(0).permutation(8)), torch.from_numpy(
        np.random.default_rng(1).permutation(6)
    )
    for cond in (False, True):
        a = itra_match_loss(h1, y1, h2, y2, conditional=cond)
        b = itra_match_loss(h1[p1], y1[p1], h2[p2], y2[p2], conditional=cond)
        assert_allclose(float(b), float(a), rtol=1e-12)


def test_itra_c_with_one_class_is_itra():
    h1, h2 = rand(5, 3, 20), rand(7, 3, 21)
    for sigma in (0.9, "median"):
        for squared in (False, True):
            c = itra_match_loss(h1, labels([4] * 5), h2, labels([4] * 7), sigma=sigma, squared=squared)
            u = itra_match_loss(h1, None, h2, None, conditional=False, sigma=sigma, squared=squared)
            assert_allclose(float(c), float(u), rtol=1e-12)


def test_float32_features_give_a_float32_loss_close_to_float64():
    h1, h2 = rand(16, 8, 30), rand(16, 8, 31)
    y1, y2 = labels([i % 4 for i in range(16)]), labels([(i + 1) % 4 for i in range(16)])
    v64 = itra_match_loss(h1, y1, h2, y2)
    v32 = itra_match_loss(h1.float(), y1, h2.float(), y2)
    assert v32.dtype == torch.float32 and v32.shape == ()
    assert_allclose(float(v32), float(v64), rtol=1e-6)


# ----------------------------------------------------------------------------- absent classes


def test_absent_classes_paper_and_present():
    # class 0 in both, 1 only in S1, 2 only in S2: only class 0 has an MMD
    h1, h2 = rand(6, 3, 40), rand(5, 3, 41)
    y1, y2 = np.array([0, 1, 0, 1, 0, 1]), np.array([2, 0, 2, 0, 2])
    s = 2.0
    m0 = loop_itra_c(h1.numpy(), y1, h2.numpy(), y2, s, present_only=True)  # = MMD of class 0
    assert_allclose(m0, math.sqrt(loop_mmd2(h1[y1 == 0].tolist(), h2[y2 == 0].tolist(), s) + 1e-8))
    args = (h1, labels(y1), h2, labels(y2))
    assert_allclose(float(itra_match_loss(*args, sigma=s)), m0 / 3, rtol=1e-12)  # K = |{0, 1, 2}|
    assert_allclose(float(itra_match_loss(*args, sigma=s, num_classes=10)), m0 / 10, rtol=1e-12)
    assert_allclose(float(itra_match_loss(*args, sigma=s, absent="present")), m0, rtol=1e-12)
    assert_allclose(float(itra_match_loss(*args, sigma=s, absent="present", num_classes=10)), m0, rtol=1e-12)


def test_absent_class_rows_get_no_gradient():
    h1, h2 = rand(6, 3, 42).requires_grad_(), rand(5, 3, 43).requires_grad_()
    y1, y2 = labels([0, 1, 0, 1, 0, 1]), labels([2, 0, 2, 0, 2])
    for absent in ("paper", "present"):
        h1.grad = h2.grad = None
        itra_match_loss(h1, y1, h2, y2, sigma=2.0, absent=absent).backward()
        assert torch.all(h1.grad[y1 == 1] == 0) and torch.all(h2.grad[y2 == 2] == 0)
        assert torch.all(torch.isfinite(h1.grad)) and h1.grad[y1 == 0].abs().sum() > 0


def test_no_class_in_both_batches():
    h1, h2 = rand(3, 2, 44).requires_grad_(), rand(3, 2, 45).requires_grad_()
    y1, y2 = labels([0, 0, 1]), labels([2, 3, 3])
    for absent in ("paper", "present"):
        v = itra_match_loss(h1, y1, h2, y2, absent=absent)
        assert float(v.detach()) == 0.0
        v.backward()  # still part of the graph
        assert torch.all(h1.grad == 0)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_autograd_equals_finite_differences(conditional, squared):
    h1, h2 = rand(5, 3, 50).requires_grad_(), rand(4, 3, 51).requires_grad_()
    y1, y2 = labels([0, 1, 0, 1, 1]), labels([1, 0, 0, 2])
    f = lambda a, b: itra_match_loss(a, y1, b, y2, sigma=1.7, conditional=conditional, squared=squared)  # noqa: E731
    assert torch.autograd.gradcheck(f, (h1, h2), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradient_is_finite_at_zero_mmd():
    h = rand(4, 3, 52)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    itra_match_loss(h1, None, h2, None, conditional=False).backward()
    assert torch.all(torch.isfinite(h1.grad)) and torch.all(torch.isfinite(h2.grad))


def test_median_sigma_is_detached():
    # the gradient with sigma="median" is the gradient with sigma fixed at the median value
    # (computed by the oracle), not the one that also moves sigma
    h1, h2 = rand(6, 4, 60), rand(7, 4, 61) * 1.5
    y1, y2 = labels([0, 1, 0, 1, 0, 1]), labels([0, 1, 1, 0, 1, 0, 1])
    med = loop_median_sigma(h1.numpy(), h2.numpy())
    for cond in (False, True):
        grads = []
        for sigma in ("median", med):
            a, b = h1.clone().requires_grad_(), h2.clone().requires_grad_()
            itra_match_loss(a, y1, b, y2, sigma=sigma, conditional=cond).backward()
            grads.append(torch.cat([a.grad, b.grad]))
        assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=1e-10, atol=1e-14)
        # and that differs from the gradient through sigma (central differences of the full map)
        a = h1.clone().requires_grad_()
        num = torch.autograd.functional.jacobian(lambda x: itra_match_loss(x, y1, h2, y2, conditional=cond), a)
        fd = np.zeros(h1.shape)
        for idx in np.ndindex(*h1.shape):
            e = torch.zeros_like(h1)
            e[idx] = 1e-6
            up = float(itra_match_loss(h1 + e, y1, h2, y2, conditional=cond))
            dn = float(itra_match_loss(h1 - e, y1, h2, y2, conditional=cond))
            fd[idx] = (up - dn) / 2e-6
        assert_allclose(num.numpy(), grads[0][:6].numpy(), rtol=1e-12)
        assert np.abs(fd - num.numpy()).max() > 1e-4


def test_zero_median_falls_back_to_one():
    # 3 equal rows + 1 other: 3 of the 6 pairs are at distance 0, 3 at d² = 4 -> median 2 > 0;
    # 4 equal rows + 1 other: 6 of 10 pairs at 0 -> median 0 -> sigma 1.0
    x = torch.zeros((4, 2), dtype=torch.float64)
    y = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    got = itra_match_loss(x, None, y, None, conditional=False, squared=True)
    assert_allclose(float(got), 2 - 2 * math.exp(-4.0 / 1.0), rtol=1e-12)
    got = itra_match_loss(x[:3], None, y, None, conditional=False, squared=True)
    assert_allclose(float(got), 2 - 2 * math.exp(-4.0 / 2.0), rtol=1e-12)


# ----------------------------------------------------------------------------- bad input

H = torch.zeros((3, 2))
Y = torch.zeros(3, dtype=torch.int64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"h1": H.numpy()}, r"h1 must be a torch.Tensor of shape \(m, d\), got ndarray"),
        ({"h2": torch.zeros(3)}, r"h2 must be a 2-D tensor of shape \(m, d\) with m >= 1 and d >= 1, got shape \(3,\)"),
        ({"h1": torch.zeros((0, 2)), "y1": Y[:0]}, r"h1 must be a 2-D tensor .* got shape \(0, 2\)"),
        ({"h1": torch.zeros((3, 2), dtype=torch.int64)}, r"h1 must have a floating-point dtype, got torch.int64"),
        ({"h2": H.double()}, r"h1 and h2 must have the same dtype, got torch.float32 and torch.float64"),
        ({"h2": torch.zeros((3, 5))}, r"h1 and h2 must have the same feature dimension d, got 2 and 5"),
        ({"y1": None}, r"y1 is required with conditional=True \(ITRA-c\), got None"),
        ({"y2": [0, 0, 0]}, r"y2 must be an integer torch.Tensor of shape \(3,\), got list"),
        ({"y1": torch.zeros(3)}, r"y1 must have an integer dtype, got torch.float32"),
        ({"y1": torch.zeros(3, dtype=torch.bool)}, r"y1 must have an integer dtype, got torch.bool"),
        ({"y2": Y[:2]}, r"y2 must have shape \(3,\) \(one label per row of its features\), got \(2,\)"),
        ({"y1": Y + 5, "num_classes": 5}, r"y1 must hold labels in \[0, num_classes=5\), got values in \[5, 5\]"),
        ({"sigma": "mean"}, r"sigma must be 'median' or a positive finite number, got sigma='mean'"),
        ({"sigma": 0.0}, r"sigma must be 'median' or a positive finite number, got sigma=0.0"),
        ({"sigma": -1}, r"sigma must be 'median' or a positive finite number, got sigma=-1"),
        ({"sigma": math.inf}, r"got sigma=inf"),
        ({"sigma": True}, r"got sigma=True"),
        ({"absent": "skip"}, r"absent must be one of 'paper', 'present', got absent='skip'"),
        ({"num_classes": 0}, r"num_classes must be a positive integer or None, got num_classes=0"),
        ({"num_classes": 2.0}, r"num_classes must be a positive integer or None, got num_classes=2.0"),
        ({"eps": 0}, r"eps must be a positive finite number, got eps=0"),
        ({"conditional": 1}, r"conditional must be True or False, got conditional=1"),
        ({"squared": "yes"}, r"squared must be True or False, got squared='yes'"),
    ],
)
def test_bad_input_is_refused_with_one_line(kwargs, match):
    args = {"h1": H, "y1": Y, "h2": H, "y2": Y} | kwargs
    h1, y1, h2, y2 = (args.pop(k) for k in ("h1", "y1", "h2", "y2"))
    with pytest.raises(ParameterError, match=match) as info:
        itra_match_loss(h1, y1, h2, y2, **args)
    assert "\n" not in str(info.value)


def test_non_finite_features_are_refused_with_median_sigma():
    h = torch.tensor([[0.0], [math.nan], [1.0], [2.0], [3.0]])  # one NaN row, not at the median
    msg = r"sigma='median' needs finite features, got a squared distance of nan in h1 and h2"
    with pytest.raises(ParameterError, match=msg):
        itra_match_loss(h, None, h, None, conditional=False)


# ----------------------------------------------------------------------------- import

_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # what an environment without torch looks like to import
import schedgen
assert "schedgen.losses" not in sys.modules
try:
    import schedgen.losses
except ImportError as exc:
    print(type(exc).__name__, isinstance(exc, ModuleNotFoundError), exc.name)
    print(exc)
"""


def test_import_without_torch_gives_an_install_hint():
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, check=True).stdout
    kind, message = out.splitlines()
    assert kind == "ModuleNotFoundError True torch"
    assert message.startswith("schedgen.losses needs PyTorch, which is not installed (")
    assert message.endswith("then pip install -e '.[torch]'")
