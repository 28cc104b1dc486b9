"""A cache hit is cheap (issue 10, item 19): it imports neither scikit-learn nor SciPy
nor HiGHS, and for digits it does not even load the dataset: a summary of it
(fingerprint, N, D), keyed by the bundled file's path, size and mtime and the data
revision (``schedgen.revisions.DATA``), gives the store's key. A stale or damaged summary only costs a load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import schedgen.build as build_mod
import schedgen._summary as summary_mod
from schedgen.build import BuildConfig, build, summary_dir

HEAVY = ("sklearn", "scipy", "highspy", "matplotlib", "torch")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def loads(monkeypatch):
    """Count the datasets build() loads."""
    calls = []
    real = build_mod.load_dataset

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(build_mod, "load_dataset", counting)
    return calls


HIT = """
import json, sys
from schedgen.build import BuildConfig, build
r = build(BuildConfig(**json.loads(sys.argv[1])))
print(json.dumps({"cache_hit": r.cache_hit, "digest": r.digest,
                  "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(solver="lp"), dict(method="learn2mix", epochs=2), dict(method="random", epochs=3)],
    ids=["mmd-swap", "mmd-lp", "learn2mix", "random"],
)
def test_a_cache_hit_imports_nothing_heavy(tmp_path, cache_home, options):
    cfg = dict(dataset="digits", k=50, out_dir=str(tmp_path / "out"), **options)
    first = build(BuildConfig(**cfg))
    r = subprocess.run([sys.executable, "-c", HIT, json.dumps(cfg)], capture_output=True, text=True,
                       env={**os.environ, "XDG_CACHE_HOME": str(cache_home)}, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got == {"cache_hit": True, "digest": first.digest, "heavy": []}


def test_the_summary_spares_the_load_and_follows_the_file(tmp_path, cache_home, loads, monkeypatch):
    source = tmp_path / "digits.csv.gz"
    source.write_bytes(b"stand-in for the bundled file")
    monkeypatch.setattr(summary_mod, "_dataset_sources", lambda dataset: [source])
    cfg = BuildConfig(dataset="digits", k=100, method="random", out_dir=tmp_path / "out")
    first = build(cfg)
    assert len(loads) == 1 and not first.cache_hit
    (summary,) = summary_dir().glob("digits-train-*.json")
    assert json.loads(summary.read_text())["n_samples"] == 1437
    hit = build(cfg)
    assert hit.cache_hit and hit.digest == first.digest and len(loads) == 1  # not loaded
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "a new scikit-learn"
    again = build(cfg)
    assert again.cache_hit and len(loads) == 2  # loaded: the summary no longer applies
    (fresh,) = summary_dir().glob("digits-train-*.json")  # the old one was replaced
    assert fresh != summary
    assert build(cfg).cache_hit and len(loads) == 2


def test_a_damaged_or_stale_summary_costs_only_a_load(tmp_path, cache_home, loads):
    cfg = BuildConfig(dataset="digits", k=100, method="random", out_dir=tmp_path / "out")
    first = build(cfg)
    (summary,) = summary_dir().glob("digits-train-*.json")
    summary.write_text("{not json")
    assert build(cfg).digest == first.digest and len(loads) == 2
    d = json.loads(summary.read_text())  # rewritten whole
    summary.write_text(json.dumps({**d, "fingerprint": "0" * 64}))  # as if the data had changed
    again = build(cfg)
    assert again.cache_hit and again.path == first.path and len(loads) == 3


def test_force_and_other_splits_load_the_dataset(tmp_path, cache_home, loads):
    cfg = BuildConfig(dataset="digits", k=100, method="random", out_dir=tmp_path / "out")
    build(cfg)
    forced = build(BuildConfig(**{**cfg.__dict__, "force": True}))
    assert not forced.cache_hit and len(loads) == 2
    test = build(BuildConfig(**{**cfg.__dict__, "split": "test"}))
    assert not test.cache_hit and test.path.name.startswith("digits-test-random-k100-") and len(loads) == 3
    assert build(BuildConfig(**{**cfg.__dict__, "split": "test"})).cache_hit and len(loads) == 3


def test_errors_are_those_of_a_load(tmp_path, cache_home):
    """With a summary, bad options still get the errors they got without one."""
    cfg = BuildConfig(dataset="digits", k=100, method="random", out_dir=tmp_path / "out")
    build(cfg)
    with pytest.raises(build_mod.ParameterError, match=r"no larger than the dataset \(N=1437\), got k=5000"):
        build(BuildConfig(**{**cfg.__dict__, "k": 5000}))


def test_default_solver_matches_the_solvers_module():
    from schedgen.methods import solvers

    from schedgen.methods import mmd as mmd_method

    assert mmd_method.DEFAULT_SOLVER == solvers.DEFAULT_SOLVER
    assert mmd_method.BUILTIN_SOLVERS == set(solvers.SOLVERS)


def test_unknown_solver_is_refused_before_any_file(tmp_path):
    with pytest.raises(build_mod.ParameterError, match=r"^unknown solver 'x/y'; expected one of greedy, lp, swap$"):
        build(BuildConfig(dataset="digits", k=50, solver="x/y", out_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
