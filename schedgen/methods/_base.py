"""What every method is: a name, a revision, the options it reads, the parameters that
enter the cache key, its memory needs and ``run``.

A method receives the build's configuration (a :class:`schedgen.build.BuildConfig`;
methods read its attributes and never import it: the build layer sits above them) and
the loaded :class:`~schedgen.data.Dataset`, and returns a :class:`MethodOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..memory import MemoryNeed

__all__ = ["Method", "MethodOutput", "RunContext", "feature_spec", "feature_needs"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MethodOutput:
    """A method's schedule: the store's arrays and the parameters it records.

    Attributes
    ----------
    indices : array of int64, shape (n_indices,)
        Every batch's sample indices, batch after batch, epoch after epoch.
    batch_offsets : array of int64, shape (n_batches + 1,)
    epoch_offsets : array of int64, shape (n_epochs + 1,)
        Offsets into ``batch_offsets``.
    params : dict
        Recorded in the store beside the parameters of :meth:`Method.params`.
    batch_arrays, epoch_arrays : dict of name -> array
        Per-batch and per-epoch arrays (``batch_mmd2``; ``class_proportions``, ...).
    """

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    params: dict
    batch_arrays: dict = field(default_factory=dict)
    epoch_arrays: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """What the build hands a method besides its configuration and dataset.

    Attributes
    ----------
    progress : callable(done, total, stage="batches"), optional
        Called with the batches done; a stage that can take long before the batches (the
        row-sum pass, k-means, the Nyström features) reports through :func:`stage`.
    warn : callable(str)
        Reports something legal but probably unwanted (a diagonal kernel, ...).
    checkpoint : schedgen.checkpoint.Checkpoint, optional
        Where a long method saves its state to continue after a kill.
    cache_dir : Path, optional
        Where a method may memoise artifacts shared between builds (row sums, features).
    """

    progress: Progress | None = None
    warn: Callable[[str], None] = lambda msg: None
    checkpoint: Any = None
    cache_dir: Path | None = None


class Method:
    """Base of every method. Subclasses set the class attributes and implement
    :meth:`params`, :meth:`memory_needs` and :meth:`run`.

    Attributes
    ----------
    name : str
        ``--method NAME``.
    revision : int
        Bumped whenever the same inputs would give other bytes; part of the cache key
        and of checkpoint keys, so a store or checkpoint of another revision is never
        taken for this one's.
    options : frozenset of str
        The :class:`BuildConfig` fields the method reads besides dataset, split, k and
        seed. An option of another method set away from its default is refused.
    """

    name: str = ""
    revision: int = 1
    options: frozenset = frozenset()

    def params(self, config, ds) -> dict:
        """The parameters that shape the schedule: the cache key and the store's ``params``.

        ``ds`` may be a dataset summary (name, split, n_samples, n_features, n_classes,
        fingerprint, groups) rather than a loaded :class:`~schedgen.data.Dataset`: a
        cache hit settles the key without loading the data. Invalid parameters raise
        :class:`~schedgen.errors.ParameterError` here, before any work.
        """
        raise NotImplementedError

    def check_options(self, config) -> None:
        """Method-specific refusals beyond :attr:`options` (e.g. the kernel's options)."""

    def memory_needs(self, config, ds, k: int) -> list[MemoryNeed]:
        """Lower bounds of what :meth:`run` allocates, from the sizes alone."""
        return []

    def run(self, config, ds, k: int, ctx: RunContext) -> MethodOutput:
        """Compute the schedule."""
        raise NotImplementedError


def feature_spec(config):
    """The :class:`~schedgen.features.FeatureSpec` of ``config`` (``--pca``, ``--standardize``, seed)."""
    from ..features import FeatureSpec

    return FeatureSpec(pca=config.pca, standardize=config.standardize, seed=config.seed)


def feature_needs(config, ds) -> tuple[int, list[MemoryNeed]]:
    """The prepared features' dimension and memory (a scaled float32 copy, and the PCA's fit)."""
    from ..features import PCA_FIT_ROWS

    n, d = ds.n_samples, ds.n_features
    pca = feature_spec(config).resolved_pca(d)
    b = n * d * 4
    if pca:
        b += min(n, PCA_FIT_ROWS) * d * 8 + d * d * 8 + n * pca * 4
    return (pca or d), [MemoryNeed(b, "the features", f"the dataset ({n} samples of {d} features)")]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def stage(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    """``progress`` bound to the stage ``name``: a ``(done, total)`` callable that reports
    ``progress(done, total, stage=name)`` (None without ``progress``). The build hands
    methods a ``progress`` that takes the ``stage`` keyword (:func:`schedgen.build.build`)."""
    if progress is None:
        return None
    return lambda done, total: progress(done, total, stage=name)

