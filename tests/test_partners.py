"""Partner batches (issue 12, first bullet): ``schedgen build --pair KIND --partner-size M``
adds ``partner_indices`` to the store of any method. The oracles below are plain loops
written from the documented rules (docs/FORMAT.md, "Partner batches"), drawing from
NumPy with the streams' literal tags, not through schedgen's code."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from schedgen.build import BuildConfig, build, cache_key, memory_needs, store_name
from schedgen.cli import app
from schedgen.data import load_dataset
from schedgen.errors import DataError, ParameterError, StoreError
from schedgen.methods import METHODS
from schedgen.store import read_schedule
from toys import one_line_error

runner = CliRunner()
PAIR_TAG, PAIR_CLASS_TAG = 0x70616972, 0x70636C73  # ASCII "pair", "pcls" (docs/FORMAT.md)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _build(out, **kw):
    return build(BuildConfig(dataset="digits", k=kw.pop("k", 50), out_dir=str(out), **kw))


def _batches(s):
    return [s.indices[s.batch_offsets[b]: s.batch_offsets[b + 1]] for b in range(s.n_batches)]


# ------------------------------------------------------------------------ oracles (plain loops)


def oracle_random(n_batches, n, m, seed):
    return [list(np.random.default_rng([seed, PAIR_TAG, b]).choice(n, m, replace=False)) for b in range(n_batches)]


def scaled_counts(c1: dict, m: int) -> dict:
    """Largest remainder of c_j * m / |S1|, ties to the smaller class, in integers."""
    n1 = sum(c1.values())
    out = {j: c * m // n1 for j, c in c1.items()}
    left = m - sum(out.values())
    for j in sorted(c1, key=lambda j: (-(c1[j] * m % n1), j))[:left]:
        out[j] += 1
    return out


def oracle_class_matched(s, y, m, seed):
    rows = []
    for e in range(s.n_epochs):
        orders, pointer = {}, {}
        for b in range(s.epoch_offsets[e], s.epoch_offsets[e + 1]):
            c1 = Counter(int(y[i]) for i in s.indices[s.batch_offsets[b]: s.batch_offsets[b + 1]])
            row = []
            for j, c in sorted(scaled_counts(c1, m).items()):
                if j not in orders:
                    members = [i for i in range(len(y)) if y[i] == j]
                    perm = np.random.default_rng([seed, PAIR_CLASS_TAG, e, j]).permutation(len(members))
                    orders[j], pointer[j] = [members[p] for p in perm], 0
                for _ in range(c):
                    row.append(orders[j][pointer[j]])
                    pointer[j] = (pointer[j] + 1) % len(orders[j])
            rows.append(row)
    return rows


def oracle_shifted(s, m, shift):
    rows = []
    for e in range(s.n_epochs):
        b0, b1 = int(s.epoch_offsets[e]), int(s.epoch_offsets[e + 1])
        seq = list(s.indices[s.batch_offsets[b0]: s.batch_offsets[b1]])
        for b in range(b0, b1):
            start = int(s.batch_offsets[b0 + (b - b0 + shift) % (b1 - b0)] - s.batch_offsets[b0])
            rows.append([seq[(start + i) % len(seq)] for i in range(m)])
    return rows


# ------------------------------------------------------------------------ reproduction


CASES = [(method, extra, pair, m)
         for method, extra in [("random", dict(epochs=2)), ("learn2mix", dict(epochs=2)), ("mmd", dict(solver="greedy"))]
         for pair, m in [("class-matched", None), ("class-matched", 23), ("shifted", None)]]
CASES += [("random", dict(epochs=2), "random", None), ("random", dict(epochs=2), "shifted:3", 70)]


@pytest.mark.parametrize("method,extra,pair,m", CASES)
def test_partners_reproduce_from_the_seed_and_match_the_oracle(tmp_path, digits, method, extra, pair, m):
    r1 = _build(tmp_path / "a", method=method, pair=pair, partner_size=m, seed=7, **extra)
    r2 = _build(tmp_path / "b", method=method, pair=pair, partner_size=m, seed=7, **extra)
    s1, s2 = read_schedule(r1.path), read_schedule(r2.path)
    p = s1.batch_arrays["partner_indices"]
    size = m or 50
    assert p.dtype == np.int64 and p.shape == (s1.n_batches, size)
    assert p.tobytes() == s2.batch_arrays["partner_indices"].tobytes()
    assert ((0 <= p) & (p < digits.n_samples)).all()
    assert s1.params["pair"] == ("shifted:1" if pair == "shifted" else pair) and s1.params["partner_size"] == size
    if pair == "random":
        expected = oracle_random(s1.n_batches, digits.n_samples, size, 7)
        assert all(len(set(row)) == size for row in p.tolist())
    elif pair == "class-matched":
        expected = oracle_class_matched(s1, digits.y, size, 7)
    else:
        expected = oracle_shifted(s1, size, int(s1.params["pair"].split(":")[1]))
    assert p.tolist() == expected


def test_class_matched_histograms_equal_s1s(tmp_path, digits):
    # N = 1437, k = 50: 28 full batches and a short last one of 37
    s = read_schedule(_build(tmp_path, method="random", epochs=2, pair="class-matched").path)
    p, y = s.batch_arrays["partner_indices"], digits.y
    short = 0
    for b, s1 in enumerate(_batches(s)):
        h1, h2 = Counter(y[s1].tolist()), Counter(y[p[b]].tolist())
        if len(s1) == 50:
            assert h2 == h1, b
        else:  # scaled 37 -> 50: every count within one of c_j * 50 / 37, and no class of S1 missing
            short += 1
            assert sum(h2.values()) == 50 and set(h2) == set(h1)
            assert all(abs(h2[j] - h1[j] * 50 / len(s1)) < 1 for j in h1), (h1, h2)
            assert h2 == Counter(scaled_counts(dict(h1), 50))
    assert short == 2
    # M = |S1| of the short batch: its histogram exactly, the full batches scaled down
    s = read_schedule(_build(tmp_path, method="random", pair="class-matched", partner_size=37).path)
    last = _batches(s)[-1]
    assert len(last) == 37 and Counter(y[s.batch_arrays["partner_indices"][-1]].tolist()) == Counter(y[last].tolist())


def test_scaled_counts_tie_break_by_class_id():
    # 3 classes of 1 each scaled to 2: remainders all equal, the two smaller class ids get the units
    assert scaled_counts({4: 1, 2: 1, 9: 1}, 2) == {2: 1, 4: 1, 9: 0}
    from schedgen.methods.partners import _largest_remainder

    assert _largest_remainder(np.array([1, 1, 1]), 2).tolist() == [1, 1, 0]
    assert _largest_remainder(np.array([3, 1]), 2).tolist() == [2, 0]  # 1.5 / 0.5: the larger remainder is tied: id 0
    assert _largest_remainder(np.array([5, 3, 2]), 10).tolist() == [5, 3, 2]


def test_shifted_is_the_rotation_of_the_epochs_batches(tmp_path, digits):
    # k = 479 divides N = 1437: 3 full batches per epoch, so row b is exactly batch b + S of its epoch
    s = read_schedule(_build(tmp_path, method="random", epochs=2, k=479, pair="shifted:2").path)
    p, batches = s.batch_arrays["partner_indices"], _batches(s)
    for e in range(2):
        for i in range(3):
            assert p[3 * e + i].tolist() == batches[3 * e + (i + 2) % 3].tolist()
    # a short last batch: the partner runs on into the epoch's start
    s = read_schedule(_build(tmp_path, method="random", pair="shifted").path)
    p, batches = s.batch_arrays["partner_indices"], _batches(s)
    assert p[-2].tolist() == batches[-1].tolist() + batches[0][:13].tolist()
    assert p[-1].tolist() == batches[0].tolist()


# ------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("kw,message", [
    (dict(partner_size=5), "--partner-size applies only with --pair (random, class-matched or shifted:S), got --partner-size 5 without --pair"),
    (dict(pair="random", partner_size=0), "partner size must be an integer >= 1, got 0"),
    (dict(pair="random", partner_size=True), "partner size must be an integer, got True"),
    (dict(pair="zigzag"), "pair must be 'random', 'class-matched', 'shifted' or 'shifted:S' (S an integer >= 1), got 'zigzag'"),
    (dict(pair="shifted:0"), "pair must be 'random', 'class-matched', 'shifted' or 'shifted:S' (S an integer >= 1), got 'shifted:0'"),
    (dict(pair="shifted:x"), "got 'shifted:x'"),
    (dict(pair=3), "got 3"),
])
def test_bad_options_are_refused_on_construction(kw, message):
    with pytest.raises(ParameterError) as exc:
        BuildConfig(**kw)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_text_partner_size_is_parsed_and_checked():
    assert BuildConfig.from_text(pair="shifted", partner_size=" 7 ").partner_size == 7
    assert BuildConfig(pair=" shifted ").pair == "shifted:1"
    with pytest.raises(ParameterError, match="partner size must be an integer, got '7x'"):
        BuildConfig.from_text(pair="random", partner_size="7x")


def _singleton_class_npz(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    y[0] = 7  # class 7 has one sample
    np.savez(tmp_path / "one.npz", X=rng.random((30, 4)), y=y)
    return f"npz:{tmp_path / 'one.npz'}"


@pytest.mark.parametrize("args,needles", [
    (["--partner-size", "5"], ["--partner-size applies only with --pair", "got --partner-size 5 without --pair"]),
    (["--pair", "random", "--partner-size", "0"], ["partner size must be an integer >= 1, got 0"]),
    (["--pair", "random", "--partner-size", "1438"],
     ["partner size must be a positive integer no larger than the dataset (N=1437), got partner size=1438"]),
    (["--pair", "zigzag"], ["pair must be 'random', 'class-matched', 'shifted' or 'shifted:S'", "got 'zigzag'"]),
    (["--pair", "shifted:0"], ["got 'shifted:0'"]),
    ("singleton", ["class-matched partners need at least 2 samples of every class in a batch",
                   "got class 7 with 1 sample in the dataset"]),
])
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch, args, needles):
    if args == "singleton":
        args = ["--dataset", _singleton_class_npz(tmp_path), "--k", "5", "--pair", "class-matched"]
    else:
        from schedgen.methods import METHODS as methods

        def boom(*a, **kw):
            raise AssertionError("the method ran before the refusal")

        monkeypatch.setattr(methods["random"], "run", boom)
    out = tmp_path / "out"
    r = run("build", "--method", "random", "--out-dir", out, *args)
    one_line_error(r, *needles)
    assert not out.exists() or not any(p.suffix == ".zarr" for p in out.iterdir())


def test_class_matched_refusal_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="got class 7 with 1 sample"):
        build(BuildConfig(dataset=_singleton_class_npz(tmp_path), k=5, method="random", pair="class-matched",
                          out_dir=str(tmp_path / "o")))
    # the other kinds do not care about classes
    assert build(BuildConfig(dataset=_singleton_class_npz(tmp_path), k=5, method="random", pair="shifted",
                             out_dir=str(tmp_path / "o"))).n_batches == 6


# ------------------------------------------------------------------------ integrity, cache key, info


def test_a_tampered_partner_array_is_refused(tmp_path):
    path = _build(tmp_path, method="random", pair="random").path
    g = zarr.open_group(str(path), mode="r+")
    a = g["partner_indices"]
    a[0, 0] = (int(a[0, 0]) + 1) % 1437
    with pytest.raises(StoreError, match="partner_indices"):
        read_schedule(path)
    r = run("verify", path)
    one_line_error(r, "partner_indices")
    r = run("build", "--method", "random", "--k", "50", "--pair", "random", "--out-dir", tmp_path)
    one_line_error(r, "damaged")  # not served as a cache hit


def test_the_cache_key_moves_with_the_pair_options_only(tmp_path, digits):
    plain = _build(tmp_path, method="random")
    # the name a build without --pair had before partners existed: the method's params alone
    key = cache_key(digits.fingerprint, "random", 50, METHODS["random"].params(BuildConfig(method="random"), digits), "train")
    assert plain.path.name == store_name("digits", "train", "random", 50, {}, key) == f"digits-train-random-k50-{key[:16]}.zarr"
    assert "pair" not in plain.params and "partner_size" not in plain.params
    paths = {plain.path}
    for kw in [dict(pair="random"), dict(pair="random", partner_size=49), dict(pair="class-matched"),
               dict(pair="shifted"), dict(pair="shifted:2")]:
        r = _build(tmp_path, method="random", **kw)
        assert r.path not in paths and not r.cache_hit
        assert r.path.name.startswith(f"digits-train-random-pair-{kw['pair'].split(':')[0]}-k50-")
        paths.add(r.path)
    # the spelled-out defaults are the same key: shifted == shifted:1, M == k
    assert _build(tmp_path, method="random", pair="shifted:1", partner_size=50).cache_hit
    assert _build(tmp_path, method="random", pair="random", partner_size=50).cache_hit


def test_info_shows_the_pair_params_and_the_array(tmp_path):
    path = _build(tmp_path, method="random", pair="shifted:2", partner_size=10).path
    r = run("info", path)
    assert r.exit_code == 0
    assert '"pair": "shifted:2", "partner_size": 10' in r.stdout
    assert "partner_indices" in r.stdout
    d = json.loads(run("info", path, "--json").stdout)
    assert d["params"]["pair"] == "shifted:2" and d["params"]["partner_size"] == 10


def test_memory_needs_count_the_partner_array(digits):
    plain = memory_needs(BuildConfig(method="random", epochs=3), digits, 50)
    paired = memory_needs(BuildConfig(method="random", epochs=3, pair="random", partner_size=20), digits, 50)
    extra = [n for n in paired if n.what == "the partner batches"]
    assert len(paired) == len(plain) + 1 and extra[0].n_bytes == 3 * 29 * 20 * 8


@pytest.mark.parametrize("bad", ["out of range", "negative", "1-D", "float"])
def test_reader_refuses_partner_indices_a_trainer_cannot_use(tmp_path, bad):
    """A store whose partner_indices are digest-consistent (written by another tool, or
    re-signed) but outside [0, n_samples), or not 2-D int64, is refused on read: a trainer
    indexes its dataset with them, as with ``indices``."""
    from toys import toy_schedule

    from schedgen.errors import StoreError
    from schedgen.store import read_schedule, write_schedule

    s = toy_schedule(extras=False)
    P = np.zeros((s.n_batches, 4), dtype=np.int64)
    if bad == "out of range":
        P[1, 2] = s.n_samples
    elif bad == "negative":
        P[0, 0] = -1
    elif bad == "1-D":
        P = P[:, 0].copy()
    else:
        P = P.astype(np.float64)
    s = dataclasses.replace(s, batch_arrays={"partner_indices": P})
    path = write_schedule(s, tmp_path / "p.zarr")
    with pytest.raises(StoreError, match="partner_indices"):
        read_schedule(path)


def test_the_partners_revision_is_in_the_key_of_paired_stores_only(monkeypatch):
    """Partner rules that change (a new revision) must not be served from an old store,
    while stores without partners keep their keys."""
    from schedgen import revisions
    from schedgen.build import cache_key

    plain = cache_key("f" * 64, "random", 50, {"seed": 0, "epochs": 1}, "train")
    paired = cache_key("f" * 64, "random", 50, {"seed": 0, "epochs": 1, "pair": "random", "partner_size": 50}, "train")
    monkeypatch.setattr(revisions, "PARTNERS", revisions.PARTNERS + 1)
    assert cache_key("f" * 64, "random", 50, {"seed": 0, "epochs": 1}, "train") == plain
    assert cache_key("f" * 64, "random", 50, {"seed": 0, "epochs": 1, "pair": "random", "partner_size": 50},
                     "train") != paired
