"""NumPy or CuPy: the one module that decides, and the one that imports cupy.

Numerical code never imports cupy and never calls ``np.`` on device arrays: it
takes its namespace from its inputs with :func:`get_namespace` and brings results
to the host through :func:`to_numpy`, the single device-to-host transfer point.
cupy is imported lazily, inside functions, so that CPU-only installs never pay
for it (and never fail on it).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from schedgen.errors import ParameterError

__all__ = ["DEVICES", "get_namespace", "is_cupy_array", "resolve_device", "to_device", "to_numpy"]

#: The values a ``device`` option may take.
DEVICES = ("auto", "cpu", "cuda")


def is_cupy_array(x: Any) -> bool:
    """Whether ``x`` is a CuPy array, decided without importing cupy."""
    return type(x).__module__.split(".", 1)[0] == "cupy"


def _cupy() -> ModuleType:
    import cupy  # noqa: PLC0415 - optional, heavy, GPU-only: imported on demand

    return cupy


def get_namespace(*arrays: Any) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) the given arrays live in.

    ``None`` arguments are ignored. Mixing host and device arrays is an error
    rather than an implicit transfer.

    Returns
    -------
    module
        ``numpy`` when no argument is a CuPy array, ``cupy`` when all are.
    """
    kinds = {is_cupy_array(a) for a in arrays if a is not None}
    if kinds == {True}:
        return _cupy()
    if kinds == {True, False}:
        raise ParameterError(
            "arrays must all be on the same device, got a mix of NumPy (host) and CuPy (GPU) arrays; "
            "move them with schedgen.kernels.backend.to_device first"
        )
    return np


def _cuda_available() -> bool:
    # `import cupy` succeeds on machines without a GPU (or even without the CUDA
    # driver); is_available() is then False and getDeviceCount() raises.
    try:
        cupy = _cupy()
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return False
    try:
        return bool(cupy.is_available()) and int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def resolve_device(device: str) -> str:
    """Turn a ``device`` option into ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` picks ``"cuda"`` only when cupy imports and sees a GPU.

    Raises
    ------
    ParameterError
        For any other value, or for ``"cuda"`` when no usable GPU is present.
    """
    if not isinstance(device, str) or device not in DEVICES:
        raise ParameterError(f"device must be one of 'auto', 'cpu', 'cuda', got {device!r}")
    if device == "cpu":
        return "cpu"
    available = _cuda_available()
    if device == "cuda" and not available:
        raise ParameterError(
            "device 'cuda' needs CuPy and a CUDA GPU, but none is usable here "
            "(cupy missing, cupy.is_available() False or no device); use device='cpu' or 'auto'"
        )
    return "cuda" if available else "cpu"


def to_device(x: Any, device: str) -> Any:
    """``x`` as an array on ``device`` ("auto", "cpu" or "cuda"; see :func:`resolve_device`).

    On ``"cpu"`` this is :func:`to_numpy`; on ``"cuda"`` a ``cupy.asarray`` copy
    (no copy when ``x`` is already a CuPy array).
    """
    if resolve_device(device) == "cpu":
        return to_numpy(x)
    return _cupy().asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: the one device-to-host transfer point.

    CuPy arrays are copied with ``.get()``; NumPy arrays pass through uncopied.
    """
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)
