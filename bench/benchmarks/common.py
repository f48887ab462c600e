"""Shared setup of the asv suite: fixed seeds, the shapes of the issues, backend skipping, and
the one benchmark class every family file instantiates from byzkern.bench's table of ops."""
import os

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from byzkern import _dispatch
from byzkern.bench import OPS

#: (n, d) shapes the CPU targets are stated for. BYZKERN_ASV_SMOKE=1 (CI) swaps in one tiny
#: shape (odd n and d): the smoke run proves every benchmark still runs, it measures nothing.
SHAPES = [(20, 10**6), (64, 10**6), (17, 10**7), (256, 10**5)]
#: the CPU backends timed. The smoke run leaves numba out: its first call in each forked
#: benchmark process costs about a second, and it goes through the same benchmark code as cpu.
BACKENDS = ("cpu", "numba")
if os.environ.get("BYZKERN_ASV_SMOKE") == "1":
    SHAPES = [(9, 257)]
    BACKENDS = ("cpu",)


def matrix(n, d, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32).astype(dtype)


def require_backend(name):
    """Skip (not fail) a benchmark whose backend is not built here."""
    module, reason = _dispatch.load(name)  # only this backend: probing CUDA costs a third of a second
    if module is None:
        raise SkipNotImplemented(f"backend {name} unavailable: {reason}")


def cases(family):
    """'op: implementation' for every op of ``family``: each CPU backend, then each usual way
    and bound (one list rather than ops x implementations, which would be mostly empty)."""
    return [f"{op}: {impl}" for op, entry in OPS.items() if entry.family == family
            for impl in (*BACKENDS, *entry.ways, *entry.bounds)]


class _Family:
    """Times one case of byzkern.bench.OPS per parameter set; subclasses set ``params``."""

    param_names = ["op: implementation", "(n, d)"]
    timeout = 600

    def setup(self, case, shape):
        op, impl = case.split(": ", 1)
        X = matrix(*shape)
        if impl in BACKENDS:
            require_backend(impl)
            try:
                self.call = OPS[op].run(X, impl)
                self.call()  # Numba compiles (or loads its cache) outside the timing
            except NotImplementedError as exc:  # from the factory or, where it defers, the call
                raise SkipNotImplemented(str(exc)) from None
        else:
            self.call = {**OPS[op].ways, **OPS[op].bounds}[impl](X)
            self.call()

    def time_call(self, case, shape):
        self.call()
