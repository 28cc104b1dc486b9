"""The offline losses: a multinomial softmax regression trained by plain SGD."""

from __future__ import annotations

import numpy as np

from ._common import BLOCK_ROWS

__all__ = ["SoftmaxProxy", "default_lr"]


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))


def default_lr(X) -> float:
    """The proxy's default SGD step: ``2 / (1 + mean_i ||x_i||^2)``.

    The batch-mean cross-entropy of a softmax regression (weights and bias) has a
    gradient whose Lipschitz constant is at most ``L = mean_i ||(x_i, 1)||^2 / 2``
    (the softmax Hessian is bounded by 1/2), so this is the classical step
    ``1/L``: stable on any feature scale without tuning.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Features, read in float64 row blocks.

    Returns
    -------
    lr : float
    """
    A = np.asarray(X)
    sq = 0.0
    for s in range(0, A.shape[0], BLOCK_ROWS):
        blk = A[s : s + BLOCK_ROWS].astype(np.float64)
        sq += float((blk * blk).sum())
    return 2.0 / (1.0 + sq / A.shape[0])


class SoftmaxProxy:
    """Weights ``W`` (D, T) and bias ``b`` (T,), float64, zero at the start.

    Parameters
    ----------
    n_features, n_outputs : int
        D and T.
    lr : float
        The SGD step.
    """

    def __init__(self, n_features: int, n_outputs: int, lr: float):
        self.W = np.zeros((n_features, n_outputs), dtype=np.float64)
        self.b = np.zeros(n_outputs, dtype=np.float64)
        self.lr = lr

    def step(self, Xb: np.ndarray, targets: np.ndarray) -> None:
        """One SGD step on the batch-mean cross-entropy, in place:
        ``W ← W − lr · X_Bᵀ (softmax(X_B W + b) − Y_B) / k``, ``b`` likewise.

        ``Xb`` is float64 (k, D), ``targets`` int64 (k,).
        """
        k = len(targets)
        G = np.exp(_log_softmax(Xb @ self.W + self.b))
        G[np.arange(k), targets] -= 1.0
        G /= k
        self.W -= self.lr * (Xb.T @ G)
        self.b -= self.lr * G.sum(axis=0)

    def losses(self, X: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Per-sample cross-entropy on every row of X (float64 (N,)), in row blocks."""
        out = np.empty(X.shape[0], dtype=np.float64)
        for s in range(0, X.shape[0], BLOCK_ROWS):
            blk = X[s : s + BLOCK_ROWS].astype(np.float64)
            logp = _log_softmax(blk @ self.W + self.b)
            out[s : s + len(blk)] = -logp[np.arange(len(blk)), targets[s : s + len(blk)]]
        return out
