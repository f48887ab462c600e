"""Scale: more than 2**31 elements give the right answer (opt-in: ~13 GB of memory), and an
allocation that cannot fit is a MemoryError, not a crash."""
import tracemalloc

import numpy as np
import pytest

import byzkern as bk
from byzkern import _dispatch

#: n * d = 2.4e9 > 2**31 float32 elements (9.6 GB); row 2 starts beyond 2**31 - d
N, D = 3, 800_000_000
FAR = [5, 600_000_000, D - 1]  # flat offsets of row 2 at these columns exceed 2**31


def skip_unless_available(backend):
    module, reason = _dispatch.load(backend)
    if module is None:
        pytest.skip(f"backend {backend} unavailable: {reason}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_more_than_2_31_elements(backend):
    skip_unless_available(backend)
    X = np.empty((N, D), np.float32)
    for i, value in enumerate([1.0, 2.0, 6.0]):
        X[i] = value
    X[:, FAR] = [[50.0], [40.0], [-300.0]]  # a different mean, median and top-k there

    mean = bk.mean(X, backend=backend)
    assert mean.shape == (D,) and mean.dtype == np.float32
    assert np.count_nonzero(mean != 3.0) == len(FAR)
    np.testing.assert_allclose(mean[FAR], (50 + 40 - 300) / 3, rtol=1e-6)
    del mean

    median = bk.cwmed(X, backend=backend)
    assert np.count_nonzero(median != 2.0) == len(FAR)
    assert (median[FAR] == 40.0).all()
    del median

    message = bk.topk(X, k=3, backend=backend)
    np.testing.assert_array_equal(message.fields["indices"], np.tile(FAR, (N, 1)))
    np.testing.assert_array_equal(message.fields["values"], np.repeat([[50.0], [40.0], [-300.0]], 3, axis=1))


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("op", ["pairwise_sqdist", "krum", "nnm"])
def test_an_allocation_that_cannot_fit_is_a_memory_error(op, backend):
    """2**20 rows need an 8 TiB distance matrix."""
    skip_unless_available(backend)
    X = np.zeros((2**20, 1), np.float32)
    call = {"pairwise_sqdist": lambda: bk.pairwise_sqdist(X, backend=backend),
            "krum": lambda: bk.krum(X, f=1, backend=backend),
            "nnm": lambda: bk.nnm(X, f=1, backend=backend)}[op]
    with pytest.raises(MemoryError):
        call()


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("op", ["mean", "cwmed", "topk"])
def test_no_copy_of_the_input(op, backend):
    """The ops of the scale test allocate little beyond their output, so n * d near the memory
    size still fits (Numba's topk once built int64 keys of the whole input: 3x its size)."""
    skip_unless_available(backend)
    X = np.random.default_rng(0).standard_normal((3, 1 << 20)).astype(np.float32)
    call = {"mean": lambda: bk.mean(X, backend=backend), "cwmed": lambda: bk.cwmed(X, backend=backend),
            "topk": lambda: bk.topk(X, k=3, backend=backend)}[op]
    call()  # compile and warm up outside the measurement
    tracemalloc.start()
    try:
        call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    output = X.nbytes // 3 if op != "topk" else 0
    assert peak <= output + X.nbytes // 10
