"""Gram-matrix compute layer, shipped as ``schedgen.kernels``.

Kernels (:class:`RBF`, :class:`Polynomial`, built by :func:`make_kernel`) and the
blocked routines over them (:func:`row_sums`, :func:`block_sums`, :func:`gram`, and
:class:`WorkingSet` for the selection loop's columns) that never hold an N × N
matrix. Works on NumPy or CuPy arrays; :mod:`.backend` is the only module that
touches cupy, and results come back to the host as float64 NumPy.
"""

from __future__ import annotations

from . import backend
from ._parallel import pinned_blas, worker_pool
from .backend import get_namespace, resolve_device, to_device, to_numpy
from .bandwidth import (
    FALLBACK_BANDWIDTH,
    is_numerically_constant,
    is_numerically_diagonal,
    median_bandwidth,
    median_offdiag,
    median_sq_distance,
    numerical_degeneracy,
    subsample_indices,
)
from .blocked import RowSums, block_sums, default_blocks, gram, row_sums
from .factory import KERNELS, make_kernel
from .families import RBF, Kernel, Polynomial, kernel_from_params, sq_norms
from .workset import WorkingSet, pair_block, rhs_rows

__all__ = [
    "backend",
    "get_namespace",
    "resolve_device",
    "to_device",
    "to_numpy",
    "Kernel",
    "RBF",
    "Polynomial",
    "KERNELS",
    "make_kernel",
    "kernel_from_params",
    "sq_norms",
    "RowSums",
    "row_sums",
    "block_sums",
    "gram",
    "default_blocks",
    "WorkingSet",
    "pair_block",
    "rhs_rows",
    "worker_pool",
    "pinned_blas",
    "median_sq_distance",
    "median_bandwidth",
    "median_offdiag",
    "is_numerically_diagonal",
    "is_numerically_constant",
    "numerical_degeneracy",
    "subsample_indices",
    "FALLBACK_BANDWIDTH",
]
