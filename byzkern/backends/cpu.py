"""The ``cpu`` backend: thin calls into the C++ extension ``byzkern._cpu`` (csrc/).

Compiled for a portable x86-64 baseline (no -march=native), OpenMP over column tiles or batch
items, GIL released inside every kernel.
"""
from __future__ import annotations

import json
from importlib import resources

from .. import _config

try:
    from .. import _cpu
except ImportError as exc:  # the build skipped the extension: say why
    try:
        why = json.loads(resources.files("byzkern").joinpath("_build_info.json").read_text())["reason"]
    except (OSError, KeyError, ValueError):
        why = ""
    raise ImportError(f"byzkern._cpu is not built ({why or exc})") from exc

def details():
    return {"threads": _cpu.max_threads()}


def set_threads(threads):
    """OpenMP threads for the following calls; 0 restores the default."""
    _cpu.set_threads(threads)


def mean(X):
    return _cpu.mean(X, _config.COL_TILE)
