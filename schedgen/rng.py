"""Every random stream of schedgen, in one table, and the one way to draw from them.

A stream's generator is ``np.random.default_rng([seed, TAG, *keys])`` with a tag of
its own and a fixed number of keys. Two streams differ in their second word (the
tag); two draws of one stream have as many words and differ in a key. Every word is
checked to fit in 32 bits: NumPy's ``SeedSequence`` splits a larger integer into
several words, and pads short keys with zeros (``[seed, e, 0]`` is the stream
``[seed, e]``), which is how two streams could otherwise coincide.

The tags are the ones the streams had before this table (ASCII of a short name), so
the bytes of every stream that was already tagged are unchanged; learn2mix's class
orders, which were drawn from the untagged ``[seed, epoch, class]``, got a tag, and
the learn2mix method's revision moved with it.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError

__all__ = ["STREAMS", "rng", "MAX_WORD"]

#: The largest value of a seed or key: one 32-bit word of the SeedSequence entropy.
MAX_WORD = 2**32 - 1

#: name -> (tag, number of keys, what it draws).
STREAMS: dict[str, tuple[int, int, str]] = {
    "random": (0x72616E64, 1, "the random method's permutation of epoch e (key: e)"),
    "learn2mix": (0x6C326D78, 2, "learn2mix's order of class j in epoch e (keys: e, j)"),
    "kmeans": (0x4B4D4E53, 0, "k-means++ seeding of learn2mix's --groups kmeans:C"),
    "pca": (0x504341, 0, "the rows the PCA is fitted on"),
    "bandwidth": (0x6D6D64, 0, "the subsample of the median bandwidth and the degeneracy checks"),
    "plot": (0x706C6F74, 0, "the random order `schedgen plot` compares a schedule with"),
    "pair": (0x70616972, 1, "the random partner batch of global batch b (key: b)"),
    "pair.class": (0x70636C73, 2, "the class-matched partners' order of class j in epoch e (keys: e, j)"),
    "submodular": (0x736D646C, 1, "the submodular method's candidate pools of epoch e (key: e)"),
    "dpp": (0x647070, 2, "the dpp method's k-DPP draw of batch b of epoch e (keys: e, b)"),
    "nystrom": (0x4E595354, 0, "the k-means landmarks of --approx nystrom:M and the rows its error is measured on"),
    "adaptive": (0x61647074, 1, "AdaptiveBatchSampler's order of epoch e (key: e)"),
    "sbs": (0x534253, 0, "StochasticBatchSizeSGD's default Bernoulli mask generator"),
}


def _word(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= MAX_WORD:
        raise ParameterError(f"{name} must be an integer in 0..{MAX_WORD}, got {value!r}")
    return int(value)


def rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """The generator of ``stream`` for ``seed`` and ``keys``.

    Parameters
    ----------
    seed : int
        The user's seed, ``0 <= seed < 2**32``.
    stream : str
        A name in :data:`STREAMS`.
    *keys : int
        Exactly as many as the stream has (epoch, class, ...), each ``< 2**32``.

    Raises
    ------
    ParameterError
        An unknown stream, the wrong number of keys, or a seed or key out of range.
    """
    try:
        tag, arity, _ = STREAMS[stream]
    except KeyError:
        raise ParameterError(f"unknown random stream {stream!r}; expected one of {sorted(STREAMS)}") from None
    if len(keys) != arity:
        raise ParameterError(f"random stream {stream!r} takes {arity} key(s), got {len(keys)}")
    words = [_word("seed", seed), tag, *(_word(f"{stream} key", k) for k in keys)]
    return np.random.default_rng(words)
