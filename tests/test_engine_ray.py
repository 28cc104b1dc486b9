"""``--engine ray``: the row-sum pass as Ray tasks gives the in-process bytes.

One local cluster (2 CPUs, 127.0.0.1, no dashboard) serves the whole module; the module
is skipped where Ray is not installed (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import json
import operator
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'): --engine ray is not tested")

from schedgen.build import BuildConfig, build  # noqa: E402
from schedgen.errors import ParameterError  # noqa: E402
from schedgen.kernels import make_kernel, row_sums  # noqa: E402
from schedgen.kernels.blocked import row_block_sums  # noqa: E402
from schedgen.methods import engines  # noqa: E402
from schedgen.methods.engines import EngineError, InProcessEngine, RayEngine, engine_row_sums, make_engine  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if ray.is_initialized():  # another module's session: not ours to configure
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def X():
    # 700 rows: 3 row blocks of 256 (the last partial) and 3 column tiles of 256, so tasks
    # of 1, 2 and 3 blocks cut the grid differently.
    rng = np.random.default_rng([17, 1])
    return (rng.standard_normal((700, 24)) + rng.integers(0, 3, (700, 1))).astype(np.float32)


KERNELS = {"rbf": lambda: make_kernel("rbf", bandwidth=4.0), "poly": lambda: make_kernel("poly", degree=3, coef0=0.2)}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_row_sums_bitwise_equal_to_in_process(X, name):
    kernel = KERNELS[name]()
    ref = row_sums(kernel, X, block_rows=256, block_cols=256)
    if name == "poly":
        assert np.count_nonzero(ref.neg) > 50  # neg_tot is really exercised
    # A float64 oracle (a few ulps of float32 apart): the reference is the right sums at all.
    X64 = X.astype(np.float64)
    K = (X64 @ X64.T / X.shape[1] + 0.2) ** 3 if name == "poly" else \
        np.exp(-np.maximum((X64**2).sum(1)[:, None] + (X64**2).sum(1)[None] - 2 * X64 @ X64.T, 0) / (2 * 16.0))
    np.testing.assert_allclose(ref.s, K.sum(1), rtol=1e-4)
    eng = RayEngine()
    seen = []
    for per_task in (1, 2, 3):
        got = engine_row_sums(eng, kernel, X, block_rows=256, block_cols=256, blocks_per_task=per_task,
                              progress=lambda d, t: seen.append((d, t)))
        assert got.s.tobytes() == ref.s.tobytes(), per_task
        assert got.neg.tobytes() == ref.neg.tobytes(), per_task
    assert seen[-1] == (700, 700)
    # The engine interface's in-process reference gives the same bytes through the same tasks.
    local = engine_row_sums(InProcessEngine(), kernel, X, block_rows=256, block_cols=256, blocks_per_task=2)
    assert local.s.tobytes() == ref.s.tobytes() and local.neg.tobytes() == ref.neg.tobytes()


@pytest.fixture(scope="module")
def local_digests(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    return {s: build(BuildConfig(dataset="digits", k=50, solver=s, out_dir=out)).digest for s in ("lp", "greedy", "swap")}


@pytest.mark.parametrize("solver", ["lp", "greedy", "swap"])
def test_mmd_build_on_ray_has_the_local_digest(tmp_path, local_digests, solver, monkeypatch):
    import schedgen.methods._mmd_build as mmd

    used = []
    real = mmd.engine_row_sums
    monkeypatch.setattr(mmd, "engine_row_sums", lambda eng, *a, **kw: used.append(type(eng)) or real(eng, *a, **kw))
    r = build(BuildConfig(dataset="digits", k=50, solver=solver, engine="ray", out_dir=tmp_path))
    assert used == [RayEngine]  # the row sums were computed by Ray tasks, not read from a cache
    assert not r.cache_hit and r.digest == local_digests[solver]
    assert "engine" not in json.dumps(r.params)  # recorded nowhere in the store
    assert ray.is_initialized()  # the module's session was used, and left open


def test_bad_address_is_one_line():
    with pytest.raises(EngineError) as exc:
        make_engine("ray:127.0.0.1:1")
    assert "\n" not in str(exc.value) and "127.0.0.1:1" in str(exc.value)
    with socket.socket() as srv:  # something listens there, but it is not Ray: bounded, not a hang
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with pytest.raises(EngineError, match="within 1 s: no answer"):
            RayEngine(f"127.0.0.1:{srv.getsockname()[1]}", connect_timeout=1.0)
    with socket.socket() as srv:  # something answers there, but not as a gRPC server (an HTTP/1 server)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def answer():
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with pytest.raises(EngineError, match="does not answer as a Ray cluster"):
            RayEngine(f"127.0.0.1:{srv.getsockname()[1]}", connect_timeout=5.0)
        t.join(5)
    with pytest.raises(ParameterError, match="engine must be"):
        BuildConfig(engine="ray:")


def test_cli_bad_address_exits_1_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run(
        [sys.executable, "-m", "schedgen.cli", "build", "--dataset", "digits", "--k", "50", "--quiet",
         "--engine", "ray:127.0.0.1:1", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1"), r.stderr


def test_failed_task_is_one_line(X):
    eng = RayEngine()
    with pytest.raises(EngineError) as exc:
        eng.map_row_blocks(operator.truediv, eng.broadcast(1.0), [1.0, 0.0, 2.0])
    assert str(exc.value) == "a task on the Ray cluster failed: ZeroDivisionError: float division by zero"
    # A schedgen error in a worker arrives as itself, its one line unchanged.
    plan = engines.plan_row_sums(KERNELS["rbf"](), X, block_rows=256, block_cols=256)
    with pytest.raises(ParameterError, match=r"^i0 must be a multiple of block_rows=256 in \[0, 700\), got 5$"):
        eng.map_row_blocks(row_block_sums, eng.broadcast(plan), [0, 5])


def test_ray_missing_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(EngineError, match=r"needs Ray, which is not installed: pip install 'schedgen\[ray\]'"):
        make_engine("ray")


def test_ray_is_imported_only_with_engine_ray(tmp_path):
    code = """
import json, sys
import numpy as np
import schedgen, schedgen.build, schedgen.cli, schedgen.methods.engines, schedgen.methods._mmd_build
from schedgen.build import BuildConfig, build
rng = np.random.default_rng(0)
np.savez("d.npz", X=rng.standard_normal((120, 5)).astype(np.float32), y=np.arange(120) % 3)
build(BuildConfig(dataset="npz:d.npz", k=20, out_dir="out"))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "ray")))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONSAFEPATH")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------------- the selection loop


@pytest.fixture(scope="module")
def loop_data():
    """600 samples in 5 row blocks of 128 (the blocks are made small below), so 1, 2 and 3
    shards cut them differently."""
    rng = np.random.default_rng([17, 2])
    X = (rng.standard_normal((600, 16)) + 2.0 * rng.integers(0, 4, (600, 1))).astype(np.float32)
    kernel = make_kernel("rbf", bandwidth=3.0)
    return X, kernel, row_sums(kernel, X)


@pytest.fixture
def small_blocks(monkeypatch):
    from schedgen.methods import shards

    monkeypatch.setattr(shards, "HOST_BLOCK", 128)  # the driver's choice: actors are told it


def _loop(loop_data, solver, **kw):
    from schedgen.methods.selection import mmd_schedule

    X, kernel, rs = loop_data
    st = mmd_schedule(X, 25, kernel=kernel, solver=solver, s_tot=rs.s, neg_tot=rs.neg, **kw)
    return np.concatenate(st.batches), np.asarray(st.mmd2)


LOOP_SOLVERS = {"lp": "lp", "greedy": "greedy", "swap": "swap", "lp-general": None}


def _solver(name):
    from schedgen.methods.solvers import SOLVERS, LPSolver

    return LPSolver(certify_half=False) if name == "lp-general" else SOLVERS[name]


@pytest.mark.parametrize("name", sorted(LOOP_SOLVERS))
def test_loop_on_ray_actors_gives_the_in_process_bytes(loop_data, small_blocks, name):
    solver = _solver(name)
    ref_idx, ref_mmd2 = _loop(loop_data, solver, engine=InProcessEngine(), shards=1)
    eng = RayEngine()
    for n_shards in (1, 2, 3):
        idx, mmd2 = _loop(loop_data, solver, engine=eng, shards=n_shards)
        assert idx.tobytes() == ref_idx.tobytes(), n_shards
        assert mmd2.tobytes() == ref_mmd2.tobytes(), n_shards  # the recorded MMD² too
    assert not eng._shards  # the loop released its actors


@pytest.mark.parametrize("snapshot_every", [0.0, 1e9])
def test_a_killed_actor_is_replaced_and_the_schedule_holds(loop_data, small_blocks, snapshot_every):
    solver = _solver("greedy")
    ref_idx, ref_mmd2 = _loop(loop_data, solver, engine=InProcessEngine(), shards=1)
    eng = RayEngine()
    starts, killed = [], []
    real = eng.start_shards
    eng.start_shards = lambda *a: starts.append(1) or real(*a)

    def on_step(st):
        if len(st.batches) == 6 and not killed:
            killed.append(eng._shards[1])
            ray.kill(eng._shards[1], no_restart=True)

    # snapshot_every 0: restart from the copy after step 6; 1e9: from the start (every step again)
    idx, mmd2 = _loop(loop_data, solver, engine=eng, shards=2, on_step=on_step, snapshot_every=snapshot_every)
    assert killed and len(starts) == 2  # the loss was seen and the shards restarted once
    assert idx.tobytes() == ref_idx.tobytes() and mmd2.tobytes() == ref_mmd2.tobytes()


def test_an_actor_lost_at_every_step_gives_up_with_one_line(loop_data, small_blocks):
    eng = RayEngine()
    real = eng.call_shards

    def call(handles, method, args):
        if method == "add_column":
            ray.kill(handles[0], no_restart=True)
        return real(handles, method, args)

    eng.call_shards = call
    with pytest.raises(EngineError, match="lost 4 times") as exc:
        _loop(loop_data, _solver("greedy"), engine=eng, shards=2)
    assert "\n" not in str(exc.value)
    assert not eng._shards


def test_engine_with_approx_or_an_engine_free_method_is_refused():
    with pytest.raises(ParameterError, match="--approx") as exc:
        BuildConfig(dataset="digits", k=50, engine="ray", approx="nystrom:64")
    assert "\n" not in str(exc.value)
    with pytest.raises(ParameterError, match="--method random"):
        BuildConfig(dataset="digits", k=50, engine="ray", method="random")


def test_a_shard_that_cannot_start_is_one_line_not_a_lost_node(loop_data):
    from schedgen.methods.shards import Shard

    X, kernel, rs = loop_data
    eng = RayEngine()
    with pytest.raises(EngineError, match="failed to start.*ValueError") as exc:
        eng.start_shards(Shard, (kernel, X, rs.s, rs.neg), [dict(lo=0, hi=600, block=0, has_neg=False)])
    assert "\n" not in str(exc.value)
    assert not eng._shards


def test_shards_that_find_no_room_give_up_with_one_line(loop_data, monkeypatch):
    from schedgen.methods.shards import Shard

    X, kernel, rs = loop_data
    eng = RayEngine()
    eng.start_timeout = 3.0
    monkeypatch.setattr(eng, "workers", lambda: 1000)  # as if the cluster had room: 1 CPU each
    specs = [dict(lo=0, hi=200, block=200, has_neg=False), dict(lo=200, hi=400, block=200, has_neg=False),
             dict(lo=400, hi=600, block=200, has_neg=False)]
    with pytest.raises(EngineError, match="did not start on the Ray cluster within 3 s") as exc:
        eng.start_shards(Shard, (kernel, X, rs.s, rs.neg), specs)  # 3 actors of 1 CPU on 2 CPUs
    assert "\n" not in str(exc.value)
    assert not eng._shards  # the ones that started were stopped
