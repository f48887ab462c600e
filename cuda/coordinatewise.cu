// Coordinate-wise rules on row-major (B, n, d) buffers: mean, cwmed, cwtm, meamed.
//
// One thread (or, for large n, one block) per column; consecutive threads read consecutive
// columns, so every row read is coalesced. Sums are accumulated in double, as the reference does.
//
// NaN orders above +Inf (nan_policy="outlier"): a column's NaNs are replaced by +Inf and counted,
// the column is sorted with plain fmin/fmax compare-exchanges, and the last `nans` sorted
// positions are read back as NaN. Padding to the network size is +Inf too, so the first n
// sorted positions always hold the column's own values.
#include "common.cuh"

namespace byzkern {

// Min and max inside the sorts, whose values are never NaN (NaN enters them as +Inf). For float,
// fminf and fmaxf are one instruction each; for double, fmin and fmax also handle NaN and
// compile to about ten (sm_90 has no double min/max), where a compare and selects do.
__device__ __forceinline__ float lower(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ float upper(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double lower(double a, double b) { return b < a ? b : a; }
__device__ __forceinline__ double upper(double a, double b) { return b < a ? a : b; }

// x, with NaN made +Inf: one min instruction for float.
__device__ __forceinline__ float nan_as_infinity(float x) { return fminf(x, static_cast<float>(positive_infinity())); }
__device__ __forceinline__ double nan_as_infinity(double x) { return isnan(x) ? positive_infinity() : x; }

__host__ __device__ constexpr int power_of_two_at_least(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Batcher's odd-even merge sort over a register array, for the next power of two P >= N with
// every comparator that reaches index N or beyond left out. Each comparator puts the smaller
// value at the lower index, so +Inf padding above the values stays where it is and the comparators
// that would touch it do nothing: the pruned network sorts N values, and sorts the first `rows` of
// them when the rest are +Inf. At N = 20 that is 103 comparators, against 240 for a bitonic sort
// of 32. Every index is a compile-time constant once the loops are unrolled, so the array never
// leaves registers.
template <class T, int N>
__device__ __forceinline__ void sort_network(T (&v)[N]) {
  constexpr int P = power_of_two_at_least(N);
#pragma unroll
  for (int p = 1; p < P; p <<= 1) {
#pragma unroll
    for (int k = p; k >= 1; k >>= 1) {
      // stage (p, k) compares lo with lo + k for lo in [j, j + k), j = k % p, k % p + 2k, ...,
      // while both lie in the same block of 2p
#pragma unroll
      for (int lo = 0; lo < N; ++lo) {
        const int hi = lo + k, first = k % p;
        if (lo >= first && (lo - first) % (2 * k) < k && hi < N && lo / (2 * p) == hi / (2 * p)) {
          const T a = v[lo], b = v[hi];
          v[lo] = lower(a, b);
          v[hi] = upper(a, b);
        }
      }
    }
  }
}

// Position i of a sorted column whose top `nans` values were NaN before sorting.
template <class T>
__device__ __forceinline__ double sorted_at(const T* s, index_t i, index_t n, index_t nans) {
  return i >= n - nans ? quiet_nan() : static_cast<double>(s[i]);
}

// A sorted network's registers, copied for reading at run-time positions: a run-time index into
// the network's own array would move all of it to local memory.
template <class T, int N>
__device__ __forceinline__ void copy_registers(const T (&from)[N], T (&to)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) to[i] = from[i];
}

// Rules that may read any position of the sorted column read a copy.
template <class Rule>
struct AnyPosition {
  template <int Fewest, class T, int N>
  __device__ static double of_network(const T (&v)[N], index_t n, index_t nans, index_t f) {
    T sorted[N];
    copy_registers(v, sorted);
    return Rule::of_sorted(sorted, n, nans, f);
  }
};

struct Median {
  // NumPy's convention: for even n the mean of the two middle values; halves first so huge
  // float64 values do not overflow.
  template <class T>
  __device__ static double of_sorted(const T* s, index_t n, index_t nans, index_t) {
    return 0.5 * sorted_at(s, (n - 1) / 2, n, nans) + 0.5 * sorted_at(s, n / 2, n, nans);
  }

  // With Fewest <= n <= N the middle positions lie in [(Fewest - 1) / 2, N / 2]; selecting among
  // only those leaves dead every comparator that feeds no other position (at N = 20 and Fewest
  // = 17, 49 of the network's 206 min/max).
  template <int Fewest, class T, int N>
  __device__ static double of_network(const T (&v)[N], index_t n, index_t nans, index_t) {
    return 0.5 * middle<Fewest>(v, (n - 1) / 2, n, nans) + 0.5 * middle<Fewest>(v, n / 2, n, nans);
  }

  template <int Fewest, class T, int N>
  __device__ static double middle(const T (&v)[N], index_t i, index_t n, index_t nans) {
    constexpr int first = Fewest > 0 ? (Fewest - 1) / 2 : 0;
    T value = v[N / 2];
#pragma unroll
    for (int j = first; j < N / 2; ++j) value = i == j ? v[j] : value;
    return i >= n - nans ? quiet_nan() : static_cast<double>(value);
  }
};

struct TrimmedMean : AnyPosition<TrimmedMean> {
  template <class T>
  __device__ static double of_sorted(const T* s, index_t n, index_t nans, index_t f) {
    double sum = 0.0;
    for (index_t i = f; i < n - f; ++i) sum += sorted_at(s, i, n, nans);
    return sum / static_cast<double>(n - 2 * f);
  }
};

struct MeanAroundMedian : AnyPosition<MeanAroundMedian> {
  // The n - f values closest to the median form a window [lo, lo + n - f) of the sorted column.
  // Sliding the window right by one swaps s[lo] for s[lo + m]; that happens exactly while the
  // new value is strictly closer, so ties in distance keep the smaller value (the reference's
  // stable order). A NaN distance (NaN value, or Inf minus Inf) counts as +Inf, as there.
  template <class T>
  __device__ static double of_sorted(const T* s, index_t n, index_t nans, index_t f) {
    const double median = Median::of_sorted(s, n, nans, f);
    const index_t m = n - f;
    index_t lo = 0;
    for (index_t l = 0; l < f; ++l) {
      if (distance(sorted_at(s, l + m, n, nans), median) < distance(sorted_at(s, l, n, nans), median)) ++lo;
    }
    double sum = 0.0;
    for (index_t i = lo; i < lo + m; ++i) sum += sorted_at(s, i, n, nans);
    return sum / static_cast<double>(m);
  }

  __device__ static double distance(double x, double median) {
    const double dist = fabs(x - median);
    return isnan(dist) ? positive_infinity() : dist;
  }
};

// Small n: one thread per column, the column sorted in registers by a network of size N >= n.
// The first `rows` values of a column (entries d apart), Fewest <= rows <= N, NaN replaced by
// +Inf, padded with +Inf to N and sorted, into v; returns how many were NaN. The first Fewest
// rows load without a test.
template <int Fewest, class T, int N>
__device__ __forceinline__ index_t sort_column(const T* column, index_t d, index_t rows, T (&v)[N]) {
  const T infinity = static_cast<T>(positive_infinity());
  const int valid = static_cast<int>(rows);  // rows <= N
  // NaN exactly when a value is NaN or the sum meets both infinities (the padding and overflow
  // count): one floating-point add per value, where counting NaNs value by value took a test and
  // an add on the ALU pipe, which the network's min/max keeps busy. The rare columns it flags are
  // counted again.
  T total = 0;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const T x = i < Fewest || i < valid ? column[i * d] : infinity;
    total += x;
    v[i] = nan_as_infinity(x);
  }
  int nans = 0;
  if (isnan(total)) {
    // to N, not to `valid`: a run-time trip count made the compiler copy the whole kernel for
    // columns of no rows
#pragma unroll 1
    for (int i = 0; i < N; ++i) nans += i < valid && isnan(column[i * d]);
  }
  sort_network(v);
  return nans;
}

template <class T, int Fewest, int N, class Rule>
__device__ void columns_in_registers(const T* X, index_t B, index_t n, index_t d, index_t f, T* out) {
  for (index_t g = global_thread(); g < B * d; g += global_stride()) {
    const index_t b = g / d, c = g - b * d;
    T v[N];
    const index_t nans = sort_column<Fewest>(X + b * n * d + c, d, n, v);
    out[g] = static_cast<T>(Rule::template of_network<Fewest>(v, n, nans, f));
  }
}

// candidate_deviations for small h + f: the squared distance from mu of the rule of each attack
// candidate (H's h rows, then f rows of candidate_value) without building the candidates. One
// thread per column sorts its h honest values once; each candidate's sorted column is then a
// merge: with r honest values below the Byzantine one, position p holds honest value p for
// p < r, the Byzantine value for r <= p < r + f, and honest value p - f after
// (csrc/coordinatewise.cpp). A block covers blockDim.x columns of one batch item and sums each
// candidate's squares in a fixed order: partial[(k * B + b) * E + e] for its chunk k.
template <class T, int N, class Rule>
__device__ void candidates_in_registers(const T* H, const T* mu, const T* direction, const double* etas, index_t B,
                                        index_t h, index_t d, index_t E, index_t f, index_t trim, double* partial) {
  const T infinity = static_cast<T>(positive_infinity());
  const index_t n = h + f, chunks = (d + blockDim.x - 1) / blockDim.x;
  for (index_t job = blockIdx.x; job < B * chunks; job += gridDim.x) {
    const index_t k = job / B, b = job - k * B, c = k * blockDim.x + threadIdx.x;
    const bool active = c < d;
    T sorted[N];
    const index_t honest_nans = sort_column<0>(H + b * h * d + c, d, active ? h : 0, sorted);
    T honest[N];
    copy_registers(sorted, honest);
    for (index_t e = 0; e < E; ++e) {
      double square = 0.0;
      if (active) {
        T byzantine = candidate_value(mu[b * d + c], etas[e], direction[b * d + c]);
        index_t nans = honest_nans;
        if (isnan(byzantine)) {
          byzantine = infinity;
          nans += f;
        }
        T merged[N];
        for (index_t p = 0; p < n; ++p) {
          const T at = p < h ? honest[p] : byzantine;
          const T shifted = p >= f ? honest[p - f] : byzantine;
          merged[p] = at < byzantine ? at : shifted < byzantine ? byzantine : shifted;
        }
        const double gap = static_cast<double>(static_cast<T>(Rule::of_sorted(merged, n, nans, trim))) -
                           static_cast<double>(mu[b * d + c]);
        square = gap * gap;
      }
      const double total = block_reduce<false>(square);
      if (threadIdx.x == 0) partial[(k * B + b) * E + e] = total;
      __syncthreads();  // the next block_reduce reuses the shared warp partials
    }
  }
}

constexpr int kMaxBlockColumns = 32;

// Large n: one block per group of `columns` adjacent columns of one batch item. The group is
// transposed into `buffer` (shared memory, or a global scratch slice when n is too large for
// it), padded to n_pad = 2^k and sorted by a cooperative bitonic network.
template <class T, class Rule>
__device__ void columns_in_blocks(const T* X, index_t B, index_t n, index_t d, index_t f, index_t n_pad,
                                  index_t columns, T* global_scratch, T* out) {
  extern __shared__ unsigned char shared_bytes[];
  __shared__ int nan_count[kMaxBlockColumns];
  const T infinity = static_cast<T>(positive_infinity());
  const index_t groups_per_item = (d + columns - 1) / columns;
  const index_t groups = B * groups_per_item;
  for (index_t group = blockIdx.x; group < groups; group += gridDim.x) {
    const index_t b = group / groups_per_item, c0 = (group - b * groups_per_item) * columns;
    T* buffer = global_scratch ? global_scratch + static_cast<index_t>(blockIdx.x) * columns * n_pad
                               : reinterpret_cast<T*>(shared_bytes);
    if (threadIdx.x < kMaxBlockColumns) nan_count[threadIdx.x] = 0;
    __syncthreads();
    for (index_t e = threadIdx.x; e < columns * n_pad; e += blockDim.x) {
      const index_t c = e % columns, i = e / columns;  // consecutive threads: consecutive columns
      T x = (i < n && c0 + c < d) ? X[b * n * d + i * d + c0 + c] : infinity;
      if (isnan(x)) {
        x = infinity;
        atomicAdd(&nan_count[c], 1);
      }
      buffer[c * n_pad + i] = x;
    }
    __syncthreads();
    const index_t half = n_pad / 2;
    for (index_t k = 2; k <= n_pad; k <<= 1) {
      for (index_t j = k >> 1; j > 0; j >>= 1) {
        for (index_t p = threadIdx.x; p < columns * half; p += blockDim.x) {
          const index_t c = p / half, q = p - c * half;
          const index_t i = (q / j) * 2 * j + q % j;
          T* s = buffer + c * n_pad;
          const T a = s[i], bv = s[i + j];
          const bool ascending = (i & k) == 0;
          s[i] = ascending ? lower(a, bv) : upper(a, bv);
          s[i + j] = ascending ? upper(a, bv) : lower(a, bv);
        }
        __syncthreads();
      }
    }
    if (threadIdx.x < columns && c0 + threadIdx.x < d) {
      const index_t c = threadIdx.x;
      out[b * d + c0 + c] = static_cast<T>(Rule::of_sorted(buffer + c * n_pad, n, nan_count[c], f));
    }
    __syncthreads();
  }
}

}  // namespace byzkern

using byzkern::index_t;

// out[r] = the sum of the chunk partials of r.
__global__ void sum_chunks(const double* partial, index_t chunks, index_t rows, double* out) {
  for (index_t r = byzkern::global_thread(); r < rows; r += byzkern::global_stride()) {
    out[r] = byzkern::combine_chunks<false>(partial, chunks, rows, r);
  }
}

// Mean over rows, one thread per column.
template <class T>
__global__ void mean_columns(const T* X, index_t B, index_t n, index_t d, T* out) {
  for (index_t g = byzkern::global_thread(); g < B * d; g += byzkern::global_stride()) {
    const index_t b = g / d, c = g - b * d;
    const T* column = X + b * n * d + c;
    double sum = 0.0;
    for (index_t i = 0; i < n; ++i) sum += static_cast<double>(column[i * d]);
    out[g] = static_cast<T>(sum / static_cast<double>(n));
  }
}

#define BYZKERN_COORDINATEWISE_KERNELS(NAME, RULE)                                                    \
  template <class T, int Fewest, int N>                                                               \
  __global__ void NAME##_registers(const T* X, index_t B, index_t n, index_t d, index_t f, T* out) {  \
    byzkern::columns_in_registers<T, Fewest, N, byzkern::RULE>(X, B, n, d, f, out);                   \
  }                                                                                                   \
  template <class T, int N>                                                                           \
  __global__ void NAME##_candidates(const T* H, const T* mu, const T* direction, const double* etas,  \
                                    index_t B, index_t h, index_t d, index_t E, index_t f,            \
                                    index_t trim, double* partial) {                                  \
    byzkern::candidates_in_registers<T, N, byzkern::RULE>(H, mu, direction, etas, B, h, d, E, f, trim, \
                                                          partial);                                   \
  }                                                                                                   \
  template <class T>                                                                                  \
  __global__ void NAME##_blocks(const T* X, index_t B, index_t n, index_t d, index_t f, index_t n_pad, \
                                index_t columns, T* global_scratch, T* out) {                         \
    byzkern::columns_in_blocks<T, byzkern::RULE>(X, B, n, d, f, n_pad, columns, global_scratch, out); \
  }

BYZKERN_COORDINATEWISE_KERNELS(cwmed, Median)
BYZKERN_COORDINATEWISE_KERNELS(cwtm, TrimmedMean)
BYZKERN_COORDINATEWISE_KERNELS(meamed, MeanAroundMedian)
