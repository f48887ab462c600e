"""Input kinds, dtypes, layouts and the round trip back to the user's library."""
import numpy as np
import pytest

import byzkern as bk
from byzkern._arrays import adapt

torch = pytest.importorskip("torch")

X64 = np.random.default_rng(0).standard_normal((7, 5))


def test_numpy_in_numpy_out():
    for dtype in (np.float32, np.float64):
        out = bk.cwtm(X64.astype(dtype), f=2)
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (5,)


def test_float16_is_accumulated_in_float32_and_returned_as_float16():
    X = X64.astype(np.float16)
    out = bk.mean(X)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, X.astype(np.float32).mean(axis=0).astype(np.float16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_in_torch_out(dtype):
    t = torch.tensor(X64, dtype=dtype)
    out = bk.cwmed(t)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device == t.device
    expected = np.median(t.float().numpy() if dtype in (torch.float16, torch.bfloat16) else t.numpy(), axis=0)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6)


def test_torch_cpu_is_viewed_without_a_copy():
    t = torch.tensor(X64)
    assert np.shares_memory(adapt(t).data, t.numpy())


def test_torch_requires_grad_is_fine():
    t = torch.tensor(X64, requires_grad=True)
    assert isinstance(bk.cwtm(t, f=1), torch.Tensor)


def test_torch_lazy_negations_and_conjugations_are_read_resolved():
    X = np.random.default_rng(4).standard_normal((5, 7))
    negated = torch.from_numpy(X + 1j * X).conj().imag  # -X, held as X with the neg bit set
    assert negated.is_neg()
    np.testing.assert_array_equal(bk.cwmed(negated).numpy(), bk.cwmed(-X))


def test_diagnostics_come_back_in_the_input_library_with_their_own_dtypes():
    batch = torch.tensor(np.random.default_rng(6).standard_normal((2, 7, 5)), dtype=torch.float32)
    _, info = bk.geomed(batch, maxiter=4, eps=0.0, return_info=True)
    assert info["iterations"].dtype == torch.int64 and info["objective"].dtype == torch.float64
    _, expected = bk.geomed(batch.numpy(), maxiter=4, eps=0.0, return_info=True)
    np.testing.assert_array_equal(info["iterations"].numpy(), expected["iterations"])
    np.testing.assert_array_equal(info["objective"].numpy(), expected["objective"])
    _, info = bk.geomed(batch[0], maxiter=4, eps=0.0, return_info=True)
    assert type(info["iterations"]) is int and type(info["objective"]) is float

    options = dict(f=2, attack="alie", aggregator=bk.cwtm(f=2), etas=[0.0, 1.0, 3.0], return_info=True)
    _, info = bk.optimized(batch, **options)
    _, expected = bk.optimized(batch.numpy(), **options)
    assert isinstance(info["etas"], np.ndarray)
    for key, shape in (("eta", (2,)), ("deviation", (2, 3))):
        assert isinstance(info[key], torch.Tensor) and info[key].dtype == torch.float64 and info[key].shape == shape
        np.testing.assert_array_equal(info[key].numpy(), expected[key])
    _, info = bk.optimized(batch[0], **options)
    assert type(info["eta"]) is float and isinstance(info["deviation"], torch.Tensor)
    assert info["deviation"].shape == (3,) and info["deviation"].dtype == torch.float64


def test_list_of_rows():
    rows = [X64[i] for i in range(7)]
    np.testing.assert_array_equal(bk.cwmed(rows), bk.cwmed(X64))
    out = bk.cwmed([torch.tensor(r) for r in rows])
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), bk.cwmed(X64))


def test_non_contiguous_views_and_negative_strides():
    wide = np.random.default_rng(1).standard_normal((7, 10))
    for view in (wide[:, ::2], wide[::-1], wide.T.copy().T, wide[:, ::-3]):
        np.testing.assert_array_equal(bk.cwmed(view), np.median(view, axis=0))
    t = torch.tensor(wide).t().contiguous().t()[:, 1::2]
    np.testing.assert_allclose(bk.cwmed(t).numpy(), np.median(t.numpy(), axis=0))


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2"])
def test_big_endian_arrays_are_read_in_the_byte_order_they_say(dtype):
    """As read from a file or the network: copied once to native order, with the result in
    native order too, as NumPy's arithmetic gives it."""
    X = X64.astype(dtype)
    native = X.astype(np.dtype(dtype).newbyteorder("="))
    for rule in (bk.cwtm(f=2), bk.krum(f=2), bk.alie(f=2)):
        out = rule(X)
        assert out.dtype == native.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, rule(native))
    np.testing.assert_array_equal(bk.geomed(native, weights=np.arange(1.0, 8.0).astype(">f8")),
                                  bk.geomed(native, weights=np.arange(1.0, 8.0)))


def test_numpy_subclasses():
    with pytest.warns(PendingDeprecationWarning):
        M = np.asmatrix(X64)  # always 2-D: it used to reach the kernels as (1, n, d) -> (n, d)
    for rule in (bk.mean(), bk.cwtm(f=2), bk.alie(f=2)):
        out = rule(M)
        assert type(out) is np.ndarray
        np.testing.assert_array_equal(out, rule(X64))
    with pytest.raises(TypeError, match=r"X is a masked array.*X.filled\(np.nan\)"):
        bk.cwmed(np.ma.masked_array(X64, mask=X64 > 1))


def test_input_is_not_modified():
    X = X64.copy()
    X[0] = np.nan
    before = X.copy()
    for rule in (bk.cwmed(), bk.cwtm(f=2), bk.geomed(), bk.krum(f=2), bk.nnm(f=2), bk.clip(tau=0.1)):
        rule(X)
    np.testing.assert_array_equal(X, before)


def test_batched_shapes():
    B = np.stack([X64, X64 + 1, X64 * 2])
    assert bk.cwtm(B, f=2).shape == (3, 5)
    assert bk.nnm(B, f=2).shape == (3, 7, 5)
    assert bk.bucketing(B, s=2, seed=0).shape == (3, 4, 5)
    assert bk.pairwise_sqdist(B).shape == (3, 7, 7)
    np.testing.assert_allclose(bk.cwtm(B, f=2)[2], bk.cwtm(X64 * 2, f=2))


@pytest.mark.parametrize("bad", [np.arange(12).reshape(3, 4), np.ones((3, 4), dtype=np.complex64),
                                 np.ones((3, 4), dtype=bool), torch.ones(3, 4, dtype=torch.int64)])
def test_integer_complex_bool_are_type_errors_naming_the_dtype(bad):
    with pytest.raises(TypeError, match="dtype"):
        bk.cwmed(bad)


def test_flatten_unflatten_roundtrip():
    layers = [np.ones((2, 3)), np.arange(4.0), np.zeros((1, 1, 2))]
    v, spec = bk.flatten(layers)
    assert v.shape == (12,)
    back = bk.unflatten(v, spec)
    for a, b in zip(layers, back):
        np.testing.assert_array_equal(a, b)
    tl = [torch.ones(2, 2, requires_grad=True), torch.arange(3.0)]
    tv, tspec = bk.flatten(tl)
    assert isinstance(tv, torch.Tensor) and tv.shape == (7,)
    assert [p.shape for p in bk.unflatten(tv, tspec)] == [(2, 2), (3,)]
    with pytest.raises(ValueError, match="shape"):
        bk.unflatten(np.ones(5), spec)
    with pytest.raises(TypeError):
        bk.flatten([np.ones(2), torch.ones(2)])
