"""The simulated cluster: n workers in one process, the last f of them Byzantine.

Honest workers own data shards and compute gradients on them; Byzantine workers own shards too
(their "true" messages feed attacks such as bit flipping) and either run a data attack (label
flipping, sample duplication) or replace their rows by a model attack of ``byzkern.attacks``.
A method (``byzkern.algorithms``) drives a round through this object: it asks for the workers'
gradients, lets the Byzantine workers corrupt the rows they send, aggregates with its pipeline
(timed here) and reports the bytes each worker sent.
"""
from __future__ import annotations

import time
import zlib
from typing import NamedTuple

import numpy as np

from .. import _checks

DATA_ATTACKS = (None, "label_flip", "duplicate")


def generator(seed, purpose):
    """A NumPy generator for one ``purpose`` (a name: "method", "bucketing", "data order"...) of
    a run under ``seed``. A run gives one seed to its Simulation (``default_rng(seed)``), its
    method and their helpers; keyed by purpose, no two of them draw the same stream, as two
    ``default_rng(seed)`` would (a coin equal to a sampling draw of the same round)."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


class Batch(NamedTuple):
    """One round's samples: ``positions`` (n, b) within each worker's shard, ``idx`` (n, b) into
    the training set, ``labels`` (n, b) as the worker uses them (flipped for label flippers)."""

    positions: np.ndarray
    idx: np.ndarray
    labels: np.ndarray


class Simulation:
    """n = len(shards) workers; workers n-f..n-1 are Byzantine.

    ``attack``: a model attack called as ``attack(H, f=f)`` on the honest rows H (h, d), e.g.
    ``byzkern.alie()``, ``byzkern.optimized(attack="alie", aggregator=...)``, a ``Mimic``; with
    ``attack_own=True`` it also gets ``own=`` the Byzantine workers' true rows (bit flipping,
    seed 003's sign flipping, seed 001's additive noise). ``data_attack``: "label_flip" (the
    Byzantine workers' labels pass through ``problem.flip``) or "duplicate" (seed 003's sample
    duplication: every Byzantine worker uses honest worker ``duplicate_target``'s shard and
    batch, so it sends that worker's message). ``seed`` drives the minibatch sampling.
    """

    def __init__(self, problem, shards, *, f=0, attack=None, attack_own=False, data_attack=None,
                 duplicate_target=0, seed=0):
        if data_attack not in DATA_ATTACKS:
            raise ValueError(f"data_attack must be one of {DATA_ATTACKS}; got {data_attack!r}")
        f = _checks.integer(f, "f", low=0, high=len(shards) - 1, high_text=f"n - 1 = {len(shards) - 1}")
        shards = [np.asarray(s, dtype=np.int64) for s in shards]
        if data_attack == "duplicate":
            h = len(shards) - f
            duplicate_target = _checks.integer(duplicate_target, "duplicate_target", low=0, high=h - 1,
                                               high_text=f"h - 1 = {h - 1} (an honest worker)")
            shards[h:] = [shards[duplicate_target]] * f
        if min(map(len, shards)) == 0:
            raise ValueError("every worker needs at least one sample; a shard is empty")
        self.problem, self.shards, self.f = problem, shards, f
        self.n, self.h = len(shards), len(shards) - f
        self.attack, self.attack_own, self.data_attack = attack, attack_own, data_attack
        self.duplicate_target = duplicate_target
        self.rng = np.random.default_rng(seed)
        self.sizes = np.array([len(s) for s in shards])
        self.padded = np.zeros((self.n, self.sizes.max()), dtype=np.int64)
        for i, s in enumerate(shards):
            self.padded[i, :len(s)] = s
        self.honest_samples = np.unique(np.concatenate(shards[:self.h]))
        self.bytes_sent = 0          # per honest worker, all rounds so far
        self.aggregation_seconds = 0.0

    def _labels(self, idx):
        labels = self.problem.labels[idx]
        if self.data_attack == "label_flip" and self.f:
            labels[self.h:] = self.problem.flip(labels[self.h:])
        return labels

    def sample(self, batch_size):
        """Each worker draws ``batch_size`` of its samples, i.i.d. uniform (with replacement: the
        sampling SGD's analyses assume, and O(n b) per round however large the shards)."""
        positions = self.rng.integers(0, self.sizes[:, None], size=(self.n, batch_size))
        if self.data_attack == "duplicate" and self.f:
            positions[self.h:] = positions[self.duplicate_target]
        idx = np.take_along_axis(self.padded, positions, axis=1)
        return Batch(positions, idx, self._labels(idx))

    def all_samples(self):
        """Every worker's whole shard as a :class:`Batch` (n, max shard size); positions past a
        worker's shard size are padding (they point at sample ``padded[i, k] = 0``)."""
        positions = np.broadcast_to(np.arange(self.padded.shape[1]), self.padded.shape)
        return Batch(positions, self.padded, self._labels(self.padded))

    def gradients(self, x, batch=None):
        """(n, d) worker gradients at x: on ``batch`` (a :class:`Batch`), or without one the full
        local gradients (each worker's mean over its whole shard)."""
        if batch is not None:
            return self.problem.gradients(x, batch.idx, batch.labels)
        everything = self.all_samples()
        valid = everything.positions < self.sizes[:, None]
        return self.problem.gradients(x, everything.idx, everything.labels, valid / self.sizes[:, None])

    def sample_gradients(self, x, batch):
        """(n, b, d) per-sample gradients on ``batch``."""
        return self.problem.sample_gradients(x, batch.idx, batch.labels)

    def corrupt(self, rows):
        """The rows the server receives: the honest rows as they are, the last f replaced by the
        model attack (given the honest rows and, with ``attack_own``, the Byzantine workers'
        own rows). Without a model attack (none, or a data attack) the rows pass unchanged."""
        if self.attack is None or self.f == 0:
            return rows
        own = {"own": rows[self.h:]} if self.attack_own else {}
        out = rows.copy()
        out[self.h:] = self.attack(rows[:self.h], f=self.f, **own)
        return out

    def aggregate(self, rule, rows, **options):
        """``rule(rows, **options)``, timed into ``aggregation_seconds``."""
        start = time.perf_counter()
        out = rule(rows, **options)
        self.aggregation_seconds += time.perf_counter() - start
        return out

    def send(self, nbytes):
        """Account ``nbytes`` sent by each honest worker this round."""
        self.bytes_sent += int(nbytes)

    def honest_loss(self, x):
        """The honest objective: the mean loss over the honest workers' samples (+ l2 term)."""
        return self.problem.loss(x, self.honest_samples)

    def honest_gradient(self, x):
        """Its gradient (one pass over the honest samples)."""
        return self.problem.gradients(x, self.honest_samples[None, :])[0]
