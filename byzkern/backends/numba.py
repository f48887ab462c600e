"""The ``numba`` backend: the C++ kernels' algorithms in Numba, the CPU fallback when the
extension is not built. Parallel over (batch item, column tile) with ``prange``; the GIL is
released (``nogil=True``). Compiled on first use and cached on disk.

Determinism: every parallel job owns its outputs (a tile of columns, or the partial sums of a
tile), and partial sums are combined in tile order, so 1 and 16 threads give the same bits.
Sums are accumulated in float64 for float32 input too.
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros  # LLVM's cttz
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import _config, _random
from .._random import (C1, C2, C3, C4, C5, C6, INV_PIO2, LG1, LG2, LG3, LG4, LG5, LG6, LG7, LN2_HI, LN2_LO,
                       PIO2_1, PIO2_2, PIO2_2T, PIO2_3, PIO2_3T, ROUNDER, S1, S2, S3, S4, S5, S6)
from . import _weiszfeld, mean_tile, serial_when_small

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
#: columns of the sums mix_rows keeps per output and per kept prefix (8 KiB each, in L1)
_MIX_BLOCK = 1024


def details():
    return {"threads": numba.get_num_threads(), "version": numba.__version__}


def _tiles(d, tile):
    return (d + tile - 1) // tile


def _block(n, tile):
    return min(tile, max(8, _BLOCK_ELEMENTS // n))


# ---- coordinate-wise rules ------------------------------------------------------------------

@numba.njit(inline="always")
def _add_rows(X, b, c0, w, acc):
    """acc[:w] += the n rows of columns c0:c0+w, in row order, four rows per pass over acc: the
    same additions as one row per pass with a quarter of the accumulator loads and stores.
    Rows are taken as slices, whose loops vectorize (3-D indexing in the loop did not)."""
    n = X.shape[1]
    i = 0
    while i + 4 <= n:
        r0, r1 = X[b, i, c0:c0 + w], X[b, i + 1, c0:c0 + w]
        r2, r3 = X[b, i + 2, c0:c0 + w], X[b, i + 3, c0:c0 + w]
        for j in range(w):
            acc[j] = (((acc[j] + r0[j]) + r1[j]) + r2[j]) + r3[j]
        i += 4
    for i in range(i, n):
        row = X[b, i, c0:c0 + w]
        for j in range(w):
            acc[j] += row[j]


@numba.njit(**_KERNEL)
def _mean(X, tile, out):
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        w = min(tile, d - c0)
        acc = np.zeros(w)  # double accumulation, as in csrc/coordinatewise.cpp
        _add_rows(X, b, c0, w, acc)
        dst = out[b, c0:c0 + w]
        for j in range(w):
            dst[j] = acc[j] / n


def mean(X):
    out = np.empty((X.shape[0], X.shape[2]), X.dtype)
    _mean(X, mean_tile(X.shape[0], X.shape[2], numba.get_num_threads()), out)
    return out


_MEDIAN, _TRIMMED_MEAN, _MEAN_AROUND_MEDIAN = 0, 1, 2
#: the classes of a rule that reads every position (the full network, csrc's AllPositions)
_EVERY_POSITION = 3
#: rows ordered together by one unrolled network on the runtime path (n past
#: _MAX_UNROLLED_ROWS), whose network then only merges these groups (csrc/select.hpp's GROUP_ROWS)
_GROUP_ROWS = 32


@functools.lru_cache(maxsize=None)
def _sorting_network(n, rule, f, first_level=1):
    """Batcher's odd-even merge sort for any n as (comparators, 2) int64 pairs (a < b): the
    network of the next power of two without the comparators that touch an index >= n, exact
    because those positions would hold +Inf padding that no comparator moves; then pruned to
    what ``rule`` reads (csrc/select.hpp's prune_network): a comparator of two positions of one
    class that no later kept comparator touches only permutes values within that class. Levels
    below first_level (a power of two) are left out: they only order each aligned group of
    first_level positions, which the caller does another way."""
    net = []
    p = first_level
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        net.append((i + j, i + j + k))
            k >>= 1
        p <<= 1
    classes = [_position_class(p, n, rule, f) for p in range(n)]
    touched_later, kept = [False] * n, []
    for a, b in reversed(net):
        if touched_later[a] or touched_later[b] or classes[a] != classes[b]:
            touched_later[a] = touched_later[b] = True
            kept.append((a, b))
    return np.array(kept[::-1], dtype=np.int64).reshape(-1, 2)


def _position_class(p, n, rule, f):
    """Which output positions a rule must find exactly (as csrc/coordinatewise.cpp's
    network_classes): the median reads (n-1)/2 and n/2; a trimmed mean sums the middle n - 2f as
    a set; the mean around the median needs [0, f], [n-f-1, n) and the median's positions."""
    if rule == _EVERY_POSITION:
        return p
    if rule == _MEDIAN:
        return 0 if p < (n - 1) // 2 else 1 if p == (n - 1) // 2 else 2 if p == n // 2 else 3
    if rule == _TRIMMED_MEAN:
        return 0 if p < f else 1 if p < n - f else 2
    middle = f < p < n - f - 1 and p != (n - 1) // 2 and p != n // 2
    return -1 if middle else p


@intrinsic
def _prefetch(typingctx, array, index):
    """Asks for the cache line of array's element ``index`` (counted in its flat buffer) in L2,
    without waiting for it; an address past the end is harmless."""
    def codegen(context, builder, signature, args):
        array_, index_ = args
        data = context.make_array(signature.args[0])(context, builder, array_).data
        address = builder.gep(data, [index_])
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
                                                  "llvm.prefetch.p0")
        builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])  # read, L2, data
        return context.get_dummy_value()

    return types.void(array, index), codegen


#: how far ahead along each row _ordered_rule_tile prefetches, in blocks of _GROUP columns
_PREFETCH_BLOCKS = 2


@numba.njit(inline="always")
def _sort_block(block, net):
    for q in range(net.shape[0]):
        low, high = block[net[q, 0]], block[net[q, 1]]
        for l in range(_GROUP):
            x, y = low[l], high[l]
            low[l] = y if y < x else x
            high[l] = x if y < x else y


@numba.njit(inline="always")
def _median_lanes(block, w, med):
    """The reference's median per lane: halves first, in float64 (no overflow for huge values)."""
    n = block.shape[0]
    lo, hi = block[(n - 1) // 2], block[n // 2]
    for l in range(w):
        med[l] = 0.5 * np.float64(lo[l]) + 0.5 * np.float64(hi[l])


@numba.njit(inline="always")
def _far(value, med):
    """|value - med| with NaN as +Inf, the reference's distance order."""
    dist = abs(np.float64(value) - med)
    return np.inf if dist != dist else dist


@numba.njit(inline="always")
def _mean_around_median_lanes(block, w, f, med, start, acc):
    """Mean of the n - f values of each sorted lane closest to its median, distance ties going to
    the smaller value. They form a window [s, s + n - f) with s in [0, f]: dropping the f values
    of largest (distance, position) merges the left end (distances falling inward) with the
    right end (rising outward), so of each pair (p, n - f + p), p < f, exactly one is kept, the
    right one where the left is strictly farther, and s counts those pairs (as
    csrc/coordinatewise.cpp). Only positions [0, f), [n - f, n) and the median's are read
    for s. The window is summed in position order, the values outside it adding an exact
    zero (selected, not branched on: the loop vectorizes)."""
    n = block.shape[0]
    keep = n - f
    _median_lanes(block, w, med)
    start[:w] = 0
    for p in range(f):
        left, right = block[p], block[keep + p]
        for l in range(w):
            start[l] += _far(left[l], med[l]) > _far(right[l], med[l])
    acc[:w] = 0.0
    for p in range(n):
        row = block[p]
        if f <= p < keep:  # inside every window
            for l in range(w):
                acc[l] += row[l]
        elif p < f:
            for l in range(w):
                acc[l] += row[l] if start[l] <= p else 0.0
        else:
            for l in range(w):
                acc[l] += row[l] if p - keep < start[l] else 0.0
    for l in range(w):
        acc[l] /= keep


@numba.njit(inline="always")
def _order_block(keys, b, s0, w, net, order_address, tail, block):
    """block[:n]: the keys of columns s0:s0+w of item b (n rows), each column ordered: each
    group of _GROUP_ROWS rows by the unrolled cfunc at order_address (_group_order), the groups
    merged by the runtime network net; lanes past w order zeros. The rows' lines
    _PREFETCH_BLOCKS blocks ahead are prefetched: with tens of rows read side by side the
    hardware prefetchers lose track of the streams (as csrc/select.hpp)."""
    n, d = keys.shape[1], keys.shape[2]
    line = max(1, 64 // keys.itemsize)
    for i in range(n):
        ahead = (b * n + i) * d + s0 + _PREFETCH_BLOCKS * _GROUP
        for e in range(0, _GROUP, line):
            _prefetch(keys, ahead + e)
    source, first, stride = keys, (b * n) * d + s0, d
    if w < _GROUP:  # a last block narrower than _GROUP, from tail: (1, n, _GROUP) zeros
        for i in range(n):
            tail[0, i, :w] = keys[b, i, s0:s0 + w]
        source, first, stride = tail, 0, _GROUP
    for g in range((n + _GROUP_ROWS - 1) // _GROUP_ROWS):
        rows = min(_GROUP_ROWS, n - g * _GROUP_ROWS)
        _call_tile(order_address, source, first + g * _GROUP_ROWS * stride, stride, rows, 0, block,
                   g * _GROUP_ROWS * _GROUP)
    _sort_block(block, net)


@numba.njit(inline="always")
def _rule_lanes(ordered, w, rule, f, med, start, result):
    """result[:w]: the rule over each of the first w lanes of ordered (n rows, each lane's
    values in order), in float64 (med and start: scratch of _mean_around_median_lanes). Only
    the positions the rule reads must be in place: (n-1)/2 and n/2, [f, n - f), or all."""
    n = ordered.shape[0]
    if rule == _MEDIAN:
        _median_lanes(ordered, w, result)
    elif rule == _TRIMMED_MEAN:
        result[:w] = 0.0
        for p in range(f, n - f):  # the middle as a set: the sum's bits may differ
            row = ordered[p]
            for l in range(w):
                result[l] += row[l]
        for l in range(w):
            result[l] /= n - 2 * f
    else:
        _mean_around_median_lanes(ordered, w, f, med, start, result)


@numba.njit(inline="always")
def _ordered_rule_tile(X, keys, b, c0, c1, rule, f, net, order_address, out):
    """out[b, c0:c1]: the rule over columns c0:c1 of batch item b (X, and keys: its bits as
    integers), _GROUP columns at a time: ordered as keys (_order_block), turned back into
    values for the rule."""
    n = X.shape[1]
    groups = (n + _GROUP_ROWS - 1) // _GROUP_ROWS
    block = np.empty((groups * _GROUP_ROWS, _GROUP), keys.dtype)
    values = block.view(X.dtype)
    tail = np.zeros((1, n, _GROUP), keys.dtype)
    result = np.empty(_GROUP)
    start = np.empty(_GROUP, np.int64)
    med = np.empty(_GROUP)
    sign_shift = 8 * X.itemsize - 1
    magnitude = (1 << sign_shift) - 1
    for s0 in range(c0, c1, _GROUP):
        w = min(_GROUP, c1 - s0)
        _order_block(keys, b, s0, w, net, order_address, tail, block)
        for p in range(n):  # keys back to values; the NaN key, above +Inf's, is NaN again
            row = block[p]
            for l in range(_GROUP):
                k = row[l]
                row[l] = k ^ ((k >> sign_shift) & magnitude)
        _rule_lanes(values[:n], w, rule, f, med, start, result)
        for l in range(w):
            out[b, s0 + l] = result[l]


@numba.njit(**_KERNEL)
def _coordinatewise(X, keys, rule, f, net, order_address, tile, out):
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        _ordered_rule_tile(X, keys, b, c0, min(d, c0 + tile), rule, f, net, order_address, out)


def _rule_program(n, rule, f, dtype):
    """(tile_address, net, order_address): the unrolled tile cfunc of the rule for n rows, or
    past _MAX_UNROLLED_ROWS[rule] 0, the runtime network merging groups of _GROUP_ROWS rows,
    and the cfunc ordering each group (_ordered_rule_tile)."""
    if n <= _MAX_UNROLLED_ROWS[rule]:
        return _unrolled_tile(n, rule, dtype).address, np.empty((0, 2), np.int64), 0
    return 0, _sorting_network(n, rule, f, _GROUP_ROWS), _group_order(dtype).address


def _run_coordinatewise(X, rule, f):
    out = np.empty((X.shape[0], X.shape[2]), X.dtype)
    address, net, order_address = _rule_program(X.shape[1], rule, f, X.dtype)
    keys = X.view(_KEY_TYPES[X.dtype])
    if address:
        _unrolled_tiles(keys, address, f, _config.COL_TILE, out)
    else:
        _coordinatewise(X, keys, rule, f, net, order_address, _config.COL_TILE, out)
    return out


# ---- unrolled networks (n <= _MAX_UNROLLED_ROWS[rule]) -------------------------------------
# As csrc/select.hpp's static networks: one column's n keys in registers, the network as
# straight-line min/max, the rule's reads, one store. The code is emitted as LLVM IR by an
# intrinsic (generated Python source would cost Numba's front end seconds per n) into a loop over
# columns that LLVM's loop vectorizer turns into one column per SIMD lane (vpminsd/vpmaxsd).
# Each (n, rule, dtype) is a cfunc compiled on first use and cached on disk; one parallel driver
# per dtype calls it by address, so a new n compiles only its own loop, not a parallel kernel.

#: largest n with an unrolled network per rule; larger n take _coordinatewise (groups of
#: _GROUP_ROWS unrolled, merged at run time). float32, 2 threads, cwmed / cwtm: at n = 40 the
#: unrolled network took 3.7 / 4.5 ms at d = 5e5 against 5.3 / 5.9, even at n = 48, and at
#: n = 64 (d = 1e6) 26-27 ms against 17.5 / 19.5, its spills past the registers. meamed's window
#: search grows as n^2 here (f is known only at run time), where _mean_around_median_lanes counts
#: f pairs: the runtime path was faster from n = 21 on (n = 20, 21, 24, 32, d = 1e6 to 5e5:
#: 6.1 / 7.9 / 6.5 / 7.9 ms unrolled, 6.7 / 6.7 / 5.8 / 4.4 runtime; the same bits).
_MAX_UNROLLED_ROWS = {_MEDIAN: 48, _TRIMMED_MEAN: 48, _MEAN_AROUND_MEDIAN: 20}
#: the integers whose order the keys of each float type are made to follow
_KEY_TYPES = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _flip_negative(builder, k):
    """IR: a key's magnitude bits flipped where it is negative (a value's bits to its key, and
    back)."""
    bits = k.type.width
    return builder.xor(k, builder.and_(builder.ashr(k, ir.Constant(k.type, bits - 1)),
                                       ir.Constant(k.type, (1 << (bits - 1)) - 1)))


def _ordered_column(builder, keys_ptr, stride_, c_, n, network, present=None):
    """IR: the keys of column c_ of n rows (row i at keys_ptr + i * stride_), made
    order-preserving as in csrc/select.hpp (magnitude bits of negative values flipped, every
    NaN the canonical quiet NaN above +Inf) and ordered by network; and the alias scope of
    their loads, for the caller's stores to be outside it (no runtime alias checks, no scalar
    fallback copy of the loop). With present (a run-time row count), rows at and past it are not
    read and hold the largest key, above every value's, so they order last."""
    key = keys_ptr.type.pointee
    bits = key.width
    magnitude = ir.Constant(key, (1 << (bits - 1)) - 1)
    inf, nan = (0x7f800000, 0x7fc00000) if bits == 32 else (0x7ff0000000000000, 0x7ff8000000000000)
    module = builder.module
    domain = module.add_metadata([ir.MetaDataString(module, "byzkern.column_rule")])
    scope = module.add_metadata([ir.MetaDataString(module, "byzkern.keys"), domain])
    keys_scope = module.add_metadata([scope])
    column = []
    for i in range(n):
        index = ir.Constant(stride_.type, i)
        if present is not None:  # row 0 stands in for a missing row's load
            here = builder.icmp_signed("<", index, present)
            index = builder.select(here, index, ir.Constant(stride_.type, 0))
        offset = builder.add(builder.mul(index, stride_, flags=["nsw"]), c_, flags=["nsw"])
        x = builder.load(builder.gep(keys_ptr, [offset], inbounds=True))
        x.set_metadata("alias.scope", keys_scope)
        is_nan = builder.icmp_signed(">", builder.and_(x, magnitude), ir.Constant(key, inf))
        k = builder.select(is_nan, ir.Constant(key, nan), _flip_negative(builder, x))
        column.append(k if present is None else builder.select(here, k, magnitude))
    smin, smax = (cgutils.get_or_insert_function(module, ir.FunctionType(key, [key, key]), f"llvm.{name}.i{bits}")
                  for name in ("smin", "smax"))
    for a, b in network:
        column[a], column[b] = (builder.call(smin, [column[a], column[b]]),
                                builder.call(smax, [column[a], column[b]]))
    return column, keys_scope


@intrinsic
def _column_rule(typingctx, keys, stride, c, f, out, rows, rule):
    """out[c] = rule over column c of rows rows of keys (the float bits as integers), row i
    starting at keys + i * stride: the ordered keys (_ordered_column) turned back into values
    only where the rule reads them, in float64 as the reference computes."""
    if not isinstance(rows, types.IntegerLiteral) or not isinstance(rule, types.IntegerLiteral):
        return None
    n, which = rows.literal_value, rule.literal_value
    # f is known only at run time: the trimmed mean and the mean around the median get the full
    # network
    network = _sorting_network(n, which if which == _MEDIAN else _EVERY_POSITION, 0)

    def codegen(context, builder, signature, args):
        keys_ptr, stride_, c_, f_, out_ptr = args[:5]
        value = out_ptr.type.pointee
        column, keys_scope = _ordered_column(builder, keys_ptr, stride_, c_, n, network)
        double = ir.DoubleType()

        def value_at(p):
            v = builder.bitcast(_flip_negative(builder, column[p]), value)
            return v if value == double else builder.fpext(v, double)

        def constant(x):
            return ir.Constant(double, x)

        def masked_mean(inside, count):
            """The values of the positions where inside(p), summed in position order (the
            others add an exact zero), over count."""
            total = constant(0.0)
            for p in range(n):
                total = builder.fadd(total, builder.select(inside(p), value_at(p), constant(0.0)))
            return builder.fdiv(total, builder.sitofp(count, double))

        def small(x):
            return ir.Constant(ir.IntType(32), x)

        def count(flag):
            return builder.zext(flag, ir.IntType(32))

        # halves first, as _median_lanes
        median = builder.fadd(builder.fmul(constant(0.5), value_at((n - 1) // 2)),
                              builder.fmul(constant(0.5), value_at(n // 2)))
        f32 = builder.trunc(f_, ir.IntType(32))  # f < n <= 64
        keep = builder.sub(small(n), f32)
        if which == _MEDIAN:
            result = median
        elif which == _TRIMMED_MEAN:
            result = masked_mean(lambda p: builder.and_(builder.icmp_signed("<=", f32, small(p)),
                                                        builder.icmp_signed(">", keep, small(p))),
                                 builder.sub(keep, f32))
        else:
            # The kept values are the window [s, s + n - f) of _mean_around_median_lanes, s the
            # number of the f dropped values that come from the left end. Left distances L_j
            # (position j) fall and right ones R_k (position n-1-k) fall toward the median, so
            # L_j is dropped iff fewer than f - j right values rank above it: ties in distance
            # drop the right one (the larger value), as the reference's stable order does. The
            # pairs compared are j, k < (n-1)/2 >= f with j + k < (n-1)/2, whatever f is.
            fabs = builder.module.declare_intrinsic("llvm.fabs", [double])

            def distance(p):  # NaN counts as +Inf, as _far
                a = builder.call(fabs, [builder.fsub(value_at(p), median)])
                return builder.select(builder.fcmp_unordered("uno", a, a), constant(math.inf), a)

            ends = (n - 1) // 2
            right = [distance(n - 1 - k) for k in range(ends)]
            start = small(0)
            for j in range(ends):
                left = distance(j)
                above = small(j)
                for r in right[:ends - j]:  # j + (ends - j) >= f settles it: not dropped
                    above = builder.add(above, count(builder.fcmp_ordered(">=", r, left)))
                dropped = builder.and_(builder.icmp_signed("<", small(j), f32), builder.icmp_signed("<", above, f32))
                start = builder.add(start, count(dropped))
            end = builder.add(start, keep)
            result = masked_mean(lambda p: builder.and_(builder.icmp_signed("<=", start, small(p)),
                                                        builder.icmp_signed(">", end, small(p))), keep)
        if value != double:
            result = builder.fptrunc(result, value)
        builder.store(result, builder.gep(out_ptr, [c_], inbounds=True)).set_metadata("noalias", keys_scope)
        return context.get_dummy_value()

    return types.void(keys, stride, c, f, out, rows, rule), codegen


#: columns per loop of the cfunc: a constant trip count that every SIMD width divides, so LLVM
#: emits the vectorized network once, without a vector epilogue and a scalar remainder copy of
#: it (each more compile time); a tile's last partial group is copied into zero-padded scratch
_GROUP = 64


@functools.lru_cache(maxsize=None)
def _unrolled_tile(n, rule, dtype):
    """The cfunc applying rule to groups of _GROUP columns of n rows with row stride stride."""
    key, value = numba.from_dtype(_KEY_TYPES[dtype]), numba.from_dtype(dtype)
    signature = types.void(types.CPointer(key), types.int64, types.int64, types.int64, types.CPointer(value))

    @numba.cfunc(signature, cache=True, error_model="numpy")
    def tile(keys, stride, groups, f, out):
        for g in range(groups):
            for lane in range(_GROUP):
                _column_rule(keys, stride, g * _GROUP + lane, f, out, n, rule)

    return tile


@intrinsic
def _column_order(typingctx, keys, stride, c, present, out, rows):
    """out[i * _GROUP + c] for i < rows: column c of rows rows of keys (row i at keys + i *
    stride), ordered as keys (_ordered_column); rows at and past present are not read and
    order last."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    n = rows.literal_value
    network = _sorting_network(n, _EVERY_POSITION, 0)

    def codegen(context, builder, signature, args):
        keys_ptr, stride_, c_, present_, out_ptr = args[:5]
        column, keys_scope = _ordered_column(builder, keys_ptr, stride_, c_, n, network, present_)
        for i, k in enumerate(column):
            offset = builder.add(ir.Constant(c_.type, i * _GROUP), c_, flags=["nsw"])
            builder.store(k, builder.gep(out_ptr, [offset], inbounds=True)).set_metadata("noalias", keys_scope)
        return context.get_dummy_value()

    return types.void(keys, stride, c, present, out, rows), codegen


@functools.lru_cache(maxsize=None)
def _group_order(dtype):
    """The cfunc ordering the keys of _GROUP columns of up to _GROUP_ROWS rows (present) into
    _GROUP_ROWS rows of a block _GROUP columns wide, for _ordered_rule_tile; _unrolled_tile's
    signature (the fourth argument unused), so that _call_tile calls both."""
    key = numba.from_dtype(_KEY_TYPES[dtype])
    signature = types.void(types.CPointer(key), types.int64, types.int64, types.int64, types.CPointer(key))

    @numba.cfunc(signature, cache=True, error_model="numpy")
    def order(keys, stride, present, unused, out):
        for lane in range(_GROUP):
            _column_order(keys, stride, lane, present, out, _GROUP_ROWS)

    return order


@intrinsic
def _call_tile(typingctx, address, keys, start, stride, groups, f, out, out_start):
    """Calls the _unrolled_tile cfunc at address (an integer) on keys from element start of the
    keys array and results from element out_start of out; the arrays stay referenced meanwhile."""
    def codegen(context, builder, signature, args):
        address_, keys_, start_, stride_, groups_, f_, out_, out_start_ = args
        keys_data = context.make_array(signature.args[1])(context, builder, keys_).data
        out_data = context.make_array(signature.args[6])(context, builder, out_).data
        i64 = ir.IntType(64)
        function = ir.FunctionType(ir.VoidType(), [keys_data.type, i64, i64, i64, out_data.type])
        builder.call(builder.inttoptr(address_, function.as_pointer()),
                     [builder.gep(keys_data, [start_]), stride_, groups_, f_, builder.gep(out_data, [out_start_])])
        return context.get_dummy_value()

    return types.void(address, keys, start, stride, groups, f, out, out_start), codegen


@numba.njit(inline="always")
def _unrolled_rule_tile(keys, tile_address, f, b, c0, c1, out):
    """out[b, c0:c1]: the rule of the cfunc at tile_address over columns c0:c1 of item b."""
    n, d = keys.shape[1], keys.shape[2]
    groups = (c1 - c0) // _GROUP
    _call_tile(tile_address, keys, (b * n) * d + c0, d, groups, f, out, b * d + c0)
    c = c0 + groups * _GROUP
    if c < c1:
        scratch = np.zeros((n, _GROUP), keys.dtype)
        for i in range(n):
            scratch[i, :c1 - c] = keys[b, i, c:c1]
        result = np.empty(_GROUP, out.dtype)
        _call_tile(tile_address, scratch, 0, _GROUP, 1, f, result, 0)
        out[b, c:c1] = result[:c1 - c]


@numba.njit(**_KERNEL)
def _unrolled_tiles(keys, tile_address, f, tile, out):
    B, n, d = keys.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        _unrolled_rule_tile(keys, tile_address, f, b, c0, min(d, c0 + tile), out)


def cwmed(X):
    return _run_coordinatewise(X, _MEDIAN, 0)


def cwtm(X, f):
    return _run_coordinatewise(X, _TRIMMED_MEAN, f)


def meamed(X, f):
    return _run_coordinatewise(X, _MEAN_AROUND_MEDIAN, f)


# ---- distances ------------------------------------------------------------------------------

@numba.njit(**_SUM_KERNEL)
def _pairwise_partials(X, chunk, cols, partial):
    """partial[b, g, i, j] (i < j): sum over the columns of chunk g of (x_i - x_j)^2, with
    exact float64 differences. Each block of ``cols`` columns is converted to float64 once for
    all pairs, and a 4 x 4 block of row pairs keeps its sixteen sums in registers: eight row
    loads per sixteen squared differences, so the subtract and the FMA bound the loop. The
    pairs inside a block of four rows take their own loop of six sums, where a 4 x 4 block
    against itself computed sixteen (at n = 20, 240 differences per column for 190 pairs)."""
    B, n, d = X.shape
    chunks = partial.shape[1]
    padded = (n + 3) // 4 * 4
    for job in numba.prange(B * chunks):
        b, g = job // chunks, job % chunks
        start, stop = g * chunk, min(d, (g + 1) * chunk)
        acc = partial[b, g]
        xd = np.zeros((padded, cols))  # rows past n stay zero
        for s0 in range(start, stop, cols):
            w = min(cols, stop - s0)
            for i in range(n):
                row, dst = X[b, i, s0:s0 + w], xd[i]
                for k in range(w):
                    dst[k] = row[k]
            for I in range(0, padded, 4):
                a0, a1, a2, a3 = xd[I], xd[I + 1], xd[I + 2], xd[I + 3]
                # the six pairs inside the block of four rows
                s01 = s02 = s03 = s12 = s13 = s23 = 0.0
                for k in range(w):
                    x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                    s01 += (x0 - x1) * (x0 - x1)
                    s02 += (x0 - x2) * (x0 - x2)
                    s03 += (x0 - x3) * (x0 - x3)
                    s12 += (x1 - x2) * (x1 - x2)
                    s13 += (x1 - x3) * (x1 - x3)
                    s23 += (x2 - x3) * (x2 - x3)
                inside = ((0, 1, s01), (0, 2, s02), (0, 3, s03), (1, 2, s12), (1, 3, s13), (2, 3, s23))
                for r, q, sum_rq in inside:
                    if I + q < n:
                        acc[I + r, I + q] += sum_rq
                for J in range(I + 4, padded, 4):
                    b0, b1, b2, b3 = xd[J], xd[J + 1], xd[J + 2], xd[J + 3]
                    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
                    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = 0.0
                    for k in range(w):
                        x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                        y = b0[k]
                        s00 += (x0 - y) * (x0 - y)
                        s10 += (x1 - y) * (x1 - y)
                        s20 += (x2 - y) * (x2 - y)
                        s30 += (x3 - y) * (x3 - y)
                        y = b1[k]
                        s01 += (x0 - y) * (x0 - y)
                        s11 += (x1 - y) * (x1 - y)
                        s21 += (x2 - y) * (x2 - y)
                        s31 += (x3 - y) * (x3 - y)
                        y = b2[k]
                        s02 += (x0 - y) * (x0 - y)
                        s12 += (x1 - y) * (x1 - y)
                        s22 += (x2 - y) * (x2 - y)
                        s32 += (x3 - y) * (x3 - y)
                        y = b3[k]
                        s03 += (x0 - y) * (x0 - y)
                        s13 += (x1 - y) * (x1 - y)
                        s23 += (x2 - y) * (x2 - y)
                        s33 += (x3 - y) * (x3 - y)
                    sums = ((s00, s01, s02, s03), (s10, s11, s12, s13), (s20, s21, s22, s23),
                            (s30, s31, s32, s33))
                    for r in range(4):
                        for q in range(4):
                            if J + q < n:
                                acc[I + r, J + q] += sums[r][q]


def _pair_block_columns(n):
    """Columns per block of _pairwise_partials: 512, or fewer where the padded rows of float64
    would pass 512 KiB. Long blocks keep each 4 x 4 block's start and its sixteen sums' stores
    rare: 1 thread, (256, 1e4) float32 took 43 ms in 16-column blocks (32 KiB, in L1) and 15 ms
    in 256-column ones; (64, 3e4) 4.9 -> 3.5 ms from 64 to 512 columns."""
    return max(16, min(512, 65536 // ((n + 3) // 4 * 4)))


def pairwise_sqdist(X):
    B, n, d = X.shape
    tile = _config.COL_TILE
    tiles = _tiles(d, tile)
    chunk = tile * _tiles(tiles, min(tiles, max(1, _PAIR_JOBS // B)))
    partial = np.zeros((B, _tiles(d, chunk), n, n))
    _pairwise_partials(X, chunk, _pair_block_columns(n), partial)
    upper = partial.sum(axis=1)  # chunk order: fixed
    D = upper + upper.transpose(0, 2, 1)
    # a pair with a non-finite row sums to NaN or +Inf; overflow of finite rows gives +Inf
    D[np.isnan(D)] = np.inf
    return D


# ---- row-wise maps and reductions -----------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _mix_walk(rows, count, order):
    """The C++ MixTable's walk: outputs in lexicographic order of their rows (order); step j of
    item b starts from the sum of start rows (kept in slot from_slot; none when -1) and keeps
    the prefix sums later steps start from: saves[first_save:first_save + saved] as (depth, slot).
    """
    B, m, k = rows.shape
    walk = np.empty((B, m, 5), np.int64)  # output, start, from_slot, first_save, saved
    saves = np.empty((B * m, 2), np.int64)
    shared = np.zeros(m, np.int64)
    kept = np.empty((k + 1, 2), np.int64)
    needed = np.empty(m, np.int64)
    total, slots = 0, 1
    for b in range(B):
        for j in range(m - 1):
            r, q = order[b, j], order[b, j + 1]
            t = 0
            while t < min(count[b, r], count[b, q]) and rows[b, r, t] == rows[b, q, t]:
                t += 1
            shared[j] = t
        held = 0
        for j in range(m):
            start = shared[j - 1] if j > 0 else 0
            while held > 0 and kept[held - 1, 0] > start:
                held -= 1
            least, wanted = count[b, order[b, j]], 0
            for l in range(j, m - 1):
                least = min(least, shared[l])
                if least <= start:
                    break
                if wanted == 0 or least < needed[wanted - 1]:
                    needed[wanted] = least
                    wanted += 1
            step = walk[b, j]
            step[0], step[1], step[3], step[4] = order[b, j], start, total, wanted
            step[2] = kept[held - 1, 1] if start > 0 else -1
            for e in range(wanted - 1, -1, -1):
                kept[held, 0], kept[held, 1] = needed[e], held
                saves[total, 0], saves[total, 1] = needed[e], held
                held += 1
                total += 1
            slots = max(slots, held)
    return walk, saves, slots


@numba.njit(**_KERNEL)
def _mix_rows(X, rows, count, walk, saves, slots, tile, block, out):
    """out[b, j] = mean of X[b, rows[b, j, :count[b, j]]], summed in idx order in the table's
    walk, a block of columns at a time: a step starts from its shared prefix's sum and keeps
    the sums later steps start from (the same bits as summing each output on its own)."""
    B, n, d = X.shape
    m = rows.shape[1]
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        acc = np.empty(block)
        sums = np.empty((slots, block))
        for s0 in range(c0, min(d, c0 + tile), block):
            w = min(block, d - s0)
            for j in range(m):
                output, t, from_slot, first_save, saved = walk[b, j]
                if from_slot >= 0:
                    acc[:w] = sums[from_slot, :w]
                else:
                    acc[:w] = 0.0
                line = rows[b, output]
                for e in range(first_save, first_save + saved + 1):
                    stop = saves[e, 0] if e < first_save + saved else count[b, output]
                    # rows as slices, four per pass over acc: the same additions in the same order
                    while t + 4 <= stop:
                        r0, r1 = X[b, line[t], s0:s0 + w], X[b, line[t + 1], s0:s0 + w]
                        r2, r3 = X[b, line[t + 2], s0:s0 + w], X[b, line[t + 3], s0:s0 + w]
                        for c in range(w):
                            acc[c] = (((acc[c] + r0[c]) + r1[c]) + r2[c]) + r3[c]
                        t += 4
                    for t in range(t, stop):
                        row = X[b, line[t], s0:s0 + w]
                        for c in range(w):
                            acc[c] += row[c]
                    t = stop
                    if e < first_save + saved:
                        sums[saves[e, 1], :w] = acc[:w]
                dst = out[b, output, s0:s0 + w]
                total = count[b, output]
                for c in range(w):
                    dst[c] = acc[c] / total


def mix_rows(X, idx):
    B, m, k = idx.shape
    # each output's rows in idx order, negative entries moved to the end
    rows = np.take_along_axis(idx, np.argsort(idx < 0, axis=2, kind="stable"), axis=2)
    count = (idx >= 0).sum(axis=2)
    keys = rows.reshape(B * m, k).T[::-1]  # lexsort's last key is the first: item, then rows
    order = np.lexsort((*keys, np.repeat(np.arange(B), m))).reshape(B, m) % m
    walk, saves, slots = _mix_walk(rows, count, order)
    out = np.empty((B, m, X.shape[2]), X.dtype)
    _mix_rows(X, rows, count, walk, saves, slots, _config.COL_TILE, _MIX_BLOCK, out)
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
            row = X[b, i, c0:c1]
            total, zero = 0.0, 0.0
            if q == 2.0:
                for c in range(c1 - c0):
                    x = np.float64(row[c])
                    total += x * x
                    zero += x * 0.0
            elif q == 1.0:
                for c in range(c1 - c0):
                    x = np.float64(row[c])
                    total += abs(x)
                    zero += x * 0.0
            elif q == np.inf:
                for c in range(c1 - c0):
                    x = abs(np.float64(row[c]))
                    if x > total or x != x:  # a NaN, once seen, stays
                        total = x
                    zero += x * 0.0
            else:
                for c in range(c1 - c0):
                    x = np.float64(row[c])
                    total += abs(x) ** q
                    zero += x * 0.0
            partial[b, t, i] = total
            probe[b, t, i] = zero


def _slab_columns(d):
    """Columns per slab of whole tiles: at most _config.REDUCTION_SLABS slabs, as the C++
    column reductions."""
    return _config.COL_TILE * _tiles(_tiles(d, _config.COL_TILE), _config.REDUCTION_SLABS)


def _norms(X, q):
    """(q-norms (B, n) float64, finite rows (B, n) bool). A work item is a slab of whole tiles
    (at most _config.REDUCTION_SLABS of them, as the C++ row_norms): each row is read in one
    run per slab, where 4096-column tiles restarted n streams every 16 KiB."""
    B, n, d = X.shape
    slab = _slab_columns(d)
    slabs = _tiles(d, slab)
    partial, probe = np.empty((B, slabs, n)), np.empty((B, slabs, n))
    _norm_partials(X, q, slab, partial, probe)
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
            row, dst = X[b, i, c0:c1], out[b, i, c0:c1]
            for c in range(c1 - c0):
                dst[c] = np.float64(row[c]) * s


def _clip_scale(norms, tau):
    return np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))


def clip(X, tau):
    norms, finite = _norms(X, 2.0)
    scale = np.where(finite, _clip_scale(np.where(finite, norms, 1.0), tau), 1.0)
    out = np.empty_like(X)
    _scale_rows(X, scale, _config.COL_TILE, out)
    return out, np.where(finite, norms, np.inf)


# ---- iterative rules: geometric median, centered clipping -----------------------------------

@numba.njit(inline="always")
def _row_sqdist(row, center):
    """sum_c (row_c - center_c)^2 in float64."""
    total = 0.0
    for c in range(row.shape[0]):
        diff = np.float64(row[c]) - center[c]
        total += diff * diff
    return total


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath=_SUM_KERNEL["fastmath"])
def _tile_sqdist(X, b, t, c0, c1, center, sq, probe):
    """sq[b, t, i]: squared distance from row i of item b to center (float64) over columns
    c0:c1; probe as in _norm_partials. A row with a NaN or Inf entry has a distance that is not
    finite, so only such rows are read for the probe (a finite row's distance may overflow)."""
    for i in range(X.shape[1]):
        row = X[b, i, c0:c1]
        total = _row_sqdist(row, center)
        zero = 0.0
        if not np.isfinite(total):
            for c in range(c1 - c0):
                zero += np.float64(row[c]) * 0.0
        probe[b, t, i] = zero
        sq[b, t, i] = total


@numba.njit(**_KERNEL)
def _sqdist_to_center(X, v, tile, sq, probe):
    """sq[b, t, i]: squared distance from row i to v[b] over tile t; probe as in _norm_partials."""
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        c0 = t * tile
        c1 = min(d, c0 + tile)
        _tile_sqdist(X, b, t, c0, c1, v[b, c0:c1], sq, probe)


@numba.njit(**_KERNEL)
def _median_sqdist(X, keys, tile_address, net, order_address, tile, med, v, sq, probe):
    """med[b]: cwmed of X[b] (the program of _rule_program), v
    the same in float64, and sq and probe from it as _sqdist_to_center, in one read of X: a
    tile's rows are still in cache when its distances are taken."""
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        c0 = t * tile
        c1 = min(d, c0 + tile)
        if tile_address != 0:
            _unrolled_rule_tile(keys, tile_address, 0, b, c0, c1, med)
        else:
            _ordered_rule_tile(X, keys, b, c0, c1, _MEDIAN, 0, net, order_address, med)
        for c in range(c0, c1):
            v[b, c] = med[b, c]
        _tile_sqdist(X, b, t, c0, c1, v[b, c0:c1], sq, probe)


@numba.njit(**_SUM_KERNEL)
def _update_center(X, coef, divisor, centered, rows, items, v, tile, block, distances, sq):
    """One step of a reweighted center, then the new distances, in one read of X:
    v <- sum_i coef_i x_i / divisor (Weiszfeld), or with ``centered``
    v <- v + sum_i coef_i (x_i - v) / divisor (centered clipping); only ``rows`` enter a sum.
    The center is formed in float64 and stored in v's dtype (Weiszfeld's result is stored in
    X's dtype at once). With ``distances``, sq[b, t, i] gets every row's squared distance over
    tile t to the float64 center. Items not in ``items`` are left alone."""
    B, n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        if not items[b]:
            continue
        c0 = t * tile
        c1 = min(d, c0 + tile)
        used = np.empty(n, np.int64)
        m = 0
        for i in range(n):
            if rows[b, i]:
                used[m] = i
                m += 1
        quads = m // 4 * 4
        acc = np.empty(block)
        for s0 in range(c0, c1, block):
            s1 = min(c1, s0 + block)
            w = s1 - s0
            acc[:w] = 0.0
            center = v[b, s0:s1]
            # four rows per pass over acc and center: a quarter of their loads and stores
            for g in range(0, quads, 4):
                i0, i1, i2, i3 = used[g], used[g + 1], used[g + 2], used[g + 3]
                a0, a1, a2, a3 = coef[b, i0], coef[b, i1], coef[b, i2], coef[b, i3]
                r0, r1 = X[b, i0, s0:s1], X[b, i1, s0:s1]
                r2, r3 = X[b, i2, s0:s1], X[b, i3, s0:s1]
                if centered:
                    for c in range(w):
                        z = center[c]
                        acc[c] += (a0 * (np.float64(r0[c]) - z) + a1 * (np.float64(r1[c]) - z)
                                   + a2 * (np.float64(r2[c]) - z) + a3 * (np.float64(r3[c]) - z))
                else:
                    for c in range(w):
                        acc[c] += (a0 * np.float64(r0[c]) + a1 * np.float64(r1[c])
                                   + a2 * np.float64(r2[c]) + a3 * np.float64(r3[c]))
            for g in range(quads, m):
                a, row = coef[b, used[g]], X[b, used[g], s0:s1]
                if centered:
                    for c in range(w):
                        acc[c] += a * (np.float64(row[c]) - center[c])
                else:
                    for c in range(w):
                        acc[c] += a * np.float64(row[c])
            for c in range(w):
                acc[c] = center[c] + acc[c] / divisor[b] if centered else acc[c] / divisor[b]
                center[c] = acc[c]
            if not distances:
                continue
            # every row's distance, also the rows left out of the sum (Weiszfeld's zero coefficients)
            for i0 in range(0, n // 4 * 4, 4):
                r0, r1 = X[b, i0, s0:s1], X[b, i0 + 1, s0:s1]
                r2, r3 = X[b, i0 + 2, s0:s1], X[b, i0 + 3, s0:s1]
                q0 = q1 = q2 = q3 = 0.0
                for c in range(w):
                    z = acc[c]
                    e0, e1 = np.float64(r0[c]) - z, np.float64(r1[c]) - z
                    e2, e3 = np.float64(r2[c]) - z, np.float64(r3[c]) - z
                    q0 += e0 * e0
                    q1 += e1 * e1
                    q2 += e2 * e2
                    q3 += e3 * e3
                sq[b, t, i0] += q0
                sq[b, t, i0 + 1] += q1
                sq[b, t, i0 + 2] += q2
                sq[b, t, i0 + 3] += q3
            for i in range(n // 4 * 4, n):
                sq[b, t, i] += _row_sqdist(X[b, i, s0:s1], acc[:w])


def _sqdist_partials(X):
    """Empty (sq, probe) for _sqdist_to_center and _median_sqdist: (B, tiles, n) each."""
    B, n, d = X.shape
    return np.empty((B, _tiles(d, _config.COL_TILE), n)), np.empty((B, _tiles(d, _config.COL_TILE), n))


def _row_distances(sq, probe):
    """(distances (B, n), finite rows (B, n)) from the tiles' partial sums."""
    finite = ~np.isnan(probe.sum(axis=1))
    return np.where(finite, np.sqrt(sq.sum(axis=1)), 0.0), finite


def _distances(X, v):
    """(distances (B, n) from each row to v[b], finite rows (B, n)) in one read of X."""
    sq, probe = _sqdist_partials(X)
    _sqdist_to_center(X, v, _config.COL_TILE, sq, probe)
    return _row_distances(sq, probe)


def _median_and_distances(X):
    """(cwmed(X), it in float64, then _distances(X, it)) in one read of X."""
    B, n, d = X.shape
    sq, probe = _sqdist_partials(X)
    median, v = np.empty((B, d), X.dtype), np.empty((B, d))
    _median_sqdist(X, X.view(_KEY_TYPES[X.dtype]), *_rule_program(n, _MEDIAN, 0, X.dtype), _config.COL_TILE,
                   median, v, sq, probe)
    return (median, v, *_row_distances(sq, probe))


def _step(X, v, coef, divisor, *, centered, rows, items, distances=True):
    """Update v in place (see _update_center); the rows' new distances (B, n), or None without
    ``distances``."""
    B, n, d = X.shape
    tile = _config.COL_TILE
    sq = np.zeros((B, _tiles(d, tile), n) if distances else (B, 0, n))
    _update_center(X, coef, divisor, centered, rows, items, v, tile, _block(n, tile), distances, sq)
    return np.sqrt(sq.sum(axis=1)) if distances else None


def _weighted_center(X, coef, items, distances):
    z = np.empty((X.shape[0], X.shape[2]), X.dtype)
    dist = _step(X, z, coef, coef.sum(axis=1), centered=False, rows=coef != 0, items=items,
                 distances=distances)
    return z, dist


def geomed(X, weights, init, maxiter, eps, nu):
    return _weiszfeld.geomed(X, weights, init, maxiter, eps, nu, _WEISZFELD_PASSES)


def cclip(X, tau, iters, v0):
    B, n, d = X.shape
    if v0 is None:
        out, v, dist, finite = _median_and_distances(X)  # out: the median, then the result
    else:
        out, v = np.empty((B, d), X.dtype), v0.astype(np.float64)
        dist, finite = _distances(X, v)
    divisor = np.full(B, float(n))  # non-finite rows count in n but add 0
    everything = np.ones(B, dtype=np.bool_)
    overflowed = np.zeros(B, dtype=np.bool_)
    for step in range(iters):
        overflowed |= (finite & np.isinf(dist)).any(axis=1)
        scale = np.where(finite, _clip_scale(dist, tau), 0.0)
        dist = _step(X, v, scale, divisor, centered=True, rows=finite, items=everything,
                     distances=step < iters - 1)
    np.copyto(out, v, casting="same_kind")
    return out, overflowed


#: the passes over X that backends/_weiszfeld.py's coefficient steps ask for
_WEISZFELD_PASSES = SimpleNamespace(pairwise_sqdist=pairwise_sqdist, center_distances=_distances,
                                          weighted_center=_weighted_center)


# ---- compressors and attacks (SPEC §4, §5) ---------------------------------------------------
# The algorithms of csrc/compress.cpp; every bit equals backends/reference.py. Philox words are
# built from uint64 arithmetic masked to 32 bits.


_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_U32, _U11, _U1 = np.uint64(32), np.uint64(11), np.uint64(1)
_RANDK, _QSGD, _NATURAL, _GAUSSIAN = (np.uint64(_random.STREAMS[name]) for name in ("randk", "qsgd", "natural", "gaussian"))
_SUM_CHUNK = 65536  # reference.SUM_CHUNK: it fixes the bits of norms and scales


@numba.njit(nogil=True, cache=True, inline="always")
def _philox_words(seed, block, row, stream):
    """The four words (uint64) of Philox block ``block`` of (seed, row, stream)."""
    k0, k1 = seed & _LO, seed >> _U32
    c0, c1, c2, c3 = block & _LO, block >> _U32, row & _LO, stream
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> _U32) ^ c1 ^ k0, p1 & _LO, (p0 >> _U32) ^ c3 ^ k1, p0 & _LO
        k0 = (k0 + _W0) & _LO
        k1 = (k1 + _W1) & _LO
    return c0, c1, c2, c3


@numba.njit(nogil=True, cache=True, inline="always")
def _philox(seed, block, row, stream, w):
    w[0], w[1], w[2], w[3] = _philox_words(seed, block, row, stream)


@numba.njit(nogil=True, cache=True, inline="always")
def _philox_run(seed, block0, row, stream, words):
    """words[4 j + t] = word t of Philox block block0 + j: a loop of independent blocks with no
    branch, which LLVM vectorizes (vpmuludq), unlike drawing a block whenever an entry needs one."""
    for j in range(words.size // 4):
        words[4 * j], words[4 * j + 1], words[4 * j + 2], words[4 * j + 3] = _philox_words(
            seed, np.uint64(block0 + j), np.uint64(row), stream)


@numba.njit(nogil=True, cache=True, inline="always")
def _uniform53(hi, lo):
    return np.float64(((hi << _U32) | lo) >> _U11) * 2.0**-53


@numba.njit(nogil=True, cache=True, inline="always")
def _below(u, bound):
    t = np.int64(u * np.float64(bound))
    return t if t < bound - 1 else bound - 1


def _row_bytes(d, width):
    return (d * width + 7) // 8


def _code_tile():
    return max(8, (_config.COL_TILE + 7) // 8 * 8)


@intrinsic
def _store_unaligned(typingctx, out, pos, word):
    """The 8 bytes of the uint64 word (little-endian, as the host) into out[pos:pos + 8], at
    any byte offset: one store, which NumPy-style indexing cannot express."""
    def codegen(context, builder, signature, args):
        out_, pos_, word_ = args
        data = context.make_array(signature.args[0])(context, builder, out_).data
        target = builder.bitcast(builder.gep(data, [pos_], inbounds=True), word_.type.as_pointer())
        builder.store(word_, target, align=1)
        return context.get_dummy_value()

    return types.void(out, pos, word), codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _octet(quads, g, width):
    """(low, high) 64-bit halves of the 8 * width bits of codes 8 g .. 8 g + 7, from their two
    quads; the shifts stay below 64 for every width <= 16."""
    four = np.uint64(4 * width)
    q0, q1 = quads[2 * g], quads[2 * g + 1]
    return q0 | ((q1 << (four - _U1)) << _U1), q1 >> (np.uint64(64) - four)


@numba.njit(nogil=True, cache=True, inline="always")
def _pack(codes, m, width, out, pos):
    """Codes[0..m) of ``width`` <= 16 bits into out[pos..], little-endian bit stream; the codes
    up to the next multiple of 8 must be zero (the last byte's padding). Eight codes fill
    exactly ``width`` bytes, so no bit offset carries from one octet to the next: four codes
    merge into a 64-bit quad (a loop that vectorizes), two quads into the octet's 128 bits,
    stored as two unaligned words at its byte offset; the bytes past the octet are overwritten
    by the next one. The last octets, whose words would pass the end, go byte by byte. (A
    64-bit accumulator carried code by code: 0.8 ns per 9-bit code, 1 thread; this: 0.2.)"""
    octets = (m + 7) // 8
    w = np.uint64(width)
    quads = np.empty(2 * octets, np.uint64)
    for j in range(2 * octets):
        quads[j] = (np.uint64(codes[4 * j]) | (np.uint64(codes[4 * j + 1]) << w)
                    | (np.uint64(codes[4 * j + 2]) << (w + w)) | (np.uint64(codes[4 * j + 3]) << (w + w + w)))
    nbytes = (m * width + 7) // 8
    whole = min(octets, (nbytes - 16) // width + 1) if nbytes >= 16 else 0  # g width + 16 <= nbytes
    for g in range(whole):
        low, high = _octet(quads, g, width)
        _store_unaligned(out, pos + g * width, low)
        _store_unaligned(out, pos + g * width + 8, high)
    for g in range(whole, octets):
        low, high = _octet(quads, g, width)
        for b in range(min(width, nbytes - g * width)):
            out[pos + g * width + b] = np.uint8(((low >> np.uint64(8 * b)) if b < 8 else (high >> np.uint64(8 * b - 64))) & np.uint64(255))


@numba.njit(nogil=True, cache=True, inline="always")
def _unpack(src, pos, m, width, codes):
    mask = (np.uint64(1) << np.uint64(width)) - _U1
    acc, have = np.uint64(0), 0
    for j in range(m):
        while have < width:
            acc |= np.uint64(src[pos]) << np.uint64(have)
            pos += 1
            have += 8
        codes[j] = np.uint32(acc & mask)
        acc >>= np.uint64(width)
        have -= width


@intrinsic
def _add_lanes(typingctx, x, whole, square, lane):
    """lane[j] += term(x[i]) for the entries i = j (mod 8) of [0, whole), whole a multiple of
    8, in increasing i: reference.ordered_row_sums's order; term x^2 where square, else |x|.
    The eight lanes are one <8 x double> vector, added to eight entries at a time: the same
    IEEE additions as eight scalar accumulators, which LLVM kept scalar (its SLP vectorizer
    did not merge them): 20e6 float32 |x|, 1 thread, 5.6 -> 2.7 ms."""
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        x_, whole_, square_, lane_ = args
        entries = context.make_array(signature.args[0])(context, builder, x_).data
        lanes = context.make_array(signature.args[3])(context, builder, lane_).data
        double = ir.DoubleType()
        vector = ir.VectorType(double, 8)

        def vector_at(pointer, vector_type, element_align):
            return builder.load(builder.bitcast(pointer, vector_type.as_pointer()), align=element_align)

        acc = cgutils.alloca_once(builder, vector)
        builder.store(vector_at(lanes, vector, 8), acc)
        element = entries.type.pointee
        group = ir.VectorType(element, 8)
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector]), "llvm.fabs.v8f64")

        def add_groups(term):
            start, step = ir.Constant(whole_.type, 0), ir.Constant(whole_.type, 8)
            with cgutils.for_range_slice(builder, start, whole_, step) as (i, _):
                v = vector_at(builder.gep(entries, [i], inbounds=True), group, element.get_abi_alignment(context.target_data))
                if element != double:
                    v = builder.fpext(v, vector)
                builder.store(builder.fadd(builder.load(acc), term(v)), acc)

        with builder.if_else(square_) as (squares, magnitudes):  # a boolean's value is an i1
            with squares:
                add_groups(lambda v: builder.fmul(v, v))
            with magnitudes:
                add_groups(lambda v: builder.call(fabs, [v]))
        builder.store(builder.load(acc), builder.bitcast(lanes, vector.as_pointer()), align=8)
        return context.get_dummy_value()

    return types.void(x, whole, square, lane), codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _chunk_total(x, whole, square, lane):
    """Adds the entries after ``whole`` (fewer than 8) to their lanes; the lanes' fixed tree."""
    for i in range(whole, x.size):
        v = np.float64(x[i])
        lane[i - whole] += v * v if square else abs(v)
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))


@numba.njit(nogil=True, cache=True)
def _row_totals(partial, n, out):
    chunks = partial.size // n
    for row in range(n):
        total = partial[row * chunks]
        for c in range(1, chunks):
            total += partial[row * chunks + c]
        out[row] = total


@numba.njit(parallel=True, nogil=True, cache=True)
def _ordered_row_sums(X, square, out):
    n, d = X.shape
    chunks = (d + _SUM_CHUNK - 1) // _SUM_CHUNK
    partial = np.empty(n * chunks)
    for job in numba.prange(n * chunks):
        row, c0 = job // chunks, (job % chunks) * _SUM_CHUNK
        x = X[row, c0:min(d, c0 + _SUM_CHUNK)]
        lane = np.zeros(8)
        whole = x.size // 8 * 8
        _add_lanes(x, whole, square, lane)
        partial[job] = _chunk_total(x, whole, square, lane)
    _row_totals(partial, n, out)


#: entries of a row sampled (strided) for topk's candidate threshold
_TOPK_SAMPLE = 4096
_TOPK_BUCKETS = 2048
#: entries flagged per pass of _collect's scan (a multiple of 8; 4 KiB of flags stay in L1)
_TOPK_FLAGS = 4096


@numba.njit(nogil=True, cache=True, inline="always")
def _kth_largest(keys, k):
    """The k-th largest of keys: a histogram over their range finds the bucket holding it, a
    sort finishes within that bucket (a few keys, not all)."""
    low, high = keys.min(), keys.max()
    shift = 0
    while ((high - low) >> shift) >= _TOPK_BUCKETS:
        shift += 1
    hist = np.zeros(_TOPK_BUCKETS, np.int64)
    for key in keys:
        hist[np.int64((key - low) >> shift)] += 1
    bucket, above = _TOPK_BUCKETS - 1, 0  # keys in the buckets above ``bucket``
    while above + hist[bucket] < k:
        above += hist[bucket]
        bucket -= 1
    inside = np.empty(hist[bucket], keys.dtype)
    t = 0
    for key in keys:
        if np.int64((key - low) >> shift) == bucket:
            inside[t] = key
            t += 1
    return np.sort(inside)[inside.size - (k - above)]


@numba.njit(nogil=True, cache=True, inline="always")
def _topk_threshold(key, k, magnitude, nan_key):
    """A key t such that, with near certainty, at least k entries have key >= t and not many
    more (the sample's expected count plus 4 sigma), and a bound on how many do: twice the
    count the sample predicts; (0, d) (every entry) for short rows."""
    d = key.size
    expected = _TOPK_SAMPLE * k / d
    rank = np.int64(expected + 4.0 * math.sqrt(expected) + 4.0)
    if d < 16 * _TOPK_SAMPLE or rank >= _TOPK_SAMPLE:
        return key.dtype.type(0), d
    sample = np.empty(_TOPK_SAMPLE, key.dtype)
    stride = d // _TOPK_SAMPLE
    for s in range(_TOPK_SAMPLE):
        sample[s] = min(key[s * stride] & magnitude, nan_key)
    return _kth_largest(sample, rank + 1), min(d, 2 * (rank + 1) * (stride + 1) + k)


@numba.njit(nogil=True, cache=True, inline="always")
def _collect(key, t, magnitude, nan_key, flags, candidates):
    """The indices i of key >= t in increasing order, into candidates while they fit; returns
    how many there are (more than candidates.size when they did not fit). A chunk's 0/1 flags
    come from a loop that vectorizes, then eight at a time as the bytes of a word: a branch per
    eight entries, mostly not taken, instead of one per entry."""
    d, chunk = key.size, flags.size
    words = flags.view(np.uint64)
    count = 0
    for c0 in range(0, d, chunk):
        m = min(chunk, d - c0)
        part = key[c0:c0 + m]  # a slice: indexed from c0, the loop stayed scalar (7x slower)
        for e in range(m):
            flags[e] = np.uint8(min(part[e] & magnitude, nan_key) >= t)
        for e in range(m, (m + 7) // 8 * 8):
            flags[e] = 0
        for q in range((m + 7) // 8):
            word = words[q]
            while word:
                if count < candidates.size:
                    candidates[count] = c0 + 8 * q + np.int64(trailing_zeros(word)) // 8
                count += 1
                word &= word - np.uint64(1)
    return count


@numba.njit(parallel=True, nogil=True, cache=True)
def _topk(X, k, bits, magnitude, nan_key, values, indices):
    """As csrc/compress.cpp's TopkRow: candidates with key >= a sampled threshold, collected in
    one pass in index order, then the k-th largest candidate key; the output is every candidate
    above it and the lowest-index ones equal to it. If the sample misled (fewer than k
    candidates) every entry is a candidate: only the cost depends on the sample."""
    n, d = X.shape
    for row in numba.prange(n):
        flags = np.empty(_TOPK_FLAGS, np.uint8)
        key = bits[row]  # magnitude keys (the bits without the sign, NaN above Inf) on the fly
        # sized by the sample: a buffer of d indices per row would cost twice the input's memory
        t, capacity = _topk_threshold(key, k, magnitude, nan_key)
        candidates = np.empty(capacity, np.int64)
        count = _collect(key, t, magnitude, nan_key, flags, candidates)
        if count < k or count > capacity:  # the sample misled: every entry is a candidate
            count = d
            candidates = np.arange(d)
        keys = np.empty(count, key.dtype)
        for c in range(count):
            keys[c] = min(key[candidates[c]] & magnitude, nan_key)
        kth = _kth_largest(keys, k)
        ties = k
        for c in range(count):
            ties -= keys[c] > kth  # entries equal to kth taken, lowest index first
        out = 0
        for c in range(count):
            if keys[c] > kth or (keys[c] == kth and ties > 0):
                ties -= keys[c] == kth
                indices[row, out] = candidates[c]
                values[row, out] = X[row, candidates[c]]
                out += 1


def topk(X, k):
    n = X.shape[0]
    uint, ebits, pbits = _FLOAT_BITS[X.dtype]
    magnitude = uint(np.iinfo(uint).max >> 1)
    nan_key = uint((((1 << ebits) - 1) << pbits) + 1)  # every NaN: one key just above Inf
    values, indices = np.empty((n, k), X.dtype), np.empty((n, k), np.int64)
    _topk(X, k, X.view(uint), magnitude, nan_key, values, indices)
    return values, indices


@numba.njit(parallel=True, nogil=True, cache=True)
def _randk(X, k, seed, values, indices):
    n, d = X.shape
    scale = np.float64(d) / np.float64(k)
    for row in numba.prange(n):
        # a bitset: its scan in index order touches d / 64 words, not d flags
        chosen = np.zeros((d + 63) // 64, np.uint64)
        w = np.empty(4, np.uint64)
        for s in range(k):
            if s % 2 == 0:
                _philox(seed, np.uint64(s // 2), np.uint64(row), _RANDK, w)
            o = (s % 2) * 2
            j = d - k + s
            t = _below(_uniform53(w[o], w[o + 1]), j + 1)
            if (chosen[t >> 6] >> np.uint64(t & 63)) & _U1:
                t = j
            chosen[t >> 6] |= _U1 << np.uint64(t & 63)
        out = 0
        x = X[row]
        for word in range(chosen.size):
            bits = chosen[word]
            while bits:
                i = word * 64 + np.int64(trailing_zeros(bits))
                bits &= bits - _U1
                indices[row, out] = i
                values[row, out] = np.float64(x[i]) * scale
                out += 1


def randk(X, k, seed):
    values, indices = np.empty((X.shape[0], k), X.dtype), np.empty((X.shape[0], k), np.int64)
    _randk(X, k, np.uint64(seed), values, indices)
    return values, indices


@numba.njit(parallel=True, nogil=True, cache=True)
def _qsgd(X, levels, seed, scale, tile, width, codes):
    n, d = X.shape
    tiles = (d + tile - 1) // tile
    sign_bit = np.uint32(1) << np.uint32(width - 1)
    top = np.float64(levels)
    for job in numba.prange(n * tiles):
        row, e0 = job // tiles, (job % tiles) * tile
        e1 = min(d, e0 + tile)
        x = X[row, e0:e1]
        words = np.empty((e1 - e0 + 3) // 4 * 4, np.uint64)  # entry e draws word e
        _philox_run(seed, e0 // 4, row, _QSGD, words)  # tiles start at multiples of 8
        c = np.empty((e1 - e0 + 7) // 8 * 8, np.uint32)
        c[e1 - e0:] = 0  # _pack's padding
        s = scale[row]
        for e in range(e1 - e0):
            v = np.float64(x[e])
            r = 0.0 if s == 0.0 else abs(v) * s
            low = math.floor(r)
            up = 1.0 if np.float64(words[e]) < (r - low) * 4294967296.0 else 0.0
            level = min(low + up, top)
            c[e] = (sign_bit if v < 0 else np.uint32(0)) | np.uint32(level)
        _pack(c, e1 - e0, width, codes[row], e0 // 8 * width)


def qsgd(X, levels, seed):
    n, d = X.shape
    sums = np.empty(n)
    _ordered_row_sums(X, True, sums)
    with np.errstate(over="ignore"):  # a float32 row's norm past float32's range goes as +Inf
        norms = np.sqrt(sums).astype(X.dtype)
    norm64 = norms.astype(np.float64)
    ok = np.isfinite(norm64) & (norm64 > 0)
    scale = np.where(ok, levels / np.where(ok, norm64, 1.0), 0.0)
    width = int(levels).bit_length() + 1
    codes = np.empty((n, _row_bytes(d, width)), np.uint8)
    _qsgd(X, levels, np.uint64(seed), scale, _code_tile(), width, codes)
    return norms, codes


@numba.njit(nogil=True, cache=True, inline="always")
def _natural_code(v, uniform, ebits, pbits, emask, mmask, nan_code):
    """The code of the float bits v rounded up where uniform < its mantissa: integers only and
    no branch, so that the loop vectorizes; the sign bit of a value rounded to zero is dropped
    (sign 1 with exponent 0 is the NaN code)."""
    mantissa, exponent = v & mmask, (v >> np.uint64(pbits)) & emask
    nan = (exponent == emask) & (mantissa != 0)
    exponent += np.uint64((exponent != emask) & (uniform < mantissa))
    sign = (v >> np.uint64(ebits + pbits)) & np.uint64(exponent != 0)
    return nan_code if nan else np.uint32((sign << np.uint64(ebits)) | exponent)


@numba.njit(parallel=True, nogil=True, cache=True)
def _natural(bits, seed, tile, ebits, pbits, codes):
    n, d = bits.shape
    tiles = (d + tile - 1) // tile
    wide = pbits > 32  # float64: 64 random bits (two words) per entry
    per_word = 2 if wide else 1
    emask = (np.uint64(1) << np.uint64(ebits)) - _U1
    mmask = (np.uint64(1) << np.uint64(pbits)) - _U1
    nan_code = np.uint32(1) << np.uint32(ebits)
    for job in numba.prange(n * tiles):
        row, e0 = job // tiles, (job % tiles) * tile
        e1 = min(d, e0 + tile)
        b = bits[row, e0:e1]
        # entry e: word e or 2e, 2e+1; kept as uint32, half the bytes of uint64 to store and reload
        words = np.empty(((e1 - e0) * per_word + 3) // 4 * 4, np.uint32)
        _philox_run(seed, e0 * per_word // 4, row, _NATURAL, words)  # tiles start at multiples of 8
        c = np.empty((e1 - e0 + 7) // 8 * 8, np.uint32)
        c[e1 - e0:] = 0  # _pack's padding
        # the uniform is the top pbits of the entry's random bits, made in the codes loop (a
        # loop per width, so that each vectorizes) instead of an array of its own
        if wide:
            for e in range(e1 - e0):
                uniform = ((words[2 * e] << _U32) | words[2 * e + 1]) >> np.uint64(64 - pbits)
                c[e] = _natural_code(np.uint64(b[e]), uniform, ebits, pbits, emask, mmask, nan_code)
        else:
            for e in range(e1 - e0):
                uniform = words[e] >> np.uint64(32 - pbits)
                c[e] = _natural_code(np.uint64(b[e]), uniform, ebits, pbits, emask, mmask, nan_code)
        _pack(c, e1 - e0, ebits + 1, codes[row], e0 // 8 * (ebits + 1))


_FLOAT_BITS = {np.dtype(np.float32): (np.uint32, 8, 23), np.dtype(np.float64): (np.uint64, 11, 52)}


def natural(X, seed):
    n, d = X.shape
    uint, ebits, pbits = _FLOAT_BITS[X.dtype]
    codes = np.empty((n, _row_bytes(d, ebits + 1)), np.uint8)
    _natural(X.view(uint), np.uint64(seed), _code_tile(), ebits, pbits, codes)
    return codes


_GATHER_BITS = np.uint64(0x0102040810204080)


@numba.njit(nogil=True, cache=True, inline="always")
def _sign_bytes(x, out):
    """out[q] bit t set where x[8 q + t] < 0 (sign(0) = +1, NaN positive)."""
    whole = x.size // 8
    # 0/1 flags, then eight flags (bytes of one little-endian word) gathered into the top byte
    # by one multiply; both loops vectorize
    negative = np.empty(whole * 8, np.uint8)
    for e in range(whole * 8):
        negative[e] = x[e] < 0
    flags = negative.view(np.uint64)
    for q in range(whole):
        out[q] = np.uint8((flags[q] * _GATHER_BITS) >> np.uint64(56))
    if whole < out.size:
        byte = 0
        for t in range(x.size - 8 * whole):
            byte |= np.uint8(x[8 * whole + t] < 0) << t
        out[whole] = byte


@numba.njit(parallel=True, nogil=True, cache=True)
def _sign(X, tile, codes):
    n, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(n * tiles):
        row, e0 = job // tiles, (job % tiles) * tile
        e1 = min(d, e0 + tile)
        _sign_bytes(X[row, e0:e1], codes[row, e0 // 8:(e1 + 7) // 8])


def sign(X):
    codes = np.empty((X.shape[0], _row_bytes(X.shape[1], 1)), np.uint8)
    _sign(X, _code_tile(), codes)
    return codes


@numba.njit(parallel=True, nogil=True, cache=True)
def _scaled_sign(X, codes, sums):
    """The sign bits and the ordered |x|_1 of each row in one pass over X."""
    n, d = X.shape
    chunks = (d + _SUM_CHUNK - 1) // _SUM_CHUNK
    partial = np.empty(n * chunks)
    for job in numba.prange(n * chunks):
        row, c0 = job // chunks, (job % chunks) * _SUM_CHUNK
        c1 = min(d, c0 + _SUM_CHUNK)
        x, out = X[row, c0:c1], codes[row, c0 // 8:(c1 + 7) // 8]
        lane = np.zeros(8)
        whole = x.size // 8 * 8
        _add_lanes(x, whole, False, lane)
        _sign_bytes(x, out)  # the chunk is still in L2
        partial[job] = _chunk_total(x, whole, False, lane)
    _row_totals(partial, n, sums)


def scaled_sign(X):
    n, d = X.shape
    sums = np.empty(n)
    codes = np.empty((n, _row_bytes(d, 1)), np.uint8)
    _scaled_sign(X, codes, sums)
    return (sums / np.float64(d)).astype(X.dtype), codes


@numba.njit(parallel=True, nogil=True, cache=True)
def _scatter_rows(values, indices, out):
    n, k = values.shape
    for row in numba.prange(n):
        out[row, :] = 0
        for j in range(k):
            out[row, indices[row, j]] = values[row, j]


def scatter_rows(values, indices, d):
    out = np.empty((values.shape[0], d), values.dtype)
    _scatter_rows(values, indices, out)
    return out


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_table(codes, table, width, tile, out):
    """out[r, e] = table[r, code] for the codes of ``width`` bits (sign, qsgd, natural)."""
    n, d = out.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(n * tiles):
        row, e0 = job // tiles, (job % tiles) * tile
        e1 = min(d, e0 + tile)
        c = np.empty(e1 - e0, np.uint32)
        _unpack(codes[row], e0 // 8 * width, e1 - e0, width, c)
        for e in range(e0, e1):
            out[row, e] = table[row, c[e - e0]]


def _decode(codes, table, width, d):
    out = np.empty((table.shape[0], d), table.dtype)
    _decode_table(codes, table, width, _code_tile(), out)
    return out


def qsgd_decompress(norms, codes, levels, d):
    width = int(levels).bit_length() + 1
    # every code's value per row: magnitudes (T)(norm * (l / s)), negated under the sign bit
    level = np.arange(levels + 1, dtype=np.float64) / np.float64(levels)
    with np.errstate(invalid="ignore"):  # a non-finite norm times level 0 decodes to NaN
        magnitude = (norms.astype(np.float64)[:, None] * level).astype(norms.dtype)
    table = np.zeros((norms.shape[0], 1 << width), norms.dtype)
    table[:, : levels + 1] = magnitude
    table[:, 1 << (width - 1):][:, : levels + 1] = -magnitude
    return _decode(codes, table, width, d)


def natural_decompress(codes, d, dtype):
    uint, ebits, pbits = _FLOAT_BITS[np.dtype(dtype)]
    code = np.arange(1 << (ebits + 1), dtype=np.uint64)
    values = (((code >> np.uint64(ebits)) << np.uint64(ebits + pbits))
              | ((code & np.uint64((1 << ebits) - 1)) << np.uint64(pbits))).astype(uint).view(dtype)
    values[1 << ebits] = np.nan
    return _decode(codes, values[None, :].repeat(codes.shape[0], axis=0), ebits + 1, d)


def sign_decompress(codes, scales, d):
    return _decode(codes, np.stack([scales, -scales], axis=1), 1, d)


@numba.njit(nogil=True, cache=True)
def _indices_ok(indices, d):
    n, k = indices.shape
    for row in range(n):
        if np.uint64(indices[row, k - 1]) >= d:
            return False
        for j in range(1, k):
            if indices[row, j] <= indices[row, j - 1]:
                return False
    return True


def indices_ok(indices, d):
    return bool(_indices_ok(indices, np.uint64(d)))


@numba.njit(nogil=True, cache=True)
def _max_level(codes, width, d):
    mask = np.uint32((1 << (width - 1)) - 1)
    c = np.empty(d, np.uint32)
    worst = np.uint32(0)
    for row in range(codes.shape[0]):
        _unpack(codes[row], 0, d, width, c)
        for e in range(d):
            worst = max(worst, c[e] & mask)
    return worst


def qsgd_levels_ok(codes, levels, d):
    return int(_max_level(codes, int(levels).bit_length() + 1, d)) <= levels


@numba.njit(parallel=True, nogil=True, cache=True)
def _mean_std(X, ddof, tile, mean, std):
    B, h, d = X.shape
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        w = min(tile, d - c0)
        mu = np.zeros(w)
        ss = np.zeros(w)
        _add_rows(X, b, c0, w, mu)
        for j in range(w):
            mu[j] /= h
        # two-pass variance over the tile while it is in cache, four rows per pass over ss in
        # row order, as _add_rows: the reference's additions, in its order
        i = 0
        while i + 4 <= h:
            r0, r1 = X[b, i, c0:c0 + w], X[b, i + 1, c0:c0 + w]
            r2, r3 = X[b, i + 2, c0:c0 + w], X[b, i + 3, c0:c0 + w]
            for j in range(w):
                m = mu[j]
                d0, d1, d2, d3 = r0[j] - m, r1[j] - m, r2[j] - m, r3[j] - m
                ss[j] = (((ss[j] + d0 * d0) + d1 * d1) + d2 * d2) + d3 * d3
            i += 4
        for i in range(i, h):
            row = X[b, i, c0:c0 + w]
            for j in range(w):
                dev = row[j] - mu[j]
                ss[j] += dev * dev
        mean_out, std_out = mean[b, c0:c0 + w], std[b, c0:c0 + w]
        for j in range(w):
            mean_out[j] = mu[j]
            std_out[j] = math.sqrt(ss[j] / (h - ddof))


def mean_std(X, ddof):
    mean, std = np.empty((X.shape[0], X.shape[2]), X.dtype), np.empty((X.shape[0], X.shape[2]), X.dtype)
    _mean_std(X, ddof, _config.COL_TILE, mean, std)
    return mean, std


@numba.njit(inline="always")
def _centred_dot(row, mu, v):
    """sum_c (row_c - mu_c) v_c in float64."""
    total = 0.0
    for c in range(row.size):
        total += (np.float64(row[c]) - mu[c]) * v[c]
    return total


@numba.njit(**_SUM_KERNEL)
def _centred_dots_partials(X, mu, z, slab, partial):
    B, h, d = X.shape
    slabs = partial.shape[1]
    for job in numba.prange(B * slabs):
        b, s = job // slabs, job % slabs
        c0, c1 = s * slab, min(d, (s + 1) * slab)
        for i in range(h):
            partial[b, s, i] = _centred_dot(X[b, i, c0:c1], mu[b, c0:c1], z[b, c0:c1])


@numba.njit(**_SUM_KERNEL)
def _power_step_partials(X, mu, dots, slab, tile, u, partial):
    """u over a slab's columns one tile at a time, then each row's dot with that tile of u while
    the tile is in cache: one read of X from memory for both (csrc/compress.cpp's power_step)."""
    B, h, d = X.shape
    slabs = partial.shape[1]
    for job in numba.prange(B * slabs):
        b, s = job // slabs, job % slabs
        partial[b, s, :] = 0.0
        for t0 in range(s * slab, min(d, (s + 1) * slab), tile):
            t1 = min(d, (s + 1) * slab, t0 + tile)
            m, ut = mu[b, t0:t1], u[b, t0:t1]
            ut[:] = 0.0
            for i in range(h):
                row, a = X[b, i, t0:t1], dots[b, i]
                for c in range(t1 - t0):
                    ut[c] += a * (np.float64(row[c]) - m[c])
            for i in range(h):
                partial[b, s, i] += _centred_dot(X[b, i, t0:t1], m, ut)


def centred_dots(X, mu, z):
    slab = _slab_columns(X.shape[2])
    partial = np.empty((X.shape[0], _tiles(X.shape[2], slab), X.shape[1]))
    _centred_dots_partials(X, mu, z, slab, partial)
    return partial.sum(axis=1)


def power_step(X, mu, dots):
    slab = _slab_columns(X.shape[2])
    u, partial = np.empty((X.shape[0], X.shape[2])), np.empty((X.shape[0], _tiles(X.shape[2], slab), X.shape[1]))
    _power_step_partials(X, mu, dots, slab, _config.COL_TILE, u, partial)
    return u, partial.sum(axis=1)


@intrinsic
def _bits_of(typingctx, x):
    """The bits of float64 x as a uint64 (C++'s (v8u) cast): no branch, so loops vectorize."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.uint64(types.float64), codegen


@intrinsic
def _double_of(typingctx, bits):
    """The float64 whose bits are the uint64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


_LOG_SHIFT = np.uint64((0x3FF00000 - 0x3FE6A09E) << 32)
_LOG_MANTISSA, _LOG_HALF_ROOT2 = np.uint64((1 << 52) - 1), np.uint64(0x3FE6A09E << 32)
_EXPONENT_BIAS, _U52, _U3, _SIGN = np.uint64(0x4330000000000000), np.uint64(52), np.uint64(3), np.uint64(1 << 63)


@numba.njit(nogil=True, cache=True, inline="always")
def _log_unit(y):
    """ln y for normal y in (0, 1], csrc/compress.cpp's log_unit (fdlibm's log) in the same
    operations and bit steps: y = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2))."""
    shifted = _bits_of(y) + _LOG_SHIFT
    k = _double_of((shifted >> _U52) | _EXPONENT_BIAS) - (2.0**52 + 1023.0)  # exact
    f = _double_of((shifted & _LOG_MANTISSA) + _LOG_HALF_ROOT2) - 1.0
    hfsq, s = 0.5 * f * f, f / (2.0 + f)
    z = s * s
    w = z * z
    R = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))) + w * (LG2 + w * (LG4 + w * LG6))
    return (((s * (hfsq + R) + k * LN2_LO) - hfsq) + f) + k * LN2_HI


@numba.njit(nogil=True, cache=True, inline="always")
def _sincos_angle(a):
    """(sin a, cos a) for a in [0, 2 pi), as csrc/compress.cpp's sincos_angle: fdlibm's medium
    reduction by pi/2 in three parts, its sine and cosine kernels on the remainder, and the
    quadrant's choices by bit masks (no branch, so the caller's loop vectorizes)."""
    rounder = a * INV_PIO2 + ROUNDER
    n = rounder - ROUNDER
    r = a - n * PIO2_1
    t, product = r, n * PIO2_2
    r = t - product
    tail = n * PIO2_2T - ((t - r) - product)
    t, product = r, n * PIO2_3
    r = t - product
    tail = n * PIO2_3T - ((t - r) - product)
    x = r - tail
    y = (r - x) - tail
    z = x * x
    w = z * z
    v = z * x
    r = (S2 + z * (S3 + z * S4)) + z * w * (S5 + z * S6)
    s = x - ((z * (0.5 * y - v * r) - y) - v * S1)
    r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6))
    hz = 0.5 * z
    one_minus_hz = 1.0 - hz
    c = one_minus_hz + (((1.0 - one_minus_hz) - hz) + (z * r - x * y))
    quadrant = _bits_of(rounder) & _U3
    odd, upper = np.uint64(0) - (quadrant & _U1), np.uint64(0) - (quadrant >> _U1)  # all ones or zeros
    sine = (_bits_of(c) & odd) | (_bits_of(s) & ~odd)
    cosine = (_bits_of(s) & odd) | (_bits_of(c) & ~odd)
    return _double_of(sine ^ (upper & _SIGN)), _double_of(cosine ^ ((upper ^ odd) & _SIGN))


@numba.njit(parallel=True, nogil=True, cache=True)
def _gaussian(own, std, seed, tile, out):
    """Box-Muller: Philox block m of a row gives entries 2m (cos) and 2m + 1 (sin) from u1
    (words 0, 1) and u2 (words 2, 3). Parallel over (row, tile of ``tile`` pairs), so that a
    single row (Mimic's draw) uses every thread; the words of a tile come first, then the
    normals, each in one branch-free loop that LLVM vectorizes. The logarithm, sine and cosine
    are the C++ kernel's, so the two give the same bits."""
    rows, d = own.shape
    pairs = (d + 1) // 2
    tiles = (pairs + tile - 1) // tile
    two_pi = 2.0 * np.pi
    for job in numba.prange(rows * tiles):
        row, m0 = job // tiles, (job % tiles) * tile
        count = min(pairs, m0 + tile) - m0
        words = np.empty(4 * count, np.uint64)
        _philox_run(seed, m0, row, _GAUSSIAN, words)
        normals = np.empty(2 * count)
        for j in range(count):
            radius = math.sqrt(-2.0 * _log_unit(1.0 - _uniform53(words[4 * j], words[4 * j + 1])))  # 1 - u1: exact
            sine, cosine = _sincos_angle(two_pi * _uniform53(words[4 * j + 2], words[4 * j + 3]))
            normals[2 * j], normals[2 * j + 1] = radius * cosine, radius * sine
        x, y = own[row, 2 * m0:], out[row, 2 * m0:]
        for c in range(min(2 * count, d - 2 * m0)):
            y[c] = np.float64(x[c]) + std * normals[c]


def gaussian(own, std, seed):
    B, f, d = own.shape
    out = np.empty((B * f, d), own.dtype)
    _gaussian(own.reshape(B * f, d), std, np.uint64(seed), _code_tile() // 2, out)
    return out.reshape(B, f, d)



@numba.njit(parallel=True, nogil=True, cache=True)
def _attack_candidates(H, mu, direction, etas, tile, out):
    """Parallel over column tiles, so that a tile of H is read once and written into every
    candidate; the Byzantine value is a multiply then an add in float64, as the reference."""
    B, h, d = H.shape
    E, n = out.shape[1], out.shape[2]
    tiles = (d + tile - 1) // tile
    for job in numba.prange(B * tiles):
        b, c0 = job // tiles, (job % tiles) * tile
        c1 = min(d, c0 + tile)
        for e in range(E):
            out[b, e, :h, c0:c1] = H[b, :, c0:c1]
            for i in range(h, n):
                row = out[b, e, i]
                for j in range(c0, c1):
                    row[j] = np.float64(mu[b, j]) + etas[e] * np.float64(direction[b, j])


def attack_candidates(H, mu, direction, etas, f):
    B, h, d = H.shape
    out = np.empty((B, etas.size, h + f, d), H.dtype)
    _attack_candidates(H, mu, direction, etas, _config.COL_TILE, out)
    return out


@numba.njit(inline="always")
def _merge_byzantine_rows(honest, h, f, byzantine, first, last, merged):
    """Positions [first, last) of the ordered column of the h ordered honest keys and f keys
    byzantine, as values, into merged. With r honest keys below byzantine, position p holds
    honest key p for p < r, byzantine for r <= p < r + f, and honest key p - f after; since the
    honest keys are ordered, p < r exactly where honest key p is below byzantine: two compares
    a position, no search for r (as csrc/coordinatewise.cpp). A loop per case: with the row
    chosen per position (byzantine standing in for the missing ones) the loop did not vectorize
    (cwtm about 3x slower)."""
    sign_shift = np.iinfo(merged.dtype).bits - 1  # known when compiling, where itemsize is not
    magnitude = (1 << sign_shift) - 1
    for p in range(first, last):
        row = merged[p]
        if f <= p < h:
            at, shifted = honest[p], honest[p - f]
            for l in range(_GROUP):
                x, y, k = at[l], shifted[l], byzantine[l]
                key = x if x < k else k if y < k else y
                row[l] = key ^ ((key >> sign_shift) & magnitude)
        elif p < h:  # no honest key p - f: byzantine from r on
            at = honest[p]
            for l in range(_GROUP):
                x, k = at[l], byzantine[l]
                key = x if x < k else k  # min() did not vectorize
                row[l] = key ^ ((key >> sign_shift) & magnitude)
        elif p >= f:  # past the honest keys: byzantine up to r + f
            shifted = honest[p - f]
            for l in range(_GROUP):
                y, k = shifted[l], byzantine[l]
                key = k if y < k else y
                row[l] = key ^ ((key >> sign_shift) & magnitude)
        else:
            for l in range(_GROUP):
                key = byzantine[l]
                row[l] = key ^ ((key >> sign_shift) & magnitude)


@numba.njit(**_KERNEL)
def _candidate_deviations(H, keys, mu, direction, etas, f, rule, trim, first, last, net, order_address, inf_key,
                          nan_key, tile, partial):
    """partial[b, e, t]: the sum over column tile t of (rule - mu)^2 for candidate e of item b.
    The candidates differ only in their f Byzantine rows, all equal: so a job orders each block
    of _GROUP columns of its tile's h honest rows once (_order_block), and, while the block is
    in cache, merges each candidate's Byzantine key in (_merge_byzantine_rows) at the positions
    [first, last) the rule reads. The rule reads the values the built batch's ordered columns
    hold there; where its pruned network leaves the middle as a set (cwtm, meamed) the float64
    sum adds them in another order. The candidates are never built."""
    B, h, d = H.shape
    n, E = h + f, etas.size
    tiles = (d + tile - 1) // tile
    groups = (h + _GROUP_ROWS - 1) // _GROUP_ROWS
    sign_shift = np.iinfo(keys.dtype).bits - 1
    magnitude = (1 << sign_shift) - 1
    for job in numba.prange(B * tiles):
        b, t = job // tiles, job % tiles
        c0 = t * tile
        c1 = min(d, c0 + tile)
        honest = np.empty((groups * _GROUP_ROWS, _GROUP), keys.dtype)
        tail = np.zeros((1, h, _GROUP), keys.dtype)
        merged = np.zeros((n, _GROUP), keys.dtype)
        ordered = merged.view(H.dtype)
        byzantine = np.zeros(_GROUP, H.dtype)  # lanes past a last block's width: merged, never read
        bits = byzantine.view(keys.dtype)
        byzantine_key = np.empty(_GROUP, keys.dtype)
        result, aggregate = np.empty(_GROUP), np.empty(_GROUP, H.dtype)
        start, med = np.empty(_GROUP, np.int64), np.empty(_GROUP)
        totals = np.zeros(E)
        for s0 in range(c0, c1, _GROUP):
            w = min(_GROUP, c1 - s0)
            _order_block(keys, b, s0, w, net, order_address, tail, honest)
            m, a = mu[b, s0:s0 + w], direction[b, s0:s0 + w]
            for e in range(E):  # each candidate's columns in order: the sums' order is fixed
                for j in range(w):  # as _attack_candidates
                    byzantine[j] = np.float64(m[j]) + etas[e] * np.float64(a[j])
                for l in range(_GROUP):  # the key as _ordered_column makes it
                    k = bits[l]
                    byzantine_key[l] = nan_key if (k & magnitude) > inf_key else k ^ ((k >> sign_shift) & magnitude)
                _merge_byzantine_rows(honest, h, f, byzantine_key, first, last, merged)
                _rule_lanes(ordered, w, rule, trim, med, start, result)
                total = totals[e]
                for j in range(w):
                    aggregate[j] = result[j]
                    gap = np.float64(aggregate[j]) - np.float64(m[j])
                    total += gap * gap
                totals[e] = total
        partial[b, :, t] = totals


_RULES = {"cwmed": _MEDIAN, "cwtm": _TRIMMED_MEAN, "meamed": _MEAN_AROUND_MEDIAN}


def candidate_deviations(H, mu, direction, etas, f, rule, trim):
    if rule not in _RULES:
        raise ValueError(f"candidate_deviations: rule must be cwmed, cwtm or meamed; got {rule}")
    B, h, d = H.shape
    n, which = h + f, _RULES[rule]
    if trim < 0 or 2 * trim >= n:
        raise ValueError("candidate_deviations: trim must satisfy 0 <= 2 trim < h + f")
    first, last = {_MEDIAN: ((n - 1) // 2, n // 2 + 1), _TRIMMED_MEAN: (trim, n - trim)}.get(which, (0, n))
    key = _KEY_TYPES[H.dtype]
    inf_key = np.array(np.inf, H.dtype).view(key)[()]
    nan_key = key(inf_key + (1 << (np.finfo(H.dtype).nmant - 1)))  # the canonical quiet NaN
    tile = _config.COL_TILE
    partial = np.empty((B, etas.size, (d + tile - 1) // tile))
    _candidate_deviations(H, H.view(key), mu, direction, etas, f, which, trim, first, last,
                          _sorting_network(h, _EVERY_POSITION, 0, _GROUP_ROWS), _group_order(H.dtype).address,
                          inf_key, nan_key, tile, partial)
    return partial.sum(axis=2)


serial_when_small(globals(), numba.get_num_threads, numba.set_num_threads)
