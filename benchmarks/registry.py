"""Push and pull of the SVHN-shape schedule through a registry on a local S3 endpoint, and
what the manifest verification costs beside the transfer.

The store is a ``random``-method schedule of SVHN's training split shape (N = 73,257,
k = 50; seeded permutations, ``--epochs`` of them), written by schedgen's writer. The
endpoint is moto's ``ThreadedMotoServer`` on 127.0.0.1 (an in-process Python server:
its throughput is far below real S3's, so transfer seconds here are an upper bound on
schedgen's own cost, not a network figure); the client is s3fs.

Per repeat (a fresh bucket each time), timed separately:

* ``push``: :func:`schedgen.registry.push` end to end (read and verify the store, hash its
  files, upload, manifest, catalog);
* ``manifest_build``: the hashing part of a push alone (``make_manifest``: the store's
  own read-and-verify plus sha256 of every file);
* ``pull``: :func:`schedgen.registry.pull` end to end (manifest, download, sha256 of every
  file, the store's digests, rename);
* ``download_only``: the same files fetched with s3fs and nothing checked;
* ``sha256``: hashing the downloaded bytes against the manifest;
* ``store_verify``: :func:`schedgen.store.read_schedule` with ``verify=True`` on the result.

Usage::

    python benchmarks/registry.py [--epochs 10] [--repeats 3]

Writes ``benchmarks/results/registry.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "registry.json"
N, K = 73_257, 50


def svhn_shape_store(path: Path, epochs: int) -> Path:
    from schedgen.store import Schedule, write_schedule

    sizes = [K] * (N // K) + ([N % K] if N % K else [])
    idx = np.concatenate([np.random.default_rng([0, e]).permutation(N) for e in range(epochs)]).astype(np.int64)
    s = Schedule(
        indices=idx,
        batch_offsets=np.concatenate([[0], np.cumsum(sizes * epochs)]).astype(np.int64),
        epoch_offsets=(np.arange(epochs + 1) * len(sizes)).astype(np.int64),
        method="random", params={"seed": 0, "epochs": epochs},
        dataset={"name": "svhn-shape", "split": "train", "n_samples": N, "n_classes": 10, "fingerprint": "0" * 64},
        k=K,
    )
    return Path(write_schedule(s, path / f"svhn-shape-train-random-k{K}-{'0' * 15}{epochs % 10}.zarr"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    from schedgen import registry
    from schedgen.registry._manifest import make_manifest
    from schedgen.registry._remote import resolve
    from schedgen.store import read_schedule

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update({**keys, "AWS_ENDPOINT_URL_S3": endpoint})
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    timings: dict[str, list[float]] = {k: [] for k in
                                       ("push", "manifest_build", "pull", "download_only", "sha256", "store_verify")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            store = svhn_shape_store(tmp, args.epochs)
            m, _ = make_manifest(store)
            for r in range(args.repeats):
                bucket = f"bench-{uuid.uuid4().hex[:10]}"
                client.create_bucket(Bucket=bucket)
                url = f"s3://{bucket}/reg"
                t = time.perf_counter()
                make_manifest(store)
                timings["manifest_build"].append(time.perf_counter() - t)
                pushed = registry.push(store, url)
                timings["push"].append(pushed.seconds)
                pulled = registry.pull(f"{url}/{pushed.name}", tmp / f"pulled{r}")
                timings["pull"].append(pulled.seconds)
                loc = resolve(f"{url}/{pushed.name}")
                t = time.perf_counter()
                blobs = [loc.fs.cat_file(loc.path(f.path)) for f in m.files]
                timings["download_only"].append(time.perf_counter() - t)
                t = time.perf_counter()
                assert all(hashlib.sha256(b).hexdigest() == f.sha256 for b, f in zip(blobs, m.files))
                timings["sha256"].append(time.perf_counter() - t)
                t = time.perf_counter()
                read_schedule(pulled.path, verify=True)
                timings["store_verify"].append(time.perf_counter() - t)
    finally:
        server.stop()
    med = {k: statistics.median(v) for k, v in timings.items()}
    result = {
        "benchmark": "registry",
        "n": N, "k": K, "epochs": args.epochs, "n_indices": N * args.epochs,
        "store_files": len(m.files), "store_bytes": m.n_bytes, "indices_raw_bytes": N * args.epochs * 8,
        "manifest_bytes": len(m.to_bytes()),
        "repeats": args.repeats,
        "seconds_median": med,
        "seconds_all": timings,
        "push_mb_per_s": m.n_bytes / med["push"] / 1e6,
        "pull_mb_per_s": m.n_bytes / med["pull"] / 1e6,
        "manifest_sha256_over_download": med["sha256"] / med["download_only"],
        "verification_share_of_pull": (med["sha256"] + med["store_verify"]) / med["pull"],
        "endpoint": "moto ThreadedMotoServer 127.0.0.1 (in-process), client s3fs",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "load_average": list(os.getloadavg())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("store_files", "store_bytes", "manifest_bytes", "seconds_median",
                                             "manifest_sha256_over_download", "verification_share_of_pull")},
                     indent=1))


if __name__ == "__main__":
    sys.exit(main())
