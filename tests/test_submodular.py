"""--method submodular: SMDL's greedy, checked against plain-loop oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from schedgen.cli import app
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
    r2 = run("build", "--out-dir", tmp_path, "--method", "submodular", "--dataset", "digits", "--k", "50",
             "--epochs", "2", "-q", "--submodular-normalize")
    assert r2.exit_code == 0, r2.stdout + r2.stderr
    other = read_schedule(r2.stdout.split()[1].rstrip(":"))
    assert other.indices.tobytes() != s.indices.tobytes()


@pytest.mark.parametrize("args, message", [
    (("--method", "submodular", "--solver", "lp"), r"--solver applies only to --method mmd, got it with --method submodular"),
    (("--method", "random", "--submodular-normalize"),
     r"--submodular-normalize applies only to --method submodular, got it with --method random"),
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
    full = submodular_schedule(X, y, 7, epochs=3, seed=2)  # 8 batches an epoch

    def kill(done, total):
        if done == stop_at:
            raise Killed

    ck = Checkpoint(tmp_path / "c.npz", "key", every=0)
    with pytest.raises(Killed):
        submodular_schedule(X, y, 7, epochs=3, seed=2, progress=kill, checkpoint=ck)
    seen = []
    again = submodular_schedule(X, y, 7, epochs=3, seed=2, checkpoint=ck, progress=lambda d, t: seen.append(d))
    assert again.indices.tobytes() == full.indices.tobytes()
    assert stop_at == 1 or seen[0] == stop_at  # went on from the last saved batch, not from 0
