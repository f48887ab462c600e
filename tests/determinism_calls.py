"""Every op on the cpu and numba backends, saved bit for bit (run by test_determinism.py under
different OMP_NUM_THREADS / NUMBA_NUM_THREADS).

Usage: python determinism_calls.py OUT.npz   -> arrays named "<backend>/<op>/<dtype>"
"""
import sys

import numpy as np

import byzkern as bk
from byzkern import _config

# 16 column tiles, so two threads really split the work
_config.COL_TILE = 64
D = 1001


def ops(backend):
    kw = {"backend": backend}

    def message(compressed):
        return [*compressed.fields.values(), compressed.decompress(**kw)]

    def optimized(H, aggregator):  # on a coordinate-wise rule: candidate_deviations
        rows, info = bk.optimized(H, f=2, attack="alie", aggregator=aggregator, return_info=True, **kw)
        return [rows, info["deviation"]]

    def mimic(H):
        attacker = bk.Mimic(warmup=2, seed=4)
        return [attacker(H, f=2, **kw) for _ in range(3)]

    return {
        "mean": lambda X: bk.mean(X, **kw), "cwmed": lambda X: bk.cwmed(X, **kw),
        "cwtm": lambda X: bk.cwtm(X, f=3, **kw), "meamed": lambda X: bk.meamed(X, f=3, **kw),
        "geomed": lambda X: bk.geomed(X, maxiter=8, eps=0.0, **kw),
        "krum": lambda X: bk.krum(X, f=3, **kw), "multikrum": lambda X: bk.multikrum(X, f=3, **kw),
        "cclip": lambda X: bk.cclip(X, tau=0.5, iters=3, **kw),
        "norm_filter": lambda X: bk.norm_filter(X, f=3, **kw),
        "nnm": lambda X: bk.nnm(X, f=3, **kw), "clip": lambda X: bk.clip(X, tau=0.5, **kw),
        "bucketing": lambda X: bk.bucketing(X, s=2, seed=9, **kw),
        "resampling": lambda X: bk.resampling(X, s=2, seed=9, **kw),
        "pairwise_sqdist": lambda X: bk.pairwise_sqdist(X, **kw),
        "topk": lambda X: message(bk.topk(X[0], k=100, **kw)),
        "randk": lambda X: message(bk.randk(X[0], k=100, seed=9, **kw)),
        "qsgd": lambda X: message(bk.qsgd(X[0], levels=7, seed=9, **kw)),
        "natural": lambda X: message(bk.natural(X[0], seed=9, **kw)),
        "sign": lambda X: message(bk.sign(X[0], **kw)),
        "scaled_sign": lambda X: message(bk.scaled_sign(X[0], **kw)),
        "sign_flip": lambda X: bk.sign_flip(X, f=2, **kw), "ipm": lambda X: bk.ipm(X, f=2, **kw),
        "foe": lambda X: bk.foe(X, f=2, eta=3.0, **kw), "alie": lambda X: bk.alie(X, f=2, **kw),
        "gaussian": lambda X: bk.gaussian(X, f=2, std=2.0, seed=9, **kw),
        "Mimic": mimic,
        "optimized": lambda X: optimized(X, aggregator=bk.cwtm(f=2, **kw)),
    }


def main(path):
    rng = np.random.default_rng(8)
    out = {}
    for dtype in (np.float32, np.float64):
        X = rng.standard_normal((2, 11, D)).astype(dtype)
        X[:, 4, 7] = np.nan  # the outlier paths too
        for backend in ("cpu", "numba"):
            for name, call in ops(backend).items():
                result = call(X)
                for i, part in enumerate(result if isinstance(result, list) else [result]):
                    out[f"{backend}/{name}/{np.dtype(dtype).name}/{i}"] = np.asarray(part)
    import numba

    threads = np.array([bk.info()["backends"]["cpu"]["threads"], numba.get_num_threads()])
    np.savez(path, threads=threads, **out)


if __name__ == "__main__":
    main(sys.argv[1])
