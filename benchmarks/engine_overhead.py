"""Cost of running the exact row-sum pass on Ray tasks instead of in process.

The pass (``s_tot`` and ``neg_tot`` of an RBF kernel, N² GEMM work plus N² exponentials)
on seeded float32 features of N rows and D dims, timed:

* in process (:func:`schedgen.kernels.row_sums`) with 1 and with 2 worker threads;
* on a local Ray cluster with 1 and with 2 workers (``ray.init(num_cpus=W)``, 127.0.0.1),
  through :func:`schedgen.methods.engines.engine_row_sums` (default tasks: about four
  per worker), after a warm-up pass on a small input (workers started, schedgen imported).

Every Ray result is checked to be the in-process bytes. The cluster's start-up is
reported apart from the pass. The per-step round trips of the sharded selection loop
(issue 17's other figures) are not measured here: that loop is not built yet.

Run::

    python benchmarks/engine_overhead.py                  # N=50,000, D=128, best of 1
    python benchmarks/engine_overhead.py --n 20000 --repeats 2

Writes ``benchmarks/results/engine_overhead.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from schedgen.kernels import make_kernel, row_sums
from schedgen.methods.engines import RayEngine, engine_row_sums

RESULTS = Path(__file__).resolve().parent / "results" / "engine_overhead.json"


def _best(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import ray

    rng = np.random.default_rng([2026, 17])
    X = rng.standard_normal((args.n, args.d)).astype(np.float32)
    kernel = make_kernel("rbf", bandwidth="median", X=X, seed=0)
    rows = []
    ref = None
    for threads in (1, 2):
        sec, got = _best(lambda: row_sums(kernel, X, n_jobs=threads), args.repeats)
        ref = got if ref is None else ref
        assert got.s.tobytes() == ref.s.tobytes()
        rows.append({"engine": "in-process", "workers": threads, "seconds": round(sec, 3)})
        print(rows[-1], flush=True)
    for workers in (1, 2):
        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="ERROR", log_to_driver=False)
        eng = RayEngine()
        engine_row_sums(eng, kernel, X[:2048])  # warm-up: workers up, schedgen imported there
        startup = time.perf_counter() - t
        sec, got = _best(lambda: engine_row_sums(eng, kernel, X), args.repeats)
        assert got.s.tobytes() == ref.s.tobytes() and got.neg.tobytes() == ref.neg.tobytes()
        rows.append({"engine": "ray", "workers": workers, "seconds": round(sec, 3),
                     "startup_seconds": round(startup, 2), "bitwise_equal": True})
        print(rows[-1], flush=True)
        ray.shutdown()
    by = {(r["engine"], r["workers"]): r["seconds"] for r in rows}
    for r in rows:
        if r["engine"] == "ray":
            r["ratio_to_in_process_same_workers"] = round(r["seconds"] / by[("in-process", r["workers"])], 3)
            r["ratio_to_in_process_2_threads"] = round(r["seconds"] / by[("in-process", 2)], 3)
    result = {
        "what": "exact RBF row-sum pass (s_tot, neg_tot): in process vs Ray tasks on a local cluster",
        "n": args.n, "d": args.d, "dtype": "float32", "repeats": args.repeats, "best_of": args.repeats,
        "rows": rows,
        "not_measured": "per-step round trips of the sharded selection loop (issue 17): not built yet",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "ray": ray.__version__},
        "command": f"python benchmarks/engine_overhead.py --n {args.n} --d {args.d} --repeats {args.repeats}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["rows"]))


if __name__ == "__main__":
    main()
