"""Placeholder: AdaptiveBatchSampler is being written (issue 14)."""

from __future__ import annotations

__all__ = ["AdaptiveBatchSampler"]


class AdaptiveBatchSampler:  # replaced by the implementation
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("AdaptiveBatchSampler is not implemented yet")
