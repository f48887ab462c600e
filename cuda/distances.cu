// Row-wise kernels over (B, n, d), as csrc/distances.cpp: pairwise squared distances, the row
// mixing that Krum, Multi-Krum, NNM, bucketing and resampling apply to the rows they choose,
// row norms and static norm clipping (the row reductions live in rows.cuh).
//
// pairwise_sqdist takes one of two paths (backends/cuda.py picks by n), both in double for
// float32 input too, symmetric by construction, never negative, the same on every run:
// - exact differences (sqdist_groups, sqdist_finish): (x_ic - x_jc)^2 accumulated directly, so
//   rows sharing a large common component (w + small deltas) keep their distances. Each chunk
//   of columns gets its partial sums; the finish kernel adds the chunks in a fixed order.
// - a centred Gram matrix, as csrc/distances.cpp (centre_columns, then a cuBLAS DGEMM through
//   CuPy, gram_finish): D_ij = N_i + N_j - 2 G_ij with G = Y Y^T, where its rounding error (a few
//   ulps of N_i + N_j) could matter, the pair is recomputed from exact differences (sqdist_pairs).
#include "rows.cuh"

using byzkern::index_t;

// Gram distances are kept when D_ij > (N_i + N_j) / kGramTrust (csrc/distances.cpp: GRAM_TRUST).
constexpr double kGramTrust = 4.0;

constexpr int kRowGroup = 4;        // rows per side of a warp's block of pairs: 4 x 4 sums per lane
constexpr int kStagedColumns = 32;  // columns staged in shared memory at a time: one per lane

// partial[k, b, i, j] = partial[k, b, j, i] = the sum over the columns of chunk k of
// (x_ic - x_jc)^2, for every i < j (sqdist_finish sets the diagonal). The n rows are taken in
// groups of four; warp w of a block owns group pair g = slice * warps + w (groups gi <= gj),
// whose 16 sums each lane keeps in registers over its columns: every value staged in shared
// memory serves four pairs, so a pair costs half a shared load per column, not two. A block
// stages kStagedColumns columns of its item's rows at a time; the lanes' sums are then added by
// shuffles in a fixed order.
template <class T>
__global__ void __launch_bounds__(512) sqdist_groups(const T* X, index_t B, index_t n, index_t d, index_t chunk,
                                                     index_t chunks, index_t slices, double* partial,
                                                     int* nonfinite_row) {
  extern __shared__ unsigned char staged_bytes[];
  T* staged = reinterpret_cast<T*>(staged_bytes);  // n_pad rows of kStagedColumns
  const index_t groups = (n + kRowGroup - 1) / kRowGroup, n_pad = groups * kRowGroup;
  const index_t group_pairs = groups * (groups + 1) / 2;
  const index_t warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (index_t job = blockIdx.x; job < chunks * B * slices; job += gridDim.x) {
    const index_t k = job / (B * slices), rest = job - k * B * slices, b = rest / slices;
    const index_t g = (rest - b * slices) * warps + warp;
    const bool busy = g < group_pairs;  // the same for every lane of a warp
    index_t gi = 0, p = busy ? g : 0;
    while (p >= groups - gi) p -= groups - gi++;
    const index_t i0 = gi * kRowGroup, j0 = (gi + p) * kRowGroup;
    const T* item = X + b * n * d;
    const index_t c_begin = k * chunk, c_end = c_begin + chunk < d ? c_begin + chunk : d;
    double sums[kRowGroup][kRowGroup] = {};
    for (index_t c0 = c_begin; c0 < c_end; c0 += kStagedColumns) {
      // Padding rows and columns are 0 in every row: they add nothing.
      for (index_t e = threadIdx.x; e < n_pad * kStagedColumns; e += blockDim.x) {
        const index_t r = e / kStagedColumns, c = c0 + e % kStagedColumns;
        T x = 0;
        if (r < n && c < c_end) {
          x = item[r * d + c];
          if (!isfinite(x)) nonfinite_row[b * n + r] = 1;
        }
        staged[e] = x;
      }
      __syncthreads();
      if (busy) {
        double xi[kRowGroup], xj[kRowGroup];
#pragma unroll
        for (int r = 0; r < kRowGroup; ++r) {
          xi[r] = static_cast<double>(staged[(i0 + r) * kStagedColumns + lane]);
          xj[r] = static_cast<double>(staged[(j0 + r) * kStagedColumns + lane]);
        }
#pragma unroll
        for (int r = 0; r < kRowGroup; ++r)
#pragma unroll
          for (int s = 0; s < kRowGroup; ++s) {
            const double diff = xi[r] - xj[s];
            sums[r][s] += diff * diff;
          }
      }
      __syncthreads();  // every warp has read the tile before the next one is staged
    }
    if (busy) {
      double* out = partial + (k * B + b) * n * n;
#pragma unroll
      for (int r = 0; r < kRowGroup; ++r)
#pragma unroll
        for (int s = 0; s < kRowGroup; ++s) {
          const double total = byzkern::warp_reduce<false>(sums[r][s]);
          const index_t i = i0 + r, j = j0 + s;
          if (lane == 0 && i < j && j < n) out[i * n + j] = out[j * n + i] = total;
        }
    }
  }
}

// D[b, i, j] = sum of the chunks' partials; +Inf where either row has a non-finite entry; 0 on
// the diagonal.
__global__ void sqdist_finish(const double* partial, index_t chunks, index_t B, index_t n,
                              const int* nonfinite_row, double* D) {
  const index_t total = B * n * n;
  for (index_t g = byzkern::global_thread(); g < total; g += byzkern::global_stride()) {
    const index_t b = g / (n * n), i = (g / n) % n, j = g % n;
    double sum = byzkern::combine_chunks<false>(partial, chunks, total, g);
    if (nonfinite_row[b * n + i] || nonfinite_row[b * n + j]) sum = byzkern::positive_infinity();
    D[g] = i == j ? 0.0 : sum;
  }
}

// Y[b, i, c] = X[b, i, c0 + c] - centre in double for the columns [c0, c0 + width), the centre
// being the column's value in its first row with a finite one: any per-column centre leaves the
// distances unchanged, an input value keeps float32 rows exact in double, and a NaN row sent
// first does not spoil every other row's sums. Rows with a non-finite entry are flagged.
template <class T>
__global__ void centre_columns(const T* X, index_t B, index_t n, index_t d, index_t c0, index_t width, double* Y,
                               int* nonfinite_row) {
  for (index_t g = byzkern::global_thread(); g < B * width; g += byzkern::global_stride()) {
    const index_t b = g / width, c = g - b * width;
    const T* column = X + b * n * d + c0 + c;
    double centre = 0.0;
    for (index_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(column[i * d]);
      if (isfinite(x)) {
        centre = x;
        break;
      }
    }
    double* out = Y + b * n * width + c;
    for (index_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(column[i * d]);
      if (!isfinite(x)) nonfinite_row[b * n + i] = 1;
      out[i * width] = x - centre;
    }
  }
}

// D from the Gram matrices G (B, n, n) of the centred rows: 0 on the diagonal, +Inf where either
// row has a non-finite entry, else N_i + N_j - 2 G_ij from the upper triangle. Pairs i < j where
// that is not clearly above its rounding error (or not finite: squares that overflow) get
// cancels = 1, for sqdist_pairs.
__global__ void gram_finish(const double* G, index_t B, index_t n, const int* nonfinite_row, double* D,
                            int* cancels) {
  const index_t total = B * n * n;
  for (index_t g = byzkern::global_thread(); g < total; g += byzkern::global_stride()) {
    const index_t b = g / (n * n), i = (g / n) % n, j = g % n;
    const double* item = G + b * n * n;
    int cancel = 0;
    double dist = 0.0;
    if (nonfinite_row[b * n + i] || nonfinite_row[b * n + j]) {
      dist = byzkern::positive_infinity();
    } else if (i != j) {
      const double norms = item[i * n + i] + item[j * n + j];
      dist = norms - 2.0 * item[(i < j ? i : j) * n + (i < j ? j : i)];
      cancel = i < j && !(isfinite(dist) && dist * kGramTrust > norms);
    }
    D[g] = i == j ? 0.0 : dist;
    cancels[g] = cancel;
  }
}

// D[b, i, j] = D[b, j, i] = the exact squared distance of rows i and j for each listed pair
// g = (b * n + i) * n + j: one block per pair, a deterministic block sum.
template <class T>
__global__ void sqdist_pairs(const T* X, index_t n, index_t d, const long long* pairs, index_t count, double* D) {
  for (index_t p = blockIdx.x; p < count; p += gridDim.x) {
    const index_t g = pairs[p], b = g / (n * n), i = (g / n) % n, j = g % n;
    const T* row_i = X + (b * n + i) * d;
    const T* row_j = X + (b * n + j) * d;
    double sum = 0.0;
    for (index_t c = threadIdx.x; c < d; c += blockDim.x) {
      const double diff = static_cast<double>(row_i[c]) - static_cast<double>(row_j[c]);
      sum += diff * diff;
    }
    const double total = byzkern::block_reduce<false>(sum);
    if (threadIdx.x == 0) D[g] = D[(b * n + j) * n + i] = total;
    __syncthreads();  // the next pair's block_reduce reuses the shared warp partials
  }
}

// out[b, j] = mean of X[b, idx[b, j, t]] over the t with idx >= 0, added in idx order, given
// offsets = idx * d (negative where idx is): with the row index itself, the compiler rebuilt each
// address as ((b * n + idx) * d + c) from 64-bit multiplies, 25 instructions a row where this
// takes 13. One thread per column of a batch item makes every output row of it: each element of
// X comes from DRAM once and its repeats (a row chosen by several outputs) from the cache, and a
// warp's writes are contiguous.
template <class T>
__global__ void mix_rows(const T* X, index_t B, index_t n, index_t d, const long long* offsets, index_t m,
                         index_t k, T* out) {
  for (index_t g = byzkern::global_thread(); g < B * d; g += byzkern::global_stride()) {
    const index_t b = g / d, c = g - b * d;
    const T* column = X + b * n * d + c;
    for (index_t j = 0; j < m; ++j) {
      const long long* chosen = offsets + (b * m + j) * k;
      double sum = 0.0;
      int count = 0;
      for (index_t t = 0; t < k; ++t) {
        const long long offset = chosen[t];
        if (offset >= 0) {
          sum += static_cast<double>(__ldg(column + offset));
          ++count;
        }
      }
      out[(b * m + j) * d + c] = static_cast<T>(sum / static_cast<double>(count));
    }
  }
}

// out[r] = the q-norm of row r from the chunk partials of Op; +Inf for rows with a non-finite entry.
template <class Op>
__global__ void row_norms_finish(const double* partial, index_t chunks, index_t rows, double q,
                                 const int* nonfinite_row, double* out) {
  for (index_t r = byzkern::global_thread(); r < rows; r += byzkern::global_stride()) {
    const double total = byzkern::combine_chunks<Op::kMax>(partial, chunks, rows, r);
    out[r] = nonfinite_row[r] ? byzkern::positive_infinity() : Op::root(total, q);
  }
}

// out[r, c] = X[r, c] * scale[r], the product in double and rounded once.
template <class T>
__global__ void scale_rows(const T* X, index_t rows, index_t d, const double* scale, T* out) {
  for (index_t g = byzkern::global_thread(); g < rows * d; g += byzkern::global_stride()) {
    out[g] = static_cast<T>(static_cast<double>(X[g]) * scale[g / d]);
  }
}
