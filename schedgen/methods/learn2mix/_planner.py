"""The drawing rule: which samples each batch of an epoch holds, given α.

Every batch of an epoch holds exactly k samples: ``largest_remainder_counts(α, k)``
of class j, drawn from a per-class permutation through a cyclic pointer (paper
Eqs. 12-13), so a small class repeats instead of running out. All of it is a pure
function of ``(labels, k, seed, epoch, α, batches_per_epoch)``:

* **Permutation.** In epoch e, class j is visited in the order
  ``members_j[rng(seed, "learn2mix", e, j).permutation(n_j)]`` (:mod:`schedgen.rng`,
  the tagged stream ``default_rng([seed, 0x6C326D78, e, j])``), where ``members_j``
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
"""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ...params import check_int
from ...rng import MAX_WORD, rng
from ._alpha import check_alpha, largest_remainder_counts
from ._common import check_labels, check_mixing_rate, check_present, resolve_n_classes

__all__ = ["Learn2MixPlanner"]

#: Indices gathered at a time when an epoch's batches are written.
_FILL_ELEMENTS = 1 << 20


class Learn2MixPlanner:
    """Batches of exactly k samples whose class mix follows α.

    Parameters
    ----------
    labels : array of shape (n_samples,)
        Integer class (or group) ids; every class ``0..n_classes-1`` must occur.
    k : int
        Batch size, ``1 <= k <= n_samples``.
    mixing_rate : float
        γ in (0, 1], kept for the callers that move α (:func:`update_alpha`).
    seed : int
        ``0 <= seed < 2**32``; seeds the per-class permutations
        ``rng(seed, "learn2mix", epoch, class)``.
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    n_classes : int, optional
        ``max(labels) + 1`` by default.

    Notes
    -----
    See the module docstring for the permutation, pointer, wrap and in-batch order
    rules. Class j in epoch e takes ``c_j * batches_per_epoch`` draws; draw t is
    ``perm_{e,j}[t mod n_j]``.
    """

    def __init__(self, labels, k, *, mixing_rate, seed, batches_per_epoch=None, n_classes=None):
        y = check_labels(labels)
        self.n_classes = resolve_n_classes(y, n_classes)
        self.n_samples = int(len(y))
        self.k = check_int("k", k, minimum=1)
        if self.k > self.n_samples:
            raise ParameterError(
                f"k must be a positive integer no larger than the dataset (N={self.n_samples}), got k={self.k}"
            )
        self.mixing_rate = check_mixing_rate(mixing_rate)
        self.seed = check_int("seed", seed, minimum=0, maximum=MAX_WORD)
        if batches_per_epoch is None:
            self.batches_per_epoch = -(-self.n_samples // self.k)
        else:
            self.batches_per_epoch = check_int("batches_per_epoch", batches_per_epoch, minimum=1)
        self.class_sizes = np.bincount(y, minlength=self.n_classes).astype(np.int64)
        check_present(self.class_sizes)
        order = np.argsort(y, kind="stable").astype(np.int64)
        self._members = np.split(order, np.cumsum(self.class_sizes)[:-1])
        self.labels = y
        self.labels.flags.writeable = False
        self._perm_cache: tuple[int, list[np.ndarray]] | None = None

    @property
    def initial_alpha(self) -> np.ndarray:
        """The class proportions of the labels (α of epoch 0)."""
        return self.class_sizes / float(self.n_samples)

    def class_counts(self, alpha) -> np.ndarray:
        """Samples of each class per batch: ``largest_remainder_counts(alpha, k)``.

        Parameters
        ----------
        alpha : array of shape (n_classes,)
            Class proportions.

        Returns
        -------
        counts : ndarray of shape (n_classes,), int64, summing to k
        """
        return largest_remainder_counts(check_alpha(alpha, self.n_classes), self.k)

    def class_order(self, epoch: int, class_id: int) -> np.ndarray:
        """Sample indices of class ``class_id`` in the order epoch ``epoch`` visits them.

        Parameters
        ----------
        epoch : int
            ``0 <= epoch < 2**32``.
        class_id : int
            ``0 <= class_id < n_classes``.

        Returns
        -------
        order : ndarray of shape (n_j,), int64
        """
        epoch = check_int("epoch", epoch, minimum=0, maximum=MAX_WORD)
        class_id = check_int("class_id", class_id, minimum=0)
        if class_id >= self.n_classes:
            raise ParameterError(f"class_id must be in 0..{self.n_classes - 1}, got {class_id}")
        return self._orders(epoch)[class_id].copy()

    def _orders(self, epoch: int) -> list[np.ndarray]:
        # one epoch's permutations are kept: an online sampler asks for them once per epoch
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            orders = [
                m[rng(self.seed, "learn2mix", epoch, j).permutation(len(m))] for j, m in enumerate(self._members)
            ]
            self._perm_cache = (epoch, orders)
        return self._perm_cache[1]

    def epoch_matrix(self, epoch: int, alpha, *, out: np.ndarray | None = None) -> np.ndarray:
        """All batches of an epoch as one int64 array of shape (batches_per_epoch, k).

        Parameters
        ----------
        epoch : int
            ``0 <= epoch < 2**32``.
        alpha : array of shape (n_classes,)
            The epoch's class proportions.
        out : ndarray of shape (batches_per_epoch, k), int64, optional
            Written in place, in pieces of about a million indices: no temporary
            grows with the number of batches.

        Returns
        -------
        batches : ndarray of shape (batches_per_epoch, k), int64
            ``out`` when given.
        """
        epoch = check_int("epoch", epoch, minimum=0, maximum=MAX_WORD)
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
        """The batches of epoch ``epoch`` under ``alpha``, as :meth:`epoch_matrix`'s rows.

        Parameters
        ----------
        epoch : int
            ``0 <= epoch < 2**32``.
        alpha : array of shape (n_classes,)
            The epoch's class proportions.

        Returns
        -------
        batches : list of ndarray of shape (k,), int64
        """
        return list(self.epoch_matrix(epoch, alpha))
