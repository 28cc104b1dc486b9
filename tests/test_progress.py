"""Progress on long runs: every stage that can take long reports rows done, in order."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from schedgen.build import BuildConfig, build
from schedgen.data import Dataset, fingerprint


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total, stage="batches"):
        self.calls.append((stage, done, total))

    def stages(self):
        out = []
        for stage, *_ in self.calls:
            if not out or out[-1] != stage:
                out.append(stage)
        return out

    def of(self, stage):
        return [(d, t) for s, d, t in self.calls if s == stage]


def _monotone_to_the_end(points):
    done = [d for d, _ in points]
    assert done == sorted(done) and done[-1] == points[-1][1], points


@pytest.mark.parametrize("options, expected", [
    (dict(), ["fingerprint", "row sums", "batches"]),
    (dict(approx="nystrom:40"), ["fingerprint", "k-means landmarks", "Nyström features", "batches"]),
    (dict(method="dpp"), ["fingerprint", "eigendecomposition", "batches"]),
    (dict(method="dpp", approx="nystrom:100"), ["fingerprint", "k-means landmarks", "Nyström features",
                                                 "row sums", "batches"]),
    (dict(method="submodular"), ["fingerprint", "row sums", "batches"]),
])
def test_stages_report_in_order(tmp_path, options, expected):
    rec = Recorder()
    build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path, **options), progress=rec)
    assert rec.stages() == expected
    for stage in expected:
        _monotone_to_the_end(rec.of(stage))
    assert rec.of("fingerprint")[-1] == (1437, 1437)


def test_a_two_argument_callback_sees_the_batches_only(tmp_path):
    seen = []
    build(BuildConfig(dataset="digits", k=50, out_dir=tmp_path), progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (29, 29)
    assert all(t == 29 for _, t in seen)


def test_row_sums_progress_from_worker_threads_only_grows():
    from schedgen.kernels import make_kernel, row_sums

    X = np.random.default_rng(0).normal(size=(700, 8)).astype(np.float32)
    rec = Recorder()
    plain = row_sums(make_kernel("rbf", bandwidth=1.0), X, block_rows=64, n_jobs=2)
    with_progress = row_sums(make_kernel("rbf", bandwidth=1.0), X, block_rows=64, n_jobs=2,
                             progress=lambda d, t: rec(d, t, "row sums"))
    np.testing.assert_array_equal(plain.s if hasattr(plain, "s") else plain[0], with_progress[0])
    points = rec.of("row sums")
    assert len(points) == 11  # ceil(700 / 64) blocks
    _monotone_to_the_end(points)


def test_fingerprint_in_blocks_is_the_same_digest():
    r = np.random.default_rng(1)
    X = r.normal(size=(3000, 7000)).astype(np.float64)  # > one 64 MiB block of float32 rows
    y = r.integers(0, 3, size=3000)
    ds = Dataset("x", "train", X, y, pixel_max=None)
    rec = Recorder()
    fp = ds.compute_fingerprint(progress=lambda d, t: rec(d, t, "fingerprint"))
    # The documented layout (docs/FORMAT.md), hashed in one piece.
    whole = hashlib.sha256(b"schedgen-dataset-v1\0" + np.array(X.shape, dtype="<i8").tobytes()
                           + X.astype("<f4").tobytes() + y.astype("<i8").tobytes()).hexdigest()
    assert fp == whole == fingerprint(X, y) == ds.fingerprint
    assert len(rec.of("fingerprint")) == 2
    _monotone_to_the_end(rec.of("fingerprint"))
