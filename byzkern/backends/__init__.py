"""Kernel backends. Every backend module exports the same kernels with the same signatures.

Inputs are canonical (see ``byzkern._arrays``): ``X`` is a C-contiguous NumPy array (CuPy for
``cuda``) of shape ``(B, n, d)`` in float32 or float64, already validated. A kernel never
modifies its inputs and returns new arrays in ``X.dtype`` unless stated. Non-finite entries
follow nan_policy="outlier" (SPEC §8); 'raise' and 'propagate' are handled around the kernel.

Aggregation and pre-aggregation kernels:

``mean(X) -> (B, d)``
``cwmed(X) -> (B, d)``                 NaN orders above +Inf; even n: mean of the middle two
``cwtm(X, f) -> (B, d)``               drop f lowest and f highest per coordinate
``meamed(X, f) -> (B, d)``             mean of the n-f values closest to the median, ties in
                                       distance broken toward the smaller value
``pairwise_sqdist(X) -> (B, n, n)``    float64, exact-difference accuracy, zero diagonal; a row
                                       with a non-finite entry is at +Inf from every other row
``mix_rows(X, idx) -> (B, m, d)``      idx int64 (B, m, k): out[b, j] = mean of X[b, idx[b, j, t]]
                                       over the t with idx >= 0 (every j has at least one)
``row_norms(X, q) -> (B, n)``          float64 q-norms (q >= 1 or inf); non-finite rows give +Inf
``clip(X, tau) -> (out (B, n, d), norms (B, n))``   rows scaled to l2 norm <= tau; non-finite rows
                                       unchanged; norms: the float64 l2 norms the factors came
                                       from, +Inf for a non-finite row
``geomed(X, weights, init, maxiter, eps, nu) -> (z (B, d), iters (B,) int64, obj (B,) float64)``
                                       smoothed Weiszfeld; weights float64 (B, n); the kernel
                                       gives rows with a non-finite entry weight zero, and rows
                                       of zero weight never enter a sum; init is "mean" (the
                                       weighted mean), "zero" or a (B, d) array
``cclip(X, tau, iters, v0) -> (v (B, d), overflowed (B,) bool)``   centered clipping from v0
                                       (B, d), None: the cwmed; non-finite rows add 0;
                                       overflowed: whether a finite row's distance to an
                                       iterate overflowed float64 (its factor taken as 0)

Compressor and attack kernels (wire formats in ``byzkern.compressors``; every bit of their
output is fixed by ``backends/reference.py``, which the fast backends reproduce exactly, except
Mimic's two float64 sums; ``gaussian``'s log, sin and cos are fdlibm's in every backend).
Here ``X`` is (n, d); codes are packed per row as in ``reference.pack_codes``:

``topk(X, k) -> (values (n, k), indices (n, k) int64)``   indices ascending
``randk(X, k, seed) -> (values (n, k), indices (n, k) int64)``
``qsgd(X, levels, seed) -> (norms (n,), codes (n, ceil(d w / 8)) uint8)``
``natural(X, seed) -> codes uint8``    ``sign(X) -> codes uint8``
``scaled_sign(X) -> (scales (n,), codes uint8)``
``scatter_rows(values, indices int64, d) -> (n, d)``
``qsgd_decompress(norms, codes, levels, d)``, ``natural_decompress(codes, d, dtype)``,
``sign_decompress(codes, scales, d) -> (n, d)``
``indices_ok(indices, d) -> bool``, ``qsgd_levels_ok(codes, levels, d) -> bool``
``mean_std(X, ddof) -> (mean (B, d), std (B, d))``   X (B, h, d)
``centred_dots(X, mu, z) -> (B, h)``  float64 <x_i - mu, z>, X (B, h, d), mu and z float64 (B, d)
``power_step(X, mu, dots) -> (u (B, d), u_dots (B, h))``   float64 u = sum_i dots_i (x_i - mu) and
<x_i - mu, u>, dots float64 (B, h) (Mimic's learning step; both sum in each backend's own order)
``gaussian(own, std, seed) -> own + std * N(0, 1)``  own (B, f, d); Philox row b * f + j
``attack_candidates(H, mu, direction, etas, f) -> (B, E, h + f, d)``   H (B, h, d), mu and direction
(B, d), etas (E,) float64: candidate e is H then f rows of dtype(mu + etas[e] * direction) in float64
``candidate_deviations(H, mu, direction, etas, f, rule, trim) -> (B, E)``   float64: the sum over
the columns of (rule - mu)^2, for the rule ("cwmed", "cwtm", "meamed"; trim: its f) of each
candidate, the rule reading the values the backend's own kernel reads on the built batch (cwtm and
meamed may add them in another order; reference and cuda build it:
``deviations_of_built_candidates``; the cpu and numba kernels never do)

Each module may define ``unavailable_reason() -> str | None`` and ``details() -> dict`` for
``byzkern.info()``. A backend that lacks a kernel simply does not define it: automatic
selection then falls through to the next backend for the device (cpu -> numba -> reference).
"""

import functools

#: every kernel name a backend may implement (byzkern.info() lists which ones each has)
KERNEL_NAMES = ("mean", "cwmed", "cwtm", "meamed", "pairwise_sqdist", "mix_rows", "row_norms",
                "clip", "geomed", "cclip")
KERNEL_NAMES += ("topk", "randk", "qsgd", "natural", "sign", "scaled_sign", "scatter_rows",
                 "qsgd_decompress", "natural_decompress", "sign_decompress", "indices_ok",
                 "qsgd_levels_ok", "mean_std", "centred_dots", "power_step", "gaussian", "attack_candidates",
                 "candidate_deviations")

#: kernels that read their first argument whole, so its size says whether threads pay off
SIZED_BY_FIRST_ARGUMENT = tuple(name for name in KERNEL_NAMES if name not in (
    "scatter_rows", "qsgd_decompress", "natural_decompress", "sign_decompress", "indices_ok",
    "qsgd_levels_ok"))


def mean_tile(B, d, threads):
    """Columns per work item of ``mean``: up to ``_config.MEAN_TILE``, but no fewer work items
    than threads (whole cache lines each). Any split gives the same bits: each column is
    summed in row order."""
    from .. import _config

    share = -(-d // max(1, threads // B))
    return min(_config.MEAN_TILE, -(-share // 64) * 64)


def deviations_of_built_candidates(backend, H, mu, direction, etas, f, rule, trim):
    """``candidate_deviations`` by building the batch with the ``backend`` module's kernels."""
    B, h, d = H.shape
    batch = backend.attack_candidates(H, mu, direction, etas, f).reshape(B * etas.size, h + f, d)
    aggregates = backend.cwmed(batch) if rule == "cwmed" else getattr(backend, rule)(batch, trim)
    gap = aggregates.reshape(B, etas.size, d).astype("float64") - mu.astype("float64")[:, None, :]
    return (gap * gap).sum(axis=2)


def serial_when_small(namespace, get_threads, set_threads):
    """Make the kernels in ``namespace`` run on one thread when their input has fewer than
    ``_config.PARALLEL_MIN_ELEMENTS`` elements.

    Waking a thread team costs microseconds on an idle machine and up to a scheduler time slice
    (milliseconds) on a busy one: more than a small input takes, and iterative callers
    (Weiszfeld steps, simulations, fuzzers) make thousands of such calls.
    """
    from .. import _config

    def wrap(kernel):
        @functools.wraps(kernel)
        def call(X, *args, **kwargs):
            if X.size >= _config.PARALLEL_MIN_ELEMENTS:
                return kernel(X, *args, **kwargs)
            threads = get_threads()
            set_threads(1)
            try:
                return kernel(X, *args, **kwargs)
            finally:
                set_threads(threads)
        return call

    for name in SIZED_BY_FIRST_ARGUMENT:
        if name in namespace:
            namespace[name] = wrap(namespace[name])
