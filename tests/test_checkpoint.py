"""A checkpoint that cannot be saved warns once per build, names the path and the
reason, keeps the previous checkpoint and never fails the build.

Disk full and read-only folders are simulated by making the checkpoint module's own
``open``/``os.replace`` fail with the errno the kernel would give (root ignores
``chmod``)."""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest

import schedgen.checkpoint as checkpoint
from schedgen.checkpoint import CHECKPOINT_SECONDS_ENV, Checkpoint
from schedgen.errors import SchedgenWarning


def _enospc_open(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _saves(ck: Checkpoint, times: int) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # so that a second warning would show
        for i in range(times):
            ck.save({"step": np.array(i)})
    return [w for w in seen if issubclass(w.category, SchedgenWarning)]


def test_disk_full_warns_once_with_path_and_reason(tmp_path, monkeypatch):
    ck = Checkpoint(tmp_path / "part" / "c.npz", key="k", every=0.0)
    ck.save({"step": np.array(-1)})  # a good checkpoint, then the disk fills up
    monkeypatch.setattr(checkpoint, "open", _enospc_open, raising=False)
    seen = _saves(ck, 5)
    assert len(seen) == 1
    msg = str(seen[0].message)
    assert str(ck.path) in msg and "No space left on device" in msg
    assert issubclass(seen[0].category, UserWarning)
    assert (ck.saves, ck.failures) == (1, 5)
    # the previous checkpoint is intact, and no temporary is left beside it
    assert int(ck.load()["step"]) == -1
    assert sorted(p.name for p in ck.path.parent.iterdir()) == ["c.npz"]


def test_failing_rename_warns_once_and_leaves_no_temporary(tmp_path, monkeypatch):
    ck = Checkpoint(tmp_path / "c.npz", key="k", every=0.0)

    def refuse(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(checkpoint.os, "replace", refuse)
    seen = _saves(ck, 3)
    assert len(seen) == 1 and "Read-only file system" in str(seen[0].message)
    assert list(tmp_path.iterdir()) == []
    assert ck.load() is None


def test_each_checkpoint_warns_once_and_recovers_silently(tmp_path, monkeypatch):
    """One warning per Checkpoint (per build), not one per process: a later build
    whose checkpoint fails warns again. A save that works again just works."""
    a = Checkpoint(tmp_path / "a.npz", key="k", every=0.0)
    b = Checkpoint(tmp_path / "b.npz", key="k", every=0.0)
    monkeypatch.setattr(checkpoint, "open", _enospc_open, raising=False)
    assert len(_saves(a, 2)) == 1
    assert len(_saves(b, 2)) == 1
    assert len(_saves(a, 2)) == 0
    monkeypatch.undo()
    assert _saves(a, 1) == []
    assert int(a.load()["step"]) == 0 and (a.saves, a.failures) == (1, 4)


def test_warn_callback_receives_the_message_instead(tmp_path, monkeypatch):
    got: list[str] = []
    ck = Checkpoint(tmp_path / "c.npz", key="k", every=0.0, warn=got.append)
    monkeypatch.setattr(checkpoint, "open", _enospc_open, raising=False)
    assert _saves(ck, 3) == []
    assert len(got) == 1 and str(ck.path) in got[0] and "No space left on device" in got[0]


def test_maybe_save_warns_once_too(tmp_path, monkeypatch):
    ck = Checkpoint(tmp_path / "c.npz", key="k", every=0.0)
    monkeypatch.setattr(checkpoint, "open", _enospc_open, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert all(ck.maybe_save(lambda: {"x": np.arange(3)}) for _ in range(4))
    assert [issubclass(w.category, SchedgenWarning) for w in seen] == [True]


@pytest.mark.parametrize("method", ["mmd", "learn2mix"])
def test_build_with_failing_checkpoints_completes_and_warns_once(tmp_path, monkeypatch, method):
    """Saving after every step onto a full disk: the store is written (the store's own
    writes are not affected), the digest is the one of a build that could save, and the
    user heard about the checkpoints once."""
    from schedgen.build import BuildConfig, build

    monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, "0")
    opts = dict(dataset="digits", k=50, method=method, **({"epochs": 2} if method == "learn2mix" else {}))
    ok = build(BuildConfig(out_dir=tmp_path / "ok", **opts))
    monkeypatch.setattr(checkpoint, "open", _enospc_open, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = build(BuildConfig(out_dir=tmp_path / "full", **opts))
    about = [w for w in seen if "checkpoint" in str(w.message)]
    assert len(about) == 1 and "No space left on device" in str(about[0].message)
    assert issubclass(about[0].category, UserWarning)
    assert r.cache_hit is False and r.digest == ok.digest
    assert os.path.isdir(r.path)
