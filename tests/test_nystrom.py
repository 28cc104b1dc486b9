"""``schedgen.kernels.nystrom``: the Nyström factor and its measured error, against float64 oracles.

Oracles: the kernel written out as ``exp(-‖x - y‖² / (2σ²))`` with NumPy broadcasting in
float64; the factor ``K_XZ K_ZZ^{-1/2}`` with the pseudo-inverse written out from
``numpy.linalg.eigh``; the errors as their formulas on those dense matrices.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from schedgen.errors import ParameterError
from schedgen.kernels import RBF, Polynomial
from schedgen.kernels.nystrom import (
    EIG_RTOL,
    ERROR_ROWS,
    error_rows,
    kmeans_landmarks,
    nystrom,
    nystrom_error,
    nystrom_features,
)


def _rbf(A, B, sigma):
    d2 = ((A[:, None, :].astype(np.float64) - B[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2))


def _mixture(n, d=5, seed=0):
    g = np.random.default_rng([seed, n, d])
    centres = g.normal(size=(6, d)) * 2.0
    return (centres[g.integers(0, 6, n)] + g.normal(size=(n, d))).astype(np.float32)


def _oracle_factor(K_xz, K_zz, rtol=EIG_RTOL):
    mu, U = np.linalg.eigh((K_zz + K_zz.T) / 2)
    keep = mu > rtol * mu.max()
    return K_xz @ (U[:, keep] / np.sqrt(mu[keep])) @ U[:, keep].T


def test_landmarks_at_every_point_reproduce_the_kernel():
    X = np.random.default_rng(1).normal(size=(40, 3))
    kernel = RBF(1.5)
    f = nystrom_features(kernel, X, X)
    K = _rbf(X, X, 1.5)
    assert f.features.shape == (40, 40) and f.features.dtype == np.float64 and f.rank == 40
    assert_allclose(f.features @ f.features.T, K, rtol=0, atol=1e-9)
    # k-means with M = N clusters puts one centre on every (distinct) point: the same factor's product
    g = nystrom(kernel, X.astype(np.float32), 40, seed=0)
    assert_allclose(np.sort(g.landmarks, axis=0), np.sort(X.astype(np.float32).astype(np.float64), axis=0), atol=1e-6)
    K32 = _rbf(X.astype(np.float32), X.astype(np.float32), 1.5)
    assert_allclose(g.features @ g.features.T, K32, rtol=0, atol=1e-8)


def test_factor_matches_the_pseudo_inverse_square_root_written_out():
    X = _mixture(300)
    Z = kmeans_landmarks(X, 25, seed=4)
    f = nystrom_features(RBF(2.0), X, Z)
    assert_allclose(f.features, _oracle_factor(_rbf(X, Z, 2.0), _rbf(Z, Z, 2.0)), rtol=1e-9, atol=1e-12)
    poly = Polynomial(2, 1.0)
    s = poly.resolved_scale(X.shape[1])
    K = lambda A, B: (s * A.astype(np.float64) @ B.astype(np.float64).T + 1.0) ** 2  # noqa: E731
    assert_allclose(nystrom_features(poly, X, Z).features, _oracle_factor(K(X, Z), K(Z, Z)), rtol=1e-8, atol=1e-10)


def test_duplicate_landmarks_are_cut_off_not_inverted():
    """Two equal landmarks make K(Z, Z) singular: the pseudo-inverse drops the zero
    eigenvalue (rank M - 1) and ΦΦᵀ is still the Nyström approximation of the distinct ones."""
    X = np.random.default_rng(2).normal(size=(30, 2))
    Z = np.vstack([X[:10], X[3:4]])  # landmark 10 repeats landmark 3
    f = nystrom_features(RBF(1.0), X, Z)
    assert f.rank == 10 and np.isfinite(f.features).all()
    ref = nystrom_features(RBF(1.0), X, X[:10])
    assert_allclose(f.features @ f.features.T, ref.features @ ref.features.T, rtol=0, atol=1e-9)
    assert f.cutoff == pytest.approx(EIG_RTOL * np.linalg.eigvalsh(_rbf(Z, Z, 1.0)).max(), rel=1e-9)


def test_error_shrinks_with_the_number_of_landmarks():
    X = _mixture(800)
    kernel = RBF(2.5)
    errs = [nystrom_error(kernel, X, nystrom(kernel, X, m, seed=0).features, seed=0) for m in (4, 16, 64, 256)]
    for a, b in zip(errs, errs[1:]):
        assert b.s_tot_median < a.s_tot_median and b.s_tot_max < a.s_tot_max and b.frobenius < a.frobenius, (a, b)
    assert errs[-1].s_tot_median < 1e-3 and errs[0].frobenius > 10 * errs[-1].frobenius
    print([(e.s_tot_median, e.s_tot_max, e.frobenius) for e in errs])


def test_error_equals_a_direct_float64_computation():
    n = 2300  # beyond ERROR_ROWS: a subsample
    X = _mixture(n, d=4, seed=3)
    kernel = RBF(1.7)
    Phi = nystrom(kernel, X, 30, seed=5).features
    err = nystrom_error(kernel, X, Phi, seed=5)
    S = error_rows(n, seed=5)
    assert err.rows == ERROR_ROWS == len(S) and len(np.unique(S)) == len(S)
    K_S = _rbf(X[S], X, 1.7)
    exact = K_S.sum(axis=1)
    approx = np.array([Phi[i] @ Phi.sum(axis=0) for i in S])
    rel = np.abs(approx - exact) / exact
    K_SS = K_S[:, S]
    frob = np.sqrt(((K_SS - Phi[S] @ Phi[S].T) ** 2).sum() / (K_SS**2).sum())
    assert_allclose([err.s_tot_median, err.s_tot_max, err.frobenius], [np.median(rel), rel.max(), frob], rtol=1e-9)
    assert err.params() == {"s_tot_median": err.s_tot_median, "s_tot_max": err.s_tot_max,
                            "frobenius": err.frobenius, "rows": ERROR_ROWS}


def test_error_rows_are_seeded_and_all_rows_below_the_subsample():
    assert np.array_equal(error_rows(1500, seed=0), np.arange(1500))
    a, b = error_rows(10_000, seed=0), error_rows(10_000, seed=0)
    assert np.array_equal(a, b) and len(a) == 2000 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, error_rows(10_000, seed=1))


def test_same_inputs_same_bytes_whatever_the_threads():
    X = _mixture(5000, d=8)
    a = nystrom(RBF(3.0), X, 40, seed=7, n_jobs=1)
    b = nystrom(RBF(3.0), X, 40, seed=7, n_jobs=2)
    assert a.features.tobytes() == b.features.tobytes() and a.landmarks.tobytes() == b.landmarks.tobytes()
    assert nystrom(RBF(3.0), X, 40, seed=8).landmarks.tobytes() != a.landmarks.tobytes()


def test_kmeans_fits_a_seeded_subsample_beyond_fit_rows():
    X = _mixture(3000)
    a = kmeans_landmarks(X, 10, seed=1, fit_rows=500)
    assert a.shape == (10, 5) and a.dtype == np.float64
    assert np.array_equal(a, kmeans_landmarks(X, 10, seed=1, fit_rows=500))
    assert not np.array_equal(a, kmeans_landmarks(X, 10, seed=1))


@pytest.mark.parametrize("call, match", [
    (lambda X: kmeans_landmarks(X, 0, seed=0), "number of landmarks M must be an integer >= 1, got 0"),
    (lambda X: kmeans_landmarks(X, 21, seed=0), r"at most the number of samples \(N=20\), got M=21"),
    (lambda X: kmeans_landmarks(X, 2.5, seed=0), "must be an integer, got 2.5"),
    (lambda X: nystrom_features(RBF(1.0), X, X[:, :2]), r"landmarks must have shape \(M >= 1, 3\)"),
    (lambda X: nystrom_features("rbf", X, X), "kernel must be a schedgen.kernels kernel"),
    (lambda X: nystrom_error(RBF(1.0), X, np.ones((5, 2)), seed=0), r"features must have shape \(20, M\)"),
    (lambda X: nystrom_features(RBF(1.0), np.where(X > 0, np.nan, X), X), "finite values only"),
])
def test_bad_input_refused_with_one_line(call, match):
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ParameterError, match=match) as info:
        call(X)
    assert "\n" not in str(info.value)
