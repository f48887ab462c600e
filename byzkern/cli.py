"""The ``byzkern`` command: ``demo``, ``bench``, ``info``, ``repro``."""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

import byzkern as bk


def demo(args):
    """A real aggregation under attack: which rule stays near the honest mean?"""
    n, f, d = args.n, args.f, args.d
    if n <= 2 * f or n < f + 3:
        raise SystemExit(f"byzkern demo: needs n > 2f (cwtm, nnm, ...) and n >= f + 3 (Krum's default "
                         f"k = n - f - 2 >= 1); got n={n}, f={f}")
    rng = np.random.default_rng(args.seed)
    true_gradient = rng.standard_normal(d).astype(np.float32)
    honest = true_gradient + 0.5 * rng.standard_normal((n - f, d)).astype(np.float32)
    mu = honest.mean(axis=0)
    attacks = {  # byzkern.attacks, each crafted from the honest rows
        "a little is enough": bk.alie(honest, f=f),
        "inner product manip.": bk.ipm(honest, f=f, eps=0.1),
        "sign flip x100": bk.sign_flip(honest, f=f, scale=-100.0),
        "NaN rows": np.full((f, d), np.nan, dtype=np.float32),
    }
    rules = [bk.mean(), bk.cwmed(), bk.cwtm(f=f), bk.meamed(f=f), bk.geomed(maxiter=8, eps=0.0),
             bk.krum(f=f), bk.multikrum(f=f), bk.cclip(tau=1.0, iters=3), bk.norm_filter(f=f),
             bk.Pipeline(bk.nnm(f=f), bk.cwtm(f=f)),
             bk.Pipeline(bk.bucketing(s=2, seed=args.seed), bk.cwmed())]
    print(f"byzkern {bk.__version__} demo: n={n} workers, f={f} Byzantine, d={d}")
    print(f"honest mean norm {np.linalg.norm(mu):.3f}; table: ||rule(X) - honest mean||")
    width = max(len(repr(r)) for r in rules)
    print(f"{'rule':<{width}}  " + "  ".join(f"{name:>26}" for name in attacks))
    for r in rules:
        cells = []
        for byzantine in attacks.values():
            X = np.vstack([honest, byzantine])
            with np.errstate(invalid="ignore", over="ignore"):
                err = float(np.linalg.norm(np.asarray(r(X), dtype=np.float64) - mu))
            cells.append(f"{err:>26.4g}")
        print(f"{r!r:<{width}}  " + "  ".join(cells))
    print("first 5 coordinates under the ALIE attack:")
    X = np.vstack([honest, attacks["a little is enough"]])
    print(f"{'honest mean':<{width}}  {np.array2string(mu[:5], precision=3)}")
    for r in rules:
        print(f"{r!r:<{width}}  {np.array2string(np.asarray(r(X))[:5], precision=3)}")
    return 0


def bench(args):
    from . import bench as benchmarks

    shapes = args.shapes
    try:
        ops = benchmarks.select(args.ops) if args.ops else list(benchmarks.OPS)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.threads:
        benchmarks.set_threads(args.threads)
    backends = args.backend or [b for b in ("cpu", "numba") if bk.info()["backends"][b]["available"]]
    rows = benchmarks.run(shapes, ops, backends, repeat=args.repeat,
                          dtype=np.dtype(args.dtype), baselines=not args.no_baselines)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


def info(args):
    print(json.dumps(bk.info(), indent=2))
    return 0


def repro(args):
    from . import repro as reproductions

    size = "smoke" if args.smoke else "full" if args.full else "default"
    out = Path(args.out or f"repro-{args.paper}")
    try:  # before the run, which writes there at its end
        (out / "runs").mkdir(parents=True, exist_ok=True)
        if not (os.access(out, os.W_OK) and os.access(out / "runs", os.W_OK)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        raise SystemExit(f"byzkern repro: can't write to the folder {str(out)!r}: {exc.strerror}") from None
    reproductions.reproduce(args.paper, out, size=size, steps=args.steps, progress=not args.no_progress)
    return 0


def _whole(text, low, high=None):
    """An argparse type's reading: an integer in [low, high] (1e6 allowed; digits read exactly)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value != int(value) or value < low:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {low}; got {text}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be <= {high}; got {text}")
    return int(value)


def _positive(text):
    return _whole(text, 1)


def _seed(text):
    return _whole(text, 0, 2**64 - 1)


def _writable(text):
    """An argparse type: a file path that can be written, checked before a long run (the file
    itself is written after it)."""
    path = Path(text)
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"can't write {text!r}")
    return path


def _shape(text):
    """An argparse type: "NxD", both whole numbers; N >= 4, the fewest rows every op takes at
    the bench's f = max(1, N // 5) (Krum's k = N - f - 2 >= 1)."""
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"a shape is NxD, e.g. 20x1e6; got {text!r}")
    n, d = (_positive(part) for part in parts)
    if n < 4:
        raise argparse.ArgumentTypeError(f"n must be >= 4 (Krum with f = max(1, n // 5) needs it); got {text}")
    return n, d


def main(argv=None):
    parser = argparse.ArgumentParser(prog="byzkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="aggregate a round under attack with every rule")
    p.add_argument("--n", type=_positive, default=20)
    p.add_argument("--f", type=_positive, default=4)
    p.add_argument("--d", type=_positive, default=10_000)
    p.add_argument("--seed", type=_seed, default=0)
    p.set_defaults(run=demo)

    p = sub.add_parser("bench", help="time the kernels against the memory-read floor")
    p.add_argument("--shapes", nargs="+", type=_shape,
                   default=[(20, 10**6), (64, 10**6), (17, 10**7), (256, 10**5)],
                   help="n x d shapes, e.g. 20x1e6 (n >= 4)")
    p.add_argument("--ops", nargs="+",
                   help="ops or families (coordinatewise, distances, weiszfeld, rows, compress, "
                        "attacks) to time (default: all)")
    p.add_argument("--backend", nargs="+", choices=["cpu", "numba", "reference"],
                   help="backends to time (default: the available fast ones)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeat", type=_positive, default=5)
    p.add_argument("--threads", type=_positive,
                   help="threads of the cpu backend, Numba and torch (default: theirs; NumPy's BLAS, "
                        "in the Gram and Weiszfeld ways, keeps its own: set OPENBLAS_NUM_THREADS)")
    p.add_argument("--no-baselines", action="store_true", help="skip the NumPy/PyTorch ways and the bounds")
    p.add_argument("--json", type=_writable, help="also write the rows to this file")
    p.set_defaults(run=bench)

    p = sub.add_parser("info", help="which backends are available, and why not")
    p.set_defaults(run=info)

    p = sub.add_parser("repro", help="reproduce a seed paper's headline experiment (CPU-sized)")
    p.add_argument("paper", choices=["000", "001", "002", "003", "004"], help="seed paper id")
    p.add_argument("--out", help="output folder (default: repro-<paper>)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="a few steps of every run: checks the pipeline, not the claims")
    size.add_argument("--full", action="store_true", help="the paper's steps and seeds where the data allow (hours)")
    p.add_argument("--steps", type=_positive, help="steps per run (overrides the size's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=repro)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
