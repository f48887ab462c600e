"""Pre-aggregators: X (n, d) -> (n', d), batched (B, n, d) -> (B, n', d).

They run before an aggregator in a ``Pipeline`` (``Pipeline(nnm(f=4), cwtm(f=4))``). Every
one but ``clip`` is a mean of chosen rows, so each builds an index table and calls the one
``mix_rows`` kernel; the choices (neighbours, permutations, draws) are made on tiny arrays in
Python, identically for every backend.
"""
from __future__ import annotations

import numpy as np

from . import _checks, _config, _dispatch, _random
from ._arrays import adapt, host, xp_of
from .distances import SUM_FLOOR, nearest_including_self, norms_by_largest, sqdist_matrix
from .pipeline import rule


def _mix(A, idx, backend, nan_policy, scope=None):
    idx = A.xp.asarray(idx, dtype=np.int64)
    out = _dispatch.kernel("mix_rows", A.device, backend)(A.data, idx)
    return _dispatch.finish(A, out, nan_policy, scope)


@rule
def nnm(X, *, f, backend=None, nan_policy="outlier"):
    """Nearest neighbour mixing (Allouah et al. 2023, seed 004, Algorithm 2):
    ``y_i = mean of the n - f rows nearest to x_i``, x_i itself included, ties by index.

    Distances: ``pairwise_sqdist`` (float64, exact for nearly equal rows); a non-finite row is at
    +Inf from all others, so honest rows never mix it in while at most f rows are non-finite.
    Needs n > 2f. Cost: one read of X for the distances, then the mixing: n(n - f) additions
    per column, fewer on the CPU for long rows, where neighbour lists that share a prefix reuse
    its sum.
    """
    A = adapt(X)
    _, n, d = A.data.shape
    f = _checks.byzantine_count(f, n, rule="n > 2f")
    D = sqdist_matrix(A, backend, nan_policy)
    nearest = nearest_including_self(D, n - f)
    # Only the CPU kernels walk shared prefixes. cuda's mix_rows sums each output on its own, so
    # there the ordering would add a round trip to the host (and Python's greedy) for nothing.
    if A.device == "cpu" and d >= _config.SHARED_PREFIX_MIN_COLUMNS:
        nearest = shared_prefix_order(host(nearest), n)
    return _mix(A, nearest, backend, nan_policy, "items")


def shared_prefix_order(idx, n):
    """idx (B, m, k), each output's k distinct rows of range(n), with each output's rows put in
    an order that lets outputs share partial sums: mix_rows sums an output's rows in idx order,
    and outputs whose lists start with the same rows share that prefix's sum (the kernels walk
    the outputs' lists as a trie), so the fewer distinct prefixes, the fewer additions.

    Greedy, per batch item: the rows every output of a group has come first (ascending), then
    the group splits on the row most of its outputs have (lowest index on ties): those outputs
    take it next, the others continue without it. NNM's neighbour sets overlap heavily (rows
    far from everyone are nobody's neighbours): on Gaussian rows the trie has 3.0x (n = 20,
    f = 4) to 2.3x (n = 256, f = 51) fewer edges than the n(n - f) additions of summing each
    output on its own, and 16x to 110x fewer where f rows are far from the rest.
    """
    B, m, k = idx.shape
    ordered = np.empty_like(idx)
    for b in range(B):
        member = np.zeros((m, n), bool)
        np.put_along_axis(member, idx[b], True, axis=1)
        # a group: its outputs, the rows each has not placed yet, and how many each has placed
        groups = [(np.arange(m), member, 0)]
        while groups:
            outputs, remaining, depth = groups.pop()
            while depth < k:
                counts = remaining.sum(axis=0)
                if len(outputs) == 1 or counts.max() == len(outputs):
                    common = np.flatnonzero(counts == len(outputs))
                    ordered[b, outputs, depth:depth + len(common)] = common
                    remaining[:, common] = False
                    depth += len(common)
                    continue
                row = int(np.argmax(counts))
                having = remaining[:, row]
                groups.append((outputs[~having], remaining[~having], depth))
                outputs, remaining = outputs[having], remaining[having]
                ordered[b, outputs, depth] = row
                remaining[:, row] = False
                depth += 1
    return ordered


def fisher_yates(seed, stream, item, n):
    """The permutation of range(n) for (seed, batch item): Fisher-Yates driven by Philox."""
    u = _random.uniforms(seed, stream, item, n)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(_random.below(u[i], i + 1))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@rule
def bucketing(X, *, s, seed=None, rng=None, backend=None, nan_policy="outlier"):
    """Bucketing (Karimireddy, He, Jaggi 2022; seed 000 Algorithm 2 and Lemma D.1; seed 004):
    permute the rows at random, split them into ceil(n/s) buckets of s consecutive rows and
    return each bucket's mean. The last, shorter bucket averages its own members: we follow
    Lemma D.1, where seed 000's Algorithm 2 box divides by s. Seed 004 uses s = floor(n/(2f)).

    The permutation is Fisher-Yates driven by Philox on (seed, batch item), so it is the same on
    every backend; a rule with a fixed ``seed=`` permutes alike every round, so give a rule
    used round after round ``rng=`` (a Generator draws a seed per call). Cost: one read of X.
    """
    A = adapt(X)
    B, n, _ = A.data.shape
    s = _checks.integer(s, "s", low=1, high=n, high_text=f"n = {n}")
    seed = _checks.seed(seed, rng)
    _dispatch.guard_nonfinite(A, nan_policy)
    buckets = -(-n // s)
    idx = np.full((B, buckets, s), -1, dtype=np.int64)
    for b in range(B):
        perm = fisher_yates(seed, "bucketing", b, n)
        idx[b].reshape(-1)[:n] = perm
    return _mix(A, idx, backend, nan_policy)


def resampling_draws(seed, item, n, s):
    """Seed 003, Algorithm 1: n rounds of s draws; each draw is uniform among the rows drawn
    fewer than s times so far, counted at once (so a row can appear twice in one round)."""
    u = _random.uniforms(seed, "resampling", item, n * s).tolist()
    count = [0] * n
    eligible = list(range(n))  # the rows drawn fewer than s times, ascending
    draws = []
    for t in range(n * s):
        j = _random.below(u[t], len(eligible))
        row = eligible[j]
        draws.append(row)
        count[row] += 1
        if count[row] == s:
            del eligible[j]
    return np.array(draws, dtype=np.int64).reshape(n, s)


@rule
def resampling(X, *, s, seed=None, rng=None, backend=None, nan_policy="outlier"):
    """Resampling with s-replacement (Peng, Wu, Ling; seed 003, Algorithm 1): n output rows,
    each the mean of s draws; every input row is drawn exactly s times in all.

    Draws come from Philox on (seed, batch item), the same on every backend; give a rule used
    round after round ``rng=``, as a fixed ``seed=`` draws alike every round. Cost: s reads of X.
    """
    A = adapt(X)
    B, n, _ = A.data.shape
    s = _checks.integer(s, "s", low=1, high=n, high_text=f"n = {n}")
    seed = _checks.seed(seed, rng)
    _dispatch.guard_nonfinite(A, nan_policy)
    idx = np.stack([resampling_draws(seed, b, n, s) for b in range(B)])
    return _mix(A, idx, backend, nan_policy)


@rule
def clip(X, *, tau, backend=None, nan_policy="outlier"):
    """Static norm clipping: ``x_i <- x_i min(1, tau / ||x_i||)``. With nan_policy="outlier" a
    row with a NaN or Inf entry passes through unchanged, for the aggregator to reject.
    With "propagate" such a row becomes NaN. Cost: one read of X and one write of the result.
    """
    A = adapt(X)
    tau = _checks.real(tau, "tau", positive=True)
    _dispatch.guard_nonfinite(A, nan_policy)
    out, norms = _dispatch.kernel("clip", A.device, backend)(A.data, tau=tau)
    if A.data.dtype == np.float64:
        _clip_again(A.data, out, norms, tau)
    return _dispatch.finish(A, out, nan_policy, "rows")


def _clip_again(X, out, norms, tau):
    """The kernels' sum of squares overflows for a float64 row with entries past about 1e154
    (norm +Inf: factor 0, the row zeroed) and loses digits to subnormal squares where its
    entries are all below about 1e-140 (at worst norm 0: factor min(1, tau), the row shrunk
    although it is shorter than tau); and the factor tau / ||x|| itself goes subnormal or 0
    where tau is that much shorter than the row. Float32 rows, squared and scaled in float64,
    meet none of this. Those rows, seldom any, are clipped again through their largest entry
    m: x <- (x / m) (tau / s), s = ||x / m||, where m s > tau. On a GPU, finding them costs one
    synchronization."""
    xp = xp_of(X)
    subnormal_factor = tau / np.finfo(np.float64).tiny  # norms past this have factors below tiny
    suspect = xp.nonzero((norms == xp.inf) | (norms < SUM_FLOOR ** 0.5) | (norms > subnormal_factor))
    if not suspect[0].size:
        return
    rows = X[suspect]
    largest, rest = norms_by_largest(rows, 2)
    with np.errstate(divide="ignore"):  # zero rows, left as they are
        clipped = xp.isfinite(rows).all(axis=1) & (largest * rest > tau)
        out[suspect] = xp.where(clipped[:, None], rows / largest[:, None] * (tau / rest)[:, None], rows)
