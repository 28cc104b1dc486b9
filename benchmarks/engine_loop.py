"""The exact selection loop in process against Ray actors: per-step round trips, per-shard
compute, whole ``lp`` builds, and a labelled projection to a 16-node cluster.

Features: N seeded float32 rows of D dims from a 10-cluster Gaussian mixture with a
decaying spectrum (PCA-like, as schedgen's SVHN features), RBF kernel with the median
bandwidth, batch size k. Every configuration runs the same loop
(``schedgen.methods._sharded_loop``); each result is checked to be the in-process bytes.

Measured, on this machine:

* the engine's bare round trip (``ping`` to every shard, median of 300);
* ``lp``: the row-sum pass and the whole loop, in process (1 shard, 2 threads) and on a
  local Ray cluster (``ray.init(num_cpus=2)``, 127.0.0.1) with 1 and 2 actors; the build is
  the two added (features and the store are the same for both);
* ``greedy``: the first ``--greedy-steps`` steps (k round trips each) on each engine: whole
  greedy builds at N = 200,000 take tens of minutes; their cost follows from the per-step
  figures because a step's work is proportional to the samples left.

Per step, the driver's wall time per call (round trips included) and the shards' compute
(``Shard.stats``) give the round-trip overhead. The projection to 16 nodes at N = 1.28M
and 10M is arithmetic on those measured parts and is labelled as such in the output.

Run::

    python benchmarks/engine_loop.py                       # N = 200,000, D = 128, k = 50
    python benchmarks/engine_loop.py --n 20000 --greedy-steps 5   # a quick look

Writes ``benchmarks/results/engine_loop.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from schedgen.kernels import make_kernel, row_sums, worker_pool
from schedgen.methods._sharded_loop import ShardedLoop
from schedgen.methods.engines import InProcessEngine, RayEngine, engine_row_sums
from schedgen.methods.selection import MMDState
from schedgen.methods.shards import HOST_BLOCK, shard_bounds
from schedgen.methods.solvers import SOLVERS

RESULTS = Path(__file__).resolve().parent / "results" / "engine_loop.json"


def features(n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng([2026, 17, n, d])
    scale = 1.0 / np.sqrt(1.0 + np.arange(d))  # a decaying spectrum, as after a PCA
    centres = rng.standard_normal((10, d)) * scale * 2.0
    X = centres[rng.integers(0, 10, n)] + rng.standard_normal((n, d)) * scale
    return X.astype(np.float32)


def ping_ms(engine, n_shards: int, X, kernel, rs) -> float:
    loop = ShardedLoop(engine, X, 50, kernel, rs.s, rs.neg, 2.0, SOLVERS["lp"], n_shards, None)
    st = MMDState.start(X.shape[0])
    loop.start(st)
    try:
        times = []
        for _ in range(300):
            t = time.perf_counter()
            engine.call_shards(loop.handles, "ping", [()] * len(loop.handles))
            times.append(time.perf_counter() - t)
        return 1e3 * float(np.median(times))
    finally:
        loop.stop()


def run_loop(engine, n_shards, X, kernel, rs, solver, k, steps=None):
    """The loop for ``steps`` steps (None: to the end): seconds, per-call stats, digest."""
    loop = ShardedLoop(engine, X, k, kernel, rs.s, rs.neg, 2.0, SOLVERS[solver], n_shards, 1e9)
    st = MMDState.start(X.shape[0])
    with worker_pool(None):
        t0 = time.perf_counter()
        loop.start(st)
        started = time.perf_counter() - t0
        t = time.perf_counter()
        done = 0
        while not st.done and (steps is None or done < steps):
            loop.step(st)
            done += 1
        sec = time.perf_counter() - t
        busy = loop._call("stats")
        loop.stop()
    h = hashlib.sha256(np.concatenate(st.batches).tobytes() + np.asarray(st.mmd2).tobytes()).hexdigest()
    calls = {m: {"calls": c, "driver_seconds": round(s, 3)} for m, (c, s) in loop.stats.items()}
    for m in calls:
        calls[m]["shard_compute_seconds_max"] = round(max(b.get(m, 0.0) for b in busy), 3)
    return {"steps": done, "loop_seconds": round(sec, 2), "start_seconds": round(started, 2),
            "calls": calls, "digest": h[:16]}


def overhead_per_call_ms(row) -> float:
    """Driver wall time minus the slowest shard's compute, per call, over the step calls."""
    wall = sum(v["driver_seconds"] for m, v in row["calls"].items() if m not in ("restore", "stats"))
    comp = sum(v["shard_compute_seconds_max"] for m, v in row["calls"].items() if m not in ("restore", "stats"))
    n = sum(v["calls"] for m, v in row["calls"].items() if m not in ("restore", "stats"))
    return round(1e3 * (wall - comp) / max(n, 1), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--greedy-steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--reproject", action="store_true",
                    help="recompute only the projection from the measurements already in --out")
    args = ap.parse_args()
    if args.reproject:
        out = json.loads(args.out.read_text())
        args.n, args.d, args.k = out["n"], out["d"], out["k"]
        out["projection"] = project(out, args)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out["projection"], indent=2))
        return
    import ray

    X = features(args.n, args.d)
    kernel = make_kernel("rbf", bandwidth="median", X=X, seed=0)
    out: dict = {"rows": []}
    t = time.perf_counter()
    rs = row_sums(kernel, X)
    out["row_sums_in_process_seconds"] = round(time.perf_counter() - t, 2)
    print("row sums in process", out["row_sums_in_process_seconds"], flush=True)
    local = InProcessEngine()
    ref = {}
    for solver, steps in (("lp", None), ("greedy", args.greedy_steps)):
        row = run_loop(local, 1, X, kernel, rs, solver, args.k, steps)
        row.update(engine="in-process", shards=1, solver=solver)
        row["overhead_ms_per_call"] = overhead_per_call_ms(row)
        ref[solver] = row["digest"]
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    for workers in (1, 2):
        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="ERROR", log_to_driver=False)
        eng = RayEngine()
        engine_row_sums(eng, kernel, X[:2048])  # warm-up: workers up, schedgen imported there
        startup = time.perf_counter() - t
        t = time.perf_counter()
        got = engine_row_sums(eng, kernel, X)
        rs_sec = time.perf_counter() - t
        assert got.s.tobytes() == rs.s.tobytes()
        ping = ping_ms(eng, workers, X, kernel, rs)
        for solver, steps in (("lp", None), ("greedy", args.greedy_steps)):
            row = run_loop(eng, workers, X, kernel, rs, solver, args.k, steps)
            row.update(engine="ray", shards=workers, solver=solver, cluster_start_seconds=round(startup, 2),
                       row_sums_seconds=round(rs_sec, 2), ping_ms=round(ping, 3))
            row["overhead_ms_per_call"] = overhead_per_call_ms(row)
            row["same_bytes_as_in_process"] = row["digest"] == ref[solver]
            assert row["same_bytes_as_in_process"], (solver, workers)
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
        ray.shutdown()
    # The lp build: row sums + loop, in process (2 threads) vs Ray (2 actors).
    lp_local = next(r for r in out["rows"] if r["solver"] == "lp" and r["engine"] == "in-process")
    lp_ray = next(r for r in out["rows"] if r["solver"] == "lp" and r["engine"] == "ray" and r["shards"] == 2)
    build_local = out["row_sums_in_process_seconds"] + lp_local["loop_seconds"]
    build_ray = lp_ray["row_sums_seconds"] + lp_ray["loop_seconds"]
    out["lp_build"] = {"in_process_seconds": round(build_local, 1), "ray_2_actors_seconds": round(build_ray, 1),
                       "ratio": round(build_ray / build_local, 3), "goal_ratio": 1.3,
                       "ray_cluster_start_seconds_not_included": lp_ray["cluster_start_seconds"]}
    out["projection"] = project(out, args)
    out.update(
        what="exact selection loop (lp whole, greedy first steps): in process vs Ray actors on a local cluster",
        n=args.n, d=args.d, k=args.k,
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                 "numpy": np.__version__, "ray": ray.__version__, "load_average": os.getloadavg()},
        command=f"python benchmarks/engine_loop.py --n {args.n} --d {args.d} --k {args.k} "
                f"--greedy-steps {args.greedy_steps}",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("lp_build", "projection")}, indent=2))


def project(out: dict, args) -> dict:
    """PROJECTION (arithmetic, not a measurement) to 16 nodes of 2 such cores each, one actor
    per core (32 shards), from this machine's measured parts: compute per unit of work
    (row-sum pairs, lp's per-step row work, greedy's per-column row work) scales with the
    work over 32 cores, times the largest shard's share over the mean; each step adds its calls' round trips at the measured local
    overhead (a cross-node round trip may be several times it: the range uses 1x and 3x)."""
    n, k = args.n, args.k
    rows = out["rows"]
    lp1 = next(r for r in rows if r["solver"] == "lp" and r["engine"] == "in-process")
    gr1 = next(r for r in rows if r["solver"] == "greedy" and r["engine"] == "in-process")
    ray2 = {r["solver"]: r for r in rows if r["engine"] == "ray" and r["shards"] == 2}
    cores_here, cores = 2, 32
    pair_sec = out["row_sums_in_process_seconds"] * cores_here / n**2  # core-seconds per kernel pair
    lp_steps = lp1["steps"]
    # lp: core-seconds per (live row x step), from the whole loop: Σ_t nQ(t) = N²/(2k) + O(N)
    lp_row_sec = lp1["loop_seconds"] * cores_here / (n * n / (2 * k))
    gr_steps = gr1["steps"]
    # greedy: core-seconds per live row per added sample, from the first steps (nQ ≈ N)
    gr_row_sec = gr1["loop_seconds"] * cores_here / (gr_steps * k * n)
    lp_calls = sum(v["calls"] for m, v in ray2["lp"]["calls"].items() if m not in ("restore", "stats")) / lp_steps
    rt_ms = max(ray2["lp"]["overhead_ms_per_call"], ray2["greedy"]["overhead_ms_per_call"])
    proj = {"label": "PROJECTION from the measured parts above, not a measurement",
            "nodes": 16, "cores_per_node": 2, "shards": cores,
            "round_trip_ms_assumed": [round(rt_ms, 3), round(3 * rt_ms, 3)]}
    for N in (1_280_000, 10_000_000):
        # the slowest shard sets a step's pace: its rows over the mean (whole blocks)
        rows = [hi - lo for lo, hi in shard_bounds(N, HOST_BLOCK, cores)]
        skew = max(rows) / (N / cores)
        rsum = pair_sec * N * N / cores
        lp_loop = lp_row_sec * N * N / (2 * k) / cores * skew
        gr_loop = gr_row_sec * N * N / 2 / cores * skew  # Σ over N/k steps of k columns of nQ rows: N²/2
        steps = N / k
        lo, hi = (lp_calls * steps * rt_ms / 1e3, lp_calls * steps * 3 * rt_ms / 1e3)
        glo, ghi = (N * rt_ms / 1e3, N * 3 * rt_ms / 1e3)  # one round trip per added sample
        proj[f"N={N}"] = {
            "largest_shard_over_mean": round(skew, 3),
            "row_sums_hours": round(rsum / 3600, 2),
            "lp_loop_hours": [round((lp_loop + lo) / 3600, 2), round((lp_loop + hi) / 3600, 2)],
            "greedy_loop_hours": [round((gr_loop + glo) / 3600, 2), round((gr_loop + ghi) / 3600, 2)],
            "lp_round_trip_share": round(lo / (lp_loop + lo), 3),
            "greedy_round_trip_share": round(glo / (gr_loop + glo), 3),
        }
    return proj


if __name__ == "__main__":
    main()
