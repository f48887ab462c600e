"""The benchmark tools stay runnable: the asv suite (smoke shapes) and `byzkern bench`; the GPU
suite's PyTorch baselines compute what the kernels they are set beside compute."""
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import byzkern as bk
from byzkern.backends import reference
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


def test_byzkern_bench_families_and_the_way_and_bound_columns(capsys, tmp_path):
    assert main(["bench", "--shapes", "9x300", "--ops", "optimized", "rows", "--repeat", "1",
                 "--backend", "cpu", "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "16 x bk.cwtm" in out and "x way" in out and "x bound" in out
    assert all(op in out for op in ("norm_filter", "bucketing", "resampling", "clip"))
    rows = {(row["op"], row["backend"]): row for row in json.loads((tmp_path / "rows.json").read_text())}
    # clip has ways and a bound (the copy), optimized only a bound; only byzkern's rows get ratios
    assert rows["clip", "cpu"]["x_way"] > 0 and rows["clip", "cpu"]["x_bound"] > 0
    assert rows["optimized", "cpu"]["x_way"] is None and rows["optimized", "cpu"]["x_bound"] > 0
    assert rows["clip", "numpy row clip"]["x_way"] is None is rows["clip", "numpy row clip"]["x_bound"]
    with pytest.raises(SystemExit, match="unknown op"):
        main(["bench", "--ops", "median"])


def _comparable(op, result, X):
    """A way's or an op's result as the dense array the op decompresses to."""
    if isinstance(result, bk.Compressed):
        return result.decompress()
    if op == "topk":
        dense = np.zeros_like(X)
        np.put_along_axis(dense, np.asarray(result[1]), np.asarray(result[0]), axis=1)
        return dense
    if op == "sign":
        return np.where(np.unpackbits(result, axis=1, count=X.shape[1], bitorder="little"), 1.0, -1.0)
    if op == "scaled_sign":
        return result[0][:, None] * _comparable("sign", result[1], X)
    return np.asarray(result[0] if isinstance(result, tuple) else result)  # torch.median's (values, indices)


@pytest.mark.parametrize("n", [9, 10])
def test_usual_ways_compute_what_the_op_computes(n):
    """A way that computed less or other than its op would make its ratio mean nothing; the
    random ops' ways draw other numbers, and torch.median's lower middle is labelled so."""
    from byzkern.bench import OPS

    X = np.random.default_rng(3).standard_normal((n, 257))
    random = {"bucketing", "resampling", "randk", "qsgd", "natural", "gaussian", "mimic"}
    compared = 0
    for op, entry in OPS.items():
        if op in random:
            continue
        expected = _comparable(op, entry.run(X, "reference")(), X)
        for label, way in entry.ways.items():
            if n % 2 == 0 and "lower middle" in label:
                continue
            got = _comparable(op, way(X)(), X)
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9, err_msg=f"{op}: {label}")
            compared += 1
    assert compared >= 18  # the NumPy ways; torch's when it is installed


@pytest.mark.parametrize("argv, message", [
    (["bench", "--shapes", "20x0"], "must be a whole number >= 1; got 0"),
    (["bench", "--shapes", "axb"], "not a number: 'a'"),
    (["bench", "--shapes", "20"], "a shape is NxD"),
    (["bench", "--shapes", "3x1e6"], "n must be >= 4"),
    (["bench", "--repeat", "0"], "--repeat: must be a whole number >= 1"),
    (["bench", "--repeat", "1e400"], "--repeat: must be a whole number >= 1"),
    (["bench", "--shapes", "nanx3"], "must be a whole number >= 1; got nan"),
    (["bench", "--threads", "-2"], "--threads: must be a whole number >= 1"),
    (["demo", "--d", "1.5"], "--d: must be a whole number >= 1; got 1.5"),
    (["repro", "000", "--steps", "0"], "--steps: must be a whole number >= 1"),
    # found by a review: a negative seed was a NumPy traceback, a bad --json path one after the run
    (["demo", "--seed", "-1"], "--seed: must be a whole number >= 0; got -1"),
    (["bench", "--json", "/no/such/folder/rows.json"], "--json: can't write"),
    (["demo", "--seed", "18446744073709551616"], "--seed: must be <= 18446744073709551615"),
])
def test_bad_arguments_are_usage_errors_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("n, f", [(8, 4), (3, 1)])
def test_demo_refuses_too_few_rows_for_its_rules(n, f):
    with pytest.raises(SystemExit, match=f"needs n > 2f .* and n >= f \\+ 3 .*; got n={n}, f={f}"):
        main(["demo", "--n", str(n), "--f", str(f)])


@pytest.mark.parametrize("n, f", [(9, 4), (5, 2), (4, 1)])
def test_demo_runs_with_the_fewest_rows_its_rules_take(n, f, capsys):
    assert main(["demo", "--n", str(n), "--f", str(f), "--d", "50"]) == 0
    table = capsys.readouterr().out.split("first 5 coordinates")[0]
    rows = {line.split()[0]: line.split()[-4:] for line in table.splitlines()[3:]}
    assert len(rows) == 11 and f"krum(f={f})" in rows
    assert np.isfinite([float(v) for v in rows[f"cwtm(f={f})"]]).all()  # NaN rows included


def test_bench_takes_the_smallest_shape_it_accepts(capsys, tmp_path):
    (tmp_path / "rows.json").write_text("earlier results")
    with pytest.raises(SystemExit):  # refused after --json was read: the file is as it was
        main(["bench", "--json", str(tmp_path / "rows.json"), "--threads", "-2"])
    assert (tmp_path / "rows.json").read_text() == "earlier results"
    assert main(["bench", "--shapes", "4x1", "--repeat", "1", "--no-baselines", "--backend", "reference",
                 "--json", str(tmp_path / "rows.json")]) == 0
    assert "optimized" in capsys.readouterr().out
    assert any(row["op"] == "optimized" for row in json.loads((tmp_path / "rows.json").read_text()))


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


def test_cuda_suite_torch_ways_compute_the_kernels_results(monkeypatch):
    # The GPU suite only runs on a device, but its baselines are plain torch: on the CPU they
    # must give the result of the byzkern call they are timed against, or the ratio means nothing.
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(BENCH_DIR.parent))
    suite = importlib.import_module("bench.benchmarks.bench_cuda")
    F, TAU, NU, STEPS, LEVELS = suite.F, suite.TAU, suite.NU, suite.STEPS, suite.LEVELS
    B, n, d = 2, 11, 300  # odd n: torch.median's lower middle is then the median
    rng = np.random.default_rng(0)
    # rows spread along a line (a shift per row): Krum's choice then depends on its neighbour count
    X = rng.standard_normal((B, n, d)) + 3 * rng.standard_normal((B, n, 1))
    assert not np.array_equal(bk.krum(X, f=F), bk.krum(X, f=F, k=n - F - 1))
    idx = np.argsort(rng.random((B, n, n)), axis=2)[:, :, :n - F]
    R = X.reshape(B * n, d)
    k = max(1, d // 100)

    def torch_result(op):
        out = suite._torch_way(torch, op, torch.from_numpy(X), torch.from_numpy(idx))()
        return tuple(t.numpy() for t in out) if isinstance(out, tuple) else out.numpy()

    close = dict(rtol=1e-10, atol=1e-12)
    expected = {
        "mean": X.mean(axis=1), "cwmed": reference.cwmed(X), "cwtm": reference.cwtm(X, F),
        "meamed": reference.meamed(X, F), "pairwise_sqdist": reference.pairwise_sqdist(X),
        "mix_rows": reference.mix_rows(X, idx), "krum": bk.krum(X, f=F), "nnm": bk.nnm(X, f=F),
        "row_norms": reference.row_norms(X, 2), "clip": reference.clip(X, TAU)[0],
        "geomed": reference.geomed(X, np.ones((B, n)), "mean", STEPS, 0.0, NU)[0],
        "cclip": reference.cclip(X, TAU, 1, None)[0],
        "sign": reference.unpack_codes(reference.sign(R), 1, d).astype(bool),
    }
    for op, want in expected.items():
        np.testing.assert_allclose(torch_result(op), want, **close, err_msg=op)
    # every row within 0.002 of the iterate: a smoothing floor above that instead of nu changes
    # the weights
    near = X / 1e5
    np.testing.assert_allclose(suite._torch_way(torch, "geomed", torch.from_numpy(near), None)().numpy(),
                               reference.geomed(near, np.ones((B, n)), "mean", STEPS, 0.0, NU)[0], **close)
    values, chosen = torch_result("topk")
    want_values, want_idx = reference.topk(R, k)
    order = np.argsort(chosen, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(chosen, order, axis=1), want_idx)
    np.testing.assert_array_equal(np.take_along_axis(values, order, axis=1), want_values)
    scales, packed = reference.scaled_sign(R)
    np.testing.assert_allclose(torch_result("scaled_sign"),
                               reference.sign_decompress(packed, scales, d), **close)
    # the randomized ones: the same kind of output, each entry rounded to one of its two neighbours
    values, chosen = torch_result("randk")
    assert all(len(set(row)) == k for row in chosen)
    np.testing.assert_allclose(values, np.take_along_axis(R, chosen, axis=1) * (d / k), **close)
    norm, levels = torch_result("qsgd")
    np.testing.assert_allclose(norm[:, 0], np.linalg.norm(R, axis=1), **close)
    scaled = np.abs(R) * LEVELS / norm
    assert np.all((np.abs(levels) == np.floor(scaled)) | (np.abs(levels) == np.floor(scaled) + 1))
    assert np.all((np.sign(levels) == np.sign(R)) | (levels == 0))
    magnitude = torch_result("natural") * np.sign(R)
    below = 2.0 ** np.floor(np.log2(np.abs(R)))
    assert np.all((magnitude == below) | (magnitude == 2 * below))
    checked = set(expected) | {"topk", "scaled_sign", "randk", "qsgd", "natural"}
    assert set(suite.CudaKernels.params[0]) == checked
