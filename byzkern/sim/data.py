"""The data sets of the papers' experiments, read from the compressed copies in ``byzkern/data``.

Features are dense float64 (a9a: 32,561 x 123, w8a: 49,749 x 300; MNIST: 10,000 x 784 scaled to
[0, 1]); every loader caches its result for the process.
"""
from __future__ import annotations

import functools
import gzip
from importlib import resources

import numpy as np

LIBSVM_FEATURES = {"a9a": 123, "w8a": 300}


def _read(name):
    return gzip.decompress(resources.files("byzkern.data").joinpath(name).read_bytes())


@functools.lru_cache(maxsize=None)
def libsvm(name):
    """LIBSVM binary data set ``name`` ("a9a" or "w8a") -> (A (N, p) float64, y (N,) in {-1, +1})."""
    if name not in LIBSVM_FEATURES:
        raise ValueError(f"unknown LIBSVM data set {name!r}; choose from {sorted(LIBSVM_FEATURES)}")
    lines = _read(f"{name}.gz").decode().splitlines()
    A = np.zeros((len(lines), LIBSVM_FEATURES[name]))
    y = np.empty(len(lines))
    for row, line in enumerate(lines):
        label, *pairs = line.split()
        y[row] = float(label)
        for pair in pairs:
            index, value = pair.split(":")
            A[row, int(index) - 1] = float(value)  # LIBSVM indices are 1-based
    return A, y


def _idx(name, magic):
    raw = _read(name)
    if int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{name}: not an IDX file with magic {magic}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=None)
def mnist(train=8000, seed=0):
    """The MNIST 10k test split divided into train/test, stratified by class with a fixed seed
    (the 60k training split is not available; see the shared data README).

    Returns ``(images_train (train, 28, 28) float64 in [0, 1], labels_train int64,
    images_test, labels_test)``. Each class gives round(train * its share) images to the
    training part (the counts are then fixed up to sum to ``train``).
    """
    images = _idx("mnist-t10k-images-idx3-ubyte.gz", 2051).astype(np.float64) / 255.0
    labels = _idx("mnist-t10k-labels-idx1-ubyte.gz", 2049).astype(np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=10)
    quota = np.floor(counts * train / len(labels)).astype(np.int64)
    # largest remainders first, so the quotas sum to exactly `train`
    remainder = counts * train / len(labels) - quota
    quota[np.argsort(-remainder, kind="stable")[:train - quota.sum()]] += 1
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:quota[c]] for c in range(10)])
    chosen = rng.permutation(chosen)
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    return images[chosen], labels[chosen], images[rest], labels[rest]


def synthetic_least_squares(samples=4000, dim=1000, seed=0):
    """Seed 001's regression data: A (samples, dim) and w* with i.i.d. N(0, 1) entries, b = A w*.
    Returns (A, b, w*)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((samples, dim))
    w_star = rng.standard_normal(dim)
    return A, A @ w_star, w_star
