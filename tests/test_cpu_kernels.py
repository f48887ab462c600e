"""C++-specific checks of the cpu backend (csrc/): its SIMD tiers agree bit for bit,
the kernels the public-op tests do not reach give the same bits on 1 and 2 OpenMP threads,
the compressors give the reference's bits on rows long enough for every fast path,
pairwise_sqdist is exact where the Gram trick cancels, and (opt-in) sizes past 2^31 elements.

test_backends.py already compares every aggregation op with the reference and checks 1 vs 2
threads through the public ops; this file calls the backend's kernels directly.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from byzkern import _config, _dispatch
from byzkern.backends import reference

cpu, _why = _dispatch.load("cpu")
pytestmark = pytest.mark.skipif(cpu is None, reason=f"cpu backend unavailable: {_why}")

DTYPES = (np.float32, np.float64)


def _inputs(dtype):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2, 11, 101)).astype(dtype)
    X[0, 3, ::7] = X[0, 4, ::7]  # ties across rows for the order statistics
    mixing = np.argsort(rng.random((2, 11, 11)), axis=2)[:, :, :7].astype(np.int64)
    return X, mixing


def _mimic_inputs(X):
    """mu and a direction z (B, d) and row weights dots (B, h), float64, for Mimic's kernels."""
    rng = np.random.default_rng(6)
    mu, z = X.mean(axis=1, dtype=np.float64), rng.standard_normal((X.shape[0], X.shape[2]))
    return mu, z, rng.standard_normal(X.shape[:2])


def _compress_then_decompress(X):
    """Each compression kernel and its decompression kernel, on the rows of X[0]."""
    rows, d = X[0], X.shape[-1]
    values, indices = cpu.topk(rows, 9)
    out = {"topk": (values, indices), "scatter_rows": cpu.scatter_rows(values, indices, d),
           "randk": cpu.randk(rows, 9, 3)}
    norms, codes = cpu.qsgd(rows, 5, 3)
    out["qsgd"] = (norms, codes)
    out["qsgd_decompress"] = cpu.qsgd_decompress(norms, codes, 5, d)
    out["natural"] = cpu.natural(rows, 3)
    out["natural_decompress"] = cpu.natural_decompress(out["natural"], d, rows.dtype)
    out["sign"] = cpu.sign(rows)
    scales, bits = cpu.scaled_sign(rows)
    out["scaled_sign"] = (scales, bits)
    out["sign_decompress"] = cpu.sign_decompress(bits, scales, d)
    return out


def _long_rows(dtype):
    """Rows long enough for topk's sampled threshold and several SUM_CHUNKs, with an odd tail and
    the values the encoders treat apart: ties, zeros of both signs, subnormals, NaN and Inf."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3, 2 * 65536 + 13)).astype(dtype)
    X[0, ::5] = np.round(X[0, ::5] * 2) / 2
    X[1, ::17], X[1, 1::19] = 0.0, -0.0
    X[1, 2::23] = np.finfo(dtype).tiny / 3 * np.sign(X[1, 2::23])
    X[2, ::101] = np.nan
    X[2, 7], X[2, 8] = np.inf, -np.inf
    return X


#: compressors on _long_rows, for any backend module (cpu or reference)
LONG_COMPRESSIONS = {
    "topk": lambda m, X: m.topk(X, 1311),
    "qsgd": lambda m, X: m.qsgd(X, 7, 4),
    "qsgd 16-bit codes": lambda m, X: m.qsgd(X, 32767, 4),
    "natural": lambda m, X: m.natural(X, 4),
    "sign": lambda m, X: m.sign(X),
    "scaled_sign": lambda m, X: m.scaled_sign(X),
}


def kernel_results(dtype):
    """name -> tuple of arrays, for every kernel of the cpu backend, with tiles small enough
    that the inputs span many tiles and slabs."""
    _config.COL_TILE, _config.REDUCTION_SLABS = 8, 4
    X, mixing = _inputs(dtype)
    mu, z, dots = _mimic_inputs(X)
    out = {
        "mean": cpu.mean(X), "cwmed": cpu.cwmed(X), "cwtm": cpu.cwtm(X, 3), "meamed": cpu.meamed(X, 3),
        "pairwise_sqdist": cpu.pairwise_sqdist(X), "mix_rows": cpu.mix_rows(X, mixing),
        "row_norms": cpu.row_norms(X, 2), "clip": cpu.clip(X, 1.5),
        "geomed": cpu.geomed(X, np.ones(X.shape[:2]), "mean", 8, 0.0, 1e-6),
        "cclip": cpu.cclip(X, 1.5, 2, cpu.cwmed(X)),
        "cclip from the median": cpu.cclip(X, 1.5, 1, None),
        "cclip from the median, 3 steps": cpu.cclip(X, 1.5, 3, None),
        "mean_std": cpu.mean_std(X, 1), "gaussian": cpu.gaussian(X, 2.0, 3),
        "centred_dots": cpu.centred_dots(X, mu, z), "power_step": cpu.power_step(X, mu, dots),
        "attack_candidates": cpu.attack_candidates(X, *cpu.mean_std(X, 1), np.array([0.0, 0.5, 7.0]), 3),
        "candidate_deviations": cpu.candidate_deviations(X, *cpu.mean_std(X, 1), np.array([0.0, 0.5, 7.0]), 3,
                                                         "meamed", 3),
        **{f"{name} ({rows} rows)": call(np.random.default_rng(rows).standard_normal((1, rows, 37)).astype(dtype))
           for rows in (8, 9, 32)  # the baseline unrolls up to 8 rows, the other tiers up to 32
           for name, call in (("cwmed", cpu.cwmed), ("cwtm", lambda Y: cpu.cwtm(Y, 2)),
                              ("meamed", lambda Y: cpu.meamed(Y, 3)))},
        **_compress_then_decompress(X),
        **{f"{name} (long rows)": call(cpu, _long_rows(dtype)) for name, call in LONG_COMPRESSIONS.items()},
    }
    _config.COL_TILE = 4096  # whole 128-column Gram blocks and 1024-column mixing chunks
    wide = np.random.default_rng(7).standard_normal((1, 21, 2 * 1024 + 4096 + 7)).astype(dtype)
    out["pairwise_sqdist (wide tiles)"] = cpu.pairwise_sqdist(wide)
    out["mix_rows (wide tiles)"] = cpu.mix_rows(wide, np.array([[[3, 0, 20, 7, 11, -1, 5], [1, 2, 4, 6, 8, 9, 10]]]))
    cached, _config.STREAM_MIN_BYTES = _config.STREAM_MIN_BYTES, 0  # the stores past the caches too
    lines = np.ascontiguousarray(wide[:, :, :6144])  # stream stores need rows of whole cache lines
    strips = np.argsort(np.random.default_rng(8).random((1, 21, 21)), axis=2)[:, :, :7]
    out["mix_rows (stream stores)"] = (cpu.mix_rows(lines, strips), cpu.mix_rows(lines, strips[:, :9, :4]))
    _config.STREAM_MIN_BYTES = cached
    many = np.random.default_rng(9).standard_normal((1, 67, 303)).astype(dtype)
    out["mix_rows (past 64 rows)"] = cpu.mix_rows(many, np.argsort(many[:, :, :67], axis=2)[:, :, :50])
    return {name: tuple(np.asarray(a) for a in (r if isinstance(r, tuple) else (r,)))
            for name, r in out.items()}


#: kernels that test_backends.py's thread test reaches through the public aggregation ops
REACHED_BY_PUBLIC_OPS = {"mean", "cwmed", "cwtm", "meamed", "pairwise_sqdist", "mix_rows",
                         "row_norms", "clip", "geomed", "cclip"}


def _save(path, dtype):
    """Entry point of the subprocess that runs with another SIMD tier."""
    results = kernel_results(np.dtype(dtype).type)
    np.savez(path, isa=cpu.details()["isa"],
             **{f"{name}:{i}": a for name, r in results.items() for i, a in enumerate(r)})


#: kernels whose sums the AVX2 and AVX-512 tiers fuse (c + a * b rounded once) and the baseline,
#: which has no FMA, does not: against the baseline they agree to a few ulps of the Gram sums
FUSED_ABOVE_BASELINE = {"pairwise_sqdist", "pairwise_sqdist (wide tiles)"}


def _assert_same_bits(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("isa", cpu.ISAS[:-1] if cpu else [])
def test_every_isa_gives_the_same_bits(isa, dtype, tmp_path):
    """Each tier below this process's (the best the CPU has) against it. BYZKERN_ISA is read once
    per process, so the capped run is a subprocess."""
    here = kernel_results(dtype)
    path = tmp_path / f"{isa}.npz"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_cpu_kernels as t; t._save({str(path)!r}, {np.dtype(dtype).name!r})")
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, BYZKERN_ISA=isa),
                   check=True, timeout=300)
    with np.load(path) as npz:  # closed before a skip, which filterwarnings=error would fail
        capped = dict(npz)
    assert cpu.ISAS.index(str(capped["isa"])) <= cpu.ISAS.index(isa)
    if str(capped["isa"]) == cpu.details()["isa"]:
        pytest.skip(f"this CPU (or BYZKERN_ISA) gives no tier above {capped['isa']}: both runs used it")
    for name, arrays in here.items():
        for i, a in enumerate(arrays):
            what = f"{name} output {i} ({isa} against {cpu.details()['isa']})"
            if isa == "baseline" and name in FUSED_ABOVE_BASELINE:
                np.testing.assert_allclose(capped[f"{name}:{i}"], a, rtol=1e-13, atol=0, err_msg=what)
            else:
                _assert_same_bits(a, capped[f"{name}:{i}"], what)


def test_an_unknown_isa_leaves_the_backend_out_with_the_reason():
    code = "from byzkern import _dispatch; print(_dispatch.load('cpu')[1])"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, BYZKERN_ISA="avx9"),
                         check=True, timeout=300, capture_output=True, text=True).stdout
    assert "BYZKERN_ISA='avx9' is not one of baseline, avx2, avx512" in out


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_give_the_same_bits(dtype):
    runs = []
    try:
        for threads in (1, 2):
            cpu.set_threads(threads)
            runs.append(kernel_results(dtype))
    finally:
        cpu.set_threads(0)
    for name in sorted(set(runs[0]) - REACHED_BY_PUBLIC_OPS):
        for i, (a, b) in enumerate(zip(runs[0][name], runs[1][name])):
            _assert_same_bits(a, b, f"{name} output {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("tile", [8, 4096])
def test_compressors_give_the_bits_of_the_reference(dtype, tile, monkeypatch):
    """The SIMD encoders (Philox lanes, movemask signs, packing per code width) and topk's
    sampled threshold against reference.py, on many work tiles and on the default one."""

    monkeypatch.setattr(_config, "COL_TILE", tile)
    X = _long_rows(dtype)
    for name, call in LONG_COMPRESSIONS.items():
        got, want = call(cpu, X), call(reference, X)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same_bits(np.asarray(a), np.asarray(b), f"{name} output {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_pairwise_sqdist_is_exact_for_nearly_equal_rows(dtype):
    """Two rows of 1e6 coordinates around 1e3 that differ by 1e-4 in one coordinate: the
    distance is (1e-4)^2 to float64 rounding. The Gram trick's ||x||^2 ~ 1e12 would leave an
    error of ~1e-4, four orders above the answer."""
    d = 10**6
    X = (1e3 + np.random.default_rng(0).standard_normal((1, 2, d))).astype(dtype)
    X[0, 1] = X[0, 0]
    X[0, :, 12345] = 0.0
    X[0, 1, 12345] = 1e-4
    delta = float(X[0, 1, 12345])  # 1e-4 rounded to the dtype
    D = cpu.pairwise_sqdist(X)[0]
    np.testing.assert_allclose(D[[0, 1], [1, 0]], delta * delta, rtol=4 * np.finfo(np.float64).eps, atol=0)
    assert D[0, 0] == D[1, 1] == 0.0


@pytest.mark.parametrize("huge_rows", [[0], [0, 3]], ids=["with-a-nan", "two-of-the-three-centre-rows"])
def test_pairwise_sqdist_when_the_gram_centre_is_huge(huge_rows):
    """The Gram's centre comes from rows 0, n/2 and n-1. Centred on a value near the float64
    maximum, honest rows' norms overflow; their distances must still be the exact ones (the
    fuzzer found krum picking a NaN row when they all came out +Inf)."""
    X = np.random.default_rng(0).standard_normal((1, 5, 3))
    X[0, huge_rows] = 1.7e308
    if len(huge_rows) == 1:
        X[0, 0, 1] = np.nan
    with np.errstate(over="ignore"):  # the huge rows' own distances overflow to +Inf
        want = reference.pairwise_sqdist(X)
    np.testing.assert_allclose(cpu.pairwise_sqdist(X), want, rtol=1e-12)


@pytest.mark.parametrize("stream_min_bytes", [32 << 20, 0], ids=["cached", "streamed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_wide_tiles_match_the_reference(dtype, stream_min_bytes, monkeypatch):
    """The session's 8-column tiles never fill mix_rows' register strips: with the default tile
    the strips, their prefetches and the tail columns run, with cached stores and with stream
    stores (d = 288 and 304: rows of whole cache lines, a first tile that aligns the strips).
    The strip width depends on the row count (up to 32, 64, beyond), and skipped -1 entries give
    outputs unequal row counts."""
    monkeypatch.setattr(_config, "COL_TILE", 4096)
    monkeypatch.setattr(_config, "STREAM_MIN_BYTES", stream_min_bytes)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    X, mixing = _inputs(dtype)
    X = np.ascontiguousarray(np.concatenate([X] * 3, axis=2)[:, :, :288])  # strips and a tail
    np.testing.assert_allclose(cpu.mix_rows(X, mixing), reference.mix_rows(X, mixing), rtol=rtol)
    rng = np.random.default_rng(14)
    for n in (37, 67):
        X = rng.standard_normal((1, n, 304)).astype(dtype)
        mixing = np.argsort(rng.random((1, n, n)), axis=2)[:, :, :30]
        mixing[rng.random(mixing.shape) < 0.2] = -1
        mixing[:, :, 0] = np.arange(n)
        np.testing.assert_allclose(cpu.mix_rows(X, mixing), reference.mix_rows(X, mixing), rtol=rtol, err_msg=f"n={n}")
    np.testing.assert_allclose(cpu.pairwise_sqdist(X), reference.pairwise_sqdist(X), rtol=1e-12)


@pytest.mark.slow
def test_mean_past_2_to_the_31_elements():
    """n * d = 2^31 + 1024 float32 (8 GiB of address space, almost all of it never written:
    zero pages are read, not stored): a 32-bit element index would wrap in the last row."""
    n, d = 2**21 + 1, 1024
    X = np.zeros((1, n, d), np.float32)
    pattern = 1.0 + np.arange(d) % 7
    X[0, -1] = n * pattern  # exact in float32: n * 7 < 2^24
    X[0, n // 2] = -n * pattern[::-1]
    np.testing.assert_array_equal(cpu.mean(X)[0], (pattern - pattern[::-1]).astype(np.float32))


def _columns_with_every_hazard(rng, n, d, dtype):
    """Ties, -0 and +0, +-Inf, 1e38 and NaN of either sign (x86's default NaN is negative),
    scattered so that some columns hold more non-finite entries than any f tolerates."""
    X = rng.integers(-3, 4, size=(1, n, d)).astype(dtype) * rng.choice([1.0, 0.5, 1e38], size=(1, n, d))
    hazards = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0], dtype)
    where = rng.random((1, n, d)) < 0.15
    X[where] = rng.choice(hazards, size=where.sum())
    return X


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_coordinatewise_rules_for_every_row_count(dtype, monkeypatch):
    """cwmed, cwtm and meamed against the reference for n = 1..70: the networks unrolled at
    compile time (small n) and the runtime one, with d not a multiple of the block width."""
    from _harness import assert_close

    monkeypatch.setattr(_config, "COL_TILE", 40)
    rng = np.random.default_rng(11)
    for n in range(1, 71):
        X = _columns_with_every_hazard(rng, n, 83, dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # the reference meets Inf - Inf
            assert_close(cpu.cwmed(X), reference.cwmed(X), exact=True)
            for f in sorted({0, (n - 1) // 2, n // 5}):
                assert_close(cpu.cwtm(X, f), reference.cwtm(X, f))
                assert_close(cpu.meamed(X, f), reference.meamed(X, f))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n", [5, 20, 40])  # unrolled networks and the runtime one
def test_coordinatewise_rules_on_rows_4_kib_apart_equal_the_unaliased_ones(dtype, n, monkeypatch):
    """Rows a multiple of 4 KiB apart all fall in one L1 set: the rules, and cclip's median, copy
    each tile to padded rows first. Each column must be what it is in a wider, unaliased X."""
    monkeypatch.setattr(_config, "COL_TILE", 200)
    d = 4096 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(13)
    wider = _columns_with_every_hazard(rng, n, d + 3, dtype)
    X = np.ascontiguousarray(wider[:, :, :d])
    with np.errstate(invalid="ignore", over="ignore"):
        for rule, args in [(cpu.cwmed, ()), (cpu.cwtm, (n // 5,)), (cpu.meamed, (n // 5,)),
                           (lambda Y, *a: cpu.cclip(Y, *a)[0], (1.0, 0, None))]:
            np.testing.assert_array_equal(rule(X, *args).view(np.uint8), rule(wider, *args)[:, :d].view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_pairwise_sqdist_for_every_panel_count(dtype, monkeypatch):
    """n = 1..29: one to eight four-row panels, odd counts (the last column panel takes its row
    panels in pairs and one alone) and padded rows, over two whole 128-column Gram blocks and a
    tail not a multiple of 4; duplicated rows stay at distance 0 and their distances tie exactly."""
    monkeypatch.setattr(_config, "COL_TILE", 4096)
    rng = np.random.default_rng(12)
    for n in range(1, 30):
        X = rng.standard_normal((1, n, 2 * 128 + 45)).astype(dtype)
        X[0, n // 2] = X[0, 0]
        D, want = cpu.pairwise_sqdist(X)[0], reference.pairwise_sqdist(X)[0]
        np.testing.assert_allclose(D, want, rtol=1e-12, atol=0, err_msg=f"n={n}")
        assert D[0, n // 2] == D[n // 2, 0] == 0.0
        np.testing.assert_array_equal(D[0], D[n // 2])


@pytest.mark.parametrize("stream_min_bytes", [32 << 20, 0], ids=["cached", "streamed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_mix_rows_streaming_every_group_count(dtype, stream_min_bytes, monkeypatch):
    """Tables that use each row at most twice are streamed: outputs of 1..11 rows (one to three
    passes of four rows, power-of-two counts multiplied by their reciprocal), skipped -1 entries,
    over 1024-column chunks with a tail not a multiple of 4 (cached stores), or with stream stores
    over rows of whole cache lines."""
    monkeypatch.setattr(_config, "COL_TILE", 4096)
    monkeypatch.setattr(_config, "STREAM_MIN_BYTES", stream_min_bytes)
    rng = np.random.default_rng(13)
    X = rng.standard_normal((1, 24, 2 * 1024 + 4096 + (16 if stream_min_bytes == 0 else 7))).astype(dtype)
    for k in range(1, 12):
        idx = np.stack([rng.permutation(24)[:k] for _ in range(2)])[None]
        idx[0, 1, k // 2] = -1 if k > 1 else idx[0, 1, 0]
        np.testing.assert_allclose(cpu.mix_rows(X, idx), reference.mix_rows(X, idx),
                                   rtol=1e-6 if dtype == np.float32 else 1e-12, err_msg=f"k={k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_coordinatewise_rules_for_every_f_near_the_thresholds(dtype, monkeypatch):
    """Every f around the row counts where the kernels change path (unrolled networks up to 32
    rows, L2 prefetches past 28, the runtime network's groups of 16) and some f for the larger
    runtime networks: meamed keeps one value of each edge pair (p, n-f+p), so every split of the
    window between the two ends must occur, with ties and non-finite values at the edges."""
    from _harness import assert_close

    monkeypatch.setattr(_config, "COL_TILE", 40)
    rng = np.random.default_rng(12)
    for n in (28, 29, 32, 33, 47, 63, 64, 65, 100, 256, 257):
        # Without 1e38 entries too: the tolerance scales with the largest output, and a value
        # kept from the wrong end of a distance tie moves a small mean by at least 1/(n-f).
        hazards = _columns_with_every_hazard(rng, n, 83, dtype)
        small = np.where(np.abs(hazards) >= 1e38, 2.0, hazards).astype(dtype)
        fs = range((n + 1) // 2) if n <= 65 else sorted({0, 1, n // 5, (n - 1) // 2})
        for X in (hazards, small):
            with np.errstate(invalid="ignore", over="ignore"):  # the reference meets Inf - Inf
                assert_close(cpu.cwmed(X), reference.cwmed(X), exact=True)
                for f in fs:
                    assert_close(cpu.cwtm(X, f), reference.cwtm(X, f))
                    assert_close(cpu.meamed(X, f), reference.meamed(X, f))


def test_meamed_breaks_a_distance_tie_toward_the_smaller_value():
    X = np.array([[-1.0], [0.0], [1.0], [2.0], [3.0]], np.float32)[None]  # -1 and 3 tie around 1
    assert cpu.meamed(X, 1)[0, 0] == 0.5
    wide = np.repeat(np.arange(-20.0, 21.0, dtype=np.float32)[None, :, None], 3, axis=2)  # n = 41
    assert np.all(cpu.meamed(wide, 1) == np.float32(-0.5))
