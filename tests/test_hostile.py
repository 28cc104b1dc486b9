"""Hostile stores: mutate valid stores every way we can think of.

Property: ``read_schedule(path)`` and ``ScheduleBatchSampler(path)`` either raise a
:class:`~schedgen.errors.SchedgenError` or give exactly the original batches (when
the mutation left the schedule's meaning intact, e.g. a flipped byte in the
compression level). Never another exception, a hang, or a wrong batch.

Only the replay half needs torch: without it, every case still reads the store
(``read_schedule``, ``read_attrs``) and only the ``ScheduleBatchSampler`` leg is
skipped (the summary says how many times).

Every example runs under a watchdog (``SIGALRM``) so a hang fails the example
instead of the suite. The number of cases run is printed in the terminal summary
and each property asserts a minimum count.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import schedgen.store._write as store_write
from schedgen.errors import SchedgenError
from schedgen.store import (
    Schedule,
    array_digest,
    attributes_digest,
    read_attrs,
    read_schedule,
    schedule_digest,
    write_schedule,
)
from toys import toy_schedule

try:
    from schedgen.torch import ScheduleBatchSampler
except ModuleNotFoundError as _exc:  # no torch: the store half of every case still runs
    if _exc.name != "torch":
        raise
    ScheduleBatchSampler = None

#: Seconds one example may take (a read of these stores takes ~10 ms).
WATCHDOG_SECONDS = 10.0
#: Examples per property (the suite must stay fast: ~15 ms each).
EXAMPLES = int(os.environ.get("SCHEDGEN_HOSTILE_EXAMPLES", "120"))

# ------------------------------------------------------------------ counting and reporting

COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
#: Cases whose replay leg was skipped because torch is not installed.
REPLAY_SKIPPED = collections.Counter()


class _Report:
    def pytest_terminal_summary(self, terminalreporter):
        if not COUNTS:
            return
        total = sum(sum(c.values()) for c in COUNTS.values())
        terminalreporter.write_sep("-", f"hostile stores: {total} cases")
        for name, c in sorted(COUNTS.items()):
            detail = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            terminalreporter.write_line(f"{name}: {sum(c.values())} ({detail})")
        if REPLAY_SKIPPED:
            terminalreporter.write_line(
                f"replay leg skipped (torch not installed) in {sum(REPLAY_SKIPPED.values())} cases: "
                "only read_schedule judged them"
            )


@pytest.fixture(scope="module", autouse=True)
def _reporter(request):
    pm = request.config.pluginmanager
    if pm.get_plugin("schedgen-hostile-report") is None:
        pm.register(_Report(), "schedgen-hostile-report")
    yield


def _assert_ran(name: str, minimum: int) -> None:
    n = sum(COUNTS[name].values())
    assert n >= minimum, f"{name}: only {n} cases ran, expected at least {minimum}"


# ------------------------------------------------------------------ the pristine store


ORIGINAL = toy_schedule(n=53, k=7, seed=3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A valid store whose indices span several chunks (so one can go missing)."""
    old = store_write._CHUNK
    store_write._CHUNK = 32
    try:
        p = write_schedule(ORIGINAL, tmp_path_factory.mktemp("pristine") / "s.zarr")
    finally:
        store_write._CHUNK = old
    assert len(list((p / "indices" / "c").iterdir())) == 4
    return p


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ the oracle


class Hang(BaseException):
    """Raised by the watchdog; a BaseException so no ``except Exception`` swallows it."""


#: FIFOs planted by the tests. When a read hangs on one (in zarr's I/O thread), the
#: watchdog opens it for writing to release that thread, or the interpreter could not exit.
FIFOS: list[Path] = []


def _release_fifos() -> None:
    for fifo in FIFOS:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@contextlib.contextmanager
def watchdog(seconds: float = WATCHDOG_SECONDS):
    def fire(signum, frame):
        _release_fifos()
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _same_schedule(s: Schedule) -> None:
    for name in ("indices", "batch_offsets", "epoch_offsets"):
        got, want = getattr(s, name), getattr(ORIGINAL, name)
        assert got.dtype == np.int64 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert set(s.batch_arrays) == set(ORIGINAL.batch_arrays)
    assert set(s.epoch_arrays) == set(ORIGINAL.epoch_arrays)
    for name, a in {**ORIGINAL.batch_arrays, **ORIGINAL.epoch_arrays}.items():
        b = {**s.batch_arrays, **s.epoch_arrays}[name]
        assert b.dtype == a.dtype and b.shape == a.shape, name
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert s.digest == ORIGINAL.digest


def _original_batches(epoch: int) -> list[list[int]]:
    return [ORIGINAL.batch(b).tolist() for b in ORIGINAL.epoch_batches(epoch)]


def _replay(path: Path) -> str:
    """The replay leg of :func:`judge`: "rejected" or "identical" (every epoch's batches)."""
    try:
        sampler = ScheduleBatchSampler(path)
    except SchedgenError:
        return "rejected"
    assert sampler.n_epochs == ORIGINAL.n_epochs
    for e in range(ORIGINAL.n_epochs):
        sampler.set_epoch(e)
        assert list(sampler) == _original_batches(e), f"wrong batches in epoch {e}"
    return "identical"


def judge(path: Path, name: str) -> str:
    """Read ``path`` both ways; return "rejected" or "identical", fail on anything else.

    Without torch only ``read_schedule`` judges (the replay leg is counted as skipped).
    """
    outcomes = []
    with watchdog():
        try:
            s = read_schedule(path)
        except SchedgenError as exc:
            assert "\n" not in str(exc), f"error message is not one line: {exc!r}"
            outcomes.append("rejected")
        else:
            _same_schedule(s)
            outcomes.append("identical")
        if ScheduleBatchSampler is not None:
            outcomes.append(_replay(path))
        else:
            REPLAY_SKIPPED[name] += 1
        try:  # listings read the attributes only
            read_attrs(path)
        except SchedgenError:
            pass
    # Both readers see the same store: they must agree.
    assert outcomes[0] == outcomes[-1], outcomes
    COUNTS[name][outcomes[0]] += 1
    return outcomes[0]


def test_the_sampler_replays_the_pristine_store(pristine):
    """The replay half of the oracle, on the unmutated store (needs torch; skipped without it)."""
    pytest.importorskip("torch")
    assert _replay(pristine) == "identical"


@contextlib.contextmanager
def copy_of(pristine: Path):
    d = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        p = d / "s.zarr"
        shutil.copytree(pristine, p, symlinks=True)
        yield p
    finally:
        # A mutation may have made parts unreadable or read-only.
        for root, dirs, _ in os.walk(d):
            for x in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, x), 0o755)
        shutil.rmtree(d, ignore_errors=True)


def _meta(path: Path) -> dict:
    return json.loads(path.read_text())


def _put_meta(path: Path, meta) -> None:
    path.write_text(json.dumps(meta))


def _sign(attrs: dict) -> bool:
    """Recompute ``attrs["attributes_digest"]`` (an adversary can): the checks behind the
    digest must then catch the edit. False when the attributes cannot be hashed (too deep)."""
    try:
        attrs["attributes_digest"] = attributes_digest(attrs)
    except (RecursionError, ValueError, TypeError):
        return False
    return True


def _resign(p: Path) -> None:
    """Recompute the digests from whatever arrays the store now holds, and then the
    attributes digest over the new attributes (an adversary can)."""
    import zarr

    g = zarr.open_group(str(p), mode="r+")
    idx, bo = g["indices"][...], g["batch_offsets"][...]
    attrs = dict(g.attrs)
    attrs["digest"] = schedule_digest(idx, bo)
    digests = {}
    for name in ["epoch_offsets", *attrs["batch_arrays"], *attrs["epoch_arrays"]]:
        try:
            digests[name] = array_digest(g[name][...])
        except TypeError:  # an array without defined bytes (variable-length strings)
            digests[name] = attrs["array_digests"][name]
    attrs["array_digests"] = digests
    eo = g["epoch_offsets"][...]
    # keep the counts consistent with the arrays, so only deeper checks can object
    attrs["n_batches"] = int(bo.shape[0] - 1) if bo.ndim else attrs["n_batches"]
    attrs["n_epochs"] = int(eo.shape[0] - 1) if eo.ndim else attrs["n_epochs"]
    assert _sign(attrs)
    g.attrs.put(attrs)


def _replace_array(p: Path, name: str, data: np.ndarray) -> None:
    import zarr

    g = zarr.open_group(str(p), mode="r+")
    del g[name]
    chunks = (max(1, min(len(data), 32)),) + data.shape[1:] if data.ndim else ()
    g.create_array(name, data=data, chunks=chunks)


# ------------------------------------------------------------------ JSON junk

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "../x", "/etc/passwd", "indices", "int64", "\x00", "NaN", "1e309"]),
)
_junk = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _deep(depth: int, kind: str) -> str:
    """Raw JSON text nested ``depth`` levels (json.dumps would hit the recursion limit)."""
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


# ------------------------------------------------------------------ properties

PROP = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


def test_flipped_bytes(pristine):
    files = _files(pristine)

    @PROP
    @given(
        file=st.sampled_from(files),
        flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
    )
    def prop(file, flips):
        with copy_of(pristine) as p:
            f = p / file
            data = bytearray(f.read_bytes())
            for where, mask in flips:
                data[int(where * len(data))] ^= mask
            f.write_bytes(bytes(data))
            judge(p, "flipped bytes")

    prop()
    _assert_ran("flipped bytes", EXAMPLES)


def test_truncated_missing_or_replaced_files(pristine):
    files = _files(pristine)
    dirs = sorted({str(Path(f).parent) for f in files} - {"."})

    @PROP
    @given(
        target=st.one_of(st.sampled_from(files).map(lambda f: ("file", f)), st.sampled_from(dirs).map(lambda d: ("dir", d))),
        how=st.sampled_from(["truncate", "delete", "empty", "directory", "garbage", "grow"]),
        cut=st.floats(0, 1, exclude_max=True),
        garbage=st.binary(min_size=1, max_size=64),
    )
    def prop(target, how, cut, garbage):
        kind, rel = target
        with copy_of(pristine) as p:
            f = p / rel
            if kind == "dir":
                shutil.rmtree(f)
                if how in ("empty", "garbage"):
                    f.write_bytes(garbage if how == "garbage" else b"")  # a file where a folder was
            elif how == "truncate":
                data = f.read_bytes()
                f.write_bytes(data[: int(cut * len(data))])
            elif how == "delete":
                f.unlink()
            elif how == "empty":
                f.write_bytes(b"")
            elif how == "directory":
                f.unlink()
                f.mkdir()
            elif how == "garbage":
                f.write_bytes(garbage)
            else:  # trailing bytes after a valid file
                f.write_bytes(f.read_bytes() + garbage)
            judge(p, "truncated/missing/replaced files")

    prop()
    _assert_ran("truncated/missing/replaced files", EXAMPLES)


_ATTR_KEYS = [
    "schedgen_format", "method", "params", "dataset", "k", "n_batches", "n_epochs", "digest",
    "batch_arrays", "epoch_arrays", "array_digests", "schedgen_version", "attributes_digest", "extra_key",
]
_DATASET_KEYS = ["n_samples", "name", "split", "n_classes", "fingerprint"]


def test_absurd_attributes(pristine):
    """Any attribute edited to junk. Unsigned, the attributes digest must refuse every
    edit that changed anything; re-signed, the checks behind it must hold."""

    @PROP
    @given(
        where=st.one_of(
            st.sampled_from(_ATTR_KEYS).map(lambda k: (k,)),
            st.sampled_from(_DATASET_KEYS).map(lambda k: ("dataset", k)),
            st.sampled_from(["epoch_offsets", "batch_mmd2", "class_proportions", "indices"]).map(
                lambda k: ("array_digests", k)
            ),
        ),
        value=st.one_of(
            _junk,
            st.sampled_from(["DELETE", "DEEP"]),
            st.lists(st.sampled_from(["../x", "..", "/abs", "a/../../x", "", ".", "indices", "batch_mmd2",
                                      "class_proportions", "c", "zarr.json", "x" * 300, "é", "a\\b"]),
                     max_size=3),
        ),
        depth=st.sampled_from([5, 200, 5000, 100_000]),
        resign=st.booleans(),
    )
    # holes found earlier, kept as fixed cases
    @example(where=("batch_arrays",), value="DELETE", depth=5, resign=True)  # silently dropped batch_mmd2
    @example(where=("epoch_arrays",), value=[], depth=5, resign=True)
    @example(where=("k",), value=-3, depth=5, resign=True)
    @example(where=("dataset", "n_samples"), value=10**400, depth=5, resign=True)
    @example(where=("dataset", "fingerprint"), value=["x"], depth=5, resign=True)
    @example(where=("params",), value="DEEP", depth=100_000, resign=True)
    @example(where=("n_batches",), value=float("nan"), depth=5, resign=True)
    # edits that replay the same batches: only the attributes digest can refuse them
    @example(where=("k",), value=64, depth=5, resign=False)
    @example(where=("params",), value={"seed": 4}, depth=5, resign=False)
    @example(where=("dataset", "name"), value="svhn", depth=5, resign=False)
    @example(where=("dataset", "fingerprint"), value="0" * 64, depth=5, resign=False)
    @example(where=("schedgen_format",), value=1, depth=5, resign=False)  # a downgrade
    def prop(where, value, depth, resign):
        if where == ("attributes_digest",):
            resign = False  # re-signing would undo the edit
        with copy_of(pristine) as p:
            meta = _meta(p / "zarr.json")
            before = json.dumps(meta["attributes"], sort_keys=True)
            node = meta["attributes"]
            for key in where[:-1]:
                node = node[key]
            if value == "DELETE":
                node.pop(where[-1], None)
                changed = json.dumps(meta["attributes"], sort_keys=True) != before
                if resign:
                    _sign(meta["attributes"])
                _put_meta(p / "zarr.json", meta)
            elif value == "DEEP":
                changed = True
                kind = "list" if depth % 2 else "dict"
                if resign:
                    try:
                        node[where[-1]] = json.loads(_deep(depth, kind))
                    except RecursionError:
                        pass
                    else:
                        _sign(meta["attributes"])
                node[where[-1]] = "@@DEEP@@"
                text = json.dumps(meta).replace('"@@DEEP@@"', _deep(depth, kind))
                (p / "zarr.json").write_text(text)
            else:
                node[where[-1]] = value
                changed = json.dumps(meta["attributes"], sort_keys=True) != before
                if resign:
                    _sign(meta["attributes"])
                _put_meta(p / "zarr.json", meta)  # NaN and Infinity are written as bare NaN/Infinity
            outcome = judge(p, "absurd attributes, " + ("re-signed" if resign else "unsigned"))
            if changed and not resign:
                assert outcome == "rejected", f"an unsigned edit of {where} was accepted"

    prop()
    ran = {name: sum(COUNTS[name].values()) for name in ("absurd attributes, re-signed", "absurd attributes, unsigned")}
    assert sum(ran.values()) >= EXAMPLES and min(ran.values()) >= EXAMPLES // 8, ran


_ARRAYS = ["indices", "batch_offsets", "epoch_offsets", "batch_mmd2", "class_proportions"]
_META_EDITS = {
    "shape": st.one_of(
        st.lists(st.integers(-3, 300), min_size=0, max_size=3),
        st.sampled_from([[2**40], [2**62], [2**31, 2**31], [-1], [10**30], [0]]),
        _junk,
    ),
    "data_type": st.one_of(
        st.sampled_from(["int32", "uint64", "float64", "int8", "bool", "string", "float16", "complex128",
                         "uint8", "int16", "nope", "r64"]),
        _junk,
    ),
    "chunk_shape": st.one_of(
        st.lists(st.integers(-2, 200), min_size=0, max_size=3),
        st.sampled_from([[2**40], [2**62], [0], [1]]),
        _junk,
    ),
    "fill_value": st.one_of(st.integers(-(2**64), 2**64), st.sampled_from(["NaN", "Infinity", "0x7ff8"]), _junk),
    "codecs": st.one_of(
        st.sampled_from([
            [],
            [{"name": "bytes", "configuration": {"endian": "big"}}, {"name": "zstd", "configuration": {"level": 3, "checksum": True}}],
            [{"name": "bytes", "configuration": {"endian": "little"}}],
            [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip", "configuration": {"level": 1}}],
            [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}, {"name": "zstd", "configuration": {"level": 3, "checksum": True}}],
            [{"name": "transpose", "configuration": {"order": [0]}}, {"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 3, "checksum": True}}],
            [{"name": "sharding_indexed", "configuration": {"chunk_shape": [8], "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}], "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]}}],
            [{"name": "nonexistent.codec"}],
        ]),
        _junk,
    ),
    "node_type": st.sampled_from(["group", "array", "nonsense", 3, None]),
    "zarr_format": st.sampled_from([2, 4, "3", None, 3.0]),
    "chunk_key_encoding": st.one_of(
        st.sampled_from([
            {"name": "v2", "configuration": {"separator": "."}},
            {"name": "default", "configuration": {"separator": "."}},
            {"name": "default", "configuration": {"separator": "/../"}},
        ]),
        _junk,
    ),
    "dimension_names": st.one_of(st.sampled_from([["x"], ["x", "y"], [None], "x"]), _junk),
    "storage_transformers": st.one_of(st.sampled_from([[{"name": "x"}]]), _junk),
}


def test_array_metadata(pristine):
    @PROP
    @given(
        array=st.sampled_from(_ARRAYS),
        field=st.sampled_from(sorted(_META_EDITS)),
        data=st.data(),
    )
    def prop(array, field, data):
        value = data.draw(_META_EDITS[field], label="value")
        with copy_of(pristine) as p:
            meta = _meta(p / array / "zarr.json")
            if field == "chunk_shape":
                meta["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": value}}
            else:
                meta[field] = value
            _put_meta(p / array / "zarr.json", meta)
            judge(p, "array metadata")

    prop()
    _assert_ran("array metadata", EXAMPLES)


def test_consolidated_metadata_that_lies(pristine):
    """Root zarr.json carrying consolidated metadata that disagrees with the arrays'."""

    @PROP
    @given(array=st.sampled_from(_ARRAYS), field=st.sampled_from(["shape", "data_type", "chunk_shape"]), data=st.data())
    def prop(array, field, data):
        value = data.draw(_META_EDITS[field], label="value")
        with copy_of(pristine) as p:
            root = _meta(p / "zarr.json")
            metas = {a: _meta(p / a / "zarr.json") for a in _ARRAYS}
            m = copy.deepcopy(metas[array])
            if field == "chunk_shape":
                m["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": value}}
            else:
                m[field] = value
            metas[array] = m
            root["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": metas}
            _put_meta(p / "zarr.json", root)
            judge(p, "consolidated metadata")

    prop()
    _assert_ran("consolidated metadata", EXAMPLES // 2)


def _invalid_content():
    n = ORIGINAL.n_samples
    bo, eo, idx = ORIGINAL.batch_offsets, ORIGINAL.epoch_offsets, ORIGINAL.indices

    def at(a, i, v):
        a = a.copy()
        a[i % len(a)] = v
        return a

    big = st.sampled_from([n, n + 1, 2**31, 2**62, 2**63 - 1])
    neg = st.sampled_from([-1, -n, -(2**63)])
    return st.one_of(
        # indices out of range
        st.tuples(st.just("indices"), st.integers(0, len(idx) - 1), st.one_of(big, neg)).map(
            lambda t: {"indices": at(idx, t[1], t[2])}
        ),
        # batch offsets out of order or out of range
        st.tuples(st.integers(0, len(bo) - 1), st.one_of(big, neg, st.integers(-5, len(idx) + 5))).filter(
            lambda t: t[1] != bo[t[0]] and not (0 < t[0] < len(bo) - 1 and bo[t[0] - 1] <= t[1] <= bo[t[0] + 1])
        ).map(lambda t: {"batch_offsets": at(bo, t[0], t[1])}),
        # epoch offsets out of order or out of range
        st.tuples(st.integers(0, len(eo) - 1), st.one_of(big, neg, st.integers(-3, len(bo) + 3))).filter(
            lambda t: t[1] != eo[t[0]] and not (0 < t[0] < len(eo) - 1 and eo[t[0] - 1] <= t[1] <= eo[t[0] + 1])
        ).map(lambda t: {"epoch_offsets": at(eo, t[0], t[1])}),
        # wrong dtypes or dimensions for the required arrays
        st.tuples(
            st.sampled_from(["indices", "batch_offsets", "epoch_offsets"]),
            st.sampled_from(["int32", "uint64", "float64", "int8", "bool", "2d", "0d", "empty"]),
        ).map(lambda t: {t[0]: _retype(getattr(ORIGINAL, t[0]), t[1])}),
        # optional arrays of the wrong length or kind
        st.tuples(
            st.sampled_from(["batch_mmd2", "class_proportions"]),
            st.sampled_from(["short", "long", "0d", "varstring", "rows"]),
        ).map(lambda t: {t[0]: _bad_optional({**ORIGINAL.batch_arrays, **ORIGINAL.epoch_arrays}[t[0]], t[1])}),
    )


def _retype(a: np.ndarray, how: str) -> np.ndarray:
    if how == "2d":
        return np.stack([a, a])
    if how == "0d":
        return np.asarray(a[0])
    if how == "empty":
        return a[:0]
    return a.astype(how)


def _bad_optional(a: np.ndarray, how: str) -> np.ndarray:
    if how == "short":
        return a[:-1]
    if how == "long":
        return np.concatenate([a, a[:1]])
    if how == "0d":
        return np.asarray(a.ravel()[0])
    if how == "varstring":  # variable-length strings: no bytes to digest
        return np.array(["x" * i for i in range(len(a))], dtype=np.dtypes.StringDType())
    return np.zeros((len(a) + 3, 2))


def test_invalid_content_with_valid_digests(pristine):
    """An adversary who recomputes the digests: the structural checks alone must reject."""

    @PROP
    @given(change=_invalid_content(), resign=st.booleans())
    @example(change={"batch_mmd2": _bad_optional(ORIGINAL.batch_arrays["batch_mmd2"], "0d")}, resign=True)
    @example(change={"class_proportions": _bad_optional(ORIGINAL.epoch_arrays["class_proportions"], "varstring")},
             resign=False)
    def prop(change, resign):
        with copy_of(pristine) as p:
            for name, data in change.items():
                _replace_array(p, name, data)
            if resign:
                _resign(p)
            assert judge(p, "invalid content") == "rejected"

    prop()
    _assert_ran("invalid content", EXAMPLES)


# ------------------------------------------------------------------ escapes


def _outside(tmp: Path, kind: str, original: Path) -> Path:
    """A target outside the store for a symlink."""
    if kind == "copy":  # identical bytes outside the store
        dst = tmp / "outside-copy"
        if original.is_dir():
            shutil.copytree(original, dst)
        else:
            shutil.copy(original, dst)
        return dst
    if kind == "other":
        dst = tmp / "other"
        dst.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(40))
        return dst
    if kind == "fifo":
        dst = tmp / "fifo"
        os.mkfifo(dst)
        FIFOS.append(dst)
        return dst
    if kind == "dangling":
        return tmp / "does-not-exist"
    if kind == "self":
        return original.parent  # a directory (loop if it is the parent)
    if kind == "zero":
        return Path("/dev/zero")
    if kind == "urandom":
        return Path("/dev/urandom")
    return Path("/etc/hostname") if Path("/etc/hostname").exists() else Path("/etc/passwd")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_links_and_paths_that_escape_the_store(pristine):
    files = _files(pristine)
    dirs = sorted({str(Path(f).parent) for f in files} - {"."})

    @PROP
    @given(
        rel=st.one_of(st.sampled_from(files), st.sampled_from(dirs)),
        kind=st.sampled_from(["copy", "other", "fifo", "dangling", "self", "zero", "urandom", "system"]),
        relative=st.booleans(),
    )
    @example(rel="indices/c/0", kind="fifo", relative=False)  # hung the reader forever
    @example(rel="indices/c/1", kind="zero", relative=False)
    @example(rel="batch_mmd2", kind="copy", relative=True)
    def prop(rel, kind, relative):
        with copy_of(pristine) as p:
            f = p / rel
            if kind in ("fifo", "zero", "urandom") and f.is_dir():
                kind = "other"
            target = _outside(p.parent, kind, f)
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()
            os.symlink(os.path.relpath(target, f.parent) if relative else target, f)
            # Even a link to identical bytes is refused: a store must be self-contained.
            assert judge(p, "escaping links") == "rejected"

    prop()
    _assert_ran("escaping links", min(EXAMPLES // 2, 300))  # a finite space (~390 cases)


@pytest.mark.parametrize(
    "names",
    [["../x"], [".."], ["/abs"], ["a/../../x"], [""], ["."], ["zarr.json"], ["batch_mmd2", "batch_mmd2"],
     ["x" * 300], ["indices"], ["batch\x00mmd2"]],
)
def test_optional_array_names_cannot_escape(pristine, tmp_path, names):
    """Array names in the attributes are keys inside the store, never paths out of it."""
    with copy_of(pristine) as p:
        # plant a plausible array outside the store, where '../x' would point
        (p.parent / "x").mkdir()
        shutil.copytree(p / "batch_mmd2", p.parent / "x", dirs_exist_ok=True)
        meta = _meta(p / "zarr.json")
        meta["attributes"]["batch_arrays"] = names
        meta["attributes"]["array_digests"].update({n: meta["attributes"]["array_digests"]["batch_mmd2"] for n in names})
        assert _sign(meta["attributes"])  # so that the name check, not the digest, must refuse
        _put_meta(p / "zarr.json", meta)
        with watchdog():
            # refused as names, before any lookup in the store
            with pytest.raises(SchedgenError, match="is not allowed|name an array twice"):
                read_schedule(p)


def test_store_root_may_be_a_symlink(pristine, tmp_path):
    """Linking a whole store elsewhere (a user's choice) keeps working."""
    link = tmp_path / "link.zarr"
    os.symlink(pristine, link)
    _same_schedule(read_schedule(link))


@pytest.mark.parametrize(
    "array, shape, attrs, match",
    [
        # claims that disagree with the attributes or the offsets are refused by the cross-checks
        ("indices", [2**40], {}, "must have 106 rows"),
        ("batch_offsets", [2**33], {}, "attributes say 16 batches"),
        # claims consistent with the attributes are refused by the memory bound
        ("batch_offsets", [2**40], {"n_batches": 2**40 - 1}, "memory available"),
        ("batch_mmd2", [16, 2**40], {}, "memory available"),
        ("class_proportions", [2, 2**30, 2**30], {}, "memory available"),
    ],
)
def test_huge_claimed_arrays_are_refused_before_allocation(pristine, array, shape, attrs, match):
    """Shapes that would need more memory than the machine has are refused, not allocated.

    zarr fills absent chunks with the fill value, so a store needs no data to claim
    terabytes; without the bound the read dies of MemoryError or the OOM killer.
    """
    with copy_of(pristine) as p:
        meta = _meta(p / array / "zarr.json")
        meta["shape"] = shape
        meta["chunk_grid"]["configuration"]["chunk_shape"] = [min(d, 32) for d in shape]
        _put_meta(p / array / "zarr.json", meta)
        root = _meta(p / "zarr.json")
        root["attributes"].update(attrs)
        assert _sign(root["attributes"])
        _put_meta(p / "zarr.json", root)
        with watchdog(5):
            with pytest.raises(SchedgenError, match=match):
                read_schedule(p)


def test_consolidated_metadata_that_tells_the_truth_is_fine(pristine):
    import warnings

    import zarr

    with copy_of(pristine) as p, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(p))
        assert "consolidated_metadata" in _meta(p / "zarr.json")
        assert judge(p, "consolidated metadata") == "identical"


@pytest.mark.parametrize(
    "where, value, match",
    [
        (("k",), 0, "attribute 'k' must be an integer in"),
        (("k",), -3, "attribute 'k' must be an integer in"),
        (("k",), 2**64, "attribute 'k' must be an integer in"),
        (("n_epochs",), -1, "attribute 'n_epochs' must be an integer in"),
        (("dataset", "n_samples"), 10**400, "n_samples must be a non-negative integer"),
        (("dataset", "n_samples"), float("nan"), "n_samples must be a non-negative integer"),
        (("dataset", "fingerprint"), ["x"], "dataset.fingerprint must be str"),
        (("dataset", "name"), 7, "dataset.name must be str"),
        (("dataset", "n_classes"), "3", "dataset.n_classes must be a non-negative integer"),
        (("schedgen_version",), {"v": 1}, "'schedgen_version' must be str"),
        (("digest",), "../" * 30, "'digest' must be 64 lowercase hex digits"),
        (("schedgen_format",), True, "unsupported schedule format True"),
        (("schedgen_format",), 1.0, "unsupported schedule format 1.0"),
        (("schedgen_format",), 3, "unsupported schedule format 3; this schedgen reads format 1 or 2"),
        (("attributes_digest",), "../" * 30, "'attributes_digest' must be 64 lowercase hex digits"),
        (("attributes_digest",), None, "'attributes_digest' is missing"),
    ],
)
def test_impossible_attribute_values_are_rejected(pristine, where, value, match):
    """Values no writer produces are refused even where the batches would still replay,
    and even with the attributes digest recomputed over them."""
    with copy_of(pristine) as p:
        meta = _meta(p / "zarr.json")
        node = meta["attributes"]
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        if where != ("attributes_digest",):
            assert _sign(meta["attributes"])
        _put_meta(p / "zarr.json", meta)
        with pytest.raises(SchedgenError, match=match):
            read_schedule(p)


def test_oversized_metadata_is_refused(pristine):
    """A zarr.json of many MiB (valid JSON padded with spaces) is not parsed."""
    with copy_of(pristine) as p:
        f = p / "indices" / "zarr.json"
        f.write_bytes(f.read_bytes() + b" " * (17 << 20))
        with pytest.raises(SchedgenError, match="expected a metadata document of at most"):
            read_schedule(p)


def test_special_files_are_refused(pristine):
    """A FIFO where a chunk belongs would block every reader forever."""
    with copy_of(pristine) as p:
        chunk = p / "indices" / "c" / "2"
        chunk.unlink()
        os.mkfifo(chunk)
        FIFOS.append(chunk)
        with watchdog(5), pytest.raises(SchedgenError, match="not a regular file"):
            read_schedule(p)


def test_foreign_errors_become_one_line_store_errors(pristine, monkeypatch):
    """zarr's own exceptions (any type, any number of lines) surface as one-line StoreErrors."""
    import zarr

    def broken(*a, **kw):
        raise RuntimeError("first line\n  second line\n" + "x" * 1000)

    monkeypatch.setattr(zarr, "open_group", broken)
    with pytest.raises(SchedgenError) as info:
        read_schedule(pristine)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 500
    assert msg.startswith(f"cannot open schedule store {pristine}: RuntimeError: first line second line")
