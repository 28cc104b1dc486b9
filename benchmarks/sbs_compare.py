"""Stochastic batch size (SBS) against SGD on digits: the paper's Table 4 grid.

The claim under test (papers/stochastic-batch-size.txt, Table 4): SBS
(``schedgen.optim.StochasticBatchSizeSGD``, Algorithm 2 with the paper's α = 0.1,
λ = −4) beats SGD at every universal batch size |β| ∈ {16, 32, 64, 128}, and its gain
grows as the training set shrinks (1/2, 1/4, 1/8 of CIFAR-10: +0.3 to +1.5 pp).

Grid: batch size × training fraction {1, 1/2, 1/4, 1/8} × seeds. For seed s and fraction
f the training subset is ``round(f·N)`` samples of the digits train split drawn with
``np.random.default_rng([s, 1/f])`` (a new subset per trial, as the paper); the test split
is the full digits test split (360 samples). Both arms of a cell replay the same batches,
a multi-epoch schedgen ``random`` schedule (``schedgen.build.build``, seed s, a fresh
permutation per epoch) over that subset read through ``ScheduleBatchSampler``, and start
from the same initialisation (``torch.manual_seed(s)`` right before the model is built).
A cell with fraction 1/F trains for F·E epochs, so every cell of a batch size gets the
same number of steps (about E epochs of the full split): fewer data, not less training.

Model and training: MLP 64→64→64→64→10 (ReLU; eight parameter tensors, so eq. 21 has
eight groups), cross-entropy, no momentum and no weight decay (Algorithm 2 defines
neither; the paper's Table 4 runs use momentum 0 at |β| = 16), CPU, one thread. The
learning rate follows the paper's sigmoid annealing from lr0 to lr0/100 over the run,
``lr(e) = lr0/100 + (lr0 − lr0/100) / (1 + exp(10·(e/(F·E−1) − 1/2)))``, with
``lr0 = 0.1·sqrt(|β|/16)`` (the paper's 0.1 at |β| = 16, square-root batch scaling):
fixed before any run, identical for both arms, not tuned. SBS calls ``end_epoch()``
after every epoch (Algorithm 2's reset). Metric: test accuracy averaged over the last
10% of epochs (the paper's), and its paired difference SBS − SGD per seed with a 95%
t-interval. "Gain grows as data shrink" is tested directly: per batch size, the paired
difference of the gains, gain(1/8) − gain(1).

Run::

    python benchmarks/sbs_compare.py               # 10 seeds, E = 30 (~10-12 min on 2 shared cores)
    python benchmarks/sbs_compare.py --quick       # smoke run: 2 seeds, 4 epochs, results to a temp dir

Writes ``benchmarks/results/sbs_compare.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_compare import RESULTS, Split, _git_commit, scaled, t_interval  # noqa: E402

from schedgen.build import BuildConfig, build  # noqa: E402
from schedgen.data import load_dataset  # noqa: E402
from schedgen.optim import StochasticBatchSizeSGD  # noqa: E402
from schedgen.torch import ScheduleBatchSampler  # noqa: E402

BATCH_SIZES = (16, 32, 64, 128)
FRACTIONS = (1, 2, 4, 8)  # denominators: 1, 1/2, 1/4, 1/8 of the training split
ARMS = ("sgd", "sbs")


class CountingSBS(StochasticBatchSizeSGD):
    """SBS that counts, per tensor, how many entries its masks updated (a diagnostic only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updated: list[int] | None = None
        self.drawn: list[int] | None = None

    def sample_masks(self, probs):
        masks = super().sample_masks(probs)
        if self.updated is None:
            self.updated, self.drawn = [0] * len(masks), [0] * len(masks)
        for i, m in enumerate(masks):
            self.updated[i] += int(m.sum())
            self.drawn[i] += m.numel()
        return masks


def mlp(d: int, hidden: tuple[int, ...], c: int) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip((d, *hidden), hidden):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], c))


def lr_at(epoch: int, epochs: int, lr0: float) -> float:
    """The paper's sigmoid annealing from lr0 to lr0/100."""
    lo = lr0 / 100.0
    x = epoch / max(epochs - 1, 1) - 0.5
    return lo + (lr0 - lo) / (1.0 + math.exp(10.0 * x))


def train_one(arm: str, X: torch.Tensor, y: torch.Tensor, Xt: torch.Tensor, yt: torch.Tensor,
              sampler: ScheduleBatchSampler, seed: int, k: int, frac_den: int, args) -> dict:
    torch.manual_seed(seed)  # the same initialisation in both arms
    model = mlp(X.shape[1], args.hidden, int(yt.max()) + 1)
    lr0 = args.lr * math.sqrt(k / 16)
    if arm == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr0)
    else:
        opt = CountingSBS(model.parameters(), lr=lr0, alpha=args.alpha, lam=args.lam, seed=seed)
    loss_fn = nn.CrossEntropyLoss()
    epochs = args.epochs * frac_den
    acc, discarded, steps = [], 0, 0
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch, epochs, lr0)
        sampler.set_epoch(epoch)
        model.train()
        for batch in sampler:
            idx = torch.as_tensor(batch, dtype=torch.int64)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
            steps += 1
        if arm == "sbs":
            discarded += opt.end_epoch()
        model.eval()
        with torch.no_grad():
            acc.append(100.0 * float((model(Xt).argmax(1) == yt).double().mean()))
    last = max(1, math.ceil(epochs / 10))
    out = {"acc_last10": float(np.mean(acc[-last:])), "acc_final": acc[-1], "acc": [round(a, 3) for a in acc],
           "steps": steps}
    if arm == "sbs":
        out["update_rate"] = [u / n for u, n in zip(opt.updated, opt.drawn)]
        out["discarded_per_epoch"] = discarded / epochs
    return out


def subset(n: int, frac_den: int, seed: int) -> np.ndarray:
    """The training subset of one trial: round(n/frac_den) indices, sorted."""
    m = int(round(n / frac_den))
    return np.sort(np.random.default_rng([seed, frac_den]).choice(n, size=m, replace=False))


def summarize(cells: dict) -> dict:
    out = {}
    for key, runs in cells.items():
        s = {arm: t_interval([r["acc_last10"] for r in runs[arm]]) for arm in ARMS}
        s["diff"] = t_interval([b["acc_last10"] - a["acc_last10"] for a, b in zip(runs["sgd"], runs["sbs"])])
        rates = np.array([r["update_rate"] for r in runs["sbs"]])
        s["sbs_update_rate"] = rates.mean(0).tolist()
        s["sbs_discarded_per_epoch"] = float(np.mean([r["discarded_per_epoch"] for r in runs["sbs"]]))
        out[key] = s
    return out


def gain_trend(cells: dict, k: int) -> dict:
    """Paired over seeds: gain(1/8) − gain(1), gain = SBS − SGD accuracy."""
    def gains(f):
        runs = cells[f"k{k}-f{f}"]
        return np.array([b["acc_last10"] - a["acc_last10"] for a, b in zip(runs["sgd"], runs["sbs"])])
    return t_interval(gains(FRACTIONS[-1]) - gains(FRACTIONS[0]))


def mark(ci: dict) -> str:
    return "" if ci["lo"] <= 0 <= ci["hi"] else " *"


def markdown(result: dict) -> str:
    cfg, summ = result["config"], result["summary"]
    L = ["# Stochastic batch size vs SGD (digits)", ""]
    L.append(
        f"MLP {cfg['n_features']}→{'→'.join(map(str, cfg['hidden']))}→{cfg['n_classes']} (ReLU), "
        f"{cfg['epochs']}·F epochs at fraction 1/F (the same number of steps in every cell of a batch size), "
        f"{len(cfg['seeds'])} seeds, sigmoid-annealed lr from lr0 = "
        f"{cfg['lr']}·sqrt(|β|/16) to lr0/100 (both arms), no momentum, no weight decay. SBS: α = "
        f"{cfg['alpha']}, λ = {cfg['lam']}, plain η (Algorithm 2), end_epoch() after every epoch. Both arms "
        f"replay the same schedgen `random` schedule and start from the same weights. Training subsets: "
        f"a fresh random subset of the {cfg['n_train_full']}-sample train split per seed; test: the "
        f"{cfg['n_test']}-sample test split (one sample = {100 / cfg['n_test']:.2f} pp).")
    L += ["", f"Command: `{cfg['command']}`  ", f"Wall time: {result['wall_seconds']:.0f} s on {cfg['machine']}.", ""]
    L += ["Test accuracy (%), mean over the last 10% of epochs, mean ± 95% t-half-width over seeds; "
          "Δ = SBS − SGD paired per seed [95% interval] (* = interval excludes 0):", ""]
    L.append("| |β| | fraction | n train | SGD | SBS | Δ (pp) |")
    L.append("|---|---|---|---|---|---|")
    for k in cfg["batch_sizes"]:
        for f in cfg["fractions"]:
            s = summ[f"k{k}-f{f}"]
            d = s["diff"]
            L.append(f"| {k} | 1/{f} | {s['n_train']} | {s['sgd']['mean']:.2f} ± {s['sgd']['hw']:.2f} | "
                     f"{s['sbs']['mean']:.2f} ± {s['sbs']['hw']:.2f} | "
                     f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]{mark(d)} |")
    L += ["", "Δ as the paper's Table 4 grid (rows |β|, columns training fraction):", ""]
    L.append("| |β| | " + " | ".join(f"1/{f}" for f in cfg["fractions"]) + " | gain(1/8) − gain(1) |")
    L.append("|---|" + "---|" * (len(cfg["fractions"]) + 1))
    for k in cfg["batch_sizes"]:
        cells = [f"{summ[f'k{k}-f{f}']['diff']['mean']:+.2f}{mark(summ[f'k{k}-f{f}']['diff'])}"
                 for f in cfg["fractions"]]
        t = result["trend"][str(k)]
        L.append(f"| {k} | " + " | ".join(cells) + f" | {t['mean']:+.2f} [{t['lo']:+.2f}, {t['hi']:+.2f}]{mark(t)} |")
    names = result["tensor_names"]
    L += ["", "SBS diagnostics: fraction of each tensor's entries updated per step (mean over steps and "
          "seeds; SGD = 1), and entries whose pending gradient end_epoch() discarded, per epoch:", ""]
    L.append("| |β| | fraction | " + " | ".join(names) + " | discarded / epoch |")
    L.append("|---|---|" + "---|" * (len(names) + 1))
    for k in cfg["batch_sizes"]:
        for f in cfg["fractions"]:
            s = summ[f"k{k}-f{f}"]
            L.append(f"| {k} | 1/{f} | " + " | ".join(f"{r:.3f}" for r in s["sbs_update_rate"])
                     + f" | {s['sbs_discarded_per_epoch']:.0f} |")
    L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30, help="E: epochs at fraction 1 (F·E at 1/F)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1, help="lr0 at |β| = 16 (scaled by sqrt(|β|/16))")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--lam", type=float, default=-4.0)
    ap.add_argument("--hidden", default="64,64,64")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 4 epochs, results to a temp dir")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 2, 4
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 for a t-interval")
    args.hidden = tuple(int(h) for h in args.hidden.split(","))
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    load_at_start = os.getloadavg()
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="sbs_compare_quick_")) if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sbs_compare_", dir="/tmp"))
    try:
        tr, te = load_dataset("digits", split="train"), load_dataset("digits", split="test")
        train = Split(scaled(tr), tr.y.astype(np.int64))
        test = Split(scaled(te), te.y.astype(np.int64))
        Xt, yt = torch.from_numpy(test.X), torch.from_numpy(test.y)
        n = len(train.y)
        cells: dict[str, dict[str, list]] = {f"k{k}-f{f}": {a: [] for a in ARMS} for k in BATCH_SIZES for f in FRACTIONS}
        n_train: dict[str, int] = {}
        for seed in range(args.seeds):
            for f in FRACTIONS:
                idx = subset(n, f, seed)
                X, y = torch.from_numpy(train.X[idx]), torch.from_numpy(train.y[idx])
                npz = tmp / f"digits-s{seed}-f{f}.npz"
                np.savez(npz, X=train.X[idx], y=train.y[idx], X_test=test.X, y_test=test.y)
                for k in BATCH_SIZES:
                    res = build(BuildConfig(method="random", dataset=f"npz:{npz}", k=k, epochs=args.epochs * f,
                                            seed=seed, out_dir=tmp / "schedules"))
                    sampler = ScheduleBatchSampler(res.path)
                    if sampler.schedule.n_samples != len(idx):
                        raise RuntimeError(f"schedule over {sampler.schedule.n_samples} samples, subset {len(idx)}")
                    key = f"k{k}-f{f}"
                    n_train[key] = len(idx)
                    line = []
                    for arm in ARMS:
                        t0 = time.perf_counter()
                        r = train_one(arm, X, y, Xt, yt, sampler, seed, k, f, args)
                        r["seconds"] = round(time.perf_counter() - t0, 3)
                        r["seed"] = seed
                        cells[key][arm].append(r)
                        line.append(f"{arm} {r['acc_last10']:6.2f}% ({r['seconds']:.1f}s)")
                    print(f"seed {seed} |β|={k:<3} 1/{f}: " + "  ".join(line), flush=True)
        summary = summarize(cells)
        for key, s in summary.items():
            s["n_train"] = n_train[key]
        names = [name for name, _ in mlp(train.X.shape[1], args.hidden, 10).named_parameters()]
        result = {
            "config": {
                "dataset": "digits", "n_features": int(train.X.shape[1]), "n_classes": int(yt.max()) + 1,
                "n_train_full": n, "n_test": len(test.y), "hidden": list(args.hidden), "epochs": args.epochs,
                "seeds": list(range(args.seeds)), "batch_sizes": list(BATCH_SIZES), "fractions": list(FRACTIONS),
                "lr": args.lr, "lr_rule": "lr0 = lr*sqrt(k/16); sigmoid annealing lr0 -> lr0/100",
                "alpha": args.alpha, "lam": args.lam, "momentum": 0.0, "weight_decay": 0.0,
                "command": " ".join(["python benchmarks/sbs_compare.py", *(sys.argv[1:] if argv is None else argv)]),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
                           f"load average at start {load_at_start[0]:.2f}",
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "numpy": np.__version__},
                "git_commit": _git_commit(),
            },
            "tensor_names": names,
            "summary": summary,
            "trend": {str(k): gain_trend(cells, k) for k in BATCH_SIZES},
            "runs": cells,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    md = markdown(result)
    (out_dir / "sbs_compare.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "sbs_compare.md").write_text(md)
    print()
    print(md)
    print(f"Total wall time: {result['wall_seconds']:.1f} s  (outputs in {out_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
