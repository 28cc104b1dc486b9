"""Builds whose options multiply into more memory than there is are refused before
anything is allocated, locked or written, with one line saying how much they need and
how much is available (issue 10, item 2)."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schedgen.methods import RunContext
from schedgen.methods.random import RandomMethod
from schedgen import memory
from schedgen.build import BuildConfig, build, memory_needs
from schedgen.cli import app
from schedgen.data import load_dataset
from schedgen.errors import ParameterError

GB = 10**9


def _forbid_running(monkeypatch):
    """Fail the test if any method starts: the refusal must come first."""

    def boom(*a, **kw):
        raise AssertionError("the method ran: the build was not refused before allocating")

    from schedgen.methods import METHODS

    for method in METHODS.values():
        monkeypatch.setattr(method, "run", boom)


def _budget(monkeypatch, n_bytes):
    monkeypatch.setattr(memory, "available_memory", lambda: n_bytes)


# (options, budget, the error line after "error: ")
CASES = [
    (
        dict(method="learn2mix", batches_per_epoch=10_000_000),
        2 * GB,
        "--batches-per-epoch 10000000 with k=50 and 1 epoch needs 4.2 GB of memory "
        "(4.0 GB for the schedule's indices, 160.0 MB for the batch offsets); 2.0 GB is available",
    ),
    (
        dict(method="learn2mix", epochs=1_000_000),
        2 * GB,
        "--epochs 1000000 with k=50 and 29 batches an epoch needs 12.2 GB of memory "
        "(11.6 GB for the schedule's indices, 464.0 MB for the batch offsets, "
        "160.0 MB for the class proportions and losses per epoch); 2.0 GB is available",
    ),
    (
        dict(method="random", epochs=1_000_000),
        2 * GB,
        "--epochs 1000000 with N=1437 samples needs 12.0 GB of memory "
        "(11.5 GB for the schedule's indices, 464.0 MB for the batch offsets); 2.0 GB is available",
    ),
    (
        dict(method="learn2mix", groups="kmeans:1437"),
        10**7,
        "--groups kmeans:1437 with N=1437 samples of 64 features needs 36.1 MB of memory "
        "(33.0 MB for the k-means distances, 2.2 MB for the k-means centers, "
        "419.2 kB for the proxy's weights and losses, 367.9 kB for the features, 35.1 kB for the rest); "
        "10.0 MB is available",
    ),
    (
        dict(method="mmd", k=700, solver="lp"),
        10**7,
        "k=700 with --solver lp and N=1437 samples needs 38.9 MB of memory "
        "(31.4 MB for the LP's pair block, 5.9 MB for the batch's kernel block, "
        "1.3 MB for the kernel's working set, 402.4 kB for the rest); 10.0 MB is available",
    ),
    (
        dict(method="mmd", k=500, solver="greedy"),
        6 * 10**6,
        "k=500 with --solver greedy and N=1437 samples needs 10.4 MB of memory "
        "(5.7 MB for the solver's kernel columns, 3.0 MB for the batch's kernel block, "
        "1.3 MB for the kernel's working set, 367.9 kB for the features, 34.5 kB for the rest); "
        "6.0 MB is available",
    ),
]


@pytest.mark.parametrize("options, budget, message", CASES, ids=[m.split(" needs")[0] for _, _, m in CASES])
def test_refused_before_anything_is_allocated_or_written(tmp_path, monkeypatch, options, budget, message):
    out = tmp_path / "out"
    _budget(monkeypatch, budget)
    _forbid_running(monkeypatch)
    with pytest.raises(ParameterError) as info:
        build(BuildConfig(dataset="digits", out_dir=out, **options))
    assert str(info.value) == message
    assert not out.exists()  # no store, no lock, no partial checkpoint, no cache
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_one_error_line_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _budget(monkeypatch, 2 * GB)
    _forbid_running(monkeypatch)
    r = CliRunner().invoke(app, ["build", "--out-dir", str(out), "--method", "learn2mix",
                                 "--batches-per-epoch", "10000000"])
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert r.stderr.strip() == f"error: {CASES[0][2]}"
    assert "Traceback" not in r.stdout + r.stderr and not out.exists()


def test_a_build_that_fits_is_not_refused(tmp_path, monkeypatch):
    """The same options as a refused case, with the memory they need."""
    ds = load_dataset("digits")
    cfg = BuildConfig(dataset="digits", out_dir=tmp_path, method="learn2mix", batches_per_epoch=5000)
    need = sum(x.n_bytes for x in memory_needs(cfg, ds, 50))
    _budget(monkeypatch, need)
    r = build(cfg)
    assert not r.cache_hit and r.n_batches == 5000
    _budget(monkeypatch, need - 1)
    with pytest.raises(ParameterError, match=r"^--batches-per-epoch 5000 with k=50 and 1 epoch needs"):
        build(BuildConfig(dataset="digits", out_dir=tmp_path, method="learn2mix", batches_per_epoch=5000, seed=1))


def test_unknown_memory_refuses_nothing(tmp_path, monkeypatch):
    _budget(monkeypatch, None)
    assert not build(BuildConfig(dataset="digits", out_dir=tmp_path, method="random", k=100)).cache_hit


def test_a_cache_hit_is_not_priced(tmp_path, monkeypatch):
    first = build(BuildConfig(dataset="digits", out_dir=tmp_path, method="random", k=100, epochs=3))
    _budget(monkeypatch, 0)
    again = build(BuildConfig(dataset="digits", out_dir=tmp_path, method="random", k=100, epochs=3))
    assert again.cache_hit and again.digest == first.digest


@pytest.mark.parametrize(
    "options",
    [
        dict(method="random", k=50, epochs=40),
        dict(method="learn2mix", k=50, epochs=2, batches_per_epoch=600),
        dict(method="learn2mix", k=40, epochs=2, groups="kmeans:300"),
        dict(method="mmd", k=600, solver="greedy"),
        dict(method="mmd", k=500, solver="lp"),
    ],
    ids=lambda o: "-".join(f"{v}" for v in o.values()),
)
def test_needs_are_a_lower_bound_of_what_the_build_allocates(tmp_path, options):
    """memory_needs promises a lower bound of the peak: a refused build could not have run."""
    ds = load_dataset("digits")
    cfg = BuildConfig(dataset="digits", out_dir=tmp_path, **options)
    need = sum(x.n_bytes for x in memory_needs(cfg, ds, options["k"]))
    tracemalloc.start()
    try:
        build(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= need, (peak, need)


def test_available_memory_reads_meminfo():
    avail = memory.available_memory()
    assert isinstance(avail, int) and avail > 0
    if Path("/proc/meminfo").exists():
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        assert abs(avail - int(line.split()[1]) * 1024) < 2 * GB  # read a moment apart


@pytest.mark.parametrize(
    "n, text", [(0, "0 bytes"), (999, "999 bytes"), (1000, "1.0 kB"), (40 * GB, "40.0 GB"), (1.2e12, "1.2 TB")]
)
def test_format_bytes(n, text):
    assert memory.format_bytes(n) == text


def test_the_real_budget_refuses_100000000_batches_through_the_cli(tmp_path):
    """With the machine's real memory: refused at once. The child runs under a 8 GB
    address-space limit, so that a build that did try to allocate its 40 GB would fail
    with a MemoryError rather than eat the machine."""
    needed = 100_000_000 * 50 * 8 + 2 * (100_000_000 + 1) * 8
    avail = memory.available_memory()
    if avail is None or avail >= needed:
        pytest.skip(f"this machine has {avail} bytes available: the build would fit")
    out = tmp_path / "out"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    r = subprocess.run(
        [sys.executable, "-m", "schedgen.cli", "build", "--method", "learn2mix", "--batches-per-epoch",
         "100000000", "--out-dir", str(out)],
        capture_output=True, text=True, preexec_fn=limit, timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert r.stdout == ""
    assert re.fullmatch(
        r"error: --batches-per-epoch 100000000 with k=50 and 1 epoch needs 41\.6 GB of memory "
        r"\(40\.0 GB for the schedule's indices, 1\.6 GB for the batch offsets\); "
        r"\d+\.\d (GB|MB) is available\n",
        r.stderr,
    ), r.stderr
    assert not out.exists()


def test_random_holds_one_copy_of_its_indices(tmp_path):
    """Permutations are written in place and the offsets computed without a Python list:
    the peak is about one copy of the indices (two before, and a list of every batch size)."""
    ds = load_dataset("digits")
    cfg = BuildConfig(dataset="digits", k=50, method="random", epochs=2000)
    tracemalloc.start()
    try:
        out = RandomMethod().run(cfg, ds, 50, RunContext())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    indices = 2000 * 1437 * 8
    assert out.indices.nbytes == indices and len(out.batch_offsets) == 2000 * 29 + 1
    assert indices <= peak < 1.2 * indices, peak / indices
