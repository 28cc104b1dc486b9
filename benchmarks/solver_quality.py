"""Solver quality and speed.

Quality: on brute-forced instances (random subsets of sklearn's digits, pixels / 16,
n = 36..40 unselected samples, k = 4, a nonempty scheduled set P, RBF kernel with the
median heuristic 2σ² = median squared distance over distinct pairs, Z built as in
DESIGN.md §1 with the exact factor-2 expansion), the ratio MMD²(solver's batch) /
MMD²(exact optimum) for ``lp``, ``greedy``, ``swap`` and a seeded random batch. MMD² is
computed directly from its definition (kernel sums), not from mᵀZm.

Speed: one call of each solver at n = 20,000, k = 50, with ``block`` backed by random
128-d Gaussian points and an RBF kernel computed in NumPy (and Z's diagonal built from
real row sums, P empty and P nonempty).

Usage::

    python benchmarks/solver_quality.py [--instances 400] [--seed 0] [--scale-n 20000]
                                        [--no-scale]

Writes ``benchmarks/results/solver_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from schedgen.methods.solvers import SOLVERS, BatchProblem, objective, solve_lp_relaxation
from schedgen.methods.solvers._oracles import brute_force

DESIGN_CLAIM = {"lp": 1.48, "greedy": 1.02, "swap": 1.005, "random": 1.73}


# --------------------------------------------------------------------------- quality


def digits_instance(rng: np.random.Generator, n: int, n_p: int, k: int):
    """A digits subset: returns (problem, K over D, P positions, Q positions)."""
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64) / 16.0
    idx = rng.choice(X.shape[0], size=n + n_p, replace=False)
    Xs = X[idx]
    sq = (Xs**2).sum(1)
    D2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * Xs @ Xs.T, 0.0)
    iu = np.triu_indices(n + n_p, 1)
    two_sigma2 = float(np.median(D2[iu]))
    K = np.exp(-D2 / two_sigma2)
    N = n + n_p
    P = np.arange(n_p)
    Q = np.arange(n_p, N)
    s_tot = K[Q].sum(1)
    s_p = K[np.ix_(Q, P)].sum(1)
    c = (n_p + k) / N
    Z = K[np.ix_(Q, Q)].copy()
    np.fill_diagonal(Z, np.diag(K)[Q] - 2.0 * c * s_tot + 2.0 * s_p)
    return BatchProblem.from_dense(Z, k), K, P, Q


def mmd2(K: np.ndarray, A: np.ndarray, R: np.ndarray) -> float:
    """‖mean φ(A) − mean φ(R)‖² from kernel sums (float64)."""
    return float(
        K[np.ix_(A, A)].mean() - 2.0 * K[np.ix_(A, R)].mean() + K[np.ix_(R, R)].mean()
    )


def batch_mmd2(K, P, Q, positions) -> float:
    inb = np.zeros(Q.size, bool)
    inb[np.asarray(positions)] = True
    return mmd2(K, np.concatenate([P, Q[inb]]), Q[~inb])


def quality(n_instances: int, seed: int) -> dict:
    k = 4
    names = ["lp", "greedy", "swap", "random"]
    ratios = {s: [] for s in names}
    times = {s: [] for s in names}
    lp_fractional = 0
    opt_times = []
    for t in range(n_instances):
        rng = np.random.default_rng([seed, t])
        n = int(rng.integers(36, 41))
        n_p = k * int(rng.integers(1, 11))
        problem, K, P, Q = digits_instance(rng, n, n_p, k)
        t0 = time.perf_counter()
        best = batch_mmd2(K, P, Q, brute_force(problem))
        opt_times.append(time.perf_counter() - t0)
        for s in names:
            t0 = time.perf_counter()
            if s == "random":
                pos = np.random.default_rng([seed, t, 1]).choice(n, size=k, replace=False)
            else:
                pos = SOLVERS[s](problem)
            times[s].append(time.perf_counter() - t0)
            ratios[s].append(batch_mmd2(K, P, Q, pos) / best)
        m = solve_lp_relaxation(problem).m
        if np.abs(2.0 * m - np.round(2.0 * m)).max() > 1e-7:
            lp_fractional += 1
    out = {
        "instances": n_instances,
        "k": k,
        "n_range": [36, 40],
        "seed": seed,
        "brute_force_seconds_mean": float(np.mean(opt_times)),
        "lp_optimum_not_half_integral": lp_fractional,
        "solvers": {},
    }
    for s in names:
        r = np.asarray(ratios[s])
        out["solvers"][s] = {
            "ratio_mean": float(r.mean()),
            "ratio_median": float(np.median(r)),
            "ratio_max": float(r.max()),
            "exact_optimum_hits": int((r <= 1.0 + 1e-9).sum()),
            "seconds_per_call_mean": float(np.mean(times[s])),
            "design_claim": DESIGN_CLAIM[s],
        }
    return out


# --------------------------------------------------------------------------- scale


def rbf_scale_problem(n: int, n_p: int, k: int, d: int = 128, seed: int = 0):
    """n unselected of N = n + n_p random Gaussian points, RBF with the median heuristic.

    Returns (problem, calls) where ``calls`` records the shape of every block request.
    """
    rng = np.random.default_rng([seed, n, n_p])
    N = n + n_p
    X = rng.standard_normal((N, d))
    sq = (X**2).sum(1)
    sub = rng.choice(N, size=min(N, 2000), replace=False)
    D2s = np.maximum(sq[sub, None] + sq[None, sub] - 2.0 * X[sub] @ X[sub].T, 0.0)
    gamma = 1.0 / float(np.median(D2s[np.triu_indices(sub.size, 1)]))

    def kern(r, c):
        return np.exp(-gamma * np.maximum(sq[r, None] + sq[None, c] - 2.0 * X[r] @ X[c].T, 0.0))

    s_tot = np.zeros(N)
    s_p = np.zeros(N)
    everything = np.arange(N)
    for s in range(0, N, 1024):
        blk = kern(everything[s : s + 1024], everything)
        s_tot[s : s + 1024] = blk.sum(1)
        s_p[s : s + 1024] = blk[:, :n_p].sum(1)
    Q = np.arange(n_p, N)
    c = (n_p + k) / N
    diag = 1.0 - 2.0 * c * s_tot[Q] + 2.0 * s_p[Q]
    calls: list[tuple[int, int]] = []

    def block(rows, cols):
        calls.append((len(rows), len(cols)))
        return kern(Q[rows], Q[cols])

    return BatchProblem(diag=diag, neg=np.zeros(n), k=k, block=block), calls


def scale(n: int, k: int) -> dict:
    out = {}
    for n_p in (0, n // 4):
        problem, calls = rbf_scale_problem(n, n_p, k)
        SOLVERS["greedy"](problem)  # warm-up (BLAS threads, first HiGHS object)
        SOLVERS["lp"](problem)
        row = {}
        for s in ("lp", "greedy", "swap"):
            calls.clear()
            t0 = time.perf_counter()
            pos = SOLVERS[s](problem)
            dt = time.perf_counter() - t0
            row[s] = {
                "seconds": dt,
                "objective": objective(problem, pos),
                "block_calls": len(calls),
                "largest_block": int(max(a * b for a, b in calls)),
                "kernel_entries": int(sum(a * b for a, b in calls)),
            }
        lp = solve_lp_relaxation(problem)
        row["lp"]["candidates"] = int(lp.candidates.size)
        row["lp"]["hiGHS_solves"] = lp.solves
        row["lp"]["pair_rows"] = lp.pair_rows
        out[f"n={n},k={k},nP={n_p}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-n", type=int, default=20000)
    ap.add_argument("--no-scale", action="store_true")
    args = ap.parse_args()

    res = {"quality": quality(args.instances, args.seed)}
    q = res["quality"]
    print(
        f"Quality: {q['instances']} digits instances, n = 36..40, k = 4, RBF median "
        f"bandwidth, P nonempty; MMD² ratio to the brute-forced optimum"
    )
    print(f"{'solver':<8} {'mean':>7} {'median':>7} {'max':>7} {'optimal':>8} {'ms/call':>8} {'DESIGN':>7}")
    for s, r in q["solvers"].items():
        print(
            f"{s:<8} {r['ratio_mean']:7.3f} {r['ratio_median']:7.3f} {r['ratio_max']:7.3f} "
            f"{r['exact_optimum_hits']:>5}/{q['instances']:<2} "
            f"{1e3 * r['seconds_per_call_mean']:8.2f} {r['design_claim']:7.3f}"
        )
    print(f"LP optima that are not half-integral: {q['lp_optimum_not_half_integral']}/{q['instances']}")
    if not args.no_scale:
        res["scale"] = scale(args.scale_n, 50)
        print("\nSpeed: one call, random 128-d Gaussian points, RBF in NumPy")
        for key, row in res["scale"].items():
            for s, r in row.items():
                print(
                    f"{key:<24} {s:<7} {r['seconds']:8.3f} s  block calls {r['block_calls']:>4}  "
                    f"largest {r['largest_block']:>8}  entries {r['kernel_entries']:>9}"
                )
    out = Path(__file__).resolve().parent / "results" / "solver_quality.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
