"""Attacks (SPEC §5): from the honest rows H (h, d) -> the f Byzantine rows (f, d); batched
(B, h, d) -> (B, f, d).

Every attack takes the honest rows first and keyword-only options, ``f`` (the number of
Byzantine rows to produce) always among them; called without data it returns a reusable rule.
Results come back in H's array library, device and dtype. Statistics of H (mean, std) are
computed in float64. Data attacks (label flipping, sample duplication) live in the simulation.
"""
from __future__ import annotations

import math
import statistics

import numpy as np

from . import _checks, _config, _dispatch
from ._arrays import Adapted, adapt, host, quietly, real_values, xp_of
from .aggregators import COORDINATE_WISE, cwmed, cwtm, meamed
from .distances import SUM_FLOOR
from .pipeline import Rule, rule


def _honest(H):
    return adapt(H, name="H", ndims=(2, 3))


def _count(f):
    return _checks.integer(f, "f", low=1)


def _mean(A, backend):
    return _dispatch.kernel("mean", A.device, backend)(A.data)


def _rows(A, row, f):
    """``row`` (B, d) repeated as f Byzantine rows, in the user's form."""
    B, _, d = A.data.shape
    return A.restore(A.xp.broadcast_to(row[:, None, :], (B, f, d)).copy())


def _own(A, own, f):
    return A.aux(own, "own", (f, A.data.shape[2]))


@rule
def sign_flip(H, *, f, scale=-1.0, own=None, backend=None):
    """Sign flipping. With ``own`` (the Byzantine workers' true messages, (f, d) or (B, f, d)):
    ``scale * own`` (seeds 000 and 002: -1, bit flipping; seed 003: c = -5). Without it:
    ``-|scale| * mean(H)`` (seed 004). Cost: one read of H (or of own)."""
    A = _honest(H)
    f = _count(f)
    scale = _checks.real(scale, "scale")
    if own is not None:
        return A.restore((scale * _own(A, own, f).astype(np.float64)).astype(A.dtype))
    return _rows(A, (-abs(scale) * _mean(A, backend).astype(np.float64)).astype(A.dtype), f)


@rule
def ipm(H, *, f, eps=0.1, backend=None):
    """Inner product manipulation (Xie, Koyejo, Gupta 2020; seeds 000, 002): every Byzantine
    row is ``-eps * mean(H)``. Cost: one read of H."""
    A = _honest(H)
    f = _count(f)
    eps = _checks.real(eps, "eps")
    return _rows(A, (-eps * _mean(A, backend).astype(np.float64)).astype(A.dtype), f)


@rule
def foe(H, *, f, eta, backend=None):
    """Fall of empires (seed 004): every Byzantine row is ``(1 - eta) * mean(H)``, so
    ``foe(eta) == ipm(eps=eta - 1)``. Cost: one read of H."""
    A = _honest(H)
    f = _count(f)
    eta = _checks.real(eta, "eta")
    return _rows(A, ((1.0 - eta) * _mean(A, backend).astype(np.float64)).astype(A.dtype), f)


def alie_z(n, f):
    """Baruch et al. 2019's default: s = floor(n/2 + 1) - f, z = Phi^-1((n - s) / n), n = h + f."""
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise ValueError(f"ALIE's default z needs f < n/2 + 1 (s = floor(n/2 + 1) - f > 0); got n={n}, f={f}")
    return statistics.NormalDist().inv_cdf((n - s) / n)


@rule
def alie(H, *, f, z=None, ddof=1, backend=None):
    """A little is enough (Baruch, Baruch, Goldberg 2019; seeds 000, 002): every Byzantine row is
    ``mean(H) - z * std(H)`` per coordinate, std with ``ddof`` (needs h > ddof). Default z:
    ``alie_z(h + f, f)``. Seed 004's optimized ALIE searches mean + eta * std instead (see
    ``optimized``). A float64 coordinate whose squared deviations overflow or underflow (rows
    spread past about 1e154, or all below about 1e-130) takes its std again on the host,
    scaled. Cost: two reads of H."""
    A = _honest(H)
    h = A.data.shape[1]
    f = _count(f)
    ddof = _checks.integer(ddof, "ddof", low=0, high=h - 1, high_text=f"h - 1 = {h - 1}")
    z = alie_z(h + f, f) if z is None else _checks.real(z, "z")
    mu, std = _mean_std(A, ddof, backend)
    return _rows(A, (mu.astype(np.float64) - z * std.astype(np.float64)).astype(A.dtype), f)


def _mean_std(A, ddof, backend):
    """The honest rows' mean and std (B, d), in H's dtype."""
    mu, std = _dispatch.kernel("mean_std", A.device, backend)(A.data, ddof)
    if A.data.dtype == np.float64:
        _std_again(A.data, mu, std, ddof)
    return mu, std


def _std_again(X, mu, std, ddof):
    """The kernels' squared deviations leave float64's normal range for a float64 coordinate
    whose rows spread past about 1e154 (the std is +Inf) or all lie below about 1e-130 (the
    std loses its digits to subnormal squares, or is 0), although the std fits (float32 rows,
    squared in float64, never do). Those coordinates, seldom any, take the std again on the
    host as s std(x / s), s the power of two at or below their largest |x| (so that it is
    finite), by which x and the mean divide exactly. Finding them costs two reductions of the
    std; a std below 1e-140 (columns of zeros, whose 0 is exact, among them) is looked at
    again on its column's rows, or, past a tenth of the columns, on two reductions of X."""
    xp = xp_of(X)
    if float(std.max()) < np.inf and float(std.min()) >= SUM_FLOOR ** 0.5:  # NaN: look further
        return
    overflowed, small = (std == xp.inf) & xp.isfinite(mu), std < SUM_FLOOR ** 0.5
    # entries from 1e-130 up: a nonzero deviation squares to a normal number
    if 10 * int(small.sum()) > std.size:  # past a tenth of the columns, two reductions of X cost less
        largest = xp.maximum(X.max(axis=1), -X.min(axis=1))
        items, columns = xp.nonzero(overflowed | (small & (largest > 0) & (largest < 1e-130)))
    else:  # than gathering their rows
        items, columns = xp.nonzero(overflowed | small)
        largest = xp.abs(X.transpose(0, 2, 1)[items, columns]).max(axis=1)
        again = (std[items, columns] == xp.inf) | ((largest > 0) & (largest < 1e-130))
        items, columns = items[again], columns[again]
    if not items.size:
        return
    values, means = host(X.transpose(0, 2, 1)[items, columns]), host(mu[items, columns])  # (k, h)
    s = np.ldexp(1.0, np.frexp(np.abs(values).max(axis=1))[1] - 1)[:, None]
    variance = ((values / s - means[:, None] / s) ** 2).sum(axis=1) / (values.shape[1] - ddof)
    std[items, columns] = xp.asarray(s[:, 0] * np.sqrt(variance))  # past float64's range: +Inf


@rule
def gaussian(H, *, f, std, own=None, seed=None, rng=None, backend=None):
    """Gaussian attack: rows of i.i.d. N(0, std^2) entries (seed 003: std = 100); with ``own``
    the noise is added to the Byzantine workers' own messages (seed 001: N(0, 10 I), i.e.
    std = sqrt(10)). H gives only the shape, device and dtype. Normals: Box-Muller on Philox
    keyed by (seed, batch item * f + row). Cost: one write of the (f, d) result."""
    A = _honest(H)
    B, _, d = A.data.shape
    f = _count(f)
    std = _checks.real(std, "std", nonnegative=True)
    seed = _checks.seed(seed, rng)
    base = A.xp.zeros((B, f, d), A.dtype) if own is None else _own(A, own, f)
    return A.restore(_dispatch.kernel("gaussian", A.device, backend)(base, std, seed))


@rule
def mimic(H, *, f, target):
    """Mimic (Karimireddy, He, Jaggi 2022): every Byzantine row copies honest row ``target``.
    See :class:`Mimic` for the heuristic that chooses the target. Cost: one read of that row."""
    A = _honest(H)
    f = _count(f)
    target = _checks.integer(target, "target", low=0, high=A.data.shape[1] - 1,
                             high_text=f"h - 1 = {A.data.shape[1] - 1}")
    return _rows(A, A.data[:, target], f)


class Mimic:
    """Mimic with the target heuristic of Karimireddy, He, Jaggi 2022 (ICLR; "Byzantine-robust
    learning on heterogeneous datasets via bucketing"), stateful across steps.

    During the first ``warmup`` steps it tracks the honest mean mu_t (running average) and a
    unit direction z of largest honest variance (one power-iteration step per round, averaged
    over rounds: ``z <- t/(t+1) z + u/((t+1) ||u||)``, ``u = sum_i <x_i - mu, z> (x_i - mu)``,
    then normalized; z starts from one power step on a Philox Gaussian vector), and copies the
    honest row with the largest ``<x_i, z>``. From step ``warmup`` on, it keeps copying that
    worker. One state per batch item; call ``attacker(H, f=...)`` once per step, with H of the
    same shape each time (``reset()`` starts again). Cost per warmup step: three reads of H;
    afterwards one read of the target row.
    """

    def __init__(self, *, warmup=1, seed=0):
        self.warmup = _checks.integer(warmup, "warmup", low=1)
        self.seed = _checks.integer(seed, "seed", low=0, high=2**64 - 1)
        self.reset()

    def reset(self):
        self.step, self.mu, self.z, self.target, self.shape = 0, None, None, None, None

    def __repr__(self):
        return f"Mimic(warmup={self.warmup}, seed={self.seed})"

    @quietly
    def __call__(self, H, *, f, backend=None):
        A = _honest(H)
        f = _count(f)
        xp, (B, h, d) = A.xp, A.data.shape
        if self.shape not in (None, (B, h, d)):  # before the state changes: a refused call leaves it as it was
            raise ValueError(f"H has (batch items, honest rows, d) = {(B, h, d)} but this Mimic tracks "
                             f"{self.shape}; reset() it first")
        if self.step < self.warmup:
            self.target = xp.argmax(self._learn(A, backend), axis=1)
        self.shape = (B, h, d)
        self.step += 1
        return _rows(A, A.data[xp.arange(B), self.target], f)

    def _learn(self, A, backend):
        """One step of mu and z; returns <x_i - mu, z> for the new z (B, h), whose argmax is the
        row most aligned with z (the <mu, z> that <x_i, z> adds is the same for every row)."""
        xp, (B, h, d) = A.xp, A.data.shape
        mean = _mean(A, backend).astype(np.float64)
        t = self.step
        if t == 0:
            self.mu = mean
            z = _dispatch.kernel("gaussian", A.device, backend)(xp.zeros((B, 1, d)), 1.0, self.seed)[:, 0]
            z = _unit(z, z)  # the start is where z stays if the honest rows do not vary
        else:  # in place: each pass over a (B, d) float64 array costs as much as a kernel's
            mean /= t + 1
            self.mu *= t / (t + 1)
            self.mu += mean
            z = self.z
        dots = _dispatch.kernel("centred_dots", A.device, backend)(A.data, self.mu, z)
        u, u_dots = _dispatch.kernel("power_step", A.device, backend)(A.data, self.mu, dots)
        u_unit, u_unit_dots = _unit(u, z, u_dots, dots)
        if t == 0:
            self.z, scores = u_unit, u_unit_dots
        else:
            u_unit /= t + 1
            u_unit += t / (t + 1) * z
            self.z, scores = _unit(u_unit, z, t / (t + 1) * dots + u_unit_dots / (t + 1), dots)
        return scores


def _unit(v, fallback, v_dots=None, fallback_dots=None):
    """v / ||v|| per batch item, written over v (a zero v, where the honest rows do not vary,
    gives fallback); with v_dots, the rows' dots with v, also their dots with the result (or
    fallback_dots)."""
    xp = xp_of(v)
    norm = xp.sqrt(xp.einsum("bd,bd->b", v, v))[:, None]
    scale = xp.where(norm > 0, norm, 1.0)
    v /= scale
    flat = ~(norm[:, 0] > 0)
    v[flat] = fallback[flat]
    return v if v_dots is None else (v, xp.where(norm > 0, v_dots / scale, fallback_dots))


#: seed 004 gives no grid; SPEC §5: eta = 0 and 16 geometric values from 0.1 to 10
DEFAULT_ETAS = np.concatenate([[0.0], np.geomspace(0.1, 10.0, 16)])
_DIRECTIONS = ("alie", "foe")


def _fused_deviations(aggregator, device, backend, n):
    """``deviations(H, mu, direction, etas, f)`` by the ``candidate_deviations`` kernel, when its
    rule is exactly what ``aggregator`` gives on each built candidate: cwmed, cwtm or meamed
    with nan_policy "outlier", whose own kernel is on the same backend. Else None."""
    fn, options = (aggregator.fn, aggregator.options) if isinstance(aggregator, Rule) else (aggregator, {})
    if fn not in (cwmed, cwtm, meamed) or options.get("nan_policy", "outlier") != "outlier":
        return None
    if fn is not cwmed and "f" not in options:
        return None  # the plain call raises the missing option's error
    try:
        fused = _dispatch.kernel("candidate_deviations", device, backend)
        own = _dispatch.kernel(fn.__name__, device, options.get("backend"))
    except (NotImplementedError, RuntimeError, ValueError):
        return None
    if fused.__module__ != own.__module__:
        return None
    trim = 0 if fn is cwmed else _checks.byzantine_count(options["f"], n, rule="n > 2f")
    return lambda *inputs: fused(*inputs, fn.__name__, trim)


def _built_deviations(aggregator, A, backend):
    """``deviations(H, mu, direction, etas, f)``: the squared distance from mu of the aggregator
    of each built candidate. A coordinate-wise aggregator gives each column the same value
    whichever columns it is called on, so its candidates are built and aggregated by column
    blocks of about CANDIDATE_BLOCK_BYTES, in cache; any other gets the whole batch at once."""
    fn = aggregator.fn if isinstance(aggregator, Rule) else aggregator
    candidates_of = _dispatch.kernel("attack_candidates", A.device, backend)
    batch = Adapted(None, A.lib, A.device, A.user_dtype, A.torch_device, 0)
    xp = A.xp

    def aggregate(H, mu, direction, etas, f):
        (B, h, c), E = H.shape, etas.size
        out = aggregator(batch.restore(candidates_of(H, mu, direction, etas, f).reshape(B * E, h + f, c)))
        out = adapt(out, name="aggregator output", ndims=(2,)).data
        if tuple(out.shape) != (B * E, c):
            raise ValueError(f"aggregator returned shape {tuple(out.shape)}; expected {(B * E, c)}")
        gap = out.reshape(B, E, c).astype(np.float64)
        gap -= mu.astype(np.float64)[:, None, :]
        return xp.square(gap, out=gap).sum(axis=2)

    def deviations(H, mu, direction, etas, f):
        (B, h, d), E = H.shape, etas.size
        if fn not in COORDINATE_WISE:
            return aggregate(H, mu, direction, etas, f)
        width = max(1, _config.CANDIDATE_BLOCK_BYTES // (B * E * (h + f) * H.itemsize))
        squares = xp.zeros((B, E))
        for c0 in range(0, d, width):
            squares += aggregate(*(xp.ascontiguousarray(v[..., c0:c0 + width]) for v in (H, mu, direction)), etas, f)
        return squares

    return deviations


@rule
def optimized(H, *, f, attack, aggregator, etas=None, return_info=False, backend=None):
    """Optimized ALIE / FOE (seed 004, Appendix 14.3): for each candidate strength eta the f
    Byzantine rows are ``mean(H) + eta * a`` (``attack="alie"``: a = +std(H), ddof 1, as ``alie``;
    ``"foe"``: a = -mean(H)); the eta kept is the one maximizing ``||aggregator(rows) -
    mean(H)||`` (first one on ties), with the honest rows first and the Byzantine rows last.

    All candidates go to the aggregator in ONE call on a (B * len(etas), h + f, d) array (any
    callable taking a batch, e.g. ``cwtm(f=4)`` or a ``Pipeline``). A coordinate-wise
    aggregator (``mean``, ``cwmed``, ``cwtm``, ``meamed``, bare or as a Rule) gets that array a
    block of columns at a time instead, which gives every column the same value; and ``cwmed``,
    ``cwtm`` and ``meamed`` (nan_policy "outlier") on the cpu or numba backend, the one of
    optimized, never get it built: one kernel runs the rule on each candidate's columns as it
    makes them. ``etas`` defaults to
    ``DEFAULT_ETAS`` (0 and 16 geometric values 0.1..10). ``attack`` is "alie", "foe" or the
    function ``alie`` / ``foe``. With ``return_info=True`` returns ``(rows, {"eta": ...,
    "etas": ..., "deviation": ...})``: eta is the chosen strength (a float; for a batch, (B,)),
    etas the grid as a NumPy array, deviation the distance each eta gave ((len(etas),); for a
    batch (B, len(etas))); deviation, and a batch's eta, are float64 arrays of H's library and
    device.
    Cost: len(etas) aggregations of the data, plus building their batch: one write of it to
    memory; by column blocks, to the cache only; on cpu and numba, none.
    """
    A = _honest(H)
    B, h, d = A.data.shape
    f = _count(f)
    if callable(attack) and getattr(attack, "__name__", None) in _DIRECTIONS:
        attack = attack.__name__
    attack = _checks.choice(attack, "attack", _DIRECTIONS)
    _checks.function(aggregator, "aggregator", "callable (e.g. cwtm(f=4))")
    etas = DEFAULT_ETAS if etas is None else real_values(etas, "etas").reshape(-1)
    if etas.size == 0 or not np.isfinite(etas).all():
        raise ValueError(f"etas must be a non-empty sequence of finite numbers; got {etas!r}")
    xp = A.xp
    if attack == "alie":
        if h < 2:
            raise ValueError(f"optimized ALIE needs h >= 2 honest rows (its std has ddof 1); got h={h}")
        mu, direction = _mean_std(A, 1, backend)
    else:
        mu = _mean(A, backend)
        direction = -mu
    deviations = (_fused_deviations(aggregator, A.device, backend, h + f)
                  or _built_deviations(aggregator, A, backend))
    squares = deviations(A.data, mu, direction, etas, f)
    deviation = xp.sqrt(squares)
    best = xp.argmax(deviation, axis=1)
    chosen, which = np.unique(host(best), return_inverse=True)
    byzantine = _dispatch.kernel("attack_candidates", A.device, backend)(A.data[:, :0], mu, direction, etas[chosen], f)
    if chosen.size == 1:  # one eta for every item (always so unbatched): no gather to copy
        rows = A.restore(byzantine[:, 0])
    else:
        rows = A.restore(xp.ascontiguousarray(byzantine[xp.arange(B), xp.asarray(which.reshape(-1))]))
    if not return_info:
        return rows
    info = {"etas": etas, "deviation": A.restore(deviation, keep_dtype=True)}
    if A.folded:
        return rows, {"eta": float(etas[int(best[0])]), **info}
    return rows, {"eta": A.restore(xp.asarray(etas[host(best)]), keep_dtype=True), **info}
