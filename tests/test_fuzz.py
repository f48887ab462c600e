"""Fuzzing: hypothesis drives thousands of bad or extreme calls through every public function
(tests/fuzz_calls.py) in a subprocess, so a crash of the interpreter or a hang is caught too."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
#: each example calls its function once per CPU backend: about 2.7 calls per example
EXAMPLES, MIN_CALLS = 3900, 10_000


def fuzz(examples, timeout):
    # One OpenMP/Numba thread: on a loaded machine every parallel region of a tiny call can
    # wait a scheduler slice; thread-count independence is tested in test_determinism.py.
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run([sys.executable, str(HERE / "fuzz_calls.py"), str(examples)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fuzzer hung (no result after {timeout} s):\n{(exc.stderr or b'')[-3000:]}")
    assert done.returncode >= 0, f"the interpreter crashed (signal {-done.returncode}):\n{done.stderr[-5000:]}"
    assert done.returncode == 0, f"the fuzzer found a failing call:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", done.stdout.splitlines()[-1])}


def test_ten_thousand_bad_or_extreme_calls():
    counts = fuzz(EXAMPLES, timeout=600)
    assert counts["calls"] >= MIN_CALLS, counts
    # both sides are exercised: calls refused with a documented error, and calls that ran
    assert 0.2 * counts["examples"] < counts["raised"] < 0.8 * counts["examples"], counts
