"""The offline precompute: a whole learn2mix schedule, α moved by the proxy's losses."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import DataError, ParameterError
from ...params import check_int
from ._alpha import class_mean_losses, update_alpha
from ._common import BLOCK_ROWS, check_features, check_labels
from ._planner import Learn2MixPlanner
from ._proxy import SoftmaxProxy, default_lr

__all__ = ["Learn2MixResult", "learn2mix_schedule", "schedule_memory"]


@dataclass(frozen=True, eq=False)
class Learn2MixResult:
    """An offline learn2mix schedule and the trajectory that shaped it.

    Attributes
    ----------
    indices : ndarray of shape (n_epochs * batches_per_epoch * k,), int64
    batch_offsets : ndarray of shape (n_epochs * batches_per_epoch + 1,), int64
        Every batch holds exactly k samples.
    epoch_offsets : ndarray of shape (n_epochs + 1,), int64
    class_proportions : ndarray of shape (n_epochs, n_classes), float64
        The α used for each epoch (row 0 = the class proportions of the labels).
    class_losses : ndarray of shape (n_epochs, n_classes), float64
        Class-wise mean cross-entropy of the proxy on the whole training set,
        measured after each epoch; row e moved α from epoch e to e + 1.
    params : dict
        Plain JSON: every option that shaped the schedule.
    """

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    class_proportions: np.ndarray
    class_losses: np.ndarray
    params: dict = field(default_factory=dict)


def schedule_memory(
    n_samples: int,
    n_features: int,
    k: int,
    *,
    epochs: int,
    batches_per_epoch: int | None = None,
    n_groups: int,
    n_outputs: int,
    kmeans_groups: int | None = None,
) -> dict[str, int]:
    """Bytes :func:`learn2mix_schedule` (and :func:`kmeans_groups`) allocate at least, by
    what for, computed from the sizes alone so that a build can refuse before allocating.

    Parameters
    ----------
    n_samples, n_features : int
        The prepared features' shape.
    k : int
        Batch size.
    epochs : int
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    n_groups : int
        Columns of α (classes or groups).
    n_outputs : int
        The proxy's outputs (classes of the labels).
    kmeans_groups : int, optional
        C of ``--groups kmeans:C``.

    Returns
    -------
    parts : dict of str -> int
        ``indices`` (epochs x batches x k int64, held once), ``batch_offsets`` (the
        offsets and the differences checked before the store is written),
        ``epoch_arrays`` (α and the losses per epoch), ``proxy`` (its weights, one block
        of logits, the per-sample losses and one batch's features), and with
        ``kmeans_groups`` C, ``kmeans_centers`` (C x features, three copies) and
        ``kmeans_distances`` (a block of rows x C distances and one temporary of its size).
    """
    n, d, k = int(n_samples), int(n_features), int(k)
    B = -(-n // k) if batches_per_epoch is None else int(batches_per_epoch)
    total = int(epochs) * B
    rows = min(n, BLOCK_ROWS)
    out = {
        "indices": total * k * 8,
        "batch_offsets": 2 * (total + 1) * 8,
        "epoch_arrays": 2 * int(epochs) * int(n_groups) * 8,
        "proxy": 8 * (2 * d * n_outputs + 3 * rows * n_outputs + 3 * n + k * (d + n_outputs)),
    }
    if kmeans_groups is not None:
        g = int(kmeans_groups)
        out["kmeans_centers"] = 3 * g * d * 8
        out["kmeans_distances"] = 2 * rows * g * 8
    return out


def _check_lr(lr, A: np.ndarray) -> float:
    if lr is None:
        return default_lr(A)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) or not (
        math.isfinite(float(lr)) and float(lr) > 0
    ):
        raise ParameterError(f"lr must be a positive finite number, got {lr!r}")
    return float(lr)


class _Trajectory:
    """What a run has done so far: the proxy, α in force, α and the losses of every
    epoch, and where it stands. All a checkpoint saves: the batches follow from α."""

    def __init__(self, proxy: SoftmaxProxy, alpha: np.ndarray, epochs: int):
        self.proxy = proxy
        self.alpha = alpha
        self.alphas = np.empty((epochs, len(alpha)), dtype=np.float64)
        self.losses = np.empty((epochs, len(alpha)), dtype=np.float64)

    def resume(self, checkpoint) -> tuple[int, int]:
        """Load ``checkpoint``'s state when it fits this run: the (epoch, batch) to go on from."""
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is None:
            return 0, 0
        shapes = {"W": self.proxy.W.shape, "b": self.proxy.b.shape, "alpha": self.alpha.shape,
                  "alphas": self.alphas.shape, "losses": self.losses.shape, "epoch": (), "batch": ()}
        try:
            if any(np.shape(saved[name]) != shape for name, shape in shapes.items()):
                return 0, 0  # another run's state: start afresh
            e, i = int(saved["epoch"]), int(saved["batch"])
        except (KeyError, TypeError, ValueError):
            return 0, 0  # not a state of this loop
        if not 0 <= e <= len(self.alphas):
            return 0, 0
        self.proxy.W, self.proxy.b, self.alpha = saved["W"], saved["b"], saved["alpha"]
        self.alphas[:], self.losses[:] = saved["alphas"], saved["losses"]
        return e, i

    def state(self, e: int, i: int) -> dict:
        return {"epoch": np.int64(e), "batch": np.int64(i), "W": self.proxy.W, "b": self.proxy.b,
                "alpha": self.alpha, "alphas": self.alphas, "losses": self.losses}


def learn2mix_schedule(
    X,
    groups,
    k: int,
    *,
    epochs: int,
    mixing_rate: float,
    seed: int,
    batches_per_epoch: int | None = None,
    lr: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint=None,
    labels=None,
) -> Learn2MixResult:
    """Precompute a learn2mix schedule with losses from a softmax-regression proxy.

    Epoch e plays ``Learn2MixPlanner.epoch_batches(e, α_e)``. The proxy (weights
    ``W`` (D, C) and bias ``b`` (C,), float64, zero at the start) takes one plain
    SGD step per batch on the batch-mean cross-entropy,
    ``W ← W − lr · X_Bᵀ (softmax(X_B W + b) − Y_B) / k``, in schedule order. After
    each epoch its class-wise mean cross-entropy on the *whole* training set gives
    L_e, and ``α_{e+1} = update_alpha(α_e, L_e, γ)``. Nothing is random but the
    permutations, so the result is a pure function of the inputs (bit-identical
    on one machine; the proxy's float64 matrix products go through BLAS).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Features (e.g. from ``prepare_features``); read in float64 blocks.
    groups : array of shape (n_samples,)
        Integer class or group ids (labels, or :func:`kmeans_groups`); every id
        ``0..max`` must occur.
    k : int
        Batch size, ``1 <= k <= n_samples``; every batch holds exactly k.
    epochs : int
        >= 1.
    mixing_rate : float
        γ in (0, 1].
    seed : int
        ``0 <= seed < 2**32``; seeds the per-class permutations.
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    lr : float, optional
        SGD step of the proxy; :func:`default_lr` by default.
    progress : callable(done_batches, total_batches), optional
        Called once before the first batch and after every batch.
    checkpoint : schedgen.checkpoint.Checkpoint, optional
        Resume from its saved state (epoch, batch, proxy weights, α and the
        trajectory so far; the batches themselves are re-derived) and save the state
        as the build goes. A resumed run gives the same bytes as an uninterrupted one.
    labels : array of shape (n_samples,), optional
        The proxy's targets, when they are not the groups (``--groups kmeans:C``, or
        an npz ``groups`` array): the proxy learns the task's labels and its
        per-sample losses are averaged per group. Default: the groups themselves.

    Returns
    -------
    Learn2MixResult

    Raises
    ------
    ParameterError, DataError
        On invalid options, features or groups.
    """
    y = check_labels(groups, "groups")
    A = check_features(X, len(y))
    t = y if labels is None else check_labels(labels, "labels")
    if t.shape != y.shape:
        raise DataError(f"labels must have one value per sample: expected shape {y.shape}, got {t.shape}")
    epochs = check_int("epochs", epochs, minimum=1)
    planner = Learn2MixPlanner(y, k, mixing_rate=mixing_rate, seed=seed, batches_per_epoch=batches_per_epoch)
    proxy = SoftmaxProxy(A.shape[1], int(t.max()) + 1, _check_lr(lr, A))
    k, C, B = planner.k, planner.n_classes, planner.batches_per_epoch
    total = epochs * B

    # Every epoch's batches are written straight into the schedule's indices: the only
    # array that grows with epochs x batches x k exists once (schedule_memory counts it).
    indices = np.empty(total * k, dtype=np.int64)
    matrices = indices.reshape(epochs, B, k)
    run = _Trajectory(proxy, planner.initial_alpha, epochs)
    e0, i0 = run.resume(checkpoint)
    for e in range(e0):  # epochs a checkpoint skipped: their batches follow from their α
        planner.epoch_matrix(e, run.alphas[e], out=matrices[e])
    if progress:
        progress(e0 * B + i0, total)
    for e in range(e0, epochs):
        run.alphas[e] = run.alpha
        M = planner.epoch_matrix(e, run.alpha, out=matrices[e])
        for i in range(i0 if e == e0 else 0, B):
            proxy.step(A[M[i]].astype(np.float64), t[M[i]])
            if checkpoint is not None and i + 1 < B:
                checkpoint.maybe_save(lambda: run.state(e, i + 1))
            if progress:
                progress(e * B + i + 1, total)
        run.losses[e] = class_mean_losses(proxy.losses(A, t), y, C)
        run.alpha = update_alpha(run.alpha, run.losses[e], planner.mixing_rate)
        if checkpoint is not None and e + 1 < epochs:
            checkpoint.maybe_save(lambda: run.state(e + 1, 0))

    params = {"seed": planner.seed, "epochs": epochs, "mixing_rate": planner.mixing_rate, "batches_per_epoch": B,
              "n_classes": C, "proxy": "softmax-regression-sgd", "lr": proxy.lr}
    return Learn2MixResult(
        indices=indices,
        batch_offsets=np.arange(total + 1, dtype=np.int64) * k,
        epoch_offsets=np.arange(epochs + 1, dtype=np.int64) * B,
        class_proportions=run.alphas,
        class_losses=run.losses,
        params=params,
    )
