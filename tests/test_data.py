"""Tests of the data layer: every reader on small files written in the real format."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from schedgen import data
from schedgen.data import _dataset, _download, _sources
from schedgen.data import (
    DATASETS,
    Dataset,
    default_data_dir,
    fingerprint,
    load_dataset,
    validate_arrays,
)
from schedgen.errors import DataError, ParameterError

# --------------------------------------------------------------------------- #
# Writers of the real on-disk formats
# --------------------------------------------------------------------------- #


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    """IDX: big-endian int32 magic, one big-endian int32 per dimension, raw uint8 data."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_mnist(raw_dir, split_stem: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = False):
    raw_dir.mkdir(parents=True, exist_ok=True)
    for kind, arr, magic in (("images-idx3-ubyte", images, 2051), ("labels-idx1-ubyte", labels, 2049)):
        payload = idx_bytes(arr, magic)
        name = f"{split_stem}-{kind}"
        if gz:
            (raw_dir / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (raw_dir / name).write_bytes(payload)


def svhn_mat_bytes(X_hwcn: np.ndarray, y: np.ndarray) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {"X": X_hwcn, "y": y})
    return buf.getvalue()


def cifar_batch_bytes(X: np.ndarray, labels: list[int], protocol: int = 2) -> bytes:
    # Protocol 2 by default, as close as Python 3 gets to the Python 2 originals.
    entry = {"batch_label": "testing batch", "labels": labels, "data": X, "filenames": ["a.png"] * len(X)}
    return pickle.dumps(entry, protocol=protocol)


def cifar_batches(rng, n_per_batch: int = 2):
    """Six small batches: data_batch_1..5 and test_batch, each with distinct content."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    out = {}
    for i, name in enumerate(names):
        X = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n_per_batch) + i) % 10]
        out[name] = (X, labels)
    return out


def write_cifar(folder, batches, protocol: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (X, labels) in batches.items():
        (folder / name).write_bytes(cifar_batch_bytes(X, labels, protocol))


def tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def fingerprint_reference(X, y, groups=None) -> str:
    """The documented formula, written out independently of the module."""
    X = np.asarray(X, dtype=np.float32)
    h = hashlib.sha256()
    h.update(b"schedgen-dataset-v1\0")
    h.update(struct.pack("<qq", *X.shape))
    h.update(X.astype("<f4").tobytes(order="C"))
    h.update(np.asarray(y).astype("<i8").tobytes())
    if groups is not None:
        h.update(b"groups")
        h.update(np.asarray(groups).astype("<i8").tobytes())
    return h.hexdigest()


def files_in(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.fixture
def rng():
    return np.random.default_rng([2024, 7])


# --------------------------------------------------------------------------- #
# digits
# --------------------------------------------------------------------------- #


class TestDigits:
    def test_split_sizes_disjoint_and_exact(self):
        from sklearn.datasets import load_digits

        full_X, full_y = load_digits(return_X_y=True)
        train = load_dataset("digits", split="train")
        test = load_dataset("digits", split="test")
        assert (train.n_samples, test.n_samples) == (1437, 360)
        assert train.n_samples + test.n_samples == 1797
        idx = np.arange(1797)
        assert_array_equal(test.X, full_X[idx % 5 == 0].astype(np.float32))
        assert_array_equal(train.X, full_X[idx % 5 != 0].astype(np.float32))
        assert_array_equal(test.y, full_y[idx % 5 == 0])
        assert_array_equal(train.y, full_y[idx % 5 != 0])

    def test_fields(self):
        ds = load_dataset("digits")
        assert ds.name == "digits" and ds.split == "train"
        assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous
        assert ds.y.dtype == np.int64
        assert (ds.n_features, ds.n_classes, ds.pixel_max) == (64, 10, 16.0)
        assert 0 <= ds.X.min() and ds.X.max() == 16
        assert ds.groups is None

    def test_name_is_case_insensitive_and_data_dir_unused(self, tmp_path):
        ds = load_dataset("  Digits ", split="test", data_dir=tmp_path / "nowhere", download=True)
        assert ds.name == "digits" and ds.n_samples == 360
        assert not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------- #
# SVHN
# --------------------------------------------------------------------------- #


class TestSVHN:
    def make(self, rng, n=5):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        digits = np.array([0, 1, 9, 0, 5][:n])
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        return X, y, digits

    @pytest.mark.parametrize("subdir", ["svhn", ""])
    def test_layouts_labels_and_pixel_order(self, tmp_path, rng, subdir):
        X, y, digits = self.make(rng)
        folder = tmp_path / subdir if subdir else tmp_path
        folder.mkdir(exist_ok=True)
        (folder / "train_32x32.mat").write_bytes(svhn_mat_bytes(X, y))
        ds = load_dataset("svhn", data_dir=tmp_path)
        assert ds.X.shape == (5, 3072) and ds.X.dtype == np.float32
        assert ds.pixel_max == 255.0
        assert_array_equal(ds.y, digits)  # label 10 is digit 0
        # torchvision: image i is X[:, :, :, i] in (C, H, W) order.
        for i in range(5):
            chw = ds.X[i].reshape(3, 32, 32)
            for c in range(3):
                assert_array_equal(chw[c], X[:, :, c, i])
        assert_array_equal(ds.X, np.transpose(X, (3, 2, 0, 1)).reshape(5, -1))

    def test_test_split_reads_test_file(self, tmp_path, rng):
        X, y, _ = self.make(rng, n=3)
        (tmp_path / "svhn").mkdir()
        (tmp_path / "svhn" / "test_32x32.mat").write_bytes(svhn_mat_bytes(X, y))
        assert load_dataset("svhn", split="test", data_dir=tmp_path).n_samples == 3
        with pytest.raises(DataError, match="train_32x32.mat"):
            load_dataset("svhn", split="train", data_dir=tmp_path)

    def test_missing_file_names_both_paths_and_download(self, tmp_path):
        with pytest.raises(DataError, match="--download") as info:
            load_dataset("svhn", data_dir=tmp_path)
        assert str(tmp_path / "svhn" / "train_32x32.mat") in str(info.value)
        assert str(tmp_path / "train_32x32.mat") in str(info.value)

    def test_missing_file_hint_is_a_command_every_caller_can_run(self, tmp_path, monkeypatch):
        # verify and plot have no --download: the hint names the build command that
        # fetches into the directory this caller looked in, with the split it wanted.
        root = tmp_path / "my data"
        with pytest.raises(DataError) as info:
            load_dataset("svhn", split="test", data_dir=root)
        command = f"`schedgen build --dataset svhn --split test --data-dir '{root}' --download`"
        assert str(info.value).endswith(f"with {command} (download=True in Python)")
        assert "\n" not in str(info.value) and "Pass --download" not in str(info.value)
        monkeypatch.setenv("SCHEDGEN_DATA_DIR", str(tmp_path))
        match = (
            r"^svhn train split not found; expected .*\. Place the file\(s\) there, or fetch them from "
            r"http://ufldl\.stanford\.edu/housenumbers/train_32x32\.mat with "
            r"`schedgen build --dataset svhn --download` \(download=True in Python\)$"
        )
        with pytest.raises(DataError, match=match):
            load_dataset("svhn")
        with pytest.raises(DataError, match=r"with `schedgen build --dataset cifar10 --download`"):
            load_dataset("cifar10")

    def test_label_out_of_range(self, tmp_path, rng):
        X, y, _ = self.make(rng)
        y[2] = 11
        (tmp_path / "train_32x32.mat").write_bytes(svhn_mat_bytes(X, y))
        with pytest.raises(DataError, match=r"1\.\.10 .*found 11 at row 2"):
            load_dataset("svhn", data_dir=tmp_path)

    def test_missing_variable(self, tmp_path, rng):
        import scipy.io

        X, _, _ = self.make(rng)
        scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": X, "labels": np.zeros((5, 1))})
        with pytest.raises(DataError, match=r"expected variables 'X' and 'y'.*found \['X', 'labels'\]"):
            load_dataset("svhn", data_dir=tmp_path)

    def test_not_a_mat_file(self, tmp_path):
        (tmp_path / "train_32x32.mat").write_bytes(b"<html>not found</html>")
        with pytest.raises(DataError, match="cannot read as a MATLAB"):
            load_dataset("svhn", data_dir=tmp_path)

    def test_count_mismatch(self, tmp_path, rng):
        X, y, _ = self.make(rng)
        (tmp_path / "train_32x32.mat").write_bytes(svhn_mat_bytes(X, y[:4]))
        with pytest.raises(DataError, match=r"expected y of shape \(5, 1\)"):
            load_dataset("svhn", data_dir=tmp_path)


# --------------------------------------------------------------------------- #
# CIFAR-10
# --------------------------------------------------------------------------- #


class TestCIFAR10:
    def test_train_concatenates_batches_in_order(self, tmp_path, rng):
        batches = cifar_batches(rng)
        write_cifar(tmp_path / "cifar-10-batches-py", batches)
        ds = load_dataset("cifar10", data_dir=tmp_path)
        order = [f"data_batch_{i}" for i in range(1, 6)]
        assert ds.X.shape == (10, 3072) and ds.X.dtype == np.float32
        assert_array_equal(ds.X, np.concatenate([batches[b][0] for b in order]))
        assert_array_equal(ds.y, np.concatenate([batches[b][1] for b in order]))
        assert ds.y.dtype == np.int64 and ds.pixel_max == 255.0

    @pytest.mark.parametrize("protocol", [2, 4, 5])
    def test_test_split(self, tmp_path, rng, protocol):
        batches = cifar_batches(rng, n_per_batch=3)
        write_cifar(tmp_path / "cifar-10-batches-py", batches, protocol)
        ds = load_dataset("CIFAR-10", split="test", data_dir=tmp_path)
        assert ds.name == "cifar10"
        assert_array_equal(ds.X, batches["test_batch"][0])
        assert_array_equal(ds.y, batches["test_batch"][1])

    def test_missing_batch_is_named(self, tmp_path, rng):
        batches = cifar_batches(rng)
        del batches["data_batch_4"]
        write_cifar(tmp_path / "cifar-10-batches-py", batches)
        with pytest.raises(DataError, match=r"data_batch_4.*--download"):
            load_dataset("cifar10", data_dir=tmp_path)
        # The test split is complete on its own.
        assert load_dataset("cifar10", split="test", data_dir=tmp_path).n_samples == 2

    def test_pickle_with_foreign_global_is_refused(self, tmp_path):
        class Hostile:
            def __reduce__(self):
                return (os.getcwd, ())

        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        (folder / "test_batch").write_bytes(pickle.dumps({"data": Hostile(), "labels": []}, protocol=2))
        with pytest.raises(DataError, match=r"getcwd' is not allowed"):
            load_dataset("cifar10", split="test", data_dir=tmp_path)

    def test_wrong_shape_and_labels(self, tmp_path, rng):
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        (folder / "test_batch").write_bytes(cifar_batch_bytes(np.zeros((2, 100), np.uint8), [0, 1]))
        with pytest.raises(DataError, match=r"shape \(n_samples, 3072\), got shape \(2, 100\)"):
            load_dataset("cifar10", split="test", data_dir=tmp_path)
        (folder / "test_batch").write_bytes(cifar_batch_bytes(np.zeros((2, 3072), np.uint8), [0, 10]))
        with pytest.raises(DataError, match=r"labels must be 0\.\.9, found 10 at row 1"):
            load_dataset("cifar10", split="test", data_dir=tmp_path)
        (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}))
        with pytest.raises(DataError, match=r"expected keys 'data' and 'labels', found \['data'\]"):
            load_dataset("cifar10", split="test", data_dir=tmp_path)


# --------------------------------------------------------------------------- #
# MNIST and Fashion-MNIST
# --------------------------------------------------------------------------- #


class TestMNIST:
    @pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
    @pytest.mark.parametrize("gz", [False, True])
    @pytest.mark.parametrize(("split", "stem"), [("train", "train"), ("test", "t10k")])
    def test_read(self, tmp_path, rng, name, folder, gz, split, stem):
        images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
        labels = np.array([3, 0, 9, 1], dtype=np.uint8)
        write_mnist(tmp_path / folder / "raw", stem, images, labels, gz=gz)
        ds = load_dataset(name, split=split, data_dir=tmp_path)
        assert ds.name == name and ds.split == split
        assert ds.X.shape == (4, 784) and ds.X.dtype == np.float32
        assert_array_equal(ds.X, images.reshape(4, 784))
        assert_array_equal(ds.y, labels)
        assert ds.pixel_max == 255.0

    def test_underscore_alias(self, tmp_path, rng):
        raw = tmp_path / "FashionMNIST" / "raw"
        write_mnist(raw, "t10k", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8))
        assert load_dataset("fashion_mnist", split="test", data_dir=tmp_path).name == "fashion-mnist"

    def test_truncated_images(self, tmp_path, rng):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "train", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.zeros(3, np.uint8))
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
        expected = 16 + 3 * 28 * 28
        match = rf"truncated IDX images file: expected {expected} bytes .* got {expected - 100}$"
        with pytest.raises(DataError, match=match):
            load_dataset("mnist", data_dir=tmp_path)

    def test_truncated_gz_labels(self, tmp_path):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8), gz=True)
        labels = raw / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8), 2049)[:-1]))
        with pytest.raises(DataError, match=r"truncated IDX labels file: expected 11 bytes .* got 10"):
            load_dataset("mnist", data_dir=tmp_path)
        labels.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8), 2049))[:-8])  # a cut gzip stream
        with pytest.raises(DataError, match=r"cannot read"):
            load_dataset("mnist", data_dir=tmp_path)

    def test_header_shorter_than_dims(self, tmp_path):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "train", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8))
        (raw / "train-images-idx3-ubyte").write_bytes(struct.pack(">II", 2051, 1))
        with pytest.raises(DataError, match=r"expected at least 16 bytes of header, got 8"):
            load_dataset("mnist", data_dir=tmp_path)

    def test_trailing_bytes(self, tmp_path):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "train", np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
        path = raw / "train-labels-idx1-ubyte"
        path.write_bytes(path.read_bytes() + b"\0")
        with pytest.raises(DataError, match=r"oversized IDX labels file: expected 10 bytes .* got 11"):
            load_dataset("mnist", data_dir=tmp_path)

    def test_swapped_files_fail_on_magic(self, tmp_path):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "train", np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
        images = (raw / "train-images-idx3-ubyte").read_bytes()
        (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes())
        (raw / "train-labels-idx1-ubyte").write_bytes(images)
        with pytest.raises(DataError, match=r"not an IDX images file: magic number 2049, expected 2051"):
            load_dataset("mnist", data_dir=tmp_path)

    def test_count_mismatch_and_label_range(self, tmp_path):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "t10k", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
        with pytest.raises(DataError, match=r"has 2 labels but .* has 3 images"):
            load_dataset("mnist", split="test", data_dir=tmp_path)
        write_mnist(raw, "t10k", np.zeros((2, 28, 28), np.uint8), np.array([1, 12], np.uint8))
        with pytest.raises(DataError, match=r"labels must be 0\.\.9, found 12 at row 1"):
            load_dataset("mnist", split="test", data_dir=tmp_path)

    def test_missing_file_message(self, tmp_path):
        with pytest.raises(DataError, match=r"mnist train split not found.*--download") as info:
            load_dataset("mnist", data_dir=tmp_path)
        raw = tmp_path / "MNIST" / "raw"
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            assert f"{raw / name} (or {name}.gz)" in str(info.value)
            assert f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}.gz" in str(info.value)
        # Only the file that is absent is named.
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
        with pytest.raises(DataError, match="train-labels-idx1-ubyte") as info:
            load_dataset("mnist", data_dir=tmp_path)
        assert "images" not in str(info.value)

    def test_data_dir_from_environment(self, tmp_path, monkeypatch):
        raw = tmp_path / "MNIST" / "raw"
        write_mnist(raw, "train", np.zeros((2, 28, 28), np.uint8), np.ones(2, np.uint8))
        monkeypatch.setenv("SCHEDGEN_DATA_DIR", str(tmp_path))
        assert default_data_dir() == tmp_path
        assert load_dataset("mnist").n_samples == 2

    def test_default_data_dir_expands_home(self, tmp_path, monkeypatch):
        monkeypatch.delenv("SCHEDGEN_DATA_DIR", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        assert default_data_dir() == tmp_path / ".cache" / "schedgen" / "data"
        monkeypatch.setenv("SCHEDGEN_DATA_DIR", "")  # empty means unset
        assert default_data_dir() == tmp_path / ".cache" / "schedgen" / "data"

    def test_data_dir_is_a_file(self, tmp_path):
        (tmp_path / "f").write_text("x")
        with pytest.raises(DataError, match="exists but is not a directory"):
            load_dataset("mnist", data_dir=tmp_path / "f")


# --------------------------------------------------------------------------- #
# npz
# --------------------------------------------------------------------------- #


class TestNpz:
    def test_basic_with_groups_and_flattening(self, tmp_path, rng):
        X = rng.normal(size=(6, 2, 3))
        y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
        groups = np.array([5, 5, 6, 6, 7, 7])
        np.savez(tmp_path / "d.npz", X=X, y=y, groups=groups)
        ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
        assert ds.name == f"npz:{(tmp_path / 'd.npz').resolve()}"
        assert ds.X.shape == (6, 6) and ds.X.dtype == np.float32
        assert_array_equal(ds.X, X.reshape(6, 6).astype(np.float32))
        assert ds.y.dtype == np.int64 and ds.groups.dtype == np.int64
        assert_array_equal(ds.groups, groups)
        assert ds.pixel_max is None and ds.n_classes == 3
        assert ds.fingerprint == fingerprint_reference(X.reshape(6, 6), y, groups)

    def test_relative_path_becomes_absolute(self, tmp_path, monkeypatch):
        np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=[0, 1])
        monkeypatch.chdir(tmp_path)
        ds = load_dataset("npz:d.npz")
        assert ds.name == f"npz:{(tmp_path / 'd.npz').resolve()}"
        assert os.path.isabs(ds.name[4:])

    def test_test_split_keys(self, tmp_path):
        np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), y=[0, 1, 0], X_test=np.zeros((2, 2)), y_test=[1, 1])
        ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", split="test")
        assert ds.split == "test" and ds.n_samples == 2 and ds.groups is None
        np.savez(tmp_path / "e.npz", X=np.ones((3, 2)), y=[0, 1, 0])
        with pytest.raises(DataError, match=r"no array 'X_test' for split 'test'.*found \['X', 'y'\]"):
            load_dataset(f"npz:{tmp_path / 'e.npz'}", split="test")

    def test_missing_key_lists_keys_found(self, tmp_path):
        np.savez(tmp_path / "d.npz", features=np.ones((3, 2)), y=[0, 1, 0])
        with pytest.raises(DataError, match=r"no array 'X'.*found \['features', 'y'\]"):
            load_dataset(f"npz:{tmp_path / 'd.npz'}")

    def test_float_labels(self, tmp_path):
        np.savez(tmp_path / "ok.npz", X=np.ones((3, 2)), y=np.array([0.0, 2.0, 1.0]))
        assert_array_equal(load_dataset(f"npz:{tmp_path / 'ok.npz'}").y, [0, 2, 1])
        np.savez(tmp_path / "bad.npz", X=np.ones((3, 2)), y=np.array([0.0, 2.5, 1.0]))
        with pytest.raises(DataError, match=r"labels must be integers.*first 2\.5 at row 1"):
            load_dataset(f"npz:{tmp_path / 'bad.npz'}")

    def test_bad_groups(self, tmp_path):
        np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), y=[0, 1, 0], groups=[1, 2])
        match = r"groups must have shape \(3,\) like the labels, got shape \(2,\)"
        with pytest.raises(DataError, match=match):
            load_dataset(f"npz:{tmp_path / 'd.npz'}")

    def test_nan_features_reported_with_path(self, tmp_path):
        X = np.ones((20, 3))
        X[17, 1] = np.nan
        X[18, 0] = np.inf
        X[19, 2] = -np.inf
        np.savez(tmp_path / "d.npz", X=X, y=np.zeros(20, int))
        match = r"d\.npz.*features contain 3 non-finite values \(NaN or inf\); first at row 17$"
        with pytest.raises(DataError, match=match):
            load_dataset(f"npz:{tmp_path / 'd.npz'}")

    def test_missing_npy_corrupt_and_object_arrays(self, tmp_path):
        with pytest.raises(DataError, match="npz file not found"):
            load_dataset(f"npz:{tmp_path / 'nope.npz'}")
        with pytest.raises(ParameterError, match="needs a path"):
            load_dataset("npz:")
        np.save(tmp_path / "a.npy", np.ones((2, 2)))
        with pytest.raises(DataError, match=r"got a single \.npy array of shape \(2, 2\)"):
            load_dataset(f"npz:{tmp_path / 'a.npy'}")
        (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
        with pytest.raises(DataError, match="cannot read as an .npz archive"):
            load_dataset(f"npz:{tmp_path / 'c.npz'}")
        np.savez(tmp_path / "o.npz", X=np.array([[1, "a"]], dtype=object), y=[0])
        with pytest.raises(DataError, match=r"o\.npz: array 'X' holds Python objects \(dtype object\), "
                           r"expected a numeric array$") as info:
            load_dataset(f"npz:{tmp_path / 'o.npz'}")
        assert "allow_pickle" not in str(info.value)

    def test_directory_is_named_as_such(self, tmp_path):
        (tmp_path / "d.npz").mkdir()
        for target in (tmp_path, tmp_path / "d.npz"):
            match = rf"^npz:{re.escape(str(target.resolve()))} is a directory, expected an \.npz file$"
            with pytest.raises(DataError, match=match):
                load_dataset(f"npz:{target}")

    @pytest.mark.parametrize("content", [b"hello world\n", b"", b"PK", b"\x80\x04K\x01."])
    def test_not_a_zip_never_passes_on_numpy_pickle_advice(self, tmp_path, content):
        # np.load takes a file that is neither zip nor .npy for a pickle and advises
        # loading it "unsafely using allow_pickle"; that advice must not reach the user.
        path = tmp_path / "t.npz"
        path.write_bytes(content)
        match = rf"^{re.escape(str(path))} is not an npz archive \(expected a zip of \.npy arrays\)$"
        with pytest.raises(DataError, match=match) as info:
            load_dataset(f"npz:{path}")
        assert "allow_pickle" not in str(info.value)

    def test_object_npy_file_never_passes_on_numpy_pickle_advice(self, tmp_path):
        np.save(tmp_path / "o.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
        match = (
            r"o\.npy: holds pickled Python objects, expected numeric arrays "
            r"\(an npz archive of 'X' and 'y'\)$"
        )
        with pytest.raises(DataError, match=match) as info:
            load_dataset(f"npz:{tmp_path / 'o.npy'}")
        assert "allow_pickle" not in str(info.value)

    def test_huge_label_is_refused_in_one_line(self, tmp_path):
        # A label of 2**62 gave 4.6e18 classes (info) and a bincount traceback (learn2mix).
        np.savez(tmp_path / "d.npz", X=np.ones((4, 2)), y=np.array([0, 1, 2**62, 1]))
        match = (
            r"d\.npz' \(train\): labels must be class ids in 0\.\.65535 \(below max\(n_samples, 65536\)\); "
            r"found 1 larger, first 4611686018427387904 at row 2; map sparse ids to 0\.\.C-1 first, "
            r"e\.g\. np\.unique\(y, return_inverse=True\)\[1\]$"
        )
        with pytest.raises(DataError, match=match) as info:
            load_dataset(f"npz:{tmp_path / 'd.npz'}")
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- #
# Parameters
# --------------------------------------------------------------------------- #


class TestParameters:
    def test_unknown_name_lists_known(self):
        match = r"unknown dataset 'imagenet'.*digits, svhn, cifar10, mnist, fashion-mnist.*npz:PATH"
        with pytest.raises(ParameterError, match=match):
            load_dataset("imagenet")
        with pytest.raises(ParameterError, match="must be a string"):
            load_dataset(3)

    @pytest.mark.parametrize("split", ["val", "Train", "", None, 1])
    def test_bad_split(self, split):
        with pytest.raises(ParameterError, match=r"split must be one of 'train', 'test', got"):
            load_dataset("digits", split=split)

    @pytest.mark.parametrize("download", [1, "yes", None])
    def test_download_must_be_bool(self, download):
        with pytest.raises(ParameterError, match="download must be True or False"):
            load_dataset("digits", download=download)

    def test_data_dir_type(self):
        with pytest.raises(ParameterError, match="data_dir must be a path, got int"):
            load_dataset("mnist", data_dir=3)

    def test_datasets_constant(self):
        assert DATASETS == ("digits", "svhn", "cifar10", "mnist", "fashion-mnist")
        assert set(data.__all__) >= {"Dataset", "load_dataset", "fingerprint", "validate_arrays", "DATASETS"}


# --------------------------------------------------------------------------- #
# validate_arrays
# --------------------------------------------------------------------------- #


class TestValidateArrays:
    def test_canonical_output(self):
        X = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(4, 3))
        X_out, y_out = validate_arrays(X, [0, 1, 1, 3], source="s")
        assert X_out.dtype == np.float32 and X_out.flags.c_contiguous
        assert y_out.dtype == np.int64 and y_out.flags.c_contiguous
        assert_array_equal(X_out, X)

    def test_length_mismatch_message(self):
        with pytest.raises(DataError, match=r"^src: labels have length 9 but features have 10 rows$"):
            validate_arrays(np.zeros((10, 2)), np.zeros(9, int), source="src")

    @pytest.mark.parametrize(
        ("X", "y", "match"),
        [
            (np.zeros(5), np.zeros(5, int), r"shape \(n_samples, n_features\), got shape \(5,\)"),
            (np.zeros((0, 3)), np.zeros(0, int), r"at least 1 row, got shape \(0, 3\)"),
            (np.zeros((2, 0)), np.zeros(2, int), r"at least 1 column"),
            (np.array([["a", "b"]]), [0], r"features must be real numbers, got dtype <U1"),
            (np.zeros((2, 2), complex), [0, 0], r"features must be real numbers, got dtype complex128"),
            (np.zeros((2, 2)), np.zeros((2, 1), int), r"labels must be 1-D .* got shape \(2, 1\)"),
            (np.zeros((2, 2)), np.array([True, False]), r"labels must be integers, got dtype bool"),
            (np.zeros((2, 2)), np.array(["a", "b"]), r"labels must be integers, got dtype <U1"),
            (np.zeros((3, 2)), [0, -1, -2], r"non-negative integers; found 2 negative, first -1 at row 1"),
            (np.zeros((2, 2)), [0.0, np.nan], r"labels must be integers; .*, first nan at row 1"),
            (np.zeros((2, 2)), np.array([0, 2**63], dtype=np.uint64), r"labels must fit in int64"),
            (np.zeros((2, 2)), [0, 65536], r"class ids in 0\.\.65535 .*found 1 larger, first 65536 at row 1"),
            (
                np.zeros((3, 2)),
                [2**62, 0, 2.0**62],
                r"0\.\.65535 .*found 2 larger, first 4611686018427387904 at row 0",
            ),
            ([[1, 2], [3]], [0, 1], r"features must be a rectangular array"),
        ],
    )
    def test_rejects(self, X, y, match):
        with pytest.raises(DataError, match=match):
            validate_arrays(X, y, source="src")

    def test_float64_overflowing_float32_is_reported(self):
        X = np.ones((4, 2))
        X[2, 1] = 1e300
        match = r"1 non-finite values .* first at row 2 \(1 of them finite float64 values beyond"
        with pytest.raises(DataError, match=match):
            validate_arrays(X, [0, 0, 0, 0], source="s")

    def test_nan_scan_spans_blocks(self, monkeypatch):
        monkeypatch.setattr(_dataset, "_FINITE_BLOCK", 6)  # 2 rows of 3 per block
        X = np.ones((9, 3), dtype=np.float32)
        X[5, 0] = X[5, 2] = X[8, 1] = np.nan
        with pytest.raises(DataError, match=r"contain 3 non-finite values \(NaN or inf\); first at row 5$"):
            validate_arrays(X, np.zeros(9, int), source="s")

    def test_label_bound_is_the_larger_of_n_and_65536(self):
        # Sparse ids below the floor load as before (their fingerprint unchanged); a
        # dataset larger than the floor may use every id below its size.
        X, y = validate_arrays(np.zeros((2, 1)), [0, 65535], source="s")
        assert fingerprint(X, y) == fingerprint_reference(np.zeros((2, 1)), [0, 65535])
        n = 70_000
        _, y = validate_arrays(np.zeros((n, 1), np.float32), np.arange(n), source="s")
        assert int(y.max()) == n - 1
        with pytest.raises(DataError, match=r"class ids in 0\.\.69999 .*first 70000 at row 0"):
            validate_arrays(np.zeros((n, 1), np.float32), np.r_[n, np.arange(n - 1)], source="s")

    def test_integer_and_bool_features_accepted(self):
        X, _ = validate_arrays(np.array([[True, False]]), [0], source="s")
        assert_array_equal(X, [[1.0, 0.0]])
        X, _ = validate_arrays(np.full((1, 2), 255, np.uint8), [0], source="s")
        assert X.dtype == np.float32 and X[0, 0] == 255.0

    @settings(max_examples=60, deadline=None)
    @given(
        n=st.integers(1, 30),
        d=st.integers(1, 8),
        data_=st.data(),
        bad=st.sampled_from([np.nan, np.inf, -np.inf]),
        dtype=st.sampled_from([np.float32, np.float64]),
    )
    def test_property_injected_nonfinite_reports_first_row(self, n, d, data_, bad, dtype):
        X = np.zeros((n, d), dtype=dtype)
        cell = st.tuples(st.integers(0, n - 1), st.integers(0, d - 1))
        cells = data_.draw(st.sets(cell, min_size=1, max_size=5))
        for r, c in cells:
            X[r, c] = bad
        first = min(r for r, _ in cells)
        match = rf"contain {len(cells)} non-finite values \(NaN or inf\); first at row {first}$"
        with pytest.raises(DataError, match=match):
            validate_arrays(X, np.zeros(n, np.int64), source="p")


# --------------------------------------------------------------------------- #
# Fingerprint
# --------------------------------------------------------------------------- #


class TestFingerprint:
    def test_matches_documented_formula(self, rng):
        X = rng.normal(size=(7, 4)).astype(np.float32)
        y = rng.integers(0, 3, size=7)
        fp = fingerprint(X, y)
        assert fp == fingerprint_reference(X, y)
        assert len(fp) == 64 and int(fp, 16) >= 0
        g = np.arange(7)
        assert fingerprint(X, y, g) == fingerprint_reference(X, y, g) != fp

    def test_pinned_value(self):
        # Changing this value means changing the on-disk meaning of every stored fingerprint.
        X = np.arange(6, dtype=np.float32).reshape(2, 3)
        pinned = "7781c28416109c82de3f2043680aad0e2175a9d3a248a692c18633d73bfe55f6"
        assert fingerprint_reference(X, [0, 1]) == pinned
        assert fingerprint(X, [0, 1]) == pinned
        assert fingerprint(np.arange(6.0).reshape(2, 3), np.array([0, 1], np.uint8)) == pinned

    def test_stable_and_sensitive(self, rng):
        X = rng.normal(size=(5, 3)).astype(np.float32)
        y = np.array([0, 1, 2, 1, 0])
        fp = fingerprint(X, y)
        assert fingerprint(X.copy(), y.copy()) == fp
        assert fingerprint(X.tolist(), y.tolist()) == fp
        assert fingerprint(np.asfortranarray(X), y.astype(np.int32)) == fp
        X2 = X.copy()
        X2[3, 1] = np.nextafter(X2[3, 1], np.float32(np.inf))
        assert fingerprint(X2, y) != fp
        y2 = y.copy()
        y2[4] = 2
        assert fingerprint(X, y2) != fp
        g = np.array([0, 0, 1, 1, 2])
        assert fingerprint(X, y, g) != fp
        g2 = g.copy()
        g2[0] = 9
        assert fingerprint(X, y, g2) != fingerprint(X, y, g)

    def test_dataset_fingerprint_cached_and_excludes_name(self, rng):
        X = rng.normal(size=(4, 2))
        a = Dataset("npz:/a", "train", X, [0, 1, 0, 1], pixel_max=None)
        b = Dataset("npz:/b", "test", X.astype(np.float32), np.array([0, 1, 0, 1]), pixel_max=None)
        assert a.fingerprint == b.fingerprint == fingerprint(X, [0, 1, 0, 1])
        assert a.fingerprint is a.fingerprint
        assert "fingerprint" in a.__dict__

    def test_shape_is_hashed(self):
        # Same flat bytes, different (n, d): the header tells them apart.
        X = np.zeros((4, 6), np.float32)
        a = _dataset._hash_canonical(X, np.zeros(4, np.int64), None)
        b = _dataset._hash_canonical(X.reshape(6, 4), np.zeros(4, np.int64), None)
        assert a != b

    @settings(max_examples=60, deadline=None)
    @given(
        n=st.integers(1, 12),
        d=st.integers(1, 6),
        data_=st.data(),
    )
    def test_property_float64_equals_float32_of_same_values(self, n, d, data_):
        values = data_.draw(
            st.lists(
                st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=n * d, max_size=n * d
            )
        )
        labels = data_.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
        X32 = np.array(values, dtype=np.float32).reshape(n, d)
        X64 = X32.astype(np.float64)
        assert fingerprint(X64, np.array(labels, np.int32)) == fingerprint(X32, np.array(labels, np.int64))
        assert fingerprint(X32, labels) == fingerprint_reference(X32, labels)


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #


class TestDataset:
    def test_canonicalises_and_is_read_only(self):
        X = np.arange(6.0).reshape(3, 2)
        ds = Dataset("npz:/x", "train", X, [2, 0, 1], pixel_max=None, groups=[1, 1, 2])
        assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64 and ds.groups.dtype == np.int64
        assert (ds.n_samples, ds.n_features, ds.n_classes) == (3, 2, 3)
        with pytest.raises(ValueError, match="read-only"):
            ds.X[0, 0] = 5
        with pytest.raises(ValueError, match="read-only"):
            ds.y[0] = 5
        assert X.flags.writeable  # the caller's array is left alone
        with pytest.raises(AttributeError):
            ds.name = "other"
        assert repr(ds) == (
            "Dataset(name='npz:/x', split='train', n_samples=3, n_features=2, n_classes=3, "
            "pixel_max=None, groups=yes)"
        )

    def test_n_classes_is_max_plus_one(self):
        assert Dataset("npz:/x", "train", np.ones((2, 1)), [0, 4], pixel_max=None).n_classes == 5

    @pytest.mark.parametrize("pixel_max", [0, -1.0, float("inf"), True, "255"])
    def test_bad_pixel_max(self, pixel_max):
        with pytest.raises(ParameterError, match="pixel_max must be a positive"):
            Dataset("npz:/x", "train", np.ones((2, 1)), [0, 1], pixel_max=pixel_max)

    def test_bad_name_and_split(self):
        with pytest.raises(ParameterError, match="dataset name must be a non-empty string"):
            Dataset("", "train", np.ones((2, 1)), [0, 1], pixel_max=None)
        with pytest.raises(ParameterError, match="split must be one of"):
            Dataset("x", "val", np.ones((2, 1)), [0, 1], pixel_max=None)

    def test_errors_name_the_dataset(self):
        match = r"^dataset 'x' \(test\): labels have length 1 but features have 2 rows$"
        with pytest.raises(DataError, match=match):
            Dataset("x", "test", np.ones((2, 1)), [0], pixel_max=None)


# --------------------------------------------------------------------------- #
# Download (network replaced by a monkeypatched _fetch)
# --------------------------------------------------------------------------- #


def serve(monkeypatch, payloads: dict[str, bytes], *, register_md5: bool = True) -> list[str]:
    """Replace ``_download._fetch`` by one that writes ``payloads[url]``; return the list of URLs fetched."""
    calls: list[str] = []

    def fake_fetch(url, dest, **kwargs):
        calls.append(url)
        with open(dest, "wb") as fh:
            fh.write(payloads[url])

    monkeypatch.setattr(_download, "_fetch", fake_fetch)
    if register_md5:
        for url, payload in payloads.items():
            monkeypatch.setitem(_sources._MD5, url, hashlib.md5(payload).hexdigest())
    return calls


class TestDownload:
    def test_svhn(self, tmp_path, rng, monkeypatch):
        X = rng.integers(0, 256, size=(32, 32, 3, 2), dtype=np.uint8)
        url = "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"
        calls = serve(monkeypatch, {url: svhn_mat_bytes(X, np.array([[10], [3]], np.uint8))})
        ds = load_dataset("svhn", split="test", data_dir=tmp_path, download=True)
        assert calls == [url]
        assert_array_equal(ds.y, [0, 3])
        assert files_in(tmp_path) == ["svhn/test_32x32.mat"]
        load_dataset("svhn", split="test", data_dir=tmp_path, download=True)
        assert calls == [url]  # present files are not fetched again

    @pytest.mark.parametrize(
        ("name", "folder", "base"),
        [
            ("mnist", "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
            ("fashion-mnist", "FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        ],
    )
    def test_mnist_family(self, tmp_path, rng, monkeypatch, name, folder, base):
        images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
        labels = np.array([7, 2, 0], np.uint8)
        payloads = {
            base + "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(images, 2051)),
            base + "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels, 2049)),
        }
        calls = serve(monkeypatch, payloads)
        ds = load_dataset(name, data_dir=tmp_path, download=True)
        assert sorted(calls) == sorted(payloads)
        assert_array_equal(ds.X, images.reshape(3, -1))
        assert_array_equal(ds.y, labels)
        assert files_in(tmp_path) == [
            f"{folder}/raw/train-images-idx3-ubyte.gz",
            f"{folder}/raw/train-labels-idx1-ubyte.gz",
        ]

    def test_cifar10_archive_extracted(self, tmp_path, rng, monkeypatch):
        batches = cifar_batches(rng)
        members = {f"cifar-10-batches-py/{k}": cifar_batch_bytes(*v) for k, v in batches.items()}
        members["cifar-10-batches-py/batches.meta"] = pickle.dumps({"label_names": ["a"] * 10}, protocol=2)
        members["cifar-10-batches-py/readme.html"] = b"<html/>"
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        calls = serve(monkeypatch, {url: tar_gz_bytes(members)})
        ds = load_dataset("cifar10", split="test", data_dir=tmp_path, download=True)
        assert calls == [url]
        assert_array_equal(ds.X, batches["test_batch"][0])
        expected = sorted(
            ["cifar-10-python.tar.gz"]
            + [f"cifar-10-batches-py/{k}" for k in batches]
            + ["cifar-10-batches-py/batches.meta"]
        )
        assert files_in(tmp_path) == expected
        assert load_dataset("cifar10", split="train", data_dir=tmp_path, download=True).n_samples == 10
        assert calls == [url]

    def test_cifar10_archive_escaping_member_refused(self, tmp_path, rng, monkeypatch):
        batches = cifar_batches(rng, n_per_batch=1)
        members = {f"cifar-10-batches-py/{k}": cifar_batch_bytes(*v) for k, v in batches.items()}
        members["../evil.txt"] = b"owned"
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        serve(monkeypatch, {url: tar_gz_bytes(members)})
        root = tmp_path / "root"
        with pytest.raises(DataError, match=r"refusing to extract: member '\.\./evil\.txt' points outside"):
            load_dataset("cifar10", data_dir=root, download=True)
        assert not (tmp_path / "evil.txt").exists()
        assert files_in(root) == ["cifar-10-python.tar.gz"]

    def test_cifar10_archive_without_batches(self, tmp_path, monkeypatch):
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        serve(monkeypatch, {url: tar_gz_bytes({"other/file": b"x"})})
        with pytest.raises(DataError, match=r"not a CIFAR-10 archive; missing members"):
            load_dataset("cifar10", data_dir=tmp_path, download=True)

    def test_cifar10_symlink_member_refused(self, tmp_path, monkeypatch):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        serve(monkeypatch, {url: buf.getvalue()})
        with pytest.raises(DataError, match=r"member 'cifar-10-batches-py/test_batch' points outside"):
            load_dataset("cifar10", split="test", data_dir=tmp_path, download=True)

    def test_corrupt_archive_already_present(self, tmp_path, monkeypatch):
        (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar file")
        calls = serve(monkeypatch, {})
        match = r"cifar-10-python\.tar\.gz: cannot extract \(ReadError: not a gzip file\); delete it"
        with pytest.raises(DataError, match=match):
            load_dataset("cifar10", data_dir=tmp_path, download=True)
        assert calls == []

    def test_network_failure_is_clean(self, tmp_path, monkeypatch):
        def failing_fetch(url, dest, **kwargs):
            with open(dest, "wb") as fh:
                fh.write(b"half a file")
            raise urllib.error.URLError("Temporary failure in name resolution")

        monkeypatch.setattr(_download, "_fetch", failing_fetch)
        url = "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"
        match = rf"could not download {re.escape(url)}: URLError: Temporary failure in name resolution$"
        with pytest.raises(DataError, match=match):
            load_dataset("svhn", data_dir=tmp_path, download=True)
        assert files_in(tmp_path) == []

    def test_checksum_mismatch_is_clean(self, tmp_path, monkeypatch):
        url = "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
        serve(monkeypatch, {url: b"<html>captive portal</html>"}, register_md5=False)
        match = (
            rf"downloaded {re.escape(url)} is corrupt: MD5 [0-9a-f]{{32}}, "
            r"expected 9fb629c4189551a2d022fa330f9573f3; the file was discarded$"
        )
        with pytest.raises(DataError, match=match):
            load_dataset("mnist", split="test", data_dir=tmp_path, download=True)
        assert files_in(tmp_path) == []

    def test_interrupt_leaves_no_file(self, tmp_path, monkeypatch):
        def interrupted(url, dest, **kwargs):
            with open(dest, "wb") as fh:
                fh.write(b"partial")
            raise KeyboardInterrupt

        monkeypatch.setattr(_download, "_fetch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            load_dataset("svhn", data_dir=tmp_path, download=True)
        assert files_in(tmp_path) == []

    def test_real_fetch_over_file_url(self, tmp_path):
        # _fetch itself, without a network: urllib serves file:// URLs with a Content-Length.
        src = tmp_path / "src.bin"
        src.write_bytes(bytes(range(256)) * 10)
        dest = tmp_path / "dest.bin"
        _download._fetch(src.as_uri(), str(dest))
        assert dest.read_bytes() == src.read_bytes()
        with pytest.raises(urllib.error.URLError):
            _download._fetch((tmp_path / "absent").as_uri(), str(tmp_path / "d2"))


# --------------------------------------------------------------------------- #
# Download over a local HTTP server: deadline, progress, SIGTERM, stale parts
# --------------------------------------------------------------------------- #


class _BodyHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` with its Content-Length, ``chunk`` bytes at a time, sleeping
    ``delay`` seconds after each; gives up when the client has gone."""

    body = b""
    chunk = 1 << 16
    delay = 0.0

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for i in range(0, len(self.body), self.chunk):
                self.wfile.write(self.body[i : i + self.chunk])
                self.wfile.flush()
                if self.delay:
                    time.sleep(self.delay)
        except OSError:  # the client left
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def http_serve():
    """``start(body, chunk=, delay=)`` serves ``body`` on 127.0.0.1 and returns its URL;
    every server is shut down at the end of the test (a trickle ends by itself, too)."""
    servers = []

    def start(body: bytes, *, chunk: int = 1 << 16, delay: float = 0.0) -> str:
        handler = type("Handler", (_BodyHandler,), {"body": body, "chunk": chunk, "delay": delay})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/file.bin"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _quiet(done, total):
    pass


def _size_or_0(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _part_files(folder) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


class TestDownloadDeadlineProgressSignals:
    def test_deadline_stops_a_trickling_server(self, tmp_path, http_serve):
        # 40 bytes, one every 0.1 s: about 4 s in all, far beyond the 0.5 s deadline.
        url = http_serve(b"x" * 40, chunk=1, delay=0.1)
        match = (
            rf"^could not download {re.escape(url)}: TimeoutError: not complete after the deadline of "
            r"0\.5 s \(\d+ of 40 bytes received\); set SCHEDGEN_DOWNLOAD_TIMEOUT to a longer time in seconds$"
        )
        with pytest.raises(DataError, match=match):
            _download._download(url, tmp_path / "f.bin", timeout=0.5, progress=_quiet)
        assert files_in(tmp_path) == []

    def test_deadline_from_environment(self, tmp_path, http_serve, monkeypatch):
        url = http_serve(b"x" * 40, chunk=1, delay=0.1)
        monkeypatch.setenv("SCHEDGEN_DOWNLOAD_TIMEOUT", "0.3")
        assert data.download_timeout() == 0.3
        with pytest.raises(DataError, match=r"TimeoutError: not complete after the deadline of 0\.3 s"):
            _download._download(url, tmp_path / "f.bin", progress=_quiet)
        assert files_in(tmp_path) == []
        for bad in ("abc", "0", "-5", "nan", "inf"):
            monkeypatch.setenv("SCHEDGEN_DOWNLOAD_TIMEOUT", bad)
            match = rf"^SCHEDGEN_DOWNLOAD_TIMEOUT must be a positive number of seconds, got '{bad}'$"
            with pytest.raises(ParameterError, match=match):
                _download._download(url, tmp_path / "f.bin", progress=_quiet)
        monkeypatch.setenv("SCHEDGEN_DOWNLOAD_TIMEOUT", "")
        assert data.download_timeout() == data.DEFAULT_DOWNLOAD_TIMEOUT == 1800.0

    def test_progress_callback_and_stderr_lines(self, tmp_path, http_serve, capsys):
        body = bytes(range(256)) * 800  # 204,800 bytes
        url = http_serve(body, chunk=50_000)
        seen = []
        _download._download(url, tmp_path / "a.bin", progress=lambda done, total: seen.append((done, total)))
        assert (tmp_path / "a.bin").read_bytes() == body
        assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        # The default reporter: a line at the start and at the end (and every 5 s between).
        _download._download(url, tmp_path / "b.bin")
        err = capsys.readouterr().err.splitlines()
        assert err[0] == f"downloading {url}: 0 B of 205 kB (0%)"
        assert err[-1] == f"downloading {url}: 205 kB of 205 kB (100%)"
        assert files_in(tmp_path) == ["a.bin", "b.bin"]

    def test_sigterm_during_download_leaves_no_part_file(self, tmp_path, http_serve):
        # A real process, killed the way a scheduler kills a job; before the fix its
        # .part file stayed behind for ever.
        url = http_serve(b"x" * 4000, chunk=10, delay=0.05)  # 20 s if nobody stops it
        folder = tmp_path / "data"
        code = (
            "import pathlib, sys; from schedgen.data import _download; "
            "_download._download(sys.argv[1], pathlib.Path(sys.argv[2]), timeout=60, progress=lambda d, t: None)"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, url, str(folder / "f.bin")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            give_up = time.monotonic() + 30
            # Wait until bytes arrive, so the signal lands in the middle of the transfer.
            while not any(_size_or_0(folder / name) for name in _part_files(folder)):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < give_up, "the download never started"
                time.sleep(0.05)
            assert len(_part_files(folder)) == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == -signal.SIGTERM  # still ends by SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        assert files_in(folder) == []

    def test_sigterm_in_process_runs_the_previous_handler(self, tmp_path, http_serve):
        url = http_serve(b"x" * 4000, chunk=100, delay=0.05)
        received = []

        def previous(signum, frame):
            received.append(signum)

        def kill_self(done, total):
            if done:
                os.kill(os.getpid(), signal.SIGTERM)

        old = signal.signal(signal.SIGTERM, previous)
        try:
            match = rf"^download of {re.escape(url)} stopped by SIGTERM; the partial file was removed$"
            with pytest.raises(DataError, match=match):
                _download._download(url, tmp_path / "f.bin", timeout=60, progress=kill_self)
            assert received == [signal.SIGTERM]
            assert signal.getsignal(signal.SIGTERM) is previous  # restored
        finally:
            signal.signal(signal.SIGTERM, old)
        assert files_in(tmp_path) == []

    def test_download_off_the_main_thread(self, tmp_path, http_serve):
        # No handler can be installed there; the download works as before.
        url = http_serve(b"abc" * 1000)
        errors = []

        def run():
            try:
                _download._download(url, tmp_path / "f.bin", progress=_quiet)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        before = signal.getsignal(signal.SIGTERM)
        t = threading.Thread(target=run)
        t.start()
        t.join(30)
        assert errors == [] and (tmp_path / "f.bin").read_bytes() == b"abc" * 1000
        assert signal.getsignal(signal.SIGTERM) is before

    def test_stale_part_files_are_removed_by_the_next_download(self, tmp_path, monkeypatch):
        folder = tmp_path / "svhn"
        folder.mkdir()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        dead_pid = int(dead.stdout)
        here = _download._host_tag()
        other = "00000000" if here != "00000000" else "11111111"
        names = {
            "dead": f".train_32x32.mat.{dead_pid}-{here}.abc_1234.part",  # this machine, pid gone
            "live": f".train_32x32.mat.{os.getpid()}-{here}.abc_1234.part",  # this process: kept
            "remote_fresh": f".train_32x32.mat.{dead_pid}-{other}.abc_1234.part",  # another host: kept
            "remote_old": f".test_32x32.mat.{dead_pid}-{other}.abc_5678.part",  # another host, 2 days old
            "legacy_old": ".train_32x32.mat.k3j_x9ab.part",  # an older schedgen's, 2 days old
            "legacy_fresh": ".test_32x32.mat.k3j_x9ab.part",  # maybe an older schedgen running now
            "foreign_old": ".notes.abcdefgh.part",  # not a name schedgen writes: kept
        }
        two_days_ago = time.time() - 2 * 86400
        for key, name in names.items():
            (folder / name).write_bytes(b"partial")
            if key.endswith("_old"):
                os.utime(folder / name, (two_days_ago, two_days_ago))
        X = np.zeros((32, 32, 3, 1), np.uint8)
        url = "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"
        temporaries = []
        payload = svhn_mat_bytes(X, np.array([[1]], np.uint8))
        monkeypatch.setitem(_sources._MD5, url, hashlib.md5(payload).hexdigest())

        def fake_fetch(u, dest, **kwargs):
            temporaries.append(os.path.basename(dest))
            with open(dest, "wb") as fh:
                fh.write(payload)

        monkeypatch.setattr(_download, "_fetch", fake_fetch)
        load_dataset("svhn", split="test", data_dir=tmp_path, download=True)
        kept = sorted(names[k] for k in ("live", "remote_fresh", "legacy_fresh", "foreign_old"))
        assert _part_files(folder) == kept
        assert (folder / "test_32x32.mat").is_file()
        # The temporary names this process and machine, so it can be told from a live one.
        assert re.fullmatch(rf"\.test_32x32\.mat\.{os.getpid()}-{here}\.[a-z0-9_]+\.part", temporaries[0])


def test_a_download_that_cannot_be_moved_into_place_is_one_error(tmp_path):
    """The final rename of a finished download failing (here: a folder is in the way) is a
    DataError naming the destination, not an OSError traceback; no temporary is left."""
    dest = tmp_path / "train_32x32.mat"
    dest.mkdir()
    (dest / "x").write_text("in the way")
    with pytest.raises(DataError, match=r"cannot move the download into place at .*train_32x32\.mat"):
        with _download._atomic_path(dest) as tmp:
            open(tmp, "wb").write(b"payload")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_32x32.mat"]
