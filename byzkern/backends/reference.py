"""Reference backend: plain NumPy written to be obviously right. The tests' oracle, never fast.

Everything is computed in float64 and rounded once to the input dtype at the end.
Kernel signatures are listed in ``byzkern/backends/__init__.py``.
"""
from __future__ import annotations

import numpy as np

F64 = np.float64


def mean(X):
    return X.astype(F64).mean(axis=1).astype(X.dtype)


def _middle(sorted_cols):
    """Median of columns already sorted along axis 1: mean of the middle two for even n."""
    n = sorted_cols.shape[1]
    lo, hi = sorted_cols[:, (n - 1) // 2], sorted_cols[:, n // 2]
    return 0.5 * lo + 0.5 * hi  # halves first: no overflow for huge float64 values


def cwmed(X):
    # np.sort puts NaN after +Inf: exactly the 'outlier' order of SPEC §8.
    return _middle(np.sort(X.astype(F64), axis=1)).astype(X.dtype)


def cwtm(X, f):
    n = X.shape[1]
    return np.sort(X.astype(F64), axis=1)[:, f:n - f].mean(axis=1).astype(X.dtype)


def meamed(X, f):
    n = X.shape[1]
    s = np.sort(X.astype(F64), axis=1)
    med = _middle(s)
    dist = np.abs(s - med[:, None, :])
    dist[np.isnan(dist)] = np.inf
    # s is sorted by value, so a stable sort by distance breaks ties toward the smaller value.
    order = np.argsort(dist, axis=1, kind="stable")[:, : n - f]
    return np.take_along_axis(s, order, axis=1).mean(axis=1).astype(X.dtype)


def _nonfinite_rows(X):
    return ~np.isfinite(X).all(axis=2)


def pairwise_sqdist(X):
    B, n, _ = X.shape
    X64 = X.astype(F64)
    D = np.empty((B, n, n))
    for b in range(B):
        for i in range(n):
            D[b, i] = ((X64[b] - X64[b, i]) ** 2).sum(axis=1)
    bad = _nonfinite_rows(X)
    D[bad[:, :, None] | bad[:, None, :]] = np.inf
    D[:, np.arange(n), np.arange(n)] = 0.0
    return D


def mix_rows(X, idx):
    B, m, _ = idx.shape
    out = np.empty((B, m, X.shape[2]))
    for b in range(B):
        for j in range(m):
            rows = idx[b, j][idx[b, j] >= 0]
            out[b, j] = X[b, rows].astype(F64).mean(axis=0)
    return out.astype(X.dtype)


def row_norms(X, q):
    norms = np.linalg.norm(X.astype(F64), ord=q, axis=2)
    norms[_nonfinite_rows(X)] = np.inf
    return norms


def clip(X, tau):
    X64 = X.astype(F64)
    norms = np.linalg.norm(X64, axis=2, keepdims=True)
    scale = np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))
    scale[_nonfinite_rows(X)] = 1.0
    return (X64 * scale).astype(X.dtype)


def geomed(X, weights, init, maxiter, eps, nu):
    B, n, d = X.shape
    z_out, iters, objective = np.empty((B, d)), np.zeros(B, np.int64), np.empty(B)
    weights = np.where(_nonfinite_rows(X), 0.0, weights)
    for b in range(B):
        keep = weights[b] > 0
        P, w = X[b, keep].astype(F64), weights[b, keep]
        if isinstance(init, str):
            z = w @ P / w.sum() if init == "mean" else np.zeros(d)
        else:
            z = init[b].astype(F64)
        dist = np.linalg.norm(P - z, axis=1)
        obj = w @ dist
        for t in range(1, maxiter + 1):
            beta = w / np.maximum(nu, dist)
            z = beta @ P / beta.sum()
            dist = np.linalg.norm(P - z, axis=1)
            previous, obj = obj, w @ dist
            iters[b] = t
            if abs(previous - obj) < eps * obj:  # RFA's relative stopping rule
                break
        z_out[b], objective[b] = z, obj
    return z_out.astype(X.dtype), iters, objective


def cclip(X, tau, iters, v0):
    B, n, d = X.shape
    out = np.empty((B, d))
    bad = _nonfinite_rows(X)
    for b in range(B):
        v = v0[b].astype(F64)
        P = X[b, ~bad[b]].astype(F64)
        for _ in range(iters):
            diff = P - v
            norms = np.linalg.norm(diff, axis=1)
            scale = np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))
            v = v + (scale[:, None] * diff).sum(axis=0) / n  # non-finite rows count as adding 0
        out[b] = v
    return out.astype(X.dtype)
