"""The dataset a schedule was built on, as a torch dataset: :func:`schedule_dataset`."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..data import DATASETS, Dataset, load_dataset
from ..errors import ParameterError, StoreError
from ..store import Schedule, check_format, read_attrs
from ._replay import ScheduleBatchSampler
from ._validate import describe, labels_sha256, same_data, shown, short

__all__ = ["ScheduleDataset", "schedule_dataset"]


class ScheduleDataset(TensorDataset):
    """A schedgen :class:`~schedgen.data.Dataset` as a torch ``TensorDataset`` of ``(x, y)`` pairs.

    What :func:`schedule_dataset` returns; item ``i`` is sample ``i`` of the data
    the schedule's indices refer to.

    Parameters
    ----------
    dataset : schedgen.data.Dataset
        The loaded data (e.g. from :func:`schedgen.data.load_dataset`).
    scale : bool, default False
        Divide the features by the dataset's ``pixel_max`` (16 for digits, 255
        for 8-bit images), giving values in [0, 1]; features of a dataset without
        ``pixel_max`` (``npz:``) are used as given.

    Attributes
    ----------
    tensors : tuple of Tensor
        ``X``, float32 of shape (n_samples, n_features), the values as
        :class:`~schedgen.data.Dataset` holds them (flattened, raw unless
        ``scale``), and ``y``, int64 labels of shape (n_samples,). Without
        ``scale`` ``X`` shares memory with the loaded array (no copy).
    groups : Tensor or None
        int64 group ids of an ``npz:`` dataset that has them.
    name, split : str
    pixel_max : float or None
    schedgen_fingerprint : str
        The dataset fingerprint (:func:`schedgen.data.fingerprint` of the raw
        data, so the same with or without ``scale``); ``ScheduleBatchSampler(...,
        dataset=...)`` compares it with the store's.
    schedgen_labels_sha256 : str
        Hex sha256 of the labels as little-endian int64 (the fingerprint an
        online learn2mix record carries by default).
    """

    def __init__(self, dataset: Dataset, *, scale: bool = False) -> None:
        if not isinstance(dataset, Dataset):
            raise ParameterError(
                f"dataset must be a schedgen.data.Dataset (e.g. from load_dataset), got {type(dataset).__name__}"
            )
        if not isinstance(scale, (bool, np.bool_)):
            raise ParameterError(f"scale must be True or False, got {shown(scale)} ({type(scale).__name__})")
        X = dataset.X
        if scale and dataset.pixel_max is not None:
            X = X / np.float32(dataset.pixel_max)
        super().__init__(_tensor(X), _tensor(dataset.y))
        self.groups = None if dataset.groups is None else _tensor(dataset.groups)
        self.name = dataset.name
        self.split = dataset.split
        self.pixel_max = dataset.pixel_max
        self.scaled = bool(scale) and dataset.pixel_max is not None
        self.schedgen_fingerprint = dataset.fingerprint
        self.schedgen_labels_sha256 = labels_sha256(dataset.y)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n_samples={len(self)}, "
            f"n_features={self.tensors[0].shape[1]}, scaled={self.scaled}, "
            f"fingerprint={self.schedgen_fingerprint[:16]!r}...)"
        )


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor over ``a``'s memory; schedgen's arrays are read-only views of writable memory."""
    view = a.view()
    try:
        view.flags.writeable = True
    except ValueError:  # memory that is really read-only: copy it
        view = np.array(a)
    return torch.from_numpy(view)


def schedule_dataset(
    source: str | os.PathLike | Schedule | ScheduleBatchSampler,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    scale: bool = False,
) -> ScheduleDataset:
    """The exact dataset a schedule was built on, as a torch dataset of ``(x, y)`` pairs.

    Loads the split named by the store's ``dataset`` attribute with
    :func:`schedgen.data.load_dataset` (e.g. digits ``train``: the 1,437 images,
    not scikit-learn's full 1,797) and checks its fingerprint against the
    store's, so the schedule's indices fetch the samples it was built on.

    Parameters
    ----------
    source : str, os.PathLike, Schedule or ScheduleBatchSampler
        A store (local path or fsspec URL; only its attributes are read), a
        loaded schedule, or a sampler replaying one.
    data_dir : str or os.PathLike, optional
        As :func:`schedgen.data.load_dataset` (``svhn``, ``cifar10``, ``mnist``,
        ``fashion-mnist``; unused by ``digits`` and ``npz:``).
    download : bool, default False
        As :func:`schedgen.data.load_dataset`: fetch missing files.
    scale : bool, default False
        Features divided by the dataset's ``pixel_max`` (see :class:`ScheduleDataset`).

    Returns
    -------
    ScheduleDataset
        A ``TensorDataset`` (float32 features, int64 labels) that also carries
        the fingerprint ``ScheduleBatchSampler(..., dataset=...)`` checks.

    Raises
    ------
    StoreError
        The store cannot be read, names no loadable dataset in its attributes,
        or the data loaded here has another fingerprint (or length) than the
        store's.
    ParameterError
        The store's dataset is not one schedgen can load (e.g. an online
        learn2mix record's default ``"online"``), or bad arguments.
    DataError
        The dataset's files are missing or malformed (from ``load_dataset``).

    Examples
    --------
    >>> train_set = schedule_dataset("schedules/digits-train-mmd-k50-....zarr", scale=True)  # doctest: +SKIP
    >>> len(train_set), train_set.tensors[0].shape  # doctest: +SKIP
    (1437, torch.Size([1437, 64]))
    """
    where, d, params = _source_dataset(source)
    name = d["name"]
    if name not in DATASETS and not name.startswith(("npz:", "array:")):
        online = isinstance(params, Mapping) and params.get("online") is True
        hint = (
            "; an online record (learn2mix or adaptive) names its data only through dataset_info: pass your own dataset, "
            "in the order of the labels the run was given, to ScheduleBatchSampler(..., dataset=...)"
            if online
            else ""
        )
        raise ParameterError(
            f"{where}: the schedule was built on dataset {name!r}, which schedgen cannot load "
            f"(expected one of {', '.join(DATASETS)}, npz:PATH or array:DIR){hint}"
        )
    ds = load_dataset(name, split=d["split"], data_dir=data_dir, download=download)
    out = ScheduleDataset(ds, scale=scale)
    if len(out) != d["n_samples"] or not same_data(
        out.schedgen_fingerprint, out.schedgen_labels_sha256, d, params
    ):
        raise StoreError(
            f"{where}: dataset fingerprint mismatch: the schedule was built on {describe(d)} with "
            f"{d['n_samples']} samples and fingerprint {short(d['fingerprint'])}, the {ds.name} ({ds.split}) "
            f"loaded here has {ds.n_samples} samples and fingerprint {short(ds.fingerprint)}"
        )
    return out


def _source_dataset(source: Any) -> tuple[str, Mapping[str, Any], Any]:
    """``(where, dataset, params)`` of a store, schedule or sampler; the dataset attribute checked."""
    if isinstance(source, ScheduleBatchSampler):
        source = source.schedule
    if isinstance(source, Schedule):
        where, d, params = "the schedule", source.dataset, source.params
    elif isinstance(source, (str, os.PathLike)):
        where = str(os.fspath(source))
        attrs = read_attrs(source)
        check_format(attrs, where)
        d, params = attrs.get("dataset"), attrs.get("params")
    else:
        raise ParameterError(
            f"source must be a store path, an fsspec URL, a Schedule or a ScheduleBatchSampler, "
            f"got {type(source).__name__}"
        )
    if not isinstance(d, Mapping):
        raise StoreError(f"{where}: attribute 'dataset' must be an object, got {shown(d)}")
    for key, kind in (("name", str), ("split", str), ("fingerprint", str), ("n_samples", int)):
        value = d.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise StoreError(
                f"{where}: dataset.{key} must be {kind.__name__} to find the dataset, got {shown(value)}"
            )
    return where, d, params
