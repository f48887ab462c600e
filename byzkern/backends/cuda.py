"""The ``cuda`` backend: the CUDA C++ kernels of ``cuda/*.cu``, compiled at run time by NVRTC
through CuPy (``cupy.RawModule``), one module per family, on first use (never at import).

Inputs are CuPy arrays (torch CUDA tensors arrive as CuPy views through DLPack, see
``byzkern._arrays``); results are new CuPy arrays on the same device. Kernels take int64 sizes
and cover the whole batch (B, n, d) in one launch (the Gram path's centring: a slice of it per
launch); threads per block come from ``byzkern._config.CUDA_THREADS``.

Numerics, as in ``backends/reference.py``: sums in float64 for float32 input too; NaN orders
above +Inf; ``pairwise_sqdist`` is exact-difference in float64 below ``GRAM_MIN_ROWS`` rows, and
from there a centred float64 Gram matrix (cuBLAS) with exact differences where it would cancel.
Long sums (distances, norms, Weiszfeld's) are split into as many chunks as fill the GPU's
multiprocessors, so their last bits may differ between GPU models (as cuBLAS's do), not between
runs on one.
Compressors give the reference's bits (codes, indices, values, scales), except that a NaN
computed from a NaN (the norm or scale of a row holding one, a randk value scaled from one) is
the GPU's canonical NaN rather than the host's propagated payload; NaN payloads merely copied
(topk values) are kept.

Families (one ``.cu`` each, mirroring ``csrc/``): coordinatewise, distances (with row_norms,
mix_rows, clip), weiszfeld (geomed, cclip), compress (the compressors, their decoders and
validators, and the attacks' kernels: mean_std, gaussian with the cpu backend's bits, Mimic's
centred_dots and power_step). The first call into a family compiles all of its kernels (tens of
seconds for coordinatewise, whose sorting networks are unrolled); CuPy caches the binaries on
disk, so later processes load them at once.
"""
from __future__ import annotations

import functools
import math
import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from .. import _config, _random
from . import deviations_of_built_candidates, reference

try:
    import cupy
except ImportError as exc:
    cupy = None
    _CUPY_IMPORT_ERROR = str(exc)

#: C++ type of each compute dtype, the one place template arguments are spelled
CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: C++ type of each wire index dtype (compressors.index_dtype)
INDEX_CTYPE = {np.dtype(np.uint16): "unsigned short", np.dtype(np.uint32): "unsigned int",
               np.dtype(np.uint64): "unsigned long long"}
#: sorting-network sizes of the coordinate-wise register path per C++ type; larger n sorts in
#: blocks. A column of n values sorts in the first tier N >= n, padded with +Inf; the network's
#: min/max are most of a kernel's instructions, so tiers are close together: at n = 20, 103
#: comparators in the tier of 20 against 191 in one of 32. No 64 for double: it needs 240
#: registers per thread and a minute of ptxas time.
REGISTER_TIERS = {"float": (4, 8, 12, 16, 20, 24, 32, 48, 64), "double": (4, 8, 12, 16, 20, 24, 32)}
#: largest n sorted in registers (tests lower it to cover the block path with small inputs)
REGISTER_SORT_MAX = 64
#: a block's shared memory without an opt-in
SHARED_LIMIT_BYTES = 48 * 1024
#: dynamic shared memory for one block's columns; beyond it the block path sorts in a global
#: scratch buffer (tests set 0 to cover that path). The limit less the kernel's static shared
#: memory.
SHARED_COLUMN_BYTES = SHARED_LIMIT_BYTES - 1024
#: rows from which pairwise_sqdist sums a centred Gram matrix with cuBLAS (a DGEMM: n^2 multiply-
#: adds per column on the FP64 tensor cores) rather than exact differences (n^2 / 2 subtractions
#: and multiply-adds per column on the FP64 vector units: about twice the time). Below it the
#: exact kernel wins: it reads X from DRAM once, where the Gram path also writes and reads a
#: float64 copy, and DGEMMs of small n leave the tensor cores idle. An estimate from the H100's
#: datasheet rates, not yet measured: .ci/gpu times both paths.
GRAM_MIN_ROWS = 128
#: float64 workspace of the Gram path's centred columns, one chunk of columns at a time: about
#: this many bytes, or n max(n, GRAM_MIN_COLUMNS) values an item where that is more
GRAM_CHUNK_BYTES = 64 << 20
#: fewest columns in a chunk (and no fewer than n): each chunk adds its product to G, which
#: moves as many bytes as n columns of the workspace, so a large batch is taken in slices of
#: items rather than in narrower chunks (at n of thousands the workspace is then G's size)
GRAM_MIN_COLUMNS = 256
#: Weiszfeld checks on the host whether every batch item has converged every this many steps:
#: a host synchronization per step would cost more than a step on small inputs.
CONVERGENCE_CHECK_EVERY = 4
#: NVRTC options; the architecture is added by CuPy for the device in use
OPTIONS = ("--std=c++17",)

_ROW_OPS = ("SumAbs", "SumSquares", "SumPower", "MaxAbs")
_RULES = ("cwmed", "cwtm", "meamed")
_ROW_GROUP, _STAGED_COLUMNS = 4, 32  # cuda/distances.cu: kRowGroup, kStagedColumns
_SQDIST_WARPS = 16  # at most, per block of sqdist_groups (its __launch_bounds__(512))


def _tier_rows(ctype):
    """(fewest, most) rows of each register tier: a tier takes the row counts above the one below."""
    tiers = REGISTER_TIERS[ctype]
    return [(below + 1, N) for below, N in zip((0,) + tiers, tiers)]


def _per_type(*templates):
    return [template.format(t=t) for template in templates for t in CTYPE.values()]


#: every kernel instantiation of every family, requested from NVRTC by name
NAME_EXPRESSIONS = {
    "coordinatewise": (
        _per_type("mean_columns<{t}>")
        + [f"{rule}_registers<{t}, {fewest}, {N}>" for rule in _RULES for t in REGISTER_TIERS
           for fewest, N in _tier_rows(t)]
        + [f"{rule}_blocks<{t}>" for rule in _RULES for t in CTYPE.values()]
        + [f"{rule}_candidates<{t}, {N}>" for rule in _RULES for t, tiers in REGISTER_TIERS.items() for N in tiers]
        + ["sum_chunks"]
    ),
    "distances": (
        _per_type("sqdist_groups<{t}>", "centre_columns<{t}>", "sqdist_pairs<{t}>", "mix_rows<{t}>",
                  "scale_rows<{t}>")
        + [f"row_reduce<{t}, byzkern::{op}>" for t in CTYPE.values() for op in _ROW_OPS]
        + [f"row_norms_finish<byzkern::{op}>" for op in _ROW_OPS]
        + ["sqdist_finish", "gram_finish", "clip_scale"]
    ),
    "weiszfeld": (
        _per_type("row_reduce<{t}, byzkern::SumSquares>", "weiszfeld_update<{t}>", "cclip_update<{t}>")
        + ["clip_scale", "weiszfeld_weights"]
    ),
    "compress": (
        _per_type("mean_std<{t}>", "centred_dot_chunks<{t}>", "power_columns<{t}>", "gaussian<{t}>",
                  "attack_candidates<{t}>", "qsgd_scales<{t}>", "l1_scales<{t}>", "qsgd_encode<{t}>",
                  "natural_encode<{t}>", "sign_encode<{t}>", "qsgd_decode<{t}>", "natural_decode<{t}>",
                  "sign_decode<{t}>", "scatter_values<{t}>", "randk_gather<{t}>", "topk_histogram<{t}>",
                  "topk_chunk_counts<{t}>", "topk_write<{t}>")
        + [f"row_sum_lanes<{t}, byzkern::{term}>" for t in CTYPE.values() for term in ("SquareTerm", "AbsTerm")]
        + [f"indices_check<{i}>" for i in INDEX_CTYPE.values()]
        + ["qsgd_levels_check", "randk_draws", "floyd_repeats", "floyd_jump", "floyd_bitmap", "word_popcounts",
           "topk_select_digit"]
    ),
}


def unavailable_reason():
    """Why the backend cannot run here (no CuPy, no CUDA device, no NVRTC), or None."""
    if cupy is None:
        return f"CuPy is not installed ({_CUPY_IMPORT_ERROR}); pip install byzkern[cuda]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"no usable CUDA device ({exc})"
    if count == 0:
        return "no CUDA device found"
    try:
        cupy.cuda.nvrtc.getVersion()
    except (OSError, RuntimeError) as exc:  # the library is looked up on first use
        return f"NVRTC is not available ({exc}); pip install nvidia-cuda-nvrtc"
    return None


def details():
    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    return {"device": props["name"].decode(), "compute_capability": device.compute_capability,
            "cupy": cupy.__version__, "nvrtc": ".".join(map(str, cupy.cuda.nvrtc.getVersion()))}


def _source_dir():
    try:
        return resources.files("byzkern.cuda")
    except ModuleNotFoundError:  # a source checkout: setup.py maps cuda/ to byzkern.cuda on install
        return Path(__file__).resolve().parents[2] / "cuda"


_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.MULTILINE)


def source(family):
    """The CUDA source of ``family`` with our own headers inlined.

    Inlining (rather than ``-I``) makes CuPy's compile cache key cover the headers too: CuPy
    hashes the code string and options, so a changed header would otherwise reuse a stale binary.
    """
    root = _source_dir()
    seen = set()

    def expand(name):
        if name in seen:
            return ""
        seen.add(name)
        text = root.joinpath(name).read_text().replace("#pragma once\n", "")
        return _INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return expand(f"{family}.cu")


@functools.lru_cache(maxsize=None)
def _module(family, device_id):
    return cupy.RawModule(code=source(family), options=OPTIONS, name_expressions=NAME_EXPRESSIONS[family])


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_id):
    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]


def _threads():
    """Threads per block: CUDA_THREADS rounded up to whole warps (the block sums need them), at
    most 512: the register sorts take up to 113 registers a thread (ptxas, sm_90), so a block of
    more than 544 threads would not launch, and sqdist_groups is built for 512."""
    return min(512, max(32, -(-_config.CUDA_THREADS // 32) * 32))


def _launch(family, name, work, args, *, threads=None, blocks=None, shared_mem=0):
    """Launch ``name`` on a grid covering ``work`` items (the kernels stride over the rest).

    CuPy passes Python ints as long long (the kernels' index_t), floats as double and None as a
    null pointer.
    """
    device = cupy.cuda.Device().id
    threads = threads or _threads()
    if blocks is None:
        blocks = -(-work // threads)
    blocks = max(1, min(blocks, 32 * _multiprocessors(device)))
    _module(family, device).get_function(name)((blocks,), (threads,), args, shared_mem=shared_mem)


def _target_blocks():
    """Blocks that keep every SM busy when work is split into chunks."""
    return 8 * _multiprocessors(cupy.cuda.Device().id)


def _register_tier(ctype, rows):
    """The smallest register sorting network for columns of ``rows`` values, as the (fewest, most)
    rows its kernels take, or None."""
    return next(((fewest, N) for fewest, N in _tier_rows(ctype) if rows <= N <= REGISTER_SORT_MAX), None)


def mean(X):
    B, n, d = X.shape
    out = cupy.empty((B, d), X.dtype)
    _launch("coordinatewise", f"mean_columns<{CTYPE[X.dtype]}>", B * d, (X, B, n, d, out))
    return out


def _coordinatewise(rule, X, f):
    B, n, d = X.shape
    out = cupy.empty((B, d), X.dtype)
    t = CTYPE[X.dtype]
    tier = _register_tier(t, n)
    if tier is not None:
        fewest, most = tier
        _launch("coordinatewise", f"{rule}_registers<{t}, {fewest}, {most}>", B * d, (X, B, n, d, f, out))
        return out
    n_pad = 1 << (n - 1).bit_length()
    columns = min(32, SHARED_COLUMN_BYTES // (n_pad * X.itemsize))
    if columns >= 1:
        scratch, shared_mem = None, columns * n_pad * X.itemsize
        blocks = B * -(-d // columns)
    else:
        # One column per block in a global scratch slice; the grid is capped so the scratch
        # (blocks * n_pad values) stays small next to X.
        columns, shared_mem = 1, 0
        blocks = min(B * d, 2 * _multiprocessors(cupy.cuda.Device().id))
        scratch = cupy.empty(blocks * n_pad, X.dtype)
    _launch("coordinatewise", f"{rule}_blocks<{t}>", 0, (X, B, n, d, f, n_pad, columns, scratch, out),
            blocks=blocks, shared_mem=shared_mem)
    return out


def cwmed(X):
    return _coordinatewise("cwmed", X, 0)


def cwtm(X, f):
    return _coordinatewise("cwtm", X, f)


def meamed(X, f):
    return _coordinatewise("meamed", X, f)


def pairwise_sqdist(X):
    n = X.shape[1]
    fits = -(-n // _ROW_GROUP) * _ROW_GROUP * _STAGED_COLUMNS * X.itemsize <= SHARED_LIMIT_BYTES
    return (_sqdist_exact if n < GRAM_MIN_ROWS and fits else _sqdist_gram)(X)


def _sqdist_gram(X):
    B, n, d = X.shape
    t = CTYPE[X.dtype]
    width = min(d, max(GRAM_MIN_COLUMNS, n, GRAM_CHUNK_BYTES // (8 * B * n)))
    items = max(1, min(B, GRAM_CHUNK_BYTES // (8 * n * width)))
    G = cupy.zeros((B, n, n), np.float64)
    nonfinite_row = cupy.zeros((B, n), np.int32)
    for b0 in range(0, B, items):
        b1 = min(B, b0 + items)
        for c0 in range(0, d, width):
            w = min(width, d - c0)
            Y = cupy.empty((b1 - b0, n, w), np.float64)
            _launch("distances", f"centre_columns<{t}>", (b1 - b0) * w,
                    (X[b0:b1], b1 - b0, n, d, c0, w, Y, nonfinite_row[b0:b1]))
            G[b0:b1] += cupy.matmul(Y, Y.transpose(0, 2, 1))
    D = cupy.empty((B, n, n), np.float64)
    cancels = cupy.empty((B, n, n), np.int32)
    _launch("distances", "gram_finish", B * n * n, (G, B, n, nonfinite_row, D, cancels))
    pairs = cupy.flatnonzero(cancels)
    if pairs.size:
        _launch("distances", f"sqdist_pairs<{t}>", 0, (X, n, d, pairs, pairs.size, D), blocks=pairs.size)
    return D


def _sqdist_exact(X):
    B, n, d = X.shape
    groups = -(-n // _ROW_GROUP)
    group_pairs = groups * (groups + 1) // 2
    warps = min(_SQDIST_WARPS, group_pairs)
    slices = -(-group_pairs // warps)
    # Split the columns into chunks (of whole staged tiles) only as far as needed to fill the
    # GPU; each chunk adds one (B, n, n) partial that the finish kernel sums in a fixed order.
    chunks = max(1, min(-(-d // _STAGED_COLUMNS), -(-_target_blocks() // (B * slices))))
    chunk = -(-d // (chunks * _STAGED_COLUMNS)) * _STAGED_COLUMNS
    chunks = -(-d // chunk)
    partial = cupy.empty((chunks, B, n, n), np.float64)
    nonfinite_row = cupy.zeros((B, n), np.int32)
    _launch("distances", f"sqdist_groups<{CTYPE[X.dtype]}>", 0,
            (X, B, n, d, chunk, chunks, slices, partial, nonfinite_row),
            threads=32 * warps, blocks=chunks * B * slices,
            shared_mem=groups * _ROW_GROUP * _STAGED_COLUMNS * X.itemsize)
    D = cupy.empty((B, n, n), np.float64)
    _launch("distances", "sqdist_finish", B * n * n, (partial, chunks, B, n, nonfinite_row, D))
    return D


def mix_rows(X, idx):
    B, n, d = X.shape
    idx = cupy.asarray(idx, dtype=np.int64)
    m, k = idx.shape[1], idx.shape[2]
    offsets = cupy.where(idx >= 0, idx * d, -1)
    out = cupy.empty((B, m, d), X.dtype)
    _launch("distances", f"mix_rows<{CTYPE[X.dtype]}>", B * d, (X, B, n, d, offsets, m, k, out))
    return out


def _row_chunks(d, rows, threads):
    """(columns per chunk, chunks) when each of ``rows`` rows of d columns is split into chunks of
    one block each: enough blocks to keep every SM busy, at least a block's threads per chunk."""
    chunks = max(1, min(-(-d // threads), -(-_target_blocks() // rows)))
    chunk = -(-d // chunks)
    return chunk, -(-d // chunk)


def _row_reduce(family, X, op, *, center=None, q=2.0, active=None, partial=None, nonfinite_row=None):
    """Chunk partials (chunks, B*n) of Op over every row, and the rows' non-finite flags (B, n).

    The chunking depends only on the shape, so iterative callers pass the buffers back in.
    """
    B, n, d = X.shape
    threads = _threads()
    chunk, chunks = _row_chunks(d, B * n, threads)
    if partial is None:
        partial = cupy.empty((chunks, B * n), np.float64)
    if nonfinite_row is None:
        nonfinite_row = cupy.zeros((B, n), np.int32)
    _launch(family, f"row_reduce<{CTYPE[X.dtype]}, byzkern::{op}>", 0,
            (X, B, n, d, center, float(q), chunk, chunks,
             active, partial, nonfinite_row),
            threads=threads, blocks=chunks * B * n)
    return partial, nonfinite_row, chunks


def row_norms(X, q):
    B, n, _ = X.shape
    op = "SumAbs" if q == 1 else "SumSquares" if q == 2 else "MaxAbs" if math.isinf(q) else "SumPower"
    partial, nonfinite_row, chunks = _row_reduce("distances", X, op, q=q)
    out = cupy.empty((B, n), np.float64)
    _launch("distances", f"row_norms_finish<byzkern::{op}>", B * n, (partial, chunks, B * n, float(q), nonfinite_row, out))
    return out


def clip(X, tau):
    B, n, d = X.shape
    partial, nonfinite_row, chunks = _row_reduce("distances", X, "SumSquares")
    scale = cupy.empty(B * n, np.float64)
    # A row with a non-finite entry keeps factor 1: it passes unchanged, for the aggregator to reject.
    _launch("distances", "clip_scale", B * n, (partial, chunks, B * n, nonfinite_row, float(tau), 1.0, scale))
    out = cupy.empty_like(X)
    _launch("distances", f"scale_rows<{CTYPE[X.dtype]}>", B * n * d, (X, B * n, d, scale, out))
    norms = cupy.empty((B, n), np.float64)
    _launch("distances", "row_norms_finish<byzkern::SumSquares>", B * n, (partial, chunks, B * n, 2.0, nonfinite_row, norms))
    return out, norms


def geomed(X, weights, init, maxiter, eps, nu):
    B, n, d = X.shape
    t = CTYPE[X.dtype]
    weights = cupy.asarray(weights, dtype=np.float64)
    active = cupy.ones(B, np.int32)
    if isinstance(init, str) and init == "mean":
        # The weighted mean must leave out the non-finite rows, so find them first.
        _, nonfinite_row, _ = _row_reduce("weiszfeld", X, "SumSquares")
        w = cupy.where(nonfinite_row.astype(bool), 0.0, weights)
        z = cupy.empty((B, d), np.float64)
        _launch("weiszfeld", f"weiszfeld_update<{t}>", B * d, (X, B, n, d, w, w, w.sum(axis=1), active, z))
        partial, nonfinite_row, chunks = _row_reduce("weiszfeld", X, "SumSquares", center=z)
    else:
        z = cupy.zeros((B, d), np.float64) if isinstance(init, str) else cupy.array(init, dtype=np.float64)
        partial, nonfinite_row, chunks = _row_reduce("weiszfeld", X, "SumSquares", center=z)
        w = cupy.where(nonfinite_row.astype(bool), 0.0, weights)
    objective = cupy.empty(B, np.float64)
    iterations = cupy.zeros(B, np.int64)
    beta = cupy.empty((B, n), np.float64)
    beta_sum = cupy.empty(B, np.float64)

    def bookkeeping(step):
        _launch("weiszfeld", "weiszfeld_weights", 0,
                (partial, chunks, B, n, w, float(nu), float(eps), step, active, objective, iterations, beta, beta_sum),
                blocks=B)

    bookkeeping(0)
    for step in range(1, maxiter + 1):
        _launch("weiszfeld", f"weiszfeld_update<{t}>", B * d, (X, B, n, d, w, beta, beta_sum, active, z))
        _row_reduce("weiszfeld", X, "SumSquares", center=z, active=active, partial=partial,
                    nonfinite_row=nonfinite_row)
        bookkeeping(step)
        if step % CONVERGENCE_CHECK_EVERY == 0 and not bool(active.any()):
            break
    return z.astype(X.dtype), iterations, objective


def cclip(X, tau, iters, v0):
    B, n, d = X.shape
    v0 = cwmed(X) if v0 is None else v0
    v = cupy.array(v0, dtype=np.float64)
    scale = cupy.empty(B * n, np.float64)
    overflowed = cupy.zeros(B, bool)
    partial = nonfinite_row = None
    for _ in range(iters):
        partial, nonfinite_row, chunks = _row_reduce("weiszfeld", X, "SumSquares", center=v, partial=partial,
                                                     nonfinite_row=nonfinite_row)
        if X.dtype == np.float64:  # float32 rows' squares, in float64, cannot overflow
            overflowed |= (cupy.isinf(partial.sum(axis=0)).reshape(B, n) & (nonfinite_row == 0)).any(axis=1)
        # Rows with a non-finite entry get factor 0 and are skipped by the update: they add nothing.
        _launch("weiszfeld", "clip_scale", B * n, (partial, chunks, B * n, nonfinite_row, float(tau), 0.0, scale))
        _launch("weiszfeld", f"cclip_update<{CTYPE[X.dtype]}>", B * d, (X, B, n, d, scale, nonfinite_row, v))
    return v.astype(X.dtype), overflowed


def _seed(seed):
    return np.uint64(seed)  # an unsigned 64-bit kernel parameter; CuPy passes a Python int as signed


def _stream(name):
    return np.uint64(_random.STREAMS[name])


def mean_std(X, ddof):
    B, h, d = X.shape
    mean, std = cupy.empty((B, d), X.dtype), cupy.empty((B, d), X.dtype)
    _launch("compress", f"mean_std<{CTYPE[X.dtype]}>", B * d, (X, B, h, d, ddof, mean, std))
    return mean, std


def centred_dots(X, mu, z):
    B, h, d = X.shape
    threads = _threads()
    chunk, chunks = _row_chunks(d, B * h, threads)
    partial = cupy.empty((chunks, B * h), np.float64)
    _launch("compress", f"centred_dot_chunks<{CTYPE[X.dtype]}>", 0,
            (X, B, h, d, cupy.ascontiguousarray(mu), cupy.ascontiguousarray(z), chunk, chunks, partial),
            threads=threads, blocks=chunks * B * h)
    return partial.sum(axis=0).reshape(B, h)


def power_step(X, mu, dots):
    """u column by column, then its dots by centred_dots: two reads of X."""
    B, h, d = X.shape
    mu = cupy.ascontiguousarray(mu)
    u = cupy.empty((B, d), np.float64)
    _launch("compress", f"power_columns<{CTYPE[X.dtype]}>", B * d, (X, B, h, d, mu, cupy.ascontiguousarray(dots), u))
    return u, centred_dots(X, mu, u)


def gaussian(own, std, seed):
    B, f, d = own.shape
    own = cupy.ascontiguousarray(own)
    out = cupy.empty_like(own)
    _launch("compress", f"gaussian<{CTYPE[own.dtype]}>", B * f * -(-d // 2),
            (own, B * f, d, float(std), _seed(seed), _stream("gaussian"), out))
    return out


def attack_candidates(H, mu, direction, etas, f):
    B, h, d = H.shape
    H, mu, direction = (cupy.ascontiguousarray(a) for a in (H, mu, direction))
    out = cupy.empty((B, etas.size, h + f, d), H.dtype)
    _launch("compress", f"attack_candidates<{CTYPE[H.dtype]}>", out.size,
            (H, mu, direction, cupy.asarray(etas, dtype=cupy.float64), B, h, d, etas.size, f, out))
    return out


def candidate_deviations(H, mu, direction, etas, f, rule, trim):
    if rule not in _RULES:
        raise ValueError(f"candidate_deviations: rule must be cwmed, cwtm or meamed; got {rule}")
    B, h, d = H.shape
    if trim < 0 or 2 * trim >= h + f:
        raise ValueError("candidate_deviations: trim must satisfy 0 <= 2 trim < h + f")
    t = CTYPE[H.dtype]
    tier = _register_tier(t, h + f)
    if tier is None:  # the candidates' columns do not fit a sorting network in registers: build them
        return deviations_of_built_candidates(sys.modules[__name__], H, mu, direction, etas, f, rule, trim)
    _, most = tier  # the candidates' kernels take any row count up to their network's
    H, mu, direction = (cupy.ascontiguousarray(a) for a in (H, mu, direction))
    E, threads = etas.size, _threads()
    chunks = -(-d // threads)
    partial = cupy.empty((chunks, B, E), np.float64)
    _launch("coordinatewise", f"{rule}_candidates<{t}, {most}>", 0,
            (H, mu, direction, cupy.asarray(etas, dtype=np.float64), B, h, d, E, f, trim, partial),
            threads=threads, blocks=B * chunks)
    out = cupy.empty((B, E), np.float64)
    _launch("coordinatewise", "sum_chunks", B * E, (partial, chunks, B * E, out))
    return out


# ---- compressors (wire formats in byzkern.compressors; reference.py fixes every bit) -------------

#: entries per block of the topk kernels (a multiple of any thread count _threads gives)
TOPK_CHUNK = 4096
_KEY_BITS = {"float": 32, "double": 64}  # cuda/compress.cu: FloatBits<T>::key_bits



def _row_lanes(X, term):
    """The lane sums (n, chunks, 8) of reference.ordered_row_sums of term(x), and chunks."""
    n, d = X.shape
    chunks = -(-d // reference.SUM_CHUNK)
    lanes = cupy.empty((n, chunks, 8), np.float64)
    _launch("compress", f"row_sum_lanes<{CTYPE[X.dtype]}, byzkern::{term}>", n * chunks * 8,
            (X, n, d, reference.SUM_CHUNK, lanes))
    return lanes, chunks


def topk(X, k):
    n, d = X.shape
    t = CTYPE[X.dtype]
    threads = _threads()
    chunk = max(threads, TOPK_CHUNK // threads * threads)
    chunks = -(-d // chunk)
    prefix = cupy.zeros(n, np.uint64)
    need = cupy.full(n, k, np.int64)
    hist = cupy.zeros((_KEY_BITS[t] // 8, n, 256), np.uint64)
    for p, shift in enumerate(range(_KEY_BITS[t] - 8, -1, -8)):
        _launch("compress", f"topk_histogram<{t}>", 0, (X, n, d, chunk, shift, prefix, hist[p]),
                threads=threads, blocks=n * chunks)
        _launch("compress", "topk_select_digit", n, (hist[p], n, shift, prefix, need))
    above, equal = cupy.empty((n, chunks), np.int64), cupy.empty((n, chunks), np.int64)
    _launch("compress", f"topk_chunk_counts<{t}>", 0, (X, n, d, chunk, prefix, above, equal),
            threads=threads, blocks=n * chunks)
    above_before = cupy.cumsum(above, axis=1) - above
    equal_before = cupy.cumsum(equal, axis=1) - equal
    values, indices = cupy.empty((n, k), X.dtype), cupy.empty((n, k), np.int64)
    _launch("compress", f"topk_write<{t}>", 0,
            (X, n, d, k, chunk, prefix, need, above_before, equal_before, values, indices),
            threads=threads, blocks=n * chunks)
    return values, indices


def randk(X, k, seed):
    n, d = X.shape
    draws = cupy.empty((n, k), np.int64)
    _launch("compress", "randk_draws", n * k, (n, d, k, _seed(seed), _stream("randk"), draws))
    # Floyd's collisions by pointer jumping (cuda/compress.cu, floyd_repeats)
    steps = cupy.arange(k, dtype=np.int64)
    sorted_keys = cupy.sort(draws * k + steps, axis=1)
    collision, link = cupy.empty((n, k), np.int32), cupy.empty((n, k), np.int64)
    _launch("compress", "floyd_repeats", n * k, (draws, sorted_keys, n, d, k, collision, link))
    collision_out, link_out = cupy.empty_like(collision), cupy.empty_like(link)
    for _ in range(max(1, (k - 1).bit_length())):
        _launch("compress", "floyd_jump", n * k, (collision, link, n, k, collision_out, link_out))
        collision, collision_out, link, link_out = collision_out, collision, link_out, link
    words = -(-d // 64)
    bitmap = cupy.zeros((n, words), np.uint64)
    _launch("compress", "floyd_bitmap", n * k, (draws, collision, n, d, k, words, bitmap))
    counts = cupy.empty((n, words), np.int64)
    _launch("compress", "word_popcounts", n * words, (bitmap, n * words, counts))
    offsets = cupy.cumsum(counts, axis=1) - counts
    values, indices = cupy.empty((n, k), X.dtype), cupy.empty((n, k), np.int64)
    _launch("compress", f"randk_gather<{CTYPE[X.dtype]}>", n * words,
            (X, n, d, k, words, bitmap, offsets, values, indices))
    return values, indices


def _codes(n, d, width):
    return cupy.empty((n, -(-d * width // 8)), np.uint8)


def qsgd(X, levels, seed):
    n, d = X.shape
    t = CTYPE[X.dtype]
    lanes, chunks = _row_lanes(X, "SquareTerm")
    norms, scale = cupy.empty(n, X.dtype), cupy.empty(n, np.float64)
    _launch("compress", f"qsgd_scales<{t}>", n, (lanes, n, chunks, levels, norms, scale))
    codes = _codes(n, d, reference.qsgd_width(levels))
    _launch("compress", f"qsgd_encode<{t}>", n * -(-d // 8),
            (X, n, d, levels, scale, _seed(seed), _stream("qsgd"), codes))
    return norms, codes


def natural(X, seed):
    n, d = X.shape
    codes = _codes(n, d, reference.natural_width(X.dtype))
    _launch("compress", f"natural_encode<{CTYPE[X.dtype]}>", n * -(-d // 8),
            (X, n, d, _seed(seed), _stream("natural"), codes))
    return codes


def sign(X):
    n, d = X.shape
    codes = _codes(n, d, 1)
    _launch("compress", f"sign_encode<{CTYPE[X.dtype]}>", codes.size, (X, n, d, codes))
    return codes


def scaled_sign(X):
    n, d = X.shape
    lanes, chunks = _row_lanes(X, "AbsTerm")
    scales = cupy.empty(n, X.dtype)
    _launch("compress", f"l1_scales<{CTYPE[X.dtype]}>", n, (lanes, n, chunks, d, scales))
    return scales, sign(X)


def scatter_rows(values, indices, d):
    n, k = values.shape
    values, indices = cupy.ascontiguousarray(values), cupy.ascontiguousarray(indices, dtype=np.int64)
    out = cupy.zeros((n, d), values.dtype)
    _launch("compress", f"scatter_values<{CTYPE[values.dtype]}>", n * k, (values, indices, n, k, d, out))
    return out


def qsgd_decompress(norms, codes, levels, d):
    n = codes.shape[0]
    norms, codes = cupy.ascontiguousarray(norms), cupy.ascontiguousarray(codes)
    out = cupy.empty((n, d), norms.dtype)
    _launch("compress", f"qsgd_decode<{CTYPE[norms.dtype]}>", n * -(-d // 8), (norms, codes, n, d, levels, out))
    return out


def natural_decompress(codes, d, dtype):
    n = codes.shape[0]
    out = cupy.empty((n, d), dtype)
    _launch("compress", f"natural_decode<{CTYPE[np.dtype(dtype)]}>", n * -(-d // 8),
            (cupy.ascontiguousarray(codes), n, d, out))
    return out


def sign_decompress(codes, scales, d):
    n = codes.shape[0]
    scales = cupy.ascontiguousarray(scales)
    out = cupy.empty((n, d), scales.dtype)
    _launch("compress", f"sign_decode<{CTYPE[scales.dtype]}>", n * -(-d // 8),
            (cupy.ascontiguousarray(codes), scales, n, d, out))
    return out


def indices_ok(indices, d):
    n, k = indices.shape
    bad = cupy.zeros(1, np.int32)
    _launch("compress", f"indices_check<{INDEX_CTYPE[np.dtype(indices.dtype)]}>", n * k,
            (cupy.ascontiguousarray(indices), n, k, np.uint64(d), bad))
    return not bool(bad[0])


def qsgd_levels_ok(codes, levels, d):
    n = codes.shape[0]
    bad = cupy.zeros(1, np.int32)
    _launch("compress", "qsgd_levels_check", n * -(-d // 8), (cupy.ascontiguousarray(codes), n, d, levels, bad))
    return not bool(bad[0])
