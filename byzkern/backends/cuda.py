"""The ``cuda`` backend: the CUDA C++ kernels of ``cuda/*.cu``, compiled at run time by NVRTC
through CuPy (``cupy.RawModule``), one module per family, on first use (never at import).

Inputs are CuPy arrays (torch CUDA tensors arrive as CuPy views through DLPack, see
``byzkern._arrays``); results are new CuPy arrays on the same device. Kernels take int64 sizes
and cover the whole batch (B, n, d) in one launch; threads per block come from
``byzkern._config.CUDA_THREADS``.

Numerics, as in ``backends/reference.py``: sums in float64 for float32 input too; NaN orders
above +Inf; ``pairwise_sqdist`` is exact-difference (not Gram-based) in float64.

Families (one ``.cu`` each, mirroring ``csrc/``): coordinatewise, distances (with row_norms,
mix_rows, clip), weiszfeld (geomed, cclip), compress (so far the attacks' mean_std and
gaussian; compressed messages still live on the host). The first call into a family compiles
all of its kernels (tens of seconds for coordinatewise, whose sorting networks are unrolled);
CuPy caches the binaries on disk, so later processes load them at once.
"""
from __future__ import annotations

import functools
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .. import _config, _random

try:
    import cupy
except ImportError as exc:
    cupy = None
    _CUPY_IMPORT_ERROR = str(exc)

#: C++ type of each compute dtype, the one place template arguments are spelled
CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: sorting-network sizes of the coordinate-wise register path per C++ type; larger n sorts in
#: blocks. No 64 for double: it needs 240 registers per thread and a minute of ptxas time.
REGISTER_TIERS = {"float": (4, 8, 16, 32, 64), "double": (4, 8, 16, 32)}
#: largest n sorted in registers (tests lower it to cover the block path with small inputs)
REGISTER_SORT_MAX = 64
#: dynamic shared memory for one block's columns; beyond it the block path sorts in a global
#: scratch buffer (tests set 0 to cover that path). 48 KiB is the limit without an opt-in,
#: less the kernel's static shared memory.
SHARED_COLUMN_BYTES = 47 * 1024
#: Weiszfeld checks on the host whether every batch item has converged every this many steps:
#: a host synchronization per step would cost more than a step on small inputs.
CONVERGENCE_CHECK_EVERY = 4
#: NVRTC options; the architecture is added by CuPy for the device in use
OPTIONS = ("--std=c++17",)

_ROW_OPS = ("SumAbs", "SumSquares", "SumPower", "MaxAbs")
_RULES = ("cwmed", "cwtm", "meamed")
_PAIR_TILE = 16  # cuda/distances.cu: kPairTile; its blocks are 16 x 16 threads


def _per_type(*templates):
    return [template.format(t=t) for template in templates for t in CTYPE.values()]


#: every kernel instantiation of every family, requested from NVRTC by name
NAME_EXPRESSIONS = {
    "coordinatewise": (
        _per_type("mean_columns<{t}>")
        + [f"{rule}_registers<{t}, {N}>" for rule in _RULES for t, tiers in REGISTER_TIERS.items() for N in tiers]
        + [f"{rule}_blocks<{t}>" for rule in _RULES for t in CTYPE.values()]
    ),
    "distances": (
        _per_type("sqdist_partial<{t}>", "mix_rows<{t}>", "scale_rows<{t}>")
        + [f"row_reduce<{t}, byzkern::{op}>" for t in CTYPE.values() for op in _ROW_OPS]
        + [f"row_norms_finish<byzkern::{op}>" for op in _ROW_OPS]
        + ["sqdist_finish", "clip_scale"]
    ),
    "weiszfeld": (
        _per_type("row_reduce<{t}, byzkern::SumSquares>", "weiszfeld_update<{t}>", "cclip_update<{t}>")
        + ["clip_scale", "weiszfeld_weights"]
    ),
    "compress": _per_type("mean_std<{t}>", "gaussian<{t}>"),
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
    """Threads per block: CUDA_THREADS rounded up to whole warps (the block sums need them)."""
    return min(1024, max(32, -(-_config.CUDA_THREADS // 32) * 32))


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


def mean(X):
    B, n, d = X.shape
    out = cupy.empty((B, d), X.dtype)
    _launch("coordinatewise", f"mean_columns<{CTYPE[X.dtype]}>", B * d, (X, B, n, d, out))
    return out


def _coordinatewise(rule, X, f):
    B, n, d = X.shape
    out = cupy.empty((B, d), X.dtype)
    t = CTYPE[X.dtype]
    tier = next((N for N in REGISTER_TIERS[t] if n <= N <= REGISTER_SORT_MAX), None)
    if tier is not None:
        _launch("coordinatewise", f"{rule}_registers<{t}, {tier}>", B * d, (X, B, n, d, f, out))
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
    B, n, d = X.shape
    tiles = -(-n // _PAIR_TILE)
    pair_tiles = tiles * (tiles + 1) // 2
    # Split the columns into chunks only as far as needed to fill the GPU; each chunk adds one
    # (B, n, n) partial that the finish kernel sums in a fixed order.
    chunks = max(1, min(-(-d // _PAIR_TILE), -(-_target_blocks() // (B * pair_tiles))))
    chunk = -(-d // chunks)
    chunks = -(-d // chunk)
    partial = cupy.empty((chunks, B, n, n), np.float64)
    nonfinite_row = cupy.zeros((B, n), np.int32)
    _launch("distances", f"sqdist_partial<{CTYPE[X.dtype]}>", 0,
            (X, B, n, d, chunk, chunks, partial, nonfinite_row),
            threads=_PAIR_TILE * _PAIR_TILE, blocks=chunks * B * pair_tiles)
    D = cupy.empty((B, n, n), np.float64)
    _launch("distances", "sqdist_finish", B * n * n, (partial, chunks, B, n, nonfinite_row, D))
    return D


def mix_rows(X, idx):
    B, n, d = X.shape
    idx = cupy.ascontiguousarray(idx, dtype=np.int64)
    m, k = idx.shape[1], idx.shape[2]
    out = cupy.empty((B, m, d), X.dtype)
    _launch("distances", f"mix_rows<{CTYPE[X.dtype]}>", B * d, (X, B, n, d, idx, m, k, out))
    return out


def _row_reduce(family, X, op, *, center=None, q=2.0, active=None, partial=None, nonfinite_row=None):
    """Chunk partials (chunks, B*n) of Op over every row, and the rows' non-finite flags (B, n).

    The chunking depends only on the shape, so iterative callers pass the buffers back in.
    """
    B, n, d = X.shape
    threads = _threads()
    chunks = max(1, min(-(-d // threads), -(-_target_blocks() // (B * n))))
    chunk = -(-d // chunks)
    chunks = -(-d // chunk)
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
    return out


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
    v = cupy.array(v0, dtype=np.float64)
    scale = cupy.empty(B * n, np.float64)
    partial = nonfinite_row = None
    for _ in range(iters):
        partial, nonfinite_row, chunks = _row_reduce("weiszfeld", X, "SumSquares", center=v, partial=partial,
                                                     nonfinite_row=nonfinite_row)
        # Rows with a non-finite entry get factor 0 and are skipped by the update: they add nothing.
        _launch("weiszfeld", "clip_scale", B * n, (partial, chunks, B * n, nonfinite_row, float(tau), 0.0, scale))
        _launch("weiszfeld", f"cclip_update<{CTYPE[X.dtype]}>", B * d, (X, B, n, d, scale, nonfinite_row, v))
    return v.astype(X.dtype)


def mean_std(X, ddof):
    B, h, d = X.shape
    mean, std = cupy.empty((B, d), X.dtype), cupy.empty((B, d), X.dtype)
    _launch("compress", f"mean_std<{CTYPE[X.dtype]}>", B * d, (X, B, h, d, ddof, mean, std))
    return mean, std


def gaussian(own, std, seed):
    B, f, d = own.shape
    own = cupy.ascontiguousarray(own)
    out = cupy.empty_like(own)
    # seed and stream are unsigned 64-bit kernel parameters; CuPy would pass a Python int as signed
    _launch("compress", f"gaussian<{CTYPE[own.dtype]}>", B * f * -(-d // 2),
            (own, B * f, d, float(std), np.uint64(seed), np.uint64(_random.STREAMS["gaussian"]), out))
    return out
