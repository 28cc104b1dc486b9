"""The MMD paper's baselines at SVHN scale: build time and peak memory of `dpp` and
`submodular` next to `random` (and `mmd`, see ``benchmarks/mmd_scale.py``).

The data has SVHN's shape after PCA (N = 73,257, D = 128 float32): ``mmd_scale.synthetic``'s
seeded Gaussian mixture, with its mixture component as the label (the submodular method's
proxy learns labels), written to an npz; each build runs ``schedgen.build.build`` in a fresh
process that reports its own peak RSS. k = 50, one epoch. A build that schedgen refuses
(the exact DPP sampler where the N x N eigendecomposition does not fit in memory) is
reported with its one-line error. ``dpp:nystrom:M`` is ``--method dpp --approx nystrom:M``
(the dual sampler on a rank-M Nyström factor); its row also gives the factor's measured
error (``approx_error``, as the store records it).

Usage::

    python benchmarks/baselines_scale.py [--n 73257] [--methods random,submodular,dpp,dpp:nystrom:500]

Writes ``benchmarks/results/baselines_scale.json`` (``--out`` to change).
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

RESULTS = Path(__file__).resolve().parent / "results" / "baselines_scale.json"


def make_npz(n: int, path: Path, seed: int = 0, d: int = 128, components: int = 10) -> None:
    """mmd_scale.synthetic's mixture, with each sample's component as its label."""
    rng = np.random.default_rng([seed, n, d])
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))
    centres = rng.normal(size=(components, d)) * scale * 2.0
    labels = rng.integers(0, components, n)
    X = (centres[labels] + rng.normal(size=(n, d)) * scale).astype(np.float32)
    np.savez(path, X=X, y=labels.astype(np.int64))


def worker(npz: str, method: str, k: int, out_dir: str) -> dict:
    from schedgen.build import BuildConfig, build
    from schedgen.errors import SchedgenError

    t0 = time.perf_counter()
    method, _, approx = method.partition(":")  # "dpp:nystrom:500" -> dpp with --approx nystrom:500
    try:
        r = build(BuildConfig(dataset=f"npz:{npz}", method=method, k=k, out_dir=out_dir, approx=approx or None))
        out = {"seconds": time.perf_counter() - t0, "n_batches": r.n_batches, "digest": r.digest}
        if "approx_error" in r.params:
            out["approx_error"] = r.params["approx_error"]
    except SchedgenError as exc:
        out = {"refused": str(exc)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=73_257)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--methods", default="random,submodular,dpp,dpp:nystrom:500")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        npz, method, out_dir = json.loads(args.worker)
        print(json.dumps(worker(npz, method, args.k, out_dir)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "svhn_shape.npz"
        make_npz(args.n, npz)
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--k", str(args.k), "--worker",
                   json.dumps([str(npz), method, str(Path(tmp) / "out")])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            r = {"method": method, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(r)
            what = f"{r['seconds']:8.1f} s" if "seconds" in r else "refused: " + r["refused"]
            if "approx_error" in r:
                e = r["approx_error"]
                what += f"  (s_tot rel. error median {e['s_tot_median']:.2g}, max {e['s_tot_max']:.2g})"
            print(f"N={args.n} k={args.k} {method:<16} {what}  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    out = {"benchmark": "baselines_scale", "n": args.n, "k": args.k, "rows": rows,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                       "load_average": list(os.getloadavg())}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
