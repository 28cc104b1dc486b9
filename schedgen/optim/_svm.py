"""Placeholder: SVMUpdate is being written (issue 14)."""

from __future__ import annotations

__all__ = ["SVMUpdate"]


class SVMUpdate:  # replaced by the implementation
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("SVMUpdate is not implemented yet")
