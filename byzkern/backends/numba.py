"""The ``numba`` backend: the C++ kernels' algorithms in Numba, the CPU fallback when the
extension is not built. Parallel over (batch item, column tile) with ``prange``; the GIL is
released (``nogil=True``). Compiled on first use and cached on disk.
"""
from __future__ import annotations

import numba
import numpy as np

from .. import _config

def details():
    return {"threads": numba.get_num_threads(), "version": numba.__version__}


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
