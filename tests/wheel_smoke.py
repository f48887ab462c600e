"""Run by tests/test_wheel.py with an installed wheel's Python, from a directory outside the
source tree: the installed package imports, its compiled extension is the wheel's, the CUDA
sources are package data, and one call per family agrees with the reference backend.

Usage: python wheel_smoke.py CU_NAME [CU_NAME ...]   (the cuda/*.cu names the wheel must ship)
"""
import sys
from importlib import resources
from pathlib import Path

import numpy as np

import byzkern as bk
import byzkern._cpu


def inside_environment(path):
    return Path(path).resolve().is_relative_to(Path(sys.prefix).resolve())


assert inside_environment(bk.__file__), f"byzkern imported from {bk.__file__}, not from {sys.prefix}"
assert inside_environment(byzkern._cpu.__file__), f"_cpu loaded from {byzkern._cpu.__file__}"
backends = bk.info()["backends"]
assert backends["cpu"]["available"], backends["cpu"]
assert backends["numba"]["available"], backends["numba"]

shipped = {p.name for p in resources.files("byzkern.cuda").iterdir()}
missing = set(sys.argv[1:]) - shipped
assert not missing, f"the wheel lacks the CUDA sources {sorted(missing)}"

X = np.random.default_rng(0).standard_normal((9, 50)).astype(np.float32)
X[0] = np.nan
calls = {
    "aggregator": lambda **kw: bk.cwtm(X, f=2, **kw),
    "distance rule": lambda **kw: bk.krum(X, f=2, **kw),
    "iterative rule": lambda **kw: bk.geomed(X, maxiter=8, eps=0.0, **kw),
    "pre-aggregator": lambda **kw: bk.nnm(X, f=2, **kw),
    "compressor": lambda **kw: bk.Compressed.from_bytes(bk.topk(X, k=5, **kw).to_bytes()).decompress(**kw),
    "attack": lambda **kw: bk.alie(X[1:], f=2, **kw),
}
for family, call in calls.items():
    fast, expected = call(backend="cpu"), call(backend="reference")
    np.testing.assert_allclose(fast, expected, rtol=1e-5, atol=1e-5, err_msg=family)
print("wheel smoke: ok")
