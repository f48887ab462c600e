"""Array-library adaptation: every user input becomes one canonical buffer, and back.

Kernels only ever see a C-contiguous NumPy (host) or CuPy (device) array of shape
``(B, n, d)`` (or ``(n, d)`` for row-wise compressors) in float32 or float64. This module owns
the translation from what the user passed (NumPy, torch CPU/CUDA, CuPy, a list of 1-D arrays;
2-D or batched 3-D; any float dtype) and the translation of the result back to the user's
library, device and dtype. Torch CPU tensors are viewed as NumPy without a copy; torch CUDA
tensors are viewed as CuPy through DLPack, also without a copy. Device data must be on the
current CUDA device (``cupy.cuda.Device(k)``, ``torch.cuda.set_device(k)``): an op's kernels and
CuPy calls run there.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

#: dtypes the kernels run in natively; every other float is computed in float32.
NATIVE = (np.dtype(np.float32), np.dtype(np.float64))
_HALF_NAMES = ("float16", "bfloat16")


def library_of(x) -> str:
    """'numpy', 'torch' or 'cupy' for an array object; TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return "numpy"
    root = type(x).__module__.split(".")[0]
    if root in ("torch", "cupy"):
        return root
    raise TypeError(
        f"expected a numpy.ndarray, torch.Tensor, cupy.ndarray or a list of 1-D arrays; "
        f"got {type(x).__name__}"
    )


def _stack(seq, name):
    if len(seq) == 0:
        raise ValueError(f"{name} is an empty list; need at least one row")
    items = [x if is_array(x) else np.asarray(x) for x in seq]
    libs = {library_of(x) for x in items}
    if len(libs) > 1:
        raise TypeError(f"{name}: all rows must come from one array library; got {sorted(libs)}")
    lib = libs.pop()
    ranks = {x.ndim for x in items}
    if ranks != {1}:
        raise ValueError(f"{name}: a list input must hold 1-D arrays; got ranks {sorted(ranks)}")
    lengths = {int(x.shape[0]) for x in items}
    if len(lengths) > 1:
        raise ValueError(f"{name}: rows have different lengths {sorted(lengths)}")
    if lib == "torch":
        import torch

        devices = {str(x.device) for x in items}
        if len(devices) > 1:
            raise ValueError(f"{name}: rows are on different devices {sorted(devices)}")
        return torch.stack(items)
    if lib == "cupy":
        import cupy

        devices = {x.device.id for x in items}
        if len(devices) > 1:
            raise ValueError(f"{name}: rows are on different devices {sorted(devices)}")
        _on_current_device(items[0], name)
        return cupy.stack(items)
    return np.stack(items)


def is_array(x) -> bool:
    try:
        library_of(x)
        return True
    except TypeError:
        return False


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _check_float(x, name) -> None:
    dname = _dtype_name(x)
    if dname in ("float32", "float64") or dname in _HALF_NAMES:
        return
    raise TypeError(
        f"{name} has dtype {dname}; byzkern takes float32 or float64 "
        f"(float16 and bfloat16 are accepted and computed in float32)"
    )


def _integers_as_float64(x):
    """An integer array as float64 in its own library and device; any other array as it is."""
    if not _dtype_name(x).startswith(("int", "uint")):
        return x
    return x.to(dtype=__import__("torch").float64) if library_of(x) == "torch" else x.astype(np.float64)


def user_array(x, name):
    """x as the user's own float array (a list of rows stacked), for arithmetic done in the
    user's library (ErrorFeedback's p = lr g + e); TypeError for any other kind or dtype."""
    if isinstance(x, (list, tuple)):
        x = _stack(x, name)
    if library_of(x) == "numpy":
        x = _plain_numpy(x, name)
    _check_float(x, name)
    return x


def describe(x):
    """'float32 numpy array of shape (4, 100) on cpu': what an array is, for messages."""
    lib = library_of(x)
    device = f"cuda:{x.device.id}" if lib == "cupy" else str(getattr(x, "device", "cpu"))
    return f"{_dtype_name(x)} {lib} array of shape {tuple(x.shape)} on {device}"


def _plain_numpy(x, name):
    """x as a plain ndarray in native byte order: a matrix or memmap is viewed as one; a
    non-native (big-endian) array, as read from a file or the network, is copied once, as a
    non-contiguous one is (and its result is native, as NumPy's arithmetic gives it)."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask byzkern would not read: pass {name}.filled(np.nan) "
                        f"(nan_policy then decides what those rows do) or {name}.data")
    x = np.asarray(x)
    if x.dtype.kind == "f" and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return x


def _to_kernel_array(x, name):
    """A view (no copy where possible) of a user array as NumPy or CuPy, plus its device kind."""
    lib = library_of(x)
    if lib == "numpy":
        x = _plain_numpy(x, name)
    _check_float(x, name)
    if lib == "torch":
        t = x.detach()
        if t.layout is not __import__("torch").strided:
            raise TypeError(f"{name} is a torch tensor of layout {t.layout}; byzkern takes dense tensors "
                            f"(call .to_dense() first)")
        t = t.resolve_conj().resolve_neg()  # DLPack exports the storage, not the lazy negation
        if t.dtype in _torch_half_dtypes():
            t = t.float()
        if t.is_cuda:
            import cupy

            return _on_current_device(cupy.from_dlpack(t), name), "cuda"
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on torch device {t.device}; byzkern runs on cpu and cuda")
        return t.numpy(), "cpu"
    if lib == "cupy":
        x = _on_current_device(x, name)
        return (x.astype("float32") if x.dtype == np.float16 else x), "cuda"
    return (x.astype(np.float32) if x.dtype == np.float16 else x), "cpu"


def _on_current_device(x, name):
    """CuPy array x, when it is on the current CUDA device: CuPy launches every kernel there,
    whatever device its arguments are on, and another device's pointers fault there."""
    import cupy

    current = cupy.cuda.runtime.getDevice()
    if x.device.id != current:
        raise ValueError(f"{name} is on CUDA device {x.device.id} but the current device is {current}: call byzkern "
                         f"inside `with cupy.cuda.Device({x.device.id}):`, or after torch.cuda.set_device({x.device.id})")
    return x


def _torch_half_dtypes():
    import torch

    return (torch.float16, torch.bfloat16)


def host(arr):
    """arr as a NumPy array: itself, or a CuPy array copied to the host (small tables only)."""
    return arr if isinstance(arr, np.ndarray) else arr.get()


def _on_host(x):
    """An array of any library or device as a NumPy array (half floats as float32); anything
    else as it is."""
    if not is_array(x) or isinstance(x, np.ndarray):
        return x
    if library_of(x) == "cupy":
        return x.get()
    x = x.detach()
    return (x.float() if x.dtype in _torch_half_dtypes() else x).cpu().numpy()


def real_values(values, name):
    """Numbers the user gives beside the data (etas; weights or norms typed as a list) as a
    float64 NumPy array: a list or tuple of numbers (0-d arrays of any library among them), or
    a small array of any library and device. TypeError for strings, bools, complex numbers or
    other objects among them, ValueError for rows of different lengths."""
    values = [_on_host(v) for v in values] if isinstance(values, (list, tuple)) else _on_host(values)
    try:
        values = _plain_numpy(values, name)
    except ValueError:
        raise ValueError(f"{name} has rows of different lengths") from None
    if values.dtype == object and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values.flat):
        try:
            values = values.astype(np.float64)  # ints past 64 bits, Fractions
        except OverflowError:
            raise ValueError(f"{name} holds a number past float64's range") from None
    if values.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers; got {values.dtype} values")
    return values.astype(np.float64)


def xp_of(arr):
    """The array module (numpy or cupy) of a kernel array."""
    return np if isinstance(arr, np.ndarray) else __import__("cupy")


def quietly(fn):
    """fn with its host arithmetic giving a value past the dtype's range as +-Inf (or NaN, from
    Inf - Inf) and one below it as a subnormal or 0, as the kernels (and CuPy) do, without
    NumPy's RuntimeWarning or, where the caller asked NumPy to raise, FloatingPointError."""
    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # a fresh one per call: per thread
            return fn(*args, **kwargs)
    return quiet


class Adapted:
    """A canonical kernel buffer and what is needed to give results back in the user's form.

    ``data`` is C-contiguous, float32/float64, with ``len(ndims)`` leading dims folded so that
    it always has rank ``max(ndims)``: ``(B, n, d)`` for rules, ``(n, d)`` for compressors.
    """

    __slots__ = ("data", "lib", "device", "user_dtype", "torch_device", "folded")

    def __init__(self, data, lib, device, user_dtype, torch_device, folded):
        self.data = data
        self.lib = lib
        self.device = device
        self.user_dtype = user_dtype
        self.torch_device = torch_device
        self.folded = folded

    @property
    def xp(self):
        return xp_of(self.data)

    @property
    def dtype(self):
        """The compute dtype (float32 or float64)."""
        return self.data.dtype

    def aux(self, arr, name, tail, dtype=None):
        """Bring an auxiliary array (weights, init, own rows, norms) into this call's form.

        It must come from the data's library (or NumPy beside torch CPU data) and device, or be a
        list of numbers, which goes to the data's device. An integer array is read as numbers,
        as a list of integers is (sample counts as weights). Its shape is ``tail`` (shared by
        every batch item) or ``(B,) + tail``; the result is ``(B,) + tail``, contiguous, in
        ``dtype``: by default the compute dtype, for points beside the data (init, own rows);
        float64 for numbers that weigh or rank rows, which float32 would tie or flush to 0.
        """
        if isinstance(arr, (list, tuple)) and not any(is_array(a) and a.ndim for a in arr):
            view = self.xp.asarray(real_values(arr, name))
        else:
            if isinstance(arr, (list, tuple)):
                arr = _stack(arr, name)
            lib = library_of(arr)
            if lib != self.lib and not (lib == "numpy" and self.lib == "torch" and self.device == "cpu"):
                raise TypeError(f"{name} is a {lib} array but the data is a {self.lib} array")
            view, device = _to_kernel_array(_integers_as_float64(arr), name)
            if device != self.device:
                raise ValueError(f"{name} is on {device} but the data is on {self.device}; "
                                 f"byzkern never copies between devices")
        B = self.data.shape[0]
        tail = tuple(tail)
        if tuple(view.shape) not in (tail, (B,) + tail):
            raise ValueError(f"{name} must have shape {tail} or {(B,) + tail}; got {tuple(view.shape)}")
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if view.dtype.itemsize > dtype.itemsize:  # float64 numbers beside float32 data
            narrowed = view.astype(dtype)
            if bool((self.xp.isfinite(view) & ~self.xp.isfinite(narrowed)).any()):
                raise ValueError(f"{name} has finite values past the range of {dtype}, the data's dtype")
            view = narrowed
        return self.xp.ascontiguousarray(self.xp.broadcast_to(view, (B,) + tail), dtype=dtype)

    def order_torch_after_kernels(self):
        """Make the user's current torch stream wait for the CuPy work queued so far on their
        CUDA tensor, as ``restore``'s DLPack exchange does, for results that stay CuPy arrays
        (a message's fields): torch work on a side stream (an in-place update of the input)
        must not run before the kernels that read it."""
        if self.lib != "torch" or self.device != "cuda":
            return
        import cupy
        import torch

        user, ours = torch.cuda.current_stream(self.torch_device), cupy.cuda.get_current_stream()
        if user.cuda_stream != ours.ptr:
            cupy.cuda.Stream.from_external(user).wait_event(ours.record())

    def restore(self, out, *, keep_dtype=False):
        """Give a kernel result back: drop folded axes, user dtype, user library and device.
        ``keep_dtype``: the result's own dtype (diagnostics: iteration counts, objectives)."""
        for _ in range(self.folded):
            out = out[0]
        if self.lib == "torch":
            import torch

            t = torch.from_numpy(np.ascontiguousarray(out)) if self.device == "cpu" else torch.from_dlpack(out)
            return t if keep_dtype else t.to(self.user_dtype)
        if out.dtype != self.user_dtype and not keep_dtype:
            with np.errstate(over="ignore"):  # float64 distances beyond float32's range become inf
                out = out.astype(self.user_dtype)
        return out


def adapt(X, *, name="X", ndims=(2, 3)) -> Adapted:
    """Canonicalize ``X`` for a kernel. ``ndims`` are the accepted user ranks.

    The result has rank ``max(ndims)``; a user array of lower rank gets leading axes of length 1
    that ``restore`` removes again.
    """
    if isinstance(X, (list, tuple)):
        X = _stack(X, name)
    view, device = _to_kernel_array(X, name)
    if view.ndim not in ndims:
        shapes = {1: "(d,)", 2: "(n, d)", 3: "(B, n, d)"}
        allowed = " or ".join(shapes[k] for k in ndims)
        raise ValueError(f"{name} must have shape {allowed}; got {view.ndim}-D shape {tuple(view.shape)}")
    if any(s == 0 for s in view.shape):
        raise ValueError(f"{name} is empty (shape {tuple(view.shape)}); need at least one row and one coordinate")
    folded = max(ndims) - view.ndim
    view = view.reshape((1,) * folded + tuple(view.shape))
    xp = xp_of(view)
    data = xp.ascontiguousarray(view)
    torch_device = X.device if library_of(X) == "torch" else None
    # a big-endian input's result comes back in native order, as NumPy's arithmetic gives it
    user_dtype = X.dtype.newbyteorder("=") if isinstance(X, np.ndarray) else X.dtype
    return Adapted(data, library_of(X), device, user_dtype, torch_device, folded)
