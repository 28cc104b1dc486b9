"""Which k-means for the Nyström landmarks: scikit-learn's (what schedgen uses) or faiss's?

``schedgen.kernels.nystrom.kmeans_landmarks`` fits scikit-learn's ``KMeans`` (k-means++,
one init, at most 50 Lloyd iterations) on at most 100,000 seeded rows with one OpenMP
thread, because scikit-learn's multithreaded sums change the last bits with the thread
count. This script times it against faiss's ``Kmeans`` on the same rows (same iteration
cap, one thread and all threads), and compares the landmarks' quality by the Nyström
factor's row-sum error on 2,000 seeded rows (the figure schedgen records). Whether faiss
earns its place as a dependency is decided by these numbers (see the README).

Usage::

    python benchmarks/kmeans_engines.py [--n 100000] [--d 128] [--m 256,1024]

Writes ``benchmarks/results/kmeans_engines.json``. Needs ``pip install faiss-cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mmd_scale import synthetic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "kmeans_engines.json"


def faiss_landmarks(X: np.ndarray, m: int, *, seed: int, max_iter: int, threads: int) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(threads)
    km = faiss.Kmeans(X.shape[1], m, niter=max_iter, seed=seed, verbose=False, max_points_per_centroid=10**9)
    km.train(np.ascontiguousarray(X, dtype=np.float32))
    return km.centroids.astype(np.float64)


def main() -> None:
    from schedgen.kernels import make_kernel
    from schedgen.kernels.nystrom import KMEANS_MAX_ITER, kmeans_landmarks, nystrom_error, nystrom_features

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--m", default="256,1024")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    X = synthetic(args.n, args.d)
    kernel = make_kernel("rbf", bandwidth="median", X=X, seed=0)
    rows = []
    for m in (int(v) for v in args.m.split(",")):
        engines = {
            "scikit-learn (1 thread, as schedgen)": lambda: kmeans_landmarks(X, m, seed=0),
            "faiss (1 thread)": lambda: faiss_landmarks(X, m, seed=0, max_iter=KMEANS_MAX_ITER, threads=1),
            f"faiss ({os.cpu_count()} threads)": lambda: faiss_landmarks(X, m, seed=0, max_iter=KMEANS_MAX_ITER,
                                                                        threads=os.cpu_count() or 1),
        }
        for name, fit in engines.items():
            t0 = time.perf_counter()
            Z = fit()
            seconds = time.perf_counter() - t0
            Z2 = fit()
            err = nystrom_error(kernel, X, nystrom_features(kernel, X, Z).features, seed=0)
            row = {"m": m, "engine": name, "seconds": seconds, "repeatable": bool(np.array_equal(Z, Z2)),
                   "s_tot_median": err.s_tot_median, "s_tot_max": err.s_tot_max}
            rows.append(row)
            print(f"N={args.n} D={args.d} M={m:<5} {name:<38} {seconds:7.2f} s  repeatable {row['repeatable']!s:<5} "
                  f"s_tot error median {row['s_tot_median']:.2e} max {row['s_tot_max']:.2e}", flush=True)
    out = {"benchmark": "kmeans_engines", "n": args.n, "d": args.d, "rows": rows,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                       "load_average": list(os.getloadavg())}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
