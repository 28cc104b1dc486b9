"""Training-side companions to a schedule: update rules from the founding papers.

* :class:`StochasticBatchSizeSGD` — stochastic batch size (SBS, Algorithm 2 of the
  stochastic-batch-size paper): a per-parameter Bernoulli update over ordinary batches.
* :class:`SVMUpdate` — the SVM-generalised update: per batch, a box-constrained dual QP
  over every output's per-sample gradient, solved with HiGHS; it asks for a doubled batch
  when its bound is loose (serve those batches with
  :class:`schedgen.torch.AdaptiveBatchSampler` so the run can be replayed). Each
  ``step`` returns an :class:`SVMStepResult`; a QP HiGHS cannot solve raises
  :class:`QPSolveError`.

Like :mod:`schedgen.torch`, this package imports :mod:`torch`; ``import schedgen`` does
not load it.
"""

from __future__ import annotations

# Checked before any submodule imports torch, so that a missing PyTorch gives one
# ModuleNotFoundError with the install hint.
from .._optional import import_torch

torch = import_torch("schedgen.optim")

from ._sbs import StochasticBatchSizeSGD  # noqa: E402
from ._svm import QPSolveError, SVMStepResult, SVMUpdate  # noqa: E402

__all__ = ["QPSolveError", "SVMStepResult", "SVMUpdate", "StochasticBatchSizeSGD"]
