"""The memory budget of one read: claimed array sizes are refused past it."""

from __future__ import annotations

import os

from ..errors import StoreError

#: Hard cap on the bytes one read may allocate, whatever the machine (64 GiB).
_MAX_READ_BYTES = 1 << 36


def _memory_budget() -> int:
    """Bytes a read may allocate: the memory available now, at most :data:`_MAX_READ_BYTES`.

    A store states its array shapes; a hostile or damaged one can claim terabytes
    (zarr fills absent chunks with the fill value, so no data is needed). Refusing
    claims beyond the available memory turns an OOM kill into a StoreError.
    """
    avail = None
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = _MAX_READ_BYTES
    return max(0, min(avail, _MAX_READ_BYTES))


class _Budget:
    """Bytes a read may still allocate (shared by all arrays of one store)."""

    def __init__(self) -> None:
        self.left = _memory_budget()

    def take(self, n_bytes: int, what: str) -> None:
        if n_bytes > self.left:
            raise StoreError(
                f"{what} would need {n_bytes} bytes, more than the {self.left} bytes of memory "
                "available; too large to be a schedule (the store is damaged or hostile)"
            )
        self.left -= n_bytes
