"""How much memory a build may allocate, and how to say it.

:func:`available_memory`: the kernel's ``MemAvailable``, else the physical memory, else
None (unknown: nothing is refused). A build checks its needs against it before
allocating (:func:`check_needs`); a store read caps it at 64 GiB
(``schedgen.store._budget``).
"""

from __future__ import annotations

import os

from dataclasses import dataclass

from .errors import ParameterError

__all__ = ["available_memory", "format_bytes", "MemoryNeed", "check_needs"]


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a build will allocate for ``what``, and the options that multiply them (``subject``)."""

    n_bytes: int
    what: str
    subject: str


def check_needs(needs: list[MemoryNeed], available: int | None = None) -> None:
    """Refuse when the ``needs`` add up to more than the memory available now.

    Parameters
    ----------
    needs : list of MemoryNeed
    available : int, optional
        Bytes available (default :func:`available_memory`; unknown: nothing is refused).

    Raises
    ------
    ParameterError
        ``SUBJECT needs X GB of memory (A GB for WHAT, ...); Y GB is available``:
        SUBJECT names the options behind the largest need, then the needs of at least
        1% of the total, largest first.
    """
    available = available_memory() if available is None else available
    if available is None or not needs:
        return
    total = sum(x.n_bytes for x in needs)
    if total <= available:
        return
    by_what: dict[str, int] = {}
    for x in sorted(needs, key=lambda x: -x.n_bytes):
        by_what[x.what] = by_what.get(x.what, 0) + x.n_bytes
    shown = [(w, b) for w, b in by_what.items() if b >= 0.01 * total]
    rest = total - sum(b for _, b in shown)
    parts = [f"{format_bytes(b)} for {w}" for w, b in shown]
    if rest >= 0.0005 * total:  # what would show as 0.0 is left out
        parts.append(f"{format_bytes(rest)} for the rest")
    raise ParameterError(
        f"{max(needs, key=lambda x: x.n_bytes).subject} needs {format_bytes(total)} of memory "
        f"({', '.join(parts)}); {format_bytes(available)} is available"
    )


def available_memory() -> int | None:
    """Bytes of memory available now: ``MemAvailable`` from ``/proc/meminfo``; where
    that is missing, the physical memory; None when neither can be read."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units with one decimal: ``40.0 GB``, ``1.2 TB``, ``512.0 kB``."""
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"
