"""Compressors (SPEC §4): a vector (d,) or a round of rows (n, d), compressed row by row into a
:class:`Compressed` message with an exact wire format.

Every compressor takes the data first and keyword-only options; called without data it returns
a reusable rule (``topk(k=100)``), which is what :class:`ErrorFeedback` and the algorithms take.
Random compressors take ``seed=`` (an int) or ``rng=`` (a ``numpy.random.Generator``, which gives
a fresh seed on every call: use it in a rule that is called every step). Their draws come from
Philox4x32-10 keyed by (seed, compressor, row, entry), so a seed gives the same message on every
backend and any thread count.

Wire format (little-endian): a 32-byte header, then the payload fields of the kind, each an
array over all rows, in the order listed. ``Compressed.nbytes`` is the payload size, i.e.
``len(msg.to_bytes()) - HEADER_BYTES``; ``nbytes_per_row`` is what one worker sends.

=============  ==================================================  ==========================
kind           payload per row                                     unbiased / contractive
=============  ==================================================  ==========================
topk(k)        k values (dtype) + k indices (uint16/32/64 by d)    delta = k/d
randk(k)       k values * d/k (dtype) + k indices                  omega = d/k - 1
qsgd(s)        norm (dtype) + d codes of 1 + bitlen(s) bits        omega = min(d/s^2, sqrt(d)/s)
natural        d codes of 1 + exponent bits (9 for float32)        omega = 1/8
sign           d bits                                              biased
scaled_sign    scale (float32) + d bits                            delta = |x|_1^2 / (d |x|^2)
=============  ==================================================  ==========================

A message lives where its input did: the fields of a NumPy or torch CPU input are NumPy arrays,
those of a CuPy or torch CUDA input are CuPy arrays on the input's device, compressed and
decompressed there by the ``cuda`` backend. ``to_bytes`` is the one copy to the host;
``from_bytes(data, device="cuda")`` puts a received message on the GPU.

Indices are 0-based and strictly increasing in each row; codes of width w bits are packed in a
little-endian bit stream per row (code i occupies bits [i*w, (i+1)*w); bit j is bit j % 8 of
byte j // 8), padded with zero bits to a whole byte. qsgd's norm is in the message dtype;
scaled_sign's scale is a float32 whatever the dtype, the d + 32 bits seed 001 counts.
"""
from __future__ import annotations

import functools
import struct

import numpy as np

from . import _checks, _dispatch
from ._arrays import Adapted, adapt, describe, host, quietly, user_array, xp_of
from .backends import reference as _ref
from .distances import SUM_FLOOR
from .pipeline import rule

HEADER = struct.Struct("<4sBBBBQQQ")
#: bytes of the header before the payload: magic, version, kind, dtype, flags, n, d, parameter
HEADER_BYTES = HEADER.size
_MAGIC = b"BZKC"
#: 2: scaled_sign's scale is a float32 whatever the message dtype (1 sent it in that dtype);
#: from_bytes refuses messages of version 1, whatever their kind
_VERSION = 2
KINDS = ("topk", "randk", "qsgd", "natural", "sign", "scaled_sign")
_DTYPES = (np.dtype("<f4"), np.dtype("<f8"))
_FLAG_VECTOR = 1  # the message was made from a (d,) vector: decompress gives (d,)
#: QSGD levels are capped so a code (sign + level bits) fits 16 bits
MAX_LEVELS = 2**15 - 1
_DEVICES = ("cpu", "cuda")


def index_dtype(d):
    """The narrowest unsigned integer holding the indices 0..d-1."""
    for dtype in (np.uint16, np.uint32):
        if d - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype).newbyteorder("<")
    return np.dtype("<u8")


def _code_width(kind, dtype, param):
    if kind == "qsgd":
        return _ref.qsgd_width(param)
    if kind == "natural":
        return _ref.natural_width(dtype)
    return 1


def _layout(kind, dtype, n, d, param):
    """The payload fields of a message: [(name, dtype, shape)], in wire order."""
    if kind in ("topk", "randk"):
        return [("values", dtype, (n, param)), ("indices", index_dtype(d), (n, param))]
    codes = ("codes", np.dtype(np.uint8), (n, -(-d * _code_width(kind, dtype, param) // 8)))
    if kind == "qsgd":
        return [("scales", dtype, (n,)), codes]
    if kind == "scaled_sign":
        return [("scales", np.dtype(np.float32), (n,)), codes]
    return [codes]


def _device_of(fields):
    """'cpu' for NumPy fields, 'cuda' for CuPy ones: the device the message's kernels run on."""
    return "cpu" if isinstance(next(iter(fields.values())), np.ndarray) else "cuda"


class Compressed:
    """A compressed message: the payload arrays of one compressor, row by row.

    ``kind``, ``dtype`` (the wire dtype of values and norms, and what ``decompress`` gives;
    scaled_sign's scale is a float32), ``shape`` ((d,) or (n, d): what ``decompress`` gives),
    ``param`` (k or levels; 0 for kinds without one), ``fields`` (name -> NumPy array, or CuPy
    array on the device of a GPU input), ``nbytes`` (payload bytes), ``nbytes_per_row``.
    """

    __slots__ = ("kind", "dtype", "shape", "param", "fields", "_form")

    def __init__(self, kind, dtype, shape, param, fields, form):
        self.kind, self.dtype, self.shape, self.param = kind, np.dtype(dtype), tuple(shape), param
        self.fields = fields
        self._form = form

    @property
    def n(self):
        return 1 if len(self.shape) == 1 else self.shape[0]

    @property
    def d(self):
        return self.shape[-1]

    @property
    def nbytes(self):
        """Exact payload size in bytes: ``len(self.to_bytes()) - HEADER_BYTES``."""
        return sum(int(a.nbytes) for a in self.fields.values())

    @property
    def nbytes_per_row(self):
        """Bytes one worker sends for its row (the payload divided evenly by rows)."""
        return self.nbytes // self.n

    def __repr__(self):
        return (f"Compressed(kind={self.kind!r}, shape={self.shape}, dtype={self.dtype}, "
                f"param={self.param}, nbytes={self.nbytes})")

    @quietly
    def decompress(self, *, backend=None):
        """The dense vector(s): same array library, device and dtype as the compressed input
        (after ``from_bytes``: NumPy, or CuPy with ``device="cuda"``, in the wire dtype). Runs on
        the message's device. Cost: one write of the (n, d) result."""
        f, d = self.fields, self.d
        device = _device_of(f)
        kernel = lambda op: _dispatch.kernel(op, device, backend)  # noqa: E731
        if self.kind in ("topk", "randk"):
            out = kernel("scatter_rows")(f["values"], f["indices"].astype(np.int64), d)
        elif self.kind == "qsgd":
            out = kernel("qsgd_decompress")(f["scales"], f["codes"], self.param, d)
        elif self.kind == "natural":
            out = kernel("natural_decompress")(f["codes"], d, self.dtype)
        else:
            xp = xp_of(f["codes"])
            scales = f["scales"].astype(self.dtype) if self.kind == "scaled_sign" else xp.ones(self.n, self.dtype)
            out = kernel("sign_decompress")(f["codes"], scales, d)
        return self._form.restore(out)

    def to_bytes(self):
        """Header + payload (see the module docstring). Cost: one copy of the payload (from the
        device for a GPU message)."""
        flags = _FLAG_VECTOR if len(self.shape) == 1 else 0
        head = HEADER.pack(_MAGIC, _VERSION, KINDS.index(self.kind), _DTYPES.index(self.dtype),
                           flags, self.n, self.d, self.param)
        parts = [memoryview(np.ascontiguousarray(host(self.fields[name]), dtype=dt)).cast("B")
                 for name, dt, _ in _layout(self.kind, self.dtype, self.n, self.d, self.param)]
        return b"".join([head, *parts])

    @classmethod
    def from_bytes(cls, data, *, device="cpu", backend=None):
        """Parse ``to_bytes`` output. With ``device="cpu"`` the arrays are read-only NumPy views
        of ``data`` (no copy); with ``device="cuda"`` they are copied once to the current CuPy
        device, checked there, and ``decompress`` gives CuPy arrays.

        Raises ValueError on anything ``to_bytes`` cannot have produced: a short or long buffer,
        unknown magic/version/kind/dtype/flags, out-of-range sizes or parameters, indices not
        strictly increasing below d, QSGD levels above s, non-zero padding bits. Changed payload
        values (floats, signs, exponents) are valid messages: integrity is the transport's job.
        Cost: one read of the indices or codes.
        """
        if device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}; got {device!r}")
        buf = memoryview(data).cast("B")
        if len(buf) < HEADER_BYTES:
            raise ValueError(f"compressed message truncated: {len(buf)} bytes, the header alone is {HEADER_BYTES}")
        magic, version, kind_id, dtype_id, flags, n, d, param = HEADER.unpack_from(buf)
        if magic != _MAGIC:
            raise ValueError(f"not a byzkern compressed message (magic {magic!r}, expected {_MAGIC!r})")
        if version != _VERSION:
            raise ValueError(f"unsupported compressed message version {version} (this byzkern reads {_VERSION})")
        if kind_id >= len(KINDS) or dtype_id >= len(_DTYPES) or flags & ~_FLAG_VECTOR:
            raise ValueError(f"corrupt header: kind id {kind_id}, dtype id {dtype_id}, flags {flags}")
        kind, dtype = KINDS[kind_id], _DTYPES[dtype_id]
        if n < 1 or d < 1 or (flags & _FLAG_VECTOR and n != 1):
            raise ValueError(f"corrupt header: n={n}, d={d}, flags={flags}")
        _check_param(kind, param, d)
        layout = _layout(kind, dtype, n, d, param)
        expected = HEADER_BYTES + sum(dt.itemsize * int(np.prod(shape)) for _, dt, shape in layout)
        if len(buf) != expected:
            raise ValueError(f"{kind} message of shape ({n}, {d}) must be {expected} bytes; got {len(buf)}")
        fields, offset = {}, HEADER_BYTES
        for name, dt, shape in layout:
            count = int(np.prod(shape))
            fields[name] = np.frombuffer(buf, dtype=dt, count=count, offset=offset).reshape(shape)
            offset += count * dt.itemsize
        lib = "numpy"
        if device == "cuda":
            module, reason = _dispatch.load("cuda")
            if module is None:
                raise RuntimeError(f"from_bytes(device='cuda') needs the cuda backend, which is not available: {reason}")
            import cupy

            fields, lib = {name: cupy.asarray(a) for name, a in fields.items()}, "cupy"
        _check_payload(kind, fields, d, param, dtype, backend)
        shape = (d,) if flags & _FLAG_VECTOR else (n, d)
        form = Adapted(None, lib, device, dtype.newbyteorder("="), None, 1 if flags & _FLAG_VECTOR else 0)
        return cls(kind, dtype, shape, param, fields, form)


def _check_param(kind, param, d):
    if kind in ("topk", "randk"):
        ok = 1 <= param <= d
    elif kind == "qsgd":
        ok = 1 <= param <= MAX_LEVELS
    else:
        ok = param == 0
    if not ok:
        raise ValueError(f"corrupt header: {kind} parameter {param} is out of range for d={d}")


def _check_payload(kind, fields, d, param, dtype, backend):
    device = _device_of(fields)
    kernel = lambda op: _dispatch.kernel(op, device, backend)  # noqa: E731
    if kind in ("topk", "randk"):
        if not kernel("indices_ok")(fields["indices"], d):
            raise ValueError(f"corrupt {kind} message: indices must be strictly increasing and below d={d}")
        return
    codes, width = fields["codes"], _code_width(kind, dtype, param)
    if not _ref.packed_tail_is_zero(codes, width, d):
        raise ValueError(f"corrupt {kind} message: padding bits after the last code are not zero")
    # when levels fills its width - 1 level bits (s = 1, 3, 7, 15, ...) every code is a valid
    # level, so there is nothing to read
    if kind == "qsgd" and param < 2 ** (width - 1) - 1 and not kernel("qsgd_levels_ok")(codes, param, d):
        raise ValueError(f"corrupt qsgd message: a level exceeds levels={param}")


def _adapt(x):
    return adapt(x, name="x", ndims=(1, 2))


def _compress(kind, A, param, backend, again=None, **options):
    """The message of ``kind`` on the rows of A; ``again(X, fields)`` mends a float64 one."""
    n, d = A.data.shape
    out = _dispatch.kernel(kind, A.device, backend)(A.data, **options)
    out = out if isinstance(out, tuple) else (out,)
    fields = {name: A.xp.asarray(a).astype(dt, copy=False)
              for (name, dt, _), a in zip(_layout(kind, A.dtype, n, d, param), out)}
    if again is not None and A.dtype == np.float64:
        again(A.data, fields)
    A.order_torch_after_kernels()
    form = Adapted(None, A.lib, A.device, A.user_dtype, A.torch_device, A.folded)
    return Compressed(kind, A.dtype, (d,) if A.folded else (n, d), param, fields, form)


def _k(k, A):
    d = A.data.shape[1]
    return _checks.integer(k, "k", low=1, high=d, high_text=f"d = {d}")


@rule
def topk(x, *, k, backend=None):
    """Top-k sparsification (seeds 001, 002): per row, keep the k entries of largest |x_i| (ties
    by lowest index; NaN ranks above Inf), sent as values and ascending indices.

    Contractive: ``||C(x) - x||^2 <= (1 - k/d) ||x||^2``. Cost: one read of x (selection),
    then k reads.
    """
    A = _adapt(x)
    k = _k(k, A)
    return _compress("topk", A, k, backend, k=k)


@rule
def randk(x, *, k, seed=None, rng=None, backend=None):
    """Random-k sparsification (seeds 000, 002): per row, k distinct indices uniform over the
    k-subsets (Floyd's algorithm on Philox uniforms), values scaled by d/k.

    Unbiased with ``omega = d/k - 1``: ``E C(x) = x``, ``E ||C(x) - x||^2 = (d/k - 1) ||x||^2``.
    The indices are sent (not regenerated from the seed). Cost: k reads of x, d/8 bytes of
    scratch per row.
    """
    A = _adapt(x)
    k = _k(k, A)
    return _compress("randk", A, k, backend, k=k, seed=_checks.seed(seed, rng))


@rule
def qsgd(x, *, levels, seed=None, rng=None, backend=None):
    """QSGD / random dithering (Alistarh et al. 2017; seeds 000, 001) with s = ``levels``:
    ``Q(x)_i = ||x||_2 sign(x_i) l_i / s`` where ``l_i`` is ``|x_i| s / ||x||_2`` rounded
    stochastically to one of its two neighbouring integers (up with probability equal to the
    fractional part).

    Unbiased with ``omega = min(d/s^2, sqrt(d)/s)``. Wire per row: the norm (message dtype)
    and one code per entry of 1 sign bit + bitlen(s) level bits. The norm is summed in the
    fixed order of ``ordered_row_sums`` so it is identical on every backend; a row whose norm
    is not finite (a NaN or Inf entry, or a norm past the dtype's range) decodes to NaN.
    1 <= levels <= 32767. Cost: two reads of x.
    """
    levels = _checks.integer(levels, "levels", low=1, high=MAX_LEVELS)
    A, seed = _adapt(x), _checks.seed(seed, rng)
    again = functools.partial(_qsgd_again, levels=levels, seed=seed)
    return _compress("qsgd", A, levels, backend, again, levels=levels, seed=seed)


def _qsgd_again(X, fields, levels, seed):
    """The kernels' sum of squares overflows for a float64 row with entries past about 1e154
    (norm +Inf, although the norm fits: the row decoded to NaN) and loses digits to subnormal
    squares where its entries are all below about 1e-140 (at worst norm 0: every level 0).
    Float32 rows, squared in float64, do neither. Those rows, seldom any, are encoded again on
    the host through their largest entry (``reference.qsgd_by_largest``), with the same draws.
    On a GPU, finding them costs one synchronization."""
    xp = xp_of(X)
    norms = fields["scales"]
    suspect = xp.flatnonzero((norms == xp.inf) | (norms < SUM_FLOOR ** 0.5))
    if not suspect.size:
        return
    rows, suspect = host(X[suspect]), host(suspect)
    again = np.isfinite(rows).all(axis=1) & rows.any(axis=1)  # not the non-finite or zero rows
    if again.any():
        norm, codes = _ref.qsgd_by_largest(rows[again], suspect[again], levels, seed)
        fields["scales"][suspect[again]] = xp.asarray(norm)
        fields["codes"][suspect[again]] = xp.asarray(codes)


@rule
def natural(x, *, seed=None, rng=None, backend=None):
    """Natural compression (Horvath et al. 2019): each entry rounded stochastically to one of
    its neighbouring powers of two, ``2^e`` or ``2^(e+1)`` for ``2^e <= |x_i| < 2^(e+1)``, up
    with probability ``|x_i|/2^e - 1``, so unbiased with ``omega = 1/8``.

    Wire per entry: sign + the float's exponent field, 9 bits for float32 and 12 for float64.
    Subnormals round between 0 and the smallest normal power of two (still unbiased); the
    largest finite values may round up to Inf; NaN stays NaN. Cost: one read of x.
    """
    return _compress("natural", _adapt(x), 0, backend, seed=_checks.seed(seed, rng))


@rule
def sign(x, *, backend=None):
    """signSGD's compressor (seed 001): ``sign(x_i)`` with sign(0) = +1, 1 bit per entry.
    Biased and not scaled; NaN counts as positive. Cost: one read of x."""
    return _compress("sign", _adapt(x), 0, backend)


@rule
def scaled_sign(x, *, backend=None):
    """l1-QSGD / scaled sign (seed 001): ``(||x||_1 / d) sign(x)``, sign(0) = +1.

    Contractive with ``delta = ||x||_1^2 / (d ||x||^2)``: ``||C(x) - x||^2 = ||x||^2 -
    ||x||_1^2 / d`` (for float64 x, to the float32 rounding of the scale). Wire per row: d bits
    + the scale as a float32, ceil(d/8) + 4 bytes (SPEC §4; seed 001 counts d + 32 bits),
    whatever x's dtype: a float64 row's scale is rounded to float32, Inf past its range, and
    subnormal or 0 below about 1e-38 and 1e-45. The l1 norm is summed in float64 in the fixed
    order of ``ordered_row_sums``. Cost: one read of x.
    """
    return _compress("scaled_sign", _adapt(x), 0, backend)


class ErrorFeedback:
    """Error feedback around a compressor (seed 001, Algorithm 2), one state per worker row.

    Each call ``ef(G, lr=...)`` takes the rows of gradients G ((d,) or (n, d)) and per row
    computes ``p = lr * g + e``, sends ``C(p)`` (the returned :class:`Compressed`) and keeps
    ``e <- p - C(p)``. The server then steps by the mean of the decompressed ``C(p_i)`` with no
    second step size, as in the seed's proof. The error starts at zero and lives in G's array
    library, device and dtype; later G must keep those and the shape (``reset()`` clears the
    error). ``compressor`` is a compressor rule or any callable giving a :class:`Compressed`.
    Give a random compressor ``rng=`` (not a fixed ``seed=``) so each step draws afresh.
    """

    def __init__(self, compressor):
        self.compressor = _checks.function(compressor, "compressor", "a compressor rule such as topk(k=10)")
        self.error = None

    @quietly
    def __call__(self, G, *, lr):
        lr = _checks.real(lr, "lr")
        G = user_array(G, "G")
        if self.error is not None and describe(G) != describe(self.error):
            raise ValueError(f"G is a {describe(G)} but this ErrorFeedback holds errors as a {describe(self.error)}; "
                             f"use one ErrorFeedback per group of workers, or reset() it")
        p = lr * G if self.error is None else lr * G + self.error
        message = self.compressor(p)
        if not isinstance(message, Compressed):
            raise TypeError(f"ErrorFeedback needs a compressor (such as topk(k=10)), which gives a Compressed "
                            f"message; {self.compressor!r} gave a {type(message).__name__}")
        self.error = p - message.decompress()
        return message

    def reset(self):
        self.error = None

    def __repr__(self):
        return f"ErrorFeedback({self.compressor!r})"
