"""The submodular method's work: SMDL's greedy batch selection (Joseph et al. 2019).

Every batch is chosen greedily from a seeded candidate pool of the samples not yet
scheduled in the epoch. Adding candidate x to the batch S (in pick order) scores::

    g(x | S) = 0.2·U(x) + 0.1·R(x | S) + 0.5·MC(x) + 0.2·(FM(S ∪ x) − FM(S))

* U(x) = −Σ_c p_c log p_c, the entropy of a softmax-regression proxy's prediction
  (learn2mix's :class:`~schedgen.methods.learn2mix.SoftmaxProxy`, trained along the
  schedule by one SGD step per batch, step ``default_lr``); U is recomputed once per
  epoch, at its start (in epoch 0 the proxy is zero, so U is constant there).
* R(x | S) = min_{s ∈ S} ‖x − s‖ (0 for the first pick of a batch).
* MC(x) = −‖x − x̄‖, x̄ the mean of all N prepared features.
* FM(S) = Σ_d sqrt(Σ_{s ∈ S} φ_d(s)), φ(x) = softmax(relu(x)) (the code's "normalised
  penultimate activations", here of the prepared features).

Summed over the picks, the gains are F(s_1..s_m) = Σ_i [0.2·U(s_i) + 0.1·min_{j<i}
‖s_i − s_j‖ + 0.5·MC(s_i)] + 0.2·FM(S): the function the greedy maximises.

With ``normalize`` the score is the authors' code's (``lib/samplers/submodular.py``):
each term's vector over the remaining pool, (0.2·U, 0.1·R, 0.5·MC, 0.2·FM(S ∪ x)),
divided by its sum, then added. The division cancels the weights and, MC being
negative, flips its sign (far from the mean wins). A term whose sum is 0 (R at the
first pick) makes the code's scores NaN, and ``np.argmax`` then returns the first
remaining candidate: reproduced as such.

Candidates (the code's "lazier than lazy greedy", ``ltl_log_ep: 5`` = ln(1/ε),
ε = e⁻⁵): r = min(n_left, max(m, ⌈5·n_left / k⌉)) samples drawn without replacement
from the n_left not yet scheduled, once per batch, by ``rng(seed, "submodular", e)``;
the greedy then picks m = min(k, n_left) of them. The code draws its pool once per
batch too (its per-step redraw never fires once the pool has r items); the ``max(m,
…)`` keeps batches whole where the code's would shrink, and its two-level partitioning
(10 partitions, then a greedy over their picks) is not reproduced. Ties go to the
earliest candidate in the pool's draw order.

Diagnostic (not part of the rule): given a kernel (the mmd method's, on the same
features), ``batch_mmd2[b]`` is MMD²(A_t, D \\ A_t), A_t the samples of the epoch's batches
0..t, computed batch by batch as :func:`schedgen.evaluate.prefix_mmd2` computes it
(:class:`PrefixMMD2`), so a submodular store is scored as an mmd store and as
``schedgen plot`` scores a random order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..kernels import WorkingSet, row_sums, worker_pool
from ..mmd2 import grow_prefix_sum, split_mmd2
from ..rng import rng
from .learn2mix import SoftmaxProxy, default_lr

__all__ = ["WEIGHTS", "LTL_LOG_EPS", "SubmodularResult", "PrefixMMD2", "candidate_count", "soft_features",
           "greedy_batch", "submodular_schedule", "BLOCK_ROWS"]

#: (U, R, MC, FM), the authors' configuration (config/smdl.yml alpha_1..alpha_4).
WEIGHTS = (0.2, 0.1, 0.5, 0.2)
#: ln(1/ε) of stochastic greedy, the authors' ``ltl_log_ep``.
LTL_LOG_EPS = 5
BLOCK_ROWS = 4096


def candidate_count(n_left: int, k: int) -> int:
    """The pool size ``min(n_left, max(min(k, n_left), ceil(LTL_LOG_EPS * n_left / k)))``."""
    return min(n_left, max(min(k, n_left), math.ceil(LTL_LOG_EPS * n_left / k)))


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))


def soft_features(X: np.ndarray) -> np.ndarray:
    """φ(x) = softmax(relu(x)) per row: float64 of shape (n_samples, n_features)."""
    out = np.empty(X.shape, dtype=np.float64)
    for s in range(0, X.shape[0], BLOCK_ROWS):
        out[s : s + BLOCK_ROWS] = np.exp(_log_softmax(np.maximum(X[s : s + BLOCK_ROWS].astype(np.float64), 0.0)))
    return out


def prediction_entropy(proxy: SoftmaxProxy, X: np.ndarray) -> np.ndarray:
    """U = −Σ_c p_c log p_c of the proxy's softmax on every row of X: float64 (n_samples,)."""
    out = np.empty(X.shape[0], dtype=np.float64)
    for s in range(0, X.shape[0], BLOCK_ROWS):
        logp = _log_softmax(X[s : s + BLOCK_ROWS].astype(np.float64) @ proxy.W + proxy.b)
        out[s : s + len(logp)] = -(np.exp(logp) * logp).sum(axis=1)
    return out


def greedy_batch(X: np.ndarray, U: np.ndarray, MC: np.ndarray, Phi: np.ndarray, m: int, *,
                 normalize: bool = False, weights=WEIGHTS, trace: list | None = None) -> np.ndarray:
    """Pick m of the pool's r candidates greedily; their positions in pick order.

    Parameters
    ----------
    X : array of shape (r, n_features)
        The candidates' features (float64).
    U, MC : arrays of shape (r,)
        Their prediction entropy and their −distance to the data mean.
    Phi : array of shape (r, n_features)
        Their soft features φ.
    m : int
        How many to pick, ``m <= r``.
    normalize : bool
        The authors' per-term normalisation by the sum (module docstring).
    weights : 4 floats
        (U, R, MC, FM); a zero weight drops its term (tests use (1, 0, 0, 1)).
    trace : list, optional
        Weighted mode: each step's gains g(x | S) (shape (r,), −inf for the picked)
        are appended to it, for tests.

    Returns
    -------
    positions : array of int64, shape (m,)
        Ties: the smallest position.
    """
    wU, wR, wMC, wFM = weights
    r = X.shape[0]
    sq = (X * X).sum(axis=1)
    avail = np.ones(r, dtype=bool)
    mind = np.zeros(r)  # R(x | S)
    acc = np.zeros(Phi.shape[1])  # Σ_{s ∈ S} φ(s)
    fm_S = 0.0
    picks = np.empty(m, dtype=np.int64)
    for t in range(m):
        fm_new = np.sqrt(acc + Phi).sum(axis=1)  # FM(S ∪ x)
        if normalize:
            live = np.flatnonzero(avail)
            score = np.zeros(len(live))
            first = False
            for v in (wU * U, wR * mind, wMC * MC, wFM * fm_new):
                total = v[live].sum()
                if total == 0:  # the code's 0/0: NaN scores, np.argmax's first candidate
                    first = True
                    break
                score += v[live] / total
            j = int(live[0] if first else live[int(np.argmax(score))])
        else:
            score = wU * U + wR * mind + wMC * MC + wFM * (fm_new - fm_S)
            score[~avail] = -np.inf
            if trace is not None:
                trace.append(score.copy())
            j = int(np.argmax(score))
        picks[t] = j
        avail[j] = False
        if wR:
            d = np.sqrt(np.maximum(sq + sq[j] - 2.0 * (X @ X[j]), 0.0))
            mind = d if t == 0 else np.minimum(mind, d)
        acc += Phi[j]
        fm_S = fm_new[j]
    return picks


@dataclass(frozen=True)
class SubmodularResult:
    """The schedule's arrays; ``batch_mmd2`` (one per batch, float64) when a kernel was given, else None."""

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    batch_mmd2: np.ndarray | None = None


class PrefixMMD2:
    """MMD²(A, D \\ A) of a growing prefix A, one batch at a time, never N × N in memory.

    The loop of :func:`schedgen.evaluate.prefix_mmd2` (which this layer may not import;
    a test keeps the two equal bit for bit): ``s_A(i) = Σ_{j ∈ A} K_ij`` for the samples
    not reached yet, in a :class:`~schedgen.kernels.WorkingSet` that loses each batch,
    ``S_AA`` grown by :func:`schedgen.mmd2.grow_prefix_sum` and MMD² by
    :func:`schedgen.mmd2.split_mmd2` from the rows of the rest. About N²/2 kernel
    values over an epoch.

    Parameters
    ----------
    kernel : a ``schedgen.kernels`` kernel
    X : array of shape (n_samples, n_features)
        The features the kernel is evaluated on (float32, as the mmd method's).
    s_tot : array of shape (n_samples,)
        ``Σ_j K_ij`` over all samples (``row_sums``).
    """

    def __init__(self, kernel, X, s_tot: np.ndarray):
        n = X.shape[0]
        self._ws = WorkingSet(kernel, X)
        self._s_tot = np.asarray(s_tot, dtype=np.float64)
        self._Q = np.arange(n, dtype=np.int64)  # the samples not reached yet, ascending (= ws.ids)
        self._sA = np.zeros(n)
        self._S_AA = 0.0
        self._n = n

    def add(self, batch: np.ndarray) -> float:
        """Add ``batch`` (distinct samples not added before) to A; MMD²(A, D \\ A), NaN once D \\ A is empty."""
        B = np.asarray(batch, dtype=np.int64)
        pos = np.searchsorted(self._Q, B)
        keep = np.ones(len(self._Q), dtype=bool)
        keep[pos] = False
        self._S_AA = grow_prefix_sum(self._S_AA, self._sA[pos], self._ws.block(B, B))
        rest = self._Q[keep]
        if len(rest):
            inc, _ = self._ws.column_sums(B)  # Σ_{b∈B} K(b, i), summed in batch order
            self._sA = self._sA[keep] + inc[keep]
        else:
            self._sA = self._sA[keep]
        self._ws.remove(pos)
        self._Q = rest
        return split_mmd2(self._S_AA, self._sA, self._s_tot[rest], self._n - len(rest))


def _resume(checkpoint, proxy: SoftmaxProxy, indices: np.ndarray, mmd2: np.ndarray, n: int, per_epoch: int):
    """(epoch, batch, U) to go on from, with the proxy, ``indices`` and ``mmd2`` restored;
    (0, 0, None) without a checkpoint of this run."""
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        return 0, 0, None
    shapes = {"W": proxy.W.shape, "b": proxy.b.shape, "U": (n,), "indices": indices.shape, "mmd2": mmd2.shape,
              "epoch": (), "batch": ()}
    try:
        if any(np.shape(saved[name]) != shape for name, shape in shapes.items()):
            return 0, 0, None  # another run's state: start afresh
        e, i = int(saved["epoch"]), int(saved["batch"])
    except (KeyError, TypeError, ValueError):
        return 0, 0, None
    if not (0 <= e < indices.shape[0] // n and 0 <= i < per_epoch):
        return 0, 0, None
    proxy.W, proxy.b = np.array(saved["W"], dtype=np.float64), np.array(saved["b"], dtype=np.float64)
    indices[:] = saved["indices"]
    mmd2[:] = saved["mmd2"]
    return e, i, np.array(saved["U"], dtype=np.float64)


def submodular_schedule(X: np.ndarray, y: np.ndarray, k: int, *, epochs: int, seed: int, normalize: bool = False,
                        kernel=None, s_tot: np.ndarray | None = None, progress=None,
                        checkpoint=None) -> SubmodularResult:
    """Every epoch a permutation of range(N) cut into batches of k (the last short),
    each batch chosen by :func:`greedy_batch` from a seeded pool (module docstring).

    A checkpoint holds the proxy, the epoch's U, the indices and MMD² so far and (epoch,
    batch); on resume the epoch's pool draws before that batch are replayed (their sizes
    follow from n and k alone), and so is the epoch's MMD² prefix (from the indices), so
    a resumed run gives the same bytes as an uninterrupted one.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        The prepared features.
    y : array of int, shape (n_samples,)
        Labels the proxy learns.
    kernel : a ``schedgen.kernels`` kernel, optional
        For the diagnostic ``batch_mmd2`` (:class:`PrefixMMD2` on X, restarted every
        epoch); it does not change the batches. None: no diagnostic.
    s_tot : array of shape (n_samples,), optional
        The kernel's row sums on X, when already computed (e.g. cached).
    checkpoint : schedgen.checkpoint.Checkpoint, optional
    """
    if kernel is None:
        return _schedule(X, y, k, epochs, seed, normalize, None, progress, checkpoint)
    if s_tot is None:
        s_tot, _ = row_sums(kernel, X)
    with worker_pool():  # one set of kernel worker threads for the whole run (BLAS pinned, as before)
        return _schedule(X, y, k, epochs, seed, normalize, (kernel, s_tot), progress, checkpoint)


def _schedule(X, y, k, epochs, seed, normalize, diagnostic, progress, checkpoint) -> SubmodularResult:
    n, D = X.shape
    per_epoch = -(-n // k)
    X64 = np.asarray(X, dtype=np.float64)
    MC = -np.sqrt(((X64 - X64.mean(axis=0)) ** 2).sum(axis=1))
    Phi = soft_features(X64)
    y = np.asarray(y, dtype=np.int64)
    proxy = SoftmaxProxy(D, int(y.max()) + 1, default_lr(X64))
    indices = np.zeros(epochs * n, dtype=np.int64)
    ends = np.minimum(np.arange(1, per_epoch + 1, dtype=np.int64) * k, n)
    batch_offsets = np.concatenate([[0], (np.arange(epochs, dtype=np.int64)[:, None] * n + ends).ravel()])
    total = epochs * per_epoch
    mmd2 = np.full(total, np.nan)
    e0, i0, U = _resume(checkpoint, proxy, indices, mmd2, n, per_epoch)

    def state(e, i):
        return {"epoch": np.int64(e), "batch": np.int64(i), "W": proxy.W, "b": proxy.b, "U": U, "indices": indices,
                "mmd2": mmd2}

    for e in range(e0, epochs):
        start = i0 if e == e0 else 0
        if start == 0:
            U = prediction_entropy(proxy, X64)  # refreshed once per epoch
        g = rng(seed, "submodular", e)
        for i in range(start):  # the draws of the batches a checkpoint already holds
            n_left = n - i * k
            g.choice(n_left, candidate_count(n_left, k), replace=False)
        left = np.ones(n, dtype=bool)
        left[indices[e * n : e * n + start * k]] = False
        prefix = PrefixMMD2(diagnostic[0], X, diagnostic[1]) if diagnostic is not None else None
        if prefix is not None:  # the epoch's prefix before `start`, replayed: the same steps, the same bits
            for i in range(start):
                mmd2[e * per_epoch + i] = prefix.add(indices[e * n + i * k : e * n + min((i + 1) * k, n)])
        pos = e * n + start * k
        for i in range(start, per_epoch):
            remaining = np.flatnonzero(left)
            n_left = len(remaining)
            m = min(k, n_left)
            pool = remaining[g.choice(n_left, candidate_count(n_left, k), replace=False)]
            batch = pool[greedy_batch(X64[pool], U[pool], MC[pool], Phi[pool], m, normalize=normalize)]
            indices[pos : pos + m] = batch
            pos += m
            if prefix is not None:
                mmd2[e * per_epoch + i] = prefix.add(batch)
            left[batch] = False
            proxy.step(X64[batch], y[batch])
            if progress is not None:
                progress(e * per_epoch + i + 1, total)
            if checkpoint is not None and i + 1 < per_epoch:
                checkpoint.maybe_save(lambda: state(e, i + 1))
        if checkpoint is not None and e + 1 < epochs:
            checkpoint.maybe_save(lambda: state(e + 1, 0))
    return SubmodularResult(indices=indices, batch_offsets=batch_offsets.astype(np.int64),
                            epoch_offsets=np.arange(epochs + 1, dtype=np.int64) * per_epoch,
                            batch_mmd2=mmd2 if diagnostic is not None else None)
