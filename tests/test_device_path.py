"""The GPU code path on the CPU, through a strict fake CuPy (``tests/fakecupy.py``).

No GPU was ever lent to this project, so these tests are what shows the CuPy path works:
every kernel routine and whole builds run on "device" arrays that refuse any NumPy call,
any host/device mix and any implicit transfer. Its arithmetic is NumPy's, so a routine given the same
tiles must equal the CPU path's bit for bit; with the device's default tiles the sums round
differently (and a real GPU's GEMM adds its own rounding), which is why a cuda build has its
own cache key.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fakecupy import DeviceMisuse, make_fake_cupy


@pytest.fixture
def cupy(monkeypatch):
    fake = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


def _X(n=300, d=16, seed=0):
    r = np.random.default_rng([seed, 11])
    return (r.normal(size=(n, d)) * 0.5).astype(np.float32)


def test_the_fake_is_strict(cupy):
    from schedgen.kernels import backend

    d = cupy.asarray(np.ones((3, 2), np.float32))
    assert backend.is_cupy_array(d) and backend.get_namespace(d) is cupy
    for misuse in (lambda: np.exp(d), lambda: np.sum(d), lambda: np.asarray(d), lambda: d + np.ones((3, 2)),
                   lambda: np.concatenate([d, d]), lambda: list(d)):
        with pytest.raises(DeviceMisuse):
            misuse()
    assert_array_equal(cupy.exp(d).get(), np.exp(np.ones((3, 2), np.float32)))
    assert_array_equal(backend.to_numpy(d * 2 + 1), np.full((3, 2), 3, np.float32))
    assert backend.resolve_device("cuda") == "cuda"


@pytest.mark.parametrize("name, options", [("rbf", {"bandwidth": 1.3}), ("poly", {"degree": 3, "coef0": 1.0})])
def test_row_sums_and_gram_on_device_equal_host(cupy, name, options):
    from schedgen.kernels import backend, make_kernel, row_sums

    X = _X()
    kernel = make_kernel(name, **options)
    host = row_sums(kernel, X, block_rows=64, block_cols=96)
    dev = row_sums(kernel, cupy.asarray(X), block_rows=64, block_cols=96)
    for h, g in zip(host, dev):
        assert_array_equal(backend.to_numpy(g), h)


def test_bandwidth_on_device_equals_host(cupy):
    from schedgen.kernels import median_sq_distance

    X = _X()
    assert median_sq_distance(cupy.asarray(X), seed=3) == median_sq_distance(X, seed=3)


@pytest.mark.parametrize("solver", ["lp", "greedy", "swap"])
def test_mmd_build_on_the_device_path_gives_the_cpu_bytes(cupy, tmp_path, solver):
    from schedgen.build import BuildConfig, build
    from schedgen.store import read_schedule

    cfg = dict(dataset="digits", k=50, solver=solver)
    cpu = build(BuildConfig(device="cpu", out_dir=tmp_path / "cpu", **cfg))
    dev = build(BuildConfig(device="cuda", out_dir=tmp_path / "cuda", **cfg))
    assert cupy._state.transfers > 0  # the device path really ran
    # The device path tiles the row sums in larger blocks (kernels.blocked's _DEVICE_BLOCKS), so
    # its sums round differently even with NumPy's arithmetic: batch_mmd2 agrees to ~1e-7
    # relative, not bit for bit. On digits that leaves every choice unchanged; a real GPU's
    # GEMM adds its own rounding, which is why a cuda build has its own cache key.
    assert dev.digest == cpu.digest
    np.testing.assert_allclose(read_schedule(dev.path).batch_arrays["batch_mmd2"],
                               read_schedule(cpu.path).batch_arrays["batch_mmd2"], rtol=1e-5, atol=1e-9)


def test_nystrom_mmd_on_the_device_path_gives_the_cpu_schedule(cupy, tmp_path):
    """mmd --approx: the landmarks and Φ are host work, the solvers' kernel columns device work."""
    from schedgen.build import BuildConfig, build

    cfg = dict(dataset="digits", k=50, approx="nystrom:64")
    cpu = build(BuildConfig(device="cpu", out_dir=tmp_path / "cpu", **cfg))
    dev = build(BuildConfig(device="cuda", out_dir=tmp_path / "cuda", **cfg))
    assert cupy._state.transfers > 0  # the device path really ran
    assert dev.digest == cpu.digest


def test_a_cuda_build_is_its_own_artifact(cupy, tmp_path):
    """GPU rounding can change bytes, so a cuda mmd build has its own cache key and says so;
    a CPU build's params and key carry no device (they stay as they were)."""
    from schedgen.build import BuildConfig, build
    from schedgen.store import read_schedule

    cpu = build(BuildConfig(dataset="digits", k=50, solver="lp", device="cpu", out_dir=tmp_path))
    dev = build(BuildConfig(dataset="digits", k=50, solver="lp", device="cuda", out_dir=tmp_path))
    assert not dev.cache_hit and dev.path != cpu.path
    assert read_schedule(dev.path).params["device"] == "cuda"
    assert "device" not in read_schedule(cpu.path).params
    auto = build(BuildConfig(dataset="digits", k=50, solver="lp", device="auto", out_dir=tmp_path))
    assert auto.cache_hit and auto.path == dev.path  # "auto" finds the (fake) GPU
