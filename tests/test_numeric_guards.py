"""Numeric guards (issue 10): kernels that overflow float32, that are not PSD, or that are
numerically constant, and a --pca that reduces nothing. Refusals are one ParameterError
line naming the option, raised before the N² pass, with no raw NumPy RuntimeWarning."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedgen.build import BuildConfig, SchedgenWarning, build
from schedgen.cli import app
from schedgen.data import load_dataset
from schedgen.errors import ParameterError
from schedgen.features import FeatureSpec, prepare_features
from schedgen.kernels import (
    RBF,
    Kernel,
    Polynomial,
    WorkingSet,
    block_sums,
    gram,
    is_numerically_constant,
    is_numerically_diagonal,
    kernel_from_params,
    make_kernel,
    median_bandwidth,
    median_sq_distance,
    numerical_degeneracy,
    row_sums,
    sq_norms,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def _runtime_warnings_are_errors():
    """A NumPy RuntimeWarning (overflow, invalid value) anywhere in these tests fails them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def _normal(n=200, d=16, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=(n, d)) * scale).astype(np.float32)


def _npz(tmp_path, X, name="d.npz"):
    p = tmp_path / name
    np.savez(p, X=X, y=np.arange(len(X)) % 3)
    return f"npz:{p}"


def _cli(tmp_path, *args):
    r = runner.invoke(app, ["build", "--k", "20", "--out-dir", str(tmp_path / "out"), *map(str, args)])
    return r, r.stderr.strip().splitlines()


def _assert_one_error_line(tmp_path, r, lines, *needles):
    assert r.exit_code == 1, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # no "warning: overflow ..." line either
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not list(Path(tmp_path).glob("out/*.zarr"))


@pytest.fixture
def no_row_sums(monkeypatch):
    """Fail the test if a build reaches the N² pass."""
    import schedgen.methods._mmd_build as mmd

    def refuse(*a, **kw):
        raise AssertionError("the row-sum pass ran before the refusal")

    monkeypatch.setattr(mmd, "row_sums", refuse)


# ---------------------------------------------------------------- kernels: overflow


def _every_routine(kernel, X):
    idx = np.arange(len(X))
    return [
        lambda: row_sums(kernel, X),
        lambda: kernel.block(X, X),
        lambda: gram(kernel, X, idx[:5], idx),
        lambda: block_sums(kernel, X, idx[:5], idx),
        lambda: WorkingSet(kernel, X),
    ]


def test_rbf_refuses_features_that_overflow_float32():
    X = _normal(scale=1e30)
    kernel = RBF(median_bandwidth(X))  # the median heuristic itself runs in float64: fine
    for call in _every_routine(kernel, X):
        with pytest.raises(ParameterError, match=r"features overflow float32 in the RBF kernel's squared distances: "
                                                 r"expected every \|\|x\|\|\^2 <= 3\.4e\+38, got max \|\|x\|\|\^2 = .*e\+61 "
                                                 r"\(max \|x\| = .*e\+30\); rescale the features .*--standardize"):
            call()
    # the same features in float64 fit
    assert np.isfinite(row_sums(kernel, X.astype(np.float64)).s).all()
    # the squared norms overflow into inf without a NumPy warning (the range check reports it)
    assert np.isinf(sq_norms(X)).any()


def test_rbf_refuses_a_bandwidth_that_overflows_and_quotes_the_smallest_that_fits():
    X = _normal()
    for call in _every_routine(RBF(1e-30), X):
        with pytest.raises(ParameterError, match=r"bandwidth is too small for these features: .* expected a bandwidth "
                                                 r">= .*, got 1e-30; pass --bandwidth median or a larger --bandwidth"):
            call()
    with pytest.raises(ParameterError) as info:
        RBF(1e-30).check_range(X)
    low = float(re.search(r"bandwidth >= (\S+),", str(info.value)).group(1))
    RBF(low).check_range(X)  # the quoted bound holds
    s = row_sums(RBF(low), X).s
    assert np.isfinite(s).all()
    with pytest.raises(ParameterError, match="bandwidth is too small"):
        RBF(low / 2).check_range(X)


def test_polynomial_refuses_values_that_overflow_float32():
    X = _normal()
    for kernel, needle in [
        (Polynomial(500), r"reaches .*e\+\d+ on these features \(degree=500, coef0=1,"),
        (Polynomial(3, coef0=1e30), r"reaches 1e\+90 on these features \(degree=3, coef0=1e\+30,"),
    ]:
        for call in _every_routine(kernel, X):
            with pytest.raises(ParameterError, match=r"polynomial kernel values overflow float32: \(x\.y/16 \+ coef0\)\^degree "
                                                     + needle + r".*expected at most 3\.4e\+38; lower --degree"):
                call()
    with pytest.raises(ParameterError) as info:
        Polynomial(3, coef0=1e30).check_range(X)
    room = float(re.search(r"lower --coef0 \(at most (\S+) with degree 3\)", str(info.value)).group(1))
    Polynomial(3, coef0=room * 0.99).check_range(X)
    with pytest.raises(ParameterError) as info:
        Polynomial(500).check_range(X)
    assert "--bandwidth" not in str(info.value)  # advice names options of the poly kernel only
    top = int(re.search(r"lower --degree \(at most (\d+) with", str(info.value)).group(1))
    Polynomial(top).check_range(X)
    with pytest.raises(ParameterError, match="overflow float32"):
        Polynomial(top + 1).check_range(X)
    # huge features overflow even at degree 1, whatever coef0
    with pytest.raises(ParameterError, match=r"overflow float32: .*rescale the features \(e\.g\. --standardize\)"):
        row_sums(Polynomial(3, coef0=0.0), _normal(scale=1e30))


def test_row_sums_refuse_non_finite_sums_of_any_kernel():
    """The last guard: a kernel whose values overflow without check_range knowing."""

    @dataclass(frozen=True)
    class Overflowing(Kernel):
        name = "overflowing"

        @property
        def nonnegative(self):
            return True

        def params(self):
            return {"kernel": self.name}

        def diag(self, X):
            return np.ones(len(X))

        def _lhs(self, X, sq):
            return X

        def _rhs(self, X, sq):
            return X

        def _finish(self, tile, scratch, xp):
            tile[...] = np.inf

    with pytest.raises(ParameterError, match=r"kernel row sums must be finite, got 200 NaN or infinite values"):
        row_sums(Overflowing(), _normal())


def test_median_heuristic_refuses_float64_overflow():
    X = np.random.default_rng(1).normal(size=(30, 4)) * 1e200
    with pytest.raises(ParameterError, match=r"features overflow float64 in the squared distances of the median heuristic"):
        median_sq_distance(X)


# ---------------------------------------------------------------- kernels: PSD


@pytest.mark.parametrize("coef0", [-1, -1e-9, -0.5])
def test_polynomial_kernel_must_be_psd(coef0):
    msg = rf"coef0 must be >= 0: with coef0 < 0 the polynomial kernel is not positive semi-definite .*got {float(coef0)!r}"
    with pytest.raises(ParameterError, match=msg):
        Polynomial(3, coef0=coef0)
    with pytest.raises(ParameterError, match=msg):
        make_kernel("poly", degree=2, coef0=coef0)
    with pytest.raises(ParameterError, match=msg):
        kernel_from_params({"kernel": "poly", "degree": 1, "coef0": coef0, "scale": None})


def test_the_psd_rule_is_the_right_one():
    """coef0 >= 0: PSD Gram matrices; coef0 < 0: a data set with a negative eigenvalue
    (the counterexamples of Polynomial's docstring)."""
    X = _normal(60, 8).astype(np.float64)
    for d in (1, 2, 3, 5):
        for c in (0.0, 0.3, 2.0):
            assert np.linalg.eigvalsh(Polynomial(d, coef0=c).block(X, X)).min() > -1e-9 * d
    c = -0.5
    origin = np.zeros((1, 2))
    assert (0.5 * (origin @ origin.T) + c) ** 3 < 0  # odd degree: K(0, 0) = c^d < 0
    Y = np.array([[1.0, 0.0], [0.0, 1.0]])  # scale 1/2: s|x|^2 = 0.5 = -c
    G = (0.5 * Y @ Y.T + c) ** 2
    assert np.linalg.eigvalsh(G).min() < 0  # even degree: [[0, a], [a, 0]]


# ---------------------------------------------------------------- kernels: constant / diagonal


def test_numerical_degeneracy():
    X = _normal()
    assert numerical_degeneracy(RBF(median_bandwidth(X)), X) is None
    assert numerical_degeneracy(RBF(1e30), X) == "constant"
    assert is_numerically_constant(RBF(1e30), X) and not is_numerically_diagonal(RBF(1e30), X)
    assert numerical_degeneracy(RBF(1e4), X) == "constant"  # 2(1 - K) ~ 3e-7
    assert numerical_degeneracy(RBF(1e2), X) is None
    assert numerical_degeneracy(RBF(0.01), X) == "diagonal"
    assert is_numerically_diagonal(RBF(0.01), X) and not is_numerically_constant(RBF(0.01), X)
    assert numerical_degeneracy(Polynomial(3), X) is None
    assert numerical_degeneracy(Polynomial(3, coef0=1e9), X) == "constant"
    assert numerical_degeneracy(Polynomial(60), X) == "diagonal"
    assert numerical_degeneracy(RBF(1.0), X[:1]) is None


# ---------------------------------------------------------------- features: --pca


@pytest.mark.parametrize("pca", [64, 65, 1000])
def test_pca_at_or_above_the_feature_count_is_refused(tmp_path, pca):
    ds = load_dataset(_npz(tmp_path, _normal(50, 64)))
    with pytest.raises(ParameterError, match=rf"--pca must be below the number of features \(64\), got {pca}"):
        prepare_features(ds, FeatureSpec(pca=pca))
    assert prepare_features(ds, FeatureSpec(pca=63)).shape == (50, 63)
    assert prepare_features(ds, FeatureSpec(pca=0)).shape == (50, 64)


def test_pca_projection_that_overflows_float32_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.choice([-1.0, 1.0], size=200) * 3e38  # finite float32; (t, t) projects to sqrt(2) t
    X = np.stack([t, t, rng.normal(size=200)], axis=1).astype(np.float32)
    ds = load_dataset(_npz(tmp_path, X))
    with pytest.raises(ParameterError, match=r"features overflow float32 after the PCA projection \(--pca 1\): "
                                             r"expected values within \+-3\.4e\+38, got 200 beyond it"):
        prepare_features(ds, FeatureSpec(pca=1))


# ---------------------------------------------------------------- builds through the CLI


def test_cli_refuses_features_that_overflow(tmp_path, no_row_sums):
    ds = _npz(tmp_path, _normal(scale=1e30))
    r, lines = _cli(tmp_path, "--dataset", ds)
    _assert_one_error_line(tmp_path, r, lines, "features overflow float32", "max |x| = ", "--standardize")
    r, lines = _cli(tmp_path, "--dataset", ds, "--kernel", "poly")
    _assert_one_error_line(tmp_path, r, lines, "polynomial kernel values overflow float32", "--standardize")


def test_standardize_fixes_features_that_overflow(tmp_path):
    r, lines = _cli(tmp_path, "--dataset", _npz(tmp_path, _normal(scale=1e30)), "--standardize", "-q")
    assert r.exit_code == 0 and not lines, r.stderr


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--bandwidth", "1e-30"], ["bandwidth is too small", "got 1e-30", "--bandwidth median"]),
        (["--kernel", "poly", "--coef0", "1e30"], ["polynomial kernel values overflow float32", "coef0=1e+30", "lower --coef0"]),
        (["--kernel", "poly", "--degree", "500"], ["polynomial kernel values overflow float32", "degree=500", "lower --degree"]),
    ],
)
def test_cli_refuses_parameters_that_overflow(tmp_path, no_row_sums, args, needles):
    r, lines = _cli(tmp_path, "--dataset", _npz(tmp_path, _normal()), *args)
    _assert_one_error_line(tmp_path, r, lines, *needles)
    if "poly" in args:
        assert "--bandwidth" not in lines[0]


def test_cli_refuses_a_kernel_that_is_not_psd_before_preparing_features(tmp_path, monkeypatch):
    import schedgen.methods._mmd_build as mmd

    monkeypatch.setattr(mmd, "cached_features", lambda *a, **kw: pytest.fail("features were prepared"))
    r, lines = _cli(tmp_path, "--dataset", _npz(tmp_path, _normal()), "--kernel", "poly", "--coef0", "-1")
    _assert_one_error_line(tmp_path, r, lines, "coef0 must be >= 0", "not positive semi-definite", "got -1.0")


def test_cli_refuses_pca_at_the_feature_count(tmp_path):
    r, lines = _cli(tmp_path, "--dataset", _npz(tmp_path, _normal(100, 64)), "--pca", "64")
    _assert_one_error_line(tmp_path, r, lines, "--pca must be below the number of features (64), got 64")


@pytest.mark.parametrize(
    "args, kind, advice, not_advice",
    [
        (["--bandwidth", "1e30"], "numerically constant", "--bandwidth median or a smaller --bandwidth", None),
        (["--bandwidth", "0.01"], "numerically diagonal", "--bandwidth median or a larger --bandwidth", None),
        (["--kernel", "poly", "--coef0", "1e9"], "numerically constant", "lower --coef0", "--bandwidth"),
        (["--kernel", "poly", "--degree", "60"], "numerically diagonal", "lower --degree or raise --coef0", "--bandwidth"),
    ],
)
def test_cli_warns_about_a_degenerate_kernel_naming_its_own_options(tmp_path, args, kind, advice, not_advice):
    r, lines = _cli(tmp_path, "--dataset", _npz(tmp_path, _normal()), "-q", *args)
    assert r.exit_code == 0, r.stderr
    assert len(lines) == 1 and lines[0].startswith("warning: the kernel is " + kind), lines
    assert advice in lines[0] and (not_advice is None or not_advice not in lines[0]), lines[0]


def test_constant_kernel_warns_like_a_diagonal_one(tmp_path):
    ds = _npz(tmp_path, _normal())
    with pytest.warns(SchedgenWarning, match=r"numerically constant .*--bandwidth median or a smaller --bandwidth"):
        r = build(BuildConfig(dataset=ds, k=20, bandwidth=1e30, out_dir=tmp_path))
    assert len(r.warnings) == 1 and "numerically constant" in r.warnings[0]
    # mostly identical samples: the data, not the kernel, is constant (the fallback warns)
    X = np.zeros((40, 3), dtype=np.float32)
    X[:3] = np.eye(3)
    with pytest.warns(SchedgenWarning) as caught:
        r = build(BuildConfig(dataset=_npz(tmp_path, X, "same.npz"), k=10, out_dir=tmp_path))
    assert not any("numerically constant" in str(w.message) for w in caught)
    assert math.isclose(r.params["bandwidth"], 1.0)
