"""Numba kernels on what tests/test_backends.py does not reach through the public ops: kernel
options the public calls leave at their defaults, the selection paths of every n, accuracy of
nearly equal rows, untouched inputs, and the on-disk compile cache.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _harness import assert_close, byzantine_rows, gaussian

nb = pytest.importorskip("byzkern.backends.numba", reason="numba is not installed")
from byzkern import _config  # noqa: E402
from byzkern.backends import reference as ref  # noqa: E402


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def outliers(rng, shape, dtype):
    """Gaussian columns with ties, NaN, +-Inf scattered over single entries (not whole rows)."""
    X = np.round(gaussian(rng, shape, dtype), 1)
    mask = rng.random(shape)
    X[mask < 0.05] = np.nan
    X[(mask >= 0.05) & (mask < 0.08)] = np.inf
    X[(mask >= 0.08) & (mask < 0.1)] = -np.inf
    return X


@pytest.mark.parametrize("n", list(range(1, 34)) + [40, 48, 49, 63, 64, 97])
def test_coordinatewise_every_n(n, dtype):
    """Every n, so that each selection path and its boundaries meet the reference, with ties
    and non-finite values in the columns."""
    X = outliers(np.random.default_rng(n), (2, n, 19), dtype)
    with np.errstate(invalid="ignore"):
        assert_close(nb.cwmed(X), ref.cwmed(X), exact=True)
        for f in sorted({0, (n - 1) // 4, (n - 1) // 2}):
            assert_close(nb.cwtm(X, f), ref.cwtm(X, f))
            assert_close(nb.meamed(X, f), ref.meamed(X, f))


def test_full_blocks_inside_wide_tiles(dtype, monkeypatch):
    """conftest's 8-column tiles keep every sorting block and pair block partial: with wide
    tiles the full 64-lane sorting blocks and full pair blocks run too, beside a partial tail."""

    monkeypatch.setattr(_config, "COL_TILE", 160)
    X = outliers(np.random.default_rng(12), (2, 9, 2 * 160 + 37), dtype)
    X[:, :, 40:] = np.nan_to_num(X[:, :, 40:], nan=1.5, posinf=2.5, neginf=-2.5)  # finite blocks too
    Y = gaussian(np.random.default_rng(13), (2, 6, 1100), dtype)
    with np.errstate(invalid="ignore"):
        assert_close(nb.cwmed(X), ref.cwmed(X), exact=True)
        assert_close(nb.cwtm(X, 2), ref.cwtm(X, 2))
        assert_close(nb.meamed(X, 2), ref.meamed(X, 2))
    assert_close(nb.pairwise_sqdist(Y), ref.pairwise_sqdist(Y))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 20, 21, 32, 33, 48, 49, 64, 65])
@pytest.mark.parametrize("d", [1, 63, 64, 65, 2 * 160 + 37])
def test_unrolled_networks_on_groups_and_tails(n, d, dtype, monkeypatch):
    """n on both sides of the unrolled networks' limits (48; meamed 20) and of the runtime
    path's groups of 32 rows (a last group of 1, 16 or 17 rows), on 160-column tiles: full
    groups of 64 columns read in place beside the zero-padded partial group, or only the latter; columns of ties, scattered NaN/+-Inf, whole rows of NaN, +Inf, -Inf and 1e38 (up to
    f of them), for every f (the unrolled trimmed mean and mean around the median take f at run
    time)."""

    monkeypatch.setattr(_config, "COL_TILE", 160)
    X = outliers(np.random.default_rng(n * 1000 + d), (2, n, d), dtype)
    X[:, :, ::2] = np.nan_to_num(X[:, :, ::2], nan=0.5, posinf=1.5, neginf=-1.5)
    X[:, -1, ::3] = X[:, 0, ::3]
    columns = np.moveaxis(X, 1, 2).reshape(-1, n)
    assert n == 1 or any(len(np.unique(c)) < n for c in columns), "no ties: the case proves nothing"
    for f in range((n + 1) // 2):
        Y = X.copy()
        for row, poison in zip([0, n // 2, n - 1][:f], [np.nan, np.inf, 1e38 if f < 3 else -np.inf]):
            Y[1, row] = poison
        with np.errstate(invalid="ignore", over="ignore"):
            if f == 0:
                assert_close(nb.cwmed(Y), ref.cwmed(Y), exact=True)
            assert_close(nb.cwtm(Y, f), ref.cwtm(Y, f))
            assert_close(nb.meamed(Y, f), ref.meamed(Y, f))
    with np.errstate(invalid="ignore"):
        assert_close(nb.cwmed(Y), ref.cwmed(Y), exact=True)


def special_values(rng, shape, dtype):
    """Gaussian rows with NaN, +-Inf, +-0 and subnormal entries."""
    X = gaussian(rng, shape, dtype)
    flat = X.reshape(-1)
    picks = rng.choice(flat.size, min(flat.size, 6 * max(1, flat.size // 50)), replace=False)
    tiny = np.finfo(dtype).smallest_subnormal
    for value, where in zip([np.nan, np.inf, -np.inf, 0.0, -0.0, tiny], np.array_split(picks, 6)):
        flat[where] = value
    return X


@pytest.mark.parametrize("tile", [8, 96])
@pytest.mark.parametrize("d", [1, 7, 8, 61, 200])
def test_compressors_equal_the_reference_bit_for_bit(d, tile, dtype, monkeypatch):
    """Every width of the group-of-eight code packer (qsgd levels 1 .. 32767, natural's 9 and
    12 bits, sign), the tile-wide Philox runs and randk's bitset; on tiles of 8 entries, and of
    96, where the packer stores whole octets as words before its byte-by-byte end."""

    monkeypatch.setattr(_config, "COL_TILE", tile)
    X = special_values(np.random.default_rng(d), (3, d), dtype)
    calls = {f"qsgd levels={s}": (lambda M, s=s: M.qsgd(X, s, 11)) for s in (1, 2, 3, 7, 100, 32767)}
    calls.update({"natural": lambda M: M.natural(X, 11), "sign": lambda M: M.sign(X),
                  "scaled_sign": lambda M: M.scaled_sign(X), "randk": lambda M: M.randk(X, max(1, d // 3), 11),
                  "topk": lambda M: M.topk(X, max(1, d // 4))})
    for name, call in calls.items():
        with np.errstate(invalid="ignore", over="ignore"):
            got, want = call(nb), call(ref)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)


def test_nearly_equal_rows_keep_their_distance(dtype):
    """Rows that differ by 1e-4 in one coordinate out of 1e6, on a common offset of 1e3: the
    distance is that one squared difference, to float64 rounding (the Gram trick loses it)."""
    d = 10**6
    rng = np.random.default_rng(5)
    X = (1e3 + rng.standard_normal((1, 2, d))).astype(dtype)
    X[0, 1] = X[0, 0]
    X[0, 1, d // 3] += dtype(1e-4)
    gap = np.float64(X[0, 1, d // 3]) - np.float64(X[0, 0, d // 3])
    assert gap != 0 and abs(gap - 1e-4) < 1e-4  # float32 rounds the 1e-4 step at 1e3
    D = nb.pairwise_sqdist(X)
    np.testing.assert_allclose(D[0], [[0.0, gap**2], [gap**2, 0.0]], rtol=1e-15, atol=0)


@pytest.mark.parametrize("n, d", [(1, 5), (4, 1)])
def test_pairwise_degenerate_shapes(n, d, dtype):
    X = gaussian(np.random.default_rng(6), (2, n, d), dtype)
    assert_close(nb.pairwise_sqdist(X), ref.pairwise_sqdist(X))


@pytest.mark.parametrize("q", [1.0, 2.0, 3.0, np.inf])
def test_row_norms_every_q(q, dtype):
    X = byzantine_rows(np.random.default_rng(7), (2, 9, 23), dtype, 3)
    assert_close(nb.row_norms(X, q), ref.row_norms(X, q))


def test_clip_of_rows_whose_norm_overflows():
    """A finite row whose norm overflows gets norm +Inf and is zeroed (as the reference kernel
    does; the public clip takes such rows again), while a row with an Inf entry passes through
    unchanged: the kernel tells the two apart."""
    X = gaussian(np.random.default_rng(8), (1, 4, 10), np.float64)
    X[0, 1] = 1e200
    X[0, 2, 3] = np.inf
    with np.errstate(over="ignore"):
        expected, norms = ref.clip(X, 0.5)
    assert (expected[0, 1] == 0).all() and (expected[0, 2] == X[0, 2]).all()
    assert norms[0, 1] == norms[0, 2] == np.inf
    got, got_norms = nb.clip(X, 0.5)
    assert_close(got, expected)
    assert_close(got_norms, norms)


def geomed_inputs(rng, dtype, init):
    """Three batch items that stop at different iterations, a zero weight, a non-finite row."""
    B, n, d = 3, 8, 29
    X = gaussian(rng, (B, n, d), dtype)
    X[1] *= 100.0
    X[2, 5, 7] = np.nan
    weights = rng.uniform(0.5, 2.0, (B, n))
    weights[0, 3] = 0.0
    if init == "array":
        init = gaussian(rng, (B, d), dtype)
    return X, weights, init


@pytest.mark.parametrize("init", ["mean", "zero", "array"])
@pytest.mark.parametrize("maxiter, eps", [(0, 0.0), (3, 0.0), (100, 1e-6)])
def test_geomed_options(init, maxiter, eps, dtype):
    X, weights, init = geomed_inputs(np.random.default_rng(9), dtype, init)
    z, iters, obj = nb.geomed(X, weights, init, maxiter, eps, 1e-6)
    z_ref, iters_ref, obj_ref = ref.geomed(X, weights, init, maxiter, eps, 1e-6)
    if eps > 0:
        assert len(set(iters_ref)) > 1, "items stop together: the batching of stops is untested"
    np.testing.assert_array_equal(iters, iters_ref)
    assert_close(z, z_ref)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-10)


@pytest.mark.parametrize("iters", [0, 1, 3])
def test_cclip_iterations(iters, dtype):
    rng = np.random.default_rng(10)
    X = byzantine_rows(rng, (2, 9, 31), dtype, 2)
    v0 = gaussian(rng, (2, 31), dtype)
    (v, overflowed), (want, want_overflowed) = nb.cclip(X, 0.7, iters, v0), ref.cclip(X, 0.7, iters, v0)
    assert_close(v, want)
    np.testing.assert_array_equal(overflowed, want_overflowed)


def every_kernel_call(X):
    B, n, d = X.shape
    idx = np.tile(np.array([[0, 2, -1], [1, 1, 3]], dtype=np.int64), (B, 1, 1))
    v = np.full((B, d), 0.25, X.dtype)
    weights = np.linspace(1.0, 2.0, B * n).reshape(B, n)
    return {
        "mean": lambda: nb.mean(X), "cwmed": lambda: nb.cwmed(X), "cwtm": lambda: nb.cwtm(X, 1),
        "meamed": lambda: nb.meamed(X, 1), "pairwise_sqdist": lambda: nb.pairwise_sqdist(X),
        "mix_rows": lambda: nb.mix_rows(X, idx), "row_norms": lambda: nb.row_norms(X, 2.0),
        "clip": lambda: nb.clip(X, 0.5), "geomed": lambda: nb.geomed(X, weights, v, 3, 0.0, 1e-6),
        "cclip": lambda: nb.cclip(X, 0.5, 2, v), "cclip from the median": lambda: nb.cclip(X, 0.5, 1, None),
    }, (X, idx, v, weights)


def test_inputs_are_left_unchanged(dtype):
    X = byzantine_rows(np.random.default_rng(11), (2, 5, 17), dtype, 2)
    calls, inputs = every_kernel_call(X)
    before = [a.copy() for a in inputs]
    for call in calls.values():
        call()
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)


def test_compiled_kernels_load_from_the_disk_cache_in_a_fresh_process():
    """cache=True: once this process has compiled the kernels, a new interpreter finds every
    kernel it runs in the on-disk cache and compiles nothing (the unrolled networks' cfuncs
    for its n = 5 too)."""
    script = textwrap.dedent("""
        import numpy as np
        from byzkern.backends import numba as nb
        import test_numba_kernels as t
        t.run_every_kernel()
        kernels = [k for k in vars(nb).values() if hasattr(k, "stats")]
        tiles = [nb._unrolled_tile(5, rule, np.dtype(dtype)) for dtype in (np.float32, np.float64)
                 for rule in (nb._MEDIAN, nb._TRIMMED_MEAN, nb._MEAN_AROUND_MEDIAN)]
        print(sum(sum(k.stats.cache_misses.values()) for k in kernels) + sum(not t.cache_hits for t in tiles),
              sum(sum(k.stats.cache_hits.values()) for k in kernels))
    """)
    run_every_kernel()
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here]))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True)
    misses, hits = map(int, run.stdout.split())
    assert misses == 0 and hits > 0, run.stdout + run.stderr


def run_every_kernel():
    for dtype in (np.float32, np.float64):
        calls, _ = every_kernel_call(np.ones((2, 5, 17), dtype))
        for call in calls.values():
            call()


@pytest.mark.parametrize("ties", ["all-equal", "sparse"])
def test_topk_when_the_sampled_threshold_misleads(ties, dtype):
    """Long rows where the strided sample (stride 17 here) predicts far too few candidates: every
    entry, or every 17th, ties with the sampled ones; the candidate buffer overflows and the
    whole-row fallback gives the answer."""
    d = 70_001
    X = np.ones((2, d), dtype) if ties == "all-equal" else np.zeros((2, d), dtype)
    if ties == "sparse":
        X[:, ::17] = 2.0
    for got, want in zip(nb.topk(X, 300), ref.topk(X, 300)):
        np.testing.assert_array_equal(got, want)


def test_topk_long_rows_through_the_sampled_threshold(dtype):
    """Rows long enough for the sampled threshold, whose candidates fit: the chunked flag scan
    over several chunks and a last one not a multiple of 8 long, with NaN, Inf and ties."""
    X = np.round(special_values(np.random.default_rng(3), (2, 70_001), dtype), 2)
    for k in (1, 300, 5000):
        with np.errstate(invalid="ignore"):
            got, want = nb.topk(X, k), ref.topk(X, k)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
