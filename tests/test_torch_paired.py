"""Tests of PairedScheduleBatchSampler: S1 and S2 per rank and epoch, roles through a
DataLoader, resume at every position, partner arrays refused when missing or tampered."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from schedgen.errors import ParameterError, SchedgenError, StoreError  # noqa: E402
from schedgen.store import Schedule, array_digest, read_schedule, write_schedule  # noqa: E402
from schedgen.torch import (  # noqa: E402
    PairedBatch,
    PairedScheduleBatchSampler,
    RoleTaggedDataset,
    ScheduleBatchSampler,
    paired_collate,
)
from toys import toy_schedule  # noqa: E402


def paired_schedule(n=23, k=4, epochs=2, m=5, seed=0) -> Schedule:
    """``toy_schedule`` (last batch short) with seeded partner rows of ``m`` samples each."""
    s = toy_schedule(n=n, k=k, epochs=epochs, seed=seed, extras=False)
    p = np.stack([np.random.default_rng([seed, 99, b]).choice(n, m, replace=False) for b in range(s.n_batches)])
    return with_partners(s, p.astype(np.int64))


def with_partners(s: Schedule, p) -> Schedule:
    return dataclasses.replace(s, batch_arrays={"partner_indices": p})


@pytest.fixture
def store(tmp_path):
    def make(name="p.zarr", **kw):
        return write_schedule(paired_schedule(**kw), tmp_path / name)

    return make


def play(sampler, epochs):
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out += [(e, list(b), b.n1) for b in sampler]
    return out


# --------------------------------------------------------------------------- what is yielded


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_s1_is_the_plain_sampler_and_s2_the_partner_rows(store, world_size):
    path = store(m=5)
    s = read_schedule(path)
    p = s.batch_arrays["partner_indices"]
    for rank in range(world_size):
        paired = PairedScheduleBatchSampler(path, rank=rank, world_size=world_size)
        plain = ScheduleBatchSampler(path, rank=rank, world_size=world_size)
        for e in range(2 * s.n_epochs + 1):  # epoch e replays schedule epoch e % n_epochs
            paired.set_epoch(e), plain.set_epoch(e)
            got, want = list(paired), list(plain)
            assert len(got) == len(want) == len(paired)
            for i, (b, s1) in enumerate(zip(got, want)):
                assert isinstance(b, PairedBatch)
                g = int(s.epoch_offsets[e % s.n_epochs]) + i  # the global batch number
                # oracle: np.array_split of the partner row, as the module docstring states
                s2 = np.array_split(p[g], world_size)[rank].tolist()
                assert b.s1 == s1 and b.s2 == s2 and list(b) == s1 + s2 and b.n1 == len(s1)


def test_parts_of_all_ranks_reunite_to_s1_and_s2(store):
    path = store(m=7)
    s = read_schedule(path)
    ranks = [list(PairedScheduleBatchSampler(path, rank=r, world_size=3)) for r in range(3)]
    for g, parts in enumerate(zip(*ranks)):
        assert sum((b.s1 for b in parts), []) == s.batch(g).tolist()
        assert sum((b.s2 for b in parts), []) == s.batch_arrays["partner_indices"][g].tolist()


def test_yielded_batches_are_copies(store):
    sampler = PairedScheduleBatchSampler(store())
    first = next(iter(sampler))
    first.append(-1)
    first.n1 = 0
    again = next(iter(sampler))
    assert -1 not in again and again.n1 > 0


# --------------------------------------------------------------------------- roles through a DataLoader


@pytest.mark.parametrize("num_workers", [0, 2])
def test_roles_survive_a_dataloader(store, num_workers):
    path = store(m=5)
    s = read_schedule(path)
    # Items (x, y) with x the sample's index: the loader's output names the indices fetched.
    data = RoleTaggedDataset(TensorDataset(torch.arange(s.n_samples), torch.arange(s.n_samples) * 10))
    for rank in range(2):
        sampler = PairedScheduleBatchSampler(path, rank=rank, world_size=2, dataset=data)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=paired_collate, num_workers=num_workers)
        for e in range(2):
            sampler.set_epoch(e)
            want = [(b.s1, b.s2) for b in sampler]
            got = [((x1.tolist(), y1.tolist()), (x2.tolist(), y2.tolist())) for (x1, y1), (x2, y2) in loader]
            assert got == [((a, [10 * i for i in a]), (b, [10 * i for i in b])) for a, b in want]


def test_role_tagged_dataset_refuses_batches_without_roles(store):
    path = store()
    data = RoleTaggedDataset(TensorDataset(torch.arange(23)))
    loader = DataLoader(data, batch_sampler=ScheduleBatchSampler(path), collate_fn=paired_collate)
    with pytest.raises(ParameterError, match="must be fetched by PairedBatch.*got a list of 4 indices"):
        next(iter(loader))
    with pytest.raises(ParameterError, match="not by single index; got index 3"):
        data[3]
    with pytest.raises(ParameterError, match=r"S1's items \(role 0\) then S2's"):
        paired_collate([(1, 1), (2, 0)])
    with pytest.raises(ParameterError, match="takes \\(item, role\\) pairs"):
        paired_collate([1, 2])


def test_dataset_check_passes_through_the_wrapper(store):
    path = store()
    ok = TensorDataset(torch.arange(23))
    ok.schedgen_fingerprint = "f" * 64
    PairedScheduleBatchSampler(path, dataset=RoleTaggedDataset(ok))
    with pytest.raises(ParameterError, match="dataset has 22 samples"):
        PairedScheduleBatchSampler(path, dataset=RoleTaggedDataset(TensorDataset(torch.arange(22))))
    other = TensorDataset(torch.arange(23))
    other.schedgen_fingerprint = "0" * 64
    with pytest.raises(ParameterError, match="not the one the schedule was built on"):
        PairedScheduleBatchSampler(path, dataset=RoleTaggedDataset(other))


# --------------------------------------------------------------------------- resume


def test_resume_at_every_position_gives_the_remaining_batches(store):
    path = store(k=4, epochs=2)  # 6 batches per epoch
    for rank, world_size in [(0, 1), (1, 2), (2, 3)]:
        full = play(PairedScheduleBatchSampler(path, rank=rank, world_size=world_size), range(4))
        done = 0
        for e in range(4):
            for j in range(7):  # j = 6: at the epoch boundary (the epoch ran out)
                ref = PairedScheduleBatchSampler(path, rank=rank, world_size=world_size)
                ref.set_epoch(e)
                it = iter(ref)
                for _ in range(j):
                    next(it)
                resumed = PairedScheduleBatchSampler(path, rank=rank, world_size=world_size)
                resumed.load_state_dict(ref.state_dict())
                rest = [(e, list(b), b.n1) for b in resumed] + play(resumed, range(e + 1, 4))
                assert rest == full[done + j :], (rank, e, j)
            done += 6


def test_state_of_other_partners_is_refused(store):
    a = PairedScheduleBatchSampler(store("a.zarr", seed=0))
    s = paired_schedule(seed=0)
    b = PairedScheduleBatchSampler(with_partners(s, s.batch_arrays["partner_indices"][:, ::-1].copy()))  # the same S1, other partners
    assert a.schedule.digest == b.schedule.digest and a.digest != b.digest
    with pytest.raises(ParameterError, match="comes from another schedule"):
        b.load_state_dict(a.state_dict())


def _loader_run(path, *, stop=None, state=None, start=0, n_epochs=3):
    from torchdata.stateful_dataloader import StatefulDataLoader

    sampler = PairedScheduleBatchSampler(path)
    data = RoleTaggedDataset(TensorDataset(torch.arange(sampler.schedule.n_samples)))
    loader = StatefulDataLoader(data, batch_sampler=sampler, collate_fn=paired_collate, num_workers=0)
    if state is not None:
        loader.load_state_dict(state)
    seen, saved = [], None
    for e in range(start, n_epochs):
        sampler.set_epoch(e)
        for i, ((x1,), (x2,)) in enumerate(loader):
            seen.append((e, x1.tolist(), x2.tolist()))
            if stop == (e, i):
                saved = (loader.state_dict(), len(seen))
        if stop == (e, "end"):
            saved = (loader.state_dict(), len(seen))
    return seen, saved


def test_stateful_dataloader_resume_every_position(store):
    pytest.importorskip("torchdata")
    path = store(k=6, epochs=2)  # 4 batches per epoch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        full, _ = _loader_run(path)
        for stop in [(e, i) for e in range(3) for i in range(4)] + [(e, "end") for e in range(2)]:
            _, (state, m) = _loader_run(path, stop=stop)
            start = stop[0] + 1 if stop[1] == "end" else stop[0]
            rest, _ = _loader_run(path, state=state, start=start)
            assert rest == full[m:], stop


# --------------------------------------------------------------------------- refusals


def test_store_without_partners_is_refused_in_one_line(tmp_path):
    path = write_schedule(toy_schedule(n=23, k=4), tmp_path / "plain.zarr")
    with pytest.raises(ParameterError) as info:
        PairedScheduleBatchSampler(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "no partner_indices" in msg and "--pair" in msg
    with pytest.raises(ParameterError, match=r"the random schedule of toy \(train\) has no partner_indices"):
        PairedScheduleBatchSampler(toy_schedule(n=23, k=4))


def test_tampered_partner_array_is_refused_on_read(store):
    import zarr

    path = store()
    g = zarr.open_group(str(path), mode="r+")
    p = g["partner_indices"][...]
    p[3, 1] = (p[3, 1] + 1) % 23  # still a valid index: only the digest can tell
    g["partner_indices"][...] = p
    with pytest.raises(StoreError, match="partner_indices"):
        read_schedule(path, verify=True)
    with pytest.raises(StoreError, match="partner_indices"):
        PairedScheduleBatchSampler(path)


def test_out_of_range_partners_are_refused_even_with_fresh_digests(store):
    import zarr

    path = store()
    g = zarr.open_group(str(path), mode="r+")
    p = g["partner_indices"][...]
    p[2, 0] = 23
    g["partner_indices"][...] = p
    attrs = dict(g.attrs)
    attrs["array_digests"] = {**attrs["array_digests"], "partner_indices": array_digest(p)}
    from schedgen.store import attributes_digest

    attrs.pop("attributes_digest")
    attrs["attributes_digest"] = attributes_digest(attrs)
    g.attrs.put(attrs)
    with pytest.raises(SchedgenError, match=r"partner_indices.*outside \[0, 23\): 0\.\.23"):  # the reader refuses it
        PairedScheduleBatchSampler(path)


@pytest.mark.parametrize(
    ("partners", "world_size", "match"),
    [
        (lambda p: p[:, :2], 3, "partner batches of .* hold 2"),
        (lambda p: p - 1, 1, r"in \[0, 23\), got -1"),
        (lambda p: p[:, 0], 1, r"shape \(n_batches, M\), got dtype int64 and shape \(12,\)"),
        (lambda p: p.astype(np.float64), 1, "must be an integer array"),
    ],
)
def test_malformed_partners_are_refused(partners, world_size, match):
    s = paired_schedule()
    bad = with_partners(s, partners(s.batch_arrays["partner_indices"]))
    with pytest.raises(ParameterError, match=match):
        PairedScheduleBatchSampler(bad, world_size=world_size)
