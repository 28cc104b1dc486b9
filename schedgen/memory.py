"""How much memory a build may allocate, and how to say it.

:func:`available_memory` is the public twin of ``schedgen.store._memory_budget``
(which also caps a *read* at 64 GiB): the kernel's ``MemAvailable``, else the
physical memory, else None (unknown: nothing is refused).
"""

from __future__ import annotations

import os

__all__ = ["available_memory", "format_bytes"]


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
