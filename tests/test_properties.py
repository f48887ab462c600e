"""Properties of the rules, with hypothesis, on the reference and the default backend."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import byzkern as bk
from _harness import run_or_skip

finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)
#: multiples of 1/8: sums of them are exact, so a translation cannot merge two distinct values
on_grid = st.integers(-8000, 8000).map(lambda i: i / 8)


@st.composite
def rounds(draw, min_n=3, max_n=9, max_d=6, elements=finite):
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    return draw(arrays(np.float64, (n, d), elements=elements))


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
@given(X=rounds(elements=on_grid), shift=arrays(np.float64, 6, elements=on_grid))
def test_translation_equivariance(rule, X, shift):
    """On a grid: with arbitrary floats, X + t can round 0 and 3e-56 to one value, and Krum's
    tie rule then picks another row (found in CI runs)."""
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


@pytest.mark.parametrize("scale", [2.0**1020, 2.0**-1060])
def test_geomed_weights_count_by_their_ratios_at_any_scale(fast_backend, scale):
    """Weights near 1e308 made the sums of weights overflow (z was NaN after 100 steps), and
    subnormal ones lost digits (another z, 100 steps). Whole weights times a power of two keep
    their ratios exactly: the point and the steps are those of the weights themselves, the
    objective theirs times the power."""
    X = np.random.default_rng(5).standard_normal((2, 7, 5))
    w = np.random.default_rng(6).integers(1, 9, (2, 7)).astype(np.float64)

    def run(weights):
        return run_or_skip(lambda Y, **kw: bk.geomed(Y, **kw), X, fast_backend, weights=weights, return_info=True)

    z, info = run(w)
    z_scaled, info_scaled = run(w * scale)
    np.testing.assert_array_equal(z_scaled, z)
    np.testing.assert_array_equal(info_scaled["iterations"], info["iterations"])
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(info_scaled["objective"], info["objective"] * scale, rtol=1e-12)


def test_geomed_stops_far_out_by_rfas_rule_and_not_with_eps_0_or_a_robust_start(fast_backend):
    """The docstring's case: 3 rows of 1e38 among 11. The objective, about 3e38 sqrt(7), changes
    by less than 1e-6 of itself per step long before z leaves the far side, where the mean put
    it; eps=0, or a start at the median, ends inside the honest rows' box."""
    X = np.random.default_rng(1).standard_normal((11, 7)).astype(np.float32)
    X[:3] = 1e38
    low, high = X[3:].min(axis=0), X[3:].max(axis=0)

    def geomed(**options):
        z, info = run_or_skip(lambda Y, **kw: bk.geomed(Y, return_info=True, **kw), X, fast_backend, **options)
        return z, int(info["iterations"])

    z, iterations = geomed()
    assert np.abs(z).min() > 1e29 and iterations < 100
    for z, iterations in (geomed(eps=0.0), geomed(init=bk.cwmed(X))):
        assert ((low <= z) & (z <= high)).all(), (z, iterations)


@pytest.mark.parametrize("outlier", [1e200, 1e300, np.finfo(np.float64).max])
@pytest.mark.parametrize("init", ["mean", "zero", "array"])
def test_geomed_past_1e154_is_the_point_it_is_with_the_outlier_at_1e50(fast_backend, init, outlier):
    """The pull of a far outlier on the geometric median is a unit vector however far it is, so
    the point tends to a limit, reached to within rounding at 1e50. Past 1e154 the squared
    distances overflow (with init="mean", from the start: z was 0/0 = NaN); the point must stay
    the limit. Batch item 0 has no outlier: it takes the usual path."""
    H = np.random.default_rng(2).standard_normal((2, 9, 3))
    start = H[:, 0] + 1.0 if init == "array" else init

    def geomed(far, backend):
        X = np.concatenate([H, np.zeros((2, 1, 3))], axis=1)
        X[1, -1, 0] = far
        options = dict(maxiter=400, eps=0.0, init=start, return_info=True)
        with np.errstate(over="ignore", invalid="ignore"):  # the reference's overflowing distances
            return run_or_skip(lambda Y, **kw: bk.geomed(Y, **kw)[0], X, backend, **options), \
                run_or_skip(lambda Y, **kw: bk.geomed(Y, **kw)[1]["objective"], X, backend, **options)

    limit, _ = geomed(1e50, "reference")
    z, objective = geomed(outlier, fast_backend)
    np.testing.assert_allclose(z, limit, rtol=1e-9, atol=1e-12)
    assert np.isfinite(objective[0]) and objective[1] == pytest.approx(outlier, rel=1e-9)


@pytest.mark.parametrize("outlier", [1e200, 1e300, np.finfo(np.float64).max])
@pytest.mark.parametrize("init", [None, "array"])
@pytest.mark.parametrize("iters", [1, 3])
def test_cclip_past_1e154_is_the_point_it_is_with_the_outlier_at_1e50(fast_backend, iters, init, outlier):
    """A far row's step is tau / n along the unit vector toward it, however far it is; past 1e154
    its distance overflows (the kernels then gave it factor 0: no step at all), and the point
    must stay what it is with the row at 1e50. Batch item 0 has no outlier."""
    H = np.random.default_rng(3).standard_normal((2, 9, 3))
    start = H[:, 1] + 0.5 if init == "array" else None

    def cclip(far, backend):
        X = np.concatenate([H, np.zeros((2, 1, 3))], axis=1)
        X[1, -1] = [far, -far / 2, 0.0]
        with np.errstate(over="ignore", invalid="ignore"):  # the reference's overflowing distances
            return run_or_skip(lambda Y, **kw: bk.cclip(Y, **kw), X, backend, tau=1.0, iters=iters, init=start)

    # at float64's max the honest rows, scaled down with it, have subnormal squared distances
    np.testing.assert_allclose(cclip(outlier, fast_backend), cclip(1e50, "reference"), rtol=1e-9, atol=1e-12)


def test_cclip_from_a_start_with_a_nan_is_the_same_on_every_backend(fast_backend):
    """Half the rows have a NaN in column 0, so the median start has one there and every distance
    to it is NaN. That is no overflow (the cpu backend took it for one and ran the item again
    scaled, where a NaN distance's factor, min(1, tau), is another): the backends agree."""
    X = np.array([[[np.nan, -1.32e199], [np.nan, 1.05e199], [-5.36e199, 3.62e199], [1.30e200, 9.47e199]]])
    with np.errstate(over="ignore", invalid="ignore"):  # the reference's overflowing distances
        want = bk.cclip(X, tau=1.0, backend="reference")
        got = run_or_skip(lambda Y, **kw: bk.cclip(Y, **kw), X, fast_backend, tau=1.0)
    np.testing.assert_array_equal(got, want)


# ---- Byzantine robustness: each rule's bound on ||rule(X) - honest mean|| ------------------------

def byzantine_rows_of(kind, H, f, rule, rng):
    """f rows of one kind: arbitrary vectors, or crafted from the honest rows by a SPEC §5 attack."""
    d = H.shape[1]
    if kind == "huge":
        return rng.choice([-1e30, 1e30], size=(f, d))
    if kind == "nan and inf":
        rows = np.full((f, d), np.nan)
        rows[::2] = np.inf
        return rows
    if kind == "copies of one vector":
        return np.tile(rng.standard_normal(d) * 1e3, (f, 1))
    if kind == "optimized alie":
        return bk.optimized(H, f=f, attack="alie", aggregator=rule)
    if kind == "optimized foe":
        return bk.optimized(H, f=f, attack="foe", aggregator=rule)
    if kind == "mimic":
        return bk.Mimic(warmup=1)(H, f=f)
    attack = {"sign_flip": lambda: bk.sign_flip(H, f=f, scale=-5.0), "ipm": lambda: bk.ipm(H, f=f, eps=10.0),
              "foe": lambda: bk.foe(H, f=f, eta=50.0), "alie": lambda: bk.alie(H, f=f),
              "gaussian": lambda: bk.gaussian(H, f=f, std=100.0, seed=int(rng.integers(1 << 30)))}
    return attack[kind]()


BYZANTINE_KINDS = ["huge", "nan and inf", "copies of one vector", "sign_flip", "ipm", "foe", "alie",
                   "gaussian", "mimic", "optimized alie", "optimized foe"]


def krum_bound(H, k, f):
    """The chosen row's k nearest neighbours hold >= k - f honest rows, and its score is at most
    an honest row's, <= k diam^2; so it is within diam sqrt(k / (k - f)) of an honest row."""
    return diameter(H) * (1 + np.sqrt(k / (k - f)))


def diameter(H):
    return max(np.linalg.norm(a - b) for a in H for b in H)


def radius(H):
    return np.linalg.norm(H - H.mean(axis=0), axis=1).max()


def box(H):
    return np.linalg.norm(H.max(axis=0) - H.min(axis=0))


# rule name -> (rule for f, n; bound on the distance to the honest mean; whether the bound is
# per coordinate). Each needs the n of the comment; strategies below draw n accordingly.
ROBUST = {
    # the per-coordinate range of the honest rows (n > 2f)
    "cwmed": (lambda f, n: bk.cwmed(), None),
    "cwtm": (lambda f, n: bk.cwtm(f=f), None),
    # kept values lie within the honest width of the median, itself in the honest range
    "meamed": (lambda f, n: bk.meamed(f=f), "widened range"),
    # Minsker / Lopuhaa-Rousseeuw: the minimizer of sum ||z - x_i|| is within 2h r / (h - f)
    # of any ball of radius r holding the h honest rows (h > f)
    "geomed": (lambda f, n: bk.geomed(maxiter=300, eps=0.0, nu=1e-9),
               lambda H, f: 2 * len(H) * radius(H) / (len(H) - f)),
    "krum": (lambda f, n: bk.krum(f=f), lambda H, f: krum_bound(H, len(H) - 2, f)),
    "multikrum": (lambda f, n: bk.multikrum(f=f), lambda H, f: krum_bound(H, len(H) - 2, f)),
    # kept rows have norm <= the largest honest norm (n - f honest rows of such norm exist)
    "norm_filter": (lambda f, n: bk.norm_filter(f=f),
                    lambda H, f: np.linalg.norm(H, axis=1).max() + np.linalg.norm(H.mean(axis=0))),
    # starts at the cwmed (in the honest box) and each step moves v by at most tau
    "cclip": (lambda f, n: bk.cclip(tau=1.0, iters=3), lambda H, f: box(H) + 3 * 1.0),
    # an honest row's n - f nearest rows are within diam of it, so its NNM output is within
    # 2 diam of the honest mean; cwtm keeps each coordinate within the honest outputs' range
    "nnm + cwtm": (lambda f, n: bk.Pipeline(bk.nnm(f=f), bk.cwtm(f=f)), "2 diam per coordinate"),
}


@pytest.mark.parametrize("rule", ROBUST)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data())
def test_byzantine_robustness_bound(rule, data):
    f = data.draw(st.integers(1, 3), label="f")
    h = data.draw(st.integers(f + 3, f + 6), label="honest rows")  # h - 2 > f: Krum's k > f
    d = data.draw(st.integers(1, 6), label="d")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    H = rng.standard_normal((h, d)) * data.draw(st.sampled_from([1e-3, 1.0, 1e3]), label="scale")
    make, bound = ROBUST[rule]
    n = h + f
    aggregate = make(f, n)
    kind = data.draw(st.sampled_from(BYZANTINE_KINDS), label="byzantine rows")
    with np.errstate(over="ignore", invalid="ignore"):
        byzantine = byzantine_rows_of(kind, H, f, aggregate, rng)
        X = np.vstack([H, byzantine])[rng.permutation(n)]
        out = aggregate(X)
    assert np.isfinite(out).all()
    mu, lo, hi = H.mean(axis=0), H.min(axis=0), H.max(axis=0)
    slack = 1e-9 * (1 + np.abs(H).max())
    if bound is None:
        assert np.all((lo - slack <= out) & (out <= hi + slack)), (kind, out, lo, hi)
    elif bound == "widened range":
        assert np.all((2 * lo - hi - slack <= out) & (out <= 2 * hi - lo + slack)), (kind, out, lo, hi)
    elif bound == "2 diam per coordinate":
        assert np.abs(out - mu).max() <= 2 * diameter(H) + slack, kind
    else:
        assert np.linalg.norm(out - mu) <= bound(H, f) * (1 + 1e-6) + slack, (kind, np.linalg.norm(out - mu), bound(H, f))
