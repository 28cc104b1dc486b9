"""learn2mix online, driven by the trainer's losses and recorded: :class:`Learn2MixBatchSampler`."""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import ParameterError
from ..methods.learn2mix import Learn2MixPlanner, class_mean_losses, update_alpha
from ..store import Schedule, Unchanged, write_schedule
from ._record import check_record_to, dataset_attr
from ._resume import Cursor, check_keys, read_position
from ._validate import check_int, check_real, check_str, labels_sha256

__all__ = ["Learn2MixBatchSampler"]

#: Keys of :meth:`Learn2MixBatchSampler.state_dict`.
_L2M_STATE_KEYS = (
    "epoch",
    "yielded",
    "alpha",
    "losses",
    "labels_sha256",
    "k",
    "seed",
    "mixing_rate",
    "batches_per_epoch",
)


class Learn2MixBatchSampler(Sampler[list[int]]):
    """learn2mix online: batches of exactly k whose class mix follows the trainer's losses.

    Epoch e yields the ``batches_per_epoch`` batches of
    ``Learn2MixPlanner.epoch_matrix(e, α_e)``, the same batches the offline
    precompute plays for the same α: each holds ``largest_remainder_counts(α_e, k)[j]``
    samples of class j, drawn through the per-class cyclic pointers of
    :mod:`schedgen.methods.learn2mix`. α_0 is the class proportions of ``labels``;
    :meth:`update` closes an epoch with its class-wise mean losses L and starts
    the next one with ``α_{e+1} = α_e + γ (L / ΣL − α_e)``.

    Parameters
    ----------
    labels : array or tensor of shape (n_samples,)
        Integer class ids; every class ``0..max(labels)`` must occur.
    k : int
        Batch size, ``1 <= k <= n_samples``; every batch holds exactly k samples.
    mixing_rate : float
        γ in (0, 1].
    seed : int
        ``0 <= seed < 2**32``; epoch e visits class j in the order of
        ``rng(seed, "learn2mix", e, j)`` (:mod:`schedgen.rng`).
    batches_per_epoch : int, optional
        ``ceil(n_samples / k)`` by default.
    record_to : str or os.PathLike, optional
        A local path where the run is recorded as a store of the current format (see Notes).
        An existing path must be a store recorded by this class (it is replaced);
        anything else there is refused rather than deleted.
    dataset_info : mapping, optional
        ``name``, ``split`` and ``fingerprint`` (non-empty strings) for the
        store's ``dataset`` attribute. Defaults: ``"online"``, ``"train"`` and
        the hex sha256 of the labels as little-endian int64. ``n_samples`` and
        ``n_classes`` always come from the labels.

    Attributes
    ----------
    planner : Learn2MixPlanner
        The core that draws the batches.
    labels_sha256 : str
        Hex sha256 of the labels as little-endian int64 (checked on resume).
    record_to : pathlib.Path or None
    dataset : dict
        The ``dataset`` attribute of the record.

    Raises
    ------
    ParameterError, DataError
        From the core on a bad k, γ, seed, ``batches_per_epoch`` or labels; here
        on a bad ``record_to`` or ``dataset_info``.

    Notes
    -----
    **Iteration.** ``iter(sampler)`` plays the current epoch from batch 0, or
    from the position of a state loaded since the last ``iter()``; the start is
    fixed when ``iter()`` is called. Calling ``iter()`` again without
    :meth:`update` replays the *same* epoch from its first batch (α only moves
    in ``update``). Only the newest iterator moves the position and writes the
    record; an older one still yields its epoch's batches. ``update`` may come
    before an epoch's batches are all drawn: the next epoch starts at batch 0.
    No ``set_epoch``: the epoch advances by ``update`` alone.

    **Recording.** With ``record_to``, the whole store is rewritten atomically
    (``write_schedule(..., overwrite=True)``: built in a temporary sibling, then
    renamed) at two points:

    * when the newest iterator hands out the first batch of a pass (at
      ``next()``, not at ``iter()``, so the throw-away iterators
      ``StatefulDataLoader`` creates write nothing): epochs ``0..e``, the
      current epoch e included, its ``class_losses`` row NaN;
    * in :meth:`update`, before it returns: epochs ``0..e`` with row e of
      ``class_losses`` set to the losses just given.

    A rewrite that would not change the store is skipped, and one that adds an
    epoch hard-links the old store's whole chunks of the epochs already recorded
    instead of compressing them again (see :class:`~schedgen.store.Unchanged`), so a
    write costs about the new epoch, not the whole run. Every recorded epoch
    holds all its ``batches_per_epoch`` batches, also those not handed out yet
    (they are fixed by α_e). The store has method ``"learn2mix"``, params
    ``seed``, ``mixing_rate``, ``k``, ``batches_per_epoch``, ``n_classes`` and
    ``online: true``, and the per-epoch arrays ``class_proportions``
    (n_epochs, n_classes), the α each epoch used, and ``class_losses``
    (n_epochs, n_classes), the losses given to ``update`` (NaN for an epoch not
    yet updated). :class:`ScheduleBatchSampler` replays it exactly.

    A crash leaves the last complete store: every epoch that was started or
    updated before the last write, valid and digest-checked. If a write fails
    (:class:`~schedgen.errors.StoreError`), ``update`` leaves the sampler as it
    was, so it can be retried. A run that does not load a state replaces the
    store at ``record_to`` at its first write.

    **Resume.** :meth:`state_dict` holds the epoch, the batches of it handed
    out, α and the losses given so far, plus what identifies the run (labels
    sha256, k, seed, γ, batches per epoch), all plain JSON. The protocol is
    :class:`ScheduleBatchSampler`'s, that is torchdata's: ``load_state_dict``
    restores epoch, α and losses at once, and the next ``iter()`` continues the
    epoch from the saved position. The record is a function of the state, so a
    resumed sampler recording to the same path continues the same store, and
    its next write puts it where the uninterrupted run would have it (dropping
    epochs recorded after the state was saved).

    Where to checkpoint a ``StatefulDataLoader``: mid-epoch (any batch) always
    works. At an epoch boundary the state must be taken after ``update``; with
    ``num_workers=0`` the loader's state then holds it, but a multi-worker
    loader's state lags (it holds the sampler's last snapshot, from before
    ``update``, and torchdata restarts that finished pass, replaying the epoch).
    So at a boundary save ``sampler.state_dict()`` and resume with
    ``sampler.load_state_dict(...)`` and a fresh loader (nothing of the loader's
    position is left to restore there). A state taken after the loop but before
    ``update`` resumes the same way, followed by ``update``.

    Examples
    --------
    >>> sampler = Learn2MixBatchSampler(y, 64, mixing_rate=0.1, seed=0, record_to="run.zarr")  # doctest: +SKIP
    >>> loader = StatefulDataLoader(dataset, batch_sampler=sampler)  # doctest: +SKIP
    >>> for epoch in range(n_epochs):  # doctest: +SKIP
    ...     for x, t in loader:
    ...         ...
    ...     losses = per_sample_losses(model, train_set)  # (n_samples,)
    ...     sampler.update(Learn2MixBatchSampler.class_losses(losses, y, sampler.n_classes))
    """

    def __init__(
        self,
        labels,
        k: int,
        *,
        mixing_rate: float,
        seed: int,
        batches_per_epoch: int | None = None,
        record_to: str | os.PathLike | None = None,
        dataset_info: Mapping[str, str] | None = None,
    ) -> None:
        self.planner = Learn2MixPlanner(
            _to_numpy(labels), k, mixing_rate=mixing_rate, seed=seed, batches_per_epoch=batches_per_epoch
        )
        self.labels_sha256 = labels_sha256(self.planner.labels)
        self.dataset = dataset_attr(dataset_info, self.planner, self.labels_sha256)
        self.record_to = check_record_to(record_to)

        # α of epochs 0..epoch and the losses that closed epochs 0..epoch-1.
        self._alphas: list[np.ndarray] = [self.planner.initial_alpha]
        self._losses: list[np.ndarray] = []
        # True once the current epoch handed out a batch (it then belongs to the record).
        self._started = False
        # The epoch in progress, the batches of it the newest iterator handed out,
        # and a loaded position not yet consumed by __iter__.
        self._cursor = Cursor(0)
        self._matrices: dict[int, np.ndarray] = {}
        # (n_epochs, n_losses) of the last store this object wrote, and its digest.
        self._recorded: tuple[int, int] | None = None
        self._recorded_digest: str | None = None

    # ------------------------------------------------------------------ properties

    @property
    def epoch(self) -> int:
        """The epoch in progress (the number of :meth:`update` calls so far)."""
        return self._cursor.epoch

    @property
    def alpha(self) -> np.ndarray:
        """α of the epoch in progress, float64 (n_classes,) (a copy)."""
        return self._alphas[-1].copy()

    @property
    def k(self) -> int:
        return self.planner.k

    @property
    def n_classes(self) -> int:
        return self.planner.n_classes

    @property
    def n_samples(self) -> int:
        return self.planner.n_samples

    @property
    def mixing_rate(self) -> float:
        return self.planner.mixing_rate

    @property
    def seed(self) -> int:
        return self.planner.seed

    @property
    def batches_per_epoch(self) -> int:
        return self.planner.batches_per_epoch

    def __len__(self) -> int:
        """Batches per epoch (every epoch has as many)."""
        return self.planner.batches_per_epoch

    # ------------------------------------------------------------------ losses

    @staticmethod
    def class_losses(per_sample_losses, labels, n_classes: int) -> np.ndarray:
        """Class-wise mean losses ``L_j = mean{loss_i : y_i = j}`` (0 for a class with no sample).

        Parameters
        ----------
        per_sample_losses : array or tensor of shape (n,)
            Finite per-sample losses (a tensor is detached and moved to the CPU).
        labels : array or tensor of shape (n,)
            Integer class ids in ``0..n_classes-1``.
        n_classes : int
            Number of classes (the length of the result).

        Returns
        -------
        class_losses : ndarray of shape (n_classes,), float64
            Ready for :meth:`update`.
        """
        return class_mean_losses(_to_numpy(per_sample_losses), _to_numpy(labels), n_classes)

    def update(self, class_losses) -> np.ndarray:
        """Close the epoch in progress: ``α ← α + γ (L / ΣL − α)``; the next ``iter()`` plays the next epoch.

        With ``record_to`` the store is rewritten (the closed epoch with its
        losses) before this returns; if that fails, nothing changes.

        Parameters
        ----------
        class_losses : array or tensor of shape (n_classes,)
            Class-wise mean losses of the epoch, finite and >= 0 (see
            :meth:`class_losses`).

        Returns
        -------
        alpha : ndarray of shape (n_classes,), float64
            α of the new epoch.

        Raises
        ------
        ParameterError
            Wrong length, negative, NaN or infinite losses (from the core).
        StoreError
            The record could not be written.
        """
        L = _to_numpy(class_losses)
        alpha = update_alpha(self._alphas[-1], L, self.planner.mixing_rate)
        L = np.array(L, dtype=np.float64)
        saved = (self._started, self._cursor.save())
        self._alphas.append(alpha)
        self._losses.append(L)
        self._cursor.restart(self._cursor.epoch + 1)
        self._started = False
        try:
            self._record(self._cursor.epoch)
        except BaseException:
            self._alphas.pop()
            self._losses.pop()
            self._started = saved[0]
            self._cursor.restore(saved[1])
            raise
        return alpha.copy()

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the remaining batches of the epoch in progress, each a list of k ints.

        Starts at batch 0, or at the loaded position if a state was loaded since
        the last ``__iter__``. The start is fixed when ``iter()`` is called.
        """
        epoch, start, token = self._cursor.begin(self._cursor.epoch)
        return self._cursor.play(self._matrix(epoch), start, token, np.ndarray.tolist, self._start_pass)

    def _start_pass(self) -> None:
        """The newest pass hands out its first batch: the epoch joins the record."""
        self._record(self._cursor.epoch + 1)
        self._started = True

    def _matrix(self, epoch: int) -> np.ndarray:
        """The batches of ``epoch`` under its α, (batches_per_epoch, k) int64, read-only (cached)."""
        m = self._matrices.get(epoch)
        if m is None:
            m = self.planner.epoch_matrix(epoch, self._alphas[epoch])
            m.setflags(write=False)
            self._matrices[epoch] = m
        return m

    # ------------------------------------------------------------------ record

    def to_schedule(self) -> Schedule:
        """The record as of now: every epoch started or updated so far (what ``record_to`` holds)."""
        return self._schedule(self._cursor.epoch + int(self._started))

    def _schedule(self, n_epochs: int) -> Schedule:
        B, k, C = self.planner.batches_per_epoch, self.planner.k, self.planner.n_classes
        if n_epochs:
            indices = np.concatenate([self._matrix(e).ravel() for e in range(n_epochs)])
        else:
            indices = np.empty(0, dtype=np.int64)
        proportions = np.asarray(self._alphas[:n_epochs], dtype=np.float64).reshape(n_epochs, C)
        losses = np.full((n_epochs, C), np.nan)
        done = min(len(self._losses), n_epochs)
        if done:
            losses[:done] = self._losses[:done]
        return Schedule(
            indices=indices.astype(np.int64, copy=False),
            batch_offsets=np.arange(n_epochs * B + 1, dtype=np.int64) * k,
            epoch_offsets=np.arange(n_epochs + 1, dtype=np.int64) * B,
            method="learn2mix",
            params={
                "seed": self.planner.seed,
                "mixing_rate": self.planner.mixing_rate,
                "k": k,
                "batches_per_epoch": B,
                "n_classes": C,
                "online": True,
            },
            dataset=dict(self.dataset),
            k=k,
            epoch_arrays={"class_proportions": proportions, "class_losses": losses},
        )

    def _record(self, n_epochs: int) -> None:
        """Rewrite the store with epochs ``0..n_epochs-1`` unless it already holds exactly that."""
        if self.record_to is None:
            return
        key = (n_epochs, len(self._losses))
        if key == self._recorded:
            return
        schedule = self._schedule(n_epochs)
        unchanged = None
        if self._recorded is not None and self._recorded_digest is not None:
            # Epochs already recorded never change (epoch e is fixed by α_e): the old
            # store's chunks holding them are linked, not compressed again.
            same = min(self._recorded[0], n_epochs)
            B, k = self.planner.batches_per_epoch, self.planner.k
            unchanged = Unchanged(self._recorded_digest, {"indices": same * B * k, "batch_offsets": same * B + 1})
        write_schedule(schedule, self.record_to, overwrite=True, unchanged=unchanged)
        self._recorded, self._recorded_digest = key, schedule.digest

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The resume state, plain JSON.

        Returns
        -------
        dict
            ``epoch``, ``yielded`` (batches of that epoch handed out), ``alpha``
            (list of floats, α of that epoch), ``losses`` (one list of floats per
            :meth:`update` so far) and the run's ``labels_sha256``, ``k``,
            ``seed``, ``mixing_rate`` and ``batches_per_epoch``.
        """
        return {
            **self._cursor.position(),
            "alpha": [float(v) for v in self._alphas[-1]],
            "losses": [[float(v) for v in L] for L in self._losses],
            "labels_sha256": self.labels_sha256,
            "k": self.planner.k,
            "seed": self.planner.seed,
            "mixing_rate": self.planner.mixing_rate,
            "batches_per_epoch": self.planner.batches_per_epoch,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the next ``__iter__`` continues from it.

        Epoch, α and losses are restored at once (α is recomputed from α_0 and
        the losses and must equal the saved one exactly); the record is
        rewritten at the next write point.

        Raises
        ------
        ParameterError
            The state is malformed, belongs to another run (labels, k, seed,
            mixing rate or batches per epoch differ), points past the end of its
            epoch, or its α disagrees with its losses.
        """
        check_keys(state_dict, _L2M_STATE_KEYS, "Learn2MixBatchSampler")
        self._check_same_run(state_dict)
        epoch, yielded = read_position(state_dict, lambda e: self.planner.batches_per_epoch, same_length=True)
        alphas, rows = self._replay_losses(state_dict, epoch)
        self._alphas = alphas
        self._losses = rows
        self._started = yielded > 0
        self._cursor.load(epoch, yielded)
        self._matrices = {}
        # the next write point rewrites the store from this state
        self._recorded, self._recorded_digest = None, None

    def _check_same_run(self, state_dict: Mapping[str, Any]) -> None:
        """Refuse a state of another run: labels, k, seed, mixing rate or batches per epoch differ."""
        p = self.planner
        # Types first (one check per kind), so a malformed value is not called "another run".
        theirs_all = {
            "labels_sha256": check_str("state_dict['labels_sha256']", state_dict["labels_sha256"], hex64=True),
            "k": check_int("state_dict['k']", state_dict["k"], low=1),
            "seed": check_int("state_dict['seed']", state_dict["seed"], low=0),
            "mixing_rate": check_real("state_dict['mixing_rate']", state_dict["mixing_rate"]),
            "batches_per_epoch": check_int("state_dict['batches_per_epoch']", state_dict["batches_per_epoch"], low=1),
        }
        for key, mine in (
            ("labels_sha256", self.labels_sha256),
            ("k", p.k),
            ("seed", p.seed),
            ("mixing_rate", p.mixing_rate),
            ("batches_per_epoch", p.batches_per_epoch),
        ):
            theirs = theirs_all[key]
            if theirs != mine:
                if key == "labels_sha256":
                    shown, own = f"{theirs[:16]}...", f"{mine[:16]}..."
                else:
                    shown, own = repr(theirs), repr(mine)
                raise ParameterError(
                    f"state_dict belongs to another run: it has {key}={shown}, this sampler has {key}={own}; "
                    "a state resumes only the same labels, k, seed, mixing rate and batches per epoch"
                )

    def _replay_losses(self, state_dict: Mapping[str, Any], epoch: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """α of epochs 0..epoch and the loss rows of a state; its α must equal the one its losses give."""
        p = self.planner
        losses = state_dict["losses"]
        if not isinstance(losses, (list, tuple)) or len(losses) != epoch:
            got = f"{len(losses)} entries" if isinstance(losses, (list, tuple)) else type(losses).__name__
            raise ParameterError(
                f"state_dict['losses'] must be a list with one entry per finished epoch: "
                f"expected {epoch} (the epoch), got {got}"
            )
        alphas = [p.initial_alpha]
        rows = []
        for e, L in enumerate(losses):
            try:
                alphas.append(update_alpha(alphas[-1], L, p.mixing_rate))
            except ParameterError as exc:
                raise ParameterError(f"state_dict['losses'][{e}]: {exc}") from None
            rows.append(np.array(L, dtype=np.float64))
        try:
            alpha = np.asarray(state_dict["alpha"], dtype=np.float64)
        except (TypeError, ValueError):
            alpha = None
        if alpha is None or alpha.shape != alphas[-1].shape or not np.array_equal(alpha, alphas[-1]):
            raise ParameterError(
                f"state_dict['alpha'] disagrees with the alpha its losses give for epoch {epoch} "
                f"(expected {[float(v) for v in alphas[-1]]}, got {state_dict['alpha']!r}); "
                "the state was altered or comes from another run"
            )
        return alphas, rows

    def __repr__(self) -> str:
        p = self.planner
        return (
            f"{type(self).__name__}(n_samples={p.n_samples}, n_classes={p.n_classes}, k={p.k}, "
            f"mixing_rate={p.mixing_rate}, seed={p.seed}, batches_per_epoch={p.batches_per_epoch}, "
            f"epoch={self._cursor.epoch}, record_to={None if self.record_to is None else str(self.record_to)!r})"
        )


def _to_numpy(x: Any) -> Any:
    """A tensor as a NumPy array (detached, on the CPU); anything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x

