"""End-to-end MMD and learn2mix builds: features, cache, determinism, plots, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.testing import assert_allclose
import pytest
from typer.testing import CliRunner

from schedgen.build import BuildConfig, SchedgenWarning, build
from schedgen.data import load_dataset
from schedgen.errors import ParameterError
from schedgen.evaluate import prefix_mmd2
from schedgen.features import FeatureSpec, pca_basis, prepare_features
from schedgen.kernels import RBF, row_sums
from schedgen.store import read_schedule
from schedgen.cli import app

runner = CliRunner()


def _npz(tmp_path, X, y, name="d.npz", **extra):
    p = tmp_path / name
    np.savez(p, X=X, y=y, **extra)
    return f"npz:{p}"


# ------------------------------------------------------------------ features


def test_pixels_scaled_and_npz_used_as_given(tmp_path):
    digits = load_dataset("digits")
    F = prepare_features(digits, FeatureSpec(pca=0))
    np.testing.assert_allclose(F, digits.X / 16.0, rtol=1e-7)
    assert F.min() >= 0 and F.max() <= 1
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32) * 100
    ds = load_dataset(_npz(tmp_path, X, np.arange(40) % 2))
    np.testing.assert_array_equal(prepare_features(ds), X)


def test_pca_matches_a_float64_svd_reference():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(300, 20)) * np.linspace(5, 0.1, 20)).astype(np.float32)
    mean, axes = pca_basis(X, 4, seed=0)
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Vt[:4].T
    # same subspace and, after the documented sign rule, the same vectors
    for j in range(4):
        assert abs(abs(axes[:, j] @ ref[:, j]) - 1) < 1e-10
        assert axes[np.argmax(np.abs(axes[:, j])), j] > 0


def test_pca_blocks_and_subsample_match_a_float64_reference():
    """Several accumulation blocks and a seeded subsample (fit_rows < n): the mean and the
    axes equal a float64 SVD of exactly the subsampled rows; the input is not modified."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 12)) * np.linspace(4, 0.2, 12) + 3.0
    before = X.copy()
    mean, axes = pca_basis(X, 3, seed=7, fit_rows=200, block_rows=23)
    assert X.tobytes() == before.tobytes()
    rows = np.sort(np.random.default_rng([7, 0x504341]).choice(500, size=200, replace=False))
    S = X[rows]
    assert_allclose(mean, S.mean(0), rtol=0, atol=1e-12)
    _, _, Vt = np.linalg.svd(S - S.mean(0), full_matrices=False)
    for j in range(3):
        assert abs(abs(axes[:, j] @ Vt[j]) - 1) < 1e-10
    # a transform is applied to the rows before fitting
    m2, a2 = pca_basis(X, 3, seed=7, fit_rows=200, block_rows=23, transform=lambda b: 2.0 * b)
    assert_allclose(m2, 2 * mean, rtol=1e-12)
    assert_allclose(np.abs(a2), np.abs(axes), rtol=0, atol=1e-9)


def test_pca_default_and_determinism(tmp_path):
    X = np.random.default_rng(2).normal(size=(500, 300)).astype(np.float32)
    ds = load_dataset(_npz(tmp_path, X, np.arange(500) % 3))
    a = prepare_features(ds)  # > 256 dims: default 128
    b = prepare_features(ds)
    assert a.shape == (500, 128) and a.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    assert prepare_features(ds, FeatureSpec(pca=0)).shape == (500, 300)
    assert prepare_features(ds, FeatureSpec(pca=16)).shape == (500, 16)
    with pytest.raises(ParameterError, match="--pca must be a non-negative integer"):
        prepare_features(ds, FeatureSpec(pca=-1))


def test_standardize_is_opt_in(tmp_path):
    X = np.random.default_rng(3).normal(loc=5, scale=3, size=(200, 6)).astype(np.float32)
    X[:, 2] = 7.0  # a constant column stays finite
    ds = load_dataset(_npz(tmp_path, X, np.arange(200) % 2))
    S = prepare_features(ds, FeatureSpec(pca=0, standardize=True))
    assert np.isfinite(S).all()
    np.testing.assert_allclose(S.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.delete(S.std(0), 2), 1, rtol=1e-4)


# ------------------------------------------------------------------ evaluation


def _direct_mmd2(X, sigma, order, offsets):
    X = X.astype(np.float64)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2 / (2 * sigma**2))
    out = []
    n = len(X)
    for t in range(len(offsets) - 1):
        A = np.zeros(n, bool)
        A[order[: offsets[t + 1]]] = True
        a, b = A.sum(), n - A.sum()
        if b == 0:
            out.append(np.nan)
            continue
        out.append(K[A][:, A].sum() / a**2 - 2 * K[A][:, ~A].sum() / (a * b) + K[~A][:, ~A].sum() / b**2)
    return np.array(out)


def test_prefix_mmd2_equals_its_definition():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 8))
    kernel = RBF(2.0)
    s_tot, _ = row_sums(kernel, X)
    order = rng.permutation(150).astype(np.int64)
    offsets = np.array([0, 20, 40, 60, 100, 140, 150])
    got = prefix_mmd2(X, kernel, order, offsets, s_tot)
    ref = _direct_mmd2(X, 2.0, order, offsets)
    np.testing.assert_allclose(got[:-1], ref[:-1], rtol=1e-9)
    assert np.isnan(got[-1])


# ------------------------------------------------------------------ MMD builds


@pytest.fixture(scope="module")
def subset_npz(tmp_path_factory):
    """A 400-sample digits subset as an npz dataset (fast MMD builds)."""
    d = load_dataset("digits")
    rows = np.random.default_rng(0).choice(d.n_samples, 400, replace=False)
    p = tmp_path_factory.mktemp("data") / "digits400.npz"
    np.savez(p, X=d.X[rows] / 16.0, y=d.y[rows])
    return f"npz:{p}"


@pytest.mark.parametrize("solver", ["lp", "greedy", "swap"])
def test_mmd_schedule_is_a_permutation_and_deterministic(tmp_path, subset_npz, solver):
    cfg = BuildConfig(dataset=subset_npz, k=32, method="mmd", solver=solver, out_dir=tmp_path)
    r = build(cfg)
    s = read_schedule(r.path)
    np.testing.assert_array_equal(np.sort(s.indices), np.arange(400))
    sizes = np.diff(s.batch_offsets)
    assert sizes.tolist() == [32] * 12 + [16]  # the last batch is short by design
    assert s.params["solver"] == solver and s.params["kernel"] == "rbf"
    assert s.params["bandwidth"] > 0 and s.params["bandwidth_rule"] == "median"
    again = build(BuildConfig(dataset=subset_npz, k=32, method="mmd", solver=solver, out_dir=tmp_path, force=True))
    assert again.digest == r.digest and not again.cache_hit
    # per-batch MMD^2 as stored equals its definition on the fitted features
    X = np.load(subset_npz[4:])["X"].astype(np.float32)
    ref = _direct_mmd2(X, s.params["bandwidth"], s.indices, s.batch_offsets)
    np.testing.assert_allclose(s.batch_arrays["batch_mmd2"][:-1], ref[:-1], rtol=2e-4)
    assert np.isnan(s.batch_arrays["batch_mmd2"][-1])


def test_mmd_beats_random_order_on_mean_mmd2(tmp_path, subset_npz):
    r = build(BuildConfig(dataset=subset_npz, k=32, method="mmd", solver="swap", out_dir=tmp_path))
    s = read_schedule(r.path)
    X = np.load(subset_npz[4:])["X"].astype(np.float32)
    order = np.random.default_rng(0).permutation(400)
    rand = _direct_mmd2(X, s.params["bandwidth"], order, s.batch_offsets)
    assert np.nanmean(s.batch_arrays["batch_mmd2"]) < 0.5 * np.nanmean(rand)


def test_row_sums_are_cached_across_k_and_solver(tmp_path, subset_npz, monkeypatch):
    import schedgen.methods._mmd_build as mmd

    calls = []
    real = mmd.row_sums
    monkeypatch.setattr(mmd, "row_sums", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    build(BuildConfig(dataset=subset_npz, k=32, method="mmd", solver="greedy", out_dir=tmp_path))
    assert len(calls) == 1
    build(BuildConfig(dataset=subset_npz, k=20, method="mmd", solver="greedy", out_dir=tmp_path))
    build(BuildConfig(dataset=subset_npz, k=20, method="mmd", solver="lp", out_dir=tmp_path))
    assert len(calls) == 1  # the N^2 pass ran once
    build(BuildConfig(dataset=subset_npz, k=20, method="mmd", solver="lp", bandwidth=3.0, out_dir=tmp_path))
    assert len(calls) == 2  # another kernel: another pass


def test_row_sums_cache_follows_the_features_bytes(tmp_path, monkeypatch):
    """Same dataset, feature parameters and kernel, other features (the PCA subsample
    depends on the seed, which the fingerprint and parameters do not carry): no hit."""
    import schedgen.methods._mmd_build as mmd

    calls = []
    real = mmd.row_sums
    monkeypatch.setattr(mmd, "row_sums", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    rng = np.random.default_rng(3)
    X1 = rng.normal(size=(50, 4)).astype(np.float32)
    X2 = X1.copy()
    X2[7, 1] += 1.0
    kw = dict(fingerprint="f" * 64, feature_params={"pca": 4, "standardize": False}, cache_dir=tmp_path)
    s1, _ = mmd.cached_row_sums(RBF(1.0), X1, **kw)
    s2, _ = mmd.cached_row_sums(RBF(1.0), X2, **kw)
    assert len(calls) == 2
    assert not np.array_equal(s1, s2)
    s1_again, _ = mmd.cached_row_sums(RBF(1.0), X1, **kw)
    assert len(calls) == 2 and s1_again.tobytes() == s1.tobytes()


def test_paper_coefficients_change_the_schedule(tmp_path, subset_npz):
    a = build(BuildConfig(dataset=subset_npz, k=32, method="mmd", solver="lp", out_dir=tmp_path))
    b = build(BuildConfig(dataset=subset_npz, k=32, method="mmd", solver="lp", paper_coefficients=True, out_dir=tmp_path))
    assert a.path != b.path and a.digest != b.digest
    assert read_schedule(b.path).params["coefficients"] == "paper"


def test_polynomial_kernel_build(tmp_path, subset_npz):
    r = build(BuildConfig(dataset=subset_npz, k=40, method="mmd", kernel="poly", degree=3, coef0=0.5, solver="greedy", out_dir=tmp_path))
    s = read_schedule(r.path)
    assert s.params["kernel"] == "poly" and s.params["degree"] == 3
    np.testing.assert_array_equal(np.sort(s.indices), np.arange(400))


def test_constant_dataset_warns_and_follows_index_order(tmp_path):
    ds = _npz(tmp_path, np.ones((30, 3)), np.arange(30) % 2)
    with pytest.warns(SchedgenWarning, match="identical"):
        r = build(BuildConfig(dataset=ds, k=7, method="mmd", out_dir=tmp_path))
    np.testing.assert_array_equal(read_schedule(r.path).indices, np.arange(30))


def test_median_bandwidth_fallback_warns(tmp_path):
    X = np.zeros((40, 3), dtype=np.float32)
    X[:3] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # 37 of 40 rows identical: median distance 0
    y = np.arange(40) % 2
    with pytest.warns(SchedgenWarning, match=r"median bandwidth falls back to sigma=1\.0"):
        r = build(BuildConfig(dataset=_npz(tmp_path, X, y), k=10, out_dir=tmp_path))
    assert r.params["bandwidth"] == 1.0 and any("falls back" in w for w in r.warnings)


def test_diagonal_kernel_warns(tmp_path, subset_npz):
    with pytest.warns(SchedgenWarning, match="numerically diagonal"):
        build(BuildConfig(dataset=subset_npz, k=50, method="mmd", bandwidth=0.01, solver="greedy", out_dir=tmp_path))


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--bandwidth", "0"], "bandwidth"),
        (["--bandwidth", "-2"], "bandwidth"),
        (["--bandwidth", "wide"], "bandwidth"),
        (["--kernel", "poly", "--degree", "0"], "degree"),
        (["--kernel", "laplace"], "laplace"),
        (["--solver", "magic"], "unknown solver 'magic'"),
        (["--device", "tpu"], "tpu"),
        (["--device", "cuda"], "cuda"),
    ],
)
def test_bad_mmd_options_give_one_line(tmp_path, subset_npz, args, needle):
    r = _cli("build", "--dataset", subset_npz, "--k", "32", "--out-dir", tmp_path, *args)
    assert r.exit_code == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not list(Path(tmp_path).glob("*.zarr"))


def test_default_method_is_mmd_and_json(tmp_path, subset_npz):
    r = _cli("build", "--dataset", subset_npz, "--k", "50", "--out-dir", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["method"] == "mmd" and d["n_batches"] == 8 and not d["cache_hit"]


# ------------------------------------------------------------------ plots and learn2mix via the CLI


def test_plot_mmd_and_learn2mix(tmp_path, subset_npz):
    from PIL import Image

    m = json.loads(_cli("build", "--dataset", subset_npz, "--k", "40", "--solver", "swap", "--out-dir", tmp_path, "--json").stdout)
    r = _cli("plot", m["path"], "-o", tmp_path / "m.png", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schedule_mean_mmd2"] < d["random_mean_mmd2"]
    assert Image.open(tmp_path / "m.png").size[0] > 100
    assert _cli("plot", m["path"], "-o", tmp_path / "m2.png", "--no-baseline").exit_code == 0

    l2m = json.loads(_cli("build", "--dataset", subset_npz, "--k", "40", "--method", "learn2mix", "--epochs", "4",
                          "--mixing-rate", "0.5", "--out-dir", tmp_path, "--json").stdout)
    assert l2m["n_epochs"] == 4 and l2m["n_batches"] == 40
    r = _cli("plot", l2m["path"], "-o", tmp_path / "l.png")
    assert r.exit_code == 0, r.stderr
    assert Image.open(tmp_path / "l.png").size[0] > 100

    rnd = json.loads(_cli("build", "--dataset", subset_npz, "--k", "40", "--method", "random", "--out-dir", tmp_path, "--json").stdout)
    r = _cli("plot", rnd["path"], "-o", tmp_path / "r.png")
    assert r.exit_code == 1 and "mmd and learn2mix" in r.stderr


@pytest.mark.parametrize("rate", ["0", "1.5", "-0.1"])
def test_learn2mix_bad_mixing_rate(tmp_path, rate):
    r = _cli("build", "--method", "learn2mix", "--k", "50", "--mixing-rate", rate, "--out-dir", tmp_path)
    assert r.exit_code == 1 and "mixing rate must be in (0, 1]" in r.stderr


def test_learn2mix_kmeans_groups(tmp_path, subset_npz):
    r = build(BuildConfig(dataset=subset_npz, k=40, method="learn2mix", epochs=2, groups="kmeans:4", out_dir=tmp_path))
    s = read_schedule(r.path)
    assert s.params["groups"] == "kmeans:4"
    assert s.epoch_arrays["class_proportions"].shape == (2, 4)
    assert np.all(np.diff(s.batch_offsets) == 40)


def test_learn2mix_npz_groups_with_any_ids(tmp_path):
    """An npz ``groups`` array drives the mix (not the labels), whatever its integer ids;
    α's columns follow the sorted distinct ids, recorded as ``group_ids``."""
    d = load_dataset("digits")
    X, y = d.X[:300], d.y[:300]
    groups = np.where(y < 3, 7, np.where(y < 6, 5, -2))  # three groups, ids -2, 5, 7
    path = _npz(tmp_path, X, y, groups=groups)
    r = build(BuildConfig(dataset=path, k=30, method="learn2mix", epochs=2, mixing_rate=0.5, out_dir=tmp_path))
    s = read_schedule(r.path)
    assert s.params["groups"] == "dataset" and s.params["group_ids"] == [-2, 5, 7]
    alpha = s.epoch_arrays["class_proportions"]
    assert alpha.shape == (2, 3)
    np.testing.assert_allclose(alpha[0], [np.mean(groups == g) for g in (-2, 5, 7)], rtol=0, atol=1e-15)
    # every batch holds the largest-remainder share of each group for its epoch's alpha
    from schedgen.methods.learn2mix import largest_remainder_counts as largest_remainder

    for e in range(2):
        want = largest_remainder(alpha[e], 30)
        for b in s.epoch_batches(e):
            got = [int(np.sum(groups[s.batch(b)] == g)) for g in (-2, 5, 7)]
            assert got == list(want)


def test_learn2mix_batches_per_epoch_option(tmp_path):
    default = json.loads(_cli("build", "--method", "learn2mix", "--k", "50", "--epochs", "2", "--out-dir", tmp_path,
                              "--json").stdout)
    assert default["n_batches"] == 2 * 29  # ceil(1437 / 50)
    r = _cli("build", "--method", "learn2mix", "--k", "50", "--epochs", "2", "--batches-per-epoch", "10",
             "--out-dir", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["n_batches"] == 20 and d["params"]["batches_per_epoch"] == 10 and d["path"] != default["path"]
    bad = _cli("build", "--method", "learn2mix", "--k", "50", "--batches-per-epoch", "0", "--out-dir", tmp_path)
    assert bad.exit_code == 1 and bad.stderr.count("\n") == 1 and "batches per epoch" in bad.stderr
