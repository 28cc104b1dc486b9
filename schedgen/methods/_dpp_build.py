"""The ``dpp`` method's work: features -> kernel matrix L -> eigendecomposition -> k-DPP draws.

Imported only when a dpp schedule is computed; :mod:`schedgen.methods.dpp` holds what a
cache hit needs. The sampler is Kulesza & Taskar's exact spectral k-DPP sampler
(2012, Alg. 8 to pick k eigenvectors; the projection DPP they span sampled by the chain
rule, equivalent to Alg. 1's second phase), in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset
from ..errors import ParameterError
from ..kernels import gram, make_kernel, pinned_blas
from ..mmd2 import grow_prefix_sum, split_mmd2
from ..rng import rng
from ._base import MethodOutput, feature_spec
from ._mmd_build import cached_features

__all__ = ["run_dpp", "esp_table", "sample_kdpp", "inclusion_probabilities", "spectrum"]

#: Eigenvalues below this fraction of the largest (times N) are rounding noise of a zero: set to 0.
_RANK_TOL = 1e-12


def spectrum(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped: rounding noise of a zero is 0) and eigenvectors of the symmetric L.

    Returns
    -------
    lam : array of shape (N,), float64, >= 0
    V : array of shape (N, N), float64, columns the eigenvectors
    """
    with pinned_blas():  # LAPACK's bits must not depend on the thread count
        lam, V = np.linalg.eigh(np.asarray(L, dtype=np.float64))
    top = float(lam.max(initial=0.0))
    lam = np.where(lam > _RANK_TOL * max(len(lam), 1) * top, lam, 0.0)
    return lam, V


def esp_table(lam: np.ndarray, k: int) -> np.ndarray:
    """Column-normalised elementary symmetric polynomials of ``lam``.

    ``T[l, n] = e_l(lam_1..lam_n) / c_n`` for l = 0..k, n = 0..N, every column scaled by
    its own c_n > 0 (its largest entry), so nothing over- or underflows whatever N, k
    and the eigenvalues' scale; the sampler only needs ratios within one column.
    The recursion ``e_l(n) = e_l(n-1) + lam_n e_{l-1}(n-1)`` (K&T Alg. 7).

    Returns
    -------
    array of shape (k + 1, N + 1), float64
    """
    lam = _normalised(lam)
    n = lam.shape[0]
    T = np.zeros((k + 1, n + 1))
    T[0, 0] = 1.0
    for j in range(1, n + 1):
        col = T[:, j - 1].copy()
        col[1:] += lam[j - 1] * T[:-1, j - 1]
        T[:, j] = col / col.max()
    return T


def sample_kdpp(lam: np.ndarray, V: np.ndarray, k: int, gen: np.random.Generator,
                T: np.ndarray | None = None) -> np.ndarray:
    """One k-DPP draw, ``P(B) = det(L_B) / e_k(lam)``, from L's eigendecomposition.

    Parameters
    ----------
    lam : array of shape (N,), eigenvalues >= 0 (:func:`spectrum`)
    V : array of shape (N, N), the eigenvectors (columns)
    k : int, at most the number of positive eigenvalues
    gen : numpy Generator
    T : array of shape (k + 1, N + 1), optional
        ``esp_table(lam, k)``, to reuse over draws.

    Returns
    -------
    array of int64, shape (k,): the sample indices, ascending.
    """
    if T is None:
        T = esp_table(lam, k)
    lam = _normalised(lam)  # the scale esp_table used: ratios within a column mix lam and T
    # Phase 1 (Alg. 8): eigenvector n is taken with probability lam_n e_{l-1}(n-1) / e_l(n).
    chosen = []
    left = k
    for n in range(len(lam), 0, -1):
        if left == 0:
            break
        if n == left:
            take = True  # the remaining ones are all needed (their weights are positive)
        else:
            a = lam[n - 1] * T[left - 1, n - 1]
            take = a > 0 and gen.random() < a / (a + T[left, n - 1])
        if take:
            chosen.append(n - 1)
            left -= 1
    W = np.array(V[:, chosen[::-1]], dtype=np.float64)  # N x k, orthonormal columns: K = W Wᵀ
    # Phase 2: the projection DPP of K by the chain rule (Gram-Schmidt on K's columns, as
    # DPPy's proj_dpp_sampler_eig_GS): item i with probability p_i / (k - s), p_i the
    # diagonal of K conditioned on the items drawn; O(N k) a step instead of a QR's O(N k²).
    p = np.einsum("ij,ij->i", W, W)
    C = np.zeros((len(p), k))
    out = np.empty(k, dtype=np.int64)
    for s in range(k):
        p[out[:s]] = 0.0  # already drawn: its probability is 0 up to rounding
        np.maximum(p, 0.0, out=p)
        c = np.cumsum(p)
        i = min(int(np.searchsorted(c, gen.random() * c[-1], side="right")), len(c) - 1)
        out[s] = i
        if s == k - 1:
            break
        u = (W @ W[i] - C[:, :s] @ C[i, :s]) / np.sqrt(p[i])  # K(·, i | drawn) / sqrt(K(i, i | drawn))
        C[:, s] = u
        p -= u * u
    return np.sort(out)


def inclusion_probabilities(lam: np.ndarray, V: np.ndarray, k: int) -> np.ndarray:
    """P(i in B) of the k-DPP: ``sum_n (lam_n e_{k-1}(lam without n) / e_k(lam)) V_in²``.

    The marginal eigenvector weights sum to k, so the result sums to k.
    """
    lam = np.asarray(lam, dtype=np.float64)
    n = len(lam)
    w = np.empty(n)
    lam_s = _normalised(lam)
    ek = _esp(lam_s, k)[k]
    for j in range(n):
        w[j] = lam_s[j] * _esp(np.delete(lam_s, j), k - 1)[k - 1] / ek
    return (V**2) @ w


def _normalised(lam: np.ndarray) -> np.ndarray:
    """``lam`` over the mean of its positive entries: the k-DPP is scale-invariant, and
    e_l of eigenvalues near 1 stays far from float64's limits."""
    lam = np.asarray(lam, dtype=np.float64)
    pos = lam[lam > 0]
    return lam / pos.mean() if pos.size else lam


def _esp(lam: np.ndarray, k: int) -> np.ndarray:
    e = np.zeros(k + 1)
    e[0] = 1.0
    for x in lam:
        e[1:] = e[1:] + x * e[:-1]
    return e


def run_dpp(cfg, ds: Dataset, k: int, *, progress=None, cache_dir: Path | None = None, warn=None) -> MethodOutput:
    """Build the dpp schedule of ``ds`` for batch size ``k`` (``cfg`` a BuildConfig).

    ``batch_mmd2`` is MMD²(A_t, D \\ A_t) with A_t the distinct samples drawn in the epoch
    up to batch t (NaN once every sample was drawn), on the same kernel.
    """
    n = ds.n_samples  # DPPMethod.run has checked that the exact sampler fits
    with pinned_blas():
        X = cached_features(ds, feature_spec(cfg), cache_dir)
    kernel = make_kernel(cfg.kernel, bandwidth=cfg.bandwidth, degree=cfg.degree, coef0=cfg.coef0, X=X, seed=cfg.seed)
    kernel.check_range(X)
    ids = np.arange(n, dtype=np.int64)
    L = gram(kernel, X, ids, ids)
    L = (L + L.T) / 2.0  # exactly symmetric for eigh
    lam, V = spectrum(L)
    rank = int(np.count_nonzero(lam))
    if rank < k:
        raise ParameterError(
            f"a k-DPP needs k <= the kernel's rank; the kernel matrix has {rank} numerically positive "
            f"eigenvalues (of N={n}), got k={k} (identical samples or a degenerate bandwidth lower the rank)"
        )
    T = esp_table(lam, k)
    s_tot = L.sum(axis=1)
    per_epoch = -(-n // k)
    total = cfg.epochs * per_epoch
    indices = np.empty(total * k, dtype=np.int64)
    mmd2 = np.empty(total)
    with pinned_blas():  # the draws' GEMVs must not depend on the BLAS thread count
        _draw_epochs(cfg, k, lam, V, T, L, s_tot, indices, mmd2, per_epoch, total, progress)
    return MethodOutput(
        indices=indices,
        batch_offsets=np.arange(total + 1, dtype=np.int64) * k,
        epoch_offsets=np.arange(cfg.epochs + 1, dtype=np.int64) * per_epoch,
        params={**kernel.params(), "bandwidth_rule": cfg.bandwidth if cfg.kernel == "rbf" and isinstance(cfg.bandwidth, str) else None,
                "rank": rank},
        batch_arrays={"batch_mmd2": mmd2},
    )


def _draw_epochs(cfg, k, lam, V, T, L, s_tot, indices, mmd2, per_epoch, total, progress) -> None:
    """Fill ``indices`` (k per batch) and ``mmd2`` (per batch) with ``cfg.epochs`` epochs of draws."""
    n = len(s_tot)
    b = 0
    for e in range(cfg.epochs):
        seen = np.zeros(n, dtype=bool)
        sA = np.zeros(n)
        S_AA = 0.0
        for t in range(per_epoch):
            B = sample_kdpp(lam, V, k, rng(cfg.seed, "dpp", e, t), T)
            indices[b * k : (b + 1) * k] = B
            new = B[~seen[B]]
            if len(new):
                S_AA = grow_prefix_sum(S_AA, sA[new], L[np.ix_(new, new)])
                sA += L[:, new].sum(axis=1)
                seen[new] = True
            rest = ~seen
            mmd2[b] = split_mmd2(S_AA, sA[rest], s_tot[rest], int(seen.sum()))
            b += 1
            if progress is not None:
                progress(b, total)
