"""The exact selection loop over row shards (``schedgen.methods.shards`` and
``_sharded_loop``), in this process: the same bytes for any number of shards and threads,
float64 oracles for its running sums, resume across shard counts, recovery from a lost
shard, and what Ctrl-C leaves. (The same loop on Ray actors: tests/test_engine_ray.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from schedgen.errors import ParameterError
from schedgen.kernels import Polynomial, make_kernel, row_sums
from schedgen.methods import shards
from schedgen.methods.engines import InProcessEngine, ShardLost
from schedgen.methods.selection import MMDState, mmd_schedule
from schedgen.methods.shards import shard_bounds
from schedgen.methods.solvers import SOLVERS, LPSolver
from test_selection import dense_kernel, mixture, mmd2_definition

SOLVER_NAMES = ["lp", "greedy", "swap", "lp-general"]


def _solver(name):
    return LPSolver(certify_half=False) if name == "lp-general" else SOLVERS[name]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(shards, "HOST_BLOCK", 96)  # 500 samples: 6 blocks, the last partial


@pytest.fixture(scope="module", params=["rbf", "poly3"])
def data(request):
    if request.param == "rbf":
        X = mixture(500, 12, seed=3)
        kernel = make_kernel("rbf", bandwidth=2.5)
    else:  # odd degree on centred data: negative kernel values, negP tracked
        X = mixture(500, 6, seed=4, dtype=np.float64, centred=True)
        kernel = Polynomial(3, coef0=0.0)
    rs = row_sums(kernel, X)
    return X, kernel, rs


def _run(data, solver, **kw):
    X, kernel, rs = data
    return mmd_schedule(X, 20, kernel=kernel, solver=solver, s_tot=rs.s, neg_tot=rs.neg, **kw)


def _bytes(st):
    return np.concatenate(st.batches).tobytes(), np.asarray(st.mmd2).tobytes()


def test_shard_bounds_are_whole_blocks_split_evenly():
    assert shard_bounds(1000, 100, 3) == [(0, 300), (300, 700), (700, 1000)]
    assert shard_bounds(200_000, 16384, 2) == [(0, 98304), (98304, 200_000)]  # not 7 blocks against 6
    assert shard_bounds(1000, 100, 10) == [(i * 100, i * 100 + 100) for i in range(10)]
    assert shard_bounds(950, 100, 2) == [(0, 500), (500, 950)]
    assert shard_bounds(250, 100, 8) == [(0, 100), (100, 200), (200, 250)]  # at most one per block
    assert shard_bounds(5, 100, 4) == [(0, 5)]


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_any_number_of_shards_and_threads_gives_the_same_bytes(data, small_blocks, monkeypatch, name):
    solver = _solver(name)
    ref = _bytes(_run(data, solver, shards=1, n_jobs=1))
    for n_shards, n_jobs in ((1, 2), (2, 1), (3, 2), (6, 2)):
        assert _bytes(_run(data, solver, shards=n_shards, n_jobs=n_jobs)) == ref, (n_shards, n_jobs)
    # one-column requests on worker threads too, and operands formed per request (as on Ray)
    monkeypatch.setattr(shards, "_THREADED_ROWS", 0)
    monkeypatch.setattr(shards, "OPERAND_CACHE_BYTES", 0)
    assert _bytes(_run(data, solver, shards=3, n_jobs=2)) == ref


class _Wrapped:
    """A solver the loop does not know: it gathers the whole step and calls it, so this
    runs the reference solvers (``_greedy``, ``_swap``, the LP certificate then HiGHS)."""

    def __init__(self, solver):
        self.solver = solver

    def __call__(self, problem):
        return self.solver(problem)


@pytest.mark.parametrize("k", [1, 7, 20])
@pytest.mark.parametrize("name", ["lp", "greedy", "swap"])
def test_the_shard_protocols_choose_what_the_reference_solvers_choose(data, small_blocks, name, k):
    X, kernel, rs = data
    fast = mmd_schedule(X, k, kernel=kernel, solver=SOLVERS[name], s_tot=rs.s, neg_tot=rs.neg, shards=3)
    ref = mmd_schedule(X, k, kernel=kernel, solver=_Wrapped(SOLVERS[name]), s_tot=rs.s, neg_tot=rs.neg, shards=3)
    assert len(fast.batches) == len(ref.batches)
    for a, b in zip(fast.batches, ref.batches):
        assert a.tobytes() == b.tobytes()  # the same samples in the same (selection) order
    # the gathered path adds a batch in one fused GEMM pass, the fast one from GEMV columns:
    # float32 kernel values rounded differently (~1e-7 each)
    assert_allclose(fast.mmd2[:-1], ref.mmd2[:-1], rtol=1e-4, atol=1e-12)


def test_the_block_size_is_what_fixes_the_bits(monkeypatch):
    """The control: the blocks (not the shards) decide the GEMM tiles. Another block size
    changes the recorded MMD²'s last bits (and may change near-tied choices)."""
    X = mixture(500, 6, seed=4, dtype=np.float64, centred=True)
    kernel = Polynomial(3, coef0=0.0)
    data = (X, kernel, row_sums(kernel, X))
    monkeypatch.setattr(shards, "HOST_BLOCK", 96)
    a = _bytes(_run(data, SOLVERS["lp"]))
    monkeypatch.setattr(shards, "HOST_BLOCK", 128)
    b = _bytes(_run(data, SOLVERS["lp"]))
    assert a != b


@pytest.mark.parametrize("name", ["lp", "swap"])
def test_running_sums_and_mmd2_match_float64_oracles(data, small_blocks, name):
    X, kernel, rs = data
    K = dense_kernel(kernel, X)
    seen = {}

    def on_step(st):
        if len(st.batches) == 7:
            seen["state"] = st.complete()

    st = _run(data, _solver(name), shards=3, on_step=on_step)
    scale = np.abs(K).sum(axis=1).max()
    ref = mmd2_definition(K, st.batches)
    assert_allclose(np.asarray(st.mmd2)[:-1], ref[:-1], rtol=1e-4, atol=1e-9 * np.abs(K).max())
    saved = seen["state"]
    P = np.concatenate(saved.batches)
    KQP = K[np.ix_(saved.Q, P)]
    tol = 1e-6 if X.dtype == np.float32 else 1e-10
    assert_allclose(saved.sP, KQP.sum(axis=1), rtol=tol, atol=tol * scale)
    assert_allclose(saved.negP, np.minimum(KQP, 0.0).sum(axis=1), rtol=tol, atol=tol * scale)
    if not kernel.nonnegative:
        assert (saved.negP < 0).any()


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["greedy", "lp"])
def test_a_state_resumes_on_another_number_of_shards(data, small_blocks, name):
    solver = _solver(name)
    ref = _bytes(_run(data, solver, shards=1))
    kept = {}

    def stop(st):
        if len(st.batches) == 9:
            kept["state"] = st.complete()
            raise _Stop

    with pytest.raises(_Stop):
        _run(data, solver, shards=2, on_step=stop)
    st = kept["state"]
    assert isinstance(st, MMDState) and st.gather is None and len(st.sP) == len(st.Q)
    assert _bytes(_run(data, solver, shards=3, state=st)) == ref


class _Flaky(InProcessEngine):
    """In-process shards whose ``n``-th call fails as a lost Ray actor would."""

    def __init__(self, fail_at):
        super().__init__()
        self.calls = 0
        self.fail_at = set(fail_at)
        self.starts = 0

    def start_shards(self, cls, shared, specs):
        self.starts += 1
        return super().start_shards(cls, shared, specs)

    def call_shards(self, handles, method, args):
        self.calls += 1
        if self.calls in self.fail_at:
            raise ShardLost("a shard's actor on the Ray cluster died: test")
        return super().call_shards(handles, method, args)


@pytest.mark.parametrize("snapshot_every", [0.0, 1e9])
def test_a_lost_shard_restarts_from_the_drivers_copy(data, small_blocks, snapshot_every):
    solver = _solver("swap")
    ref = _bytes(_run(data, solver, shards=2))
    eng = _Flaky(fail_at=[40, 41, 400])  # twice in a row (inside a step), then later again
    got = _bytes(_run(data, solver, shards=2, engine=eng, snapshot_every=snapshot_every))
    assert eng.starts == 4 and got == ref


class _FlakySnapshots(_Flaky):
    """Loses a shard on the n-th gather of the shards' sums (the copy or a checkpoint's)."""

    def __init__(self, nth):
        super().__init__(fail_at=[])
        self.snapshots = 0
        self.nth = nth

    def call_shards(self, handles, method, args):
        if method == "snapshot":
            self.snapshots += 1
            if self.snapshots == self.nth:
                raise ShardLost("a shard's actor on the Ray cluster died: test")
        return super().call_shards(handles, method, args)


@pytest.mark.parametrize("where", ["copy", "checkpoint"])
def test_a_shard_lost_between_steps_is_recovered_too(data, small_blocks, where):
    solver = _solver("greedy")
    ref = _bytes(_run(data, solver, shards=2))
    eng = _FlakySnapshots(nth=3)
    if where == "copy":
        got = _run(data, solver, shards=2, engine=eng, snapshot_every=0.0)
    else:
        got = _run(data, solver, shards=2, engine=eng, on_step=lambda st: st.complete())
    assert eng.starts == 2 and _bytes(got) == ref


def test_losses_without_progress_end_with_one_line(data, small_blocks):
    from schedgen.methods.engines import EngineError

    eng = _Flaky(fail_at=range(30, 100))
    with pytest.raises(EngineError, match="lost 4 times") as exc:
        _run(data, _solver("greedy"), shards=2, engine=eng)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("where", ["begin", "apply"])
def test_ctrl_c_leaves_a_state_only_between_steps(data, small_blocks, monkeypatch, where):
    """Ctrl-C during a read-only call: the state after the last whole step is gathered for
    the checkpoint; during ``apply`` the shards may be half-updated: nothing is kept."""
    solver = _solver("lp")
    states = {}

    def on_step(st):
        states[len(st.batches)] = st.complete()

    real = getattr(shards.Shard, where)

    def interrupted(self, *a, **kw):
        out = real(self, *a, **kw)
        if len(states) == 6:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(shards.Shard, where, interrupted)
    live = MMDState.start(500)
    with pytest.raises(KeyboardInterrupt):
        _run(data, solver, shards=2, state=live, on_step=on_step)
    assert live.gather is None
    if where == "apply":
        assert live.sP is None  # nothing to save: the last periodic checkpoint stands
        with pytest.raises(ParameterError, match="lost with the loop's shards"):
            live.complete()
    else:
        assert len(live.batches) == 6
        ref = states[6]
        assert live.Q.tobytes() == ref.Q.tobytes() and live.sP.tobytes() == ref.sP.tobytes()
        assert live.negP.tobytes() == ref.negP.tobytes()
