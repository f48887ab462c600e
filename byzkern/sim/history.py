"""Running a method on a simulation and keeping what happened, step by step.

A :class:`History` is a list of rows ``{"step", "loss", "grad_norm", "accuracy", "distance",
"bytes_per_worker", "aggregation_seconds", "seconds"}`` (metrics NaN between evaluations) plus free-form ``meta``;
it saves as JSON and CSV and plots to PNG with matplotlib.
"""
from __future__ import annotations

import csv
import json
import math
import time

import numpy as np

from .. import _checks

COLUMNS = ("step", "loss", "grad_norm", "accuracy", "distance", "bytes_per_worker", "aggregation_seconds", "seconds")
METRICS = ("loss", "grad_norm", "accuracy")


class History:
    """Per-step records of one run; ``column(name)`` gives a NumPy array of one field."""

    def __init__(self, rows=None, meta=None):
        self.rows = list(rows or [])
        self.meta = dict(meta or {})

    def append(self, **row):
        self.rows.append({c: row.get(c, math.nan) for c in COLUMNS})

    def column(self, name):
        return np.array([r[name] for r in self.rows], dtype=np.float64)

    def evaluated(self, name):
        """(steps, values) where metric ``name`` was evaluated."""
        values = self.column(name)
        keep = ~np.isnan(values)
        return self.column("step")[keep], values[keep]

    def to_json(self, path):
        """Strict JSON (RFC 8259), which has no NaN or Inf: a NaN (a metric not evaluated at
        that step) is written as null, +-Inf (a run that diverged) as "inf" / "-inf"; NumPy
        numbers and arrays as numbers and lists. The file is written once the text is whole."""
        text = json.dumps(_strict({"meta": self.meta, "rows": self.rows}), indent=1, allow_nan=False)
        with open(path, "w") as fh:
            fh.write(text)

    @classmethod
    def from_json(cls, path):
        with open(path) as fh:
            data = json.load(fh)
        rows = [{c: math.nan if v is None else float(v) if isinstance(v, str) else v for c, v in row.items()}
                for row in data["rows"]]
        return cls(rows, data["meta"])

    def to_csv(self, path):
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)


def _strict(value):
    """value with NumPy numbers and arrays as Python ones, NaN as None and +-Inf as "inf" and
    "-inf", for strict JSON."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_strict(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def plot(panels, path, *, metric="loss", logy=False, transform=None, ylabel=None):
    """A PNG of ``metric`` against step, one panel per entry of ``panels`` ({panel title:
    {curve label: History}}), up to 5 panels a row; ``transform`` maps the values first (e.g.
    ``lambda v: v - f_star`` for an optimality gap)."""
    if not panels:
        raise ValueError("plot needs at least one panel")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (title, curves) in zip(axes.ravel(), panels.items()):
        for label, history in curves.items():
            steps, values = history.evaluated(metric)
            ax.plot(steps, values if transform is None else transform(values), label=label)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel(ylabel or metric, fontsize=7)
        if logy:
            ax.set_yscale("log")
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(method, sim, steps, *, eval_every=1, metrics=METRICS, x0=None, x_star=None, progress=None, meta=None):
    """Run ``method`` for ``steps`` rounds on ``sim`` and return its :class:`History`.

    Row 0 is the start; metrics ("loss": honest objective, "grad_norm": norm of its gradient,
    "accuracy": test accuracy; "distance": ||x - x_star|| when ``x_star`` is given) are
    evaluated at the method's current iterate every ``eval_every`` steps and at the last.
    ``progress``: a tqdm-like object to ``update(1)``. Bytes and aggregation time are counted
    from this run's start. ``method.start`` resets the method's state, but not that of its rules
    and the simulation's attack: a ``Mimic`` or a rule drawing from an ``rng=`` goes on where an
    earlier run left it, so give each run fresh ones to repeat it.
    """
    steps = _checks.integer(steps, "steps", low=0)
    eval_every = _checks.integer(eval_every, "eval_every", low=1)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = set(metrics) - {*METRICS, "distance"}  # "distance" comes with x_star
    if unknown:
        raise ValueError(f"metrics must be among {METRICS}; got {sorted(unknown)}")
    if x0 is None:
        x0 = sim.problem.init()
    elif np.shape(x0) != (sim.problem.dim,):
        raise ValueError(f"x0 must have the problem's shape {(sim.problem.dim,)}; got {np.shape(x0)}")
    history = History(meta={"method": repr(method), "steps": steps, **(meta or {})})
    # a Simulation's counters run on over earlier runs on it: this run's are counted from here
    bytes_before, aggregation_before = sim.bytes_sent, sim.aggregation_seconds
    start = time.perf_counter()
    method.start(sim, x0)

    def record(step):
        row = {"step": step, "bytes_per_worker": sim.bytes_sent - bytes_before,
               "aggregation_seconds": sim.aggregation_seconds - aggregation_before,
               "seconds": time.perf_counter() - start}
        if step % eval_every == 0 or step == steps:
            x = method.x
            if "loss" in metrics:
                row["loss"] = sim.honest_loss(x)
            if "grad_norm" in metrics:
                row["grad_norm"] = float(np.linalg.norm(sim.honest_gradient(x)))
            if "accuracy" in metrics:
                row["accuracy"] = sim.problem.accuracy(x)
            if x_star is not None:
                row["distance"] = float(np.linalg.norm(x - x_star))
        history.append(**row)

    record(0)
    for step in range(1, steps + 1):
        method.step(sim)
        record(step)
        if progress is not None:
            progress.update(1)
    return history
