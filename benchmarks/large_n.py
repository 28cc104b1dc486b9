"""Large N on one machine (issue 15's evidence): ``--method mmd --approx nystrom:M``.

A seeded Gaussian mixture (``baselines_scale.make_npz``: 10 components, D = 128 float32,
the per-dimension scale 1/sqrt(d) of PCA-like data) of ``--n`` samples, k = 256. Every
build (``schedgen.build.build``, the npz as ``npz:PATH``) runs in a fresh process that
reports its build seconds and its own peak RSS (``ru_maxrss``); an approx build also
reports the factor's measured s_tot error (``approx_error``, as its store records it).
Each build has its own output directory, so an exact build pays its row-sum pass.

Quality (only for N <= ``--quality-max-n``, default 200,000: it costs the exact row-sum
pass and about N²/2 more kernel values per order): the exact MMD²(P ∪ B, Q \\ B) after
the first and every 100th batch (``schedgen.evaluate.prefix_mmd2`` on the exact float32
kernel with float64 sums, in blocks, never N × N) of every schedule and of a seeded random
order of the same batch sizes; also the mean over all batches. At N = 1,000,000 it is not
computed (about 1.5·N²·D multiply-adds, ~45 min here): the build rows stand alone.

Usage::

    python benchmarks/large_n.py [--n 1000000] [--runs lp:256,lp:1024,greedy:256,greedy:1024]
    python benchmarks/large_n.py --n 73257 --runs lp:exact,greedy:exact,lp:256,lp:1024,greedy:256,greedy:1024

A run is ``SOLVER:M`` (``--approx nystrom:M``) or ``SOLVER:exact``. Results are merged
into ``benchmarks/results/large_n.json`` under the key ``"N=<n>"`` (``--out`` to change).
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
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines_scale import make_npz  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "large_n.json"
K = 256


def _config(npz: str, run: str, k: int, out_dir: str):
    from schedgen.build import BuildConfig

    solver, _, m = run.partition(":")
    approx = None if m == "exact" else f"nystrom:{int(m)}"
    return BuildConfig(dataset=f"npz:{npz}", method="mmd", solver=solver, k=k, out_dir=out_dir, approx=approx)


def worker(npz: str, run: str, k: int, out_dir: str) -> dict:
    from schedgen.build import build
    from schedgen.errors import SchedgenError

    t0 = time.perf_counter()
    try:
        r = build(_config(npz, run, k, out_dir))
        out = {"seconds": time.perf_counter() - t0, "n_batches": r.n_batches, "digest": r.digest, "path": str(r.path)}
        if "approx_error" in r.params:
            out["approx_error"] = r.params["approx_error"]
            out["approx_rank"] = r.params["approx_rank"]
    except SchedgenError as exc:
        out = {"refused": str(exc)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def estimate(npz: str, run: str, k: int, n: int) -> float:
    """The build's memory estimate (schedgen's own ``memory_needs``), in MB."""
    from types import SimpleNamespace

    from schedgen.build import memory_needs

    ds = SimpleNamespace(n_samples=n, n_features=128)
    return sum(x.n_bytes for x in memory_needs(_config(npz, run, k, "unused"), ds, k)) / 1e6


def quality(npz: str, paths: dict[str, str], k: int, seed: int = 0) -> dict:
    """Exact prefix MMD² of every schedule and of a seeded random order (see the module)."""
    from schedgen.evaluate import prefix_mmd2
    from schedgen.kernels import make_kernel, row_sums
    from schedgen.store import read_schedule

    with np.load(npz) as z:
        X = np.ascontiguousarray(z["X"], dtype=np.float32)
    n = len(X)
    kernel = make_kernel("rbf", bandwidth="median", X=X, seed=seed)  # the builds' kernel (median, seed 0)
    t0 = time.perf_counter()
    s_tot, _ = row_sums(kernel, X)
    print(f"  exact row sums for the quality: {time.perf_counter() - t0:.1f} s", flush=True)
    perm = np.random.default_rng([seed, n, k]).permutation(n).astype(np.int64)
    offsets = np.minimum(np.arange(0, n + k, k), n)
    offsets = np.unique(offsets)
    orders = {"random": (perm, offsets)}
    for run, path in paths.items():
        s = read_schedule(path)
        orders[run] = (np.asarray(s.indices, dtype=np.int64), np.asarray(s.batch_offsets, dtype=np.int64))
    out = {}
    for name, (idx, off) in orders.items():
        t0 = time.perf_counter()
        m = prefix_mmd2(X, kernel, idx, off, s_tot)
        picked = list(range(0, len(m) - 1, 100))
        out[name] = {"batches": picked, "mmd2": [float(m[t]) for t in picked],
                     "mean_mmd2": float(np.nanmean(m)), "median_mmd2": float(np.nanmedian(m))}
        print(f"  quality {name:<14} mean exact MMD² {out[name]['mean_mmd2']:.3e}  first {m[0]:.3e}  "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--runs", default="lp:256,lp:1024,greedy:256,greedy:1024")
    ap.add_argument("--quality-max-n", type=int, default=200_000)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        npz, run, out_dir = json.loads(args.worker)
        print(json.dumps(worker(npz, run, args.k, out_dir)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "mixture.npz"
        make_npz(args.n, npz)
        for run in args.runs.split(","):
            est = estimate(str(npz), run, args.k, args.n)
            cmd = [sys.executable, __file__, "--k", str(args.k), "--worker",
                   json.dumps([str(npz), run, str(Path(tmp) / run.replace(":", "-"))])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            r = {"run": run, "memory_estimate_mb": est, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(r)
            what = f"{r['seconds']:8.1f} s" if "seconds" in r else "refused: " + r["refused"]
            if "approx_error" in r:
                e = r["approx_error"]
                what += f"  (s_tot rel. error median {e['s_tot_median']:.2g}, max {e['s_tot_max']:.2g})"
            print(f"N={args.n} k={args.k} {run:<12} {what}  peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(estimate {est:.0f} MB)", flush=True)
        paths = {r["run"]: r["path"] for r in rows if "path" in r}
        qual = quality(str(npz), paths, args.k) if args.n <= args.quality_max_n else None
    for r in rows:
        r.pop("path", None)
    result = {"n": args.n, "d": 128, "k": args.k, "rows": rows,
              "quality": qual if qual is not None else f"not computed (N > {args.quality_max_n}: exact MMD² costs "
                                                         f"~1.5·N²·D multiply-adds)",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                          "load_average": list(os.getloadavg())}}
    path = Path(args.out)
    everything = json.loads(path.read_text()) if path.exists() else {"benchmark": "large_n"}
    everything[f"N={args.n}"] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(everything, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
