"""Geometric median on the cpu and numba backends (byzkern/backends/_weiszfeld.py): Weiszfeld
steps on coefficients from one pairwise_sqdist, the steps whose Gram-style distances would
cancel taken on X, and the route that takes every step on X (many rows, few steps), with the
passes over X counted. Every case is checked against the reference: the point within RTOL, the
iteration counts equal, the objective within 1e-10.
"""
import types

import numpy as np
import pytest

from _harness import assert_close, gaussian
from byzkern import _dispatch
from byzkern.backends import _weiszfeld
from byzkern.backends import reference as ref

CPU_BACKENDS = ("cpu", "numba")


@pytest.fixture(params=CPU_BACKENDS)
def passes(request):
    """The backend's passes over X, each call recorded in ``passes.calls``."""
    module, reason = _dispatch.load(request.param)
    if module is None:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    real = module._WEISZFELD_PASSES
    calls = []

    def recorded(name):
        def call(X, *args):
            calls.append((name, args))
            return getattr(real, name)(X, *args)
        return call

    spy = types.SimpleNamespace(**{name: recorded(name) for name in vars(real)}, calls=calls)
    return spy


@pytest.fixture(params=["coefficients", "x"])
def route(request, monkeypatch):
    """Steps on coefficients wherever maxiter > 0, or every step on X."""
    monkeypatch.setattr(_weiszfeld, "GRAM_ROWS_PER_STEP", 10**9 if request.param == "coefficients" else 0)
    return request.param


def exact_steps(passes):
    """How many batch items took a step on X (weighted_center with distances)."""
    return sum(int(args[1].sum()) for name, args in passes.calls if name == "weighted_center" and args[2])


def check(passes, X, weights=None, init="mean", maxiter=8, eps=0.0, nu=1e-6):
    weights = np.ones(X.shape[:2]) if weights is None else weights
    z, iters, obj = _weiszfeld.geomed(X, weights, init, maxiter, eps, nu, passes)
    z_ref, iters_ref, obj_ref = ref.geomed(X, weights, init, maxiter, eps, nu)
    np.testing.assert_array_equal(iters, iters_ref)
    assert_close(z, z_ref)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-10)
    return iters


def test_gram_distances_equal_direct_ones_and_say_when_they_cancel():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1, 6, 50)) + 1e3  # a common offset: D does not see it
    D = ((X[:, :, None] - X[:, None]) ** 2).sum(axis=-1)
    a = rng.uniform(0.1, 1.0, (1, 6))
    a /= a.sum()
    sq, trusted = _weiszfeld.gram_sqdist(D, a, 2.0**-8)
    np.testing.assert_allclose(sq, ((a[0] @ X[0] - X[0]) ** 2).sum(axis=1)[None], rtol=1e-9)
    assert trusted.all()
    # z on row 2 (and nearly so): the squared distance is lost in the sums that form it
    for weight in (1.0, 1.0 - 1e-6):
        a = np.full((1, 6), (1.0 - weight) / 5)
        a[0, 2] = weight
        sq, trusted = _weiszfeld.gram_sqdist(D, a, 2.0**-8)
        assert not trusted[0, 2] and trusted[0, [0, 1, 3, 4, 5]].all()


def test_clean_data_reads_x_for_the_result_only(passes, dtype):
    """mean init: one pairwise_sqdist and one pass (the result); zero init: one more (the start)."""
    X = gaussian(np.random.default_rng(1), (2, 20, 37), dtype)
    check(passes, X)
    assert [name for name, _ in passes.calls] == ["pairwise_sqdist", "weighted_center"]
    assert exact_steps(passes) == 0
    passes.calls.clear()
    check(passes, X, init="zero", nu=0.1)
    assert [name for name, _ in passes.calls] == ["center_distances", "pairwise_sqdist", "weighted_center"]


def test_many_rows_and_few_steps_take_every_step_on_x(passes, dtype):
    """n >= GRAM_ROWS_PER_STEP * maxiter: pairwise_sqdist would cost more than the steps it saves;
    one pass per step, as many as the steps (the last one gives z)."""
    X = gaussian(np.random.default_rng(8), (2, 40, 21), dtype)
    check(passes, X, maxiter=2)
    assert [name for name, _ in passes.calls] == ["weighted_center"] * 3
    passes.calls.clear()
    check(passes, X, init="zero", maxiter=2)
    assert [name for name, _ in passes.calls] == ["center_distances"] + ["weighted_center"] * 2


def test_a_step_onto_a_duplicated_row_is_taken_on_x(passes, route, dtype):
    """A majority of equal rows: the median is that row, and once z is near it the Gram-style
    distance to it is below TRUST (s_j + q), so those steps read X."""
    rng = np.random.default_rng(2)
    X = gaussian(rng, (1, 9, 23), dtype)
    X[0, :5] = X[0, 0]
    check(passes, X, maxiter=30)
    assert exact_steps(passes) > 0


@pytest.mark.parametrize("far", [1e2, 1e4, 1e6])
def test_far_outliers(passes, route, dtype, far):
    """Rows far from the others carry tiny coefficients and huge D entries: the distances to the
    other rows lose about far / n of their digits, which a float32 result can spare (TRUST is
    2^-16 for it) up to about far = 1e5, and a float64 one (TRUST 2^-8) up to about 1e2."""
    rng = np.random.default_rng(3)
    X = gaussian(rng, (1, 12, 40), dtype)
    X[0, 9:] *= far
    check(passes, X)
    on_x = route == "x" or far >= (1e6 if dtype == np.float32 else 1e4)
    assert (exact_steps(passes) > 0) == on_x


@pytest.mark.parametrize("eps", [1e-3, 1e-6, 1e-11])
def test_eps_stops_at_the_reference_iteration(passes, route, dtype, eps):
    """Three items that stop at different steps (batched stops): a zero weight; three far rows;
    a non-finite row and four rows close together (slow to converge, steps on X)."""
    rng = np.random.default_rng(4)
    X = gaussian(rng, (3, 8, 29), dtype)
    X[1, :3] *= 30.0
    X[2, 5, 7] = np.nan
    X[2, :4] = X[2, 0] + 0.01 * X[2, :4]
    weights = rng.uniform(0.5, 2.0, (3, 8))
    weights[0, 3] = 0.0
    iters = check(passes, X, weights, maxiter=100, eps=eps)
    assert len(set(iters)) == 3 and iters.max() < 100


@pytest.mark.parametrize("init", ["mean", "zero", "array"])
def test_non_finite_rows_get_zero_weight(passes, route, dtype, init):
    """NaN and Inf rows (with init="mean" found from their non-finite distances, then the items
    that had them start again), and an item left with one weighted row once its non-finite row
    is dropped."""
    rng = np.random.default_rng(5)
    X = gaussian(rng, (3, 7, 13), dtype)
    X[0, 1, 3], X[0, 4, 0], X[0, 5, 5] = np.nan, np.inf, -np.inf
    X[1, 0, 2] = np.nan
    weights = np.ones((3, 7))
    weights[1, 1:] = 0.0
    weights[1, 2] = 1.0
    start = gaussian(rng, (3, 13), dtype) if init == "array" else init
    check(passes, X, weights, start, maxiter=5)


@pytest.mark.parametrize("init", ["mean", "zero", "array"])
def test_one_row(passes, route, dtype, init):
    X = gaussian(np.random.default_rng(7), (2, 1, 9), dtype)
    check(passes, X, init=X[:, 0] + 1 if init == "array" else init, maxiter=3)


def test_overflowing_distances_take_every_step_on_x(passes, route):
    """float64 rows of 1e200: D overflows among finite rows, so D cannot give the distances."""
    rng = np.random.default_rng(6)
    X = gaussian(rng, (2, 7, 11), np.float64)
    X[0, 2] *= 1e200
    with np.errstate(over="ignore", invalid="ignore"):  # the reference's +Inf objective
        check(passes, X, maxiter=4, nu=1e-6)
    assert exact_steps(passes) >= 4


@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("elements", [0, 10**9])
def test_cpu_takes_the_coefficient_steps_only_for_a_fixed_step_count_on_large_inputs(
        monkeypatch, dtype, eps, elements):
    """cpu's geomed: the C++ loop on X for small inputs and for eps > 0 (its steps stop early),
    the coefficient steps for eps = 0 at COEFFICIENT_MIN_ELEMENTS and above; both equal the
    reference."""
    cpu, reason = _dispatch.load("cpu")
    if cpu is None:
        pytest.skip(f"backend cpu unavailable: {reason}")
    monkeypatch.setattr(_weiszfeld, "COEFFICIENT_MIN_ELEMENTS", elements)
    calls, real = [], _weiszfeld.geomed
    monkeypatch.setattr(_weiszfeld, "geomed", lambda *args: calls.append(args) or real(*args))
    X = gaussian(np.random.default_rng(9), (2, 9, 31), dtype)
    X[1, 4, 2] = np.inf
    weights = np.ones((2, 9))
    z, iters, obj = cpu.geomed(X, weights, "mean", 8, eps, 1e-6)
    z_ref, iters_ref, obj_ref = ref.geomed(X, weights, "mean", 8, eps, 1e-6)
    np.testing.assert_array_equal(iters, iters_ref)
    assert_close(z, z_ref)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-10)
    assert len(calls) == (eps == 0 and elements == 0)
