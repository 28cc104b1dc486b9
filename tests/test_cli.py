"""The CLI through typer's CliRunner: build, cache hits, info/verify/list/export, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedgen.cli import app
from schedgen.store import read_schedule
from toys import one_line_error

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def build_json(tmp_path, *extra):
    r = run("build", "--out-dir", tmp_path, "--json", *extra)
    assert r.exit_code == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_build_random_then_cache_hit(tmp_path):
    first = build_json(tmp_path, "--dataset", "digits", "--k", "50", "--method", "random")
    assert {"path", "cache_hit", "digest", "n_batches", "seconds"} <= set(first)
    assert first["cache_hit"] is False
    assert first["n_batches"] == -(-1437 // 50)
    s = read_schedule(first["path"])
    np.testing.assert_array_equal(np.sort(s.indices), np.arange(1437))
    again = build_json(tmp_path, "--dataset", "digits", "--k", "50", "--method", "random")
    assert again["cache_hit"] is True and again["path"] == first["path"] and again["digest"] == first["digest"]
    human = run("build", "--out-dir", tmp_path, "--k", "50", "--method", "random", "-q")
    assert human.exit_code == 0 and "cache hit" in human.stdout
    forced = build_json(tmp_path, "--dataset", "digits", "--k", "50", "--method", "random", "--force")
    assert forced["cache_hit"] is False and forced["digest"] == first["digest"]


def test_random_multi_epoch_store(tmp_path):
    n, k = 1437, 50
    built = build_json(tmp_path, "--dataset", "digits", "--k", k, "--method", "random", "--epochs", "3")
    s = read_schedule(built["path"])
    per_epoch = -(-n // k)
    assert (s.n_epochs, s.n_batches, s.k) == (3, 3 * per_epoch, k)
    epochs = []
    for e in range(3):
        batches = [s.batch(b) for b in s.epoch_batches(e)]
        assert len(batches) == per_epoch
        assert [len(b) for b in batches] == [k] * (per_epoch - 1) + [n % k]
        assert n % k == 37
        order = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(order), np.arange(n))  # a permutation of range(N)
        epochs.append(order)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.array_equal(epochs[a], epochs[b]), (a, b)
    np.testing.assert_array_equal(np.concatenate(epochs), s.indices)


def test_other_parameters_get_another_store(tmp_path):
    a = build_json(tmp_path, "--k", "50", "--method", "random")
    b = build_json(tmp_path, "--k", "50", "--method", "random", "--seed", "1")
    c = build_json(tmp_path, "--k", "40", "--method", "random")
    assert len({a["path"], b["path"], c["path"]}) == 3
    assert a["digest"] != b["digest"]


def test_json_output_is_one_clean_object(tmp_path):
    r = run("build", "--out-dir", tmp_path, "--json", "--k", "64", "--method", "random")
    assert r.exit_code == 0
    assert r.stdout.count("\n") == 1
    json.loads(r.stdout)


def test_info_verify_list_export(tmp_path):
    built = build_json(tmp_path, "--k", "100", "--method", "random", "--epochs", "2")
    path = built["path"]
    info = run("info", path, "--json")
    assert info.exit_code == 0
    d = json.loads(info.stdout)
    assert d["n_epochs"] == 2 and d["k"] == 100 and d["digest"] == built["digest"]
    assert run("info", path).exit_code == 0

    v = run("verify", path, "--dataset", "digits", "--json")
    assert v.exit_code == 0, v.stderr
    assert json.loads(v.stdout)["fingerprint_ok"] is True
    wrong = run("verify", path, "--dataset", "digits", "--split", "test")
    assert wrong.exit_code == 1 and "fingerprint mismatch" in wrong.stderr

    ls = run("list", tmp_path, "--json")
    assert ls.exit_code == 0 and [row["path"] for row in json.loads(ls.stdout)] == [path]

    e = run("export", path, "--format", "npy", "--json")
    assert e.exit_code == 0, e.stderr
    out = Path(json.loads(e.stdout)["path"])
    s = read_schedule(path)
    np.testing.assert_array_equal(np.load(out / "indices.npy"), s.indices)
    np.testing.assert_array_equal(np.load(out / "batch_offsets.npy"), s.batch_offsets)
    assert json.loads((out / "meta.json").read_text())["digest"] == s.digest

    j = run("export", path, "--format", "jsonl", "-o", tmp_path / "s.jsonl")
    assert j.exit_code == 0, j.stderr
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(lines) == s.n_batches
    assert [x["epoch"] for x in lines] == [0] * 15 + [1] * 15
    np.testing.assert_array_equal(np.concatenate([x["indices"] for x in lines]), s.indices)
    again = run("export", path, "--format", "jsonl", "-o", tmp_path / "s.jsonl")
    assert again.exit_code == 1 and "already exists" in again.stderr


@pytest.mark.parametrize(
    "k, needles",
    [
        ("0", ["k must be an integer >= 1", "got 0"]),
        ("-3", ["got -3"]),
        ("2.5", ["k must be an integer", "'2.5'"]),
        ("ten", ["k must be an integer", "'ten'"]),
        ("5000", ["no larger than the dataset (N=1437)", "k=5000"]),
    ],
)
def test_bad_k(tmp_path, k, needles):
    one_line_error(run("build", "--out-dir", tmp_path, "--k", k, "--method", "random"), *needles)
    assert not any(tmp_path.glob("*.zarr"))


def _nothing_written(out_dir):
    assert not any(Path(out_dir).glob("*.zarr")), sorted(Path(out_dir).iterdir())


def test_unknown_dataset_and_method(tmp_path):
    one_line_error(run("build", "--out-dir", tmp_path, "--dataset", "imagenet"), "imagenet")
    _nothing_written(tmp_path)
    one_line_error(run("build", "--out-dir", tmp_path, "--method", "magic"), "unknown method 'magic'")
    _nothing_written(tmp_path)


def test_missing_dataset_files(tmp_path):
    r = run("build", "--out-dir", tmp_path, "--dataset", "svhn", "--data-dir", tmp_path / "data")
    one_line_error(r, "train_32x32.mat", "--download")
    _nothing_written(tmp_path)


def test_nan_features_and_label_mismatch(tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 4))
    X[7, 1] = np.nan
    X[9, 0] = np.inf
    np.savez(tmp_path / "bad.npz", X=X, y=np.arange(30) % 3)
    r = run("build", "--out-dir", tmp_path, "--dataset", f"npz:{tmp_path / 'bad.npz'}", "--k", "5")
    one_line_error(r, "2 non-finite", "row 7")
    _nothing_written(tmp_path)
    np.savez(tmp_path / "short.npz", X=np.zeros((30, 4)), y=np.arange(29) % 3)
    r = run("build", "--out-dir", tmp_path, "--dataset", f"npz:{tmp_path / 'short.npz'}", "--k", "5")
    one_line_error(r, "labels have length 29 but features have 30 rows")
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--epochs", "2.5"], ["epochs must be an integer", "'2.5'"]),
        (["--epochs", "0"], ["epochs must be an integer >= 1", "got 0"]),
        (["--seed", "abc"], ["seed must be an integer", "'abc'"]),
        (["--degree", "two", "--kernel", "poly"], ["degree must be an integer", "'two'"]),
        (["--pca", "1e2"], ["pca must be an integer", "'1e2'"]),
        (["--coef0", "abc", "--kernel", "poly"], ["coef0 must be a finite number", "'abc'"]),
        (["--coef0", "inf", "--kernel", "poly"], ["coef0 must be a finite number", "'inf'"]),
        (["--mixing-rate", "fast", "--method", "learn2mix"], ["mixing rate must be", "'fast'"]),
        (["--mixing-rate", "1.5", "--method", "learn2mix"], ["mixing rate must be in (0, 1]", "1.5"]),
    ],
)
def test_bad_numeric_build_options(tmp_path, args, needles):
    r = run("build", "--out-dir", tmp_path, "--k", "50", *args)
    one_line_error(r, *needles)
    assert "Usage" not in r.stdout + r.stderr
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--method", "random", "--solver", "lp"], ["--solver applies only to --method mmd", "with --method random"]),
        (["--method", "random", "--pca", "0"], ["--pca applies only to", "--method learn2mix", "--method mmd", "with --method random"]),
        (["--method", "mmd", "--epochs", "3"], ["--epochs applies only to", "with --method mmd", "replays it every epoch"]),
        (["--method", "mmd", "--mixing-rate", "0.3"], ["--mixing-rate applies only to --method learn2mix"]),
        (["--method", "mmd", "--groups", "kmeans:3"], ["--groups applies only to --method learn2mix"]),
        (["--method", "mmd", "--batches-per-epoch", "4"], ["--batches-per-epoch applies only to --method learn2mix"]),
        (["--method", "learn2mix", "--kernel", "poly"], ["--kernel applies only to", "--method mmd", "with --method learn2mix"]),
        (["--method", "learn2mix", "--paper-coefficients"], ["--paper-coefficients applies only to --method mmd"]),
        (["--kernel", "poly", "--bandwidth", "2"], ["--bandwidth applies only to --kernel rbf", "with --kernel poly"]),
        (["--bandwidth", "2", "--coef0", "0.5"], ["--coef0 applies only to --kernel poly", "with --kernel rbf"]),
    ],
)
def test_options_of_another_method_are_refused(tmp_path, args, needles):
    r = run("build", "--out-dir", tmp_path, "--k", "50", *args)
    one_line_error(r, *needles)
    _nothing_written(tmp_path)


def test_default_values_of_other_methods_options_are_accepted(tmp_path):
    """Options spelled out at their defaults shape nothing and are not refused."""
    a = build_json(tmp_path, "--k", "50", "--method", "random", "--mixing-rate", "0.1", "--degree", "3",
                   "--bandwidth", "MEDIAN")
    b = build_json(tmp_path, "--k", "50", "--method", "random", "--solver", "swap")  # mmd's default solver
    c = build_json(tmp_path, "--k", "50", "--method", "random")
    assert a["path"] == b["path"] == c["path"] and b["cache_hit"] and c["cache_hit"]


def test_refusals_say_when_the_method_or_kernel_was_the_default(tmp_path):
    one_line_error(run("build", "--out-dir", tmp_path, "--k", "50", "--epochs", "3"),
                    "got it with --method mmd (the default)")
    one_line_error(run("build", "--out-dir", tmp_path, "--k", "50", "--degree", "4"),
                    "--degree applies only to --kernel poly, got it with --kernel rbf (the default)")
    _nothing_written(tmp_path)


def test_numeric_build_options_given_as_text(tmp_path):
    a = build_json(tmp_path, "--k", "50", "--method", "learn2mix", "--epochs", "2", "--seed", "3",
                   "--mixing-rate", "0.25", "--pca", "8")
    assert a["n_epochs"] == 2
    assert a["params"]["seed"] == 3 and a["params"]["mixing_rate"] == 0.25 and a["params"]["pca"] == 8


def test_bad_plot_seed(tmp_path):
    built = build_json(tmp_path, "--k", "100", "--method", "random")
    r = run("plot", built["path"], "-o", tmp_path / "p.png", "--seed", "x1")
    one_line_error(r, "seed must be an integer", "'x1'")
    assert not (tmp_path / "p.png").exists()


def test_damaged_store_commands(tmp_path):
    built = build_json(tmp_path, "--k", "100", "--method", "random")
    meta = Path(built["path"]) / "zarr.json"
    m = json.loads(meta.read_text())
    m["attributes"]["digest"] = "0" * 64
    meta.write_text(json.dumps(m))
    one_line_error(run("info", built["path"]), "digest mismatch")
    one_line_error(run("verify", built["path"]), "digest mismatch")
    # a damaged cached store is reported, not silently reused; --force rebuilds it
    one_line_error(run("build", "--out-dir", tmp_path, "--k", "100", "--method", "random"), "--force")
    fixed = build_json(tmp_path, "--k", "100", "--method", "random", "--force")
    assert fixed["digest"] == built["digest"]
    m["attributes"]["schedgen_format"] = 7
    meta.write_text(json.dumps(m))
    one_line_error(run("info", built["path"]), "unsupported schedule format 7")


def test_list_skips_nothing_and_reports_broken(tmp_path):
    build_json(tmp_path, "--k", "100", "--method", "random")
    (tmp_path / "junk.zarr").mkdir()
    rows = json.loads(run("list", tmp_path, "--json").stdout)
    assert len(rows) == 2 and "error" in rows[1]
    one_line_error(run("list", tmp_path / "nope"), "not a directory")


@pytest.mark.parametrize(
    "version, needle",
    [
        (7, "unsupported schedule format 7; this schedgen reads format 1"),
        ("1", "unsupported schedule format '1'"),
        (None, "attribute 'schedgen_format' is missing"),
    ],
)
def test_list_reports_other_format(tmp_path, version, needle):
    built = build_json(tmp_path, "--k", "100", "--method", "random")
    meta = Path(built["path"]) / "zarr.json"
    m = json.loads(meta.read_text())
    if version is None:
        del m["attributes"]["schedgen_format"]
    else:
        m["attributes"]["schedgen_format"] = version
    meta.write_text(json.dumps(m))
    r = run("list", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1 and rows[0]["path"] == built["path"]
    assert needle in rows[0]["error"] and "method" not in rows[0]
    human = run("list", tmp_path)
    assert human.exit_code == 0 and f"{built['path']}  ERROR " in human.stdout and needle in human.stdout


def test_progress_bar_shows_count_rate_and_eta_on_stderr(tmp_path):
    # a fixed width: rich drops columns on a narrow terminal
    r = runner.invoke(app, ["build", "--out-dir", str(tmp_path), "--k", "50"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.stderr
    assert "29/29" in r.stderr and "batches/s" in r.stderr and "eta" in r.stderr
    assert "batches/s" not in r.stdout  # stdout carries the result only
    quiet = run("build", "--out-dir", tmp_path / "q", "--k", "50", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


@pytest.mark.parametrize("method, extra", [("mmd", {}), ("mmd", {"solver": "lp"}), ("learn2mix", {"epochs": 3})])
def test_methods_report_progress_up_to_the_batch_count(tmp_path, method, extra):
    from schedgen.build import BuildConfig, build

    calls = []
    r = build(BuildConfig(dataset="digits", k=50, method=method, out_dir=tmp_path, **extra),
              progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert calls and {t for _, t in calls} == {r.n_batches}
    assert done == sorted(done) and done[-1] == r.n_batches


_HELP_ENV = {"COLUMNS": "200"}  # one line per option


@pytest.mark.parametrize("cmd", [[], ["build"], ["info"], ["verify"], ["list"], ["export"], ["plot"]])
def test_help_shows_no_type_placeholders(cmd):
    r = runner.invoke(app, [*cmd, "--help"], env=_HELP_ENV)
    assert r.exit_code == 0, r.stdout
    for placeholder in ("<str>", "<bool>", "<path>", "<int>", "<float>"):
        assert placeholder not in r.stdout, (placeholder, r.stdout)
    assert re.search(r"--help\s+Show this message and exit", r.stdout), r.stdout


def test_build_help_flags_take_no_value_and_numbers_say_so():
    out = runner.invoke(app, ["build", "--help"], env=_HELP_ENV).stdout
    for flag, text in [("--force", "Rebuild even"), ("--paper-coefficients", "Use the paper"), ("--standardize", "Standardise"),
                       ("--download", "Fetch missing"), ("--json", "Print one JSON"), ("-q", "No progress bar")]:
        assert re.search(rf"{flag}\s+{text}", out), (flag, out)  # nothing between a flag and its help
    for opt, metavar in [("--k", "INTEGER"), ("--seed", "INTEGER"), ("--epochs", "INTEGER"), ("--degree", "INTEGER"),
                         ("--pca", "INTEGER"), ("--batches-per-epoch", "INTEGER"), ("--coef0", "FLOAT"),
                         ("--mixing-rate", "FLOAT"), ("--bandwidth", r"SIGMA\|median"), ("--out-dir", "DIR")]:
        assert re.search(rf"{opt}\s+{metavar}\s", out), (opt, out)
    plot = runner.invoke(app, ["plot", "--help"], env=_HELP_ENV).stdout
    assert re.search(r"--force\s+Replace an existing file", plot) and re.search(r"--seed\s+INTEGER\s", plot)
    assert re.search(r"--no-baseline\s+One store: also draw", plot)
    ls = runner.invoke(app, ["list", "--help"], env=_HELP_ENV).stdout
    assert re.search(r"--verify\s+Also read every store", ls)


@pytest.mark.parametrize("k", ["abc", "0", "1.5"])
def test_numeric_options_are_still_checked_by_schedgen_not_typer(tmp_path, k):
    r = run("build", "--out-dir", tmp_path, "--k", k, "--method", "random")
    one_line_error(r, "k must be an integer")
    assert r.exit_code == 1 and "Usage" not in r.stdout + r.stderr


# ----------------------------------------------------------------- store names and list rows (issue 10, item 16)


def test_store_names_carry_the_solver_and_a_kernel_other_than_rbf(tmp_path):
    from schedgen.build import BuildConfig, cache_key
    from schedgen.methods import METHODS
    from schedgen.data import load_dataset

    ds = load_dataset("digits")
    swap = build_json(tmp_path, "--k", "50")
    greedy_poly = build_json(tmp_path, "--k", "50", "--solver", "greedy", "--kernel", "poly")
    lp = build_json(tmp_path, "--k", "50", "--solver", "lp")
    for built, solver, kernel, name in [(swap, None, "rbf", "mmd-swap"), (greedy_poly, "greedy", "poly", "mmd-greedy-poly"),
                                        (lp, "lp", "rbf", "mmd-lp")]:
        key = cache_key(ds.fingerprint, "mmd", 50, METHODS["mmd"].params(BuildConfig(solver=solver, kernel=kernel), ds), "train")
        assert Path(built["path"]).name == f"digits-train-{name}-k50-{key[:16]}.zarr"  # the key part is the cache key
    assert Path(build_json(tmp_path, "--k", "50", "--method", "random")["path"]).name.startswith("digits-train-random-k50-")

    rows = json.loads(run("list", tmp_path, "--json").stdout)
    by_path = {r["path"]: r for r in rows}
    assert (by_path[swap["path"]]["solver"], by_path[swap["path"]]["kernel"]) == ("swap", "rbf")
    assert (by_path[greedy_poly["path"]]["solver"], by_path[greedy_poly["path"]]["kernel"]) == ("greedy", "poly")
    assert [r["solver"] for r in rows if r["method"] == "random"] == [None]
    human = run("list", tmp_path).stdout.splitlines()
    assert f"{swap['path']}  mmd swap k=50 29 batches digits (train)" in human
    assert f"{lp['path']}  mmd lp k=50 29 batches digits (train)" in human
    assert f"{greedy_poly['path']}  mmd greedy kernel=poly k=50 29 batches digits (train)" in human


# ----------------------------------------------------------------- format 2 / format 1 in verify and info


def test_verify_and_info_say_the_format(tmp_path):
    from toys import toy_schedule, write_format1

    from schedgen.store import FORMAT1_NOTE, write_schedule

    two = write_schedule(toy_schedule(), tmp_path / "two.zarr")
    one = write_format1(toy_schedule(), tmp_path / "one.zarr")
    digest = read_schedule(two).digest

    v = run("verify", two)
    assert v.exit_code == 0 and v.stdout == f"ok: {two} digest {digest[:16]} and attributes match\n"
    d = json.loads(run("verify", two, "--json").stdout)
    assert (d["format"], d["attributes_ok"], "note" in d) == (2, True, False)

    v = run("verify", one)
    assert v.exit_code == 0 and v.stdout == f"ok: {one} digest {digest[:16]} matches\n  note: {FORMAT1_NOTE}\n"
    d = json.loads(run("verify", one, "--json").stdout)
    assert (d["format"], d["attributes_ok"], d["note"]) == (1, False, FORMAT1_NOTE)

    assert "  format      2" in run("info", two).stdout.splitlines()
    assert "  format      1" in run("info", one).stdout.splitlines()
    assert json.loads(run("info", two, "--json").stdout)["format"] == 2
    assert json.loads(run("info", one, "--json").stdout)["format"] == 1


def test_verify_with_the_dataset_names_all_three_checks(tmp_path):
    built = build_json(tmp_path, "--k", "100", "--method", "random")
    v = run("verify", built["path"], "--dataset", "digits")
    assert v.exit_code == 0
    assert v.stdout == f"ok: {built['path']} digest {built['digest'][:16]} and attributes and dataset fingerprint match\n"


@pytest.mark.parametrize(
    "options, needle",
    [
        (dict(kernel="foo"), "kernel must be one of 'rbf', 'poly', got 'foo'"),
        (dict(device="bogus", method="random"), "device must be one of 'auto', 'cpu', 'cuda', got 'bogus'"),
        (dict(split="val"), "split must be one of 'train', 'test', got 'val'"),
        (dict(standardize="no"), "standardize must be True or False, got 'no'"),
        (dict(k="50"), "k must be an integer, got '50'"),
        (dict(seed=2**32), "seed must be an integer >= 0 and <= 4294967295, got 4294967296"),
    ],
)
def test_build_config_is_checked_before_any_work(tmp_path, options, needle):
    """Every option is checked when the BuildConfig is made: an unknown kernel or device
    used to be found only after the data was loaded and the output folder, lock and
    caches were made (and --device on a random build was never checked)."""
    from schedgen.build import BuildConfig
    from schedgen.errors import ParameterError

    with pytest.raises(ParameterError, match=re.escape(needle)):
        BuildConfig(out_dir=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_cli_unknown_kernel_writes_nothing(tmp_path):
    r = runner.invoke(app, ["build", "--kernel", "foo", "--out-dir", str(tmp_path / "out")])
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: kernel must be one of 'rbf', 'poly', got 'foo'"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["random", "learn2mix", "submodular"])
def test_approx_refused_for_methods_without_it(tmp_path, method):
    """--approx nystrom:M is dpp's and mmd's (issue 15): any other method refuses it
    with one line before any work, instead of building an exact schedule under its name."""
    r = runner.invoke(app, ["build", "--method", method, "--approx", "nystrom:100", "--out-dir", str(tmp_path / "o")])
    assert r.exit_code == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err == f"error: --approx applies only to --method dpp or --method mmd, got it with --method {method}"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text", ["nystrom", "nystrom:0", "nystrom:-3", "nystrom:1.5", "rff:100", ""])
def test_bad_approx_text_refused_before_any_work(tmp_path, text):
    r = runner.invoke(app, ["build", "--method", "dpp", "--approx", text, "--out-dir", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert r.stderr.strip() == (f"error: approx must be 'nystrom:M' with an integer M >= 1 (the number of "
                                f"landmarks), got {text!r}")
    assert not (tmp_path / "o").exists()


def test_approx_is_canonical_in_the_config():
    from schedgen.build import BuildConfig

    assert BuildConfig(method="dpp", approx=" Nystrom:0500 ").approx == "nystrom:500"
    assert BuildConfig(method="dpp").approx is None


def test_push_and_pull_are_commands_with_one_line_errors(tmp_path):
    """The registry commands (tests/test_registry.py covers them against S3 and http)."""
    top = run("--help")
    assert "push" in top.stdout and "pull" in top.stdout
    one_line_error(run("push", tmp_path / "nothing.zarr", tmp_path / "reg"), "no schedule store at")
    one_line_error(run("pull", tmp_path / "reg" / "x.zarr", tmp_path), "no registry manifest at")
    one_line_error(run("push", tmp_path, "http://127.0.0.1:9/r"), "http(s) registries are read-only")


@pytest.mark.parametrize("cmd", ["push", "pull"])
def test_registry_help_shows_no_type_placeholders(cmd):
    test_help_shows_no_type_placeholders([cmd])
