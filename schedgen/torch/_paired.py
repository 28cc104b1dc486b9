"""Replay a schedule with its partner batches (ITRA's S1 and S2): :class:`PairedScheduleBatchSampler`.

Each step yields one :class:`PairedBatch`: this rank's part of S1 (the
schedule's batch ``b``) followed by this rank's part of S2 (row ``b`` of the
store's ``partner_indices``, written by ``schedgen build --pair``); both are
split across ranks as :class:`~schedgen.torch.ScheduleBatchSampler` splits S1,
by the same ``uneven`` rule (:func:`~schedgen.torch._replay.local_part`): with
``split``, contiguous ``np.array_split`` parts, earlier ranks take the extra
sample; with ``drop`` or ``pad``, every rank's S1 part has one length and its
S2 part another, the same on every rank.

Roles through a ``DataLoader``
------------------------------
A ``DataLoader`` hands the batch sampler's list to the dataset and collates
the items, so the split point must travel with the items. The one design:

* :class:`PairedBatch` is a ``list`` of indices with ``n1``, the length of its
  S1 part (an attribute of the list, kept when a worker process receives it);
* :class:`RoleTaggedDataset` wraps the dataset and fetches a whole
  :class:`PairedBatch` at once (``__getitems__``, which ``DataLoader`` calls in
  the main process and in workers alike), returning ``(item, role)`` pairs with
  role 0 for S1 and 1 for S2;
* :func:`paired_collate`, the ``collate_fn``, groups the pairs by role and
  collates each group with torch's ``default_collate``: the loader yields
  ``(s1, s2)``.

The roles are part of the items, so they survive ``num_workers > 0``,
``pin_memory`` and torchdata's ``StatefulDataLoader``. Epochs, sharding and
resume are :class:`~schedgen.torch.ScheduleBatchSampler`'s (it is the base
class), elastic resume included; the state's ``digest`` also covers ``partner_indices``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset, default_collate

from ..errors import ParameterError
from ..store import Schedule, array_digest
from ._replay import ScheduleBatchSampler, local_part
from ._validate import describe

__all__ = ["PairedBatch", "PairedScheduleBatchSampler", "RoleTaggedDataset", "paired_collate"]

#: The per-batch array of partner batches (docs/FORMAT.md).
PARTNERS = "partner_indices"


class PairedBatch(list):
    """This rank's indices of one step: S1's part, then S2's part.

    Parameters
    ----------
    indices : iterable of int
        S1's part followed by S2's part.
    n1 : int
        Length of S1's part: ``batch[:n1]`` is S1, ``batch[n1:]`` is S2.
    """

    def __init__(self, indices: Iterable[int] = (), n1: int = 0) -> None:
        super().__init__(indices)
        self.n1 = n1

    @property
    def s1(self) -> list[int]:
        """This rank's part of S1."""
        return list(self[: self.n1])

    @property
    def s2(self) -> list[int]:
        """This rank's part of S2 (the partner batch)."""
        return list(self[self.n1 :])

    def copy(self) -> PairedBatch:
        return PairedBatch(self, self.n1)

    def __repr__(self) -> str:
        return f"PairedBatch({list.__repr__(self)}, n1={self.n1})"


class PairedScheduleBatchSampler(ScheduleBatchSampler):
    """Yield, per step, this rank's part of S1 and of its partner batch S2, as one :class:`PairedBatch`.

    Parameters
    ----------
    source : str, os.PathLike or Schedule
        A store built with ``schedgen build ... --pair``, or a loaded
        :class:`~schedgen.store.Schedule` with ``batch_arrays["partner_indices"]``:
        int64 of shape ``(n_batches, M)``, values in ``[0, n_samples)``; row
        ``b`` is the partner of global batch ``b``.
    rank, world_size, epoch, dataset, uneven
        As :class:`~schedgen.torch.ScheduleBatchSampler`; ``M`` must also be at
        least ``world_size``. ``dataset`` may be the :class:`RoleTaggedDataset`.
        ``uneven`` applies to S1 and S2 alike (S2's ``M`` samples are one batch).

    Attributes
    ----------
    schedule : Schedule
        The schedule in memory.
    partners : array of shape (n_batches, M), int64
        The partner batches (read-only).
    digest : str
        Hex sha256 over the schedule digest and the partner array's digest
        (so a state of another partner array is refused).

    Raises
    ------
    ParameterError
        As :class:`~schedgen.torch.ScheduleBatchSampler`, and a store without
        ``partner_indices`` or with a malformed one.

    Examples
    --------
    >>> data = RoleTaggedDataset(schedule_dataset("runs/pair.zarr"))  # doctest: +SKIP
    >>> sampler = PairedScheduleBatchSampler("runs/pair.zarr", dataset=data)  # doctest: +SKIP
    >>> loader = DataLoader(data, batch_sampler=sampler, collate_fn=paired_collate)  # doctest: +SKIP
    >>> for (x1, y1), (x2, y2) in loader:  # doctest: +SKIP
    ...     ...
    """

    _copy_batch = staticmethod(PairedBatch.copy)

    def __init__(
        self,
        source: str | os.PathLike | Schedule,
        *,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        dataset: Any = None,
        uneven: str = "split",
    ) -> None:
        super().__init__(source, rank=rank, world_size=world_size, epoch=epoch, dataset=dataset, uneven=uneven)
        self.partners = _partners(self.schedule, source, world_size)
        schedule_digest = self.digest
        self.digest = hashlib.sha256(f"{schedule_digest}:{array_digest(self.partners)}".encode()).hexdigest()
        self._paired_epoch = -1
        self._paired: list[PairedBatch] = []

    def _batches(self, epoch: int) -> list[PairedBatch]:
        """This rank's S1 and S2 parts of every batch of ``epoch`` (cached per epoch)."""
        e = epoch % self.n_epochs
        if e != self._paired_epoch:
            s1 = super()._batches(epoch)
            b0 = int(self.schedule.epoch_offsets[e])
            # The same rule as S1's, on the M columns of a partner row (pad wraps to the first columns).
            start, length = local_part(np.array([self.partners.shape[1]]), self.rank, self.world_size, self.uneven)
            cols = (int(start[0]) + np.arange(int(length[0]))) % self.partners.shape[1]
            s2 = self.partners[b0 : b0 + len(s1)][:, cols].tolist()
            self._paired = [PairedBatch(x + y, len(x)) for x, y in zip(s1, s2)]
            self._paired_epoch = e
        return self._paired


def _partners(schedule: Schedule, source: Any, world_size: int) -> np.ndarray:
    """The validated, read-only int64 partner array of ``schedule``."""
    where = (
        f"the store {os.fspath(source)}"
        if isinstance(source, (str, os.PathLike))
        else f"the {schedule.method} schedule of {describe(schedule.dataset)}"
    )
    p = schedule.batch_arrays.get(PARTNERS)
    if p is None:
        raise ParameterError(
            f"{where} has no {PARTNERS} (partner batches): build it with `schedgen build ... --pair "
            "random|class-matched|shifted` to replay it with PairedScheduleBatchSampler"
        )
    p = np.asarray(p)
    if p.ndim != 2 or not np.issubdtype(p.dtype, np.integer):
        raise ParameterError(
            f"{PARTNERS} of {where} must be an integer array of shape (n_batches, M), "
            f"got dtype {p.dtype} and shape {p.shape}"
        )
    n = schedule.n_samples
    if p.size and (int(p.min()) < 0 or int(p.max()) >= n):
        bad = int(p.min()) if int(p.min()) < 0 else int(p.max())
        raise ParameterError(f"{PARTNERS} of {where} must hold indices in [0, {n}), got {bad}")
    if p.shape[1] < world_size:
        raise ParameterError(
            f"every partner batch must hold at least world_size={world_size} samples to give each rank "
            f"one, but the partner batches of {where} hold {p.shape[1]}"
        )
    out = np.array(p, dtype=np.int64, copy=True)
    out.setflags(write=False)
    return out


class RoleTaggedDataset(Dataset):
    """A dataset whose items come tagged with their role in a :class:`PairedBatch`.

    Fetched by whole batches: ``__getitems__(batch)`` returns ``(item, role)``
    for each index of ``batch``, role 0 for S1 (``batch[:batch.n1]``) and 1 for
    S2, with ``item = dataset[index]``. Use it with
    ``DataLoader(RoleTaggedDataset(ds), batch_sampler=PairedScheduleBatchSampler(...),
    collate_fn=paired_collate)``.

    Parameters
    ----------
    dataset : map-style dataset
        The dataset the schedule was built on; its length and
        ``schedgen_fingerprint`` are this wrapper's (so ``dataset=`` checks pass through).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        fingerprint = getattr(dataset, "schedgen_fingerprint", None)
        if fingerprint is not None:
            self.schedgen_fingerprint = fingerprint
        labels_sha256 = getattr(dataset, "schedgen_labels_sha256", None)
        if labels_sha256 is not None:
            self.schedgen_labels_sha256 = labels_sha256

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, batch: Sequence[int]) -> list[tuple[Any, int]]:
        n1 = getattr(batch, "n1", None)
        if not isinstance(batch, PairedBatch) or n1 is None:
            raise ParameterError(
                "RoleTaggedDataset must be fetched by PairedBatch (batch_sampler=PairedScheduleBatchSampler(...)), "
                f"got a {type(batch).__name__} of {len(batch)} indices, which carries no roles"
            )
        return [(self.dataset[i], int(j >= n1)) for j, i in enumerate(batch)]

    def __getitem__(self, index: int) -> Any:
        raise ParameterError(
            "RoleTaggedDataset is fetched by whole PairedBatch batches (DataLoader(..., "
            f"batch_sampler=PairedScheduleBatchSampler(...))), not by single index; got index {index!r}"
        )


def paired_collate(samples: Sequence[tuple[Any, int]]) -> tuple[Any, Any]:
    """Collate ``(item, role)`` pairs into ``(s1, s2)``: each role's items, in order, by ``default_collate``.

    Parameters
    ----------
    samples : sequence of (item, role)
        As :class:`RoleTaggedDataset` returns: roles 0 (S1) then 1 (S2).

    Returns
    -------
    s1, s2
        ``default_collate`` of the S1 items and of the S2 items.
    """
    roles = []
    for s in samples:
        if not (isinstance(s, tuple) and len(s) == 2 and s[1] in (0, 1) and not isinstance(s[1], bool)):
            raise ParameterError(
                f"paired_collate takes (item, role) pairs with role 0 or 1, as RoleTaggedDataset returns; "
                f"got a {type(s).__name__}"
            )
        roles.append(s[1])
    n1 = roles.count(0)
    if roles != [0] * n1 + [1] * (len(roles) - n1) or n1 in (0, len(roles)):
        raise ParameterError(
            f"a paired batch must hold S1's items (role 0) then S2's (role 1), both non-empty; got roles {roles[:20]}"
        )
    return default_collate([s[0] for s in samples[:n1]]), default_collate([s[0] for s in samples[n1:]])
