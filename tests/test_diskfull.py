"""Disk full and read-only output: one clear error, nothing under the final name, no debris.

Running as root, ``chmod`` cannot make a directory read-only, so the read-only cases
are simulated by making the low-level calls fail with the errno the kernel would
give (``EROFS``, ``EACCES``); the real ``chmod`` test runs when the OS enforces it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

import pytest
import zarr.storage._local as zarr_local
from typer.testing import CliRunner

import schedgen.locks as locks
from schedgen.build import BuildConfig, build, checkpoint_path
from schedgen.errors import SchedgenError, StoreError
from schedgen.store import Schedule, read_schedule, write_schedule
from toys import toy_schedule

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def small_schedule(n=40, k=6, epochs=2) -> Schedule:
    return toy_schedule(n=n, k=k, epochs=epochs, seed=1)


def _debris(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _count_puts() -> int:
    """How many key writes a normal write of ``small_schedule()`` makes."""
    import tempfile

    calls = []
    orig = zarr_local._put

    def counting(path, value, exclusive=False):
        calls.append(path)
        return orig(path, value, exclusive=exclusive)

    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as d:
        mp.setattr(zarr_local, "_put", counting)
        write_schedule(small_schedule(), Path(d) / "s.zarr")
    return len(calls)


N_PUTS = _count_puts()


def _fail_at(monkeypatch, n: int, exc: OSError) -> list[int]:
    """Make zarr's n-th key write (1-based) raise ``exc``; returns the call counter."""
    orig = zarr_local._put
    seen = [0]

    def failing(path, value, exclusive=False):
        seen[0] += 1
        if seen[0] >= n:
            raise exc
        return orig(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr_local, "_put", failing)
    return seen


# ----------------------------------------------------------------- disk full


@pytest.mark.parametrize("n", sorted({1, 2, N_PUTS // 3, N_PUTS // 2, N_PUTS - 1, N_PUTS}))
def test_disk_full_mid_write_leaves_nothing(tmp_path, monkeypatch, n):
    """ENOSPC at the n-th key write: a one-line StoreError, no store, no temporary."""
    final = tmp_path / "s.zarr"
    seen = _fail_at(monkeypatch, n, ENOSPC)
    with pytest.raises(StoreError) as info:
        write_schedule(small_schedule(), final)
    msg = str(info.value)
    assert seen[0] >= n  # it failed at the n-th write (zarr may have started a few more at once)
    assert msg == f"cannot write the schedule to {final}: No space left on device"
    assert not final.exists()
    assert _debris(tmp_path) == []


@pytest.mark.parametrize("n", range(1, N_PUTS + 1))
def test_disk_full_while_other_writes_are_in_flight_leaves_nothing(tmp_path, monkeypatch, n):
    """zarr writes several keys at once: when one fails, the others go on in zarr's IO
    thread. Slowed down here (as on a loaded machine), one of them would land after the
    temporary folder was removed and recreate it; the writer waits for them first."""
    import time

    orig = zarr_local._put
    seen = [0]

    def failing_while_others_are_slow(path, value, exclusive=False):
        seen[0] += 1
        if seen[0] == n:
            raise ENOSPC
        time.sleep(0.01)
        return orig(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr_local, "_put", failing_while_others_are_slow)
    with pytest.raises(StoreError):
        write_schedule(small_schedule(), tmp_path / "s.zarr")
    time.sleep(0.05)  # a late write would have landed by now
    assert _debris(tmp_path) == []


def test_disk_full_inside_a_file_write(tmp_path, monkeypatch):
    """ENOSPC after half of a chunk's bytes reached the disk (a short write)."""
    final = tmp_path / "s.zarr"
    orig = zarr_local._atomic_write
    count = [0]

    @contextlib.contextmanager
    def half_then_full(path, mode, exclusive=False):
        with orig(path, mode, exclusive=exclusive) as f:
            count[0] += 1
            if "/c/" not in str(path):
                yield f
                return

            class Short:
                def write(self, data):
                    view = memoryview(data).cast("B")
                    f.write(view[: len(view) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")

            yield Short()

    monkeypatch.setattr(zarr_local, "_atomic_write", half_then_full)
    with pytest.raises(StoreError, match="No space left on device"):
        write_schedule(small_schedule(), final)
    assert count[0] >= 2
    assert not final.exists() and _debris(tmp_path) == []


def test_disk_full_during_build(tmp_path, monkeypatch):
    """Through build(): the error names the store; no store, no temporary, no lock left."""
    _fail_at(monkeypatch, N_PUTS // 2, ENOSPC)
    with pytest.raises(StoreError, match=r"cannot write the schedule to .*digits-train-random-k50-.*\.zarr: No space left on device"):
        build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    assert _debris(tmp_path) == []
    monkeypatch.undo()
    r = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))  # space is back
    assert not r.cache_hit and read_schedule(r.path).digest == r.digest
    assert _debris(tmp_path) == [r.path.name]


def test_disk_full_when_replacing_keeps_the_old_store(tmp_path, monkeypatch):
    old = small_schedule()
    final = write_schedule(old, tmp_path / "s.zarr")
    _fail_at(monkeypatch, 3, ENOSPC)
    with pytest.raises(StoreError, match="No space left on device"):
        write_schedule(small_schedule(n=41), final, overwrite=True)
    assert read_schedule(final).digest == old.digest
    assert _debris(tmp_path) == ["s.zarr"]


# ----------------------------------------------------------------- read-only output


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_read_only_store_write(tmp_path, monkeypatch, code, reason):
    final = tmp_path / "s.zarr"
    _fail_at(monkeypatch, 1, OSError(code, reason))
    with pytest.raises(StoreError, match=rf"^cannot write the schedule to {final}: {reason}$"):
        write_schedule(small_schedule(), final)
    assert _debris(tmp_path) == []


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
                                          (errno.EXDEV, "Invalid cross-device link")])
def test_final_rename_fails(tmp_path, monkeypatch, code, reason):
    """The last step, the rename into place, fails: the temporary is removed too."""
    final = tmp_path / "s.zarr"
    real = os.replace

    def failing(src, dst, *a, **kw):
        if Path(dst) == final:
            raise OSError(code, reason)
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(StoreError, match=rf"cannot move the finished store to {final}: {reason}"):
        write_schedule(small_schedule(), final)
    assert _debris(tmp_path) == []


def _read_only_lock(monkeypatch, code=errno.EROFS, reason="Read-only file system"):
    """The output directory refuses new files: creating the lock file fails first."""
    real = os.open

    def guarded(path, flags, *a, **kw):
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            raise OSError(code, reason, str(path))
        return real(path, flags, *a, **kw)

    monkeypatch.setattr(locks.os, "open", guarded)


def test_build_into_read_only_directory(tmp_path, monkeypatch):
    _read_only_lock(monkeypatch)
    with pytest.raises(StoreError) as info:
        build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot write the schedule to {tmp_path}/digits-train-random-k50-")
    assert msg.endswith(".zarr.lock: Read-only file system")
    assert _debris(tmp_path) == []


def test_read_only_directory_still_serves_its_cache(tmp_path, monkeypatch):
    """A finished store in a read-only directory is a cache hit: no lock is needed to read."""
    first = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    _read_only_lock(monkeypatch)
    again = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    assert again.cache_hit and again.digest == first.digest
    # even with a stale checkpoint beside it, which only a writable folder lets us remove
    checkpoint_path(first.path).parent.mkdir()
    (checkpoint_path(first.path)).write_bytes(b"left by a killed build")
    again = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    assert again.cache_hit and again.digest == first.digest


def test_damaged_cache_in_read_only_directory_reports_the_damage(tmp_path, monkeypatch):
    first = build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))
    chunk = next(p for p in (first.path / "indices" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:5])
    _read_only_lock(monkeypatch)
    with pytest.raises(StoreError, match=r"the cached store is damaged; pass --force to rebuild it\)$"):
        build(BuildConfig(dataset="digits", k=50, method="random", out_dir=tmp_path))


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_build_into_chmod_read_only_directory(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    try:
        if os.access(out, os.W_OK):
            pytest.skip("this user (root?) can write to a 0o500 directory; covered by the simulated tests")
        with pytest.raises(StoreError, match=r"cannot write the schedule to .*: .*Permission denied"):
            build(BuildConfig(dataset="digits", k=50, method="random", out_dir=out))
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o700)


# ----------------------------------------------------------------- through the CLI


def _cli(tmp_path):
    from schedgen.cli import app

    return CliRunner().invoke(app, ["build", "--out-dir", str(tmp_path), "--k", "50", "--method", "random", "-q"])


def _one_error_line(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_cli_read_only_output(tmp_path, monkeypatch):
    _read_only_lock(monkeypatch)
    line = _one_error_line(_cli(tmp_path))
    assert f"cannot write the schedule to {tmp_path}/digits-train-random-k50-" in line
    assert line.endswith("Read-only file system")
    assert _debris(tmp_path) == []


def test_cli_disk_full(tmp_path, monkeypatch):
    _fail_at(monkeypatch, N_PUTS // 2, ENOSPC)
    line = _one_error_line(_cli(tmp_path))
    assert line.startswith(f"error: cannot write the schedule to {tmp_path}/digits-train-random-k50-")
    assert line.endswith(".zarr: No space left on device")
    assert _debris(tmp_path) == []


def test_errors_are_schedgen_errors():
    assert issubclass(StoreError, SchedgenError) and issubclass(locks.LockTimeoutError, StoreError)
