// Shared helpers for the byzkern CUDA kernels (compiled at run time by NVRTC through CuPy).
// No system headers: NVRTC has no include path by default, and the kernels need only builtins.
#pragma once

namespace byzkern {

using index_t = long long;  // every size and offset: n * d may exceed 2^31

__device__ __forceinline__ double positive_infinity() { return __longlong_as_double(0x7ff0000000000000LL); }
__device__ __forceinline__ double quiet_nan() { return __longlong_as_double(0x7ff8000000000000LL); }

// Grid-stride loop bounds: kernels launch a capped grid and cover any int64 count.
__device__ __forceinline__ index_t global_thread() {
  return static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ index_t global_stride() {
  return static_cast<index_t>(gridDim.x) * blockDim.x;
}

// The value of the f Byzantine rows of an attack candidate at one coordinate:
// T(mu + eta * direction), a multiply then an add in double, as the reference builds them.
template <class T>
__device__ __forceinline__ T candidate_value(T mu, double eta, T direction) {
  return static_cast<T>(__dadd_rn(static_cast<double>(mu), __dmul_rn(eta, static_cast<double>(direction))));
}

// Sum (or max) over k of partial[k * rows + r], in increasing k: the chunk partials of row r.
template <bool kMax>
__device__ double combine_chunks(const double* partial, index_t chunks, index_t rows, index_t r) {
  double total = partial[r];
  for (index_t k = 1; k < chunks; ++k) {
    const double next = partial[k * rows + r];
    total = kMax ? fmax(total, next) : total + next;
  }
  return total;
}

// Sum (or max) of one double per lane over the warp; the result is valid in lane 0. Fixed
// shuffle order, so the result is the same on every run.
template <bool kMax>
__device__ __forceinline__ double warp_reduce(double value) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const double other = __shfl_down_sync(0xffffffffu, value, offset);
    value = kMax ? fmax(value, other) : value + other;
  }
  return value;
}

// Sum (or max) of one double per thread over the block; the result is valid in thread 0.
template <bool kMax>
__device__ double block_reduce(double value) {
  __shared__ double warp_partial[32];
  value = warp_reduce<kMax>(value);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_partial[warp] = value;
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    value = warp_reduce<kMax>(lane < warps ? warp_partial[lane] : 0.0);
  }
  return value;
}

}  // namespace byzkern
