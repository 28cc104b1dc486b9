"""Registries (issue 16) against a real S3 endpoint (moto's server on 127.0.0.1, s3fs as
the client), a local folder and a local http server: push, pull, list, info and fetch
round trips; two processes pushing at once; a push killed mid-upload; tampered bytes;
secrets never uploaded; bad input as one line."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from schedgen import registry  # noqa: E402
from schedgen.cli import app  # noqa: E402
from schedgen.errors import ParameterError, StoreError  # noqa: E402
from schedgen.registry._manifest import Manifest, content_digest, local_files, make_manifest  # noqa: E402
from schedgen.store import read_schedule, write_schedule  # noqa: E402
from toys import one_line_error, toy_schedule  # noqa: E402

runner = CliRunner()
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def endpoint():
    """One moto S3 server for the module, bound to 127.0.0.1 (its default is 0.0.0.0)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch, tmp_path):
    """A fresh bucket; the usual boto configuration (environment) points at moto; the
    replay cache in ``tmp_path``. Returns ``(registry URL, boto3 client)``."""
    import boto3

    for k, v in {**KEYS, "AWS_ENDPOINT_URL_S3": endpoint, "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in KEYS.items() if "KEY" in k},
                          region_name="us-east-1")
    bucket = f"reg-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/team", client


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two small stores named as builds name them (``...-k<k>-<16 hex key>.zarr``)."""
    d = tmp_path_factory.mktemp("stores")
    a = write_schedule(toy_schedule(n=103, k=10, seed=0), d / "toy-train-random-k10-00000000000000aa.zarr")
    b = write_schedule(toy_schedule(n=57, k=7, seed=1), d / "toy-train-random-k7-00000000000000bb.zarr")
    return Path(a), Path(b)


def objects(client, url) -> dict[str, bytes]:
    bucket = url[len("s3://"):].split("/")[0]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def same_schedule(p, q):
    a, b = read_schedule(p), read_schedule(q)
    assert a.digest == b.digest
    np.testing.assert_array_equal(a.indices, b.indices)


def flip_remote(client, url, name, rel):
    bucket, prefix = url[len("s3://"):].split("/", 1)
    key = f"{prefix}/{name}/{rel}"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))


# ----------------------------------------------------------------------------- round trips


def test_push_pull_list_info_round_trip(s3, stores, tmp_path):
    url, client = s3
    r = run("push", stores[0], url, "--json")
    assert r.exit_code == 0, r.stderr
    pushed = json.loads(r.stdout)
    name = pushed["name"]
    assert pushed["uploaded"] and pushed["key"] == "00000000000000aa" and name.endswith(pushed["content"][:32] + ".zarr")
    m = Manifest.from_bytes(objects(client, url)[f"team/{name}/manifest.json"], "m")
    assert [f.path for f in m.files] == sorted(e.path for _, e in local_files(stores[0]))
    again = json.loads(run("push", stores[0], url, "--json").stdout)
    assert again["uploaded"] is False and again["name"] == name  # same content, same name: a no-op

    rows = json.loads(run("list", url, "--json").stdout)
    assert [(x["name"], x["key"], x["method"], x["k"], x["epochs"]) for x in rows] == [
        (name, "00000000000000aa", "random", 10, 2)]
    assert rows[0]["digest"] == read_schedule(stores[0]).digest

    r = run("pull", f"{url}/{name}", tmp_path / "got", "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["downloaded"] and Path(got["path"]) == tmp_path / "got" / name
    same_schedule(stores[0], got["path"])
    assert json.loads(run("pull", f"{url}/{name}", tmp_path / "got", "--json").stdout)["downloaded"] is False
    assert [p.name for p in (tmp_path / "got").iterdir()] == [name]  # no temporaries left

    info = json.loads(run("info", f"{url}/{name}", "--json").stdout)
    assert info["registry"]["content"] == pushed["content"] and info["digest"] == rows[0]["digest"]

    cached = registry.fetch(f"{url}/{name}")
    assert cached == tmp_path / "cache" / "schedgen" / "registry" / name
    same_schedule(stores[0], cached)
    mtime = (cached / "zarr.json").stat().st_mtime_ns
    assert registry.fetch(f"{url}/{name}") == cached and (cached / "zarr.json").stat().st_mtime_ns == mtime

    # A pushed-then-pulled store keeps its name on a second push (no second content suffix).
    assert registry.push(got["path"], url).name == name


def test_no_secret_is_ever_uploaded(endpoint, stores, tmp_path, monkeypatch):
    import boto3

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key_id, secret = "AKIAREGISTRYTESTKEY7", "s3cr3t/Registry+Test/Value0123456789abcd"
    opts = {"endpoint_url": endpoint, "key": key_id, "secret": secret, "client_kwargs": {"region_name": "us-east-1"}}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                          region_name="us-east-1")
    bucket = f"sec-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    r = registry.push(stores[0], f"s3://{bucket}/x", storage_options=opts)
    registry.fetch(r.url, tmp_path / "c", storage_options=opts)
    blobs = objects(client, f"s3://{bucket}/x")
    assert any(k.endswith("index.json") for k in blobs) and any(k.endswith("manifest.json") for k in blobs)
    for k, data in blobs.items():
        for needle in (key_id, secret, "secret", "endpoint"):
            assert needle.encode() not in data, (k, needle)


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_two_processes_pushing_at_once_both_land_in_the_catalog(kind, s3, stores, tmp_path):
    """Against moto this exercises the conditional-write retry loop, not atomicity: moto's
    precondition check is not atomic with its write (real S3's is, and the no-lost-entry
    guarantee rests on that; see schedgen.registry._remote). file:// is atomic (flock)."""
    url = s3[0] if kind == "s3" else f"file://{tmp_path}/reg"
    go = tmp_path / "go"
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from schedgen import registry
        while not Path(sys.argv[3]).exists():
            time.sleep(0.005)
        print(registry.push(sys.argv[1], sys.argv[2]).name)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(s), url, str(go)], env=os.environ.copy(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in stores]
    time.sleep(1.0)  # both imported and polling: then started together
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    index = registry.read_index(url)
    assert {e["name"] for e in index["entries"].values()} == {o.strip() for o, _ in outs}
    assert set(index["entries"]) == {"00000000000000aa", "00000000000000bb"}


def test_a_push_killed_mid_upload_leaves_an_invisible_store(s3, stores, tmp_path):
    url, client = s3
    registry.push(stores[1], url)  # the catalog exists and lists another store
    name = make_manifest(stores[0])[0].name
    script = textwrap.dedent("""
        import sys, time
        from schedgen.registry import _ops
        def slow(i, path):
            print(path, flush=True)
            time.sleep(30)
        _ops._AFTER_UPLOAD = slow
        _ops.push(sys.argv[1], sys.argv[2])
    """)
    p = subprocess.Popen([sys.executable, "-c", script, str(stores[0]), url], env=os.environ.copy(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # one file is up, the process sleeps before the next
    assert first.strip(), p.stderr.read()
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    up = [k for k in objects(client, url) if f"/{name}/" in k]
    assert up and not any(k.endswith("manifest.json") for k in up)  # some files, no manifest
    assert [r["name"] for r in registry.list_registry(url)] == [make_manifest(stores[1])[0].name]
    with pytest.raises(StoreError, match="no registry manifest at .*manifest.json"):
        registry.pull(f"{url}/{name}", tmp_path / "out")
    assert not (tmp_path / "out" / name).exists()

    r = registry.push(stores[0], url)  # the next push completes
    assert r.uploaded and r.name == name
    assert sorted(x["name"] for x in registry.list_registry(url)) == sorted([name, make_manifest(stores[1])[0].name])
    same_schedule(stores[0], registry.pull(f"{url}/{name}", tmp_path / "out").path)


# ----------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("rel", ["indices/c/0", "zarr.json"])
def test_a_flipped_remote_byte_is_refused_by_pull_and_fetch(s3, stores, tmp_path, rel):
    url, client = s3
    name = registry.push(stores[0], url).name
    flip_remote(client, url, name, rel)
    with pytest.raises(StoreError, match=rf"file {rel} has sha256 .*; the manifest says .*\(modified or corrupt\)"):
        registry.pull(f"{url}/{name}", tmp_path / "out")
    with pytest.raises(StoreError, match=rf"file {rel} has sha256"):
        registry.fetch(f"{url}/{name}", tmp_path / "cache")
    for d in (tmp_path / "out", tmp_path / "cache"):  # nothing half-written, under any name
        assert not d.exists() or list(d.iterdir()) == []
    err = one_line_error(run("pull", f"{url}/{name}", tmp_path / "out"), f"file {rel} has sha256")
    assert name in err


def test_a_truncated_file_and_a_forged_manifest_are_refused(s3, stores, tmp_path):
    url, client = s3
    name = registry.push(stores[0], url).name
    bucket, prefix = url[len("s3://"):].split("/", 1)
    key = f"{prefix}/{name}/indices/c/0"
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=data[:-3])
    with pytest.raises(StoreError, match=rf"file indices/c/0 is {len(data) - 3} bytes; the manifest says {len(data)}"):
        registry.pull(f"{url}/{name}", tmp_path / "out")
    # A manifest rewritten to match the truncated file: its content digest no longer
    # matches, and recomputed, the name no longer carries it.
    mkey = f"{prefix}/{name}/manifest.json"
    doc = json.loads(client.get_object(Bucket=bucket, Key=mkey)["Body"].read())
    import hashlib

    for f in doc["files"]:
        if f["path"] == "indices/c/0":
            f.update(size=len(data) - 3, sha256=hashlib.sha256(data[:-3]).hexdigest())
    client.put_object(Bucket=bucket, Key=mkey, Body=json.dumps(doc).encode())
    with pytest.raises(StoreError, match="manifest content digest mismatch"):
        registry.pull(f"{url}/{name}", tmp_path / "out")
    from schedgen.registry._manifest import FileEntry

    doc["content"] = content_digest([FileEntry(**f) for f in doc["files"]])
    client.put_object(Bucket=bucket, Key=mkey, Body=json.dumps(doc).encode())
    with pytest.raises(StoreError, match="does not carry its content digest"):
        registry.pull(f"{url}/{name}", tmp_path / "out")


def test_a_store_that_fails_its_own_digests_is_refused_after_the_manifest(stores, tmp_path):
    """Files that match a (consistent) manifest but whose arrays fail the store's checks:
    the second stage of a pull, the store's own reader, refuses them."""
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(stores[0], bad)
    import zarr

    arr = zarr.open_array(str(bad / "indices"), mode="r+")  # two indices swapped: still a valid
    arr[0], arr[1] = int(arr[1]), int(arr[0])              # chunk, caught only by the digest
    files = tuple(e for _, e in local_files(bad))
    content = content_digest(files)
    name = f"bad-{content[:32]}.zarr"
    good = make_manifest(stores[0])[0]
    m = Manifest(name, "bad.zarr", "k", good.digest, good.attributes_digest, content, files)
    reg = tmp_path / "reg"
    shutil.copytree(bad, reg / name)
    (reg / name / "manifest.json").write_bytes(m.to_bytes())
    with pytest.raises(StoreError, match="digest mismatch .*the store was modified or is corrupt"):
        registry.pull(str(reg / name), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- http, read-only


@pytest.fixture
def http_registry(stores, tmp_path):
    """A local-folder registry holding both stores, served read-only on 127.0.0.1."""
    root = tmp_path / "served"
    names = [registry.push(s, root).name for s in stores]
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, names
    server.shutdown()
    server.server_close()
    t.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_an_http_registry_reads_the_same(http_registry, stores, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url, root, names = http_registry
    strip = lambda rows: [{k: v for k, v in r.items() if k != "path"} for r in rows]  # noqa: E731
    assert strip(registry.list_registry(url)) == strip(registry.list_registry(str(root)))
    rows = json.loads(run("list", url, "--json").stdout)
    assert [r["path"] for r in rows] == [f"{url}/{n}" for n in sorted(names)]
    for s, n in zip(stores, names):
        same_schedule(s, registry.pull(f"{url}/{n}", tmp_path / "out").path)
        same_schedule(s, registry.fetch(f"{url}/{n}"))
    assert json.loads(run("info", f"{url}/{names[0]}", "--json").stdout)["registry"]["name"] == names[0]
    one_line_error(run("push", stores[0], url), f"cannot push to {url}: http(s) registries are read-only")
    chunk = root / names[1] / "indices" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0x80
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="file indices/c/0 has sha256"):
        registry.pull(f"{url}/{names[1]}", tmp_path / "out2")


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line(s3, stores, tmp_path, monkeypatch):
    url, _ = s3
    one_line_error(run("push", stores[0], "nope://bucket/x"), "bad registry URL 'nope://bucket/x'", "unknown protocol 'nope'")
    one_line_error(run("pull", "s3://", tmp_path), "bad registry URL", "expected PROTOCOL://BUCKET/PATH")
    one_line_error(run("pull", f"{url}/missing.zarr", tmp_path), f"no registry manifest at {url}/missing.zarr/manifest.json")
    one_line_error(run("pull", url, tmp_path), f"bad store URL {url}: expected a registry root followed by a store name")
    one_line_error(run("list", url), f"cannot list {url}", "no registry catalog (index.json)")
    one_line_error(run("push", tmp_path / "nothing.zarr", url), "no schedule store at", "does not exist")
    one_line_error(run("push", stores[0], "gs://bucket/x"), "cannot push to gs://bucket/x",
                   "conditional writes", "got gs://")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens there
    err = one_line_error(run("pull", f"{url}/x.zarr", tmp_path), "cannot read the manifest at",
                         "endpoint unreachable, access refused or timed out")
    assert "127.0.0.1:9" in err
    with pytest.raises(ParameterError, match="timeout must be a number of seconds"):
        registry.pull(f"{url}/x.zarr", tmp_path, timeout=0)


# ----------------------------------------------------------------------------- remote replay


def _batches(sampler, epochs=2):
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out.append([list(b) for b in sampler])
    return out


def test_replay_from_a_registry_is_verified_and_cached(s3, stores, tmp_path):
    """ScheduleBatchSampler(url) of a registry store checks the manifest, caches the store
    under its content-addressed name and replays the local store's batches; a tampered file
    is refused with one error."""
    pytest.importorskip("torch")
    from schedgen.torch import ScheduleBatchSampler

    url, client = s3
    name = registry.push(stores[0], url).name
    remote = ScheduleBatchSampler(f"{url}/{name}")
    assert _batches(remote) == _batches(ScheduleBatchSampler(stores[0]))
    assert (tmp_path / "cache" / "schedgen" / "registry" / name).is_dir()  # s3 fixture's XDG_CACHE_HOME
    other = registry.push(stores[1], url).name
    flip_remote(client, url, other, "indices/c/0")
    with pytest.raises(StoreError, match=r"file indices/c/0 has sha256 .*\(modified or corrupt\)"):
        ScheduleBatchSampler(f"{url}/{other}")


def test_replay_over_http_is_verified(http_registry, stores, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from schedgen.torch import ScheduleBatchSampler

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url, root, names = http_registry
    assert _batches(ScheduleBatchSampler(f"{url}/{names[0]}")) == _batches(ScheduleBatchSampler(stores[0]))
    chunk = root / names[1] / "indices" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0x80
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="file indices/c/0 has sha256"):
        ScheduleBatchSampler(f"{url}/{names[1]}")


# ----------------------------------------------------------------------------- review fixes


def flip_local(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def edit_catalog(root: Path, change) -> None:
    idx = json.loads((root / "index.json").read_text())
    for key, e in list(idx["entries"].items()):
        change(idx["entries"], key, e)
    (root / "index.json").write_text(json.dumps(idx))


@pytest.mark.parametrize("form", ["path", "file://"])
def test_list_verify_checks_a_local_registry_in_place(stores, tmp_path, monkeypatch, form):
    """A local-folder (or file://) registry is verified where it is: a flipped byte or a
    file added after the push is FAILED (exit 1); nothing is copied into the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "reg"
    name = registry.push(stores[0], root).name
    url = str(root) if form == "path" else f"file://{root}"
    r = run("list", url, "--verify")
    assert r.exit_code == 0 and r.stdout.strip().endswith("ok"), (r.stdout, r.stderr)
    assert [x["verified"] for x in registry.list_registry(url, verify=True)] == [True]
    flip_local(root / name / "indices" / "c" / "0")
    r = run("list", url, "--verify")
    one_line_error(r, "1 of 1 stores failed verification")
    assert "FAILED" in r.stdout and "file indices/c/0 has sha256" in r.stdout
    flip_local(root / name / "indices" / "c" / "0")  # restored
    (root / name / "batch_offsets" / "c" / "1").write_bytes(b"x")
    [row] = registry.list_registry(url, verify=True)
    assert row["verified"] is False and "file batch_offsets/c/1 is not in the manifest" in row["error"]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_catalog_entry_cannot_forge_verified_or_path(s3, stores, tmp_path, kind):
    url, client = s3
    root = tmp_path / "reg"
    reg_url = str(root) if kind == "local" else url
    name = registry.push(stores[0], reg_url).name
    real = f"{reg_url}/{name}"
    forged = {"verified": True, "path": "s3://trusted-bucket/elsewhere.zarr", "key": "x", "error": None}
    if kind == "local":
        flip_local(root / name / "indices" / "c" / "0")
        edit_catalog(root, lambda entries, k, e: e.update(forged))
    else:
        flip_remote(client, url, name, "indices/c/0")
        bucket, prefix = url[len("s3://"):].split("/", 1)
        idx = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/index.json")["Body"].read())
        for e in idx["entries"].values():
            e.update(forged)
        client.put_object(Bucket=bucket, Key=f"{prefix}/index.json", Body=json.dumps(idx).encode())
    [row] = registry.list_registry(reg_url)
    assert row["path"] == real and row["key"] == "00000000000000aa"
    assert "verified" not in row and "error" not in row  # nothing checked, nothing claimed
    [row] = registry.list_registry(reg_url, verify=True, cache_dir=tmp_path / "c")
    assert row["verified"] is False and "file indices/c/0 has sha256" in row["error"] and row["path"] == real
    r = run("list", reg_url, "--verify")
    one_line_error(r, "1 of 1 stores failed verification")
    assert "FAILED" in r.stdout and "trusted-bucket" not in r.stdout


@pytest.mark.parametrize("field,value", [
    ("digest", "f" * 64), ("method", "mmd"), ("k", 11), ("epochs", 9), ("n_batches", 1), ("dataset", "cifar10"),
    ("bytes", 1),
])
def test_list_verify_checks_the_catalog_entry_against_manifest_and_store(stores, tmp_path, field, value):
    """An intact store under a catalog entry that lies about it: FAILED, naming the field."""
    root = tmp_path / "reg"
    registry.push(stores[0], root)
    assert [x["verified"] for x in registry.list_registry(str(root), verify=True)] == [True]
    edit_catalog(root, lambda entries, k, e: e.update({field: value}))
    [row] = registry.list_registry(str(root), verify=True)
    assert row["verified"] is False and f"the catalog says {field}=" in row["error"], row
    assert row[field] == value  # the row still shows what the catalog says, flagged


def test_list_shows_a_catalog_entry_without_its_optional_fields(stores, tmp_path):
    """Only name, digest, content, method, k, epochs and n_batches are required: the CLI's
    table reads the others with .get (a catalog entry written by another schedgen)."""
    root = tmp_path / "reg"
    registry.push(stores[0], root)
    optional = ("dataset", "split", "solver", "kernel", "n_samples", "files", "bytes", "created", "schedgen_version")
    edit_catalog(root, lambda entries, k, e: [e.pop(f) for f in optional])
    r = run("list", root)
    assert r.exit_code == 0 and "random k=10 22 batches None (None)" in r.stdout, (r.stdout, r.stderr)


def _drop(field):
    return lambda entries, k, e: e.pop(field)


def _set(field, value):
    return lambda entries, k, e: e.update({field: value})


def _rekey(new):
    return lambda entries, k, e: entries.update({new: entries.pop(k)})


@pytest.mark.parametrize("change,needle", [
    (_set("name", "../x"), "'name' must be a store name"),
    (_set("name", "../../etc-" + "0" * 32 + ".zarr"), "'name' must be a store name"),
    (_set("name", "other-" + "0" * 32 + ".zarr"), "does not carry its content digest"),
    (_set("replaces", "a/b.zarr"), "'replaces' must be a store name"),
    (_drop("n_batches"), "lacks 'n_batches'"),
    (_drop("name"), "lacks 'name'"),
    (_set("k", "10"), "'k' must be an integer"),
    (_set("k", True), "'k' must be an integer"),
    (_set("epochs", -1), "'epochs' must be >= 0"),
    (_set("method", ["random"]), "'method' must be a short string"),
    (_set("digest", "F" * 64), "'digest' must be 64 lowercase hex digits"),
    (_set("dataset", {"name": "x"}), "'dataset' must be a short string"),
    (_rekey("../x"), "the key must be 16 hex digits"),
    (lambda entries, k, e: entries.update({k: [e]}), "must be an object, got list"),
])
def test_a_malformed_catalog_is_one_line_not_a_traceback(stores, tmp_path, change, needle):
    root = tmp_path / "reg"
    registry.push(stores[0], root)
    edit_catalog(root, change)
    with pytest.raises(StoreError, match=f"{root}/index.json: catalog entry .*{needle.replace('(', '.')}"):
        registry.list_registry(str(root))
    for args in (("list", root), ("list", root, "--verify"), ("list", root, "--json")):
        one_line_error(run(*args), "catalog entry", needle)
    one_line_error(run("push", stores[1], root), "catalog entry", needle)  # push refuses to merge into it


def test_replay_of_a_plain_store_whose_manifest_probe_is_access_denied(s3, stores, monkeypatch):
    """On S3 without s3:ListBucket a missing manifest.json is 403, not 404: the probe takes
    it as "not a registry store" and the plain store replays as before."""
    pytest.importorskip("torch")
    import s3fs

    from schedgen.torch import ScheduleBatchSampler

    url, client = s3
    bucket, prefix = url[len("s3://"):].split("/", 1)
    for f, e in local_files(stores[0]):
        client.put_object(Bucket=bucket, Key=f"{prefix}/plain.zarr/{e.path}", Body=f.read_bytes())
    plain = f"{url}/plain.zarr"
    assert registry.registry_store(plain) is None  # a 404: not a registry store

    def deny(orig):
        async def wrapped(self, path, *args, **kwargs):
            if str(path).endswith("/manifest.json"):
                raise PermissionError(13, "Access Denied")
            return await orig(self, path, *args, **kwargs)
        return wrapped

    for meth in ("_info", "_cat_file"):
        monkeypatch.setattr(s3fs.S3FileSystem, meth, deny(getattr(s3fs.S3FileSystem, meth)))
    assert registry.registry_store(plain) is None
    assert _batches(ScheduleBatchSampler(plain)) == _batches(ScheduleBatchSampler(stores[0]))
    with pytest.raises(StoreError, match="cannot read the manifest .*access refused"):  # pull still says why
        registry.pull(plain, "unused")


def test_access_denied_classification():
    from botocore.exceptions import ClientError

    from schedgen.registry._remote import access_denied

    def client_error(code, status):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject")

    def wrapped(cause):
        try:
            raise OSError("wrapped") from cause
        except OSError as exc:
            return exc

    assert access_denied(PermissionError("Access Denied"))
    assert access_denied(wrapped(client_error("AccessDenied", 403)))
    assert access_denied(wrapped(client_error("403", 403)))
    assert not access_denied(wrapped(client_error("NoSuchBucket", 404)))
    import aiohttp

    def http_error(status):
        return aiohttp.ClientResponseError(None, (), status=status, message="x")

    assert access_denied(wrapped(http_error(403))) and not access_denied(wrapped(http_error(500)))
    assert not access_denied(ConnectionRefusedError("refused"))
    assert not access_denied(TimeoutError("timed out"))


def test_a_file_larger_than_its_manifest_entry_is_refused_before_it_is_read(s3, stores, tmp_path, monkeypatch):
    import s3fs

    url, client = s3
    name = registry.push(stores[0], url).name
    bucket, prefix = url[len("s3://"):].split("/", 1)
    key = f"{prefix}/{name}/indices/c/0"
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=data + b"\0" * 4096)
    read = []
    orig = s3fs.S3FileSystem._cat_file

    async def spy(self, path, *args, **kwargs):
        read.append(str(path))
        return await orig(self, path, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", spy)
    with pytest.raises(StoreError, match=rf"store file indices/c/0 at .* is {len(data) + 4096} bytes; expected at most {len(data)}"):
        registry.pull(f"{url}/{name}", tmp_path / "out")
    assert any(p.endswith("manifest.json") for p in read) and not any(p.endswith("indices/c/0") for p in read)


@pytest.mark.parametrize("stray", ["creds.txt", "indices/notes", "indices/c/0.bak", "extra/zarr.json", "indices/c/x"])
def test_push_uploads_only_what_a_store_holds(stores, tmp_path, stray):
    import shutil

    s = tmp_path / stores[0].name
    shutil.copytree(stores[0], s)
    (s / stray).parent.mkdir(parents=True, exist_ok=True)
    (s / stray).write_text("aws_secret_access_key = SUPERSECRET\n")
    with pytest.raises(StoreError, match=f"{stray} is not part of a schedule store .*remove it before pushing"):
        registry.push(s, tmp_path / "reg")
    assert not (tmp_path / "reg").exists()  # refused before anything is written
    one_line_error(run("push", s, tmp_path / "reg"), f"{stray} is not part of a schedule store")
    (s / stray).unlink()
    assert registry.push(s, tmp_path / "reg").name == make_manifest(stores[0])[0].name


def test_store_file_rule():
    from schedgen.registry._manifest import is_store_file

    arrays = {"indices", "batch_offsets", "epoch_offsets", "class_proportions"}
    ok = ["zarr.json", "indices/zarr.json", "indices/c/0", "indices/c/12", "class_proportions/c/0/0", "indices/c"]
    bad = ["creds.txt", "indices/creds", "other/zarr.json", "other/c/0", "indices/c/0/x", "indices/c/-1",
           "indices/d/0", "indices/c//0", "indices/c/0.tmp", "indices/zarr.json.bak", "indices"]
    assert [is_store_file(p, arrays) for p in ok] == [True] * len(ok)
    assert [is_store_file(p, arrays) for p in bad] == [False] * len(bad)


# ----------------------------------------------------------------------------- untested protections


def _manifest_bytes(paths, **over) -> bytes:
    from schedgen.registry._manifest import FileEntry

    files = [FileEntry(p, "0" * 64, 1) for p in sorted(paths)]
    c = content_digest(files)
    doc = {"format": "schedgen-manifest-1", "name": f"x-{c[:32]}.zarr", "store": "x", "key": "k",
           "digest": "0" * 64, "attributes_digest": None, "content": c,
           "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files], **over}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("path", [
    "../a", "a/../b", "..", "a/..", "/etc/passwd", "a//b", "./a", "a/./b", "a/", "a\\..\\b", "a\\b",
    "a\x00b", "zarr.json\n", "\na", " a", "ａ", "manifest.json", ".hidden", "",
])
def test_manifest_path_rules(path):
    Manifest.from_bytes(_manifest_bytes(["zarr.json", "indices/c/0"]), "m")  # the frame is valid
    with pytest.raises(StoreError, match="manifest lists a file path that is not allowed"):
        Manifest.from_bytes(_manifest_bytes(["zarr.json", path]), "m")


def test_a_manifest_of_another_name_is_refused(stores, tmp_path):
    import shutil

    root = tmp_path / "reg"
    name = registry.push(stores[0], root).name
    other = name.replace("-00000000000000aa-", "-00000000000000ab-")
    shutil.copytree(root / name, root / other)  # a valid store and manifest, served under another name
    with pytest.raises(StoreError, match=f"the manifest is that of {name}, not of {other}"):
        registry.pull(str(root / other), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_manifest_size_limit(stores, tmp_path, monkeypatch):
    from schedgen.registry import _manifest

    data = _manifest_bytes(["zarr.json"])
    monkeypatch.setattr(_manifest, "MAX_MANIFEST_BYTES", len(data) - 1)
    with pytest.raises(StoreError, match=f"m: manifest is {len(data)} bytes; expected at most {len(data) - 1}"):
        Manifest.from_bytes(data, "m")
    root = tmp_path / "reg"
    monkeypatch.setattr(_manifest, "MAX_MANIFEST_BYTES", 1 << 20)
    name = registry.push(stores[0], root).name
    size = (root / name / "manifest.json").stat().st_size
    monkeypatch.setattr(_manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(StoreError, match=f"the manifest at {root}/{name}/manifest.json is {size} bytes; expected at most 100"):
        registry.pull(str(root / name), tmp_path / "out")


def test_credentials_never_shown_in_urls_or_errors(tmp_path):
    from schedgen.registry._remote import display_url, one_line

    assert display_url("s3://AKIAX:s3cr3t@bucket/x") == "s3://bucket/x"
    assert display_url("https://user:pa:ss@host:8443/reg") == "https://host:8443/reg"
    assert display_url("/local/path@x") == "/local/path@x"
    assert one_line(OSError("GET https://user:s3cr3t@host/x failed; also s3://k:v@b/y")) == (
        "OSError: GET https://host/x failed; also s3://b/y")
    for cmd in (("pull", "http://user:s3cr3t@127.0.0.1:9/reg/x.zarr", tmp_path),
                ("list", "http://user:s3cr3t@127.0.0.1:9/reg"),
                ("info", "http://user:s3cr3t@127.0.0.1:9/reg/x.zarr")):
        r = run(*cmd)
        assert r.exit_code == 1 and "s3cr3t" not in r.stdout + r.stderr and "user" not in r.stderr, r.stderr
    with pytest.raises(StoreError) as e:
        registry.pull("http://user:s3cr3t@127.0.0.1:9/reg/x.zarr", tmp_path)
    assert "s3cr3t" not in str(e.value) and "127.0.0.1:9" in str(e.value)


def test_lost_race_classification(s3):
    """A failed precondition (412, AWS's 409, s3fs's FileExistsError) is a lost race, to be
    retried; anything else (403, a timeout) is an error, not retried."""
    from botocore.exceptions import ClientError

    from schedgen.registry._remote import _lost_race, resolve

    def client_error(code, status):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    def wrapped(cause):
        try:
            raise OSError("wrapped") from cause
        except OSError as exc:
            return exc

    assert _lost_race(FileExistsError("exists"))
    for code, status in (("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)):
        assert _lost_race(wrapped(client_error(code, status)))
    for exc in (wrapped(client_error("AccessDenied", 403)), PermissionError("denied"), TimeoutError("t"),
                OSError("other")):
        assert not _lost_race(exc)
    # Against the S3 endpoint: both conditional forms lose to an existing object / a newer ETag.
    url, _ = s3
    loc = resolve(url)
    assert loc._put_if("doc.json", b"1", None) is True
    assert loc._put_if("doc.json", b"2", None) is False  # If-None-Match: * on an existing key
    _, etag = loc._get_with_etag("doc.json")
    assert loc._put_if("doc.json", b"3", etag) is True
    assert loc._put_if("doc.json", b"4", etag) is False  # If-Match on a stale ETag
    assert loc._get_with_etag("doc.json")[0] == b"3"


def test_credentials_never_shown_by_list_and_info_on_a_reachable_server(http_registry, tmp_path, monkeypatch):
    """The server answers (it ignores the user:password part), so the paths that print the URL
    itself -- info's "path", list's "no catalog" error -- are reached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url, root, names = http_registry
    secret_url = url.replace("http://", "http://user:s3cr3t@")
    r = run("info", f"{secret_url}/{names[0]}", "--json")
    assert r.exit_code == 0, r.stderr
    assert "s3cr3t" not in r.stdout and json.loads(r.stdout)["path"] == f"{url}/{names[0]}"
    r = run("list", f"{secret_url}/{names[0]}")  # a store, not a registry: no catalog there
    err = one_line_error(r, "no registry catalog")
    assert "s3cr3t" not in err
