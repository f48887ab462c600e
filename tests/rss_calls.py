"""Repeat every kernel many times in a fresh process and report how much each grew the RSS:
the larger of the growth of the peak RSS and of the current RSS (run by test_memory.py; a
fresh process so that earlier tests do not hide growth under an older, higher peak).

Usage: python rss_calls.py BACKEND CALLS [leak-control]
prints one "growth_in_KiB name" line per kernel; with leak-control, only a call that keeps 256
bytes each time, to show that the measurement sees a leak that small.
"""
import resource
import sys

import numpy as np

import byzkern as bk


def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def current_kib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def kernels(backend):
    """name -> a call that runs that kernel (and nothing much else) on small data."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 9, 33)).astype(np.float32)
    X[:, 0, 3] = np.nan  # the outlier paths too
    x = X[0]
    kw = {"backend": backend}
    wire = bk.topk(x, k=4).to_bytes()
    return {
        "mean": lambda: bk.mean(X, **kw),
        "cwmed": lambda: bk.cwmed(X, **kw),
        "cwtm": lambda: bk.cwtm(X, f=2, **kw),
        "meamed": lambda: bk.meamed(X, f=2, **kw),
        "geomed": lambda: bk.geomed(X, maxiter=3, **kw),
        "pairwise_sqdist + mix_rows (krum)": lambda: bk.krum(X, f=2, **kw),
        "nnm": lambda: bk.nnm(X, f=2, **kw),
        "cclip": lambda: bk.cclip(X, tau=1.0, iters=2, **kw),
        "row_norms (norm_filter)": lambda: bk.norm_filter(X, f=2, **kw),
        "clip": lambda: bk.clip(X, tau=1.0, **kw),
        "bucketing": lambda: bk.bucketing(X, s=2, seed=1, **kw),
        "topk + scatter_rows": lambda: bk.topk(x, k=4, **kw).decompress(**kw),
        "randk": lambda: bk.randk(x, k=4, seed=1, **kw).decompress(**kw),
        "qsgd": lambda: bk.qsgd(x, levels=4, seed=1, **kw).decompress(**kw),
        "natural": lambda: bk.natural(x, seed=1, **kw).decompress(**kw),
        "sign": lambda: bk.sign(x, **kw).decompress(**kw),
        "scaled_sign": lambda: bk.scaled_sign(x, **kw).decompress(**kw),
        "from_bytes (indices_ok)": lambda: bk.Compressed.from_bytes(wire, **kw),
        "mean_std (alie)": lambda: bk.alie(x, f=2, **kw),
        "gaussian": lambda: bk.gaussian(x, f=2, std=1.0, seed=1, **kw),
    }


def leak():
    """A call that keeps 256 bytes each time: what the measurement must see."""
    kept = []
    return {"leak control: 256 bytes kept per call": lambda: kept.append(bytearray(256))}


def main(backend, calls, leak_control):
    for name, call in (leak() if leak_control else kernels(backend)).items():
        for _ in range(100):  # warm up: first-call allocations, compilation, caches
            call()
        peak, current = peak_kib(), current_kib()
        for _ in range(calls):
            call()
        # a leak below an older, higher peak (e.g. from the imports) shows in the current RSS
        print(f"{max(peak_kib() - peak, current_kib() - current)} {name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), leak_control="leak-control" in sys.argv[3:])
