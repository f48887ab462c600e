"""Smoothed Weiszfeld for the cpu and numba backends: the steps on coefficients, not on X.

After its first step every Weiszfeld iterate is a convex combination of the kept rows,
z = sum_i a_i x_i with a = beta / sum(beta) >= 0, and for such a z, exactly,

    ||z - x_j||^2 = s_j - q,   s_j = sum_i a_i D_ij,   q = 1/2 a^T D a = sum_i a_i ||z - x_i||^2,

with D the pairwise squared distances. So one ``pairwise_sqdist`` (float64, exact-difference
accuracy) gives every step's distances, the objective and the stopping rule as (n, n) work, and
X is read once more at the end for z itself: about one pairwise_sqdist plus one pass, where
stepping on z takes a pass per step.

The subtraction cancels where x_j is much nearer z than the a-weighted spread of the rows
(z converging onto a row, duplicated rows, far outliers): its error is a few ulps of s_j + q,
against ||z - x_j||^2. A step whose distance is not above ``TRUST[dtype]`` (s_j + q) for every
kept row is taken on X instead (the backend's fused pass: z from the coefficients, then the direct
distances), and so is every step of an item whose D overflows among finite rows. Only the
distances of that step come from X; the iterate is still the coefficients.

``init="zero"`` or an array needs the distances from that point (one pass); after the first
step the iterate is a combination again.

pairwise_sqdist costs O(n^2 d), a step on X O(n d): with many rows and few steps
(n >= GRAM_ROWS_PER_STEP * maxiter) every step is taken on X, one pass each, and with
init="mean" the first pass finds the non-finite rows (their distances are not finite), and the
items that had them start again without them.

A backend gives three kernels (``kernels``):
``pairwise_sqdist(X)``; ``center_distances(X, center) -> (dist, finite)``: float64 distances
(B, n) from ``center`` (B, d) float64 and which rows are finite; and
``weighted_center(X, coef, items, distances) -> (z, dist)``: for the items marked,
z[b] = sum_{coef_i != 0} coef_i x_i / sum coef formed in float64 and rounded to X's dtype, and
the direct distances (B, n) from the float64 z when ``distances`` (else None); the other items'
rows are undefined.
"""
from __future__ import annotations

import numpy as np

#: pairwise_sqdist costs about n / GRAM_ROWS_PER_STEP Weiszfeld steps on X (measured, float32,
#: 2 threads: 1.6 steps at (20, 1e6), 2 to 4 at (64, 1e6), 8 to 17 at (256, 1e5)); the steps
#: are taken on coefficients when that is less than maxiter, else all on X.
GRAM_ROWS_PER_STEP = 16
#: below this many elements (n d) the cpu backend runs the whole loop in C++ instead: a step
#: here costs about 25 us of Python whatever the size, a pass over X of 2^20 float32 about as
#: much (measured at (20, 1e3) .. (20, 1e5), 2 threads)
COEFFICIENT_MIN_ELEMENTS = 1 << 20
#: a distance from the Gram formula is trusted when ||z - x_j||^2 > TRUST (s_j + q): its
#: relative error is then below 1 / (2 TRUST) times that of D and of the sums (a few ulps of
#: float64 each). For float64 results 2^7 ulps: an error in z of about 1e-13 of the rows'
#: spread, inside the float64 parity tolerance (1e-12); for float32 results 2^15 ulps (3e-12),
#: far below float32's rounding, which keeps rows up to about 1e5 times farther than the others
#: (a Gaussian attack on small gradients) on the coefficient steps.
TRUST = {np.dtype(np.float32): 2.0 ** -16, np.dtype(np.float64): 2.0 ** -8}


def steps_on_coefficients(shape, maxiter, eps):
    """Whether the cpu backend's geomed on X of this (B, n, d) shape takes the steps here
    rather than in its C++ loop on X. Only for a known step count (eps = 0, as the papers'
    fixed 8 steps): with eps > 0 the loop often stops after one or two steps (Gaussian rows
    without outliers stop after one at eps = 1e-6), and those cost less than pairwise_sqdist."""
    _, n, d = shape
    return eps == 0 and n * d >= COEFFICIENT_MIN_ELEMENTS and n < GRAM_ROWS_PER_STEP * maxiter


def gram_sqdist(D, a, trust):
    """(||z - x_j||^2 for z = sum_i a_i x_i, trusted) from D (B, n, n) and a (B, n), sum a = 1.

    D must be finite and zero outside the kept rows; ``trusted[b, j]`` says whether row j's
    value is above trust (s_j + q), i.e. clear of the cancellation."""
    s = np.matmul(D, a[:, :, None])[:, :, 0]
    q = 0.5 * (a * s).sum(axis=1, keepdims=True)
    sq = s - q
    return np.maximum(sq, 0.0), sq > trust * (s + q)


def _drop_nonfinite_rows(X, suspect, w):
    """Zero the weight of the ``suspect`` rows (B, n) that have a NaN or Inf entry (w changed in
    place); which items lost a row (B,).

    Suspects are the kept rows with a non-finite distance: a non-finite row has one, and so has
    a finite row whose distances overflowed, which only reading the row tells apart."""
    dropped = np.zeros(w.shape[0], dtype=bool)
    for b, i in zip(*np.nonzero(suspect)):
        if not np.isfinite(X[b, i]).all():
            w[b, i] = 0.0
            dropped[b] = True
    return dropped


def _pairs(kept):
    """(B, n, n): both rows kept, off the diagonal."""
    n = kept.shape[1]
    return kept[:, :, None] & kept[:, None, :] & ~np.eye(n, dtype=bool)


def geomed(X, weights, init, maxiter, eps, nu, kernels):
    B, n, d = X.shape
    w = weights.copy()
    from_mean = isinstance(init, str) and init == "mean"
    if not from_mean:
        start = np.zeros((B, d)) if isinstance(init, str) else init.astype(np.float64)
        dist, finite = kernels.center_distances(X, start)
        w[~finite] = 0.0
    if not from_mean and maxiter == 0:
        obj = (w * np.where(w > 0, dist, 0.0)).sum(axis=1)
        return start.astype(X.dtype), np.zeros(B, np.int64), obj

    z = np.empty((B, d), X.dtype)
    z_is_current = np.zeros(B, dtype=bool)  # z[b] holds the current iterate (set by a pass on X)
    everything = np.ones(B, dtype=bool)
    if n < GRAM_ROWS_PER_STEP * maxiter:
        D = kernels.pairwise_sqdist(X)
        if from_mean:  # a non-finite row is at +Inf from every row; a lone row has no distance
            kept = w > 0
            lone = kept & (kept.sum(axis=1, keepdims=True) == 1)
            _drop_nonfinite_rows(X, lone | (_pairs(kept) & ~np.isfinite(D)).any(axis=2), w)
        pairs = _pairs(w > 0)
        # items whose every step reads X: distances overflowed among finite rows, or no row left
        on_x = (pairs & ~np.isfinite(D)).any(axis=(1, 2)) | ~(w > 0).any(axis=1)
        D = np.where(pairs & ~on_x[:, None, None], D, 0.0)
    else:
        D, on_x = None, everything

    def take(items, new):
        """z[items] = new[items], without the copy when new is every item's."""
        nonlocal z
        if items.all():
            z = new
        else:
            z[items] = new[items]

    trust, unweighted = TRUST[X.dtype], w <= 0  # w no longer changes on the coefficient route

    def step_distances(coef, items):
        """Distances (B, n) from z = coef-weighted mean of the rows, for ``items``; non-finite
        where a row or z is (rows of zero weight included)."""
        exact = items & on_x
        if D is None:
            fresh = np.zeros(coef.shape)
        else:
            total = coef.sum(axis=1, keepdims=True)
            a = np.divide(coef, total, out=np.zeros_like(coef), where=total > 0)
            sq, trusted = gram_sqdist(D, a, trust)
            fresh = np.sqrt(sq)
            exact |= items & ~(trusted | unweighted).all(axis=1)
        if exact.any():
            new, direct = kernels.weighted_center(X, coef, exact, True)
            take(exact, new)
            np.copyto(fresh, direct, where=exact[:, None])
        np.copyto(z_is_current, exact, where=items)
        return fresh

    if from_mean:
        coef = w.copy()
        dist = step_distances(coef, everything)
        if D is None:  # that pass met the non-finite rows: start again without them
            redo = _drop_nonfinite_rows(X, (w > 0) & ~np.isfinite(dist), w)
            if redo.any():
                coef = w.copy()
                dist = np.where(redo[:, None], step_distances(coef, redo), dist)
    else:
        coef = np.zeros((B, n))
    kept = w > 0
    dist = np.where(kept, dist, 0.0)
    obj = (w * dist).sum(axis=1)
    iters = np.zeros(B, np.int64)
    active = np.ones(B, dtype=bool)
    for t in range(1, maxiter + 1):
        live = active[:, None]
        # the rows of zero weight have distance 0 here, so beta 0
        np.copyto(coef, w / np.maximum(nu, dist), where=live)
        dist = np.where(live & kept, step_distances(coef, active), dist)
        new_obj = (w * dist).sum(axis=1)
        iters[active] = t
        converged = np.abs(obj - new_obj) < eps * new_obj  # RFA's relative stopping rule
        obj = np.where(active, new_obj, obj)
        active &= ~converged
        if not active.any():
            break
    stale = ~z_is_current
    if stale.any():
        take(stale, kernels.weighted_center(X, coef, stale, False)[0])
    return z, iters, obj
