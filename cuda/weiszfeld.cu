// Iterative rules over (B, n, d): the smoothed Weiszfeld geometric median (RFA, Pillutla et al.)
// and centered clipping (Karimireddy, He, Jaggi 2021). Each step reads X twice: once for the
// distances to the current point (row_reduce in rows.cuh), once for the column update below.
// The small per-item bookkeeping between the passes runs on the device, so the host only checks
// convergence now and then.
#include "rows.cuh"

// Weiszfeld bookkeeping, one block per batch item, after the distance pass of `step`:
// objective F = sum_i w_i ||z - x_i|| over the rows of positive weight, the iteration count and
// RFA's stopping rule |F_prev - F| < eps F, and the next step's b_i = w_i / max(nu, ||z - x_i||).
// `weights` already holds 0 for rows with a non-finite entry; such rows never enter a sum.
__global__ void weiszfeld_weights(const double* partial, index_t chunks, index_t B, index_t n,
                                  const double* weights, double nu, double eps, index_t step,
                                  int* active, double* objective, long long* iterations,
                                  double* beta, double* beta_sum) {
  for (index_t b = blockIdx.x; b < B; b += gridDim.x) {
    if (!active[b]) continue;
    double obj = 0.0, total = 0.0;
    for (index_t i = threadIdx.x; i < n; i += blockDim.x) {
      const index_t r = b * n + i;
      const double w = weights[r];
      double next = 0.0;
      if (w > 0.0) {
        const double dist = sqrt(byzkern::combine_chunks<false>(partial, chunks, B * n, r));
        obj += w * dist;
        next = w / (isnan(dist) ? dist : fmax(nu, dist));  // a NaN start stays NaN, as in the reference
      }
      beta[r] = next;
      total += next;
    }
    obj = byzkern::block_reduce<false>(obj);
    __syncthreads();  // both sums share the shared warp partials
    total = byzkern::block_reduce<false>(total);
    if (threadIdx.x == 0) {
      beta_sum[b] = total;
      if (step > 0) {
        iterations[b] = step;
        if (fabs(objective[b] - obj) < eps * obj) active[b] = 0;
      }
      objective[b] = obj;
    }
    __syncthreads();
  }
}

// z[b, c] = sum_i beta_i X[b, i, c] / beta_sum[b] over the rows of positive weight; one thread
// per (item, column), items no longer active keep their point.
template <class T>
__global__ void weiszfeld_update(const T* X, index_t B, index_t n, index_t d, const double* weights,
                                 const double* beta, const double* beta_sum, const int* active, double* z) {
  for (index_t g = byzkern::global_thread(); g < B * d; g += byzkern::global_stride()) {
    const index_t b = g / d, c = g - b * d;
    if (!active[b]) continue;
    double sum = 0.0;
    for (index_t i = 0; i < n; ++i) {
      if (weights[b * n + i] > 0.0) sum += beta[b * n + i] * static_cast<double>(X[(b * n + i) * d + c]);
    }
    z[g] = sum / beta_sum[b];
  }
}

// v[b, c] += (1/n) sum_i scale_i (X[b, i, c] - v[b, c]) over the rows without a non-finite
// entry (the others add 0, but the product would be NaN); one thread per (item, column).
template <class T>
__global__ void cclip_update(const T* X, index_t B, index_t n, index_t d, const double* scale,
                             const int* nonfinite_row, double* v) {
  for (index_t g = byzkern::global_thread(); g < B * d; g += byzkern::global_stride()) {
    const index_t b = g / d, c = g - b * d;
    const double center = v[g];
    double sum = 0.0;
    for (index_t i = 0; i < n; ++i) {
      if (!nonfinite_row[b * n + i]) sum += scale[b * n + i] * (static_cast<double>(X[(b * n + i) * d + c]) - center);
    }
    v[g] = center + sum / static_cast<double>(n);
  }
}
