"""Placeholder: StochasticBatchSizeSGD is being written (issue 14)."""

from __future__ import annotations

__all__ = ["StochasticBatchSizeSGD"]


class StochasticBatchSizeSGD:  # replaced by the implementation
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("StochasticBatchSizeSGD is not implemented yet")
