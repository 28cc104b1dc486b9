"""Tests of schedgen.torch.Learn2MixBatchSampler: online learn2mix, its record, replay and resume."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import schedgen.data  # noqa: E402
import schedgen.store  # noqa: E402
import schedgen.store._append  # noqa: E402
import schedgen.store._write  # noqa: E402
import schedgen.torch  # noqa: E402
import schedgen.torch._learn2mix  # noqa: E402
from schedgen.errors import DataError, ParameterError, StoreError  # noqa: E402
from schedgen.methods.learn2mix import largest_remainder_counts  # noqa: E402
from schedgen.rng import rng  # noqa: E402
from schedgen.store import read_attrs, read_schedule, write_schedule  # noqa: E402
from schedgen.torch import Learn2MixBatchSampler, ScheduleBatchSampler  # noqa: E402

# Four classes of 5, 12, 3 and 20 samples in a shuffled order; k = 6 gives 7 batches per epoch.
SIZES = (5, 12, 3, 20)
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(4), SIZES)).astype(np.int64)
N, C, K, B = len(LABELS), len(SIZES), 6, 7
GAMMA, SEED, EPOCHS = 0.4, 3, 3


def losses_for(e: int) -> np.ndarray:
    """The class losses a trainer reports after epoch e (fixed, so every run sees the same)."""
    return np.random.default_rng([99, e]).random(C) * 2.0 + 0.05


def make(labels=LABELS, k=K, **kw) -> Learn2MixBatchSampler:
    kw = {"mixing_rate": GAMMA, "seed": SEED, **kw}
    return Learn2MixBatchSampler(labels, k, **kw)


def run(sampler: Learn2MixBatchSampler, epochs) -> list[tuple[int, list[int]]]:
    """The uninterrupted loop: for each epoch a full pass, then update with its losses."""
    out = []
    for e in epochs:
        assert sampler.epoch == e
        out.extend((e, b) for b in sampler)
        sampler.update(losses_for(e))
    return out


# --------------------------------------------------------------------------- plain-loop oracles


def lr_round(alpha, k: int) -> list[int]:
    """Largest-remainder rounding of α·k in exact arithmetic; ties to the smaller class id."""
    exact = [Fraction(float(a)) * k for a in alpha]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in order[: k - sum(counts)]:
        counts[j] += 1
    return counts


def reference_epoch(labels, k: int, seed: int, epoch: int, alpha, n_batches: int) -> list[list[int]]:
    """DESIGN.md section 2 as loops: per-class permutations, cyclic pointers, class-id order in a batch."""
    labels = [int(v) for v in labels]
    counts = lr_round(alpha, k)
    perms = []
    for j in range(len(counts)):
        members = [i for i, y in enumerate(labels) if y == j]
        order = rng(seed, "learn2mix", epoch, j).permutation(len(members))
        perms.append([members[t] for t in order])
    pointers = [0] * len(counts)
    batches = []
    for _ in range(n_batches):
        batch = []
        for j, c in enumerate(counts):
            for _ in range(c):
                batch.append(perms[j][pointers[j] % len(perms[j])])
                pointers[j] += 1
        batches.append(batch)
    return batches


def reference_update(alpha, losses, gamma) -> list[float]:
    total = sum(float(v) for v in losses)
    return [a + gamma * (float(v) / total - a) for a, v in zip(alpha, losses)]


# --------------------------------------------------------------------------- batches


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    k_frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 3),
    gamma=st.sampled_from([0.1, 0.5, 1.0]),
    losses=st.lists(st.lists(st.floats(0.0, 5.0), min_size=4, max_size=4), min_size=2, max_size=2),
    extra=st.sampled_from([None, 1, 5]),
)
def test_batches_follow_alpha_and_match_a_plain_loop_reference(sizes, k_frac, seed, gamma, losses, extra):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    n, c = len(labels), len(sizes)
    k = max(1, min(n, round(k_frac * n)))
    sampler = Learn2MixBatchSampler(labels, k, mixing_rate=gamma, seed=seed, batches_per_epoch=extra)
    n_batches = extra or -(-n // k)
    assert len(sampler) == n_batches
    alpha = [s / n for s in sizes]
    assert_allclose(sampler.alpha, alpha, rtol=0, atol=1e-15)  # α_0: the class proportions
    for e, L in enumerate(losses):
        L = L[:c]
        batches = list(sampler)
        assert len(batches) == n_batches
        counts = largest_remainder_counts(sampler.alpha, k)
        assert counts.tolist() == lr_round(sampler.alpha, k)
        for b in batches:
            assert len(b) == k and all(type(i) is int and 0 <= i < n for i in b)
            assert np.bincount(labels[b], minlength=c).tolist() == counts.tolist()
        assert batches == reference_epoch(labels, k, seed, e, sampler.alpha, n_batches)
        before = sampler.alpha
        after = sampler.update(L)
        want = reference_update(before, L, gamma) if sum(L) > 0 else [a + gamma * (1 / c - a) for a in before]
        assert_allclose(after, want, rtol=1e-12, atol=1e-15)
        assert_array_equal(sampler.alpha, after)
        assert sampler.epoch == e + 1


def test_first_epoch_uses_the_class_proportions_and_update_follows_the_rule():
    sampler = make()
    assert_array_equal(sampler.alpha, np.asarray(SIZES) / N)
    list(sampler)
    L = np.array([1.0, 0.0, 3.0, 0.0])
    new = sampler.update(L)
    # α ← α + γ (L / ΣL − α) with α = (5, 12, 3, 20) / 40, γ = 0.4, L / ΣL = (0.25, 0, 0.75, 0)
    assert_allclose(new, [0.6 * 0.125 + 0.1, 0.6 * 0.3, 0.6 * 0.075 + 0.3, 0.6 * 0.5], rtol=1e-14)
    assert_allclose(sampler.update(np.zeros(C)), 0.6 * new + 0.4 * 0.25, rtol=1e-14)  # ΣL = 0: uniform target


def test_losses_accepted_as_tensors_lists_and_arrays():
    ref = make()
    ref.update(losses_for(0))
    for L in (torch.tensor(losses_for(0), dtype=torch.float64), losses_for(0).tolist()):
        s = make()
        s.update(L)
        assert_array_equal(s.alpha, ref.alpha)
    s = make(labels=torch.from_numpy(LABELS))
    assert list(s) == list(make())


def test_class_losses_helper_matches_a_loop_for_tensors_and_arrays():
    rng = np.random.default_rng(0)
    y = np.array([0, 2, 2, 0, 2, 0, 0])  # class 1 and class 3 have no sample
    v = rng.random(len(y)) * 3
    want = []
    for j in range(4):
        vals = [float(v[i]) for i in range(len(y)) if y[i] == j]
        want.append(sum(vals) / len(vals) if vals else 0.0)
    got_np = Learn2MixBatchSampler.class_losses(v, y, 4)
    t = torch.tensor(v, dtype=torch.float32, requires_grad=True)  # a loss straight from the model
    got_t = Learn2MixBatchSampler.class_losses(t * 1.0, torch.from_numpy(y), 4)
    assert got_np.dtype == np.float64 and got_np.shape == (4,)
    assert_allclose(got_np, want, rtol=1e-14)
    assert_allclose(got_t, want, rtol=1e-6)  # float32 input


def test_iter_twice_without_update_replays_the_epoch():
    sampler = make()
    first = list(sampler)
    assert sampler.state_dict()["yielded"] == B
    it = iter(sampler)
    assert sampler.state_dict()["yielded"] == 0  # the start is fixed by iter(), not by the first next()
    next(it), next(it)
    assert list(sampler) == first  # a new pass restarts the same epoch: α only moves in update
    next(it)  # an abandoned iterator still yields but does not move the position
    assert sampler.state_dict()["yielded"] == B and sampler.epoch == 0
    sampler.update(losses_for(0))
    assert list(sampler) != first and sampler.epoch == 1


def test_yielded_lists_are_fresh_and_the_dataloader_fetches_them():
    from torch.utils.data import DataLoader, TensorDataset

    sampler = make()
    first = list(sampler)
    for b in first:
        b.clear()
    want = list(sampler)
    assert all(len(b) == K for b in want)
    loader = DataLoader(TensorDataset(torch.arange(N) * 10), batch_sampler=sampler)
    assert len(loader) == B
    assert [(x // 10).tolist() for (x,) in loader] == want


# --------------------------------------------------------------------------- record and replay


def test_record_then_replay_with_schedule_batch_sampler(tmp_path):
    path = tmp_path / "run.zarr"
    sampler = make(record_to=path)
    alphas = []
    online = []
    for e in range(EPOCHS):
        alphas.append(sampler.alpha)
        online.append(list(sampler))
        sampler.update(losses_for(e))
    stored = read_schedule(path)  # verifies the digests
    assert stored.digest == sampler.to_schedule().digest
    assert stored.method == "learn2mix" and stored.k == K and stored.n_epochs == EPOCHS
    assert stored.params == {
        "seed": SEED, "mixing_rate": GAMMA, "k": K, "batches_per_epoch": B, "n_classes": C, "online": True,
    }
    fingerprint = hashlib.sha256(LABELS.astype("<i8").tobytes()).hexdigest()
    assert stored.dataset == {
        "name": "online", "split": "train", "n_samples": N, "n_classes": C, "fingerprint": fingerprint,
    }
    assert_array_equal(stored.epoch_arrays["class_proportions"], np.array(alphas))
    assert_array_equal(stored.epoch_arrays["class_losses"], np.array([losses_for(e) for e in range(EPOCHS)]))
    replay = ScheduleBatchSampler(path)
    for e in range(EPOCHS):
        replay.set_epoch(e)
        assert list(replay) == online[e]


def test_dataset_info_goes_into_the_record(tmp_path):
    info = {"name": "svhn", "split": "train", "fingerprint": "ab" * 32}
    sampler = make(record_to=tmp_path / "r.zarr", dataset_info=info)
    run(sampler, range(1))
    assert read_schedule(tmp_path / "r.zarr").dataset == {**info, "n_samples": N, "n_classes": C}


def _npz(tmp_path, name, labels, seed):
    path = tmp_path / name
    X = np.random.default_rng(seed).random((len(labels), 3)).astype(np.float32)
    np.savez(path, X=X, y=labels)
    return schedgen.data.load_dataset(f"npz:{path}")


def test_replaying_a_record_checks_the_dataset(tmp_path):
    # Issue 10, item 17, for online records: by default a record's fingerprint is the labels'
    # sha256, which the dataset from ScheduleDataset carries too.
    data = _npz(tmp_path, "a.npz", LABELS, 0)
    default = tmp_path / "default.zarr"
    run(make(record_to=default), range(1))
    ScheduleBatchSampler(default, dataset=schedgen.torch.ScheduleDataset(data))  # same labels: accepted
    other = _npz(tmp_path, "b.npz", np.roll(LABELS, 1), 0)
    with pytest.raises(ParameterError, match=r"^dataset is not the one the schedule was built on: the schedule's "
                                             r"dataset online \(train\) has fingerprint"):
        ScheduleBatchSampler(default, dataset=schedgen.torch.ScheduleDataset(other))
    with pytest.raises(ParameterError, match=rf"^dataset has {N - 1} samples but the schedule was built on the {N} "
                                             r"of online \(train\): "):
        ScheduleBatchSampler(default, dataset=torch.utils.data.TensorDataset(torch.zeros(N - 1)))
    with pytest.raises(ParameterError, match=r"built on dataset 'online', which schedgen cannot load .*; an online "
                                             r"record \(learn2mix or adaptive\) names its data only through dataset_info"):
        schedgen.torch.schedule_dataset(default)

    named = tmp_path / "named.zarr"
    info = {"name": data.name, "split": "train", "fingerprint": data.fingerprint}
    run(make(record_to=named, dataset_info=info), range(1))
    ds = schedgen.torch.schedule_dataset(named)
    assert np.array_equal(ds.tensors[1].numpy(), LABELS)
    ScheduleBatchSampler(named, dataset=ds)


@pytest.fixture
def count_writes(monkeypatch):
    """Count the stores written by the sampler (each a whole, atomic write_schedule)."""
    calls = []

    def counting(schedule, path, **kw):
        calls.append((schedule.n_epochs, int(np.isnan(schedule.epoch_arrays["class_losses"]).any(axis=1).sum())))
        return write_schedule(schedule, path, **kw)

    monkeypatch.setattr(schedgen.torch._learn2mix, "write_schedule", counting)
    return calls


def test_the_store_is_rewritten_at_the_first_batch_of_a_pass_and_at_update(tmp_path, count_writes):
    path = tmp_path / "run.zarr"
    sampler = make(record_to=path)
    it = iter(sampler)
    assert count_writes == [] and not path.exists()  # iter() alone writes nothing
    next(it)
    assert count_writes == [(1, 1)]  # epoch 0, its losses NaN
    list(it), list(sampler)  # the rest of the pass and a replay of the epoch: nothing new to write
    assert count_writes == [(1, 1)]
    sampler.update(losses_for(0))
    assert count_writes == [(1, 1), (1, 0)]  # epoch 0 with its losses
    sampler.update(losses_for(1))  # an epoch closed without a batch is recorded too
    assert count_writes == [(1, 1), (1, 0), (2, 0)]
    next(iter(sampler))
    assert count_writes[-1] == (3, 1)
    stored = read_schedule(path)
    assert np.isnan(stored.epoch_arrays["class_losses"][2]).all()
    assert not np.isnan(stored.epoch_arrays["class_losses"][:2]).any()


def test_online_with_the_offline_losses_reproduces_the_offline_store(tmp_path):
    from schedgen.build import BuildConfig, build
    from schedgen.data import load_dataset

    k, gamma, seed, epochs = 64, 0.3, 5, 3
    res = build(BuildConfig(
        dataset="digits", method="learn2mix", k=k, epochs=epochs, seed=seed, mixing_rate=gamma,
        out_dir=tmp_path / "offline",
    ))
    offline = read_schedule(res.path)
    ds = load_dataset("digits")
    sampler = Learn2MixBatchSampler(
        ds.y, k, mixing_rate=gamma, seed=seed, record_to=tmp_path / "online.zarr",
        dataset_info={"name": ds.name, "split": ds.split, "fingerprint": ds.fingerprint},
    )
    for e in range(epochs):
        want = [offline.batch(b).tolist() for b in offline.epoch_batches(e)]
        assert list(sampler) == want, e
        sampler.update(offline.epoch_arrays["class_losses"][e])
    online = read_schedule(tmp_path / "online.zarr")
    # Same batches, α trajectory, losses and dataset: the digests and arrays agree bit for bit.
    assert online.digest == offline.digest
    assert_array_equal(online.epoch_offsets, offline.epoch_offsets)
    for name in ("class_proportions", "class_losses"):
        assert online.epoch_arrays[name].tobytes() == offline.epoch_arrays[name].tobytes(), name
    assert online.dataset == offline.dataset and online.k == offline.k
    # The params differ only in what each side knows: the offline store names its proxy
    # (proxy, lr, groups, feature options, epochs), the online one k and "online".
    shared = ("seed", "mixing_rate", "batches_per_epoch", "n_classes")
    assert {p: online.params[p] for p in shared} == {p: offline.params[p] for p in shared}
    assert set(online.params) - set(offline.params) == {"k", "online"}


# --------------------------------------------------------------------------- crash safety


def _siblings(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_a_crash_mid_epoch_leaves_a_valid_store_with_the_started_epoch(tmp_path):
    path = tmp_path / "run.zarr"
    sampler = make(record_to=path)
    done = run(sampler, range(2))
    alpha2 = sampler.alpha
    it = iter(sampler)
    seen = [next(it) for _ in range(3)]
    del sampler, it  # the trainer dies mid-epoch
    gc.collect()
    assert _siblings(tmp_path) == ["run.zarr"]  # no temporary or half-written directory
    stored = read_schedule(path)
    assert stored.n_epochs == 3
    assert_array_equal(stored.epoch_arrays["class_losses"][:2], [losses_for(0), losses_for(1)])
    assert np.isnan(stored.epoch_arrays["class_losses"][2]).all()
    assert_array_equal(stored.epoch_arrays["class_proportions"][2], alpha2)
    replay = ScheduleBatchSampler(path)
    assert [(e, b) for e in range(2) for b in (replay.set_epoch(e), list(replay))[1]] == done
    replay.set_epoch(2)
    epoch2 = list(replay)
    assert len(epoch2) == B and epoch2[:3] == seen  # the started epoch is recorded whole


def test_a_crash_before_the_first_batch_writes_nothing_and_after_update_keeps_the_losses(tmp_path):
    path = tmp_path / "run.zarr"
    sampler = make(record_to=path)
    iter(sampler)
    del sampler
    assert _siblings(tmp_path) == []
    sampler = make(record_to=path)
    run(sampler, range(1))
    del sampler
    stored = read_schedule(path)
    assert stored.n_epochs == 1 and not np.isnan(stored.epoch_arrays["class_losses"]).any()


def test_a_failed_write_keeps_the_previous_store_and_update_can_be_retried(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    sampler = make(record_to=path)
    list(sampler)
    real = schedgen.store._write._write_group

    def disk_full(schedule, where, **kw):
        real(schedule, where, **kw)  # a complete temporary store, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(schedgen.store._write, "_write_group", disk_full)
    alpha0 = sampler.alpha
    with pytest.raises(StoreError, match="No space left on device"):
        sampler.update(losses_for(0))
    assert sampler.epoch == 0 and sampler.state_dict()["yielded"] == B and sampler.state_dict()["losses"] == []
    assert_array_equal(sampler.alpha, alpha0)
    assert _siblings(tmp_path) == ["run.zarr"]
    assert np.isnan(read_schedule(path).epoch_arrays["class_losses"]).all()  # the previous store, intact
    monkeypatch.setattr(schedgen.store._write, "_write_group", real)
    sampler.update(losses_for(0))
    assert_array_equal(read_schedule(path).epoch_arrays["class_losses"], [losses_for(0)])


# --------------------------------------------------------------------------- resume (plain sampler)


def _states(epoch: int, record_to=None):
    """A run up to ``epoch``, then that epoch's states: before iter() and after each next()."""
    ref = make(record_to=record_to)
    run(ref, range(epoch))
    states = [ref.state_dict()]
    it = iter(ref)
    for _ in range(B):
        next(it)
        states.append(ref.state_dict())
    return states


def _resume(state, record_to=None) -> list[tuple[int, list[int]]]:
    """A new sampler loads ``state`` (through JSON) and finishes the run."""
    sampler = make(record_to=record_to)
    sampler.load_state_dict(json.loads(json.dumps(state)))
    e = state["epoch"]
    assert sampler.epoch == e and sampler.state_dict() == state
    rest = [(e, b) for b in sampler]
    sampler.update(losses_for(e))
    return rest + run(sampler, range(e + 1, EPOCHS))


def test_resume_at_every_position_equals_the_uninterrupted_run():
    full = run(make(), range(EPOCHS))
    for e in range(EPOCHS):
        for j, sd in enumerate(_states(e)):
            assert (sd["epoch"], sd["yielded"]) == (e, j)
            assert len(sd["losses"]) == e
            assert _resume(sd) == full[e * B + j :], (e, j)


def test_resumed_recorder_continues_the_same_store(tmp_path):
    uninterrupted = tmp_path / "full.zarr"
    full = run(make(record_to=uninterrupted), range(EPOCHS))
    for e in range(EPOCHS):
        for j in (0, 1, B - 1, B):
            path = tmp_path / f"run-{e}-{j}.zarr"
            # The first run records epoch e (it starts it) and dies with state j saved ...
            sd = _states(e, record_to=path)[j]
            gc.collect()
            assert read_schedule(path).n_epochs == e + 1
            assert _resume(sd, record_to=path) == full[e * B + j :], (e, j)  # ... the resumed one goes on
            assert read_attrs(path) == read_attrs(uninterrupted), (e, j)
            assert read_schedule(path).digest == read_schedule(uninterrupted).digest


def test_resume_from_a_later_crash_rewinds_the_record_to_the_state(tmp_path):
    path = tmp_path / "run.zarr"
    first = make(record_to=path)
    run(first, range(1))
    sd = first.state_dict()  # checkpoint at the start of epoch 1
    run(first, range(1, 3))  # the run goes on and records epochs 1 and 2, then dies
    assert read_schedule(path).n_epochs == 3
    resumed = make(record_to=path)
    resumed.load_state_dict(sd)
    next(iter(resumed))
    stored = read_schedule(path)
    assert stored.n_epochs == 2 and np.isnan(stored.epoch_arrays["class_losses"][1]).all()


# --------------------------------------------------------------------------- resume (torchdata)


def _loader_run(*, stop=None, state=None, sampler_state=None, start=0, record_to=None, num_workers=0, **kw):
    """Train-loop shape: for e: a pass of the loader, then update. Saves the loader state at ``stop``.

    ``stop = (epoch, i)`` saves after the i-th batch of that epoch, ``(epoch, "end")``
    after the update that closes it. Returns the batches seen, (loader state,
    sampler state, batches seen before them) and the sampler.
    """
    from torch.utils.data import TensorDataset
    from torchdata.stateful_dataloader import StatefulDataLoader

    sampler = make(record_to=record_to)
    if sampler_state is not None:
        sampler.load_state_dict(sampler_state)
    loader = StatefulDataLoader(TensorDataset(torch.arange(N)), batch_sampler=sampler, num_workers=num_workers, **kw)
    if state is not None:
        loader.load_state_dict(state)
    seen, saved = [], None
    for e in range(start, EPOCHS):
        for i, (x,) in enumerate(loader):
            seen.append((e, x.tolist()))
            if stop == (e, i):
                saved = (loader.state_dict(), sampler.state_dict(), len(seen))
        assert sampler.epoch == e
        sampler.update(losses_for(e))
        if stop == (e, "end"):
            saved = (loader.state_dict(), sampler.state_dict(), len(seen))
    return seen, saved, sampler


@pytest.fixture
def no_vital_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        yield


@pytest.mark.usefixtures("no_vital_warning")
def test_stateful_dataloader_resume_single_process(tmp_path):
    pytest.importorskip("torchdata")
    full, _, _ = _loader_run(record_to=tmp_path / "full.zarr")
    assert full == run(make(), range(EPOCHS))
    stops = [(e, i) for e in range(2) for i in range(B)] + [(0, "end"), (1, "end")]
    for n, stop in enumerate(stops):
        path = tmp_path / f"r{n}.zarr"
        _, (state, _, m), _ = _loader_run(stop=stop, record_to=path)
        start = stop[0] + 1 if stop[1] == "end" else stop[0]
        rest, _, _ = _loader_run(state=state, start=start, record_to=path)
        assert rest == full[m:], stop
        assert read_attrs(path) == read_attrs(tmp_path / "full.zarr"), stop


@pytest.mark.usefixtures("no_vital_warning")
def test_stateful_dataloader_resume_with_workers():
    pytest.importorskip("torchdata")
    full, _, _ = _loader_run()
    # Mid-epoch: the loader state alone (its snapshot holds the sampler's α and losses).
    for stop in [(0, 0), (0, 4), (1, 2)]:
        _, (state, _, m), _ = _loader_run(stop=stop, num_workers=2, snapshot_every_n_steps=1)
        rest, _, _ = _loader_run(state=state, start=stop[0], num_workers=2, snapshot_every_n_steps=1)
        assert rest == full[m:], stop
    # At an epoch boundary: the sampler's own state and a fresh loader (the loader's snapshot lags the update).
    _, (_, sampler_state, m), _ = _loader_run(stop=(0, "end"), num_workers=2)
    assert (sampler_state["epoch"], sampler_state["yielded"]) == (1, 0)
    rest, _, _ = _loader_run(sampler_state=sampler_state, start=1, num_workers=2)
    assert rest == full[m:]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"k": 0}, r"k must be an integer >= 1, got 0"),
        ({"k": N + 1}, rf"k must be a positive integer no larger than the dataset \(N={N}\), got k={N + 1}"),
        ({"k": True}, r"k must be an integer, got True"),
        ({"mixing_rate": 0.0}, r"mixing rate must be in \(0, 1\], got 0.0"),
        ({"mixing_rate": 1.5}, r"mixing rate must be in \(0, 1\], got 1.5"),
        ({"mixing_rate": "0.1"}, r"mixing rate must be a number in \(0, 1\], got '0.1'"),
        ({"seed": -1}, r"seed must be an integer >= 0 and <= 4294967295, got -1"),
        ({"seed": 1.0}, r"seed must be an integer, got 1.0"),
        ({"batches_per_epoch": 0}, r"batches_per_epoch must be an integer >= 1, got 0"),
        ({"record_to": 3}, r"record_to must be a local path \(str or os.PathLike\), got int"),
        ({"record_to": "s3://bucket/run.zarr"}, r"record_to must be a local path .*got 's3://bucket/run.zarr'"),
        ({"dataset_info": ["svhn"]}, r"dataset_info must be a mapping with keys among \['name', 'split', .*got list"),
        ({"dataset_info": {"n_samples": 3}}, r"dataset_info may set only \[.*\] \(n_samples .*got \['n_samples'\]"),
        ({"dataset_info": {"name": ""}}, r"dataset_info\['name'\] must be a non-empty string, got ''"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ParameterError, match=match):
        make(**kw)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0.0, 1.0]), r"labels must be an integer array, got dtype float64"),
        (np.array([0, 0, 2, 2]), r"class 1 has no samples; learn2mix needs every class present"),
        (np.array([0, -1, 1]), r"labels must be >= 0, found -1 at row 1"),
        (np.zeros((2, 2), dtype=int), r"labels must be a non-empty 1-D array .*got shape \(2, 2\)"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(DataError, match=match):
        make(labels=labels, k=1)


def test_record_to_refuses_to_replace_anything_but_an_online_record(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match=r"exists and is not an online learn2mix record; refusing to replace it"):
        make(record_to=precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    sampler = make()
    list(sampler)
    offline = write_schedule(dataclasses.replace(sampler.to_schedule(), params={"seed": 0}), tmp_path / "offline.zarr")
    with pytest.raises(ParameterError, match=r"offline.zarr' exists and is not an online learn2mix record"):
        make(record_to=offline)
    online = tmp_path / "online.zarr"
    run(make(record_to=online), range(1))
    make(record_to=online)  # an earlier online record may be continued or replaced


@pytest.mark.parametrize(
    ("losses", "match"),
    [
        ([1.0, 2.0, 3.0], r"class losses must have one value per class: expected length 4, got 3"),
        ([1.0, 2.0, float("nan"), 1.0], r"must be finite and >= 0: 1 bad value\(s\) .*first at class 2 \(nan\)"),
        ([1.0, -2.0, 1.0, 1.0], r"class losses must be finite and >= 0: .*first at class 1 \(-2.0\)"),
        ([1.0, float("inf"), 1.0, 1.0], r"class losses must be finite and >= 0: .*first at class 1 \(inf\)"),
        (["a", "b", "c", "d"], r"class losses must be real numbers, got dtype <U1"),
        (np.ones((2, 2)), r"class losses must have one value per class: expected length 4, got shape \(2, 2\)"),
    ],
)
def test_bad_update_changes_nothing(losses, match):
    sampler = make()
    sd = sampler.state_dict()
    with pytest.raises(ParameterError, match=match):
        sampler.update(losses)
    assert sampler.state_dict() == sd


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([1.0, 2.0], [0, 1, 1], 2), r"losses must have one value per label: expected shape \(3,\), got \(2,\)"),
        (([1.0, float("nan")], [0, 1], 2), r"losses must be finite, found nan at row 1"),
        (([1.0, 2.0], [0, 4], 4), r"labels must be in 0..3 \(n_classes=4\), found 4 at row 1"),
        (([1.0, 2.0], [0, 1], 0), r"n_classes must be an integer >= 1, got 0"),
    ],
)
def test_bad_class_losses_input(args, match):
    with pytest.raises((ParameterError, DataError), match=match):
        Learn2MixBatchSampler.class_losses(*args)


def _mid_state(epoch=1, yielded=2):
    s = make()
    run(s, range(epoch))
    it = iter(s)
    for _ in range(yielded):
        next(it)
    return s.state_dict()


def test_state_is_plain_and_complete():
    sd = _mid_state()
    assert json.loads(json.dumps(sd)) == sd
    assert sorted(sd) == sorted(
        ["epoch", "yielded", "alpha", "losses", "labels_sha256", "k", "seed", "mixing_rate", "batches_per_epoch"]
    )
    assert (sd["epoch"], sd["yielded"], len(sd["losses"]), len(sd["alpha"])) == (1, 2, 1, C)
    assert sd["labels_sha256"] == hashlib.sha256(LABELS.astype("<i8").tobytes()).hexdigest()


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (
            {"labels": np.roll(LABELS, 1)},
            r"another run: it has labels_sha256=[0-9a-f]{16}\.\.\., this sampler has labels_sha256=[0-9a-f]{16}\.\.\.",
        ),
        ({"k": 5}, r"belongs to another run: it has k=6, this sampler has k=5; a state resumes only the same labels"),
        ({"seed": 4}, r"it has seed=3, this sampler has seed=4"),
        ({"mixing_rate": 0.5}, r"it has mixing_rate=0.4, this sampler has mixing_rate=0.5"),
        ({"batches_per_epoch": 9}, r"it has batches_per_epoch=7, this sampler has batches_per_epoch=9"),
    ],
)
def test_state_from_another_run(other, match):
    with pytest.raises(ParameterError, match=match):
        make(**other).load_state_dict(_mid_state())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"yielded": B + 1}, rf"state_dict\['yielded'\] must be at most the {B} batches of an epoch, got {B + 1}"),
        ({"yielded": -1}, r"state_dict\['yielded'\] must be an integer >= 0, got state_dict\['yielded'\]=-1"),
        ({"epoch": "1"}, r"state_dict\['epoch'\] must be an integer, got '1'"),
        ({"epoch": 2}, r"one entry per finished epoch: expected 2 \(the epoch\), got 1 entries"),
        ({"losses": "x"}, r"state_dict\['losses'\] must be a list .*got str"),
        ({"losses": [[1.0, float("nan"), 1.0, 1.0]]}, r"state_dict\['losses'\]\[0\]: class losses must be finite"),
        ({"losses": [[1.0, 1.0]]}, r"state_dict\['losses'\]\[0\]: .*one value per class: expected length 4, got 2"),
        ({"alpha": [0.25] * 4}, r"state_dict\['alpha'\] disagrees with the alpha its losses give for epoch 1"),
        ({"alpha": "x"}, r"state_dict\['alpha'\] disagrees"),
        # A value of the wrong type is malformed, not "another run" (issue 10, item 13).
        ({"k": True}, r"^state_dict\['k'\] must be an integer, got True \(bool\)$"),
        ({"k": np.bool_(True)}, r"^state_dict\['k'\] must be an integer, got np.True_ \(bool\)$"),
        ({"k": 6.0}, r"^state_dict\['k'\] must be an integer, got 6.0 \(float\)$"),
        ({"k": np.array([6, 6])}, r"^state_dict\['k'\] must be an integer, got array\(\[6, 6\]\) \(ndarray\)$"),
        ({"k": 0}, r"^state_dict\['k'\] must be an integer >= 1, got state_dict\['k'\]=0$"),
        ({"seed": np.array(3)}, r"^state_dict\['seed'\] must be an integer, got array\(3\) \(ndarray\)$"),
        ({"seed": -1}, r"^state_dict\['seed'\] must be an integer >= 0, got state_dict\['seed'\]=-1$"),
        ({"batches_per_epoch": 7.0}, r"^state_dict\['batches_per_epoch'\] must be an integer, got 7.0 \(float\)$"),
        ({"epoch": 1.0}, r"^state_dict\['epoch'\] must be an integer, got 1.0 \(float\)$"),
        ({"yielded": np.bool_(False)}, r"^state_dict\['yielded'\] must be an integer, got np.False_ \(bool\)$"),
        ({"mixing_rate": "0.4"}, r"^state_dict\['mixing_rate'\] must be a real number, got '0.4' \(str\)$"),
        ({"mixing_rate": np.array([0.4, 0.4])}, r"^state_dict\['mixing_rate'\] must be a real number, got array"),
        ({"mixing_rate": True}, r"^state_dict\['mixing_rate'\] must be a real number, got True \(bool\)$"),
        (
            {"labels_sha256": np.arange(3)},
            r"^state_dict\['labels_sha256'\] must be a sha256 digest \(64 lowercase hex digits\), got array",
        ),
        ({"labels_sha256": "abc"}, r"^state_dict\['labels_sha256'\] must be a sha256 digest .*got 'abc' \(str\)$"),
    ],
)
def test_malformed_state_changes_nothing(change, match):
    sd = _mid_state()
    target = make()
    before = target.state_dict()
    with pytest.raises(ParameterError, match=match):
        target.load_state_dict({**sd, **change})
    assert target.state_dict() == before


def test_state_accepts_numpy_scalars_for_its_numbers():
    sd = _mid_state()
    numpy_sd = {
        **sd,
        **{key: np.int64(sd[key]) for key in ("epoch", "yielded", "k", "seed", "batches_per_epoch")},
        "mixing_rate": np.float64(sd["mixing_rate"]),
    }
    a, b = make(), make()
    a.load_state_dict(sd)
    b.load_state_dict(numpy_sd)
    assert list(a) == list(b) and type(b.state_dict()["yielded"]) is int


def test_state_not_a_mapping_or_missing_keys():
    with pytest.raises(ParameterError, match=r"state_dict must be a mapping, got list"):
        make().load_state_dict([])
    with pytest.raises(ParameterError, match=r"missing \['alpha', 'losses', .*a Learn2MixBatchSampler state\?"):
        make().load_state_dict({"epoch": 0, "yielded": 0})  # e.g. a ScheduleBatchSampler state


def test_each_write_of_a_long_record_links_the_epochs_already_recorded(tmp_path, monkeypatch):
    """With chunks of 16 indices (an epoch is 42), a write after the first hard-links the
    old store's whole chunks, and the store is still, byte for byte, a fresh write of
    the record; also after a resume (whose first write is a whole one)."""
    from pathlib import Path

    monkeypatch.setattr(schedgen.store._write, "_CHUNK", 16)
    real, links = schedgen.store._append._hard_link, []

    def counting(src, dst, **kw):
        links.append(Path(dst).parent.parent.name)
        real(src, dst, **kw)

    monkeypatch.setattr(schedgen.store._append, "_hard_link", counting)

    def tree(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    path = tmp_path / "run.zarr"
    sampler = make(record_to=path)
    per_write = []
    for e in range(6):
        if e == 3:  # a resume mid-run: the record goes on from the loaded state
            sd = sampler.state_dict()
            sampler = make(record_to=path)
            sampler.load_state_dict(sd)
        for _ in sampler:
            pass
        n = len(links)
        sampler.update(losses_for(e))
        per_write.append(len(links) - n)
        fresh = write_schedule(sampler.to_schedule(), tmp_path / f"fresh-{e}.zarr")
        assert tree(path) == tree(fresh), e
    assert read_schedule(path).n_epochs == 6
    assert set(links) == {"indices", "batch_offsets"}
    # update e rewrites epochs 0..e, all recorded at the epoch's first batch: the whole
    # chunks of 42(e+1) indices, and of 7(e+1)+1 offsets (one chunk of 8 and 15, as long
    # as the old one; of 22: one whole chunk of 16)
    assert per_write[:3] == [2 + 1, 5 + 1, 7 + 1]
    assert all(w > 0 for w in per_write)
