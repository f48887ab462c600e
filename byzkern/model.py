"""Model helpers: a list of per-layer tensors <-> one flat row, so a model's gradient is one
message. Works for NumPy, torch (CPU or CUDA) and CuPy; the flat vector stays in that library
and on that device.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ._arrays import library_of


class FlatSpec(NamedTuple):
    """What ``unflatten`` needs: each piece's shape, in order."""

    shapes: tuple

    @property
    def size(self):
        return sum(math.prod(s) for s in self.shapes)


def flatten(tensors):
    """``[g_1, ..., g_L] -> (vector, spec)``: the pieces raveled and concatenated in order."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("flatten needs at least one tensor")
    libs = {library_of(t) for t in tensors}
    if len(libs) != 1:
        raise TypeError(f"flatten: all tensors must come from one array library; got {sorted(libs)}")
    lib = libs.pop()
    spec = FlatSpec(tuple(tuple(t.shape) for t in tensors))
    if lib == "torch":
        import torch

        return torch.cat([t.detach().reshape(-1) for t in tensors]), spec
    if lib == "cupy":
        import cupy

        return cupy.concatenate([t.reshape(-1) for t in tensors]), spec
    import numpy as np

    return np.concatenate([t.reshape(-1) for t in tensors]), spec


def unflatten(vector, spec):
    """``(vector, spec) -> [g_1, ..., g_L]``: views of ``vector`` with the recorded shapes."""
    if not isinstance(spec, FlatSpec):
        raise TypeError(f"spec must be the FlatSpec returned by flatten; got {type(spec).__name__}")
    if vector.ndim != 1 or vector.shape[0] != spec.size:
        raise ValueError(f"vector must have shape ({spec.size},) for this spec; got {tuple(vector.shape)}")
    pieces, start = [], 0
    for shape in spec.shapes:
        size = math.prod(shape)
        pieces.append(vector[start:start + size].reshape(shape))
        start += size
    return pieces
