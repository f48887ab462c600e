"""Every fast CPU backend against the reference, for every aggregation op.

Parametrized over op x backend x dtype x input kind x layout (contiguous, strided, batched).
Order statistics must match exactly; sums within the tolerance in _harness.RTOL.
"""
import numpy as np
import pytest

import byzkern as bk
from byzkern import _config, _dispatch
from byzkern.backends import reference
from _harness import (assert_backend_matches_reference, byzantine_rows, duplicated_rows, gaussian,
                      non_contiguous, offset_rows, with_ties)


def robust_f(n):
    return max(0, min((n - 1) // 2, n - 3))


# name -> (call(X, n, **backend_kw), exact). ``exact``: an order statistic or a selection, so
# every backend must give the same bits.
OPS = {
    "mean": (lambda X, n, **kw: bk.mean(X, **kw), False),
    "cwmed": (lambda X, n, **kw: bk.cwmed(X, **kw), True),
    "cwtm": (lambda X, n, **kw: bk.cwtm(X, f=robust_f(n), **kw), False),
    "meamed": (lambda X, n, **kw: bk.meamed(X, f=robust_f(n), **kw), False),
    "geomed": (lambda X, n, **kw: bk.geomed(X, maxiter=8, eps=0.0, **kw), False),
    "krum": (lambda X, n, **kw: bk.krum(X, f=robust_f(n), **kw), True),
    "multikrum": (lambda X, n, **kw: bk.multikrum(X, f=robust_f(n), **kw), False),
    "cclip": (lambda X, n, **kw: bk.cclip(X, tau=0.5, iters=2, **kw), False),
    "norm_filter": (lambda X, n, **kw: bk.norm_filter(X, f=robust_f(n), **kw), False),
    "nnm": (lambda X, n, **kw: bk.nnm(X, f=robust_f(n), **kw), False),
    "bucketing": (lambda X, n, **kw: bk.bucketing(X, s=2, seed=7, **kw), False),
    "resampling": (lambda X, n, **kw: bk.resampling(X, s=2, seed=7, **kw), False),
    "clip": (lambda X, n, **kw: bk.clip(X, tau=0.5, **kw), False),
    "pairwise_sqdist": (lambda X, n, **kw: bk.pairwise_sqdist(X, **kw), False),
}

SHAPES = [(3, 1), (5, 37), (7, 64), (20, 33), (41, 9)]  # d = 1, n = 2f+1, odd d, large n
INPUTS = {"gaussian": gaussian, "ties": with_ties, "duplicates": duplicated_rows, "offset": offset_rows}


def check(op, X, backend):
    call, exact = OPS[op]
    n = X.shape[-2]
    assert_backend_matches_reference(lambda Y, **kw: call(Y, n, **kw), X, backend, exact=exact)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", INPUTS)
def test_matches_reference(op, shape, kind, fast_backend, dtype):
    X = INPUTS[kind](np.random.default_rng(hash((op, shape, kind)) % 2**32), shape, dtype)
    check(op, X, fast_backend)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["strided", "batched", "batched_strided"])
def test_layouts(op, layout, fast_backend, dtype):
    rng = np.random.default_rng(1)
    shape = (3, 9, 21) if layout.startswith("batched") else (9, 21)
    X = gaussian(rng, shape, dtype)
    if layout.endswith("strided"):
        X = non_contiguous(X)
    check(op, X, fast_backend)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(5, 13), (9, 8), (3, 4, 17)], ids=str)
def test_nonfinite_rows(op, shape, fast_backend, dtype):
    """NaN / +-Inf / 1e38 rows (up to f) are outliers: every backend agrees with the reference."""
    n = shape[-2]
    X = byzantine_rows(np.random.default_rng(2), shape, dtype, robust_f(n))
    with np.errstate(over="ignore", invalid="ignore"):
        check(op, X, fast_backend)


@pytest.mark.parametrize("op", OPS)
def test_thread_count_does_not_change_results(op, fast_backend, dtype, monkeypatch):
    """One thread and two threads give the same bits (OpenMP/prange split by tiles only)."""
    import numba

    monkeypatch.setattr(_config, "PARALLEL_MIN_ELEMENTS", 0)  # threads even for this small input
    if fast_backend == "cuda":
        pytest.skip("host threads do not enter the cuda backend's results")
    X = gaussian(np.random.default_rng(3), (2, 11, 101), dtype)
    call, _ = OPS[op]
    results = []
    for threads in (1, 2):
        if fast_backend == "numba":
            numba.set_num_threads(threads)
        else:
            from byzkern.backends import cpu as cpu_backend
            cpu_backend.set_threads(threads)
        try:
            results.append(np.asarray(call(X, 11, backend=fast_backend)))
        except NotImplementedError as exc:
            pytest.skip(str(exc))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            if fast_backend == "cpu":
                cpu_backend.set_threads(0)  # back to the default
    np.testing.assert_array_equal(results[0], results[1])



def test_small_inputs_run_on_one_thread_and_restore_the_setting():
    """Below PARALLEL_MIN_ELEMENTS a kernel runs on one thread; the caller's setting survives,
    also when the kernel raises."""
    import numba

    from byzkern.backends import serial_when_small

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two threads")

    def spy(X):
        seen.append(numba.get_num_threads())
        if X.size == 1:
            raise ValueError("inside the kernel")
        return X.sum()

    seen, kernels = [], {"mean": spy}
    serial_when_small(kernels, numba.get_num_threads, numba.set_num_threads)
    numba.set_num_threads(2)
    try:
        kernels["mean"](np.ones(10))
        kernels["mean"](np.ones(_config.PARALLEL_MIN_ELEMENTS))
        with pytest.raises(ValueError, match="inside the kernel"):
            kernels["mean"](np.ones(1))
        assert seen == [1, 2, 1] and numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("tile", [8, 4096])
def test_cclip_takes_the_median_and_its_distances_in_one_pass(backend, tile, dtype, monkeypatch):
    """cclip's kernel from v0=None takes, column range by column range, the median and every
    row's distance to it. Against the reference from its own cwmed, for n on both sides of the
    unrolled median networks (cpu 32 rows, numba 48), ranges of 8 columns and of 4096 with a
    tail, a NaN row and an Inf row, and 0..3 steps: the median alone, the start read from and
    the result written to one buffer, and steps between."""
    from _harness import assert_close

    module, reason = _dispatch.load(backend)
    if module is None:
        pytest.skip(f"backend {backend} unavailable: {reason}")
    monkeypatch.setattr(_config, "COL_TILE", tile)
    rng = np.random.default_rng(13)
    for n in (1, 2, 7, 33, 49):
        X = rng.standard_normal((2, n, 2 * 4096 + 45)).astype(dtype)
        X[1, 0, 5] = np.nan
        X[1, n - 1, 4096] = -np.inf
        for iters in range(4):
            v, overflowed = module.cclip(X, 100.0, iters, None)
            want, want_overflowed = reference.cclip(X, 100.0, iters, reference.cwmed(X))
            assert_close(v, want)
            np.testing.assert_array_equal(overflowed, want_overflowed)


@pytest.mark.parametrize("iters", [1, 2])
def test_cclip_multiplies_a_zero_factor_by_an_infinite_difference(fast_backend, dtype, iters):
    """A finite row at infinite distance from the centre gets factor 0, and adds 0 * (x - v):
    NaN where the difference is infinite, as the reference computes it (a row with a non-finite
    entry adds nothing). Here two of four rows are non-finite, so the median start is +Inf in the
    first column. A far start whose differences overflow float64 is another matter: the item
    runs again scaled down (aggregators._cclip_again), where nothing overflows, and each row
    steps tau / n toward itself from -max, which rounds back to -max."""
    X = np.array([[np.nan, -0.13], [np.inf, 0.1], [-0.54, 0.36], [1.3, 0.95]], dtype)
    with np.errstate(invalid="ignore"):
        got = assert_backend_matches_reference(lambda Y, **kw: bk.cclip(Y, tau=1.0, iters=iters, **kw), X,
                                               fast_backend)
    assert np.isnan(got[0])
    big = np.finfo(dtype).max
    far = np.array([[big, 1.0], [0.5, 2.0], [0.25, 3.0]], dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        got = assert_backend_matches_reference(
            lambda Y, **kw: bk.cclip(Y, tau=1.0, iters=iters, init=np.array([-big, 0.0], dtype), **kw), far,
            fast_backend)
    np.testing.assert_array_equal(got[0], -big)


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_geomed_from_a_nan_start_stays_nan(fast_backend, dtype, eps):
    """Every distance from a NaN start is NaN, and so is every weight: max(nu, NaN) is NaN, as
    NumPy's maximum gives it in the reference, not nu, which would step to the mean."""
    X = gaussian(np.random.default_rng(17), (5, 33), dtype)
    init = np.zeros(33, dtype)
    init[7] = np.nan
    got = assert_backend_matches_reference(lambda Y, **kw: bk.geomed(Y, init=init, maxiter=3, eps=eps, nu=0.1, **kw),
                                           X, fast_backend)
    assert np.isnan(got).all()


@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_mean_work_items_follow_the_thread_count_with_the_same_bits(backend, dtype, monkeypatch):
    """mean's work items span up to MEAN_TILE columns, but are no fewer than the threads: one
    and two threads split these rows into one and two items, with the reference's bits."""
    import numba

    from byzkern import backends

    module, reason = _dispatch.load(backend)
    if module is None:
        pytest.skip(f"backend {backend} unavailable: {reason}")
    monkeypatch.setattr(_config, "MEAN_TILE", 1 << 16)
    monkeypatch.setattr(_config, "PARALLEL_MIN_ELEMENTS", 0)
    assert backends.mean_tile(1, 10**6, 2) == 1 << 16
    assert backends.mean_tile(1, 10**5, 16) == 6272  # 1e5 / 16 in whole cache lines
    assert backends.mean_tile(4, 3001, 2) == 3008
    X = gaussian(np.random.default_rng(16), (1, 7, 3001), dtype)
    set_threads = numba.set_num_threads if backend == "numba" else module.set_threads
    results = []
    try:
        for threads in (1, 2):
            set_threads(threads)
            results.append(module.mean(X))
    finally:
        set_threads(numba.config.NUMBA_NUM_THREADS if backend == "numba" else 0)
    for result in results:
        np.testing.assert_array_equal(result, reference.mean(X))


def _shared_prefix_tables(rng, n):
    """mix_rows tables whose lists share prefixes as NNM's do after shared_prefix_order, and the
    shapes that make the walk's bookkeeping branch: equal lists, a list that is another's prefix
    (-1 entries), prefixes that shrink then grow again (a kept sum two steps back), no sharing."""
    base = rng.permutation(n)
    tables = [
        np.stack([base[:n - 2]] * 4),                                    # four equal lists
        np.stack([np.r_[base[:3], -1, -1], base[:5], np.r_[base[:4], -1]]),  # prefixes of one another
        np.stack([np.r_[base[:5], base[6]], np.r_[base[:5], base[7]], np.r_[base[:3], base[8:11]],
                  np.r_[base[:5], base[9]], base[[2, 1, 0, 3, 4, 5]]]),   # 5, 3, then 5 shared again
        np.stack([rng.permutation(n)[:6] for _ in range(5)]),            # little shared
    ]
    return [t[None].astype(np.int64) for t in tables]


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("n", [12, 40, 70], ids=lambda n: f"n{n}")
def test_mix_rows_sums_shared_prefixes_with_the_reference_bits(backend, n, dtype, monkeypatch):
    """mix_rows walks the trie of the outputs' row lists, each output starting from the sum of
    the prefix it shares with the one before: every sum is still its rows added in idx order, so
    the bits are the reference's, with the default tile (whole register strips: n picks their
    width) and the session's small one, batched with a different table per item, and for NNM's
    own tables in shared_prefix_order."""
    from byzkern.preaggregators import shared_prefix_order

    module, why = _dispatch.load(backend)
    if module is None:
        pytest.skip(why)
    rng = np.random.default_rng(n)
    X = gaussian(rng, (2, n, 301), dtype) * np.exp(rng.uniform(-8, 8, (2, n, 1))).astype(dtype)
    for tile in (4096, 8):
        monkeypatch.setattr(_config, "COL_TILE", tile)
        tables = _shared_prefix_tables(rng, n)
        for idx in tables:
            np.testing.assert_array_equal(module.mix_rows(X[:1], idx), reference.mix_rows(X[:1], idx))
        batched = np.concatenate([tables[2], tables[3]])  # a different table per item
        np.testing.assert_array_equal(module.mix_rows(X, batched), reference.mix_rows(X, batched))
        nearest = np.argsort(rng.random((2, n, n)), axis=2)[:, :, :n - n // 5]
        ordered = shared_prefix_order(nearest, n)
        assert (np.sort(ordered, axis=2) == np.sort(nearest, axis=2)).all()
        np.testing.assert_array_equal(module.mix_rows(X, ordered), reference.mix_rows(X, ordered))


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("shape", [(1, 40, 1), (2, 64, 1), (2, 33, 3), (1, 1, 1)], ids=str)
def test_rows_are_added_in_order_at_every_width(backend, shape, dtype):
    """mean, mix_rows and mean_std give the reference's bits at d = 1 as at any d: the kernels
    add rows one after another, as the reference does. NumPy's own reduction, pairwise once the
    rows lie contiguous (d = 1), would round differently."""
    module, why = _dispatch.load(backend)
    if module is None:
        pytest.skip(why)
    B, n, d = shape
    rng = np.random.default_rng(n * d)
    X = gaussian(rng, shape, dtype) * np.exp(rng.uniform(-8, 8, (B, n, 1))).astype(dtype)
    idx = np.argsort(rng.random((B, n + 3, n)), axis=2)
    idx[:, :, 1:] = np.where(rng.random((B, n + 3, n - 1)) < 0.3, -1, idx[:, :, 1:])
    np.testing.assert_array_equal(module.mean(X), reference.mean(X))
    np.testing.assert_array_equal(module.mix_rows(X, idx), reference.mix_rows(X, idx))
    for ddof in (0, 1)[:n]:
        for got, want in zip(module.mean_std(X, ddof), reference.mean_std(X, ddof)):
            np.testing.assert_array_equal(got, want)


def test_shared_prefix_order_shares_what_nnm_tables_have_in_common():
    """With f rows far from the rest, the honest outputs keep the same rows and get one list:
    first the rows every output keeps (ascending), then the rest of the honest rows; the trie
    has fewer than two edges per output, against n - f each summed on its own."""
    from byzkern.distances import nearest_including_self
    from byzkern.preaggregators import shared_prefix_order

    rng = np.random.default_rng(4)
    n, f = 20, 4
    X = rng.standard_normal((n, 50))
    X[:f] += 100.0
    D = ((X[:, None] - X[None]) ** 2).sum(axis=2)
    ordered = shared_prefix_order(nearest_including_self(D[None], n - f), n)[0]
    honest = ordered[f:]
    assert (honest == honest[0]).all()
    np.testing.assert_array_equal(np.sort(honest[0]), np.arange(f, n))
    kept_by_all = np.flatnonzero((np.sort(ordered, axis=1)[:, :, None] == np.arange(n)).any(axis=1).all(axis=0))
    np.testing.assert_array_equal(honest[0][:len(kept_by_all)], kept_by_all)
    lists = sorted(map(tuple, ordered))
    edges = len(lists[0]) + sum(len(b) - next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), len(b))
                                for a, b in zip(lists, lists[1:]))
    assert edges < 2 * n
