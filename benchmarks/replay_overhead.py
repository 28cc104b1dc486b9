"""Replay overhead: ScheduleBatchSampler versus torch's own shuffled BatchSampler.

Both iterate a ``DataLoader(num_workers=0)`` over the same in-memory
``TensorDataset`` with batches of the same size; the repeats alternate between
the two (and swap the order each repeat) so drift hits both alike. Reports the
median seconds per epoch and the ratio schedgen / torch (goal: <= 1.05), plus
the sampler alone (no data loading) to show where the time goes.

Run::

    python benchmarks/replay_overhead.py            # N=60,000 x 3,072 float32, k=128, 15 repeats
    python benchmarks/replay_overhead.py --n 10000 --repeats 3   # quick

Writes ``benchmarks/results/replay_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from schedgen.store import Schedule, write_schedule
from schedgen.torch import ScheduleBatchSampler

RESULTS = Path(__file__).resolve().parent / "results" / "replay_overhead.json"


def random_schedule(n: int, k: int, seed: int = 0) -> Schedule:
    """One epoch: a seeded permutation of range(n) cut into batches of k (last one short)."""
    perm = np.random.default_rng([seed, 0]).permutation(n).astype(np.int64)
    offsets = np.append(np.arange(0, n, k, dtype=np.int64), n)
    return Schedule(
        indices=perm,
        batch_offsets=offsets,
        epoch_offsets=np.array([0, len(offsets) - 1], dtype=np.int64),
        method="random",
        params={"seed": seed, "k": k},
        dataset={"name": "synthetic", "split": "train", "n_samples": n, "n_classes": 10, "fingerprint": "none"},
        k=k,
    )


def epoch_seconds(loader: DataLoader, set_epoch=None, epoch: int = 0) -> float:
    """Wall time of one full pass over ``loader`` (touching each batch)."""
    if set_epoch is not None:
        set_epoch(epoch)
    t0 = time.perf_counter()
    total = 0
    for x, y in loader:
        total += y.shape[0]
    elapsed = time.perf_counter() - t0
    assert total == len(loader.dataset), (total, len(loader.dataset))
    return elapsed


def sampler_seconds(sampler, set_epoch=None, epoch: int = 0) -> float:
    """Wall time of one pass over the batch sampler alone."""
    if set_epoch is not None:
        set_epoch(epoch)
    t0 = time.perf_counter()
    for _ in sampler:
        pass
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60_000, help="samples (default 60,000)")
    ap.add_argument("--d", type=int, default=3_072, help="float32 features per sample (default 3,072)")
    ap.add_argument("--k", type=int, default=128, help="batch size (default 128)")
    ap.add_argument("--repeats", type=int, default=15, help="timed epochs per sampler (default 15)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    torch.manual_seed(0)
    x = torch.randn(args.n, args.d, dtype=torch.float32)
    y = torch.randint(0, 10, (args.n,))
    ds = TensorDataset(x, y)

    with tempfile.TemporaryDirectory() as tmp:
        path = write_schedule(random_schedule(args.n, args.k), Path(tmp) / "random.zarr")
        t0 = time.perf_counter()
        sched = ScheduleBatchSampler(path)
        load_s = time.perf_counter() - t0

    g = torch.Generator().manual_seed(0)
    ref = BatchSampler(RandomSampler(ds, generator=g), args.k, drop_last=False)
    assert len(sched) == len(ref)
    loaders = {
        "schedgen": (DataLoader(ds, batch_sampler=sched, num_workers=0), sched.set_epoch, sched),
        "torch": (DataLoader(ds, batch_sampler=ref, num_workers=0), None, ref),
    }

    for name, (loader, set_epoch, _) in loaders.items():  # warm-up: caches, allocator, first-epoch lists
        epoch_seconds(loader, set_epoch, epoch=0)

    times: dict[str, list[float]] = {name: [] for name in loaders}
    sampler_times: dict[str, list[float]] = {name: [] for name in loaders}
    for rep in range(args.repeats):
        order = list(loaders) if rep % 2 == 0 else list(reversed(loaders))
        for name in order:
            loader, set_epoch, sampler = loaders[name]
            times[name].append(epoch_seconds(loader, set_epoch, epoch=rep + 1))
            sampler_times[name].append(sampler_seconds(sampler, set_epoch, epoch=rep + 1))

    med = {name: statistics.median(t) for name, t in times.items()}
    med_sampler = {name: statistics.median(t) for name, t in sampler_times.items()}
    ratio = med["schedgen"] / med["torch"]
    # Each repeat times both back to back: the median of these paired ratios resists
    # load from other processes drifting over the run better than the ratio of medians.
    paired = statistics.median(a / b for a, b in zip(times["schedgen"], times["torch"]))
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "replay_overhead",
        "config": {
            "n_samples": args.n,
            "n_features": args.d,
            "dtype": "float32",
            "batch_size": args.k,
            "n_batches": len(sched),
            "repeats": args.repeats,
            "num_workers": 0,
            "dataset_bytes": args.n * args.d * 4,
        },
        "seconds_per_epoch_median": med,
        "seconds_per_epoch_all": times,
        "sampler_only_seconds_per_epoch_median": med_sampler,
        "sampler_only_seconds_per_epoch_all": sampler_times,
        "schedule_load_seconds": load_s,
        "ratio_schedgen_over_torch": ratio,
        "median_paired_ratio": paired,
        "goal_ratio_max": 1.05,
        "within_goal": ratio <= 1.05,
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": {
            "processor": platform.processor(),
            "machine": platform.machine(),
            "system": platform.system(),
            "cpu_count": os.cpu_count(),
            "load_average_1_5_15_min_before": load_before,
            "load_average_1_5_15_min_after": load_after,
        },
    }

    print(f"DataLoader(num_workers=0) over TensorDataset {args.n:,} x {args.d:,} float32, "
          f"batch {args.k}, {len(sched)} batches/epoch, {args.repeats} alternating repeats")
    print(f"{'batch sampler':<44}{'median s/epoch':>16}{'sampler only s':>16}")
    print(f"{'ScheduleBatchSampler (random schedule)':<44}{med['schedgen']:>16.4f}{med_sampler['schedgen']:>16.5f}")
    print(f"{'BatchSampler(RandomSampler(ds), k)':<44}{med['torch']:>16.4f}{med_sampler['torch']:>16.5f}")
    print(f"ratio of medians schedgen / torch = {ratio:.3f}  (goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}); "
          f"median paired ratio = {paired:.3f}")
    if load_before is not None:
        print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"schedule read + verify: {load_s:.3f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
