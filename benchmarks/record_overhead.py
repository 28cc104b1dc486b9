"""Cost of recording an online learn2mix run: seconds each epoch spends writing the store.

``Learn2MixBatchSampler(..., record_to=PATH)`` writes the store twice an epoch (when
the epoch's first batch is handed out, and in ``update``), each time atomically (a
temporary sibling swapped into place). This script runs the sampler alone (no model,
no data loading: the figures are the recording's own cost) over many epochs with
seeded positive class losses and reports, at a few epochs, the seconds of those two
writes and the size of the store, next to the same run without ``record_to``.

It also times, at those epochs, building the record in memory and hashing its
digest (``to_schedule().digest``): the part of each write that still grows with
the run.

Run::

    python benchmarks/record_overhead.py                  # N=50,000, 10 classes, k=128, 100 epochs
    python benchmarks/record_overhead.py --epochs 20      # quick
    PYTHONPATH=/path/to/old/checkout python benchmarks/record_overhead.py \
        --out benchmarks/results/record_overhead_before.json   # another version, same script

Writes ``benchmarks/results/record_overhead.json`` (or ``--out``).

``--adaptive`` runs the other recording sampler instead: the seconds per batch of
``AdaptiveBatchSampler`` (no record, with ``record``, and with a ``request`` after
every batch) against torch's plain ``BatchSampler(RandomSampler)`` at the same batch
size, the sampler alone, best of ``--repeats``; written to
``benchmarks/results/record_overhead_adaptive.json``::

    python benchmarks/record_overhead.py --adaptive --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from schedgen.store import read_schedule
from schedgen.torch import AdaptiveBatchSampler, Learn2MixBatchSampler

RESULTS = Path(__file__).resolve().parent / "results" / "record_overhead.json"
RESULTS_ADAPTIVE = RESULTS.with_name("record_overhead_adaptive.json")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(labels: np.ndarray, k: int, epochs: int, record_to: Path | None, report: set[int]) -> dict:
    """Seconds per epoch spent in the sampler's write points, at the epochs in ``report``."""
    rng = np.random.default_rng([0, 1])
    C = int(labels.max()) + 1
    s = Learn2MixBatchSampler(labels, k, mixing_rate=0.1, seed=0, record_to=record_to)
    rows = {}
    for e in range(epochs):
        it = iter(s)
        t0 = time.perf_counter()
        next(it)  # the first batch: the epoch joins the record (write 1)
        t_first = time.perf_counter() - t0
        for _ in it:
            pass
        losses = rng.uniform(0.5, 2.0, C)
        t0 = time.perf_counter()
        s.update(losses)  # write 2
        t_update = time.perf_counter() - t0
        if e + 1 in report:
            t0 = time.perf_counter()
            _ = s.to_schedule().digest  # a fresh Schedule: concatenated and hashed anew
            t_digest = time.perf_counter() - t0
            rows[e + 1] = {"first_batch_s": t_first, "update_s": t_update, "concat_digest_s": t_digest,
                           "store_bytes": du(record_to) if record_to else 0}
    return rows


def adaptive_arm(n: int, k: int, epochs: int, repeats: int) -> dict:
    """Seconds per batch handed out, sampler alone, best of ``repeats`` whole runs."""
    import torch
    from torch.utils.data import BatchSampler, RandomSampler

    def plain() -> int:
        g = torch.Generator().manual_seed(0)
        s = BatchSampler(RandomSampler(range(n), generator=g), k, drop_last=False)
        return sum(1 for _ in range(epochs) for _ in s)

    def adaptive(record: Path | None = None, requests: bool = False) -> int:
        s = AdaptiveBatchSampler(n, k, seed=0, record=record)
        count = 0
        for e in range(epochs):
            s.set_epoch(e)
            for _ in s:
                count += 1
                if requests:
                    s.request(k)  # the call a trainer makes; the same size, so the batches match
        return count

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {
            "plain BatchSampler(RandomSampler)": plain,
            "AdaptiveBatchSampler": adaptive,
            "AdaptiveBatchSampler + request() each batch": lambda: adaptive(requests=True),
            "AdaptiveBatchSampler, record=": lambda: adaptive(Path(tmp) / "run.zarr"),
        }
        for name, fn in arms.items():
            best, count = float("inf"), 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                count = fn()
                best = min(best, time.perf_counter() - t0)
            out[name] = {"batches": count, "seconds": best, "us_per_batch": best / count * 1e6}
        assert read_schedule(Path(tmp) / "run.zarr").n_epochs == epochs
    return out


def main_adaptive(args: argparse.Namespace) -> None:
    import schedgen

    load_before = os.getloadavg()
    rows = adaptive_arm(args.n, args.k, args.epochs, args.repeats)
    load_after = os.getloadavg()
    base = rows["plain BatchSampler(RandomSampler)"]["us_per_batch"]
    print(f"N={args.n:,}, k={args.k}, {args.epochs} epochs, sampler alone, best of {args.repeats}; "
          f"{os.cpu_count()} cores")
    print(f"{'sampler':<46} {'us/batch':>9} {'vs plain':>9} {'s/epoch':>8}")
    for name, r in rows.items():
        print(f"{name:<46} {r['us_per_batch']:>9.1f} {r['us_per_batch'] / base:>8.2f}x "
              f"{r['seconds'] / args.epochs:>8.4f}")
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    out = args.out if args.out != RESULTS else RESULTS_ADAPTIVE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "schedgen": str(Path(schedgen.__file__).parent),
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "args": {**vars(args), "out": str(out)},
        "arms": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write the figures (JSON)")
    ap.add_argument("--adaptive", action="store_true", help="time AdaptiveBatchSampler per batch instead")
    ap.add_argument("--repeats", type=int, default=3, help="--adaptive: whole runs per arm (the best is kept)")
    args = ap.parse_args()
    if args.adaptive:
        main_adaptive(args)
        return
    import schedgen

    load_before = os.getloadavg()

    labels = np.random.default_rng([0, 0]).integers(0, args.classes, args.n)
    report = {e for e in (1, 10, 25, 50, 100, 200, 500) if e <= args.epochs} | {args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.zarr"
        t0 = time.perf_counter()
        rec = run(labels, args.k, args.epochs, path, report)
        total_rec = time.perf_counter() - t0
        sched = read_schedule(path)  # the record is a valid store of every epoch
        assert sched.n_epochs == args.epochs
        t0 = time.perf_counter()
        bare = run(labels, args.k, args.epochs, None, report)
        total_bare = time.perf_counter() - t0

    print(f"N={args.n:,}, {args.classes} classes, k={args.k}, {sched.n_batches // args.epochs} batches/epoch, "
          f"{args.epochs} epochs; {os.cpu_count()} cores")
    print(f"schedgen from {Path(schedgen.__file__).parent}")
    print(f"{'epoch':>6} {'write at 1st batch (s)':>23} {'write in update (s)':>20} {'per epoch (s)':>14} "
          f"{'concat+digest, 1 write (s)':>27} {'store (MB)':>11}")
    for e in sorted(rec):
        r = rec[e]
        print(f"{e:>6} {r['first_batch_s']:>23.3f} {r['update_s']:>20.3f} "
              f"{r['first_batch_s'] + r['update_s']:>14.3f} {r['concat_digest_s']:>27.3f} "
              f"{r['store_bytes'] / 1e6:>11.1f}")
    print(f"whole run: {total_rec:.1f} s recorded, {total_bare:.1f} s without record_to "
          f"(recording {total_rec - total_bare:.1f} s, {(total_rec - total_bare) / args.epochs:.3f} s/epoch on average)")

    load_after = os.getloadavg()
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "schedgen": str(Path(schedgen.__file__).parent),
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "args": {**vars(args), "out": str(args.out)},
        "recorded": {str(e): r for e, r in sorted(rec.items())},
        "total_recorded_s": total_rec,
        "total_bare_s": total_bare,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
