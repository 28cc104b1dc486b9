"""Scoring an order (schedgen.evaluate.prefix_mmd2) as the selection loop scores its own.

One MMD² formula (schedgen.mmd2) serves the loop, ``evaluate``, ``plot`` and the
benchmarks: a schedule's own order rescored gives its recorded ``batch_mmd2``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal
import pytest

from schedgen.build import BuildConfig, build
from schedgen.data import load_dataset
from schedgen.errors import ParameterError
from schedgen.evaluate import prefix_mmd2
from schedgen.features import FeatureSpec, prepare_features
from schedgen.kernels import RBF, Polynomial, WorkingSet, make_kernel, pinned_blas, row_sums
from schedgen.mmd2 import grow_prefix_sum, mmd2_from_sums, split_mmd2
from schedgen.plot import BASELINE_STREAM, order_mmd2, random_baseline_mmd2
from schedgen.methods.selection import mmd_schedule
from schedgen.store import read_schedule


# ------------------------------------------------------------------ float64 references


def _kernel_loop(kind, X):
    """K[i][j] in float64, one pair at a time."""
    n = len(X)
    K = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if kind == "rbf":
                d2 = sum((float(X[i, f]) - float(X[j, f])) ** 2 for f in range(X.shape[1]))
                K[i][j] = math.exp(-d2 / (2 * 1.5**2))
            else:
                dot = sum(float(X[i, f]) * float(X[j, f]) for f in range(X.shape[1]))
                K[i][j] = (0.5 * dot + 1.0) ** 3
    return K


def _mmd2_loop(K, order, offsets):
    """MMD²(A_t, D \\ A_t) by its definition, plain loops over the pairs."""
    n = len(K)
    out = []
    for t in range(len(offsets) - 1):
        inA = [False] * n
        for i in order[: offsets[t + 1]]:
            inA[int(i)] = True
        a = sum(inA)
        b = n - a
        if b == 0:
            out.append(float("nan"))
            continue
        saa = sar = srr = 0.0
        for i in range(n):
            for j in range(n):
                if inA[i] and inA[j]:
                    saa += K[i][j]
                elif inA[i] and not inA[j]:
                    sar += K[i][j]
                elif not inA[i] and not inA[j]:
                    srr += K[i][j]
        out.append(saa / a**2 - 2 * sar / (a * b) + srr / b**2)
    return np.array(out)


@pytest.mark.parametrize("kind", ["rbf", "poly"])
def test_prefix_mmd2_equals_a_plain_loop_in_float64(kind):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(30, 4))  # float64 features: kernel values in float64
    kernel = RBF(1.5) if kind == "rbf" else Polynomial(degree=3, coef0=1.0, scale=0.5)
    s_tot, _ = row_sums(kernel, X)
    order = rng.permutation(30)
    offsets = np.array([0, 1, 7, 8, 19, 29, 30])  # uneven, a batch of one, one sample left
    got = prefix_mmd2(X, kernel, order, offsets, s_tot)
    ref = _mmd2_loop(_kernel_loop(kind, X), order, offsets)
    # float64 kernels: the two differ by float64 rounding only (measured ~1e-14 relative)
    assert_allclose(got[:-1], ref[:-1], rtol=1e-10)
    assert np.isnan(got[-1]) and np.isnan(ref[-1])


def test_one_batch_of_everything_is_undefined():
    X = np.random.default_rng(0).normal(size=(5, 2))
    kernel = RBF(1.0)
    got = prefix_mmd2(X, kernel, np.arange(5), np.array([0, 5]), row_sums(kernel, X).s)
    assert got.shape == (1,) and np.isnan(got[0])


def test_mmd2_from_sums_formula_and_empty_sides():
    assert mmd2_from_sums(8.0, 6.0, 5.0, 2, 3) == pytest.approx(8 / 4 - 2 * 6 / 6 + 5 / 9)
    assert math.isnan(mmd2_from_sums(1.0, 0.0, 0.0, 3, 0))
    assert math.isnan(mmd2_from_sums(0.0, 0.0, 1.0, 0, 3))
    assert math.isnan(split_mmd2(4.0, np.zeros(0), np.zeros(0), 2))


# ------------------------------------------------------------------ the loop's own record


@pytest.fixture(scope="module")
def digits_setup():
    ds = load_dataset("digits")
    with pinned_blas():
        X = prepare_features(ds, FeatureSpec())
    kernel = make_kernel("rbf", X=X, seed=0)
    s_tot, neg_tot = row_sums(kernel, X)
    return X, kernel, s_tot, neg_tot


def test_prefix_mmd2_is_the_loops_record_bit_for_bit(digits_setup):
    """A solver that never asks for kernel columns leaves every s_P update to the loop's
    own fused pass: prefix_mmd2 then repeats the loop's arithmetic exactly."""
    X, kernel, s_tot, neg_tot = digits_setup

    def smallest_diag(problem):  # k smallest Z_ii, ties by position
        return np.argsort(problem.diag, kind="stable")[: problem.k]

    st = mmd_schedule(X, 50, kernel=kernel, solver=smallest_diag, s_tot=s_tot, neg_tot=neg_tot, n_jobs=1)
    order = np.concatenate(st.batches)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in st.batches])])
    got = prefix_mmd2(X, kernel, order, offsets, s_tot)  # default threads: same bytes
    assert_array_equal(got, np.asarray(st.mmd2))
    assert np.isnan(got[-1]) and np.isfinite(got[:-1]).all()


def _one_sample_at_a_time(monkeypatch):
    """Every kernel column computed on its own (one GEMV): its float32 bits no longer
    depend on which other columns were requested with it."""
    columns = WorkingSet.columns

    def single_columns(self, samples):
        samples = np.asarray(samples)
        out = np.empty((samples.size, self.n))
        for r in range(samples.size):
            out[r] = columns(self, samples[r : r + 1])[0]
        return out

    def single_column_sums(self, samples, *, negative=False):
        s = np.zeros(self.n)
        neg = np.zeros(self.n) if negative else None
        for col in single_columns(self, samples):  # in order, as column_sums adds them
            s += col
            if negative:
                neg += np.minimum(col, 0.0)
        return s, neg

    monkeypatch.setattr(WorkingSet, "columns", single_columns)
    monkeypatch.setattr(WorkingSet, "column_sums", single_column_sums)


def test_default_digits_schedule_rescored_as_plot_does_gives_its_record(tmp_path, monkeypatch):
    # As shipped: the default solver (swap) reuses the kernel columns it computed one at
    # a time, whose float32 rounding differs from the fused pass's in the last bits;
    # MMD² of a good schedule is a small difference of large sums, so that shows as
    # ~1e-4 relative (measured 1.0e-4 on digits k = 50; the old T - 2 S_AD + S_AA form
    # gave 1.3e-4). The recorded values carry that rounding themselves.
    s = read_schedule(build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path / "shipped")).path)
    rec = np.asarray(s.batch_arrays["batch_mmd2"])
    got = order_mmd2(s)
    assert np.isnan(got[-1]) and np.isnan(rec[-1])
    assert_allclose(got[:-1], rec[:-1], rtol=1e-3)
    # The random baseline is the same function on a seeded permutation, and loses.
    rand = random_baseline_mmd2(s, seed=3)
    perm = np.random.default_rng([3, BASELINE_STREAM]).permutation(s.n_samples)
    assert_array_equal(rand, order_mmd2(s, perm))
    assert np.nanmean(rand) > 2 * np.nanmean(rec)

    # With kernel values that do not depend on the request's shape (in the build and
    # here alike), only float64 summation order differs: the formula, S_AA and the
    # s_A bookkeeping are the loop's.
    _one_sample_at_a_time(monkeypatch)
    s = read_schedule(build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path / "single")).path)
    rec = np.asarray(s.batch_arrays["batch_mmd2"])
    got = order_mmd2(s)
    assert np.isnan(got[-1]) and np.isnan(rec[-1])
    assert_allclose(got[:-1], rec[:-1], rtol=1e-11)


# ------------------------------------------------------------------ why this form


def test_rows_of_R_keep_the_precision_that_T_minus_2S_AD_plus_S_AA_loses():
    """s_tot and s_A come from different GEMMs whose float32 kernel values need not
    share their rounding. Modelled here: s_tot's kernel values carry a relative error
    of 1e-7 (systematic and random parts), s_A's and S_AA's are exact. Near the end
    (R small) the old form's error grows like N²/b², the rows-of-R form's like N/b."""
    rng = np.random.default_rng(5)
    n, k = 400, 10
    X = rng.normal(size=(n, 3))
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2 / 2.0)
    s_tot = (K * (1.0 + 1e-7 * (0.5 + rng.random((n, n))))).sum(1)
    order = rng.permutation(n)
    inA = np.zeros(n, bool)
    S_AA = S_AD = 0.0
    T = float(np.sum(s_tot))
    err_new, err_old = [], []
    for t0 in range(0, n - k, k):
        B = order[t0 : t0 + k]
        S_AA = grow_prefix_sum(S_AA, K[B][:, inA].sum(1), K[np.ix_(B, B)])
        S_AD += float(np.sum(s_tot[B]))
        inA[B] = True
        a, b = int(inA.sum()), int(n - inA.sum())
        exact = K[inA][:, inA].sum() / a**2 - 2 * K[inA][:, ~inA].sum() / (a * b) + K[~inA][:, ~inA].sum() / b**2
        new = split_mmd2(S_AA, K[~inA][:, inA].sum(1), s_tot[~inA], a)
        old = mmd2_from_sums(S_AA, S_AD - S_AA, T - 2.0 * S_AD + S_AA, a, b)
        err_new.append(abs(new - exact) / exact)
        err_old.append(abs(old - exact) / exact)
    # last step: b = k = 10, N/b = 40 (measured over seeds 0-4: new ~1e-5 relative,
    # old 30-46x that)
    assert max(err_new) < 1e-4
    assert err_old[-1] > 10 * err_new[-1]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "indices, offsets, match",
    [
        (np.array([0, 1, 1, 3]), np.array([0, 2, 4]), "permutation of 0..3"),
        (np.arange(3), np.array([0, 3]), "1-D integer array of the 4 samples"),
        (np.arange(4.0), np.array([0, 4]), "1-D integer array of the 4 samples"),
        (np.arange(4), np.array([0, 2, 2, 4]), "increase strictly from 0 to N=4"),
        (np.arange(4), np.array([1, 4]), "increase strictly from 0 to N=4"),
        (np.arange(4), np.array([0, 3]), "increase strictly from 0 to N=4"),
        (np.arange(4), np.array([4]), "at least 2 entries"),
    ],
)
def test_bad_orders_are_refused(indices, offsets, match):
    X = np.random.default_rng(0).normal(size=(4, 2))
    kernel = RBF(1.0)
    with pytest.raises(ParameterError, match=match):
        prefix_mmd2(X, kernel, indices, offsets, row_sums(kernel, X).s)


def test_row_sums_of_another_dataset_are_refused():
    X = np.random.default_rng(0).normal(size=(4, 2))
    with pytest.raises(ParameterError, match=r"one entry per sample of X \(4\), got 5"):
        prefix_mmd2(X, RBF(1.0), np.arange(4), np.array([0, 4]), np.ones(5))
