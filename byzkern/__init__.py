"""byzkern: Byzantine-robust aggregation, compression and attack kernels at memory bandwidth.

Every operation takes a round of messages ``X`` of shape (n, d) (or a batch (B, n, d)) from
NumPy, torch (CPU or CUDA) or CuPy and returns the result in the same library, device and dtype.
"""
from ._dispatch import use_backend
from .attacks import Mimic, alie, foe, gaussian, ipm, mimic, optimized, sign_flip
from .compressors import Compressed, ErrorFeedback, natural, qsgd, randk, scaled_sign, sign, topk
from .aggregators import cclip, cwmed, cwtm, geomed, krum, mean, meamed, multikrum, norm_filter
from .distances import pairwise_sqdist
from .model import flatten, unflatten
from .pipeline import Pipeline, Rule
from .preaggregators import bucketing, clip, nnm, resampling

__version__ = "0.1.0"

__all__ = [
    "Compressed", "ErrorFeedback", "Mimic", "alie", "foe", "gaussian", "ipm", "mimic", "natural",
    "optimized", "qsgd", "randk", "scaled_sign", "sign", "sign_flip", "topk",
    "Pipeline", "Rule", "bucketing", "cclip", "clip", "cwmed", "cwtm", "flatten", "geomed",
    "info", "krum", "meamed", "mean", "multikrum", "nnm", "norm_filter", "pairwise_sqdist",
    "resampling", "unflatten", "use_backend",
]


def info():
    """Which backends are available (and why not), and the package version."""
    from . import _dispatch

    return {"version": __version__, "backends": _dispatch.info()}
