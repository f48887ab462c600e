"""Robust compressed gradient descent with norm thresholding, and its error-feedback variant
(Ghosh, Maity, Kadhe, Mazumdar, Ramchandran; seed 001, Algorithms 1 and 2)."""
from __future__ import annotations

import numpy as np

import byzkern as bk

from .base import Method, dense_nbytes


def _payload(message):
    return message.nbytes_per_row if isinstance(message, bk.Compressed) else dense_nbytes(message)


def _dense(message):
    return message.decompress() if isinstance(message, bk.Compressed) else message


class RobustCompressedGD(Method):
    """Seed 001, Algorithm 1: worker i computes its full local gradient g_i and sends
    C(g_i) = {Q(g_i), ||g_i||_q} (Option I) or Q(g_i) (Option II, the norm is computed at the
    server); the server drops the ``drop`` = beta m workers of largest norm (of g_i for Option I,
    of Q(g_i) for Option II) and steps x <- x - lr mean_{kept} Q(g_i) (``norm_filter``).
    ``drop=0`` is vanilla compressed GD (plain mean). The projection onto W is skipped, as in
    the paper's experiments.

    Byzantine workers: Option I lets them choose the compressor's input but not skip the
    compressor, so the attack replaces their gradient before compression (the paper's
    experiment: gradient + N(0, 10 I)); Option II lets them send anything, so the attack
    replaces their compressed vector. ``compressor``: a rule (``scaled_sign()``, ``topk(k=..)``,
    ``qsgd``) or None (no compression). Per round: one full pass, one compression.
    """

    last_iterate = True

    def __init__(self, *, lr, drop, compressor=None, option="I", q=2, seed=0):
        if option not in ("I", "II"):
            raise ValueError(f"option must be 'I' or 'II'; got {option!r}")
        super().__init__(lr=lr, seed=seed)
        self.drop, self.compressor, self.option, self.q = drop, compressor, option, q

    def step(self, sim):
        G = sim.gradients(self.x)
        if self.option == "I":
            G = sim.corrupt(G)
            norms = np.linalg.norm(G, ord=self.q, axis=1)
        message = G if self.compressor is None else self.compressor(G)
        sim.send(_payload(message) + (G.itemsize if self.option == "I" else 0))
        rows = _dense(message)
        if self.option == "I":
            R = sim.aggregate(bk.norm_filter(f=self.drop, norms=norms), rows)
        else:
            R = sim.aggregate(bk.norm_filter(f=self.drop, q=self.q), sim.corrupt(rows))
        self.advance(self.x - self.step_size() * R)


class ErrorFeedbackGD(Method):
    """Seed 001, Algorithm 2: worker i keeps an error e_i (0 at start), computes
    p_i = lr g_i + e_i, sends Q(p_i) and keeps e_i <- p_i - Q(p_i) (``byzkern.ErrorFeedback``);
    the server drops the ``drop`` workers whose Q(p_i) has the largest norm and steps
    x <- x - mean_{kept} Q(p_i), with no second lr (the box writes one, its proof does not;
    SPEC §4). The attack replaces the Byzantine workers' gradients before the protocol, as in
    the paper's experiments (gradient + N(0, 10 I)). Per round: one full pass, one compression.
    """

    last_iterate = True

    def __init__(self, *, lr, drop, compressor, seed=0):
        super().__init__(lr=lr, seed=seed)
        self.drop, self.compressor = drop, compressor

    def start(self, sim, x0):
        super().start(sim, x0)
        self.feedback = bk.ErrorFeedback(self.compressor)

    def step(self, sim):
        message = self.feedback(sim.corrupt(sim.gradients(self.x)), lr=self.step_size())
        sim.send(message.nbytes_per_row)
        R = sim.aggregate(bk.norm_filter(f=self.drop), message.decompress())
        self.advance(self.x - R)
