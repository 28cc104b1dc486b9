"""Revision numbers of what schedgen caches between builds.

A cache entry is keyed by the revision of the code that made it, not by a digest of
schedgen's sources (which threw every cached row sum away at any edit, a comment
included). Bump a number in the change that makes the same inputs give other bytes;
each method's own revision (``Method.revision``) keys its stores and checkpoints.
"""

from __future__ import annotations

__all__ = ["DATA", "FEATURES", "KERNELS", "PARTNERS"]

#: Dataset loading and the fingerprint: keys the dataset summaries (``schedgen._summary``).
DATA = 1
#: ``schedgen.features.prepare_features``: keys the cached features of an mmd build.
FEATURES = 1
#: Kernel values and the row-sum pass (``schedgen.kernels``): keys the cached row sums.
KERNELS = 1
#: The partner batches of ``--pair`` (``schedgen.methods.partners``): part of the cache key
#: of a store that has them.
PARTNERS = 1
