"""Counter-based randomness shared by every backend: Philox4x32-10 (Salmon et al., SC'11).

A random word is a pure function of (seed, stream, row, counter), so results do not depend on
thread count, tiling or backend. The C++ (`csrc/philox.hpp`), Numba and CUDA (`cuda/philox.cuh`)
versions use the same constants and the same key/counter layout:

    key     = (seed & 0xffffffff, seed >> 32)
    counter = (i & 0xffffffff, i >> 32, row, stream)

where ``i`` is the block index and each block gives four 32-bit words. ``stream`` separates the
uses of one seed (one per operation), so bucketing and randk with the same seed are independent.
"""
from __future__ import annotations

import numpy as np

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)

#: one stream id per random operation (the fourth counter word)
STREAMS = {"bucketing": 1, "resampling": 2, "randk": 3, "qsgd": 4, "natural": 5, "gaussian": 6}


def philox4x32(counter, key):
    """Philox4x32-10 on uint32 arrays: counter (4, N), key (2,) -> (4, N) uint32."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0 = PHILOX_M0 * c0
            p1 = PHILOX_M1 * c2
            c0, c1, c2, c3 = (
                (p1 >> _32) ^ c1 ^ np.uint64(k0),
                p1 & _LO,
                (p0 >> _32) ^ c3 ^ np.uint64(k1),
                p0 & _LO,
            )
            k0 = np.uint32(k0 + PHILOX_W0)
            k1 = np.uint32(k1 + PHILOX_W1)
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def words(seed, stream, row, count):
    """The first ``count`` 32-bit words of (seed, stream, row) as uint32 (count,)."""
    blocks = (count + 3) // 4
    i = np.arange(blocks, dtype=np.uint64)
    counter = (i & _LO, i >> _32, np.full(blocks, row & 0xFFFFFFFF, np.uint64),
               np.full(blocks, STREAMS[stream], np.uint64))
    out = philox4x32(counter, (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))
    return out.T.reshape(-1)[:count]


def uniforms(seed, stream, row, count):
    """float64 uniforms in [0, 1): 53 bits from two consecutive words (hi, lo)."""
    w = words(seed, stream, row, 2 * count).astype(np.uint64).reshape(count, 2)
    bits = ((w[:, 0] << _32) | w[:, 1]) >> np.uint64(11)
    return bits.astype(np.float64) * 2.0**-53


def below(u, bound):
    """An integer in [0, bound) from a uniform u in [0, 1); exact in float64 for bound < 2**53."""
    return min(int(u * bound), bound - 1)
