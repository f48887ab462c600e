// Distances and row-wise maps: pairwise_sqdist (shared by Krum, Multi-Krum and NNM), row norms,
// row mixing (every pre-aggregator but clip is a mean of chosen rows) and static clipping.
#include "distances.hpp"

#include <omp.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

namespace byzkern {

// ---- pairwise_sqdist -----------------------------------------------------------------------
// A centred Gram matrix in double, with exact differences where it would cancel.
//
// Per block of columns the rows are converted to double and centred, y_i = x_i - c with c_k one
// of the column's input values (block_centre; any per-column c leaves every distance unchanged,
// and input values keep y exact in double for float32 input and integer data integer, so exact
// ties stay ties); then N_i = |y_i|^2 and G_ij = y_i . y_j are summed and
// D_ij = N_i + N_j - 2 G_ij. That is one multiply-add per pair and column, where exact
// differences take a subtraction, a multiply and an add and a horizontal sum per pair and block.
// Its rounding error is a few ulps of N_i + N_j, so where D_ij is not clearly larger than
// N_i + N_j (nearly equal rows, or rows much closer to each other than to the centre) the
// distance is recomputed from exact differences (x_i - x_j) formed in double from the input
// values. Both kinds of sum are per slab, then in slab order: 1 and 2 threads give the same
// bits. A row with a NaN or Inf entry is at +Inf from every other row.

constexpr index_t PAIR_ROWS = 4;  // rows are padded to a multiple of 4 (a register block side)
// Gram distances are kept when D_ij > (N_i + N_j) / GRAM_TRUST: their error, a few ulps of
// N_i + N_j, is then at most 2 * GRAM_TRUST times that many ulps of D_ij.
constexpr double GRAM_TRUST = 4.0;

inline index_t padded_rows(index_t n) { return (n + PAIR_ROWS - 1) / PAIR_ROWS * PAIR_ROWS; }

// Columns per block of the exact sums: n_padded rows of doubles in about 32 KiB (L1), a multiple
// of 4 lanes.
inline index_t pair_block_columns(index_t n_padded) {
  return std::max<index_t>(16, std::min<index_t>(512, 4096 / n_padded)) / 4 * 4;
}
// Columns per block of the Gram sums. Each register tile sums a whole block before it touches G,
// so long blocks keep G's loads and stores and the tiles' starts rare, but where the block's
// centred rows (np x cols doubles) can fit in 16 KiB (half of L1, next to the prefetched next
// block) with at least 64 columns, they do (100 columns at n = 20): at (20, 1e6), 1 thread, 96
// columns took 0.92 of the time of 128 (15 against 20 KiB); 64 and 160 took 1.04 and 1.05 of
// 100's; at n = 64, 64 columns 1.03 of 128's. Else 128, or fewer where the rows would pass
// 256 KiB (L2).
inline index_t gram_block_columns(index_t n_padded) {
  const index_t in_half_l1 = (2 << 10) / n_padded / 4 * 4;
  if (in_half_l1 >= 64) return std::min<index_t>(128, in_half_l1);
  return std::max<index_t>(16, std::min<index_t>(128, (32 << 10) / n_padded)) / 4 * 4;
}

// Asks for the columns [c, c + w) of every row a few lines at a time, spread over `calls` calls
// of next(): the rows are n separate streams, more than the hardware prefetcher follows, and
// asked for in one burst per group of four rows they filled the miss buffers (spread: 0.89 of
// the time at (64, 3e5), 1 thread).
template <class T>
class SpreadPrefetch {
 public:
  SpreadPrefetch(const T* const* rows, index_t n, index_t c, index_t w, index_t calls)
      : rows_(rows), n_(n), c_(c), line_end_(w), per_call_((n * ((w + LINE - 1) / LINE) + calls - 1) / calls) {}
  void next() {  // counters, not a division per line: those took 14% of the time at (20, 8200)
    for (index_t count = 0; count < per_call_ && row_ < n_; ++count) {
      __builtin_prefetch(rows_[row_] + c_ + k_);
      k_ += LINE;
      if (k_ >= line_end_) k_ = 0, ++row_;
    }
  }

 private:
  static constexpr index_t LINE = 64 / static_cast<index_t>(sizeof(T));  // values per cache line
  const T* const* rows_;
  index_t n_, c_, line_end_, per_call_, row_ = 0, k_ = 0;
};

inline double median3(double a, double b, double e) { return std::max(std::min(a, b), std::min(std::max(a, b), e)); }

// The centre of one block of columns. c_k = the median of x_0k, x_(n/2)k and x_(n-1)k, an input
// value (so y = x - c stays exact in double for float32 input, and integer data integer) that
// one outlying row among the three does not move: centred on an outlier, every honest pair
// would have N_i + N_j >> D_ij and be recomputed. Byzantine rows usually come as a block at
// one end. If one of the three rows has a NaN or Inf in the block: the lowest finite x_ik.
template <class T>
inline void block_centre(const T* const* rows, index_t n, index_t c, index_t w, double* centre) {
  const T *x0 = rows[0] + c, *x1 = rows[n / 2] + c, *x2 = rows[n - 1] + c;
  v4d check = {0, 0, 0, 0};  // NaN in a lane as soon as one of its values is NaN or +-Inf
  index_t k = 0;
  for (; k + 4 <= w; k += 4) {
    const v4d a = load4_as_double(x0 + k), b = load4_as_double(x1 + k), e = load4_as_double(x2 + k);
    check += (a + b + e) * 0.0;
    const v4d lo = b < a ? b : a, hi = a < b ? b : a;  // std::min and std::max, lane by lane
    const v4d mid = e < hi ? e : hi;
    store_vec(centre + k, lo < mid ? mid : lo);
  }
  double tail_check = 0.0;
  for (; k < w; ++k) {
    const double a = x0[k], b = x1[k], e = x2[k];
    tail_check += (a + b + e) * 0.0;
    centre[k] = median3(a, b, e);
  }
  if (sum_lanes(check) + tail_check == 0.0) return;
  std::fill(centre, centre + w, 0.0);
  for (index_t i = n - 1; i >= 0; --i)
    for (index_t kk = 0; kk < w; ++kk) {
      const double v = static_cast<double>(rows[i][c + kk]);
      centre[kk] = v - v == 0.0 ? v : centre[kk];
    }
}

// The centred block is stored in panels of four rows: rows 4p..4p+3 and columns k..k+3 (k a
// multiple of 4) are the 16 doubles from Y + (4p * cols + 4k), row by row, so the rows a tile
// reads are one stream (as four separate rows, the tiles' loads missed L1 at n = 256).
inline index_t row_in_panels(index_t cols, index_t i) { return i / 4 * 4 * cols + i % 4 * 4; }

// Row i of the block from column k0 (a multiple of 4) on, into its panel: x_ik - c_k for k < w,
// then zeros up to a multiple of 4 columns; all zeros for a padding row i >= n.
template <class T>
inline void centred_row(const T* const* rows, index_t n, index_t i, index_t c, index_t k0, index_t w, index_t cols,
                        const double* centre, double* Y) {
  double* y = Y + row_in_panels(cols, i);
  index_t k = k0;
  if (i < n) {
    const T* x = rows[i] + c;
    for (; k + 4 <= w; k += 4) store_vec(y + 4 * k, load4_as_double(x + k) - load_vec<v4d>(centre + k));
    for (; k < w; ++k) y[4 * (k - k % 4) + k % 4] = static_cast<double>(x[k]) - centre[k];
  }
  for (; k % 4 != 0; ++k) y[4 * (k - k % 4) + k % 4] = 0.0;
}

// The lane sums (l0 + l1) + (l2 + l3) of four vectors of partial sums, as one vector (the order
// sum_lanes adds them in).
inline v4d lane_sums(const v4d& a, const v4d& b, const v4d& c, const v4d& e) {
  typedef long long v4i __attribute__((vector_size(32)));
  const v4d ab = __builtin_shuffle(a, b, v4i{0, 4, 2, 6}) + __builtin_shuffle(a, b, v4i{1, 5, 3, 7});
  const v4d ce = __builtin_shuffle(c, e, v4i{0, 4, 2, 6}) + __builtin_shuffle(c, e, v4i{1, 5, 3, 7});
  return __builtin_shuffle(ab, ce, v4i{0, 1, 4, 5}) + __builtin_shuffle(ab, ce, v4i{2, 3, 6, 7});
}

// How the Gram sums add a product: c + a * b. The AVX2 and AVX-512 tiers fuse it (one rounding):
// on Zen 4 the separate adds shared their pipes with the conversions and subtractions of the
// centring, and fused the sums took 0.81 of the time at (20, 1e5), 0.86 at (64, 3e5) and 0.84 at
// (256, 1e5) (1 thread, CPU time, in cache). The baseline has no FMA and rounds the product too,
// so its Gram sums (and only those) can differ from the other tiers' in the last bits.
struct SeparateMultiplyAdd {
  static v4d madd(const v4d& a, const v4d& b, const v4d& c) { return c + a * b; }
};
struct FusedMultiplyAdd {
  BYZKERN_AVX2 static v4d madd(const v4d& a, const v4d& b, const v4d& c) { return _mm256_fmadd_pd(a, b, c); }
};

// Every Gram entry of a block is four sums in SIMD lanes, lane l over the columns k = l mod 4 in
// order, then (l0 + l1) + (l2 + l3) added to G: the same chain of roundings whatever tile
// computes it, so the AVX2 and AVX-512 tiers can take different tile shapes and give the same bits.
//
// G[i0 + r, j0 + q] += that sum, for R rows from i0 and 4 from j0 (R x 4 vectors of sums in
// registers: AVX2 has 16, for 2 x 4; AVX-512 32 (with VL, 256-bit vectors too), for 4 x 4).
template <int R, class M>
inline void gram_tile(const double* Y, index_t cols, index_t w4, index_t i0, index_t j0, index_t np, double* G) {
  v4d acc[R][4] = {};
  const double* yi = Y + row_in_panels(cols, i0);
  const double* yj = Y + row_in_panels(cols, j0);
  for (index_t k = 0; k < w4; k += 4) {
    v4d b[4];
    for (int q = 0; q < 4; ++q) b[q] = load_vec<v4d>(yj + 4 * (k + q));
    for (int r = 0; r < R; ++r) {
      const v4d a = load_vec<v4d>(yi + 4 * (k + r));
      for (int q = 0; q < 4; ++q) acc[r][q] = M::madd(a, b[q], acc[r][q]);
    }
  }
  for (int r = 0; r < R; ++r) {
    double* g = G + (i0 + r) * np + j0;
    store_vec(g, load_vec<v4d>(g) + lane_sums(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
  }
}

// The same for the ten pairs i <= j of the rows [i0, i0 + 4), which it first centres into their
// panel: it loads the input values once for both, where a pass of its own took a fifth of the
// time at n = 20.
template <class T, class M>
inline void gram_triangle(const T* const* rows, index_t n, index_t c, index_t w, index_t cols, const double* centre,
                          index_t i0, index_t np, double* Y, double* G) {
  v4d a00 = {}, a01 = {}, a02 = {}, a03 = {}, a11 = {}, a12 = {}, a13 = {}, a22 = {}, a23 = {}, a33 = {};
  const auto add_products = [&](const v4d& y0, const v4d& y1, const v4d& y2, const v4d& y3) {
    a00 = M::madd(y0, y0, a00), a01 = M::madd(y0, y1, a01), a02 = M::madd(y0, y2, a02), a03 = M::madd(y0, y3, a03);
    a11 = M::madd(y1, y1, a11), a12 = M::madd(y1, y2, a12), a13 = M::madd(y1, y3, a13);
    a22 = M::madd(y2, y2, a22), a23 = M::madd(y2, y3, a23);
    a33 = M::madd(y3, y3, a33);
  };
  double* y = Y + row_in_panels(cols, i0);
  index_t k = 0;
  if (i0 + 4 <= n) {  // else padding rows: centred_row fills them with zeros
    const T *x0 = rows[i0] + c, *x1 = rows[i0 + 1] + c, *x2 = rows[i0 + 2] + c, *x3 = rows[i0 + 3] + c;
    for (; k + 4 <= w; k += 4) {
      const v4d cen = load_vec<v4d>(centre + k);
      const v4d y0 = load4_as_double(x0 + k) - cen, y1 = load4_as_double(x1 + k) - cen;
      const v4d y2 = load4_as_double(x2 + k) - cen, y3 = load4_as_double(x3 + k) - cen;
      store_vec(y + 4 * k, y0);
      store_vec(y + 4 * k + 4, y1);
      store_vec(y + 4 * k + 8, y2);
      store_vec(y + 4 * k + 12, y3);
      add_products(y0, y1, y2, y3);
    }
  }
  for (index_t r = 0; r < 4; ++r) centred_row(rows, n, i0 + r, c, k, w, cols, centre, Y);
  for (; k < w; k += 4)
    add_products(load_vec<v4d>(y + 4 * k), load_vec<v4d>(y + 4 * k + 4), load_vec<v4d>(y + 4 * k + 8),
                 load_vec<v4d>(y + 4 * k + 12));
  double* g = G + i0 * np + i0;
  store_vec(g, load_vec<v4d>(g) + lane_sums(a00, a01, a02, a03));
  const v4d zero = {0, 0, 0, 0}, s1 = lane_sums(a11, a12, a13, zero), s23 = lane_sums(a22, a23, a33, zero);
  for (int q = 0; q < 3; ++q) g[np + 1 + q] += s1[q];
  g[2 * np + 2] += s23[0];
  g[2 * np + 3] += s23[1];
  g[3 * np + 3] += s23[2];
}

// The Gram sums of the rows over the columns [c0, c1), block by block, into G (np x np, the
// entries with j >= i). Four rows from j0 at a time: their own pairs (which centres them), then
// against every row before them, so the four stay in L1 while the others stream from L1 or L2;
// tiles of R rows (R = 2 or 4).
template <class T, int R, class M>
inline void gram_slab(const T* const* rows, index_t n, index_t c0, index_t c1, index_t cols, double* Y, double* G) {
  const index_t np = padded_rows(n), groups = np / 4;
  const index_t calls = groups + 4 / R * groups * (groups - 1) / 2;  // triangles and tiles per block
  double* centre = Y + np * cols;
  for (index_t c = c0; c < c1; c += cols) {
    const index_t w = std::min(cols, c1 - c), w4 = (w + 3) / 4 * 4;
    SpreadPrefetch<T> next_block(rows, n, c + w, std::min(cols, c1 - c - w), calls);
    block_centre(rows, n, c, w, centre);
    for (index_t j0 = 0; j0 < np; j0 += 4) {
      next_block.next();
      gram_triangle<T, M>(rows, n, c, w, cols, centre, j0, np, Y, G);
      for (index_t i0 = 0; i0 < j0; i0 += R) {
        next_block.next();
        gram_tile<R, M>(Y, cols, w4, i0, j0, np, G);
      }
    }
  }
}
BYZKERN_DISPATCH3_CALLS(gram_slab_dispatched, (gram_slab<T, 2, SeparateMultiplyAdd>),
                        (gram_slab<T, 2, FusedMultiplyAdd>), (gram_slab<T, 4, FusedMultiplyAdd>))

// Exact differences, for the pairs the Gram sums cannot give: each block of columns is converted
// to double once and reused by all pairs; a 2 x 4 block of row pairs keeps its eight partial
// sums in registers. Fills P (n x n) for j >= i.
template <class T>
inline void exact_slab(const T* const* rows, index_t n, index_t c0, index_t c1, index_t cols, double* xd, double* P) {
  const index_t np = padded_rows(n);
  for (index_t c = c0; c < c1; c += cols) {
    const index_t w = std::min(cols, c1 - c), w4 = (w + 3) / 4 * 4;
    for (index_t i = 0; i < np; ++i) {
      double* row = xd + i * cols;
      if (i < n)
        for (index_t k = 0; k < w; ++k) row[k] = static_cast<double>(rows[i][c + k]);
      std::fill(row + (i < n ? w : 0), row + w4, 0.0);
    }
    for (index_t I = 0; I < np; I += 2) {
      for (index_t J = I / PAIR_ROWS * PAIR_ROWS; J < np; J += PAIR_ROWS) {
        v4d acc[2][4] = {};
        const double* xi = xd + I * cols;
        const double* xj = xd + J * cols;
        for (index_t k = 0; k < w4; k += 4) {
          const v4d a0 = load_vec<v4d>(xi + k), a1 = load_vec<v4d>(xi + cols + k);
          for (int q = 0; q < 4; ++q) {
            const v4d b = load_vec<v4d>(xj + q * cols + k);
            const v4d t0 = a0 - b, t1 = a1 - b;
            acc[0][q] += t0 * t0;
            acc[1][q] += t1 * t1;
          }
        }
        for (int r = 0; r < 2; ++r)
          for (int q = 0; q < 4; ++q) {
            const index_t i = I + r, j = J + q;
            if (i <= j && j < n) P[i * n + j] += sum_lanes(acc[r][q]);
          }
      }
    }
  }
}
BYZKERN_DISPATCH(exact_slab_dispatched, exact_slab)

// The pair sums (Gram or exact) of `rows` (count per batch item, item b's at rows + b * count)
// over all columns, per slab in parallel, then added in slab order into S (B, count, count),
// for j >= i.
template <class T, bool exact>
void pair_sums_over_slabs(const T* const* rows, index_t B, index_t count, index_t d, index_t tile,
                          index_t max_slabs, double* S) {
  const Slabs slabs(d, tile, max_slabs);
  const index_t np = padded_rows(count), stride = exact ? count : np;
  const index_t cols = exact ? pair_block_columns(np) : gram_block_columns(np);
  std::vector<double> partial(B * slabs.count * stride * stride, 0.0);
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    std::vector<double> buffer((np + 1) * cols);
    double* P = partial.data() + (b * slabs.count + s) * stride * stride;
    if (exact)
      exact_slab_dispatched<T>(rows + b * count, count, c0, c1, cols, buffer.data(), P);
    else
      gram_slab_dispatched<T>(rows + b * count, count, c0, c1, cols, buffer.data(), P);
  });
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < count; ++i)
      for (index_t j = i; j < count; ++j) {
        double sum = 0.0;
        for (index_t s = 0; s < slabs.count; ++s) sum += partial[((b * slabs.count + s) * stride + i) * stride + j];
        S[(b * count + i) * count + j] = sum;
      }
}

template <class T>
void pairwise_sqdist(const T* X, index_t B, index_t n, index_t d, index_t tile, index_t max_slabs, double* D) {
  std::vector<const T*> rows(B * n);
  for (index_t r = 0; r < B * n; ++r) rows[r] = X + r * d;
  std::vector<double> G(B * n * n);
  pair_sums_over_slabs<T, false>(rows.data(), B, n, d, tile, max_slabs, G.data());
  for (index_t b = 0; b < B; ++b) {
    const double* Gb = G.data() + b * n * n;
    double* Db = D + b * n * n;
    std::vector<char> recompute(n * n, 0);
    std::vector<index_t> near;  // rows of the pairs to recompute, ascending
    // A centred norm overflows for a finite row far from the centre (the centre can be an
    // outlier's value); only a row with a NaN or Inf entry is at +Inf from every other row.
    std::vector<char> finite_row(n);
    for (index_t i = 0; i < n; ++i) {
      const T* x = X + (b * n + i) * d;
      finite_row[i] = std::isfinite(Gb[i * n + i]) || std::all_of(x, x + d, [](T v) { return std::isfinite(v); });
    }
    for (index_t i = 0; i < n; ++i) {
      Db[i * n + i] = 0.0;
      for (index_t j = i + 1; j < n; ++j) {
        const double norms = Gb[i * n + i] + Gb[j * n + j], dist = norms - 2.0 * Gb[i * n + j];
        Db[i * n + j] = Db[j * n + i] = std::isfinite(dist) ? dist : std::numeric_limits<double>::infinity();
        const bool cancels = std::isfinite(dist) && dist * GRAM_TRUST <= norms;
        const bool overflowed = !std::isfinite(dist) && finite_row[i] && finite_row[j];
        if (cancels || overflowed) recompute[i * n + j] = recompute[j * n + i] = 1;
      }
    }
    for (index_t i = 0; i < n; ++i)
      if (std::count(recompute.begin() + i * n, recompute.begin() + (i + 1) * n, 1) > 0) near.push_back(i);
    if (near.empty()) continue;
    const index_t m = static_cast<index_t>(near.size());
    std::vector<const T*> near_rows(m);
    for (index_t a = 0; a < m; ++a) near_rows[a] = X + (b * n + near[a]) * d;
    std::vector<double> E(m * m);
    pair_sums_over_slabs<T, true>(near_rows.data(), 1, m, d, tile, max_slabs, E.data());
    for (index_t a = 0; a < m; ++a)
      for (index_t c = a + 1; c < m; ++c) {
        const index_t i = near[a], j = near[c];
        if (recompute[i * n + j]) Db[i * n + j] = Db[j * n + i] = E[a * m + c];
      }
  }
}

// ---- row norms -----------------------------------------------------------------------------

enum class NormKind { one, two, max, power };

struct NormPart {
  double value = 0.0;    // sum of |x|, x^2 or |x|^q, or max |x|
  double nonfinite = 0;  // sum of x * 0: NaN as soon as one entry is NaN or +-Inf
};

// Four independent sums of four lanes each, and the kind a template argument so that they stay
// in registers: one chain of adds (4 cycles per 4 values), or four spilled to the stack where
// the power norm's lane loop made the array addressable, bound the loop below memory speed
// (row_norms at (20, 1e6) took longer than norm_filter's mix of 16 of the rows).
constexpr int NORM_CHAINS = 4;

template <NormKind kind, class T>
inline void norm_part_of_kind(const T* x, index_t w, double q, NormPart& part) {
  v4d acc[NORM_CHAINS] = {}, check[NORM_CHAINS] = {};
  index_t k = 0;
  for (; k + 4 * NORM_CHAINS <= w; k += 4 * NORM_CHAINS)
    for (int j = 0; j < NORM_CHAINS; ++j) {
      const v4d a = load4_as_double(x + k + 4 * j);
      const v4d absa = a < 0 ? -a : a;
      check[j] += a * 0.0;
      if constexpr (kind == NormKind::two) {
        acc[j] += a * a;
      } else if constexpr (kind == NormKind::one) {
        acc[j] += absa;
      } else if constexpr (kind == NormKind::max) {
        acc[j] = absa > acc[j] ? absa : acc[j];
      } else {
        const v4d powers = {std::pow(absa[0], q), std::pow(absa[1], q), std::pow(absa[2], q), std::pow(absa[3], q)};
        acc[j] += powers;
      }
    }
  for (int j = 1; j < NORM_CHAINS; ++j) {
    if constexpr (kind == NormKind::max)
      acc[0] = acc[j] > acc[0] ? acc[j] : acc[0];
    else
      acc[0] += acc[j];
    check[0] += check[j];
  }
  double value = kind == NormKind::max ? std::max(std::max(acc[0][0], acc[0][1]), std::max(acc[0][2], acc[0][3]))
                                       : sum_lanes(acc[0]);
  double tail_check = 0.0;
  for (; k < w; ++k) {
    const double a = static_cast<double>(x[k]), absa = std::fabs(a);
    tail_check += a * 0.0;
    if constexpr (kind == NormKind::two) value += a * a;
    else if constexpr (kind == NormKind::one) value += absa;
    else if constexpr (kind == NormKind::max) value = std::max(value, absa);
    else value += std::pow(absa, q);
  }
  part.value = kind == NormKind::max ? std::max(part.value, value) : part.value + value;
  part.nonfinite += sum_lanes(check[0]) + tail_check;
}

template <class T>
inline void norm_part(const T* x, index_t w, NormKind kind, double q, NormPart& part) {
  switch (kind) {
    case NormKind::one: return norm_part_of_kind<NormKind::one>(x, w, q, part);
    case NormKind::two: return norm_part_of_kind<NormKind::two>(x, w, q, part);
    case NormKind::max: return norm_part_of_kind<NormKind::max>(x, w, q, part);
    case NormKind::power: return norm_part_of_kind<NormKind::power>(x, w, q, part);
  }
}

// Each row's part of a slab in one run, as mean reads its rows (_config.MEAN_TILE): the 20
// streams of a tile by tile order restarted every 16 KiB at (20, 1e6), which took 2.65-3.16 ms at
// 2 threads against 1.87-2.17 ms (a mean: 2.05-2.78).
template <class T>
inline void norm_slab(const T* Xb, index_t n, index_t d, index_t c0, index_t c1, NormKind kind, double q,
                      NormPart* parts) {
  for (index_t i = 0; i < n; ++i) norm_part(Xb + i * d + c0, c1 - c0, kind, q, parts[i]);
}
BYZKERN_DISPATCH(norm_slab_dispatched, norm_slab)

// q-norms of all rows, +Inf for a row with a non-finite entry; partial sums per slab.
template <class T>
void row_norms_of_kind(const T* X, index_t B, index_t n, index_t d, NormKind kind, double q, index_t tile,
                       index_t max_slabs, double* norms, bool* nonfinite_rows = nullptr) {
  const Slabs slabs(d, tile, max_slabs);
  std::vector<NormPart> parts(B * slabs.count * n);
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    norm_slab_dispatched<T>(X + b * n * d, n, d, c0, c1, kind, q, parts.data() + (b * slabs.count + s) * n);
  });
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < n; ++i) {
      NormPart total;
      for (index_t s = 0; s < slabs.count; ++s) {
        const NormPart& p = parts[(b * slabs.count + s) * n + i];
        total.value = kind == NormKind::max ? std::max(total.value, p.value) : total.value + p.value;
        total.nonfinite += p.nonfinite;
      }
      double norm = total.value;
      if (kind == NormKind::two) norm = std::sqrt(norm);
      if (kind == NormKind::power) norm = std::pow(norm, 1.0 / q);
      const bool nonfinite = total.nonfinite != 0.0;  // NaN != 0
      norms[b * n + i] = nonfinite ? std::numeric_limits<double>::infinity() : norm;
      if (nonfinite_rows != nullptr) nonfinite_rows[b * n + i] = nonfinite;
    }
}

template <class T>
void row_norms(const T* X, index_t B, index_t n, index_t d, double q, index_t tile, index_t slabs, double* norms) {
  const NormKind kind = q == 1.0   ? NormKind::one
                        : q == 2.0 ? NormKind::two
                        : std::isinf(q) ? NormKind::max
                                        : NormKind::power;
  row_norms_of_kind(X, B, n, d, kind, q, tile, slabs, norms);
}

// ---- mix_rows and clip ---------------------------------------------------------------------

// sum / count, as the reference divides. A power-of-two count multiplies by its reciprocal
// instead: the same real number, so the same rounding, at a fraction of a division's cost
// (bucketing and resampling with s = 2; nnm at n = 20, f = 4).
struct MeanOf {
  double count, inverse;
  explicit MeanOf(index_t c)
      : count(static_cast<double>(c)), inverse((c & (c - 1)) == 0 ? 1.0 / static_cast<double>(c) : 0.0) {}
  template <class V>
  V operator()(const V& sum) const { return inverse != 0.0 ? sum * inverse : sum / count; }
};

// The rows of every output, negative entries dropped, in idx order (the reference's order of
// summation): rows[r * k ...] holds count[r] row indices for output r of the (B * m) outputs.
//
// walk: the outputs of each batch item in the order mix_strips sums them, as a walk through the
// trie of their row lists. In lexicographic order of the lists, each output starts from the sum
// of the prefix it shares with the one before (start rows, kept in slot from_slot; none when 0)
// and keeps, in slots, the sums of its prefixes that later outputs start from. Every sum is still
// its output's rows added in idx order from zero, so the bits are the reference's. NNM orders its
// neighbour lists so that they share long prefixes (preaggregators.shared_prefix_order).
struct MixTable {
  struct Save {
    index_t depth, slot;
  };
  struct Step {
    index_t output, start, from_slot, first_save, saves;
  };
  index_t k;
  std::vector<std::int64_t> rows;
  std::vector<index_t> count;
  std::vector<MeanOf> mean;
  std::vector<Step> walk;
  std::vector<Save> saves;
  index_t slots = 0;  // the most prefix sums any step of the walk needs kept at once
  MixTable(const std::int64_t* idx, index_t items, index_t m, index_t k_)
      : k(k_), rows(items * m * k_), count(items * m, 0) {
    mean.reserve(items * m);
    for (index_t r = 0; r < items * m; ++r) {
      for (index_t t = 0; t < k; ++t)
        if (idx[r * k + t] >= 0) rows[r * k + count[r]++] = idx[r * k + t];
      mean.emplace_back(count[r]);
    }
    walk.reserve(items * m);
    for (index_t b = 0; b < items; ++b) add_walk(b * m, m);
  }
  const std::int64_t* of(index_t r) const { return rows.data() + r * k; }

 private:
  index_t common_prefix(index_t r, index_t q) const {
    const index_t most = std::min(count[r], count[q]);
    index_t t = 0;
    while (t < most && of(r)[t] == of(q)[t]) ++t;
    return t;
  }
  void add_walk(index_t r0, index_t m) {
    std::vector<index_t> order(m), shared(m, 0), needed;  // shared[j]: prefix of order[j], order[j + 1]
    std::iota(order.begin(), order.end(), r0);
    std::stable_sort(order.begin(), order.end(), [&](index_t r, index_t q) {
      return std::lexicographical_compare(of(r), of(r) + count[r], of(q), of(q) + count[q]);
    });
    for (index_t j = 0; j + 1 < m; ++j) shared[j] = common_prefix(order[j], order[j + 1]);
    std::vector<Save> kept;  // the prefix sums held, by depth
    for (index_t j = 0; j < m; ++j) {
      const index_t start = j > 0 ? shared[j - 1] : 0;
      while (!kept.empty() && kept.back().depth > start) kept.pop_back();
      // a later output starts at the least shared depth down to it; those deeper than start
      // are first reached here
      needed.clear();
      for (index_t l = j, least = count[order[j]]; l + 1 < m; ++l) {
        least = std::min(least, shared[l]);
        if (least <= start) break;
        if (needed.empty() || least < needed.back()) needed.push_back(least);
      }
      walk.push_back({order[j], start, start > 0 ? kept.back().slot : -1, static_cast<index_t>(saves.size()),
                      static_cast<index_t>(needed.size())});
      for (auto depth = needed.rbegin(); depth != needed.rend(); ++depth) {
        const index_t slot = static_cast<index_t>(kept.size());
        kept.push_back({*depth, slot});
        saves.push_back({*depth, slot});
      }
      slots = std::max(slots, static_cast<index_t>(kept.size()));
    }
  }
};

// Values of T as doubles, V's width (4 or 8 lanes) at a time.
template <class V, class T>
inline V widen(const T* p) {
  if constexpr (sizeof(V) == sizeof(v4d))
    return load4_as_double(p);
  else
    return load8_as_double(p);
}

inline void store4_rounded(double* p, const v4d& v) { store_vec(p, v); }
inline void store4_rounded(float* p, const v4d& v) { store_vec(p, __builtin_convertvector(v, v4f)); }
template <class T>
inline void store_rounded(T* p, const v4d& v) { store4_rounded(p, v); }
template <class T>
inline void store_rounded(T* p, const v8d& v) { store8_rounded(p, v); }

// Stores that bypass the caches, for outputs larger than the last-level cache: a plain store
// first reads the line it fills (an output of m * d values costs a second m * d of memory
// traffic) and evicts rows of X the next strips still need. SSE2, so every tier has them. The
// kernels use them from the start of a cache line on (stream_aligned), and the writer fences
// (_mm_sfence) before the results are read.
inline void stream_rounded(float* p, const v4d& v) {
  _mm_stream_ps(p, reinterpret_cast<__m128>(__builtin_convertvector(v, v4f)));
}
inline void stream_rounded(double* p, const v4d& v) {
  _mm_stream_pd(p, __m128d{v[0], v[1]});
  _mm_stream_pd(p + 2, __m128d{v[2], v[3]});
}
template <class T>
inline void stream_rounded(T* p, const v8d& v) {
  stream_rounded(p, v4d{v[0], v[1], v[2], v[3]});
  stream_rounded(p + 4, v4d{v[4], v[5], v[6], v[7]});
}
inline bool stream_aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

// out[j] = mean of the rows of output j over one column range, summed in double in idx order,
// for tables that use each row several times (nnm, resampling). Strip by strip, the strip of
// every row is converted to double once (xd: n rows of Strip columns, 64-byte aligned, in L1) and
// the outputs, in the table's walk, sum their rows from there in registers, so an add costs one
// load rather than a load, a conversion and a load and a store of the sum. A step starts from its
// shared prefix's sum and keeps the sums later steps start from in sums (table->slots strips).
template <class T, index_t Strip, class V>
inline void mix_strips(const T* Xb, index_t n, index_t d, const MixTable* table, index_t r0, index_t m, index_t c0,
                       index_t w, bool stream, double* xd, double* sums, T* outb) {
  // The rows are n separate streams: each is prefetched AHEAD columns on, into L2 (prefetcht1), as
  // n rows of prefetched lines would crowd the strips out of L1 (1 thread, CPU time, (20, 1e6):
  // 0.88x the time of 256 columns into L1; (64, 4e5) 0.92x; (256, 1e5) 1.03x).
  constexpr index_t AHEAD = 512;
  constexpr index_t LANES = sizeof(V) / sizeof(double), VECS = Strip / LANES;
  index_t s = 0;
  for (; s + Strip <= w; s += Strip) {
    const index_t c = c0 + s;
    for (index_t i = 0; i < n; ++i) {
      const T* x = Xb + i * d + c;
      if (s + AHEAD < w)
        for (index_t l = 0; l < Strip; l += 64 / static_cast<index_t>(sizeof(T)))
          __builtin_prefetch(x + AHEAD + l, 0, 2);
      for (index_t q = 0; q < Strip; q += LANES) store_vec(xd + i * Strip + q, widen<V>(x + q));
    }
    for (index_t j = 0; j < m; ++j) {
      const MixTable::Step& step = table->walk[r0 + j];
      const std::int64_t* rows = table->of(step.output);
      V acc[VECS] = {};
      if (step.from_slot >= 0)
#pragma GCC unroll 8
        for (index_t q = 0; q < VECS; ++q) acc[q] = load_vec<V>(sums + step.from_slot * Strip + LANES * q);
      auto add_rows = [&](index_t from, index_t to) {
        for (index_t t = from; t < to; ++t) {
          const double* x = static_cast<const double*>(__builtin_assume_aligned(xd + rows[t] * Strip, 64));
#pragma GCC unroll 8
          for (index_t q = 0; q < VECS; ++q) acc[q] += load_vec<V>(x + LANES * q);
        }
      };
      index_t t = step.start;
      for (index_t e = step.first_save; e < step.first_save + step.saves; ++e) {
        const MixTable::Save save = table->saves[e];
        add_rows(t, save.depth);
        t = save.depth;
#pragma GCC unroll 8
        for (index_t q = 0; q < VECS; ++q) store_vec(sums + save.slot * Strip + LANES * q, acc[q]);
      }
      add_rows(t, table->count[step.output]);
      const MeanOf mean = table->mean[step.output];  // a copy: the stores below may alias the table
      T* o = outb + (step.output - r0) * d + c;
      if (stream && stream_aligned(o))
        for (index_t q = 0; q < VECS; ++q) stream_rounded(o + LANES * q, mean(acc[q]));
      else
        for (index_t q = 0; q < VECS; ++q) store_rounded(o + LANES * q, mean(acc[q]));
    }
  }
  for (index_t j = 0; j < m && s < w; ++j) {  // the last columns, fewer than a strip
    const std::int64_t* rows = table->of(r0 + j);
    const index_t count = table->count[r0 + j];
    double acc[Strip] = {};
    for (index_t t = 0; t < count; ++t)
      for (index_t c = s; c < w; ++c) acc[c - s] += static_cast<double>(Xb[rows[t] * d + c0 + c]);
    const MeanOf mean = table->mean[r0 + j];
    for (index_t c = s; c < w; ++c) outb[j * d + c0 + c] = static_cast<T>(mean(acc[c - s]));
  }
  if (stream) _mm_sfence();
}

// Strips of eight vectors of sums: 32 columns in AVX2 registers; 64 in AVX-512's 32 registers
// while the strips of the n rows fill at most a third of L1 (n <= 32). Past that, 32 columns, and
// past 64 rows 16, which keep xd in L1 (n = 256: 32 KiB rather than 64 KiB in L2). 1 thread, CPU
// time, AVX-512, NNM's tables at (256, 1e5): 16 columns 150-154 ms, 32 160-161, 64 182-184.
constexpr index_t MIX_NARROW_STRIP = 16, MIX_STRIP = 32, MIX_WIDEST_STRIP = 64;
template <class T, class V, class... A>
inline void mix_strips_sized(const T* Xb, index_t n, A... a) {
  constexpr index_t wide = 8 * sizeof(V) / sizeof(double);
  if (n <= 32)
    mix_strips<T, wide, V>(Xb, n, a...);
  else if (n <= 64)
    mix_strips<T, MIX_STRIP, V>(Xb, n, a...);
  else
    mix_strips<T, MIX_NARROW_STRIP, V>(Xb, n, a...);
}
BYZKERN_DISPATCH3_CALLS(mix_strips_dispatched, (mix_strips_sized<T, v4d>), (mix_strips_sized<T, v4d>),
                        (mix_strips_sized<T, v8d>))

// Columns per chunk of mix_rows_streaming (its sums: 8 KiB, in L1) and rows summed per pass.
constexpr index_t MIX_CHUNK = 1024, MIX_GROUP = 4;

// The same means, output by output, for tables that use each row about once (bucketing,
// norm_filter, Krum's row, Multi-Krum's mean): up to four of an output's rows are read side by
// side and added to the sums in registers, so an output of at most four rows is one pass at
// memory speed with no sums through memory, and a longer one reads four streams at a time
// (1 thread, CPU time, (64, 1e6): Multi-Krum's 52 rows all side by side took 0.60x the time of
// the old row-by-row sums, four at a time 0.46x; separate runs on a loaded machine).
template <class T>
inline void mix_rows_streaming(const T* Xb, index_t d, const MixTable* table, index_t r0, index_t m, index_t c0,
                               index_t w, bool stream, double* acc, T* outb) {
  for (index_t j = 0; j < m; ++j) {
    const std::int64_t* rows = table->of(r0 + j);
    const index_t count = table->count[r0 + j];
    const MeanOf mean = table->mean[r0 + j];
    for (index_t c1 = 0; c1 < w; c1 += MIX_CHUNK) {
      const index_t cw = std::min(MIX_CHUNK, w - c1);
      T* o = outb + j * d + c0 + c1;
      const bool streamed = stream && stream_aligned(o);
      for (index_t t0 = 0; t0 < count; t0 += MIX_GROUP) {
        const index_t g = std::min(MIX_GROUP, count - t0);
        const bool first = t0 == 0, last = t0 + g == count;
        const T* x[MIX_GROUP];
        for (index_t t = 0; t < g; ++t) x[t] = Xb + rows[t0 + t] * d + c0 + c1;
        index_t c = 0;
        for (; c + 4 <= cw; c += 4) {
          v4d sum = first ? v4d{0, 0, 0, 0} : load_vec<v4d>(acc + c);
          for (index_t t = 0; t < g; ++t) sum += load4_as_double(x[t] + c);
          if (!last)
            store_vec(acc + c, sum);
          else if (streamed)
            stream_rounded(o + c, mean(sum));
          else
            store4_rounded(o + c, mean(sum));
        }
        for (; c < cw; ++c) {
          double sum = first ? 0.0 : acc[c];
          for (index_t t = 0; t < g; ++t) sum += static_cast<double>(x[t][c]);
          if (last)
            o[c] = static_cast<T>(mean(sum));
          else
            acc[c] = sum;
        }
      }
    }
  }
  if (stream) _mm_sfence();
}
BYZKERN_DISPATCH(mix_rows_streaming_dispatched, mix_rows_streaming)

template <class T>
void mix_rows(const T* X, index_t B, index_t n, index_t d, const std::int64_t* idx, index_t m, index_t k,
              index_t tile, index_t stream_min_bytes, T* out) {
  const MixTable table(idx, B, m, k);
  // Strips when the table uses each row more than twice: at (64, 1e6) nnm mixes 2x faster in
  // strips, while resampling with s = 2 runs 1.3x faster streaming (a row's second read within
  // a tile comes from L2; 1 thread, CPU time, (20, 1e6), 16.9 against 22.2 ms).
  const bool strips = m * k > 2 * n;
  // Stream stores pay only for whole cache lines (a part line is a slow partial write): with rows
  // of a whole number of lines, a first tile of `lead` columns brings every later strip of every
  // output row onto a line boundary (1 thread, CPU time, nnm-like tables: (20, 1e6) 0.94x the
  // time of strips on numpy's 16-byte alignment, (64, 1e6) 0.86x, resampling 0.97x).
  const index_t row_bytes = d * static_cast<index_t>(sizeof(T));
  const bool stream = B * m * row_bytes >= stream_min_bytes && row_bytes % 64 == 0;
  const index_t lead = stream ? (64 - reinterpret_cast<std::uintptr_t>(out) % 64) % 64 / sizeof(T) : 0;
  const index_t tiles = (lead > 0) + num_tiles(d - lead, tile);
#pragma omp parallel
  {
    AlignedVectors<v8d> buffer(strips ? n * MIX_WIDEST_STRIP / 8 : MIX_CHUNK / 8);
    AlignedVectors<v8d> prefix_sums(strips ? std::max<index_t>(table.slots, 1) * MIX_WIDEST_STRIP / 8 : 1);
    double* xd = reinterpret_cast<double*>(buffer.data());
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, t = job % tiles - (lead > 0);
      const index_t c0 = t < 0 ? 0 : lead + t * tile, w = t < 0 ? lead : std::min(tile, d - c0);
      if (strips)
        mix_strips_dispatched<T>(X + b * n * d, n, d, &table, b * m, m, c0, w, stream, xd,
                                 reinterpret_cast<double*>(prefix_sums.data()), out + b * m * d);
      else
        mix_rows_streaming_dispatched<T>(X + b * n * d, d, &table, b * m, m, c0, w, stream, xd, out + b * m * d);
    }
  }
}

template <class T>
inline void scale_tile(const T* Xb, index_t n, index_t d, const double* scale, index_t c0, index_t w, T* outb) {
  for (index_t i = 0; i < n; ++i) {
    const T* x = Xb + i * d + c0;
    T* o = outb + i * d + c0;
    const double s = scale[i];
    for (index_t c = 0; c < w; ++c) o[c] = static_cast<T>(static_cast<double>(x[c]) * s);
  }
}
BYZKERN_DISPATCH(scale_tile_dispatched, scale_tile)

// Rows scaled to norm <= tau, and each row's norm (+Inf for a non-finite row) in norms. A row
// with a non-finite entry keeps scale 1 (passes unchanged, for the aggregator to reject). With
// at least two rows per thread each thread takes whole rows: a row's norm (the same slab sums,
// in the same order, as row_norms) and then its scaling, which reads the row again from cache
// rather than from memory: tile by tile from the row's end back, so the tiles the norm read
// last, still in L2, go first (at (20, 1e6), 1 thread, 0.8x the time of scaling from the start,
// whose tiles came from L3). Fewer rows take one pass for all norms and one to scale, both over
// column tiles.
template <class T>
void clip(const T* X, index_t B, index_t n, index_t d, double tau, index_t tile, index_t max_slabs, T* out,
          double* norms) {
  auto scale_of = [tau](double norm, bool nonfinite) {
    return nonfinite ? 1.0 : std::min(1.0, tau / (norm > 0 ? norm : 1.0));
  };
  if (B * n >= 2 * omp_get_max_threads()) {
    const Slabs slabs(d, tile, max_slabs);
#pragma omp parallel for schedule(dynamic, 1)
    for (index_t r = 0; r < B * n; ++r) {
      NormPart total;
      for (index_t s = 0; s < slabs.count; ++s) {
        NormPart part;
        norm_slab_dispatched<T>(X + r * d, 1, d, slabs.first_tile(s) * tile,
                                std::min(d, slabs.first_tile(s + 1) * tile), NormKind::two, 2.0, &part);
        total.value += part.value;
        total.nonfinite += part.nonfinite;
      }
      const bool nonfinite = total.nonfinite != 0.0;  // NaN != 0
      norms[r] = nonfinite ? std::numeric_limits<double>::infinity() : std::sqrt(total.value);
      const double scale = scale_of(norms[r], nonfinite);
      for (index_t c0 = (d - 1) / tile * tile; c0 >= 0; c0 -= tile)
        scale_tile_dispatched<T>(X + r * d, 1, d, &scale, c0, std::min(tile, d - c0), out + r * d);
    }
    return;
  }
  std::vector<double> scale(B * n);
  std::unique_ptr<bool[]> nonfinite(new bool[B * n]);
  row_norms_of_kind(X, B, n, d, NormKind::two, 2.0, tile, max_slabs, norms, nonfinite.get());
  for (index_t r = 0; r < B * n; ++r) scale[r] = scale_of(norms[r], nonfinite[r]);
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel for schedule(static)
  for (index_t job = 0; job < B * tiles; ++job) {
    const index_t b = job / tiles, c0 = (job % tiles) * tile;
    scale_tile_dispatched<T>(X + b * n * d, n, d, scale.data() + b * n, c0, std::min(tile, d - c0), out + b * n * d);
  }
}

#define BYZKERN_INSTANTIATE(T)                                                                              \
  template void pairwise_sqdist<T>(const T*, index_t, index_t, index_t, index_t, index_t, double*);         \
  template void row_norms<T>(const T*, index_t, index_t, index_t, double, index_t, index_t, double*);       \
  template void mix_rows<T>(const T*, index_t, index_t, index_t, const std::int64_t*, index_t, index_t,     \
                            index_t, index_t, T*);                                                          \
  template void clip<T>(const T*, index_t, index_t, index_t, double, index_t, index_t, T*, double*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
