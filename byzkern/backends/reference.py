"""Reference backend: plain NumPy written to be obviously right. The tests' oracle, never fast.

Everything is computed in float64 and rounded once to the input dtype at the end.
Kernel signatures are listed in ``byzkern/backends/__init__.py``.
"""
from __future__ import annotations

import sys

import numpy as np

from . import deviations_of_built_candidates

F64 = np.float64


def _sum_of_rows(X):
    """X (..., rows, d) -> float64 (..., d): the rows added one after another, as the kernels add
    them. NumPy's own reduction is pairwise along a contiguous axis (the rows, when d = 1): it
    rounds differently, and puts rows into separate partial sums, where a huge row absorbs the
    small ones that a later row would have cancelled it against (the fuzzer's +-1e38 rows)."""
    total = np.zeros(X.shape[:-2] + X.shape[-1:])
    for i in range(X.shape[-2]):
        total += X[..., i, :]
    return total


def mean(X):
    return (_sum_of_rows(X) / X.shape[1]).astype(X.dtype)


def _middle(sorted_cols):
    """Median of columns already sorted along axis 1: mean of the middle two for even n."""
    n = sorted_cols.shape[1]
    lo, hi = sorted_cols[:, (n - 1) // 2], sorted_cols[:, n // 2]
    return 0.5 * lo + 0.5 * hi  # halves first: no overflow for huge float64 values


def cwmed(X):
    # np.sort puts NaN after +Inf: exactly the 'outlier' order of SPEC §8.
    return _middle(np.sort(X.astype(F64), axis=1)).astype(X.dtype)


def cwtm(X, f):
    n = X.shape[1]
    return (_sum_of_rows(np.sort(X.astype(F64), axis=1)[:, f:n - f]) / (n - 2 * f)).astype(X.dtype)


def meamed(X, f):
    n = X.shape[1]
    s = np.sort(X.astype(F64), axis=1)
    med = _middle(s)
    dist = np.abs(s - med[:, None, :])
    dist[np.isnan(dist)] = np.inf
    # s is sorted by value, so a stable sort by distance breaks ties toward the smaller value.
    order = np.argsort(dist, axis=1, kind="stable")[:, : n - f]
    return (_sum_of_rows(np.take_along_axis(s, order, axis=1)) / (n - f)).astype(X.dtype)


def _nonfinite_rows(X):
    return ~np.isfinite(X).all(axis=2)


def pairwise_sqdist(X):
    B, n, _ = X.shape
    X64 = X.astype(F64)
    D = np.empty((B, n, n))
    for b in range(B):
        for i in range(n):
            D[b, i] = ((X64[b] - X64[b, i]) ** 2).sum(axis=1)
    bad = _nonfinite_rows(X)
    D[bad[:, :, None] | bad[:, None, :]] = np.inf
    D[:, np.arange(n), np.arange(n)] = 0.0
    return D


def mix_rows(X, idx):
    B, m, k = idx.shape
    items = np.arange(B)[:, None]
    total = np.zeros((B, m, X.shape[2]))
    # Every output's t-th row at once, in idx order. Where an output has none, it adds +0.0,
    # which leaves the bits of a sum that starts at +0.0 (and so is never -0.0) as they are.
    for t in range(k):
        total += np.where(idx[:, :, t, None] >= 0, X[items, idx[:, :, t]], 0.0)
    return (total / (idx >= 0).sum(axis=2)[:, :, None]).astype(X.dtype)


def row_norms(X, q):
    with np.errstate(over="ignore"):  # the caller takes such norms again (aggregators._row_norms)
        norms = np.linalg.norm(X.astype(F64), ord=q, axis=2)
    norms[_nonfinite_rows(X)] = np.inf
    return norms


def clip(X, tau):
    X64 = X.astype(F64)
    norms = np.linalg.norm(X64, axis=2)
    scale = np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))
    nonfinite = _nonfinite_rows(X)
    scale[nonfinite], norms[nonfinite] = 1.0, np.inf
    return (X64 * scale[:, :, None]).astype(X.dtype), norms


def geomed(X, weights, init, maxiter, eps, nu):
    B, n, d = X.shape
    z_out, iters, objective = np.empty((B, d)), np.zeros(B, np.int64), np.empty(B)
    weights = np.where(_nonfinite_rows(X), 0.0, weights)
    for b in range(B):
        keep = weights[b] > 0
        P, w = X[b, keep].astype(F64), weights[b, keep]
        if isinstance(init, str):
            z = w @ P / w.sum() if init == "mean" else np.zeros(d)
        else:
            z = init[b].astype(F64)
        dist = np.linalg.norm(P - z, axis=1)
        obj = w @ dist
        for t in range(1, maxiter + 1):
            beta = w / np.maximum(nu, dist)
            z = beta @ P / beta.sum()
            dist = np.linalg.norm(P - z, axis=1)
            previous, obj = obj, w @ dist
            iters[b] = t
            if abs(previous - obj) < eps * obj:  # RFA's relative stopping rule
                break
        z_out[b], objective[b] = z, obj
    return z_out.astype(X.dtype), iters, objective


def cclip(X, tau, iters, v0):
    B, n, d = X.shape
    v0 = cwmed(X) if v0 is None else v0
    out, overflowed = np.empty((B, d)), np.zeros(B, bool)
    bad = _nonfinite_rows(X)
    for b in range(B):
        v = v0[b].astype(F64)
        P = X[b, ~bad[b]].astype(F64)
        for _ in range(iters):
            diff = P - v
            norms = np.linalg.norm(diff, axis=1)
            overflowed[b] |= bool(np.isinf(norms).any())
            scale = np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))
            v = v + (scale[:, None] * diff).sum(axis=0) / n  # non-finite rows count as adding 0
        out[b] = v
    return out.astype(X.dtype), overflowed


# ---- compressors and attacks (SPEC §4, §5) ---------------------------------------------------
# Wire formats and random draws are fixed here, bit for bit; the fast backends must match them.
from .. import _random  # noqa: E402
from .._random import (C1, C2, C3, C4, C5, C6, INV_PIO2, LG1, LG2, LG3, LG4, LG5, LG6, LG7, LN2_HI,  # noqa: E402
                       LN2_LO, PIO2_1, PIO2_2, PIO2_2T, PIO2_3, PIO2_3T, ROUNDER, S1, S2, S3, S4, S5, S6)

#: entries per chunk of ``ordered_row_sums``; part of the definition of a compressor's scale
SUM_CHUNK = 65536
_LANES = 8


def ordered_row_sums(V):
    """Row sums of float64 ``V`` (n, d) in one fixed order that every backend reproduces.

    Within each chunk of SUM_CHUNK entries, lane j (0..7) adds the entries i = j (mod 8) in
    increasing i; the lanes combine as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); chunk sums are added
    in order. Scales and norms on the wire are therefore identical on every backend.
    """
    n, d = V.shape
    rows = -(-d // _LANES)
    P = np.zeros((n, rows * _LANES))
    P[:, :d] = V
    P = P.reshape(n, rows, _LANES)
    per_chunk = SUM_CHUNK // _LANES
    total = None
    for r0 in range(0, rows, per_chunk):
        lane = np.cumsum(P[:, r0:r0 + per_chunk], axis=1)[:, -1]  # cumsum adds in order
        chunk = ((lane[:, 0] + lane[:, 1]) + (lane[:, 2] + lane[:, 3])) + \
                ((lane[:, 4] + lane[:, 5]) + (lane[:, 6] + lane[:, 7]))
        total = chunk if total is None else total + chunk
    return total


def row_words(seed, stream, rows, count):
    """Philox words (len(rows), count) uint32: row k is ``_random.words(seed, stream, rows[k], count)``."""
    n, blocks = len(rows), -(-count // 4)
    rows = np.repeat(np.asarray(rows, dtype=np.uint64), blocks)
    i = np.tile(np.arange(blocks, dtype=np.uint64), n)
    counter = (i & np.uint64(0xFFFFFFFF), i >> np.uint64(32), rows & np.uint64(0xFFFFFFFF),
               np.full(n * blocks, _random.STREAMS[stream], np.uint64))
    out = _random.philox4x32(counter, (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))
    return out.T.reshape(n, blocks * 4)[:, :count]


def pack_codes(codes, width):
    """Codes (n, d) < 2**width -> (n, ceil(d*width/8)) uint8: code i fills bits [i*w, (i+1)*w)
    of its row's little-endian bit stream (bit j of a row is bit j % 8 of byte j // 8)."""
    n, d = codes.shape
    bits = (codes.astype(np.uint32)[:, :, None] >> np.arange(width, dtype=np.uint32)) & 1
    return np.packbits(bits.reshape(n, d * width).astype(np.uint8), axis=1, bitorder="little")


def unpack_codes(packed, width, d):
    """Inverse of ``pack_codes``: (n, nbytes) uint8 -> (n, d) uint32."""
    n = packed.shape[0]
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : d * width]
    weights = np.uint32(1) << np.arange(width, dtype=np.uint32)
    return (bits.reshape(n, d, width).astype(np.uint32) * weights).sum(axis=2, dtype=np.uint32)


def packed_tail_is_zero(packed, width, d):
    """True when the padding bits after the last code of every row are zero."""
    used = (d * width) % 8
    return used == 0 or not bool((packed[:, -1] >> np.uint8(used)).any())


def _magnitude_order(X):
    """Per row, the entries by decreasing |x| (NaN above Inf), ties by increasing index."""
    mag = np.abs(X.astype(F64))
    nan = np.isnan(mag)
    idx = np.broadcast_to(np.arange(X.shape[1]), X.shape)
    return np.stack([np.lexsort((idx[r], -np.where(nan[r], 0.0, mag[r]), ~nan[r]))
                     for r in range(X.shape[0])])


def topk(X, k):
    idx = np.sort(_magnitude_order(X)[:, :k], axis=1)
    return np.take_along_axis(X, idx, axis=1), idx


def floyd_sample(u, d, k):
    """Floyd's algorithm: k distinct indices of range(d), uniform over k-subsets, from k
    uniforms u; returned ascending."""
    chosen = set()
    for step, j in enumerate(range(d - k, d)):
        t = int(_random.below(u[step], j + 1))
        chosen.add(j if t in chosen else t)
    return np.array(sorted(chosen), dtype=np.int64)


def randk(X, k, seed):
    n, d = X.shape
    idx = np.stack([floyd_sample(_random.uniforms(seed, "randk", r, k), d, k) for r in range(n)])
    scale = F64(d) / F64(k)
    return (np.take_along_axis(X, idx, axis=1).astype(F64) * scale).astype(X.dtype), idx


def _negative(X):
    # sign(0) = +1 and NaN counts as positive: the sign bit is set only for x < 0
    return X < 0


def qsgd_width(levels):
    return int(levels).bit_length() + 1


def qsgd(X, levels, seed):
    n, d = X.shape
    X64 = X.astype(F64)
    norms = np.sqrt(ordered_row_sums(X64 * X64)).astype(X.dtype)
    norm64 = norms.astype(F64)
    finite = np.isfinite(norm64) & (norm64 > 0)
    scale = np.where(finite, F64(levels) / np.where(finite, norm64, 1.0), 0.0)
    with np.errstate(invalid="ignore"):
        r = np.abs(X64) * scale[:, None]
    r[~finite] = 0.0
    return norms, _qsgd_codes(X, r, levels, seed, np.arange(n))


def _qsgd_codes(X, r, levels, seed, rows):
    """Packed codes of the rows X (at indices rows of their message): sign bits, and the levels
    r = |x| s / ||x|| rounded up where the row's Philox word is below their fraction."""
    low = np.floor(r)
    u = row_words(seed, "qsgd", rows, X.shape[1]).astype(F64)
    up = u < (r - low) * 4294967296.0
    level = np.minimum(low + up, levels).astype(np.uint32)  # rounding may push r past s by an ulp
    codes = (_negative(X).astype(np.uint32) << np.uint32(qsgd_width(levels) - 1)) | level
    return pack_codes(codes, qsgd_width(levels))


def qsgd_by_largest(X, rows, levels, seed):
    """``qsgd`` of finite, nonzero float64 rows X (at indices rows of their message) whose sum of
    squares overflows or loses digits to subnormal squares: with m a row's largest |x| and
    t = ||x / m|| (summed as ``ordered_row_sums`` sums), the norm is m t and the levels
    r = (|x| / m) (s / t), which neither overflows nor underflows. A norm past float64's range
    is +Inf, with every level 0, as ``qsgd`` sends a non-finite norm."""
    largest = np.abs(X).max(axis=1)[:, None]
    t = np.sqrt(ordered_row_sums((X / largest) ** 2))[:, None]
    with np.errstate(over="ignore"):
        norms = largest * t
    r = np.where(np.isfinite(norms), np.abs(X) / largest * (F64(levels) / t), 0.0)
    return norms[:, 0], _qsgd_codes(X, r, levels, seed, rows)


def qsgd_decompress(norms, packed, levels, d):
    width = qsgd_width(levels)
    codes = unpack_codes(packed, width, d)
    level = codes & np.uint32((1 << (width - 1)) - 1)
    with np.errstate(invalid="ignore"):  # a non-finite norm times level 0 decodes to NaN
        magnitude = (norms.astype(F64)[:, None] * (level.astype(F64) / F64(levels))).astype(norms.dtype)
    return np.where(codes >> np.uint32(width - 1) == 1, -magnitude, magnitude)


def qsgd_levels_ok(packed, levels, d):
    width = qsgd_width(levels)
    level = unpack_codes(packed, width, d) & np.uint32((1 << (width - 1)) - 1)
    return bool((level <= levels).all())


#: (unsigned integer view, exponent bits, mantissa bits) of the natively computed dtypes
_FLOAT_BITS = {np.dtype(np.float32): (np.uint32, 8, 23), np.dtype(np.float64): (np.uint64, 11, 52)}


def natural_width(dtype):
    return 1 + _FLOAT_BITS[np.dtype(dtype)][1]


def natural(X, seed):
    """Code = sign << e | biased exponent of the chosen power of two (e exponent bits).

    |x| = (1 + m/2^p) 2^E rounds up to 2^(E+1) with probability m/2^p, decided on integers:
    up iff (uniform >> (bits - p)) < m, with a 32-bit uniform for float32 and 64 bits (two
    words) for float64. Subnormals (biased exponent 0) round between 0 and the smallest normal
    power with the same rule, so the rounding is exactly unbiased; the largest finite values
    may round up to Inf. Zero has code 0; NaN has code sign=1, exponent 0.
    """
    n, d = X.shape
    uint, ebits, pbits = _FLOAT_BITS[X.dtype]
    bits = X.view(uint)
    mantissa = bits & uint((1 << pbits) - 1)
    exponent = (bits >> uint(pbits)) & uint((1 << ebits) - 1)
    if X.dtype == np.float32:
        u = row_words(seed, "natural", np.arange(n), d) >> np.uint32(32 - pbits)
    else:
        w = row_words(seed, "natural", np.arange(n), 2 * d).astype(np.uint64)
        u = ((w[:, 0::2] << np.uint64(32)) | w[:, 1::2]) >> np.uint64(64 - pbits)
    finite = exponent != (1 << ebits) - 1
    exponent = exponent + (finite & (u < mantissa)).astype(uint)
    # a value rounded to zero keeps sign 0: sign 1 with exponent 0 is the NaN code
    codes = ((_negative(X) & (exponent != 0)).astype(uint) << uint(ebits)) | exponent
    codes[np.isnan(X)] = uint(1) << uint(ebits)
    return pack_codes(codes, ebits + 1)


def natural_decompress(packed, d, dtype):
    uint, ebits, pbits = _FLOAT_BITS[np.dtype(dtype)]
    codes = unpack_codes(packed, ebits + 1, d).astype(uint)
    out = (((codes >> uint(ebits)) << uint(ebits + pbits)) | ((codes & uint((1 << ebits) - 1)) << uint(pbits)))
    out = out.view(dtype)
    out[codes == uint(1) << uint(ebits)] = np.nan
    return out


def sign(X):
    return pack_codes(_negative(X), 1)


def scaled_sign(X):
    d = X.shape[1]
    scales = (ordered_row_sums(np.abs(X.astype(F64))) / F64(d)).astype(X.dtype)
    return scales, pack_codes(_negative(X), 1)


def sign_decompress(packed, scales, d):
    negative = unpack_codes(packed, 1, d).astype(bool)
    return np.where(negative, -scales[:, None], scales[:, None])


def scatter_rows(values, indices, d):
    out = np.zeros((values.shape[0], d), values.dtype)
    np.put_along_axis(out, indices, values, axis=1)
    return out


def indices_ok(indices, d):
    """Every row strictly increasing and below d (what topk and randk produce)."""
    return bool((indices[:, 1:] > indices[:, :-1]).all() and (indices[:, -1] < d).all())


def mean_std(X, ddof):
    X64 = X.astype(F64)
    mu = _sum_of_rows(X64) / X.shape[1]
    var = _sum_of_rows((X64 - mu[:, None, :]) ** 2) / (X.shape[1] - ddof)
    return mu.astype(X.dtype), np.sqrt(var).astype(X.dtype)


def centred_dots(X, mu, z):
    return np.einsum("bhd,bd->bh", X - mu[:, None, :], z)


def power_step(X, mu, dots):
    centred = X - mu[:, None, :]
    u = np.einsum("bh,bhd->bd", dots, centred)
    return u, np.einsum("bhd,bd->bh", centred, u)


def standard_normals(seed, row, d):
    """Box-Muller on Philox: entries (2m, 2m+1) of a row come from the uniforms (u1, u2) made of
    words 4m..4m+3: sqrt(-2 ln(1 - u1)) (cos, sin)(2 pi u2). ln, sin and cos are fdlibm's, as in
    every kernel, not NumPy's (the C library's, a few ulps apart): the same seed gives the same
    bits on every backend of a device kind (SPEC §1). The tests hold them to 4 ulps of Python's
    math on the same uniforms."""
    pairs = -(-d // 2)
    u = _random.uniforms(seed, "gaussian", row, 2 * pairs).reshape(pairs, 2)
    radius = np.sqrt(-2.0 * _log_unit(1.0 - u[:, 0]))  # 1 - u1 is exact: u1 is a multiple of 2^-53
    sine, cosine = _sincos_angle(2.0 * np.pi * u[:, 1])
    return np.stack([radius * cosine, radius * sine], axis=1).reshape(-1)[:d]


_U64 = np.uint64


def _log_unit(y):
    """ln y for normal y in (0, 1] (fdlibm's e_log.c): y = 2^k (1 + f), 1 + f in [sqrt(2)/2, sqrt(2))."""
    # Adding 1's high word less sqrt(2)/2's carries into the exponent where the mantissa is at
    # least sqrt(2); the low 52 bits with sqrt(2)/2's high word added back are then 1 + f.
    shifted = y.view(_U64) + _U64((0x3ff00000 - 0x3fe6a09e) << 32)
    f = ((shifted & _U64(0x000fffffffffffff)) + _U64(0x3fe6a09e << 32)).view(F64) - 1.0
    k = (shifted >> _U64(52)).astype(F64) - 1023.0
    hfsq, s = 0.5 * f * f, f / (2.0 + f)
    z = s * s
    w = z * z
    R = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))) + w * (LG2 + w * (LG4 + w * LG6))
    return (((s * (hfsq + R) + k * LN2_LO) - hfsq) + f) + k * LN2_HI


def _sin_reduced(x, y):
    """sin(x + y) for |x + y| <= pi/4, y the tail of x (fdlibm's k_sin.c)."""
    z = x * x
    w, v = z * z, z * x
    r = (S2 + z * (S3 + z * S4)) + z * w * (S5 + z * S6)
    return x - ((z * (0.5 * y - v * r) - y) - v * S1)


def _cos_reduced(x, y):
    """cos(x + y) for |x + y| <= pi/4, y the tail of x (fdlibm's k_cos.c)."""
    z = x * x
    w = z * z
    r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6))
    hz = 0.5 * z
    one_minus_hz = 1.0 - hz
    return one_minus_hz + (((1.0 - one_minus_hz) - hz) + (z * r - x * y))


def _sincos_angle(a):
    """(sin a, cos a) for a in [0, 2 pi): a = n pi/2 + (y0 + y1), pi/2 taken in three 33-bit
    parts with their tails (fdlibm's e_rem_pio2.c, medium case), each part's rounding error
    carried into the tail y1."""
    rounder = a * INV_PIO2 + ROUNDER  # a 2/pi, rounded in the low bits
    n = rounder - ROUNDER
    r = a - n * PIO2_1  # exact
    for part, part_tail in ((PIO2_2, PIO2_2T), (PIO2_3, PIO2_3T)):
        t, product = r, n * part
        r = t - product
        tail = n * part_tail - ((t - r) - product)
    y0 = r - tail
    y1 = (r - y0) - tail
    s, c = _sin_reduced(y0, y1), _cos_reduced(y0, y1)
    quadrant = rounder.view(_U64) & _U64(3)
    odd, upper = (quadrant & _U64(1)) == 1, (quadrant >> _U64(1)) == 1
    sine, cosine = np.where(odd, c, s), np.where(odd, s, c)
    return np.where(upper, -sine, sine), np.where(upper != odd, -cosine, cosine)


def gaussian(own, std, seed):
    B, f, d = own.shape
    z = np.stack([standard_normals(seed, r, d) for r in range(B * f)]).reshape(B, f, d)
    return (own.astype(F64) + std * z).astype(own.dtype)


def attack_candidates(H, mu, direction, etas, f):
    B, h, d = H.shape
    candidates = np.empty((B, etas.size, h + f, d), H.dtype)
    candidates[:, :, :h] = H[:, None]
    byzantine = mu.astype(F64)[:, None, :] + etas[None, :, None] * direction.astype(F64)[:, None, :]
    candidates[:, :, h:] = byzantine.astype(H.dtype)[:, :, None, :]
    return candidates


def candidate_deviations(H, mu, direction, etas, f, rule, trim):
    return deviations_of_built_candidates(sys.modules[__name__], H, mu, direction, etas, f, rule, trim)
