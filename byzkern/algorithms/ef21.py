"""Byz-EF21-SGDM (Liu, Li, Yi, Johansson; seed 002, Algorithm 1)."""
from __future__ import annotations

from .. import _checks
from .base import Method, dense_nbytes


class ByzEF21SGDM(Method):
    """Byz-EF21-SGDM (seed 002, Algorithm 1; order of updates in papers/ALGORITHMS.md):

    start: v_i = g_i = a stochastic gradient at x^0, sent dense. Each round: g = F(g_1..g_n);
    x <- x - lr g; worker i: v_i <- (1 - eta) v_i + eta grad_i(x; fresh batch),
    c_i = C(v_i - g_i), sent; g_i += c_i on the worker and on the server. The server aggregates
    the g_i (not the c_i). The attack replaces the Byzantine c_i (given, with ``attack_own``,
    their true c_i: sign flipping sends -c_i, 002 Section IV), and its rows are compressed
    like any message before they are sent (002: the IPM and ALIE attackers "perform a Top_k
    operation"); the server adds what it receives to its g_i (``g``), while each worker's own
    g_i (``local_g``) follows its true c_i, so a Byzantine worker's state is an honest one.
    eta weights the NEW gradient (002's convention; a9a: eta = 0.01, batch 1).
    ``compressor``: a contractive rule (``topk(k=1)``) or None. The output is a uniformly
    random iterate. Per round: one minibatch pass, one compression, one aggregation.
    """

    def __init__(self, *, aggregator, lr, compressor, eta=0.01, batch_size=1, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.aggregator, self.compressor = aggregator, compressor
        self.batch_size = _checks.integer(batch_size, "batch_size", low=1)
        self.eta = _checks.unit_interval(eta, "eta", open_low=True)

    def start(self, sim, x0):
        super().start(sim, x0)
        self.v = sim.gradients(self.x, sim.sample(self.batch_size))
        sim.send(dense_nbytes(self.v))
        self.local_g = self.v.copy()
        self.g = sim.corrupt(self.v)

    def step(self, sim):
        self.advance(self.x - self.step_size() * sim.aggregate(self.aggregator, self.g))
        self.v = (1 - self.eta) * self.v + self.eta * sim.gradients(self.x, sim.sample(self.batch_size))
        if self.compressor is None:
            c = self.v - self.local_g
            sim.send(dense_nbytes(c))
        else:
            message = self.compressor(self.v - self.local_g)
            sim.send(message.nbytes_per_row)
            c = message.decompress()
        sent = sim.corrupt(c)
        if self.compressor is not None and sim.attack is not None and sim.f:  # a copy with the attack's rows
            sent[sim.h:] = self.compressor(sent[sim.h:]).decompress()
        self.local_g = self.local_g + c
        self.g = self.g + sent
