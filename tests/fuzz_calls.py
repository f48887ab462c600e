"""Fuzz every public function with bad and extreme input (run in a subprocess by test_fuzz.py).

Hypothesis draws a call: an operation, its data (wrong types and ranks, int/complex/half
dtypes, empty, NaN/+-Inf/1e38/1e154/dtype-max entries in any rows, huge n with tiny d and the
reverse, strided, negatively strided, Fortran-ordered and big-endian views, torch tensors,
lists, arrays on torch's "meta" device) and its options (f and k out of range, wrong types,
non-finite reals, auxiliary arrays of the wrong shape, library or device). The call runs on
every CPU backend. A case fails when:

- a backend raises anything but ValueError or TypeError (SPEC §8), or the backends disagree on
  whether the call is bad; a call warns (a RuntimeWarning: overflow and invalid values are
  quiet by design, so a division by zero or a warning byzkern issues); a call modifies its data
  or options;
- a result of float data is not in the data's library and dtype, or a batch item's result is
  not the bits of that item called alone;
- the backends' results differ beyond rounding; for ops that pick rows (Krum, NNM, norm
  filtering), unless each backend's own distances or norms pick other rows, as a tie to within
  rounding may;
- a robust rule's output has a non-finite entry although at most the f rows it tolerates have
  a non-finite entry (SPEC §8, nan_policy="outlier");
- a result differs from the op's definition worked out here (the backends agreeing is not
  enough: they share the Python layer, and the reference is one of them): clip, qsgd and
  scaled_sign with exact scaling (_harness.scaled_norms); alie's mean and std, and the rows of
  sign_flip, ipm, foe, mimic and optimized; topk, randk, sign and natural; cwmed, cwtm and
  meamed from np.sort; Krum, Multi-Krum, NNM and norm filtering from distances and norms taken
  here; cclip's and fixed-step geomed's iterations; bucketing and resampling counting every
  row as they should; pairwise_sqdist's symmetry, sign and diagonal.

A crash (a signal) or a hang is the parent's to catch. Prints one summary line:
``calls=N examples=M raised=R``.

Usage: python fuzz_calls.py EXAMPLES
"""
import faulthandler
import inspect
import math
import signal
import sys
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import byzkern as bk
from _harness import clipped, scaled_norms
from byzkern._arrays import adapt
from byzkern.aggregators import _row_norms
from byzkern.distances import krum_scores, least, nearest_including_self, sqdist_matrix

try:
    import torch
except ImportError:
    torch = None

DOCUMENTED = (ValueError, TypeError)
BACKENDS = tuple(b for b in ("reference", "cpu", "numba") if bk.info()["backends"][b]["available"])
COUNTS = {"calls": 0, "examples": 0, "raised": 0}

# ---- data -----------------------------------------------------------------------------------

#: 1e154: a float64 row whose squared distances to small rows are finite, but their sums are not
POISON = ("nan", "inf", "-inf", "1e38", "-1e38", "1e154", "-1e154", "max")
SHAPE_REGIMES = {
    "small": (st.integers(1, 9), st.integers(1, 9)),
    "huge n, tiny d": (st.integers(300, 1200), st.integers(1, 2)),
    "tiny n, huge d": (st.integers(1, 3), st.integers(5_000, 30_000)),
    "empty": (st.integers(0, 3), st.integers(0, 3)),
}
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "complex64", "bool")


def poison_value(kind, dtype):
    if kind == "max":
        return np.finfo(dtype).max
    value, largest = float(kind), float(np.finfo(dtype).max)
    if math.isfinite(value) and abs(value) > largest:  # 1e154 in float32: its largest, not Inf
        value = math.copysign(largest, value)
    return value


@st.composite
def matrices(draw, ranks=(2, 3)):
    """A float array (mostly) of rank in ``ranks`` with poisoned rows, in some memory layout."""
    wrong_rank = draw(st.integers(0, 3)) == 0
    rank = draw(st.sampled_from((ranks[0] - 1, ranks[-1] + 1) if wrong_rank else ranks))
    regime = draw(st.sampled_from(["small"] * 7 + [r for r in SHAPE_REGIMES if r != "small"]))
    n_st, d_st = SHAPE_REGIMES[regime]
    if rank <= 0:
        shape = ()
    elif rank == 1:
        shape = (draw(d_st),)
    else:
        shape = (draw(st.integers(1, 3)),) * (rank - 2) + (draw(n_st), draw(d_st))
    dtype = draw(st.sampled_from(DTYPES[:2])) if draw(st.integers(0, 5)) else draw(st.sampled_from(DTYPES[2:]))
    compute = np.float32 if dtype in ("float16", "bfloat16") else (dtype if dtype != "bool" else np.float64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30, 1e-300, 1e200])) if dtype == "float64" else 1.0
    X = (rng.standard_normal(shape) * scale).astype(compute)
    if X.ndim >= 1 and X.size and np.issubdtype(X.dtype, np.floating):
        rows = X.reshape(-1, shape[-1]) if X.ndim >= 2 else X.reshape(1, -1)
        for r in draw(st.lists(st.integers(0, rows.shape[0] - 1), max_size=min(rows.shape[0], 6))):
            value = poison_value(draw(st.sampled_from(POISON)), rows.dtype)
            if draw(st.booleans()):
                rows[r] = value
            else:
                rows[r, draw(st.integers(0, rows.shape[1] - 1))] = value
    layout = draw(st.sampled_from(["contiguous", "contiguous", "strided", "reversed", "fortran", "big-endian"]))
    if layout == "strided" and X.ndim:
        wide = np.zeros(X.shape[:-1] + (2 * X.shape[-1],), X.dtype)
        wide[..., ::2] = X
        X = wide[..., ::2]
    elif layout == "reversed" and X.ndim:  # the same values through negative strides
        X = np.ascontiguousarray(X[..., ::-1])[..., ::-1]
    elif layout == "fortran":
        X = np.asfortranarray(X)
    elif layout == "big-endian" and X.dtype.kind == "f":  # as read from a file: NumPy only
        X = X.astype(X.dtype.newbyteorder(">"))
    return wrap(draw, X, dtype)


def wrap(draw, X, dtype):
    """The array as the user hands it in: NumPy, torch, a list of rows, or something wrong."""
    form = draw(st.sampled_from(["numpy"] * 6 + ["torch", "list", "meta", "nonsense"]))
    if dtype == "bfloat16" and torch is not None:
        form = "torch"
    if form == "torch" and torch is not None and X.dtype != np.complex64:
        t = torch.from_numpy(np.ascontiguousarray(X, dtype=X.dtype.newbyteorder("=")))
        return t.to(torch.bfloat16) if dtype == "bfloat16" else t
    if form == "meta" and torch is not None:
        return torch.empty(X.shape, device="meta")
    if form == "list" and X.ndim >= 1:
        return list(X) if X.ndim >= 2 else [X, X[:-1]]  # rows, or ragged rows
    if form == "nonsense":
        return draw(st.sampled_from([None, "X", 3.0, {"a": 1}, np.array(["a", "b"]), np.array([None, 1.0])]))
    return X.astype(np.float16) if dtype == "float16" else (X.astype(bool) if dtype == "bool" else X)


# ---- options ----------------------------------------------------------------------------------

WRONG = (None, 1.5, True, "2", 2**70, np.int64(2), float("nan"), [1])


def integer(low, high):
    """Mostly in [low, high], sometimes just outside, sometimes not an int at all."""
    return st.one_of(*[st.integers(low, max(low, high))] * 4, st.integers(low - 2, high + 2), st.sampled_from(WRONG))


def real(low=-10.0, high=10.0):
    return st.one_of(*[st.floats(low, high)] * 4,
                     st.sampled_from([0.0, -1.0, 1e308, float("inf"), float("nan"), "1", None, True]))


def shape_of(X):
    shape = getattr(X, "shape", None)
    if shape is None and isinstance(X, list) and X:
        shape = (len(X),) + tuple(getattr(X[0], "shape", ()))
    return tuple(shape or ())


@st.composite
def aux(draw, tail):
    """An auxiliary array (weights, init, norms, own rows): right shape or wrong, sometimes torch."""
    shape = draw(st.sampled_from([tail, tail[1:] + (2,), (2,) + tail, ()]))
    values = draw(st.sampled_from(["ones", "random", "negative", "zeros", "nan"]))
    arr = {"ones": np.ones, "zeros": np.zeros}.get(values, np.ones)(shape)
    if values == "random":
        arr = np.random.default_rng(0).random(shape) + 0.5
    elif values == "negative":
        arr = -arr
    elif values == "nan":
        arr = np.full(shape, np.nan)
    arr = np.asarray(arr, dtype=np.float64)
    if torch is not None and draw(st.integers(0, 4)) == 0:
        return torch.from_numpy(arr)
    return arr


def n_of(X):
    shape = shape_of(X)
    return shape[-2] if len(shape) >= 2 else (shape[0] if shape else 1)


def d_of(X):
    shape = shape_of(X)
    return shape[-1] if shape else 1


@st.composite
def calls(draw):
    """(op name, data, options, the f a robust rule tolerates for the finiteness check or None)."""
    op = draw(st.sampled_from(OPS))
    ranks = (1, 2) if op in COMPRESSORS else (2, 3)
    X = draw(matrices(ranks))
    n, d = n_of(X), d_of(X)
    f = draw(integer(0, n))
    opts, tolerated = {}, None
    if op in ("cwtm", "meamed", "krum", "pipeline"):
        opts["f"] = f
        tolerated = f
    elif op == "nnm":  # a pre-aggregator: a non-finite row's own mix keeps it
        opts["f"] = f
    elif op == "cwmed":
        tolerated = (n - 1) // 2
    elif op == "multikrum":
        opts["f"] = f
        if draw(st.booleans()):
            opts["m"] = draw(integer(1, n))
        tolerated = f if "m" not in opts else None
    elif op == "geomed":
        # eps from 1e-9: below it (5e-324 stops on objectives equal to the last bit, which a flat
        # stretch of F gives one route and not the other) the backends' steps may rightly differ
        opts.update(maxiter=draw(integer(0, 20)), eps=draw(real(1e-9, 1e-3)),
                    nu=draw(real(1e-9, 1.0)))  # nu is absolute: tinier values overflow w/nu * x
        if draw(st.booleans()):
            opts["weights"] = draw(aux((n,)))
        if draw(st.booleans()):
            opts["init"] = draw(st.one_of(st.sampled_from(["mean", "zero", "median"]), aux((d,))))
        tolerated = (n - 1) // 2 if "weights" not in opts and not hasattr(opts.get("init"), "shape") else None
    elif op == "cclip":
        opts.update(tau=draw(real(0.0, 10.0)), iters=draw(integer(0, 5)))
        if draw(st.booleans()):
            opts["init"] = draw(aux((d,)))
        tolerated = (n - 1) // 2 if "init" not in opts else None
    elif op == "norm_filter":
        opts["f"] = f
        if draw(st.booleans()):
            opts["q"] = draw(st.one_of(real(0.0, 5.0), st.just(np.inf)))
        if draw(st.booleans()):
            opts["norms"] = draw(aux((n,)))
        tolerated = f if "norms" not in opts else None
    elif op == "krum_k":
        opts.update(f=f, k=draw(integer(1, n)))
    elif op in ("bucketing", "resampling"):
        opts["s"] = draw(integer(1, min(n, 8)))  # n * s draws are made in Python
        opts.update(draw(seeds()))
    elif op == "clip":
        opts["tau"] = draw(real(0.0, 10.0))
    elif op in ("topk", "randk"):
        opts["k"] = draw(integer(1, d))
        if op == "randk":
            opts.update(draw(seeds()))
    elif op == "qsgd":
        opts["levels"] = draw(integer(1, 2**15))
        opts.update(draw(seeds()))
    elif op == "natural":
        opts.update(draw(seeds()))
    elif op == "roundtrip":
        opts["k"] = draw(integer(1, d))
        opts["corrupt"] = draw(st.sampled_from([None, "truncate", "flip", "extend"]))
        opts["where"] = draw(st.integers(0, 10**6))
    elif op == "error_feedback":
        opts.update(k=draw(integer(1, d)), lr=draw(real()))
    elif op in ("sign_flip", "gaussian"):
        opts["f"] = draw(integer(1, 5))
        if draw(st.booleans()):
            rows = opts["f"] if type(opts["f"]) is int and 1 <= opts["f"] <= 5 else 1
            opts["own"] = draw(aux((rows, d)))
        if op == "sign_flip":
            opts["scale"] = draw(real())
        else:
            opts["std"] = draw(real(0.0, 10.0))
            opts.update(draw(seeds()))
    elif op in ("ipm", "foe"):
        opts.update(f=draw(integer(1, 5)), **{"eps" if op == "ipm" else "eta": draw(real())})
    elif op == "alie":
        opts.update(f=draw(integer(1, n)), ddof=draw(integer(0, n)))
        if draw(st.booleans()):
            opts["z"] = draw(real())
    elif op in ("mimic", "Mimic"):
        opts["f"] = draw(integer(1, 5))
        opts["target" if op == "mimic" else "warmup"] = draw(integer(0, n))
    elif op == "optimized":
        opts.update(f=draw(integer(1, 4)), attack=draw(st.sampled_from(["alie", "foe", "lie", bk.alie, None])),
                    aggregator=draw(st.sampled_from([bk.cwtm(f=1), bk.mean(), bk.krum(f=1), "cwtm", None])))
        if draw(st.booleans()):
            opts["etas"] = draw(st.sampled_from([[], [0.0, 1.0], [np.nan], [1e30], "a"]))
    if op in ("cwmed", "cwtm", "meamed", "krum", "multikrum", "norm_filter", "nnm", "mean", "geomed",
              "cclip", "clip", "pairwise_sqdist") and draw(st.integers(0, 9)) == 0:
        opts["nan_policy"] = draw(st.sampled_from(["raise", "propagate", "ignore", None]))
        tolerated = None
    return op, X, opts, tolerated


@st.composite
def seeds(draw):
    kind = draw(st.sampled_from(["seed", "seed", "rng", "both", "none", "bad"]))
    if kind == "seed":
        return {"seed": draw(st.integers(0, 2**64 - 1))}
    if kind == "rng":
        return {"rng": np.random.default_rng(draw(st.integers(0, 99)))}
    if kind == "both":
        return {"seed": 1, "rng": np.random.default_rng(1)}
    if kind == "bad":
        return {"seed": draw(st.sampled_from([-1, 2**64, 1.5, "7", None]))}
    return {}


# ---- the calls ----------------------------------------------------------------------------------

def roundtrip(X, *, k, corrupt, where, backend):
    wire = bytearray(bk.topk(X, k=k, backend=backend).to_bytes())
    if corrupt == "truncate":
        wire = wire[: where % len(wire)]
    elif corrupt == "flip":
        wire[where % len(wire)] ^= 1 << (where % 8)
    elif corrupt == "extend":
        wire += b"\0"
    return bk.Compressed.from_bytes(bytes(wire), backend=backend).decompress(backend=backend)


def error_feedback(X, *, k, lr, backend):
    ef = bk.ErrorFeedback(bk.topk(k=k, backend=backend))
    ef(X, lr=lr)
    return ef(X, lr=lr).decompress(backend=backend)


def model_roundtrip(X, *, backend):
    pieces = [X, X] if not isinstance(X, list) else X
    vector, spec = bk.flatten(pieces)
    return bk.unflatten(vector, spec)[0]


def compressor(name):
    def call(X, *, backend, **options):
        return getattr(bk, name)(X, backend=backend, **options).decompress(backend=backend)
    call.__name__ = name
    return call


def stateful_mimic(X, *, f, warmup, backend):
    attacker = bk.Mimic(warmup=warmup)
    attacker(X, f=f, backend=backend)
    return attacker(X, f=f, backend=backend)


def pipeline(X, *, f, backend):
    return bk.Pipeline(bk.nnm(f=f), bk.cwtm(f=f))(X, backend=backend)


COMPRESSORS = ("topk", "randk", "qsgd", "natural", "sign", "scaled_sign", "roundtrip", "error_feedback")
FUNCTIONS = {
    **{name: getattr(bk, name) for name in (
        "mean", "cwmed", "cwtm", "meamed", "geomed", "krum", "multikrum", "cclip", "norm_filter",
        "nnm", "bucketing", "resampling", "clip", "pairwise_sqdist", "sign_flip", "ipm", "foe",
        "alie", "gaussian", "mimic", "optimized")},
    **{name: compressor(name) for name in COMPRESSORS[:6]},
    "krum_k": bk.krum, "roundtrip": roundtrip, "error_feedback": error_feedback,
    "model": model_roundtrip, "Mimic": stateful_mimic, "pipeline": pipeline,
}
OPS = tuple(FUNCTIONS)


def takes_backend(fn):
    try:
        return "backend" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True


#: finite entries up to this magnitude must not overflow a robust rule (float32's 1e38 included);
#: sums of float64 values near 1.8e308 overflow in any arithmetic
FINITE_LIMIT = 1e38


def as_float64(X):
    """X's values as a float64 array (torch's float64 rows too: no float32 detour that would make
    values beyond float32's range infinite)."""
    return np.asarray(X.double() if torch is not None and isinstance(X, torch.Tensor) else X, dtype=np.float64)


def within_guarantee(X, tolerated, limit=FINITE_LIMIT):
    """Whether at most ``tolerated`` rows of every batch item have a NaN or Inf entry and the
    finite entries are at most ``limit`` in magnitude."""
    A = as_float64(X)
    finite = np.isfinite(A)
    bad_rows = ~finite.all(axis=-1)
    return (bad_rows.reshape(-1, bad_rows.shape[-1]).sum(axis=1).max() <= tolerated
            and np.abs(A[finite]).max(initial=0.0) <= limit)


def check_qsgd(X, levels, out, where):
    """Each entry of a finite row whose norm fits the wire dtype decodes to a level next to its
    own: within ||x|| / s of it."""
    A = as_float64(X)
    scaled, shift, norm = scaled_norms(A)
    wire = np.float64 if str(getattr(X, "dtype", "")).endswith("float64") else np.float32
    rows = np.isfinite(A).all(axis=-1) & (np.log2(norm[..., 0]) - shift[..., 0] < np.log2(np.finfo(wire).max))
    rtol = tolerance(X) + tolerance(out)
    step = np.ldexp(norm / levels, -shift.astype(np.int64))  # ||x|| / s, where the rows fit
    ok = np.abs(out - A) <= step * (1 + rtol) + rtol * np.abs(A) + np.finfo(out.dtype).tiny
    assert ok[rows].all(), f"{where}: an entry decodes beyond the levels next to it"


def by_item(X, out, *, rows):
    """X as float64 batch items (B, n, d), and out beside it as (B, rows, d) (rows=True: rows per
    item) or (B, d) (an aggregate per item)."""
    A = as_float64(X)
    A = A.reshape((-1,) + A.shape[-2:])
    return A, out.astype(np.float64).reshape((A.shape[0], -1, A.shape[2]) if rows else (A.shape[0], -1))


def check_mean_attack(op, X, opts, out, where):
    """Every Byzantine row is -|scale| mean(H) (sign_flip), -eps mean(H) (ipm), (1 - eta)
    mean(H) (foe), or honest row target (mimic), with the mean taken here; on finite columns
    whose sum fits float64."""
    A, Y = by_item(X, out, rows=True)
    if op == "mimic":
        assert np.array_equal(Y, np.broadcast_to(A[:, opts["target"]][:, None], Y.shape), equal_nan=True), \
            f"{where}: not copies of honest row target"
        return
    factor = {"sign_flip": -abs(opts.get("scale", -1.0)), "ipm": -opts.get("eps", 0.1),
              "foe": 1 - opts.get("eta", 0.0)}[op]
    with np.errstate(over="ignore", invalid="ignore"):
        columns = np.isfinite(A).all(axis=1) & (np.abs(A).sum(axis=1) < np.finfo(np.float64).max)
        want = factor * A.mean(axis=1)
    rtol = tolerance(X) + tolerance(out)
    bound = rtol * abs(factor) * np.abs(A).max(axis=1) + np.finfo(out.dtype).tiny  # the mean rounds at the rows' scale
    ok = (np.abs(Y - want[:, None]) <= bound[:, None]) | ~np.isfinite(want[:, None].astype(out.dtype))
    assert (ok | ~columns[:, None]).all(), f"{where}: not {factor:g} mean(H)"


def check_optimized(X, opts, out, where):
    """Each item's Byzantine rows are mean(H) + eta a for one eta of the grid (a = std(H), ddof
    1, for ALIE; -mean(H) for FOE), with mean and std taken here; items of finite rows in range."""
    A, Y = by_item(X, out, rows=True)
    attack = getattr(opts["attack"], "__name__", opts["attack"])
    etas = np.asarray(opts.get("etas", bk.attacks.DEFAULT_ETAS), dtype=np.float64)
    rtol = tolerance(X) + tolerance(out)
    for item, rows in zip(A, Y):
        if not np.isfinite(item).all() or not in_range(item):
            continue
        mean = item.mean(axis=0)
        a = item.std(axis=0, ddof=1) if attack == "alie" else -mean
        bound = rtol * (np.abs(mean) + etas.max() * np.abs(a)) + np.finfo(out.dtype).tiny

        def built(eta):  # or +-Inf where it passes the dtype's range
            want = mean + eta * a
            with np.errstate(over="ignore"):
                return (rows == want.astype(out.dtype)) | (np.abs(rows - want) <= bound)
        assert any(built(eta).all() for eta in etas), f"{where}: not mean(H) + eta a for an eta of the grid"


def check_alie(X, opts, out, where):
    """Each coordinate of finite honest rows is mean - z std, both taken exactly scaled by the
    power of two at the coordinate's largest |x|, so that no square leaves float64's range;
    where the rows' sum and the std fit: the kernels add the rows unscaled, and give the
    mean and std in the input's dtype."""
    A = as_float64(X)
    h = A.shape[-2]
    z = opts["z"] if opts.get("z") is not None else bk.attacks.alie_z(h + opts["f"], opts["f"])
    e = np.frexp(np.abs(A).max(axis=-2, keepdims=True))[1]
    scaled = np.ldexp(A, -e)
    mean = scaled.mean(axis=-2, keepdims=True)
    std = np.sqrt(((scaled - mean) ** 2).sum(axis=-2, keepdims=True) / (h - opts.get("ddof", 1)))
    mean, std = np.ldexp(mean, e), np.ldexp(std, e)
    want = mean - z * std
    columns = (np.isfinite(A).all(axis=-2, keepdims=True) & np.isfinite(want.astype(out.dtype))
               & (np.abs(A).sum(axis=-2, keepdims=True) < np.finfo(np.float64).max)
               & np.isfinite(std.astype(out.dtype)))
    rtol = tolerance(X) + tolerance(out)
    ok = np.abs(out - want) <= rtol * (np.abs(mean) + abs(z) * std) + np.finfo(out.dtype).tiny
    assert np.broadcast_to(ok | ~columns, out.shape).all(), f"{where}: not mean - z std"


def snapshot(value):
    """The bytes of every array in value (an array, or a list or dict of them); None elsewhere."""
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes()
    if (torch is not None and isinstance(value, torch.Tensor) and value.device.type == "cpu"
            and value.layout == torch.strided):
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[value.element_size()]
        return str(value.dtype), tuple(value.shape), value.detach().contiguous().view(bits).numpy().tobytes()
    if isinstance(value, (list, tuple)):
        return [snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    return None


def check_topk(X, opts, out, where):
    """Each row without a NaN keeps its k entries of largest |x| (ties: the lower index), exactly,
    and 0 elsewhere."""
    A = as_float64(X).reshape(-1, out.shape[-1])
    got = out.astype(np.float64).reshape(A.shape)
    for row, kept in zip(A, got):
        if np.isnan(row).any():
            continue
        order = np.lexsort((np.arange(row.size), -np.abs(row)))[:opts["k"]]
        want = np.zeros_like(row)
        want[order] = row[order]
        assert np.array_equal(kept, want), f"{where}: not the k entries of largest |x|"


def check_sign(X, opts, out, where):
    """sign(x) with sign(0) = +1 (and NaN counted positive)."""
    want = np.where(as_float64(X) < 0, -1.0, 1.0)
    assert np.array_equal(out.astype(np.float64), want.reshape(out.shape)), f"{where}: not sign(x)"


def check_natural(X, opts, out, where):
    """Each finite entry of float32 or float64 x decodes to a neighbouring power of two with its
    sign: 2^e or 2^(e+1) for 2^e <= |x| < 2^(e+1); 0 or the smallest normal one below that; Inf
    where 2^(e+1) passes the dtype's largest."""
    if out.dtype not in (np.float32, np.float64):
        return
    A = as_float64(X).reshape(out.shape)
    info = np.finfo(out.dtype)
    magnitude = np.abs(A)
    low = np.ldexp(1.0, np.frexp(magnitude)[1] - 1)
    high = np.where(2 * low > info.max, np.inf, 2 * low)
    low, high = np.where(magnitude < info.tiny, 0.0, low), np.where(magnitude < info.tiny, info.tiny, high)
    got = out.astype(np.float64)
    ok = (got == np.copysign(low, A)) | (got == np.copysign(high, A)) | ((A == 0) & (got == 0))
    assert ok[np.isfinite(A)].all(), f"{where}: an entry not at a power of two next to it"


def check_randk(X, opts, out, where):
    """At most k entries per row are kept, each x d/k (in float64, then the dtype), 0 elsewhere;
    for float32 and float64 x (half floats round twice, through float32)."""
    form = user_form(X)
    if form is None or not str(form[1]).endswith(("float32", "float64")):
        return
    got = out.astype(np.float64).reshape(-1, out.shape[-1])
    d, k = got.shape[1], opts["k"]
    with np.errstate(over="ignore", invalid="ignore"):
        want = (as_float64(X).reshape(got.shape) * (np.float64(d) / np.float64(k))).astype(out.dtype).astype(np.float64)
    ok = (got == 0) | (got == want) | (np.isnan(got) & np.isnan(want))
    assert ok.all() and ((got != 0).sum(axis=1) <= k).all(), f"{where}: not k entries of x scaled by d/k"


def check_conserved(op, X, s, out, where):
    """Where a column is finite, the outputs weighted by their sizes add up to its sum: bucketing's
    ceil(n / s) buckets hold every row once (the last one the n - s (ceil(n / s) - 1) left);
    resampling's n means of s draws hold every row s times."""
    A, Y = by_item(X, out, rows=True)
    n, buckets = A.shape[1], Y.shape[1]
    sizes = np.full(buckets, 1.0 if op == "resampling" else float(s))
    if op == "bucketing":
        sizes[-1] = n - s * (buckets - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        # finite columns whose sums fit float64, as the rules add rows unscaled (as mean does)
        columns = np.isfinite(A).all(axis=1) & (np.abs(A).sum(axis=1) < np.finfo(np.float64).max)
        # each column scaled exactly by the power of two at its largest |x|: no sum overflows
        scale = np.ldexp(1.0, np.frexp(np.where(np.isfinite(A), np.abs(A), 0.0).max(axis=1))[1])[:, None, :]
        A, Y = A / scale, Y / scale
        gap = np.abs((sizes[None, :, None] * Y).sum(axis=1) - A.sum(axis=1))
        bound = (tolerance(X) + tolerance(out)) * n * np.abs(A).sum(axis=1) + np.finfo(out.dtype).tiny / scale[:, 0]
    assert (gap <= bound)[columns].all(), f"{where}: the rows are not all counted as the rule says"


def in_range(rows):
    """Whether float64 squared distances between these rows neither overflow nor underflow."""
    magnitudes = np.abs(rows[np.isfinite(rows)])
    return not ((magnitudes > 1e100).any() or ((magnitudes > 0) & (magnitudes < 1e-100)).any())


def squared_distances(item):
    """(n, n) float64 squared distances, +Inf to and from a row with a NaN or Inf entry."""
    finite = np.isfinite(item).all(axis=1)
    D = ((item[:, None] - item[None]) ** 2).sum(axis=-1)
    D[~finite] = np.inf
    D[:, ~finite] = np.inf
    return D


def check_nnm(X, opts, out, where):
    """Each finite row's output is the mean of the n - f rows nearest to it, itself first and
    ties by index, from distances worked out here (rows whose (n - f)-th and next distances are
    within rounding are left out, and items out of range as in check_krum)."""
    A, Y = by_item(X, out, rows=True)
    n, keep = A.shape[1], A.shape[1] - opts["f"]
    for item, got in zip(A, Y):
        if not in_range(item):
            continue
        D = squared_distances(item)
        np.fill_diagonal(D, -np.inf)
        for i in np.flatnonzero(np.isfinite(item).all(axis=1)):
            order = np.argsort(D[i], kind="stable")
            tied = keep < n and D[i, order[keep]] <= D[i, order[keep - 1]] * (1 + 1e-9)
            if tied or not np.isfinite(D[i, order[keep - 1]]):
                continue
            mixed = item[order[:keep]]
            rtol = tolerance(X) + tolerance(out)  # terms that cancel round at the entries' scale
            np.testing.assert_allclose(got[i], mixed.mean(axis=0), rtol=rtol,
                                       atol=rtol * np.abs(mixed).max() + np.finfo(out.dtype).tiny,
                                       err_msg=f"{where}: row {i} is not the mean of its n - f nearest")


def check_geomed(X, opts, out, where):
    """With a fixed step count (eps = 0): maxiter smoothed Weiszfeld steps z <- sum_i b_i x_i /
    sum_i b_i, b_i = w_i / max(nu, ||z - x_i||), rows with a NaN or Inf entry at weight 0, from
    the start asked for, taken here in float64 on items in range."""
    if opts.get("nan_policy", "outlier") != "outlier":
        return
    A, Y = by_item(X, out, rows=False)
    B, n, d = A.shape
    weights = np.broadcast_to(as_float64(opts["weights"]), (B, n)) if "weights" in opts else np.ones((B, n))
    init = opts.get("init", "mean")
    starts = None if isinstance(init, str) else np.broadcast_to(as_float64(init), (B, d))
    for b, (item, got) in enumerate(zip(A, Y)):
        finite = np.isfinite(item).all(axis=1)
        w = np.where(finite, weights[b], 0.0)
        rows = item[finite]
        if not rows.size or not in_range(rows) or (starts is not None and not in_range(starts[b])):
            continue
        w = w[finite]
        z = (w @ rows / w.sum() if init == "mean" else np.zeros(d)) if starts is None else starts[b].copy()
        for _ in range(opts.get("maxiter", 100)):
            beta = w / np.maximum(opts.get("nu", 1e-6), np.sqrt(((rows - z) ** 2).sum(axis=1)))
            z = beta @ rows / beta.sum()
        rtol = tolerance(X) + tolerance(out)
        bound = rtol * max(np.abs(rows).max(initial=0.0), np.abs(z).max()) + np.finfo(out.dtype).tiny
        assert (np.abs(got - z) <= bound).all(), f"{where}: not maxiter Weiszfeld steps"


def check_cclip(X, opts, out, where):
    """On items of finite rows in range: iters steps v <- v + (1/n) sum_i (x_i - v) min(1, tau /
    ||x_i - v||) from the columns' medians, taken here in float64."""
    A, Y = by_item(X, out, rows=False)
    tau = opts["tau"]
    for item, got in zip(A, Y):
        if not np.isfinite(item).all() or not in_range(item):
            continue
        v = np.median(item, axis=0)
        for _ in range(opts.get("iters", 1)):
            gaps = item - v
            norms = np.sqrt((gaps ** 2).sum(axis=1))
            v = v + (gaps * np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))[:, None]).mean(axis=0)
        rtol = tolerance(X) + tolerance(out)  # each step adds terms of norm up to tau
        bound = rtol * (np.abs(item).max() + tau * opts.get("iters", 1)) + np.finfo(out.dtype).tiny
        assert (np.abs(got - v) <= bound).all(), f"{where}: not iters centred-clipping steps from the median"


def check_order_statistics(op, X, opts, out, where):
    """On items of finite rows: cwmed is each column's median (the mean of the two middle values
    for even n), cwtm the mean of its sorted values f to n - f, meamed the mean of its n - f
    values closest to the median (columns where the n - f-th and next are within rounding left
    out), all from np.sort here."""
    A, Y = by_item(X, out, rows=False)
    n, f = A.shape[1], opts.get("f", 0)
    rtol = tolerance(X) + tolerance(out)
    for item, got in zip(A, Y):
        if not np.isfinite(item).all() or np.abs(item).max() * n >= np.finfo(np.float64).max:
            continue
        ordered = np.sort(item, axis=0)
        columns = np.ones(item.shape[1], bool)
        if op == "cwmed":
            kept = ordered[(n - 1) // 2:n // 2 + 1]
        elif op == "cwtm":
            kept = ordered[f:n - f]
        else:
            median = ordered[(n - 1) // 2:n // 2 + 1].mean(axis=0)
            gaps = np.abs(item - median)
            closest = np.argsort(gaps, axis=0, kind="stable")
            kept = np.take_along_axis(item, closest[:n - f], axis=0)
            if f > 0:  # a tie at the cut makes either value right
                edge = np.take_along_axis(gaps, closest[n - f - 1:n - f + 1], axis=0)
                columns = edge[1] - edge[0] > 1e-9 * np.abs(item).max(axis=0)
        want = kept.mean(axis=0)
        bound = rtol * np.abs(kept).max(axis=0) + np.finfo(out.dtype).tiny  # per column
        assert (np.abs(got - want) <= bound)[columns].all(), f"{where}: not the column's {op}"


def check_norm_filter(X, opts, out, where):
    """The mean of the n - f rows of least q-norm (ties: the higher index dropped), the norms
    ranked here through their logs, which no power of an entry overflows; a row with a NaN or
    Inf entry ranks last. Items whose n - f-th and next norms are within rounding are left out."""
    A, Y = by_item(X, out, rows=False)
    q, keep = opts.get("q", 2), A.shape[1] - opts["f"]
    for item, got in zip(A, Y):
        finite = np.isfinite(item).all(axis=1)
        with np.errstate(divide="ignore"):
            largest = np.abs(np.where(np.isfinite(item), item, 0.0)).max(axis=1)
            scaled = np.abs(item) / np.where(largest > 0, largest, 1.0)[:, None]
            rest = np.log(scaled.max(axis=1)) if q == np.inf else np.log((scaled ** q).sum(axis=1)) / q
            log_norms = np.log(largest) + rest
        log_norms[~finite] = np.inf
        order = np.argsort(log_norms, kind="stable")
        if keep < len(order) and abs(log_norms[order[keep]] - log_norms[order[keep - 1]]) <= 1e-9:
            continue
        rtol = tolerance(X) + tolerance(out)
        kept = item[order[:keep]]
        scale = np.abs(kept[np.isfinite(kept)]).max(initial=0.0)  # where the kept rows' sums round
        if scale * len(item) < np.finfo(np.float64).max:  # and do not overflow
            np.testing.assert_allclose(got, kept.mean(axis=0), rtol=rtol,
                                       atol=rtol * scale + np.finfo(out.dtype).tiny,
                                       err_msg=f"{where}: not the mean of the n - f rows of least norm")


def check_krum(op, X, opts, out, where):
    """Krum's pick (Multi-Krum's m picks, averaged) from scores worked out here: each row's k
    smallest squared distances to the others, a row with a NaN or Inf entry at +Inf from all;
    the least score, or any within rounding of it (Multi-Krum: where the m-th and the next are
    not within rounding). Items with finite magnitudes past 1e100 or below 1e-100 are left out,
    where float64 distances leave the range and ties decide."""
    A, Y = by_item(X, out, rows=False)
    n = A.shape[1]
    f = opts["f"]
    k = n - f - 2 if opts.get("k") is None else opts["k"]  # None asks for the default
    m = (n - f if opts.get("m") is None else opts["m"]) if op == "multikrum" else 1
    for item, got in zip(A, Y):
        if not in_range(item):
            continue
        D = squared_distances(item)
        np.fill_diagonal(D, np.inf)
        scores = np.sort(D, axis=1)[:, :k].sum(axis=1)
        order = np.argsort(scores, kind="stable")
        near = scores <= scores[order[m - 1]] * (1 + 1e-9)
        if m == 1:
            assert any(np.array_equal(got, item[i].astype(out.dtype).astype(np.float64), equal_nan=True)
                       for i in np.flatnonzero(near)), f"{where}: not a row of least score"
        elif near.sum() == m and np.isfinite(scores[order[m - 1]]):
            chosen = item[order[:m]]
            rtol = tolerance(X) + tolerance(out)  # terms that cancel round at the entries' scale
            scale = np.abs(chosen).max(initial=0.0)
            np.testing.assert_allclose(got, chosen.mean(axis=0), rtol=rtol,
                                       atol=rtol * scale + np.finfo(out.dtype).tiny,
                                       err_msg=f"{where}: not the mean of the m rows of least score")


CHECK_COMPRESSED = {"topk": check_topk, "sign": check_sign, "natural": check_natural, "randk": check_randk}


def outcome(fn, X, opts, backend):
    """('ok', result) or ('raised', exception class); anything undocumented propagates. No
    call modifies its data or options, whether it returns or raises."""
    kwargs = dict(opts, backend=backend) if takes_backend(fn) else dict(opts)
    COUNTS["calls"] += 1
    before = snapshot([X, opts])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            return "ok", fn(X, **kwargs)
    except DOCUMENTED as exc:
        return "raised", type(exc)
    finally:
        assert snapshot([X, opts]) == before, f"{getattr(fn, '__name__', fn)}{opts} on {backend} modified its input"


def user_form(X):
    """(type, dtype) that a result of float X comes back in: X's own (in native byte order); a
    list's rows' stacked. None for other X."""
    if isinstance(X, list):
        X = np.stack(X)
    if isinstance(X, np.ndarray):
        return (type(X), X.dtype.newbyteorder("=")) if X.dtype.kind == "f" else None
    return (type(X), X.dtype) if X.dtype.is_floating_point else None


def to_numpy(out):
    if torch is not None and isinstance(out, torch.Tensor):
        if out.device.type != "cpu":
            return None
        return out.numpy() if out.dtype in (torch.float32, torch.float64) else out.float().numpy()
    return np.asarray(out)


def tolerance(X):
    """rtol for comparing backends: sums differ by summation order, half outputs by an ulp."""
    dtype = str(getattr(X, "dtype", "float64")).replace("torch.", "")
    return {"float64": 1e-9, "float32": 1e-4}.get(dtype, 2e-2)


#: results that are means of entries of X: the backends add in different orders, and terms that
#: cancel leave the rounding at the entries' scale, not the result's (1e38 - 0.5 - 1e38 is 0 in
#: one order and -0.5 in another)
MEANS_OF_ENTRIES = ("mean", "cwtm", "meamed", "geomed", "multikrum", "norm_filter", "nnm", "bucketing",
                    "resampling", "pipeline", "sign_flip", "ipm", "foe", "alie", "optimized")


def rounding_scale(op, X, opts, expected):
    """The magnitude at which the backends' results may differ by rtol."""
    scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)
    if op in MEANS_OF_ENTRIES:
        entries = as_float64(X)
        scale = max(scale, np.max(np.abs(entries[np.isfinite(entries)]), initial=0.0))
    elif op == "cclip":  # each step adds a mean of terms of norm up to tau
        scale = max(scale, opts["tau"])
    return scale


def picks(op, X, opts, backend):
    """The rows a selecting op picks (sorted, per output), from the distances or norms that
    ``backend`` computes; None for the other ops. Where two backends' picks differ, a distance
    or norm tied to within rounding fell either way, and their results may rightly differ."""
    if op not in ("nnm", "pipeline", "krum", "krum_k", "multikrum", "norm_filter") or "norms" in opts:
        return None
    A = adapt(X)
    n, f = A.data.shape[1], opts["f"]
    if op == "norm_filter":
        chosen = least(_row_norms(A, opts.get("q", 2), backend), n - f)
    elif op in ("nnm", "pipeline"):
        chosen = nearest_including_self(sqdist_matrix(A, backend, "outlier"), n - f)
    else:
        k = n - f - 2 if opts.get("k") is None else opts["k"]  # None asks for the default
        m = (n - f if opts.get("m") is None else opts["m"]) if op == "multikrum" else 1
        chosen = least(krum_scores(sqdist_matrix(A, backend, "outlier"), k), m)
    return np.sort(chosen, axis=-1)


#: ops whose batch items are independent calls: the randomized ones draw per item
PER_ITEM = ("mean", "cwmed", "cwtm", "meamed", "geomed", "krum", "krum_k", "multikrum", "cclip",
            "norm_filter", "nnm", "clip", "pairwise_sqdist", "sign_flip", "ipm", "foe", "alie",
            "mimic", "optimized", "pipeline")


def check_items(op, fn, X, opts, backend, batched):
    """A batch (B, n, d) gives, item by item, the bits of its items called alone (with options
    that hold no per-item arrays)."""
    if (op not in PER_ITEM or not isinstance(X, np.ndarray) or X.ndim != 3 or X.shape[0] < 2
            or any(isinstance(v, (np.ndarray, list)) or (torch is not None and isinstance(v, torch.Tensor))
                   for v in opts.values())):
        return
    for b in range(X.shape[0]):
        kind, out = outcome(fn, X[b], opts, backend)
        assert kind == "ok", f"{op}{opts} on {backend}: item {b} alone raised {out} where the batch ran"
        np.testing.assert_array_equal(to_numpy(out), batched[b], err_msg=f"{op}{opts} on {backend}: item {b} alone")


def check(case):
    op, X, opts, tolerated = case
    fn = FUNCTIONS[op]
    COUNTS["examples"] += 1
    backends = BACKENDS if takes_backend(fn) else BACKENDS[:1]
    if op in ("Mimic", "optimized") or "rng" in opts:
        backends = backends[:1]  # stateful options: one call per example
    results = {b: outcome(fn, X, opts, b) for b in backends}
    kinds = {b: r[0] if r[0] == "ok" else r[1].__name__ for b, r in results.items()}
    assert len(set(kinds.values())) == 1, f"backends disagree on {op}{opts}: {kinds}"
    kind, value = next(iter(results.values()))
    if kind == "raised":
        COUNTS["raised"] += 1
        return
    form = user_form(X) if op not in ("roundtrip", "model") else None  # bytes carry no library
    for b, (_, out) in results.items():
        assert form is None or (type(out), out.dtype) == form, f"{op}{opts} on {b}: {type(out)} {out.dtype}, not {form}"
    outputs = {b: to_numpy(out) for b, (_, out) in results.items()}
    expected = outputs[backends[0]]
    if expected is None or expected.dtype.kind != "f":  # flatten passes anything through
        return
    finite = np.isfinite(expected)
    rtol = tolerance(X)
    atol = rtol * rounding_scale(op, X, opts, expected)
    picked = {b: picks(op, X, opts, b) for b in backends}
    for b, out in outputs.items():
        where = f"{op}{opts} on {b}"
        assert out.shape == expected.shape and out.dtype == expected.dtype, f"{where}: {out.dtype}{out.shape}"
        if picked[b] is not None and not np.array_equal(picked[b], picked[backends[0]]):
            continue
        # NaN or Inf where the oracle overflowed: which of the two depends on summation order
        np.testing.assert_array_equal(np.isfinite(out), finite, err_msg=f"{where}: finite entries differ")
        np.testing.assert_allclose(out[finite], expected[finite], rtol=rtol, atol=atol, err_msg=where)
    if op == "clip":  # every backend agreeing is not enough: they share the Python layer
        want = clipped(as_float64(X), opts["tau"])
        rows = np.isfinite(as_float64(X)).all(axis=-1)
        for b, out in outputs.items():  # a list of float32 rows has no dtype for tolerance(X)
            np.testing.assert_allclose(out[rows], want[rows], rtol=max(rtol, tolerance(out)), atol=np.finfo(out.dtype).tiny,
                                       err_msg=f"clip{opts} on {b}: not x min(1, tau / ||x||)")
    if op == "pairwise_sqdist":  # what its docstring promises (nan_policy="propagate": all NaN)
        rows = np.isfinite(as_float64(X)).all(axis=-1) & (opts.get("nan_policy", "outlier") == "outlier")
        for b, D in outputs.items():
            D = D.astype(np.float64)
            diagonal = np.diagonal(D, axis1=-2, axis2=-1)
            assert np.array_equal(D, np.swapaxes(D, -1, -2), equal_nan=True), f"pairwise_sqdist on {b}: not symmetric"
            assert not (D < 0).any() and (diagonal[rows] == 0).all(), \
                f"pairwise_sqdist on {b}: negative, or a row not at 0 from itself"
    if op in ("krum", "krum_k", "multikrum") and opts.get("nan_policy", "outlier") == "outlier":
        for b, out in outputs.items():
            check_krum(op, X, opts, out, f"{op}{opts} on {b}")
    if op == "geomed" and (opts.get("eps") == 0 or opts.get("maxiter") == 0):
        for b, out in outputs.items():
            check_geomed(X, opts, out, f"{op}{opts} on {b}")
    if op == "cclip" and "init" not in opts:
        for b, out in outputs.items():
            check_cclip(X, opts, out, f"{op}{opts} on {b}")
    if op in ("cwmed", "cwtm", "meamed"):
        for b, out in outputs.items():
            check_order_statistics(op, X, opts, out, f"{op}{opts} on {b}")
    if op == "norm_filter" and opts.get("nan_policy", "outlier") == "outlier" and "norms" not in opts:
        for b, out in outputs.items():
            check_norm_filter(X, opts, out, f"{op}{opts} on {b}")
    if op == "nnm" and opts.get("nan_policy", "outlier") == "outlier":
        for b, out in outputs.items():
            check_nnm(X, opts, out, f"{op}{opts} on {b}")
    if op in ("bucketing", "resampling"):  # every row counted as often as the rule says
        for b, out in outputs.items():
            check_conserved(op, X, opts["s"], out, f"{op}{opts} on {b}")
    if op in CHECK_COMPRESSED:  # nor here: each has a plain definition to hold it to
        for b, out in outputs.items():
            CHECK_COMPRESSED[op](X, opts, out, f"{op}{opts} on {b}")
    if op == "qsgd":  # the backends agreeing is not enough here either
        for b, out in outputs.items():
            check_qsgd(X, opts["levels"], out, f"qsgd{opts} on {b}")
    if op == "alie":
        for b, out in outputs.items():
            check_alie(X, opts, out, f"alie{opts} on {b}")
    if op == "optimized":
        for b, out in outputs.items():
            check_optimized(X, opts, out, f"{op}{opts} on {b}")
    if op in ("sign_flip", "ipm", "foe", "mimic") and "own" not in opts:
        for b, out in outputs.items():
            check_mean_attack(op, X, opts, out, f"{op}{opts} on {b}")
    if op == "scaled_sign":  # every entry of a finite row decodes to +-(its mean |x|) as a float32
        A = as_float64(X)
        rows = np.isfinite(A).all(axis=-1)
        magnitudes = np.abs(A)
        largest = np.where(np.isfinite(A), magnitudes, 0.0).max(axis=-1, keepdims=True, initial=0.0)
        largest[largest == 0] = 1.0
        mean = largest * ((magnitudes / largest).sum(axis=-1, keepdims=True) / A.shape[-1])  # <= largest
        with np.errstate(over="ignore"):  # past float32's range: Inf
            want = np.broadcast_to(mean.astype(np.float32).astype(np.float64), A.shape)
        for b, out in outputs.items():  # rounding to float32 may land an ulp apart: rtol 2^-23
            np.testing.assert_allclose(np.abs(out)[rows], want[rows], rtol=max(rtol, tolerance(out), 2.0**-23),
                                       atol=np.finfo(np.float32).smallest_subnormal,
                                       err_msg=f"scaled_sign on {b}: not the mean |x| as a float32")
    check_items(op, fn, X, opts, backends[-1], outputs[backends[-1]])
    # geomed averages no more than its weights allow: any finite magnitude, up to its documented
    # bound w |x| / nu < 1.8e308
    limit = 1e290 * opts.get("nu", 1e-6) if op == "geomed" else FINITE_LIMIT
    if type(tolerated) is int and within_guarantee(X, tolerated, limit):
        for b, out in outputs.items():
            assert np.isfinite(out).all(), f"{op}{opts} on {b}: non-finite output with at most f={tolerated} non-finite rows"


def main(examples):
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1)  # where a hang is: kill -USR1 <pid>
    # quiet for the checks' own arithmetic on extreme values; a division by zero still warns,
    # and inside a call (outcome) a warning fails the case
    np.seterr(over="ignore", invalid="ignore")

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=calls())
    def fuzz(case):
        check(case)

    fuzz()
    print(" ".join(f"{k}={v}" for k, v in COUNTS.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]))
