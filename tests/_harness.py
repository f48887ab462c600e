"""One test body for every backend: run an op on `reference` and on a fast backend, compare.

Order statistics (medians, trimmed means' kept sets, Krum's choice, neighbour sets,
permutations) must agree exactly; sums may differ by summation order within ``RTOL``.
"""
import numpy as np
import pytest

import byzkern as bk

#: tolerances for results that are sums (order of summation differs between backends)
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


def run_or_skip(fn, X, backend, **options):
    """Call ``fn`` on ``backend``; a kernel the backend does not have yet is a visible skip.

    The ``cuda`` backend gets the same NumPy case moved to the device, and its result comes
    back to the host for the comparison.
    """
    if backend == "cuda":
        import cupy

        X = cupy.asarray(X)
        options = {k: cupy.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    try:
        out = fn(X, backend=backend, **options)
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    return _to_host(out) if backend == "cuda" else out


def _to_host(out):
    if isinstance(out, tuple):
        return tuple(_to_host(item) for item in out)
    return out.get() if hasattr(out, "get") else out


def assert_close(actual, expected, *, exact=False):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if exact:
        np.testing.assert_array_equal(actual, expected)
        return
    rtol = RTOL[actual.dtype]
    scale = np.nanmax(np.abs(expected[np.isfinite(expected)]), initial=1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=True)


def assert_backend_matches_reference(fn, X, backend, *, exact=False, **options):
    expected = fn(X, backend="reference", **options)
    actual = run_or_skip(fn, X, backend, **options)
    assert_close(actual, expected, exact=exact)
    return actual


# ---- inputs ---------------------------------------------------------------------------------

def gaussian(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def with_ties(rng, shape, dtype):
    """Few distinct values, so every column is full of ties (and the test checks it is)."""
    X = rng.integers(-2, 3, size=shape).astype(dtype)
    X[..., -1, ::2] = X[..., 0, ::2]
    columns = np.moveaxis(X, -2, -1).reshape(-1, shape[-2])
    assert any(len(np.unique(c)) < c.size for c in columns), "no ties: the case proves nothing"
    return X


def duplicated_rows(rng, shape, dtype):
    X = gaussian(rng, shape, dtype)
    X[..., 1, :] = X[..., 0, :]
    X[..., -1, :] = X[..., 0, :]
    return X


def offset_rows(rng, shape, dtype):
    """Model weights, not gradients: a large common component plus small deltas."""
    return (1e3 + 1e-2 * rng.standard_normal(shape)).astype(dtype)


def byzantine_rows(rng, shape, dtype, f):
    """Up to f rows replaced by NaN, +Inf, -Inf and 1e38 (first, middle, last positions)."""
    X = gaussian(rng, shape, dtype)
    n = shape[-2]
    poison = [np.nan, np.inf, -np.inf, 1e38]
    rows = [0, n // 2, n - 1][:f]
    for t, r in enumerate(rows):
        X[..., r, :] = poison[t % len(poison)]
        if t == 0 and shape[-1] > 1:
            X[..., r, 0] = 1.0  # a row that is only partly non-finite
    return X


def non_contiguous(X):
    """The same values as a strided view (every other column of a wider buffer)."""
    wide = np.zeros(X.shape[:-1] + (2 * X.shape[-1],), dtype=X.dtype)
    wide[..., ::2] = X
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


# ---- oracles at the ends of float64's range ---------------------------------------------------

def scaled_norms(A):
    """(scaled, shift, norm) for float64 A, worked out apart from byzkern: each row times 2^shift
    (exact), to a largest entry in [1, 2), and the scaled rows' norms (keepdims), which neither
    overflow nor underflow. A row's own norm is norm 2^-shift, log2(norm) - shift in logs."""
    largest = np.abs(A).max(axis=-1, keepdims=True, initial=0.0)
    shift = -np.floor(np.log2(np.where((largest > 0) & np.isfinite(largest), largest, 1.0)))
    scaled = np.ldexp(A, shift.astype(np.int64))
    return scaled, shift, np.sqrt((scaled * scaled).sum(axis=-1, keepdims=True))


def clipped(A, tau):
    """clip's result on float64 A (its finite rows; a zero row stays zero)."""
    scaled, shift, norm = scaled_norms(A)
    longer = np.log2(norm) - shift > np.log2(tau)  # a zero row: -Inf, never longer
    return np.where(longer, scaled * (tau / norm), A)
