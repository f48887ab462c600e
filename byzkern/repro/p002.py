"""Seed 002 (Byz-EF21-SGDM), Figure 1: a9a logistic regression, 20 workers of which 9 Byzantine.

Setup as in Section IV: data shuffled and split evenly over the 20 workers, lambda = 1/m_local;
batch 1; Byz-EF21-SGDM with Top-1 (eta = 0.01) against BR-CSGD, BR-DIANA (beta = 0.01) and
Byz-VR-MARINA (p = 1/m_local), all three with Rand-1; NNM + {RFA, CWMed, CWTM} (RFA: 8 smoothed
Weiszfeld steps from zero, nu = 0.1, as the seeds' code); attacks SF, IPM(0.1), LF, ALIE on
what the workers send (Section IV: EF21's c_i, which its attackers Top-1-compress, so MARINA's
Q(D_i)); step size tuned over {0.1, 0.01, 0.001}; metric f(x) - f* on the honest data. Claims:
Byz-EF21-SGDM and Byz-VR-MARINA are more robust than BR-CSGD and BR-DIANA, and Byz-EF21-SGDM is
faster than Byz-VR-MARINA.
"""
from __future__ import annotations

import itertools

import numpy as np

import byzkern as bk
from byzkern import algorithms as al
from byzkern import sim

from .common import fmt, logistic_minimum, tail_mean

WORKERS, BYZANTINE = 20, 9
ATTACKS = ("SF", "IPM", "LF", "ALIE")
AGGREGATORS = ("RFA", "CWMed", "CWTM")
METHODS = ("Byz-EF21-SGDM", "Byz-VR-MARINA", "BR-CSGD", "BR-DIANA")


def _attack(name):
    return {"SF": {"attack": bk.sign_flip(scale=-1), "attack_own": True}, "IPM": {"attack": bk.ipm(eps=0.1)},
            "LF": {"data_attack": "label_flip"}, "ALIE": {"attack": bk.alie()}}[name]


def _aggregator(name):
    rule = {"RFA": bk.geomed(maxiter=8, eps=0.0, init="zero", nu=0.1), "CWMed": bk.cwmed(), "CWTM": bk.cwtm(f=BYZANTINE)}[name]
    return bk.Pipeline(bk.nnm(f=BYZANTINE), rule)


def _method(name, aggregator, lr, m_local, seed):
    rand1 = bk.randk(k=1, rng=sim.generator(seed, "randk"))
    if name == "Byz-EF21-SGDM":
        return al.ByzEF21SGDM(aggregator=aggregator, lr=lr, compressor=bk.topk(k=1), eta=0.01, batch_size=1, seed=seed)
    if name == "Byz-VR-MARINA":
        return al.ByzVRMarina(aggregator=aggregator, lr=lr, p=1 / m_local, compressor=rand1, batch_size=1,
                              attacked="messages", seed=seed)
    if name == "BR-CSGD":
        return al.BRCSGD(aggregator=aggregator, lr=lr, compressor=rand1, batch_size=1, seed=seed)
    return al.BRDIANA(aggregator=aggregator, lr=lr, compressor=rand1, beta=0.01, batch_size=1, seed=seed)


def reproduce(ctx):
    A, y = sim.data.libsvm("a9a")
    m_local = len(y) // WORKERS
    steps = ctx.steps(20, 3000, 40 * m_local)
    lrs = ctx.pick([0.1], [0.1, 0.01, 0.001], [0.1, 0.01, 0.001])
    seed = 0
    eval_every = max(1, steps // ctx.pick(2, 40, 40))  # a smoke run evaluates twice
    ctx.note(f"{steps} steps per run = {steps / m_local:.1f} epochs of batch 1 (paper: 40 epochs); one seed; "
             f"step sizes {lrs}; f* by Newton's method on the honest workers' data")
    problem = sim.LogisticRegression(A, y, lam=1.0 / m_local)
    order = sim.generator(seed, "data order").permutation(len(y))
    shards = [order[s] for s in sim.partition.sequential(len(y), WORKERS)]
    _, f_star = logistic_minimum(problem, np.concatenate(shards[:WORKERS - BYZANTINE]))
    gap = lambda v: v - f_star  # noqa: E731
    ctx.start_bar(len(ATTACKS) * len(AGGREGATORS) * len(METHODS) * len(lrs) * steps, "002")
    final, area, histories = {}, {}, {}
    for attack, agg, method, lr in itertools.product(ATTACKS, AGGREGATORS, METHODS, lrs):
        s = sim.Simulation(problem, shards, f=BYZANTINE, seed=seed, **_attack(attack))
        h = ctx.run(f"{attack}_{agg}_{method}_lr{lr}", _method(method, _aggregator(agg), lr, m_local, seed), s, steps,
                    eval_every=eval_every, metrics=("loss",))
        key = (attack, agg, method, lr)
        histories[key] = h
        final[key] = tail_mean(h, "loss", transform=gap)
        values = gap(h.evaluated("loss")[1])
        area[key] = float(np.mean(np.log10(np.maximum(values, 1e-12)))) if np.isfinite(values).all() else np.inf
    cells = list(itertools.product(ATTACKS, AGGREGATORS))
    best = {(a, g, m): min(lrs, key=lambda lr: final[(a, g, m, lr)] if np.isfinite(final[(a, g, m, lr)]) else np.inf)
            for (a, g) in cells for m in METHODS}
    level = {k: final[(*k, lr)] for k, lr in best.items()}
    panels = {f"{a}, NNM+{g}": {f"{m} (lr {best[(a, g, m)]})": histories[(a, g, m, best[(a, g, m)])] for m in METHODS}
              for a, g in cells}
    sim.plot(panels, ctx.out / "figure1.png", metric="loss", logy=True, ylabel="f(x) - f*",
             transform=lambda v: np.maximum(v - f_star, 1e-12))
    robust = [c for c in cells if max(level[(*c, "Byz-EF21-SGDM")], level[(*c, "Byz-VR-MARINA")])
              < min(level[(*c, "BR-CSGD")], level[(*c, "BR-DIANA")])]
    table = "; ".join(f"{a}/{g}: " + ", ".join(f"{m} {fmt(level[(a, g, m)])}" for m in METHODS) for a, g in cells)
    ctx.claim("Figure 1: Byz-EF21-SGDM and Byz-VR-MARINA are more robust than BR-CSGD and BR-DIANA",
              "in at least 3/4 of the 12 attack x aggregator cells, both reach a smaller final gap (best step size each) "
              "than both BR-CSGD and BR-DIANA",
              f"{len(robust)}/12 cells. Final gaps: {table}", len(robust) >= 9)
    faster = [c for c in cells if area[(*c, "Byz-EF21-SGDM", best[(*c, "Byz-EF21-SGDM")])]
              < area[(*c, "Byz-VR-MARINA", best[(*c, "Byz-VR-MARINA")])]]
    ctx.claim("Figure 1: Byz-EF21-SGDM converges faster than Byz-VR-MARINA",
              "in at least 3/4 of the cells its mean log10 gap over the run (area under the log curve) is smaller",
              f"{len(faster)}/12 cells: " + ", ".join(f"{a}/{g}" for a, g in faster), len(faster) >= 9)
