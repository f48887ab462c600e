"""Shared setup of the asv suite: fixed seeds, the shapes of the issues, backend skipping."""
import os

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

import byzkern

#: (n, d) shapes the CPU targets are stated for. BYZKERN_ASV_SMOKE=1 (CI) swaps in tiny ones:
#: the smoke run proves every benchmark still runs, it measures nothing.
SHAPES = [(20, 10**6), (64, 10**6), (17, 10**7), (256, 10**5)]
if os.environ.get("BYZKERN_ASV_SMOKE") == "1":
    SHAPES = [(20, 1000), (9, 257)]


def matrix(n, d, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32).astype(dtype)


def require_backend(name):
    """Skip (not fail) a benchmark whose backend is not built here."""
    if not byzkern.info()["backends"][name]["available"]:
        raise SkipNotImplemented(f"backend {name} unavailable")
