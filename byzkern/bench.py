"""``byzkern bench``: time each kernel, as GB/s of the bytes of X it must read and as a multiple
of the memory-read floor measured in the same run, beside the NumPy/PyTorch way of doing it.

The floor is the time of the fastest plain read of the same buffer we have: a parallel,
vectorized Numba sum over all its bytes (fastmath lets it use SIMD with many accumulators), or
half of a copy. ``OPS`` is the one table of what is timed; the asv suite in ``bench/`` reads it
too. Every entry is a factory ``(X, backend) -> zero-argument call`` (and ``X -> call`` for the
usual ways), so whatever a call needs besides X (a message to serialize, an output buffer) is
built outside the timing.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numba
import numpy as np

import byzkern as bk
from byzkern.attacks import alie_z

try:
    import torch
except ImportError:  # torch is optional: its columns are left out
    torch = None


@numba.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def _stream_sum(flat):
    total = 0.0
    for i in numba.prange(flat.size):
        total += flat[i]
    return total


def median_time(fn, repeat, min_seconds=0.2, warmup_seconds=0.2):
    """Median wall time of ``fn()`` over at least ``repeat`` calls, after a first call (which may
    compile) and warm-up calls for ``warmup_seconds`` (at least one, at most 19). The first
    calls of an op that returns large arrays also pay for the C library's allocator growing its
    heap to hold them: page faults that a training loop pays once (gaussian at (20, 1e6): 25 ms
    in its first ten calls, 5 ms from the twentieth on, on one of this project's 2-core
    machines)."""
    fn()  # a first call may compile (Numba) or load a cache: not part of the warm-up's budget
    start = time.perf_counter()
    for _ in range(19):
        fn()
        if time.perf_counter() - start >= warmup_seconds:
            break
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def read_floor(X, repeat, scratch=None):
    """Seconds to read every byte of X once, the best of a streaming sum and a copy (into
    ``scratch``, an array of X's size, when given)."""
    flat = X.reshape(-1)
    out = np.empty_like(flat) if scratch is None else scratch.reshape(-1)
    sum_time = median_time(lambda: _stream_sum(flat), repeat)
    copy_time = median_time(lambda: np.copyto(out, flat), repeat) / 2  # a copy reads and writes
    return min(sum_time, copy_time)


def set_threads(threads):
    """Threads of every timed library: the cpu backend (OpenMP), Numba and torch."""
    numba.set_num_threads(threads)
    if bk.info()["backends"]["cpu"]["available"]:
        from byzkern.backends import cpu

        cpu.set_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)


# ---- the parameters every op is timed with ----------------------------------------------------

def _f(X):
    """Byzantine rows: n/5 where the rule takes f."""
    return max(1, X.shape[0] // 5)


def _k(X):
    """Entries kept by topk and randk: 1% of d."""
    return max(1, X.shape[1] // 100)


TAU = 1.0          # clipping radius of clip and cclip
LEVELS = 7         # QSGD levels: 4-bit codes (sign + 3 level bits)
NU = 1e-6          # Weiszfeld smoothing
ETAS = np.geomspace(0.1, 10.0, 16)  # the 16 strengths of the optimized attack


def _per_call(fn):
    """A factory for what is timed as one call ``fn(*args)``."""
    return lambda *args: functools.partial(fn, *args)


@dataclass(frozen=True)
class Op:
    """One timed operation: ``run(X, backend)`` makes the byzkern call; ``ways`` maps a label to
    ``way(X)``, which makes the plain NumPy/PyTorch call computing the same thing; ``bounds``
    likewise, for calls that are not a way of doing it but a cost it cannot go below (a copy
    of what it must write, a memcpy of a message, the aggregations an attack must run)."""

    family: str
    run: callable
    ways: dict = field(default_factory=dict)
    bounds: dict = field(default_factory=dict)


# ---- the usual ways ---------------------------------------------------------------------------

def _numpy_trimmed(X):
    f = _f(X)
    return np.sort(X, axis=0)[f:X.shape[0] - f].mean(axis=0)


def _numpy_meamed(X):
    med = np.median(X, axis=0)
    nearest = np.argsort(np.abs(X - med), axis=0)[:X.shape[0] - _f(X)]
    return np.take_along_axis(X, nearest, axis=0).mean(axis=0)


def _numpy_sqdist(X):
    """The Gram trick in the input dtype: fast, and wrong for nearly equal rows."""
    sq = np.einsum("ij,ij->i", X, X)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)


def _krum_scores(D, f):
    n = D.shape[0]
    return np.sort(D, axis=1)[:, 1:n - f - 1].sum(axis=1)


def _numpy_krum(X):
    return X[np.argmin(_krum_scores(_numpy_sqdist(X), _f(X)))]


def _numpy_multikrum(X):
    scores = _krum_scores(_numpy_sqdist(X), _f(X))
    return X[np.argsort(scores, kind="stable")[:X.shape[0] - _f(X)]].mean(axis=0)


def _numpy_nnm(X):
    """Each row becomes the mean of its n - f nearest rows, as an (n, n) mixing matrix times X."""
    n, m = X.shape[0], X.shape[0] - _f(X)
    nearest = np.argsort(_numpy_sqdist(X), axis=1, kind="stable")[:, :m]
    mixing = np.zeros((n, n), X.dtype)
    np.put_along_axis(mixing, nearest, 1.0 / m, axis=1)
    return mixing @ X


def _numpy_weiszfeld(X, steps=8):
    z = X.mean(axis=0)
    for _ in range(steps):
        b = 1.0 / np.maximum(NU, np.linalg.norm(X - z, axis=1))
        z = b @ X / b.sum()
    return z


def _numpy_cclip(X):
    v = np.median(X, axis=0)
    diff = X - v
    scale = np.minimum(1.0, TAU / np.linalg.norm(diff, axis=1))
    return v + (scale[:, None] * diff).mean(axis=0)


def _numpy_norm_filter(X):
    keep = np.argsort(np.linalg.norm(X, axis=1), kind="stable")[:X.shape[0] - _f(X)]
    return X[keep].mean(axis=0)


def _numpy_bucketing(X, s=2):
    n = X.shape[0]
    starts = np.arange(0, n, s)
    sums = np.add.reduceat(X[np.random.default_rng(0).permutation(n)], starts, axis=0)
    return sums / np.diff(np.append(starts, n)).astype(X.dtype)[:, None]


def _numpy_resampling(X, s=2):
    """Draws with replacement: SPEC's draws are limited to s per message, at the same cost."""
    draws = np.random.default_rng(0).integers(0, X.shape[0], (X.shape[0], s))
    return X[draws].mean(axis=1)


def _numpy_clip(X):
    return X * np.minimum(1.0, TAU / np.linalg.norm(X, axis=1, keepdims=True))


def _numpy_topk(X):
    k = _k(X)
    idx = np.argpartition(np.abs(X), X.shape[1] - k, axis=1)[:, -k:]
    return np.take_along_axis(X, idx, axis=1), idx


def _numpy_randk(X):
    rng, (n, d), k = np.random.default_rng(0), X.shape, _k(X)
    idx = np.stack([np.sort(rng.choice(d, k, replace=False)) for _ in range(n)])
    return np.take_along_axis(X, idx, axis=1) * (d / k), idx


def _numpy_qsgd(X):
    r = np.abs(X) * (LEVELS / np.linalg.norm(X, axis=1, keepdims=True))
    low = np.floor(r)
    level = low + (np.random.default_rng(0).random(X.shape, dtype=X.dtype) < r - low)
    return np.where(X < 0, -level, level).astype(np.int8)


def _numpy_natural(X):
    """Stochastic rounding of |x| to one of its two neighbouring powers of two."""
    mantissa, exponent = np.frexp(np.abs(X))  # |x| = m 2^e, m in [0.5, 1)
    up = np.random.default_rng(0).random(X.shape, dtype=X.dtype) < 2.0 * mantissa - 1.0
    return np.copysign(np.ldexp(np.ones_like(X), exponent - 1 + up), X)


def _numpy_sign(X):
    return np.packbits(X >= 0, axis=1, bitorder="little")


def _numpy_scaled_sign(X):
    return np.abs(X).sum(axis=1) / X.shape[1], _numpy_sign(X)


def _wire(X, backend=None):
    """The bytes of the message to_bytes/from_bytes time: QSGD codes, d/2 bytes per row."""
    return bk.qsgd(X, levels=LEVELS, seed=0, backend=backend).to_bytes()


def _to_bytes(X, backend):
    message = bk.qsgd(X, levels=LEVELS, seed=0, backend=backend)
    return message.to_bytes


def _from_bytes(X, backend):
    return functools.partial(bk.Compressed.from_bytes, _wire(X, backend), backend=backend)


def _memcpy_new(X):
    return functools.partial(bytearray, _wire(X))


def _memcpy_into(X):
    wire = np.frombuffer(_wire(X), np.uint8)
    return functools.partial(np.copyto, np.empty_like(wire), wire)


def _numpy_alie(X):
    z = alie_z(X.shape[0] + _f(X), _f(X))
    return np.tile(X.mean(axis=0) - z * X.std(axis=0, ddof=1), (_f(X), 1))


def _numpy_mimic(X):
    """One power-iteration step for the direction of largest variance, then copy the honest
    row most aligned with it (the learning step of Mimic)."""
    centred = X - X.mean(axis=0)
    u = (centred @ np.random.default_rng(0).standard_normal(X.shape[1], dtype=X.dtype)) @ centred
    return np.tile(X[np.argmax(X @ u)], (_f(X), 1))


def _optimized(X, backend):
    # cwtm is coordinate-wise: the len(ETAS) candidates are never all in memory at once
    return functools.partial(bk.optimized, X, f=_f(X), attack="alie", etas=ETAS,
                             aggregator=bk.cwtm(f=_f(X), backend=backend), backend=backend)


def _cwtm_per_eta(X):
    """What the optimized attack must at least cost: one cwtm call per eta, on the h + f rows."""
    rows = np.concatenate([X, X[:_f(X)]])
    return lambda: [bk.cwtm(rows, f=_f(X)) for _ in ETAS]


def _torch_ways():
    if torch is None:
        return {}
    t = torch.from_numpy

    def cdist2(X):
        return torch.cdist(t(X), t(X)) ** 2

    def krum_scores(X):
        n = X.shape[0]
        return torch.sort(cdist2(X), dim=1).values[:, 1:n - _f(X) - 1].sum(dim=1)

    def weiszfeld(X, steps=8):
        T = t(X)
        z = T.mean(dim=0)
        for _ in range(steps):
            b = 1.0 / torch.linalg.vector_norm(T - z, dim=1).clamp(min=NU)
            z = b @ T / b.sum()
        return z

    def cclip(X):
        T = t(X)
        v = T.median(dim=0).values
        diff = T - v
        scale = (TAU / torch.linalg.vector_norm(diff, dim=1, keepdim=True)).clamp(max=1.0)
        return v + (scale * diff).mean(dim=0)

    def topk(X):
        T = t(X)
        idx = torch.topk(T.abs(), _k(X), dim=1).indices
        return T.gather(1, idx), idx

    def alie(X):
        std, mean = torch.std_mean(t(X), dim=0)
        return (mean - alie_z(X.shape[0] + _f(X), _f(X)) * std).expand(_f(X), -1).clone()

    return {
        "mean": {"torch.mean(dim=0)": lambda X: t(X).mean(dim=0)},
        # the way people write it, though for even n it is the lower middle, not the median
        "cwmed": {"torch.median(dim=0) (lower middle)": lambda X: t(X).median(dim=0)},
        "cwtm": {"torch.sort trimmed mean": lambda X: torch.sort(t(X), dim=0).values[_f(X):X.shape[0] - _f(X)].mean(dim=0)},
        "pairwise_sqdist": {"torch.cdist ** 2": cdist2},
        "krum": {"torch.cdist Krum": lambda X: t(X)[int(torch.argmin(krum_scores(X)))]},
        "multikrum": {"torch.cdist Multi-Krum": lambda X: t(X)[torch.argsort(krum_scores(X))[:X.shape[0] - _f(X)]].mean(dim=0)},
        "geomed": {"torch Weiszfeld, 8 steps": weiszfeld},
        "cclip": {"torch lower middle + 1 clip step": cclip},
        "clip": {"torch row clip": lambda X: t(X) * (TAU / torch.linalg.vector_norm(t(X), dim=1, keepdim=True)).clamp(max=1.0)},
        "topk": {"torch.topk(dim=1)": topk},
        "alie": {"torch.std_mean": alie},
        "gaussian": {"torch.randn": lambda X: 100.0 * torch.randn(_f(X), X.shape[1], dtype=t(X).dtype)},
    }


def _table():
    """op name -> Op; the usual ways are plain calls on X unless a factory is needed."""
    numpy_ways = {
        "mean": {"numpy.mean(axis=0)": lambda X: np.mean(X, axis=0)},
        "cwmed": {"numpy.median(axis=0)": lambda X: np.median(X, axis=0)},
        "cwtm": {"numpy.sort trimmed mean": _numpy_trimmed},
        "meamed": {"numpy median + argsort": _numpy_meamed},
        "pairwise_sqdist": {"numpy Gram trick": _numpy_sqdist},
        "krum": {"numpy Gram Krum": _numpy_krum},
        "multikrum": {"numpy Gram Multi-Krum": _numpy_multikrum},
        "nnm": {"numpy Gram + mixing matmul": _numpy_nnm},
        "geomed": {"NumPy Weiszfeld, 8 steps": _numpy_weiszfeld},
        "cclip": {"numpy median + 1 clip step": _numpy_cclip},
        "norm_filter": {"numpy norms + argsort": _numpy_norm_filter},
        "bucketing": {"numpy permute + reduceat": _numpy_bucketing},
        "resampling": {"numpy draws + fancy index": _numpy_resampling},
        "clip": {"numpy row clip": _numpy_clip},
        "topk": {"numpy.argpartition per row": _numpy_topk},
        "randk": {"numpy rng.choice per row": _numpy_randk},
        "qsgd": {"numpy int8 codes": _numpy_qsgd},
        "natural": {"numpy frexp rounding": _numpy_natural},
        "sign": {"numpy.packbits": _numpy_sign},
        "scaled_sign": {"numpy abs-sum + packbits": _numpy_scaled_sign},
        "sign_flip": {"numpy -mean": lambda X: np.tile(-X.mean(axis=0), (_f(X), 1))},
        "ipm": {"numpy -0.1 mean": lambda X: np.tile(-0.1 * X.mean(axis=0), (_f(X), 1))},
        "alie": {"numpy mean - z std": _numpy_alie},
        "gaussian": {"numpy standard_normal": lambda X: 100.0 * np.random.default_rng(0).standard_normal((_f(X), X.shape[1]), dtype=X.dtype)},
        "mimic": {"numpy power step + copy": _numpy_mimic},
    }
    ways = {op: {label: _per_call(fn) for label, fn in entries.items()}
            for op, entries in numpy_ways.items()}
    for op, entries in _torch_ways().items():
        ways[op].update({label: _per_call(fn) for label, fn in entries.items()})
    memcpy = {"memcpy into a new buffer": _memcpy_new, "memcpy into a preallocated buffer": _memcpy_into}
    bounds = {
        # clip writes a new (n, d): the copy is the part of its cost no kernel can remove
        "clip": {"numpy copy (a new (n, d) written)": _per_call(np.copy)},
        "to_bytes": memcpy, "from_bytes": memcpy,
        "optimized": {"16 x bk.cwtm (default backend)": _cwtm_per_eta},
    }

    runs = {
        "coordinatewise": {
            "mean": lambda X, be: bk.mean(X, backend=be),
            "cwmed": lambda X, be: bk.cwmed(X, backend=be),
            "cwtm": lambda X, be: bk.cwtm(X, f=_f(X), backend=be),
            "meamed": lambda X, be: bk.meamed(X, f=_f(X), backend=be),
        },
        "distances": {
            "pairwise_sqdist": lambda X, be: bk.pairwise_sqdist(X, backend=be),
            "krum": lambda X, be: bk.krum(X, f=_f(X), backend=be),
            "multikrum": lambda X, be: bk.multikrum(X, f=_f(X), backend=be),
            "nnm": lambda X, be: bk.nnm(X, f=_f(X), backend=be),
        },
        "weiszfeld": {
            "geomed": lambda X, be: bk.geomed(X, maxiter=8, eps=0.0, nu=NU, backend=be),
            # issue 4: centered clipping from the coordinate-wise median, one iteration
            "cclip": lambda X, be: bk.cclip(X, tau=TAU, iters=1, backend=be),
        },
        "rows": {
            "norm_filter": lambda X, be: bk.norm_filter(X, f=_f(X), backend=be),
            "bucketing": lambda X, be: bk.bucketing(X, s=2, seed=0, backend=be),
            "resampling": lambda X, be: bk.resampling(X, s=2, seed=0, backend=be),
            "clip": lambda X, be: bk.clip(X, tau=TAU, backend=be),
        },
        "compress": {
            "topk": lambda X, be: bk.topk(X, k=_k(X), backend=be),
            "randk": lambda X, be: bk.randk(X, k=_k(X), seed=0, backend=be),
            "qsgd": lambda X, be: bk.qsgd(X, levels=LEVELS, seed=0, backend=be),
            "natural": lambda X, be: bk.natural(X, seed=0, backend=be),
            "sign": lambda X, be: bk.sign(X, backend=be),
            "scaled_sign": lambda X, be: bk.scaled_sign(X, backend=be),
        },
        "attacks": {
            "sign_flip": lambda X, be: bk.sign_flip(X, f=_f(X), backend=be),
            "ipm": lambda X, be: bk.ipm(X, f=_f(X), eps=0.1, backend=be),
            "alie": lambda X, be: bk.alie(X, f=_f(X), backend=be),
            "gaussian": lambda X, be: bk.gaussian(X, f=_f(X), std=100.0, seed=0, backend=be),
            "mimic": lambda X, be: bk.Mimic(warmup=1)(X, f=_f(X), backend=be),
        },
    }
    table = {op: Op(family, _per_call(call), ways.get(op, {}), bounds.get(op, {}))
             for family, calls in runs.items() for op, call in calls.items()}
    # ops whose timed call needs more than X: their factories build it outside the timing
    table["to_bytes"] = Op("compress", _to_bytes, bounds=bounds["to_bytes"])
    table["from_bytes"] = Op("compress", _from_bytes, bounds=bounds["from_bytes"])
    table["optimized"] = Op("attacks", _optimized, bounds=bounds["optimized"])
    return table


#: op name -> Op. Issue 4's ops (aggregators, pre-aggregators, distances), then issue 5's.
OPS = _table()
FAMILIES = sorted({op.family for op in OPS.values()})


def select(names):
    """Op names from op or family names, in table order; a ValueError names unknown ones."""
    unknown = sorted(set(names) - set(OPS) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from the ops {list(OPS)} "
                         f"or the families {FAMILIES}")
    return [op for op, entry in OPS.items() if op in names or entry.family in names]


def _duration(seconds):
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} us"


def run(shapes, ops, backends, repeat=3, dtype=np.float32, baselines=True, out=print):
    """Time ``ops`` on ``backends`` (and their usual ways and bounds) for each shape; print a
    table and return its rows as dicts. ``x way``: byzkern's time over the fastest usual way's;
    ``x bound``: over the fastest bound's (a cost no way of doing it goes below).

    The floor of a shape is the median of reads of X taken before each of its ops, and every
    op of the shape is a multiple of it, printed when the shape is done: on a shared machine one
    read of the same 80 MB X took anywhere from 26 to 73 GB/s within a minute (with what the
    32 MB L3 still held of it), and a single read at the start of a shape scaled all its ops by
    whichever it hit. The table gives the spread of those reads. Below about 50 us a floor
    times Python's call overhead more than memory."""
    rows = []
    header = (f"{'op':<16}{'backend / the usual way / a bound':<38}{'median ms':>11}{'GB/s':>8}"
              f"{'x floor':>9}{'x way':>8}{'x bound':>9}")
    for n, d in shapes:
        X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32).astype(dtype)
        scratch = np.empty_like(X)
        floors, shape_rows = [], []
        for op in ops:
            entry = OPS[op]
            floors.append(read_floor(X, repeat, scratch))
            timings = {}
            for be in backends:
                try:
                    timings[be] = median_time(entry.run(X, be), repeat)
                except NotImplementedError:
                    continue
            references = {**entry.ways, **entry.bounds} if baselines else {}
            for label, make in references.items():
                timings[label] = median_time(make(X), repeat)
            fastest = {kind: min((timings[label] for label in group if label in timings), default=None)
                       for kind, group in (("way", entry.ways), ("bound", entry.bounds))}
            for label, t in timings.items():
                shape_rows.append({"op": op, "n": n, "d": d, "backend": label, "seconds": t,
                                   "gbps": X.nbytes / t / 1e9,
                                   **{f"x_{kind}": t / best if best and label in backends else None
                                      for kind, best in fastest.items()}})
        floor = float(np.median(floors))
        out(f"\n(n, d) = ({n}, {d}) {np.dtype(dtype).name}: read floor {_duration(floor)} "
            f"= {X.nbytes / floor / 1e9:.1f} GB/s (median of {len(floors)} reads, one before each op: "
            f"{X.nbytes / max(floors) / 1e9:.0f} to {X.nbytes / min(floors) / 1e9:.0f} GB/s)")
        out(header)
        for row in shape_rows:
            row.update(x_floor=row["seconds"] / floor, floor_gbps=X.nbytes / floor / 1e9)
            rows.append(row)
            ratios = "".join(f"{row[key]:>{width}.2f}" if row[key] is not None else " " * width
                             for key, width in (("x_way", 8), ("x_bound", 9)))
            out(f"{row['op']:<16}{row['backend']:<38}{row['seconds'] * 1e3:>11.3f}{row['gbps']:>8.1f}"
                f"{row['x_floor']:>9.2f}{ratios}".rstrip())
    return rows
