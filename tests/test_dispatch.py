"""Backend selection: per call, by context, by device; info() says what is there and why not."""
import numpy as np
import pytest

import byzkern as bk
from byzkern import _dispatch
from byzkern.backends import KERNEL_NAMES, reference

X = np.random.default_rng(0).standard_normal((5, 6))


def test_info_lists_every_backend_with_a_reason_when_absent():
    info = bk.info()
    assert info["version"] == bk.__version__
    assert set(info["backends"]) == {"reference", "cpu", "numba", "cuda"}
    for name, row in info["backends"].items():
        assert row["available"] or row["reason"], name
    assert info["backends"]["reference"]["kernels"] == list(KERNEL_NAMES)


def test_reference_implements_every_kernel():
    assert all(callable(getattr(reference, k)) for k in KERNEL_NAMES)


def test_context_manager_selects_and_restores(monkeypatch):
    calls = []
    real = _dispatch.kernel

    def spy(op, device, backend=None):
        calls.append(backend or _dispatch._active.get())
        return real(op, device, backend)

    monkeypatch.setattr(_dispatch, "kernel", spy)
    with bk.use_backend("reference"):
        bk.cwmed(X)
        with bk.use_backend("numba"):
            bk.mean(X)
        bk.mean(X, backend="cpu" if bk.info()["backends"]["cpu"]["available"] else "reference")
    bk.mean(X)
    assert calls[0] == "reference" and calls[1] == "numba" and calls[-1] is None


def test_default_falls_through_to_a_backend_that_has_the_kernel():
    fn = _dispatch.kernel("geomed", "cpu")
    assert callable(fn)


def test_explicit_backend_without_the_kernel_says_so(monkeypatch):
    module, _ = _dispatch.load("numba")
    if module is None:
        pytest.skip("numba unavailable")
    monkeypatch.delattr(module, "cwmed", raising=False)
    with pytest.raises(NotImplementedError, match="no kernel 'cwmed'"):
        bk.cwmed(X, backend="numba")


def test_cuda_backend_reports_why_it_is_absent_here():
    row = bk.info()["backends"]["cuda"]
    if row["available"]:
        pytest.skip("a CUDA device is present")
    assert row["reason"]
