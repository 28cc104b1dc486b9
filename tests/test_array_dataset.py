"""``array:DIR`` datasets: .npy files whose float32 features stay memory-mapped.

Oracle: the same arrays as an ``npz:`` archive (read into memory) give the same
fingerprint, the same prepared features and the same schedule bytes.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from schedgen.build import BuildConfig, build
from schedgen.cli import app
from schedgen.data import load_dataset
from schedgen.errors import DataError, ParameterError
from schedgen.features import FeatureSpec, prepare_features
from schedgen.store import read_schedule

from toys import one_line_error


def _mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory-mapped file (walks the ``.base`` chain)."""
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = getattr(a, "base", None)
        if not isinstance(a, np.ndarray):
            return False
    return False


def _arrays(n=240, d=12, seed=0):
    r = np.random.default_rng([seed, 7])
    centres = r.normal(size=(4, d)) * 3
    y = r.integers(0, 4, size=n)
    X = (centres[y] + r.normal(size=(n, d))).astype(np.float32)
    return X, y.astype(np.int64)


@pytest.fixture
def data(tmp_path):
    X, y = _arrays()
    groups = np.arange(len(y)) % 3
    d = tmp_path / "emb"
    d.mkdir()
    np.save(d / "X.npy", X)
    np.save(d / "y.npy", y)
    np.save(d / "groups.npy", groups)
    np.save(d / "X_test.npy", X[:50])
    np.save(d / "y_test.npy", y[:50])
    np.savez(tmp_path / "emb.npz", X=X, y=y, groups=groups)
    return d, tmp_path / "emb.npz", X, y, groups


def test_float32_features_stay_mapped_and_match_npz(data):
    d, npz, X, y, groups = data
    ds = load_dataset(f"array:{d}")
    assert ds.name == f"array:{d.resolve()}"
    assert _mapped(ds.X), "a float32 X.npy must stay a mapping of its file, not a copy"
    assert not ds.X.flags.writeable
    assert_array_equal(ds.X, X)
    assert_array_equal(ds.y, y)
    assert_array_equal(ds.groups, groups)
    ref = load_dataset(f"npz:{npz}")
    assert not _mapped(ref.X)
    assert ds.fingerprint == ref.fingerprint
    # The feature stage passes the mapping through when there is nothing to fit...
    feats = prepare_features(ds, FeatureSpec(pca=0))
    assert _mapped(feats) and np.shares_memory(feats, ds.X)
    # ...and reads it block by block otherwise, to the same values as from memory.
    assert_array_equal(prepare_features(ds, FeatureSpec(pca=5, standardize=True), block_rows=17),
                       prepare_features(ref, FeatureSpec(pca=5, standardize=True)))


def test_test_split(data):
    d, *_ = data
    ds = load_dataset(f"array:{d}", split="test")
    assert ds.n_samples == 50 and ds.groups is None


@pytest.mark.parametrize("method", ["mmd", "random"])
def test_build_digest_equals_npz(data, tmp_path, method):
    d, npz, *_ = data
    options = dict(k=20, method=method, seed=3)
    a = build(BuildConfig(dataset=f"array:{d}", out_dir=tmp_path / "a", **options))
    b = build(BuildConfig(dataset=f"npz:{npz}", out_dir=tmp_path / "b", **options))
    assert a.digest == b.digest
    assert_array_equal(read_schedule(a.path).indices, read_schedule(b.path).indices)
    assert a.path.name.startswith("emb-train-") and a.path.name.split("-k20-")[1] == b.path.name.split("-k20-")[1]


def test_other_dtypes_are_cast_in_memory_with_a_warning(tmp_path):
    X, y = _arrays()
    d = tmp_path / "f64"
    d.mkdir()
    np.save(d / "X.npy", X.astype(np.float64))
    np.save(d / "y.npy", y)
    with pytest.warns(UserWarning, match="cast to a float32 copy in memory"):
        ds = load_dataset(f"array:{d}")
    assert not _mapped(ds.X)
    np.savez(tmp_path / "same.npz", X=X, y=y)
    assert ds.fingerprint == load_dataset(f"npz:{tmp_path / 'same.npz'}").fingerprint
    # A float32 C-ordered file gives no warning.
    np.save(d / "X.npy", X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"array:{d}")


def test_bad_directories_are_one_clear_error(tmp_path):
    with pytest.raises(ParameterError, match="needs a directory"):
        load_dataset("array:")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"array:{tmp_path / 'nope'}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"array:{tmp_path / 'file'}")
    d = tmp_path / "d"
    d.mkdir()
    np.save(d / "X.npy", np.ones((3, 2), np.float32))
    with pytest.raises(DataError, match=r"no y\.npy .*found \['X\.npy'\]"):
        load_dataset(f"array:{d}")
    with pytest.raises(DataError, match="X_test.npy"):
        load_dataset(f"array:{d}", split="test")


def test_pickles_are_never_loaded(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    np.save(d / "X.npy", np.ones((3, 2), np.float32))
    np.save(d / "y.npy", np.array([0, 1, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled Python objects"):
        load_dataset(f"array:{d}")
    # A raw pickle under an .npy name is refused by its missing magic, never unpickled.
    (d / "y.npy").write_bytes(pickle.dumps([0, 1, 2]))
    with pytest.raises(DataError, match=r"y\.npy: not an \.npy file"):
        load_dataset(f"array:{d}")


def test_npz_archive_under_an_npy_name(tmp_path):
    d = tmp_path / "z"
    d.mkdir()
    np.save(d / "X.npy", np.ones((3, 2), np.float32))
    np.savez(d / "y.npz", y=[0, 1, 0])
    (d / "y.npz").rename(d / "y.npy")
    with pytest.raises(DataError, match="got an .npz archive"):
        load_dataset(f"array:{d}")


def test_cli_build_and_bad_path(data, tmp_path):
    d, *_ = data
    runner = CliRunner()
    r = runner.invoke(app, ["build", "--dataset", f"array:{d}", "--k", "20", "--method", "random",
                            "--out-dir", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["build", "--dataset", f"array:{tmp_path / 'missing'}", "--out-dir", str(tmp_path / "o")])
    one_line_error(r, "array dataset directory not found")
