"""Small valid schedules for the store, hostile-store and disk-full tests."""

from __future__ import annotations

import numpy as np

from schedgen.store import Schedule


def toy_schedule(n=103, k=10, epochs=2, seed=0, extras=True) -> Schedule:
    """A seeded random schedule of ``n`` samples (3 classes), ``epochs`` permutations cut
    into batches of ``k`` (last short); with ``extras``, a per-batch and a per-epoch array."""
    sizes = [k] * (n // k) + ([n % k] if n % k else [])
    idx = np.concatenate([np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)]).astype(np.int64)
    nb = len(sizes) * epochs
    return Schedule(
        indices=idx,
        batch_offsets=np.concatenate([[0], np.cumsum(sizes * epochs)]).astype(np.int64),
        epoch_offsets=(np.arange(epochs + 1) * len(sizes)).astype(np.int64),
        method="random",
        params={"seed": seed, "epochs": epochs},
        dataset={"name": "toy", "split": "train", "n_samples": n, "n_classes": 3, "fingerprint": "f" * 64},
        k=k,
        batch_arrays={"batch_mmd2": np.linspace(1, 0, nb)} if extras else {},
        epoch_arrays={"class_proportions": np.full((epochs, 3), 1 / 3)} if extras else {},
    )


def to_format1(path):
    """Turn the format-2 store at ``path`` into the format-1 store the writer of format 1
    made from the same schedule (byte for byte: the arrays and the digests of format 1 are
    those of format 2; format 1 only lacks ``attributes_digest``). Returns ``path``."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    attrs = g.attrs.asdict()
    assert attrs["schedgen_format"] == 2, attrs["schedgen_format"]
    del attrs["attributes_digest"]
    attrs["schedgen_format"] = 1
    g.attrs.put(attrs)
    return path


def write_format1(schedule: Schedule, path):
    """Write ``schedule`` as a format-1 store (what schedgen wrote before format 2)."""
    from schedgen.store import write_schedule

    return to_format1(write_schedule(schedule, path))


def one_line_error(r, *needles) -> str:
    """Assert that a CliRunner result ``r`` is the CLI's contract for bad input: exit code
    1, exactly one ``error:`` line on stderr containing every needle, no traceback.
    Returns the line."""
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in r.stdout + r.stderr
    for n in needles:
        assert n in err, err
    return err
