"""Robust aggregators: a round of messages X (n, d) -> one vector (d,); batched (B, n, d) -> (B, d).

Every function takes the data first and keyword-only options; called without data it returns a
reusable rule (``cwtm(f=4)``). All take ``backend=`` and ``nan_policy=`` ("outlier" default,
"raise", "propagate"; SPEC §8). Costs are given in reads of X.
"""
from __future__ import annotations

import numpy as np

from . import _checks, _dispatch
from ._arrays import adapt, host, xp_of
from .distances import SUM_FLOOR, krum_scores, least, norms_by_largest, sqdist_matrix
from .pipeline import rule


@rule
def mean(X, *, backend=None, nan_policy="outlier"):
    """Arithmetic mean of the rows, ``(1/n) sum_i x_i``: the non-robust baseline.

    Not robust: one NaN or huge row spoils it under every nan_policy. Cost: one read of X.
    """
    A = adapt(X)
    return _dispatch.run("mean", A, backend=backend, nan_policy=nan_policy, scope=None)


@rule
def cwmed(X, *, backend=None, nan_policy="outlier"):
    """Coordinate-wise median (Yin et al. 2018; seeds 000, 002, 004).

    For even n, the mean of the two middle values (NumPy's convention). NaN orders above +Inf,
    so with fewer than n/2 non-finite values in a coordinate its median is finite.
    Cost: one read of X.
    """
    A = adapt(X)
    return _dispatch.run("cwmed", A, backend=backend, nan_policy=nan_policy, scope="columns")


@rule
def cwtm(X, *, f, backend=None, nan_policy="outlier"):
    """Coordinate-wise trimmed mean (Yin et al. 2018; seeds 002, 004).

    Per coordinate, drop the f smallest and the f largest values and average the other n - 2f.
    Needs n > 2f. cwtm(f=0) is the mean. Cost: one read of X.
    """
    A = adapt(X)
    f = _checks.byzantine_count(f, A.data.shape[1], rule="n > 2f")
    return _dispatch.run("cwtm", A, backend=backend, nan_policy=nan_policy, scope="columns", f=f)


@rule
def meamed(X, *, f, backend=None, nan_policy="outlier"):
    """Mean around median (Xie et al. 2018): per coordinate, the mean of the n - f values
    closest to that coordinate's median. Ties in distance go to the smaller value, so the rule
    is permutation invariant. Needs n > 2f. Cost: one read of X.
    """
    A = adapt(X)
    f = _checks.byzantine_count(f, A.data.shape[1], rule="n > 2f")
    return _dispatch.run("meamed", A, backend=backend, nan_policy=nan_policy, scope="columns", f=f)


#: the rules whose value at a coordinate depends only on that coordinate's column of X
COORDINATE_WISE = frozenset({mean, cwmed, cwtm, meamed})


@rule
def geomed(X, *, maxiter=100, eps=1e-6, nu=1e-6, weights=None, init="mean", return_info=False,
           backend=None, nan_policy="outlier"):
    """Geometric median by smoothed Weiszfeld (Pillutla, Kakade, Harchaoui: RFA; seeds 000, 003).

    ``z <- sum_i b_i x_i / sum_i b_i`` with ``b_i = w_i / max(nu, ||z - x_i||)``, from ``init``
    ("mean": the weighted mean; "zero"; or an array (d,) / (B, d)); stops after ``maxiter``
    steps or when the objective ``F(z) = sum_i w_i ||z - x_i||`` changes by less than
    ``eps * F(z)`` (RFA's rule; ``eps=0`` never stops early). The papers' fixed 8 steps are
    ``geomed(maxiter=8, eps=0)``; their code started from zero with nu = 0.1, which is
    ``init="zero", nu=0.1``. ``nu`` is absolute, so it depends on the scale of X; it must be
    > 0 (with nu = 0 a step from a point that is one of the rows divides 0 by 0) and not so
    small that ``w_i |x_i| / nu`` overflows float64.

    RFA's rule is blind to far rows: where a few rows lie far beyond the others (Byzantine rows
    of 1e38 among rows of 1), their distances make F, and each step's change is small beside
    it, so the iteration stops with z still far out, where the mean had put it (3 rows of 1e38
    among 11 stop it at about 1e31 after 15 steps). ``eps=0`` runs every step (each brings z
    about 2.6 times closer there), and an ``init`` from a robust rule (``init=cwmed(X)``)
    starts near the median.

    ``weights`` (n,) or (B, n): non-negative, not all zero; only their ratios matter.
    nan_policy="outlier" gives rows with a NaN or Inf entry zero weight.
    With ``return_info=True`` returns ``(z, {"iterations": ..., "objective": ...})``: Python
    numbers, or for a batch (B,) int64 and float64 arrays of X's library and device.

    Numerics and cost: every iterate after the first is z = sum_i a_i x_i with sum_i a_i = 1,
    so on the cpu and numba backends, when n < 16 maxiter, the distances come from one
    ``pairwise_sqdist``: ``||z - x_j||^2 = sum_i a_i D_ij - a^T D a / 2`` (float64), and X is
    read once more for z (once more again for ``init="zero"`` or an array). A step where that
    difference would cancel (z close to a row compared with the rows' spread: duplicated rows,
    far outliers) takes its distances directly from X instead, one read of X for that step.
    With more rows (pairwise_sqdist costing more than the steps it saves) every step reads X
    once, distances direct, as the reference does; the cuda backend reads X twice per step.
    A float64 item whose squared distances overflow (rows past about 1e154) runs again on X
    scaled by a power of two, which gives the same iterates without the overflow.
    """
    A = adapt(X)
    B, n, d = A.data.shape
    maxiter = _checks.integer(maxiter, "maxiter", low=0)
    eps = _checks.real(eps, "eps", nonnegative=True)
    nu = _checks.real(nu, "nu", positive=True)
    xp = A.xp
    weight_shift = None
    if weights is None:
        w = xp.ones((B, n))
    else:
        w = A.aux(weights, "weights", (n,), np.float64)
        if not bool(xp.isfinite(w).all()) or bool((w < 0).any()) or bool((w.max(axis=1) <= 0).any()):
            raise ValueError("weights must be finite, non-negative and not all zero")
        # z depends on the weights' ratios only: each item's largest is brought into [1, 2) by a
        # power of two, past which no sum of weights or w_i x_i overflows (weights of 1e308 gave
        # NaN) or goes subnormal; the objective is scaled back
        weight_shift = xp.frexp(w.max(axis=1))[1] - 1
        w = xp.ldexp(w, -weight_shift[:, None])
    if isinstance(init, str):
        init = _checks.choice(init, "init", ("mean", "zero"))
    else:
        init = A.aux(init, "init", (d,))
    _dispatch.guard_nonfinite(A, nan_policy)
    kernel = _dispatch.kernel("geomed", A.device, backend)
    z, iters, obj = kernel(A.data, w, init, maxiter, eps, nu)
    if A.data.dtype == np.float64:
        _geomed_again(kernel, A.data, w, init, maxiter, eps, nu, z, iters, obj)
    if weight_shift is not None:  # an objective past float64's range is +Inf
        obj = xp.ldexp(obj, weight_shift)
    z = _dispatch.finish(A, z, nan_policy, "items")
    if not return_info:
        return z
    if A.folded:
        return z, {"iterations": int(iters[0]), "objective": float(obj[0])}
    return z, {"iterations": A.restore(iters, keep_dtype=True), "objective": A.restore(obj, keep_dtype=True)}


def _geomed_again(kernel, X, w, init, maxiter, eps, nu, z, iters, obj):
    """A float64 item whose rows lie past about 1e154 from the iterate (a Byzantine row of
    1e200, or the mean it pulls the start to) has distances that overflow: their weights
    1 / +Inf are 0, all of them at once give z = 0 / 0 = NaN, and the objective is not finite.
    Float32 rows, squared in float64, cannot. Such items, seldom any, run again with X (and nu,
    and an init array) scaled by a power of two (_scaled_down): a Weiszfeld step commutes
    exactly with it, so this is the same iteration; z and the objective are scaled back. On a
    GPU, finding them costs one synchronization."""
    xp = xp_of(X)
    for item in host(xp.flatnonzero(~xp.isfinite(obj))).tolist():
        rows, start = X[item:item + 1], None if isinstance(init, str) else init[item:item + 1]
        shift = _scaled_down(rows, start)
        if shift >= 0:  # rows this small cannot overflow: the objective is not finite for another reason
            continue
        scaled_start = init if start is None else xp.ldexp(start, shift)
        z1, iters1, obj1 = kernel(xp.ldexp(rows, shift), w[item:item + 1], scaled_start, maxiter, eps,
                                  float(np.ldexp(nu, shift)))
        z[item], iters[item] = xp.ldexp(z1[0], -shift), iters1[0]  # past float64's range: +-Inf
        obj[item] = np.ldexp(float(obj1[0]), -shift)


def _scaled_down(rows, start):
    """The power of two that brings the largest finite |x| of an item's rows (1, n, d) and of its
    start (1, d) or None to 2^(506 - log2(d) / 2), where no squared distance between points of
    their hull overflows (d (4 |x|)^2 <= 2^1016), and no lower: the honest rows' distances, 1e200
    times smaller than an outlier's, must not underflow either. 0 for an item of zeros."""
    xp = xp_of(rows)
    largest = float(xp.where(xp.isfinite(rows), xp.abs(rows), 0.0).max())
    if start is not None:
        largest = max(largest, float(xp.where(xp.isfinite(start), xp.abs(start), 0.0).max()))
    if largest == 0.0:
        return 0
    return 506 - int(np.ceil(np.log2(rows.shape[2]) / 2)) - int(np.floor(np.log2(largest)))


def _krum_k(rule, n, f, k):
    if k is None:
        k = n - f - 2
        if k < 1:
            raise ValueError(f"{rule} with f={f} needs n >= f + 3 for the default k = n - f - 2; got n={n}")
        return k
    return _checks.integer(k, "k", low=1, high=n - 1, high_text=f"n - 1 = {n - 1}")


def _select_rows(A, idx, backend):
    return _dispatch.kernel("mix_rows", A.device, backend)(A.data, idx)


@rule
def krum(X, *, f, k=None, backend=None, nan_policy="outlier"):
    """Krum (Blanchard et al. 2017; seeds 000, 003): the x_i of least score, where score_i is
    the sum of squared distances from x_i to its k nearest other rows; k = n - f - 2 by default.
    Seed 004 analyses ``k = n - f - 1``. Ties in score go to the lowest index. Needs n > 2f,
    and n >= f + 3 for the default k.

    Distances: ``pairwise_sqdist`` (float64, exact for nearly equal rows). A non-finite row
    is infinitely far from every other; scores compare by how many infinite distances they
    add, then by the sum of the rest, so a finite row wins where every score is infinite
    (k >= n - f with f such rows). Cost: one read of X for the distances, one read of the
    chosen row.
    """
    A = adapt(X)
    n = A.data.shape[1]
    f = _checks.byzantine_count(f, n, rule="n > 2f")
    k = _krum_k("krum", n, f, k)
    D = sqdist_matrix(A, backend, nan_policy)
    chosen = least(krum_scores(D, k), 1)[:, None, :]
    out = _select_rows(A, chosen, backend)[:, 0]
    return _dispatch.finish(A, out, nan_policy, "items")


@rule
def multikrum(X, *, f, m=None, k=None, backend=None, nan_policy="outlier"):
    """Multi-Krum (Blanchard et al. 2017): the mean of the m rows of least Krum score
    (m = n - f by default; k as in ``krum``). multikrum(m=1) is krum. Ties go to the lower
    index. Needs n > 2f, and n >= f + 3 for the default k. Cost: one read of X for the distances,
    one read of the m chosen rows.
    """
    A = adapt(X)
    n = A.data.shape[1]
    f = _checks.byzantine_count(f, n, rule="n > 2f")
    k = _krum_k("multikrum", n, f, k)
    m = n - f if m is None else _checks.integer(m, "m", low=1, high=n, high_text=f"n = {n}")
    D = sqdist_matrix(A, backend, nan_policy)
    chosen = least(krum_scores(D, k), m)[:, None, :]
    out = _select_rows(A, chosen, backend)[:, 0]
    return _dispatch.finish(A, out, nan_policy, "items")


@rule
def cclip(X, *, tau, iters=1, init=None, backend=None, nan_policy="outlier"):
    """Centered clipping (Karimireddy, He, Jaggi 2021):
    ``v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)``, ``iters`` times, from ``init``
    ((d,) or (B, d); default: the coordinate-wise median). A row with a NaN or Inf entry adds 0.
    Cost: on the cpu backend one read of X for the start (the median) and the distances to it,
    then one per iteration; elsewhere the median's read, then two per iteration. A float64 item
    where a row's distance to an iterate overflows (rows past about 1e154) runs again on X
    scaled by a power of two, which gives the same iterates without the overflow.
    """
    A = adapt(X)
    B, n, d = A.data.shape
    tau = _checks.real(tau, "tau", positive=True)
    iters = _checks.integer(iters, "iters", low=0)
    _dispatch.guard_nonfinite(A, nan_policy)
    v0 = None if init is None else A.aux(init, "init", (d,))
    kernel = _dispatch.kernel("cclip", A.device, backend)
    out, overflowed = kernel(A.data, tau, iters, v0)
    if A.data.dtype == np.float64:
        _cclip_again(kernel, A.data, tau, iters, v0, out, overflowed)
    return _dispatch.finish(A, out, nan_policy, "items")


def _cclip_again(kernel, X, tau, iters, v0, out, overflowed):
    """A float64 row past about 1e154 from an iterate (a Byzantine row of 1e200) has a distance
    that overflows, and the kernels take its factor tau / +Inf as 0: it adds nothing, where the
    update gives it a step of length tau / n toward it. Float32 rows cannot overflow. Such items,
    seldom any, run again with X, tau and v0 scaled by a power of two, as geomed's do
    (_scaled_down): every step commutes exactly with it. On a GPU, finding them costs one
    synchronization."""
    xp = xp_of(X)
    for item in host(xp.flatnonzero(overflowed)).tolist():
        rows, start = X[item:item + 1], None if v0 is None else v0[item:item + 1]
        shift = _scaled_down(rows, start)
        if shift >= 0 or np.ldexp(tau, shift) == 0.0:  # nothing to gain, or tau lost to the scaling
            continue
        scaled_start = None if start is None else xp.ldexp(start, shift)
        v, _ = kernel(xp.ldexp(rows, shift), float(np.ldexp(tau, shift)), iters, scaled_start)
        out[item] = xp.ldexp(v[0], -shift)


def _row_norms(A, q, backend):
    """The rows' q-norms (B, n), +Inf for a row with a non-finite entry, as the kernel gives them;
    except that the kernels' sum of |x|^q overflows for finite rows (|x| = 3 at q = 700, or
    1e155 at q = 2) and underflows (0.5 at q = 1100): +Inf would tie such a row with the
    non-finite rows and keep one of those in its place. Those rows, and the ones whose sum fell
    below SUM_FLOOR, seldom any, are read again and their norms taken through their largest
    entry (norms_by_largest), which does neither."""
    r = _dispatch.kernel("row_norms", A.device, backend)(A.data, q)
    xp = A.xp
    suspect = xp.nonzero((r == xp.inf) | (r < SUM_FLOOR ** (1.0 / q))) if q != np.inf else ()
    if suspect and suspect[0].size:
        rows = A.data[suspect].astype(np.float64)
        largest, rest = norms_by_largest(rows, q)
        # non-finite rows keep +Inf; a finite row's norm past float64's range is +Inf too
        r[suspect] = xp.where(xp.isfinite(rows).all(axis=1), largest * rest, xp.inf)
    return r


@rule
def norm_filter(X, *, f, q=2, norms=None, backend=None, nan_policy="outlier"):
    """Norm thresholding (seed 001, Algorithms 1 and 2): drop the f rows of largest q-norm
    (ties: the higher index is dropped) and average the other n - f.

    f is the number DROPPED, which seed 001 sets above the Byzantine count (beta >= alpha).
    ``norms`` ((n,) or (B, n)) ranks by given norms instead: Option I, where workers send the
    norm of the uncompressed gradient beside the compressed vector; without it, rows are
    ranked by their own norms (Option II). NaN norms rank as +Inf. Needs n > f.
    Cost: one read of X for the norms (none with ``norms=``), one read of the kept rows.
    """
    A = adapt(X)
    B, n, _ = A.data.shape
    f = _checks.byzantine_count(f, n, rule="n > f")
    _dispatch.guard_nonfinite(A, nan_policy)
    if norms is None:
        r = _row_norms(A, _checks.norm_order(q, "q"), backend)
    else:
        r = A.aux(norms, "norms", (n,), np.float64)
        r = A.xp.where(A.xp.isnan(r), A.xp.inf, r)  # r may be a view of the caller's norms
    kept = least(r, n - f)[:, None, :]
    out = _select_rows(A, kept, backend)[:, 0]
    return _dispatch.finish(A, out, nan_policy, "items")
