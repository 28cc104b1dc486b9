"""Groups for data without usable labels: ``--groups kmeans:C``, seeded k-means."""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError
from ...params import check_int
from ...rng import MAX_WORD, rng
from ._common import BLOCK_ROWS, check_features

__all__ = ["kmeans_groups", "parse_groups"]

_MAX_ITER = 300
_TOL = 1e-4  # on the squared center shift, relative to the mean feature variance (as scikit-learn)
_PREFIX = "kmeans:"


def parse_groups(spec: str) -> int:
    """The number of groups in a ``"kmeans:C"`` spec.

    Parameters
    ----------
    spec : str
        ``"kmeans:C"`` with an integer C >= 2.

    Returns
    -------
    n_groups : int

    Raises
    ------
    ParameterError
        On anything else.
    """
    if not isinstance(spec, str) or not spec.startswith(_PREFIX):
        raise ParameterError(f"groups must be 'kmeans:C' with an integer C >= 2, got {spec!r}")
    tail = spec[len(_PREFIX):].strip()
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
    for s in range(0, n, BLOCK_ROWS):
        d = _sq_dists(X, centers, s, s + BLOCK_ROWS)
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
    for s in range(0, n, BLOCK_ROWS):
        blk = X[s : s + BLOCK_ROWS].astype(np.float64)
        s1 += blk.sum(0)
        s2 += (blk * blk).sum(0)
    return float(np.maximum(s2 / n - (s1 / n) ** 2, 0.0).mean())


def _kmeans_pp(X: np.ndarray, g: int, gen: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: g rows of X as float64 centers."""
    n = X.shape[0]
    chosen = [int(gen.integers(n))]
    best = _assign(X, X[chosen].astype(np.float64))[1]
    for _ in range(1, g):
        cum = np.cumsum(best)
        total = float(cum[-1])
        if total > 0:
            u = gen.random() * total
            i = int(np.searchsorted(cum, u, side="right"))
            i = min(i, n - 1)
            while best[i] == 0:  # u landed on the boundary of a zero-weight run
                i -= 1
        else:  # fewer distinct points than groups: any unchosen row
            rest = np.setdiff1d(np.arange(n), chosen)
            i = int(rest[gen.integers(len(rest))])
        chosen.append(i)
        np.minimum(best, _assign(X, X[[i]].astype(np.float64))[1], out=best)
    return X[chosen].astype(np.float64)


def _lloyd(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-centre and assign until the assignment stops changing or the centers move
    by at most the tolerance; the last assignment and its squared distances."""
    g = centers.shape[0]
    tol = _TOL * _mean_variance(X)
    lab, dist, sums = _assign(X, centers, sums=True)
    for _ in range(_MAX_ITER):
        counts = np.bincount(lab, minlength=g)
        moved = centers.copy()
        np.divide(sums, counts[:, None], out=centers, where=counts[:, None] > 0)  # an empty center stays put
        shift = float(((centers - moved) ** 2).sum())
        new, dist, sums = _assign(X, centers, sums=True)
        if np.array_equal(new, lab) or shift <= tol:
            return new, dist
        lab = new
    return lab, dist


def _fill_empty(lab: np.ndarray, dist: np.ndarray, g: int) -> None:
    """Into each empty group, in place, move the sample farthest from its center among
    groups with two or more members (smallest index on ties)."""
    counts = np.bincount(lab, minlength=g)
    for empty in np.flatnonzero(counts == 0).tolist():
        movable = counts[lab] >= 2
        i = int(np.argmax(np.where(movable, dist, -1.0)))  # first index among the farthest
        counts[lab[i]] -= 1
        lab[i] = empty
        counts[empty] = 1
        dist[i] = 0.0


def _renumber(lab: np.ndarray, g: int) -> np.ndarray:
    """Group ids in order of each group's smallest sample index."""
    n = len(lab)
    first = np.full(g, n, dtype=np.int64)
    np.minimum.at(first, lab, np.arange(n, dtype=np.int64))
    rank = np.empty(g, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(g, dtype=np.int64)
    return rank[lab]


def kmeans_groups(X, n_groups: int, *, seed: int) -> np.ndarray:
    """Seeded k-means groups for data without labels, every group non-empty.

    Lloyd's algorithm in float64: k-means++ seeding from ``rng(seed, "kmeans")``
    (:mod:`schedgen.rng`, the stream ``default_rng([seed, 0x4B4D4E53])``), then
    re-centre and assign (nearest center, smaller center id on ties) until the
    assignment stops changing or the centers move by at most ``1e-4 * mean feature
    variance`` in total squared distance (at most 300 rounds; an emptied center keeps
    its position). The groups are the last assignment. Afterwards, while some group
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
        ``0 <= seed < 2**32``.

    Returns
    -------
    groups : ndarray of shape (n_samples,), int64, values ``0..n_groups-1``, all present

    Raises
    ------
    ParameterError, DataError
        On a bad ``n_groups`` or seed, or features that are not finite reals.
    """
    A = check_features(X)
    n = A.shape[0]
    g = check_int("n_groups", n_groups, minimum=2)
    if g > n:
        raise ParameterError(f"n_groups must be in 2..{n} (the number of samples), got {g}")
    seed = check_int("seed", seed, minimum=0, maximum=MAX_WORD)
    centers = _kmeans_pp(A, g, rng(seed, "kmeans"))
    lab, dist = _lloyd(A, centers)
    _fill_empty(lab, dist, g)
    return _renumber(lab, g)
