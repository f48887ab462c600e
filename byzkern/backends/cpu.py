"""The ``cpu`` backend: thin calls into the C++ extension ``byzkern._cpu`` (csrc/).

Compiled for the portable x86-64 baseline plus an AVX2+FMA variant of each hot loop and an
AVX-512 variant of those it speeds up, chosen at run time from CPUID (``BYZKERN_ISA=baseline``,
``avx2`` or ``avx512`` caps the tier; every tier gives the same bits, but that the baseline
rounds the products of pairwise_sqdist's Gram sums, which the others fuse); no -march=native. OpenMP
over column tiles or batch items, GIL released inside every kernel. Column reductions
(distances, norms) are summed per slab of tiles and the slabs added in order, so results do not
depend on the thread count.
"""
from __future__ import annotations

import json
import os
import types
from importlib import resources

from .. import _config
from . import _weiszfeld, mean_tile, serial_when_small

try:
    from .. import _cpu
except ImportError as exc:  # the build skipped the extension: say why
    try:
        why = json.loads(resources.files("byzkern").joinpath("_build_info.json").read_text())["reason"]
    except (OSError, KeyError, ValueError):
        why = ""
    raise ImportError(f"byzkern._cpu is not built ({why or exc})") from exc

#: the SIMD tiers of csrc/common.hpp, lowest first
ISAS = ("baseline", "avx2", "avx512")


def unavailable_reason():
    forced = os.environ.get("BYZKERN_ISA")
    if forced and forced not in ISAS:
        return f"BYZKERN_ISA={forced!r} is not one of {', '.join(ISAS)}"
    return None


def details():
    return {"threads": _cpu.max_threads(), "isa": _cpu.isa()}


def set_threads(threads):
    """OpenMP threads for the following calls; 0 restores the default."""
    _cpu.set_threads(threads)


def mean(X):
    return _cpu.mean(X, mean_tile(X.shape[0], X.shape[2], _cpu.max_threads()))


def cwmed(X):
    return _cpu.cwmed(X, _config.COL_TILE)


def cwtm(X, f):
    return _cpu.cwtm(X, f, _config.COL_TILE)


def meamed(X, f):
    return _cpu.meamed(X, f, _config.COL_TILE)


def pairwise_sqdist(X):
    return _cpu.pairwise_sqdist(X, _config.COL_TILE, _config.REDUCTION_SLABS)


def mix_rows(X, idx):
    return _cpu.mix_rows(X, idx, _config.COL_TILE, _config.STREAM_MIN_BYTES)


def row_norms(X, q):
    return _cpu.row_norms(X, float(q), _config.COL_TILE, _config.REDUCTION_SLABS)


def clip(X, tau):
    return _cpu.clip(X, tau, _config.COL_TILE, _config.REDUCTION_SLABS)


def geomed(X, weights, init, maxiter, eps, nu):
    if _weiszfeld.steps_on_coefficients(X.shape, maxiter, eps):
        return _weiszfeld.geomed(X, weights, init, maxiter, eps, nu, _WEISZFELD_PASSES)
    return _cpu.geomed(X, weights, init, maxiter, eps, nu, _config.COL_TILE, _config.REDUCTION_SLABS)


def cclip(X, tau, iters, v0):
    return _cpu.cclip(X, tau, iters, v0, _config.COL_TILE, _config.REDUCTION_SLABS)


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
    return _cpu.scaled_sign(X)


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
    return _cpu.gaussian(own, std, seed, _config.COL_TILE)


def centred_dots(X, mu, z):
    return _cpu.centred_dots(X, mu, z, _config.COL_TILE, _config.REDUCTION_SLABS)


def power_step(X, mu, dots):
    return _cpu.power_step(X, mu, dots, _config.COL_TILE, _config.REDUCTION_SLABS)


def attack_candidates(H, mu, direction, etas, f):
    return _cpu.attack_candidates(H, mu, direction, etas, f, _config.COL_TILE, _config.STREAM_MIN_BYTES)


def candidate_deviations(H, mu, direction, etas, f, rule, trim):
    return _cpu.candidate_deviations(H, mu, direction, etas, f, rule, trim, _config.COL_TILE)


#: the passes over X that backends/_weiszfeld.py's coefficient steps ask for
_WEISZFELD_PASSES = types.SimpleNamespace(
    pairwise_sqdist=pairwise_sqdist,
    center_distances=lambda X, center: _cpu.center_distances(X, center, _config.COL_TILE, _config.REDUCTION_SLABS),
    weighted_center=lambda X, coef, items, distances: _cpu.weighted_center(
        X, coef, items, distances, _config.COL_TILE, _config.REDUCTION_SLABS),
)

serial_when_small(globals(), _cpu.max_threads, _cpu.set_threads)
