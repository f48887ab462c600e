"""``byzkern bench``: time each kernel, as GB/s of the bytes it must read and as a multiple of
the memory-read floor measured in the same run, beside the NumPy/PyTorch way of doing it.

The floor is the time of the fastest plain read of the same buffer we have: a parallel,
vectorized Numba sum over all its bytes (fastmath lets it use SIMD with many accumulators).
"""
from __future__ import annotations

import time

import numba
import numpy as np

import byzkern as bk


@numba.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def _stream_sum(flat):
    total = 0.0
    for i in numba.prange(flat.size):
        total += flat[i]
    return total


def median_time(fn, repeat, min_seconds=0.2):
    """Median wall time of ``fn()`` over at least ``repeat`` calls (one warm-up call first)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def read_floor(X, repeat):
    """Seconds to read every byte of X once, the best of a streaming sum and a copy."""
    flat = X.reshape(-1)
    out = np.empty_like(flat)
    sum_time = median_time(lambda: _stream_sum(flat), repeat)
    copy_time = median_time(lambda: np.copyto(out, flat), repeat) / 2  # a copy reads and writes
    return min(sum_time, copy_time)


def _f(n):
    return max(1, n // 5)


# name -> call(X) on the chosen backend. f = n/5 Byzantine rows where the rule takes f.
OPS = {
    "mean": lambda X, be: bk.mean(X, backend=be),
    "cwmed": lambda X, be: bk.cwmed(X, backend=be),
    "cwtm": lambda X, be: bk.cwtm(X, f=_f(X.shape[0]), backend=be),
    "meamed": lambda X, be: bk.meamed(X, f=_f(X.shape[0]), backend=be),
    "geomed": lambda X, be: bk.geomed(X, maxiter=8, eps=0.0, backend=be),
    "krum": lambda X, be: bk.krum(X, f=_f(X.shape[0]), backend=be),
    "multikrum": lambda X, be: bk.multikrum(X, f=_f(X.shape[0]), backend=be),
    "cclip": lambda X, be: bk.cclip(X, tau=1.0, iters=1, backend=be),
    "norm_filter": lambda X, be: bk.norm_filter(X, f=_f(X.shape[0]), backend=be),
    "pairwise_sqdist": lambda X, be: bk.pairwise_sqdist(X, backend=be),
    "nnm": lambda X, be: bk.nnm(X, f=_f(X.shape[0]), backend=be),
    "bucketing": lambda X, be: bk.bucketing(X, s=2, seed=0, backend=be),
    "clip": lambda X, be: bk.clip(X, tau=1.0, backend=be),
}


def _numpy_weiszfeld(X, steps=8):
    z = X.mean(axis=0)
    for _ in range(steps):
        w = 1.0 / np.maximum(1e-6, np.linalg.norm(X - z, axis=1))
        z = w @ X / w.sum()
    return z


def _torch_way():
    try:
        import torch
    except ImportError:
        return {}

    def krum(X):
        t = torch.from_numpy(X)
        n, f = t.shape[0], _f(t.shape[0])
        D = torch.cdist(t, t) ** 2
        scores = torch.sort(D, dim=1).values[:, 1:n - f - 1].sum(dim=1)
        return t[int(torch.argmin(scores))]

    def trimmed(X):
        t, f = torch.from_numpy(X), _f(X.shape[0])
        return torch.sort(t, dim=0).values[f:X.shape[0] - f].mean(dim=0)

    return {
        "mean": ("torch.mean(dim=0)", lambda X: torch.from_numpy(X).mean(dim=0)),
        "cwmed": ("torch.median(dim=0)", lambda X: torch.from_numpy(X).median(dim=0)),
        "cwtm": ("torch.sort trimmed mean", trimmed),
        "krum": ("torch.cdist Krum", krum),
    }


#: op -> (label, the plain NumPy/PyTorch way of computing it)
BASELINES = {
    "cwmed": ("numpy.median(axis=0)", lambda X: np.median(X, axis=0)),
    "geomed": ("NumPy Weiszfeld, 8 steps", _numpy_weiszfeld),
    "clip": ("NumPy clip", lambda X: X * np.minimum(1.0, 1.0 / np.linalg.norm(X, axis=1, keepdims=True))),
}


def run(shapes, ops, backends, repeat=3, dtype=np.float32, baselines=True, out=print):
    """Time ``ops`` on ``backends`` for each shape; returns rows of dicts and prints a table."""
    torch_way = _torch_way() if baselines else {}
    rows = []
    header = f"{'op':<16}{'shape':>14}  {'backend / the usual way':<26}{'median ms':>11}{'GB/s':>8}{'x floor':>9}"
    for n, d in shapes:
        X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32).astype(dtype)
        floor = read_floor(X, repeat)
        out(f"\n(n, d) = ({n}, {d}) {np.dtype(dtype).name}: read floor {floor * 1e3:.2f} ms "
            f"= {X.nbytes / floor / 1e9:.1f} GB/s")
        out(header)
        for op in ops:
            candidates = [(be, lambda X=X, op=op, be=be: OPS[op](X, be)) for be in backends]
            ways = [BASELINES.get(op), torch_way.get(op)] if baselines else []
            candidates += [(label, lambda X=X, fn=fn: fn(X)) for label, fn in filter(None, ways)]
            for label, fn in candidates:
                try:
                    t = median_time(fn, repeat)
                except NotImplementedError:
                    continue
                row = {"op": op, "n": n, "d": d, "backend": label, "seconds": t,
                       "gbps": X.nbytes / t / 1e9, "x_floor": t / floor}
                rows.append(row)
                out(f"{op:<16}{f'({n}, {d})':>14}  {label:<26}{t * 1e3:>11.2f}"
                    f"{row['gbps']:>8.1f}{row['x_floor']:>9.2f}")
    return rows
