"""The hand-checked cases of cases.py, on every backend, in float32 and float64."""
import numpy as np
import pytest

import byzkern as bk
from _harness import run_or_skip
from cases import CASES
from byzkern import _dispatch


@pytest.fixture(params=["reference", "cpu", "numba", "cuda"])
def backend(request):
    module, reason = _dispatch.load(request.param)
    if module is None:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    return request.param


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_hand_checked(case, backend, dtype):
    op, X, options, expected = case
    options = {k: (v.astype(dtype) if isinstance(v, np.ndarray) else v) for k, v in options.items()}
    with np.errstate(invalid="ignore", over="ignore"):
        out = run_or_skip(getattr(bk, op), X.astype(dtype), backend, **options)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, np.asarray(expected, dtype=dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES[:12], ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES[:12])])
def test_hand_checked_batched(case, backend):
    """A batch of the same case twice, and of the case beside a shifted copy."""
    op, X, options, expected = case
    batch = np.stack([X, X + 1.0])
    with np.errstate(invalid="ignore", over="ignore"):
        out = run_or_skip(getattr(bk, op), batch, backend, **options)
    np.testing.assert_allclose(out[0], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[1], np.asarray(expected) + 1.0, rtol=1e-12, atol=1e-12)


def test_krum_tie_really_is_a_tie():
    X = np.array([[1.0, 0], [-1, 0], [0, 5]])
    infinite, scores = bk.distances.krum_scores(bk.pairwise_sqdist(X)[None], 1)
    assert not infinite.any() and scores[0, 0] == scores[0, 1] < scores[0, 2]
