"""The cuda backend's kernels, and Krum and NNM whole (distances, selection, mixing), beside the
usual PyTorch GPU code for the same result and a device-to-device copy of X.

A kernel that reads X once moves half the bytes of the copy (which reads and writes X), so
``track_copy_ratio`` near 0.5 means the kernel runs at the memory-bandwidth limit.
``track_torch_ratio`` is torch's time over byzkern's (above 1: byzkern is faster). Skipped
without a usable CUDA device; the torch columns also need torch with CUDA.
"""
import os

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

import byzkern as bk
from byzkern.backends import cuda
from byzkern.bench import LEVELS, _k

from .common import require_backend

#: (B, n, d); BYZKERN_ASV_SMOKE=1 (CI) swaps in tiny ones that only prove the benchmarks run
#: 1x20x10000000 is the shape of the issue's targets
SHAPES = ["1x20x10000000", "1x16x4194304", "1x64x1048576", "17x16x262144"]
if os.environ.get("BYZKERN_ASV_SMOKE") == "1":
    SHAPES = ["2x9x257"]  # batched, odd n and d; one shape keeps the CI smoke short

F, TAU, NU, STEPS = 4, 1.0, 1e-6, 8
#: compressors take the B * n rows of X as one (B * n, d) round
COMPRESSORS = ["topk", "randk", "qsgd", "natural", "sign", "scaled_sign"]


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _torch_way(torch, op, X, idx):
    """The PyTorch code a user would write for ``op`` (not always the same numerics; torch
    compressors leave their output unpacked: levels, exponents and signs as whole numbers)."""
    n = X.shape[1]
    R = X.reshape(-1, X.shape[2])
    k = _k(R)
    if op == "topk":
        def topk():
            idx = torch.topk(R.abs(), k, dim=1).indices
            return R.gather(1, idx), idx
        return topk
    if op == "randk":
        def randk():  # k uniform distinct indices per row: the k largest of d uniforms
            idx = torch.rand(R.shape, device=R.device).topk(k, dim=1).indices
            return R.gather(1, idx) * (R.shape[1] / k), idx
        return randk
    if op == "qsgd":
        def qsgd():
            norm = torch.linalg.vector_norm(R, dim=1, keepdim=True)
            r = R.abs() * (LEVELS / norm)
            return norm, torch.sign(R) * torch.floor(r + torch.rand_like(r))
        return qsgd
    if op == "natural":
        def natural():  # |x| = m 2^e with m in [0.5, 1): 2^(e-1), or 2^e with probability 2m - 1
            m, e = torch.frexp(R)
            up = torch.rand_like(R) < 2 * m.abs() - 1
            return torch.sign(R) * torch.ldexp(torch.ones_like(R), e - 1 + up)
        return natural
    if op == "sign":
        return lambda: torch.signbit(R)
    if op == "scaled_sign":
        return lambda: R.abs().mean(dim=1, keepdim=True) * torch.sign(R)
    if op == "mean":
        return lambda: X.mean(dim=1)
    if op == "cwmed":  # the baseline; for even n the lower middle, not the median
        return lambda: X.median(dim=1).values
    if op == "cwtm":
        return lambda: X.sort(dim=1).values[:, F:n - F].mean(dim=1)
    if op == "meamed":
        def meamed():
            med = X.median(dim=1, keepdim=True).values
            nearest = (X - med).abs().argsort(dim=1)[:, :n - F]
            return X.gather(1, nearest).mean(dim=1)
        return meamed
    if op == "pairwise_sqdist":
        return lambda: torch.cdist(X, X) ** 2
    if op == "krum":
        def krum():  # score: the sum over the n - f - 2 nearest other rows (sorted index 0 is self)
            scores = (torch.cdist(X, X) ** 2).sort(dim=2).values[:, :, 1:n - F - 1].sum(dim=2)
            return X[torch.arange(X.shape[0], device=X.device), scores.argmin(dim=1)]
        return krum
    if op == "nnm":
        def nnm():  # each row becomes the mean of its n - f nearest rows, itself included
            nearest = (torch.cdist(X, X) ** 2).topk(n - F, dim=2, largest=False).indices
            mixing = torch.zeros((X.shape[0], n, n), dtype=X.dtype, device=X.device)
            return torch.bmm(mixing.scatter_(2, nearest, 1.0 / (n - F)), X)
        return nnm
    if op == "mix_rows":
        # the (n, n) mixing matrix times X: how NNM is written with dense torch ops
        B, m, k = idx.shape
        mixing = torch.zeros((B, m, n), dtype=X.dtype, device=X.device)
        mixing.scatter_add_(2, idx, torch.full(idx.shape, 1.0 / k, dtype=X.dtype, device=X.device))
        return lambda: torch.bmm(mixing, X)
    if op == "row_norms":
        return lambda: torch.linalg.vector_norm(X, ord=2, dim=2)
    if op == "clip":
        return lambda: X * (TAU / torch.linalg.vector_norm(X, dim=2, keepdim=True)).clamp(max=1.0)
    if op == "geomed":
        def geomed():
            z = X.mean(dim=1, keepdim=True)
            for _ in range(STEPS):
                b = 1.0 / torch.linalg.vector_norm(X - z, dim=2, keepdim=True).clamp(min=NU)
                z = (b * X).sum(dim=1, keepdim=True) / b.sum(dim=1, keepdim=True)
            return z[:, 0]
        return geomed
    if op == "cclip":
        def cclip():
            v = X.median(dim=1, keepdim=True).values
            diff = X - v
            scale = (TAU / torch.linalg.vector_norm(diff, dim=2, keepdim=True)).clamp(max=1.0)
            return v[:, 0] + (scale * diff).mean(dim=1)
        return cclip
    raise ValueError(op)


class CudaKernels:
    params = [
        ["mean", "cwmed", "cwtm", "meamed", "pairwise_sqdist", "mix_rows", "krum", "nnm", "row_norms", "clip",
         "geomed", "cclip", *COMPRESSORS],
        SHAPES,
        ["float32", "float64"],
    ]
    param_names = ["kernel", "B x n x d", "dtype"]
    timeout = 300

    def setup(self, op, shape, dtype):
        require_backend("cuda")
        import cupy
        from cupyx.profiler import benchmark

        self.cupy, self.profile = cupy, benchmark
        B, n, d = map(int, shape.split("x"))
        self.X = cupy.random.default_rng(0).standard_normal((B, n, d), dtype=np.float32).astype(dtype)
        self.idx = cupy.asarray(np.argsort(np.random.default_rng(1).random((B, n, n)), axis=2)[:, :, : n - F])
        weights = cupy.ones((B, n))
        R = self.X.reshape(B * n, d)
        self.run = {
            "mean": lambda: cuda.mean(self.X),
            "cwmed": lambda: cuda.cwmed(self.X),
            "cwtm": lambda: cuda.cwtm(self.X, F),
            "meamed": lambda: cuda.meamed(self.X, F),
            "pairwise_sqdist": lambda: cuda.pairwise_sqdist(self.X),
            "mix_rows": lambda: cuda.mix_rows(self.X, self.idx),
            # the whole rules through the public API, as the krum/nnm targets mean them
            "krum": lambda: bk.krum(self.X, f=F, backend="cuda"),
            "nnm": lambda: bk.nnm(self.X, f=F, backend="cuda"),
            "row_norms": lambda: cuda.row_norms(self.X, 2),
            "clip": lambda: cuda.clip(self.X, TAU),
            "geomed": lambda: cuda.geomed(self.X, weights, "mean", STEPS, 0.0, NU),
            # from the median it takes itself, as torch's way does
            "cclip": lambda: cuda.cclip(self.X, TAU, 1, None),
            "topk": lambda: cuda.topk(R, _k(R)),
            "randk": lambda: cuda.randk(R, _k(R), 0),
            "qsgd": lambda: cuda.qsgd(R, LEVELS, 0),
            "natural": lambda: cuda.natural(R, 0),
            "sign": lambda: cuda.sign(R),
            "scaled_sign": lambda: cuda.scaled_sign(R),
        }[op]
        self.run()  # compiles the family's module (cached on disk by CuPy afterwards)
        torch = _torch()
        self.torch_run = None
        if torch is not None:
            Xt = torch.from_dlpack(self.X)
            self.torch_run = _torch_way(torch, op, Xt, torch.from_dlpack(self.idx))
            self.torch_run()

    def _gpu_seconds(self, fn):
        return float(np.median(self.profile(fn, n_repeat=20, n_warmup=3).gpu_times))

    def time_byzkern(self, op, shape, dtype):
        self.run()
        self.cupy.cuda.Device().synchronize()

    def time_torch(self, op, shape, dtype):
        if self.torch_run is None:
            raise SkipNotImplemented("torch with CUDA is not installed")
        self.torch_run()
        self.cupy.cuda.Device().synchronize()

    def time_copy(self, op, shape, dtype):
        self.X.copy()
        self.cupy.cuda.Device().synchronize()

    def track_copy_ratio(self, op, shape, dtype):
        return self._gpu_seconds(self.run) / self._gpu_seconds(self.X.copy)

    track_copy_ratio.unit = "byzkern time / copy time"

    def track_torch_ratio(self, op, shape, dtype):
        if self.torch_run is None:
            raise SkipNotImplemented("torch with CUDA is not installed")
        return self._gpu_seconds(self.torch_run) / self._gpu_seconds(self.run)

    track_torch_ratio.unit = "torch time / byzkern time"
