"""Resumable builds: a build interrupted at any point continues from its checkpoint to the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from schedgen.checkpoint import Checkpoint
from schedgen.data import load_dataset
from schedgen.learn2mix import learn2mix_schedule


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return (d.X / 16.0).astype(np.float32), d.y


def _l2m(X, y, **kw):
    return learn2mix_schedule(X, y, 50, epochs=4, mixing_rate=0.5, seed=3, **kw)


@pytest.mark.parametrize("stop_at", [1, 28, 29, 30, 57, 100, 115])
def test_learn2mix_resumes_to_the_same_bytes(tmp_path, digits, stop_at):
    X, y = digits
    full = _l2m(X, y)
    ck = Checkpoint(tmp_path / "c.npz", key="k1", every=0.0)

    def stopper(done, total):
        if done == stop_at:
            raise Stop

    with pytest.raises(Stop):
        _l2m(X, y, checkpoint=ck, progress=stopper)
    assert ck.load() is not None
    seen = []
    resumed = _l2m(X, y, checkpoint=Checkpoint(tmp_path / "c.npz", key="k1"), progress=lambda d, t: seen.append(d))
    assert seen[0] >= stop_at - 1  # it continued, it did not start over
    for name in ("indices", "batch_offsets", "epoch_offsets", "class_proportions", "class_losses"):
        assert getattr(resumed, name).tobytes() == getattr(full, name).tobytes(), name


def test_checkpoint_with_another_key_is_ignored(tmp_path):
    Checkpoint(tmp_path / "c.npz", key="a").save({"x": np.arange(3)})
    assert Checkpoint(tmp_path / "c.npz", key="b").load() is None
    np.testing.assert_array_equal(Checkpoint(tmp_path / "c.npz", key="a").load()["x"], np.arange(3))


def test_truncated_checkpoint_is_ignored(tmp_path):
    p = tmp_path / "c.npz"
    Checkpoint(p, key="a").save({"x": np.arange(1000)})
    p.write_bytes(p.read_bytes()[:100])
    assert Checkpoint(p, key="a").load() is None
