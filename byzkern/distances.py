"""The shared distance primitive and the neighbour selections built on it.

``pairwise_sqdist`` is the one kernel Krum, Multi-Krum and NNM read X with. The selections below
work on the small (B, n, n) matrix it returns, in NumPy or CuPy alike, so every backend picks the
same rows: ties always go to the lower index.
"""
from __future__ import annotations

from . import _dispatch
from ._arrays import adapt, xp_of
from .pipeline import rule


@rule
def pairwise_sqdist(X, *, backend=None, nan_policy="outlier"):
    """Squared Euclidean distances between the rows: ``D[i, j] = ||x_i - x_j||^2``.

    Numerics: float64 (for float32 input too), never the plain Gram trick, so rows that share a
    large common component (model weights ``w + delta`` with ``|w| >> |delta|``) keep their
    distances. The reference and numba backends accumulate ``(x_i - x_j)^2``; the cpu backend
    sums a Gram matrix of the rows centred on one of them and recomputes from exact differences
    every pair whose distance is not clearly larger than the centred norms (where the Gram sum
    would cancel). The result is symmetric, has a zero diagonal and is never negative.

    nan_policy="outlier": a row with a NaN or Inf entry is at +Inf from every other row.

    Shapes: (n, d) -> (n, n); (B, n, d) -> (B, n, n). Cost: one read of X, O(n^2 d) flops,
    O(n^2) extra memory (never an (n, n, d) array).
    """
    A = adapt(X)
    return _dispatch.run("pairwise_sqdist", A, backend=backend, nan_policy=nan_policy, scope="items")


def sqdist_matrix(A, backend, nan_policy):
    """Kernel-level pairwise_sqdist on an adapted input (float64, before restore)."""
    _dispatch.guard_nonfinite(A, nan_policy)
    return _dispatch.kernel("pairwise_sqdist", A.device, backend)(A.data)


#: a sum of |x|^q below this may have lost digits to subnormal terms (each off by up to 5e-324,
#: d of them); a norm taken from it is taken again through norms_by_largest
SUM_FLOOR = 1e-280


def norms_by_largest(rows, q):
    """(m, s) for float64 rows (k, d): m each row's largest |x| and s = (sum (|x| / m)^q)^(1/q),
    so that its q-norm is m s. Neither overflows nor underflows where the kernels' sum of |x|^q
    does (q large, or float64 entries past about 1e154 or below 1e-140 at q = 2); a zero row
    gives m = s = 0, a row with a NaN or Inf entry no meaningful pair."""
    xp = xp_of(rows)
    magnitudes = xp.abs(rows)
    largest = magnitudes.max(axis=1)
    scaled = (magnitudes / xp.where(largest > 0, largest, 1.0)[:, None]) ** q
    return largest, scaled.sum(axis=1) ** (1.0 / q)


def krum_scores(D, k):
    """score_i = sum of the k smallest D[i, j] over j != i (Blanchard et al. 2017), as the pair
    (how many of those k are infinite, the sum of the others), which ``least`` compares in that
    order. A row with a non-finite entry is infinitely far from all others; as plain sums every
    score would be infinite where k >= n - f with f such rows, and the lowest index, perhaps
    such a row, would win the tie, where by the pair a finite row, with fewer of them, wins."""
    xp = xp_of(D)
    n = D.shape[-1]
    others = D + xp.diag(xp.full(n, xp.inf))  # exclude i itself
    nearest = xp.sort(others, axis=-1)[..., :k]
    infinite = ~xp.isfinite(nearest)  # Inf from the kernels; NaN, were one to come, with them
    return infinite.sum(axis=-1), xp.where(infinite, 0.0, nearest).sum(axis=-1)


def least(scores, m):
    """Indices (B, m) of the m smallest scores; ties go to the lower index. ``scores`` is an array
    (B, n) or a tuple of them, compared by the first, its ties by the next, and so on."""
    keys = scores if isinstance(scores, tuple) else (scores,)
    xp = xp_of(keys[0])
    order = xp.argsort(keys[-1], axis=-1, kind="stable")
    for key in keys[-2::-1]:
        by_key = xp.argsort(xp.take_along_axis(key, order, axis=-1), axis=-1, kind="stable")
        order = xp.take_along_axis(order, by_key, axis=-1)
    return order[..., :m]


def nearest_including_self(D, m):
    """For each row i, the m rows nearest to it, i first, then by distance, ties by index."""
    xp = xp_of(D)
    n = D.shape[-1]
    keyed = D - xp.diag(xp.full(n, xp.inf))  # -inf on the diagonal puts i first
    return xp.argsort(keyed, axis=-1, kind="stable")[..., :m]
