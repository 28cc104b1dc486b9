"""Partner batches (ITRA): for every batch S1 of a schedule, a second batch S2 whose
features a trainer aligns to S1's (``schedgen build --pair KIND --partner-size M``).

The partners are one more per-batch array of the store, ``partner_indices`` (int64,
shape ``(n_batches, M)``, values in ``[0, n_samples)``): row ``b`` is batch ``b``'s S2.
They are computed from the finished schedule (its ``indices``, ``batch_offsets`` and
``epoch_offsets``), the dataset's labels and the seed, so they work with every method.
Every draw is a pure function of those (:mod:`schedgen.rng`).

Kinds (``--pair`` text, canonical form in the store's ``params["pair"]``):

``random``
    Row ``b`` is ``rng(seed, "pair", b).choice(n_samples, M, replace=False)``: M distinct
    samples drawn uniformly, in draw order. S2 may overlap S1 (the paper's reading).
``class-matched``
    S2 has S1's per-class counts. The counts are the largest-remainder rounding of S1's
    class counts ``c_j`` scaled to M: ``floor(c_j M / |S1|)``, the units left going one
    each to the largest remainders ``c_j M mod |S1|``, ties to the smaller class id (exact
    integer arithmetic; with ``M == |S1|`` they are S1's counts, e.g. not for a short last
    batch). In epoch ``e`` the samples of class ``j`` (label value ``j``) are visited in
    the order ``members_j[rng(seed, "pair.class", e, j).permutation(n_j)]``
    (``members_j`` the sample indices of class ``j``, ascending) through a cyclic pointer
    that starts at 0 in every epoch and wraps; a batch takes the next ``count_j`` of them.
    Within a row: classes by increasing id, each class's samples in draw order. A class
    present in S1 with fewer than 2 samples in the dataset is refused (no other sample to
    pair with).
``shifted:S`` (``shifted`` is ``shifted:1``)
    Row ``b`` is the M consecutive indices of its epoch's index sequence that start at
    the first index of batch ``(b + S) mod n_e`` of that epoch (``n_e`` batches; ``b``
    counted within the epoch), wrapping around to the epoch's start. With full batches
    and ``M == k`` it is exactly batch ``b + S``. Draws nothing.

With ``M`` larger than what a class (class-matched) or an epoch (shifted) holds, a row
repeats samples (the pointer wraps).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import DataError, ParameterError
from ..params import parse_int
from ..rng import rng

__all__ = ["PAIR_KINDS", "parse_pair", "pair_kind", "partner_batches"]

#: The ``--pair`` kinds.
PAIR_KINDS = ("random", "class-matched", "shifted")

_EXPECTED = "'random', 'class-matched', 'shifted' or 'shifted:S' (S an integer >= 1)"


def parse_pair(text) -> str:
    """The canonical ``--pair`` text: ``"random"``, ``"class-matched"`` or ``"shifted:S"``.

    Raises
    ------
    ParameterError
        ``pair must be 'random', 'class-matched', 'shifted' or 'shifted:S' (S an integer >= 1), got {text!r}``.
    """
    if not isinstance(text, str):
        raise ParameterError(f"pair must be {_EXPECTED}, got {text!r}")
    s = text.strip()
    if s in ("random", "class-matched"):
        return s
    m = re.fullmatch(r"shifted(?::(.*))?", s)
    if m is None:
        raise ParameterError(f"pair must be {_EXPECTED}, got {text!r}")
    if m.group(1) is None:
        return "shifted:1"
    try:
        shift = parse_int("pair shift S", m.group(1), minimum=1)
    except ParameterError:
        raise ParameterError(f"pair must be {_EXPECTED}, got {text!r}") from None
    return f"shifted:{shift}"


def pair_kind(pair: str) -> str:
    """``"random"``, ``"class-matched"`` or ``"shifted"`` of a canonical ``--pair`` text."""
    return parse_pair(pair).split(":")[0]


def _largest_remainder(counts: np.ndarray, size: int) -> np.ndarray:
    """``counts`` (classes by increasing id, summing to n1 >= 1) scaled to sum to ``size``."""
    n1 = int(counts.sum())
    q = counts.astype(np.int64) * size
    out, rem = q // n1, q % n1
    left = size - int(out.sum())
    if left:
        order = np.lexsort((np.arange(len(counts)), -rem))  # largest remainder, then smaller id
        out[order[:left]] += 1
    return out


def partner_batches(kind, indices, batch_offsets, epoch_offsets, labels, *, n_samples: int, size: int,
                    seed: int) -> np.ndarray:
    """The partner batch of every batch of a schedule (see the module's docstring).

    Parameters
    ----------
    kind : str
        A ``--pair`` text (``"random"``, ``"class-matched"``, ``"shifted"``, ``"shifted:S"``).
    indices : array of int64, shape (n_indices,)
    batch_offsets : array of int64, shape (n_batches + 1,)
    epoch_offsets : array of int64, shape (n_epochs + 1,)
        The schedule, as in the store.
    labels : array of int, shape (n_samples,)
        The dataset's labels (read by ``class-matched`` only).
    n_samples : int
    size : int
        M, the partner batch size, ``1 <= M <= n_samples``.
    seed : int

    Returns
    -------
    partner_indices : ndarray of int64, shape (n_batches, size)

    Raises
    ------
    ParameterError
        An unknown kind, or ``size`` out of ``1..n_samples``.
    DataError
        ``class-matched`` where a class of some S1 has fewer than 2 samples.
    """
    pair = parse_pair(kind)
    size = parse_int("partner size", size, minimum=1)
    if size > n_samples:
        raise ParameterError(f"partner size must be a positive integer no larger than the dataset "
                             f"(N={n_samples}), got partner size={size}")
    indices = np.asarray(indices, dtype=np.int64)
    batch_offsets = np.asarray(batch_offsets, dtype=np.int64)
    epoch_offsets = np.asarray(epoch_offsets, dtype=np.int64)
    n_batches = len(batch_offsets) - 1
    out = np.empty((n_batches, size), dtype=np.int64)
    if pair == "random":
        for b in range(n_batches):
            out[b] = rng(seed, "pair", b).choice(n_samples, size, replace=False)
    elif pair == "class-matched":
        _class_matched(out, indices, batch_offsets, epoch_offsets, np.asarray(labels), seed)
    else:
        _shifted(out, indices, batch_offsets, epoch_offsets, int(pair.split(":")[1]))
    return out


def _class_matched(out, indices, batch_offsets, epoch_offsets, labels, seed) -> None:
    classes, inverse, n_per = np.unique(labels, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")  # sample indices grouped by class, ascending within
    starts = np.concatenate([[0], np.cumsum(n_per)])
    size = out.shape[1]
    for e in range(len(epoch_offsets) - 1):
        orders: dict[int, np.ndarray] = {}  # class rank -> its order this epoch (drawn when first needed)
        pointer: dict[int, int] = {}
        for b in range(epoch_offsets[e], epoch_offsets[e + 1]):
            s1 = indices[batch_offsets[b] : batch_offsets[b + 1]]
            if len(s1) == 0:
                raise DataError(f"class-matched partners need non-empty batches, got an empty batch {b}")
            ranks, counts = np.unique(inverse[s1], return_counts=True)
            few = ranks[n_per[ranks] < 2]
            if len(few):
                j = classes[few[0]]
                raise DataError(f"class-matched partners need at least 2 samples of every class in a batch, "
                                f"got class {j} with {n_per[few[0]]} sample in the dataset (batch {b})")
            row = []
            for r, c in zip(ranks.tolist(), _largest_remainder(counts, size).tolist()):
                if not c:
                    continue
                if r not in orders:
                    m = members[starts[r] : starts[r + 1]]
                    orders[r] = m[rng(seed, "pair.class", e, int(classes[r])).permutation(len(m))]
                    pointer[r] = 0
                order, p = orders[r], pointer[r]
                row.append(order[(p + np.arange(c)) % len(order)])
                pointer[r] = (p + c) % len(order)
            out[b] = np.concatenate(row)


def _shifted(out, indices, batch_offsets, epoch_offsets, shift: int) -> None:
    size = out.shape[1]
    for e in range(len(epoch_offsets) - 1):
        b0, b1 = int(epoch_offsets[e]), int(epoch_offsets[e + 1])
        if b1 == b0:
            continue
        lo, hi = int(batch_offsets[b0]), int(batch_offsets[b1])
        if hi == lo:
            raise DataError(f"shifted partners need an epoch with samples, got epoch {e} without any")
        seq = indices[lo:hi]
        n_e = b1 - b0
        first = batch_offsets[b0 + (np.arange(n_e) + shift) % n_e] - lo
        out[b0:b1] = seq[(first[:, None] + np.arange(size)[None, :]) % len(seq)]
