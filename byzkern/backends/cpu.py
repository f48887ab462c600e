"""The ``cpu`` backend: thin calls into the C++ extension ``byzkern._cpu`` (csrc/).

Compiled for a portable x86-64 baseline (no -march=native), OpenMP over column tiles or batch
items, GIL released inside every kernel.
"""
from __future__ import annotations

import json
from importlib import resources

from .. import _config

try:
    from .. import _cpu
except ImportError as exc:  # the build skipped the extension: say why
    try:
        why = json.loads(resources.files("byzkern").joinpath("_build_info.json").read_text())["reason"]
    except (OSError, KeyError, ValueError):
        why = ""
    raise ImportError(f"byzkern._cpu is not built ({why or exc})") from exc

def details():
    return {"threads": _cpu.max_threads()}


def set_threads(threads):
    """OpenMP threads for the following calls; 0 restores the default."""
    _cpu.set_threads(threads)


def mean(X):
    return _cpu.mean(X, _config.COL_TILE)


# ---- compressors and attacks (SPEC §4, §5) ---------------------------------------------------

def topk(X, k):
    return _cpu.topk(X, k)


def randk(X, k, seed):
    return _cpu.randk(X, k, seed)


def qsgd(X, levels, seed):
    return _cpu.qsgd(X, levels, seed, _config.COL_TILE)


def natural(X, seed):
    return _cpu.natural(X, seed, _config.COL_TILE)


def sign(X):
    return _cpu.sign(X, _config.COL_TILE)


def scaled_sign(X):
    return _cpu.scaled_sign(X, _config.COL_TILE)


def scatter_rows(values, indices, d):
    return _cpu.scatter_rows(values, indices, d)


def qsgd_decompress(norms, codes, levels, d):
    return _cpu.qsgd_decompress(norms, codes, levels, d, _config.COL_TILE)


def natural_decompress(codes, d, dtype):
    decode = _cpu.natural_decompress_f32 if dtype.itemsize == 4 else _cpu.natural_decompress_f64
    return decode(codes, d, _config.COL_TILE)


def sign_decompress(codes, scales, d):
    return _cpu.sign_decompress(codes, scales, d, _config.COL_TILE)


def indices_ok(indices, d):
    return _cpu.indices_ok(indices, d)


def qsgd_levels_ok(codes, levels, d):
    return _cpu.qsgd_levels_ok(codes, levels, d)


def mean_std(X, ddof):
    return _cpu.mean_std(X, ddof, _config.COL_TILE)


def gaussian(own, std, seed):
    return _cpu.gaussian(own, std, seed)
