"""Helpers shared by the reproductions."""
from __future__ import annotations

import numpy as np


def logistic_minimum(problem, samples, iters=30):
    """min_x of ``problem`` (a LogisticRegression) over ``samples``, by Newton's method: the
    exact f* that seed 000 approximates with 1000 epochs of GD. Returns (x*, f*)."""
    A, y = problem.features[samples], problem.labels[samples]
    x = np.zeros(problem.dim)
    for _ in range(iters):
        margin = y * (A @ x)
        s = 0.5 * (1 + np.tanh(-margin / 2))                 # sigmoid(-margin)
        g = A.T @ (-y * s) / len(y) + 2 * problem.lam * x
        hessian = (A * (s * (1 - s))[:, None]).T @ A / len(y) + 2 * problem.lam * np.eye(problem.dim)
        x = x - np.linalg.solve(hessian, g)
        if np.linalg.norm(g) < 1e-13:
            break
    return x, problem.loss(x, samples)


def tail_mean(history, metric, fraction=0.1, transform=None):
    """Mean of the last ``fraction`` of a run's evaluations of ``metric`` (at least one):
    the level a run settles at, less noisy than its last point."""
    _, values = history.evaluated(metric)
    values = values if transform is None else transform(values)
    k = max(1, int(round(len(values) * fraction)))
    return float(np.mean(values[-k:]))


def fmt(value):
    return f"{value:.3g}"
