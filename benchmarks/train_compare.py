"""Do schedules change training? Test error of one small MLP trained on each schedule.

Every arm trains the same model from the same initialisation (``torch.manual_seed(seed)``
right before the model is built) with the same optimiser, learning rate, batch size and
number of epochs; only the batch schedule differs. Each schedule is built with
``schedgen.build.build`` and replayed through ``ScheduleBatchSampler`` in a
``DataLoader(batch_sampler=...)``.

Arms (k = 50, the paper's batch size):

* ``random``     a multi-epoch ``random`` schedule (``epochs=E``, seed = the run's seed):
                 a fresh permutation every epoch, the usual reshuffled SGD;
* ``mmd-lp``     MMD, ``solver="lp"`` (the paper's LP relaxation), one epoch replayed
                 every epoch, as in the paper; deterministic, the same schedule for all seeds;
* ``mmd-swap``   MMD, ``solver="swap"``, idem;
* ``mmd-greedy`` MMD, ``solver="greedy"``, idem;
* ``learn2mix``  the offline learn2mix schedule (``epochs=E``, mixing rate 0.1, seed = the
                 run's seed); its class losses come from schedgen's softmax-regression proxy,
                 not from the MLP being trained.

MMD settings are the library defaults (RBF kernel, median-heuristic bandwidth, exact
coefficients, no PCA on digits); the paper used a Gaussian kernel "with parameter 1"
on ResNet features of much larger images.

Model and training: MLP D -> 128 -> C with ReLU, cross-entropy, SGD with momentum 0.9
and L2 weight decay 5e-4 (both as the MMD paper), fixed learning rate 0.01 (chosen
before any run, not tuned per arm), CPU, ``torch.set_num_threads(1)``. Features are
pixels scaled to [0, 1] (digits / 16); ``npz:`` features are used as given. After
every epoch the full test split is evaluated.

Reported per arm, over seeds (mean and 95% t-interval of the mean): the mean test error
over the E epochs, the final test error, the mean and final test loss (the MMD
paper's Table 1 rows). Each arm is compared with ``random`` by the paired difference
per seed (arm - random, same initialisation), with its 95% t-interval: a difference
whose interval contains 0 is reported as not distinguishable from random.

Imbalanced variant (the learn2mix setting): the training split with classes 0-4 cut to
10% of their samples (a fixed subsample, the same for every seed and arm), the test
split untouched (balanced). Same arms, same settings; per-class and overall test error.

Run::

    python benchmarks/train_compare.py                 # digits, 20 seeds, 35 epochs (~2-3 min)
    python benchmarks/train_compare.py --quick         # smoke run: 2 seeds, 3 epochs
    python benchmarks/train_compare.py --dataset npz:/data/f.npz   # X, y, X_test, y_test
    python benchmarks/train_compare.py --dataset svhn --data-dir /data  # when present (slow)

Writes ``benchmarks/results/train_compare.{json,md,png}`` (``--quick`` writes to a
temporary directory unless ``--out-dir`` is given). Schedule stores go to a temporary
directory under /tmp that is removed at the end, unless ``--schedule-dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, Dataset as TorchDataset

from schedgen.build import BuildConfig, build
from schedgen.data import load_dataset
from schedgen.errors import SchedgenError
from schedgen.losses import itra_match_loss
from schedgen.torch import PairedScheduleBatchSampler, ScheduleBatchSampler

RESULTS = Path(__file__).resolve().parent / "results"
BASE_ARMS = ("random", "mmd-lp", "mmd-swap", "mmd-greedy", "learn2mix", "dpp", "submodular")
#: ITRA arms: the random schedule of the same seed (the same S1 batches as ``random``) with
#: a partner batch S2 per step, loss CE(S1) + λ·ITRA-c(E(S1), E(S2)), E the hidden layer.
ITRA_LAMBDAS = (0.2, 0.6, 1.0)
ITRA_PAIRS = {"rnd": "random", "cls": "class-matched"}
ITRA_ARMS = tuple(f"itra-{p}-{lam}" for p in ITRA_PAIRS for lam in ITRA_LAMBDAS)
ARMS = BASE_ARMS + ITRA_ARMS
COLORS = {"random": "black", "mmd-lp": "tab:red", "mmd-swap": "tab:orange", "mmd-greedy": "tab:purple",
          "learn2mix": "tab:blue", "dpp": "tab:brown", "submodular": "tab:cyan", **{a: c for a, c in zip(ITRA_ARMS, ("#9fd89f", "#4caf50", "#1b5e20",
                                                                       "#f4b6c2", "#e75480", "#8b1a4a"))}}
METRICS = (  # key, label, unit
    ("mean_error", "Mean error (%)", "pp"),
    ("final_error", "Final error (%)", "pp"),
    ("mean_loss", "Mean loss", ""),
    ("final_loss", "Final loss", ""),
)


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    X: np.ndarray  # float32 (n, d), scaled
    y: np.ndarray  # int64 (n,)


def scaled(ds) -> np.ndarray:
    """Pixels to [0, 1] by the dataset's ``pixel_max``; user features as given."""
    X = np.asarray(ds.X, dtype=np.float32)
    return X / np.float32(ds.pixel_max) if ds.pixel_max is not None else X.copy()


def imbalanced_npz(train: Split, test: Split, minority, fraction: float, seed: int, path: Path) -> dict:
    """Write an npz whose train split keeps ``fraction`` of each minority class (fixed subsample)."""
    keep = np.ones(len(train.y), dtype=bool)
    counts = {}
    for c in minority:
        idx = np.flatnonzero(train.y == c)
        n_keep = max(1, int(round(fraction * len(idx))))
        chosen = np.random.default_rng([seed, int(c)]).choice(idx, size=n_keep, replace=False)
        keep[idx] = False
        keep[chosen] = True
        counts[int(c)] = (len(idx), n_keep)
    np.savez(path, X=train.X[keep], y=train.y[keep], X_test=test.X, y_test=test.y)
    return {"path": str(path), "n_train": int(keep.sum()), "kept": {str(c): v for c, v in counts.items()}}


class ArrayDataset(TorchDataset):
    """In-memory tensors; ``__getitems__`` lets the DataLoader fetch a whole batch at once."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.X[i], self.y[i]

    def __getitems__(self, idx):
        t = torch.as_tensor(idx, dtype=torch.int64)
        return self.X[t], self.y[t]


def _as_batch(batch):
    return batch


# --------------------------------------------------------------------------- schedules


def arm_config(arm: str, dataset: str, k: int, epochs: int, seed: int, mixing_rate: float, out_dir,
               data_dir) -> BuildConfig:
    common = dict(dataset=dataset, k=k, split="train", out_dir=out_dir, data_dir=data_dir)
    if arm == "random":
        return BuildConfig(method="random", epochs=epochs, seed=seed, **common)
    if arm.startswith("mmd-"):
        # Deterministic: one schedule (seed 0) for all model seeds, replayed every epoch.
        return BuildConfig(method="mmd", solver=arm[4:], epochs=1, seed=0, **common)
    if arm == "learn2mix":
        return BuildConfig(method="learn2mix", epochs=epochs, seed=seed, mixing_rate=mixing_rate, **common)
    if arm in ("dpp", "submodular"):  # the MMD paper's baselines, seeded by the run's seed
        return BuildConfig(method=arm, epochs=epochs, seed=seed, **common)
    if arm.startswith("itra-"):
        pair = ITRA_PAIRS[arm.split("-")[1]]
        return BuildConfig(method="random", epochs=epochs, seed=seed, pair=pair, **common)
    raise ValueError(f"unknown arm {arm!r}")


def schedule_stats(sampler: ScheduleBatchSampler, y: np.ndarray, n_classes: int) -> dict:
    """Coverage per epoch and how far batch label mixes are from the training set's."""
    s = sampler.schedule
    n = len(y)
    overall = np.bincount(y, minlength=n_classes) / n
    tv, coverage = [], []
    for e in range(s.n_epochs):
        b0, b1 = int(s.epoch_offsets[e]), int(s.epoch_offsets[e + 1])
        idx = s.indices[s.batch_offsets[b0] : s.batch_offsets[b1]]
        coverage.append(len(np.unique(idx)) / n)
        for b in range(b0, b1):
            lab = y[s.indices[s.batch_offsets[b] : s.batch_offsets[b + 1]]]
            tv.append(0.5 * np.abs(np.bincount(lab, minlength=n_classes) / len(lab) - overall).sum())
    return {
        "n_epochs": s.n_epochs,
        "batches_per_epoch": int(s.epoch_offsets[1] - s.epoch_offsets[0]),
        "min_epoch_coverage": float(min(coverage)),
        "mean_batch_label_tv": float(np.mean(tv)),
    }


# --------------------------------------------------------------------------- training


def train_run(train_ds: ArrayDataset, test: Split, sampler: ScheduleBatchSampler, seed: int, epochs: int,
              n_classes: int, args) -> dict:
    """Train one MLP on one schedule; per-epoch test error (%) and loss, final per-class error."""
    torch.manual_seed(seed)  # identical initialisation across arms for a given seed
    d = train_ds.X.shape[1]
    model = nn.Sequential(nn.Linear(d, args.hidden), nn.ReLU(), nn.Linear(args.hidden, n_classes))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(train_ds, batch_sampler=sampler, collate_fn=_as_batch)
    Xt = torch.from_numpy(test.X)
    yt = torch.from_numpy(test.y)
    errors, losses, steps = [], [], 0
    pred = None
    lam = float(args.arm.rsplit("-", 1)[1]) if args.arm.startswith("itra-") else None
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        if lam is None:
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
                opt.step()
                steps += 1
        else:
            # One forward pass over S1 and S2; the cross-entropy on S1 only, ITRA-c between
            # the hidden features (E = Linear + ReLU) of S1 and of S2.
            for batch in sampler:
                xb, yb = train_ds.__getitems__(list(batch))
                h = model[1](model[0](xb))
                h1, h2 = h[: batch.n1], h[batch.n1 :]
                loss = loss_fn(model[2](h1), yb[: batch.n1]) + lam * itra_match_loss(
                    h1, yb[: batch.n1], h2, yb[batch.n1 :], num_classes=n_classes)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
        model.eval()
        with torch.no_grad():
            logits = model(Xt)
            losses.append(float(loss_fn(logits, yt)))
            pred = logits.argmax(1)
            errors.append(100.0 * float((pred != yt).double().mean()))
    wrong = (pred != yt).numpy()
    per_class = [100.0 * float(wrong[test.y == c].mean()) for c in range(n_classes)]
    return {"test_error": errors, "test_loss": losses, "final_per_class_error": per_class, "steps": steps}


# --------------------------------------------------------------------------- statistics


def t_interval(values) -> dict:
    """Mean and 95% t-interval half-width of the mean over seeds."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean())
    hw = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "hw": hw, "lo": mean - hw, "hi": mean + hw, "n": n}


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Table-1 metrics per arm, and paired differences to random."""
    per_seed = {
        arm: {
            "mean_error": [float(np.mean(r["test_error"])) for r in rs],
            "final_error": [r["test_error"][-1] for r in rs],
            "mean_loss": [float(np.mean(r["test_loss"])) for r in rs],
            "final_loss": [r["test_loss"][-1] for r in rs],
        }
        for arm, rs in runs.items()
    }
    out = {"arms": {}, "vs_random": {}}
    for arm, m in per_seed.items():
        out["arms"][arm] = {key: t_interval(vals) for key, vals in m.items()}
    for arm in runs:
        if arm == "random":
            continue
        out["vs_random"][arm] = {}
        for key, _, _ in METRICS:
            diff = np.asarray(per_seed[arm][key]) - np.asarray(per_seed["random"][key])
            ci = t_interval(diff)
            ci["random_mean"] = out["arms"]["random"][key]["mean"]
            ci["relative_pct"] = 100.0 * ci["mean"] / ci["random_mean"] if ci["random_mean"] else float("nan")
            ci["verdict"] = verdict(ci)
            out["vs_random"][arm][key] = ci
    return out


def verdict(ci: dict) -> str:
    if not np.isfinite(ci["hw"]):
        return "n/a"
    if ci["hi"] < 0:
        return "better than random (95% CI of the difference excludes 0)"
    if ci["lo"] > 0:
        return "worse than random (95% CI of the difference excludes 0)"
    side = "lower" if ci["mean"] < 0 else "higher" if ci["mean"] > 0 else "equal"
    return f"{side} than random but within the 95% interval (not distinguishable)"


def fmt(ci: dict, digits: int) -> str:
    return f"{ci['mean']:.{digits}f} ± {ci['hw']:.{digits}f}"


def digits_of(key: str) -> int:
    return 2 if "error" in key else 3


def table1(summary: dict, arms) -> list[str]:
    lines = ["| Metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for key, label, _ in METRICS:
        cells = []
        best = min(summary["arms"][a][key]["mean"] for a in arms)
        for a in arms:
            c = fmt(summary["arms"][a][key], digits_of(key))
            cells.append(f"**{c}**" if summary["arms"][a][key]["mean"] == best else c)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def diff_table(summary: dict, arms) -> list[str]:
    others = [a for a in arms if a != "random"]
    lines = ["| Δ vs random (arm − random) | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    for key, label, _ in METRICS:
        cells = []
        for a in others:
            c = summary["vs_random"][a][key]
            dg = digits_of(key)
            mark = "" if c["lo"] <= 0 <= c["hi"] else " *"
            cells.append(f"{c['mean']:+.{dg}f} [{c['lo']:+.{dg}f}, {c['hi']:+.{dg}f}]{mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def verdict_lines(summary: dict, arms) -> list[str]:
    out = []
    for a in arms:
        if a == "random":
            continue
        parts = []
        for key, label, unit in METRICS[:2] + METRICS[3:]:  # mean error, final error, final loss
            c = summary["vs_random"][a][key]
            dg = digits_of(key)
            u = f" {unit}" if unit else ""
            parts.append(
                f"{label.lower()} {c['mean']:+.{dg}f}{u} ({c['relative_pct']:+.1f}% of random's "
                f"{c['random_mean']:.{dg}f}; 95% CI [{c['lo']:+.{dg}f}, {c['hi']:+.{dg}f}]) -> {c['verdict']}"
            )
        out.append(f"- **{a}**: " + "; ".join(parts) + ".")
    return out


def class_groups_summary(runs, arms, minority, n_classes) -> dict:
    """Final error on the minority classes, the other classes and overall (balanced test set)."""
    majority = [c for c in range(n_classes) if c not in minority]
    res = {}
    for a in arms:
        pc = np.array([r["final_per_class_error"] for r in runs[a]])  # (seeds, C)
        res[a] = {
            "minority": t_interval(pc[:, minority].mean(1)),
            "majority": t_interval(pc[:, majority].mean(1)),
            "per_class_mean": pc.mean(0).tolist(),
        }
    for a in arms:
        if a == "random":
            continue
        for g in ("minority", "majority"):
            a_pc = np.array([r["final_per_class_error"] for r in runs[a]])
            r_pc = np.array([r["final_per_class_error"] for r in runs["random"]])
            cols = minority if g == "minority" else majority
            ci = t_interval(a_pc[:, cols].mean(1) - r_pc[:, cols].mean(1))
            ci["verdict"] = verdict(ci)
            res[a][f"{g}_vs_random"] = ci
    return res


# --------------------------------------------------------------------------- experiment


def run_experiment(name: str, dataset: str, train: Split, test: Split, n_classes: int, args, sched_dir: Path,
                   log) -> dict:
    train_ds = ArrayDataset(train.X, train.y)
    runs: dict[str, list[dict]] = {a: [] for a in ARMS}
    builds: dict[str, list[dict]] = {a: [] for a in ARMS}
    sched_info: dict[str, dict] = {}
    t_build = t_train = 0.0
    for arm in ARMS:
        mmd_sampler = None
        for seed in args.seed_list:
            t0 = time.perf_counter()
            if arm.startswith("mmd-") and mmd_sampler is not None:
                sampler = mmd_sampler
            else:
                cfg = arm_config(arm, dataset, args.k, args.epochs, seed, args.mixing_rate, sched_dir,
                                 args.data_dir)
                res = build(cfg)
                sampler = (PairedScheduleBatchSampler if arm.startswith("itra-") else ScheduleBatchSampler)(res.path)
                if sampler.schedule.n_samples != len(train.y):
                    raise RuntimeError(f"{arm}: schedule is over {sampler.schedule.n_samples} samples, "
                                       f"the training set has {len(train.y)}")
                builds[arm].append({"seed": cfg.seed, "digest": res.digest, "seconds": round(res.seconds, 3),
                                    "cache_hit": res.cache_hit, "n_batches": res.n_batches,
                                    "n_epochs": res.n_epochs, "params": res.params})
                if arm not in sched_info:
                    sched_info[arm] = schedule_stats(sampler, train.y, n_classes)
                if arm.startswith("mmd-"):
                    mmd_sampler = sampler
            t1 = time.perf_counter()
            args.arm = arm
            r = train_run(train_ds, test, sampler, seed, args.epochs, n_classes, args)
            t2 = time.perf_counter()
            r["seed"] = seed
            r["train_seconds"] = round(t2 - t1, 3)
            runs[arm].append(r)
            t_build += t1 - t0
            t_train += t2 - t1
            log(f"  [{name}] {arm:<10} seed {seed}: final error {r['test_error'][-1]:5.2f}%  "
                f"mean error {np.mean(r['test_error']):5.2f}%  final loss {r['test_loss'][-1]:.3f}  "
                f"(build {t1 - t0:.1f}s, train {t2 - t1:.1f}s)")
    summary = summarize(runs)
    return {"runs": runs, "builds": builds, "schedules": sched_info, "summary": summary,
            "n_train": int(len(train.y)), "n_test": int(len(test.y)),
            "build_seconds": round(t_build, 2), "train_seconds": round(t_train, 2)}


# --------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    cfg = result["config"]
    L = [f"# Do schedules change training? ({cfg['dataset']})", ""]
    L.append(
        f"MLP {cfg['n_features']}→{cfg['hidden']}→{cfg['n_classes']} (ReLU), SGD momentum {cfg['momentum']}, "
        f"fixed lr {cfg['lr']}, weight decay {cfg['weight_decay']}, batch size k = {cfg['k']}, "
        f"{cfg['epochs']} epochs, {len(cfg['seeds'])} seeds ({cfg['seeds'][0]}..{cfg['seeds'][-1]}), "
        f"CPU, 1 thread. Same initialisation per seed in every arm. Cells: mean ± half-width of the 95% "
        f"t-interval over seeds; bold = lowest mean. Errors in %, losses = test cross-entropy. "
        f"`random` and `learn2mix` schedules are seeded by the run's seed; the MMD schedules are "
        f"deterministic (one epoch, replayed each epoch; the same for all seeds), so their spread "
        f"over seeds is initialisation only, while random's also includes the shuffles. learn2mix's "
        f"class losses come from schedgen's offline softmax-regression proxy, not from this MLP."
    )
    L.append("")
    L.append(f"Command: `{cfg['command']}`  ")
    L.append(f"Wall time: {result['wall_seconds']:.0f} s on {cfg['machine']}.")
    for exp_key, title in (("balanced", "Balanced training set"), ("imbalanced", "Imbalanced training set")):
        exp = result.get(exp_key)
        if exp is None:
            continue
        arms = list(exp["summary"]["arms"])
        L += ["", f"## {title}: {exp['n_train']} train / {exp['n_test']} test samples", ""]
        if exp_key == "imbalanced":
            imb = result["imbalance"]
            L.append(
                f"Classes {imb['minority']} cut to {imb['fraction']:.0%} of their training samples "
                f"(kept/original per class: {', '.join(f'{c}: {v[1]}/{v[0]}' for c, v in imb['kept'].items())}; "
                f"a fixed subsample, the same for every arm and seed). The test set is unchanged (balanced)."
            )
            L.append("")
        L += table1(exp["summary"], arms)
        p = exp["summary"]["arms"]["random"]["final_error"]["mean"] / 100.0
        se = 100.0 * math.sqrt(p * (1.0 - p) / exp["n_test"])
        L += ["", f"Scale: one test sample is {100.0 / exp['n_test']:.2f} pp of error. The intervals are over "
              f"training seeds on this one fixed test set; they leave out test-set sampling error, whose "
              f"binomial standard error at random's final error is about {se:.1f} pp. A difference can be "
              f"reproducible over seeds (interval excludes 0) and still be far smaller than that."]
        L += ["", "Paired difference per seed, arm − random, with its 95% t-interval "
              "(negative = better than random; * = interval excludes 0):", ""]
        L += diff_table(exp["summary"], arms)
        L += ["", "Reading:", ""]
        L += verdict_lines(exp["summary"], arms)
        itra = [a for a in arms if a.startswith("itra-")]
        if itra:
            base = np.mean([r["train_seconds"] for r in exp["runs"]["random"]]) / cfg["epochs"]
            L += ["", "ITRA arms (`itra-rnd-λ`: uniform random partners, `itra-cls-λ`: class-matched; the same "
                  "S1 batches as `random`): training seconds per epoch, mean over seeds, and the extra "
                  "time over `random` that the partner forward pass and the loss cost:", "",
                  "| arm | s / epoch | extra vs random |", "|---|---|---|",
                  f"| random | {base:.4f} | |"]
            for a in itra:
                t = np.mean([r["train_seconds"] for r in exp["runs"][a]]) / cfg["epochs"]
                L.append(f"| {a} | {t:.4f} | {t - base:+.4f} s ({(t / base - 1):+.0%}) |")
        if exp_key == "imbalanced":
            cg = exp["class_groups"]
            mino = result["imbalance"]["minority"]
            L += ["", f"Final test error on the minority classes {mino} and on the other classes "
                  "(mean ± 95% t-interval; Δ = paired difference to random):", ""]
            L.append("| | " + " | ".join(arms) + " |")
            L.append("|---|" + "---|" * len(arms))
            for g in ("minority", "majority"):
                cells = [fmt(cg[a][g], 2) for a in arms]
                L.append(f"| {g} classes error (%) | " + " | ".join(cells) + " |")
                cells = ["—"] + [
                    f"{cg[a][g + '_vs_random']['mean']:+.2f} [{cg[a][g + '_vs_random']['lo']:+.2f}, "
                    f"{cg[a][g + '_vs_random']['hi']:+.2f}]" for a in arms[1:]
                ]
                L.append(f"| Δ {g} vs random | " + " | ".join(cells) + " |")
            L += ["", "Final per-class test error (%), mean over seeds:", ""]
            L.append("| class | " + " | ".join(arms) + " |")
            L.append("|---|" + "---|" * len(arms))
            for c in range(len(cg[arms[0]]["per_class_mean"])):
                tag = " (cut)" if c in mino else ""
                L.append(f"| {c}{tag} | " + " | ".join(f"{cg[a]['per_class_mean'][c]:.1f}" for a in arms) + " |")
        L += ["", "Schedules (first seed): batches per epoch, fraction of the training set each epoch "
              "covers, mean total-variation distance of a batch's label mix from the training set's:", ""]
        L.append("| arm | epochs stored | batches/epoch | min coverage | batch label TV |")
        L.append("|---|---|---|---|---|")
        for a, s in exp["schedules"].items():
            L.append(f"| {a} | {s['n_epochs']} | {s['batches_per_epoch']} | {s['min_epoch_coverage']:.3f} | "
                     f"{s['mean_batch_label_tv']:.3f} |")
    L += ["", "Curves: `train_compare.png` (test error per epoch, mean over seeds with the 95% t-band).", ""]
    return "\n".join(L)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = [("balanced", "overall", "Balanced train set: test error")]
    if result.get("imbalanced"):
        mino = result["imbalance"]["minority"]
        panels += [("imbalanced", "overall", "Imbalanced train set: test error"),
                   ("imbalanced", "minority", f"Imbalanced: final error, cut classes {mino} vs the others")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    epochs = np.arange(1, result["config"]["epochs"] + 1)
    for ax, (exp_key, what, title) in zip(axes[0], panels):
        exp = result[exp_key]
        if what == "overall":
            for arm, rs in exp["runs"].items():
                E = np.array([r["test_error"] for r in rs])
                m = E.mean(0)
                n = E.shape[0]
                hw = stats.t.ppf(0.975, n - 1) * E.std(0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(m)
                ax.plot(epochs, m, color=COLORS[arm], label=arm, lw=1.4)
                ax.fill_between(epochs, m - hw, m + hw, color=COLORS[arm], alpha=0.15, lw=0)
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ax.set_yticks([t for t in (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 60, 80) if lo <= t <= hi])
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("epoch")
            ax.set_ylabel("test error (%)")
            ax.grid(True, which="both", alpha=0.3)
        else:  # per-arm bars: final error on minority vs other classes
            cg = exp["class_groups"]
            arms = list(cg)
            x = np.arange(len(arms))
            for j, (g, hatch) in enumerate((("minority", ""), ("majority", "//"))):
                means = [cg[a][g]["mean"] for a in arms]
                hws = [cg[a][g]["hw"] for a in arms]
                ax.bar(x + (j - 0.5) * 0.38, means, 0.38, yerr=hws, capsize=3, hatch=hatch,
                       color=[COLORS[a] for a in arms], alpha=0.75 if j == 0 else 0.35,
                       edgecolor="k", label="cut classes" if g == "minority" else "other classes")
            ax.set_xticks(x, arms, rotation=20)
            ax.set_ylabel("final test error (%)")
            ax.grid(True, axis="y", alpha=0.3)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    cfg = result["config"]
    fig.suptitle(f"{cfg['dataset']}: MLP, SGD m=0.9 lr={cfg['lr']}, k={cfg['k']}, "
                 f"{len(cfg['seeds'])} seeds, band = 95% t-interval", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits", help="digits (default), svhn, npz:PATH, ...")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--download", action="store_true", help="fetch a missing svhn/mnist/... split")
    ap.add_argument("--epochs", type=int, default=35, help="epochs (default 35, as the MMD paper)")
    ap.add_argument("--seeds", type=int, default=20, help="number of seeds 0..n-1 (default 20)")
    ap.add_argument("--k", type=int, default=50, help="batch size (default 50, as the MMD paper)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--mixing-rate", type=float, default=0.1)
    ap.add_argument("--minority", default="0,1,2,3,4", help="classes cut in the imbalanced variant")
    ap.add_argument("--fraction", type=float, default=0.1, help="fraction of each minority class kept")
    ap.add_argument("--imbalance-seed", type=int, default=0, help="seeds the fixed minority subsample")
    ap.add_argument("--no-imbalanced", action="store_true", help="skip the imbalanced variant")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 3 epochs, results to a temp dir")
    ap.add_argument("--out-dir", type=Path, default=None, help=f"default {RESULTS} ({'a temp dir'} with --quick)")
    ap.add_argument("--schedule-dir", type=Path, default=None,
                    help="keep schedule stores here (default: a temp dir under /tmp, removed at the end)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 2, 3
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 for a t-interval")
    args.seed_list = list(range(args.seeds))
    minority = sorted(int(c) for c in args.minority.split(",") if c.strip())

    t_start = time.perf_counter()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    load_at_start = os.getloadavg()
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="train_compare_quick_")) if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="train_compare_", dir="/tmp"))
    sched_dir = args.schedule_dir or tmp_root / "schedules"

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        tr = load_dataset(args.dataset, split="train", data_dir=args.data_dir, download=args.download)
        te = load_dataset(args.dataset, split="test", data_dir=args.data_dir, download=args.download)
        train, test = Split(scaled(tr), tr.y.astype(np.int64)), Split(scaled(te), te.y.astype(np.int64))
        n_classes = int(max(train.y.max(), test.y.max())) + 1
        log(f"{args.dataset}: {len(train.y)} train / {len(test.y)} test, {train.X.shape[1]} features, "
            f"{n_classes} classes; {args.seeds} seeds x {args.epochs} epochs x {len(ARMS)} arms, k={args.k}")
        result = {
            "config": {
                "dataset": args.dataset, "n_features": int(train.X.shape[1]), "n_classes": n_classes,
                "epochs": args.epochs, "seeds": args.seed_list, "k": args.k, "lr": args.lr,
                "momentum": args.momentum, "weight_decay": args.weight_decay, "hidden": args.hidden,
                "mixing_rate": args.mixing_rate, "quick": args.quick, "arms": list(ARMS),
                "command": " ".join(["python benchmarks/train_compare.py", *(sys.argv[1:] if argv is None
                                                                             else argv)]),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
                           f"load average at start {load_at_start[0]:.2f}",
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "numpy": np.__version__},
                "git_commit": _git_commit(),
                "schedule_dir": str(sched_dir),
            }
        }
        log("balanced training set")
        result["balanced"] = run_experiment("balanced", args.dataset, train, test, n_classes, args, sched_dir, log)
        if not args.no_imbalanced:
            imb = imbalanced_npz(train, test, minority, args.fraction, args.imbalance_seed,
                                 tmp_root / "imbalanced.npz")
            result["imbalance"] = {"minority": minority, "fraction": args.fraction, "seed": args.imbalance_seed,
                                   "n_train": imb["n_train"], "kept": imb["kept"]}
            itr = load_dataset(f"npz:{imb['path']}", split="train")
            itrain = Split(np.asarray(itr.X, dtype=np.float32), itr.y.astype(np.int64))
            log(f"imbalanced training set: classes {minority} cut to {args.fraction:.0%} -> {imb['n_train']} samples")
            exp = run_experiment("imbalanced", f"npz:{imb['path']}", itrain, test, n_classes, args, sched_dir, log)
            exp["class_groups"] = class_groups_summary(exp["runs"], list(ARMS), minority, n_classes)
            result["imbalanced"] = exp
    except SchedgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # The temp root holds the imbalanced npz and, without --schedule-dir, the stores.
        shutil.rmtree(tmp_root, ignore_errors=True)

    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    md = markdown(result)
    (out_dir / "train_compare.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "train_compare.md").write_text(md)
    plot(result, out_dir / "train_compare.png")
    print()
    print(md)
    print(f"Total wall time: {result['wall_seconds']:.1f} s  (outputs in {out_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
