"""Compressors (SPEC §4): hand-checked cases, wire format, statistics, determinism, backends."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byzkern as bk
from _harness import scaled_norms
from byzkern import _dispatch
from byzkern._arrays import host
from byzkern.backends import reference
from byzkern.compressors import HEADER_BYTES, MAX_LEVELS, Compressed, index_dtype

RANDOM = {"randk": dict(k=3), "qsgd": dict(levels=3), "natural": {}}
DETERMINISTIC = {"topk": dict(k=3), "sign": {}, "scaled_sign": {}}
ALL = {**RANDOM, **DETERMINISTIC}


def compress(name, x, seed=7, **extra):
    options = dict(ALL[name], **extra)
    if name in RANDOM and "rng" not in options:
        options["seed"] = seed
    return getattr(bk, name)(x, **options)


def bits(a):
    """An array's bit pattern, so that -0.0 != 0.0 and NaN == NaN in comparisons."""
    a = np.asarray(a)
    return a.view({4: np.uint32, 8: np.uint64, 2: np.uint16}[a.dtype.itemsize])


def assert_bit_equal(a, b):
    assert np.asarray(a).dtype == np.asarray(b).dtype and np.shape(a) == np.shape(b)
    np.testing.assert_array_equal(bits(a), bits(b))


# ---- hand-checked cases ---------------------------------------------------------------------

CASES = [
    # (compressor, options, x, expected decompressed)
    ("topk", dict(k=2), [3.0, -1.0, 0.0, 2.0, -3.0], [3.0, 0.0, 0.0, 0.0, -3.0]),
    ("topk", dict(k=1), [0.5, -4.0, 4.0, 1.0], [0.0, -4.0, 0.0, 0.0]),
    ("topk", dict(k=4), [0.5, -4.0, 4.0, 1.0], [0.5, -4.0, 4.0, 1.0]),
    ("topk", dict(k=1), [1.0, np.inf, np.nan, 2.0], [0.0, 0.0, np.nan, 0.0]),
    ("sign", {}, [0.0, -0.0, -1.0, 2.0, np.nan], [1.0, 1.0, -1.0, 1.0, 1.0]),
    ("scaled_sign", {}, [1.0, -2.0, 0.0, 3.0], [1.5, -1.5, 1.5, 1.5]),
    ("scaled_sign", {}, [0.0, 0.0], [0.0, 0.0]),
    # QSGD with |x_i| s / ||x|| already integers: no randomness is left
    ("qsgd", dict(levels=5, seed=3), [3.0, -4.0], [3.0, -4.0]),
    ("qsgd", dict(levels=10, seed=3), [0.0, -6.0, 8.0], [0.0, -6.0, 8.0]),
    ("qsgd", dict(levels=1, seed=3), [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    # natural: powers of two, zero and non-finite values are kept exactly
    ("natural", dict(seed=3), [1.0, -0.5, 4.0, 0.0, 2.0**-20], [1.0, -0.5, 4.0, 0.0, 2.0**-20]),
    ("natural", dict(seed=3), [np.inf, -np.inf, np.nan], [np.inf, -np.inf, np.nan]),
    # randk with k = d keeps everything with scale d/k = 1
    ("randk", dict(k=3, seed=3), [1.0, -2.0, 3.0], [1.0, -2.0, 3.0]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options, x, expected", CASES)
def test_hand_checked(name, options, x, expected, dtype):
    message = getattr(bk, name)(np.array(x, dtype), **options)
    out = message.decompress()
    assert out.dtype == dtype and out.shape == (len(x),)
    np.testing.assert_array_equal(out, np.array(expected, dtype))


def test_topk_ties_go_to_the_lowest_index():
    x = np.array([[1.0, -2.0, 2.0, -2.0, 0.0], [5.0, 5.0, -5.0, 5.0, 5.0]])
    message = bk.topk(x, k=2)
    kth = np.sort(np.abs(x), axis=1)[:, -2]
    assert ((np.abs(x) == kth[:, None]).sum(axis=1) > 2).all(), "no ties at the k-th magnitude: the case proves nothing"
    np.testing.assert_array_equal(message.fields["indices"], [[1, 2], [0, 1]])
    np.testing.assert_array_equal(message.fields["values"], [[-2.0, 2.0], [5.0, 5.0]])


def test_randk_values_are_scaled_entries_at_distinct_sorted_indices():
    x = np.arange(1.0, 11.0)
    message = bk.randk(x, k=4, seed=11)
    idx = message.fields["indices"][0].astype(np.int64)
    assert (np.diff(idx) > 0).all() and idx[-1] < 10
    np.testing.assert_array_equal(message.fields["values"][0], x[idx] * 2.5)


NBYTES = [
    # (compressor, options, d, dtype, payload bytes per row)
    ("topk", dict(k=2), 5, np.float32, 2 * 4 + 2 * 2),
    ("topk", dict(k=2), 5, np.float64, 2 * 8 + 2 * 2),
    ("randk", dict(k=3, seed=0), 65537, np.float32, 3 * 4 + 3 * 4),
    ("qsgd", dict(levels=4, seed=0), 5, np.float32, 4 + math.ceil(5 * 4 / 8)),
    ("qsgd", dict(levels=1, seed=0), 9, np.float64, 8 + math.ceil(9 * 2 / 8)),
    ("natural", dict(seed=0), 5, np.float32, math.ceil(5 * 9 / 8)),
    ("natural", dict(seed=0), 5, np.float64, math.ceil(5 * 12 / 8)),
    ("sign", {}, 17, np.float32, 3),
    ("scaled_sign", {}, 17, np.float32, 3 + 4),
]


@pytest.mark.parametrize("name, options, d, dtype, per_row", NBYTES)
def test_nbytes(name, options, d, dtype, per_row):
    message = getattr(bk, name)(np.ones((3, d), dtype), **options)
    assert message.nbytes_per_row == per_row
    assert message.nbytes == 3 * per_row == len(message.to_bytes()) - HEADER_BYTES


@pytest.mark.parametrize("d, expected", [(1, np.uint16), (65536, np.uint16), (65537, np.uint32),
                                         (2**32, np.uint32), (2**32 + 1, np.uint64)])
def test_index_dtype(d, expected):
    assert index_dtype(d) == np.dtype(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scaled_sign_wire_is_ceil_d_over_8_plus_4_bytes(dtype):  # SPEC §4; ALGORITHMS.md, seed 001 line 132
    for d in (1, 8, 9, 1000):
        message = bk.scaled_sign(np.ones(d, dtype))
        assert message.nbytes == math.ceil(d / 8) + 4 == len(message.to_bytes()) - HEADER_BYTES


# ---- wire format ----------------------------------------------------------------------------

def sample(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[:: 7] = 0.0
    return x


@pytest.mark.parametrize("shape", [(9,), (3, 9), (2, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ALL))
def test_bytes_round_trip_is_bit_exact(name, dtype, shape):
    x = sample(np.random.default_rng(1), shape, dtype)
    options = {"k": 1} if name in ("topk", "randk") else {}
    message = compress(name, x, **options)
    data = message.to_bytes()
    back = Compressed.from_bytes(data)
    assert back.to_bytes() == data
    assert (back.kind, back.dtype, back.shape, back.param) == (message.kind, message.dtype, message.shape, message.param)
    assert back.nbytes == message.nbytes == len(data) - HEADER_BYTES
    assert_bit_equal(back.decompress(), message.decompress())


def test_header_layout():
    data = bk.qsgd(np.ones((2, 3), np.float32), levels=7, seed=0).to_bytes()
    assert data[:4] == b"BZKC" and data[4] == 2 and data[5] == 2 and data[6] == 0 and data[7] == 0
    assert int.from_bytes(data[8:16], "little") == 2 and int.from_bytes(data[16:24], "little") == 3
    assert int.from_bytes(data[24:32], "little") == 7


def messages():
    """Small messages of every kind, dtype and shape, as bytes."""
    kinds = st.sampled_from(sorted(ALL))
    return st.builds(_message_bytes, kinds, st.sampled_from([np.float32, np.float64]),
                     st.integers(1, 3), st.integers(1, 20), st.integers(0, 2**32), st.booleans())


def _message_bytes(name, dtype, n, d, seed, vector):
    x = sample(np.random.default_rng(seed), (d,) if vector else (n, d), dtype)
    options = {"k": 1 + seed % d} if name in ("topk", "randk") else {}
    if name == "qsgd":
        options["levels"] = 1 + seed % 300
    return compress(name, x, seed=seed, **options).to_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_truncated_or_extended_bytes_raise(data, draw):
    cut = draw.draw(st.integers(0, len(data) - 1))
    with pytest.raises(ValueError):
        Compressed.from_bytes(data[:cut])
    with pytest.raises(ValueError):
        Compressed.from_bytes(data + bytes(draw.draw(st.integers(1, 9))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_corrupted_bytes_raise_or_decode_faithfully(data, draw):
    position = draw.draw(st.integers(0, len(data) - 1))
    flip = draw.draw(st.integers(1, 255))
    corrupted = bytearray(data)
    corrupted[position] ^= flip
    corrupted = bytes(corrupted)
    try:
        message = Compressed.from_bytes(corrupted)
    except ValueError:
        return
    assert message.to_bytes() == corrupted  # a changed payload value is a valid message, read as sent
    dense = message.decompress()
    assert dense.shape == message.shape


MAGIC_AND_VERSION = bk.sign(np.ones(1)).to_bytes()[:5]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_never_crashes(garbage):
    try:
        Compressed.from_bytes(MAGIC_AND_VERSION + garbage)
    except ValueError:
        pass


def _patched(data, offset, value):
    out = bytearray(data)
    out[offset:offset + len(value)] = value
    return bytes(out)


def test_structural_corruptions_are_named():
    x = np.arange(1.0, 9.0, dtype=np.float32)
    sparse = bk.topk(x, k=3).to_bytes()  # values at 32..43, uint16 indices at 44..49
    with pytest.raises(ValueError, match="strictly increasing"):
        Compressed.from_bytes(_patched(sparse, 44, (7).to_bytes(2, "little")))
    with pytest.raises(ValueError, match="strictly increasing"):
        Compressed.from_bytes(_patched(sparse, 48, (8).to_bytes(2, "little")))
    with pytest.raises(ValueError, match="parameter"):
        Compressed.from_bytes(_patched(sparse, 24, (9).to_bytes(8, "little")))
    with pytest.raises(ValueError, match="magic"):
        Compressed.from_bytes(_patched(sparse, 0, b"XXXX"))
    with pytest.raises(ValueError, match="version"):
        Compressed.from_bytes(_patched(sparse, 4, b"\x09"))
    with pytest.raises(ValueError, match="n=0"):
        Compressed.from_bytes(_patched(sparse, 8, bytes(8)))
    quantized = bk.qsgd(np.ones(3, np.float32), levels=2, seed=0).to_bytes()  # 3 codes of 3 bits
    with pytest.raises(ValueError, match="exceeds levels"):
        Compressed.from_bytes(_patched(quantized, HEADER_BYTES + 4, b"\x03"))  # level 3 > s = 2
    with pytest.raises(ValueError, match="padding"):
        Compressed.from_bytes(_patched(quantized, HEADER_BYTES + 5, b"\x02"))  # bit 9 of 9 used


def test_from_bytes_names_the_devices():
    data = bk.sign(np.ones(3)).to_bytes()
    with pytest.raises(ValueError, match="device must be one of"):
        Compressed.from_bytes(data, device="tpu")
    if _dispatch.load("cuda")[0] is None:
        with pytest.raises(RuntimeError, match="needs the cuda backend"):
            Compressed.from_bytes(data, device="cuda")


# ---- statistics -----------------------------------------------------------------------------

DRAWS = 6000


def draws(name, x, **options):
    """DRAWS independent compressions of x (one per row of an (DRAWS, d) input), float64."""
    X = np.tile(x, (DRAWS, 1))
    return getattr(bk, name)(X, seed=2024, **options).decompress()


def assert_mean_within(samples, expected, what):
    """The sample mean is within 6 standard errors of ``expected`` (each coordinate)."""
    se = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    gap = np.abs(samples.mean(axis=0) - expected)
    assert (gap <= 6 * se + 1e-12).all(), f"{what}: mean off by {gap.max():.3g} (6 se {6 * se.max():.3g})"


X8 = np.array([0.3, -1.7, 2.5, 0.0, -0.05, 4.0, 1.0, -3.3])


@pytest.mark.parametrize("name, options, omega", [
    ("randk", dict(k=3), len(X8) / 3 - 1),
    ("qsgd", dict(levels=2), min(len(X8) / 4, math.sqrt(len(X8)) / 2)),
    ("qsgd", dict(levels=7), min(len(X8) / 49, math.sqrt(len(X8)) / 7)),
    ("natural", {}, 1 / 8),
])
def test_unbiased_with_bounded_variance(name, options, omega):
    C = draws(name, X8, **options)
    assert_mean_within(C, X8, f"{name} E[C(x)]")
    err = ((C - X8) ** 2).sum(axis=1)
    bound = omega * (X8 @ X8)
    assert err.mean() <= bound + 6 * err.std() / math.sqrt(DRAWS)
    assert err.std() > 0, "no randomness"


def test_randk_variance_is_exactly_omega():
    C = draws("randk", X8, k=3)
    err = ((C - X8) ** 2).sum(axis=1)
    assert_mean_within(err[:, None], (len(X8) / 3 - 1) * (X8 @ X8), "randk E||C(x) - x||^2")


def test_randk_subsets_are_uniform():
    C = draws("randk", np.ones(5), k=2)
    keys, counts = np.unique((C != 0) @ (1 << np.arange(5)), return_counts=True)
    assert len(keys) == 10  # all C(5, 2) subsets occur
    p = 1 / 10
    assert (np.abs(counts / DRAWS - p) <= 6 * math.sqrt(p * (1 - p) / DRAWS)).all()


def test_qsgd_variance_per_entry_is_the_dithering_variance():
    s = 3
    C = draws("qsgd", X8, levels=s)
    norm = np.linalg.norm(X8)
    r = np.abs(X8) * s / norm
    frac = r - np.floor(r)
    expected = (norm / s) ** 2 * frac * (1 - frac)
    assert_mean_within((C - X8) ** 2, expected, "qsgd per-entry variance")


def sent_by_reference_and(backend, compress, X):
    """The reference's message fields for X (on the host), after checking that ``backend`` (on
    a device copy of X for cuda) sends the same bits."""
    data = __import__("cupy").asarray(X) if backend == "cuda" else X
    with np.errstate(over="ignore"):  # the reference's sums overflow here by design
        sent = {b: {name: host(a) for name, a in compress(x, b).fields.items()}
                for b, x in (("reference", X), (backend, data))}
    for name, field in sent["reference"].items():  # the codes are bytes, the scales floats
        (assert_bit_equal if field.dtype.kind == "f" else np.testing.assert_array_equal)(sent[backend][name], field)
    return sent["reference"]


@pytest.mark.parametrize("entries", [1e200, 1e-170, 1e-160])
def test_qsgd_sends_the_true_norm_of_float64_rows_whose_sum_of_squares_overflows_or_underflows(fast_backend, entries):
    """The kernels' sum of squares is +Inf, 0 or short of digits here. The wire norm must be the
    row's norm and each level |x| s / ||x|| rounded down or up, both worked out below with exact
    power-of-two scaling; every backend sends the reference's bits."""
    levels, d = 5, 300
    X = np.random.default_rng(4).uniform(-1.0, 1.0, (3, d)) * entries
    X[1, 5] = 0.0
    X[2, :-1] *= 1e-300  # one large entry among underflowing ones
    sent = sent_by_reference_and(fast_backend, lambda x, b: bk.qsgd(x, levels=levels, seed=7, backend=b), X)
    scaled, shift, norm = scaled_norms(X)
    scaled_norm = norm[:, 0]
    np.testing.assert_allclose(sent["scales"], np.ldexp(scaled_norm, -shift[:, 0].astype(np.int64)), rtol=1e-13)
    codes = reference.unpack_codes(sent["codes"], reference.qsgd_width(levels), d)
    level = codes & np.uint32(2 ** (reference.qsgd_width(levels) - 1) - 1)
    r = np.abs(scaled) * levels / scaled_norm[:, None]
    threshold = (r - np.floor(r)) * 2.0**32  # rounded up where the entry's Philox word is below it
    u = reference.row_words(7, "qsgd", np.arange(3), d).astype(np.float64)
    undecided = np.abs(u - threshold) < 1e-9 * 2.0**32  # r within rounding of the word
    np.testing.assert_array_equal(level[~undecided], (np.floor(r) + (u < threshold))[~undecided])
    np.testing.assert_array_equal(codes >> np.uint32(reference.qsgd_width(levels) - 1), X < 0)


def test_scaled_sign_sends_a_float64_rows_mean_magnitude_as_a_float32(fast_backend):
    big = np.finfo(np.float64).max
    X = np.array([[1.0, -2.0, 3.0, 4.0, 5.0, 6.0 + 1e-12], [1e38, -3e38, 0.0, 0.0, 0.0, 0.0],
                  [1e39, 1e39, -1e39, 1e39, 1e39, 1e39], [big, -big, big, 0.0, 1.0, 2.0], [1e-50] * 6])
    sent = sent_by_reference_and(fast_backend, lambda x, b: bk.scaled_sign(x, backend=b), X)
    assert sent["scales"].dtype == np.float32
    with np.errstate(over="ignore"):  # past float32's range: Inf, as the rounding gives it
        mean = (np.abs(X).sum(axis=1) / 6).astype(np.float32)
    np.testing.assert_array_equal(sent["scales"], mean)  # 3.5, 6.67e37, Inf (1e39, big), 0 (1e-50)
    decoded = bk.scaled_sign(X).decompress()
    assert decoded.dtype == np.float64
    np.testing.assert_array_equal(np.abs(decoded), np.repeat(mean.astype(np.float64)[:, None], 6, axis=1))


def test_qsgd_sends_a_float32_norm_past_float32s_range_as_inf_without_a_warning(fast_backend):
    X = np.full((2, 6), np.finfo(np.float32).max, np.float32)
    X[1] = 1.0
    data = __import__("cupy").asarray(X) if fast_backend == "cuda" else X
    scales = host(bk.qsgd(data, levels=4, seed=1, backend=fast_backend).fields["scales"])
    np.testing.assert_array_equal(scales, np.float32([np.inf, math.sqrt(6)]))


def test_natural_variance_reaches_one_eighth_at_four_thirds():
    x = np.array([4 / 3, -8 / 3, 4 / 3 * 2.0**-30, 1.0])
    C = draws("natural", x)
    low = 2.0 ** np.floor(np.log2(np.abs(x)))
    expected = (np.abs(x) - low) * (2 * low - np.abs(x))  # Var of rounding between low and 2 low
    assert_mean_within((C - x) ** 2, expected, "natural per-entry variance")
    assert np.isclose(expected[0] / x[0] ** 2, 1 / 8)


def test_natural_subnormals_round_unbiasedly():
    x = np.array([3e-39, 1e-45, -5e-40], np.float32)  # float32 subnormals
    C = np.tile(x, (DRAWS, 1))
    out = bk.natural(C, seed=5).decompress().astype(np.float64)
    assert set(np.unique(np.abs(out))) <= {0.0, float(np.float32(2.0**-126))}
    assert_mean_within(out, x.astype(np.float64), "natural subnormal mean")


@pytest.mark.parametrize("k", [1, 3, 8])
def test_topk_is_contractive(k):
    X = np.random.default_rng(3).standard_normal((50, 8))
    C = bk.topk(X, k=k).decompress()
    assert (((C - X) ** 2).sum(axis=1) <= (1 - k / 8) * (X * X).sum(axis=1) + 1e-12).all()


def test_scaled_sign_error_is_exactly_the_l1_deficit():
    X = np.random.default_rng(4).standard_normal((50, 9))
    C = bk.scaled_sign(X).decompress()
    expected = (X * X).sum(axis=1) - np.abs(X).sum(axis=1) ** 2 / 9
    np.testing.assert_allclose(((C - X) ** 2).sum(axis=1), expected, rtol=1e-10, atol=1e-12)


# ---- determinism, inputs, rules -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RANDOM))
def test_same_seed_same_message(name):
    x = sample(np.random.default_rng(5), (4, 40), np.float32)
    assert compress(name, x, seed=9).to_bytes() == compress(name, x, seed=9).to_bytes()
    assert compress(name, x, seed=9).to_bytes() != compress(name, x, seed=10).to_bytes()
    a = compress(name, x, rng=np.random.default_rng(1)).to_bytes()
    assert a == compress(name, x, rng=np.random.default_rng(1)).to_bytes()


@pytest.mark.parametrize("name", sorted(ALL))
def test_vector_is_row_zero_of_a_matrix(name):
    x = sample(np.random.default_rng(6), (1, 30), np.float64)
    one, many = compress(name, x[0]), compress(name, x)
    assert one.shape == (30,) and many.shape == (1, 30)
    assert one.to_bytes()[HEADER_BYTES:] == many.to_bytes()[HEADER_BYTES:]


@pytest.mark.parametrize("name", sorted(ALL))
def test_torch_input_gives_torch_output(name):
    torch = pytest.importorskip("torch")
    x = sample(np.random.default_rng(7), (3, 12), np.float32)
    for t, dtype in ((torch.from_numpy(x), torch.float32), (torch.from_numpy(x).to(torch.bfloat16), torch.bfloat16)):
        out = compress(name, t).decompress()
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (3, 12)
    expected = compress(name, x).decompress()
    np.testing.assert_array_equal(compress(name, torch.from_numpy(x)).decompress().numpy(), expected)


def test_non_contiguous_input():
    x = sample(np.random.default_rng(8), (12, 5), np.float32)
    for name in ALL:
        np.testing.assert_array_equal(compress(name, x.T).decompress(), compress(name, x.T.copy()).decompress())


def test_float16_is_compressed_as_float32():
    x = sample(np.random.default_rng(9), (2, 10), np.float16)
    message = bk.topk(x, k=3)
    assert message.dtype == np.float32 and message.decompress().dtype == np.float16


def test_rule_form():
    r = bk.qsgd(levels=4, seed=1)
    assert repr(r) == "qsgd(levels=4, seed=1)"
    x = np.arange(6.0)
    assert r(x).to_bytes() == bk.qsgd(x, levels=4, seed=1).to_bytes()


@pytest.mark.parametrize("call, error, match", [
    (lambda x: bk.topk(x, k=9), ValueError, "k must be <= d = 8"),
    (lambda x: bk.topk(x, k=0), ValueError, "k must be >= 1"),
    (lambda x: bk.randk(x, k=2.5, seed=0), TypeError, "k must be an int"),
    (lambda x: bk.randk(x, k=2), ValueError, "seed="),
    (lambda x: bk.randk(x, k=2, seed=1, rng=np.random.default_rng()), ValueError, "not both"),
    (lambda x: bk.qsgd(x, levels=0, seed=0), ValueError, "levels must be >= 1"),
    (lambda x: bk.qsgd(x, levels=MAX_LEVELS + 1, seed=0), ValueError, "levels must be <="),
    (lambda x: bk.natural(x, seed=-1), ValueError, "seed"),
    (lambda x: bk.sign(x.astype(np.int64)), TypeError, "int64"),
    (lambda x: bk.sign(x.reshape(2, 2, 2)), ValueError, "must have shape"),
    (lambda x: bk.scaled_sign(x[:0]), ValueError, "empty"),
    (lambda x: bk.topk(k=1, levels=3), TypeError, "levels"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(np.ones(8))


# ---- error feedback -------------------------------------------------------------------------

def test_error_feedback_by_hand():
    ef = bk.ErrorFeedback(bk.topk(k=1))
    g = np.array([[1.0, 3.0], [-2.0, 0.5]])
    m1 = ef(g, lr=0.5)  # p = [[.5, 1.5], [-1, .25]] -> sends [[0, 1.5], [-1, 0]]
    np.testing.assert_array_equal(m1.decompress(), [[0.0, 1.5], [-1.0, 0.0]])
    np.testing.assert_array_equal(ef.error, [[0.5, 0.0], [0.0, 0.25]])
    m2 = ef(g, lr=0.5)  # p = [[1, 1.5], [-1, .5]] -> sends [[0, 1.5], [-1, 0]]
    np.testing.assert_array_equal(m2.decompress(), [[0.0, 1.5], [-1.0, 0.0]])
    np.testing.assert_array_equal(ef.error, [[1.0, 0.0], [0.0, 0.5]])
    with pytest.raises(ValueError, match="shape"):
        ef(np.ones((3, 2)), lr=1.0)
    ef.reset()
    assert ef.error is None


def test_error_feedback_checks_its_gradients_and_its_compressor():
    rows = [np.array([1.0, 3.0]), np.array([-2.0, 0.5])]
    ef = bk.ErrorFeedback(bk.topk(k=1))
    np.testing.assert_array_equal(ef(rows, lr=0.5).decompress(), [[0.0, 1.5], [-1.0, 0.0]])  # a list of rows
    np.testing.assert_array_equal(ef.error, [[0.5, 0.0], [0.0, 0.25]])
    big_endian = np.stack(rows).astype(">f8")
    ef(big_endian, lr=0.5)  # the same values in another byte order: the same kind of array
    np.testing.assert_array_equal(ef.error, [[1.0, 0.0], [0.0, 0.5]])
    for other, said in [(np.stack(rows).astype(np.float32), "G is a float32 numpy array of shape .2, 2."),
                        (np.ones((3, 2)), "of shape .3, 2. on cpu but this ErrorFeedback holds errors as a "
                                          "float64 numpy array of shape .2, 2.")]:
        with pytest.raises(ValueError, match=said):
            ef(other, lr=0.5)
    np.testing.assert_array_equal(ef.error, [[1.0, 0.0], [0.0, 0.5]])  # refused calls leave it
    with pytest.raises(TypeError, match="G has dtype int64"):
        bk.ErrorFeedback(bk.topk(k=1))(np.ones((2, 2), dtype=np.int64), lr=0.5)
    with pytest.raises(TypeError, match=r"needs a compressor .* cwtm\(f=1\) gave a ndarray"):
        bk.ErrorFeedback(bk.cwtm(f=1))(np.ones((3, 2)), lr=0.5)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="G is a float64 torch array"):
        ef(torch.tensor(np.stack(rows)), lr=0.5)


def test_error_feedback_of_an_infinite_entry_keeps_nan_without_a_warning():
    ef = bk.ErrorFeedback(bk.topk(k=1))
    ef(np.array([[np.inf, 1.0], [2.0, -np.finfo(np.float64).max]]), lr=4.0)  # Inf - Inf; 4 max
    np.testing.assert_array_equal(ef.error, [[np.nan, 4.0], [8.0, np.nan]])


def test_error_feedback_sum_is_telescoping_with_torch():
    torch = pytest.importorskip("torch")
    ef = bk.ErrorFeedback(bk.randk(k=2, rng=np.random.default_rng(0)))
    g = torch.arange(12, dtype=torch.float64).reshape(2, 6)
    sent = sum(ef(g, lr=0.1).decompress() for _ in range(5))
    # sum of messages + final error = sum of lr * g (nothing is lost, only delayed)
    torch.testing.assert_close(sent + ef.error, 5 * 0.1 * g)

