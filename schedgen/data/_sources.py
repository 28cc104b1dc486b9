"""Where dataset files live and where they come from: the data directory, the
canonical download URLs and their published MD5 sums (torchvision's)."""

from __future__ import annotations

import os
from pathlib import Path

#: Default data directory; ``~`` is expanded at call time and the environment
#: variable ``SCHEDGEN_DATA_DIR`` overrides it (see :func:`default_data_dir`).
DEFAULT_DATA_DIR = "~/.cache/schedgen/data"

_DATA_DIR_ENV = "SCHEDGEN_DATA_DIR"

_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_MNIST_URLS = {
    "mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion-mnist": ("FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
}

# MD5 of each downloadable file, as published by torchvision. Checked after a
# download only (files placed by hand are read as they are).
_MD5: dict[str, str] = {
    _SVHN_URL + "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    _SVHN_URL + "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    _CIFAR_URL: "c58f30108f718f92721af3b95e74349a",
    _MNIST_URLS["mnist"][1] + "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    _MNIST_URLS["mnist"][1] + "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    _MNIST_URLS["mnist"][1] + "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    _MNIST_URLS["mnist"][1] + "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    _MNIST_URLS["fashion-mnist"][1] + "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    _MNIST_URLS["fashion-mnist"][1] + "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    _MNIST_URLS["fashion-mnist"][1] + "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    _MNIST_URLS["fashion-mnist"][1] + "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def default_data_dir() -> Path:
    """``$SCHEDGEN_DATA_DIR`` if set and non-empty, else :data:`DEFAULT_DATA_DIR`, with ``~`` expanded.

    Returns
    -------
    pathlib.Path
        The directory (which need not exist).
    """
    return Path(os.environ.get(_DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()
