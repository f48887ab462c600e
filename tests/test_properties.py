"""Properties of the rules, with hypothesis, on the reference and the default backend."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import byzkern as bk

finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@st.composite
def rounds(draw, min_n=3, max_n=9, max_d=6):
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    return draw(arrays(np.float64, (n, d), elements=finite))


def f_for(n):
    return (n - 1) // 2


SYMMETRIC = {
    "mean": lambda X: bk.mean(X),
    "cwmed": lambda X: bk.cwmed(X),
    "cwtm": lambda X: bk.cwtm(X, f=f_for(len(X))),
    "meamed": lambda X: bk.meamed(X, f=f_for(len(X))),
    "geomed": lambda X: bk.geomed(X, maxiter=20, eps=0.0),
    "cclip": lambda X: bk.cclip(X, tau=1.0, iters=2),
}


@pytest.mark.parametrize("rule", SYMMETRIC)
@settings(max_examples=40, deadline=None)
@given(X=rounds(), data=st.data())
def test_permutation_invariance(rule, X, data):
    perm = data.draw(st.permutations(range(len(X))))
    a, b = SYMMETRIC[rule](X), SYMMETRIC[rule](X[list(perm)])
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * (1 + np.abs(X).max()))


def test_nnm_pipeline_is_permutation_invariant_without_distance_ties():
    """NNM breaks distance ties by index (seed 004 leaves them open), so only tie-free data."""
    rng = np.random.default_rng(4)
    pipeline = bk.Pipeline(bk.nnm(f=3), bk.cwtm(f=3))
    for _ in range(20):
        X = rng.standard_normal((8, 5))
        np.testing.assert_allclose(pipeline(X), pipeline(X[rng.permutation(8)]), rtol=1e-12)


@pytest.mark.parametrize("rule", [*SYMMETRIC, "krum", "multikrum"])
@settings(max_examples=40, deadline=None)
@given(X=rounds(), shift=arrays(np.float64, 6, elements=finite))
def test_translation_equivariance(rule, X, shift):
    call = SYMMETRIC.get(rule) or (lambda Y: getattr(bk, rule)(Y, f=max(0, min(f_for(len(Y)), len(Y) - 3))))
    t = shift[: X.shape[1]]
    scale = 1 + np.abs(X).max() + np.abs(t).max()
    np.testing.assert_allclose(call(X + t), call(X) + t, rtol=1e-9, atol=1e-8 * scale)


@pytest.mark.parametrize("rule", ["cwmed", "cwtm", "meamed"])
@settings(max_examples=60, deadline=None)
@given(honest=rounds(min_n=3, max_n=7), data=st.data())
def test_within_honest_range_under_f_arbitrary_rows(rule, honest, data):
    """cwmed and cwtm stay inside the honest rows' per-coordinate [min, max]. meamed may keep a
    Byzantine value that is closer to the median than some honest value, so its bound is the
    honest range widened by its own width on each side."""
    h, d = honest.shape
    f = data.draw(st.integers(0, h - 1))  # n = h + f > 2f
    bad_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.just(1e300))
    byzantine = data.draw(arrays(np.float64, (f, d), elements=bad_values))
    X = np.vstack([honest, byzantine])
    X = X[data.draw(st.permutations(range(len(X))))]
    out = getattr(bk, rule)(X) if rule == "cwmed" else getattr(bk, rule)(X, f=f)
    assert np.all(np.isfinite(out))
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    if rule == "meamed":
        lo, hi = lo - (hi - lo), hi + (hi - lo)
    assert np.all(out >= lo - 1e-9) and np.all(out <= hi + 1e-9)


@settings(max_examples=40, deadline=None)
@given(X=rounds())
def test_cwtm_with_f0_is_mean(X):
    np.testing.assert_allclose(bk.cwtm(X, f=0), bk.mean(X), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(X=rounds(min_n=4))
def test_multikrum_with_m1_is_krum(X):
    f = max(0, min(f_for(len(X)), len(X) - 3))
    np.testing.assert_array_equal(bk.multikrum(X, f=f, m=1), bk.krum(X, f=f))


@settings(max_examples=30, deadline=None)
@given(t=arrays(np.float64, st.integers(1, 4).map(lambda k: 2 * k + 1),
                elements=st.floats(-100, 100, width=64), unique=True),
       direction=arrays(np.float64, 3, elements=st.floats(-1, 1, width=64)).filter(
           lambda v: np.linalg.norm(v) > 0.1))
def test_geomed_of_collinear_points_is_their_median(t, direction):
    """On a line the geometric median is the median point (odd count, distinct points)."""
    X = np.outer(t, direction)
    z = bk.geomed(X, maxiter=5000, eps=0.0, nu=1e-12)
    expected = np.median(t) * direction
    assert np.linalg.norm(z - expected) <= 1e-3 * (1 + np.abs(t).max())


def test_cwtm_agrees_with_scipy_trim_mean():
    stats = pytest.importorskip("scipy.stats")
    X = np.random.default_rng(0).standard_normal((11, 50))
    for f in range(6):
        np.testing.assert_allclose(bk.cwtm(X, f=f), stats.trim_mean(X, (f + 0.5) / 11, axis=0),
                                   rtol=1e-12)


def test_geomed_minimizes_the_objective_found_by_scipy():
    optimize = pytest.importorskip("scipy.optimize")
    X = np.random.default_rng(1).standard_normal((9, 4)) * [1, 2, 3, 4]
    w = np.arange(1.0, 10.0)
    objective = lambda z: float(w @ np.linalg.norm(X - z, axis=1))
    best = optimize.minimize(objective, X.mean(axis=0), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    z = bk.geomed(X, weights=w, maxiter=1000, eps=1e-15, nu=1e-12)
    assert objective(z) <= objective(best) + 1e-7
    np.testing.assert_allclose(z, best, atol=1e-4)
