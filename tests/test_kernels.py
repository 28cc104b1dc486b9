"""Tests of schedgen.kernels against float64 plain-loop references.

Tolerances:
* float64 path: rtol 1e-12 relative to the row magnitude ``Σ_j |K_ij|`` (or to
  ``max |K|`` for single values);
* float32 path: 1e-5 relative to the row magnitude (float32 GEMM and exp, float64
  accumulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from schedgen.errors import ParameterError, SchedgenWarning
from schedgen.kernels import (
    FALLBACK_BANDWIDTH,
    RBF,
    Polynomial,
    WorkingSet,
    backend,
    block_sums,
    default_blocks,
    gram,
    is_numerically_diagonal,
    kernel_from_params,
    make_kernel,
    median_bandwidth,
    median_offdiag,
    median_sq_distance,
    pinned_blas,
    row_sums,
    sq_norms,
    subsample_indices,
)

RTOL64 = 1e-12
RTOL32 = 1e-5


# ---------------------------------------------------------------- references


def ref_rbf(x, y, sigma):
    d2 = 0.0
    for a, b in zip(x, y):
        d2 += (float(a) - float(b)) ** 2
    return math.exp(-d2 / (2.0 * sigma * sigma))


def ref_poly(x, y, degree, coef0, scale):
    dot = 0.0
    for a, b in zip(x, y):
        dot += float(a) * float(b)
    return (scale * dot + coef0) ** degree


def ref_value(kernel, x, y):
    if isinstance(kernel, RBF):
        return ref_rbf(x, y, kernel.sigma)
    scale = kernel.scale if kernel.scale is not None else 1.0 / len(x)
    return ref_poly(x, y, kernel.degree, kernel.coef0, scale)


def ref_block(kernel, A, B):
    out = np.empty((len(A), len(B)))
    for i in range(len(A)):
        for j in range(len(B)):
            out[i, j] = ref_value(kernel, A[i], B[j])
    return out


def ref_row_sums(kernel, X):
    n = len(X)
    s, neg, mag = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        for j in range(n):
            v = ref_value(kernel, X[i], X[j])
            s[i] += v
            mag[i] += abs(v)
            if j != i:
                neg[i] += min(v, 0.0)
    return s, neg, mag


def assert_rows_close(actual, desired, magnitude, rtol):
    """|actual - desired| <= rtol * magnitude, elementwise (magnitude = row scale)."""
    assert_allclose(np.asarray(actual) / magnitude, np.asarray(desired) / magnitude, rtol=0, atol=rtol)


def data(n=40, d=5, seed=0, dtype=np.float64, centred=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=0.0 if centred else 0.7, scale=1.0, size=(n, d))
    return X.astype(dtype)


KERNELS = [
    pytest.param(RBF(1.7), id="rbf"),
    pytest.param(Polynomial(3, coef0=0.5), id="poly3"),
    pytest.param(Polynomial(2, coef0=1.0, scale=0.3), id="poly2"),
    pytest.param(Polynomial(1, coef0=0.0), id="poly1"),
    pytest.param(Polynomial(5, coef0=0.1), id="poly5"),
]


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize("kernel", KERNELS)
def test_block_float64_matches_loops(kernel):
    A, B = data(23, 4, seed=1, centred=True), data(17, 4, seed=2, centred=True)
    K = kernel.block(A, B)
    assert K.dtype == np.float64 and K.shape == (23, 17)
    ref = ref_block(kernel, A, B)
    assert_allclose(K, ref, rtol=RTOL64, atol=RTOL64 * np.abs(ref).max())


@pytest.mark.parametrize("kernel", KERNELS)
def test_block_float32_matches_loops(kernel):
    A, B = data(23, 4, seed=1, dtype=np.float32), data(17, 4, seed=2, dtype=np.float32)
    K = kernel.block(A, B)
    assert K.dtype == np.float32
    ref = ref_block(kernel, A, B)
    mag = np.abs(ref).sum(axis=1, keepdims=True)
    assert_rows_close(K, ref, mag, RTOL32)


def test_block_mixed_dtypes_computes_in_float64():
    A, B = data(5, 3, dtype=np.float32), data(4, 3)
    assert RBF(1.0).block(A, B).dtype == np.float64
    assert RBF(1.0).block(A.astype(int), A.astype(int)).dtype == np.float64


def test_block_uses_given_sq_norms():
    A, B = data(6, 3, seed=3), data(5, 3, seed=4)
    k = RBF(1.3)
    assert_array_equal(k.block(A, B), k.block(A, B, sq_rows=sq_norms(A), sq_cols=sq_norms(B)))


def test_block_rbf_identical_points_clamped_to_one():
    # Rounding in ‖x‖²+‖y‖²-2xy can go below 0 for equal points; the clamp keeps K <= 1.
    X = np.full((4, 16), 123.456, dtype=np.float32)
    K = RBF(0.01).block(X, X)
    assert np.all(K <= 1.0)
    assert_allclose(K, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_diag_matches_loops(kernel, dtype):
    X = data(11, 4, seed=5, dtype=dtype, centred=True)
    d = kernel.diag(X)
    assert d.dtype == np.float64 and d.shape == (11,)
    ref = np.array([ref_value(kernel, x, x) for x in X])
    assert_allclose(d, ref, rtol=RTOL64)


def test_params_are_plain_json_and_round_trip():
    import json

    for k in (RBF(2.5), Polynomial(3), Polynomial(2, coef0=0.0, scale=0.25)):
        p = k.params()
        assert json.loads(json.dumps(p)) == p
        assert kernel_from_params(p) == k
    assert RBF(2.5).params() == {"kernel": "rbf", "bandwidth": 2.5}
    assert Polynomial(3).params() == {"kernel": "poly", "degree": 3, "coef0": 1.0, "scale": None}


def test_kernels_are_frozen_and_coerce_numbers():
    k = RBF(np.float32(2.0))
    assert type(k.sigma) is float
    with pytest.raises(AttributeError):
        k.sigma = 3.0
    assert Polynomial(np.int64(2)).degree == 2


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "sigma, shown",
    [(-1.0, "-1.0"), (0, "0.0"), (float("inf"), "inf"), (float("nan"), "nan"), (True, "True"), ("2", "'2'")],
)
def test_rbf_rejects_bad_bandwidth(sigma, shown):
    with pytest.raises(ParameterError, match=rf"bandwidth must be a positive finite number, got {shown}"):
        RBF(sigma)


@pytest.mark.parametrize("degree", [0, -2, 2.0, True, "3", None])
def test_polynomial_rejects_bad_degree(degree):
    with pytest.raises(ParameterError, match=r"degree must be an integer >= 1, got"):
        Polynomial(degree)


@pytest.mark.parametrize("coef0", [float("nan"), float("inf"), True, "1"])
def test_polynomial_rejects_bad_coef0(coef0):
    with pytest.raises(ParameterError, match=r"coef0 must be a finite number, got"):
        Polynomial(3, coef0=coef0)


def test_polynomial_rejects_bad_scale():
    with pytest.raises(ParameterError, match=r"scale must be a positive finite number, got -0.5"):
        Polynomial(3, scale=-0.5)


def test_make_kernel():
    X = data(30, 3)
    assert make_kernel("rbf", bandwidth=2.0) == RBF(2.0)
    assert make_kernel("rbf", X=X, seed=4) == RBF(median_bandwidth(X, seed=4))
    assert make_kernel("rbf", bandwidth="median", X=X) == RBF(median_bandwidth(X))
    assert make_kernel("poly", degree=2, coef0=0.5) == Polynomial(2, 0.5)
    # The CLI's default bandwidth rule is accepted (and ignored) for poly.
    assert make_kernel("poly", bandwidth="median", X=X) == Polynomial(3, 1.0)
    with pytest.raises(ParameterError, match=r"kernel must be one of 'rbf', 'poly', got 'linear'"):
        make_kernel("linear")
    with pytest.raises(ParameterError, match=r"median bandwidth heuristic needs the data"):
        make_kernel("rbf")
    with pytest.raises(ParameterError, match=r"bandwidth must be a positive finite number or 'median', got 'mean'"):
        make_kernel("rbf", bandwidth="mean", X=X)
    with pytest.raises(ParameterError, match=r"bandwidth must be a positive finite number, got -1.0"):
        make_kernel("rbf", bandwidth=-1.0)
    with pytest.raises(ParameterError, match=r"bandwidth applies only to the 'rbf' kernel"):
        make_kernel("poly", bandwidth=2.0)
    with pytest.raises(ParameterError, match=r"degree must be an integer >= 1, got 2.5"):
        make_kernel("poly", degree=2.5)


def test_kernel_from_params_rejects_unknown():
    with pytest.raises(ParameterError, match=r"kernel must be one of 'rbf', 'poly', got 'lin'"):
        kernel_from_params({"kernel": "lin"})
    with pytest.raises(ParameterError, match=r"must be a dict with a 'kernel' key"):
        kernel_from_params({"bandwidth": 1.0})


def test_routines_validate_inputs():
    X = data(10, 3)
    k = RBF(1.0)
    with pytest.raises(ParameterError, match=r"kernel must be a schedgen.kernels kernel"):
        row_sums("rbf", X)
    with pytest.raises(ParameterError, match=r"X must be a 2-D array of shape \(n_samples, n_features\), got ndim=1"):
        row_sums(k, X[0])
    with pytest.raises(ParameterError, match=r"X must hold real numbers, got dtype complex128"):
        row_sums(k, X.astype(complex))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ParameterError, match=r"X must hold finite values only"):
        row_sums(k, bad)
    with pytest.raises(ParameterError, match=r"block_rows must be a positive integer or None, got 0"):
        row_sums(k, X, block_rows=0)
    with pytest.raises(ParameterError, match=r"block_cols must be a positive integer or None, got True"):
        row_sums(k, X, block_cols=True)
    with pytest.raises(ParameterError, match=r"rows must lie in \[0, 10\) \(N=10\), got values from 0 to 10"):
        gram(k, X, [0, 10], [1])
    with pytest.raises(ParameterError, match=r"cols must lie in \[0, 10\) \(N=10\), got values from -1 to 2"):
        block_sums(k, X, [0], [-1, 2])
    with pytest.raises(ParameterError, match=r"rows must hold integer sample indices, got dtype float64"):
        gram(k, X, np.array([0.0, 1.0]), [1])
    with pytest.raises(ParameterError, match=r"cols must be a 1-D array of sample indices, got ndim=2"):
        gram(k, X, [0], [[1]])
    with pytest.raises(ParameterError, match=r"sq must have shape \(10,\) to match X, got \(9,\)"):
        gram(k, X, [0], [1], sq=np.ones(9))
    with pytest.raises(ParameterError, match=r"X_rows and X_cols must have the same number of features, got 3 and 2"):
        k.block(X, X[:, :2])


# ---------------------------------------------------------------- blocked routines


@pytest.mark.parametrize("kernel", KERNELS)
def test_row_sums_float64_matches_loops(kernel):
    X = data(37, 4, seed=6, centred=True)
    s, neg, mag = ref_row_sums(kernel, X)
    got = row_sums(kernel, X, block_rows=8, block_cols=13)
    assert got.s.dtype == np.float64 and got.neg.dtype == np.float64
    assert_rows_close(got.s, s, mag, RTOL64)
    assert_rows_close(got.neg, neg, mag, RTOL64)


@pytest.mark.parametrize("kernel", KERNELS)
def test_row_sums_float32_matches_loops(kernel):
    X = data(53, 6, seed=7, dtype=np.float32, centred=True)
    s, neg, mag = ref_row_sums(kernel, X)
    got = row_sums(kernel, X, block_rows=16, block_cols=32)
    assert_rows_close(got.s, s, mag, RTOL32)
    assert_rows_close(got.neg, neg, mag, RTOL32)


def test_row_sums_odd_polynomial_has_negative_part():
    X = data(40, 3, seed=8, centred=True)
    k = Polynomial(3, coef0=0.0)
    s, neg, mag = ref_row_sums(k, X)
    assert np.all(neg < 0)  # the oracle really exercises the negative part
    got = row_sums(k, X, block_rows=7, block_cols=9)
    assert np.all(got.neg < 0)
    assert_rows_close(got.neg, neg, mag, RTOL64)
    assert_rows_close(got.s, s, mag, RTOL64)


@dataclass(frozen=True)
class _UncheckedPolynomial(Polynomial):
    """A polynomial kernel that skips validation: coef0 < 0 (not PSD, refused by
    Polynomial) still exercises the routines' handling of a negative diagonal."""

    def __post_init__(self):
        pass


def test_row_sums_negative_diagonal_left_out_of_neg():
    # coef0 < 0 and tiny norms: K_ii < 0, which must not enter neg[i].
    X = np.array([[0.01], [0.02], [-3.0]])
    k = _UncheckedPolynomial(1, coef0=-0.5, scale=1.0)
    s, neg, mag = ref_row_sums(k, X)
    got = row_sums(k, X, block_rows=2, block_cols=2)
    assert_allclose(got.neg, neg, rtol=RTOL64)
    assert_allclose(got.s, s, rtol=RTOL64)


def test_row_sums_nonnegative_kernels_have_zero_neg():
    X = data(20, 3, centred=True)
    for k in (RBF(1.0), Polynomial(2, coef0=0.0), Polynomial(4)):
        assert_array_equal(row_sums(k, X).neg, np.zeros(20))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_independent_of_block_sizes(kernel, dtype):
    X = data(60, 5, seed=9, dtype=dtype, centred=True)
    rtol = RTOL64 if dtype == np.float64 else 1e-6
    base = row_sums(kernel, X)
    mag = np.abs(kernel.block(X.astype(np.float64), X.astype(np.float64))).sum(axis=1)
    for br, bc in [(1, 1), (3, 7), (60, 1), (1, 60), (59, 61), (1000, 1000)]:
        got = row_sums(kernel, X, block_rows=br, block_cols=bc)
        assert_rows_close(got.s, base.s, mag, rtol)
        assert_rows_close(got.neg, base.neg, mag, rtol)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    br=st.integers(1, 40),
    bc=st.integers(1, 40),
    degree=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_row_sums_property_matches_gram(n, br, bc, degree, seed):
    X = data(n, 3, seed=seed, centred=True)
    k = Polynomial(degree, coef0=0.3)
    G = gram(k, X, np.arange(n), np.arange(n))
    off = np.minimum(G, 0.0)
    np.fill_diagonal(off, 0.0)
    mag = np.abs(G).sum(axis=1)
    got = row_sums(k, X, block_rows=br, block_cols=bc)
    assert_rows_close(got.s, G.sum(axis=1), mag, RTOL64)
    assert_rows_close(got.neg, off.sum(axis=1), mag, RTOL64)


@pytest.mark.parametrize("kernel", KERNELS)
def test_row_sums_deterministic_bytes(kernel):
    X = data(500, 8, seed=10, dtype=np.float32, centred=True)
    a, b = row_sums(kernel, X), row_sums(kernel, X)
    assert a.s.tobytes() == b.s.tobytes()
    assert a.neg.tobytes() == b.neg.tobytes()


@pytest.mark.parametrize("kernel", [RBF(4.0), Polynomial(3, coef0=0.1)], ids=["rbf", "poly3"])
def test_row_sums_same_bytes_for_any_blas_thread_count(kernel):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X = data(3000, 32, seed=11, dtype=np.float32, centred=True)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        one = row_sums(kernel, X)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        two = row_sums(kernel, X)
    assert one.s.tobytes() == two.s.tobytes()
    assert one.neg.tobytes() == two.neg.tobytes()


def test_results_independent_of_worker_count():
    X = data(1500, 16, seed=23, dtype=np.float32, centred=True)
    k = Polynomial(3, coef0=0.1)
    rows, cols = np.arange(0, 1500, 2), np.arange(1, 1500, 3)
    runs = [
        (
            row_sums(k, X, block_rows=64, block_cols=256, n_jobs=j),
            block_sums(k, X, rows, cols, block_rows=64, n_jobs=j),
            gram(k, X, np.arange(1500), cols, n_jobs=j),
        )
        for j in (1, 2, 3)
    ]
    for rs, bs, g in runs[1:]:
        assert rs.s.tobytes() == runs[0][0].s.tobytes()
        assert rs.neg.tobytes() == runs[0][0].neg.tobytes()
        assert bs.tobytes() == runs[0][1].tobytes()
        assert g.tobytes() == runs[0][2].tobytes()
    with pytest.raises(ParameterError, match=r"n_jobs must be a positive integer or None, got 0"):
        row_sums(k, X, n_jobs=0)


def test_gram_block_sums_median_same_bytes_for_any_blas_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X = data(2500, 24, seed=24, dtype=np.float32)
    k = RBF(5.0)
    rows, cols = np.arange(0, 2500, 2), np.arange(1, 2500, 5)

    def run():
        return (
            gram(k, X, rows, cols).tobytes(),
            block_sums(k, X, rows, cols).tobytes(),
            median_bandwidth(X, seed=3),
            median_bandwidth(X.astype(np.float64), max_samples=2500),
        )

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        one = run()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        two = run()
        # The routines pin BLAS to one thread while they run and restore the setting.
        assert all(info["num_threads"] == 2 for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")
    assert one == two


def _blas_threads(threadpoolctl) -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


def test_pinned_blas_pins_every_loaded_blas_and_gives_the_count_back():
    """NumPy's and SciPy's OpenBLAS (two libraries in their wheels) alike; nested and
    from several threads, the last exit restores the count each had."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg")
    import threading

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads(threadpoolctl)
        assert set(before.values()) == {2}
        inner = threading.Event()
        seen = []

        def other():
            with pinned_blas():
                inner.set()
                seen.append(set(_blas_threads(threadpoolctl).values()))

        with pinned_blas():
            with pinned_blas():
                assert set(_blas_threads(threadpoolctl).values()) == {1}
            t = threading.Thread(target=other)
            t.start()
            t.join()
            assert inner.is_set() and seen == [{1}]
            assert set(_blas_threads(threadpoolctl).values()) == {1}  # the other thread's exit was not the last
        assert _blas_threads(threadpoolctl) == before


def test_pinned_blas_warns_when_other_code_changes_the_thread_count():
    """The pin is process-wide: another thread setting the BLAS thread count during a
    pinned window undoes it (the window's bits may then differ). Said on the last exit."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads(threadpoolctl)
        with pytest.warns(SchedgenWarning, match=r"BLAS thread count was changed by other code .*at 2 threads, expected 1\)"):
            with pinned_blas():
                threadpoolctl.threadpool_limits(limits=2, user_api="blas")  # as a trainer's thread might
        assert _blas_threads(threadpoolctl) == before


def test_gram_row_chunks_match_one_block():
    from schedgen.kernels.blocked import GRAM_TILE

    X = data(1300, 6, seed=25, centred=True)
    cols = np.arange(1000)
    assert 1300 > GRAM_TILE // len(cols)  # several row chunks
    for k in (RBF(2.0), Polynomial(3, coef0=0.2)):
        G = gram(k, X, np.arange(1300), cols)
        ref = k.block(X, X[cols])
        assert_allclose(G, ref, rtol=RTOL64, atol=RTOL64 * np.abs(ref).max())


def test_row_sums_is_a_named_pair():
    s, neg = row_sums(RBF(1.0), data(5, 2))
    assert s.shape == neg.shape == (5,)


def test_row_sums_large_blocks_float32_accurate():
    # Default tiles, many columns: float64 accumulation keeps sums of ~N terms accurate.
    X = data(3000, 16, seed=12, dtype=np.float32)
    k = RBF(3.0)
    got = row_sums(k, X)
    X64 = X.astype(np.float64)
    ref = k.block(X64[:50], X64).sum(axis=1)
    assert_allclose(got.s[:50], ref, rtol=RTOL32)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_sums_matches_loops(kernel, dtype):
    X = data(45, 4, seed=13, dtype=dtype, centred=True)
    rows = np.array([3, 0, 44, 3, 17, 8, 9])
    cols = np.array([1, 2, 3, 40, 41, 5, 5, 0, 17])
    ref = ref_block(kernel, X[rows], X[cols])
    mag = np.abs(ref).sum(axis=1)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    for br, bc in [(None, None), (2, 3), (1, 1)]:
        got = block_sums(kernel, X, rows, cols, block_rows=br, block_cols=bc)
        assert got.dtype == np.float64 and got.shape == (7,)
        assert_rows_close(got, ref.sum(axis=1), mag, rtol)
    # Given norms or norms of the gathered rows: the same bits.
    assert_array_equal(block_sums(kernel, X, rows, cols, sq=sq_norms(X)), block_sums(kernel, X, rows, cols))


def test_block_sums_empty():
    X = data(5, 2)
    assert_array_equal(block_sums(RBF(1.0), X, [0, 1], []), np.zeros(2))
    assert block_sums(RBF(1.0), X, [], [0, 1]).shape == (0,)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_matches_loops(kernel, dtype):
    X = data(30, 4, seed=14, dtype=dtype, centred=True)
    rows, cols = np.array([5, 1, 29, 5]), np.array([0, 5, 12])
    G = gram(kernel, X, rows, cols)
    assert isinstance(G, np.ndarray) and G.dtype == np.float64 and G.shape == (4, 3)
    ref = ref_block(kernel, X[rows], X[cols])
    mag = np.abs(ref).sum(axis=1, keepdims=True)
    assert_rows_close(G, ref, mag, RTOL64 if dtype == np.float64 else RTOL32)
    assert_array_equal(gram(kernel, X, rows, cols, sq=sq_norms(X)), G)
    assert gram(kernel, X, [], cols).shape == (0, 3)


def test_sq_norms_float64_accumulation_in_input_dtype():
    X = data(20, 300, seed=15, dtype=np.float32) * 1000
    sq = sq_norms(X)
    assert sq.dtype == np.float32
    ref = np.array([sum(float(v) ** 2 for v in row) for row in X])
    assert_allclose(sq, ref.astype(np.float32), rtol=0)
    assert sq_norms(X.astype(np.float64)).dtype == np.float64


def test_default_blocks_fit_64_mib():
    for dtype in (np.float32, np.float64):
        for device in (False, True):
            br, bc = default_blocks(dtype, device=device)
            assert br * bc * np.dtype(dtype).itemsize <= 64 * 2**20


# ---------------------------------------------------------------- bandwidth


def brute_median_sq(X):
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    iu = np.triu_indices(n, k=1)
    diff = X[iu[0]] - X[iu[1]]
    return float(np.median(np.sum(diff * diff, axis=1)))


def test_median_small_loops():
    X = data(9, 3, seed=16)
    vals = sorted(
        sum((X[i, t] - X[j, t]) ** 2 for t in range(3)) for i in range(9) for j in range(i + 1, 9)
    )
    med = (vals[17] + vals[18]) / 2  # 36 pairs
    assert_allclose(median_sq_distance(X), med, rtol=1e-12)
    assert_allclose(median_bandwidth(X), math.sqrt(med / 2), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_bandwidth_all_pairs_up_to_max_samples(dtype):
    X = data(2000, 6, seed=17, dtype=dtype)
    med = brute_median_sq(X)
    assert_allclose(median_bandwidth(X), math.sqrt(med / 2), rtol=1e-10)
    # The seed does not matter when every sample is used.
    assert median_bandwidth(X, seed=1) == median_bandwidth(X, seed=2)


def test_median_bandwidth_subsample_deterministic_and_seeded():
    X = data(2100, 5, seed=18)
    a, b, c = (median_bandwidth(X, seed=s) for s in (0, 0, 1))
    assert a == b
    assert a != c
    idx = subsample_indices(2100, seed=0, max_samples=2000)
    assert len(np.unique(idx)) == 2000 and np.all(np.diff(idx) > 0)
    assert_allclose(a, math.sqrt(brute_median_sq(X[idx]) / 2), rtol=1e-10)
    rng = np.random.default_rng([0, 0x6D6D64])
    assert_array_equal(idx, np.sort(rng.choice(2100, 2000, replace=False)))


def test_median_bandwidth_small_max_samples():
    X = data(300, 4, seed=19)
    idx = subsample_indices(300, seed=5, max_samples=50)
    assert_allclose(median_bandwidth(X, seed=5, max_samples=50), math.sqrt(brute_median_sq(X[idx]) / 2), rtol=1e-10)


def test_median_bandwidth_constant_data_falls_back():
    X = np.ones((10, 3))
    assert median_sq_distance(X) == 0.0
    assert median_bandwidth(X) == FALLBACK_BANDWIDTH == 1.0
    assert median_bandwidth(np.ones((1, 3))) == 1.0


def test_median_validation():
    with pytest.raises(ParameterError, match=r"seed must be an integer >= 0, got -1"):
        median_bandwidth(data(5, 2), seed=-1)
    with pytest.raises(ParameterError, match=r"max_samples must be an integer >= 2, got 1"):
        median_bandwidth(data(5, 2), max_samples=1)
    bad = data(5, 2)
    bad[0, 0] = np.inf
    with pytest.raises(ParameterError, match=r"X must hold finite values only"):
        median_bandwidth(bad)


def test_numerically_diagonal():
    X = data(200, 10, seed=20) * 10
    assert is_numerically_diagonal(RBF(0.01), X)
    assert not is_numerically_diagonal(RBF(median_bandwidth(X)), X)
    # median heuristic: off-diagonal median is exp(-1) up to the median of pairs
    assert_allclose(median_offdiag(RBF(median_bandwidth(X)), X), math.exp(-1.0), rtol=1e-9)
    assert not is_numerically_diagonal(Polynomial(3), X)
    assert not is_numerically_diagonal(RBF(1.0), X[:1])


# ---------------------------------------------------------------- backend


def test_backend_cpu():
    X = data(4, 2)
    assert backend.get_namespace(X, None, X) is np
    assert backend.to_numpy(X) is X
    assert backend.resolve_device("cpu") == "cpu"
    assert backend.to_device(X, "cpu") is X
    with pytest.raises(ParameterError, match=r"device must be one of 'auto', 'cpu', 'cuda', got 'gpu'"):
        backend.resolve_device("gpu")


def _gpu_usable():
    try:
        return backend.resolve_device("auto") == "cuda"
    except ParameterError:
        return False


@pytest.mark.skipif(_gpu_usable(), reason="a CUDA GPU is present")
def test_resolve_device_without_gpu():
    assert backend.resolve_device("auto") == "cpu"
    with pytest.raises(ParameterError, match=r"device 'cuda' needs CuPy and a CUDA GPU"):
        backend.resolve_device("cuda")
    with pytest.raises(ParameterError, match=r"device 'cuda' needs CuPy and a CUDA GPU"):
        backend.to_device(data(3, 2), "cuda")
    X = data(3, 2)
    assert backend.to_device(X, "auto") is X


gpu = pytest.mark.skipif(not _gpu_usable(), reason="needs CuPy and a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kernel", [RBF(4.0), Polynomial(3, coef0=0.1)], ids=["rbf", "poly3"])
def test_row_sums_cupy_equals_numpy(kernel):
    cupy = pytest.importorskip("cupy")
    X = data(3000, 32, seed=21, dtype=np.float32, centred=True)
    Xd = backend.to_device(X, "cuda")
    assert backend.get_namespace(Xd) is cupy
    host, dev = row_sums(kernel, X), row_sums(kernel, Xd)
    assert isinstance(dev.s, np.ndarray) and isinstance(dev.neg, np.ndarray)
    mag = np.abs(kernel.block(X.astype(np.float64), X.astype(np.float64))).sum(axis=1)
    assert_rows_close(dev.s, host.s, mag, RTOL32)
    assert_rows_close(dev.neg, host.neg, mag, RTOL32)


@pytest.mark.gpu
@gpu
def test_gram_and_block_sums_cupy_equal_numpy():
    pytest.importorskip("cupy")
    X = data(200, 8, seed=22, dtype=np.float32)
    Xd = backend.to_device(X, "cuda")
    k = RBF(2.0)
    rows, cols = np.arange(0, 200, 3), np.arange(50, 120)
    assert_allclose(gram(k, Xd, rows, cols), gram(k, X, rows, cols), rtol=0, atol=1e-6)
    assert_allclose(block_sums(k, Xd, rows, cols), block_sums(k, X, rows, cols), rtol=1e-5)
    assert_allclose(median_bandwidth(Xd), median_bandwidth(X), rtol=1e-12)
    with pytest.raises(ParameterError, match=r"same device"):
        backend.get_namespace(X, Xd)


# ---------------------------------------------------------------- working set


def _removal_sequence(n, seed, steps, size):
    rng = np.random.default_rng(seed)
    live = np.arange(n)
    out = []
    for _ in range(steps):
        pos = np.sort(rng.choice(live.size, size, replace=False))
        out.append(pos)
        live = np.delete(live, pos)
    return out, live


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_working_set_matches_loops(kernel, dtype):
    X = data(60, 4, seed=30, dtype=dtype, centred=True)
    ws = WorkingSet(kernel, X)
    removals, live = _removal_sequence(60, 31, 3, 9)  # 27 removed: compacted at least once
    for pos in removals:
        ws.remove(pos)
    assert_array_equal(ws.ids, live)
    assert ws.n == live.size
    samples = np.array([0, 59, 7, 7, int(live[3])])  # dead, live and repeated samples
    ref = ref_block(kernel, X[samples], X[live])
    mag = np.abs(ref).sum(axis=1, keepdims=True)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    got = ws.columns(samples)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (5, live.size)
    assert_rows_close(got, ref, mag, rtol)
    s, neg = ws.column_sums(samples, negative=True)
    colmag = np.abs(ref).sum(axis=0)
    assert_rows_close(s, ref.sum(axis=0), colmag, rtol)
    assert_rows_close(neg, np.minimum(ref, 0.0).sum(axis=0), colmag, rtol)
    assert ws.column_sums(samples)[1] is None
    assert_rows_close(ws.block(samples, live[:4]), ref[:, :4], mag, rtol)


def test_working_set_bits_follow_the_layout_only():
    """Same removals -> the same bytes, for 1 or 3 worker threads and any BLAS setting;
    columns of a sample equal column sums of it alone."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X = data(9000, 16, seed=32, dtype=np.float32, centred=True)
    k = Polynomial(3, coef0=0.1)
    removals, _ = _removal_sequence(9000, 33, 4, 400)
    samples = np.array([3, 4000, 8999, 17, 250, 6])
    results = []
    for jobs, blas in ((1, 1), (3, 2), (None, 2)):
        ws = WorkingSet(k, X, n_jobs=jobs)
        for pos in removals:
            ws.remove(pos)
        with threadpoolctl.threadpool_limits(limits=blas, user_api="blas"):
            assert_array_equal(ws.columns(samples[:1])[0], ws.column_sums(samples[:1])[0])
            results.append(
                [ws.columns(samples).tobytes(), ws.columns(samples[:1]).tobytes()]
                + [a.tobytes() for a in ws.column_sums(samples, negative=True)]
            )
    assert results[0] == results[1] == results[2]


def test_working_set_validation_and_empty():
    X = data(10, 3)
    with pytest.raises(ParameterError, match=r"ids must be distinct"):
        WorkingSet(RBF(1.0), X, ids=[1, 1])
    with pytest.raises(ParameterError, match=r"ids must lie in \[0, 10\)"):
        WorkingSet(RBF(1.0), X, ids=[3, 10])
    with pytest.raises(ParameterError, match=r"kernel must be a schedgen.kernels kernel"):
        WorkingSet("rbf", X)
    ws = WorkingSet(RBF(1.0), X, ids=[2, 5, 7])
    with pytest.raises(ParameterError, match=r"positions must lie in \[0, 3\), got values from 0 to 3"):
        ws.remove([0, 3])
    with pytest.raises(ParameterError, match=r"positions must be distinct"):
        ws.remove([1, 1])
    assert_array_equal(ws.ids, [2, 5, 7])
    ws.remove(np.arange(3))
    assert ws.n == 0 and ws.columns([1, 2]).shape == (2, 0)
    s, neg = ws.column_sums([1], negative=True)
    assert s.shape == neg.shape == (0,)
    assert ws.block([1], [2, 3]).shape == (1, 2)


@pytest.mark.gpu
@gpu
def test_working_set_cupy_equals_numpy():
    pytest.importorskip("cupy")
    X = data(3000, 16, seed=34, dtype=np.float32)
    k = RBF(3.0)
    removals, _ = _removal_sequence(3000, 35, 3, 200)
    host, dev = WorkingSet(k, X), WorkingSet(k, backend.to_device(X, "cuda"))
    for pos in removals:
        host.remove(pos)
        dev.remove(pos)
    samples = np.array([1, 2999, 17])
    assert_array_equal(dev.ids, host.ids)
    assert_allclose(dev.columns(samples), host.columns(samples), rtol=0, atol=1e-6)
    assert_allclose(dev.column_sums(samples)[0], host.column_sums(samples)[0], rtol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_an_interrupt_stops_the_workers_within_an_item(shared):
    """Ctrl-C (a KeyboardInterrupt in the calling thread) during a blocked pass: the
    workers stop after the item they are on, not after draining every item left."""
    import threading
    import time

    from schedgen.kernels._parallel import run_tasks, worker_pool

    main = threading.get_ident()
    done = []

    def fn(item, state):
        if shared and threading.get_ident() == main and item >= 5:
            raise KeyboardInterrupt
        time.sleep(0.01)
        done.append(item)

    items = range(400)
    with pytest.raises(KeyboardInterrupt):
        if shared:
            with worker_pool(2):
                run_tasks(fn, items, lambda: None, n_jobs=2)
        else:
            # The calling thread waits on the workers' futures: the interrupt lands there.
            import schedgen.kernels._parallel as par

            real_result = par.ThreadPoolExecutor.submit

            def submit(self, fn_, *a, **kw):
                fut = real_result(self, fn_, *a, **kw)

                def result(timeout=None):
                    if len(done) < 5:
                        time.sleep(0.05)
                    raise KeyboardInterrupt

                fut.result = result
                return fut

            try:
                par.ThreadPoolExecutor.submit = submit
                run_tasks(fn, items, lambda: None, n_jobs=2)
            finally:
                par.ThreadPoolExecutor.submit = real_result
    assert len(done) < 100, f"{len(done)} of 400 items ran after the interrupt"
