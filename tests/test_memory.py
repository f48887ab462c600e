"""Memory: repeated calls of every kernel do not grow the peak RSS (tests/rss_calls.py runs them
in a fresh process), and the measurement does see a leak of a few hundred bytes per call."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byzkern import _dispatch

HERE = Path(__file__).resolve().parent
CALLS = 10_000
LIMIT_KIB = 1024


def peak_growth(backend, calls, *, leak_control=False):
    """kernel name -> peak RSS growth in KiB over ``calls`` calls, measured in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1",  # a parallel region can wait a scheduler slice here
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, str(HERE / "rss_calls.py"), backend, str(calls)] + (["leak-control"] if leak_control else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: int(kib) for kib, name in (line.split(" ", 1) for line in done.stdout.splitlines())}


# Numba's arrays are reference counted by its runtime; its 200,000 calls take minutes here.
@pytest.mark.parametrize("backend", ["cpu", pytest.param("numba", marks=pytest.mark.slow)])
def test_ten_thousand_calls_of_each_kernel_keep_the_peak_rss(backend):
    if _dispatch.load(backend)[0] is None:
        pytest.skip(f"backend {backend} unavailable: {_dispatch.load(backend)[1]}")
    growth = peak_growth(backend, CALLS)
    assert len(growth) == 20
    assert {k: v for k, v in growth.items() if v >= LIMIT_KIB} == {}


def test_the_measurement_sees_a_small_leak():
    growth = peak_growth("reference", CALLS, leak_control=True)
    assert growth["leak control: 256 bytes kept per call"] >= LIMIT_KIB
