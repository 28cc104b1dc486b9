"""The ``mmd`` method's work: features -> kernel -> cached row sums -> selection loop.

Imported only when an mmd schedule is computed (it loads HiGHS and SciPy through the
solvers); :mod:`schedgen.methods.mmd` holds what a cache hit needs.

Cached artifacts (under ``<out_dir>/.cache``), keyed by the dataset fingerprint and
the parameters that shape them, so a second build with another k or solver skips
the N^2 pass:

* ``features-<key>.npy``: the fitted feature matrix (after scaling/PCA);
* ``rowsums-<key>.npz``: ``s_tot`` and ``neg_tot`` for the kernel.

With ``--approx nystrom:M`` no row sums are computed or cached: the Nyström factor
(:func:`nystrom_factor`, recomputed per build: N·M float64 is too large to cache for
what it costs) gives them, and its measured error is recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from .. import revisions
from .._proc import atomic_write
from ..data import Dataset
from ..features import FeatureSpec, prepare_features
from ..kernels import (
    FALLBACK_BANDWIDTH,
    backend,
    make_kernel,
    median_sq_distance,
    numerical_degeneracy,
    pinned_blas,
    row_sums,
)
from ..kernels.nystrom import ERROR_ROWS, NystromFactor, kmeans_landmarks, nystrom_error, nystrom_features
from ..params import approx_landmarks
from .engines import Engine, InProcessEngine, current_engine, engine_row_sums
from .selection import MMDState, mmd_schedule
from .solvers import get_solver
from ._base import MethodOutput, feature_spec, stage

__all__ = ["run_mmd", "cached_features", "cached_row_sums", "save_state", "load_state", "nystrom_factor"]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]


def _atomic_save(path: Path, save: Callable[[Path], None]) -> None:
    """Write via a temporary sibling and rename; a failed cache write is not an error."""
    try:
        atomic_write(path, save, suffix=f".tmp{path.suffix}")
    except OSError:
        # The cache only saves time; a read-only or full disk must not fail a build here.
        # (The store write that follows reports such a disk clearly.)
        pass


def cached_features(ds: Dataset, spec: FeatureSpec, cache_dir: Path | None) -> np.ndarray:
    """``prepare_features(ds, spec)``, memoised on disk by fingerprint and spec."""
    if cache_dir is None:
        return prepare_features(ds, spec)
    params = spec.params(ds.n_features)
    if params["pca"] == 0 and not params["standardize"] and ds.pixel_max is None:
        return prepare_features(ds, spec)  # nothing fitted: the features are the data
    path = Path(cache_dir) / f"features-{_key(ds.fingerprint, params, spec.seed, revisions.FEATURES)}.npy"
    if path.exists():
        try:
            X = np.load(path, allow_pickle=False)
            if X.shape[0] == ds.n_samples and X.dtype == np.float32:
                return X
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    X = prepare_features(ds, spec)
    _atomic_save(path, lambda p: np.save(p, X))
    return X


def cached_row_sums(kernel, X, *, fingerprint: str, feature_params: dict, cache_dir: Path | None,
                    progress=None, engine: Engine | None = None):
    """``row_sums(kernel, X)``, memoised on disk by fingerprint, features and kernel
    (``progress(done, total, stage=...)`` sees the pass's rows as stage "row sums").

    A miss computes them on ``engine`` (default: the build's ``--engine``,
    :func:`~schedgen.methods.engines.current_engine`, started only now): the same bytes on
    every engine, so the engine is not part of the key."""
    rows = stage(progress, "row sums")

    def compute():
        eng = engine if engine is not None else current_engine()
        if isinstance(eng, InProcessEngine):
            return row_sums(kernel, X, progress=rows)
        return engine_row_sums(eng, kernel, X, progress=rows)

    if cache_dir is None:
        return compute()
    # The features' own bytes are in the key: the PCA subsample depends on the seed, which
    # neither the fingerprint nor the feature parameters carry.
    X_bytes = hashlib.sha256(np.ascontiguousarray(backend.to_numpy(X)).data).hexdigest()
    key = _key(fingerprint, feature_params, kernel.params(), str(X.dtype), list(X.shape), X_bytes, revisions.KERNELS)
    path = Path(cache_dir) / f"rowsums-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                s, neg = z["s_tot"], z["neg_tot"]
            if s.shape == (X.shape[0],) and neg.shape == (X.shape[0],):
                return s, neg
        except (OSError, ValueError, KeyError):
            pass
    s, neg = compute()

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, s_tot=s, neg_tot=neg)

    _atomic_save(path, save)
    return s, neg


def nystrom_factor(cfg, kernel, X, progress=None) -> tuple[NystromFactor, dict]:
    """The Nyström factor of ``--approx nystrom:M`` (``cfg.approx``) on the host features X,
    and what a store records of it: ``approx_rank`` (eigenvalues of K(Z, Z) kept) and
    ``approx_error`` (:class:`~schedgen.kernels.nystrom.NystromError` on ``ERROR_ROWS``
    seeded rows, against exact float64 sums). One code path for every method with ``--approx``."""
    landmarks = stage(progress, "k-means landmarks")
    if landmarks:
        landmarks(0, 1)  # k-means reports nothing while it runs: the stage and its elapsed time show
    Z = kmeans_landmarks(X, approx_landmarks(cfg.approx), seed=cfg.seed)
    if landmarks:
        landmarks(1, 1)
    factor = nystrom_features(kernel, X, Z, progress=stage(progress, "Nyström features"))
    err = nystrom_error(kernel, X, factor.features, seed=cfg.seed, n_rows=ERROR_ROWS)
    return factor, {"approx_rank": factor.rank, "approx_error": err.params()}


#: What to change when the kernel is numerically diagonal or constant: options of that kernel only.
_DEGENERACY_ADVICE = {
    ("rbf", "diagonal"): "use --bandwidth median or a larger --bandwidth",
    ("rbf", "constant"): "use --bandwidth median or a smaller --bandwidth",
    ("poly", "diagonal"): "lower --degree or raise --coef0",
    ("poly", "constant"): "lower --coef0 or rescale the features",
}


def _degeneracy_warning(kind: str, kernel_name: str) -> str:
    """The warning for a kernel that :func:`~schedgen.kernels.numerical_degeneracy` found
    numerically diagonal or constant: both leave MMD² unable to tell batches apart, so both
    are warned about alike (the schedule is still valid, like the one of identical samples)."""
    what = (
        "numerically diagonal (median off-diagonal value below 1e-6 of the diagonal)"
        if kind == "diagonal"
        else "numerically constant (median squared feature-space distance between samples below 1e-6 "
        "of the diagonal, so every batch looks equally good)"
    )
    return f"the kernel is {what}: the schedule would be arbitrary; {_DEGENERACY_ADVICE[(kernel_name, kind)]}"


def _rule(cfg) -> str | None:
    """The bandwidth rule stored beside the sigma it produced ("median"), None for a given sigma."""
    return cfg.bandwidth if cfg.kernel == "rbf" and isinstance(cfg.bandwidth, str) else None


def save_state(st: MMDState, device: str = "cpu") -> dict:
    """The arrays of a checkpoint of ``st`` (everything but Q, which follows from the
    batches), and the device it ran on (GPU and CPU kernel values differ in their last bits)."""
    st = st.complete()  # the exact loop's sums live in its row shards
    sizes = np.array([len(b) for b in st.batches], dtype=np.int64)
    flat = np.concatenate(st.batches).astype(np.int64) if st.batches else np.zeros(0, np.int64)
    return {
        "batches": flat, "sizes": sizes, "mmd2": np.asarray(st.mmd2, dtype=np.float64),
        "sP": st.sP, "negP": st.negP, "S_AA": np.float64(st.S_AA), "S_AD": np.float64(st.S_AD),
        "device": np.array(device),
    }


def load_state(saved: dict | None, n: int, k: int, device: str = "cpu") -> MMDState | None:
    """The :class:`MMDState` of a checkpoint made by :func:`save_state`, or None when it
    does not describe a run over ``n`` samples with batch size ``k`` on ``device`` (then
    start afresh)."""
    if saved is None:
        return None
    try:
        if str(saved["device"]) != device:
            return None
        flat, sizes = saved["batches"].astype(np.int64), saved["sizes"].astype(np.int64)
        sP, negP, mmd2 = (np.asarray(saved[x], dtype=np.float64) for x in ("sP", "negP", "mmd2"))
        S_AA, S_AD = float(saved["S_AA"]), float(saved["S_AD"])
    except (KeyError, TypeError, ValueError):
        return None
    nq = n - flat.size
    if (flat.ndim != 1 or sizes.ndim != 1 or np.any(sizes != k) or int(sizes.sum()) != flat.size
            or mmd2.shape != sizes.shape or nq <= 0 or sP.shape != (nq,) or negP.shape != (nq,)
            or (flat.size and (flat.min() < 0 or flat.max() >= n))):
        return None
    seen = np.zeros(n, dtype=bool)
    seen[flat] = True
    if int(seen.sum()) != flat.size:
        return None  # a sample twice: not a state of this loop
    return MMDState(
        Q=np.flatnonzero(~seen).astype(np.int64), sP=sP, negP=negP, S_AA=S_AA, S_AD=S_AD,
        batches=list(np.split(flat, np.cumsum(sizes)[:-1])) if sizes.size else [], mmd2=list(mmd2),
    )


def run_mmd(cfg, ds: Dataset, k: int, *, progress=None, cache_dir: Path | None = None, warn=None,
            checkpoint=None):
    """Build the MMD schedule of ``ds`` for batch size ``k`` (``cfg`` a BuildConfig).

    With a :class:`~schedgen.checkpoint.Checkpoint`, the loop's state is saved every
    ``checkpoint.every`` seconds and a saved state is continued from; the result is
    the same bytes as an uninterrupted run.
    """
    warn = warn or (lambda msg: None)
    spec = feature_spec(cfg)
    feature_params = spec.params(ds.n_features)
    with pinned_blas():  # the PCA's GEMM bits must not depend on the BLAS thread count
        X_host = cached_features(ds, spec, cache_dir)
    device = backend.resolve_device(cfg.device)
    X = backend.to_device(X_host, device)
    kernel = make_kernel(
        cfg.kernel, bandwidth=cfg.bandwidth, degree=cfg.degree, coef0=cfg.coef0, X=X_host, seed=cfg.seed
    )
    # Before anything forms kernel values: refuse features or parameters on which the
    # kernel overflows float32 (O(N·D); row_sums checks again, as every kernel routine does).
    kernel.check_range(X_host)
    if np.all(X_host == X_host[:1]):
        # Every batch is equally good (MMD^2 = 0 throughout): the documented tie rule,
        # smaller index first, gives sample order. Solvers would return any of the tied optima.
        warn("all samples are identical: every batch is equally good; batches follow sample order")
        n = ds.n_samples
        sizes = [k] * (n // k) + ([n % k] if n % k else [])
        mmd2 = np.zeros(len(sizes))
        mmd2[-1] = np.nan  # nothing left unscheduled after the last batch
        return MethodOutput(
            indices=np.arange(n, dtype=np.int64),
            batch_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            epoch_offsets=np.array([0, len(sizes)], dtype=np.int64),
            params={**kernel.params(), "bandwidth_rule": _rule(cfg)},
            batch_arrays={"batch_mmd2": mmd2},
        )
    spread = median_sq_distance(X_host, seed=cfg.seed) > 0  # most sampled pairs differ
    if _rule(cfg) == "median" and not spread:
        warn(
            "the median squared distance is 0 (most sampled pairs of samples are identical): "
            f"the median bandwidth falls back to sigma={FALLBACK_BANDWIDTH}; pass --bandwidth SIGMA to choose one"
        )
    kind = numerical_degeneracy(kernel, X_host, seed=cfg.seed)
    # With most sampled pairs identical the data, not the kernel, is what is constant.
    if kind == "diagonal" or (kind == "constant" and spread):
        warn(_degeneracy_warning(kind, kernel.name))
    solver = get_solver(cfg.solver)
    recorded: dict = {}
    if cfg.approx is None:
        s_tot, neg_tot = cached_row_sums(
            kernel, X, fingerprint=ds.fingerprint, feature_params=feature_params, cache_dir=cache_dir,
            progress=progress,
        )
        sums = {"s_tot": s_tot, "neg_tot": neg_tot}
    else:
        factor, recorded = nystrom_factor(cfg, kernel, X_host, progress)
        # The loop compacts Φ in place: nothing else holds it.
        sums = {"factor": factor.features}
        recorded["batch_mmd2_kernel"] = "nystrom"
        del factor
    start = load_state(checkpoint.load(), ds.n_samples, k, device) if checkpoint is not None else None

    last: list = []  # the live state and a snapshot of it after the last completed step

    def on_step(st):
        if checkpoint is not None and not st.done:  # the finished state is the store itself
            # The loop rebinds its arrays and only appends to its lists, so references and
            # the lists' lengths are a snapshot.
            last[:] = [st, replace(st, batches=len(st.batches), mmd2=None)]
            checkpoint.maybe_save(lambda: save_state(st, device))
    try:
        state = mmd_schedule(
            X,
            k,
            kernel=kernel,
            solver=solver,
            **sums,
            coefficients="paper" if cfg.paper_coefficients else "exact",
            state=start,
            progress=progress,
            on_step=on_step,
        )
    except KeyboardInterrupt:
        # Ctrl-C keeps the work done so far: the rerun continues after the last whole step
        # (a step the interrupt cut short left the live state half-updated, so not that one).
        if checkpoint is not None and last:
            live, snap = last
            nb = snap.batches
            if snap.sP is not None:  # the Nyström loop: its arrays are rebound each step
                checkpoint.save(save_state(replace(snap, batches=live.batches[:nb], mmd2=live.mmd2[:nb]), device))
            elif live.sP is not None and live.gather is None:
                # the exact loop gathered its shards' sums at a step boundary (else the last
                # periodic checkpoint stands)
                checkpoint.save(save_state(live, device))
        raise
    sizes = [len(b) for b in state.batches]
    return MethodOutput(
        indices=np.concatenate(state.batches).astype(np.int64),
        batch_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        epoch_offsets=np.array([0, len(sizes)], dtype=np.int64),
        params={**kernel.params(), "bandwidth_rule": _rule(cfg), **recorded},
        batch_arrays={"batch_mmd2": np.asarray(state.mmd2, dtype=np.float64)},
    )
