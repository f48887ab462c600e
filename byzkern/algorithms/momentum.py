"""Robust D-GD and D-SHB (Allouah et al., "Fixing by Mixing", seed 004, Algorithms 1 and 3),
and the robust SGD baselines of seeds 000 and 003 as D-SHB settings."""
from __future__ import annotations

import numpy as np

import byzkern as bk

from .. import _checks
from ..sim import generator
from .base import Method, dense_nbytes


class RobustDGD(Method):
    """Robust D-GD (seed 004, Algorithm 1): every worker sends its full local gradient g_i(x_t);
    R_t = F(g_1, ..., g_n); x_{t+1} = x_t - lr R_t. The output is x_{tau-1} for
    tau = argmin_t ||R_t|| (004 line 126): ``output`` is the iterate at which the smallest
    aggregate was computed. Per round: one full pass over the data, one aggregation."""

    def __init__(self, *, aggregator, lr, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.aggregator = aggregator

    def start(self, sim, x0):
        super().start(sim, x0)
        self._least = np.inf

    def step(self, sim):
        R = sim.aggregate(self.aggregator, sim.corrupt(sim.gradients(self.x)))
        sim.send(dense_nbytes(R[None]))
        norm = float(np.linalg.norm(R))
        if norm < self._least:
            self._least, self._output = norm, self.x.copy()
        self.x = self.x - self.step_size() * R
        self.t += 1


class RobustDSHB(Method):
    """Robust D-SHB (seed 004, Algorithm 3): worker i draws a minibatch, clips its gradient to
    norm ``clip`` (004 Table 3: 2 on MNIST; None: no clipping), updates its momentum
    m_i <- beta m_i + (1 - beta) g_i (m_i = 0 at start) and sends it; R = F(m_1, ..., m_n);
    x <- x - lr_t R. Byzantine rows are attacked momenta (004 Appendix 14.3).

    Defaults are 004's MNIST settings: beta = 0.9, batch 25, lr_t = 0.75 / (1 + floor(t/50))
    with 004's t counting the steps from 1 (``lr`` takes the 0-based step, so t + 1 here).
    beta = 0 is robust D-SGD, which gives the SGD baselines of seeds 000 and 003 (see ``sgd``,
    ``byrd_sgd``, ``rs_byrd_sgd``, ``br_sgdm``). Per round: one minibatch pass, one aggregation.
    """

    def __init__(self, *, aggregator, lr=lambda t: 0.75 / (1 + (t + 1) // 50), beta=0.9, batch_size=25, clip=None, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.aggregator, self.clip = aggregator, clip
        self.batch_size = _checks.integer(batch_size, "batch_size", low=1)
        self.beta = _checks.unit_interval(beta, "beta", open_high=True)

    def start(self, sim, x0):
        super().start(sim, x0)
        self.momentum = np.zeros((sim.n, self.x.size), dtype=self.x.dtype)

    def step(self, sim):
        G = sim.gradients(self.x, sim.sample(self.batch_size))
        if self.clip is not None:
            G = bk.clip(G, tau=self.clip)
        self.momentum = self.beta * self.momentum + (1 - self.beta) * G
        R = sim.aggregate(self.aggregator, sim.corrupt(self.momentum))
        sim.send(dense_nbytes(self.momentum))
        self.advance(self.x - self.step_size() * R)


def sgd(*, lr, batch_size=32, seed=0):
    """Distributed minibatch SGD with plain averaging (the non-robust baseline)."""
    return RobustDSHB(aggregator=bk.mean(), lr=lr, beta=0.0, batch_size=batch_size, seed=seed)


def byrd_sgd(*, lr, batch_size=32, maxiter=100, seed=0):
    """Byrd-SGD (seed 003's baseline): SGD whose server takes the geometric median."""
    return RobustDSHB(aggregator=bk.geomed(maxiter=maxiter), lr=lr, beta=0.0, batch_size=batch_size, seed=seed)


def rs_byrd_sgd(*, lr, s=2, batch_size=32, maxiter=100, seed=0):
    """RS-Byrd-SGD (seed 003): resampling with s-replacement, then the geometric median."""
    aggregator = bk.Pipeline(bk.resampling(s=s, rng=generator(seed, "resampling")), bk.geomed(maxiter=maxiter))
    return RobustDSHB(aggregator=aggregator, lr=lr, beta=0.0, batch_size=batch_size, seed=seed)


def br_sgdm(*, aggregator, lr, beta=0.9, batch_size=32, seed=0):
    """BR-SGDm (seed 000's baseline, worker momentum + robust aggregation, Karimireddy et al.
    2021): 000 gives no momentum convention, so this is D-SHB's m <- beta m + (1 - beta) g."""
    return RobustDSHB(aggregator=aggregator, lr=lr, beta=beta, batch_size=batch_size, seed=seed)
