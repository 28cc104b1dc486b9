"""The data layer: load a labelled dataset as flat float32 features and int64 labels.

Every reader returns a :class:`Dataset` whose ``X`` holds the raw values as
stored (pixels ``0..255``, sklearn digits ``0..16``, user features as given),
flattened to ``(n_samples, n_features)``. Scaling is the job of the feature
layer, which reads :attr:`Dataset.pixel_max`.

Known datasets and the on-disk layouts read (the torchvision layouts, so a
``root`` shared with torchvision works)::

    digits         sklearn.datasets.load_digits (bundled with scikit-learn, offline)
    svhn           <data_dir>/svhn/{train,test}_32x32.mat  or  <data_dir>/{train,test}_32x32.mat
    cifar10        <data_dir>/cifar-10-batches-py/data_batch_{1..5}, test_batch
    mnist          <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    fashion-mnist  <data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    npz:PATH       an .npz archive with arrays X, y and optionally groups
    array:DIR      a directory of X.npy, y.npy (optionally groups.npy; *_test.npy for
                   the test split); a float32 X.npy is memory-mapped, not loaded

``data_dir`` defaults to ``$SCHEDGEN_DATA_DIR`` when set, else
``~/.cache/schedgen/data``. A download has an overall deadline of
``$SCHEDGEN_DOWNLOAD_TIMEOUT`` seconds (default 1800) and reports its progress
on stderr every 5 seconds. Only numpy and the standard library are imported at
module level; scipy and scikit-learn are imported by the readers that need them.

This module is the public front; the code lives in private modules:
``_dataset`` (:class:`Dataset`, :func:`validate_arrays`, :func:`fingerprint`),
``_registry`` (:data:`DATASETS`, :func:`load_dataset`), ``_readers`` (the
built-in layouts), ``_npz`` (``npz:PATH``), ``_array`` (``array:DIR``), ``_download`` (fetching files) and
``_sources`` (the data directory, URLs and MD5 sums). The data layer imports
nothing from schedgen but :mod:`schedgen.errors` and :mod:`schedgen._proc`.
"""

from ._dataset import SPLITS, Dataset, fingerprint, validate_arrays
from ._download import DEFAULT_DOWNLOAD_TIMEOUT, download_timeout
from ._registry import DATASETS, load_dataset
from ._sources import DEFAULT_DATA_DIR, default_data_dir

__all__ = [
    "DATASETS",
    "SPLITS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "Dataset",
    "default_data_dir",
    "download_timeout",
    "fingerprint",
    "load_dataset",
    "validate_arrays",
]
