"""Rule objects and pipelines.

Every operation is a function whose first argument is the data and whose options are
keyword-only. Called without the data, it returns a :class:`Rule`: the function with its options
bound, callable on data later, with a readable repr. ``Pipeline`` composes rules.
"""
from __future__ import annotations

import functools
import inspect

from . import _checks
from ._arrays import is_array, quietly

_NO_DATA = object()


class Rule:
    """An operation with its options bound: ``cwtm(f=4)(X) == cwtm(X, f=4)``."""

    __slots__ = ("fn", "options")

    def __init__(self, fn, options):
        self.fn = fn
        self.options = dict(options)

    @property
    def name(self):
        return self.fn.__name__

    def __call__(self, X, **more):
        return self.fn(X, **{**self.options, **more})

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({args})"

    def __eq__(self, other):
        return isinstance(other, Rule) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def _key(self):
        return self.fn, tuple(sorted((name, _option_key(value)) for name, value in self.options.items()))


def _option_key(value):
    """An option as a hashable key: an array (init=, weights=) by identity, since its == is
    elementwise, but a 0-d one (a median's tau) by its number; a list or tuple by its items'
    keys."""
    if isinstance(value, (list, tuple)):
        return tuple(map(_option_key, value))
    if is_array(value):
        return value.item() if value.ndim == 0 else (_ARRAY, id(value))
    return value


_ARRAY = object()  # no option's key holds it, as a string could be an option


def accepts(op, option):
    """Whether calling ``op`` (a Rule, a Pipeline or any callable) takes the keyword ``option``.

    Integrations use it to pass what a rule can use (an attack's ``own``, an aggregator's
    ``weights``) and nothing it would refuse. A Pipeline passes its options to every stage, so
    it accepts only what its signature names.
    """
    fn = op.fn if isinstance(op, Rule) else op
    try:
        return option in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False


def rule(fn):
    """Let ``fn(X, **options)`` also be called as ``fn(**options)`` to make a Rule.

    The options are checked against the signature at once, so a typo fails where it is written.
    On data, ``fn`` runs ``quietly``: a value past the dtype's range is +-Inf, and one below it
    a subnormal or 0, without a NumPy RuntimeWarning, on the host as in the kernels (a warning is
    an error where warnings are errors, and a Byzantine row of 1e154 must not make a server's
    aggregation raise).
    """
    signature = inspect.signature(fn)
    quiet = quietly(fn)

    @functools.wraps(fn)
    def wrapper(X=_NO_DATA, /, **options):
        if X is _NO_DATA:
            try:
                signature.bind_partial(None, **options)
            except TypeError as exc:
                raise TypeError(f"{fn.__name__}(): {exc}") from None
            return Rule(wrapper, options)
        return quiet(X, **options)

    data, name = next(iter(signature.parameters)), fn.__name__
    wrapper.__doc__ = inspect.cleandoc(fn.__doc__ or "") + (
        f"\n\nCalled without {data}, ``{name}(**options)`` returns a Rule, the operation with those\n"
        f"options bound: ``{name}(**options)({data})`` is ``{name}({data}, **options)``.")
    return wrapper


class Pipeline:
    """Pre-aggregators then an aggregator: ``Pipeline(nnm(f=4), cwtm(f=4))(X)``.

    Each stage is any callable taking the data (a Rule, or a plain function). Batched input
    (B, n, d) flows through every stage batched.
    """

    def __init__(self, *stages):
        if not stages:
            raise ValueError("Pipeline needs at least one stage")
        self.stages = tuple(_checks.function(s, "a Pipeline stage", "callable") for s in stages)

    def __call__(self, X, **options):
        """Run every stage; ``options`` (e.g. backend=) are passed to each stage."""
        for stage in self.stages:
            X = stage(X, **options)
        return X

    def __repr__(self):
        return "Pipeline(" + ", ".join(map(repr, self.stages)) + ")"
