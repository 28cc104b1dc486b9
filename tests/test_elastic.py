"""Issue 16: uneven global batches (``uneven="split"|"drop"|"pad"``) and elastic resume
(a state saved at one rank and world size resumes any rank of any world size)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from schedgen.errors import ParameterError  # noqa: E402
from schedgen.store import Schedule, write_schedule  # noqa: E402
from schedgen.torch import PairedScheduleBatchSampler, ScheduleBatchSampler  # noqa: E402

MODES = ("split", "drop", "pad")


def ragged_schedule(n: int, sizes_per_epoch: list[list[int]], seed: int = 0, m: int | None = None) -> Schedule:
    """One seeded permutation of range(n) per epoch, cut into batches of the given sizes (each epoch's
    sizes sum to n); with ``m``, seeded partner rows of ``m`` samples each."""
    indices, batch_offsets, epoch_offsets = [], [0], [0]
    for e, sizes in enumerate(sizes_per_epoch):
        assert sum(sizes) == n
        perm = np.random.default_rng([seed, e]).permutation(n)
        for a, b in zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes)):
            indices.append(perm[a:b])
            batch_offsets.append(int(b) + batch_offsets[epoch_offsets[-1]])
        epoch_offsets.append(len(batch_offsets) - 1)
    s = Schedule(
        indices=np.concatenate(indices).astype(np.int64),
        batch_offsets=np.asarray(batch_offsets, dtype=np.int64),
        epoch_offsets=np.asarray(epoch_offsets, dtype=np.int64),
        method="random",
        params={"seed": seed},
        dataset={"name": "toy", "split": "train", "n_samples": n, "n_classes": 1, "fingerprint": "0"},
        k=max(sizes_per_epoch[0]),
    )
    if m is not None:
        rng = np.random.default_rng([seed, 99])
        p = np.stack([rng.choice(n, m, replace=False) for _ in range(len(batch_offsets) - 1)]).astype(np.int64)
        s = dataclasses.replace(s, batch_arrays={"partner_indices": p})
    return s


def oracle_parts(batch: list[int], world_size: int, mode: str) -> list[list[int]]:
    """The documented rule, written out: each rank's part of one global batch."""
    b = len(batch)
    q, r = divmod(b, world_size)
    if mode == "split":
        parts, a = [], 0
        for rank in range(world_size):
            n = q + 1 if rank < r else q
            parts.append(batch[a : a + n])
            a += n
        return parts
    if mode == "drop":  # the last b mod W samples (stored order) are dropped
        return [batch[rank * q : (rank + 1) * q] for rank in range(world_size)]
    c = -(-b // world_size)  # pad: the batch followed by its first c*W - b samples again
    padded = batch + batch[: c * world_size - b]
    return [padded[rank * c : (rank + 1) * c] for rank in range(world_size)]


def promised(batch: list[int], world_size: int, mode: str) -> list[int]:
    """What the parts of all ranks reunite to, as the docstring promises it."""
    q, r = divmod(len(batch), world_size)
    if mode == "split":
        return batch
    if mode == "drop":
        return batch[: q * world_size]
    c = -(-len(batch) // world_size)
    return batch + batch[: c * world_size - len(batch)]


def play(sampler, epochs):
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out.extend((e, list(b)) for b in sampler)
    return out


# --------------------------------------------------------------------------- uneven batches


@settings(max_examples=60, deadline=None)
@given(
    world_size=st.integers(1, 5),
    extra=st.lists(st.integers(0, 7), min_size=1, max_size=6),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 3),
)
def test_parts_follow_the_rule_and_reunite(world_size, extra, mode, seed):
    sizes = [world_size + x for x in extra]  # every batch holds at least world_size samples
    n = sum(sizes)
    schedule = ragged_schedule(n, [sizes, sizes[::-1]], seed=seed)
    ranks = [ScheduleBatchSampler(schedule, rank=r, world_size=world_size, uneven=mode) for r in range(world_size)]
    for e in range(2):
        for s in ranks:
            s.set_epoch(e)
        per_rank = [list(s) for s in ranks]
        b0 = int(schedule.epoch_offsets[e])
        for i, parts in enumerate(zip(*per_rank)):
            batch = schedule.batch(b0 + i).tolist()
            assert list(parts) == oracle_parts(batch, world_size, mode), (e, i)
            assert sum(parts, []) == promised(batch, world_size, mode)
            lengths = {len(p) for p in parts}
            if mode != "split":
                assert len(lengths) == 1  # equal local batches
            assert all(len(set(p)) == len(p) for p in parts)  # never a sample twice in one local batch
            if mode == "split" or len(batch) % world_size == 0:
                assert list(parts) == [a.tolist() for a in np.array_split(np.asarray(batch), world_size)]


def test_pad_and_drop_on_a_worked_example():
    """b = 5 on W = 4: drop keeps [a, b, c, d]; pad wraps around to [a, b, c] (p = 3 > c = 2)."""
    schedule = ragged_schedule(5, [[5]])
    batch = schedule.batch(0).tolist()
    got = {m: [next(iter(ScheduleBatchSampler(schedule, rank=r, world_size=4, uneven=m))) for r in range(4)]
           for m in MODES}
    a, b, c, d, e = batch
    assert got["split"] == [[a, b], [c], [d], [e]]
    assert got["drop"] == [[a], [b], [c], [d]]
    assert got["pad"] == [[a, b], [c, d], [e, a], [b, c]]


@pytest.mark.parametrize("bad", ["Pad", "", None, 1, True])
def test_bad_uneven_is_one_line(bad):
    schedule = ragged_schedule(8, [[4, 4]], m=4)
    for cls in (ScheduleBatchSampler, PairedScheduleBatchSampler):
        with pytest.raises(ParameterError) as exc:
            cls(schedule, world_size=2, uneven=bad)
        msg = str(exc.value)
        assert msg.startswith("uneven must be one of ['split', 'drop', 'pad'], got ") and "\n" not in msg, msg


@pytest.mark.parametrize("mode", MODES)
def test_paired_parts_follow_the_rule_for_s1_and_s2(mode):
    schedule = ragged_schedule(30, [[7, 9, 5, 9]], m=5)
    p = schedule.batch_arrays["partner_indices"]
    world_size = 3
    ranks = [list(PairedScheduleBatchSampler(schedule, rank=r, world_size=world_size, uneven=mode))
             for r in range(world_size)]
    for i, parts in enumerate(zip(*ranks)):
        s1 = oracle_parts(schedule.batch(i).tolist(), world_size, mode)
        s2 = oracle_parts(p[i].tolist(), world_size, mode)
        assert [x.s1 for x in parts] == s1 and [x.s2 for x in parts] == s2, i
        if mode != "split":
            assert len({x.n1 for x in parts}) == 1 and len({len(x) for x in parts}) == 1


# --------------------------------------------------------------------------- elastic resume


def _state_after(path, j, *, epoch, rank, world_size, uneven="split", cls=ScheduleBatchSampler):
    """The state of one rank after it handed out j batches of ``epoch``."""
    ref = cls(path, rank=rank, world_size=world_size, uneven=uneven)
    play(ref, range(epoch))
    ref.set_epoch(epoch)
    it = iter(ref)
    for _ in range(j):
        next(it)
    return ref.state_dict()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("saved_at", [(0, 1), (1, 2), (2, 3)], ids=lambda x: f"rank{x[0]}of{x[1]}")
def test_a_state_of_any_rank_resumes_every_rank_of_another_world_size(tmp_path, saved_at, mode):
    path = write_schedule(ragged_schedule(41, [[9, 7, 8, 9, 8], [11, 10, 10, 10]]), tmp_path / "s.zarr")
    for new_world in (1, 2, 4):
        full = [play(ScheduleBatchSampler(path, rank=r, world_size=new_world, uneven=mode), range(3))
                for r in range(new_world)]
        done = 0
        for e, n_batches in ((0, 5), (1, 4)):
            for j in range(n_batches + 1):
                sd = _state_after(path, j, epoch=e, rank=saved_at[0], world_size=saved_at[1])
                for r in range(new_world):
                    resumed = ScheduleBatchSampler(path, rank=r, world_size=new_world, uneven=mode)
                    resumed.load_state_dict(sd)
                    rest = [(e, b) for b in resumed] + play(resumed, range(e + 1, 3))
                    assert rest == full[r][done + j :], (new_world, r, e, j)
            done += n_batches


def test_resumed_parts_reunite_to_the_next_global_batch(tmp_path):
    """After a resume at another world size, the first step's parts are the global batch at ``yielded``."""
    path = write_schedule(ragged_schedule(41, [[9, 7, 8, 9, 8]]), tmp_path / "s.zarr")
    schedule = ScheduleBatchSampler(path).schedule
    sd = _state_after(path, 3, epoch=0, rank=1, world_size=2, uneven="pad")
    for mode in MODES:
        parts = []
        for r in range(3):
            s = ScheduleBatchSampler(path, rank=r, world_size=3, uneven=mode)
            s.load_state_dict(sd)
            parts.append(next(iter(s)))
        assert sum(parts, []) == promised(schedule.batch(3).tolist(), 3, mode)


def test_state_of_another_schedule_is_refused_at_any_world_size(tmp_path):
    a = write_schedule(ragged_schedule(20, [[5, 5, 5, 5]], seed=0), tmp_path / "a.zarr")
    b = write_schedule(ragged_schedule(20, [[5, 5, 5, 5]], seed=1), tmp_path / "b.zarr")
    sd = _state_after(a, 2, epoch=0, rank=1, world_size=2)
    with pytest.raises(ParameterError, match=r"^state_dict comes from another schedule: its digest is "):
        ScheduleBatchSampler(b, rank=0, world_size=3).load_state_dict(sd)


def test_paired_state_resumes_another_world_size(tmp_path):
    path = write_schedule(ragged_schedule(30, [[7, 9, 5, 9], [6, 8, 8, 8]], m=5), tmp_path / "p.zarr")

    def paired_play(s, epochs):
        out = []
        for e in epochs:
            s.set_epoch(e)
            out += [(e, list(b), b.n1) for b in s]
        return out

    for mode in MODES:
        sd = _state_after(path, 2, epoch=1, rank=0, world_size=3, cls=PairedScheduleBatchSampler)
        for r in range(2):
            full = paired_play(PairedScheduleBatchSampler(path, rank=r, world_size=2, uneven=mode), range(3))
            resumed = PairedScheduleBatchSampler(path, rank=r, world_size=2, uneven=mode)
            resumed.load_state_dict(sd)
            rest = [(1, list(b), b.n1) for b in resumed] + paired_play(resumed, [2])
            assert rest == full[4 + 2 :], (mode, r)
    # The partner digest is still checked: a plain sampler's state is another schedule's.
    plain = ScheduleBatchSampler(path, world_size=2).state_dict()
    with pytest.raises(ParameterError, match="comes from another schedule"):
        PairedScheduleBatchSampler(path, world_size=3).load_state_dict(plain)


# --------------------------------------------------------------------------- torchdata


def _loader(path, rank, world_size, uneven, num_workers, state=None):
    from torch.utils.data import TensorDataset
    from torchdata.stateful_dataloader import StatefulDataLoader

    sampler = ScheduleBatchSampler(path, rank=rank, world_size=world_size, uneven=uneven)
    ds = TensorDataset(torch.arange(sampler.schedule.n_samples))
    loader = StatefulDataLoader(ds, batch_sampler=sampler, num_workers=num_workers)
    if state is not None:
        loader.load_state_dict(state)
    return sampler, loader


def _sampler_state(loader_state: dict) -> dict:
    """The batch sampler's part of a StatefulDataLoader state (without or with workers)."""
    main = loader_state["_snapshot"]["_main_snapshot"] if "_snapshot" in loader_state else loader_state
    return main["_index_sampler_state"]


def _run(sampler, loader, epochs, *, stop_after=None):
    """set_epoch(e); for batch in loader — stopping (and returning the loader state) after ``stop_after`` steps."""
    seen, steps = [], 0
    for e in epochs:
        sampler.set_epoch(e)
        for (x,) in loader:
            seen.append((e, x.tolist()))
            steps += 1
            if steps == stop_after:
                return seen, loader.state_dict()
    return seen, None


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stateful_dataloader_state_of_one_rank_resumes_a_bigger_job(tmp_path, num_workers):
    """Train 7 steps at world size 2, keep rank 1's loader state, restart at world size 3 from it."""
    pytest.importorskip("torchdata")
    path = write_schedule(ragged_schedule(41, [[9, 7, 8, 9, 8], [11, 10, 10, 10]]), tmp_path / "s.zarr")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        states = [_run(*_loader(path, r, 2, "split", num_workers), range(2), stop_after=7) for r in range(2)]
        # The ranks' loader states hold the same position; only the recorded rank differs.
        sampler_states = [_sampler_state(s) for _, s in states]
        assert sampler_states[0] == {**sampler_states[1], "rank": 0}
        assert (sampler_states[1]["epoch"], sampler_states[1]["yielded"]) == (1, 2)
        state = states[1][1]  # epoch 1, 2 of its 4 global batches consumed
        for r in range(3):
            full, _ = _run(*_loader(path, r, 3, "drop", num_workers), range(3))
            sampler, loader = _loader(path, r, 3, "drop", num_workers, state=state)
            rest, _ = _run(sampler, loader, range(1, 3))
            assert rest == full[7:], r
