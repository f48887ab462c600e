"""Every bad call raises a clear ValueError/TypeError naming the argument, before any kernel."""
import numpy as np
import pytest

import byzkern as bk
from byzkern import _dispatch

X = np.random.default_rng(0).standard_normal((5, 4))


@pytest.fixture
def no_kernel_may_run(monkeypatch):
    """Fail the test if validation lets a call reach a kernel."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel was reached before validation failed")
    monkeypatch.setattr(_dispatch, "kernel", forbidden)


BAD_CALLS = [
    ("rank 1", lambda: bk.cwmed(np.ones(4)), ValueError, "shape"),
    ("rank 4", lambda: bk.cwmed(np.ones((2, 2, 2, 2))), ValueError, "shape"),
    ("empty rows", lambda: bk.mean(np.ones((0, 3))), ValueError, "empty"),
    ("empty cols", lambda: bk.mean(np.ones((3, 0))), ValueError, "empty"),
    ("empty list", lambda: bk.mean([]), ValueError, "empty"),
    ("ragged list", lambda: bk.mean([np.ones(3), np.ones(4)]), ValueError, "lengths"),
    ("not an array", lambda: bk.mean("abc"), TypeError, "numpy"),
    ("int dtype", lambda: bk.mean(np.ones((3, 3), dtype=int)), TypeError, "dtype int64"),
    ("f < 0", lambda: bk.cwtm(X, f=-1), ValueError, "f must be >= 0"),
    ("n <= 2f", lambda: bk.cwtm(X, f=3), ValueError, "n > 2f"),
    ("n <= 2f meamed", lambda: bk.meamed(X, f=3), ValueError, "n > 2f"),
    ("n <= 2f krum", lambda: bk.krum(X, f=3), ValueError, "n > 2f"),
    ("n <= 2f nnm", lambda: bk.nnm(X, f=3), ValueError, "n > 2f"),
    ("n <= f norm_filter", lambda: bk.norm_filter(X, f=5), ValueError, "n > f"),
    ("f not int", lambda: bk.cwtm(X, f=1.5), TypeError, "f must be an int"),
    ("f bool", lambda: bk.cwtm(X, f=True), TypeError, "f must be an int"),
    ("f a 1-element array", lambda: bk.cwtm(X, f=np.array([1])), TypeError, "f must be an int"),
    ("f a 0-d bool array", lambda: bk.cwtm(X, f=np.array(True)), TypeError, "f must be an int"),
    ("tau a 0-d complex array", lambda: bk.clip(X, tau=np.array(1 + 1j)), TypeError, "tau must be a real number"),
    ("Mimic without a seed", lambda: bk.Mimic(seed=None), TypeError, "^seed must be an int"),  # it takes no rng=
    ("krum k too large", lambda: bk.krum(X, f=1, k=5), ValueError, "k must be <="),
    ("krum default k < 1", lambda: bk.krum(X[:3], f=1), ValueError, "^krum .*n >= f \\+ 3"),
    ("multikrum default k < 1", lambda: bk.multikrum(X[:3], f=1), ValueError, "^multikrum .*n >= f \\+ 3"),
    ("multikrum m too large", lambda: bk.multikrum(X, f=1, m=6), ValueError, "m must be <="),
    ("bucketing s > n", lambda: bk.bucketing(X, s=6, seed=0), ValueError, "s must be <="),
    ("bucketing no seed", lambda: bk.bucketing(X, s=2), ValueError, "seed="),
    ("seed and rng", lambda: bk.bucketing(X, s=2, seed=1, rng=np.random.default_rng()), ValueError, "not both"),
    ("negative seed", lambda: bk.resampling(X, s=2, seed=-1), ValueError, "seed"),
    ("tau <= 0", lambda: bk.clip(X, tau=0.0), ValueError, "tau must be > 0"),
    ("tau nan", lambda: bk.cclip(X, tau=float("nan")), ValueError, "tau must be finite"),
    ("geomed maxiter", lambda: bk.geomed(X, maxiter=-1), ValueError, "maxiter"),
    ("geomed eps", lambda: bk.geomed(X, eps=-1.0), ValueError, "eps"),
    # found by fuzzing: counts beyond int64 hung the Python and Numba loops, and the C++ binding
    # raised pybind11's "incompatible function arguments"
    ("geomed maxiter > int64", lambda: bk.geomed(X, maxiter=2**70), ValueError, "maxiter must be <="),
    ("cclip iters > int64", lambda: bk.cclip(X, tau=1.0, iters=2**70), ValueError, "iters must be <="),
    # found by fuzzing: nu = 0 gave NaN (0/0) once the iterate sat on a row, e.g. for n = 1
    ("geomed nu = 0", lambda: bk.geomed(X[:1], nu=0.0), ValueError, "nu must be > 0"),
    ("geomed init word", lambda: bk.geomed(X, init="median"), ValueError, "init"),
    ("geomed init shape", lambda: bk.geomed(X, init=np.ones(3)), ValueError, "init must have shape"),
    ("geomed weights shape", lambda: bk.geomed(X, weights=np.ones(4)), ValueError, "weights must have shape"),
    ("geomed weights negative", lambda: bk.geomed(X, weights=-np.ones(5)), ValueError, "non-negative"),
    ("norms shape", lambda: bk.norm_filter(X, f=1, norms=np.ones(3)), ValueError, "norms must have shape"),
    ("q < 1", lambda: bk.norm_filter(X, f=1, q=0.5), ValueError, "q must be >= 1"),
    # found by a review: -inf was "not finite" where inf is allowed; a 1-element array passed the
    # inf test and reached a backend's float(); NaN passed as well
    ("q = -inf", lambda: bk.norm_filter(X, f=1, q=-np.inf), ValueError, "q must be >= 1 .a norm. or inf"),
    ("q = nan", lambda: bk.norm_filter(X, f=1, q=np.nan), ValueError, "q must be >= 1"),
    ("q a 1-element array", lambda: bk.norm_filter(X, f=1, q=np.array([np.inf])), TypeError, "q must be a real"),
    ("q a string", lambda: bk.norm_filter(X, f=1, q="inf"), TypeError, "q must be a real"),
    ("nan_policy", lambda: bk.cwmed(X, nan_policy="ignore"), ValueError, "nan_policy"),
    # found by a review: numbers typed as a list went through np.asarray(..., float64), which
    # reads strings and bools as numbers and names no argument for complex or ragged ones
    ("weights of strings", lambda: bk.geomed(X, weights=["1"] * 5), TypeError, "weights must hold real numbers"),
    ("weights of bools", lambda: bk.geomed(X, weights=[True] * 5), TypeError, "weights must hold real numbers"),
    ("weights complex", lambda: bk.geomed(X, weights=[1j] * 5), TypeError, "weights must hold real numbers"),
    ("weights ragged", lambda: bk.geomed(X, weights=[[1, 2], [3]]), ValueError, "weights has rows of different"),
    ("norms with None", lambda: bk.norm_filter(X, f=1, norms=[1, None, 2, 3, 4]), TypeError, "norms must hold real"),
    ("etas of strings", lambda: bk.optimized(X, f=1, attack="foe", aggregator=bk.mean, etas=["1", 2]), TypeError,
     "etas must hold real numbers"),
    # found by a review: a float64 option beside float32 data became Inf in the cast (a NaN result)
    ("init past float32", lambda: bk.geomed(X.astype(np.float32), init=np.full(4, 1e300)), ValueError,
     "init has finite values past the range of float32"),
    ("own past float32", lambda: bk.sign_flip(X.astype(np.float32), f=1, own=[[1e39] * 4]), ValueError,
     "own has finite values past the range of float32"),
    ("weights past float64", lambda: bk.geomed(X, weights=[10**400, 1, 1, 1, 1]), ValueError,
     "weights holds a number past float64's range"),
    ("etas complex", lambda: bk.optimized(X, f=1, attack="foe", aggregator=bk.mean, etas=[1j]), TypeError,
     "etas must hold real numbers"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call(name, call, exc, match, no_kernel_may_run):
    with pytest.raises(exc, match=match):
        call()


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        bk.cwmed(X, backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        with bk.use_backend("fast"):
            pass


def test_host_data_on_the_cuda_backend_is_refused():
    with pytest.raises(ValueError, match="never copies"):
        bk.cwmed(X, backend="cuda")


def test_mixed_libraries_and_devices():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one array library"):
        bk.cwmed([np.ones(3), torch.ones(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="device"):
        bk.cwmed(torch.ones(3, 4, device="meta"))
    with pytest.raises(TypeError, match="X is a torch tensor of layout torch.sparse_coo; .*to_dense"):
        bk.cwmed(torch.ones(3, 4).to_sparse())
    with pytest.raises(TypeError, match="weights is a torch tensor of layout torch.sparse_coo"):
        bk.geomed(torch.ones(3, 4), weights=torch.ones(3).to_sparse())


def test_raise_policy_refuses_nonfinite_before_the_kernel():
    Y = X.copy()
    Y[1, 2] = np.inf
    with pytest.raises(ValueError, match="nan_policy='raise'"):
        bk.cwtm(Y, f=1, nan_policy="raise")
    np.testing.assert_array_equal(bk.cwtm(X, f=1, nan_policy="raise"), bk.cwtm(X, f=1))


def test_options_may_be_0d_arrays_as_reductions_return_them():
    np.testing.assert_array_equal(bk.cwtm(X, f=np.array(1)), bk.cwtm(X, f=1))
    tau = np.median(np.abs(X), axis=(0, 1), keepdims=True).reshape(())  # a 0-d array, not a NumPy scalar
    assert isinstance(tau, np.ndarray)
    np.testing.assert_array_equal(bk.clip(X, tau=tau), bk.clip(X, tau=float(tau)))
    np.testing.assert_array_equal(bk.norm_filter(X, f=1, q=np.array(np.inf)), bk.norm_filter(X, f=1, q=np.inf))
    weights = [1.0, 2.0, 1.0, 3.0, 1.0]
    np.testing.assert_array_equal(bk.geomed(X, weights=[np.array(w) for w in weights]), bk.geomed(X, weights=weights))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(bk.clip(X, tau=torch.tensor(0.5)), bk.clip(X, tau=0.5))
    np.testing.assert_array_equal(bk.cwtm(X, f=torch.tensor(1)), bk.cwtm(X, f=1))
    for dtype in (torch.float64, torch.bfloat16):  # 1, 2 and 3 are bfloat16 numbers
        np.testing.assert_array_equal(bk.geomed(X, weights=[torch.tensor(w, dtype=dtype) for w in weights]),
                                      bk.geomed(X, weights=weights))


def test_numbers_in_a_list_may_be_any_real_numbers():
    from fractions import Fraction

    np.testing.assert_array_equal(bk.geomed(X, weights=[Fraction(1, 2), 1, 1, 1, 1]),
                                  bk.geomed(X, weights=[0.5, 1, 1, 1, 1]))
    np.testing.assert_array_equal(bk.geomed(X, weights=[2**70, 2**69, 2**69, 2**69, 2**69]),
                                  bk.geomed(X, weights=[2.0, 1, 1, 1, 1]))


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("scale", [1e-50, 1.0, 1e50], ids=["below float32", "nearly tied", "past float32"])
def test_norms_and_weights_beside_float32_data_stay_float64(backend, scale):
    """Norms rank rows and weights weigh them: rounded to float32 as the data, nearly equal norms
    tied (the higher index was dropped), tiny ones flushed to 0 and tied, large ones were refused
    as past float32's range, and equal tiny or large weights were refused."""
    X32 = np.arange(12, dtype=np.float32).reshape(4, 3)
    norms = scale * np.array([1 + 1e-10, 1, 0.5, 0.2])
    np.testing.assert_array_equal(bk.norm_filter(X32, f=1, norms=norms, backend=backend), X32[1:].mean(axis=0))
    np.testing.assert_allclose(bk.geomed(X32, weights=np.full(4, scale * 1e4), backend=backend),
                               bk.geomed(X32, backend=backend), rtol=1e-6)
    with_nan = np.array([np.nan, 1, 2, 3]) * scale  # NaN ranks as +Inf, in a copy: float64 norms are not copied
    np.testing.assert_array_equal(bk.norm_filter(X32.astype(np.float64), f=1, norms=with_nan, backend=backend),
                                  X32[1:].mean(axis=0))
    assert np.isnan(with_nan[0])


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
def test_integer_arrays_beside_the_data_are_numbers_as_integer_lists_are(backend):
    # Sample counts as weights come as integer arrays; a list of the same integers was read.
    counts = np.array([3, 1, 4, 1, 5])
    for dtype in (np.int64, np.uint8, np.int32):
        np.testing.assert_array_equal(bk.geomed(X, weights=counts.astype(dtype), backend=backend),
                                      bk.geomed(X, weights=counts.tolist(), backend=backend))
        np.testing.assert_array_equal(bk.norm_filter(X, f=2, norms=counts.astype(dtype), backend=backend),
                                      bk.norm_filter(X, f=2, norms=counts.astype(np.float64), backend=backend))
    np.testing.assert_array_equal(bk.geomed(X, init=np.arange(X.shape[1]), backend=backend),
                                  bk.geomed(X, init=np.arange(X.shape[1], dtype=np.float64), backend=backend))
    with pytest.raises(TypeError, match="weights has dtype bool"):
        bk.geomed(X, weights=counts > 2, backend=backend)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(bk.geomed(torch.tensor(X), weights=torch.tensor(counts), backend=backend).numpy(),
                                  bk.geomed(X, weights=counts.tolist(), backend=backend))
