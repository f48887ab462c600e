"""Byz-VR-MARINA (Gorbunov, Horvath, Richtarik, Gidel; seed 000, Algorithm 1)."""
from __future__ import annotations

from .. import _checks
from .base import Method, dense_nbytes

ATTACKED = ("estimates", "messages")


class ByzVRMarina(Method):
    """Byz-VR-MARINA (seed 000, Algorithm 1; details in papers/ALGORITHMS.md):

    x^{k+1} = x^k - lr g^k; one shared coin c_k ~ Be(p). If c_k = 1 every worker sends its full
    local gradient at x^{k+1}, dense, and g^{k+1} = ARAgg(those). Otherwise worker i draws a
    minibatch, sends Q(D_i) with D_i = grad on that batch at x^{k+1} minus at x^k (same
    samples), and g^{k+1} = ARAgg(g^k + Q(D_1), ..., g^k + Q(D_n)).

    What the attack replaces in the compressed rounds (``attacked``; the full rounds have one
    row per worker either way; with ``attack_own`` the attack also gets the true ones):
    "estimates" (000's experiments): the Byzantine estimates g^k + Q(D_i) that the aggregator
    gets; 000's Byzantine workers know the exact updates, its IPM sends -eps/G sum_i grad
    f_i(x), a gradient-scale row, and its bit flipping "an update with flipped sign" (000
    Section 3); a Byzantine worker sends its row less g^k, which it knows. "messages" (002's
    experiments, whose attacks act on what the workers send, EF21's c_i): the Byzantine Q(D_i),
    to which the server adds g^k.

    g^0: the box sets g^0 = grad f(x^0); a server under attack can only get it from the
    workers, so ``start`` runs a c = 1 round at x^0. ``compressor``: an unbiased compressor
    rule (``randk(k=..., rng=...)``, ``qsgd``...) or None (no compression). ``aggregator``: e.g.
    ``Pipeline(bucketing(s=2, rng=...), cwmed())``. The output is a uniformly random iterate.
    Per round: a full pass with probability p, otherwise two minibatch passes.
    """

    def __init__(self, *, aggregator, lr, p, compressor=None, batch_size=32, attacked="estimates", seed=0):
        if attacked not in ATTACKED:
            raise ValueError(f"attacked must be one of {ATTACKED}; got {attacked!r}")
        super().__init__(lr=lr, seed=seed)
        self.aggregator, self.compressor = aggregator, compressor
        self.batch_size = _checks.integer(batch_size, "batch_size", low=1)
        self.p = _checks.unit_interval(p, "p")
        self.attacked = attacked

    def _full_round(self, sim, x):
        G = sim.gradients(x)
        sim.send(dense_nbytes(G))
        return sim.aggregate(self.aggregator, sim.corrupt(G))

    def start(self, sim, x0):
        super().start(sim, x0)
        self.g = self._full_round(sim, self.x)

    def step(self, sim):
        x_next = self.x - self.step_size() * self.g
        if self._rng.random() < self.p:
            self.g = self._full_round(sim, x_next)
        else:
            batch = sim.sample(self.batch_size)
            D = sim.gradients(x_next, batch) - sim.gradients(self.x, batch)
            if self.compressor is None:
                sim.send(dense_nbytes(D))
            else:
                message = self.compressor(D)
                sim.send(message.nbytes_per_row)
                D = message.decompress()
            rows = sim.corrupt(self.g + D) if self.attacked == "estimates" else self.g + sim.corrupt(D)
            self.g = sim.aggregate(self.aggregator, rows)
        self.advance(x_next)
