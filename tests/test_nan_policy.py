"""NaN/Inf rows under each nan_policy (SPEC §8)."""
import numpy as np
import pytest

import byzkern as bk

rng = np.random.default_rng(0)
HONEST = rng.standard_normal((7, 6))
F = 3


def poisoned(values=(np.nan, np.inf, -np.inf)):
    X = np.vstack([HONEST, np.zeros((F, 6))])
    for i, v in enumerate(values):
        X[7 + i] = v
    X[7, 0] = 5.0  # partly non-finite row
    return X


ROBUST = {
    "cwmed": bk.cwmed(), "cwtm": bk.cwtm(f=F), "meamed": bk.meamed(f=F),
    "geomed": bk.geomed(maxiter=50), "krum": bk.krum(f=F), "multikrum": bk.multikrum(f=F),
    "cclip": bk.cclip(tau=1.0, iters=3), "norm_filter": bk.norm_filter(f=F),
    "nnm+cwtm": bk.Pipeline(bk.nnm(f=F), bk.cwtm(f=F)),
    "bucketing+cwmed": bk.Pipeline(bk.bucketing(s=1, seed=0), bk.cwmed()),
    "clip+cwtm": bk.Pipeline(bk.clip(tau=1.0), bk.cwtm(f=F)),
}


@pytest.mark.parametrize("name", ROBUST)
def test_outlier_policy_keeps_robust_rules_finite(name):
    with np.errstate(invalid="ignore", over="ignore"):
        out = ROBUST[name](poisoned())
    assert np.all(np.isfinite(out)), out


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("name", [*ROBUST, "geomed from zero"])
def test_far_finite_rows_keep_robust_rules_finite_without_a_warning(name, backend):
    """Byzantine rows with entries of 1e154 and 1e200: their squared distances to the honest rows
    are finite (about 1e308) or not, and sums of them overflow; a warning would be an error
    here, as on a server that runs with warnings as errors."""
    X = np.vstack([HONEST, np.zeros((F, 6))])
    X[-3, 0], X[-2], X[-1, 0] = 1e154, -1e154, 1e200
    rule = bk.geomed(init="zero", maxiter=20) if name == "geomed from zero" else ROBUST[name]
    out = rule(X, backend=backend)
    assert np.all(np.isfinite(out)), out
    if name != "geomed":  # from the mean, RFA's stopping rule leaves z far out (its docstring)
        assert np.abs(out).max() < 10, out


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("k", range(len(HONEST), len(HONEST) + F))
def test_krum_with_k_past_the_honest_rows_still_picks_a_finite_row(backend, k):
    """With k >= n - f every score adds a distance to a non-finite row, so all are infinite; the
    honest rows' add fewer of them (k - 6 against k), and among themselves rank by the distances
    to the other honest rows: Krum over the honest rows alone with k = 6 picks the same."""
    X = np.roll(poisoned(), F, axis=0)  # the non-finite rows first: ties go to the lowest index
    expected = bk.krum(HONEST, f=0, k=len(HONEST) - 1)
    np.testing.assert_array_equal(bk.krum(X, f=F, k=k, backend=backend), expected)
    np.testing.assert_allclose(bk.multikrum(X, f=F, k=k, backend=backend), HONEST.mean(axis=0),
                               rtol=1e-14)


TINY_OPS = {
    **ROBUST, "pairwise_sqdist": bk.pairwise_sqdist(), "norm_filter q=3": bk.norm_filter(f=F, q=3),
    "clip to the least subnormal": bk.clip(tau=5e-324), "topk": bk.topk(k=3), "randk": bk.randk(k=3, seed=0),
    "qsgd": bk.qsgd(levels=4, seed=0), "natural": bk.natural(seed=0), "scaled_sign": bk.scaled_sign(),
    "alie": bk.alie(f=F), "ipm": bk.ipm(f=F), "gaussian": bk.gaussian(f=F, std=1e-300, seed=0),
}


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e-310), (np.float64, 1e-160), (np.float32, 1e-40)])
def test_tiny_rows_raise_nothing_where_numpy_is_asked_to_raise(backend, dtype, scale):
    """Rows near or below the smallest normal number underflow on the host as in the kernels,
    silently: under np.errstate(all="raise") the reference, and the host steps of the others,
    raised FloatingPointError (underflow in a square, a product or a cast)."""
    X = (HONEST * scale).astype(dtype)
    for name, op in TINY_OPS.items():
        quiet = op(X, backend=backend)
        with np.errstate(all="raise"):
            loud = op(X, backend=backend)
            if isinstance(loud, bk.Compressed):
                loud, quiet = loud.decompress(backend=backend), quiet.decompress(backend=backend)
        np.testing.assert_array_equal(loud, quiet, err_msg=name)


@pytest.mark.parametrize("name", ["cwmed", "cwtm", "meamed"])
def test_outlier_policy_ignores_position(name):
    X = poisoned()
    perm = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(ROBUST[name](X), ROBUST[name](X[perm]), rtol=1e-12)


@pytest.mark.parametrize("name", ROBUST)
def test_raise_policy(name):
    with pytest.raises(ValueError, match="nan_policy='raise'"):
        ROBUST[name](poisoned(), nan_policy="raise")


def test_propagate_policy_coordinatewise_marks_nan_columns_only():
    X = HONEST.copy()
    X[2, 1] = np.nan
    X[3, 4] = np.inf
    for rule in (bk.cwmed(), bk.cwtm(f=2), bk.meamed(f=2)):
        out = rule(X, nan_policy="propagate")
        assert np.isnan(out[1]) and np.isfinite(np.delete(out, 1)).all()
        np.testing.assert_array_equal(np.delete(out, 1), np.delete(rule(X), 1))
    assert np.isnan(np.median(X, axis=0)[1])  # the convention followed: numpy's


@pytest.mark.parametrize("rule", [bk.krum(f=2), bk.multikrum(f=2), bk.geomed(), bk.cclip(tau=1.0),
                                  bk.norm_filter(f=2), bk.nnm(f=2), bk.pairwise_sqdist()])
def test_propagate_policy_row_rules_give_nan(rule):
    X = HONEST.copy()
    X[2, 1] = np.inf
    with np.errstate(invalid="ignore"):
        out = rule(X, nan_policy="propagate")
    assert np.isnan(out).all()
    assert not np.isnan(rule(HONEST, nan_policy="propagate")).any()


def test_propagate_policy_batched_marks_only_the_bad_item():
    batch = np.stack([HONEST, HONEST.copy()])
    batch[1, 0, 0] = np.nan
    out = bk.krum(batch, f=2, nan_policy="propagate")
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_propagate_clip_marks_rows():
    X = HONEST.copy()
    X[2, 1] = np.inf
    out = bk.clip(X, tau=0.5, nan_policy="propagate")
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    assert np.array_equal(bk.clip(X, tau=0.5)[2], X[2])  # "outlier" passes it through


def test_mean_is_not_robust_under_any_policy():
    assert np.isnan(bk.mean(poisoned())).any()


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("q, scale", [(1000, 10.0), (1e308, 1.0), (2, 1e200), (1100, 1e-3)])
def test_norm_filter_drops_a_non_finite_row_before_finite_rows_whose_sum_of_powers_overflows(backend, q, scale):
    """Every finite row's sum of |x|^q overflows (or underflows to 0) here; a non-finite row
    still goes first, and the finite rows rank by their true q-norms (taken in logs below)."""
    X = np.vstack([np.full((1, 6), np.nan), HONEST * scale])
    X[0, 3] = 1.0
    with np.errstate(over="ignore"):  # q * log|x| too, at q = 1e308: +-Inf orders the rows as well
        log_norms = [np.logaddexp.reduce(q * np.log(np.abs(row))) / q for row in X[1:]]
        largest = 1 + int(np.argmax(log_norms))
        assert largest != len(X) - 1  # ties by index would drop the last row instead
        got = bk.norm_filter(X, f=2, q=q, backend=backend)
    np.testing.assert_allclose(got, np.delete(X, [0, largest], axis=0).mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
def test_norm_filter_drops_rows_whose_norm_is_past_float64s_range_without_a_warning(backend):
    X = np.vstack([HONEST, np.full((2, 6), np.finfo(np.float64).max)])
    X[-1, ::2] *= -1
    np.testing.assert_allclose(bk.norm_filter(X, f=2, backend=backend), HONEST.mean(axis=0), rtol=1e-14)


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
def test_norm_filter_ranks_rows_whose_sum_of_squares_is_subnormal_by_their_true_norms(backend):
    """Row 1 is row 2 lengthened by 1e-9; at 1e-160 their squares are subnormal, and the sums tie
    (ties drop the higher index, row 2). Taken through their largest entries they do not."""
    v = np.random.default_rng(1).standard_normal(40)
    X = np.vstack([np.full(40, np.nan), v * (1 + 1e-9), v, 0.5 * v]) * 1e-160
    got = bk.norm_filter(X, f=2, backend=backend)
    np.testing.assert_allclose(got, X[2:].mean(axis=0), rtol=1e-13)
