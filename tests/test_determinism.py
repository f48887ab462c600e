"""Determinism: every op gives the same bits for OMP_NUM_THREADS (and NUMBA_NUM_THREADS) = 1
and 2, and every random op gives the same bits for the same seed on cpu and numba.

tests/determinism_calls.py runs every op in a fresh process per thread count, so the thread
count comes from the environment as a user sets it (test_backends.py also switches threads
inside one process for the aggregators)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from byzkern import _dispatch

HERE = Path(__file__).resolve().parent
RANDOM_OPS = ("bucketing", "resampling", "randk", "qsgd", "natural", "gaussian", "Mimic")


def results(tmp_path, threads):
    path = tmp_path / f"threads{threads}.npz"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(HERE / "determinism_calls.py"), str(path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as saved:
        saved = dict(saved)
    assert saved.pop("threads").tolist() == [threads, threads]  # cpu (OpenMP), numba
    return saved


@pytest.fixture(scope="module")
def by_threads(tmp_path_factory):
    for backend in ("cpu", "numba"):
        if _dispatch.load(backend)[0] is None:
            pytest.skip(f"backend {backend} unavailable: {_dispatch.load(backend)[1]}")
    tmp = tmp_path_factory.mktemp("determinism")
    return {threads: results(tmp, threads) for threads in (1, 2)}


def test_one_and_two_threads_give_the_same_bits(by_threads):
    one, two = by_threads[1], by_threads[2]
    assert one.keys() == two.keys() and len(one) > 100
    differ = [key for key in one if not np.array_equal(one[key], two[key], equal_nan=True)]
    assert differ == []


def test_same_seed_same_bits_on_cpu_and_numba(by_threads):
    saved = by_threads[2]
    keys = [k.split("/", 1)[1] for k in saved if k.startswith("cpu/") and k.split("/")[1] in RANDOM_OPS]
    assert {k.split("/")[0] for k in keys} == set(RANDOM_OPS)
    differ = [k for k in keys if not np.array_equal(saved[f"cpu/{k}"], saved[f"numba/{k}"], equal_nan=True)]
    assert differ == []
