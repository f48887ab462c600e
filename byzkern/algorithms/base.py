"""What every method shares: the iterate, the step counter, the step-size schedule and the
output rule of its paper."""
from __future__ import annotations

import inspect

import numpy as np

from ..sim import generator


def dense_nbytes(rows):
    """Wire size of one dense row of ``rows`` (n, d)."""
    return rows.shape[1] * rows.itemsize


class Method:
    """A method of the papers, run round by round on a :class:`byzkern.sim.Simulation`.

    ``start(sim, x0)`` sets the state (and may run the paper's initial round); ``step(sim)`` runs
    one round; ``x`` is the current iterate and ``output`` the paper's output rule: by default a
    uniformly random iterate among x^0 .. x^{t-1} (reservoir sampling, O(d) memory), which
    seeds 000, 002 and 004 (D-SHB) prescribe; the last iterate where ``last_iterate`` is set
    (seed 001 measures w_T). ``lr`` is a number or a function of the step t (0-based). ``seed``
    drives the method's own randomness (coins, the output draw), from ``sim.generator(seed,
    "method")``: apart from a Simulation's stream under the same seed.
    """

    last_iterate = False

    def __init__(self, *, lr, seed=0):
        self.lr, self.seed = lr, seed

    def __repr__(self):
        """The options it was made with, those kept under their own names (not a run's state:
        a history's meta holds this)."""
        names = [p.name for p in inspect.signature(type(self).__init__).parameters.values()
                 if p.name != "self" and p.kind is not p.VAR_KEYWORD and hasattr(self, p.name)]
        return f"{type(self).__name__}({', '.join(f'{name}={getattr(self, name)!r}' for name in names)})"

    def start(self, sim, x0):
        self.x = np.array(x0, dtype=sim.problem.dtype)
        self.t = 0
        self._rng = generator(self.seed, "method")
        self._output = self.x.copy()

    def step_size(self):
        return self.lr(self.t) if callable(self.lr) else self.lr

    def advance(self, x_next):
        """Move to ``x_next``: the iterate being left enters the output draw, t += 1."""
        self.t += 1
        if self._rng.random() < 1.0 / self.t:
            self._output = self.x.copy()
        self.x = x_next

    @property
    def output(self):
        return self.x if self.last_iterate else self._output
