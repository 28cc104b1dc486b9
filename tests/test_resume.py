"""Resumable builds: a build interrupted at any point (an exception, or SIGKILL of a real
build process) continues from its checkpoint to the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from schedgen.build import BuildConfig, build, checkpoint_path
from schedgen.checkpoint import CHECKPOINT_SECONDS_ENV, Checkpoint
from schedgen.data import load_dataset
from schedgen.methods.learn2mix import learn2mix_schedule


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


# --------------------------------------------------------------------------- whole builds, SIGKILLed

_KILLABLE = textwrap.dedent(
    """
    import json, os, signal, sys
    from schedgen.build import BuildConfig, build

    out, method, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    extra = {"epochs": 3, "mixing_rate": 0.5} if method == "learn2mix" else {}

    def progress(done, total):
        print(f"progress {done}", flush=True)
        if done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a real crash

    r = build(BuildConfig(dataset="digits", k=50, method=method, out_dir=out, **extra), progress=progress)
    print(json.dumps(r.to_json()), flush=True)
    """
)


def _run_build(out, method: str, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, CHECKPOINT_SECONDS_ENV: "0"}  # a checkpoint after every batch
    return subprocess.run(
        [sys.executable, "-c", _KILLABLE, str(out), method, str(kill_at)],
        capture_output=True, text=True, env=env, timeout=300,
    )


def _progress(stdout: str) -> list[int]:
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("progress ")]


@pytest.mark.parametrize(
    "method, kill_points",
    [("mmd", [1, 13, 28]), ("learn2mix", [1, 29, 58, 70])],  # 29 batches an epoch; 29, 58: epoch ends
)
def test_sigkilled_build_resumes_to_the_same_digest(tmp_path, method, kill_points):
    extra = {"epochs": 3, "mixing_rate": 0.5} if method == "learn2mix" else {}
    reference = build(BuildConfig(dataset="digits", k=50, method=method, out_dir=tmp_path / "ref", **extra))
    out = tmp_path / "out"
    for kill_at in kill_points:
        killed = _run_build(out, method, kill_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert _progress(killed.stdout)[-1] == kill_at
        assert not list(out.glob("*.zarr")), "a killed build left a store under a final name"
        partial = checkpoint_path(out / reference.path.name)
        assert partial.is_file(), "the killed build left no checkpoint"
        resumed = _run_build(out, method, kill_at=-1)
        assert resumed.returncode == 0, resumed.stderr
        seen = _progress(resumed.stdout)
        # learn2mix reports an epoch's last batch before it evaluates the epoch's losses;
        # its checkpoint after that batch is the one taken after the evaluation.
        expected = kill_at - 1 if method == "learn2mix" and kill_at % 29 == 0 else kill_at
        assert seen[0] == expected, f"the rerun started at batch {seen[0]}, not where the kill left it ({expected})"
        result = json.loads(resumed.stdout.splitlines()[-1])
        assert result["cache_hit"] is False
        assert result["digest"] == reference.digest
        assert not partial.exists() and not partial.parent.exists(), "the checkpoint outlived the store"
        shutil.rmtree(out / reference.path.name)  # next kill point: build again from nothing


def test_force_ignores_a_checkpoint(tmp_path):
    """--force recomputes everything: a checkpoint left by a killed build is not used."""
    killed = _run_build(tmp_path, "mmd", 10)
    assert killed.returncode == -signal.SIGKILL
    seen = []
    r = build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path, force=True), progress=lambda d, t: seen.append(d))
    assert seen[0] == 0
    assert r.digest == build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path / "ref")).digest


def test_mmd_checkpoint_that_does_not_fit_is_ignored():
    from schedgen.methods._mmd_build import load_state, save_state
    from schedgen.methods.selection import MMDState

    st = MMDState.start(10)
    st.batches, st.Q = [np.array([3, 1])], np.array([0, 2, 4, 5, 6, 7, 8, 9])
    st.sP = st.negP = np.zeros(8)
    st.mmd2 = [0.5]
    saved = save_state(st)
    back = load_state(saved, 10, 2)
    np.testing.assert_array_equal(back.Q, st.Q)
    np.testing.assert_array_equal(back.batches[0], [3, 1])
    assert load_state(saved, 10, 3) is None  # another k
    assert load_state(saved, 11, 2) is None  # another N
    assert load_state({**saved, "batches": np.array([3, 3])}, 10, 2) is None  # a sample twice
    assert load_state({**saved, "batches": np.array([3, 10])}, 10, 2) is None  # out of range
    assert load_state({k: v for k, v in saved.items() if k != "sP"}, 10, 2) is None
    assert load_state(saved, 10, 2, device="cuda") is None  # another device: other last bits
    assert load_state(save_state(st, "cuda"), 10, 2, device="cuda") is not None


def test_checkpoint_left_beside_a_finished_store_is_removed(tmp_path):
    """A build killed after writing its store but before removing its checkpoint: the
    next build returns the store and removes the checkpoint (and a killed save's temporary)."""
    r = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    ck = Checkpoint(checkpoint_path(r.path), key="whatever", every=0.0)
    ck.save({"x": np.arange(3)})
    stale = ck.path.parent / f".{ck.path.name}.123-abcd1234.tmp"
    stale.write_bytes(b"half a save")
    again = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    assert again.cache_hit and again.digest == r.digest
    assert not ck.path.parent.exists()


def test_checkpoint_of_another_method_revision_is_ignored(tmp_path, monkeypatch):
    """A checkpoint is keyed by the cache key, which carries the method's revision: a
    schedgen whose mmd method makes other bytes (another revision) does not continue
    from it, even where it finds it (here the store's name is held fixed, so the new
    build looks at the very checkpoint the killed one left)."""
    import schedgen.build as build_mod
    from schedgen.methods import METHODS

    killed = _run_build(tmp_path, "mmd", 10)
    assert killed.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".*.partial")
    name = left.name[1 : -len(".partial")]
    monkeypatch.setattr(build_mod, "store_name", lambda *a, **kw: name)
    monkeypatch.setattr(METHODS["mmd"], "revision", METHODS["mmd"].revision + 1)
    seen = []
    r = build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path), progress=lambda d, t: seen.append(d))
    assert checkpoint_path(r.path).parent == left  # it did look there
    assert seen[0] == 0, f"continued at batch {seen[0]} from another revision's checkpoint"


def test_ctrl_c_keeps_the_work_done(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in an MMD build saves a checkpoint of the last whole step
    at once, even between periodic saves; the rerun continues there, to the same digest."""
    monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, "3600")  # no periodic save in this test
    cfg = dict(dataset="digits", k=50, solver="lp")
    reference = build(BuildConfig(**cfg, out_dir=tmp_path / "ref"))

    def ctrl_c(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(BuildConfig(**cfg, out_dir=tmp_path / "out"), progress=ctrl_c)
    assert not list((tmp_path / "out").glob("*.zarr"))
    assert checkpoint_path(tmp_path / "out" / reference.path.name).is_file()
    seen = []
    resumed = build(BuildConfig(**cfg, out_dir=tmp_path / "out"), progress=lambda d, t: seen.append(d))
    assert seen[0] == 5, f"the rerun started at batch {seen[0]}, not at 5"
    assert resumed.digest == reference.digest


@pytest.mark.parametrize("damage", ["missing key", "wrong shape", "epoch out of range"])
def test_learn2mix_checkpoint_that_does_not_fit_is_ignored(tmp_path, digits, damage):
    """A learn2mix checkpoint missing a key or with other shapes is not this run's
    state: the run starts afresh (before: a KeyError traceback, or wrong arrays)."""
    X, y = digits
    ck = Checkpoint(tmp_path / "c.npz", key="k1", every=0.0)

    def stopper(done, total):
        if done == 40:
            raise Stop

    with pytest.raises(Stop):
        _l2m(X, y, checkpoint=ck, progress=stopper)
    saved = ck.load()
    if damage == "missing key":
        del saved["alpha"]
    elif damage == "wrong shape":
        saved["b"] = np.zeros(3)
    else:
        saved["epoch"] = np.int64(99)
    ck.save(saved)
    seen = []
    resumed = _l2m(X, y, checkpoint=Checkpoint(tmp_path / "c.npz", key="k1"), progress=lambda d, t: seen.append(d))
    assert seen[0] == 0
    assert resumed.indices.tobytes() == _l2m(X, y).indices.tobytes()


# --------------------------------------------------------------------------- dpp: draws checkpointed

_KILLABLE_DPP = textwrap.dedent(
    """
    import json, os, signal, sys
    from schedgen.build import BuildConfig, build

    out, cfg, kill_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])

    def progress(done, total):
        print(f"progress {done}", flush=True)
        if done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    r = build(BuildConfig(out_dir=out, **cfg), progress=progress)
    print(json.dumps(r.to_json()), flush=True)
    """
)


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """300 samples of digits: k = 20 gives 15 draws an epoch, and eigh of 300 x 300 is instant."""
    d = load_dataset("digits")
    path = tmp_path_factory.mktemp("dpp") / "small.npz"
    np.savez(path, X=d.X[:300], y=d.y[:300])
    return f"npz:{path}"


def _dpp_cfg(dataset, **extra) -> dict:
    return dict(dataset=dataset, k=20, method="dpp", epochs=2, **extra)


def _run_dpp(out, cfg: dict, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, CHECKPOINT_SECONDS_ENV: "0"}  # a checkpoint after every draw
    return subprocess.run([sys.executable, "-c", _KILLABLE_DPP, str(out), json.dumps(cfg), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("extra, kill_points", [
    ({}, [15, 22]),  # 15 draws an epoch: 15 ends the first epoch, 22 is inside the second
    ({"approx": "nystrom:60"}, [9]),  # the dual sampler on a Nyström factor
])
def test_sigkilled_dpp_build_resumes_to_the_same_digest(tmp_path, small_npz, extra, kill_points):
    cfg = _dpp_cfg(small_npz, **extra)
    reference = build(BuildConfig(out_dir=tmp_path / "ref", **cfg))
    out = tmp_path / "out"
    for kill_at in kill_points:
        killed = _run_dpp(out, cfg, kill_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert _progress(killed.stdout)[-1] == kill_at
        assert not list(out.glob("*.zarr")), "a killed build left a store under a final name"
        partial = checkpoint_path(out / reference.path.name)
        assert partial.is_file(), "the killed build left no checkpoint"
        resumed = _run_dpp(out, cfg, kill_at=-1)
        assert resumed.returncode == 0, resumed.stderr
        seen = _progress(resumed.stdout)
        assert seen[0] == kill_at, f"the rerun started at draw {seen[0]}, not where the kill left it ({kill_at})"
        result = json.loads(resumed.stdout.splitlines()[-1])
        assert result["cache_hit"] is False and result["digest"] == reference.digest
        assert not partial.exists() and not partial.parent.exists(), "the checkpoint outlived the store"
        shutil.rmtree(out / reference.path.name)


@pytest.mark.parametrize("stop_at", [1, 14, 15, 16, 29])
def test_dpp_interrupted_anywhere_resumes_to_the_same_bytes(tmp_path, small_npz, stop_at, monkeypatch):
    """In process: an exception after draw ``stop_at`` (epoch ends at 15 and 30), then a rerun."""
    monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, "0")
    cfg = _dpp_cfg(small_npz)
    reference = build(BuildConfig(out_dir=tmp_path / "ref", **cfg))

    def stopper(done, total):
        if done == stop_at:
            raise Stop

    with pytest.raises(Stop):
        build(BuildConfig(out_dir=tmp_path / "out", **cfg), progress=stopper)
    seen = []
    r = build(BuildConfig(out_dir=tmp_path / "out", **cfg), progress=lambda d, t: seen.append(d))
    assert seen[0] == stop_at and r.digest == reference.digest


def test_dpp_checkpoint_that_does_not_fit_is_ignored(tmp_path, small_npz):
    """A dpp checkpoint of another shape (or with a key missing) is not this run's: start afresh."""
    import schedgen.build as build_mod
    from schedgen.methods import get_method

    cfg = _dpp_cfg(small_npz)
    reference = build(BuildConfig(out_dir=tmp_path / "ref", **cfg))
    config = BuildConfig(out_dir=tmp_path / "out", **cfg)
    _, key, path = build_mod._locate(config, get_method("dpp"), load_dataset(small_npz), tmp_path / "out")
    n = 300
    good = {"batch": np.int64(3), "indices": np.zeros(60, np.int64), "mmd2": np.zeros(3), "seen": np.zeros(n, bool),
            "sA": np.zeros(n), "S_AA": np.float64(0)}
    Checkpoint(checkpoint_path(path), key=key).save(good)
    seen = []
    r = build(config, progress=lambda d, t: seen.append(d))
    assert seen[0] == 3  # the control: this checkpoint is taken (its arrays are not a real run's, hence no digest check)
    shutil.rmtree(r.path)
    for bad in ({**good, "indices": np.zeros(40, np.int64)}, {**good, "sA": np.zeros(5)},
                {**good, "batch": np.int64(30)}, {k: v for k, v in good.items() if k != "seen"},
                {**good, "indices": np.full(60, n, np.int64)}):
        Checkpoint(checkpoint_path(path), key=key).save(bad)
        seen = []
        r = build(config, progress=lambda d, t: seen.append(d))
        assert seen[0] == 0 and r.digest == reference.digest
        shutil.rmtree(r.path)
