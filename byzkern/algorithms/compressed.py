"""The compressed robust baselines of seeds 000 and 002, which the seeds name but do not write
out; papers/ALGORITHMS.md defines them."""
from __future__ import annotations

import numpy as np

from .. import _checks
from .base import Method


class BRCSGD(Method):
    """BR-CSGD, "SGD with unbiased compression and robust aggregation" (002 line 213): worker i
    sends Q(g_i) of a minibatch gradient; x <- x - lr ARAgg(Q(g_1), ..., Q(g_n)). The attack
    replaces the Byzantine Q(g_i). Per round: one minibatch pass, one compression."""

    def __init__(self, *, aggregator, lr, compressor, batch_size=1, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.aggregator, self.batch_size = aggregator, _checks.integer(batch_size, "batch_size", low=1)
        self.compressor = _checks.function(compressor, "compressor", "a compressor rule such as randk(k=10, rng=...)")

    def step(self, sim):
        message = self.compressor(sim.gradients(self.x, sim.sample(self.batch_size)))
        sim.send(message.nbytes_per_row)
        R = sim.aggregate(self.aggregator, sim.corrupt(message.decompress()))
        self.advance(self.x - self.step_size() * R)


class BRDIANA(Method):
    """BR-DIANA, "BROADCAST without variance reduction" (002 line 217): worker i sends
    Q(g_i - h_i); the server forms g^_i = h_i + Q(g_i - h_i), steps x <- x - lr ARAgg(g^_1..g^_n),
    and both sides update h_i += beta Q(g_i - h_i) (h_i = 0 at start; beta = 0.01, 002 line 252).
    The attack replaces the Byzantine Q(g_i - h_i) (given, with ``attack_own``, the true ones);
    the server's h_i (``h``) follows what it received, each worker's own (``local_h``) what it
    computed, so a Byzantine worker's state is an honest one. Per round: one minibatch pass,
    one compression."""

    def __init__(self, *, aggregator, lr, compressor, beta=0.01, batch_size=1, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.aggregator, self.batch_size = aggregator, _checks.integer(batch_size, "batch_size", low=1)
        self.compressor = _checks.function(compressor, "compressor", "a compressor rule such as randk(k=10, rng=...)")
        self.beta = _checks.unit_interval(beta, "beta", open_low=True)

    def start(self, sim, x0):
        super().start(sim, x0)
        self.h = np.zeros((sim.n, self.x.size), dtype=self.x.dtype)
        self.local_h = self.h.copy()

    def step(self, sim):
        message = self.compressor(sim.gradients(self.x, sim.sample(self.batch_size)) - self.local_h)
        sim.send(message.nbytes_per_row)
        q = message.decompress()
        received = sim.corrupt(q)
        R = sim.aggregate(self.aggregator, self.h + received)
        self.h = self.h + self.beta * received
        self.local_h = self.local_h + self.beta * q
        self.advance(self.x - self.step_size() * R)
