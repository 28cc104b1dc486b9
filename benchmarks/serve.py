"""``schedgen serve`` on this machine: store files per second, and the latency of a cache-hit
build request under concurrent clients.

The server is the real command (``python -m schedgen.cli serve``, its own process, uvicorn
with its default access log) on 127.0.0.1; the clients are ``httpx.AsyncClient`` in this
process, so client and server share the machine's cores (a single-machine figure, not a
network one).

Measured:

* ``files``: GET of a store's files by ``--clients`` concurrent clients, ``--requests`` in
  all, for the smallest file (``zarr.json`` of the group) and the largest (the indices
  chunk of a digits ``random`` schedule, k=64, ``--epochs`` epochs): requests/s, MB/s,
  latency median and p95;
* ``build_dedup_hit``: POST /builds of options whose job is done (the in-memory job table
  answers: auth, body checks, option validation, dedupe): latency under ``--clients``
  concurrent clients;
* ``build_store_hit``: POST /builds of options whose store the server built before it was
  restarted (its job table is empty): the request is queued, a worker process runs
  :func:`schedgen.build.build` (a cache hit: the dataset summary, the store read) and the
  push to the registry (a no-op: the manifest is there); latency from POST to ``done`` as
  seen by polling, ``--clients`` clients each with its own options, one worker.

Usage::

    python benchmarks/serve.py [--clients 8] [--requests 2000] [--rounds 3]

Writes ``benchmarks/results/serve.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
TOKEN = "benchmark-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_server(root: Path, tmp: Path, workers: int) -> tuple[subprocess.Popen, str]:
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    log = open(tmp / f"server-{time.time_ns()}.log", "w+")
    p = subprocess.Popen([sys.executable, "-m", "schedgen.cli", "serve", "--root", str(root), "--port", "0",
                          "--token-file", str(token), "--workers", str(workers)], stderr=log, stdout=log)
    deadline = time.monotonic() + 60
    while True:
        log.seek(0)
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/schedules", log.read())
        if m:
            return p, m.group(1)
        if p.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise SystemExit(f"the server did not start:\n{log.read()}")
        time.sleep(0.05)


def stop_server(p: subprocess.Popen) -> None:
    p.send_signal(2)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def summary(lat: list[float], seconds: float | None = None, n_bytes: int = 0) -> dict:
    lat = sorted(lat)
    out = {"requests": len(lat), "latency_ms_median": round(1e3 * statistics.median(lat), 2),
           "latency_ms_p95": round(1e3 * lat[int(0.95 * (len(lat) - 1))], 2)}
    if seconds is not None:
        out["seconds"] = round(seconds, 3)
        out["requests_per_s"] = round(len(lat) / seconds, 1)
        if n_bytes:
            out["mb_per_s"] = round(n_bytes * len(lat) / seconds / 1e6, 1)
    return out


async def hammer(url: str, clients: int, total: int, method: str = "GET", body=None) -> tuple[list[float], float]:
    import httpx

    lat: list[float] = []
    remaining = [total]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(c):
        while remaining[0] > 0:
            remaining[0] -= 1
            t = time.perf_counter()
            r = await (c.get(url) if method == "GET" else c.post(url, json=body, headers=AUTH))
            lat.append(time.perf_counter() - t)
            assert r.status_code in (200, 202), (r.status_code, r.text[:200])

    async with httpx.AsyncClient(limits=limits, timeout=60) as c:
        await (c.get(url) if method == "GET" else c.post(url, json=body, headers=AUTH))  # warm the connection
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        return lat, time.perf_counter() - t0


async def store_hits(base: str, bodies: list[dict]) -> list[float]:
    """POST each body (one client each, all at once) and poll its job until done."""
    import httpx

    async def one(c, body):
        t = time.perf_counter()
        st = (await c.post(f"{base}/builds", json=body, headers=AUTH)).json()
        while st["state"] not in ("done", "failed"):
            await asyncio.sleep(0.005)
            st = (await c.get(st["status_url"], headers=AUTH)).json()
        assert st["state"] == "done" and st["cache_hit"], st
        return time.perf_counter() - t

    async with httpx.AsyncClient(timeout=120) as c:
        return list(await asyncio.gather(*(one(c, b) for b in bodies)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import httpx

    from schedgen.build import BuildConfig, build
    from schedgen.registry import push

    with tempfile.TemporaryDirectory(prefix="schedgen-serve-bench-") as d:
        tmp = Path(d)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # the server (a child) inherits it
        root = tmp / "root"
        root.mkdir()
        base_opts = {"dataset": "digits", "method": "random", "k": 64, "epochs": args.epochs}
        local = build(BuildConfig(**base_opts, out_dir=tmp / "local"))
        pushed = push(local.path, root)
        files = sorted((p for p in (root / pushed.name).rglob("*") if p.is_file() and p.name != "manifest.json"),
                       key=lambda p: p.stat().st_size)
        small, large = files[0], files[-1]

        # Options whose stores the server builds in a first run, then meets again after a restart.
        hit_bodies = [[dict(base_opts, seed=100 + r * args.clients + i) for i in range(args.clients)]
                      for r in range(args.rounds)]
        p, base = start_server(root, tmp, workers=1)
        try:
            with httpx.Client(timeout=120) as c:
                for body in [b for rnd in hit_bodies for b in rnd] + [dict(base_opts, seed=99)]:
                    url = c.post(f"{base}/builds", json=body, headers=AUTH).json()["status_url"]
                    while (st := c.get(url, headers=AUTH).json())["state"] not in ("done", "failed"):
                        time.sleep(0.01)
                    assert st["state"] == "done", st
        finally:
            stop_server(p)

        p, base = start_server(root, tmp, workers=1)
        results: dict = {}
        try:
            for label, f in (("small", small), ("large", large)):
                rel = f.relative_to(root).as_posix()
                lat, secs = asyncio.run(hammer(f"{base}/schedules/{rel}", args.clients, args.requests))
                results[f"files_{label}"] = {"path": rel.split("/", 1)[1], "bytes": f.stat().st_size,
                                             **summary(lat, secs, f.stat().st_size)}
                print(label, results[f"files_{label}"], flush=True)
            lat, secs = asyncio.run(hammer(f"{base}/schedules", args.clients, max(100, args.requests // 10)))
            results["catalog"] = summary(lat, secs)
            # the worker process starts (spawn, imports) with the first job: not part of a hit
            asyncio.run(store_hits(base, [dict(base_opts, seed=99)]))
            rounds = [asyncio.run(store_hits(base, bodies)) for bodies in hit_bodies]
            results["build_store_hit"] = {"clients": args.clients, "workers": 1,
                                          **summary([x for r in rounds for x in r]),
                                          "round_seconds_max": [round(max(r), 3) for r in rounds]}
            print("store hit", results["build_store_hit"], flush=True)
            lat, secs = asyncio.run(hammer(f"{base}/builds", args.clients, max(200, args.requests // 4),
                                           method="POST", body=hit_bodies[0][0]))
            results["build_dedup_hit"] = {"clients": args.clients, **summary(lat, secs)}
            print("dedup hit", results["build_dedup_hit"], flush=True)
        finally:
            stop_server(p)

    out = {
        "benchmark": "serve",
        "clients": args.clients,
        "store": {"method": "random", "dataset": "digits", "k": 64, "epochs": args.epochs,
                  "files": len(files) + 1, "bytes": pushed.n_bytes},
        **results,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
