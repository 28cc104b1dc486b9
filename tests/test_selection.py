"""Tests of the selection loop (schedgen.methods.selection.mmd_schedule) end to end: a
permutation, MMD² after every batch equal to its definition, the same bytes for any
BLAS thread count, checkpoint resume, the paper's coefficients, a kernel with
negative values.

Reference MMD²(P ∪ B, Q \\ B) is computed in float64 from the dense kernel matrix
(small N only). Tolerances: float32 features give float32 kernel values accumulated
in float64, and MMD² is a difference of sums ~1e3 times larger than itself, so
rtol 1e-4 there; float64 features rtol 1e-9.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from schedgen.kernels import RBF, Polynomial, median_bandwidth, row_sums
from schedgen.methods.selection import MMDState, mmd_schedule
from schedgen.methods.solvers import SOLVERS

threadpoolctl = pytest.importorskip("threadpoolctl")


def mixture(n, d, *, seed, dtype=np.float32, centred=False):
    """A seeded Gaussian mixture (8 components), like PCA features."""
    rng = np.random.default_rng([seed, n, d])
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))
    centres = rng.normal(size=(8, d)) * scale * 2.0
    X = centres[rng.integers(0, 8, n)] + rng.normal(size=(n, d)) * scale
    if centred:
        X -= X.mean(axis=0)
    return X.astype(dtype)


def dense_kernel(kernel, X):
    X = X.astype(np.float64)
    if isinstance(kernel, RBF):
        sq = (X * X).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * X @ X.T, 0.0)
        return np.exp(-d2 / (2.0 * kernel.sigma**2))
    scale = kernel.resolved_scale(X.shape[1])
    return (scale * X @ X.T + kernel.coef0) ** kernel.degree


def mmd2_definition(K, batches):
    """MMD²(A_t, D \\ A_t) after every batch, A_t = batches 0..t, from the dense K (float64)."""
    n = K.shape[0]
    inA = np.zeros(n)
    out = []
    for B in batches:
        inA[B] = 1.0
        a = inA.sum()
        b = n - a
        if b == 0:
            out.append(np.nan)
            continue
        KA = K @ inA
        S_AA = inA @ KA
        S_AR = (1.0 - inA) @ KA
        S_RR = K.sum() - 2.0 * S_AR - S_AA
        out.append(S_AA / a**2 - 2.0 * S_AR / (a * b) + S_RR / b**2)
    return np.array(out)


def run(X, kernel, solver, k, **kw):
    s, neg = row_sums(kernel, X)
    return mmd_schedule(X, k, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg, **kw)


def digest(state):
    return hashlib.sha256(np.concatenate(state.batches).astype(np.int64).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def problem():
    X = mixture(1500, 24, seed=1)
    return X, RBF(median_bandwidth(X, seed=0))


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_same_batches_for_one_and_two_blas_threads(problem, solver):
    X, kernel = problem
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        one = run(X, kernel, solver, 50)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        two = run(X, kernel, solver, 50)
        # the loop pins BLAS while it runs and restores the caller's setting
        assert all(i["num_threads"] == 2 for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    assert len(one.batches) == len(two.batches) == 30
    for a, b in zip(one.batches, two.batches):
        assert a.tobytes() == b.tobytes()
    assert np.asarray(one.mmd2).tobytes() == np.asarray(two.mmd2).tobytes()
    # and the same with one worker thread instead of two
    s, neg = row_sums(kernel, X)
    solo = mmd_schedule(X, 50, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg, n_jobs=1)
    assert digest(solo) == digest(one)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_permutation_and_mmd2_equal_their_definition(problem, solver):
    X, kernel = problem
    st = run(X, kernel, solver, 50)
    order = np.concatenate(st.batches)
    assert order.dtype == np.int64
    assert_array_equal(np.sort(order), np.arange(1500))  # every sample exactly once
    assert [len(b) for b in st.batches] == [50] * 30
    ref = mmd2_definition(dense_kernel(kernel, X), st.batches)
    got = np.asarray(st.mmd2)
    assert np.isnan(got[-1]) and np.isnan(ref[-1])
    assert_allclose(got[:-1], ref[:-1], rtol=1e-4)


def test_solvers_rank_as_documented(problem):
    """Mean MMD² over the schedule: swap < greedy < lp on RBF data (the benchmark's finding)."""
    X, kernel = problem
    mean = {name: np.nanmean(run(X, kernel, name, 50).mmd2) for name in SOLVERS}
    assert mean["swap"] < mean["greedy"] < mean["lp"]


def test_float64_features_are_exact_to_1e9():
    X = mixture(300, 6, seed=2, dtype=np.float64)
    kernel = RBF(median_bandwidth(X, seed=0))
    st = run(X, kernel, "swap", 32)  # 9 batches of 32 and a short one of 12
    assert [len(b) for b in st.batches] == [32] * 9 + [12]
    ref = mmd2_definition(dense_kernel(kernel, X), st.batches)
    assert_allclose(np.asarray(st.mmd2)[:-1], ref[:-1], rtol=1e-9)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_paper_coefficients(solver):
    X = mixture(400, 8, seed=3)
    kernel = RBF(median_bandwidth(X, seed=0))
    paper = run(X, kernel, solver, 40, coefficients="paper")
    exact = run(X, kernel, solver, 40)
    assert_array_equal(np.sort(np.concatenate(paper.batches)), np.arange(400))
    if solver == "lp":
        # With RBF (K_ii = 1) the two diagonals are 1 - 2x and 1 - x of the same
        # x = c·s_tot - s_P: while they are negative, the same order of a, hence the
        # same k smallest a that the half-integral optimum rounds to.
        assert digest(paper) == digest(exact)
    else:  # the pairwise terms weigh twice as much: another order
        assert digest(paper) != digest(exact)
    ref = mmd2_definition(dense_kernel(kernel, X), paper.batches)
    assert_allclose(np.asarray(paper.mmd2)[:-1], ref[:-1], rtol=1e-4)
    assert digest(run(X, kernel, solver, 40, coefficients="paper")) == digest(paper)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_odd_polynomial_on_centred_data(solver):
    """Negative kernel values: neg_tot < 0, the negative-part sums are tracked."""
    X = mixture(360, 5, seed=4, dtype=np.float64, centred=True)
    kernel = Polynomial(3, coef0=0.0)
    s, neg = row_sums(kernel, X)
    assert (neg < 0).all()
    st = mmd_schedule(X, 30, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg)
    assert_array_equal(np.sort(np.concatenate(st.batches)), np.arange(360))
    K = dense_kernel(kernel, X)
    ref = mmd2_definition(K, st.batches)
    assert_allclose(np.asarray(st.mmd2)[:-1], ref[:-1], rtol=1e-8, atol=1e-10 * np.abs(K).max())
    # the running sums after 5 batches are those of their definition
    with pytest.raises(_Stop) as stop:
        mmd_schedule(X, 30, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg, on_step=lambda st: _stop(st, 5))
    saved = stop.value.state
    P = np.concatenate(saved.batches)
    KQP = K[np.ix_(saved.Q, P)]
    assert_allclose(saved.sP, KQP.sum(axis=1), rtol=1e-10, atol=1e-10 * np.abs(KQP).sum(axis=1).max())
    assert_allclose(saved.negP, np.minimum(KQP, 0.0).sum(axis=1), rtol=1e-10, atol=1e-10 * np.abs(KQP).sum(axis=1).max())
    assert (saved.negP < 0).any()


def _stop(state, at):
    if len(state.batches) == at:
        state = state.complete()  # the exact loop keeps its sums in its row shards
        raise _Stop(MMDState(**{f: _copy(getattr(state, f)) for f in MMDState.__dataclass_fields__}))


def _copy(v):
    return v.copy() if isinstance(v, (np.ndarray, list)) else v


class _Stop(Exception):
    def __init__(self, state):
        super().__init__("stop")
        self.state = state


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_resume_from_a_state_gives_the_same_bytes(problem, solver):
    X, kernel = problem
    s, neg = row_sums(kernel, X)
    full = mmd_schedule(X, 50, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg)
    with pytest.raises(_Stop) as stop:
        mmd_schedule(X, 50, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg, on_step=lambda st: _stop(st, 7))
    saved = stop.value.state
    assert len(saved.batches) == 7 and len(saved.Q) == 1500 - 350
    # the state's running sums are those of its definition
    P = np.concatenate(saved.batches)
    K = dense_kernel(kernel, X)
    assert_allclose(saved.sP, K[np.ix_(saved.Q, P)].sum(axis=1), rtol=1e-5)
    resumed = mmd_schedule(X, 50, kernel=kernel, solver=SOLVERS[solver], s_tot=s, neg_tot=neg, state=saved)
    assert digest(resumed) == digest(full)
    assert np.asarray(resumed.mmd2).tobytes() == np.asarray(full.mmd2).tobytes()


@pytest.mark.parametrize("coefficients", ["exact", "paper"])
def test_loop_builds_z_as_in_the_design(coefficients):
    """The Z the loop hands to the solver, checked at every step against DESIGN.md §1
    computed from the dense float64 kernel: Z_ii = K_ii - f·c·s_tot(i) + f·s_P(i) with
    c = (nP+k)/N, f = 2 (exact) or 1 (paper); Z_ij = K_ij. With the exact
    coefficients, (1/(nP+k) + 1/(nQ-k))²·mᵀZm differs from MMD²(P∪B, Q\\B), computed
    from its definition, by one constant for every B."""
    X = mixture(60, 5, seed=4, dtype=np.float64)
    kernel = RBF(median_bandwidth(X, seed=0))
    K = dense_kernel(kernel, X)
    n, k, f = 60, 7, {"exact": 2.0, "paper": 1.0}[coefficients]
    s_tot = K.sum(axis=1)
    Q_now = [np.arange(n)]
    rng = np.random.default_rng(11)
    checked = []

    def checking(problem):
        Q = Q_now[0]
        nQ = len(Q)
        P = np.setdiff1d(np.arange(n), Q)
        nP = n - nQ
        c = (nP + k) / n
        want = K[Q, Q] - f * c * s_tot[Q] + f * K[np.ix_(Q, P)].sum(axis=1)
        assert_allclose(problem.diag, want, rtol=1e-12, atol=1e-12)
        if coefficients == "exact":
            consts = []
            for _ in range(6):
                pos = np.sort(rng.choice(nQ, size=k, replace=False))
                blk = problem.block(pos, pos)
                mZm = problem.diag[pos].sum() + blk.sum() - np.trace(blk)
                A = np.concatenate([P, Q[pos]])
                inA = np.zeros(n)
                inA[A] = 1.0
                a, b = inA.sum(), n - inA.sum()
                mmd2 = inA @ K @ inA / a**2 - 2 * inA @ K @ (1 - inA) / (a * b) + (1 - inA) @ K @ (1 - inA) / b**2
                consts.append(mmd2 - (1 / (nP + k) + 1 / (nQ - k)) ** 2 * mZm)
            assert_allclose(consts, consts[0], rtol=0, atol=1e-12)
        checked.append(nQ)
        return SOLVERS["greedy"](problem)

    s, neg = row_sums(kernel, X)
    mmd_schedule(X, k, kernel=kernel, solver=checking, s_tot=s, neg_tot=neg, coefficients=coefficients,
                 on_step=lambda st: Q_now.__setitem__(0, st.Q.copy()))
    assert checked == [60, 53, 46, 39, 32, 25, 18, 11]  # every step with nQ > k went through the check
