"""Byrd-SAGA (Peng, Wu, Ling; seed 003, Algorithm 2)."""
from __future__ import annotations

import numpy as np

import byzkern as bk

from .. import _checks
from ..sim.simulation import Batch
from .base import Method


class ByrdSAGA(Method):
    """Byrd-SAGA (seed 003, Algorithm 2), minibatch form: worker i keeps a table of the
    gradients of its J_i samples (filled at x^0, 003 line 150) and their mean. Each round it
    draws a batch B_i of ``batch_size`` samples and sends the SAGA-corrected gradient
    g_i = mean_{j in B_i} (grad_j(x) - table_j) + mean(table), computed BEFORE the table rows of
    B_i are overwritten with grad_j(x) (lines 153-156); the server steps
    x <- x - lr aggregator(g_1..g_n). The box samples one index; 003's experiments use batches
    of 32, and this minibatch SAGA is the batch-of-one box when ``batch_size=1``.

    ``aggregator`` defaults to the geometric median; seed 003's proposal (RS-Byrd-SAGA) puts
    resampling first: ``Pipeline(resampling(s=2, rng=...), geomed())``. Memory: the tables,
    (n, max J_i, d) in the problem's dtype. Per round: one minibatch pass of per-sample
    gradients, one aggregation.
    """

    def __init__(self, *, lr, aggregator=None, batch_size=32, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.aggregator = bk.geomed() if aggregator is None else aggregator
        self.batch_size = _checks.integer(batch_size, "batch_size", low=1)

    def start(self, sim, x0):
        super().start(sim, x0)
        everything = sim.all_samples()
        self.table = np.zeros((sim.n, everything.idx.shape[1], self.x.size), dtype=self.x.dtype)
        for cols in np.array_split(np.arange(everything.idx.shape[1]), -(-everything.idx.shape[1] // 64)):
            part = Batch(everything.positions[:, cols], everything.idx[:, cols], everything.labels[:, cols])
            self.table[:, cols] = sim.sample_gradients(self.x, part)
        self.table[everything.positions >= sim.sizes[:, None]] = 0  # padding, not samples
        self.table_mean = self.table.sum(axis=1) / sim.sizes[:, None]

    def step(self, sim):
        batch = sim.sample(self.batch_size)
        fresh = sim.sample_gradients(self.x, batch)
        rows = np.arange(sim.n)[:, None]
        stale = self.table[rows, batch.positions]
        G = (fresh - stale).mean(axis=1) + self.table_mean
        for j in range(batch.positions.shape[1]):  # one column at a time: a batch may repeat a sample
            p = batch.positions[:, j]
            self.table_mean += (fresh[:, j] - self.table[np.arange(sim.n), p]) / sim.sizes[:, None]
            self.table[np.arange(sim.n), p] = fresh[:, j]
        R = sim.aggregate(self.aggregator, sim.corrupt(G))
        sim.send(G.shape[1] * G.itemsize)
        self.advance(self.x - self.step_size() * R)
