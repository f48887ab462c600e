"""Bucketing, resampling, Pipeline and NNM: structure, determinism, the pinned random streams,
and where NNM orders its neighbour lists; clip at the ends of float64's range."""
import numpy as np
import pytest

import byzkern as bk
from _harness import clipped, run_or_skip
from byzkern.preaggregators import fisher_yates, resampling_draws


def test_philox_permutation_is_pinned():
    """The stream every backend must reproduce (Philox4x32-10 + Fisher-Yates, seed 42)."""
    assert fisher_yates(42, "bucketing", 0, 7).tolist() == [1, 5, 3, 4, 0, 2, 6]
    assert fisher_yates(42, "bucketing", 1, 7).tolist() == [3, 1, 5, 6, 0, 4, 2]
    assert resampling_draws(5, 0, 5, 2).tolist() == [[1, 4], [2, 1], [2, 4], [0, 0], [3, 3]]


@pytest.mark.parametrize("n,s", [(7, 2), (6, 3), (5, 5), (5, 1), (10, 4)])
def test_bucketing_partitions_rows(n, s):
    out = bk.bucketing(np.eye(n), s=s, seed=3)  # row j of the output: indicator of bucket j / size
    buckets = -(-n // s)
    assert out.shape == (buckets, n)
    sizes = np.rint(1 / out.max(axis=1)).astype(int)
    assert sizes.tolist() == [s] * (n // s) + ([n % s] if n % s else [])
    np.testing.assert_allclose((out * sizes[:, None]).sum(axis=0), np.ones(n))  # each row once


def test_bucketing_follows_the_permutation():
    X = np.arange(7.0)[:, None]
    perm = fisher_yates(42, "bucketing", 0, 7)
    expected = [X[perm[0:2]].mean(), X[perm[2:4]].mean(), X[perm[4:6]].mean(), X[perm[6:]].mean()]
    np.testing.assert_allclose(bk.bucketing(X, s=2, seed=42)[:, 0], expected)


def test_bucketing_seed_and_rng():
    X = np.random.default_rng(0).standard_normal((9, 4))
    np.testing.assert_array_equal(bk.bucketing(X, s=2, seed=1), bk.bucketing(X, s=2, seed=1))
    assert not np.array_equal(bk.bucketing(X, s=2, seed=1), bk.bucketing(X, s=2, seed=2))
    a = bk.bucketing(X, s=2, rng=np.random.default_rng(5))
    b = bk.bucketing(X, s=2, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_batched_items_get_their_own_permutations():
    X = np.stack([np.arange(6.0)[:, None]] * 2)
    out = bk.bucketing(X, s=3, seed=0)
    assert not np.array_equal(out[0], out[1])


@pytest.mark.parametrize("n,s", [(5, 2), (8, 3), (4, 4), (6, 1)])
def test_resampling_draws_every_row_s_times(n, s):
    out = bk.resampling(np.eye(n), s=s, seed=11)
    assert out.shape == (n, n)
    np.testing.assert_allclose(out.sum(axis=0) * s, np.full(n, s))  # each row drawn s times
    np.testing.assert_allclose(out.sum(axis=1), np.ones(n))  # each output is a mean of s draws


def test_resampling_can_repeat_a_row_within_a_round():
    draws = resampling_draws(5, 0, 5, 2)
    assert any(len(set(r)) < 2 for r in draws)  # seed 003's sampler allows it (Algorithm 1)


def test_pipeline_composes_and_has_a_repr():
    X = np.random.default_rng(1).standard_normal((9, 5))
    p = bk.Pipeline(bk.nnm(f=2), bk.cwtm(f=2))
    np.testing.assert_allclose(p(X), bk.cwtm(bk.nnm(X, f=2), f=2))
    assert repr(p) == "Pipeline(nnm(f=2), cwtm(f=2))"
    batch = np.stack([X, 2 * X])
    np.testing.assert_allclose(p(batch)[1], p(2 * X))


def test_rule_objects():
    r = bk.cwtm(f=1)
    assert isinstance(r, bk.Rule) and r == bk.cwtm(f=1) and r != bk.cwtm(f=2)
    X = np.random.default_rng(2).standard_normal((5, 3))
    np.testing.assert_array_equal(r(X), bk.cwtm(X, f=1))
    with pytest.raises(TypeError, match="cwtm"):
        bk.cwtm(g=1)
    # array options compare by identity (their == is elementwise); lists by their items
    start = np.zeros(3)
    rules = [bk.cclip(tau=1.0, init=start), bk.geomed(weights=[1.0, 2.0]), bk.geomed(init=np.ones(3))]
    assert bk.cclip(tau=1.0, init=start) in rules and bk.cclip(tau=1.0, init=np.zeros(3)) not in rules
    assert bk.geomed(weights=[1.0, 2.0]) == rules[1] and bk.geomed(weights=[1.0, 3.0]) != rules[1]
    assert len({*rules, bk.cclip(tau=1.0, init=start), bk.geomed(weights=(1.0, 2.0))}) == 3
    assert bk.clip(tau=np.array(0.5)) == bk.clip(tau=np.array(0.5)) == bk.clip(tau=0.5)  # 0-d: by number
    with pytest.raises(TypeError):
        bk.Pipeline(3)
    with pytest.raises(ValueError):
        bk.Pipeline()


@pytest.mark.parametrize("d,ordered", [(300, True), (299, False)])
def test_nnm_orders_its_neighbour_lists_on_the_cpu_from_the_threshold_on(d, ordered, monkeypatch):
    # The CPU kernels share the sums of common prefixes (tests/test_backends.py); cuda's
    # mix_rows does not, and there nnm leaves the table as it is (tests/test_cuda.py).
    from byzkern import _config, preaggregators

    original, calls = preaggregators.shared_prefix_order, []

    def recorded(idx, n):
        calls.append(idx.shape)
        return original(idx, n)

    monkeypatch.setattr(preaggregators, "shared_prefix_order", recorded)
    monkeypatch.setattr(_config, "SHARED_PREFIX_MIN_COLUMNS", 300)
    X = np.random.default_rng(4).standard_normal((2, 9, d))
    np.testing.assert_allclose(bk.nnm(X, f=2), bk.nnm(X, f=2, backend="reference"), rtol=1e-12)
    assert calls == ([(2, 9, 7)] * 2 if ordered else [])


@pytest.mark.parametrize("entries, tau", [(1e200, 1.0), (1e300, 1e250), (1e-170, 0.5), (1e-170, 1e-172),
                                          (1e-160, 1e-160), (1.5e308, 1.0), (1e38, 1e-290)])
def test_clip_gives_float64_rows_whose_sum_of_squares_overflows_or_underflows_their_true_norm(fast_backend, entries,
                                                                                             tau):
    rng = np.random.default_rng(5)
    X = rng.uniform(-1.0, 1.0, (2, 5, 40)) * entries
    X[0, 1] = rng.standard_normal(40)  # an ordinary row: the kernel's own result stands
    X[0, 2] = 0.0
    X[1, 3, 7] = np.inf  # passes unchanged, for the aggregator to reject
    X[1, 4, :39] *= 1e-300  # one large entry among underflowing ones
    before = X.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # the zero and Inf rows
        want = np.where(np.isfinite(X).all(axis=-1, keepdims=True), clipped(X, tau), X)
    for backend in ("reference", fast_backend):
        with np.errstate(over="ignore"):
            got = run_or_skip(bk.clip, X, backend, tau=tau)
        np.testing.assert_array_equal(X, before)
        for b in range(2):
            for i in range(5):
                np.testing.assert_allclose(got[b, i], want[b, i], rtol=1e-13, atol=0,
                                           err_msg=f"{backend}: row {b}, {i}")
