"""Backend registry and selection. This module chooses a kernel; it never computes one.

Backends: ``reference`` (NumPy oracle), ``cpu`` (C++ extension), ``numba``, ``cuda`` (CuPy +
NVRTC). A backend is a module in ``byzkern.backends`` exporting kernels by name, all with the
same signatures (see ``byzkern/backends/__init__.py``). Selection order: ``backend=`` on the
call, then the innermost ``use_backend(...)`` context, then the fastest available backend for
the input's device that implements the kernel.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib

from . import _checks
from .backends import KERNEL_NAMES

BACKENDS = ("reference", "cpu", "numba", "cuda")
DEVICE_OF = {"reference": "cpu", "cpu": "cpu", "numba": "cpu", "cuda": "cuda"}
_PREFERENCE = {"cpu": ("cpu", "numba", "reference"), "cuda": ("cuda",)}
_active = contextvars.ContextVar("byzkern_backend", default=None)


@functools.lru_cache(maxsize=None)
def load(name):
    """(module, None) when backend ``name`` is usable, else (None, why not)."""
    try:
        module = importlib.import_module(f"byzkern.backends.{name}")
    except ImportError as exc:
        return None, str(exc)
    reason = module.unavailable_reason() if hasattr(module, "unavailable_reason") else None
    return (None, reason) if reason else (module, None)


def check_backend(name):
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None; got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name):
    """Run every byzkern call in this block on backend ``name`` (unless a call names one)."""
    token = _active.set(check_backend(name))
    try:
        yield
    finally:
        _active.reset(token)


def kernel(op, device, backend=None):
    """The kernel ``op`` of the chosen backend for data on ``device`` ('cpu' or 'cuda')."""
    name = check_backend(backend) or _active.get()
    if name is not None:
        if DEVICE_OF[name] != device:
            raise ValueError(
                f"backend {name!r} runs on {DEVICE_OF[name]} but the data is on {device}; "
                f"byzkern never copies between host and device"
            )
        module, reason = load(name)
        if module is None:
            raise RuntimeError(f"backend {name!r} is not available: {reason}")
        fn = getattr(module, op, None)
        if fn is None:
            raise NotImplementedError(f"backend {name!r} has no kernel {op!r} yet")
        return fn
    tried = []
    for name in _PREFERENCE[device]:
        module, reason = load(name)
        fn = getattr(module, op, None) if module is not None else None
        if fn is not None:
            return fn
        tried.append(f"{name}: {reason or 'no kernel ' + repr(op)}")
    raise RuntimeError(f"no backend can run {op!r} on {device} ({'; '.join(tried)})")


def guard_nonfinite(A, nan_policy):
    """Validate ``nan_policy`` and enforce 'raise' before the kernel runs."""
    _checks.nan_policy(nan_policy)
    if nan_policy == "raise" and not bool(A.xp.isfinite(A.data).all()):
        raise ValueError("X has NaN or Inf entries and nan_policy='raise'")


def propagate(A, out, scope):
    """nan_policy='propagate': make the output NaN where plain arithmetic would.

    scope 'columns': coordinate-wise rules; a coordinate with a NaN input gives NaN
    (as numpy.median does), +-Inf are ordinary ordered values.
    scope 'items': rules that use whole rows (distances, norms, weights); any non-finite entry
    in a batch item makes that item's output NaN.
    scope 'rows': row-wise maps (clip); a row with a non-finite entry becomes NaN.
    """
    xp = A.xp
    out = out.copy()
    if scope == "columns":
        out[xp.isnan(A.data).any(axis=1)] = xp.nan
    elif scope == "rows":
        out[~xp.isfinite(A.data).all(axis=2)] = xp.nan
    else:
        bad = ~xp.isfinite(A.data).reshape(A.data.shape[0], -1).all(axis=1)
        out[bad] = xp.nan
    return out


def finish(A, out, nan_policy, scope):
    """Apply nan_policy='propagate' (if asked) and give the result back in the user's form."""
    if nan_policy == "propagate" and scope is not None:
        out = propagate(A, out, scope)
    return A.restore(out)


def run(op, A, *, backend, nan_policy, scope, **params):
    """The common path: nan_policy guard, kernel, NaN propagation, back to the user's form."""
    guard_nonfinite(A, nan_policy)
    out = kernel(op, A.device, backend)(A.data, **params)
    return finish(A, out, nan_policy, scope)


def info():
    """Which backends exist, whether each is available, and why not."""
    rows = {}
    for name in BACKENDS:
        module, reason = load(name)
        entry = {"available": module is not None, "device": DEVICE_OF[name]}
        if module is None:
            entry["reason"] = reason
        else:
            entry["kernels"] = [k for k in KERNEL_NAMES if hasattr(module, k)]
            entry.update(getattr(module, "details", lambda: {})())
        rows[name] = entry
    return rows
