"""host_cuda, the host stand-in for a GPU under test_cuda.py: it must fail where a GPU run would
go wrong (a barrier or shuffle not every thread reaches, a missing barrier, an argument of the
wrong type, a read past an array's end), or its green runs prove nothing."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

host_cuda = pytest.importorskip("host_cuda")
if host_cuda.unavailable_reason() is not None:
    pytest.skip(host_cuda.unavailable_reason(), allow_module_level=True)

SOURCE = r"""
#include "common.cuh"
using byzkern::index_t;

// out[t] = what thread t reads from its right-hand neighbour's shared slot.
template <bool kBarrier>
__global__ void rotate(const float* x, float* out) {
  __shared__ float slot[64];
  slot[threadIdx.x] = x[threadIdx.x];
  if (kBarrier) __syncthreads();
  out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

__global__ void barrier_in_branch(index_t threads_at_barrier) {
  if (threadIdx.x < threads_at_barrier) __syncthreads();
}

__global__ void block_sum(const double* x, index_t active_lanes, double* out) {
  if (threadIdx.x >= active_lanes) return;
  const double total = byzkern::block_reduce<false>(x[threadIdx.x]);
  if (threadIdx.x == 0) *out = total;
}

__global__ void first_entry(const float* x, int count, float* out) { *out = x[count - 1]; }

__global__ void read_at(const float* x, index_t i, float* out) { *out = x[i]; }

__global__ void __launch_bounds__(64) bounded(float* out) { out[threadIdx.x] = 1.0f; }
"""
NAMES = ["rotate<true>", "rotate<false>", "barrier_in_branch", "block_sum", "first_entry", "read_at", "bounded"]


def _module():
    code = (Path(__file__).parents[1] / "cuda" / "common.cuh").read_text().replace("#pragma once\n", "")
    return host_cuda.RawModule(code=SOURCE.replace('#include "common.cuh"', code), name_expressions=NAMES)


def test_threads_see_shared_memory_only_past_a_barrier():
    # Launches alternate between running threads forward and backward: two of each kernel.
    for kernel, right in (("rotate<true>", True), ("rotate<false>", False)):
        for start in (1.0, 101.0):
            x = host_cuda.asarray(np.arange(start, start + 64, dtype=np.float32))
            out = host_cuda.zeros(64, np.float32)
            _module().get_function(kernel)((1,), (64,), (x, out))
            # Without the barrier the first thread to run reads a slot nobody wrote in this launch.
            assert np.array_equal(out.get(), np.roll(x, -1)) == right, (kernel, start)


def test_a_barrier_some_threads_never_reach_is_an_error():
    with pytest.raises(RuntimeError, match=r"__syncthreads reached by 40 of 64 threads \(24 returned\)"):
        _module().get_function("barrier_in_branch")((2,), (64,), (40,))
    _module().get_function("barrier_in_branch")((2,), (64,), (64,))


def test_warp_shuffles_sum_a_block_and_a_partial_warp_is_an_error():
    x = host_cuda.asarray(np.arange(96, dtype=np.float64))
    out = host_cuda.zeros(1, np.float64)
    _module().get_function("block_sum")((1,), (96,), (x, 96, out))
    assert out.get()[0] == np.arange(96).sum()
    with pytest.raises(RuntimeError, match="warp shuffle that 16 lanes of warp 2 never reach"):
        _module().get_function("block_sum")((1,), (96,), (x, 80, out))


def test_arguments_are_checked_against_the_kernel_parameters():
    first = _module().get_function("first_entry")
    x, out = host_cuda.ones(4, np.float32), host_cuda.zeros(1, np.float32)
    first((1,), (32,), (x, np.int32(4), out))
    assert out.get()[0] == 1.0
    with pytest.raises(TypeError, match="a float64 array where the kernel reads f4"):
        first((1,), (32,), (host_cuda.ones(4, np.float64), np.int32(4), out))
    with pytest.raises(TypeError, match="a int64 where the kernel takes i4"):  # what CuPy makes of 4
        first((1,), (32,), (x, 4, out))
    with pytest.raises(ValueError, match="not C-contiguous"):
        first((1,), (32,), (host_cuda.ones(8, np.float32)[::2], np.int32(4), out))
    with pytest.raises(TypeError, match="takes 3 arguments, got 2"):
        first((1,), (32,), (x, out))


def test_a_block_wider_than_the_kernels_launch_bounds_is_an_error():
    out = host_cuda.zeros(96, np.float32)
    _module().get_function("bounded")((1,), (64,), (out,))
    assert out.get().sum() == 64
    with pytest.raises(ValueError, match=r"1 blocks of 96 threads \(at most 64\)"):
        _module().get_function("bounded")((1,), (96,), (out,))


def _sanitized_environment():
    runtime = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(runtime):
        pytest.skip("g++ has no AddressSanitizer runtime")
    return {**os.environ, "HOST_CUDA_SANITIZE": "address", "ASAN_OPTIONS": "detect_leaks=0", "LD_PRELOAD": runtime}


def _host_has_fma():
    return " fma " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "


def test_address_sanitizer_stops_a_read_past_the_end(tmp_path):
    script = tmp_path / "overflow.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path[:0] = [{str(Path(__file__).parent)!r}]\n"
        "import test_host_cuda as t, host_cuda\n"
        "read = t._module().get_function('read_at')\n"
        "x, out = host_cuda.ones(5, np.float32), host_cuda.zeros(1, np.float32)\n"
        "read((1,), (32,), (x, 4, out))\n"
        "print('inside', flush=True)\n"
        "read((1,), (32,), (x, 5, out))\n"
        "print('past the end', flush=True)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=_sanitized_environment(), timeout=300)
    assert result.returncode != 0 and "inside" in result.stdout and "past the end" not in result.stdout
    assert "heap-buffer-overflow" in result.stderr and "read_at" in result.stderr, result.stderr[-3000:]


def test_cuda_kernels_stay_inside_their_arrays_and_fused_multiply_adds_keep_their_bits():
    """test_cuda.py's kernel cases under AddressSanitizer, the host's compute-sanitizer memcheck
    (less its largest and its drawn inputs, which add time and no new edge), built with fused
    multiply-adds as NVRTC builds them (HOST_CUDA_FMA) where this CPU has them; on the host
    even where there is a device (HOST_CUDA), as NVRTC does not load under the sanitizer."""
    tests = Path(__file__).parent
    env = {**_sanitized_environment(), "HOST_CUDA": "1", "HOST_CUDA_FMA": "1" if _host_has_fma() else "0"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests / "test_cuda.py"), "-q", "-x", "-s", "-p", "no:cacheprovider",
         "-k", "not compiles and not drawn and not threads256 and not 4099 and not 70001"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tests.parent)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "AddressSanitizer" not in result.stderr
    assert " passed" in result.stdout and " failed" not in result.stdout
