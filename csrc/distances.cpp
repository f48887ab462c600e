// Distances and row-wise maps: pairwise_sqdist (shared by Krum, Multi-Krum and NNM), row norms,
// row mixing (every pre-aggregator but clip is a mean of chosen rows) and static clipping.
#include "distances.hpp"

#include <omp.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>

namespace byzkern {

// ---- pairwise_sqdist -----------------------------------------------------------------------
// A centred Gram matrix in double, with exact differences where it would cancel.
//
// Per block of columns the rows are converted to double and centred, y_i = x_i - c with c_k one
// of the column's input values (block_centre; any per-column c leaves every distance unchanged,
// and input values keep y exact in double for float32 input and integer data integer, so exact
// ties stay ties); then N_i = |y_i|^2 and G_ij = y_i . y_j are summed and
// D_ij = N_i + N_j - 2 G_ij. That is a multiply and an add per pair and column, where exact
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
// Columns per block of the Gram sums: 128, or fewer where the block's centred rows (np x cols
// doubles) would pass 256 KiB (L2). Each register tile sums a whole block before it touches G,
// so long blocks keep G's loads and stores and the tiles' starts rare: at (256, 1e4), 1 thread,
// 16-column blocks (the whole block in L1) ran at 39% of the CPU's multiply-add peak, 128 at
// 75%; 256 and 512 columns were no faster (a pair of column panels no longer fits in L1).
inline index_t gram_block_columns(index_t n_padded) {
  return std::max<index_t>(16, std::min<index_t>(128, (32 << 10) / n_padded)) / 4 * 4;
}

// Asks for columns [c, c + w) of the rows [i0, i1): the rows are n separate streams, more than
// the hardware prefetcher follows.
template <class T>
inline void prefetch_rows(const T* const* rows, index_t i0, index_t i1, index_t c, index_t w) {
  for (index_t i = i0; i < i1; ++i)
    for (index_t k = 0; k < w; k += 64 / static_cast<index_t>(sizeof(T))) __builtin_prefetch(rows[i] + c + k);
}

// The centred block is stored in panels of four rows: panel p holds y_(4p+r),k at
// Y[(p * cols + k) * 4 + r], so a tile reads each of its panels as one contiguous stream.
//
// G[rows of the R/4 panels from pi, columns of the Q panels from pj] += that block of the Gram
// matrix over the block's w columns: R x Q vectors of sums in registers (8 of the 16 AVX
// registers: 4 x 12 spilled, and its store-to-load chain through the stack set the pace), each
// entry summed over k in order, so every entry is the same chain of roundings whatever the tile.
template <int R, int Q>
inline void gram_tile(const double* Y, index_t cols, index_t w, index_t pi, index_t pj, index_t np, double* G) {
  v4d acc[R][Q] = {};
  for (index_t k = 0; k < w; ++k) {
    v4d b[Q];
    for (int q = 0; q < Q; ++q) b[q] = load_vec<v4d>(Y + ((pj + q) * cols + k) * 4);
    for (int r = 0; r < R; ++r) {
      const double a = Y[((pi + r / 4) * cols + k) * 4 + r % 4];
      const v4d av = {a, a, a, a};
      for (int q = 0; q < Q; ++q) acc[r][q] += av * b[q];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < Q; ++q) {
      double* g = G + (4 * pi + r) * np + 4 * (pj + q);
      store_vec(g, load_vec<v4d>(g) + acc[r][q]);
    }
}

// Four rows of four columns -> four columns of four rows (in place; separate variables, not an
// array: GCC kept an array on the stack and copied each column out through it).
inline void transpose4(v4d& y0, v4d& y1, v4d& y2, v4d& y3) {
  typedef long long v4i __attribute__((vector_size(32)));
  const v4d t0 = __builtin_shuffle(y0, y1, v4i{0, 4, 2, 6}), t1 = __builtin_shuffle(y0, y1, v4i{1, 5, 3, 7});
  const v4d t2 = __builtin_shuffle(y2, y3, v4i{0, 4, 2, 6}), t3 = __builtin_shuffle(y2, y3, v4i{1, 5, 3, 7});
  y0 = __builtin_shuffle(t0, t2, v4i{0, 1, 4, 5});
  y1 = __builtin_shuffle(t1, t3, v4i{0, 1, 4, 5});
  y2 = __builtin_shuffle(t0, t2, v4i{2, 3, 6, 7});
  y3 = __builtin_shuffle(t1, t3, v4i{2, 3, 6, 7});
}

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

// The panels of x_ik - c_k for the columns [c, c + w); the padding rows i >= n read zero_row
// (w zeros) and come out as -c_k, which only padded sums see.
template <class T>
inline void centred_panels(const T* const* rows, index_t n, index_t c, index_t w, index_t cols, const double* centre,
                           const T* zero_row, double* Y) {
  const index_t np = padded_rows(n);
  for (index_t i0 = 0; i0 < np; i0 += 4) {
    const T* x[4];
    for (index_t r = 0; r < 4; ++r) x[r] = i0 + r < n ? rows[i0 + r] + c : zero_row;
    double* panel = Y + i0 * cols;
    index_t k = 0;
    for (; k + 4 <= w; k += 4) {
      const v4d cen = load_vec<v4d>(centre + k);
      v4d y0 = load4_as_double(x[0] + k) - cen, y1 = load4_as_double(x[1] + k) - cen;
      v4d y2 = load4_as_double(x[2] + k) - cen, y3 = load4_as_double(x[3] + k) - cen;
      transpose4(y0, y1, y2, y3);
      store_vec(panel + 4 * k, y0);
      store_vec(panel + 4 * k + 4, y1);
      store_vec(panel + 4 * k + 8, y2);
      store_vec(panel + 4 * k + 12, y3);
    }
    for (; k < w; ++k)
      for (index_t r = 0; r < 4; ++r) panel[4 * k + r] = static_cast<double>(x[r][k]) - centre[k];
  }
}

// The Gram sums of the rows over the columns [c0, c1), block by block, into G (np x np; the
// entries with j >= i are filled, some below the diagonal too). Column panels two at a time,
// each against every row panel up to the first of them, so the two stay in L1 while the row
// panels stream from L2; the second one's diagonal block is a 4 x 4 tile of its own (as a row
// panel of a 4 x 8 tile it would also sum a block below the diagonal; 4% faster at n = 20).
// A last odd column panel takes the row panels two at a time (4 x 4 tiles have too few sums to
// hide the latency of an add).
template <class T>
inline void gram_slab(const T* const* rows, index_t n, index_t c0, index_t c1, index_t cols, double* Y, double* G) {
  const index_t np = padded_rows(n), panels = np / 4;
  double* centre = Y + np * cols;
  const std::vector<T> zero_row(cols, T(0));
  const index_t pairs_of_panels = (panels + 1) / 2, rows_per_step = (n + pairs_of_panels - 1) / pairs_of_panels;
  for (index_t c = c0; c < c1; c += cols) {
    const index_t w = std::min(cols, c1 - c);
    const index_t next_w = std::min(cols, c1 - c - w);
    block_centre(rows, n, c, w, centre);
    centred_panels(rows, n, c, w, cols, centre, zero_row.data(), Y);
    for (index_t pj = 0; pj < panels; pj += 2) {
      const index_t r0 = pj / 2 * rows_per_step;
      prefetch_rows(rows, std::min(n, r0), std::min(n, r0 + rows_per_step), c + w, next_w);
      if (pj + 2 <= panels) {
        for (index_t pi = 0; pi <= pj; ++pi) gram_tile<4, 2>(Y, cols, w, pi, pj, np, G);
        gram_tile<4, 1>(Y, cols, w, pj + 1, pj + 1, np, G);
        continue;
      }
      index_t pi = 0;
      for (; pi + 1 <= pj; pi += 2) gram_tile<8, 1>(Y, cols, w, pi, pj, np, G);
      if (pi <= pj) gram_tile<4, 1>(Y, cols, w, pi, pj, np, G);
    }
  }
}
BYZKERN_DISPATCH(gram_slab_dispatched, gram_slab)

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

template <class T>
inline void norm_part(const T* x, index_t w, NormKind kind, double q, NormPart& part) {
  v4d acc = {0, 0, 0, 0}, check = acc;
  index_t k = 0;
  for (; k + 4 <= w; k += 4) {
    const v4d a = load4_as_double(x + k);
    const v4d absa = a < 0 ? -a : a;
    check += a * 0.0;
    if (kind == NormKind::two) acc += a * a;
    else if (kind == NormKind::one) acc += absa;
    else if (kind == NormKind::max) acc = absa > acc ? absa : acc;
    else
      for (int l = 0; l < 4; ++l) acc[l] += std::pow(absa[l], q);
  }
  double value = kind == NormKind::max ? std::max(std::max(acc[0], acc[1]), std::max(acc[2], acc[3]))
                                       : sum_lanes(acc);
  double tail_check = 0.0;
  for (; k < w; ++k) {
    const double a = static_cast<double>(x[k]), absa = std::fabs(a);
    tail_check += a * 0.0;
    if (kind == NormKind::two) value += a * a;
    else if (kind == NormKind::one) value += absa;
    else if (kind == NormKind::max) value = std::max(value, absa);
    else value += std::pow(absa, q);
  }
  part.value = kind == NormKind::max ? std::max(part.value, value) : part.value + value;
  part.nonfinite += sum_lanes(check) + tail_check;
}

template <class T>
inline void norm_slab(const T* Xb, index_t n, index_t d, index_t c0, index_t c1, index_t tile, NormKind kind,
                      double q, NormPart* parts) {
  for (index_t c = c0; c < c1; c += tile)
    for (index_t i = 0; i < n; ++i) norm_part(Xb + i * d + c, std::min(tile, c1 - c), kind, q, parts[i]);
}
BYZKERN_DISPATCH(norm_slab_dispatched, norm_slab)

// q-norms of all rows, +Inf for a row with a non-finite entry; partial sums per slab.
template <class T>
void row_norms_of_kind(const T* X, index_t B, index_t n, index_t d, NormKind kind, double q, index_t tile,
                       index_t max_slabs, double* norms, bool* nonfinite_rows = nullptr) {
  const Slabs slabs(d, tile, max_slabs);
  std::vector<NormPart> parts(B * slabs.count * n);
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    norm_slab_dispatched<T>(X + b * n * d, n, d, c0, c1, tile, kind, q, parts.data() + (b * slabs.count + s) * n);
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
struct MixTable {
  index_t k;
  std::vector<std::int64_t> rows;
  std::vector<index_t> count;
  std::vector<MeanOf> mean;
  MixTable(const std::int64_t* idx, index_t outputs, index_t k_) : k(k_), rows(outputs * k_), count(outputs, 0) {
    mean.reserve(outputs);
    for (index_t r = 0; r < outputs; ++r) {
      for (index_t t = 0; t < k; ++t)
        if (idx[r * k + t] >= 0) rows[r * k + count[r]++] = idx[r * k + t];
      mean.emplace_back(count[r]);
    }
  }
  const std::int64_t* of(index_t r) const { return rows.data() + r * k; }
};

// Values of T as doubles, V's width at a time: one vcvtps2pd for floats. Element by element, as
// GCC 12 lowers the __builtin_convertvector of load4_as_double and load8_as_double to 2-wide
// conversions, moves and inserts (GCC PR 85048).
template <class V>
inline V widen(const double* p) {
  return load_vec<V>(p);
}
template <class V>
inline V widen(const float* p);
template <>
inline v4d widen<v4d>(const float* p) {
  const v4f f = load_vec<v4f>(p);
  return v4d{f[0], f[1], f[2], f[3]};
}
template <>
inline v8d widen<v8d>(const float* p) {
  const v8f f = load_vec<v8f>(p);
  return v8d{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
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

// The means of the P outputs r, r + 1, ... over one strip of xd, written to o, o + d, ...: the
// outputs' sums advance side by side (each in its own idx order), so P * Strip / lanes chains
// hide the add latency.
template <index_t P, index_t Strip, class V, class T>
inline void mix_outputs(const double* xd, const MixTable* table, index_t r, T* o, index_t d, bool stream) {
  constexpr index_t LANES = sizeof(V) / sizeof(double), SUMS = Strip / LANES;
  const std::int64_t* rows[P];
  index_t count[P], common = table->count[r];
#pragma GCC unroll 8
  for (index_t p = 0; p < P; ++p) {
    rows[p] = table->of(r + p);
    count[p] = table->count[r + p];
    common = std::min(common, count[p]);
  }
  V acc[P][SUMS] = {};
  auto add_row = [&](index_t p, index_t t) {
    const double* x = static_cast<const double*>(__builtin_assume_aligned(xd + rows[p][t] * Strip, 64));
#pragma GCC unroll 8
    for (index_t q = 0; q < SUMS; ++q) acc[p][q] += load_vec<V>(x + LANES * q);
  };
  for (index_t t = 0; t < common; ++t)
#pragma GCC unroll 8
    for (index_t p = 0; p < P; ++p) add_row(p, t);
#pragma GCC unroll 8
  for (index_t p = 0; p < P; ++p)
    for (index_t t = common; t < count[p]; ++t) add_row(p, t);
#pragma GCC unroll 8
  for (index_t p = 0; p < P; ++p) {
    const MeanOf mean = table->mean[r + p];  // a copy: the stores below may alias the table
    T* op = o + p * d;
    if (stream && stream_aligned(op))
      for (index_t q = 0; q < SUMS; ++q) stream_rounded(op + LANES * q, mean(acc[p][q]));
    else
      for (index_t q = 0; q < SUMS; ++q) store_rounded(op + LANES * q, mean(acc[p][q]));
  }
}

// out[j] = mean of the rows of output j over one column range, summed in double in idx order,
// for tables that use each row several times (nnm, resampling). Strip by strip, the strip of
// every row is converted to double once (xd: n rows of Strip columns, 64-byte aligned, in L1) and
// the outputs, P at a time, sum their rows from there in registers, so an add costs one load
// rather than a load, a conversion and a load and a store of the sum.
template <class T, index_t Strip, class V, index_t P>
inline void mix_strips(const T* Xb, index_t n, index_t d, const MixTable* table, index_t r0, index_t m, index_t c0,
                       index_t w, bool stream, double* xd, T* outb) {
  // The rows are n separate streams: each is prefetched AHEAD columns on, into L2 (prefetcht1), as
  // n rows of prefetched lines would crowd the strips out of L1 (1 thread, CPU time, (20, 1e6):
  // 0.88x the time of 256 columns into L1; (64, 4e5) 0.92x; (256, 1e5) 1.03x).
  constexpr index_t AHEAD = 512;
  constexpr index_t LANES = sizeof(V) / sizeof(double);
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
    index_t j = 0;
    for (; j + P <= m; j += P) mix_outputs<P, Strip, V>(xd, table, r0 + j, outb + j * d + c, d, stream);
    for (; j < m; ++j) mix_outputs<1, Strip, V>(xd, table, r0 + j, outb + j * d + c, d, stream);
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

// Strips of eight vectors of sums, one output at a time: 32 columns in AVX2 registers; 64 in
// AVX-512's 32 registers while the strips of the n rows fill at most a third of L1 (n <= 32).
// Past 64 rows, strips of 16 columns keep xd in L1 (n = 256: 32 KiB rather than 64 KiB in L2),
// and as many outputs go side by side as again make eight chains of sums. 1 thread, CPU time,
// AVX-512, cycles per double add in cache: n = 20, 64 columns 0.157, 16 columns by four outputs
// 0.180; n = 64 at (64, 1e5), 32 columns 0.194, 64 columns 0.209; n = 256, 32 columns 0.236,
// 16 by four 0.164. At n = 64, 16 by four gained in cache (0.189) but lost at (64, 1e6): 197
// against 176 ms.
constexpr index_t MIX_NARROW_STRIP = 16, MIX_STRIP = 32, MIX_WIDEST_STRIP = 64;
template <class T, class V, class... A>
inline void mix_strips_sized(const T* Xb, index_t n, A... a) {
  constexpr index_t wide = 8 * sizeof(V) / sizeof(double);
  if (n <= 32)
    mix_strips<T, wide, V, 1>(Xb, n, a...);
  else if (n <= 64)
    mix_strips<T, MIX_STRIP, V, 1>(Xb, n, a...);
  else
    mix_strips<T, MIX_NARROW_STRIP, V, wide / MIX_NARROW_STRIP>(Xb, n, a...);
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
          for (index_t t = 0; t < g; ++t) sum += widen<v4d>(x[t] + c);
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
  const MixTable table(idx, B * m, k);
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
    double* xd = reinterpret_cast<double*>(buffer.data());
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, t = job % tiles - (lead > 0);
      const index_t c0 = t < 0 ? 0 : lead + t * tile, w = t < 0 ? lead : std::min(tile, d - c0);
      if (strips)
        mix_strips_dispatched<T>(X + b * n * d, n, d, &table, b * m, m, c0, w, stream, xd, out + b * m * d);
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

// Rows scaled to norm <= tau. A row with a non-finite entry keeps scale 1 (passes unchanged,
// for the aggregator to reject). With at least two rows per thread each thread takes whole
// rows: a row's norm (the same slab sums, in the same order, as row_norms) and then its scaling,
// which reads the row again from L3 while it is still there rather than from memory. Fewer rows
// take one pass for all norms and one to scale, both over column tiles.
template <class T>
void clip(const T* X, index_t B, index_t n, index_t d, double tau, index_t tile, index_t max_slabs, T* out) {
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
                                std::min(d, slabs.first_tile(s + 1) * tile), tile, NormKind::two, 2.0, &part);
        total.value += part.value;
        total.nonfinite += part.nonfinite;
      }
      const double scale = scale_of(std::sqrt(total.value), total.nonfinite != 0.0);  // NaN != 0
      scale_tile_dispatched<T>(X + r * d, 1, d, &scale, 0, d, out + r * d);
    }
    return;
  }
  std::vector<double> scale(B * n);
  std::unique_ptr<bool[]> nonfinite(new bool[B * n]);
  row_norms_of_kind(X, B, n, d, NormKind::two, 2.0, tile, max_slabs, scale.data(), nonfinite.get());
  for (index_t r = 0; r < B * n; ++r) scale[r] = scale_of(scale[r], nonfinite[r]);
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
  template void clip<T>(const T*, index_t, index_t, index_t, double, index_t, index_t, T*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
