"""Tests of schedgen.methods.learn2mix: the α update against its formula, largest-remainder
counts against an exact Fraction reference, whole schedules against a plain-loop
re-derivation of the drawing rule (:func:`ref_epoch`, which shares no code with the
planner), determinism, the offline proxy against a plain-loop reference, an
imbalanced-digits run, k-means groups, and every error message."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from schedgen.errors import DataError, ParameterError
from schedgen.methods.learn2mix import (
    Learn2MixPlanner,
    Learn2MixResult,
    class_mean_losses,
    default_lr,
    initial_alpha,
    kmeans_groups,
    largest_remainder_counts,
    learn2mix_schedule,
    parse_groups,
    update_alpha,
)
from schedgen.rng import rng

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- references and strategies


def ref_update(alpha, losses, gamma):
    """α + γ (L/ΣL − α) as a plain float64 loop (uniform target when ΣL = 0)."""
    c = len(alpha)
    total = 0.0
    for v in losses:
        total += float(v)
    out = []
    for j in range(c):
        target = float(losses[j]) / total if total > 0 else 1.0 / c
        out.append(float(alpha[j]) + gamma * (target - float(alpha[j])))
    return np.array(out)


def ref_counts(alpha, k):
    """Largest remainder with exact rationals: floors, then one unit at a time to the
    largest remaining fractional part (first such class on ties)."""
    exact = [Fraction(float(a)) * k for a in alpha]
    counts = [math.floor(x) for x in exact]
    rema = [x - c for x, c in zip(exact, counts)]
    taken = [False] * len(alpha)
    for _ in range(k - sum(counts)):
        best = None
        for j in range(len(alpha)):
            if not taken[j] and (best is None or rema[j] > rema[best]):
                best = j
        taken[best] = True
        counts[best] += 1
    return counts


def ref_epoch(labels, k, seed, epoch, alpha, n_batches):
    """The drawing rule re-derived from its documentation, as plain loops: class j is
    visited in the order ``members_j[rng(seed, "learn2mix", epoch, j).permutation(n_j)]``;
    each class's pointer starts at 0 and wraps to the start of the same permutation; a
    batch takes ``ref_counts(alpha, k)[j]`` draws of class j, classes in id order, each
    class's draws in draw order. Returns a list of ``n_batches`` lists of k ints."""
    labels = [int(v) for v in labels]
    counts = ref_counts(alpha, k)
    perms = []
    for j in range(len(counts)):
        members = [i for i, v in enumerate(labels) if v == j]  # ascending
        order = rng(seed, "learn2mix", epoch, j).permutation(len(members))
        perms.append([members[int(t)] for t in order])
    pointer = [0] * len(counts)
    batches = []
    for _ in range(n_batches):
        batch = []
        for j in range(len(counts)):
            for _ in range(counts[j]):
                batch.append(perms[j][pointer[j]])
                pointer[j] += 1
                if pointer[j] == len(perms[j]):
                    pointer[j] = 0
        batches.append(batch)
    return batches


def labels_from_sizes(sizes, seed=0):
    """Labels with the given class sizes, shuffled (so class members are not contiguous)."""
    y = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    return np.random.default_rng(seed).permutation(y)


@st.composite
def simplex(draw, min_size=2, max_size=8, allow_zero=True):
    lo = 0 if allow_zero else 1
    w = draw(st.lists(st.integers(lo, 1000), min_size=min_size, max_size=max_size).filter(lambda w: sum(w) > 0))
    a = np.asarray(w, dtype=np.float64)
    return a / a.sum()


@st.composite
def loss_vectors(draw, n):
    return np.asarray(
        draw(st.lists(st.one_of(st.just(0.0), st.floats(0, 50, allow_nan=False)), min_size=n, max_size=n)),
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- update_alpha


def test_update_alpha_hand_example():
    # L/ΣL = [0.25, 0.5, 0.25]; α + 0.5 (t − α)
    out = update_alpha([0.5, 0.3, 0.2], [1.0, 2.0, 1.0], 0.5)
    assert_allclose(out, [0.375, 0.4, 0.225], rtol=0, atol=1e-15)
    assert out.dtype == np.float64


def test_update_alpha_zero_losses_move_towards_uniform():
    assert_allclose(update_alpha([0.6, 0.4], [0.0, 0.0], 0.5), [0.55, 0.45], rtol=0, atol=1e-15)


def test_update_alpha_rate_one_jumps_to_target():
    assert_allclose(update_alpha([0.9, 0.05, 0.05], [3.0, 0.0, 1.0], 1.0), [0.75, 0.0, 0.25], rtol=0, atol=1e-15)


@SETTINGS
@given(data=st.data(), gamma=st.floats(1e-6, 1.0))
def test_update_alpha_matches_formula(data, gamma):
    alpha = data.draw(simplex())
    losses = data.draw(loss_vectors(len(alpha)))
    out = update_alpha(alpha, losses, gamma)
    assert_allclose(out, ref_update(alpha, losses, gamma), rtol=1e-12, atol=1e-15)


@SETTINGS
@given(data=st.data(), gamma=st.floats(1e-3, 1.0), steps=st.integers(1, 40))
def test_update_alpha_stays_on_simplex(data, gamma, steps):
    alpha = data.draw(simplex(allow_zero=False))
    for _ in range(steps):
        alpha = update_alpha(alpha, data.draw(loss_vectors(len(alpha))), gamma)
        assert alpha.min() >= 0.0
        assert abs(alpha.sum() - 1.0) <= 1e-12


# --------------------------------------------------------------------------- largest remainder


@pytest.mark.parametrize(
    "alpha, k, expected",
    [
        ([1 / 3, 1 / 3, 1 / 3], 4, [2, 1, 1]),  # equal remainders: smaller class id first
        ([0.25, 0.25, 0.5], 2, [1, 0, 1]),
        ([0.5, 0.5], 1, [1, 0]),
        ([0.0, 1.0, 0.0], 7, [0, 7, 0]),
        ([0.1, 0.2, 0.7], 5, ref_counts([0.1, 0.2, 0.7], 5)),
    ],
)
def test_largest_remainder_examples(alpha, k, expected):
    out = largest_remainder_counts(np.array(alpha), k)
    assert out.dtype == np.int64
    assert_array_equal(out, expected)


@SETTINGS
@given(alpha=simplex(min_size=1, max_size=12), k=st.integers(1, 600))
def test_largest_remainder_matches_fraction_reference(alpha, k):
    out = largest_remainder_counts(alpha, k)
    assert int(out.sum()) == k
    assert_array_equal(out, ref_counts(alpha, k))
    # each count is the floor or the floor plus one of the exact α_j k
    exact = [Fraction(float(a)) * k for a in alpha]
    assert all(math.floor(x) <= c <= math.floor(x) + 1 for x, c in zip(exact, out.tolist()))


@SETTINGS
@given(w=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=10).filter(lambda w: sum(w) > 0.1),
       k=st.integers(1, 300))
def test_largest_remainder_on_float_alphas(w, k):
    alpha = np.asarray(w) / np.sum(w)
    out = largest_remainder_counts(alpha, k)
    assert int(out.sum()) == k
    assert_array_equal(out, ref_counts(alpha, k))


@pytest.mark.parametrize(
    "alpha, match",
    [
        ([0.5, 0.6], r"alpha must sum to 1 \(within 1e-09\), got sum 1\.1"),
        ([1.2, -0.2], r"alpha must be finite and >= 0: 1 bad value\(s\), first at class 1"),
        ([np.nan, 1.0], r"first at class 0 \(nan\)"),
        ([[0.5, 0.5]], r"alpha must be a non-empty 1-D array .* got shape \(1, 2\)"),
        ([], r"got shape \(0,\)"),
    ],
)
def test_largest_remainder_rejects_bad_alpha(alpha, match):
    with pytest.raises(ParameterError, match=match):
        largest_remainder_counts(np.array(alpha, dtype=np.float64), 4)


@pytest.mark.parametrize("k, match", [(0, "k must be an integer >= 1, got 0"), (True, "k must be an integer, got True"),
                                      (2.0, "k must be an integer, got 2.0")])
def test_largest_remainder_rejects_bad_k(k, match):
    with pytest.raises(ParameterError, match=match):
        largest_remainder_counts([0.5, 0.5], k)


# --------------------------------------------------------------------------- class losses, initial alpha


def test_class_mean_losses_against_loop_and_empty_class():
    losses = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    labels = np.array([0, 2, 0, 2, 3])
    out = class_mean_losses(losses, labels, 4)
    assert_allclose(out, [2.0, 0.0, 3.0, 10.0], rtol=0, atol=1e-15)  # class 1 has no sample: 0


def test_class_mean_losses_rejects_bad_input():
    with pytest.raises(ParameterError, match=r"expected shape \(3,\), got \(2,\)"):
        class_mean_losses([1.0, 2.0], [0, 1, 1], 2)
    with pytest.raises(ParameterError, match=r"losses must be finite, found nan at row 1"):
        class_mean_losses([1.0, np.nan], [0, 1], 2)
    with pytest.raises(ParameterError, match=r"losses must be non-negative, found -1\.0 at row 0"):
        class_mean_losses([-1.0, 5.0], [0, 0], 1)
    with pytest.raises(DataError, match=r"labels must be in 0\.\.1 \(n_classes=2\), found 5 at row 1"):
        class_mean_losses([1.0, 1.0], [0, 5], 2)


def test_initial_alpha_is_class_proportions():
    assert_allclose(initial_alpha(np.array([0, 1, 1, 2, 2, 2, 2, 0])), [0.25, 0.25, 0.5], rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- planner: counts, cycles, order


def test_cyclic_pointer_small_class_repeats_in_the_same_order():
    y = labels_from_sizes([3, 20])
    planner = Learn2MixPlanner(y, 10, mixing_rate=0.5, seed=7, batches_per_epoch=4)
    M = planner.epoch_matrix(0, [0.5, 0.5])
    assert M.shape == (4, 10)
    draws = M[:, :5].ravel()  # class 0 fills the first 5 slots of every batch: 20 draws of 3 samples
    members = np.flatnonzero(y == 0)
    assert sorted(draws[:3].tolist()) == members.tolist()  # every sample once before any repeats
    assert_array_equal(draws, draws[np.arange(20) % 3])  # then the same order cycles
    assert_array_equal(draws[:3], planner.class_order(0, 0))
    # the big class is not exhausted: 20 distinct draws, a prefix of its order
    assert_array_equal(M[:, 5:].ravel(), planner.class_order(0, 1)[:20])


@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 15), min_size=2, max_size=5),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 5),
)
def test_batches_exact_counts_order_and_cycles(sizes, data, seed, epoch):
    y = labels_from_sizes(sizes, seed=len(sizes))
    n = len(y)
    k = data.draw(st.integers(1, n))
    B = data.draw(st.integers(1, 6))
    alpha = data.draw(simplex(min_size=len(sizes), max_size=len(sizes)))
    planner = Learn2MixPlanner(y, k, mixing_rate=0.3, seed=seed, batches_per_epoch=B)
    batches = planner.epoch_batches(epoch, alpha)
    counts = largest_remainder_counts(alpha, k)
    assert len(batches) == B
    per_class = {j: [] for j in range(len(sizes))}
    for batch in batches:
        assert batch.dtype == np.int64 and batch.shape == (k,)
        assert batch.min() >= 0 and batch.max() < n
        lab = y[batch]
        assert np.all(np.diff(lab) >= 0)  # ordered by class id
        assert_array_equal(np.bincount(lab, minlength=len(sizes)), counts)
        for j in range(len(sizes)):
            per_class[j].extend(batch[lab == j].tolist())
    for j, got in per_class.items():
        order = planner.class_order(epoch, j)
        assert sorted(order.tolist()) == np.flatnonzero(y == j).tolist()
        assert got == order[np.arange(len(got)) % sizes[j]].tolist()
    assert [b.tolist() for b in batches] == ref_epoch(y, k, seed, epoch, alpha, B)


def test_zero_count_class_takes_nothing():
    y = labels_from_sizes([5, 5, 5])
    planner = Learn2MixPlanner(y, 4, mixing_rate=0.5, seed=0)
    for batch in planner.epoch_batches(1, [0.5, 0.0, 0.5]):
        assert 1 not in y[batch]


def test_default_batches_per_epoch_is_ceil_n_over_k():
    y = labels_from_sizes([7, 6])
    assert Learn2MixPlanner(y, 5, mixing_rate=0.1, seed=0).batches_per_epoch == 3
    assert Learn2MixPlanner(y, 13, mixing_rate=0.1, seed=0).batches_per_epoch == 1


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different():
    y = labels_from_sizes([30, 12, 50])
    alpha = [0.2, 0.5, 0.3]
    one = Learn2MixPlanner(y, 16, mixing_rate=0.1, seed=3).epoch_matrix(2, alpha).tobytes()
    two = Learn2MixPlanner(y.copy(), 16, mixing_rate=0.1, seed=3).epoch_matrix(2, np.array(alpha)).tobytes()
    other = Learn2MixPlanner(y, 16, mixing_rate=0.1, seed=4).epoch_matrix(2, alpha).tobytes()
    next_epoch = Learn2MixPlanner(y, 16, mixing_rate=0.1, seed=3).epoch_matrix(3, alpha).tobytes()
    assert one == two
    assert one != other
    assert one != next_epoch


# --------------------------------------------------------------------------- offline proxy


def ref_schedule(X, y, k, epochs, gamma, seed, lr, groups=None):
    """Plain-loop float64 reference of the proxy run (per-sample softmax, per-element SGD).

    The proxy learns the labels ``y``; batches mix, and losses are averaged over,
    ``groups`` (default: the labels)."""
    n, d = X.shape
    c = int(y.max()) + 1
    g_of = y if groups is None else groups
    G = int(g_of.max()) + 1
    n_batches = -(-n // k)
    W = [[0.0] * c for _ in range(d)]
    b = [0.0] * c

    def logp(x):
        z = [b[j] + sum(float(x[i]) * W[i][j] for i in range(d)) for j in range(c)]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        return [v - lse for v in z]

    alpha = [float(v) for v in np.bincount(g_of, minlength=G) / n]
    alphas, losses, batches = [], [], []
    for e in range(epochs):
        alphas.append(alpha)
        for batch in ref_epoch(g_of, k, seed, e, alpha, n_batches):
            batches.append(batch)
            gW = [[0.0] * c for _ in range(d)]
            gb = [0.0] * c
            for s in batch:
                p = [math.exp(v) for v in logp(X[s])]
                for j in range(c):
                    g = (p[j] - (1.0 if j == y[s] else 0.0)) / k
                    gb[j] += g
                    for i in range(d):
                        gW[i][j] += float(X[s, i]) * g
            for j in range(c):
                b[j] -= lr * gb[j]
                for i in range(d):
                    W[i][j] -= lr * gW[i][j]
        sums, cnt = [0.0] * G, [0] * G
        for s in range(n):
            sums[g_of[s]] -= logp(X[s])[y[s]]
            cnt[g_of[s]] += 1
        L = [sums[j] / cnt[j] for j in range(G)]
        losses.append(L)
        total = sum(L)
        alpha = [alpha[j] + gamma * (L[j] / total - alpha[j]) for j in range(G)]
    return np.array(alphas), np.array(losses), batches


def test_offline_schedule_matches_plain_loop_reference():
    rng = np.random.default_rng(0)
    y = labels_from_sizes([14, 6, 10], seed=1)
    X = (rng.normal(size=(len(y), 3)) + y[:, None] * np.array([1.0, -0.5, 0.2])).astype(np.float32)
    calls = []
    res = learn2mix_schedule(X, y, 7, epochs=3, mixing_rate=0.5, seed=5, lr=0.3,
                             progress=lambda done, total: calls.append((done, total)))
    alphas, losses, batches = ref_schedule(X, y, 7, 3, 0.5, 5, 0.3)
    assert isinstance(res, Learn2MixResult)
    assert_allclose(res.class_proportions, alphas, rtol=1e-10, atol=1e-12)
    assert_allclose(res.class_losses, losses, rtol=1e-10, atol=1e-12)
    assert_array_equal(res.indices, np.concatenate(batches))
    assert_array_equal(res.batch_offsets, np.arange(3 * 5 + 1) * 7)  # ceil(30/7) = 5 batches per epoch
    assert_array_equal(res.epoch_offsets, [0, 5, 10, 15])
    for arr in (res.indices, res.batch_offsets, res.epoch_offsets):
        assert arr.dtype == np.int64
    assert calls == [(i, 15) for i in range(16)]
    assert res.params == {"seed": 5, "epochs": 3, "mixing_rate": 0.5, "batches_per_epoch": 5, "n_classes": 3,
                          "proxy": "softmax-regression-sgd", "lr": 0.3}


def test_offline_proxy_learns_labels_and_averages_over_groups():
    """With groups that are not the labels (k-means clusters, an npz groups array) the
    proxy still learns the task's labels; its per-sample losses are averaged per group."""
    rng = np.random.default_rng(1)
    y = labels_from_sizes([12, 9, 9], seed=2)
    X = (rng.normal(size=(len(y), 3)) + y[:, None] * np.array([1.0, -0.5, 0.2])).astype(np.float32)
    groups = np.arange(len(y)) % 2  # unrelated to the labels
    res = learn2mix_schedule(X, groups, 6, epochs=3, mixing_rate=0.5, seed=4, lr=0.3, labels=y)
    alphas, losses, batches = ref_schedule(X, y, 6, 3, 0.5, 4, 0.3, groups=groups)
    assert res.class_losses.shape == (3, 2)
    assert_allclose(res.class_proportions, alphas, rtol=1e-10, atol=1e-12)
    assert_allclose(res.class_losses, losses, rtol=1e-10, atol=1e-12)
    assert_array_equal(res.indices, np.concatenate(batches))
    # Trained on the parity groups instead, the proxy would learn a coin flip.
    on_groups = learn2mix_schedule(X, groups, 6, epochs=3, mixing_rate=0.5, seed=4, lr=0.3)
    assert not np.allclose(on_groups.class_losses, res.class_losses)
    with pytest.raises(DataError, match=r"labels must have one value per sample: expected shape \(30,\), got \(29,\)"):
        learn2mix_schedule(X, groups, 6, epochs=1, mixing_rate=0.5, seed=4, labels=y[:-1])


def test_offline_schedule_is_replayable_from_recorded_alphas():
    rng = np.random.default_rng(1)
    y = labels_from_sizes([40, 9, 25, 16], seed=2)
    X = rng.random((len(y), 5)).astype(np.float32)
    res = learn2mix_schedule(X, y, 12, epochs=4, mixing_rate=0.3, seed=11)
    again = learn2mix_schedule(X, y, 12, epochs=4, mixing_rate=0.3, seed=11)
    assert res.indices.tobytes() == again.indices.tobytes()
    assert res.class_proportions.tobytes() == again.class_proportions.tobytes()
    assert res.class_losses.tobytes() == again.class_losses.tobytes()
    assert res.indices.tobytes() != learn2mix_schedule(X, y, 12, epochs=4, mixing_rate=0.3, seed=12).indices.tobytes()
    assert_allclose(res.class_proportions[0], initial_alpha(y), rtol=0, atol=0)
    for e in range(4):
        lo, hi = res.epoch_offsets[e], res.epoch_offsets[e + 1]
        got = res.indices[res.batch_offsets[lo] : res.batch_offsets[hi]]
        assert got.reshape(-1, 12).tolist() == ref_epoch(y, 12, 11, e, res.class_proportions[e], 8)
        if e + 1 < 4:
            nxt = update_alpha(res.class_proportions[e], res.class_losses[e], 0.3)
            assert_array_equal(res.class_proportions[e + 1], nxt)
    assert res.params["lr"] == default_lr(X)


# --------------------------------------------------------------------------- whole schedules, re-derived


@pytest.mark.parametrize(
    "sizes, k, epochs, gamma, seed, batches_per_epoch, with_labels",
    [
        ([40, 9, 25, 16], 12, 4, 0.3, 11, None, False),  # default ceil(N / k) batches
        ([3, 20, 2, 11], 8, 3, 0.9, 0, 15, False),  # small classes wrap several times an epoch
        ([40, 2, 30], 5, 3, 0.5, 2**32 - 1, None, False),  # class 1 gets 0 draws while α_1·5 < 1/2
        ([7, 5], 12, 2, 1.0, 5, 4, False),  # k = N: every batch holds the whole data set (with repeats)
        ([13, 17, 10], 6, 3, 0.7, 9, None, True),  # groups that are not the labels
    ],
)
def test_whole_offline_schedule_is_the_rule_rederived(sizes, k, epochs, gamma, seed, batches_per_epoch, with_labels):
    """Every batch of every epoch of an offline schedule, re-derived by :func:`ref_epoch`
    from the α the schedule recorded for that epoch (no planner involved)."""
    rng_x = np.random.default_rng(len(sizes) + k)
    y = labels_from_sizes(sizes, seed=k)
    n = len(y)
    X = (rng_x.normal(size=(n, 4)) + y[:, None]).astype(np.float32)
    labels = (np.arange(n) * 7 % 3).astype(np.int64) if with_labels else None
    res = learn2mix_schedule(X, y, k, epochs=epochs, mixing_rate=gamma, seed=seed,
                             batches_per_epoch=batches_per_epoch, labels=labels)
    B = batches_per_epoch or -(-n // k)
    assert res.params["batches_per_epoch"] == B and res.indices.shape == (epochs * B * k,)
    assert_array_equal(res.class_proportions[0], np.asarray(sizes) / n)
    want = []
    for e in range(epochs):
        want.extend(ref_epoch(y, k, seed, e, res.class_proportions[e].tolist(), B))
    assert res.indices.reshape(-1, k).tolist() == want
    # the cases exercise what they claim: α moved the counts, a class was skipped, a class wrapped
    counts = [ref_counts(res.class_proportions[e], k) for e in range(epochs)]
    if sizes == [40, 9, 25, 16]:
        assert len({tuple(c) for c in counts}) > 1
    if sizes == [40, 2, 30]:
        assert any(c[1] == 0 for c in counts)
    if sizes == [3, 20, 2, 11]:
        assert all(sum(c[j] * B > 2 * sizes[j] for j in range(4)) >= 2 for c in counts)


def test_class_orders_come_from_the_tagged_learn2mix_stream():
    """Class j of epoch e: ``default_rng([seed, 0x6C326D78, e, j])`` (rng(seed, "learn2mix",
    e, j)), not the untagged ``[seed, e, j]`` of revision 1, whose class 0 was the stream
    ``[seed, e]`` (SeedSequence pads with zeros)."""
    y = labels_from_sizes([30, 12, 50])
    planner = Learn2MixPlanner(y, 16, mixing_rate=0.1, seed=3)
    for e, j in [(0, 0), (2, 1), (5, 2)]:
        members = np.flatnonzero(y == j)
        tagged = members[np.random.default_rng([3, 0x6C326D78, e, j]).permutation(len(members))]
        assert_array_equal(planner.class_order(e, j), tagged)
        untagged = members[np.random.default_rng([3, e, j]).permutation(len(members))]
        assert not np.array_equal(planner.class_order(e, j), untagged)


@pytest.fixture(scope="module")
def imbalanced_digits():
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features

    ds = load_dataset("digits", split="train")
    X = prepare_features(ds, FeatureSpec())  # pixels / 16, no PCA at 64 dims
    y = ds.y
    keep = np.ones(len(y), dtype=bool)
    for c in range(5):  # classes 0-4 cut to their first 20%
        idx = np.flatnonzero(y == c)
        keep[idx[math.ceil(0.2 * len(idx)) :]] = False
    return X[keep], np.asarray(y[keep])


def test_offline_digits_alpha_moves_towards_hard_classes(imbalanced_digits):
    X, y = imbalanced_digits
    assert X.max() <= 1.0 and X.min() >= 0.0
    res = learn2mix_schedule(X, y, 32, epochs=8, mixing_rate=0.5, seed=0)
    alpha, L = res.class_proportions, res.class_losses
    target = L / L.sum(axis=1, keepdims=True)
    hardest = int(np.argmax(L[0]))
    assert hardest < 5  # a cut class is what the proxy finds hardest at first
    assert np.all(np.diff(alpha[:2, hardest]) > 0) and alpha[-1, hardest] > 2 * alpha[0, hardest]
    assert alpha[-1, :5].sum() > 1.5 * alpha[0, :5].sum()  # the minority classes gain share overall
    # once α_0's share has decayed (γ = 0.5: weight 1/8 at epoch 3), α tracks L/ΣL of the epoch before
    for e in range(3, 8):
        assert np.corrcoef(alpha[e], target[e - 1])[0, 1] > 0.9
    # every batch has exactly k samples, mixed as α says
    last = res.indices[res.batch_offsets[res.epoch_offsets[-2]] :].reshape(-1, 32)
    assert_array_equal(np.bincount(y[last[0]], minlength=10), ref_counts(alpha[-1], 32))


# --------------------------------------------------------------------------- k-means groups


def test_kmeans_groups_deterministic_nonempty_canonical():
    rng = np.random.default_rng(3)
    centers = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]])
    X = (centers[rng.integers(4, size=200)] + rng.normal(scale=0.3, size=(200, 2))).astype(np.float32)
    g = kmeans_groups(X, 4, seed=1)
    assert g.dtype == np.int64 and g.shape == (200,)
    assert_array_equal(g, kmeans_groups(X.copy(), 4, seed=1))
    assert np.all(np.bincount(g, minlength=4) > 0)
    first = [int(np.flatnonzero(g == j)[0]) for j in range(4)]
    assert first == sorted(first) and first[0] == 0
    # well-separated blobs are recovered exactly (up to the canonical renumbering)
    truth = np.argmin(((X[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    assert len(set(zip(g.tolist(), truth.tolist()))) == 4


def test_kmeans_groups_nonempty_with_duplicates_and_n_groups_equal_n():
    X = np.zeros((10, 3), dtype=np.float32)
    X[7:] = 1.0  # only two distinct points for five groups
    g = kmeans_groups(X, 5, seed=0)
    assert sorted(set(g.tolist())) == [0, 1, 2, 3, 4]
    assert_array_equal(g, kmeans_groups(X, 5, seed=0))
    Y = np.random.default_rng(0).random((6, 2))
    assert_array_equal(kmeans_groups(Y, 6, seed=2), np.arange(6))  # canonical: one sample each, in order


def test_kmeans_groups_on_digits_feed_a_schedule(imbalanced_digits):
    X, _ = imbalanced_digits
    g = kmeans_groups(X, parse_groups("kmeans:6"), seed=0)
    assert np.all(np.bincount(g, minlength=6) > 0)
    res = learn2mix_schedule(X, g, 50, epochs=2, mixing_rate=0.2, seed=0)
    assert res.class_proportions.shape == (2, 6)


@pytest.mark.parametrize("n_groups, match", [(1, "n_groups must be an integer >= 2, got 1"),
                                             (11, r"n_groups must be in 2\.\.10 \(the number of samples\), got 11"),
                                             (True, "n_groups must be an integer, got True")])
def test_kmeans_groups_rejects_bad_n_groups(n_groups, match):
    with pytest.raises(ParameterError, match=match):
        kmeans_groups(np.zeros((10, 2)), n_groups, seed=0)


def test_parse_groups():
    assert parse_groups("kmeans:12") == 12
    for bad in ("kmeans:", "kmeans:1", "kmeans:x", "labels", "kmeans:-3"):
        with pytest.raises(ParameterError, match=r"groups must be 'kmeans:C' with an integer C >= 2, got"):
            parse_groups(bad)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "gamma, match",
    [
        (1.5, r"mixing rate must be in \(0, 1\], got 1\.5"),
        (0.0, r"mixing rate must be in \(0, 1\], got 0\.0"),
        (-0.1, r"mixing rate must be in \(0, 1\], got -0\.1"),
        (float("nan"), r"mixing rate must be in \(0, 1\], got nan"),
        (True, r"mixing rate must be a number in \(0, 1\], got True"),
        ("0.1", r"mixing rate must be a number in \(0, 1\], got '0\.1'"),
    ],
)
def test_bad_mixing_rate(gamma, match):
    with pytest.raises(ParameterError, match=match):
        update_alpha([0.5, 0.5], [1.0, 1.0], gamma)
    with pytest.raises(ParameterError, match=match):
        Learn2MixPlanner([0, 1], 1, mixing_rate=gamma, seed=0)
    with pytest.raises(ParameterError, match=match):
        learn2mix_schedule(np.zeros((2, 1)), [0, 1], 1, epochs=1, mixing_rate=gamma, seed=0)


@pytest.mark.parametrize(
    "losses, match",
    [
        ([1.0, -0.5, 2.0], r"class losses must be finite and >= 0: 1 bad value\(s\) .*first at class 1 \(-0\.5\)"),
        ([np.nan, 1.0, np.nan], r"2 bad value\(s\) .*first at class 0 \(nan\)"),
        ([1.0, np.inf, 1.0], r"1 bad value\(s\) .*first at class 1 \(inf\)"),
        ([1.0, 2.0], r"one value per class: expected length 3, got 2"),
        ([[1.0, 2.0, 3.0]], r"expected length 3, got shape \(1, 3\)"),
    ],
)
def test_bad_losses(losses, match):
    with pytest.raises(ParameterError, match=match):
        update_alpha([0.2, 0.3, 0.5], np.array(losses), 0.1)


def test_zero_sample_class():
    with pytest.raises(DataError, match=r"class 3 has no samples; learn2mix needs every class present"):
        initial_alpha(np.array([0, 1, 2, 4, 4]))
    with pytest.raises(DataError, match=r"class 2 \(and 1 more\) has no samples"):
        initial_alpha(np.array([0, 1, 1]), n_classes=4)
    with pytest.raises(DataError, match=r"class 1 has no samples"):
        Learn2MixPlanner(np.array([0, 0, 2]), 1, mixing_rate=0.1, seed=0)
    with pytest.raises(DataError, match=r"class 1 has no samples"):
        learn2mix_schedule(np.zeros((3, 2)), np.array([0, 0, 2]), 1, epochs=1, mixing_rate=0.1, seed=0)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0.0, 1.0, 1.0]), r"labels must be an integer array, got dtype float64"),
        (np.array([True, False]), r"labels must be an integer array, got dtype bool"),
        (np.array(["a", "b"]), r"labels must be an integer array, got dtype <U1"),
        (np.array([0, -1, 1]), r"labels must be >= 0, found -1 at row 1"),
        (np.array([[0, 1]]), r"labels must be a non-empty 1-D array .* got shape \(1, 2\)"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(DataError, match=match):
        initial_alpha(labels)
    with pytest.raises(DataError, match=match):
        Learn2MixPlanner(labels, 1, mixing_rate=0.1, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": True}, "k must be an integer, got True"),
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"k": 5}, r"k must be a positive integer no larger than the dataset \(N=4\), got k=5"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"epochs": 1.0}, "epochs must be an integer, got 1.0"),
        ({"seed": -1}, "seed must be an integer >= 0 and <= 4294967295, got -1"),
        ({"seed": 2**32}, "seed must be an integer >= 0 and <= 4294967295, got 4294967296"),
        ({"batches_per_epoch": 0}, "batches_per_epoch must be an integer >= 1, got 0"),
        ({"lr": 0.0}, "lr must be a positive finite number, got 0.0"),
        ({"lr": float("inf")}, "lr must be a positive finite number, got inf"),
    ],
)
def test_bad_schedule_options(kwargs, match):
    args = {"k": 2, "epochs": 1, "mixing_rate": 0.1, "seed": 0, **kwargs}
    k = args.pop("k")
    with pytest.raises(ParameterError, match=match):
        learn2mix_schedule(np.zeros((4, 2)), np.array([0, 1, 0, 1]), k, **args)


def test_bad_features():
    with pytest.raises(DataError, match="features have 3 rows but there are 4 labels"):
        learn2mix_schedule(np.zeros((3, 2)), np.array([0, 1, 0, 1]), 2, epochs=1, mixing_rate=0.1, seed=0)
    X = np.zeros((4, 2))
    X[2, 1] = np.nan
    with pytest.raises(DataError, match="features must be finite"):
        learn2mix_schedule(X, np.array([0, 1, 0, 1]), 2, epochs=1, mixing_rate=0.1, seed=0)


def test_package_has_no_torch_import():
    from pathlib import Path

    import schedgen.methods.learn2mix as pkg

    files = sorted(Path(pkg.__file__).parent.glob("*.py"))
    assert len(files) > 1
    for f in files:
        src = f.read_text()
        assert "import torch" not in src and "from torch" not in src, f.name


# --------------------------------------------------------------------------- memory (issue 10, item 2)


@pytest.mark.parametrize("fill", [1, 7, 1 << 20])
def test_epoch_matrix_written_in_pieces_and_into_out(monkeypatch, fill):
    import schedgen.methods.learn2mix._planner as planner_mod

    monkeypatch.setattr(planner_mod, "_FILL_ELEMENTS", fill)
    y = labels_from_sizes([3, 20, 9])
    planner = Learn2MixPlanner(y, 10, mixing_rate=0.5, seed=7, batches_per_epoch=13)
    alpha = [0.25, 0.5, 0.25]
    want = np.array(ref_epoch(y, 10, 7, 2, alpha, 13), dtype=np.int64)
    assert_array_equal(planner.epoch_matrix(2, alpha), want)
    out = np.full((2, 13, 10), -1, dtype=np.int64)
    got = planner.epoch_matrix(2, alpha, out=out[1])
    assert got is not None and np.shares_memory(got, out) and (out[0] == -1).all()
    assert_array_equal(out[1], want)
    for bad in (np.empty((13, 9), np.int64), np.empty((13, 10), np.int32)):
        with pytest.raises(ParameterError, match=r"^out must be an int64 array of shape \(13, 10\), got "):
            planner.epoch_matrix(2, alpha, out=bad)


def test_schedule_holds_one_copy_of_its_indices():
    """The schedule's indices are written in place: its peak is about one copy of them
    (three before: the epochs' matrices, their concatenation and an int64 copy of that)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    epochs, B, k = 2, 20_000, 50
    indices = epochs * B * k * 8
    tracemalloc.start()
    try:
        res = learn2mix_schedule(X, y, k, epochs=epochs, mixing_rate=0.2, seed=0, batches_per_epoch=B)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.indices.nbytes == indices
    assert indices <= peak < 1.5 * indices, peak / indices


def test_schedule_memory_counts_the_sizes():
    from schedgen.methods.learn2mix import schedule_memory

    m = schedule_memory(1437, 64, 50, epochs=3, batches_per_epoch=10**8, n_groups=10, n_outputs=10)
    assert m["indices"] == 3 * 10**8 * 50 * 8
    assert m["batch_offsets"] == 2 * (3 * 10**8 + 1) * 8
    assert m["epoch_arrays"] == 2 * 3 * 10 * 8
    assert set(m) == {"indices", "batch_offsets", "epoch_arrays", "proxy"}
    default = schedule_memory(1437, 64, 50, epochs=1, n_groups=10, n_outputs=10)
    assert default["indices"] == 29 * 50 * 8  # ceil(N / k) batches an epoch
    g = schedule_memory(1437, 64, 50, epochs=1, n_groups=300, n_outputs=10, kmeans_groups=300)
    assert g["kmeans_centers"] == 3 * 300 * 64 * 8 and g["kmeans_distances"] == 2 * 1437 * 300 * 8
