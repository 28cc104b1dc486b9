"""The reader of ``array:DIR`` datasets: ``.npy`` files in a directory, features memory-mapped.

Layout::

    DIR/X.npy        features, shape (n_samples, ...), any real dtype
    DIR/y.npy        integer labels, shape (n_samples,)
    DIR/groups.npy   optional integer group ids, shape (n_samples,)
    DIR/X_test.npy, DIR/y_test.npy, DIR/groups_test.npy   the test split

``X.npy`` is opened with ``np.load(mmap_mode="r")``. When it is float32 and C-ordered
(the layout ``np.save`` writes for a float32 array), the dataset's ``X`` *is* the
mapping: validation, the fingerprint, the feature stage and the kernels' row-sum pass
read it block by block, so memory holds O(N) vectors and a few blocks, not the matrix
(the pages read stay in the OS page cache, which the kernel reclaims under pressure).
Any other dtype or order is cast to float32 in memory, as ``npz:`` is, with a warning
that says how to stream it. Labels and groups are read into memory (O(N)).
Pickled ``.npy`` files are never loaded. Do not rewrite ``X.npy`` in place while a build
reads it: the mapping would see the new bytes (or fault, if the file shrinks) after the
fingerprint was taken from the old ones; write a new file and rename it over the old one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError, ParameterError
from ._dataset import Dataset

_ARRAY_PREFIX = "array:"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"


def _load_array_dir(spec: str, split: str) -> Dataset:
    if not spec.strip():
        raise ParameterError("array dataset needs a directory, as in array:/data/embeddings; got 'array:'")
    root = Path(spec).expanduser().resolve()
    name = _ARRAY_PREFIX + str(root)
    if not root.exists():
        raise DataError(f"array dataset directory not found: {root} (expected a directory with X.npy and y.npy)")
    if not root.is_dir():
        raise DataError(f"array:{root} is not a directory; expected a directory with X.npy and y.npy")
    suffix = "" if split == "train" else "_test"
    x_path, y_path, g_path = (root / f"{stem}{suffix}.npy" for stem in ("X", "y", "groups"))
    for p in (x_path, y_path):
        if not p.is_file():
            found = sorted(q.name for q in root.glob("*.npy"))
            raise DataError(
                f"{root}: no {p.name} for split {split!r}; expected {x_path.name} (n_samples, n_features) "
                f"and {y_path.name} (n_samples,), found {found}"
            )
    X = _open(x_path, mmap=True)
    y = np.asarray(_open(y_path, mmap=False))
    groups = np.asarray(_open(g_path, mmap=False)) if g_path.is_file() else None
    if not (X.dtype == np.float32 and X.flags.c_contiguous):
        order = "C" if X.flags.c_contiguous else "Fortran"
        warnings.warn(
            f"{x_path} is {X.dtype} in {order} order, so it is cast to a float32 copy in memory "
            f"({X.size * 4 / 2**30:.2f} GiB); save it as C-ordered float32 "
            "(np.save(path, np.ascontiguousarray(X, dtype=np.float32))) to stream it from disk",
            stacklevel=3,
        )
    return Dataset(name, split, X, y, pixel_max=None, groups=groups)


def _open(path: Path, *, mmap: bool) -> np.ndarray:
    """``np.load`` of one ``.npy`` file, never unpickling; one DataError line on any failure."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    # np.load takes a file that is not .npy or .npz for a pickle: sniff the magic first.
    if head.startswith(_ZIP_MAGIC):
        raise DataError(f"{path}: expected a single .npy array, got an .npz archive")
    if not head.startswith(_NPY_MAGIC):
        raise DataError(f"{path}: not an .npy file (expected the magic \\x93NUMPY, as np.save writes)")
    try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"{path}: holds pickled Python objects, expected a numeric .npy array") from exc
        raise DataError(f"{path}: cannot read as an .npy array ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read as an .npy array ({type(exc).__name__}: {exc})") from exc
    return a
