"""Gram-matrix compute layer, shipped as ``schedgen.kernels``."""
