"""The reader of ``npz:PATH`` datasets: an ``.npz`` archive of ``X``, ``y`` and
optionally ``groups`` (``X_test``, ``y_test``, ``groups_test`` for the test split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, ParameterError
from ._dataset import Dataset

_NPZ_PREFIX = "npz:"
_NPY_MAGIC = b"\x93NUMPY"
# A zip (np.load's test): a local file header, or the end record of an empty archive.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _load_npz(spec: str, split: str) -> Dataset:
    if not spec.strip():
        raise ParameterError("npz dataset needs a path, as in npz:/data/features.npz; got 'npz:'")
    path = Path(spec).expanduser().resolve()
    name = _NPZ_PREFIX + str(path)
    if path.is_dir():
        raise DataError(f"npz:{path} is a directory, expected an .npz file")
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    suffix = "" if split == "train" else "_test"
    x_key, y_key, g_key = f"X{suffix}", f"y{suffix}", f"groups{suffix}"
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    # np.load takes anything that is neither a zip nor an .npy file for a pickle
    # and answers with advice to load it unsafely; sniff the magic first.
    if not head.startswith(_ZIP_MAGICS + (_NPY_MAGIC,)):
        raise DataError(f"{path} is not an npz archive (expected a zip of .npy arrays)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not hasattr(archive, "files"):  # a .npy file loads as a bare array
            raise DataError(
                f"{path}: expected an .npz archive with arrays {x_key!r} and {y_key!r}, "
                f"got a single .npy array of shape {archive.shape}"
            )
        with archive:
            found = list(archive.files)
            for k in (x_key, y_key):
                if k not in found:
                    raise DataError(
                        f"{path}: npz archive has no array {k!r} for split {split!r}; expected {x_key!r} "
                        f"(n_samples, n_features) and {y_key!r} (n_samples,), found {found}"
                    )
            X = _npz_member(archive, x_key, path)
            y = _npz_member(archive, y_key, path)
            groups = _npz_member(archive, g_key, path) if g_key in found else None
    except DataError:
        raise
    except Exception as exc:  # np.load raises several types on a corrupt file or an object array
        if "allow_pickle" in str(exc):  # never pass on numpy's advice to unpickle
            raise DataError(
                f"{path}: holds pickled Python objects, expected numeric arrays (an npz archive of "
                f"{x_key!r} and {y_key!r})"
            ) from exc
        raise DataError(f"{path}: cannot read as an .npz archive ({type(exc).__name__}: {exc})") from exc
    return Dataset(name, split, X, y, pixel_max=None, groups=groups)


def _npz_member(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DataError(
            f"{path}: array {key!r} holds Python objects (dtype object), expected a numeric array"
        ) from exc
