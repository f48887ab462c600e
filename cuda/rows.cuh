// Row reductions over (B, n, d): one block per (row, column chunk), a deterministic block sum,
// partials written per chunk and combined in a fixed order by a finish kernel. Shared by
// distances.cu (row_norms, clip) and weiszfeld.cu (geomed, cclip), which compile separately.
#pragma once
#include "common.cuh"

namespace byzkern {

// Each op maps an entry (already centred when a center is given) to a term and says how terms
// and chunk partials combine and how the total becomes a norm.
struct SumAbs {
  static constexpr bool kMax = false;
  __device__ static double term(double x, double) { return fabs(x); }
  __device__ static double root(double total, double) { return total; }
};
struct SumSquares {
  static constexpr bool kMax = false;
  __device__ static double term(double x, double) { return x * x; }
  __device__ static double root(double total, double) { return sqrt(total); }
};
struct SumPower {
  static constexpr bool kMax = false;
  __device__ static double term(double x, double q) { return pow(fabs(x), q); }
  __device__ static double root(double total, double q) { return pow(total, 1.0 / q); }
};
struct MaxAbs {
  static constexpr bool kMax = true;
  __device__ static double term(double x, double) { return fabs(x); }
  __device__ static double root(double total, double) { return total; }
};

}  // namespace byzkern

using byzkern::index_t;

// partial[k, b*n + i] = combination over the columns of chunk k of Op::term(X[b, i, c] - center[b, c])
// (no centring when center is null). Rows with a non-finite entry are flagged in nonfinite_row.
// Batch items whose `active` flag is 0 are skipped (converged Weiszfeld items); null: all active.
template <class T, class Op>
__global__ void row_reduce(const T* X, index_t B, index_t n, index_t d, const double* center, double q,
                           index_t chunk, index_t chunks, const int* active, double* partial,
                           int* nonfinite_row) {
  const index_t rows = B * n;
  for (index_t job = blockIdx.x; job < chunks * rows; job += gridDim.x) {
    const index_t k = job / rows, r = job - k * rows, b = r / n;
    if (active && !active[b]) continue;
    const index_t c_end = (k + 1) * chunk < d ? (k + 1) * chunk : d;
    const T* row = X + r * d;
    double acc = 0.0;
    bool finite = true;
    for (index_t c = k * chunk + threadIdx.x; c < c_end; c += blockDim.x) {
      const double x = static_cast<double>(row[c]);
      finite = finite && isfinite(x);
      const double term = Op::term(center ? x - center[b * d + c] : x, q);
      acc = Op::kMax ? fmax(acc, term) : acc + term;
    }
    if (!finite) nonfinite_row[r] = 1;
    const double total = byzkern::block_reduce<Op::kMax>(acc);
    if (threadIdx.x == 0) partial[k * rows + r] = total;
    __syncthreads();  // the next job's block_reduce reuses the shared warp partials
  }
}

// Per-row clipping factor min(1, tau / ||row||_2) from SumSquares partials (a zero row keeps
// factor min(1, tau)); rows with a non-finite entry get `nonfinite_scale`.
__global__ void clip_scale(const double* partial, index_t chunks, index_t rows, const int* nonfinite_row,
                           double tau, double nonfinite_scale, double* scale) {
  for (index_t r = byzkern::global_thread(); r < rows; r += byzkern::global_stride()) {
    const double norm = sqrt(byzkern::combine_chunks<false>(partial, chunks, rows, r));
    scale[r] = nonfinite_row[r] ? nonfinite_scale : fmin(1.0, tau / (norm > 0.0 ? norm : 1.0));
  }
}
