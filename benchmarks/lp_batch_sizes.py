"""The paper's LP (``--solver lp``) at every batch size: whole digits schedules.

Issue 10 reported that ``schedgen build --dataset digits --k 300 --solver lp`` ran for
more than 10 minutes inside one HiGHS call (and k = 719 the same) while k = 50 took a
fraction of a second: steps with 2k > n (fewer than 2k samples left) handed HiGHS
every pair of the unscheduled samples. They are now solved through the complement
``m' = 1 - m``. This script runs the selection loop with ``lp`` on digits (N = 1,437,
RBF with the median bandwidth, features as ``schedgen build`` prepares them) for batch
sizes across the whole range and reports, per k: seconds for the loop (row sums
excluded), the steps, how many needed HiGHS, the largest reduced LP (pair rows) and
the slowest step.

Usage::

    python benchmarks/lp_batch_sizes.py [--ks 1,5,50,...] [--kernel rbf|poly]

Writes ``benchmarks/results/lp_batch_sizes.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "lp_batch_sizes.json"
KS = (1, 5, 50, 100, 150, 200, 300, 500, 600, 700, 719, 720, 1000, 1400, 1436)


def run(ks, kernel_name: str) -> list[dict]:
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features
    from schedgen.kernels import make_kernel, pinned_blas, row_sums
    from schedgen.methods.selection import mmd_schedule
    from schedgen.methods.solvers import solve_lp_relaxation

    ds = load_dataset("digits")
    with pinned_blas():
        X = prepare_features(ds, FeatureSpec(pca=None, standardize=False, seed=0))
        kern = make_kernel(kernel_name, bandwidth="median", degree=3, coef0=1.0, X=X, seed=0)
        s, neg = row_sums(kern, X)
    rows = []
    for k in ks:
        steps = []

        def solver(p):
            t = time.perf_counter()
            r = solve_lp_relaxation(p)
            steps.append((r.solves, r.pair_rows, time.perf_counter() - t))
            return r.positions

        t0 = time.perf_counter()
        with pinned_blas():
            mmd_schedule(X, k, kernel=kern, solver=solver, s_tot=s, neg_tot=neg)
        rows.append({
            "k": k,
            "seconds": time.perf_counter() - t0,
            "steps": len(steps),
            "highs_steps": sum(1 for so, _, _ in steps if so > 0),
            "max_pair_rows": max((pr for _, pr, _ in steps), default=0),
            "slowest_step_s": max((t for _, _, t in steps), default=0.0),
        })
        r = rows[-1]
        print(f"k={k:>5}  {r['seconds']:7.2f} s  steps {r['steps']:>5}  HiGHS {r['highs_steps']:>5}  "
              f"max pair rows {r['max_pair_rows']:>6}  slowest step {r['slowest_step_s']:.2f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    ap.add_argument("--kernel", default="rbf", choices=["rbf", "poly"])
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    rows = run([int(x) for x in args.ks.split(",")], args.kernel)
    out = {
        "dataset": "digits (train, N = 1437)", "kernel": args.kernel, "rows": rows,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "load_average": list(os.getloadavg())},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
