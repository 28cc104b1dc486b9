"""The ``dpp`` method's work: features -> kernel matrix L (or its Nyström factor) ->
eigendecomposition -> k-DPP draws.

Imported only when a dpp schedule is computed; :mod:`schedgen.methods.dpp` holds what a
cache hit needs. The sampler is Kulesza & Taskar's spectral k-DPP sampler (2012, Alg. 8
to pick k eigenvectors; the projection DPP they span sampled by the chain rule,
equivalent to Alg. 1's second phase), in float64, on the eigendecomposition of L
(:func:`spectrum`) or, for L = ΦΦᵀ, on the one obtained from the M × M dual matrix
ΦᵀΦ (:func:`dual_spectrum`, K&T §3.3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset
from ..errors import ParameterError
from ..kernels import gram, make_kernel, pinned_blas, sq_norms
from ..mmd2 import grow_prefix_sum, split_mmd2
from ..rng import rng
from ._base import MethodOutput, feature_spec, stage
from ._mmd_build import cached_features, cached_row_sums, nystrom_factor

__all__ = ["run_dpp", "esp_table", "sample_kdpp", "inclusion_probabilities", "spectrum", "dual_spectrum"]

#: Eigenvalues below this fraction of the largest (times N) are rounding noise of a zero: set to 0.
_RANK_TOL = 1e-12
#: Rows per block of the dual eigenvectors' GEMM.
_V_BLOCK = 4096


def spectrum(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped: rounding noise of a zero is 0) and eigenvectors of the symmetric L.

    Returns
    -------
    lam : array of shape (N,), float64, >= 0
    V : array of shape (N, N), float64, columns the eigenvectors
    """
    with pinned_blas():  # LAPACK's bits must not depend on the thread count
        lam, V = np.linalg.eigh(np.asarray(L, dtype=np.float64))
    return _clip(lam), V


def _clip(lam: np.ndarray) -> np.ndarray:
    top = float(lam.max(initial=0.0))
    return np.where(lam > _RANK_TOL * max(len(lam), 1) * top, lam, 0.0)


def dual_spectrum(Phi: np.ndarray, *, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The eigendecomposition of ``L = ΦΦᵀ`` (N × N) from the dual ``C = ΦᵀΦ`` (M × M).

    ``C v = λ v`` gives ``L (Φv) = λ (Φv)`` with ``‖Φv‖² = λ``, so L's eigenvectors with
    a positive eigenvalue are ``Φ v / sqrt(λ)`` (K&T 2012, §3.3). Eigenvalues are clipped
    as by :func:`spectrum` (rounding noise of a zero is 0); their columns are zero, and
    the sampler never picks them.

    Parameters
    ----------
    Phi : array of shape (N, M), float64
    overwrite : bool
        Write the eigenvectors into Phi's memory (row block by row block), so the factor
        and L's eigenvectors never coexist: O(N·M) memory in all.

    Returns
    -------
    lam : array of shape (M,), float64, >= 0
    V : array of shape (N, M), float64, orthonormal columns where lam > 0, zero elsewhere
    """
    Phi = np.asarray(Phi, dtype=np.float64)
    V = Phi if overwrite else np.empty_like(Phi)
    with pinned_blas():  # the GEMMs' and LAPACK's bits must not depend on the thread count
        C = Phi.T @ Phi
        lam, W = np.linalg.eigh((C + C.T) / 2.0)
        lam = _clip(lam)
        pos = lam > 0
        A = np.zeros_like(W)
        A[:, pos] = W[:, pos] / np.sqrt(lam[pos])
        for i0 in range(0, Phi.shape[0], _V_BLOCK):
            V[i0 : i0 + _V_BLOCK] = Phi[i0 : i0 + _V_BLOCK] @ A  # a block's rows are read before written
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
    positive = int(np.count_nonzero(np.asarray(lam) > 0))
    if not 1 <= k <= positive:
        # Past the rank, phase 1 would be forced onto zero eigenvalues: subsets with det(L_B) = 0.
        raise ParameterError(f"a k-DPP draw needs 1 <= k <= rank(L) = {positive} (positive eigenvalues), got k={k}")
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


def run_dpp(cfg, ds: Dataset, k: int, *, progress=None, cache_dir: Path | None = None, warn=None,
            checkpoint=None) -> MethodOutput:
    """Build the dpp schedule of ``ds`` for batch size ``k`` (``cfg`` a BuildConfig).

    Exact (``cfg.approx`` None): L = the N × N kernel matrix and its eigendecomposition.
    ``cfg.approx = "nystrom:M"``: L = ΦΦᵀ with Φ the Nyström factor of M k-means
    landmarks (:mod:`schedgen.kernels.nystrom`), its error measured before the draws,
    the eigendecomposition from the M × M dual (:func:`dual_spectrum`).

    ``batch_mmd2`` is MMD²(A_t, D \\ A_t) on the exact kernel, with A_t the distinct
    samples drawn in the epoch up to batch t (NaN once every sample was drawn).

    With a :class:`~schedgen.checkpoint.Checkpoint`, the draws done are saved every
    ``checkpoint.every`` seconds (with the epoch's running MMD² sums); a rerun recomputes
    the deterministic eigendecomposition and continues after the last saved batch, to
    the same bytes (draw (e, b) depends only on its own seed).
    """
    n = ds.n_samples  # DPPMethod.run has checked that the sampler fits
    with pinned_blas():
        X = cached_features(ds, feature_spec(cfg), cache_dir)
    kernel = make_kernel(cfg.kernel, bandwidth=cfg.bandwidth, degree=cfg.degree, coef0=cfg.coef0, X=X, seed=cfg.seed)
    kernel.check_range(X)
    ids = np.arange(n, dtype=np.int64)
    recorded = {}
    if cfg.approx is None:
        L = gram(kernel, X, ids, ids)
        L = (L + L.T) / 2.0  # exactly symmetric for eigh
        eig = stage(progress, "eigendecomposition")
        if eig:
            eig(0, 1)  # LAPACK reports nothing while it runs: the stage and its elapsed time show
        lam, V = spectrum(L)
        if eig:
            eig(1, 1)
        s_tot = L.sum(axis=1)
        exact = _DenseColumns(L)
        what = "the kernel matrix has"
    else:
        factor, recorded = nystrom_factor(cfg, kernel, X, progress)
        lam, V = dual_spectrum(factor.features, overwrite=True)  # Φ's memory now holds V
        s_tot = cached_row_sums(kernel, X, fingerprint=ds.fingerprint,
                                feature_params=feature_spec(cfg).params(ds.n_features), cache_dir=cache_dir,
                                progress=progress)[0]
        exact = _KernelColumns(kernel, X)
        what = f"the Nyström factor of --approx {cfg.approx} has"
    rank = int(np.count_nonzero(lam))
    if rank < k:
        raise ParameterError(
            f"a k-DPP needs k <= the kernel's rank; {what} {rank} numerically positive "
            f"eigenvalues (of N={n}), got k={k} (identical samples or a degenerate bandwidth lower the rank)"
        )
    T = esp_table(lam, k)
    per_epoch = -(-n // k)
    total = cfg.epochs * per_epoch
    indices = np.empty(total * k, dtype=np.int64)
    mmd2 = np.empty(total)
    with pinned_blas():  # the draws' GEMVs must not depend on the BLAS thread count
        _draw_epochs(cfg, k, lam, V, T, exact, s_tot, indices, mmd2, per_epoch, total, progress, checkpoint)
    return MethodOutput(
        indices=indices,
        batch_offsets=np.arange(total + 1, dtype=np.int64) * k,
        epoch_offsets=np.arange(cfg.epochs + 1, dtype=np.int64) * per_epoch,
        params={**kernel.params(), "bandwidth_rule": cfg.bandwidth if cfg.kernel == "rbf" and isinstance(cfg.bandwidth, str) else None,
                "rank": rank, **recorded},
        batch_arrays={"batch_mmd2": mmd2},
    )


class _DenseColumns:
    """Exact kernel columns from the dense L of the exact sampler."""

    def __init__(self, L: np.ndarray) -> None:
        self.L = L

    def column_sums(self, new: np.ndarray) -> np.ndarray:
        return self.L[:, new].sum(axis=1)

    def block(self, new: np.ndarray) -> np.ndarray:
        return self.L[np.ix_(new, new)]


class _KernelColumns:
    """Exact kernel columns computed on demand (N × |new| at a time: no N × N matrix)."""

    def __init__(self, kernel, X: np.ndarray) -> None:
        self.kernel, self.X = kernel, X
        self.ids = np.arange(X.shape[0], dtype=np.int64)
        self.sq = sq_norms(X) if kernel.uses_sq else None

    def column_sums(self, new: np.ndarray) -> np.ndarray:
        return gram(self.kernel, self.X, self.ids, new, sq=self.sq).sum(axis=1)

    def block(self, new: np.ndarray) -> np.ndarray:
        return gram(self.kernel, self.X, new, new, sq=self.sq)


def _resume(checkpoint, n: int, k: int, total: int):
    """The saved (batches done, indices, mmd2, seen, sA, S_AA), or None without a usable
    checkpoint of this run (then start afresh)."""
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        return None
    try:
        b = int(saved["batch"])
        idx, mm = np.asarray(saved["indices"], dtype=np.int64), np.asarray(saved["mmd2"], dtype=np.float64)
        seen, sA, S_AA = np.asarray(saved["seen"], dtype=bool), np.asarray(saved["sA"], dtype=np.float64), \
            float(saved["S_AA"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 < b < total and idx.shape == (b * k,) and mm.shape == (b,) and seen.shape == (n,)
            and sA.shape == (n,) and idx.min() >= 0 and idx.max() < n):
        return None  # another run's state
    return b, idx, mm, seen, sA, S_AA


def _draw_epochs(cfg, k, lam, V, T, exact, s_tot, indices, mmd2, per_epoch, total, progress, checkpoint) -> None:
    """Fill ``indices`` (k per batch) and ``mmd2`` (per batch) with ``cfg.epochs`` epochs of
    draws, from a checkpoint's last saved batch when there is one."""
    n = len(s_tot)
    b0 = 0
    seen, sA, S_AA = np.zeros(n, dtype=bool), np.zeros(n), 0.0
    start = _resume(checkpoint, n, k, total)
    if start is not None:
        b0, done, done_mmd2, seen, sA, S_AA = start
        indices[: b0 * k] = done
        mmd2[:b0] = done_mmd2
    if progress is not None:
        progress(b0, total)

    def state():
        return {"batch": np.int64(b), "indices": indices[: b * k], "mmd2": mmd2[:b], "seen": seen, "sA": sA,
                "S_AA": np.float64(S_AA)}

    b = b0
    for e in range(b0 // per_epoch, cfg.epochs):
        if b % per_epoch == 0:  # the epoch's distinct prefix starts empty
            seen, sA, S_AA = np.zeros(n, dtype=bool), np.zeros(n), 0.0
        for t in range(b % per_epoch, per_epoch):
            B = sample_kdpp(lam, V, k, rng(cfg.seed, "dpp", e, t), T)
            indices[b * k : (b + 1) * k] = B
            new = B[~seen[B]]
            if len(new):
                S_AA = grow_prefix_sum(S_AA, sA[new], exact.block(new))
                sA += exact.column_sums(new)
                seen[new] = True
            rest = ~seen
            mmd2[b] = split_mmd2(S_AA, sA[rest], s_tot[rest], int(seen.sum()))
            b += 1
            if checkpoint is not None and b < total:  # the finished state is the store itself
                checkpoint.maybe_save(state)
            if progress is not None:
                progress(b, total)
