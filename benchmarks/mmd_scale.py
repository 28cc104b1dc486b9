"""MMD schedule at scale: row-sum floor, the three solvers, a random order, time versus N.

The input has SVHN's shape after PCA: N = 73,257 samples, D = 128 float32 features,
batch size k = 50, RBF kernel with the median bandwidth. By default the features are
a seeded synthetic Gaussian mixture of that shape (10 components, per-dimension scale
1/sqrt(d) like a PCA spectrum); ``--dataset svhn`` or ``--dataset npz:PATH`` uses a
real dataset instead (loaded with ``schedgen.data.load_dataset`` and projected with
``schedgen.features.prepare_features``; ``--n`` then takes the first n samples).

For every N it measures, each configuration in a fresh subprocess that reports its
own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``):

* ``features``: the stage before (synthetic runs only): N × 3,072 uint8 images of
  SVHN's shape scaled and projected to 128 dims by ``prepare_features``;
* ``floor``: one bare blocked pass of the N² RBF row sums (``row_sums``);
* ``lp``, ``greedy``, ``swap``: a full schedule, row sums + selection loop; seconds,
  ratio to the floor, peak RSS and the mean batch MMD² over the schedule (the
  MMD²(P ∪ B, Q \\ B) the loop records after every batch);
* ``random``: the mean prefix MMD² of a seeded random order, scored by
  ``schedgen.evaluate.prefix_mmd2`` with the loop's own formula and bookkeeping
  (``schedgen.mmd2``), so the two means compare like with like.

The table also shows how the time grows with N (exponent of a power law fitted
between consecutive sizes). Usage::

    python benchmarks/mmd_scale.py                       # N in {4096, 16384, 73257}
    python benchmarks/mmd_scale.py --quick               # N in {2048, 4096}, small
    python benchmarks/mmd_scale.py --dataset svhn        # real SVHN (PCA 128)
    python benchmarks/mmd_scale.py --n 16384 --solvers lp,swap

Writes ``benchmarks/results/mmd_scale.json`` (``--out`` to change) with the figures
and the machine (CPU count, NumPy and BLAS from threadpoolctl, load average).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "mmd_scale.json"
SVHN_N = 73_257
CONFIGS = ("features", "floor", "lp", "greedy", "swap", "random")


# --------------------------------------------------------------------------- data


def synthetic(n: int, d: int = 128, *, seed: int = 0, components: int = 10) -> np.ndarray:
    """A seeded Gaussian mixture shaped like PCA features: float32 of shape (n, d).

    Component centres and noise both have per-dimension scale ``1/sqrt(j+1)``
    (a decaying spectrum, as after PCA); the centres are twice as spread as the noise.
    """
    rng = np.random.default_rng([seed, n, d])
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))
    centres = rng.normal(size=(components, d)) * scale * 2.0
    labels = rng.integers(0, components, n)
    X = centres[labels] + rng.normal(size=(n, d)) * scale
    return X.astype(np.float32)


def features(dataset: str, n: int, *, seed: int) -> np.ndarray:
    if dataset == "synthetic":
        return synthetic(n, seed=seed)
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features

    ds = load_dataset(dataset)
    X = prepare_features(ds, FeatureSpec(pca=128 if ds.n_features > 128 else 0, seed=seed))
    if n > X.shape[0]:
        raise SystemExit(f"--n {n} exceeds the dataset's {X.shape[0]} samples")
    return np.ascontiguousarray(X[:n])


# --------------------------------------------------------------------------- one configuration


def counting(name: str):
    """The registered solver ``name`` and a dict the loop fills with its counts (``stats=``):
    full columns computed (greedy, swap) or steps the LP's half-integral certificate solved."""
    from schedgen.methods.solvers import get_solver

    return get_solver(name), {}


def run_one(config: str, dataset: str, n: int, k: int, seed: int) -> dict:
    """Runs in its own process: returns the figures of one configuration."""
    from schedgen.evaluate import prefix_mmd2
    from schedgen.kernels import make_kernel, row_sums
    from schedgen.methods.selection import mmd_schedule

    if config == "features":
        return run_features(n, seed=seed)
    X = features(dataset, n, seed=seed)
    kernel = make_kernel("rbf", X=X, seed=seed)
    out = {"config": config, "n": n, "k": k, "sigma": kernel.sigma}
    t0 = time.perf_counter()
    s_tot, neg_tot = row_sums(kernel, X)
    out["row_sums_s"] = time.perf_counter() - t0
    if config in ("lp", "greedy", "swap"):
        solver, counts = counting(config)
        t1 = time.perf_counter()
        st = mmd_schedule(X, k, kernel=kernel, solver=solver, s_tot=s_tot, neg_tot=neg_tot, stats=counts)
        out["loop_s"] = time.perf_counter() - t1
        out["solver_calls"] = counts["steps"]
        if config == "lp":
            out["lp_certified"] = counts["lp_certified"]
        else:
            out["columns"] = counts["columns"]
        out["total_s"] = out["row_sums_s"] + out["loop_s"]
        mmd2 = np.asarray(st.mmd2, dtype=np.float64)
        out["mean_mmd2"] = float(np.nanmean(mmd2))
        order = np.concatenate(st.batches).astype(np.int64)
        out["permutation_ok"] = bool(np.array_equal(np.sort(order), np.arange(n)))
        out["digest"] = hashlib.sha256(order.tobytes()).hexdigest()[:16]
    elif config == "random":
        order = np.random.default_rng([seed, 0x72616E64]).permutation(n).astype(np.int64)
        offsets = np.append(np.arange(0, n, k, dtype=np.int64), n)
        t1 = time.perf_counter()
        mmd2 = prefix_mmd2(X, kernel, order, offsets, s_tot)
        out["eval_s"] = time.perf_counter() - t1
        out["mean_mmd2"] = float(np.nanmean(mmd2))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return out


def run_features(n: int, *, seed: int) -> dict:
    """The stage before the kernels on SVHN-shaped images: n × 3,072 uint8 pixels
    (32×32×3), scaled to [0, 1] and projected to 128 dims by the seeded PCA, as
    ``schedgen build --dataset svhn`` does. Peak RSS includes the dataset, which
    ``schedgen.data.Dataset`` holds as float32 (N × 3,072 × 4 bytes)."""
    from schedgen.data import Dataset
    from schedgen.features import FeatureSpec, prepare_features
    from schedgen.kernels import pinned_blas

    rng = np.random.default_rng([seed, n, 3072])
    # low-rank images plus noise, so the PCA has structure to find
    basis = rng.integers(0, 64, size=(16, 3072), dtype=np.uint8)
    X = np.empty((n, 3072), dtype=np.uint8)
    for s in range(0, n, 8192):
        w = rng.integers(0, 4, size=(min(8192, n - s), 16), dtype=np.uint8)
        X[s : s + len(w)] = (w.astype(np.uint16) @ basis.astype(np.uint16) // 4).astype(np.uint8)
    images_mb = X.nbytes / 2**20
    ds = Dataset(name="svhn-shaped", split="train", X=X, y=np.zeros(n, np.int64), pixel_max=255)
    del X  # the Dataset keeps its own float32 copy of the raw values, as the readers' do
    t0 = time.perf_counter()
    with pinned_blas():  # as the build runs it
        F = prepare_features(ds, FeatureSpec(seed=seed))
    out = {"config": "features", "n": n, "k": 0, "features_s": time.perf_counter() - t0,
           "dims": [3072, int(F.shape[1])], "images_mb": images_mb, "dataset_mb": ds.X.nbytes / 2**20}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def spawn(config: str, dataset: str, n: int, k: int, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps([config, dataset, n, k, seed])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"config": config, "n": n, "k": k, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {key: p.get(key) for key in ("internal_api", "version", "num_threads", "architecture", "threading_layer")}
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = None
    return info


def table(results: list[dict]) -> str:
    lines = []
    head = f"{'N':>7} {'config':>7} {'seconds':>8} {'x floor':>8} {'loop s':>8} {'RSS MB':>7} {'mean MMD²':>11}"
    lines.append(head)
    lines.append("-" * len(head))
    for n in sorted({r["n"] for r in results}):
        rows = {r["config"]: r for r in results if r["n"] == n}
        floor = rows.get("floor", {}).get("row_sums_s")
        for name in CONFIGS:
            r = rows.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"{n:>7} {name:>7}  error: {r['error']}")
                continue
            if name == "features":
                lines.append(f"{n:>7} {name:>7} {r['features_s']:>8.2f} {'':>8} {'':>8} {r['peak_rss_mb']:>7.0f} "
                             f"{'':>11}  (3072 -> 128 dims; the Dataset's float32 pixels alone: {r['dataset_mb']:.0f} MB)")
                continue
            secs = r.get("total_s", r["row_sums_s"] if name == "floor" else r.get("eval_s", float("nan")))
            ratio = secs / floor if floor and name in ("floor", "lp", "greedy", "swap") else float("nan")
            loop = r.get("loop_s", float("nan"))
            mmd = r.get("mean_mmd2", float("nan"))
            lines.append(
                f"{n:>7} {name:>7} {secs:>8.2f} {ratio:>8.2f} {loop:>8.2f} {r['peak_rss_mb']:>7.0f} {mmd:>11.4g}"
            )
    sizes = sorted({r["n"] for r in results})
    notes = []
    for r in results:
        if "lp_certified" in r:
            notes.append(f"  N={r['n']}: lp certificate (no HiGHS) at {r['lp_certified']} of {r['solver_calls']} steps")
        if "columns" in r:
            notes.append(f"  N={r['n']}: {r['config']} computed {r['columns'] / max(r['solver_calls'], 1):.1f} full columns per batch")
    if notes:
        lines.append("")
        lines.extend(notes)
    if len(sizes) > 1:
        lines.append("")
        lines.append("growth: exponent b of seconds ~ N^b between consecutive sizes")
        for name in ("floor", "lp", "greedy", "swap"):
            parts = []
            for a, b in zip(sizes, sizes[1:]):
                ra = [r for r in results if r["n"] == a and r["config"] == name and "error" not in r]
                rb = [r for r in results if r["n"] == b and r["config"] == name and "error" not in r]
                if ra and rb:
                    ta = ra[0].get("total_s", ra[0]["row_sums_s"])
                    tb = rb[0].get("total_s", rb[0]["row_sums_s"])
                    parts.append(f"{a}->{b}: {math.log(tb / ta) / math.log(b / a):.2f}")
            if parts:
                lines.append(f"  {name:>7}: " + ", ".join(parts))
    return "\n".join(lines)


def growth(results: list[dict]) -> dict:
    out = {}
    sizes = sorted({r["n"] for r in results})
    for name in ("floor", "lp", "greedy", "swap"):
        pts = {}
        for r in results:
            if r["config"] == name and "error" not in r:
                pts[r["n"]] = r.get("total_s", r["row_sums_s"])
        out[name] = {
            f"{a}->{b}": math.log(pts[b] / pts[a]) / math.log(b / a)
            for a, b in zip(sizes, sizes[1:])
            if a in pts and b in pts
        }
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic", help="synthetic (default), svhn, or npz:PATH")
    ap.add_argument("--n", default=None, help="comma-separated sample counts (default 4096,16384,73257)")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solvers", default="lp,greedy,swap")
    ap.add_argument("--quick", action="store_true", help="N in {2048, 4096}: a small run")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        config, dataset, n, k, seed = json.loads(args.worker)
        print(json.dumps(run_one(config, dataset, n, k, seed)))
        return
    if args.n:
        sizes = [int(v) for v in args.n.split(",")]
    else:
        sizes = [2048, 4096] if args.quick else [4096, 16384, SVHN_N]
    solvers = [s for s in args.solvers.split(",") if s]
    info = machine()
    results = []
    t_start = time.perf_counter()
    for n in sizes:
        stages = ("features",) if args.dataset == "synthetic" else ()  # a real dataset has its own
        for config in (*stages, "floor", *solvers, "random"):
            r = spawn(config, args.dataset, n, args.k, args.seed)
            results.append(r)
            secs = r.get("total_s", r.get("row_sums_s", r.get("features_s")))
            msg = r.get("error") or f"{secs:.2f} s, {r['peak_rss_mb']:.0f} MB"
            print(f"  N={n:>6} {config:>7}: {msg}", flush=True)
    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print()
    print(table(results))
    doc = {
        "benchmark": "mmd_scale",
        "dataset": args.dataset,
        "k": args.k,
        "seed": args.seed,
        "sizes": sizes,
        "machine": info,
        "wall_s": time.perf_counter() - t_start,
        "results": results,
        "growth_exponent": growth(results),
        "note": "each configuration ran in a fresh subprocess; 'x floor' = seconds / the floor's "
        "row_sums seconds at the same N, measured in the same run",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
