"""``byzkern repro <paper>``: CPU-sized reproductions of each seed paper's headline experiment.

Each paper module (``p000`` .. ``p004``) has ``reproduce(ctx)``: it builds the paper's runs
(same model, n, f, attacks, aggregators, compressors, step sizes), runs them on the simulation
harness, saves every history (JSON + CSV) and a PNG figure under ``ctx.out``, and checks the
paper's claims with stated criteria. Three sizes: ``--smoke`` (seconds: every code path, numbers
meaningless), the default (CPU-sized: fewer steps and seeds where needed, printed), ``--full``
(the paper's steps and seeds where the data allow).
"""
from __future__ import annotations

import importlib
import json
import re
import time
from pathlib import Path

from ..sim.history import run as run_method

PAPERS = {"000": "p000", "001": "p001", "002": "p002", "003": "p003", "004": "p004"}


class _NoBar:
    def update(self, k):
        pass

    def close(self):
        pass


class Context:
    """What a paper's ``reproduce`` gets: the size (``size`` is "smoke", "default" or "full"),
    the output folder, a progress bar over all steps, and where notes and claims go."""

    def __init__(self, paper, out, *, size="default", steps=None, progress=True):
        self.paper, self.size, self.steps_override, self.progress = paper, size, steps, progress
        self.out = Path(out)
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        self.notes, self.claims, self._bar = [], [], _NoBar()

    def pick(self, smoke, default, full):
        return {"smoke": smoke, "default": default, "full": full}[self.size]

    def steps(self, smoke, default, full):
        """The number of steps for this size, or ``--steps`` when given."""
        return self.steps_override or self.pick(smoke, default, full)

    def note(self, text):
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def start_bar(self, total, desc):
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", mininterval=1.0, leave=False)

    def run(self, name, method, sim, steps, *, meta=None, **options):
        """Run and save one history as runs/<name>.json and .csv (name made file-safe), with
        ``meta`` beside the run's name in its JSON."""
        history = run_method(method, sim, steps, progress=self._bar, meta={"run": name, **(meta or {})}, **options)
        stem = re.sub(r"[^A-Za-z0-9.=-]+", "_", name)
        history.to_json(self.out / "runs" / f"{stem}.json")
        history.to_csv(self.out / "runs" / f"{stem}.csv")
        return history

    def claim(self, paper_says, criterion, measured, passed):
        self.claims.append({"claim": paper_says, "criterion": criterion, "measured": measured,
                            "result": "PASS" if passed else "FAIL"})

    def finish(self, seconds):
        self._bar.close()
        report = {"paper": self.paper, "size": self.size, "seconds": round(seconds, 1),
                  "notes": self.notes, "claims": self.claims}
        with open(self.out / "report.json", "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"paper {self.paper} ({self.size} run, {seconds:.0f} s); outputs in {self.out}")
        for c in self.claims:
            print(f"[{c['result']}] {c['claim']}\n       criterion: {c['criterion']}\n       measured: {c['measured']}")
        return report


def reproduce(paper, out, *, size="default", steps=None, progress=True):
    """Run paper ``paper``'s reproduction; returns its report (also written to out/report.json)."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose from {sorted(PAPERS)}")
    module = importlib.import_module(f".{PAPERS[paper]}", __name__)
    ctx = Context(paper, out, size=size, steps=steps, progress=progress)
    print(f"byzkern repro {paper}: {module.__doc__.strip().splitlines()[0]}", flush=True)
    start = time.perf_counter()
    module.reproduce(ctx)
    return ctx.finish(time.perf_counter() - start)
