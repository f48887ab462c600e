"""Splitting a data set's sample indices among workers. Each function returns a list of index
arrays, one per worker (sorted within a worker)."""
from __future__ import annotations

import numpy as np


def sequential(samples, workers):
    """Consecutive, nearly equal blocks in data order (seed 000's split)."""
    return [np.asarray(block) for block in np.array_split(np.arange(samples), workers)]


def iid(samples, workers, seed=0):
    """A uniformly random permutation cut into nearly equal blocks."""
    perm = np.random.default_rng(seed).permutation(samples)
    return [np.sort(block) for block in np.array_split(perm, workers)]


def dirichlet(labels, workers, alpha, seed=0):
    """Heterogeneity by class (seed 004, Appendix 14.4): for each class, shares p ~ Dir(alpha 1_n)
    over the workers and that class's samples cut in proportion to p. Small alpha: most workers
    hold few classes. A worker may end up with no sample; callers that cannot use an empty shard
    should check (``min(map(len, shards))``)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    shards = [[] for _ in range(workers)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        share = rng.dirichlet(np.full(workers, float(alpha)))
        cuts = (np.cumsum(share)[:-1] * len(members)).astype(np.int64)
        for worker, block in enumerate(np.split(members, cuts)):
            shards[worker].append(block)
    return [np.sort(np.concatenate(s)) for s in shards]


def by_class(labels, workers, per_class):
    """Seed 003's non-i.i.d. split: every ``per_class`` consecutive workers share the samples of
    one class (workers 0..per_class-1 get class 0, ...), each class cut into nearly equal parts.
    Needs ``workers == per_class * number of classes``."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if workers != per_class * len(classes):
        raise ValueError(f"by_class needs workers = per_class * classes = {per_class * len(classes)}; got {workers}")
    return [np.asarray(block) for c in classes
            for block in np.array_split(np.flatnonzero(labels == c), per_class)]
