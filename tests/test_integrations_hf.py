"""schedgen.integrations.hf with the real Hugging Face Trainer on CPU: a tiny model sees the
schedule's batches in order, a run stopped mid-epoch resumes them exactly, ranks (simulated)
get their documented parts without accelerate's round-robin dealing, and the configurations
that would break it are refused."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from accelerate import Accelerator  # noqa: E402
from test_elastic import oracle_parts, ragged_schedule  # noqa: E402
from transformers import TrainerCallback, TrainingArguments  # noqa: E402

from schedgen.errors import ParameterError  # noqa: E402
from schedgen.integrations.hf import ScheduleTrainer  # noqa: E402
from schedgen.store import write_schedule  # noqa: E402

N = 30
# Three epochs of 5 ragged batches each (the Trainer needs as many batches in every epoch).
SIZES = [[7, 4, 7, 4, 8], [4, 7, 7, 8, 4], [8, 7, 4, 4, 7]]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_schedule(ragged_schedule(N, SIZES, seed=5), tmp_path_factory.mktemp("hf") / "s.zarr")


def schedule_batches(n_epochs: int) -> list[list[int]]:
    """The oracle: the schedule's global batches, epoch e playing schedule epoch e % 3."""
    s = ragged_schedule(N, SIZES, seed=5)
    out = []
    for e in range(n_epochs):
        b0, b1 = s.epoch_offsets[e % 3], s.epoch_offsets[e % 3 + 1]
        out += [s.indices[s.batch_offsets[b] : s.batch_offsets[b + 1]].tolist() for b in range(b0, b1)]
    return out


class Rows(torch.utils.data.Dataset):
    """N rows as dicts: a feature and the row's own index."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.tensor([i / N], dtype=torch.float32), "idx": i}


class Recorder(torch.nn.Module):
    """A one-weight model that records the sample indices of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def forward(self, x, idx):
        if self.training:
            self.seen.append(idx.tolist())
        return {"loss": self.w(x).pow(2).mean()}


class StopAt(TrainerCallback):
    """Save and stop after the given optimizer step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


def arguments(tmp_path, **kw) -> TrainingArguments:
    kw.setdefault("num_train_epochs", 4)
    return TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,  # no effect: the schedule sizes the batches
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        learning_rate=0.01,
        **kw,
    )


def test_one_process_sees_the_schedule_in_order(store, tmp_path):
    model = Recorder()
    ScheduleTrainer(model=model, args=arguments(tmp_path), train_dataset=Rows(), schedule=store).train()
    # 4 epochs of a 3-epoch schedule: the 4th replays schedule epoch 0
    assert model.seen == schedule_batches(4)


@pytest.mark.parametrize(("step", "accumulate"), [(2, 1), (7, 1), (5, 1), (4, 2)])
def test_resume_mid_epoch_sees_the_uninterrupted_batches(store, tmp_path, step, accumulate):
    # step 7: batch 2 of epoch 1; step 5: the end of epoch 0; (4, 2): two batches an optimizer step,
    # 3 steps an epoch (2 + 2 + 1 batches), so step 4 is one step into epoch 1
    first = Recorder()
    ScheduleTrainer(
        model=first, args=arguments(tmp_path, gradient_accumulation_steps=accumulate), train_dataset=Rows(),
        schedule=store, callbacks=[StopAt(step)],
    ).train()
    assert first.seen == schedule_batches(4)[: len(first.seen)]

    second = Recorder()
    ScheduleTrainer(
        model=second, args=arguments(tmp_path, gradient_accumulation_steps=accumulate), train_dataset=Rows(),
        schedule=store,
    ).train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{step}"))
    assert first.seen + second.seen == schedule_batches(4)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_their_parts_in_order(store, tmp_path, world_size, monkeypatch):
    # Accelerate's state simulated for world_size processes (the Trainer's own prepare runs and
    # wraps the sampler in a BatchSamplerShard); the loader is iterated directly, no process group.
    seen = []
    for rank in range(world_size):
        trainer = ScheduleTrainer(
            model=Recorder(), args=arguments(tmp_path), train_dataset=Rows(), schedule=store, uneven="drop"
        )
        monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: world_size))
        monkeypatch.setattr(Accelerator, "process_index", property(lambda self, r=rank: r))
        loader = trainer.get_train_dataloader()
        assert type(loader.batch_sampler).__name__ == "BatchSamplerShard"  # what the simulation must reach
        seen.append([b["idx"].tolist() for e in range(2) for b in (loader.set_epoch(e), loader)[1]])
        monkeypatch.undo()
    for b, batch in enumerate(schedule_batches(2)):
        assert [s[b] for s in seen] == oracle_parts(batch, world_size, "drop")


def test_ranks_resume_mid_epoch(store, tmp_path, monkeypatch):
    # A resumed epoch on 2 (simulated) processes: what Trainer._run_epoch (transformers 5) does to the
    # prepared loader — accelerate's skip_first_batches, then set_epoch on the loader and on
    # loader.batch_sampler.batch_sampler — must give each rank its parts of the batches after the skip.
    from accelerate import skip_first_batches

    epoch, skip = 1, 2
    for rank in range(2):
        trainer = ScheduleTrainer(model=Recorder(), args=arguments(tmp_path), train_dataset=Rows(), schedule=store)
        monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
        monkeypatch.setattr(Accelerator, "process_index", property(lambda self, r=rank: r))
        loader = skip_first_batches(trainer.get_train_dataloader(), skip)
        loader.set_epoch(epoch)
        inner = getattr(loader.batch_sampler, "batch_sampler", None)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)
        seen = [b["idx"].tolist() for b in loader]
        monkeypatch.undo()
        expected = schedule_batches(2)[5 + skip :]
        assert seen == [oracle_parts(batch, 2, "split")[rank] for batch in expected]


def test_bad_input_is_one_line(store, tmp_path, monkeypatch):
    def make(args=None, **kw):
        kw.setdefault("train_dataset", Rows())
        return ScheduleTrainer(model=Recorder(), args=args or arguments(tmp_path), schedule=store, **kw)

    with pytest.raises(ParameterError, match="pass train_dataset=, got None"):
        make(train_dataset=None)
    with pytest.raises(ParameterError, match="uneven"):
        make(uneven="wrap")
    with pytest.raises(ParameterError, match="pass auto_find_batch_size=False, got True"):
        make(arguments(tmp_path, auto_find_batch_size=True))
    for name in ("split_batches", "dispatch_batches"):
        with pytest.raises(ParameterError, match=f"accelerate's {name} must be off .*got {name}=True"):
            make(arguments(tmp_path, accelerator_config={name: True}))
    # transformers 5 has no TrainingArguments switch for it; an Accelerator built with it on:
    monkeypatch.setattr(Accelerator, "use_stateful_dataloader", property(lambda self: True))
    with pytest.raises(ParameterError, match="accelerate's use_stateful_dataloader must be off"):
        make()


def test_refuses_epochs_of_different_batch_counts(tmp_path):
    ragged = write_schedule(ragged_schedule(N, [[10, 10, 10], [15, 15]]), tmp_path / "r.zarr")
    with pytest.raises(ParameterError, match=r"as many batches; got epochs of \[2, 3\] batches"):
        ScheduleTrainer(model=Recorder(), args=arguments(tmp_path), train_dataset=Rows(), schedule=ragged)
