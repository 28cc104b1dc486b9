"""The memory budget of one read: claimed array sizes are refused past it."""

from __future__ import annotations

from ..errors import StoreError
from ..memory import available_memory

#: Hard cap on the bytes one read may allocate, whatever the machine (64 GiB).
_MAX_READ_BYTES = 1 << 36


def _memory_budget() -> int:
    """Bytes a read may allocate: the memory available now, at most :data:`_MAX_READ_BYTES`.

    A store states its array shapes; a hostile or damaged one can claim terabytes
    (zarr fills absent chunks with the fill value, so no data is needed). Refusing
    claims beyond the available memory turns an OOM kill into a StoreError.
    """
    avail = available_memory()
    return max(0, min(_MAX_READ_BYTES if avail is None else avail, _MAX_READ_BYTES))


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
