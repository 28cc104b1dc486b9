"""Bounded, one-line renderings of foreign exceptions and attribute values for messages."""

from __future__ import annotations

from typing import Any


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of a foreign exception, on one line and of bounded length."""
    msg = " ".join(str(exc).split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _short(val: Any) -> str:
    """``repr`` of an attribute value, bounded (a hostile value can be huge or deep)."""
    try:
        r = repr(val)
    except Exception:  # RecursionError on absurdly deep values
        r = f"<{type(val).__name__}>"
    return r if len(r) <= 80 else r[:77] + "..."
