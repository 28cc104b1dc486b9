"""The dataset registry: the known names, their readers, and :func:`load_dataset`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError, ParameterError
from ._dataset import Dataset, _check_split
from ._array import _ARRAY_PREFIX, _load_array_dir
from ._npz import _NPZ_PREFIX, _load_npz
from ._readers import _read_cifar10, _read_digits, _read_mnist, _read_svhn
from ._sources import default_data_dir

#: Names accepted by :func:`load_dataset` besides ``"npz:PATH"`` and ``"array:DIR"``.
DATASETS: tuple[str, ...] = ("digits", "svhn", "cifar10", "mnist", "fashion-mnist")

_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}

_READERS: dict[str, Callable[[str, str, Path, bool], tuple[np.ndarray, np.ndarray]]] = {
    "svhn": _read_svhn,
    "cifar10": _read_cifar10,
    "mnist": _read_mnist,
    "fashion-mnist": _read_mnist,
}


def load_dataset(
    name: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """Load one split of a known dataset or of an ``.npz`` file.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive; ``_`` may stand for ``-``),
        or ``"npz:PATH"`` for an ``.npz`` archive holding ``X`` of shape
        ``(n_samples, ...)``, integer ``y`` of shape ``(n_samples,)`` and
        optionally integer ``groups`` of shape ``(n_samples,)``. For
        ``split="test"`` the archive must hold ``X_test``, ``y_test`` (and
        optionally ``groups_test``) instead. Or ``"array:DIR"`` for a
        directory of ``.npy`` files (``X.npy``, ``y.npy``, optionally
        ``groups.npy``; ``X_test.npy`` ... for the test split) whose float32
        ``X`` is memory-mapped, not read into memory (see
        :mod:`schedgen.data._array`).
    split : {"train", "test"}
        For ``digits``, which has no official split, the test split is every
        5th image (index ``i % 5 == 0``, 360 images) and the train split the
        other 1,437. The other datasets use their published splits.
    data_dir : path, optional
        Root of the torchvision-style layout (see the module docstring).
        Defaults to :func:`default_data_dir`. Unused by ``digits`` and ``npz:``.
    download : bool
        Fetch missing files of ``svhn``, ``cifar10``, ``mnist`` and
        ``fashion-mnist`` from their canonical URLs into ``data_dir`` (checked
        against torchvision's MD5 sums), each file within the deadline of
        :func:`download_timeout`, with a progress line on stderr every 5
        seconds. Ignored by ``digits`` and ``npz:``.

    Returns
    -------
    Dataset
        ``X`` float32 of shape (n_samples, n_features) with the raw stored
        values, ``y`` int64 labels. SVHN images are flattened in torchvision's
        (channel, height, width) order and its label 10 is digit 0.

    Raises
    ------
    ParameterError
        On an unknown name, a split other than "train"/"test", or a
        non-boolean ``download``.
    DataError
        If files are missing (the message names the expected paths), malformed
        or truncated, if a download fails, or if :func:`validate_arrays` rejects
        the arrays.
    """
    if not isinstance(name, str):
        raise ParameterError(f"dataset name must be a string, got {type(name).__name__}")
    _check_split(split)
    if not isinstance(download, (bool, np.bool_)):
        raise ParameterError(f"download must be True or False, got {download!r}")

    if name[: len(_NPZ_PREFIX)].lower() == _NPZ_PREFIX:
        return _load_npz(name[len(_NPZ_PREFIX) :], split)
    if name[: len(_ARRAY_PREFIX)].lower() == _ARRAY_PREFIX:
        return _load_array_dir(name[len(_ARRAY_PREFIX) :], split)

    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ParameterError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}, "
            "npz:PATH for an .npz file with arrays X and y, or array:DIR for a directory with X.npy and y.npy"
        )
    if key == "digits":
        X, y = _read_digits(split)
        return Dataset(key, split, X, y, pixel_max=16.0)
    root = _resolve_data_dir(data_dir)
    X, y = _READERS[key](key, split, root, bool(download))
    return Dataset(key, split, X, y, pixel_max=255.0)


def _resolve_data_dir(data_dir) -> Path:
    if data_dir is None:
        root = default_data_dir()
    else:
        try:
            root = Path(os.fspath(data_dir)).expanduser()
        except TypeError as exc:
            raise ParameterError(f"data_dir must be a path, got {type(data_dir).__name__}") from exc
    root = Path(os.path.abspath(root))
    if root.exists() and not root.is_dir():
        raise DataError(f"data directory {root} exists but is not a directory")
    return root

