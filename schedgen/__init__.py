"""schedgen: deterministic, precomputed mini-batch schedules.

Layers (each imports only those to its left; ``tests/test_layers.py`` checks it)::

    data -> features -> kernels -> methods -> store -> build -> torch replay -> CLI

on shared utilities (errors, params, rng, revisions, memory, mmd2). See the README's
"Code layout".
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import DataError, ParameterError, SchedgenError, StoreError

try:
    __version__ = version("schedgen")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "SchedgenError", "DataError", "StoreError", "ParameterError"]
