"""``--method dpp``: the exact k-DPP sampler against enumeration, and the method end to end.

Oracles: for N = 6 every k-subset's probability det(L_B) / e_k(λ(L)) is computed by
enumeration (determinants of the 2x2 / 3x3 blocks, e_k as their sum) and 20,000 seeded
draws are compared with it by a χ² test at significance 1e-3 (fixed seeds, so the test
is deterministic; the p-values it gets are printed by -s).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from schedgen.build import BuildConfig, build
from schedgen.cli import app
from schedgen.errors import ParameterError
from schedgen.methods import METHODS
from schedgen.methods._dpp_build import esp_table, inclusion_probabilities, sample_kdpp, spectrum
from schedgen.methods.dpp import check_exact_fits, exact_bytes
from schedgen.store import read_schedule
from toys import one_line_error

runner = CliRunner()
N_DRAWS = 20_000
ALPHA = 1e-3  # the χ² test's significance


def _rbf(X, sigma=1.0):
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2))


def _enumerated(L, k):
    """Every k-subset and det(L_B) / e_k, with e_k = the sum of the k x k principal minors."""
    subsets = list(itertools.combinations(range(len(L)), k))
    dets = np.array([np.linalg.det(L[np.ix_(s, s)]) for s in subsets])
    return subsets, dets / dets.sum()


def _draws(L, k, seed=0, n=N_DRAWS):
    lam, V = spectrum(L)
    T = esp_table(lam, k)
    return [tuple(sample_kdpp(lam, V, k, np.random.default_rng([seed, t]), T).tolist()) for t in range(n)]


@pytest.mark.parametrize("k", [2, 3])
def test_draws_match_enumerated_kdpp(k):
    from scipy.stats import chisquare

    L = _rbf(np.random.default_rng(3).normal(size=(6, 2)))
    subsets, p = _enumerated(L, k)
    counts = dict.fromkeys(subsets, 0)
    for b in _draws(L, k):
        counts[b] += 1  # a draw that is not a sorted k-subset of distinct indices fails here
    obs = np.array([counts[s] for s in subsets])
    pvalue = chisquare(obs, p * N_DRAWS).pvalue
    print(f"k={k}: chi-square p = {pvalue:.3g}")
    assert pvalue > ALPHA


def test_identity_gives_uniform_inclusion():
    from scipy.stats import chisquare

    k = 2
    inc = np.zeros(6)
    for b in _draws(np.eye(6), k):
        inc[list(b)] += 1
    assert chisquare(inc, np.full(6, N_DRAWS * k / 6)).pvalue > ALPHA
    lam, V = spectrum(np.eye(6))
    assert_allclose(inclusion_probabilities(lam, V, k), np.full(6, k / 6), rtol=1e-12)


def test_identical_samples_never_drawn_together():
    X = np.random.default_rng(4).normal(size=(6, 2))
    X[5] = X[1]
    L = _rbf(X)
    for b in _draws(L, 3, n=5_000):
        assert not {1, 5} <= set(b), b


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_inclusion_probabilities_sum_to_k_and_match_enumeration(k):
    L = _rbf(np.random.default_rng(5).normal(size=(6, 2)), sigma=0.7)
    lam, V = spectrum(L)
    inc = inclusion_probabilities(lam, V, k)
    assert_allclose(inc.sum(), k, rtol=1e-12)
    subsets, p = _enumerated(L, k)
    oracle = np.zeros(6)
    for s, q in zip(subsets, p):
        oracle[list(s)] += q
    assert_allclose(inc, oracle, rtol=1e-9)


def test_esp_table_has_no_overflow_for_large_k():
    lam = np.linspace(1e-3, 1e6, 3000)
    T = esp_table(lam, 1000)
    assert np.all(np.isfinite(T)) and np.all(T[:, -1] >= 0)


def test_exact_sampler_limit_is_one_line():
    check_exact_fits(1000, available=exact_bytes(1000))
    with pytest.raises(ParameterError, match=r"N=100000 samples need .* of memory.*dual/Nyström sampler for large N is not implemented"):
        check_exact_fits(100_000, available=10**9)


def test_registered_with_mmd_kernel_options():
    m = METHODS["dpp"]
    assert m.name == "dpp" and m.revision == 1
    assert m.options == {"epochs", "kernel", "bandwidth", "degree", "coef0", "pca", "standardize"}


def _build(tmp_path, **kw):
    return build(BuildConfig(dataset="digits", k=50, method="dpp", epochs=2, out_dir=tmp_path, **kw))


def test_build_digits_cli(tmp_path):
    r = runner.invoke(app, ["build", "--method", "dpp", "--dataset", "digits", "--k", "50", "--epochs", "2",
                            "--out-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    s = read_schedule(out["path"])
    n = s.n_samples
    assert s.method == "dpp" and s.n_epochs == 2 and s.n_batches == 2 * -(-n // 50)
    for b in range(s.n_batches):
        idx = s.batch(b)
        assert len(idx) == 50 and len(np.unique(idx)) == 50 and idx.min() >= 0 and idx.max() < n
    mmd2 = s.batch_arrays["batch_mmd2"]
    assert mmd2.shape == (s.n_batches,) and np.all(np.isfinite(mmd2[:5]))
    for name, value in {"sampler": "exact-spectral", "epochs": 2, "kernel": "rbf", "bandwidth_rule": "median"}.items():
        assert out["params"][name] == value
    # same seed, same bytes (a fresh folder: no cache hit); another seed, another schedule
    again = _build(tmp_path / "again")
    assert again.digest == out["digest"] and not again.cache_hit
    assert np.array_equal(read_schedule(again.path).indices, s.indices)
    other = _build(tmp_path / "seed", seed=1)
    assert other.digest != out["digest"]
    assert _build(tmp_path).cache_hit


def test_cache_key_contains_params(tmp_path):
    a = _build(tmp_path, kernel="poly")
    b = _build(tmp_path, kernel="poly", degree=2)
    assert a.path != b.path and a.params["degree"] == 3 and b.params["degree"] == 2
    assert a.params["kernel"] == "poly" and "bandwidth" not in a.params


@pytest.mark.parametrize("args, needles", [
    (["--solver", "greedy"], ["--solver applies only to --method mmd", "--method dpp"]),
    (["--kernel", "poly", "--bandwidth", "0.5"], ["--bandwidth applies only to --kernel rbf"]),
    (["--degree", "2"], ["--degree applies only to --kernel poly"]),
    (["--bandwidth", "-1"], ["bandwidth"]),
    (["--epochs", "0"], ["epochs"]),
    (["--k", "1438"], ["k"]),
])
def test_bad_options_refused_with_one_line(tmp_path, args, needles):
    r = runner.invoke(app, ["build", "--method", "dpp", "--dataset", "digits", "--out-dir", str(tmp_path), *args])
    one_line_error(r, *needles)


def test_build_past_exact_limit_refused_before_work(tmp_path, monkeypatch):
    import schedgen.methods.dpp as dpp

    monkeypatch.setattr(dpp, "available_memory", lambda: 10**6)
    r = runner.invoke(app, ["build", "--method", "dpp", "--dataset", "digits", "--out-dir", str(tmp_path)])
    one_line_error(r, "N=1437 samples need 49.6 MB", "not implemented")
    assert not list(tmp_path.glob("*.zarr"))


def test_k_above_kernel_rank_refused_with_one_line(tmp_path):
    X = np.ones((20, 4), np.float32)
    X[:3] += np.arange(3, dtype=np.float32)[:, None]  # 3 distinct points: L has rank 3
    np.savez(tmp_path / "few.npz", X=X, y=np.arange(20) % 2)
    r = runner.invoke(app, ["build", "--method", "dpp", "--dataset", f"npz:{tmp_path / 'few.npz'}", "--k", "5",
                            "--out-dir", str(tmp_path)])
    one_line_error(r, "3 numerically positive eigenvalues (of N=20), got k=5")
    assert not list(tmp_path.glob("*.zarr"))


def test_batch_mmd2_is_the_epochs_distinct_prefix_against_dense_oracle(tmp_path):
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features
    from schedgen.kernels import gram, make_kernel

    res = _build(tmp_path)
    s = read_schedule(res.path)
    X = prepare_features(load_dataset("digits"), FeatureSpec(pca=None, standardize=False, seed=0))
    ids = np.arange(len(X))
    K = gram(make_kernel("rbf", bandwidth="median", X=X, seed=0), X, ids, ids)
    per_epoch = s.n_batches // 2
    for b in [0, 1, 2, per_epoch - 1, per_epoch, per_epoch + 1]:  # the prefix restarts with epoch 1
        first = per_epoch * (b // per_epoch)
        A = np.unique(np.concatenate([s.batch(t) for t in range(first, b + 1)]))
        R = np.setdiff1d(ids, A)
        oracle = K[np.ix_(A, A)].mean() - 2 * K[np.ix_(A, R)].mean() + K[np.ix_(R, R)].mean()
        assert_allclose(s.batch_arrays["batch_mmd2"][b], oracle, rtol=1e-6, atol=1e-9)
