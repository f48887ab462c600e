"""The ``numba`` backend: the C++ kernels' algorithms in Numba, the CPU fallback when the
extension is not built. Parallel over (batch item, column tile) with ``prange``; the GIL is
released (``nogil=True``). Compiled on first use and cached on disk.

Determinism: every parallel job owns its outputs (a tile of columns, or the partial sums of a
tile), and partial sums are combined in tile order, so 1 and 16 threads give the same bits.
Sums are accumulated in float64 for float32 input too.
"""
from __future__ import annotations

import numba
import numpy as np

from .. import _config

#: ``error_model="numpy"``: a float division by zero gives Inf/NaN as in the reference, not an
#: exception.
_KERNEL = dict(parallel=True, nogil=True, cache=True, error_model="numpy")
#: reassociation lets LLVM vectorize float64 sums with several accumulators; the order is fixed
#: at compile time, so results still do not depend on the thread count. No 'nnan'/'ninf':
#: non-finite entries must keep their IEEE meaning.
_SUM_KERNEL = dict(_KERNEL, fastmath={"reassoc", "contract"})
#: columns of one cache block in the fused passes (n rows x block columns are read twice):
#: about 256 KiB of float64, the L2 size of the smallest CPUs we target.
_BLOCK_ELEMENTS = 1 << 15
#: parallel work items per call of pairwise_sqdist; fixed (not the thread count) so that the
#: order of its partial sums never depends on scheduling.
_PAIR_JOBS = 64


def details():
    return {"threads": numba.get_num_threads(), "version": numba.__version__}


def _tiles(d, tile):
    return (d + tile - 1) // tile


def _block(n, tile):
    return min(tile, max(8, _BLOCK_ELEMENTS // n))


# ---- coordinate-wise rules ------------------------------------------------------------------

@numba.njit(parallel=True, nogil=True, cache=True)
def _mean(X, tile, out):
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        w = min(tile, d - c0)
        acc = np.zeros(w)  # double accumulation, as in csrc/coordinatewise.cpp
        for i in range(n):
            for j in range(w):
                acc[j] += X[b, i, c0 + j]
        for j in range(w):
            out[b, c0 + j] = acc[j] / n


def mean(X):
    out = np.empty((X.shape[0], X.shape[2]), X.dtype)
    _mean(X, _config.COL_TILE, out)
    return out


_MEDIAN, _TRIMMED_MEAN, _MEAN_AROUND_MEDIAN = 0, 1, 2


@numba.njit(inline="always")
def _middle(s):
    n = s.size
    # halves first, in float64, exactly as the reference (no overflow for huge values)
    return 0.5 * np.float64(s[(n - 1) // 2]) + 0.5 * np.float64(s[n // 2])


@numba.njit(inline="always")
def _far(value, med):
    """|value - med| with NaN as +Inf, the reference's distance order."""
    dist = abs(np.float64(value) - med)
    return np.inf if dist != dist else dist


@numba.njit
def _mean_around_median(s, keep):
    """Mean of the ``keep`` values of sorted ``s`` closest to its median, distance ties going to
    the smaller value. The closest values form a window around the middle: grow it one value at
    a time from the side whose next value is closer (the lower side on ties)."""
    n = s.size
    med = _middle(s)
    lo, hi = (n - 1) // 2, (n - 1) // 2 + 1  # window s[lo + 1 : hi] grows from empty
    total = 0.0
    for _ in range(keep):
        if hi >= n or (lo >= 0 and _far(s[lo], med) <= _far(s[hi], med)):
            total += s[lo]
            lo -= 1
        else:
            total += s[hi]
            hi += 1
    return total / keep


@numba.njit(**_KERNEL)
def _coordinatewise(X, rule, f, tile, out):
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        w = min(tile, d - c0)
        # one contiguous column per value set: reads of X stay row-wise, selection is local
        columns = np.empty((w, n), X.dtype)
        for i in range(n):
            for j in range(w):
                columns[j, i] = X[b, i, c0 + j]
        for j in range(w):
            s = columns[j]
            s.sort()  # Numba's float sort puts NaN after +Inf: the 'outlier' order
            if rule == _MEDIAN:
                out[b, c0 + j] = _middle(s)
            elif rule == _TRIMMED_MEAN:
                total = 0.0
                for i in range(f, n - f):
                    total += s[i]
                out[b, c0 + j] = total / (n - 2 * f)
            else:
                out[b, c0 + j] = _mean_around_median(s, n - f)


def _run_coordinatewise(X, rule, f):
    out = np.empty((X.shape[0], X.shape[2]), X.dtype)
    _coordinatewise(X, rule, f, _config.COL_TILE, out)
    return out


def cwmed(X):
    return _run_coordinatewise(X, _MEDIAN, 0)


def cwtm(X, f):
    return _run_coordinatewise(X, _TRIMMED_MEAN, f)


def meamed(X, f):
    return _run_coordinatewise(X, _MEAN_AROUND_MEDIAN, f)


# ---- distances ------------------------------------------------------------------------------

@numba.njit(**_SUM_KERNEL)
def _pairwise_partials(X, chunk, block, partial):
    """partial[b, g, i, j] (i < j): sum over the columns of chunk g of (x_i - x_j)^2, with
    exact float64 differences."""
    B, n, d = X.shape
    chunks = partial.shape[1]
    for job in numba.prange(B * chunks):
        b, g = job // chunks, job % chunks
        start, stop = g * chunk, min(d, (g + 1) * chunk)
        acc = partial[b, g]
        for s0 in range(start, stop, block):
            s1 = min(stop, s0 + block)
            for i in range(n):
                for j in range(i + 1, n):
                    total = 0.0
                    for c in range(s0, s1):
                        diff = np.float64(X[b, i, c]) - np.float64(X[b, j, c])
                        total += diff * diff
                    acc[i, j] += total


def pairwise_sqdist(X):
    B, n, d = X.shape
    tile = _config.COL_TILE
    tiles = _tiles(d, tile)
    chunk = tile * _tiles(tiles, min(tiles, max(1, _PAIR_JOBS // B)))
    partial = np.zeros((B, _tiles(d, chunk), n, n))
    _pairwise_partials(X, chunk, _block(n, tile), partial)
    upper = partial.sum(axis=1)  # chunk order: fixed
    D = upper + upper.transpose(0, 2, 1)
    # a pair with a non-finite row sums to NaN or +Inf; overflow of finite rows gives +Inf
    D[np.isnan(D)] = np.inf
    return D


# ---- row-wise maps and reductions -----------------------------------------------------------

@numba.njit(**_KERNEL)
def _mix_rows(X, idx, tile, out):
    B, n, d = X.shape
    m, k = idx.shape[1], idx.shape[2]
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        w = min(tile, d - c0)
        acc = np.empty(w)
        for j in range(m):
            acc[:] = 0.0
            count = 0
            for t in range(k):
                r = idx[b, j, t]
                if r >= 0:
                    count += 1
                    for c in range(w):
                        acc[c] += X[b, r, c0 + c]
            for c in range(w):
                out[b, j, c0 + c] = acc[c] / count


def mix_rows(X, idx):
    out = np.empty((X.shape[0], idx.shape[1], X.shape[2]), X.dtype)
    _mix_rows(X, idx, _config.COL_TILE, out)
    return out


@numba.njit(**_SUM_KERNEL)
def _norm_partials(X, q, tile, partial, probe):
    """partial[b, t, i]: sum of |x|^q over tile t of row i (max |x| for q = inf); probe: sum of
    x * 0, which is NaN exactly when the row has a NaN or Inf entry in the tile."""
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        c0 = t * tile
        c1 = min(d, c0 + tile)
        for i in range(n):
            total, zero = 0.0, 0.0
            if q == 2.0:
                for c in range(c0, c1):
                    x = np.float64(X[b, i, c])
                    total += x * x
                    zero += x * 0.0
            elif q == 1.0:
                for c in range(c0, c1):
                    x = np.float64(X[b, i, c])
                    total += abs(x)
                    zero += x * 0.0
            elif q == np.inf:
                for c in range(c0, c1):
                    x = abs(np.float64(X[b, i, c]))
                    if x > total or x != x:  # a NaN, once seen, stays
                        total = x
                    zero += x * 0.0
            else:
                for c in range(c0, c1):
                    x = np.float64(X[b, i, c])
                    total += abs(x) ** q
                    zero += x * 0.0
            partial[b, t, i] = total
            probe[b, t, i] = zero


def _norms(X, q):
    """(q-norms (B, n) float64, finite rows (B, n) bool)."""
    B, n, d = X.shape
    tiles = _tiles(d, _config.COL_TILE)
    partial, probe = np.empty((B, tiles, n)), np.empty((B, tiles, n))
    _norm_partials(X, q, _config.COL_TILE, partial, probe)
    if q == np.inf:
        norms = partial.max(axis=1)
    else:
        total = partial.sum(axis=1)
        norms = total if q == 1.0 else np.sqrt(total) if q == 2.0 else total ** (1.0 / q)
    return norms, ~np.isnan(probe.sum(axis=1))


def row_norms(X, q):
    norms, finite = _norms(X, float(q))
    norms[~finite] = np.inf
    return norms


@numba.njit(**_KERNEL)
def _scale_rows(X, scale, tile, out):
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        c1 = min(d, c0 + tile)
        for i in range(n):
            s = scale[b, i]
            for c in range(c0, c1):
                out[b, i, c] = np.float64(X[b, i, c]) * s


def _clip_scale(norms, tau):
    return np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))


def clip(X, tau):
    norms, finite = _norms(X, 2.0)
    scale = np.where(finite, _clip_scale(np.where(finite, norms, 1.0), tau), 1.0)
    out = np.empty_like(X)
    _scale_rows(X, scale, _config.COL_TILE, out)
    return out


# ---- iterative rules: geometric median, centered clipping -----------------------------------

@numba.njit(inline="always")
def _row_sqdist(X, b, i, v, c0, c1):
    """sum over columns c0:c1 of (x_i - v)^2 in float64."""
    total = 0.0
    for c in range(c0, c1):
        diff = np.float64(X[b, i, c]) - v[b, c]
        total += diff * diff
    return total


@numba.njit(**_SUM_KERNEL)
def _sqdist_to_center(X, v, tile, sq, probe):
    """sq[b, t, i]: squared distance from row i to v[b] over tile t; probe as in _norm_partials."""
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        c0 = t * tile
        c1 = min(d, c0 + tile)
        for i in range(n):
            zero = 0.0
            for c in range(c0, c1):
                zero += np.float64(X[b, i, c]) * 0.0
            probe[b, t, i] = zero
            sq[b, t, i] = _row_sqdist(X, b, i, v, c0, c1)


@numba.njit(**_SUM_KERNEL)
def _update_center(X, coef, divisor, centered, rows, items, v, tile, block, sq):
    """One step of a reweighted center, then the new distances, in one read of X:
    v <- sum_i coef_i x_i / divisor (Weiszfeld), or with ``centered``
    v <- v + sum_i coef_i (x_i - v) / divisor (centered clipping); only ``rows`` enter a sum.
    sq[b, t, i] gets row i's squared distance to the new v over tile t (items not in
    ``items`` are left alone)."""
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        if not items[b]:
            continue
        c0 = t * tile
        c1 = min(d, c0 + tile)
        acc = np.empty(block)
        for s0 in range(c0, c1, block):
            s1 = min(c1, s0 + block)
            acc[:] = 0.0
            for i in range(n):
                if rows[b, i]:
                    a = coef[b, i]
                    if centered:
                        for c in range(s0, s1):
                            acc[c - s0] += a * (np.float64(X[b, i, c]) - v[b, c])
                    else:
                        for c in range(s0, s1):
                            acc[c - s0] += a * np.float64(X[b, i, c])
            for c in range(s0, s1):
                v[b, c] = v[b, c] + acc[c - s0] / divisor[b] if centered else acc[c - s0] / divisor[b]
            for i in range(n):
                if rows[b, i]:
                    sq[b, t, i] += _row_sqdist(X, b, i, v, s0, s1)


def _distances(X, v):
    """(distances (B, n) from each row to v[b], finite rows (B, n)) in one read of X."""
    B, n, d = X.shape
    tile = _config.COL_TILE
    sq, probe = np.empty((B, _tiles(d, tile), n)), np.empty((B, _tiles(d, tile), n))
    _sqdist_to_center(X, v, tile, sq, probe)
    finite = ~np.isnan(probe.sum(axis=1))
    return np.where(finite, np.sqrt(sq.sum(axis=1)), 0.0), finite


def _step(X, v, coef, divisor, *, centered, rows, items):
    """Update v in place (see _update_center); the rows' new distances (B, n), 0 where unused."""
    B, n, d = X.shape
    tile = _config.COL_TILE
    sq = np.zeros((B, _tiles(d, tile), n))
    _update_center(X, coef, divisor, centered, rows, items, v, tile, _block(n, tile), sq)
    return np.sqrt(sq.sum(axis=1))


def geomed(X, weights, init, maxiter, eps, nu):
    B, n, d = X.shape
    v = np.zeros((B, d)) if isinstance(init, str) else init.astype(np.float64)
    dist, finite = _distances(X, v)
    w = np.where(finite, weights, 0.0)
    used = w > 0
    everything = np.ones(B, dtype=np.bool_)
    if isinstance(init, str) and init == "mean":
        dist = _step(X, v, w, w.sum(axis=1), centered=False, rows=used, items=everything)
    obj = (w * dist).sum(axis=1)
    iters = np.zeros(B, np.int64)
    active = everything.copy()
    for t in range(1, maxiter + 1):
        beta = np.zeros((B, n))
        np.divide(w, np.maximum(nu, dist), out=beta, where=used & active[:, None])
        dist = _step(X, v, beta, beta.sum(axis=1), centered=False, rows=used & active[:, None],
                     items=active)
        new_obj = (w * dist).sum(axis=1)
        iters[active] = t
        converged = np.abs(obj - new_obj) < eps * new_obj  # RFA's relative stopping rule
        obj = np.where(active, new_obj, obj)
        active &= ~converged
        if not active.any():
            break
    return v.astype(X.dtype), iters, obj


def cclip(X, tau, iters, v0):
    B, n, d = X.shape
    v = v0.astype(np.float64)
    dist, finite = _distances(X, v)
    divisor = np.full(B, float(n))  # non-finite rows count in n but add 0
    everything = np.ones(B, dtype=np.bool_)
    for _ in range(iters):
        scale = np.where(finite, _clip_scale(dist, tau), 0.0)
        dist = _step(X, v, scale, divisor, centered=True, rows=finite, items=everything)
    return v.astype(X.dtype)
