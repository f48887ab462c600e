"""The cuda backend's kernels run on the host, for machines without a GPU (every CI run).

``cupy`` here is the part of CuPy's API that ``byzkern/backends/cuda.py`` calls, over NumPy
arrays, with a ``RawModule`` that compiles a family's CUDA source with g++ after ``host_cuda.h``
(fibers for the threads of a block, the CUDA built-ins the kernels use) and launches kernels
as CuPy does: Python ints as long long, floats as double, None as a null pointer, arrays by
their data pointer. Each launch checks what a GPU would not: every argument against the
kernel's parameter types (an int64 array where the kernel reads float is an error here, garbage
there), arrays C-contiguous, and ``cupy.empty`` memory and dynamic shared memory hold NaN bytes
rather than zeros, so a kernel that reads before it writes shows it.

What it cannot show: timing; races other than a missing barrier (a thread runs until it waits
at one; blocks and threads run forward in one launch, backward in the next); NVRTC's own choice
of multiply-adds to fuse (g++ fuses none here, or its own with ``HOST_CUDA_FMA=1``); the device
math library (the host libm here); inputs of many GiB (those tests keep to a device).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import types
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("host_cuda.h")
#: streaming multiprocessors the host device reports: few, so grids are capped and the kernels'
#: grid-stride loops turn even on small inputs
MULTIPROCESSORS = 2
COMPILER = ("g++", "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
            "-fvisibility=hidden", "-Wno-unknown-pragmas")
#: HOST_CUDA_SANITIZE=address builds the kernels with AddressSanitizer, the host's memcheck: a
#: read or write past an array's end stops the process with a report. The process must start
#: with the runtime preloaded (tests/test_host_cuda.py shows how).
if os.environ.get("HOST_CUDA_SANITIZE") == "address":
    COMPILER += ("-fsanitize=address", "-fno-omit-frame-pointer")
#: HOST_CUDA_FMA=1 fuses multiply-adds where the compiler likes, as NVRTC does by default (its
#: choices are not g++'s): results the tests hold bit for bit must not depend on it, so the
#: kernels round those with __dadd_rn and __dmul_rn, which never fuse.
if os.environ.get("HOST_CUDA_FMA") == "1":
    COMPILER = tuple(flag for flag in COMPILER if flag not in ("-O1", "-ffp-contract=off")) + (
        "-O2", "-ffp-contract=fast", "-mfma")


def unavailable_reason():
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"host_cuda switches fibers with x86-64 Linux code, not {platform.system()} {platform.machine()}"
    if shutil.which("g++") is None:
        return "host_cuda needs g++"
    return None


class ndarray(np.ndarray):
    """A NumPy array standing for device memory: ``get()`` copies it to a plain host array."""

    def get(self):
        return np.array(self)


def _device(a):
    return np.asarray(a).view(ndarray)


def empty(shape, dtype=float):
    # A GPU's fresh memory holds whatever was there: all-ones bytes (NaN, -1) make a read before
    # a write visible.
    out = np.empty(shape, dtype)
    out.view(np.uint8).fill(0xFF)
    return _device(out)


def empty_like(a):
    return empty(a.shape, a.dtype)


def zeros(shape, dtype=float):
    return _device(np.zeros(shape, dtype))


def ones(shape, dtype=float):
    return _device(np.ones(shape, dtype))


def full(shape, value, dtype=None):
    return _device(np.full(shape, value, dtype))


def arange(*args, **kwargs):
    return _device(np.arange(*args, **kwargs))


def array(a, dtype=None):
    return _device(np.array(a, dtype=dtype))


def asarray(a, dtype=None):
    return _device(np.array(a, dtype=dtype))  # from the host CuPy copies, so must this


def ascontiguousarray(a, dtype=None):
    return _device(np.ascontiguousarray(a, dtype=dtype))


def cumsum(a, axis=None):
    return _device(np.cumsum(a, axis=axis))


def where(condition, x, y):
    return _device(np.where(condition, x, y))


def isinf(a):
    return _device(np.isinf(a))


def sort(a, axis=-1):
    return _device(np.sort(a, axis=axis))


def flatnonzero(a):
    return _device(np.flatnonzero(a))


def matmul(a, b):
    return _device(np.matmul(a, b))  # cuBLAS on a device; its own rounding here


float64 = np.float64


# ---- the device and its compiler ----------------------------------------------------------------

class Device:
    id = 0
    attributes = {"MultiProcessorCount": MULTIPROCESSORS}

    def __init__(self, device_id=0):
        pass


cuda = types.SimpleNamespace(Device=Device)

_EXTERN_SHARED = re.compile(r"extern __shared__ ([\w ]+?) (\w+)\[\];")
_LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\((\d+)[^)]*\)\s+(\w+)")
_CACHE = Path(tempfile.gettempdir()) / f"byzkern-host-cuda-{os.getuid()}"
_LAUNCH_LOCK = threading.Lock()  # the launcher's fibers and shared memory are process-wide


def _translation_unit(code, name_expressions):
    code = _EXTERN_SHARED.sub(r"\1* \2 = static_cast<\1*>(host_cuda::dynamic_shared());", code)
    exports = []
    for i, name in enumerate(name_expressions):
        exports.append(
            f'extern "C" __attribute__((visibility("default"))) const char* host_cuda_signature_{i}() {{\n'
            f"  static const std::string text = host_cuda::signature(&{name});\n  return text.c_str();\n}}\n"
            f'extern "C" __attribute__((visibility("default"))) int host_cuda_launch_{i}(\n'
            f"    unsigned grid, unsigned block, size_t shared, void** args, char* error, size_t bytes) {{\n"
            f"  return host_cuda::launch(&{name}, grid, block, shared, args, error, bytes);\n}}\n")
    return f'#include "{HEADER}"\n{code}\n' + "".join(exports)


@functools.lru_cache(maxsize=None)
def _compile(unit):
    key = hashlib.sha256((" ".join(COMPILER) + HEADER.read_text() + unit).encode()).hexdigest()[:24]
    library = _CACHE / f"{key}.so"
    if not library.exists():
        _CACHE.mkdir(parents=True, exist_ok=True)
        source = _CACHE / f"{key}.cpp"
        source.write_text(unit)
        partial = _CACHE / f"{key}.{os.getpid()}.so"
        result = subprocess.run([*COMPILER, str(source), "-o", str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"host_cuda: g++ failed on {source}:\n{result.stderr[-6000:]}")
        partial.replace(library)  # atomic: a concurrent compile of the same source is harmless
    return ctypes.CDLL(str(library))


class RawModule:
    def __init__(self, code, options=(), name_expressions=()):
        self._names = list(name_expressions)
        self._library = _compile(_translation_unit(code, self._names))
        self._bounds = {kernel: int(threads) for threads, kernel in _LAUNCH_BOUNDS.findall(code)}

    def get_function(self, name):
        return Function(self._library, self._names.index(name), name, self._bounds.get(name.split("<")[0], 1024))


_CATEGORY = {"f": "f", "i": "i", "u": "u", "b": "u"}  # NumPy dtype kind -> C++ category


class Function:
    def __init__(self, library, index, name, max_threads):
        self.name, self._max_threads = name, max_threads
        describe = getattr(library, f"host_cuda_signature_{index}")
        describe.restype = ctypes.c_char_p
        self._parameters = describe().decode().rstrip(",").split(",")
        self._launch = getattr(library, f"host_cuda_launch_{index}")
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.c_char_p, ctypes.c_size_t]

    def _buffer(self, position, parameter, value):
        """A buffer holding ``value`` as CuPy passes it, checked against the kernel's parameter."""
        where = f"{self.name}: argument {position}"
        if parameter[0] == "p":
            if value is None:
                return ctypes.c_void_p(0)
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where} must be an array, not {type(value).__name__}")
            if not value.flags.c_contiguous:
                raise ValueError(f"{where} is not C-contiguous: the kernel would read it as if it were")
            kind, size = _CATEGORY.get(value.dtype.kind), value.dtype.itemsize
            if (kind, size) != (parameter[1], int(parameter[2:])) and not (
                    {kind, parameter[1]} <= {"i", "u"} and size == int(parameter[2:])):
                raise TypeError(f"{where}: a {value.dtype} array where the kernel reads {parameter[1:]}")
            return ctypes.c_void_p(value.ctypes.data)
        if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, np.ndarray):
            raise TypeError(f"{where}: {value!r} where the kernel takes a {parameter} scalar")
        if isinstance(value, int):  # CuPy passes Python ints as int64 and floats as float64
            value = np.int64(value)
        elif isinstance(value, float):
            value = np.float64(value)
        kind, size = _CATEGORY.get(value.dtype.kind), value.dtype.itemsize
        if size != int(parameter[1:]) or (kind == "f") != (parameter[0] == "f"):
            raise TypeError(f"{where}: a {value.dtype} where the kernel takes {parameter}")
        return ctypes.create_string_buffer(value.tobytes(), size)

    def __call__(self, grid, block, args, shared_mem=0):
        if len(args) != len(self._parameters):
            raise TypeError(f"{self.name} takes {len(self._parameters)} arguments, got {len(args)}")
        (grid,), (block,) = grid, block
        if not (1 <= block <= self._max_threads and grid >= 1):
            raise ValueError(f"{self.name}: launch of {grid} blocks of {block} threads (at most {self._max_threads})")
        if shared_mem > 48 * 1024:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory need an opt-in")
        buffers = [self._buffer(i, p, a) for i, (p, a) in enumerate(zip(self._parameters, args))]
        pointers = (ctypes.c_void_p * len(buffers))(*[ctypes.addressof(b) for b in buffers])
        error = ctypes.create_string_buffer(512)
        with _LAUNCH_LOCK:
            failed = self._launch(grid, block, shared_mem, pointers, error, len(error))
        if failed:
            raise RuntimeError(f"{self.name}<<<{grid}, {block}, {shared_mem}>>>: {error.value.decode()}")
