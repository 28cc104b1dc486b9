"""Concurrent builds of one cache key: one computes, the others wait and reuse its store.

The cross-process tests start real Python processes that call ``build`` on digits
with the random method slowed down (so the two builds overlap for about a second)
and record every time the method actually runs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import schedgen.build as build_mod
from schedgen.build import BuildConfig, build
from schedgen.locks import LockTimeoutError, exclusive_lock, lock_path, read_owner
from schedgen.store import read_schedule

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")

#: Runs one build in a fresh process. Prints "ready" once imported and the data loaded,
#: waits for the go file, prints "building" when the (slowed) method starts, then the result.
_BUILDER = textwrap.dedent(
    """
    import json, os, sys, time
    import schedgen.build as b
    from schedgen.data import load_dataset

    out, marks, go, slow, peers = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    waiting = go + ".waiting"
    run = b.METHODS["random"].run
    announce = b._waiting_message

    def waiting_message(owner, lock):
        announce(owner, lock)
        with open(waiting, "a") as f:
            f.write(f"{os.getpid()}\\n")

    def slowed(cfg, ds, k, ctx):
        with open(marks, "a") as f:
            f.write(f"{os.getpid()}\\n")
        print("building", flush=True)
        # Hold the lock until every peer has said it waits for it (a loaded machine can
        # delay a peer past any fixed sleep; it would then find the store made, never wait).
        t0 = time.monotonic()
        while peers > 1 and time.monotonic() - t0 < 60:
            if os.path.exists(waiting):
                with open(waiting) as f:
                    if len(f.read().split()) >= peers - 1:
                        break
            time.sleep(0.01)
        time.sleep(slow)
        return run(cfg, ds, k, ctx)

    b.METHODS["random"].run = slowed
    b._waiting_message = waiting_message
    load_dataset("digits")
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.002)
    r = b.build(b.BuildConfig(dataset="digits", k=50, method="random", out_dir=out, lock_timeout=60))
    print(json.dumps(r.to_json()), flush=True)
    """
)


def _start(tmp_path: Path, slow: float, peers: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _BUILDER, str(tmp_path / "out"), str(tmp_path / "marks"), str(tmp_path / "go"), str(slow), str(peers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expect(proc: subprocess.Popen, line: str) -> None:
    got = proc.stdout.readline().strip()
    assert got == line, (got, proc.stderr.read() if proc.poll() is not None else "")


def _runs(tmp_path: Path) -> list[str]:
    marks = tmp_path / "marks"
    return marks.read_text().split() if marks.exists() else []


def test_two_processes_build_once(tmp_path):
    procs = [_start(tmp_path, slow=0.2, peers=2) for _ in range(2)]
    for p in procs:
        _expect(p, "ready")
    (tmp_path / "go").touch()  # both call build() now
    results, errs = [], []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
        errs.append(err)

    # the method ran once, in the process that did not get a cache hit
    assert len(_runs(tmp_path)) == 1
    assert sorted(r["cache_hit"] for r in results) == [False, True]
    builder = next(i for i, r in enumerate(results) if not r["cache_hit"])
    assert _runs(tmp_path) == [str(procs[builder].pid)]
    # the waiter said whom it was waiting for
    waiter_err = errs[1 - builder]
    assert "waiting for another build of the same schedule" in waiter_err
    assert f"pid {procs[builder].pid}" in waiter_err
    # one store, with the digest both report
    assert results[0]["path"] == results[1]["path"]
    assert results[0]["digest"] == results[1]["digest"] == read_schedule(results[0]["path"]).digest
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if p.name != ".cache"] == [Path(results[0]["path"]).name]


def test_lock_of_a_killed_build_does_not_block(tmp_path):
    """SIGKILL a build while it holds the lock: the next build takes over at once."""
    proc = _start(tmp_path, slow=60.0)
    _expect(proc, "ready")
    (tmp_path / "go").touch()
    _expect(proc, "building")  # the lock is held now
    out = tmp_path / "out"
    (lock,) = out.glob("*.lock")
    assert read_owner(lock).pid == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    assert lock.exists()  # the file outlives its holder; the flock did not

    # lock timeout 0: a lock still held by the dead build would raise at once
    r = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=out, lock_timeout=0))
    assert not r.cache_hit and read_schedule(r.path).digest == r.digest
    assert sorted(p.name for p in out.iterdir() if p.name != ".cache") == [r.path.name]


def test_orphaned_temporaries_of_dead_builds_are_removed(tmp_path):
    cfg = BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path)
    first = build(cfg)
    name = first.path.name
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".{name}.tmp-{dead.pid}-0123abcd"
    mine = tmp_path / f".{name}.tmp-{os.getpid()}-0123abcd"  # a live writer's: kept
    for d in (orphan, mine):
        d.mkdir()
        (d / "zarr.json").write_text("{}")
    build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path, force=True))
    assert not orphan.exists() and mine.exists()


def test_without_a_working_lock_temporaries_are_left_alone(tmp_path, monkeypatch):
    """On a filesystem without locking (NFS with nolock) another machine's live build may
    own a temporary whose pid means nothing here: it must not be deleted."""
    import schedgen.locks as locks

    def no_locking(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    first = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    foreign = tmp_path / f".{first.path.name}.tmp-{dead.pid}-0123abcd"
    foreign.mkdir()
    (foreign / "zarr.json").write_text("{}")
    monkeypatch.setattr(locks.fcntl, "flock", no_locking)
    r = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path, force=True))
    assert r.cache_hit is False and foreign.exists()


# ----------------------------------------------------------------- in one process


@pytest.fixture
def slow_random(monkeypatch):
    """The random method, slowed, counting its runs (threads share the counter)."""
    method = build_mod.METHODS["random"]
    run = method.run
    runs = []

    def slowed(cfg, ds, k, ctx):
        runs.append(threading.get_ident())
        time.sleep(0.4)
        return run(cfg, ds, k, ctx)

    monkeypatch.setattr(method, "run", slowed)
    return runs


def test_threads_build_once(tmp_path, slow_random):
    cfg = BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path)
    results, errors = [], []

    def one():
        try:
            results.append(build(cfg))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(slow_random) == 1
    assert sorted(r.cache_hit for r in results) == [False, True, True, True]
    assert len({r.digest for r in results}) == 1 and len({r.path for r in results}) == 1
    assert not lock_path(results[0].path).exists()


def test_waiter_times_out_with_a_clear_message(tmp_path, caplog):
    cfg = BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path, lock_timeout=0.3)
    # the store's name: from a build of the same key elsewhere
    store = tmp_path / build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path / "probe")).path.name
    raised = []

    def waiter():
        try:
            build(cfg)
        except BaseException as exc:
            raised.append(exc)

    with exclusive_lock(store):  # "another build" holds the lock
        with caplog.at_level(logging.WARNING, logger="schedgen.locks"):
            t = threading.Thread(target=waiter, daemon=True)
            t.start()
            t.join(10)
            assert not t.is_alive(), "the waiter ignored its timeout"
    (exc,) = raised
    assert isinstance(exc, LockTimeoutError)
    assert re.match(rf"timed out after \d+ s waiting for another build of {re.escape(str(store))} "
                    rf"\(pid {os.getpid()} on ", str(exc)), str(exc)
    assert "waiting for another build of the same schedule" in caplog.text
    assert not store.exists()
    assert build(cfg).cache_hit is False  # released: the next build proceeds


def test_a_failed_build_releases_the_lock(tmp_path, monkeypatch):
    def broken(cfg, ds, k, ctx):
        raise RuntimeError("method crashed")

    monkeypatch.setattr(build_mod.METHODS["random"], "run", broken)
    cfg = BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path, lock_timeout=0)
    with pytest.raises(RuntimeError):
        build(cfg)
    assert list(tmp_path.glob("*.lock")) == []
    monkeypatch.undo()
    assert build(cfg).cache_hit is False  # timeout 0: the lock must be free at once


def test_lock_excludes_under_contention(tmp_path):
    """Many threads taking and releasing (and deleting) the lock: never two holders at once."""
    target = tmp_path / "x.zarr"
    inside, overlaps, entries = [0], [], [0]
    guard = threading.Lock()

    def worker():
        for _ in range(40):
            with exclusive_lock(target, timeout=30):
                with guard:
                    inside[0] += 1
                    if inside[0] > 1:
                        overlaps.append(inside[0])
                    entries[0] += 1
                time.sleep(0.0005)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert entries[0] == 240 and overlaps == []
    assert not lock_path(target).exists()


def test_bad_lock_timeout_is_a_parameter_error(tmp_path):
    from schedgen.errors import ParameterError

    for bad in (-1, "soon", True, float("nan")):
        with pytest.raises(ParameterError, match="lock timeout must be a non-negative number of seconds"):
            build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path, lock_timeout=bad))


def test_lock_on_a_deleted_file_is_retried(tmp_path, monkeypatch):
    """The race the inode check closes: the holder deletes the lock file on release, just
    after a waiter opened it; the waiter's flock then succeeds on a file nobody else can
    see, while a newcomer creates and locks a fresh one. The waiter must retry instead."""
    import schedgen.locks as locks

    target = tmp_path / "x.zarr"
    real = locks._open_lock_file
    opened = []

    def racing(lock, tgt):
        fd = real(lock, tgt)
        opened.append(fd)
        if len(opened) == 1:
            os.unlink(lock)  # the previous holder released the lock and deleted its file
        return fd

    monkeypatch.setattr(locks, "_open_lock_file", racing)
    with exclusive_lock(target):
        assert len(opened) == 2  # retried on a fresh file
        assert lock_path(target).exists()
        monkeypatch.setattr(locks, "_open_lock_file", real)
        with pytest.raises(LockTimeoutError):  # a newcomer must wait: we hold the visible file
            with exclusive_lock(target, timeout=0.1):
                pass


def _wait_for(cond, timeout=30.0):
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    return cond()


def test_waiter_names_a_holder_that_writes_its_json_late(tmp_path, monkeypatch):
    """The holder writes its JSON just after taking the flock. A waiter arriving in that
    window finds an empty file: it must wait for the JSON before saying whom it waits for
    (this race made the two-process test above fail under load)."""
    import fcntl

    import schedgen.locks as locks

    monkeypatch.setattr(locks, "_OWNER_GRACE", 60.0)  # a loaded machine cannot outlast it
    target = tmp_path / "x.zarr"
    lock = lock_path(target)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, no JSON yet
    told = []

    def waiter():
        with exclusive_lock(target, timeout=10, on_wait=lambda owner, path: told.append(owner)):
            pass

    polls = []
    real_read = locks.read_owner
    monkeypatch.setattr(locks, "read_owner", lambda path: polls.append(1) or real_read(path))
    t = threading.Thread(target=waiter)
    t.start()
    assert _wait_for(lambda: len(polls) >= 3)  # the waiter has looked, and looked again ...
    assert told == []  # ... and said nothing: the holder has not said who it is
    os.pwrite(fd, json.dumps({"pid": 4242, "hostname": "h", "started": 1.0}).encode(), 0)
    assert _wait_for(lambda: told)
    assert [o.pid for o in told] == [4242]
    os.unlink(lock)
    os.close(fd)  # released
    t.join(10)
    assert not t.is_alive() and len(told) == 1


def test_waiter_gives_up_on_a_holder_that_never_writes_its_json(tmp_path, monkeypatch):
    import fcntl

    import schedgen.locks as locks

    monkeypatch.setattr(locks, "_OWNER_GRACE", 0.1)
    target = tmp_path / "x.zarr"
    fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    told = []
    with pytest.raises(LockTimeoutError, match="holder unknown"):
        with exclusive_lock(target, timeout=3.0, on_wait=lambda owner, path: told.append(owner)):
            pass
    os.close(fd)
    assert told == [None]
