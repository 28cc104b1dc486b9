"""Tests of schedgen.torch: replay, sharding, epochs, resume, remote read, errors."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from schedgen.errors import ParameterError, SchedgenError, StoreError  # noqa: E402
from schedgen.store import Schedule, write_schedule  # noqa: E402
from schedgen.torch import ScheduleBatchSampler  # noqa: E402


def random_schedule(n: int, ks: int | list[int], seed: int = 0) -> Schedule:
    """One epoch per entry of ``ks``: a seeded permutation of range(n) cut into batches of k, last short."""
    ks = [ks] if isinstance(ks, int) else ks
    indices, batch_offsets, epoch_offsets = [], [0], [0]
    for e, k in enumerate(ks):
        perm = np.random.default_rng([seed, e]).permutation(n)
        for a in range(0, n, k):
            part = perm[a : a + k]
            indices.append(part)
            batch_offsets.append(batch_offsets[-1] + len(part))
        epoch_offsets.append(len(batch_offsets) - 1)
    return Schedule(
        indices=np.concatenate(indices).astype(np.int64),
        batch_offsets=np.asarray(batch_offsets, dtype=np.int64),
        epoch_offsets=np.asarray(epoch_offsets, dtype=np.int64),
        method="random",
        params={"seed": seed},
        dataset={"name": "toy", "split": "train", "n_samples": n, "n_classes": 1, "fingerprint": "0"},
        k=ks[0],
    )


@pytest.fixture
def store(tmp_path):
    """Write a schedule under tmp_path and return its path."""

    def make(n=23, ks=4, seed=0, name="s.zarr"):
        return write_schedule(random_schedule(n, ks, seed), tmp_path / name)

    return make


def play(sampler: ScheduleBatchSampler, epochs) -> list[tuple[int, list[int]]]:
    """The uninterrupted run: set_epoch(e) then a full pass, for each e."""
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out.extend((e, b) for b in sampler)
    return out


# --------------------------------------------------------------------------- replay


def test_each_epoch_is_a_permutation_and_len_counts_the_short_batch(store):
    n, k = 23, 4
    sampler = ScheduleBatchSampler(store(n, k))
    assert len(sampler) == 6  # ceil(23 / 4), the last batch holds 3
    for e in range(3):
        sampler.set_epoch(e)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 3]
        assert all(type(i) is int for b in batches for i in b)
        assert sorted(i for b in batches for i in b) == list(range(n))


def test_one_epoch_schedule_repeats_every_epoch(store):
    sampler = ScheduleBatchSampler(store(23, 4))
    first = list(sampler)
    for e in (1, 2, 7):
        sampler.set_epoch(e)
        assert list(sampler) == first


def test_multi_epoch_schedule_plays_epoch_modulo_n_epochs(store):
    ks = [4, 6, 23]  # 6, 4 and 1 batches
    schedule = random_schedule(23, ks, seed=3)
    sampler = ScheduleBatchSampler(store(23, ks, seed=3))
    assert sampler.n_epochs == 3
    for e in range(8):
        sampler.set_epoch(e)
        want = [schedule.batch(b).tolist() for b in schedule.epoch_batches(e % 3)]
        assert len(sampler) == len(want) == [6, 4, 1][e % 3]
        assert list(sampler) == want


def test_schedule_object_source_matches_store_and_is_copied(store):
    schedule = random_schedule(23, [4, 5])
    from_obj = ScheduleBatchSampler(schedule)
    schedule.indices[:] = 0  # the sampler holds its own copy
    from_store = ScheduleBatchSampler(store(23, [4, 5]))
    assert from_obj.digest == from_store.digest
    assert play(from_obj, range(2)) == play(from_store, range(2))


def test_yielded_lists_are_fresh(store):
    sampler = ScheduleBatchSampler(store())
    first = list(sampler)
    for b in first:
        b.clear()
    assert list(sampler) == list(ScheduleBatchSampler(store(name="t.zarr")))


def test_new_iter_after_a_finished_pass_starts_at_zero(store):
    sampler = ScheduleBatchSampler(store())
    full = list(sampler)
    it = iter(sampler)
    assert sampler.state_dict()["yielded"] == 0  # the start is fixed by iter(), not by the first next()
    next(it), next(it)
    assert list(sampler) == full  # a new __iter__ restarts the epoch
    assert sampler.state_dict()["yielded"] == len(full)
    next(it)  # an abandoned iterator does not move the state
    assert sampler.state_dict()["yielded"] == len(full)


def test_dataloader_yields_the_scheduled_rows(store):
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.arange(23) * 10)
    sampler = ScheduleBatchSampler(store())
    loader = DataLoader(ds, batch_sampler=sampler)
    assert len(loader) == len(sampler)
    assert [(x // 10).tolist() for (x,) in loader] == list(sampler)


def test_import_schedgen_does_not_import_torch():
    code = "import sys, schedgen, schedgen.store; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# Issue 10, item 14: without torch, the import says how to install it (still an ImportError).
_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # what an environment without torch looks like to import
try:
    import schedgen.torch
except ImportError as exc:
    print(type(exc).__name__, isinstance(exc, ModuleNotFoundError), exc.name)
    print(exc)
else:
    print("imported")
"""


def test_import_without_torch_gives_an_install_hint():
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, check=True).stdout
    kind, message = out.splitlines()
    assert kind == "ModuleNotFoundError True torch"
    assert message.startswith("schedgen.torch needs PyTorch, which is not installed (import of torch halted")
    assert message.endswith(
        "install the CPU build first (pip install torch==2.13.0, or see pytorch.org), then pip install -e '.[torch]'"
    )


def test_import_with_a_broken_torch_dependency_is_not_disguised():
    # torch present but one of its own imports missing: the original error, not the hint.
    broken = 'import torch.utils.data; sys.modules["torch.utils.data"] = None'
    code = _WITHOUT_TORCH.replace('sys.modules["torch"] = None', broken)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "ModuleNotFoundError True torch.utils.data"
    assert "needs PyTorch" not in out


# --------------------------------------------------------------------------- sharding


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), k=st.integers(1, 40), world_size=st.integers(1, 5), seed=st.integers(0, 3))
def test_shards_reunite_to_the_global_batch(n, k, world_size, seed):
    schedule = random_schedule(n, [k, max(1, k - 1)], seed)
    sizes = np.diff(schedule.batch_offsets)
    if sizes.min() < world_size:
        b = int(np.argmax(sizes < world_size))
        with pytest.raises(ParameterError, match=rf"batch {b} \(epoch \d\) holds {sizes[b]}"):
            ScheduleBatchSampler(schedule, rank=0, world_size=world_size)
        return
    samplers = [ScheduleBatchSampler(schedule, rank=r, world_size=world_size) for r in range(world_size)]
    for e in range(2):
        per_rank = [play(s, [e]) for s in samplers]
        assert len({len(p) for p in per_rank}) == 1  # same count on every rank
        assert len({len(s) for s in samplers}) == 1
        for step, b in enumerate(schedule.epoch_batches(e)):
            parts = [p[step][1] for p in per_rank]
            assert [i for part in parts for i in part] == schedule.batch(b).tolist()
            lens = [len(part) for part in parts]
            assert lens == [len(a) for a in np.array_split(schedule.batch(b), world_size)]
            assert max(lens) - min(lens) <= 1


# --------------------------------------------------------------------------- resume (plain sampler)


@pytest.mark.parametrize("pin_epoch", [False, True], ids=["state-epoch", "set_epoch-first"])
def test_resume_at_every_position_equals_the_uninterrupted_run(store, pin_epoch):
    path = store(23, [4, 6])  # epochs of 6 and 4 batches
    epochs = range(4)
    full = play(ScheduleBatchSampler(path), epochs)
    done = 0
    for e in epochs:
        ref = ScheduleBatchSampler(path)
        play(ref, range(e))
        ref.set_epoch(e)
        states = [ref.state_dict()]  # the epoch boundary, before iter()
        it = iter(ref)
        for _ in range(len(ref)):
            next(it)
            states.append(ref.state_dict())
        for j, sd in enumerate(states):
            assert (sd["epoch"], sd["yielded"]) == (e, j)
            resumed = ScheduleBatchSampler(path)
            if pin_epoch:
                resumed.set_epoch(e)
            resumed.load_state_dict(sd)
            assert resumed.epoch == e and len(resumed) == len(ref)
            rest = [(e, b) for b in resumed] + play(resumed, range(e + 1, 4))
            assert rest == full[done + j :], (e, j)
        done += len(ref)


def test_state_after_exhaustion_resumes_with_the_next_epoch(store):
    path = store(23, [4, 6])
    full = play(ScheduleBatchSampler(path), range(4))
    ref = ScheduleBatchSampler(path)
    play(ref, range(2))  # epoch 1 ran out
    sd = ref.state_dict()
    assert (sd["epoch"], sd["yielded"]) == (1, 4)
    # Resumed the plain way (load, then the loop's set_epoch) ...
    resumed = ScheduleBatchSampler(path)
    resumed.load_state_dict(sd)
    assert play(resumed, range(2, 4)) == full[10:]
    # ... or the StatefulDataLoader way (set_epoch, then the deferred load).
    resumed = ScheduleBatchSampler(path)
    resumed.set_epoch(2)
    resumed.load_state_dict(sd)
    assert resumed.epoch == 2
    assert [(2, b) for b in resumed] + play(resumed, [3]) == full[10:]


def test_state_is_plain_and_reloadable_before_iterating(store):
    path = store()
    s = ScheduleBatchSampler(path, epoch=5)
    sd = s.state_dict()
    assert sd == {"epoch": 5, "yielded": 0, "digest": s.digest, "rank": 0, "world_size": 1}
    it = iter(s)
    next(it), next(it)
    sd = s.state_dict()
    s2 = ScheduleBatchSampler(path)
    s2.load_state_dict(sd)
    assert s2.state_dict() == sd  # a loaded, not yet resumed state saves as itself
    assert list(s2) == list(it)


def test_sharded_resume(store):
    path = store(40, 7)
    for rank in range(3):
        full = play(ScheduleBatchSampler(path, rank=rank, world_size=3), range(2))
        ref = ScheduleBatchSampler(path, rank=rank, world_size=3)
        it = iter(ref)
        for _ in range(4):
            next(it)
        resumed = ScheduleBatchSampler(path, rank=rank, world_size=3)
        resumed.load_state_dict(ref.state_dict())
        assert [(0, b) for b in resumed] + play(resumed, [1]) == full[4:]


# --------------------------------------------------------------------------- resume (torchdata)


def _loader_run(path, num_workers, *, stop=None, state=None, start=0, n_epochs=3, **kw):
    """Train-loop shape: for e: set_epoch(e); for batch in loader. Saves the loader state at ``stop``.

    ``stop = (epoch, i)`` saves after the i-th batch of that epoch, ``(epoch, "end")``
    after its for loop ended. Returns the batches seen and (state, batches seen before it).
    """
    from torch.utils.data import TensorDataset
    from torchdata.stateful_dataloader import StatefulDataLoader

    sampler = ScheduleBatchSampler(path)
    ds = TensorDataset(torch.arange(sampler.schedule.n_samples))
    loader = StatefulDataLoader(ds, batch_sampler=sampler, num_workers=num_workers, **kw)
    if state is not None:
        loader.load_state_dict(state)
    seen, saved = [], None
    for e in range(start, n_epochs):
        sampler.set_epoch(e)
        for i, (x,) in enumerate(loader):
            seen.append((e, x.tolist()))
            if stop == (e, i):
                saved = (loader.state_dict(), len(seen))
        if stop == (e, "end"):
            saved = (loader.state_dict(), len(seen))
    return seen, saved


@pytest.fixture
def no_vital_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        yield


def _check_loader_resume(path, num_workers, stops, **kw):
    full, _ = _loader_run(path, num_workers, **kw)
    for stop in stops:
        _, (state, m) = _loader_run(path, num_workers, stop=stop, **kw)
        # After an epoch's loop ended the trainer moves on to the next epoch.
        start = stop[0] + 1 if stop[1] == "end" else stop[0]
        rest, _ = _loader_run(path, num_workers, state=state, start=start, **kw)
        assert rest == full[m:], stop


@pytest.mark.usefixtures("no_vital_warning")
def test_stateful_dataloader_resume_every_position_single_process(store):
    pytest.importorskip("torchdata")
    path = store(23, [4, 6])  # 6 then 4 batches
    stops = [(e, i) for e, n in ((0, 6), (1, 4)) for i in range(n)] + [(0, "end"), (1, "end"), (2, "end")]
    _check_loader_resume(path, 0, stops)


@pytest.mark.usefixtures("no_vital_warning")
@pytest.mark.parametrize("snapshot_every", [1, 3])
def test_stateful_dataloader_resume_with_workers(store, snapshot_every):
    pytest.importorskip("torchdata")
    path = store(23, [4, 6])
    # (1, 0) and (1, 1) with snapshot_every=3 restore the snapshot taken when epoch 1's iter() began.
    stops = [(0, 0), (0, 4), (0, 5), (0, "end"), (1, 0), (1, 1)]
    _check_loader_resume(path, 2, stops, snapshot_every_n_steps=snapshot_every)


# --------------------------------------------------------------------------- remote read


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path over HTTP on 127.0.0.1; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_remote_read_over_http_matches_local(store, http_root):
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    path = store(23, [4, 6])
    remote = ScheduleBatchSampler(f"{http_root}/s.zarr", rank=1, world_size=2)
    local = ScheduleBatchSampler(path, rank=1, world_size=2)
    assert remote.digest == local.digest
    assert play(remote, range(3)) == play(local, range(3))


def test_remote_missing_store_is_a_store_error(http_root):
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    with pytest.raises(StoreError, match="cannot open schedule store http://"):
        ScheduleBatchSampler(f"{http_root}/nothing.zarr")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"world_size": 0}, r"world_size must be an integer >= 1, got world_size=0"),
        ({"world_size": True}, r"world_size must be an integer, got True \(bool\)"),
        ({"world_size": 2.0}, r"world_size must be an integer, got 2.0 \(float\)"),
        ({"rank": 2, "world_size": 2}, r"rank must be an integer in \[0, 2\), got rank=2"),
        ({"rank": -1}, r"rank must be an integer in \[0, 1\), got rank=-1"),
        ({"rank": False}, r"rank must be an integer, got False"),
        ({"epoch": -3}, r"epoch must be an integer >= 0, got epoch=-3"),
    ],
)
def test_bad_rank_world_size_epoch(store, kw, match):
    with pytest.raises(ParameterError, match=match):
        ScheduleBatchSampler(store(), **kw)


def test_world_size_larger_than_a_batch(store):
    # 23 = 4 * 5 + 3: the last batch (batch 4) holds 3 samples.
    with pytest.raises(ParameterError, match=r"at least world_size=4 .* batch 4 \(epoch 0\) holds 3$"):
        ScheduleBatchSampler(store(23, 5), world_size=4)


@pytest.mark.parametrize("epoch", [-1, 1.5, True, "2"])
def test_bad_set_epoch(store, epoch):
    sampler = ScheduleBatchSampler(store())
    with pytest.raises(ParameterError, match="epoch must be an integer"):
        sampler.set_epoch(epoch)


def test_set_epoch_accepts_numpy_ints(store):
    sampler = ScheduleBatchSampler(store())
    sampler.set_epoch(np.int64(4))
    assert sampler.epoch == 4 and type(sampler.epoch) is int


def test_state_from_another_schedule(store):
    a = ScheduleBatchSampler(store(23, 4, seed=0, name="a.zarr"))
    b = ScheduleBatchSampler(store(23, 4, seed=1, name="b.zarr"))
    with pytest.raises(ParameterError, match=r"comes from another schedule: its digest is [0-9a-f]{16}\.\.\."):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        # rank and world_size may differ from the sampler's (elastic resume: tests/test_elastic.py) but must agree.
        ({"rank": 2}, r"^state_dict\['rank'\] must be below state_dict\['world_size'\]=2, got 2$"),
        ({"world_size": 1, "rank": 1}, r"^state_dict\['rank'\] must be below state_dict\['world_size'\]=1, got 1$"),
        ({"yielded": 99}, r"at most the 6 batches of epoch 0, got 99"),
        ({"yielded": -1}, r"state_dict\['yielded'\] must be an integer >= 0"),
        ({"epoch": "0"}, r"state_dict\['epoch'\] must be an integer"),
    ],
)
def test_state_malformed_or_past_its_epoch(store, change, match):
    path = store()
    sd = ScheduleBatchSampler(path, rank=0, world_size=2).state_dict()
    with pytest.raises(ParameterError, match=match):
        ScheduleBatchSampler(path, rank=0, world_size=2).load_state_dict({**sd, **change})


# Issue 10, item 13: every integer of the state dict goes through the constructor's check
# (bools, floats and arrays refused, NumPy integers accepted), with a one-line message.
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"digest": np.array([1, 2])}, r"state_dict\['digest'\] must be a sha256 digest \(64 lowercase hex digits\), "
         r"got array\(\[1, 2\]\) \(ndarray\)$"),
        ({"digest": None}, r"state_dict\['digest'\] must be a sha256 digest .*got None \(NoneType\)$"),
        ({"digest": "abc"}, r"state_dict\['digest'\] must be a sha256 digest .*got 'abc' \(str\)$"),
        ({"rank": np.array([0, 0])}, r"^state_dict\['rank'\] must be an integer, got array\(\[0, 0\]\) \(ndarray\)$"),
        ({"rank": np.array(0)}, r"^state_dict\['rank'\] must be an integer, got array\(0\) \(ndarray\)$"),
        ({"rank": np.bool_(False)}, r"^state_dict\['rank'\] must be an integer, got np.False_ \(bool\)$"),
        ({"rank": False}, r"^state_dict\['rank'\] must be an integer, got False \(bool\)$"),
        ({"rank": -1}, r"^state_dict\['rank'\] must be an integer >= 0, got state_dict\['rank'\]=-1$"),
        ({"world_size": 1.0}, r"^state_dict\['world_size'\] must be an integer, got 1.0 \(float\)$"),
        ({"world_size": np.array([1])}, r"^state_dict\['world_size'\] must be an integer, got array"),
        ({"world_size": 0}, r"^state_dict\['world_size'\] must be an integer >= 1, got state_dict\['world_size'\]=0$"),
        ({"epoch": 0.0}, r"^state_dict\['epoch'\] must be an integer, got 0.0 \(float\)$"),
        ({"epoch": np.bool_(False)}, r"^state_dict\['epoch'\] must be an integer, got np.False_ \(bool\)$"),
        ({"yielded": np.array(0)}, r"^state_dict\['yielded'\] must be an integer, got array\(0\) \(ndarray\)$"),
    ],
)
def test_state_integers_and_digest_are_validated_like_the_constructor(store, change, match):
    path = store()
    sd = ScheduleBatchSampler(path).state_dict()
    target = ScheduleBatchSampler(path)
    before = target.state_dict()
    with pytest.raises(ParameterError, match=match):
        target.load_state_dict({**sd, **change})
    assert target.state_dict() == before


def test_state_errors_are_one_line_even_for_a_large_array(store):
    path = store()
    sd = ScheduleBatchSampler(path).state_dict()
    for key in ("digest", "rank", "epoch"):
        with pytest.raises(ParameterError) as info:
            ScheduleBatchSampler(path).load_state_dict({**sd, key: np.zeros((50, 50))})
        msg = str(info.value)
        assert "\n" not in msg and len(msg) < 200 and msg.startswith(f"state_dict['{key}'] must be"), msg


def test_state_accepts_numpy_integers(store):
    path = store()
    ref = ScheduleBatchSampler(path, rank=1, world_size=2)
    it = iter(ref)
    next(it), next(it)
    sd = ref.state_dict()
    numpy_sd = {**sd, **{key: np.int64(sd[key]) for key in ("epoch", "yielded", "rank", "world_size")}}
    numpy_sd["world_size"] = np.int32(2)
    a, b = ScheduleBatchSampler(path, rank=1, world_size=2), ScheduleBatchSampler(path, rank=1, world_size=2)
    a.load_state_dict(sd)
    b.load_state_dict(numpy_sd)
    assert list(a) == list(b) == list(it)
    assert all(type(v) is int for k, v in b.state_dict().items() if k != "digest")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rank": np.bool_(False)}, r"^rank must be an integer, got np.False_ \(bool\)$"),
        ({"world_size": np.bool_(True)}, r"^world_size must be an integer, got np.True_ \(bool\)$"),
        ({"world_size": np.array([1, 1])}, r"^world_size must be an integer, got array\(\[1, 1\]\) \(ndarray\)$"),
        ({"epoch": 0.0}, r"^epoch must be an integer, got 0.0 \(float\)$"),
        ({"epoch": np.array(0)}, r"^epoch must be an integer, got array\(0\) \(ndarray\)$"),
    ],
)
def test_constructor_integers_refuse_numpy_bools_and_arrays(store, kw, match):
    with pytest.raises(ParameterError, match=match):
        ScheduleBatchSampler(store(), **kw)


def test_constructor_accepts_numpy_integers(store):
    s = ScheduleBatchSampler(store(), rank=np.int64(1), world_size=np.uint8(2), epoch=np.int16(3))
    assert (s.rank, s.world_size, s.epoch) == (1, 2, 3)
    assert all(type(v) is int for v in (s.rank, s.world_size, s.epoch))


def test_state_missing_keys(store):
    with pytest.raises(ParameterError, match=r"missing \['digest', 'rank', 'world_size'\]"):
        ScheduleBatchSampler(store()).load_state_dict({"epoch": 0, "yielded": 0})


def test_mid_epoch_state_in_another_epoch(store):
    path = store()
    ref = ScheduleBatchSampler(path)
    ref.set_epoch(2)
    it = iter(ref)
    next(it)
    sd = ref.state_dict()
    pinned = ScheduleBatchSampler(path)
    pinned.set_epoch(3)
    with pytest.raises(ParameterError, match=r"middle of epoch 2 \(1 of 6 batches yielded\) but epoch 3"):
        pinned.load_state_dict(sd)
    loaded = ScheduleBatchSampler(path)
    loaded.load_state_dict(sd)
    with pytest.raises(ParameterError, match=r"call set_epoch\(2\) to resume it"):
        loaded.set_epoch(0)


def test_tampered_store_fails_the_digest_check(store):
    zarr = pytest.importorskip("zarr")
    path = store()
    g = zarr.open_group(str(path), mode="r+")
    idx = g["indices"][...]
    idx[[0, 1]] = idx[[1, 0]]  # still a valid permutation: only the digest can tell
    g["indices"][...] = idx
    with pytest.raises(StoreError, match="digest mismatch"):
        ScheduleBatchSampler(path)


def test_missing_store_and_bad_source(tmp_path):
    with pytest.raises(StoreError, match="the path does not exist"):
        ScheduleBatchSampler(tmp_path / "nope.zarr")
    with pytest.raises(ParameterError, match="source must be a store path, an fsspec URL or a Schedule, got int"):
        ScheduleBatchSampler(3)


def test_errors_are_schedgen_errors():
    assert issubclass(ParameterError, SchedgenError) and issubclass(StoreError, SchedgenError)


# --------------------------------------------------------------------------- the schedule's dataset
# Issue 10, item 17: replay over the dataset the schedule was built on, not one that merely
# has enough rows (sklearn's full load_digits() has 1,797 images, the train split 1,437).

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from schedgen.data import Dataset, load_dataset  # noqa: E402
from schedgen.torch import ScheduleDataset, schedule_dataset  # noqa: E402


def schedule_over(ds: Dataset, k: int = 50, seed: int = 0) -> Schedule:
    """A one-epoch random schedule of ``ds`` carrying its dataset attribute, as a build writes it."""
    s = random_schedule(ds.n_samples, k, seed)
    dataset = {"name": ds.name, "split": ds.split, "n_samples": ds.n_samples, "n_classes": ds.n_classes,
               "fingerprint": ds.fingerprint}
    return Schedule(indices=s.indices, batch_offsets=s.batch_offsets, epoch_offsets=s.epoch_offsets,
                    method="random", params={"seed": seed}, dataset=dataset, k=k)


@pytest.fixture
def digits_store(tmp_path):
    pytest.importorskip("sklearn")
    return write_schedule(schedule_over(load_dataset("digits")), tmp_path / "digits.zarr")


def npz_dataset(tmp_path, n=40, d=3, seed=0, name="data.npz"):
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    np.savez(path, X=rng.random((n, d)).astype(np.float32), y=np.arange(n) % 4)
    return path


def test_schedule_dataset_is_the_split_the_schedule_was_built_on(digits_store):
    train = load_dataset("digits", split="train")
    ds = schedule_dataset(digits_store)
    assert isinstance(ds, TensorDataset) and isinstance(ds, ScheduleDataset)
    assert len(ds) == 1437 and (ds.name, ds.split) == ("digits", "train")
    X, y = ds.tensors
    assert X.dtype == torch.float32 and y.dtype == torch.int64 and tuple(X.shape) == (1437, 64)
    assert np.array_equal(X.numpy(), train.X) and np.array_equal(y.numpy(), train.y)
    assert ds.schedgen_fingerprint == train.fingerprint
    scaled = schedule_dataset(digits_store, scale=True)
    assert scaled.scaled and np.array_equal(scaled.tensors[0].numpy(), train.X / np.float32(16))
    assert scaled.schedgen_fingerprint == train.fingerprint  # the raw data's

    sampler = ScheduleBatchSampler(digits_store, dataset=ds)
    loader = DataLoader(ds, batch_sampler=sampler)
    for (xb, yb), batch in zip(loader, sampler):
        assert np.array_equal(xb.numpy(), train.X[batch]) and np.array_equal(yb.numpy(), train.y[batch])


def test_schedule_dataset_takes_a_schedule_or_a_sampler(digits_store):
    sampler = ScheduleBatchSampler(digits_store)
    for source in (sampler, sampler.schedule, str(digits_store)):
        assert schedule_dataset(source).schedgen_fingerprint == sampler.schedule.dataset["fingerprint"]
    with pytest.raises(ParameterError, match=r"^source must be a store path, an fsspec URL, a Schedule or a "
                                             r"ScheduleBatchSampler, got int$"):
        schedule_dataset(3)


def test_sampler_refuses_a_dataset_of_another_length(digits_store):
    from sklearn.datasets import load_digits

    full = load_digits()  # the README's old snippet: 1,797 images, the schedule indexes 1,437
    train_set = TensorDataset(torch.tensor(full.data, dtype=torch.float32), torch.tensor(full.target))
    with pytest.raises(ParameterError, match=r"^dataset has 1797 samples but the schedule was built on the 1437 "
                                             r"of digits \(train\): its indices would fetch other samples; pass "
                                             r"the dataset it was built on, e\.g\. schedgen\.torch\.schedule_dataset"
                                             r"\(store\)$"):
        ScheduleBatchSampler(digits_store, dataset=train_set)


def test_sampler_refuses_a_dataset_with_another_fingerprint(tmp_path):
    built_on = load_dataset(f"npz:{npz_dataset(tmp_path, seed=0)}")
    other = load_dataset(f"npz:{npz_dataset(tmp_path, seed=1, name='other.npz')}")  # same length
    path = write_schedule(schedule_over(built_on, k=8), tmp_path / "s.zarr")
    ScheduleBatchSampler(path, dataset=ScheduleDataset(built_on))
    with pytest.raises(ParameterError, match=r"^dataset is not the one the schedule was built on: the schedule's "
                                             r"dataset npz:.*data\.npz \(train\) has fingerprint [0-9a-f]{16}\.\.\., "
                                             r"the dataset's schedgen_fingerprint is [0-9a-f]{16}\.\.\.$"):
        ScheduleBatchSampler(path, dataset=ScheduleDataset(other))
    ScheduleBatchSampler(path, dataset=TensorDataset(torch.zeros(40)))  # no fingerprint: the length only


def test_sampler_refuses_a_dataset_without_a_length(store):
    with pytest.raises(ParameterError, match=r"^dataset must be a map-style dataset with a length, .*got "
                                             r"generator, which has no len\(\)$"):
        ScheduleBatchSampler(store(), dataset=(i for i in range(23)))


def test_schedule_dataset_refuses_data_changed_since_the_build(tmp_path):
    npz = npz_dataset(tmp_path)
    path = write_schedule(schedule_over(load_dataset(f"npz:{npz}"), k=8), tmp_path / "s.zarr")
    assert len(schedule_dataset(path)) == 40
    npz_dataset(tmp_path, seed=5)  # the same file name, other values
    fp = r"fingerprint [0-9a-f]{16}\.\.\."
    with pytest.raises(StoreError, match=rf"s\.zarr: dataset fingerprint mismatch: the schedule was built on "
                                         rf"npz:.*data\.npz \(train\) with 40 samples and {fp}, "
                                         rf"the npz:.*data\.npz \(train\) loaded here has 40 samples and {fp}$"):
        schedule_dataset(path)


def test_schedule_dataset_refuses_a_dataset_schedgen_cannot_load(store):
    with pytest.raises(ParameterError, match=r"s\.zarr: the schedule was built on dataset 'toy', which schedgen "
                                             r"cannot load \(expected one of digits, .* npz:PATH or array:DIR\)$"):
        schedule_dataset(store())


def test_schedule_dataset_refuses_a_store_without_dataset_attributes(tmp_path):
    s = random_schedule(10, 3)
    s.dataset.pop("fingerprint")
    with pytest.raises(StoreError, match=r"s\.zarr: dataset\.fingerprint must be str to find the dataset, got None$"):
        schedule_dataset(write_schedule(s, tmp_path / "s.zarr"))


def test_a_format1_schedule_object_stays_format1(tmp_path):
    """ScheduleBatchSampler(schedule) copies the Schedule it is given: the copy keeps the
    format, so a format-1 schedule's attributes are not reported as covered by a digest."""
    from toys import toy_schedule, write_format1

    from schedgen.store import read_schedule

    s = read_schedule(write_format1(toy_schedule(), tmp_path / "f1.zarr"))
    assert s.schedgen_format == 1 and not s.attributes_covered
    sampler = ScheduleBatchSampler(s)
    assert sampler.schedule.schedgen_format == 1 and not sampler.schedule.attributes_covered
