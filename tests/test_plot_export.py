"""plot, export and list: output formats, edge schedules, URL stores, unwritable folders, --verify."""

from __future__ import annotations

import errno
import functools
import http.server
import json
import os
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedgen.build import BuildConfig, build
from schedgen.catalog import default_export_path, export, list_schedules
from schedgen.cli import app
from schedgen.errors import ParameterError, StoreError
from schedgen.plot import draw_schedule, draw_schedules, overlay_curves, plot_schedule, plot_schedules
from schedgen.store import Schedule, read_schedule, write_schedule
from toys import one_line_error

pytest.importorskip("matplotlib")

runner = CliRunner()


def run(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)



@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Digits stores: mmd k=50, mmd k=N (one batch), learn2mix with 1 and 3 epochs."""
    d = tmp_path_factory.mktemp("stores")
    cfg = dict(dataset="digits", out_dir=d)
    return {
        "mmd": build(BuildConfig(k=50, **cfg)).path,
        "mmd_kN": build(BuildConfig(k=1437, **cfg)).path,
        "l2m_1": build(BuildConfig(k=50, method="learn2mix", epochs=1, **cfg)).path,
        "l2m_3": build(BuildConfig(k=50, method="learn2mix", epochs=3, **cfg)).path,
    }


def _mmd_toy(batch_mmd2) -> Schedule:
    """An mmd-method schedule of 10 samples in batches of 2 with the given per-batch MMD²."""
    return Schedule(
        indices=np.arange(10, dtype=np.int64),
        batch_offsets=np.arange(0, 11, 2, dtype=np.int64),
        epoch_offsets=np.array([0, 5], dtype=np.int64),
        method="mmd",
        params={"solver": "swap", "kernel": "rbf"},
        dataset={"name": "toy", "split": "train", "n_samples": 10, "n_classes": 2, "fingerprint": "f" * 64},
        k=2,
        batch_arrays={"batch_mmd2": np.asarray(batch_mmd2, dtype=np.float64)},
    )


# ----------------------------------------------------------------------------- plot: formats


@pytest.mark.parametrize("name, magic", [("p.png", b"\x89PNG"), ("p.pdf", b"%PDF"), ("p.svg", b"<?xml"),
                                         ("p.SVG", b"<?xml")])
def test_plot_format_follows_the_extension(stores, tmp_path, name, magic):
    r = run("plot", stores["l2m_3"], "-o", tmp_path / name)
    assert r.exit_code == 0, r.stderr
    data = (tmp_path / name).read_bytes()
    assert data.startswith(magic), data[:16]
    if magic == b"<?xml":
        assert b"<svg" in data[:1000]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left


@pytest.mark.parametrize("name, got", [("p.jpg", "got '.jpg'"), ("p", "got no extension"),
                                       ("p.png.bak", "got '.bak'")])
def test_plot_refuses_unknown_or_missing_extension(stores, tmp_path, name, got):
    err = one_line_error(run("plot", stores["l2m_3"], "-o", tmp_path / name),
                          f"plot output {tmp_path / name} must end in .png, .pdf or .svg "
                          "(the format follows the extension)", got)
    assert err.endswith(got)
    assert list(tmp_path.iterdir()) == []


def test_plot_refuses_an_existing_file_without_force(stores, tmp_path):
    out = tmp_path / "p.png"
    out.write_bytes(b"keep me")
    one_line_error(run("plot", stores["l2m_3"], "-o", out),
                    f"{out} already exists; expected a new path (or pass --force to replace it)")
    assert out.read_bytes() == b"keep me"
    with pytest.raises(StoreError, match="already exists"):
        plot_schedule(stores["l2m_3"], out)  # the library's default too
    r = run("plot", stores["l2m_3"], "-o", out, "--force")
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- plot: learn2mix


def _xticks_in_view(ax):
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def test_learn2mix_plot_has_title_integer_epochs_and_legend_outside(stores):
    fig, _ = draw_schedule(read_schedule(stores["l2m_3"]))
    try:
        assert fig._suptitle is not None
        title = fig._suptitle.get_text()
        assert title.startswith("learn2mix on digits (train), k=50") and "3 epochs" in title
        fig.canvas.draw()
        assert len(fig.legends) == 1
        legend = fig.legends[0].get_window_extent()
        for ax in fig.axes:
            ticks = _xticks_in_view(ax)
            assert ticks == [0, 1, 2], ticks
            assert ax.get_legend() is None
            assert not legend.overlaps(ax.get_window_extent()), "the legend covers an axes"
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_one_epoch_learn2mix_draws_visible_points(stores):
    fig, series = draw_schedule(read_schedule(stores["l2m_1"]))
    try:
        assert "1 epoch (one point per class)" in fig._suptitle.get_text()
        for ax in fig.axes:
            lines = ax.get_lines()
            assert len(lines) == 10
            for line in lines:
                assert line.get_marker() == "o" and len(line.get_xdata()) == 1
                assert np.isfinite(line.get_ydata()).all()
            assert _xticks_in_view(ax) == [0]
        assert len(series["final_alpha"]) == 10
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


# ----------------------------------------------------------------------------- plot: mmd edge cases


def test_k_equal_n_plot_has_no_warning_and_undefined_means(stores, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mean of empty slice" would fail here
        r = plot_schedule(stores["mmd_kN"], tmp_path / "k.png")
    assert r.series == {"schedule_mean_mmd2": None, "random_mean_mmd2": None}
    cli = run("plot", stores["mmd_kN"], "-o", tmp_path / "k2.png", "--json")
    assert cli.exit_code == 0 and cli.stderr == "", cli.stderr
    d = json.loads(cli.stdout)  # strict JSON: no NaN
    assert d["schedule_mean_mmd2"] is None and d["random_mean_mmd2"] is None
    human = run("plot", stores["mmd_kN"], "-o", tmp_path / "k3.png")
    assert human.exit_code == 0 and human.stderr == ""
    assert "schedule_mean_mmd2 undefined, random_mean_mmd2 undefined" in human.stdout


def test_k_equal_n_plot_says_why_it_is_empty(stores):
    fig, _ = draw_schedule(read_schedule(stores["mmd_kN"]), baseline=False)
    try:
        assert "MMD² is undefined (NaN) after the last batch" in fig.axes[0].get_title()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_mmd_plot_means(stores, tmp_path):
    r = plot_schedule(stores["mmd"], tmp_path / "m.png")
    y = read_schedule(stores["mmd"]).batch_arrays["batch_mmd2"]
    assert r.series["schedule_mean_mmd2"] == pytest.approx(float(np.nanmean(y)))
    assert r.series["random_mean_mmd2"] > r.series["schedule_mean_mmd2"]


@pytest.mark.parametrize("values, scale", [
    ([3e-3, 1e-3, 2e-4, -1e-18, np.nan], "symlog"),
    ([3e-3, 0.0, 2e-4, 1e-4, np.nan], "symlog"),
    ([-1e-17, 0.0, -2e-18, 0.0, np.nan], "linear"),
    ([3e-3, 1e-3, 2e-4, 1e-4, np.nan], "log"),
])
def test_nonpositive_mmd2_stays_on_the_curve(values, scale):
    fig, series = draw_schedule(_mmd_toy(values), baseline=False)
    try:
        ax = fig.axes[0]
        assert ax.get_yscale() == scale
        (line,) = ax.get_lines()
        np.testing.assert_array_equal(line.get_ydata(), values)  # nothing masked away
        if scale != "log":
            assert "<= 0 (float rounding near 0)" in ax.get_title()
        finite = [v for v in values if np.isfinite(v)]
        assert series["schedule_mean_mmd2"] == pytest.approx(np.mean(finite))
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_nonpositive_mmd2_png_is_written_without_warnings(tmp_path):
    path = write_schedule(_mmd_toy([3e-3, 1e-3, -1e-18, 1e-4, np.nan]), tmp_path / "toy.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_schedule(path, tmp_path / "toy.png", baseline=False)
    assert (tmp_path / "toy.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- plot: dpp, submodular, overlay


@pytest.fixture(scope="module")
def overlay_stores(stores):
    """Digits k=50 stores beside the mmd one (sharing its row-sums cache): mmd greedy, dpp,
    submodular and random (the last three with 2 epochs: the overlay draws epoch 0)."""
    d = Path(stores["mmd"]).parent
    cfg = dict(dataset="digits", out_dir=d, k=50)
    return {
        "mmd": stores["mmd"],
        "greedy": build(BuildConfig(solver="greedy", **cfg)).path,
        "dpp": build(BuildConfig(method="dpp", epochs=2, **cfg)).path,
        "submodular": build(BuildConfig(method="submodular", epochs=2, **cfg)).path,
        "random": build(BuildConfig(method="random", epochs=2, **cfg)).path,
    }


def _epoch0(s):
    e0 = s.epoch_batches(0)
    return s.batch_arrays["batch_mmd2"][e0.start : e0.stop]


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.fixture(scope="module")
def dense_digits(overlay_stores):
    """The digits kernel matrix in float64 from the formula, with the σ the stores recorded."""
    from schedgen.data import load_dataset
    from schedgen.features import FeatureSpec, prepare_features

    p = read_schedule(overlay_stores["mmd"]).params
    assert p["pca"] == 0 and not p["standardize"] and p["kernel"] == "rbf"
    X = prepare_features(load_dataset("digits"), FeatureSpec(pca=0, standardize=False, seed=0)).astype(np.float64)
    sq = (X * X).sum(axis=1)
    return np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0) / (2 * p["bandwidth"] ** 2))


def _dense_prefix_mmd2(K, s):
    """MMD²(A_t, D \\ A_t) of epoch 0's prefixes (distinct samples), from the dense matrix."""
    out = []
    ids = np.arange(len(K))
    for b in s.epoch_batches(0):
        A = np.unique(s.indices[: s.batch_offsets[b + 1]])
        R = np.setdiff1d(ids, A)
        out.append(np.nan if len(R) == 0 else
                   K[np.ix_(A, A)].mean() - 2 * K[np.ix_(A, R)].mean() + K[np.ix_(R, R)].mean())
    return np.array(out)


def test_overlay_draws_each_stores_epoch_0_on_one_axes(overlay_stores, dense_digits):
    order = ["mmd", "greedy", "dpp", "submodular", "random"]
    scheds = [read_schedule(overlay_stores[x]) for x in order]
    fig, series = draw_schedules(scheds)
    try:
        (ax,) = fig.axes
        lines = ax.get_lines()
        labels = [line.get_label() for line in lines]
        assert labels == ["mmd (solver=swap)", "mmd (solver=greedy)", "dpp", "submodular", "random"]
        assert [t.get_text() for t in fig.legends[0].get_texts()] == labels
        for line, s in zip(lines, scheds):
            n = len(s.epoch_batches(0))
            assert n == 29
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, n + 1))
            if s.method != "random":  # drawn from the store, bit for bit
                assert line.get_ydata().tobytes() == _epoch0(s).tobytes()
            # Every curve against the dense float64 oracle. Tolerance: float32 kernel values (the GEMM
            # recipe, |dK| up to ~1e-7 here) summed in float64: measured 4e-9..3e-8 for the prefix
            # sums of evaluate / dpp / submodular, 3e-7 for mmd, whose loop reuses its solver's columns.
            atol = 1e-6 if s.method == "mmd" else 1e-7
            np.testing.assert_allclose(line.get_ydata(), _dense_prefix_mmd2(dense_digits, s), rtol=0, atol=atol)
            assert series[line.get_label()] == pytest.approx(float(np.nanmean(line.get_ydata())), rel=1e-12)
        assert "dpp: MMD² of the distinct samples drawn so far" in ax.get_title()
        assert ax.get_title().startswith("digits (train), k=50, kernel rbf (σ=")
    finally:
        _close(fig)


def test_overlay_writes_one_file_atomically(overlay_stores, tmp_path, monkeypatch):
    paths = [overlay_stores[x] for x in ("mmd", "dpp", "submodular", "random")]
    out = tmp_path / "o.svg"
    r = plot_schedules(paths, out)
    assert r.path == out and r.method == "overlay" and set(r.series) == {"mmd", "dpp", "submodular", "random"}
    assert out.read_bytes()[:5] == b"<?xml" and sorted(p.name for p in tmp_path.iterdir()) == ["o.svg"]
    with pytest.raises(StoreError, match="already exists"):
        plot_schedules(paths, out)
    before = out.read_bytes()

    from matplotlib.figure import Figure

    def full_disk(self, fname, **kw):
        Path(fname).write_bytes(b"<?xml half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(StoreError, match=r"^cannot write .*o\.svg: No space left on device$"):
        plot_schedules(paths, out, overwrite=True)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["o.svg"]
    with pytest.raises(StoreError, match="No space left"):
        plot_schedules(paths, tmp_path / "new.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.svg"]


def test_overlay_refuses_stores_of_other_data(stores, overlay_stores, tmp_path):
    out = tmp_path / "o.png"
    with pytest.raises(ParameterError, match=r"^plot overlays stores of one dataset and batch size; .*mmd.*k1437.* "
                                             r"differs from .* in k 1437 vs 50$"):
        plot_schedules([overlay_stores["dpp"], stores["mmd_kN"]], out)
    toy = _mmd_toy([1e-3] * 4 + [np.nan])
    other = Schedule(**{**toy.__dict__, "dataset": {**toy.dataset, "fingerprint": "e" * 64}, "k": 5,
                        "batch_offsets": np.array([0, 5, 10], dtype=np.int64),
                        "batch_arrays": {"batch_mmd2": np.array([1e-3, np.nan])}})
    with pytest.raises(ParameterError, match=r"; store 2 differs from store 1 in dataset toy \(train, fingerprint "
                                             r"eeeeeeeeeeee\) vs toy \(train, fingerprint ffffffffffff\); k 5 vs 2$"):
        overlay_curves([toy, other])
    bigger = Schedule(**{**toy.__dict__, "dataset": {**toy.dataset, "n_samples": 12},
                         "indices": np.arange(12, dtype=np.int64),
                         "batch_offsets": np.arange(0, 13, 2, dtype=np.int64),
                         "epoch_offsets": np.array([0, 6], dtype=np.int64),
                         "batch_arrays": {"batch_mmd2": np.full(6, 1e-3)}})
    with pytest.raises(ParameterError, match=r"differs from store 1 in N 12 vs 10$"):
        overlay_curves([toy, bigger])
    assert not out.exists()


def test_overlay_refuses_recorded_stores_of_other_kernels(overlay_stores, tmp_path):
    wide = build(BuildConfig(dataset="digits", k=50, method="submodular", bandwidth=5.0, out_dir=tmp_path)).path
    with pytest.raises(ParameterError, match=r"^plot overlays MMD² recorded on one kernel and features; .*submodular"
                                             r".* differs from .*mmd-swap.* in bandwidth=5\.0 vs 2\.1\d+ \(rebuild "
                                             r"with the same --kernel, --bandwidth"):
        plot_schedules([overlay_stores["mmd"], wide], tmp_path / "o.png")
    toy = _mmd_toy([1e-3] * 4 + [np.nan])
    pca = Schedule(**{**toy.__dict__, "params": {**toy.params, "pca": 8, "seed": 3}})
    with pytest.raises(ParameterError, match=r"in pca=8 vs unset, seed=3 vs unset"):
        overlay_curves([toy, pca])
    assert not (tmp_path / "o.png").exists()


def test_overlay_refuses_other_methods_and_random_alone(stores, overlay_stores):
    with pytest.raises(ParameterError, match=r"^plot overlays mmd, dpp, submodular and random stores .*got a "
                                             r"learn2mix store: store 2$"):
        overlay_curves([read_schedule(stores["mmd"]), read_schedule(stores["l2m_1"])])
    with pytest.raises(ParameterError, match=r"got only random stores \(1\)$"):
        overlay_curves([read_schedule(overlay_stores["random"])])
    with pytest.raises(ParameterError, match="at least one store"):
        overlay_curves([])
    toy = _mmd_toy([1e-3] * 4 + [np.nan])
    bare = Schedule(**{**toy.__dict__, "batch_arrays": {}})
    with pytest.raises(StoreError, match=r"^B\.zarr: a mmd store without 'batch_mmd2'; nothing to overlay$"):
        overlay_curves([toy, bare], names=["A.zarr", "B.zarr"])


def test_overlay_labels_tell_stores_of_one_method_apart():
    toy = _mmd_toy([1e-3] * 4 + [np.nan])
    paper = Schedule(**{**toy.__dict__, "params": {**toy.params, "coefficients": "paper"}})
    curves = overlay_curves([toy, paper, toy], names=["a.zarr", "b.zarr", "c.zarr"])
    assert [c.label for c in curves] == ["mmd (coefficients=unset) [a.zarr]", "mmd (coefficients=paper)",
                                         "mmd (coefficients=unset) [c.zarr]"]
    assert [c.label for c in overlay_curves([toy, toy], names=["a", "b"])] == ["mmd (a)", "mmd (b)"]


@pytest.mark.parametrize("method", ["dpp", "submodular"])
def test_single_store_plot_of_dpp_and_submodular(overlay_stores, method, tmp_path):
    s = read_schedule(overlay_stores[method])
    assert s.n_epochs == 2
    fig, series = draw_schedule(s)
    try:
        (ax,) = fig.axes
        mine, rnd = ax.get_lines()
        assert mine.get_ydata().tobytes() == _epoch0(s).tobytes()  # epoch 0 only
        assert len(rnd.get_ydata()) == 29 and np.isnan(rnd.get_ydata()[-1]) and np.isfinite(rnd.get_ydata()[:-1]).all()
        assert ax.get_title().startswith(f"{method} on digits (train), k=50")
        assert ax.get_xlabel() == "batch of epoch 0 (of 2 epochs)"
        assert series["schedule_mean_mmd2"] == pytest.approx(float(np.nanmean(_epoch0(s))))
    finally:
        _close(fig)
    r = plot_schedule(overlay_stores[method], tmp_path / "p.png", baseline=False)
    assert r.method == method and (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- export / list of URL stores


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def served(stores):
    """Serve the stores' folder on 127.0.0.1; yield the URL of the mmd store."""
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    root = Path(stores["mmd"]).parent
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{Path(stores['mmd']).name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("fmt, suffix", [("npy", ".npy.d"), ("jsonl", ".jsonl")])
def test_export_of_a_url_store_writes_its_base_name_in_the_current_folder(stores, served, tmp_path, monkeypatch,
                                                                         fmt, suffix):
    monkeypatch.chdir(tmp_path)
    r = run("export", served, "--format", fmt, "--json")
    assert r.exit_code == 0, r.stderr
    expected = Path(stores["mmd"]).name.removesuffix(".zarr") + suffix
    assert json.loads(r.stdout)["path"] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected]  # no ./http:/... tree
    s = read_schedule(stores["mmd"])
    if fmt == "npy":
        np.testing.assert_array_equal(np.load(tmp_path / expected / "indices.npy"), s.indices)
    else:
        lines = (tmp_path / expected).read_text().splitlines()
        np.testing.assert_array_equal(np.concatenate([json.loads(x)["indices"] for x in lines]), s.indices)
    one_line_error(run("export", served, "--format", fmt), f"{expected} already exists")


@pytest.mark.parametrize("url, name", [
    ("http://h/a/X.zarr", "X.npy.d"),
    ("http://h/a/X.zarr/", "X.npy.d"),
    ("s3://bucket/deep/path/Y.zarr", "Y.npy.d"),
    ("http://h/a/my%20store.zarr?x=1", "my store.npy.d"),
])
def test_default_export_name_of_urls(url, name):
    assert default_export_path(url, "npy") == Path(name)
    assert default_export_path(url, "jsonl") == Path(name.removesuffix(".npy.d") + ".jsonl")


def test_default_export_path_of_local_and_file_url_stores(tmp_path):
    assert default_export_path(tmp_path / "a.zarr", "npy") == tmp_path / "a.npy.d"
    assert default_export_path(f"file://{tmp_path}/a.zarr", "jsonl") == tmp_path / "a.jsonl"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "s3://bucket"])
def test_export_of_a_url_without_a_name_asks_for_output(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterError, match=r"cannot name the export of .*: expected a URL ending in a store "
                                             r"name \(e\.g\. \.\.\./X\.zarr\), got none; pass -o/--output PATH"):
        export(url, fmt="npy")
    assert list(tmp_path.iterdir()) == []


def test_list_of_a_url_says_it_needs_a_local_folder(served, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = served.rsplit("/", 1)[0]
    err = one_line_error(run("list", base), f"cannot list {base}: list needs a local folder of .zarr stores, got a URL",
                          "schedgen info URL")
    assert "no schedule stores" not in err
    with pytest.raises(ParameterError, match="list needs a local folder"):
        list_schedules(base)


# ----------------------------------------------------------------------------- export into unwritable folders


@pytest.mark.parametrize("fmt", ["npy", "jsonl"])
@pytest.mark.parametrize("sub", ["x", "deeper/x"])
def test_export_under_a_regular_file_is_one_clean_error(stores, tmp_path, fmt, sub):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / (sub + (".npy.d" if fmt == "npy" else ".jsonl"))
    one_line_error(run("export", stores["mmd"], "--format", fmt, "-o", out), f"cannot write {out}: Not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_export_npy_permission_denied_is_one_clean_error(stores, tmp_path, monkeypatch):
    out = tmp_path / "x.npy.d"
    real_mkdir = os.mkdir

    def refuse(path, *a, **kw):  # what a read-only folder does to a non-root user
        if Path(path).name.startswith(".x.npy.d.tmp-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", refuse)
    one_line_error(run("export", stores["mmd"], "-o", out), f"cannot write {out}: Permission denied")
    with pytest.raises(StoreError, match=r"^cannot write .*x\.npy\.d: Permission denied$"):
        export(stores["mmd"], out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
@pytest.mark.parametrize("fmt", ["npy", "jsonl"])
def test_export_into_chmod_read_only_folder(stores, tmp_path, fmt):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("this user (root?) can write to a 0o500 directory; covered by the simulated test")
        out = ro / ("x.npy.d" if fmt == "npy" else "x.jsonl")
        one_line_error(run("export", stores["mmd"], "--format", fmt, "-o", out),
                        f"cannot write {out}: Permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


# ----------------------------------------------------------------------------- list --verify


def _truncate_a_chunk(store: Path) -> None:
    chunk = next(p for p in sorted((store / "indices" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:5])


def test_list_verify_finds_a_truncated_store_that_plain_list_shows_healthy(tmp_path):
    good = build(BuildConfig(dataset="digits", k=100, method="random", out_dir=tmp_path)).path
    bad = build(BuildConfig(dataset="digits", k=200, method="random", out_dir=tmp_path)).path
    _truncate_a_chunk(bad)

    plain = run("list", tmp_path)
    assert plain.exit_code == 0
    assert "ERROR" not in plain.stdout and "FAILED" not in plain.stdout  # attributes look fine
    assert "digests not checked (list --verify checks them)" in plain.stderr
    assert "not verified" in run("list", "--help", env={"COLUMNS": "200"}).stdout

    r = run("list", tmp_path, "--verify")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    by_path = {line.split("  ")[0]: line for line in lines}
    assert by_path[str(good)].endswith("  ok")
    assert "  FAILED " in by_path[str(bad)] and str(bad) in by_path[str(bad)]
    assert r.stderr.strip() == "error: 1 of 2 stores failed verification"

    rows = {row["path"]: row for row in json.loads(run("list", tmp_path, "--verify", "--json").stdout)}
    assert rows[str(good)]["verified"] is True and "error" not in rows[str(good)]
    assert rows[str(bad)]["verified"] is False and str(bad) in rows[str(bad)]["error"]
    assert rows[str(bad)]["method"] == "random"  # the attributes are still listed


def test_list_verify_all_ok_and_unreadable_rows(tmp_path):
    good = build(BuildConfig(dataset="digits", k=100, method="random", out_dir=tmp_path)).path
    r = run("list", tmp_path, "--verify")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.strip() == f"{good}  random k=100 15 batches digits (train)  ok"
    (tmp_path / "junk.zarr").mkdir()
    rows = list_schedules(tmp_path, verify=True)
    assert [row["verified"] for row in rows] == [True, False] and "error" in rows[1]
    assert "verified" not in list_schedules(tmp_path)[0]


def test_cli_overlays_several_stores_and_refuses_one_store_options(overlay_stores, tmp_path):
    paths = [overlay_stores[m] for m in ("mmd", "dpp", "submodular", "random")]
    out = tmp_path / "cli-overlay.png"
    r = run("plot", *paths, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["method"] == "overlay" and out.exists()
    assert set(got) >= {"mmd", "dpp", "submodular", "random"}
    assert got == {"path": str(out), "method": "overlay", **plot_schedules(paths, tmp_path / "api.png").series}
    for extra in (["--seed", "3"], ["--no-baseline"]):
        r = run("plot", *paths, "-o", tmp_path / "x.png", *extra)
        one_line_error(r, extra[0], "applies to a plot of one store")
        assert not (tmp_path / "x.png").exists()
    # One store still takes them.
    r = run("plot", overlay_stores["dpp"], "-o", tmp_path / "one.png", "--seed", "3")
    assert r.exit_code == 0, r.stderr


def test_nystrom_mmd_stores_are_rescored_on_the_exact_kernel(overlay_stores, dense_digits, tmp_path):
    """An mmd --approx store records MMD² of ΦΦᵀ; a plot must not put it beside exact-kernel curves."""
    d = Path(overlay_stores["mmd"]).parent
    approx = build(BuildConfig(dataset="digits", out_dir=d, k=50, approx="nystrom:100")).path
    s = read_schedule(approx)
    assert s.params["batch_mmd2_kernel"] == "nystrom"
    exact = _dense_prefix_mmd2(dense_digits, s)
    recorded = _epoch0(s)
    assert not np.allclose(recorded, exact, rtol=0.1)  # the recorded values are on another kernel
    curves = {c.method: c for c in overlay_curves([read_schedule(overlay_stores["dpp"]), s],
                                                  names=["dpp", "approx"])}
    np.testing.assert_allclose(curves["mmd"].mmd2, exact, rtol=1e-5, atol=1e-7)
    r = plot_schedule(approx, tmp_path / "approx.png", baseline=False)
    assert r.series["schedule_mean_mmd2"] == pytest.approx(np.nanmean(exact), rel=1e-5)


# ----------------------------------------------------------------------------- export --index-dtype (issue 16)


def _paired_toy(n_samples: int = 23) -> Schedule:
    """Two epochs of 23 samples (batches of 5, last short) with a partner batch of 3 per batch."""
    rng = np.random.default_rng([16, 0])
    indices = np.concatenate([rng.permutation(23), rng.permutation(23)]).astype(np.int64)
    batch_offsets = np.array([0, 5, 10, 15, 20, 23, 28, 33, 38, 43, 46], dtype=np.int64)
    return Schedule(
        indices=indices,
        batch_offsets=batch_offsets,
        epoch_offsets=np.array([0, 5, 10], dtype=np.int64),
        method="random",
        params={"seed": 16},
        dataset={"name": "toy", "split": "train", "n_samples": n_samples, "n_classes": 1, "fingerprint": "f" * 64},
        k=5,
        batch_arrays={"partner_indices": rng.integers(0, 23, size=(10, 3)).astype(np.int64),
                      "batch_mmd2": rng.random(10)},
    )


def _npy_dir(out: Path) -> dict:
    """Every .npy of an export, read the safe way (a pickle would raise) and checked to be plain .npy files."""
    arrays = {}
    for f in sorted(out.glob("*.npy")):
        assert f.read_bytes()[:6] == b"\x93NUMPY", f
        arrays[f.stem] = np.load(f, allow_pickle=False)
    return arrays


@pytest.mark.parametrize("index_dtype, narrowed", [("int64", False), ("uint32", True), ("auto", True)])
def test_export_index_dtype_round_trip(tmp_path, index_dtype, narrowed):
    path = write_schedule(_paired_toy(), tmp_path / "p.zarr")
    s = read_schedule(path)
    out = export(path, tmp_path / f"{index_dtype}.npy.d", index_dtype=index_dtype)
    got = _npy_dir(out)
    assert set(got) == {"indices", "batch_offsets", "epoch_offsets", "partner_indices", "batch_mmd2"}
    want = {"indices": s.indices, "batch_offsets": s.batch_offsets, "epoch_offsets": s.epoch_offsets, **s.batch_arrays}
    for name, a in got.items():
        np.testing.assert_array_equal(a, want[name], err_msg=name)  # values equal whatever the dtype
        index_array = name in ("indices", "partner_indices")
        expected = np.uint32 if narrowed and index_array else want[name].dtype
        assert a.dtype == expected, (name, a.dtype)
    assert json.loads((out / "meta.json").read_text())["digest"] == s.digest


def test_export_uint32_halves_the_index_files_and_default_bytes_are_unchanged(tmp_path):
    path = write_schedule(_paired_toy(), tmp_path / "p.zarr")
    wide, narrow = export(path, tmp_path / "wide"), export(path, tmp_path / "narrow", index_dtype="uint32")
    explicit = export(path, tmp_path / "explicit", index_dtype="int64")
    for name in ("indices", "partner_indices"):
        w = np.load(wide / f"{name}.npy", mmap_mode="r")
        n = np.load(narrow / f"{name}.npy", mmap_mode="r")
        # Data bytes: the file after its header (mmap's offset), exactly half.
        data_w = (wide / f"{name}.npy").stat().st_size - w.offset
        data_n = (narrow / f"{name}.npy").stat().st_size - n.offset
        assert (data_w, data_n) == (8 * w.size, 4 * w.size), name
    for name in ("batch_offsets", "epoch_offsets", "batch_mmd2", "meta"):
        f = f"{name}.json" if name == "meta" else f"{name}.npy"
        assert (wide / f).read_bytes() == (narrow / f).read_bytes(), name
    # The default is int64, byte for byte the export before --index-dtype existed.
    for f in wide.iterdir():
        assert f.read_bytes() == (explicit / f.name).read_bytes(), f.name


def test_export_uint32_is_refused_when_n_reaches_2_32(tmp_path):
    path = write_schedule(_paired_toy(n_samples=2**32), tmp_path / "big.zarr")
    with pytest.raises(ParameterError, match=r"^index dtype uint32 holds indices below 2\*\*32 = 4294967296, but "
                                             r"the dataset has N=4294967296 samples; use int64 \(or auto\)$"):
        export(path, tmp_path / "x.npy.d", index_dtype="uint32")
    assert not (tmp_path / "x.npy.d").exists()
    one_line_error(run("export", path, "-o", tmp_path / "x.npy.d", "--index-dtype", "uint32"), "N=4294967296")
    # auto falls back to int64; N = 2**32 - 1 still fits uint32 (largest index 2**32 - 2).
    assert _npy_dir(export(path, tmp_path / "auto", index_dtype="auto"))["indices"].dtype == np.int64
    fits = write_schedule(_paired_toy(n_samples=2**32 - 1), tmp_path / "fits.zarr")
    assert _npy_dir(export(fits, tmp_path / "fits", index_dtype="auto"))["indices"].dtype == np.uint32


def test_export_index_dtype_bad_values(tmp_path):
    path = write_schedule(_paired_toy(), tmp_path / "p.zarr")
    with pytest.raises(ParameterError, match=r"^index dtype must be one of \['int64', 'uint32', 'auto'\], got 'int32'$"):
        export(path, tmp_path / "x", index_dtype="int32")
    one_line_error(run("export", path, "--format", "jsonl", "-o", tmp_path / "x.jsonl", "--index-dtype", "uint32"),
                   "index dtype 'uint32' applies to --format npy only")
    r = run("export", path, "-o", tmp_path / "c.npy.d", "--index-dtype", "auto", "--json")
    assert r.exit_code == 0, r.stderr
    assert _npy_dir(tmp_path / "c.npy.d")["indices"].dtype == np.uint32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy.d", "p.zarr"]  # refusals wrote nothing


def test_export_never_writes_a_pickle(tmp_path, monkeypatch):
    """An object array (no store holds one) makes the writer raise instead of pickling it; nothing is left."""
    import schedgen.catalog as catalog

    path = write_schedule(_paired_toy(), tmp_path / "p.zarr")
    s = read_schedule(path)
    s.batch_arrays["names"] = np.array(["a", 1] * 5, dtype=object)
    monkeypatch.setattr(catalog, "read_schedule", lambda p: s)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        export(path, tmp_path / "x.npy.d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


def test_export_uint32_cast_never_wraps(tmp_path, monkeypatch):
    """The cast checks the values themselves, not only N (a store's own checks keep them below N)."""
    import schedgen.catalog as catalog

    path = write_schedule(_paired_toy(), tmp_path / "p.zarr")
    s = read_schedule(path)
    s.indices[3] = 2**32 + 5  # would wrap to 5
    monkeypatch.setattr(catalog, "read_schedule", lambda p: s)
    with pytest.raises(StoreError, match=r"^indices holds values outside \[0, 2\*\*32\) and cannot be written as uint32$"):
        export(path, tmp_path / "x.npy.d", index_dtype="uint32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]
