"""The SVM-generalised update against SGD on the same hinge loss (digits, a small MLP).

Model: MLP 64 -> 32 -> 10 (ReLU; the paper's dense layer had 30 units), float32,
``torch.manual_seed(seed)`` right before it is built, so every arm of a seed starts from
the same weights. Loss for every arm (and for the SVM's targets): the one-vs-rest hinge
``mean_ij max(0, 1 - y_ij f_j(x_i))``, ``y_ij = +1`` for the label, ``-1`` otherwise (the
paper: "the average hinge loss over all output nodes"). Batches: consecutive slices of
``np.random.default_rng([seed, epoch]).permutation(N)`` -- the same order in every arm.

Arms:

* ``svm``        ``schedgen.optim.SVMUpdate(model)`` with the paper's settings (C = 1,
                 step 0.1; ε = 1), batch 64 (640 QP variables), no threshold;
* ``svm-bound``  the same with ``threshold=T`` and the text's rule (skip the update,
                 double the batch, C <- 0.1 C), the batch size capped at 128; the trainer
                 reads ``requested_batch_size`` (no sampler). The paper gives no threshold:
                 T = 13 was set from a pilot run of ``svm`` on seed 0 (bound 12.4-12.9 over
                 its first three epochs), so the rule fires as the bound grows. Fewer seeds
                 (it is the slowest arm);
* ``sgd-lrX``    plain SGD (no momentum, no weight decay) at learning rates X, batch 64, on
                 the same hinge loss, for more epochs (an SGD epoch is cheap). The best
                 learning rate is chosen by final *training* accuracy (not test).

Reported per arm over seeds: epochs to a training-accuracy target (first epoch whose
full-training-set accuracy reaches it; "not reached" counts are shown), test accuracy at
the SVM's last epoch (same number of epochs for every arm) and at the arm's own last
epoch, training seconds per epoch (the update loop only, both arms measured in the same
run, seed by seed with the arms in turn, ``torch.set_num_threads(1)``) and their ratio. Paired differences per seed with 95%
t-intervals (helpers from ``train_compare.py``).

Run::

    python benchmarks/svm_compare.py            # 5 seeds; ~10-15 min on 2 shared cores
    python benchmarks/svm_compare.py --quick    # smoke run, results to a temp dir

Writes ``benchmarks/results/svm_compare.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_compare import Split, _git_commit, scaled, t_interval  # noqa: E402

from schedgen.data import load_dataset  # noqa: E402
from schedgen.optim import SVMUpdate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def hinge(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One-vs-rest hinge, mean over samples and outputs."""
    s = -torch.ones_like(out)
    s[torch.arange(len(y)), y] = 1.0
    return torch.clamp(1.0 - s * out, min=0.0).mean()


def make_model(d: int, hidden: int, k: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the same initialisation in every arm of a seed
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))


def evaluate(model, X, y, Xt, yt) -> dict:
    with torch.no_grad():
        out = model(X)
        return {"train_acc": float((out.argmax(1) == y).double().mean()), "train_hinge": float(hinge(out, y)),
                "test_acc": float((model(Xt).argmax(1) == yt).double().mean())}


def run_arm(arm: str, seed: int, epochs: int, data, args) -> dict:
    X, y, Xt, yt = data
    n = len(y)
    model = make_model(X.shape[1], args.hidden, int(y.max()) + 1, seed)
    svm = None
    if arm.startswith("svm"):
        kw = dict(threshold=args.threshold, max_batch_size=args.max_batch) if arm == "svm-bound" else {}
        svm = SVMUpdate(model, C=args.C, epsilon=args.epsilon, step=args.step, **kw)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=float(arm.split("lr")[1]))
    size = args.batch
    hist = {k: [] for k in ("train_acc", "train_hinge", "test_acc", "seconds", "batch_size", "C", "bound",
                            "skipped")}
    for epoch in range(epochs):
        perm = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
        t0 = time.perf_counter()
        start, bounds, skipped = 0, [], 0
        while start < n:
            idx = perm[start : start + size]
            start += len(idx)
            if svm is not None:
                res = svm.step(X[idx], y[idx])
                bounds.append(res.bound)
                skipped += not res.applied
                if res.requested_batch_size is not None:
                    size = res.requested_batch_size  # the trainer serves what the rule asks for
            else:
                opt.zero_grad(set_to_none=True)
                hinge(model(X[idx]), y[idx]).backward()
                opt.step()
        hist["seconds"].append(time.perf_counter() - t0)
        for key, v in evaluate(model, X, y, Xt, yt).items():
            hist[key].append(v)
        hist["batch_size"].append(size)
        hist["C"].append(svm.C if svm is not None else None)
        hist["bound"].append(float(np.mean(bounds)) if bounds else None)
        hist["skipped"].append(skipped)
    return hist


def epochs_to(acc: list[float], target: float) -> int | None:
    """1-based epoch at which the training accuracy first reaches ``target``."""
    return next((e + 1 for e, a in enumerate(acc) if a >= target), None)


def summarize(runs: dict, args) -> dict:
    out = {}
    for arm, rs in runs.items():
        reach = [epochs_to(r["train_acc"], args.target) for r in rs]
        got = [e for e in reach if e is not None]
        out[arm] = {
            "seeds": len(rs),
            "epochs_to_target": reach,
            "epochs_to_target_median": float(np.median(got)) if got else None,
            "reached": f"{len(got)}/{len(rs)}",
            "test_acc_at_common": t_interval([100 * r["test_acc"][args.svm_epochs - 1] for r in rs]),
            "test_acc_final": t_interval([100 * r["test_acc"][-1] for r in rs]),
            "train_acc_final": t_interval([100 * r["train_acc"][-1] for r in rs]),
            "seconds_per_epoch": t_interval([float(np.mean(r["seconds"])) for r in rs]),
            "epochs": len(rs[0]["train_acc"]),
        }
    return out


def paired(runs: dict, a: str, b: str, key, args) -> dict:
    m = min(len(runs[a]), len(runs[b]))
    return t_interval([key(runs[a][s]) - key(runs[b][s]) for s in range(m)])


def fmt(ci: dict, dg: int = 2) -> str:
    return f"{ci['mean']:.{dg}f} ± {ci['hw']:.{dg}f}" if np.isfinite(ci["hw"]) else f"{ci['mean']:.{dg}f}"


def markdown(result: dict) -> str:
    cfg, summ = result["config"], result["summary"]
    arms = list(summ)
    lines = [
        "# SVM-generalised update vs SGD on the same hinge loss (digits)", "",
        f"MLP 64→{cfg['hidden']}→10 (ReLU), float32, one-vs-rest hinge loss, batch {cfg['batch']}, "
        f"seeds {cfg['seeds']} (svm-bound: first {cfg['bound_seeds']}), same initialisation and batch order per "
        f"seed in every arm. SVM: C = {cfg['C']}, ε = {cfg['epsilon']}, step {cfg['step']}, "
        f"{cfg['svm_epochs']} epochs; svm-bound: threshold {cfg['threshold']}, text rule, batch cap "
        f"{cfg['max_batch']}. SGD: plain, lr in {cfg['lrs']}, {cfg['sgd_epochs']} epochs. Cells: mean ± 95% "
        "t half-width over seeds.", "",
        f"Command: `{cfg['command']}`  ", f"Wall time: {result['wall_seconds']} s on {cfg['machine']}.", "",
        f"| Arm | epochs | epochs to {100 * cfg['target']:.0f}% train acc (median; reached) | "
        f"test acc % after {cfg['svm_epochs']} epochs | final test acc % | final train acc % | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        s = summ[a]
        med = "—" if s["epochs_to_target_median"] is None else f"{s['epochs_to_target_median']:g}"
        lines.append(f"| {a} | {s['epochs']} | {med} ({s['reached']}) | {fmt(s['test_acc_at_common'])} | "
                     f"{fmt(s['test_acc_final'])} | {fmt(s['train_acc_final'])} | "
                     f"{fmt(s['seconds_per_epoch'], 3)} |")
    c = result["comparison"]
    lines += ["", f"Best SGD learning rate by final training accuracy: **{c['best_sgd']}**.", "",
              "Paired differences (per seed, 95% t-interval):", ""]
    for key, ci in c["paired"].items():
        lines.append(f"- {key}: {ci['mean']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]")
    lines += ["", f"Seconds per epoch, svm / {c['best_sgd']}: **{c['time_ratio']:.0f}×** "
              f"(svm {summ['svm']['seconds_per_epoch']['mean']:.2f} s, "
              f"{c['best_sgd']} {summ[c['best_sgd']]['seconds_per_epoch']['mean']:.3f} s; same run).", ""]
    if "svm-bound" in result["runs"]:
        lines.append("svm-bound, seed by seed (per epoch: batch size at its end, C, mean bound, skipped updates):")
        lines.append("")
        for s, r in enumerate(result["runs"]["svm-bound"]):
            per = "; ".join(f"{b}/{C:.0e}/{bd:.1f}/{sk}" for b, C, bd, sk in
                            zip(r["batch_size"], r["C"], r["bound"], r["skipped"]))
            lines.append(f"- seed {s}: {per}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--bound-seeds", type=int, default=5, help="seeds of the svm-bound arm (the first ones)")
    ap.add_argument("--svm-epochs", type=int, default=5)
    ap.add_argument("--sgd-epochs", type=int, default=60)
    ap.add_argument("--lrs", default="0.5,2,8", help="SGD learning rates")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--threshold", type=float, default=13.0)
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--target", type=float, default=0.95, help="training-accuracy target (fraction)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 SVM / 5 SGD epochs, results to a temp dir")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.bound_seeds, args.svm_epochs, args.sgd_epochs = 2, 1, 2, 5
    lrs = [float(v) for v in args.lrs.split(",")]
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="svm_compare_")) if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    t_start = time.perf_counter()
    tr, te = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    train, test = Split(scaled(tr), tr.y.astype(np.int64)), Split(scaled(te), te.y.astype(np.int64))
    data = tuple(torch.from_numpy(a) for a in (train.X, train.y, test.X, test.y))
    sgd_arms = [f"sgd-lr{lr:g}" for lr in lrs]
    plan = [("svm", args.seeds, args.svm_epochs), ("svm-bound", args.bound_seeds, args.svm_epochs)]
    plan += [(a, args.seeds, args.sgd_epochs) for a in sgd_arms]
    runs: dict[str, list] = {arm: [] for arm, _, _ in plan}
    # Seed by seed, every arm in turn: the machine's load (shared cores) hits both alike.
    for seed in range(args.seeds):
        for arm, n_seeds, epochs in plan:
            if seed >= n_seeds:
                continue
            t = time.perf_counter()
            r = run_arm(arm, seed, epochs, data, args)
            runs[arm].append(r)
            print(f"{arm:12s} seed {seed}: train acc {r['train_acc'][-1]:.4f} test acc {r['test_acc'][-1]:.4f} "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
    summary = summarize(runs, args)
    best = max(sgd_arms, key=lambda a: (summary[a]["train_acc_final"]["mean"], -lrs[sgd_arms.index(a)]))
    k = args.svm_epochs - 1
    comparison = {
        "best_sgd": best,
        "paired": {
            f"test acc % after {args.svm_epochs} epochs, svm − {best}": paired(
                runs, "svm", best, lambda r: 100 * r["test_acc"][k], args),
            f"final test acc % (svm after {args.svm_epochs}, {best} after {args.sgd_epochs} epochs), svm − {best}":
                paired(runs, "svm", best, lambda r: 100 * r["test_acc"][-1], args),
            f"train acc % after {args.svm_epochs} epochs, svm − {best}": paired(
                runs, "svm", best, lambda r: 100 * r["train_acc"][k], args),
            f"test acc % after {args.svm_epochs} epochs, svm-bound − svm": paired(
                runs, "svm-bound", "svm", lambda r: 100 * r["test_acc"][k], args),
        },
        "time_ratio": summary["svm"]["seconds_per_epoch"]["mean"] / summary[best]["seconds_per_epoch"]["mean"],
    }
    result = {
        "config": {"dataset": "digits", "n_train": len(train.y), "n_test": len(test.y), "hidden": args.hidden,
                   "batch": args.batch, "seeds": list(range(args.seeds)), "bound_seeds": args.bound_seeds,
                   "svm_epochs": args.svm_epochs, "sgd_epochs": args.sgd_epochs, "lrs": lrs, "C": args.C,
                   "epsilon": args.epsilon, "step": args.step, "threshold": args.threshold,
                   "max_batch": args.max_batch, "target": args.target, "quick": args.quick,
                   "command": " ".join(["python benchmarks/svm_compare.py",
                                        *(sys.argv[1:] if argv is None else argv)]),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), load average at start "
                              f"{load:.2f}, torch threads 1",
                   "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                "numpy": np.__version__},
                   "git_commit": _git_commit()},
        "summary": summary, "comparison": comparison, "runs": runs,
    }
    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    md = markdown(result)
    (out_dir / "svm_compare.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "svm_compare.md").write_text(md)
    print(md)
    print(f"wrote {out_dir / 'svm_compare.json'} and svm_compare.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
