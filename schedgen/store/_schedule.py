"""The in-memory schedule (:class:`Schedule`) and its structural checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ParameterError, StoreError
from ._format import FORMAT_VERSION, READ_FORMATS, _ATTRS_DIGEST, array_digest, attributes_digest, schedule_digest
from ._messages import _one_line


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays inside ``obj`` to plain JSON values (zarr attrs need it)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass(frozen=True, eq=False)
class Schedule:
    """A batch schedule held in memory.

    Parameters
    ----------
    indices : array of shape (n_indices,), int64
        Sample indices in replay order.
    batch_offsets : array of shape (n_batches + 1,), int64
        Batch ``b`` is ``indices[batch_offsets[b]:batch_offsets[b + 1]]``.
    epoch_offsets : array of shape (n_epochs + 1,), int64
        Epoch ``e`` is batches ``epoch_offsets[e]`` to ``epoch_offsets[e + 1] - 1``.
    method : str
        The method that built it (``"random"``, ``"mmd"``, ``"learn2mix"``).
    params : dict
        Every option that shaped the schedule (plain JSON).
    dataset : dict
        ``name``, ``split``, ``n_samples``, ``n_classes``, ``fingerprint``.
    k : int
        The nominal batch size.
    batch_arrays, epoch_arrays : dict of name to array
        Optional arrays whose first axis is the batch (or epoch) axis.
    schedgen_version : str, optional
        The version that wrote it (default: this one).
    schedgen_format : int
        The format of the store it was read from (:data:`FORMAT_VERSION` for a
        schedule made in memory). :func:`write_schedule` always writes
        :data:`FORMAT_VERSION`.
    """

    indices: np.ndarray
    batch_offsets: np.ndarray
    epoch_offsets: np.ndarray
    method: str
    params: dict
    dataset: dict
    k: int
    batch_arrays: dict = field(default_factory=dict)
    epoch_arrays: dict = field(default_factory=dict)
    schedgen_version: str | None = None
    schedgen_format: int = FORMAT_VERSION

    @property
    def attributes_covered(self) -> bool:
        """True when the attributes were (or will be) covered by a digest: format >= 2.

        False for a schedule read from a format-1 store: its method, k, params and
        dataset were not verified (say so with :data:`FORMAT1_NOTE`).
        """
        return self.schedgen_format >= 2

    @property
    def n_batches(self) -> int:
        return len(self.batch_offsets) - 1

    @property
    def n_epochs(self) -> int:
        return len(self.epoch_offsets) - 1

    @property
    def n_samples(self) -> int:
        n = self.dataset.get("n_samples") if isinstance(self.dataset, dict) else None
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise StoreError(f"dataset.n_samples must be a non-negative integer, got {n!r}")
        return int(n)

    @property
    def digest(self) -> str:
        # Cached: the arrays of a Schedule are not meant to change after construction.
        d = self.__dict__.get("_digest")
        if d is None:
            d = schedule_digest(self.indices, self.batch_offsets)
            object.__setattr__(self, "_digest", d)
        return d

    def _covered_arrays(self) -> dict:
        """Arrays covered by ``array_digests``: epoch_offsets and every optional array."""
        return {"epoch_offsets": self.epoch_offsets, **self.batch_arrays, **self.epoch_arrays}

    def batch(self, b: int) -> np.ndarray:
        """Indices of global batch ``b`` (a view).

        Parameters
        ----------
        b : int
            Global batch number, in ``[0, n_batches)``.

        Returns
        -------
        array of shape (batch_size,), int64
        """
        return self.indices[self.batch_offsets[b] : self.batch_offsets[b + 1]]

    def epoch_batches(self, e: int) -> range:
        """Global batch numbers of epoch ``e``.

        Parameters
        ----------
        e : int
            Epoch number, in ``[0, n_epochs)``.

        Returns
        -------
        range
        """
        return range(int(self.epoch_offsets[e]), int(self.epoch_offsets[e + 1]))

    def attrs(self) -> dict:
        """The group attributes (plain JSON) in this schedule's format (:attr:`schedgen_format`)."""
        return self._attributes(self.schedgen_format)

    def _attributes(self, fmt: int) -> dict:
        """The group attributes of format ``fmt`` (1 or 2; format 2 adds ``attributes_digest``)."""
        from .. import __version__

        if fmt not in READ_FORMATS:
            raise ParameterError(f"schedule format must be one of {list(READ_FORMATS)}, got {fmt!r}")
        attrs = _plain(
            {
                "schedgen_format": fmt,
                "method": self.method,
                "params": self.params,
                "dataset": self.dataset,
                "k": self.k,
                "n_batches": self.n_batches,
                "n_epochs": self.n_epochs,
                "digest": self.digest,
                "batch_arrays": sorted(self.batch_arrays),
                "epoch_arrays": sorted(self.epoch_arrays),
                "array_digests": {name: array_digest(a) for name, a in sorted(self._covered_arrays().items())},
                "schedgen_version": self.schedgen_version or __version__,
            }
        )
        if fmt >= 2:
            try:
                attrs[_ATTRS_DIGEST] = attributes_digest(attrs)
            except (TypeError, ValueError, RecursionError) as exc:
                raise StoreError(
                    f"schedule attributes must be plain JSON (params, dataset), got {_one_line(exc)}"
                ) from None
        return attrs

    def validate(self) -> None:
        """Check the structural invariants; raise :class:`StoreError` on the first defect."""
        _check_structure(
            self.indices, self.batch_offsets, self.epoch_offsets, self.n_samples, where="schedule"
        )
        for name, a in self.batch_arrays.items():
            if len(a) != self.n_batches:
                raise StoreError(
                    f"per-batch array {name!r} must have {self.n_batches} rows (one per batch), "
                    f"got {len(a)}"
                )
        for name, a in self.epoch_arrays.items():
            if len(a) != self.n_epochs:
                raise StoreError(
                    f"per-epoch array {name!r} must have {self.n_epochs} rows (one per epoch), "
                    f"got {len(a)}"
                )


def _check_structure(
    indices: np.ndarray,
    batch_offsets: np.ndarray,
    epoch_offsets: np.ndarray,
    n_samples: int,
    *,
    where: str,
) -> None:
    for name, a in (("indices", indices), ("batch_offsets", batch_offsets), ("epoch_offsets", epoch_offsets)):
        if a.ndim != 1 or a.dtype != np.int64:
            raise StoreError(
                f"{where}: array {name!r} must be 1-D int64, got {a.ndim}-D {a.dtype}"
            )
    if len(batch_offsets) < 1 or batch_offsets[0] != 0 or batch_offsets[-1] != len(indices):
        raise StoreError(
            f"{where}: batch_offsets must start at 0 and end at len(indices)={len(indices)}, "
            f"got {batch_offsets[:1].tolist()}...{batch_offsets[-1:].tolist()}"
        )
    if np.any(np.diff(batch_offsets) < 0):
        first = int(np.flatnonzero(np.diff(batch_offsets) < 0)[0])
        raise StoreError(f"{where}: batch_offsets must be non-decreasing; they fall at batch {first}")
    n_batches = len(batch_offsets) - 1
    if len(epoch_offsets) < 1 or epoch_offsets[0] != 0 or epoch_offsets[-1] != n_batches:
        raise StoreError(
            f"{where}: epoch_offsets must start at 0 and end at n_batches={n_batches}, "
            f"got {epoch_offsets[:1].tolist()}...{epoch_offsets[-1:].tolist()}"
        )
    if np.any(np.diff(epoch_offsets) < 0):
        raise StoreError(f"{where}: epoch_offsets must be non-decreasing")
    if len(indices):
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_samples:
            bad = lo if lo < 0 else hi
            raise StoreError(
                f"{where}: indices must lie in [0, n_samples={n_samples}), found {bad}"
            )
