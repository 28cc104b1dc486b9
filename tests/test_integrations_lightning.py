"""schedgen.integrations.lightning with the real PyTorch Lightning on CPU: the batches a
model sees are the schedule's, a mid-epoch checkpoint resumes them exactly, ranks get
their documented parts, and the configurations that would break it are refused."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")
pytest.importorskip("torchdata")

from torch.utils.data import TensorDataset  # noqa: E402

from schedgen.errors import ParameterError  # noqa: E402
from schedgen.integrations.lightning import ScheduleDataModule  # noqa: E402
from schedgen.store import write_schedule  # noqa: E402

from test_elastic import oracle_parts, ragged_schedule  # noqa: E402

N = 30
# Three epochs of ragged batches (7 or 4 samples), 5 batches each: the epochs differ, so a
# replay of the wrong epoch or from the wrong position shows.
SIZES = [[7, 4, 7, 4, 8], [4, 7, 7, 8, 4], [8, 7, 4, 4, 7]]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_schedule(ragged_schedule(N, SIZES, seed=3), tmp_path_factory.mktemp("lt") / "s.zarr")


def schedule_batches(n_epochs: int) -> list[list[int]]:
    """The oracle: the schedule's global batches, epoch e playing schedule epoch e % 3."""
    s = ragged_schedule(N, SIZES, seed=3)
    out = []
    for e in range(n_epochs):
        b0, b1 = s.epoch_offsets[e % 3], s.epoch_offsets[e % 3 + 1]
        out += [s.indices[s.batch_offsets[b] : s.batch_offsets[b + 1]].tolist() for b in range(b0, b1)]
    return out


def dataset() -> TensorDataset:
    x = torch.linspace(-1, 1, N, dtype=torch.float32)[:, None]
    return TensorDataset(x, torch.arange(N))


class Recorder(L.LightningModule):
    """A one-weight model that records the sample indices of every training batch."""

    def __init__(self, out: str | None = None) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)
        self.seen: list[list[int]] = []
        self.out = out

    def training_step(self, batch, batch_idx):
        x, idx = batch
        self.seen.append(idx.tolist())
        return self.w(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_train_end(self) -> None:
        if self.out is not None:  # a spawned rank reports what it saw
            with open(f"{self.out}.{self.global_rank}.json", "w") as f:
                json.dump(self.seen, f)


class SaveAt(L.Callback):
    """Save a checkpoint after the given global step (mid-epoch)."""

    def __init__(self, step: int, path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def trainer(tmp_path, **kw) -> L.Trainer:
    kw.setdefault("max_epochs", 4)
    checkpointing = any(isinstance(c, L.callbacks.ModelCheckpoint) for c in kw.get("callbacks", []))
    kw.setdefault("enable_checkpointing", checkpointing)
    kw.setdefault("devices", 1)
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
        **kw,
    )


def test_sees_the_schedule_epoch_after_epoch(store, tmp_path):
    model = Recorder()
    trainer(tmp_path).fit(model, datamodule=ScheduleDataModule(store, dataset()))
    # 4 epochs of a 3-epoch schedule: the 4th replays schedule epoch 0 (the sampler follows the trainer's epoch)
    assert model.seen == schedule_batches(4)


@pytest.mark.parametrize("step", [2, 7, 10])
def test_mid_epoch_checkpoint_resumes_exactly(store, tmp_path, step):
    # step 7 is batch 2 of epoch 1; 10 is epoch 1's last batch (taken before the epoch's end hooks:
    # Lightning then plays epoch 2 from the loader's first iterator)
    ckpt = tmp_path / "mid.ckpt"
    first = Recorder()
    trainer(tmp_path, max_steps=step, callbacks=[SaveAt(step, ckpt)]).fit(
        first, datamodule=ScheduleDataModule(store, dataset())
    )
    assert first.seen == schedule_batches(4)[:step]
    state = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert len(state) == 1  # the loader's state is in the checkpoint (the sampler's position in it)

    second = Recorder()
    trainer(tmp_path).fit(second, datamodule=ScheduleDataModule(store, dataset()), ckpt_path=ckpt)
    assert first.seen + second.seen == schedule_batches(4)


def test_epoch_end_checkpoint_resumes_with_the_next_epoch(store, tmp_path):
    # Lightning's ModelCheckpoint saves at the end of each epoch by default
    first = Recorder()
    ckpt = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    trainer(tmp_path, max_epochs=2, callbacks=[ckpt]).fit(first, datamodule=ScheduleDataModule(store, dataset()))
    second = Recorder()
    trainer(tmp_path).fit(second, datamodule=ScheduleDataModule(store, dataset()), ckpt_path=tmp_path / "epoch=1.ckpt")
    assert first.seen == schedule_batches(2)
    assert first.seen + second.seen == schedule_batches(4)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_their_documented_parts(store, world_size, monkeypatch):
    # Ranks simulated: the trainer reports (global_rank, world_size) and the loader is iterated directly;
    # a real 2-process DDP run is in test_ddp_two_processes.
    dm = ScheduleDataModule(store, dataset(), uneven="pad")
    t = trainer(None)
    monkeypatch.setattr(type(t), "world_size", property(lambda self: world_size))
    seen = []
    for rank in range(world_size):
        monkeypatch.setattr(type(t), "global_rank", property(lambda self, r=rank: r))
        dm.trainer = t
        seen.append([idx.tolist() for _, idx in dm.train_dataloader()])
    for b, batch in enumerate(schedule_batches(1)):
        assert [s[b] for s in seen] == oracle_parts(batch, world_size, "pad")


def test_refuses_a_trainer_that_would_insert_its_distributed_sampler(store, tmp_path):
    dm = ScheduleDataModule(store, dataset())
    dm.trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=1, logger=False, default_root_dir=tmp_path)
    with pytest.raises(ParameterError, match=r"use_distributed_sampler=False\), got use_distributed_sampler=True"):
        dm.train_dataloader()
    # the same strategy without the injection is accepted
    dm.trainer = L.Trainer(
        accelerator="cpu", strategy="ddp", devices=1, logger=False, default_root_dir=tmp_path,
        use_distributed_sampler=False,
    )
    assert len(dm.train_dataloader()) == 5


def test_bad_input_is_one_line(store):
    with pytest.raises(ParameterError, match=r"takes no batch_size, shuffle; got batch_size=8, shuffle=True"):
        ScheduleDataModule(store, dataset(), batch_size=8, shuffle=True)
    with pytest.raises(ParameterError, match="dataset has 31 samples but the schedule was built on the 30"):
        ScheduleDataModule(store, TensorDataset(torch.zeros(N + 1)))
    with pytest.raises(ParameterError, match="uneven"):
        ScheduleDataModule(store, dataset(), uneven="wrap")
    with pytest.raises(ParameterError, match="got no trainer attached"):
        ScheduleDataModule(store, dataset()).train_dataloader()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SCHEDGEN_SLOW_TESTS") != "1", reason="a real 2-process DDP run takes ~20 s: SCHEDGEN_SLOW_TESTS=1"
)
def test_ddp_two_processes(store, tmp_path):
    # A real 2-process run (ddp_spawn, gloo on CPU): each rank reports what its model saw.
    out = str(tmp_path / "seen")
    t = trainer(tmp_path, max_epochs=2, strategy="ddp_spawn", devices=2)
    t.fit(Recorder(out), datamodule=ScheduleDataModule(store, dataset()))
    seen = []
    for rank in range(2):
        with open(f"{out}.{rank}.json") as f:
            seen.append(json.load(f))
    expected = schedule_batches(2)
    assert [len(s) for s in seen] == [len(expected)] * 2
    for b, batch in enumerate(expected):
        assert [s[b] for s in seen] == oracle_parts(batch, 2, "split")


def test_the_package_imports_no_framework(tmp_path):
    # As tests/test_packaging.py: a fresh interpreter outside the repository.
    from test_packaging import _run

    code = """
import json, sys
import schedgen.integrations
heavy = ("lightning", "pytorch_lightning", "transformers", "accelerate", "torchdata", "torch")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""
    assert json.loads(_run(code, tmp_path).stdout) == []
