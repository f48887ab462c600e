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


@pytest.mark.skipif(shutil.which("asv") is None, reason="asv is not installed")
def test_asv_suite_runs(tmp_path):
    env = dict(os.environ, BYZKERN_ASV_SMOKE="1", HOME=str(tmp_path))  # a private asv machine file
    subprocess.run(["asv", "machine", "--yes"], cwd=BENCH_DIR, env=env, check=True,
                   capture_output=True)
    # forkserver: each benchmark forks from one process that imported the suite once, instead
    # of a fresh interpreter importing byzkern, torch and CuPy per parameter set (~10 s vs minutes)
    run = subprocess.run(
        ["asv", "run", "--python=same", "--quick", "--show-stderr", "--dry-run",
         "--launch-method", "forkserver"],
        cwd=BENCH_DIR, env=env, capture_output=True, text=True, timeout=600)
    # asv exits 2 when any benchmark failed
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "ok" in run.stdout and "failed" not in run.stdout.lower(), run.stdout[-4000:]


def test_byzkern_bench_prints_ratios(capsys):
    assert main(["bench", "--shapes", "9x300", "--ops", "mean", "cwmed", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "read floor" in out and "x floor" in out
    assert out.count("mean ") >= 1 and "cwmed" in out


def test_every_public_operation_is_benchmarked():
    import byzkern as bk
    from byzkern.bench import OPS

    not_operations = {"Compressed", "ErrorFeedback", "Pipeline", "Rule", "flatten", "unflatten",
                      "info", "use_backend"}
    # foe(eta) is ipm(eps=eta - 1); the Mimic row times the stateful heuristic
    same_kernel = {"foe", "Mimic"}
    assert set(bk.__all__) - not_operations - same_kernel <= set(OPS)


def test_byzkern_bench_families_and_the_way_column(capsys):
    assert main(["bench", "--shapes", "9x300", "--ops", "optimized", "rows", "--repeat", "1",
                 "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "16 x bk.cwtm" in out and "x way" in out
    assert all(op in out for op in ("norm_filter", "bucketing", "resampling", "clip"))
    with pytest.raises(SystemExit, match="unknown op"):
        main(["bench", "--ops", "median"])


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
