"""The GPU path, checked on a machine that has one: every mmd solver on CuPy and on NumPy.

For SVHN's shape after PCA (N = 73,257, D = 128 float32: ``mmd_scale.synthetic``'s seeded
mixture, written to an npz), k = 50, it builds the schedule with each solver (``lp``,
``greedy``, ``swap``) on each device, each build in a fresh process and output folder (no
shared row-sum cache), and prints:

* build seconds on each device and their ratio;
* the row-sum floor on each device (one bare blocked pass of the N² RBF row sums, the
  data already on the device) and each build's multiple of it;
* whether the CPU and GPU digests agree.

They need not: the GPU's GEMM sums in another order than OpenBLAS, so kernel values can
differ in the last bits, which changes a choice wherever two candidates tie to within
rounding. So a cuda build is cached under its own key (the device enters the cache key of
cuda builds), never served in place of a CPU build or the other way round.

This project's machines have no GPU, so this script has not been run on one. Without a
CUDA device it exits with one line (status 1); ``--devices cpu`` runs the CPU half alone
(which is how its plumbing is tested here, at small N).

Usage::

    python benchmarks/gpu_check.py [--n 73257] [--k 50] [--solvers lp,greedy,swap] [--devices cpu,cuda]

Writes ``benchmarks/results/gpu_check.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mmd_scale import synthetic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"


def build_worker(npz: str, solver: str, device: str, k: int, out_dir: str) -> dict:
    from schedgen.build import BuildConfig, build

    t0 = time.perf_counter()
    r = build(BuildConfig(dataset=f"npz:{npz}", k=k, solver=solver, device=device, out_dir=out_dir, force=True))
    return {"seconds": time.perf_counter() - t0, "digest": r.digest}


def floor_worker(npz: str, device: str) -> dict:
    """One bare row-sum pass with the median bandwidth, the data already on ``device``."""
    from schedgen.kernels import make_kernel, median_sq_distance, row_sums
    from schedgen.kernels.backend import get_namespace, to_device

    X = to_device(np.load(npz)["X"], device)
    xp = get_namespace(X)
    sigma = float(np.sqrt(median_sq_distance(X, seed=0) / 2.0))
    kernel = make_kernel("rbf", bandwidth=sigma)
    row_sums(kernel, X)  # warm-up: CuPy compiles its kernels on first use
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    s, _ = row_sums(kernel, X)
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()
    return {"seconds": time.perf_counter() - t0}


def _run(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=73_257)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--solvers", default="lp,greedy,swap")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--build-worker", help=argparse.SUPPRESS)
    ap.add_argument("--floor-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_worker:
        npz, solver, device, out_dir = json.loads(args.build_worker)
        print(json.dumps(build_worker(npz, solver, device, args.k, out_dir)))
        return 0
    if args.floor_worker:
        npz, device = json.loads(args.floor_worker)
        print(json.dumps(floor_worker(npz, device)))
        return 0

    devices = [d for d in args.devices.split(",") if d]
    if "cuda" in devices:
        from schedgen.errors import SchedgenError
        from schedgen.kernels.backend import resolve_device

        try:
            resolve_device("cuda")
        except SchedgenError as exc:
            print(f"error: no CUDA device to check ({exc}); run with --devices cpu for the CPU half alone",
                  file=sys.stderr)
            return 1
    solvers = [s for s in args.solvers.split(",") if s]
    out = {"benchmark": "gpu_check", "n": args.n, "k": args.k, "floor": {}, "builds": []}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "svhn_shape.npz"
        np.savez(npz, X=synthetic(args.n), y=np.zeros(args.n, dtype=np.int64))
        for device in devices:
            out["floor"][device] = _run(["--floor-worker", json.dumps([str(npz), device])])["seconds"]
            print(f"floor (row sums) on {device}: {out['floor'][device]:.2f} s", flush=True)
        for solver in solvers:
            row = {"solver": solver}
            for device in devices:
                r = _run(["--k", str(args.k), "--build-worker",
                          json.dumps([str(npz), solver, device, str(Path(tmp) / f"{solver}-{device}")])])
                row[device] = {**r, "x_floor": r["seconds"] / out["floor"][device]}
            if len(devices) == 2:
                a, b = (row[d] for d in devices)
                row["same_digest"] = a["digest"] == b["digest"]
                row["speedup"] = a["seconds"] / b["seconds"]
            out["builds"].append(row)
            cells = "  ".join(f"{d} {row[d]['seconds']:7.1f} s ({row[d]['x_floor']:.1f}x floor)" for d in devices)
            extra = (f"  cpu/gpu {row['speedup']:.1f}x  same digest: {row['same_digest']}"
                     if "same_digest" in row else "")
            print(f"N={args.n} k={args.k} {solver:<7} {cells}{extra}", flush=True)
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                      "load_average": list(os.getloadavg())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
