"""Every argument check and its message. Nothing here touches a kernel.

Each check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) naming the argument and
the value, so a user sees what was wrong before any work is done.
"""
from __future__ import annotations

import math
import numbers

NAN_POLICIES = ("outlier", "raise", "propagate")
#: kernels take int64 counts; a larger count (an iteration count of 2**70) is refused here
INT64_MAX = 2**63 - 1


def _scalar(value):
    """A 0-d array (NumPy, CuPy or torch: what a reduction such as a median returns) as its
    Python number; anything else as it is."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, numbers.Number):
        return value.item()
    return value


def integer(value, name, *, low=None, high=INT64_MAX, high_text=None):
    """An int in [low, high] (high: int64's max unless given); bools and floats are refused."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}; got {name}={value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high_text or high}; got {name}={value}")
    return value


def _real_number(value, name):
    """value as a float, if it is a real number (bools are not)."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    return float(value)


def real(value, name, *, positive=False, nonnegative=False):
    """A finite real number."""
    value = _real_number(value, name)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {name}={value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {name}={value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {name}={value}")
    return value


def function(value, name, example):
    """A callable, such as ``example`` says (e.g. "a compressor rule such as topk(k=10)")."""
    if not callable(value):
        raise TypeError(f"{name} must be {example}; got {type(value).__name__} {value!r}")
    return value


def unit_interval(value, name, *, open_low=False, open_high=False):
    """A real number in [0, 1], without 0 or 1 where ``open_low`` or ``open_high`` says so."""
    value = real(value, name)
    if not (0 < value if open_low else 0 <= value) or not (value < 1 if open_high else value <= 1):
        interval = ("(" if open_low else "[") + "0, 1" + (")" if open_high else "]")
        raise ValueError(f"{name} must be in {interval}; got {name}={value}")
    return value


def norm_order(value, name):
    """The order of a norm: a real number >= 1, or +Inf."""
    value = _real_number(value, name)
    if not value >= 1:
        raise ValueError(f"{name} must be >= 1 (a norm) or inf; got {name}={value}")
    return value


def byzantine_count(f, n, *, rule):
    """f for a rule that tolerates f of n rows. ``rule`` is 'n > 2f', 'n > f' or 'n > 2f + 2'."""
    f = integer(f, "f", low=0)
    need = {"n > 2f": 2 * f + 1, "n > f": f + 1, "n > 2f + 2": 2 * f + 3, "n >= f": f}[rule]
    if n < need:
        raise ValueError(f"f={f} is too large for n={n} rows: this rule needs {rule}")
    return f


def nan_policy(value):
    if value not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}; got {value!r}")
    return value


def choice(value, name, options):
    if isinstance(value, str) and value in options:
        return value
    raise ValueError(f"{name} must be one of {tuple(options)}; got {value!r}")


def seed(value, rng):
    """Resolve ``seed=`` / ``rng=`` into one non-negative 64-bit integer seed."""
    import numpy as np

    if value is not None and rng is not None:
        raise ValueError("give seed= or rng=, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        return int(rng.integers(0, 2**63))
    if value is None:
        raise ValueError("this operation is random: give seed= (an int) or rng= (a numpy.random.Generator)")
    return integer(value, "seed", low=0, high=2**64 - 1)
