"""The benchmark tools stay runnable: the asv suite (smoke shapes) and `byzkern bench`."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from byzkern.cli import main

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


#: Runs every benchmark of the suite once, for every parameter combination, in one process: what
#: `asv run --quick` proves (each body still runs), without asv's process per benchmark, which
#: costs minutes on a 2-core CI machine.
RUN_EVERY_BENCHMARK_ONCE = """
import math, sys
from asv_runner.discovery import disc_benchmarks
ran = 0
for bench in disc_benchmarks(sys.argv[1]):
    for index in range(math.prod(len(values) for values in bench._params)):
        bench.set_param_idx(index)
        if bench.do_setup():  # skipped (e.g. no CUDA device); asv reports these as n/a too
            continue
        result = bench.func(*bench._current_params)
        if bench.name.split(".")[-1].startswith("track_"):
            assert math.isfinite(result), (bench.name, bench._current_params, result)
        bench.do_teardown()
        ran += 1
print("ran", ran)
"""


@pytest.mark.skipif(shutil.which("asv") is None, reason="asv is not installed")
def test_asv_suite_runs(tmp_path):
    env = dict(os.environ, BYZKERN_ASV_SMOKE="1", HOME=str(tmp_path))  # a private asv machine file
    subprocess.run(["asv", "machine", "--yes"], cwd=BENCH_DIR, env=env, check=True,
                   capture_output=True)
    check = subprocess.run(["asv", "check", "--python=same"], cwd=BENCH_DIR, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "No problems found" in check.stdout, check.stdout + check.stderr
    run = subprocess.run([sys.executable, "-c", RUN_EVERY_BENCHMARK_ONCE, str(BENCH_DIR / "benchmarks")],
                         cwd=BENCH_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert int(run.stdout.split("ran")[-1]) > 0, run.stdout


def test_byzkern_bench_prints_ratios(capsys):
    assert main(["bench", "--shapes", "9x300", "--ops", "mean", "cwmed", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "read floor" in out and "x floor" in out
    assert out.count("mean ") >= 1 and "cwmed" in out


def test_demo_runs_and_robust_rules_beat_the_mean(capsys):
    assert main(["demo", "--d", "200"]) == 0
    out = capsys.readouterr().out
    table = out.split("first 5 coordinates")[0]
    # the distance table's columns: ALIE, IPM, sign flip x100, NaN rows
    rows = {line.split()[0]: [float(v) for v in line.split()[-4:]] for line in table.splitlines()
            if line.startswith(("mean()", "cwtm(f=4)", "multikrum(f=4)"))}
    # under the x100 sign flip the mean is far off and the trimmed mean is not
    assert rows["mean()"][2] > 10 * rows["cwtm(f=4)"][2]
    # NaN rows make the mean NaN; Multi-Krum drops them and keeps the honest mean
    assert np.isnan(rows["mean()"][3]) and rows["multikrum(f=4)"][3] < 1e-3
