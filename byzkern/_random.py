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


#: fdlibm's constants of Box-Muller's logarithm, sine and cosine (e_log.c, k_sin.c, k_cos.c and
#: e_rem_pio2.c's medium case), which csrc/compress.cpp and cuda/compress.cu write as hex float
#: literals: Python has none. The reference and Numba run the same operations on them.
LG1, LG2, LG3, LG4, LG5, LG6, LG7, LN2_HI, LN2_LO = map(float.fromhex, (
    "0x1.5555555555593p-1", "0x1.999999997fa04p-2", "0x1.2492494229359p-2", "0x1.c71c51d8e78afp-3",
    "0x1.7466496cb03dep-3", "0x1.39a09d078c69fp-3", "0x1.2f112df3e5244p-3", "0x1.62e42feep-1",
    "0x1.a39ef35793c76p-33"))
S1, S2, S3, S4, S5, S6 = map(float.fromhex, (
    "-0x1.5555555555549p-3", "0x1.111111110f8a6p-7", "-0x1.a01a019c161d5p-13", "0x1.71de357b1fe7dp-19",
    "-0x1.ae5e68a2b9cebp-26", "0x1.5d93a5acfd57cp-33"))
C1, C2, C3, C4, C5, C6 = map(float.fromhex, (
    "0x1.555555555554cp-5", "-0x1.6c16c16c15177p-10", "0x1.a01a019cb159p-16", "-0x1.27e4f809c52adp-22",
    "0x1.1ee9ebdb4b1c4p-29", "-0x1.8fae9be8838d4p-37"))
INV_PIO2, PIO2_1, PIO2_2, PIO2_2T, PIO2_3, PIO2_3T = map(float.fromhex, (
    "0x1.45f306dc9c883p-1", "0x1.921fb544p0", "0x1.0b4611a6p-34", "0x1.3198a2e037073p-69",
    "0x1.3198a2ep-69", "0x1.b839a252049c1p-104"))
#: x + ROUNDER - ROUNDER is x rounded to an integer, which is then in the low bits of x + ROUNDER
ROUNDER = 1.5 * 2.0**52


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
