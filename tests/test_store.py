"""Schedule format v2 (and reading v1): round trip, digests, atomic writes, and rejection
of damaged or edited stores."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedgen.errors import StoreError
from toys import toy_schedule as random_schedule
from toys import write_format1

from schedgen.store import (
    FORMAT1_NOTE,
    FORMAT_VERSION,
    Schedule,
    attributes_digest,
    canonical_json,
    read_schedule,
    schedule_digest,
    write_schedule,
)


def test_round_trip(tmp_path):
    s = random_schedule()
    p = write_schedule(s, tmp_path / "s.zarr")
    r = read_schedule(p)
    np.testing.assert_array_equal(r.indices, s.indices)
    np.testing.assert_array_equal(r.batch_offsets, s.batch_offsets)
    np.testing.assert_array_equal(r.epoch_offsets, s.epoch_offsets)
    np.testing.assert_array_equal(r.batch_arrays["batch_mmd2"], s.batch_arrays["batch_mmd2"])
    np.testing.assert_array_equal(r.epoch_arrays["class_proportions"], s.epoch_arrays["class_proportions"])
    assert (r.method, r.params, r.dataset, r.k) == (s.method, s.params, s.dataset, s.k)
    assert r.n_batches == 22 and r.n_epochs == 2 and r.digest == s.digest
    assert r.indices.dtype == np.int64 and r.batch_offsets.dtype == np.int64


def test_attributes_follow_the_documented_format(tmp_path):
    s = random_schedule()
    p = write_schedule(s, tmp_path / "s.zarr")
    meta = json.loads((p / "zarr.json").read_text())
    a = meta["attributes"]
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    assert a["schedgen_format"] == FORMAT_VERSION == 2
    for key in ("method", "params", "dataset", "k", "n_batches", "n_epochs", "digest", "schedgen_version",
                "attributes_digest"):
        assert key in a
    assert set(a["dataset"]) >= {"name", "split", "n_samples", "n_classes", "fingerprint"}
    # the digest as documented, recomputed independently
    h = hashlib.sha256(s.indices.astype("<i8").tobytes() + s.batch_offsets.astype("<i8").tobytes()).hexdigest()
    assert a["digest"] == h == schedule_digest(s.indices, s.batch_offsets)
    # the attributes digest as documented: sha256 over the canonical JSON of all the others
    rest = {key: v for key, v in a.items() if key != "attributes_digest"}
    text = _documented_canonical(rest)
    assert text.startswith('{"array_digests":{"batch_mmd2":"') and " " not in text
    assert a["attributes_digest"] == hashlib.sha256(text.encode("ascii")).hexdigest() == attributes_digest(a)


def test_digest_is_sensitive_to_order_and_cuts():
    s = random_schedule(extras=False)
    swapped = s.indices.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert schedule_digest(swapped, s.batch_offsets) != s.digest
    cuts = s.batch_offsets.copy()
    cuts[1] += 1
    assert schedule_digest(s.indices, cuts) != s.digest


def test_same_inputs_same_bytes(tmp_path):
    s = random_schedule()
    a = write_schedule(s, tmp_path / "a.zarr")
    b = write_schedule(s, tmp_path / "b.zarr")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 50), epochs=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_round_trip_property(tmp_path_factory, n, k, epochs, seed):
    k = min(k, n)
    s = random_schedule(n=n, k=k, epochs=epochs, seed=seed, extras=False)
    p = write_schedule(s, tmp_path_factory.mktemp("rt") / "s.zarr")
    r = read_schedule(p)
    assert r.digest == s.digest
    for e in range(epochs):
        got = np.concatenate([r.batch(b) for b in r.epoch_batches(e)])
        np.testing.assert_array_equal(np.sort(got), np.arange(n))


def test_refuses_to_overwrite_without_flag(tmp_path):
    s = random_schedule()
    p = write_schedule(s, tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists"):
        write_schedule(s, p)
    s2 = random_schedule(seed=1)
    write_schedule(s2, p, overwrite=True)
    assert read_schedule(p).digest == s2.digest
    assert [q.name for q in tmp_path.iterdir()] == ["s.zarr"]  # no temporary left behind


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import schedgen.store._write as _write

    def boom(schedule, path, **kw):
        (Path(path) / "zarr.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(path) / "zarr.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_write, "_write_group", boom)
    with pytest.raises(StoreError, match="No space left on device"):
        write_schedule(random_schedule(), tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_store(tmp_path, monkeypatch):
    import schedgen.store._write as _write

    s = random_schedule()
    p = write_schedule(s, tmp_path / "s.zarr")

    def boom(schedule, path, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_write, "_write_group", boom)
    with pytest.raises(StoreError):
        write_schedule(random_schedule(seed=5), p, overwrite=True)
    assert read_schedule(p).digest == s.digest
    assert [q.name for q in tmp_path.iterdir()] == ["s.zarr"]


def test_overwrite_swaps_atomically(tmp_path, monkeypatch):
    """Replacing a store never leaves its path empty: the new store and the old one are
    exchanged in one step (renameat2), so the final path is never the source of a rename."""
    if not sys.platform.startswith("linux"):
        pytest.skip("atomic exchange is Linux-only")
    p = write_schedule(random_schedule(), tmp_path / "s.zarr")
    moved_away = []
    real = os.replace

    def spy(src, dst, *a, **kw):
        if Path(src) == p:
            moved_away.append(dst)
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", spy)
    s2 = random_schedule(seed=7)
    write_schedule(s2, p, overwrite=True)
    assert moved_away == []
    assert read_schedule(p).digest == s2.digest
    assert [q.name for q in tmp_path.iterdir()] == ["s.zarr"]


def test_overwrite_without_exchange_and_a_crash_between_the_renames(tmp_path, monkeypatch):
    """Where no atomic exchange exists, the old store is moved aside first; a crash right
    then leaves it there, and a reader names it instead of only saying 'missing'."""
    import schedgen.store._fs as _fs

    p = write_schedule(random_schedule(), tmp_path / "s.zarr")
    monkeypatch.setattr(_fs, "_exchange", lambda a, b: False)
    s2 = random_schedule(seed=7)
    write_schedule(s2, p, overwrite=True)  # the fallback still works
    assert read_schedule(p).digest == s2.digest
    assert [q.name for q in tmp_path.iterdir()] == ["s.zarr"]

    class Crash(BaseException):
        pass

    real = os.replace

    def crash_on_second(src, dst, *a, **kw):
        if Path(dst) == p:
            raise Crash  # the process dies after moving the old store aside
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(Crash):
        write_schedule(random_schedule(seed=8), p, overwrite=True)
    aside = list(tmp_path.glob(".s.zarr.old-*"))
    assert len(aside) == 1 and not p.exists()
    with pytest.raises(StoreError, match=r"a replacement of it was interrupted; its previous version is at .*\.s\.zarr\.old-"):
        read_schedule(p)
    assert read_schedule(aside[0]).digest == s2.digest


_STAGED_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    import schedgen.store as store
    import schedgen.store._write as _write
    sys.path.insert(0, {tests!r})
    from test_store import random_schedule
    orig = _write._write_group

    def stage(i):  # say where the write is, then wait to be killed (or let go)
        print(f"stage {{i}}", flush=True)
        sys.stdin.readline()

    def staged(schedule, path, **kw):
        import zarr
        g = zarr.open_group(str(path), mode="w")
        for i, name in enumerate(("a", "b", "c")):
            g.create_array(name, data=np.arange(1000))
            stage(i)
        orig(schedule, path, **kw)
        stage(3)  # the whole store written, not yet renamed into place
    _write._write_group = staged
    store.write_schedule(random_schedule(n=20000, k=7), {final!r})
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("at", [0, 2, 3])
def test_killed_writer_leaves_no_store_under_the_final_name(tmp_path, at):
    final = tmp_path / "s.zarr"
    code = _STAGED_WRITER.format(tests=str(Path(__file__).parent), final=str(final))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for i in range(at):
        assert proc.stdout.readline().strip() == f"stage {i}"
        proc.stdin.write("\n")
        proc.stdin.flush()
    assert proc.stdout.readline().strip() == f"stage {at}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    assert not final.exists()
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".s.zarr.tmp-")] == []
    assert [p for p in tmp_path.iterdir()]  # it did die mid-write: its temporary is there


# ----------------------------------------------------------------- damaged stores


@pytest.fixture
def store_path(tmp_path):
    return write_schedule(random_schedule(), tmp_path / "s.zarr")


def _set_attr(path, *, resign=True, **changes):
    """Edit attributes; ``resign`` recomputes the attributes digest (as anyone can), so
    that the checks behind it, not the digest, must catch the edit."""
    meta_path = Path(path) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"].update(changes)
    if resign and "attributes_digest" in meta["attributes"]:
        meta["attributes"]["attributes_digest"] = attributes_digest(meta["attributes"])
    meta_path.write_text(json.dumps(meta))


def test_missing_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        read_schedule(tmp_path / "nope.zarr")


def test_not_a_store(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="not a schedule store"):
        read_schedule(tmp_path / "d")


def test_other_format_version(store_path):
    _set_attr(store_path, schedgen_format=3)
    with pytest.raises(StoreError, match="unsupported schedule format 3; this schedgen reads format 1 or 2$"):
        read_schedule(store_path)


def test_not_schedgen(store_path):
    meta_path = store_path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["schedgen_format"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schedgen_format"):
        read_schedule(store_path)


def test_tampered_digest(store_path):
    _set_attr(store_path, digest="0" * 64)  # attributes re-signed: the arrays' digest must object
    with pytest.raises(StoreError, match=re.escape(f"{store_path}: digest mismatch (stored 0000000000000000...")):
        read_schedule(store_path)


def test_missing_chunk_reads_as_tampered(store_path):
    chunk = next((store_path / "indices" / "c").rglob("*"))
    chunk.unlink()  # zarr would silently read fill values; the digest must catch it
    with pytest.raises(StoreError):
        read_schedule(store_path)


def test_flipped_byte_in_chunk(store_path):
    chunk = next(p for p in (store_path / "indices" / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        read_schedule(store_path)


def test_truncated_chunk(store_path):
    chunk = next(p for p in (store_path / "batch_offsets" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:5])
    with pytest.raises(StoreError):
        read_schedule(store_path)


def test_tampered_optional_array(store_path):
    import zarr

    g = zarr.open_group(str(store_path), mode="r+")
    g["batch_mmd2"][0] = 123.0
    with pytest.raises(StoreError, match="batch_mmd2"):
        read_schedule(store_path)


def test_missing_required_array(store_path):
    import shutil

    shutil.rmtree(store_path / "epoch_offsets")
    with pytest.raises(StoreError, match="epoch_offsets"):
        read_schedule(store_path)


@pytest.mark.parametrize(
    "attr, value, match",
    [
        ("n_batches", 3, "attributes say 3 batches"),
        ("k", "ten", "attribute 'k' must be int"),
        ("dataset", {"name": "x", "n_samples": -4}, "n_samples must be a non-negative integer"),
        ("dataset", {"name": "x", "n_samples": 50}, r"indices must lie in \[0, n_samples=50\)"),
        ("batch_arrays", ["../../etc"], "not allowed"),
    ],
)
def test_absurd_attributes(store_path, attr, value, match):
    _set_attr(store_path, **{attr: value})
    with pytest.raises(StoreError, match=match):
        read_schedule(store_path)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.batch_offsets.__setitem__(3, s.batch_offsets[2] - 1), "non-decreasing"),
        (lambda s: s.batch_offsets.__setitem__(-1, 5), "end at len"),
        (lambda s: s.indices.__setitem__(4, -1), "indices must lie"),
        (lambda s: s.indices.__setitem__(4, 10**12), "indices must lie"),
        (lambda s: s.epoch_offsets.__setitem__(1, 10**6), "non-decreasing|epoch_offsets"),
    ],
)
def test_invalid_schedules_are_not_written(tmp_path, mutate, match):
    s = random_schedule()
    mutate(s)
    with pytest.raises(StoreError, match=match):
        write_schedule(s, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_wrong_dtype_array(store_path):
    import zarr

    g = zarr.open_group(str(store_path), mode="r+")
    idx = g["indices"][:]
    del g["indices"]
    g.create_array("indices", data=idx.astype(np.float64))
    with pytest.raises(StoreError, match="1-D int64"):
        read_schedule(store_path)


def test_tampered_epoch_offsets(tmp_path):
    import zarr

    p = write_schedule(random_schedule(n=100, k=10, epochs=2, extras=False), tmp_path / "s.zarr")
    g = zarr.open_group(str(p), mode="r+")
    g["epoch_offsets"][1] = 3  # still monotone and in range: only the digest can tell
    with pytest.raises(StoreError, match="epoch_offsets"):
        read_schedule(p)


def test_schedule_without_n_samples_is_a_store_error(tmp_path):
    s = random_schedule()
    bad = Schedule(s.indices, s.batch_offsets, s.epoch_offsets, "random", {}, {"name": "x"}, 10)
    with pytest.raises(StoreError, match="n_samples"):
        write_schedule(bad, tmp_path / "s.zarr")


# --------------------------------------------------------------------------- appends


def _tree(root: Path) -> dict:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _inodes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.rglob("c/*") if p.is_file()}


@pytest.fixture
def small_chunks(monkeypatch):
    import schedgen.store._write as _write

    monkeypatch.setattr(_write, "_CHUNK", 64)  # 103-sample epochs span several chunks
    return 64


def _grown(epochs_before=2, epochs_after=5):
    """A store's schedule, and the same run some epochs later (its prefix unchanged)."""
    from schedgen.store import Unchanged

    old = random_schedule(epochs=epochs_before, extras=False)
    new = random_schedule(epochs=epochs_after, extras=False)
    assert np.array_equal(new.indices[: len(old.indices)], old.indices)
    promise = Unchanged(old.digest, {"indices": len(old.indices), "batch_offsets": len(old.batch_offsets)})
    return old, new, promise


def test_append_links_the_unchanged_chunks_and_writes_the_same_bytes(tmp_path, small_chunks):
    old, new, promise = _grown()
    p = write_schedule(old, tmp_path / "run.zarr")
    before = _inodes(p)
    write_schedule(new, p, overwrite=True, unchanged=promise)
    fresh = write_schedule(new, tmp_path / "fresh.zarr")
    assert _tree(p) == _tree(fresh)  # byte for byte what a full write gives
    after = _inodes(p)
    # every whole chunk of the old indices (206 elements: chunks 0..2) is the old file
    linked = {f"indices/c/{c}" for c in range(len(old.indices) // small_chunks)}
    assert linked and all(after[f] == before[f] for f in linked)
    assert after["indices/c/3"] != before["indices/c/3"]  # the old partial chunk was rewritten
    assert read_schedule(p).digest == new.digest


@pytest.mark.parametrize("why", ["another digest", "no hard links", "other chunks"])
def test_append_writes_everything_when_it_cannot_confirm_the_old_store(tmp_path, small_chunks, monkeypatch, why):
    import dataclasses

    import schedgen.store._append as _append
    import schedgen.store._write as _write

    old, new, promise = _grown()
    p = write_schedule(old, tmp_path / "run.zarr")
    before = _inodes(p)
    if why == "another digest":
        promise = dataclasses.replace(promise, digest="0" * 64)
    elif why == "no hard links":
        def no_link(src, dst, **kw):
            raise OSError(1, "Operation not permitted")
        monkeypatch.setattr(_append, "_hard_link", no_link)
    else:
        monkeypatch.setattr(_write, "_CHUNK", 32)  # the old store's chunks are of 64
    write_schedule(new, p, overwrite=True, unchanged=promise)
    assert not set(before.values()) & set(_inodes(p).values())
    assert _tree(p) == _tree(write_schedule(new, tmp_path / "fresh.zarr"))
    assert read_schedule(p).digest == new.digest


def test_a_broken_append_promise_is_caught_on_read(tmp_path, small_chunks):
    """A caller whose "unchanged" prefix did change gets a store that fails its digest
    check: the linked chunks hold the old indices, never silently replayed."""
    from schedgen.store import Unchanged

    old = random_schedule(epochs=2, seed=0, extras=False)
    new = random_schedule(epochs=3, seed=1, extras=False)  # another prefix
    p = write_schedule(old, tmp_path / "run.zarr")
    write_schedule(new, p, overwrite=True, unchanged=Unchanged(old.digest, {"indices": len(old.indices)}))
    with pytest.raises(StoreError, match="digest"):
        read_schedule(p)


def test_append_never_mixes_in_a_store_swapped_in_meanwhile(tmp_path, small_chunks, monkeypatch):
    """Another writer replaces the store between the digest check and the linking: the
    chunks still come from the directory whose digest was checked."""
    import schedgen.store._append as _append

    old, new, promise = _grown()
    p = write_schedule(old, tmp_path / "run.zarr")
    real = _append._open_linkable

    def then_swapped(final, unchanged):
        fd = real(final, unchanged)
        os.rename(final, tmp_path / "aside.zarr")
        write_schedule(random_schedule(epochs=5, seed=9, extras=False), final)  # other indices
        return fd

    monkeypatch.setattr(_append, "_open_linkable", then_swapped)
    write_schedule(new, p, overwrite=True, unchanged=promise)
    assert read_schedule(p).digest == new.digest
    assert _tree(p) == _tree(write_schedule(new, tmp_path / "fresh.zarr"))


def test_unchanged_prefix_must_be_integers():
    from schedgen.errors import ParameterError
    from schedgen.store import Unchanged

    assert Unchanged("d", {"indices": np.int64(5)}).prefix == {"indices": 5}
    for bad in ({"indices": 2.5}, {"indices": -1}, {"indices": "5"}):
        with pytest.raises(ParameterError, match="Unchanged.prefix"):
            Unchanged("d", bad)


# ------------------------------------------------------------ attributes digest (format 2)


def _edit(path, fn):
    """Apply ``fn`` to the attributes in zarr.json as a hand edit would (digest left as is)."""
    meta_path = Path(path) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    fn(meta["attributes"])
    meta_path.write_text(json.dumps(meta, indent=2))


def _set(*keys, value):
    def fn(a):
        for key in keys[:-1]:
            a = a[key]
        a[keys[-1]] = value
    return fn


ATTRIBUTE_EDITS = {
    "k 10 -> 64": _set("k", value=64),
    "method": _set("method", value="mmd"),
    "params.seed": _set("params", "seed", value=1),
    "params.seed 0 -> 0.0": _set("params", "seed", value=0.0),
    "params.solver added": _set("params", "solver", value="lp"),
    "dataset.name": _set("dataset", "name", value="digits"),
    "dataset.split": _set("dataset", "split", value="test"),
    "dataset.n_samples": _set("dataset", "n_samples", value=200),
    "dataset.n_classes": _set("dataset", "n_classes", value=10),
    "dataset.fingerprint": _set("dataset", "fingerprint", value="0" * 64),
    "schedgen_version": _set("schedgen_version", value="9.9.9"),
    "a key added": _set("note", value="built on Tuesday"),
    "a key removed": lambda a: a.pop("schedgen_version"),
    "attributes_digest": _set("attributes_digest", value="0" * 64),
}


@pytest.mark.parametrize("edit", sorted(ATTRIBUTE_EDITS))
def test_edited_attributes_are_refused(tmp_path, edit):
    """Every attribute of a format-2 store is covered: a hand edit of any (k, solver, seed,
    dataset name, fingerprint, ...) is refused by read_schedule, info, verify and list."""
    from schedgen import catalog

    p = write_schedule(random_schedule(), tmp_path / "s.zarr")
    _edit(p, ATTRIBUTE_EDITS[edit])
    expected = re.escape(f"{p}: attributes digest mismatch (stored ") + r".*\.\.\., computed .*\.\.\.\): " + re.escape(
        "the attributes do not match the digest; they were edited or are corrupt")
    for read in (read_schedule, catalog.info, catalog.verify):
        with pytest.raises(StoreError, match=f"^{expected}$"):
            read(p)
    (row,) = catalog.list_schedules(tmp_path)
    assert re.fullmatch(expected, row["error"]) and "k" not in row


def test_attributes_digest_missing_or_malformed(store_path):
    _edit(store_path, lambda a: a.pop("attributes_digest"))
    with pytest.raises(StoreError, match=re.escape(
            f"{store_path}: attribute 'attributes_digest' is missing; expected the digest of the attributes "
            "in a format-2 store")):
        read_schedule(store_path)
    _edit(store_path, _set("attributes_digest", value="ABC"))
    with pytest.raises(StoreError, match=re.escape(
            f"{store_path}: attribute 'attributes_digest' must be 64 lowercase hex digits, got 'ABC'")):
        read_schedule(store_path)


def test_a_format_2_store_edited_to_format_1_is_refused(store_path):
    """Changing schedgen_format to 1 (whose attributes are not covered) does not bypass the digest."""
    _edit(store_path, _set("schedgen_format", value=1))
    with pytest.raises(StoreError, match=re.escape(
            f"{store_path}: a format-1 store has no attribute 'attributes_digest', this one has")):
        read_schedule(store_path)


def test_attributes_that_are_not_json_are_not_written(tmp_path):
    s = random_schedule()
    bad = Schedule(s.indices, s.batch_offsets, s.epoch_offsets, "random", {"seed": object()}, s.dataset, 10)
    with pytest.raises(StoreError, match="schedule attributes must be plain JSON"):
        write_schedule(bad, tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def test_non_finite_and_unicode_attributes_round_trip(tmp_path):
    """NaN, infinities, large integers and non-ASCII text survive zarr's JSON and the digest."""
    s = random_schedule()
    params = {"seed": 0, "nan": float("nan"), "inf": float("-inf"), "big": 10**30, "tiny": 5e-324, "é": "😀\x7f"}
    odd = Schedule(s.indices, s.batch_offsets, s.epoch_offsets, "random", params, s.dataset, 10)
    r = read_schedule(write_schedule(odd, tmp_path / "s.zarr"))
    assert math.isnan(r.params["nan"]) and r.params["inf"] == float("-inf") and r.params["big"] == 10**30
    assert r.params["é"] == "😀\x7f" and r.schedgen_format == 2


# ------------------------------------------------------------ canonical JSON, as documented


def _documented_float(x: float) -> str:
    """docs/FORMAT.md's rule for a non-integer number, written independently of Python's repr
    (the shortest round-trip digits come from numpy's Dragon4)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    x = abs(x)
    if x == 0:
        return sign + "0.0"
    mantissa, exp = np.format_float_scientific(x, unique=True, trim="-").split("e")
    digits, e = mantissa.replace(".", ""), int(exp)
    if -4 <= e < 16:
        if e >= 0:
            whole, frac = digits[: e + 1].ljust(e + 1, "0"), digits[e + 1 :] or "0"
        else:
            whole, frac = "0", "0" * (-e - 1) + digits
        return f"{sign}{whole}.{frac}"
    m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{m}e{'+' if e >= 0 else '-'}{abs(e):02d}"


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _documented_string(t: str) -> str:
    out = []
    for ch in t:
        c = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0x20 <= c <= 0x7E:
            out.append(ch)
        elif c > 0xFFFF:
            c -= 0x10000
            out.append(f"\\u{0xD800 + (c >> 10):04x}\\u{0xDC00 + (c & 0x3FF):04x}")
        else:
            out.append(f"\\u{c:04x}")
    return '"' + "".join(out) + '"'


def _documented_canonical(v) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _documented_float(v)
    if isinstance(v, str):
        return _documented_string(v)
    if isinstance(v, list):
        return "[" + ",".join(map(_documented_canonical, v)) + "]"
    keys = sorted(v, key=lambda k: [ord(c) for c in k])  # by code point
    return "{" + ",".join(f"{_documented_string(k)}:{_documented_canonical(v[k])}" for k in keys) + "}"


_json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(),
        st.sampled_from([0.0, -0.0, 1e16, 1e15, 123456789012345.6, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308,
                         0.1, 2.0, 1 / 3, float("nan"), float("inf"), float("-inf")]),
        st.text(max_size=8), st.sampled_from(["\x00\x1f\x7f\x80", "é/\\\"", "\U0001f600\uffff", "\u2028"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=_json_values)
def test_canonical_json_is_what_format_md_says(value):
    """The canonical form docs/FORMAT.md defines (an independent implementation) is the
    one the writer and reader hash, so another language can recompute the digest."""
    assert canonical_json(value) == _documented_canonical(value).encode("ascii")


# ------------------------------------------------------------ format 1 (read, never written)


def test_format1_store_reads_verifies_lists_and_replays(tmp_path):
    from schedgen import catalog

    s = random_schedule()
    p = write_format1(s, tmp_path / "s.zarr")
    attrs = json.loads((p / "zarr.json").read_text())["attributes"]
    assert attrs["schedgen_format"] == 1 and "attributes_digest" not in attrs
    r = read_schedule(p)
    assert r.schedgen_format == 1 and not r.attributes_covered and "not covered by a digest" in FORMAT1_NOTE
    assert r.digest == s.digest and (r.method, r.params, r.dataset, r.k) == (s.method, s.params, s.dataset, s.k)
    np.testing.assert_array_equal(r.batch_arrays["batch_mmd2"], s.batch_arrays["batch_mmd2"])
    assert r.attrs() == attrs  # described as it was stored
    assert catalog.verify(p)["digest"] == s.digest
    (row,) = catalog.list_schedules(tmp_path)
    assert "error" not in row and row["k"] == s.k
    torch_ = pytest.importorskip("torch")  # noqa: F841
    from schedgen.torch import ScheduleBatchSampler

    sampler = ScheduleBatchSampler(p)
    for e in range(s.n_epochs):
        sampler.set_epoch(e)
        assert list(sampler) == [s.batch(b).tolist() for b in s.epoch_batches(e)]


def test_format1_arrays_are_still_verified(tmp_path):
    import zarr

    p = write_format1(random_schedule(), tmp_path / "s.zarr")
    g = zarr.open_group(str(p), mode="r+")
    g["indices"][0], g["indices"][1] = g["indices"][1], g["indices"][0]
    with pytest.raises(StoreError, match=re.escape(f"{p}: digest mismatch (stored ")):
        read_schedule(p)


def test_format1_attribute_edits_go_unnoticed(tmp_path):
    """The limitation format 2 removes (and why verify says so for format 1)."""
    p = write_format1(random_schedule(), tmp_path / "s.zarr")
    _edit(p, _set("k", value=64))
    assert read_schedule(p).k == 64


def test_rewriting_a_format1_store_writes_format_2(tmp_path, small_chunks):
    """An append onto a record written as format 1 links its chunks and gives the same
    bytes as a fresh format-2 write."""
    old, new, promise = _grown()
    p = write_format1(old, tmp_path / "run.zarr")
    before = _inodes(p)
    write_schedule(new, p, overwrite=True, unchanged=promise)
    assert _tree(p) == _tree(write_schedule(new, tmp_path / "fresh.zarr"))
    assert set(before.values()) & set(_inodes(p).values())  # chunks were linked
    assert read_schedule(p).schedgen_format == 2
    # and a schedule read from format 1 is written as format 2 too
    q = write_schedule(read_schedule(write_format1(old, tmp_path / "v1.zarr")), tmp_path / "again.zarr")
    assert _tree(q) == _tree(write_schedule(old, tmp_path / "fresh-old.zarr"))
