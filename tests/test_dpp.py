"""``--method dpp``: the exact and dual k-DPP samplers against enumeration and DPPy, and the
method end to end.

Oracles: for N = 6 (exact) or 7 (dual, L = ΦΦᵀ of rank 4) every k-subset's probability
det(L_B) / e_k(λ(L)) is computed by enumeration (determinants of the k x k blocks, e_k as
their sum) and 20,000 seeded draws are compared with it by a χ² test at significance 1e-3
(fixed seeds, so the test is deterministic; the p-values it gets are printed by -s).
DPPy (a test-only dependency) is the second oracle: its ``sample_exact_k_dpp`` on
``FiniteDPP('likelihood', L=...)`` (exact) and on ``L_gram_factor=Φᵀ`` (its dual mode)
against ours, 10,000 draws each, by a two-sample χ² test (a 2 x C contingency table, bins with fewer than
10 draws in all pooled) at the same significance, and against enumeration.
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
from schedgen.methods._dpp_build import dual_spectrum, esp_table, inclusion_probabilities, sample_kdpp, spectrum
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


def _draws(L, k, seed=0, n=N_DRAWS, *, factor=None):
    lam, V = spectrum(L) if factor is None else dual_spectrum(factor)
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
    with pytest.raises(ParameterError, match=r"N=100000 samples need .* of memory.*pass --approx nystrom:M") as info:
        check_exact_fits(100_000, available=10**9)
    assert "\n" not in str(info.value)


def test_registered_with_mmd_kernel_options():
    m = METHODS["dpp"]
    assert m.name == "dpp" and m.revision == 1
    assert m.options == {"epochs", "kernel", "bandwidth", "degree", "coef0", "pca", "standardize", "approx"}


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
    one_line_error(r, "N=1437 samples need 49.6 MB", "pass --approx nystrom:M")
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


# --------------------------------------------------------------------------- the dual sampler, DPPy


def _factor(n=7, m=4, seed=6):
    return np.random.default_rng([seed, n, m]).normal(size=(n, m))


def test_dual_spectrum_is_the_spectrum_of_the_product():
    Phi = _factor(9, 4)
    lam, V = dual_spectrum(Phi)
    lam_L, _ = spectrum(Phi @ Phi.T)
    assert_allclose(np.sort(lam), np.sort(lam_L)[-4:], rtol=1e-10)  # L's nonzero eigenvalues are C's
    assert np.count_nonzero(lam_L) == 4
    assert_allclose(V.T @ V, np.eye(4), atol=1e-12)  # orthonormal eigenvectors of L
    assert_allclose((V * lam) @ V.T, Phi @ Phi.T, atol=1e-12)
    buf = Phi.copy()
    lam2, V2 = dual_spectrum(buf, overwrite=True)
    assert V2 is buf and V2.tobytes() == V.tobytes() and lam2.tobytes() == lam.tobytes()
    # a rank-deficient factor: the zero eigenvalue's column is zero, never drawn
    Phi3 = np.hstack([Phi, Phi[:, :1]])
    lam3, V3 = dual_spectrum(Phi3)
    assert np.count_nonzero(lam3) == 4 and not V3[:, lam3 == 0].any()


@pytest.mark.parametrize("k", [2, 3])
def test_dual_draws_match_enumerated_kdpp_of_the_factor(k):
    from scipy.stats import chisquare

    Phi = _factor()
    subsets, p = _enumerated(Phi @ Phi.T, k)
    counts = dict.fromkeys(subsets, 0)
    for b in _draws(None, k, seed=1, factor=Phi):
        counts[b] += 1
    obs = np.array([counts[s] for s in subsets])
    pvalue = chisquare(obs, p * N_DRAWS).pvalue
    print(f"dual k={k}: chi-square p = {pvalue:.3g}")
    assert pvalue > ALPHA


N_TWO_SAMPLE = 10_000  # draws on each side of a two-sample test


def _dppy_draws(dpp, k, seed, n=N_TWO_SAMPLE):
    g = np.random.RandomState(seed)  # DPPy's random_state: a seeded RandomState
    return [tuple(sorted(int(i) for i in dpp.sample_exact_k_dpp(k, random_state=g))) for _ in range(n)]


def _two_sample_pvalue(a, b):
    """χ² test of homogeneity of two lists of subsets (bins with < 10 draws in all pooled)."""
    from scipy.stats import chi2_contingency

    bins = sorted(set(a) | set(b))
    table = np.array([[x.count(s) for s in bins] for x in (a, b)])
    small = table.sum(axis=0) < 10
    if small.any():
        table = np.column_stack([table[:, ~small], table[:, small].sum(axis=1)])
    return chi2_contingency(table).pvalue


@pytest.mark.parametrize("k", [2, 3])
def test_exact_sampler_matches_dppy(k):
    from dppy.finite_dpps import FiniteDPP
    from scipy.stats import chisquare

    L = _rbf(np.random.default_rng(3).normal(size=(6, 2)))
    ours = _draws(L, k, seed=2, n=N_TWO_SAMPLE)
    theirs = _dppy_draws(FiniteDPP("likelihood", L=L), k, seed=k)
    subsets, p = _enumerated(L, k)
    p_dppy_enum = chisquare([theirs.count(s) for s in subsets], p * N_TWO_SAMPLE).pvalue
    p_two = _two_sample_pvalue(ours, theirs)
    print(f"exact k={k}: ours vs DPPy p = {p_two:.3g}, DPPy vs enumeration p = {p_dppy_enum:.3g}")
    assert p_two > ALPHA and p_dppy_enum > ALPHA


@pytest.mark.parametrize("k", [2, 3])
def test_dual_sampler_matches_dppy_dual_mode(k):
    from dppy.finite_dpps import FiniteDPP

    Phi = _factor()
    dpp = FiniteDPP("likelihood", L_gram_factor=Phi.T)  # DPPy's factor is d x N: L = ΦᵀΦ in its notation
    assert dpp.L_dual is not None and dpp.L_dual.shape == (4, 4)  # it did take its dual route
    theirs = _dppy_draws(dpp, k, seed=10 + k)
    ours = _draws(None, k, seed=3, n=N_TWO_SAMPLE, factor=Phi)
    p_two = _two_sample_pvalue(ours, theirs)
    print(f"dual k={k}: ours vs DPPy's dual p = {p_two:.3g}")
    assert p_two > ALPHA


def test_two_sample_check_can_fail():
    """The DPPy comparison tells two k-DPPs apart: ours on L against DPPy on another L."""
    from dppy.finite_dpps import FiniteDPP

    L = _rbf(np.random.default_rng(3).normal(size=(6, 2)))
    other = _rbf(np.random.default_rng(4).normal(size=(6, 2)))
    assert _two_sample_pvalue(_draws(L, 2, seed=2, n=5000), _dppy_draws(FiniteDPP("likelihood", L=other), 2, 0, 5000)) < ALPHA


# --------------------------------------------------------------------------- --approx nystrom:M end to end


def _dual(tmp_path, m=200, **kw):
    return build(BuildConfig(dataset="digits", k=50, method="dpp", approx=f"nystrom:{m}", out_dir=tmp_path, **kw))


def test_dual_build_records_its_error_and_has_its_own_key(tmp_path):
    r = _dual(tmp_path, epochs=2)
    s = read_schedule(r.path)
    assert s.n_batches == 2 * 29 and s.n_epochs == 2
    for b in range(s.n_batches):
        idx = s.batch(b)
        assert len(np.unique(idx)) == 50 and idx.min() >= 0 and idx.max() < s.n_samples
    p = s.params
    assert p["sampler"] == "dual-nystrom" and p["approx"] == "nystrom:200" and p["approx_rank"] == 200
    assert set(p["approx_error"]) == {"s_tot_median", "s_tot_max", "frobenius", "rows"}
    assert p["approx_error"]["rows"] == 1437 and 0 < p["approx_error"]["s_tot_median"] <= p["approx_error"]["s_tot_max"] < 0.01
    assert "nystrom200" in r.path.name
    exact = _build(tmp_path / "exact")
    other_m = _dual(tmp_path, m=300, epochs=2)
    assert len({r.path.name, exact.path.name, other_m.path.name}) == 3
    assert len({r.digest, exact.digest, other_m.digest}) == 3
    assert _dual(tmp_path / "again", epochs=2).digest == r.digest  # same inputs, same bytes
    assert _dual(tmp_path, epochs=2).cache_hit


def test_dual_build_error_equals_a_direct_float64_computation(tmp_path):
    """The recorded approx_error against the factor written out in NumPy (float64 RBF,
    eigh's pseudo-inverse square root) on the same k-means landmarks, every row (N < 2000)."""
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features
    from schedgen.kernels.nystrom import EIG_RTOL, kmeans_landmarks

    p = _dual(tmp_path).params
    X = prepare_features(load_dataset("digits"), FeatureSpec(pca=None, standardize=False, seed=0)).astype(np.float64)
    Z = kmeans_landmarks(X.astype(np.float32), 200, seed=0)
    sigma = p["bandwidth"]

    def rbf(A, B):  # float64, by the expansion |a|^2 + |b|^2 - 2ab (a broadcast difference would need 1.4 GB)
        d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T
        return np.exp(-np.maximum(d2, 0) / (2 * sigma**2))

    K_xz, K_zz, K = rbf(X, Z), rbf(Z, Z), rbf(X, X)
    mu, U = np.linalg.eigh(K_zz)
    keep = mu > EIG_RTOL * mu.max()
    Phi = K_xz @ (U[:, keep] / np.sqrt(mu[keep])) @ U[:, keep].T
    rel = np.abs(Phi @ Phi.sum(axis=0) - K.sum(axis=1)) / K.sum(axis=1)
    frob = np.linalg.norm(K - Phi @ Phi.T) / np.linalg.norm(K)
    got = p["approx_error"]
    assert_allclose([got["s_tot_median"], got["s_tot_max"], got["frobenius"]], [np.median(rel), rel.max(), frob],
                    rtol=1e-6)
    assert p["approx_rank"] == int(keep.sum())


def test_dual_batch_mmd2_is_on_the_exact_kernel(tmp_path):
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features
    from schedgen.kernels import gram, make_kernel

    s = read_schedule(_dual(tmp_path, m=60).path)
    X = prepare_features(load_dataset("digits"), FeatureSpec(pca=None, standardize=False, seed=0))
    ids = np.arange(len(X))
    K = gram(make_kernel("rbf", bandwidth="median", X=X, seed=0), X, ids, ids)
    for b in [0, 1, 7, s.n_batches - 1]:
        A = np.unique(np.concatenate([s.batch(t) for t in range(b + 1)]))
        R = np.setdiff1d(ids, A)
        oracle = K[np.ix_(A, A)].mean() - 2 * K[np.ix_(A, R)].mean() + K[np.ix_(R, R)].mean()
        assert_allclose(s.batch_arrays["batch_mmd2"][b], oracle, rtol=1e-6, atol=1e-9)


def test_dual_build_cli_states_the_error(tmp_path):
    r = runner.invoke(app, ["build", "--method", "dpp", "--approx", "Nystrom:200", "--out-dir", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("built ")
    assert lines[1].startswith("  --approx nystrom:200: relative error of the kernel's row sums median ")
    assert "Frobenius" in lines[1] and "on 1437 seeded rows" in lines[1]
    hit = runner.invoke(app, ["build", "--method", "dpp", "--approx", "nystrom:200", "--out-dir", str(tmp_path)])
    assert hit.stdout.startswith("cache hit: ") and "--approx nystrom:200: relative error" in hit.stdout


@pytest.mark.parametrize("args, needles", [
    (["--approx", "nystrom:20"], ["needs M >= k", "got --approx nystrom:20 with k=50"]),
    (["--approx", "nystrom:2000"], ["needs M <= N", "N=1437", "nystrom:2000"]),
    (["--approx", "nystrom:0"], ["approx must be 'nystrom:M' with an integer M >= 1", "'nystrom:0'"]),
    (["--approx", "rff:100"], ["approx must be 'nystrom:M'", "'rff:100'"]),
])
def test_bad_approx_refused_with_one_line(tmp_path, args, needles):
    r = runner.invoke(app, ["build", "--method", "dpp", "--out-dir", str(tmp_path), *args])
    one_line_error(r, *needles)
    assert not list(tmp_path.glob("*.zarr"))


def test_dual_memory_is_linear_in_n():
    """At SVHN's N the exact sampler is refused by its own check; the dual one needs O(N·M)."""
    from types import SimpleNamespace

    ds = SimpleNamespace(n_samples=73_257, n_features=128)
    cfg = BuildConfig(method="dpp", approx="nystrom:500", k=50)
    total = sum(x.n_bytes for x in METHODS["dpp"].memory_needs(cfg, ds, 50))
    assert 73_257 * 500 * 8 < total < 73_257 * 500 * 8 * 3  # Φ dominates; nothing of N²
    big = SimpleNamespace(n_samples=1_000_000, n_features=128)
    assert sum(x.n_bytes for x in METHODS["dpp"].memory_needs(cfg, big, 50)) < 1_000_000 * 500 * 8 * 3


def test_sample_kdpp_refuses_k_above_the_rank():
    """The public sampler itself, not only the build: past the rank it would return det = 0 subsets."""
    from schedgen.methods._dpp_build import sample_kdpp, spectrum

    r = np.random.default_rng([0, 5])
    F = r.normal(size=(6, 2))
    lam, V = spectrum(F @ F.T)
    assert np.count_nonzero(lam) == 2
    assert len(sample_kdpp(lam, V, 2, np.random.default_rng(0))) == 2
    for k in (3, 0):
        with pytest.raises(ParameterError, match=r"1 <= k <= rank\(L\) = 2"):
            sample_kdpp(lam, V, k, np.random.default_rng(0))
