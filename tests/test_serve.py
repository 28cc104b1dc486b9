"""schedgen serve with the real server on 127.0.0.1: uvicorn in a thread on a free port,
builds in real worker processes, clients over real sockets (httpx, http.client and raw
sockets where a client library would clean the path up)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from schedgen.build import BuildConfig, build  # noqa: E402
from schedgen.cli import app as cli_app  # noqa: E402
from schedgen.locks import exclusive_lock  # noqa: E402
from schedgen.registry import push  # noqa: E402
from schedgen.serve import MAX_BODY, bind, create_app  # noqa: E402
from schedgen.torch import ScheduleBatchSampler  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = {"dataset": "digits", "method": "random", "k": 64, "epochs": 2}


class Server:
    """A uvicorn server of ``app`` in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app):
        self.app = app
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        self.app.state.pool.join(30)


def wait_done(client, url, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = client.get(url, headers=AUTH).json()
        if st["state"] in ("done", "failed", "cancelled"):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (http.client sends it unnormalised)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def replayed(source) -> list[list[int]]:
    s = ScheduleBatchSampler(source)
    out = []
    for epoch in range(s.n_epochs):
        s.set_epoch(epoch)
        out.extend([list(map(int, b)) for b in s])
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A registry root holding one pushed store (and a secret outside it), served with a token."""
    base = tmp_path_factory.mktemp("serve")
    root = base / "registry"
    root.mkdir()
    (base / "secret.txt").write_text("TOP-SECRET-OUTSIDE-ROOT")
    local = build(BuildConfig(dataset="digits", method="random", k=100, epochs=3, out_dir=base / "local"))
    pushed = push(local.path, root)
    srv = Server(create_app(root, token=TOKEN, workers=1, queue=2))
    yield {"srv": srv, "root": root, "base": base, "pushed": pushed, "local": local.path}
    srv.stop()


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served["srv"].url, timeout=60) as c:
        yield c


# --------------------------------------------------------------------------- reading


def test_catalog_lists_the_registry(served, client):
    r = client.get("/schedules")
    assert r.status_code == 200
    rows = r.json()["stores"]
    name = served["pushed"].name
    row = next(x for x in rows if x["name"] == name)
    assert row["url"] == f"{served['srv'].url}/schedules/{name}"
    assert row["method"] == "random" and row["k"] == 100 and row["digest"] == served["pushed"].digest
    assert str(served["root"]) not in r.text  # no server path in the catalog


def test_replay_over_http_equals_the_local_replay(served):
    url = f"{served['srv'].url}/schedules/{served['pushed'].name}"
    remote = replayed(url)
    assert remote == replayed(served["local"]) == replayed(served["root"] / served["pushed"].name)
    assert len(remote) == 3 * 15  # 3 epochs of ceil(1437 / 100) batches


def test_replay_of_a_tampered_served_store_is_refused(served, tmp_path, monkeypatch):
    """The sampler's fetch verifies what the server sends against the manifest."""
    import shutil

    name = served["pushed"].name
    bad = served["root"] / ("tampered-" + name)
    shutil.copytree(served["root"] / name, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["name"] = bad.name
    (bad / "manifest.json").write_text(json.dumps(manifest))
    chunk = next(p for p in sorted(bad.rglob("*")) if p.is_file() and "/c/" in p.as_posix())
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 1
    chunk.write_bytes(bytes(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(Exception, match="sha256"):
        ScheduleBatchSampler(f"{served['srv'].url}/schedules/{bad.name}")
    shutil.rmtree(bad)


TRAVERSALS = [
    "/schedules/../secret.txt",
    "/schedules/../../secret.txt",
    "/schedules/%2e%2e/secret.txt",
    "/schedules/%2E%2E/secret.txt",
    "/schedules/..%2fsecret.txt",
    "/schedules/{name}/..%2f..%2fsecret.txt",
    "/schedules/{name}/%2e%2e/%2e%2e/secret.txt",
    "/schedules/{name}/../../secret.txt",
    "/schedules/..%5csecret.txt",
    "/schedules/..\\secret.txt",
    "/schedules/{name}/..\\..\\secret.txt",
    "/schedules//etc/passwd",
    "/schedules/%2fetc%2fpasswd",
    "/schedules/.schedgen-builds",
    "/schedules/.index.json.lock",
    "/schedules/{name}",  # a folder: no listing
    "/schedules/{name}/",
    "/schedules/out.zarr/secret.txt",  # symlinked folder out of the root
    "/schedules/{name}/leak.json",  # symlinked file out of the root
    # inside the root once resolved, still refused: no dot segment, no percent-encoding
    "/schedules/{name}/../{name}/manifest.json",
    "/schedules/{name}/./manifest.json",
    "/schedules/{name}/manifest%2ejson",
]


def test_traversal_and_symlinks_out_of_the_root_are_404(served):
    root, name = served["root"], served["pushed"].name
    (root / "out.zarr").symlink_to(served["base"], target_is_directory=True)
    (root / name / "leak.json").symlink_to(served["base"] / "secret.txt")
    try:
        for path in TRAVERSALS:
            status, body = raw_get(served["srv"].port, path.format(name=name))
            assert status == 404, (path, status)
            assert b"SECRET" not in body
        # a symlink that stays inside the root is served
        (root / name / "inside.json").symlink_to(root / name / "manifest.json")
        status, body = raw_get(served["srv"].port, f"/schedules/{name}/inside.json")
        assert status == 200 and body == (root / name / "manifest.json").read_bytes()
    finally:
        for p in (root / "out.zarr", root / name / "leak.json", root / name / "inside.json"):
            if p.is_symlink():
                p.unlink()


def test_store_files_are_read_only(served, client):
    name = served["pushed"].name
    for method in ("PUT", "POST", "DELETE"):
        assert client.request(method, f"/schedules/{name}/manifest.json", headers=AUTH).status_code == 405


def test_the_server_survives_clients_that_disconnect_mid_download(served, client):
    big = served["root"] / "big.zarr"
    big.mkdir()
    blob = np.random.default_rng(0).bytes(8 << 20)
    (big / "blob").write_bytes(blob)
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", served["srv"].port), timeout=10)
            s.sendall(b"GET /schedules/big.zarr/blob HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            # reset, not a polite close: the server's next write fails
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        r = client.get("/schedules/big.zarr/blob")
        assert r.status_code == 200 and r.content == blob
        assert client.get("/schedules").status_code == 200
    finally:
        (big / "blob").unlink()
        big.rmdir()


# --------------------------------------------------------------------------- builds


def test_twenty_identical_requests_build_once(served, client):
    before = client.get("/builds", headers=AUTH).json()

    def post(_):
        # the same options, spelled differently (defaults given or not, case)
        body = dict(SMALL, seed=0) if _ % 2 else dict(SMALL, dataset="DIGITS")
        return client.post("/builds", json=body, headers=AUTH)

    with ThreadPoolExecutor(20) as ex:
        responses = list(ex.map(post, range(20)))
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert responses[0].headers["location"] == responses[0].json()["status_url"]
    st = wait_done(client, responses[0].json()["status_url"])
    assert st["state"] == "done", st
    assert st["cache_hit"] is False and st["progress"] == {"stage": "publish", "done": 1, "total": 1}
    after = client.get("/builds", headers=AUTH).json()
    assert after["computed"] - before["computed"] == 1
    assert after["accepted"] - before["accepted"] == 1
    assert after["deduplicated"] - before["deduplicated"] == 19
    builds = served["root"] / ".schedgen-builds"
    assert len([p for p in builds.glob("*.zarr") if "k64" in p.name]) == 1
    names = [r["name"] for r in client.get("/schedules").json()["stores"] if r["k"] == 64]
    assert names == [st["store"]]
    # the same request again: the done job, no new build
    again = client.post("/builds", json=SMALL, headers=AUTH)
    assert again.status_code == 202 and again.json()["state"] == "done" and again.json()["id"] == st["id"]
    # the built store replays over HTTP as it does locally
    assert replayed(st["url"]) == replayed(served["root"] / st["store"])


def test_builds_need_the_token(served, client):
    assert client.post("/builds", json=SMALL).status_code == 401
    r = client.post("/builds", json=SMALL, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and TOKEN not in r.text
    assert client.post("/builds", json=SMALL, headers={"Authorization": TOKEN}).status_code == 401
    assert client.post("/builds", json=SMALL, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/builds/0123456789abcdef").status_code == 401
    assert client.get("/builds").status_code == 401
    assert client.get("/builds/0123456789abcdef", headers=AUTH).status_code == 404


def test_no_token_file_means_builds_are_disabled(tmp_path):
    srv = Server(create_app(tmp_path))
    try:
        with httpx.Client(base_url=srv.url) as c:
            assert c.post("/builds", json=SMALL).status_code == 403
            assert c.post("/builds", json=SMALL, headers=AUTH).status_code == 403
            assert c.get("/schedules").json() == {"root": "schedules", "stores": []}
    finally:
        srv.stop()


@pytest.mark.parametrize("body, match", [
    ({"k": 0}, "k must be an integer >= 1, got 0"),
    ({"k": True}, "k must be"),
    ({"method": "nope"}, "method"),
    ({"dataset": "npz:/etc/passwd"}, "dataset must be one of"),
    ({"dataset": "array:/data"}, "dataset must be one of"),
    ({"dataset": "/etc/passwd"}, "dataset must be one of"),
    ({"dataset": "../digits"}, "dataset must be one of"),
    ({"dataset": ["digits"]}, "dataset must be one of"),
    ({"data_dir": "/"}, "unknown build option 'data_dir'"),
    ({"out_dir": "/tmp"}, "unknown build option 'out_dir'"),
    ({"force": True}, "unknown build option 'force'"),
    ({"method": "random", "solver": "lp"}, "applies only to --method mmd"),
    ([1, 2], "JSON object"),
    ("{not json", "invalid JSON"),
])
def test_a_bad_option_is_400_with_one_line(client, body, match):
    if isinstance(body, str):
        r = client.post("/builds", content=body, headers=AUTH)
    else:
        r = client.post("/builds", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert re.search(match, msg) and "\n" not in msg and len(msg) < 400


def test_an_oversized_body_is_413(served, client):
    big = {"groups": "x" * (MAX_BODY + 10)}
    assert client.post("/builds", json=big, headers=AUTH).status_code == 413

    def chunks():  # no Content-Length: the server counts what it reads
        for _ in range(20):
            yield b" " * 8192

    assert client.post("/builds", content=chunks(), headers=AUTH).status_code == 413
    # a declared length above the bound is refused before any of the body is read
    with socket.create_connection(("127.0.0.1", served["srv"].port), timeout=10) as s:
        s.sendall(f"POST /builds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Length: 99999999\r\n\r\n{}".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 413")


def test_a_full_queue_is_429(served, client, tmp_path):
    """workers=1, queue=2: the first build holds the worker (its store's build lock is
    held here), two wait, the fourth is refused; an identical request takes no slot."""
    bodies = [dict(SMALL, k=20, seed=s) for s in range(4)]
    probe = build(BuildConfig(**bodies[0], out_dir=tmp_path))  # where the server will write it
    target = served["root"] / ".schedgen-builds" / probe.path.name
    target.parent.mkdir(exist_ok=True)
    with exclusive_lock(target, timeout=0):
        first = client.post("/builds", json=bodies[0], headers=AUTH)
        assert first.status_code == 202
        assert client.post("/builds", json=bodies[1], headers=AUTH).status_code == 202
        assert client.post("/builds", json=bodies[2], headers=AUTH).status_code == 202
        full = client.post("/builds", json=bodies[3], headers=AUTH)
        assert full.status_code == 429 and "queue is full" in full.json()["error"]
        assert full.headers["retry-after"]
        assert client.post("/builds", json=bodies[1], headers=AUTH).status_code == 202  # deduplicated
        assert client.get(first.json()["status_url"], headers=AUTH).json()["state"] in ("queued", "running")
    for b in bodies[:3]:
        st = wait_done(client, client.post("/builds", json=b, headers=AUTH).json()["status_url"])
        assert st["state"] == "done", st
    assert client.post("/builds", json=bodies[3], headers=AUTH).status_code == 202


def test_stopping_cancels_queued_builds_and_interrupts_the_running_one(tmp_path):
    """The running build (waiting for its lock here) gets SIGTERM, which its worker turns
    into the build's KeyboardInterrupt path; the queued one is cancelled; nothing is published."""
    root = tmp_path / "root"
    root.mkdir()
    app = create_app(root, token=TOKEN, workers=1, queue=1)
    srv = Server(app)
    bodies = [dict(SMALL, k=30, seed=s) for s in range(2)]
    probe = build(BuildConfig(**bodies[0], out_dir=tmp_path / "probe"))
    target = root / ".schedgen-builds" / probe.path.name
    target.parent.mkdir()
    with exclusive_lock(target, timeout=0), httpx.Client(base_url=srv.url, timeout=30) as c:
        first = c.post("/builds", json=bodies[0], headers=AUTH).json()
        second = c.post("/builds", json=bodies[1], headers=AUTH).json()
        deadline = time.monotonic() + 60
        while c.get(first["status_url"], headers=AUTH).json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        srv.stop()
        assert app.state.pool.status(second["id"])["state"] == "cancelled"
        st = app.state.pool.status(first["id"])
        assert st["state"] == "failed" and st["error"].startswith("interrupted"), st
    assert not target.exists() and not (root / "index.json").exists()


def test_a_failed_build_reports_one_line(served, client):
    r = client.post("/builds", json={"dataset": "svhn", "k": 10, "method": "random"}, headers=AUTH)
    assert r.status_code == 202
    st = wait_done(client, r.json()["status_url"])
    assert st["state"] == "failed" and "\n" not in st["error"] and st["error"]
    assert str(served["root"]) not in st["error"]
    # Started without --data-dir: the default data folder is the server's path too.
    from pathlib import Path

    from schedgen.data import default_data_dir

    assert str(Path(default_data_dir()).expanduser().absolute()) not in st["error"]
    assert "<data-dir>" in st["error"], st["error"]


def test_the_token_file_line_is_compared_stripped(tmp_path):
    """A token given with surrounding whitespace is the token without it (the header is stripped too)."""
    app = create_app(tmp_path, token="  tok3n \n")
    from starlette.testclient import TestClient

    with TestClient(app) as c:
        r = c.post("/builds", json={"dataset": "digits", "k": 10, "method": "random"},
                   headers={"Authorization": "Bearer tok3n"})
        assert r.status_code == 202, r.text


# --------------------------------------------------------------------------- the command


def test_serve_command_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    cases = [
        (["serve", "--root", str(tmp_path / "missing")], "--root must be an existing folder"),
        (["serve", "--root", str(tmp_path), "--port", "http"], "port"),
        (["serve", "--root", str(tmp_path), "--port", "70000"], "port"),
        (["serve", "--root", str(tmp_path), "--token-file", str(tmp_path / "none")], "cannot read the token file"),
        (["serve", "--root", str(tmp_path), "--workers", "0"], "workers"),
    ]
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    cases.append((["serve", "--root", str(tmp_path), "--token-file", str(empty)], "one line of printable ASCII"))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        cases.append((["serve", "--root", str(tmp_path), "--port", str(busy.getsockname()[1])], "cannot listen"))
        for args, match in cases:
            r = runner.invoke(cli_app, args)
            assert r.exit_code == 1, (args, r.output)
            lines = [x for x in r.output.splitlines() if x.startswith("error:")]
            assert len(lines) == 1 and match in lines[0], (args, r.output)


def test_the_listening_socket_is_tcp_so_responses_are_not_delayed():
    """asyncio sets TCP_NODELAY on accepted sockets only when the listening socket's proto
    is IPPROTO_TCP; socket.create_server's proto 0 made each keep-alive response wait for
    the client's delayed ACK (~40 ms)."""
    with bind("127.0.0.1", 0) as s:
        assert s.proto == socket.IPPROTO_TCP
        with socket.create_connection(s.getsockname()[:2]):
            conn, _ = s.accept()
            with conn:
                assert conn.proto == socket.IPPROTO_TCP


def test_serve_command_stops_cleanly_on_ctrl_c(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    p = subprocess.Popen([sys.executable, "-m", "schedgen.cli", "serve", "--root", str(tmp_path), "--port", "0",
                          "--token-file", str(token)], stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/schedules", line)
        assert m, line
        assert TOKEN not in line
        with httpx.Client(timeout=30) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert c.get(f"http://127.0.0.1:{m.group(1)}/schedules").status_code == 200
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=30)[1]
        assert p.returncode == 0, rest
        assert "Traceback" not in rest and TOKEN not in rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_without_its_extra_is_one_line(tmp_path, monkeypatch):
    """No traceback when starlette/uvicorn are missing: the install hint, exit 1."""
    import importlib.util
    import sys as _sys

    from typer.testing import CliRunner

    from schedgen.cli import app
    from toys import one_line_error

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "starlette" else real(name, *a))
    for mod in [m for m in _sys.modules if m == "schedgen.serve" or m.startswith("schedgen.serve.")]:
        monkeypatch.delitem(_sys.modules, mod)
    # A missing root: were the extra check gone, the command would fail on the root, not serve forever.
    r = CliRunner().invoke(app, ["serve", "--root", str(tmp_path / "missing")])
    one_line_error(r, "schedgen serve needs starlette", "pip install 'schedgen[serve]'")
