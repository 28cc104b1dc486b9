"""--method submodular: SMDL's greedy, checked against plain-loop oracles."""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from schedgen.cli import app
from schedgen.kernels import RBF, Polynomial, row_sums
from schedgen.methods._submodular import WEIGHTS, candidate_count, greedy_batch, soft_features, submodular_schedule
from schedgen.store import read_schedule

runner = CliRunner()


def instance(seed, r=9, d=4):
    g = np.random.default_rng(seed)
    X = g.normal(size=(r, d))
    U = g.uniform(0.1, 2.0, size=r)
    MC = -np.sqrt(((X - g.normal(size=d)) ** 2).sum(axis=1))
    return X, U, MC, soft_features(X)


def F(seq, X, U, MC, Phi, w=WEIGHTS):
    """The greedy's objective on a pick sequence, as plain loops in float64."""
    total = 0.0
    for i, s in enumerate(seq):
        r = 0.0
        if i > 0:
            r = min(math.sqrt(sum((X[s, c] - X[t, c]) ** 2 for c in range(X.shape[1]))) for t in seq[:i])
        total += w[0] * U[s] + w[1] * r + w[2] * MC[s]
    fm = 0.0
    for c in range(Phi.shape[1]):
        fm += math.sqrt(sum(Phi[s, c] for s in seq))
    return total + w[3] * fm


@pytest.mark.parametrize("seed", range(4))
def test_gain_is_the_difference_of_F(seed):
    X, U, MC, Phi = instance(seed)
    trace = []
    picks = greedy_batch(X, U, MC, Phi, 5, trace=trace)
    for t, gains in enumerate(trace):
        S = list(picks[:t])
        for x in range(len(U)):
            if x in S:
                assert gains[x] == -np.inf
            else:  # tolerance: float64 rounding of a handful of sums
                assert_allclose(gains[x], F(S + [x], X, U, MC, Phi) - F(S, X, U, MC, Phi), rtol=1e-10, atol=1e-12)
        assert picks[t] == int(np.argmax(gains))


@pytest.mark.parametrize("seed", range(8))
def test_monotone_terms_reach_one_minus_one_over_e_of_the_optimum(seed):
    X, U, MC, Phi = instance(seed, r=10)
    w = (1.0, 0.0, 0.0, 1.0)  # U and FM only: monotone submodular
    m = 4
    best = max(F(list(c), X, U, MC, Phi, w) for c in itertools.combinations(range(10), m))
    got = F(list(greedy_batch(X, U, MC, Phi, m, weights=w)), X, U, MC, Phi, w)
    assert got >= (1 - 1 / math.e) * best


def authors_pool_greedy(X, U, MC, Phi, m, w=WEIGHTS):
    """lib/samplers/submodular.py's get_subset_indices on a fixed pool (in its order),
    re-derived: each term's vector divided by its sum, NaN-argmax included."""
    index_set = list(range(len(U)))
    subset = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(m):
            u = np.array([w[0] * U[i] for i in index_set])
            if subset:
                r = np.array([w[1] * min(np.linalg.norm(X[i] - X[s]) for s in subset) for i in index_set])
            else:
                r = np.array(0.0)
            md = np.array([w[2] * MC[i] for i in index_set])
            acc = Phi[subset].sum(axis=0) if subset else np.zeros(Phi.shape[1])
            fm = np.array([w[3] * np.sqrt(acc + Phi[i]).sum() for i in index_set])
            scores = u / u.sum() + r / r.sum() + md / md.sum() + fm / fm.sum()
            best = int(np.argmax(scores))
            subset.append(index_set.pop(best))
    return subset


@pytest.mark.parametrize("seed", range(6))
def test_normalize_matches_the_authors_code(seed):
    X, U, MC, Phi = instance(seed, r=12)
    assert_array_equal(greedy_batch(X, U, MC, Phi, 6, normalize=True), authors_pool_greedy(X, U, MC, Phi, 6))


def toy(n=53, d=5, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)).astype(np.float32), g.integers(0, 3, size=n)


def test_every_epoch_a_permutation_batches_exact():
    X, y = toy()
    k, E = 7, 3
    r = submodular_schedule(X, y, k, epochs=E, seed=1)
    per = -(-53 // k)
    assert_array_equal(r.epoch_offsets, np.arange(E + 1) * per)
    sizes = np.diff(r.batch_offsets)
    assert_array_equal(sizes, np.tile([k] * (per - 1) + [53 - k * (per - 1)], E))
    for e in range(E):
        assert_array_equal(np.sort(r.indices[e * 53 : (e + 1) * 53]), np.arange(53))


def test_same_seed_same_bytes_normalize_differs():
    X, y = toy()
    a = submodular_schedule(X, y, 6, epochs=2, seed=3)
    b = submodular_schedule(X, y, 6, epochs=2, seed=3)
    assert a.indices.tobytes() == b.indices.tobytes()
    assert submodular_schedule(X, y, 6, epochs=2, seed=4).indices.tobytes() != a.indices.tobytes()
    assert submodular_schedule(X, y, 6, epochs=2, seed=3, normalize=True).indices.tobytes() != a.indices.tobytes()


#: sha256 of the indices before batch_mmd2 was recorded (revision 1's code, commit d0ed882):
#: the diagnostic must not change a single batch.
TOY_DIGESTS = {False: "e5dfe86c914d3eafc0554ad3077f6179c847537621c65d6fe681e18fa7bde1ae",
               True: "f8ef6ecc31ba3db06b17304ac79da2a11d4ecc3435b86566ca1c4a5adcc95488"}
DIGITS_DIGESTS = {False: "949e458473d190cffc611ea628c8a30e263bf339dd5f0b8a9fc867603cd0b829",
                  True: "1ba539a8c0a8f962dd145cec5e81bfe1c547c3a9736448d1ecf3d90d022a7d99"}


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("normalize", [False, True])
def test_the_diagnostic_does_not_change_the_batches(normalize):
    X, y = toy()
    plain = submodular_schedule(X, y, 7, epochs=3, seed=2, normalize=normalize)
    assert plain.batch_mmd2 is None
    assert sha(plain.indices) == TOY_DIGESTS[normalize]
    for kernel in (RBF(1.5), Polynomial(2, 1.0)):
        r = submodular_schedule(X, y, 7, epochs=3, seed=2, normalize=normalize, kernel=kernel)
        assert sha(r.indices) == TOY_DIGESTS[normalize]
        assert r.batch_mmd2.shape == (3 * 8,) and r.batch_mmd2.dtype == np.float64


def dense_kernel(X, kernel):
    """The kernel matrix in float64 from its formula, plain loops over pairs."""
    X = X.astype(np.float64)
    n, d = X.shape
    K = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            if isinstance(kernel, RBF):
                K[i, j] = math.exp(-sum((X[i, c] - X[j, c]) ** 2 for c in range(d)) / (2 * kernel.sigma**2))
            else:
                K[i, j] = (sum(X[i, c] * X[j, c] for c in range(d)) / d + kernel.coef0) ** kernel.degree
    return K


def dense_mmd2(K, A):
    """MMD²(A, D \\ A) from the dense matrix: mean K_AA − 2 mean K_AR + mean K_RR (NaN for R empty)."""
    R = np.setdiff1d(np.arange(len(K)), A)
    if len(R) == 0:
        return np.nan
    return K[np.ix_(A, A)].mean() - 2 * K[np.ix_(A, R)].mean() + K[np.ix_(R, R)].mean()


@pytest.mark.parametrize("kernel", [RBF(1.5), Polynomial(2, 1.0)], ids=["rbf", "poly"])
def test_batch_mmd2_is_the_epochs_prefix_against_a_dense_float64_oracle(kernel):
    X, y = toy()
    r = submodular_schedule(X, y, 7, epochs=2, seed=5, kernel=kernel)
    K = dense_kernel(X, kernel)
    per_epoch = 8
    for b in range(2 * per_epoch):  # the prefix restarts with every epoch
        e, t = divmod(b, per_epoch)
        A = r.indices[e * 53 : r.batch_offsets[b + 1]]
        want = dense_mmd2(K, A)
        if t == per_epoch - 1:
            assert np.isnan(want) and np.isnan(r.batch_mmd2[b])
        else:  # tolerance: float32 kernel values (relative 1e-7) summed in float64
            assert_allclose(r.batch_mmd2[b], want, rtol=1e-5, atol=1e-7)


def test_batch_mmd2_is_what_evaluate_scores_bit_for_bit():
    """The methods layer cannot import schedgen.evaluate: its copy of the loop must stay the same."""
    from schedgen.evaluate import prefix_mmd2

    X, y = toy(n=300, d=20)
    kernel = RBF(2.0)
    r = submodular_schedule(X, y, 37, epochs=2, seed=1, kernel=kernel)
    s_tot, _ = row_sums(kernel, X)
    per_epoch = int(r.epoch_offsets[1])
    for e in range(2):
        offsets = r.batch_offsets[e * per_epoch : (e + 1) * per_epoch + 1] - e * 300
        got = prefix_mmd2(X, kernel, r.indices[e * 300 : (e + 1) * 300], offsets, s_tot)
        assert got.tobytes() == r.batch_mmd2[e * per_epoch : (e + 1) * per_epoch].tobytes()


def test_the_diagnostic_never_holds_an_n_by_n_matrix():
    import tracemalloc

    n = 6000
    X, y = toy(n=n, d=3)
    kernel = RBF(1.0)
    s_tot, _ = row_sums(kernel, X)
    tracemalloc.start()
    try:
        r = submodular_schedule(X, y, 100, epochs=1, seed=0, kernel=kernel, s_tot=s_tot)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(r.batch_mmd2[:-1]).all()
    assert peak < n * n * 4 / 16, peak  # an N x N float32 matrix is 16 times that


def test_candidate_count():
    assert candidate_count(1437, 50) == math.ceil(5 * 1437 / 50)
    assert candidate_count(100, 50) == 50  # never fewer than the batch...
    assert candidate_count(30, 50) == 30  # ...nor more than what is left
    assert candidate_count(600, 50) == 60
    assert candidate_count(73257, 50) == 7326


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_build_digits(tmp_path):
    r = run("build", "--out-dir", tmp_path, "--method", "submodular", "--dataset", "digits", "--k", "50",
            "--epochs", "2", "-q")
    assert r.exit_code == 0, r.stdout + r.stderr
    path = r.stdout.split()[1].rstrip(":")
    s = read_schedule(path)
    for e in range(2):
        assert_array_equal(np.sort(s.indices[e * 1437 : (e + 1) * 1437]), np.arange(1437))
    assert sha(s.indices) == DIGITS_DIGESTS[False]
    mmd2 = s.batch_arrays["batch_mmd2"]
    assert mmd2.shape == (s.n_batches,) and np.isfinite(mmd2[:28]).all() and np.isnan(mmd2[28])
    for name, value in {"kernel": "rbf", "bandwidth_rule": "median", "epochs": 2, "normalize": False}.items():
        assert s.params[name] == value
    assert isinstance(s.params["bandwidth"], float) and "solver" not in s.params
    r2 = run("build", "--out-dir", tmp_path, "--method", "submodular", "--dataset", "digits", "--k", "50",
             "--epochs", "2", "-q", "--submodular-normalize")
    assert r2.exit_code == 0, r2.stdout + r2.stderr
    other = read_schedule(r2.stdout.split()[1].rstrip(":"))
    assert other.indices.tobytes() != s.indices.tobytes()
    assert sha(other.indices) == DIGITS_DIGESTS[True]


def test_kernel_options_enter_the_cache_key_not_the_batches(tmp_path):
    from schedgen.build import BuildConfig, build

    cfg = dict(dataset="digits", method="submodular", k=200, out_dir=tmp_path)
    rbf = build(BuildConfig(**cfg))
    poly = build(BuildConfig(kernel="poly", degree=2, **cfg))
    wide = build(BuildConfig(bandwidth=5.0, **cfg))
    assert len({rbf.path, poly.path, wide.path}) == 3 and not poly.cache_hit and not wide.cache_hit
    a, b, c = (read_schedule(x.path) for x in (rbf, poly, wide))
    assert a.indices.tobytes() == b.indices.tobytes() == c.indices.tobytes()
    assert b.params["kernel"] == "poly" and b.params["degree"] == 2 and "bandwidth" not in b.params
    assert c.params["bandwidth"] == 5.0 and c.params["bandwidth_rule"] is None
    assert len({x.batch_arrays["batch_mmd2"].tobytes() for x in (a, b, c)}) == 3
    assert build(BuildConfig(kernel="poly", degree=2, **cfg)).cache_hit


@pytest.mark.parametrize("args, message", [
    (("--method", "submodular", "--solver", "lp"), r"--solver applies only to --method mmd, got it with --method submodular"),
    (("--method", "random", "--submodular-normalize"),
     r"--submodular-normalize applies only to --method submodular, got it with --method random"),
    (("--method", "submodular", "--kernel", "poly", "--bandwidth", "0.5"),
     r"--bandwidth applies only to --kernel rbf, got it with --kernel poly"),
    (("--method", "submodular", "--degree", "2"), r"--degree applies only to --kernel poly, got it with --kernel rbf"),
])
def test_options_of_other_methods_refused(tmp_path, args, message):
    r = run("build", "--out-dir", tmp_path, "-q", *args)
    assert r.exit_code == 1
    assert "error:" in r.output and message.replace("\\", "") in r.output
    assert not list(tmp_path.glob("*.zarr"))


class Killed(Exception):
    pass


@pytest.mark.parametrize("stop_at", [1, 5, 8, 9, 10, 17, 23])
def test_resume_after_a_kill_gives_the_same_bytes(tmp_path, stop_at):
    from schedgen.checkpoint import Checkpoint

    X, y = toy()
    kernel = RBF(1.5)
    full = submodular_schedule(X, y, 7, epochs=3, seed=2, kernel=kernel)  # 8 batches an epoch

    def kill(done, total):
        if done == stop_at:
            raise Killed

    ck = Checkpoint(tmp_path / "c.npz", "key", every=0)
    with pytest.raises(Killed):
        submodular_schedule(X, y, 7, epochs=3, seed=2, kernel=kernel, progress=kill, checkpoint=ck)
    seen = []
    again = submodular_schedule(X, y, 7, epochs=3, seed=2, kernel=kernel, checkpoint=ck,
                                progress=lambda d, t: seen.append(d))
    assert again.indices.tobytes() == full.indices.tobytes()
    assert again.batch_mmd2.tobytes() == full.batch_mmd2.tobytes()  # the epoch's prefix replayed
    assert stop_at == 1 or seen[0] == stop_at  # went on from the last saved batch, not from 0
