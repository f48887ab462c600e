"""The cuda backend: NVRTC compile check (no GPU needed) and every kernel against the reference,
on a CUDA device where there is one and compiled for the host by ``host_cuda`` elsewhere. What
only a device shows (``@pytest.mark.gpu``: the public API on CuPy and torch CUDA arrays, inputs
of many GiB) is skipped with the reason when no CUDA device is usable."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byzkern
from byzkern import _config
from byzkern.backends import KERNEL_NAMES, cuda, deviations_of_built_candidates, reference
from byzkern.compressors import Compressed, index_dtype

#: compute_80: PTX, which the driver of any newer GPU compiles; sm_90: on through ptxas to the
#: machine code of an H100, whose resource report shows what the PTX does not (register spills)
ARCHITECTURES = ("compute_80", "sm_90")


def _nvrtc():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy is not installed")
    try:
        nvrtc.getVersion()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"NVRTC is not available: {exc}")
    return nvrtc


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("family", sorted(cuda.NAME_EXPRESSIONS))
def test_every_kernel_compiles(family, arch):
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(cuda.source(family), f"{family}.cu", [], [])
    try:
        for name in cuda.NAME_EXPRESSIONS[family]:
            nvrtc.addNameExpression(program, name)
        machine_code = arch.startswith("sm_")
        try:
            nvrtc.compileProgram(program, [*cuda.OPTIONS, f"-arch={arch}",
                                           *(["--ptxas-options=-v"] if machine_code else [])])
        except nvrtc.NVRTCError as exc:
            pytest.fail(f"{family}.cu does not compile for {arch}:\n{nvrtc.getProgramLog(program)}\n{exc}")
        log = nvrtc.getProgramLog(program).strip()
        assert "warning" not in log, log
        lowered = [nvrtc.getLoweredName(program, name) for name in cuda.NAME_EXPRESSIONS[family]]
        assert all(name.startswith("_Z") for name in lowered), lowered
        if machine_code:
            # a register spill costs local-memory traffic in kernels meant to run at the memory
            # bandwidth limit. Stack frames are no failure: they hold arrays a kernel indexes at
            # run time (the copy of a sorted column the rules read)
            spills = dict(re.findall(
                r"Function properties for (\S+)\n.*?(\d+ bytes spill stores, \d+ bytes spill loads)", log))
            assert set(lowered) <= set(spills), log
            assert {kernel: spill for kernel, spill in spills.items()
                    if spill != "0 bytes spill stores, 0 bytes spill loads"} == {}
    finally:
        nvrtc.destroyProgram(program)


def test_backend_defines_every_kernel():
    assert [k for k in KERNEL_NAMES if not callable(getattr(cuda, k, None))] == []


def test_info_says_why_cuda_is_unavailable():
    entry = byzkern.info()["backends"]["cuda"]
    reason = cuda.unavailable_reason()
    assert entry["available"] == (reason is None)
    if reason is not None:
        assert entry["reason"] == reason
        assert any(word in reason for word in ("CuPy", "CUDA device", "NVRTC")), reason


# ---------------------------------------------------------------------------------------------
# Every kernel equals the reference.

RTOL = {np.float32: 2e-6, np.float64: 1e-12}
DTYPES = (np.float32, np.float64)


@pytest.fixture(autouse=True)
def _quiet_reference():
    # The reference meets Inf - Inf and 0 * Inf on the non-finite inputs by design.
    with np.errstate(invalid="ignore", over="ignore"):
        yield


@pytest.fixture
def device_cp():
    """CuPy on a CUDA device, for what only a device shows: the public API on device arrays,
    torch interop, inputs of many GiB."""
    reason = cuda.unavailable_reason()
    if reason is None and os.environ.get("HOST_CUDA") == "1":
        reason = "HOST_CUDA=1 keeps to the host"
    if reason is not None:
        pytest.skip(f"cuda backend unavailable: {reason}")
    import cupy

    return cupy


@pytest.fixture
def torch_cuda(device_cp):
    """torch, where it has CUDA (beside a usable CuPy device)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA support here")
    return torch


@pytest.fixture
def cp(monkeypatch):
    """CuPy on a CUDA device; without one (or with HOST_CUDA=1), the same kernels compiled for
    the host (host_cuda.py)."""
    if cuda.unavailable_reason() is None and os.environ.get("HOST_CUDA") != "1":
        import cupy

        yield cupy
        return
    import host_cuda

    reason = host_cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device, and {reason}")
    monkeypatch.setattr(cuda, "cupy", host_cuda)
    _clear_device_caches()
    yield host_cuda
    _clear_device_caches()


def _clear_device_caches():
    """The backend caches modules and SM counts per device id: the host's must not outlive the fixture."""
    cuda._module.cache_clear()
    cuda._multiprocessors.cache_clear()


@pytest.fixture(params=["registers", "blocks-shared", "blocks-global"])
def sort_path(request, monkeypatch):
    """Every coordinate-wise path on small inputs; small blocks cover the grid-stride tails."""
    monkeypatch.setattr(_config, "CUDA_THREADS", 64)
    if request.param != "registers":
        monkeypatch.setattr(cuda, "REGISTER_SORT_MAX", 0)
    if request.param == "blocks-global":
        monkeypatch.setattr(cuda, "SHARED_COLUMN_BYTES", 0)
    return request.param


def _data(kind, B, n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "ties":
        X = rng.integers(-2, 3, size=(B, n, d)).astype(dtype)
        if n > 5:  # the case proves nothing unless columns really repeat values
            assert (np.sort(X, axis=1)[:, 1:] == np.sort(X, axis=1)[:, :-1]).any()
        return X
    X = rng.standard_normal((B, n, d)).astype(dtype)
    if kind == "nonfinite":
        # NaN, +Inf and -Inf in the first, a middle and the last row, and scattered entries.
        for row, value in zip((0, n // 2, n - 1), (np.nan, np.inf, -np.inf)):
            X[:, row, rng.integers(0, d, size=max(1, d // 3))] = value
        X[rng.random(X.shape) < 0.05] = np.nan
    return X


def _check(got, want, dtype, atol=0.0):
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=atol, equal_nan=True)


SHAPES = [(1, 1, 7), (1, 2, 5), (1, 3, 1), (2, 5, 33), (1, 8, 300), (3, 9, 70), (1, 17, 40), (2, 20, 33),
          (1, 25, 40), (2, 33, 65), (1, 64, 20), (1, 65, 20), (2, 130, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "ties", "nonfinite"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_coordinatewise(cp, sort_path, shape, kind, dtype):
    X = _data(kind, *shape, dtype)
    Xd = cp.asarray(X)
    n = shape[1]
    _check(cuda.mean(Xd), reference.mean(X), dtype)
    _check(cuda.cwmed(Xd), reference.cwmed(X), dtype)
    for f in sorted({0, 1 if n > 2 else 0, (n - 1) // 2}):  # (n - 1) // 2: n = 2f + 1 at odd n
        _check(cuda.cwtm(Xd, f), reference.cwtm(X, f), dtype)
        _check(cuda.meamed(Xd, f), reference.meamed(X, f), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_meamed_tie_goes_to_smaller_value(cp, sort_path, dtype):
    # median 1; 0 and 2 are equally far: the smaller value is kept (mean 0.5, not 1.5).
    X = np.array([[[0.0], [1.0], [2.0]]], dtype)
    _check(cuda.meamed(cp.asarray(X), 1), np.array([[0.5]], dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_orders_above_infinity(cp, sort_path, dtype):
    X = np.array([[[np.nan], [np.inf], [1.0], [np.nan], [-np.inf]]], dtype)
    _check(cuda.cwmed(cp.asarray(X)), np.array([[np.inf]], dtype), dtype)
    _check(cuda.cwtm(cp.asarray(X), 2), np.array([[np.inf]], dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_register_tier_sorts_every_row_count_it_takes(cp, dtype):
    # Each tier's network is Batcher's for the next power of two with the comparators past N
    # left out; it must sort every n up to N with the rest padded. The trimmed means for
    # f = 0 .. (n - 1) // 2 sum every symmetric band of ranks of the sorted column, so a value out
    # of place changes one of them unless it only traded places with its mirror rank, and the
    # means around the median take windows that are not symmetric; ties and NaNs go through the
    # padding too. A tier's kernels load its fewest rows without a test and cwmed reads only the
    # positions its row counts can put in the middle, so each tier's fewest and most rows matter.
    ctype = cuda.CTYPE[np.dtype(dtype)]
    tiers = cuda.REGISTER_TIERS[ctype]
    tier_of = {n: cuda._register_tier(ctype, n) for n in range(1, tiers[-1] + 1)}
    assert set(tier_of.values()) == set(cuda._tier_rows(ctype))
    assert all(fewest <= n <= most for n, (fewest, most) in tier_of.items())
    rng = np.random.default_rng(1)
    for n in range(1, tiers[-1] + 1):
        X = rng.permuted(np.repeat(np.arange(n, dtype=dtype)[None, :, None] // 2, 40, axis=2), axis=1)
        X[0, rng.integers(0, n), :8] = np.nan
        Xd = cp.asarray(X)
        _check(cuda.cwmed(Xd), reference.cwmed(X), dtype)
        distinct = rng.permuted(np.repeat(np.arange(n, dtype=dtype)[None, :, None], 40, axis=2), axis=1)
        _check(cuda.cwmed(cp.asarray(distinct)), reference.cwmed(distinct), dtype)
        for f in range((n - 1) // 2 + 1):
            _check(cuda.cwtm(Xd, f), reference.cwtm(X, f), dtype)
            _check(cuda.meamed(Xd, f), reference.meamed(X, f), dtype)


@pytest.fixture(params=["exact", "gram"])
def sqdist_path(request, monkeypatch):
    """Both paths of pairwise_sqdist at every n; the Gram path in chunks of a few hundred values,
    (3, 17, 16) and (2, 64, 70) in a slice of one batch item at a time, (7, 8, 30) in slices of
    4 and 3."""
    monkeypatch.setattr(_config, "CUDA_THREADS", 64)
    monkeypatch.setattr(cuda, "GRAM_MIN_ROWS", 0 if request.param == "gram" else 2**62)
    monkeypatch.setattr(cuda, "GRAM_CHUNK_BYTES", 8 * 300)
    monkeypatch.setattr(cuda, "GRAM_MIN_COLUMNS", 4)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "ties", "nonfinite"])
@pytest.mark.parametrize("shape", [(1, 1, 5), (1, 2, 1), (2, 5, 37), (1, 16, 100), (3, 17, 16), (1, 40, 1000),
                                   (2, 64, 70), (1, 65, 40), (7, 8, 30)],
                         ids=lambda s: "x".join(map(str, s)))
def test_pairwise_sqdist(cp, sqdist_path, shape, kind, dtype):
    X = _data(kind, *shape, dtype)
    D = cuda.pairwise_sqdist(cp.asarray(X))
    _check(D, reference.pairwise_sqdist(X), dtype)
    assert bool((D == D.transpose(0, 2, 1)).all()) and bool((D >= 0).all())


@pytest.mark.parametrize("offset", [1e3, 1e5])
def test_pairwise_sqdist_keeps_small_deltas_on_a_large_offset(cp, sqdist_path, offset):
    rng = np.random.default_rng(1)
    X = (offset + 1e-3 * rng.standard_normal((1, 12, 5000))).astype(np.float32)
    want = reference.pairwise_sqdist(X)
    got = cuda.pairwise_sqdist(cp.asarray(X)).get()
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.argsort(got[0].sum(axis=1))[0] == np.argsort(want[0].sum(axis=1))[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_sqdist_of_rows_close_to_each_other_and_far_from_the_first(cp, sqdist_path, dtype):
    # The Gram path centres on the first row: the others' Gram distances cancel (N ~ 1e6 d,
    # D ~ 1e-6 d) and must come from exact differences; a kept Gram value is off by ~1e-4.
    rng = np.random.default_rng(5)
    X = (5.0 + 1e-3 * rng.standard_normal((2, 9, 700))).astype(dtype)
    X[:, 0] = 1e3
    X[1, 3] = X[1, 5]  # and two equal rows: exactly 0
    got = cuda.pairwise_sqdist(cp.asarray(X)).get()
    np.testing.assert_allclose(got, reference.pairwise_sqdist(X), rtol=1e-12)
    assert got[1, 3, 5] == got[1, 5, 3] == 0.0


def _drawn_entries(draw, rng, shape, dtype, nonfinite):
    """Entries from a few values (ties), each of NaN, +Inf and -Inf at rate ``nonfinite``, and
    maybe Gaussian noise on top."""
    values = np.array([-2.5, -1.0, 0.0, 0.5, 3.0, np.nan, np.inf, -np.inf], dtype)
    X = rng.choice(values, p=[0.2, 0.2, 0.15, 0.15, 0.3 - 3 * nonfinite] + [nonfinite] * 3, size=shape)
    if draw(st.booleans()):
        X += rng.standard_normal(shape).astype(dtype)
    return X


def _sum_order_allowance(X):
    """atol for means of values that cancel: the order of the float64 sum shows relative to the
    entries' size, not the result's."""
    return 16 * np.finfo(np.float64).eps * np.abs(X[np.isfinite(X)], dtype=np.float64).max(initial=1.0)


DRAWN = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@DRAWN
@given(st.data())
def test_row_kernels_on_drawn_inputs(cp, monkeypatch, data):
    """Drawn shapes, launch sizes and paths; entries from a few values (ties), NaN and +-Inf."""
    draw = data.draw
    B, n, d = draw(st.integers(1, 3)), draw(st.integers(1, 140)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(DTYPES))
    monkeypatch.setattr(_config, "CUDA_THREADS", draw(st.sampled_from([32, 64, 96, 256])))
    monkeypatch.setattr(cuda, "REGISTER_SORT_MAX", draw(st.sampled_from([0, 64])))
    monkeypatch.setattr(cuda, "SHARED_COLUMN_BYTES", draw(st.sampled_from([0, 47 * 1024])))
    monkeypatch.setattr(cuda, "GRAM_MIN_ROWS", draw(st.sampled_from([0, 2**62])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = _drawn_entries(draw, rng, (B, n, d), dtype, nonfinite=0.05)
    Xd = cp.asarray(X)
    f = draw(st.integers(0, (n - 1) // 2))
    atol = _sum_order_allowance(X)
    _check(cuda.mean(Xd), reference.mean(X), dtype, atol)
    _check(cuda.cwmed(Xd), reference.cwmed(X), dtype)
    _check(cuda.cwtm(Xd, f), reference.cwtm(X, f), dtype, atol)
    _check(cuda.meamed(Xd, f), reference.meamed(X, f), dtype, atol)
    _check(cuda.pairwise_sqdist(Xd), reference.pairwise_sqdist(X), dtype)
    idx = rng.integers(-1, n, size=(B, draw(st.integers(1, 5)), draw(st.integers(1, 6))))
    idx[:, :, 0] = rng.integers(0, n, size=idx.shape[:2])  # every output mixes at least one row
    _check(cuda.mix_rows(Xd, cp.asarray(idx)), reference.mix_rows(X, idx), dtype)
    q = draw(st.sampled_from([1, 2, 3.5, np.inf]))
    _check(cuda.row_norms(Xd, q), reference.row_norms(X, q), np.float64)
    for got, want, kind in zip(cuda.clip(Xd, 2.0), reference.clip(X, 2.0), (dtype, np.float64)):
        _check(got, want, kind)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mix_rows(cp, dtype):
    X = _data("random", 2, 6, 50, dtype)
    idx = np.array([[[0, 5, -1], [2, -1, -1], [1, 1, 3]], [[4, 3, 2], [-1, 0, -1], [5, 5, 5]]], np.int64)
    _check(cuda.mix_rows(cp.asarray(X), cp.asarray(idx)), reference.mix_rows(X, idx), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [301, 1])
def test_mix_rows_gives_the_reference_bits_on_nnm_tables(cp, d, dtype):
    # Each output's rows are added in idx order from zero, as the reference (and the cpu and
    # numba walks through shared prefixes) add them: the same bits, not merely close.
    from byzkern.preaggregators import shared_prefix_order

    rng = np.random.default_rng(7)
    n = 40
    X = (rng.standard_normal((2, n, d)) * np.exp(rng.uniform(-8, 8, (2, n, 1)))).astype(dtype)
    ordered = shared_prefix_order(np.argsort(rng.random((2, n, n)), axis=2)[:, :, :n - n // 5], n)
    got = cuda.mix_rows(cp.asarray(X), cp.asarray(ordered)).get()
    np.testing.assert_array_equal(got, reference.mix_rows(X, ordered))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q", [1, 2, 3.5, np.inf])
@pytest.mark.parametrize("kind", ["random", "nonfinite"])
def test_row_norms(cp, monkeypatch, kind, q, dtype):
    monkeypatch.setattr(_config, "CUDA_THREADS", 32)
    X = _data(kind, 3, 7, 1001, dtype)
    _check(cuda.row_norms(cp.asarray(X), q), reference.row_norms(X, q), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "nonfinite"])
def test_clip(cp, kind, dtype):
    X = _data(kind, 2, 9, 300, dtype)
    X[0, 1] = 0.0  # a zero row stays zero
    for got, want, kind in zip(cuda.clip(cp.asarray(X), 3.0), reference.clip(X, 3.0), (dtype, np.float64)):
        _check(got, want, kind)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", ["mean", "zero", "array"])
@pytest.mark.parametrize("kind", ["random", "nonfinite"])
def test_geomed_fixed_steps(cp, monkeypatch, kind, init, dtype):
    monkeypatch.setattr(_config, "CUDA_THREADS", 32)
    B, n, d = 3, 11, 257
    X = _data(kind, B, n, d, dtype)
    X[:, 4] += 50.0  # an outlier row so the iterations move
    weights = np.random.default_rng(2).uniform(0.5, 2.0, size=(B, n))
    start = np.random.default_rng(3).standard_normal((B, d)).astype(dtype) if init == "array" else init
    start_d = cp.asarray(start) if init == "array" else init
    z, iters, obj = cuda.geomed(cp.asarray(X), cp.asarray(weights), start_d, 8, 0.0, 0.1)
    rz, riters, robj = reference.geomed(X, weights, start, 8, 0.0, 0.1)
    _check(z, rz, dtype)
    np.testing.assert_array_equal(iters.get(), riters)
    np.testing.assert_allclose(obj.get(), robj, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_geomed_from_a_nan_start_stays_nan(cp, dtype):
    # Every distance is NaN, so is every step's weight: max(nu, NaN) is NaN, as NumPy's maximum
    # in the reference, not nu, which would step to the weighted mean.
    X = _data("random", 2, 5, 33, dtype)
    start = np.zeros((2, 33), dtype)
    start[1, 7] = np.nan
    z, iters, obj = cuda.geomed(cp.asarray(X), np.ones((2, 5)), cp.asarray(start), 3, 0.0, 0.1)
    rz, riters, robj = reference.geomed(X, np.ones((2, 5)), start, 3, 0.0, 0.1)
    assert np.isnan(rz[1]).all() and np.isfinite(rz[0]).all()
    _check(z, rz, dtype)
    np.testing.assert_array_equal(iters.get(), riters)


@pytest.mark.parametrize("dtype", DTYPES)
def test_geomed_stops_early_like_the_reference(cp, dtype):
    X = _data("random", 4, 9, 64, dtype, seed=4)
    weights = np.ones((4, 9))
    z, iters, obj = cuda.geomed(cp.asarray(X), weights, "mean", 100, 1e-6, 1e-6)
    rz, riters, robj = reference.geomed(X, weights, "mean", 100, 1e-6, 1e-6)
    assert (riters < 100).all()  # the case proves nothing unless the rule stopped early
    np.testing.assert_array_equal(iters.get(), riters)
    _check(z, rz, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("iters", [0, 1, 3])
@pytest.mark.parametrize("kind", ["random", "nonfinite"])
def test_cclip(cp, kind, iters, dtype):
    X = _data(kind, 2, 10, 129, dtype)
    X[:, 2] *= 100.0
    v0 = reference.cwmed(X)
    (v, overflowed), (rv, roverflowed) = cuda.cclip(cp.asarray(X), 1.5, iters, cp.asarray(v0)), reference.cclip(X, 1.5, iters, v0)
    _check(v, rv, dtype)
    np.testing.assert_array_equal(overflowed.get(), roverflowed)


@pytest.mark.parametrize("iters", [1, 3])
def test_cclip_flags_the_items_where_a_finite_rows_distance_overflows(cp, iters):
    """A float64 row of 1e200 in item 1 (and a NaN row, which is no overflow, in item 0)."""
    X = _data("random", 3, 10, 129, np.float64)
    X[1, 4] *= 1e200
    X[0, 2, 7] = np.nan
    v0 = reference.cwmed(X)
    (v, overflowed), (rv, roverflowed) = cuda.cclip(cp.asarray(X), 1.5, iters, cp.asarray(v0)), reference.cclip(X, 1.5, iters, v0)
    assert roverflowed.tolist() == [False, True, False]
    np.testing.assert_array_equal(overflowed.get(), roverflowed)
    _check(v, rv, np.float64)


@DRAWN
@given(st.data())
def test_weiszfeld_kernels_on_drawn_inputs(cp, monkeypatch, data):
    """geomed and cclip on drawn shapes, weights (some zero), starts and step counts, the entries
    as in test_row_kernels_on_drawn_inputs: starts and distances may be non-finite."""
    draw = data.draw
    B, n, d = draw(st.integers(1, 3)), draw(st.integers(1, 30)), draw(st.integers(1, 300))
    dtype = draw(st.sampled_from(DTYPES))
    monkeypatch.setattr(_config, "CUDA_THREADS", draw(st.sampled_from([32, 64, 256])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = _drawn_entries(draw, rng, (B, n, d), dtype, nonfinite=draw(st.sampled_from([0.0, 0.01, 0.05])))
    # every step divides by distances, so rounding grows with the steps
    atol = 1e3 * _sum_order_allowance(X)
    weights = rng.uniform(0.0, 2.0, (B, n)) * (rng.random((B, n)) > 0.2)
    weights[:, 0] += 0.5  # some weight in every item, as the public geomed demands
    init = draw(st.sampled_from(["mean", "zero", "array"]))
    start = rng.standard_normal((B, d)).astype(dtype) if init == "array" else init
    maxiter, nu = draw(st.integers(0, 12)), draw(st.sampled_from([1e-6, 0.1, 10.0]))
    z, iters, obj = cuda.geomed(cp.asarray(X), cp.asarray(weights), cp.asarray(start) if init == "array" else init,
                                maxiter, 0.0, nu)
    rz, riters, robj = reference.geomed(X, weights, start, maxiter, 0.0, nu)
    np.testing.assert_array_equal(iters.get(), riters)
    _check(z, rz, dtype, atol)
    np.testing.assert_allclose(obj.get(), robj, rtol=1e-9, atol=atol, equal_nan=True)
    tau, steps = draw(st.sampled_from([1e-3, 0.5, 3.0, 1e30])), draw(st.integers(0, 4))
    v0 = reference.cwmed(X) if draw(st.booleans()) else rng.standard_normal((B, d)).astype(dtype)
    _check(cuda.cclip(cp.asarray(X), tau, steps, cp.asarray(v0))[0], reference.cclip(X, tau, steps, v0)[0], dtype, atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("shape", [(3, 7, 129), (2, 40, 1)], ids=lambda s: "x".join(map(str, s)))
def test_mean_std_is_bit_identical(cp, shape, ddof, dtype):
    X = _data("random", *shape, dtype)
    got = cuda.mean_std(cp.asarray(X), ddof)
    for g, w in zip(got, reference.mean_std(X, ddof)):
        np.testing.assert_array_equal(g.get(), w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 1), (3, 9, 70), (2, 20, 4099)], ids=lambda s: "x".join(map(str, s)))
def test_mimic_kernels_match_the_reference(cp, shape, dtype):
    """centred_dots and power_step to (d + h) ulps of the sums of their terms' magnitudes (they
    sum in their own order and may fuse multiply-adds); non-finite rows as the reference's."""
    B, h, d = shape
    X = _data("random", B, h, d, dtype) + np.arange(d, dtype=dtype)
    mu, z = X.mean(axis=1, dtype=np.float64), np.random.default_rng(1).standard_normal((B, d))
    ulps = (d + h) * np.finfo(np.float64).eps
    C = np.abs(X - mu[:, None, :])
    dots = reference.centred_dots(X, mu, z)
    got = cuda.centred_dots(cp.asarray(X), cp.asarray(mu), cp.asarray(z)).get()
    assert got.shape == dots.shape and (np.abs(got - dots) <= ulps * np.einsum("bhd,bd->bh", C, np.abs(z))).all()
    u, u_dots = (a.get() for a in cuda.power_step(cp.asarray(X), cp.asarray(mu), cp.asarray(dots)))
    want_u, want_u_dots = reference.power_step(X, mu, dots)
    u_magnitude = np.einsum("bh,bhd->bd", np.abs(dots), C)
    assert u.shape == want_u.shape and (np.abs(u - want_u) <= ulps * u_magnitude).all()
    assert (np.abs(u_dots - want_u_dots) <= 2 * ulps * np.einsum("bhd,bd->bh", C, u_magnitude)).all()
    if h > 1:
        X[0, h - 1, d // 2] = np.nan
        got = cuda.centred_dots(cp.asarray(X), cp.asarray(mu), cp.asarray(z)).get()
        assert np.isnan(got[0, h - 1]) and np.isfinite(np.delete(got[0], h - 1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_attack_candidates_are_bit_identical(cp, dtype):
    H = _data("random", 2, 5, 37, dtype)
    mu, direction = reference.mean_std(H, 1)
    mu[0, :3], direction[0, :3] = [np.nan, np.finfo(dtype).max, 1.0], [1.0, np.finfo(dtype).max, np.inf]
    etas = np.array([0.0, 0.3, 10.0])
    got = cuda.attack_candidates(cp.asarray(H), cp.asarray(mu), cp.asarray(direction), etas, 3).get()
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(got, reference.attack_candidates(H, mu, direction, etas, 3))


@pytest.mark.parametrize("rule, trims", [("cwmed", False), ("cwtm", True), ("meamed", True), ("cwtm", False)])
@pytest.mark.parametrize("h, f", [(5, 1), (5, 3), (20, 12), (31, 9), (50, 15)])  # the last builds its candidates
@pytest.mark.parametrize("dtype", DTYPES)
def test_candidate_deviations_are_those_of_the_built_batch(cp, rule, trims, h, f, dtype):
    rng = np.random.default_rng(12)
    H = rng.standard_normal((2, h, 37)).astype(dtype)
    H[1, 0, :3], H[1, 1, 3], H[0, :, 9] = [np.nan, np.inf, -np.inf], np.inf, 2.5  # and a tied column
    mu, direction = rng.standard_normal((2, 2, 37)).astype(dtype)
    big = np.finfo(dtype).max / 4  # mu + eta * direction past the dtype's largest: inf
    mu[0, :6], direction[0, :6] = [np.nan, np.inf, -np.inf, -0.0, big, 1.0], [1.0, 1.0, 2.0, 0.0, big, np.inf]
    mu[0, 6:12], direction[0, 6:12] = 1.0, 0.5  # finite sums, so that rounding shows
    etas = np.array([0.0, 1e-3, 0.7, 10.0, -3.0])
    trim = f if trims else 0
    args = [cp.asarray(a) for a in (H, mu, direction)] + [etas, f, rule, trim]
    with np.errstate(invalid="ignore", over="ignore"):
        got = cuda.candidate_deviations(*args).get()
        built = deviations_of_built_candidates(cuda, *args).get()
        want = reference.candidate_deviations(H, mu, direction, etas, f, rule, trim)
    assert got.shape == (2, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, built, rtol=1e-14)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)
    with pytest.raises(ValueError, match="trim"):
        cuda.candidate_deviations(*args[:6], (h + f + 1) // 2)
    with pytest.raises(ValueError, match="rule must be"):
        cuda.candidate_deviations(*args[:5], "mean", 0)


@pytest.mark.parametrize("rule", ["cwmed", "cwtm", "meamed"])
@pytest.mark.parametrize("h, f", [(4, 1), (9, 7), (3, 5), (40, 3)])  # f > h: Byzantine values at both ends
def test_candidate_deviations_where_byzantine_values_tie_honest_ones(cp, rule, h, f):
    """As test_attacks: small integers, so each column's rule adds the same values in any order
    and a value merged into the wrong position moves a deviation by far more than rtol."""
    rng = np.random.default_rng(h + f)
    H = rng.integers(-3, 4, (2, h, 45)).astype(np.float32)
    H[:, ::2, :9] = -0.0
    mu, direction = rng.integers(-3, 4, (2, 2, 45)).astype(np.float32)
    direction[0, :3] = [np.nan, np.inf, -np.inf]
    mu[1, :9], direction[1, :9] = -0.0, 0.0
    etas = np.array([0.0, 1.0, -1.0, 2.0, 5.0])
    trim = 0 if rule == "cwmed" else min(f, (h + f - 1) // 2)
    args = [cp.asarray(a) for a in (H, mu, direction)] + [etas, f, rule, trim]
    with np.errstate(invalid="ignore", over="ignore"):
        got = cuda.candidate_deviations(*args).get()
        built = deviations_of_built_candidates(cuda, *args).get()
    np.testing.assert_allclose(got, built, rtol=1e-14)


@DRAWN
@given(st.data())
def test_attack_kernels_on_drawn_inputs(cp, monkeypatch, data):
    """mean_std and attack_candidates give the reference's bits, and candidate_deviations those
    of the built batch, on drawn shapes, rules, trims and strengths; honest values are small
    integers (Byzantine values tie them) or the drawn entries of the row kernels' test."""
    draw = data.draw
    B, h, f, d = draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.integers(1, 20)), draw(st.integers(1, 80))
    dtype = draw(st.sampled_from(DTYPES))
    monkeypatch.setattr(_config, "CUDA_THREADS", draw(st.sampled_from([32, 64, 256])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        H = rng.integers(-3, 4, (B, h, d)).astype(dtype)
    else:
        H = _drawn_entries(draw, rng, (B, h, d), dtype, nonfinite=draw(st.sampled_from([0.0, 0.02])))
    ddof = draw(st.sampled_from([0, 1]))
    for got, want in zip(cuda.mean_std(cp.asarray(H), ddof), reference.mean_std(H, ddof)):
        np.testing.assert_array_equal(got.get(), want)
    mu, direction = (rng.integers(-3, 4, (2, B, d)) * draw(st.sampled_from([1.0, 0.37]))).astype(dtype)
    etas = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, 1e-3, 10.0]), min_size=1, max_size=6)))
    rule = draw(st.sampled_from(["cwmed", "cwtm", "meamed"]))
    trim = 0 if rule == "cwmed" else draw(st.integers(0, (h + f - 1) // 2))
    args = [cp.asarray(a) for a in (H, mu, direction)] + [etas, f, rule, trim]
    np.testing.assert_array_equal(cuda.attack_candidates(*args[:5]).get(),
                                  reference.attack_candidates(H, mu, direction, etas, f))
    got = cuda.candidate_deviations(*args).get()
    np.testing.assert_allclose(got, deviations_of_built_candidates(cuda, *args).get(), rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(got, reference.candidate_deviations(H, mu, direction, etas, f, rule, trim),
                               rtol=1e-5 if dtype == np.float32 else 1e-11, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 33, 20001])
def test_gaussian_draws_the_reference_normals(cp, d, dtype):
    """The reference's bits: the same fdlibm log, sin and cos, each operation rounded on its own
    (20,000 pairs reach every quadrant of the angle); a wrong Philox word or layout would change
    the values completely."""
    own = _data("random", 2, 3, d, dtype)
    seed = 2**40 + 12345  # uses both key words
    np.testing.assert_array_equal(cuda.gaussian(cp.asarray(own), 2.5, seed).get(), reference.gaussian(own, 2.5, seed))


@pytest.mark.gpu
def test_large_sizes_use_int64_offsets(device_cp):
    # Row offsets i * d pass 2^31 elements (a 10 GiB float32 input).
    d = 2**29 + 3
    X = device_cp.zeros((1, 5, d), device_cp.float32)
    X[0, :, -1] = device_cp.asarray([1.0, 5.0, 3.0, 2.0, 4.0], device_cp.float32)
    assert float(cuda.cwmed(X)[0, -1]) == 3.0
    assert float(cuda.mean(X)[0, -1]) == 3.0
    del X


# Public API on device arrays: the result stays on the device, in the input's library and dtype.

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_api_on_cupy_input(device_cp, dtype):
    X = _data("random", 1, 9, 40, dtype)[0]
    X[3, 5], X[6] = np.nan, np.inf  # two bad rows, as many as f = 2 tolerates
    Xd = device_cp.asarray(X)
    for rule, kw in [(byzkern.cwtm, {"f": 2}), (byzkern.cwmed, {}), (byzkern.meamed, {"f": 2}),
                     (byzkern.krum, {"f": 2}), (byzkern.geomed, {}), (byzkern.cclip, {"tau": 1.0}),
                     (byzkern.nnm, {"f": 2}), (byzkern.clip, {"tau": 1.0}), (byzkern.pairwise_sqdist, {})]:
        got = rule(Xd, **kw)
        assert isinstance(got, device_cp.ndarray) and got.device == Xd.device and got.dtype == Xd.dtype
        want = rule(X, backend="reference", **kw)
        np.testing.assert_allclose(got.get(), want, rtol=1e-5 if dtype == np.float32 else 1e-9, equal_nan=True)


@pytest.mark.gpu
def test_nnm_on_cupy_input_keeps_its_neighbour_table_on_the_device(device_cp, monkeypatch):
    # cuda's mix_rows gains nothing from shared prefixes: ordering the table would be a round
    # trip to the host
    from byzkern import preaggregators

    def no_ordering(idx, n):
        raise AssertionError("the neighbour table was ordered on the host")

    monkeypatch.setattr(preaggregators, "shared_prefix_order", no_ordering)
    X = _data("random", 2, 11, 300, np.float64)
    got = byzkern.nnm(device_cp.asarray(X), f=3)
    np.testing.assert_allclose(got.get(), byzkern.nnm(X, f=3, backend="reference"), rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_attacks_on_cupy_input(device_cp, dtype):
    H = _data("random", 1, 8, 50, dtype)[0]
    for attack, kw in [(byzkern.alie, {"f": 3}), (byzkern.gaussian, {"f": 3, "std": 2.0, "seed": 7})]:
        got = attack(device_cp.asarray(H), **kw)
        assert isinstance(got, device_cp.ndarray) and got.dtype == H.dtype
        want = attack(H, backend="reference", **kw)
        np.testing.assert_allclose(got.get(), want, rtol=RTOL[dtype], atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_mimic_on_cupy_input_follows_the_reference(device_cp, dtype):
    rng = np.random.default_rng(3)
    steps = [rng.standard_normal((2, 9, 300)).astype(dtype) * rng.uniform(0.5, 3.0, (2, 9, 1)) for _ in range(3)]
    on_device, on_host = byzkern.Mimic(warmup=2, seed=5), byzkern.Mimic(warmup=2, seed=5)
    for H in steps:
        got = on_device(device_cp.asarray(H), f=2)
        assert isinstance(got, device_cp.ndarray) and got.dtype == H.dtype
        np.testing.assert_array_equal(got.get(), on_host(H, f=2, backend="reference"))
        np.testing.assert_allclose(on_device.z.get(), on_host.z, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
def test_options_in_any_form_beside_device_data(device_cp):
    """Numbers typed as a list go to the data's device; etas on the device come to the host for
    the grid; a torch CUDA tensor with a lazy negation (its neg bit) is read negated."""
    X = _data("random", 1, 9, 40, np.float64)[0]
    weights = [1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0, 1.0, 1.0]
    got = byzkern.geomed(device_cp.asarray(X), weights=weights)
    np.testing.assert_allclose(got.get(), byzkern.geomed(X, weights=weights, backend="reference"), rtol=1e-9)
    etas = np.array([0.0, 0.5, 2.0])
    got = byzkern.optimized(device_cp.asarray(X), f=2, attack="alie", aggregator=byzkern.cwtm(f=2),
                            etas=device_cp.asarray(etas))
    want = byzkern.optimized(X, f=2, attack="alie", aggregator=byzkern.cwtm(f=2), etas=etas, backend="reference")
    np.testing.assert_allclose(got.get(), want, rtol=1e-12)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA support here")
    negated = torch.from_numpy(X + 1j * X).to("cuda").conj().imag  # -X, held as X with the neg bit set
    assert negated.is_neg()
    np.testing.assert_array_equal(byzkern.cwmed(negated).cpu().numpy(), byzkern.cwmed(-X, backend="reference"))


@pytest.mark.gpu
def test_arrays_off_the_current_device_are_refused(device_cp, monkeypatch):
    """CuPy launches on the current device whatever device the arrays are on: an array on
    another one is refused before any kernel runs (one GPU here: the current device is moved)."""
    X = device_cp.asarray(_data("random", 1, 5, 9, np.float32)[0])
    monkeypatch.setattr(device_cp.cuda.runtime, "getDevice", lambda: X.device.id + 1)
    with pytest.raises(ValueError, match=f"X is on CUDA device {X.device.id} but the current device is"):
        byzkern.cwmed(X)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_public_api_on_torch_cuda_input(torch_cuda, dtype):
    X = _data("random", 2, 7, 30, np.dtype(dtype))
    Xt = torch_cuda.from_numpy(X).to("cuda")
    for rule, kw in [(byzkern.cwtm, {"f": 2}), (byzkern.multikrum, {"f": 2}), (byzkern.geomed, {"maxiter": 8, "eps": 0})]:
        got = rule(Xt, **kw)
        assert isinstance(got, torch_cuda.Tensor) and got.device == Xt.device and got.dtype == Xt.dtype
        want = rule(X, backend="reference", **kw)
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5 if dtype == "float32" else 1e-9)
    _, info = byzkern.geomed(Xt, maxiter=8, eps=0, return_info=True)
    _, want = byzkern.geomed(X, maxiter=8, eps=0, return_info=True, backend="reference")
    assert all(isinstance(info[key], torch_cuda.Tensor) and info[key].device == Xt.device for key in info)
    np.testing.assert_array_equal(info["iterations"].cpu().numpy(), want["iterations"])


#: calls on a torch tensor whose results stay on the device: a rule's, a diagnostic's (both
#: handed back through DLPack) and a message's fields (which stay CuPy arrays)
_TORCH_STREAM_CALLS = {
    "cwmed": byzkern.cwmed,
    "geomed objective": lambda X: byzkern.geomed(X, maxiter=3, eps=0, return_info=True)[1]["objective"],
    "topk": lambda X: byzkern.topk(X[0], k=5),
    "qsgd": lambda X: byzkern.qsgd(X[0], levels=3, seed=1),
}
#: a kernel that holds CuPy's stream for ``cycles`` clock ticks
_SPIN = r"""extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {}
}"""


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(_TORCH_STREAM_CALLS))
def test_a_side_torch_stream_waits_for_the_kernels_that_read_its_tensor(torch_cuda, device_cp, name):
    """torch work queued on a side stream after a call (PyTorch's streams do not wait for CuPy's
    legacy default stream by themselves) runs after the call's kernels: CuPy's stream is held by
    a spinning kernel for about 0.2 s, so an update of the input that did not wait for them
    would land before they read it."""
    call = _TORCH_STREAM_CALLS[name]
    Xt = torch_cuda.from_numpy(_data("random", 2, 7, 30, np.float32)).to("cuda")
    want = _settled(call(Xt))  # its kernels compiled and cached: the call below only launches
    spin = device_cp.RawKernel(_SPIN, "spin")
    side = torch_cuda.cuda.Stream()
    Xt.clone().add_(1.0)  # loading a kernel module lazily may wait for the device: not in the race
    torch_cuda.cuda.synchronize()
    with torch_cuda.cuda.stream(side):
        spin((1,), (1,), (np.int64(400_000_000),))
        got = call(Xt)
        Xt.add_(1.0)
    np.testing.assert_array_equal(_settled(got), want)


def _settled(result):
    """A message's bytes or a tensor's values, on the host (after the device is done)."""
    return np.frombuffer(result.to_bytes(), np.uint8) if isinstance(result, Compressed) else result.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Compressor kernels give the reference's bits.

def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _bits(a):
    a = _host(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _same_bits(got, want, *, nan_as_nan=False):
    """Bit for bit. ``nan_as_nan``: where the result is computed from a NaN (a row's norm or scale,
    a scaled value) any NaN will do: the GPU gives its canonical NaN, the host propagates payloads."""
    got = _host(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    if nan_as_nan and got.dtype.kind == "f":
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        got, want = np.where(np.isnan(got), 0, got), np.where(np.isnan(want), 0, want)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def _rows(kind, n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "ties":
        return rng.integers(-2, 3, size=(n, d)).astype(dtype)
    if kind == "offset":  # model weights: a large common value plus small deltas
        return (1e3 + 1e-3 * rng.standard_normal((n, d))).astype(dtype)
    if kind == "special":  # signed zeros, subnormals, the largest finite values, powers of two
        return rng.choice([0.0, -0.0, 1e-45, -1e-310, 5e-324, 1.5, -3.0, 3.4e38, 1.7e308, 2.0**-126], (n, d)).astype(dtype)
    X = rng.standard_normal((n, d)).astype(dtype)
    if kind == "nonfinite":
        for value, share in ((np.nan, 0.1), (np.inf, 0.05), (-np.inf, 0.05)):
            X[rng.random((n, d)) < share] = value
        X[0] = rng.standard_normal(d)  # one finite row
        X[-1, 0] = -np.nan
        # a NaN with a payload: topk still ranks every NaN alike, ties by index
        X[-1, -1] = np.array(0x7FC00123 if dtype == np.float32 else 0x7FF8000000000123,
                             np.dtype(dtype).str.replace("f", "u")).view(dtype)
    return X


COMPRESS_SHAPES = [(1, 1), (2, 5), (3, 8), (2, 33), (4, 257), (3, 4099), (2, 70001)]  # d = 1, d % 8, d % 32, > SUM_CHUNK


@pytest.fixture(params=[32, 256], ids=lambda t: f"threads{t}")
def compress_launch(request, monkeypatch):
    """Small blocks and topk chunks so that small inputs span many chunks and grid-stride turns."""
    monkeypatch.setattr(_config, "CUDA_THREADS", request.param)
    monkeypatch.setattr(cuda, "TOPK_CHUNK", 4 * request.param)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "ties", "offset", "special", "nonfinite"])
@pytest.mark.parametrize("shape", COMPRESS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_compressors_are_bit_identical(cp, compress_launch, shape, kind, dtype):
    n, d = shape
    X = _rows(kind, n, d, dtype)
    Xd = cp.asarray(X)
    seed = 2**40 + 12345  # uses both key words
    for k in sorted({1, max(1, d // 3), d}):
        for name, args in (("topk", ()), ("randk", (seed,))):
            values, indices = getattr(cuda, name)(Xd, k, *args)
            want_values, want_indices = getattr(reference, name)(X, k, *args)
            _same_bits(indices, want_indices)
            _same_bits(values, want_values, nan_as_nan=name == "randk")
            _same_bits(cuda.scatter_rows(values, indices, d), reference.scatter_rows(want_values, want_indices, d),
                       nan_as_nan=True)
    for levels in (1, 3, 5, 127, 32767):
        norms, codes = cuda.qsgd(Xd, levels, seed)
        want_norms, want_codes = reference.qsgd(X, levels, seed)
        _same_bits(norms, want_norms, nan_as_nan=True)
        _same_bits(codes, want_codes)
        _same_bits(cuda.qsgd_decompress(cp.asarray(want_norms), codes, levels, d),
                   reference.qsgd_decompress(want_norms, want_codes, levels, d), nan_as_nan=True)
    codes = cuda.natural(Xd, seed)
    _same_bits(codes, reference.natural(X, seed))
    _same_bits(cuda.natural_decompress(codes, d, X.dtype), reference.natural_decompress(_host(codes), d, X.dtype))
    _same_bits(cuda.sign(Xd), reference.sign(X))
    scales, codes = cuda.scaled_sign(Xd)
    want_scales, want_codes = reference.scaled_sign(X)
    _same_bits(scales, want_scales, nan_as_nan=True)
    _same_bits(codes, want_codes)
    _same_bits(cuda.sign_decompress(codes, cp.asarray(want_scales), d),
               reference.sign_decompress(want_codes, want_scales, d))


@pytest.mark.parametrize("d", [50, 70000, 2**32 + 5])  # every wire index dtype
def test_indices_ok(cp, d):
    dtype = index_dtype(d)
    good = np.array([[0, 3, 7], [1, 2, d - 1]], dtype)
    assert cuda.indices_ok(cp.asarray(good), d)
    for bad in ([[0, 3, 3], [1, 2, 4]], [[0, 3, 7], [2, 1, 4]], [[0, 3, 7], [1, 2, d]]):
        bad = np.array(bad, np.uint64).astype(dtype)
        assert cuda.indices_ok(cp.asarray(bad), d) == reference.indices_ok(bad, d)


@pytest.mark.parametrize("levels", [2, 5, 100])
def test_qsgd_levels_ok(cp, levels):
    width = reference.qsgd_width(levels)
    codes = np.zeros((3, 17), np.uint32)
    codes[2, 16] = levels | 1 << (width - 1)  # the top level, negative
    assert cuda.qsgd_levels_ok(cp.asarray(reference.pack_codes(codes, width)), levels, 17)
    codes[2, 16] = levels + 1
    assert not cuda.qsgd_levels_ok(cp.asarray(reference.pack_codes(codes, width)), levels, 17)


@pytest.mark.gpu
def test_compressors_use_int64_offsets(device_cp):
    # Entry offsets row * d + i pass 2^31 (8 GiB of float32).
    d = 2**30 + 9
    X = device_cp.zeros((2, d), device_cp.float32)
    X[1, -1], X[1, -3] = -5.0, 2.0
    values, indices = cuda.topk(X, 2)
    assert indices[1].tolist() == [d - 3, d - 1] and values[1].tolist() == [2.0, -5.0]
    codes = cuda.sign(X)
    assert codes[1, -1].item() == 1 << ((d - 1) % 8)
    scales, _ = cuda.scaled_sign(X)
    assert scales[1].item() == np.float32(7.0 / d)
    del X


# Messages on the device: fields stay there, decompress returns the input's library and device,
# to_bytes gives the bytes of the cpu message.

ALL_COMPRESSORS = [("topk", {"k": 5}), ("randk", {"k": 5, "seed": 3}), ("qsgd", {"levels": 5, "seed": 4}),
                   ("natural", {"seed": 5}), ("sign", {}), ("scaled_sign", {})]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37,), (3, 70001)], ids=str)
@pytest.mark.parametrize("name, options", ALL_COMPRESSORS, ids=[c[0] for c in ALL_COMPRESSORS])
def test_message_on_cupy_input(device_cp, name, options, shape, dtype):
    x = _rows("random", 1, int(np.prod(shape)), dtype).reshape(shape)
    message = getattr(byzkern, name)(device_cp.asarray(x), **options)
    assert all(isinstance(a, device_cp.ndarray) for a in message.fields.values())
    host = getattr(byzkern, name)(x, **options)
    assert message.to_bytes() == host.to_bytes()
    out = message.decompress()
    assert isinstance(out, device_cp.ndarray) and out.shape == shape and out.dtype == dtype
    _same_bits(out, host.decompress())
    back = Compressed.from_bytes(message.to_bytes(), device="cuda")
    assert all(isinstance(a, device_cp.ndarray) for a in back.fields.values())
    _same_bits(back.decompress(), host.decompress())


@pytest.mark.gpu
def test_corrupt_message_is_refused_on_the_device(device_cp):
    data = bytearray(byzkern.topk(np.arange(10.0, dtype=np.float32), k=3).to_bytes())
    data[-2:] = data[-4:-2]  # the last index repeats the one before
    with pytest.raises(ValueError, match="strictly increasing"):
        Compressed.from_bytes(bytes(data), device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name, options", ALL_COMPRESSORS, ids=[c[0] for c in ALL_COMPRESSORS])
def test_message_on_torch_cuda_input(torch_cuda, name, options):
    x = _rows("random", 4, 100, np.float32)
    xt = torch_cuda.from_numpy(x).to("cuda")
    message = getattr(byzkern, name)(xt, **options)
    assert message.to_bytes() == getattr(byzkern, name)(x, **options).to_bytes()
    out = message.decompress()
    assert isinstance(out, torch_cuda.Tensor) and out.device == xt.device and out.dtype == xt.dtype
    ef = byzkern.ErrorFeedback(getattr(byzkern, name)(**options))
    ef(xt, lr=0.1)
    assert isinstance(ef.error, torch_cuda.Tensor) and ef.error.device == xt.device
