"""Tests of schedgen.torch.AdaptiveBatchSampler: sizes chosen as the run goes, recorded, replayed, resumed."""

from __future__ import annotations

import dataclasses
import gc
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import schedgen.store._append  # noqa: E402
import schedgen.store._write  # noqa: E402
from schedgen.errors import ParameterError, StoreError  # noqa: E402
from schedgen.rng import STREAMS, rng  # noqa: E402
from schedgen.store import read_schedule, write_schedule  # noqa: E402
from schedgen.torch import AdaptiveBatchSampler, Learn2MixBatchSampler, ScheduleBatchSampler  # noqa: E402

N, SEED, K0, EPOCHS = 23, 5, 3, 3
#: Global step -> the size the trainer asks for after that batch: doubling 3 -> 6 -> 12 mid-epoch,
#: back down, then a size above the dataset (the epoch's rest in one batch).
REQUESTS = {2: 6, 4: 12, 7: 2, 10: 5, 13: 40, 14: 4}


# --------------------------------------------------------------------------- oracles


def reference_run(n: int, seed: int, size: int, epochs: int, requests: dict[int, int]) -> list[tuple[int, list[int]]]:
    """The documented rule as loops: epoch e walks the permutation of the raw words
    [seed, tag of "adaptive", e] in slices of the size in force, the last one shorter;
    a request after step t shapes step t + 1."""
    tag = 0x61647074  # ASCII "adpt", the stream's tag in schedgen.rng
    out, step = [], 0
    for e in range(epochs):
        perm = [int(v) for v in np.random.default_rng([seed, tag, e]).permutation(n)]
        pos = 0
        while pos < n:
            s = min(size, n - pos)
            out.append((e, perm[pos : pos + s]))
            pos += s
            if step in requests:
                size = requests[step]
            step += 1
    return out


def make(batch_size=K0, **kw) -> AdaptiveBatchSampler:
    return AdaptiveBatchSampler(N, batch_size, **{"seed": SEED, **kw})


def train(sampler, epochs, *, step=0, stop=None, requests=REQUESTS):
    """The trainer's loop: set_epoch, consume, request after the steps in ``requests``.

    Returns the (epoch, batch) pairs seen and, with ``stop``, (the sampler state after
    ``stop`` batches, the step then); the run then ends.
    """
    seen = []
    for e in epochs:
        sampler.set_epoch(e)
        for b in sampler:
            seen.append((e, b))
            if step in requests:
                sampler.request(requests[step])
            step += 1
            if step == stop:
                return seen, (sampler.state_dict(), step)
    return seen, None


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def replayed(source, n_epochs, **kw) -> list[tuple[int, list[int]]]:
    replay = ScheduleBatchSampler(source, **kw)
    out = []
    for e in range(n_epochs):
        replay.set_epoch(e)
        out.extend((e, b) for b in replay)
    return out


# --------------------------------------------------------------------------- batches, record, replay


def test_the_stream_is_the_documented_one():
    assert STREAMS["adaptive"][:2] == (0x61647074, 1)
    for e in range(3):
        a = rng(SEED, "adaptive", e).permutation(N)
        assert np.array_equal(a, np.random.default_rng([SEED, 0x61647074, e]).permutation(N))


def test_a_run_with_requests_is_recorded_and_replayed_batch_for_batch(tmp_path):
    path = tmp_path / "run.zarr"
    sampler = make(record=path)
    seen, _ = train(sampler, range(EPOCHS))
    assert seen == reference_run(N, SEED, K0, EPOCHS, REQUESTS)
    sizes = [len(b) for _, b in seen]
    # doubled mid-epoch, short last batches, a request carried into the next epoch, 40 clipped to what is left
    assert sizes == [3, 3, 3, 6, 6, 2, 12, 11, 2, 2, 2, 5, 5, 5, 2]
    for e in range(EPOCHS):  # every epoch a permutation
        assert sorted(i for f, b in seen for i in b if f == e) == list(range(N))
    stored = read_schedule(path)  # digest-checked
    assert stored.method == "adaptive" and stored.k == K0 and stored.n_epochs == EPOCHS
    assert stored.params == {"seed": SEED, "batch_size": K0, "online": True}
    assert stored.dataset == {"name": "online", "split": "train", "n_samples": N, "n_classes": None}
    assert stored.digest == sampler.to_schedule().digest
    assert np.array_equal(np.diff(stored.batch_offsets), sizes)
    assert replayed(path, EPOCHS) == seen
    assert replayed(sampler.to_schedule(), EPOCHS) == seen


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    size=st.integers(1, 35),
    seed=st.integers(0, 2**32 - 1),
    requests=st.dictionaries(st.integers(0, 40), st.integers(1, 35), max_size=8),
)
def test_any_requests_follow_the_loop_reference_and_replay(n, size, seed, requests):
    sampler = AdaptiveBatchSampler(n, size, seed=seed)
    seen, _ = train(sampler, range(2), requests=requests)
    assert seen == reference_run(n, seed, size, 2, requests)
    for e in range(2):
        assert sorted(i for f, b in seen for i in b if f == e) == list(range(n))
    assert replayed(sampler.to_schedule(), 2) == seen


def test_replay_with_two_ranks_reunites_to_the_served_batches(tmp_path):
    path = tmp_path / "run.zarr"
    requests = {1: 4, 3: 8, 6: 4}  # 23 = 2+2+4+4+8+3: every batch holds at least 2
    seen, _ = train(make(2, record=path), range(2), requests=requests)
    ranks = [replayed(path, 2, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(seen)
    for (e, b), p0, p1 in zip(seen, *ranks):
        assert p0[0] == p1[0] == e and p0[1] + p1[1] == b and len(p0[1]) - len(p1[1]) in (0, 1)


def test_the_callable_form_gets_the_step_and_sets_each_size():
    calls = []

    def size_of(step):
        calls.append(step)
        return [2, 3, 5][step % 3]

    sampler = make(size_of)
    assert sampler.batch_size is None
    seen, _ = train(sampler, range(2), requests={})
    assert calls == list(range(len(seen)))  # once per batch, numbered through the run
    want, pos = [], 0
    for step in range(len(seen)):
        e = seen[step][0]
        if step and e != seen[step - 1][0]:
            pos = 0
        want.append(min([2, 3, 5][step % 3], N - pos))
        pos += want[-1]
    assert [len(b) for _, b in seen] == want
    assert sampler.batch_size == [2, 3, 5][(len(seen) - 1) % 3]
    assert sampler.to_schedule().k == 2 and sampler.to_schedule().params["batch_size"] is None
    sampler.request(7)  # a request replaces the callable
    assert sampler.batch_size == 7 and len(sampler) == 4
    assert [len(b) for b in sampler][:3] == [7, 7, 7]


def test_without_set_epoch_each_pass_plays_the_next_epoch_and_len_is_the_estimate():
    sampler = make()
    assert len(sampler) == 8
    first, second = list(sampler), list(sampler)
    assert sampler.epoch == 1 and first != second
    assert second == [b for e, b in reference_run(N, SEED, K0, 2, {}) if e == 1]
    with pytest.raises(TypeError, match="callable batch_size has no length"):
        len(make(lambda step: 1))


def test_a_new_pass_mid_epoch_restarts_it_and_only_the_newest_pass_counts(tmp_path):
    path = tmp_path / "run.zarr"
    sampler = make(record=path)
    old = iter(sampler)
    next(old), next(old)
    sampler.request(5)
    new = iter(sampler)  # restarts epoch 0: sizes 5 from its first batch
    batches = list(new)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    before = sampler.state_dict()
    assert before["sizes"] == [[[5, 4], [3, 1]]] and before["yielded"] == 5
    rest = list(old)  # the abandoned pass still yields to its end, and is neither counted nor recorded
    assert [len(b) for b in rest] == [5, 5, 5, 2]
    assert sampler.state_dict() == before
    assert replayed(path, 1) == [(0, b) for b in batches]


def test_end_epoch_records_a_short_epoch_and_is_a_no_op_after_the_end(tmp_path):
    path = tmp_path / "run.zarr"
    sampler = make(record=path)
    it = iter(sampler)
    kept = [next(it) for _ in range(3)]
    sampler.end_epoch()
    assert sampler.epoch == 1 and read_schedule(path).n_epochs == 1
    full = list(sampler)
    sampler.end_epoch()  # epoch 1 ended by itself: nothing more
    assert sampler.epoch == 1 and read_schedule(path).n_epochs == 2
    assert replayed(path, 2) == [(0, b) for b in kept] + [(1, b) for b in full]
    sampler.set_epoch(2)
    assert sampler.epoch == 2


def test_records_of_two_identical_runs_are_the_same_bytes(tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    train(make(record=a), range(EPOCHS))
    train(make(record=b), range(EPOCHS))
    assert tree(a) == tree(b)
    c = tmp_path / "c.zarr"
    train(make(record=c, seed=SEED + 1), range(EPOCHS))
    assert read_schedule(c).digest != read_schedule(a).digest


def test_each_write_links_the_ended_epochs_and_equals_a_fresh_write(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(schedgen.store._write, "_CHUNK", 8)
    real, links = schedgen.store._append._hard_link, []

    def counting(src, dst, **kw):
        links.append(Path(dst).parent.parent.name)
        real(src, dst, **kw)

    monkeypatch.setattr(schedgen.store._append, "_hard_link", counting)
    path = tmp_path / "run.zarr"
    sampler = make(record=path)
    for e in range(4):
        n = len(links)
        train(sampler, [e], requests={})
        if e:
            assert len(links) - n >= 2  # the 23 e indices already stored: their whole chunks
        fresh = write_schedule(sampler.to_schedule(), tmp_path / f"fresh-{e}.zarr")
        assert tree(path) == tree(fresh), e
    assert set(links) == {"indices", "batch_offsets"}


# --------------------------------------------------------------------------- crash safety


def test_the_first_batch_replaces_an_older_record_and_a_crash_keeps_the_ended_epochs(tmp_path):
    path = tmp_path / "run.zarr"
    train(make(record=path), range(2))
    assert read_schedule(path).n_epochs == 2
    sampler = make(record=path)
    it = iter(sampler)
    assert read_schedule(path).n_epochs == 2  # iter() alone writes nothing
    next(it)
    assert read_schedule(path).n_epochs == 0  # this run from its start
    list(it)
    assert read_schedule(path).n_epochs == 1
    it = iter(sampler)
    next(it), next(it)
    del sampler, it  # the trainer dies mid-epoch 1
    gc.collect()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.zarr"]
    assert read_schedule(path).n_epochs == 1


def test_a_failed_write_does_not_count_the_batch_and_end_epoch_can_be_retried(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    sampler = make(record=path)
    it = iter(sampler)
    for _ in range(7):
        next(it)
    before = sampler.state_dict()
    real = schedgen.store._write._write_group

    def disk_full(schedule, where, **kw):
        real(schedule, where, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(schedgen.store._write, "_write_group", disk_full)
    with pytest.raises(StoreError, match="No space left on device"):
        next(it)  # the epoch's last batch: its write fails
    assert sampler.state_dict() == before
    assert read_schedule(path).n_epochs == 0
    with pytest.raises(StoreError, match="No space left on device"):
        sampler.end_epoch()
    assert sampler.state_dict() == before
    monkeypatch.setattr(schedgen.store._write, "_write_group", real)
    sampler.end_epoch()  # the 7 batches served make epoch 0
    assert read_schedule(path).n_epochs == 1 and read_schedule(path).n_batches == 7


# --------------------------------------------------------------------------- resume (plain)


def test_resume_at_every_step_equals_the_uninterrupted_run_and_its_record(tmp_path):
    full_path = tmp_path / "full.zarr"
    full, _ = train(make(record=full_path), range(EPOCHS))
    for stop in range(1, len(full) + 1):
        path = tmp_path / f"r{stop}.zarr"
        first = make(record=path)
        head, (sd, step) = train(first, range(EPOCHS), stop=stop)
        del first
        sd = json.loads(json.dumps(sd))  # plain JSON
        resumed = make(record=path)
        resumed.load_state_dict(sd)
        assert resumed.state_dict() == sd
        tail, _ = train(resumed, range(sd["epoch"], EPOCHS), step=step)
        assert head + tail == full, stop
        assert tree(path) == tree(full_path), stop


def test_resume_with_the_callable_form_continues_its_steps():
    def size_of(step):
        return 1 + step % 4

    full, _ = train(make(size_of), range(2), requests={})
    head, (sd, step) = train(make(size_of), range(2), stop=13, requests={})
    assert sd["batch_size"] is None and sd["initial_batch_size"] is None and sd["epoch"] == 1  # past step 0
    resumed = make(size_of)
    resumed.load_state_dict(sd)
    tail, _ = train(resumed, range(sd["epoch"], 2), step=step, requests={})
    assert head + tail == full


# --------------------------------------------------------------------------- resume (torchdata)


@pytest.fixture
def no_vital_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        yield


def loader_run(*, stop=None, state=None, start=0, step=0, record=None, requests=REQUESTS, num_workers=0, **kw):
    """The trainer's loop through a StatefulDataLoader; saves the loader state after ``stop``
    batches (``stop = "end 0"``: after epoch 0's loop ran out)."""
    from torch.utils.data import TensorDataset
    from torchdata.stateful_dataloader import StatefulDataLoader

    sampler = make(record=record)
    loader = StatefulDataLoader(TensorDataset(torch.arange(N)), batch_sampler=sampler, num_workers=num_workers, **kw)
    if state is not None:
        loader.load_state_dict(state)
    seen, saved = [], None
    for e in range(start, EPOCHS):
        sampler.set_epoch(e)
        for (x,) in loader:
            seen.append((e, x.tolist()))
            if step in requests:
                sampler.request(requests[step])
            step += 1
            if step == stop:
                saved = (loader.state_dict(), len(seen), step)
        if stop == f"end {e}":
            saved = (loader.state_dict(), len(seen), step)
    return seen, saved


@pytest.mark.usefixtures("no_vital_warning")
def test_stateful_dataloader_resume_single_process(tmp_path):
    pytest.importorskip("torchdata")
    full_path = tmp_path / "full.zarr"
    full, _ = loader_run(record=full_path)
    assert full == reference_run(N, SEED, K0, EPOCHS, REQUESTS)
    n0 = sum(1 for e, _ in full if e == 0)
    for stop in [1, 3, 5, n0 - 1, n0, n0 + 2, "end 0", "end 1"]:
        path = tmp_path / f"r-{stop}.zarr"
        _, (state, m, step) = loader_run(stop=stop, record=path)
        start = full[m - 1][0] + (str(stop).startswith("end"))
        rest, _ = loader_run(state=state, start=start, step=step, record=path)
        assert full[:m] + rest == full, stop
        assert tree(path) == tree(full_path), stop


@pytest.mark.usefixtures("no_vital_warning")
def test_with_workers_a_request_lands_later_the_record_is_exact_and_resume_works(tmp_path):
    pytest.importorskip("torchdata")
    path = tmp_path / "run.zarr"
    requests = {1: 4}
    # 2 workers x prefetch 2: batches 0-3 are drawn up front, then one per batch consumed,
    # before it is returned, so the request made after batch 1 shapes batch 6 (not 2).
    seen, _ = loader_run(record=path, requests=requests, num_workers=2)
    assert [len(b) for _, b in seen][:8] == [3, 3, 3, 3, 3, 3, 4, 1]
    assert replayed(path, EPOCHS) == seen
    # A checkpoint well after the request (none in the 4 batches before it) resumes exactly.
    for stop in (9, 12):
        _, (state, m, step) = loader_run(stop=stop, requests=requests, num_workers=2, snapshot_every_n_steps=1)
        rest, _ = loader_run(state=state, start=seen[m - 1][0], step=step, requests=requests, num_workers=2,
                             snapshot_every_n_steps=1)
        assert seen[:m] + rest == seen, stop


# --------------------------------------------------------------------------- set_epoch and errors


def test_set_epoch_plays_epochs_in_order():
    sampler = make()
    sampler.set_epoch(0)
    it = iter(sampler)
    next(it)
    with pytest.raises(ParameterError, match=r"^epochs are played in order: epoch 0 is in progress \(1 batches "
                                             r"served; end_epoch\(\) ends it early\), got set_epoch\(1\)$"):
        sampler.set_epoch(1)
    list(it)
    with pytest.raises(ParameterError, match=r"^epochs are played in order: epoch 0 ended, so the next is 1, "
                                             r"got set_epoch\(0\)$"):
        sampler.set_epoch(0)
    with pytest.raises(ParameterError, match=r"got set_epoch\(2\)"):
        sampler.set_epoch(2)
    sampler.set_epoch(1)
    assert sampler.epoch == 1
    fresh = make()
    fresh.set_epoch(3)  # may await a state to load ...
    it = iter(fresh)  # (torchdata calls iter() once before it loads a state)
    with pytest.raises(ParameterError, match=r"^set_epoch\(3\) asked for epoch 3, but this run plays epoch 0 next: "
                                             r"epochs are played in order from 0 \(load a state to resume a run\)$"):
        next(it)  # ... which never came


def test_a_loaded_state_must_agree_with_set_epoch():
    sampler = make()
    it = iter(sampler)
    for _ in range(3):
        next(it)
    mid = sampler.state_dict()
    list(it)
    end = sampler.state_dict()
    for sd in (mid, end):  # set_epoch before the load (torchdata's order) or after it
        for order in ("before", "after"):
            s = make()
            wanted = sd["epoch"] + (sd is end)
            if order == "before":
                s.set_epoch(wanted)
                s.load_state_dict(sd)
            else:
                s.load_state_dict(sd)
                s.set_epoch(wanted)
            assert s.epoch == wanted
    s = make()
    s.set_epoch(1)
    want = (r"^the loaded state is at epoch 0 \(3 batches served\), so it continues with epoch 0, "
            r"but set_epoch\(1\) was called; epochs are played in order$")
    with pytest.raises(ParameterError, match=want):
        s.load_state_dict(mid)
    assert s.state_dict() == make().state_dict()  # nothing changed
    s = make()
    s.load_state_dict(end)
    with pytest.raises(ParameterError, match=r"at epoch 0 \(8 batches served, the last\), so it continues with "
                                             r"epoch 1, but set_epoch\(2\)"):
        s.set_epoch(2)


@pytest.mark.parametrize(
    ("args", "kw", "match"),
    [
        ((0, 3), {}, r"^n_samples must be an integer >= 1, got n_samples=0$"),
        ((N, 0), {}, r"^batch_size must be an integer >= 1, got batch_size=0$"),
        ((N, -2), {}, r"^batch_size must be an integer >= 1, got batch_size=-2$"),
        ((N, 2.0), {}, r"^batch_size must be an integer, got 2.0 \(float\)$"),
        ((N, True), {}, r"^batch_size must be an integer, got True \(bool\)$"),
        ((N, "4"), {}, r"^batch_size must be an integer, got '4' \(str\)$"),
        ((N, 3), {"seed": -1}, r"^seed must be an integer in \[0, 4294967296\), got seed=-1$"),
        ((N, 3), {"seed": 2**32}, r"^seed must be an integer in \[0, 4294967296\), got seed=4294967296$"),
        ((N, 3), {"seed": 1.0}, r"^seed must be an integer, got 1.0 \(float\)$"),
        ((N, 3), {"record": 3}, r"^record must be a local path \(str or os.PathLike\), got int$"),
        ((N, 3), {"record": "s3://b/r.zarr"}, r"^record must be a local path \(the record is replaced by renaming"),
        ((N, 3), {"dataset_info": {"n_samples": 3}}, r"^dataset_info may set only .*come from the sampler\), got"),
    ],
)
def test_bad_arguments_one_line(args, kw, match):
    with pytest.raises(ParameterError, match=match) as info:
        AdaptiveBatchSampler(*args, **kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("size", "match"),
    [(0, r"^size must be an integer >= 1, got size=0$"), (False, r"^size must be an integer, got False \(bool\)$"),
     (np.float64(2), r"^size must be an integer, got np.float64\(2.0\) \(float64\)$")],
)
def test_bad_request_changes_nothing(size, match):
    sampler = make()
    with pytest.raises(ParameterError, match=match):
        sampler.request(size)
    assert sampler.batch_size == K0
    sampler.request(np.int64(4))
    assert type(sampler.batch_size) is int and sampler.batch_size == 4


@pytest.mark.parametrize("bad", [0, 2.5, True, None])
def test_a_callable_answer_that_is_no_size_is_refused_at_its_batch(bad):
    sampler = make(lambda step: 3 if step < 2 else bad)
    it = iter(sampler)
    next(it), next(it)
    with pytest.raises(ParameterError, match=r"^the batch_size callable must return an integer >= 1, got .* for "
                                             r"step 2$"):
        next(it)
    assert sampler.state_dict()["yielded"] == 2


def test_record_refuses_to_replace_anything_but_an_adaptive_record(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match=r"^record='.*precious' exists and is not an online adaptive record; "
                                             r"refusing to replace it \(choose a new path or remove it\)$"):
        make(record=precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    mine = tmp_path / "mine.zarr"
    train(make(record=mine), range(1))
    offline = write_schedule(dataclasses.replace(read_schedule(mine), params={"seed": 0}), tmp_path / "off.zarr")
    with pytest.raises(ParameterError, match=r"off.zarr' exists and is not an online adaptive record"):
        make(record=offline)
    labels = np.arange(N) % 2
    l2m = tmp_path / "l2m.zarr"
    list(Learn2MixBatchSampler(labels, 4, mixing_rate=0.5, seed=0, record_to=l2m))
    with pytest.raises(ParameterError, match=r"l2m.zarr' exists and is not an online adaptive record"):
        make(record=l2m)
    with pytest.raises(ParameterError, match=r"record_to='.*mine.zarr' exists and is not an online learn2mix record"):
        Learn2MixBatchSampler(labels, 4, mixing_rate=0.5, seed=0, record_to=mine)
    make(record=mine)  # an earlier adaptive record may be replaced


def _mid_state():
    sampler = make()
    train(sampler, range(1), requests={1: 5})
    it = iter(sampler)
    next(it), next(it)
    return sampler.state_dict()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"seed": SEED + 1}, r"^state_dict belongs to another run: it has seed=6, this sampler has seed=5; "),
        ({"n_samples": N + 1}, r"another run: it has n_samples=24, this sampler has n_samples=23"),
        ({"initial_batch_size": 4}, r"another run: it has initial_batch_size=4, this sampler has initial_batch_size=3"),
        ({"initial_batch_size": None}, r"initial_batch_size=None, this sampler has initial_batch_size=3"),
        ({"batch_size": None}, r"^state_dict\['batch_size'\] is None \(sizes from a callable\) but this sampler was "
                               r"built with batch_size=3$"),
        ({"batch_size": 0}, r"^state_dict\['batch_size'\] must be an integer >= 1"),
        ({"epoch": 2}, r"^state_dict\['sizes'\] must be a list with one entry per epoch .*expected 3, got 2 entries$"),
        ({"yielded": 3}, r"^state_dict\['sizes'\]\[1\] must hold the yielded=3 batches of the epoch in progress, "
                         r"got 2$"),
        ({"yielded": -1}, r"^state_dict\['yielded'\] must be an integer >= 0"),
        ({"sizes": [[[5, 5]], [[5, 2]]]}, r"^state_dict\['sizes'\]\[0\] serves more than the n_samples=23 samples"),
        ({"sizes": [[[5, 10**18]], [[5, 2]]]}, r"serves more than the n_samples=23 samples of an epoch$"),
        ({"sizes": [[[0, 1]], [[5, 2]]]}, r"^a size in state_dict\['sizes'\]\[0\] must be an integer >= 1"),
        ({"sizes": [[[5, 1.0]], [[5, 2]]]}, r"^a count in state_dict\['sizes'\]\[0\] must be an integer, got 1.0"),
        ({"sizes": [[5], [[5, 2]]]}, r"^state_dict\['sizes'\]\[0\] must hold \[size, count\] pairs, got 5$"),
        ({"sizes": "x"}, r"^state_dict\['sizes'\] must be a list with one entry per epoch .*got str$"),
    ],
)
def test_malformed_or_foreign_state_changes_nothing(change, match):
    sd = _mid_state()
    target = make()
    before = target.state_dict()
    with pytest.raises(ParameterError, match=match) as info:
        target.load_state_dict({**sd, **change})
    assert "\n" not in str(info.value)
    assert target.state_dict() == before


def test_state_is_plain_json_and_missing_keys_are_named():
    sd = _mid_state()
    assert sd == {"epoch": 1, "yielded": 2, "sizes": [[[3, 2], [5, 3], [2, 1]], [[5, 2]]], "batch_size": 5,
                  "initial_batch_size": 3, "n_samples": N, "seed": SEED}
    assert json.loads(json.dumps(sd)) == sd
    with pytest.raises(ParameterError, match=r"^state_dict must be a mapping, got list$"):
        make().load_state_dict([])
    with pytest.raises(ParameterError, match=r"missing \['sizes', .*\(is it a AdaptiveBatchSampler state\?\)$"):
        make().load_state_dict({"epoch": 0, "yielded": 0})
    callable_sd = make(lambda s: 2).state_dict()
    with pytest.raises(ParameterError, match=r"callable was replaced by request\(\); load the state into a fresh"):
        s = make(lambda s: 2)
        s.request(3)
        s.load_state_dict(callable_sd)
