"""``array:DIR`` (memory-mapped float32 ``X.npy``) against ``npz:`` (read into memory):
same schedule digest, and how much memory each build holds.

The data has SVHN's raw shape as float32 (N = 73,257 rows of D = 3,072 values, a seeded
mixture; 900 MB), so the feature stage projects it by PCA to 128 dimensions, reading it in
row blocks; then the exact ``lp`` schedule, k = 50. Each build runs in a fresh process.

Two memory figures per build:

* ``peak_rss_mb`` — the kernel's high-water mark of the resident set (``ru_maxrss``). It
  counts the pages of a memory-mapped file that were read, although the kernel can drop
  those clean pages at any time and re-read them, so for ``array:`` it overstates what the
  build needs.
* ``peak_anon_mb`` — the peak of ``RssAnon`` (memory that only swap could free), sampled
  every 10 ms by a thread of the build process: what a memory-mapped dataset saves.

Usage::

    python benchmarks/array_memory.py [--n 73257] [--d 3072]

Writes ``benchmarks/results/array_memory.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "array_memory.json"


def write_data(n: int, d: int, root: Path, seed: int = 0, components: int = 10) -> None:
    """A seeded mixture in both layouts, written block by block (the script itself stays small)."""
    rng = np.random.default_rng([seed, n, d])
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))
    centres = (rng.normal(size=(components, d)) * scale * 2.0).astype(np.float32)
    labels = rng.integers(0, components, n)
    (root / "arr").mkdir()
    X = np.lib.format.open_memmap(root / "arr" / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 4096):
        e = min(n, s + 4096)
        X[s:e] = centres[labels[s:e]] + (rng.normal(size=(e - s, d)) * scale).astype(np.float32)
    X.flush()
    np.save(root / "arr" / "y.npy", labels.astype(np.int64))
    np.savez(root / "data.npz", X=X, y=labels.astype(np.int64))
    del X


def _anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def worker(dataset: str, k: int, solver: str, out_dir: str) -> dict:
    from schedgen.build import BuildConfig, build

    peak = [_anon_kb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], _anon_kb())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    r = build(BuildConfig(dataset=dataset, k=k, solver=solver, out_dir=out_dir))
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    return {"seconds": seconds, "digest": r.digest, "n_batches": r.n_batches,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "peak_anon_mb": max(peak[0], _anon_kb()) / 1024.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=73_257)
    ap.add_argument("--d", type=int, default=3_072)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--solver", default="lp")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        dataset, out_dir = json.loads(args.worker)
        print(json.dumps(worker(dataset, args.k, args.solver, out_dir)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_data(args.n, args.d, root)
        for layout, dataset in (("npz", f"npz:{root / 'data.npz'}"), ("array", f"array:{root / 'arr'}")):
            cmd = [sys.executable, __file__, "--k", str(args.k), "--solver", args.solver, "--worker",
                   json.dumps([dataset, str(root / f"out-{layout}")])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            r = {"layout": layout, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(r)
            print(f"N={args.n} D={args.d} {args.solver} k={args.k} {layout:<6} {r['seconds']:7.1f} s  "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB  peak anonymous {r['peak_anon_mb']:6.0f} MB  "
                  f"digest {r['digest'][:16]}", flush=True)
    same = len({r["digest"] for r in rows}) == 1
    print(f"same digest: {same}")
    out = {"benchmark": "array_memory", "n": args.n, "d": args.d, "k": args.k, "solver": args.solver,
           "rows": rows, "same_digest": same,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                       "load_average": list(os.getloadavg())}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
