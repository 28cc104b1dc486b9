"""learn2mix as a schedule: class mixes that follow the loss, seeded and replayable.

Class proportions α start at the training set's class proportions. After each
epoch, with class-wise mean losses L (DESIGN.md section 2, paper Alg. 2)::

    α ← α + γ (L / ΣL − α),      γ ∈ (0, 1] the mixing rate

Every batch of an epoch holds exactly k samples: ``largest_remainder_counts(α, k)``
of class j, drawn from a per-class permutation through a cyclic pointer (paper
Eqs. 12-13), so a small class repeats instead of running out.

Rules of the schedule (all of it a pure function of ``(labels, k, seed, epoch, α,
batches_per_epoch)``):

* **Permutation.** In epoch e, class j is visited in the order
  ``members_j[default_rng([seed, e, j]).permutation(n_j)]``, where ``members_j``
  are the sample indices of class j in ascending order.
* **Pointer and wrap.** Each class has a pointer into its permutation that starts
  at 0 at the beginning of every epoch (each epoch draws a fresh permutation, so
  nothing carries over). A batch takes the next ``c_j`` entries; past the end the
  pointer wraps to the start of the *same* epoch's permutation. Draw t of class j
  in epoch e is therefore ``perm_j[t mod n_j]``: every sample of the class appears
  once before any repeats, then the same order cycles.
* **In-batch order.** Samples are ordered by class id, and within a class by draw
  order. A class with ``c_j = 0`` contributes nothing (its pointer stays put).
* **Batches per epoch.** ``ceil(N / k)`` unless given.

The offline precompute (:func:`learn2mix_schedule`) gets its losses from a cheap
proxy, a multinomial softmax regression trained by plain SGD along the schedule
itself; the α used in every epoch and the losses that moved it are recorded.
Online trainers use :class:`Learn2MixPlanner` directly (``next_batch`` /
``end_epoch``) with their own class-wise losses (:func:`class_mean_losses`).

Pure NumPy/SciPy: nothing here imports torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np

from .errors import DataError, ParameterError

__all__ = [
    "ALPHA_TOLERANCE",
    "Learn2MixPlanner",
    "Learn2MixResult",
    "Learn2MixState",
    "class_mean_losses",
    "default_lr",
    "initial_alpha",
    "kmeans_groups",
    "largest_remainder_counts",
    "learn2mix_schedule",
    "parse_groups",
    "schedule_memory",
    "update_alpha",
]

#: How far ``sum(alpha)`` may stray from 1 before α is rejected.
ALPHA_TOLERANCE = 1e-9

_KMEANS_STREAM = 0x4B4D4E53  # "KMNS": second word of the k-means rng key
_KMEANS_MAX_ITER = 300
_KMEANS_TOL = 1e-4  # on the squared center shift, relative to the mean feature variance (as scikit-learn)
_GROUPS_PREFIX = "kmeans:"
_BLOCK_ROWS = 8192  # rows per block for distances and proxy evaluation
_FILL_ELEMENTS = 1 << 20  # indices gathered at a time when an epoch's batches are written


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value, *, minimum: int | None = None) -> int:
    """An int (not a bool) no smaller than ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_mixing_rate(mixing_rate) -> float:
    if isinstance(mixing_rate, (bool, np.bool_)) or not isinstance(mixing_rate, numbers.Real):
        raise ParameterError(f"mixing rate must be a number in (0, 1], got {mixing_rate!r}")
    g = float(mixing_rate)
    if not (0.0 < g <= 1.0):  # also rejects NaN
        raise ParameterError(f"mixing rate must be in (0, 1], got {mixing_rate!r}")
    return g


def _check_alpha(alpha, n_classes: int | None = None) -> np.ndarray:
    """α as float64 (C,): finite, >= 0, summing to 1 within ALPHA_TOLERANCE."""
    a = np.asarray(alpha)
    if a.dtype.kind not in "iuf":
        raise ParameterError(f"alpha must be an array of real numbers, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] == 0:
        raise ParameterError(f"alpha must be a non-empty 1-D array of class proportions, got shape {a.shape}")
    if n_classes is not None and a.shape[0] != n_classes:
        raise ParameterError(f"alpha must have one entry per class: expected length {n_classes}, got {a.shape[0]}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        j = int(np.argmax(bad))
        raise ParameterError(
            f"alpha must be finite and >= 0: {int(bad.sum())} bad value(s), first at class {j} ({float(a[j])!r})"
        )
    s = float(a.sum())
    if abs(s - 1.0) > ALPHA_TOLERANCE:
        raise ParameterError(f"alpha must sum to 1 (within {ALPHA_TOLERANCE:g}), got sum {s!r}")
    return a


def _check_labels(labels, name: str = "labels") -> np.ndarray:
    """Integer labels as int64 (N,), all >= 0."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise DataError(f"{name} must be an integer array, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of shape (n_samples,), got shape {y.shape}")
    y = y.astype(np.int64)
    if y.min() < 0:
        first = int(np.argmax(y < 0))
        raise DataError(f"{name} must be >= 0, found {int(y[first])} at row {first}")
    return y


def _resolve_n_classes(y: np.ndarray, n_classes) -> int:
    top = int(y.max()) + 1
    if n_classes is None:
        return top
    c = _check_int("n_classes", n_classes, minimum=1)
    if top > c:
        first = int(np.argmax(y >= c))
        raise DataError(f"labels must be in 0..{c - 1} (n_classes={c}), found {int(y[first])} at row {first}")
    return c


def _check_features(X, n: int | None = None) -> np.ndarray:
    A = np.asarray(X)
    if A.dtype.kind not in "biuf":
        raise DataError(f"features must be real numbers, got dtype {A.dtype}")
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise DataError(f"features must be a non-empty array of shape (n_samples, n_features), got shape {A.shape}")
    if n is not None and A.shape[0] != n:
        raise DataError(f"features have {A.shape[0]} rows but there are {n} labels")
    if A.dtype.kind == "f" and not np.isfinite(A).all():
        raise DataError("features must be finite, found NaN or inf")
    return A


# --------------------------------------------------------------------------- α


def largest_remainder_counts(alpha, k: int) -> np.ndarray:
    """Per-class counts summing exactly to k, by largest-remainder rounding of α·k.

    ``c_j = floor(α_j k)``; the ``k − Σ c_j`` units left go one each to the classes
    with the largest fractional parts ``α_j k − floor(α_j k)``, ties broken by the
    smaller class id. The products are exact (each float64 ``α_j`` as a rational),
    so ties and order do not depend on round-off.

    Parameters
    ----------
    alpha : array of shape (n_classes,)
        Class proportions: finite, >= 0, summing to 1 within :data:`ALPHA_TOLERANCE`.
    k : int
        Batch size, >= 1.

    Returns
    -------
    counts : ndarray of shape (n_classes,), int64, summing to k

    Raises
    ------
    ParameterError
        On an invalid α or k.
    """
    a = _check_alpha(alpha)
    k = _check_int("k", k, minimum=1)
    floors = []
    remainders = []
    for v in a.tolist():
        num, den = v.as_integer_ratio()
        prod = num * k
        fl = prod // den
        floors.append(fl)
        remainders.append(Fraction(prod - fl * den, den))
    left = k - sum(floors)
    if not 0 <= left <= len(a):
        # only possible when k * |sum(alpha) - 1| >= 1, i.e. an enormous k
        raise ParameterError(
            f"alpha sums to {float(a.sum())!r}, too far from 1 for k={k}: rounding leaves {left} units "
            f"for {len(a)} classes"
        )
    order = sorted(range(len(a)), key=lambda j: (-remainders[j], j))
    for j in order[:left]:
        floors[j] += 1
    return np.asarray(floors, dtype=np.int64)


def update_alpha(alpha, class_losses, mixing_rate) -> np.ndarray:
    """One learn2mix step: ``α ← α + γ (L / ΣL − α)``.

    When ``ΣL = 0`` the target ``L / ΣL`` is uniform (no class is harder than
    another). The result is put back on the simplex: round-off negatives are
    clipped to 0, then it is divided by its sum.

    Parameters
    ----------
    alpha : array of shape (n_classes,)
        Current class proportions (on the simplex within :data:`ALPHA_TOLERANCE`).
    class_losses : array of shape (n_classes,)
        Class-wise mean losses L, finite and >= 0.
    mixing_rate : float
        γ in (0, 1].

    Returns
    -------
    alpha : ndarray of shape (n_classes,), float64

    Raises
    ------
    ParameterError
        If γ is outside (0, 1], or the losses have the wrong length, are negative
        or not finite, or α is invalid.
    """
    g = _check_mixing_rate(mixing_rate)
    a = _check_alpha(alpha)
    L = np.asarray(class_losses)
    if L.dtype.kind not in "iuf":
        raise ParameterError(f"class losses must be real numbers, got dtype {L.dtype}")
    if L.ndim != 1 or L.shape[0] != a.shape[0]:
        got = L.shape[0] if L.ndim == 1 else f"shape {L.shape}"
        raise ParameterError(f"class losses must have one value per class: expected length {a.shape[0]}, got {got}")
    L = L.astype(np.float64)
    bad = ~np.isfinite(L) | (L < 0)
    if bad.any():
        j = int(np.argmax(bad))
        raise ParameterError(
            f"class losses must be finite and >= 0: {int(bad.sum())} bad value(s) (negative, NaN or inf), "
            f"first at class {j} ({float(L[j])!r})"
        )
    total = float(L.sum())
    target = L / total if total > 0 else np.full_like(a, 1.0 / a.shape[0])
    out = a + g * (target - a)
    np.clip(out, 0.0, None, out=out)
    return out / out.sum()


def class_mean_losses(losses, labels, n_classes: int) -> np.ndarray:
    """Class-wise means of per-sample losses: ``L_j = mean{loss_i : y_i = j}``.

    A class with no sample in the input gets ``L_j = 0`` (an online trainer that
    averages over a subset may miss a class; 0 makes that class no harder, and
    :func:`update_alpha` then moves its share towards 0 only as fast as γ allows).

    Parameters
    ----------
    losses : array of shape (n_samples,)
        Per-sample losses, finite.
    labels : array of shape (n_samples,)
        Integer class ids in ``0..n_classes-1``.
    n_classes : int

    Returns
    -------
    class_losses : ndarray of shape (n_classes,), float64
    """
    C = _check_int("n_classes", n_classes, minimum=1)
    y = _check_labels(labels)
    _resolve_n_classes(y, C)
    v = np.asarray(losses)
    if v.dtype.kind not in "iuf":
        raise ParameterError(f"losses must be real numbers, got dtype {v.dtype}")
    if v.shape != y.shape:
        raise ParameterError(f"losses must have one value per label: expected shape {y.shape}, got {v.shape}")
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        first = int(np.argmax(~np.isfinite(v)))
        raise ParameterError(f"losses must be finite, found {float(v[first])!r} at row {first}")
    if np.any(v < 0):
        first = int(np.argmax(v < 0))
        raise ParameterError(f"losses must be non-negative, found {float(v[first])!r} at row {first}")
    sums = np.bincount(y, weights=v, minlength=C)
    counts = np.bincount(y, minlength=C)
    out = np.zeros(C, dtype=np.float64)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def initial_alpha(labels, n_classes: int | None = None) -> np.ndarray:
    """The dataset's class proportions ``α_0,j = n_j / N``.

    Parameters
    ----------
    labels : array of shape (n_samples,)
        Integer class ids (group ids), >= 0.
    n_classes : int, optional
        Number of classes; ``max(labels) + 1`` by default.

    Returns
    -------
    alpha : ndarray of shape (n_classes,), float64

    Raises
    ------
    DataError
        If the labels are not integers, or some class below ``n_classes`` has no
        samples (learn2mix cannot draw from an empty class).
    """
    y = _check_labels(labels)
    C = _resolve_n_classes(y, n_classes)
    counts = np.bincount(y, minlength=C)
    _check_present(counts)
    return counts / float(len(y))


def _check_present(counts: np.ndarray) -> None:
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"class {int(empty[0])}{more} has no samples; learn2mix needs every class present")


# --------------------------------------------------------------------------- planner


@dataclass(eq=False)
class Learn2MixState:
    """Where a learn2mix run stands; everything else derives from (labels, seed).

    Attributes
    ----------
    epoch : int
        The epoch in progress.
    batch : int
        Batches of that epoch already produced.
    alpha : ndarray of shape (n_classes,), float64
        The α in force for this epoch.
    pointers : ndarray of shape (n_classes,), int64
        Position of each class' cyclic pointer in its permutation, in
        ``[0, n_j)``: ``(batch * c_j) mod n_j`` (reset to 0 every epoch).
    """

    epoch: int
    batch: int
    alpha: np.ndarray
    pointers: np.ndarray

    def to_dict(self) -> dict:
        """Plain JSON (floats round-trip exactly through ``repr``)."""
        return {
            "epoch": int(self.epoch),
            "batch": int(self.batch),
            "alpha": [float(v) for v in self.alpha],
            "pointers": [int(v) for v in self.pointers],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Learn2MixState":
        try:
            return cls(
                epoch=int(d["epoch"]),
                batch=int(d["batch"]),
                alpha=np.asarray(d["alpha"], dtype=np.float64),
                pointers=np.asarray(d["pointers"], dtype=np.int64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(
                f"not a learn2mix state: expected keys epoch, batch, alpha, pointers ({type(exc).__name__}: {exc})"
            ) from None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Learn2MixState):
            return NotImplemented
        return (
            self.epoch == other.epoch
            and self.batch == other.batch
            and np.array_equal(self.alpha, other.alpha)
            and np.array_equal(self.pointers, other.pointers)
        )


class Learn2MixPlanner:
    """Batches of exactly k samples whose class mix follows α; resumable.

    Parameters
    ----------
    labels : array of shape (n_samples,)
        Integer class (or group) ids; every class ``0..n_classes-1`` must occur.
    k : int
        Batch size, ``1 <= k <= n_samples``.
    mixing_rate : float
        γ in (0, 1], used by :meth:`end_epoch`.
    seed : int
        Non-negative; seeds the per-class permutations ``default_rng([seed, epoch, class])``.
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    n_classes : int, optional
        ``max(labels) + 1`` by default.

    Notes
    -----
    See the module docstring for the pointer, wrap and in-batch order rules.
    Class j in epoch e takes ``c_j * batches_per_epoch`` draws; draw t is
    ``perm_{e,j}[t mod n_j]``.
    """

    def __init__(self, labels, k, *, mixing_rate, seed, batches_per_epoch=None, n_classes=None):
        y = _check_labels(labels)
        self.n_classes = _resolve_n_classes(y, n_classes)
        self.n_samples = int(len(y))
        self.k = _check_int("k", k, minimum=1)
        if self.k > self.n_samples:
            raise ParameterError(
                f"k must be a positive integer no larger than the dataset (N={self.n_samples}), got k={self.k}"
            )
        self.mixing_rate = _check_mixing_rate(mixing_rate)
        self.seed = _check_int("seed", seed, minimum=0)
        if batches_per_epoch is None:
            self.batches_per_epoch = -(-self.n_samples // self.k)
        else:
            self.batches_per_epoch = _check_int("batches_per_epoch", batches_per_epoch, minimum=1)
        self.class_sizes = np.bincount(y, minlength=self.n_classes).astype(np.int64)
        _check_present(self.class_sizes)
        order = np.argsort(y, kind="stable").astype(np.int64)
        self._members = np.split(order, np.cumsum(self.class_sizes)[:-1])
        self.labels = y
        self.labels.flags.writeable = False
        self._perm_cache: tuple[int, list[np.ndarray]] | None = None

    # -- pure functions of (labels, k, seed, epoch, alpha)

    @property
    def initial_alpha(self) -> np.ndarray:
        """The class proportions of the labels (α of epoch 0)."""
        return self.class_sizes / float(self.n_samples)

    def class_counts(self, alpha) -> np.ndarray:
        """``largest_remainder_counts(alpha, k)``: samples of each class per batch."""
        return largest_remainder_counts(_check_alpha(alpha, self.n_classes), self.k)

    def class_order(self, epoch: int, class_id: int) -> np.ndarray:
        """Sample indices of class ``class_id`` in the order epoch ``epoch`` visits them."""
        epoch = _check_int("epoch", epoch, minimum=0)
        class_id = _check_int("class_id", class_id, minimum=0)
        if class_id >= self.n_classes:
            raise ParameterError(f"class_id must be in 0..{self.n_classes - 1}, got {class_id}")
        return self._orders(epoch)[class_id].copy()

    def _orders(self, epoch: int) -> list[np.ndarray]:
        # one epoch's permutations are kept: next_batch asks for them once per batch
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            orders = [
                m[np.random.default_rng([self.seed, epoch, j]).permutation(len(m))]
                for j, m in enumerate(self._members)
            ]
            self._perm_cache = (epoch, orders)
        return self._perm_cache[1]

    def epoch_matrix(self, epoch: int, alpha, *, out: np.ndarray | None = None) -> np.ndarray:
        """All batches of an epoch as one int64 array of shape (batches_per_epoch, k).

        Written into ``out`` (an int64 array of that shape) when given, in pieces of
        about a million indices: no temporary grows with the number of batches.
        """
        epoch = _check_int("epoch", epoch, minimum=0)
        counts = self.class_counts(alpha)
        B, k = self.batches_per_epoch, self.k
        if out is None:
            out = np.empty((B, k), dtype=np.int64)
        elif out.shape != (B, k) or out.dtype != np.int64:
            raise ParameterError(f"out must be an int64 array of shape {(B, k)}, got {out.dtype} {out.shape}")
        orders = self._orders(epoch)
        rows = max(1, _FILL_ELEMENTS // k)
        col = 0
        for j, c in enumerate(counts.tolist()):
            if c == 0:
                continue
            for r0 in range(0, B, rows):
                r1 = min(B, r0 + rows)
                t = np.arange(r0 * c, r1 * c, dtype=np.int64) % self.class_sizes[j]
                out[r0:r1, col : col + c] = orders[j][t].reshape(r1 - r0, c)
            col += c
        return out

    def epoch_batches(self, epoch: int, alpha) -> list[np.ndarray]:
        """The batches of epoch ``epoch`` under ``alpha``: a list of int64 arrays of length k."""
        return list(self.epoch_matrix(epoch, alpha))

    # -- resumable stepping

    def start(self, alpha=None) -> Learn2MixState:
        """State at the start of epoch 0, with ``alpha`` (default: the class proportions)."""
        a = self.initial_alpha if alpha is None else _check_alpha(alpha, self.n_classes)
        return Learn2MixState(epoch=0, batch=0, alpha=a.copy(), pointers=np.zeros(self.n_classes, np.int64))

    def _check_state(self, state: Learn2MixState) -> np.ndarray:
        if not isinstance(state, Learn2MixState):
            raise ParameterError(f"state must be a Learn2MixState, got {type(state).__name__}")
        _check_int("state.epoch", state.epoch, minimum=0)
        _check_int("state.batch", state.batch, minimum=0)
        counts = self.class_counts(state.alpha)
        expected = (state.batch * counts) % self.class_sizes
        p = np.asarray(state.pointers)
        if p.shape != expected.shape or not np.array_equal(p, expected):
            raise ParameterError(
                f"state pointers {p.tolist()} disagree with batch {state.batch} of an epoch under its alpha "
                f"(expected {expected.tolist()}); the state belongs to another run"
            )
        return counts

    def next_batch(self, state: Learn2MixState) -> tuple[np.ndarray, Learn2MixState]:
        """The next batch of the epoch in progress and the state after it.

        Raises
        ------
        ParameterError
            If the epoch already has ``batches_per_epoch`` batches (call
            :meth:`end_epoch`), or the state does not belong to this planner.
        """
        counts = self._check_state(state)
        if state.batch >= self.batches_per_epoch:
            raise ParameterError(
                f"epoch {state.epoch} is complete ({self.batches_per_epoch} batches); call end_epoch with its losses"
            )
        orders = self._orders(state.epoch)
        parts = []
        for j, c in enumerate(counts.tolist()):
            if c:
                t = (state.pointers[j] + np.arange(c, dtype=np.int64)) % self.class_sizes[j]
                parts.append(orders[j][t])
        batch = np.concatenate(parts)
        after = Learn2MixState(
            epoch=state.epoch,
            batch=state.batch + 1,
            alpha=state.alpha.copy(),
            pointers=(state.pointers + counts) % self.class_sizes,
        )
        return batch, after

    def end_epoch(self, state: Learn2MixState, class_losses) -> Learn2MixState:
        """Close the epoch: α moves towards ``L / ΣL``; pointers reset for the next epoch.

        May be called before all batches were drawn (an online trainer that stops
        early); the next epoch starts from batch 0 either way.
        """
        self._check_state(state)
        alpha = update_alpha(state.alpha, class_losses, self.mixing_rate)
        return Learn2MixState(
            epoch=state.epoch + 1, batch=0, alpha=alpha, pointers=np.zeros(self.n_classes, np.int64)
        )


# --------------------------------------------------------------------------- groups


def parse_groups(spec: str) -> int:
    """The number of groups in a ``"kmeans:C"`` spec (C >= 2)."""
    if not isinstance(spec, str) or not spec.startswith(_GROUPS_PREFIX):
        raise ParameterError(f"groups must be 'kmeans:C' with an integer C >= 2, got {spec!r}")
    tail = spec[len(_GROUPS_PREFIX):].strip()
    if not tail.isdigit() or int(tail) < 2:
        raise ParameterError(f"groups must be 'kmeans:C' with an integer C >= 2, got {spec!r}")
    return int(tail)


def _sq_dists(X: np.ndarray, centers: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Squared distances of rows ``start:stop`` to every center, float64, clamped at 0."""
    blk = X[start:stop].astype(np.float64)
    d = (blk * blk).sum(1)[:, None] + (centers * centers).sum(1)[None, :] - 2.0 * blk @ centers.T
    return np.maximum(d, 0.0, out=d)


def _assign(X: np.ndarray, centers: np.ndarray, *, sums: bool = False):
    """Nearest center (smallest index on ties), the squared distance to it and,
    with ``sums``, the per-center sums of the assigned rows (G, D), float64.

    Rows are summed block by block through a sparse membership matrix (a fixed
    summation order, so deterministic); no float64 copy of the whole X exists.
    """
    import scipy.sparse as sp  # only k-means groups need it: not on every import

    n = X.shape[0]
    g = centers.shape[0]
    lab = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    total = np.zeros(centers.shape, dtype=np.float64) if sums else None
    for s in range(0, n, _BLOCK_ROWS):
        d = _sq_dists(X, centers, s, s + _BLOCK_ROWS)
        lb = np.argmin(d, axis=1)
        lab[s : s + len(d)] = lb
        dist[s : s + len(d)] = d[np.arange(len(d)), lb]
        if sums:
            member = sp.csr_matrix((np.ones(len(lb)), (lb, np.arange(len(lb)))), shape=(g, len(lb)))
            total += member @ X[s : s + len(d)].astype(np.float64)
    if sums:
        return lab, dist, total
    return lab, dist


def _mean_variance(X: np.ndarray) -> float:
    """Mean over features of the per-feature variance, float64, in row blocks."""
    n = X.shape[0]
    s1 = np.zeros(X.shape[1])
    s2 = np.zeros(X.shape[1])
    for s in range(0, n, _BLOCK_ROWS):
        blk = X[s : s + _BLOCK_ROWS].astype(np.float64)
        s1 += blk.sum(0)
        s2 += (blk * blk).sum(0)
    return float(np.maximum(s2 / n - (s1 / n) ** 2, 0.0).mean())


def _kmeans_pp(X: np.ndarray, g: int, rng: np.random.Generator) -> np.ndarray:
    n = X.shape[0]
    chosen = [int(rng.integers(n))]
    best = _assign(X, X[chosen].astype(np.float64))[1]
    for _ in range(1, g):
        cum = np.cumsum(best)
        total = float(cum[-1])
        if total > 0:
            u = rng.random() * total
            i = int(np.searchsorted(cum, u, side="right"))
            i = min(i, n - 1)
            while best[i] == 0:  # u landed on the boundary of a zero-weight run
                i -= 1
        else:  # fewer distinct points than groups: any unchosen row
            rest = np.setdiff1d(np.arange(n), chosen)
            i = int(rest[rng.integers(len(rest))])
        chosen.append(i)
        np.minimum(best, _assign(X, X[[i]].astype(np.float64))[1], out=best)
    return X[chosen].astype(np.float64)


def kmeans_groups(X, n_groups: int, *, seed: int) -> np.ndarray:
    """Seeded k-means groups for data without labels, every group non-empty.

    Lloyd's algorithm in float64: k-means++ seeding from
    ``default_rng([seed, 0x4B4D4E53])``, then re-centre and assign (nearest
    center, smaller center id on ties) until the assignment stops changing or the
    centers move by at most ``1e-4 * mean feature variance`` in total squared
    distance (at most 300 rounds; an emptied center keeps its position). The
    groups are the last assignment. Afterwards, while some group
    is empty, the sample farthest from its center among groups with two or more
    members (smallest index on ties) is moved into it. Group ids are then
    renumbered in order of each group's smallest sample index, so sample 0 is in
    group 0 and group ids first appear in increasing order.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Features (finite).
    n_groups : int
        ``2 <= n_groups <= n_samples``.
    seed : int
        Non-negative.

    Returns
    -------
    groups : ndarray of shape (n_samples,), int64, values ``0..n_groups-1``, all present
    """
    A = _check_features(X)
    n = A.shape[0]
    g = _check_int("n_groups", n_groups, minimum=2)
    if g > n:
        raise ParameterError(f"n_groups must be in 2..{n} (the number of samples), got {g}")
    seed = _check_int("seed", seed, minimum=0)
    rng = np.random.default_rng([seed, _KMEANS_STREAM])
    centers = _kmeans_pp(A, g, rng)
    tol = _KMEANS_TOL * _mean_variance(A)
    lab, dist, sums = _assign(A, centers, sums=True)
    for _ in range(_KMEANS_MAX_ITER):
        counts = np.bincount(lab, minlength=g)
        moved = centers.copy()
        np.divide(sums, counts[:, None], out=centers, where=counts[:, None] > 0)
        shift = float(((centers - moved) ** 2).sum())
        new, dist, sums = _assign(A, centers, sums=True)
        if np.array_equal(new, lab) or shift <= tol:
            lab = new
            break
        lab = new
    counts = np.bincount(lab, minlength=g)
    for empty in np.flatnonzero(counts == 0).tolist():
        movable = counts[lab] >= 2
        i = int(np.argmax(np.where(movable, dist, -1.0)))  # first index among the farthest
        counts[lab[i]] -= 1
        lab[i] = empty
        counts[empty] = 1
        dist[i] = 0.0
    first = np.full(g, n, dtype=np.int64)
    np.minimum.at(first, lab, np.arange(n, dtype=np.int64))
    rank = np.empty(g, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(g, dtype=np.int64)
    return rank[lab]


# --------------------------------------------------------------------------- offline precompute


@dataclass(frozen=True, eq=False)
class Learn2MixResult:
    """An offline learn2mix schedule and the trajectory that shaped it.

    Attributes
    ----------
    indices : ndarray of shape (n_epochs * batches_per_epoch * k,), int64
    batch_offsets : ndarray of shape (n_epochs * batches_per_epoch + 1,), int64
        Every batch holds exactly k samples.
    epoch_offsets : ndarray of shape (n_epochs + 1,), int64
    class_proportions : ndarray of shape (n_epochs, n_classes), float64
        The α used for each epoch (row 0 = the class proportions of the labels).
    class_losses : ndarray of shape (n_epochs, n_classes), float64
        Class-wise mean cross-entropy of the proxy on the whole training set,
        measured after each epoch; row e moved α from epoch e to e + 1.
    params : dict
        Plain JSON: every option that shaped the schedule.
    """

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    class_proportions: np.ndarray
    class_losses: np.ndarray
    params: dict = field(default_factory=dict)


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))


def _proxy_losses(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy of the softmax regression on every row, float64."""
    out = np.empty(X.shape[0], dtype=np.float64)
    for s in range(0, X.shape[0], _BLOCK_ROWS):
        blk = X[s : s + _BLOCK_ROWS].astype(np.float64)
        logp = _log_softmax(blk @ W + b)
        out[s : s + len(blk)] = -logp[np.arange(len(blk)), y[s : s + len(blk)]]
    return out


def default_lr(X) -> float:
    """The proxy's default SGD step: ``2 / (1 + mean_i ||x_i||^2)``.

    The batch-mean cross-entropy of a softmax regression (weights and bias) has a
    gradient whose Lipschitz constant is at most ``L = mean_i ||(x_i, 1)||^2 / 2``
    (the softmax Hessian is bounded by 1/2), so this is the classical step
    ``1/L``: stable on any feature scale without tuning.
    """
    A = np.asarray(X)
    sq = 0.0
    for s in range(0, A.shape[0], _BLOCK_ROWS):
        blk = A[s : s + _BLOCK_ROWS].astype(np.float64)
        sq += float((blk * blk).sum())
    return 2.0 / (1.0 + sq / A.shape[0])


def schedule_memory(
    n_samples: int,
    n_features: int,
    k: int,
    *,
    epochs: int,
    batches_per_epoch: int | None = None,
    n_groups: int,
    n_outputs: int,
    kmeans_groups: int | None = None,
) -> dict[str, int]:
    """Bytes :func:`learn2mix_schedule` (and :func:`kmeans_groups`) allocate at least, by
    what for, computed from the sizes alone so that a build can refuse before allocating.

    Keys: ``indices`` (epochs x batches x k int64, held once), ``batch_offsets`` (the
    offsets and the differences checked before the store is written), ``epoch_arrays``
    (α and the losses per epoch), ``proxy`` (its weights, one block of logits, the
    per-sample losses and one batch's features), and with ``kmeans_groups`` C,
    ``kmeans_centers`` (C x features, three copies) and ``kmeans_distances`` (a block
    of rows x C distances and one temporary of its size).
    """
    n, d, k = int(n_samples), int(n_features), int(k)
    B = -(-n // k) if batches_per_epoch is None else int(batches_per_epoch)
    total = int(epochs) * B
    rows = min(n, _BLOCK_ROWS)
    out = {
        "indices": total * k * 8,
        "batch_offsets": 2 * (total + 1) * 8,
        "epoch_arrays": 2 * int(epochs) * int(n_groups) * 8,
        "proxy": 8 * (2 * d * n_outputs + 3 * rows * n_outputs + 3 * n + k * (d + n_outputs)),
    }
    if kmeans_groups is not None:
        g = int(kmeans_groups)
        out["kmeans_centers"] = 3 * g * d * 8
        out["kmeans_distances"] = 2 * rows * g * 8
    return out


def learn2mix_schedule(
    X,
    groups,
    k: int,
    *,
    epochs: int,
    mixing_rate: float,
    seed: int,
    batches_per_epoch: int | None = None,
    lr: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint=None,
    labels=None,
) -> Learn2MixResult:
    """Precompute a learn2mix schedule with losses from a softmax-regression proxy.

    Epoch e plays ``Learn2MixPlanner.epoch_batches(e, α_e)``. The proxy (weights
    ``W`` (D, C) and bias ``b`` (C,), float64, zero at the start) takes one plain
    SGD step per batch on the batch-mean cross-entropy,
    ``W ← W − lr · X_Bᵀ (softmax(X_B W + b) − Y_B) / k``, in schedule order. After
    each epoch its class-wise mean cross-entropy on the *whole* training set gives
    L_e, and ``α_{e+1} = update_alpha(α_e, L_e, γ)``. Nothing is random but the
    permutations, so the result is a pure function of the inputs (bit-identical
    on one machine; the proxy's float64 matrix products go through BLAS).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Features (e.g. from ``prepare_features``); read in float64 blocks.
    groups : array of shape (n_samples,)
        Integer class or group ids (labels, or :func:`kmeans_groups`); every id
        ``0..max`` must occur.
    k : int
        Batch size, ``1 <= k <= n_samples``; every batch holds exactly k.
    epochs : int
        >= 1.
    mixing_rate : float
        γ in (0, 1].
    seed : int
        Non-negative; seeds the per-class permutations.
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    lr : float, optional
        SGD step of the proxy; :func:`default_lr` by default.
    progress : callable(done_batches, total_batches), optional
        Called once before the first batch and after every batch.
    checkpoint : schedgen.checkpoint.Checkpoint, optional
        Resume from its saved state (epoch, batch, proxy weights, α and the
        trajectory so far; the batches themselves are re-derived) and save the state
        as the build goes. A resumed run gives the same bytes as an uninterrupted one.
    labels : array of shape (n_samples,), optional
        The proxy's targets, when they are not the groups (``--groups kmeans:C``, or
        an npz ``groups`` array): the proxy learns the task's labels and its
        per-sample losses are averaged per group. Default: the groups themselves.

    Returns
    -------
    Learn2MixResult

    Raises
    ------
    ParameterError, DataError
        On invalid options, features or groups.
    """
    y = _check_labels(groups, "groups")
    A = _check_features(X, len(y))
    t = y if labels is None else _check_labels(labels, "labels")
    if t.shape != y.shape:
        raise DataError(f"labels must have one value per sample: expected shape {y.shape}, got {t.shape}")
    T = int(t.max()) + 1  # proxy outputs
    epochs = _check_int("epochs", epochs, minimum=1)
    planner = Learn2MixPlanner(
        y, k, mixing_rate=mixing_rate, seed=seed, batches_per_epoch=batches_per_epoch
    )
    if lr is None:
        lr = default_lr(A)
    elif isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) or not (
        math.isfinite(float(lr)) and float(lr) > 0
    ):
        raise ParameterError(f"lr must be a positive finite number, got {lr!r}")
    lr = float(lr)
    k = planner.k
    C = planner.n_classes
    B = planner.batches_per_epoch
    total = epochs * B

    # Every epoch's batches are written straight into the schedule's indices: the only
    # array that grows with epochs x batches x k exists once (schedule_memory counts it).
    indices = np.empty(total * k, dtype=np.int64)
    matrices = indices.reshape(epochs, B, k)
    W = np.zeros((A.shape[1], T), dtype=np.float64)
    b = np.zeros(T, dtype=np.float64)
    alpha = planner.initial_alpha
    alphas = np.empty((epochs, C), dtype=np.float64)
    losses = np.empty((epochs, C), dtype=np.float64)
    e0 = i0 = 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and saved["W"].shape == W.shape and saved["alphas"].shape == alphas.shape:
        e0, i0 = int(saved["epoch"]), int(saved["batch"])
        W, b, alpha = saved["W"], saved["b"], saved["alpha"]
        alphas[:], losses[:] = saved["alphas"], saved["losses"]

    def state(e: int, i: int) -> dict:
        # Everything else (the batches) is a pure function of (epoch, alpha): not saved.
        return {"epoch": np.int64(e), "batch": np.int64(i), "W": W, "b": b, "alpha": alpha,
                "alphas": alphas, "losses": losses}

    for e in range(e0):  # epochs a checkpoint skipped: their batches follow from their α
        planner.epoch_matrix(e, alphas[e], out=matrices[e])
    if progress:
        progress(e0 * B + i0, total)
    for e in range(e0, epochs):
        alphas[e] = alpha
        M = planner.epoch_matrix(e, alpha, out=matrices[e])
        for i in range(i0 if e == e0 else 0, B):
            batch = M[i]
            Xb = A[batch].astype(np.float64)
            G = np.exp(_log_softmax(Xb @ W + b))
            G[np.arange(k), t[batch]] -= 1.0
            G /= k
            W -= lr * (Xb.T @ G)
            b -= lr * G.sum(axis=0)
            if checkpoint is not None and i + 1 < B:
                checkpoint.maybe_save(lambda: state(e, i + 1))
            if progress:
                progress(e * B + i + 1, total)
        losses[e] = class_mean_losses(_proxy_losses(A, t, W, b), y, C)
        alpha = update_alpha(alpha, losses[e], planner.mixing_rate)
        if checkpoint is not None and e + 1 < epochs:
            checkpoint.maybe_save(lambda: state(e + 1, 0))

    params = {
        "seed": planner.seed,
        "epochs": epochs,
        "mixing_rate": planner.mixing_rate,
        "batches_per_epoch": B,
        "n_classes": C,
        "proxy": "softmax-regression-sgd",
        "lr": lr,
    }
    return Learn2MixResult(
        indices=indices,
        batch_offsets=np.arange(total + 1, dtype=np.int64) * k,
        epoch_offsets=np.arange(epochs + 1, dtype=np.int64) * B,
        class_proportions=alphas,
        class_losses=losses,
        params=params,
    )
