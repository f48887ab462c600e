"""The ``cpu`` backend: thin calls into the C++ extension ``byzkern._cpu`` (csrc/).

Compiled for the portable x86-64 baseline plus an AVX2+FMA variant of each hot loop, chosen at
run time from CPUID (``BYZKERN_ISA=baseline`` forces the baseline); no -march=native. OpenMP
over column tiles or batch items, GIL released inside every kernel. Column reductions
(distances, norms) are summed per slab of tiles and the slabs added in order, so results do not
depend on the thread count.
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
    return {"threads": _cpu.max_threads(), "isa": _cpu.isa()}


def set_threads(threads):
    """OpenMP threads for the following calls; 0 restores the default."""
    _cpu.set_threads(threads)


def mean(X):
    return _cpu.mean(X, _config.COL_TILE)


def cwmed(X):
    return _cpu.cwmed(X, _config.COL_TILE)


def cwtm(X, f):
    return _cpu.cwtm(X, f, _config.COL_TILE)


def meamed(X, f):
    return _cpu.meamed(X, f, _config.COL_TILE)


def pairwise_sqdist(X):
    return _cpu.pairwise_sqdist(X, _config.COL_TILE, _config.REDUCTION_SLABS)


def mix_rows(X, idx):
    return _cpu.mix_rows(X, idx, _config.COL_TILE)


def row_norms(X, q):
    return _cpu.row_norms(X, float(q), _config.COL_TILE, _config.REDUCTION_SLABS)


def clip(X, tau):
    return _cpu.clip(X, tau, _config.COL_TILE, _config.REDUCTION_SLABS)


def geomed(X, weights, init, maxiter, eps, nu):
    return _cpu.geomed(X, weights, init, maxiter, eps, nu, _config.COL_TILE, _config.REDUCTION_SLABS)


def cclip(X, tau, iters, v0):
    return _cpu.cclip(X, tau, iters, v0, _config.COL_TILE, _config.REDUCTION_SLABS)
