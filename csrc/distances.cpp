// Distances and row-wise maps: pairwise_sqdist (shared by Krum, Multi-Krum and NNM), row norms,
// row mixing (every pre-aggregator but clip is a mean of chosen rows) and static clipping.
#include "distances.hpp"

#include <cmath>
#include <memory>

namespace byzkern {

// ---- pairwise_sqdist -----------------------------------------------------------------------
// Exact differences, not the Gram trick: (x_i - x_j) is formed in double from the input values
// (exact for float32) and squared and summed in double, so rows that share a large common
// component (w + small deltas) keep their distances. Each block of columns is converted to
// double once and reused by all pairs; a 2 x 4 block of row pairs keeps its eight partial sums
// in registers.

constexpr index_t PAIR_ROWS = 4;  // rows are padded to a multiple of the 2 x 4 pair block

// Columns per block: n_padded rows of doubles in about 32 KiB (L1), a multiple of 4 lanes.
inline index_t pair_block_columns(index_t n_padded) {
  return std::max<index_t>(16, std::min<index_t>(512, 4096 / n_padded)) / 4 * 4;
}

template <class T>
inline void pair_block(const T* base, index_t n, index_t d, index_t w, index_t cols, double* xd, double* P) {
  const index_t np = (n + PAIR_ROWS - 1) / PAIR_ROWS * PAIR_ROWS, w4 = (w + 3) / 4 * 4;
  for (index_t i = 0; i < np; ++i) {
    double* row = xd + i * cols;
    if (i < n)
      for (index_t k = 0; k < w; ++k) row[k] = static_cast<double>(base[i * d + k]);
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
          if (i < j && j < n) P[i * n + j] += sum_lanes(acc[r][q]);
        }
    }
  }
}
BYZKERN_DISPATCH(pair_block_dispatched, pair_block)

template <class T>
void pairwise_sqdist(const T* X, index_t B, index_t n, index_t d, index_t tile, index_t max_slabs, double* D) {
  const Slabs slabs(d, tile, max_slabs);
  const index_t np = (n + PAIR_ROWS - 1) / PAIR_ROWS * PAIR_ROWS, cols = pair_block_columns(np);
  std::vector<double> partial(B * slabs.count * n * n, 0.0);
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    std::vector<double> xd(np * cols);
    double* P = partial.data() + (b * slabs.count + s) * n * n;
    for (index_t c = c0; c < c1; c += cols)
      pair_block_dispatched<T>(X + b * n * d + c, n, d, std::min(cols, c1 - c), cols, xd.data(), P);
  });
  // A row with a NaN or Inf entry makes all its sums NaN or Inf: +Inf from every other row.
#pragma omp parallel for schedule(static)
  for (index_t b = 0; b < B; ++b) {
    double* Db = D + b * n * n;
    for (index_t i = 0; i < n; ++i) {
      Db[i * n + i] = 0.0;
      for (index_t j = i + 1; j < n; ++j) {
        double sum = 0.0;
        for (index_t s = 0; s < slabs.count; ++s) sum += partial[((b * slabs.count + s) * n + i) * n + j];
        if (!std::isfinite(sum)) sum = std::numeric_limits<double>::infinity();
        Db[i * n + j] = Db[j * n + i] = sum;
      }
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

// out[j] = mean of the rows idx[j, t] >= 0 over one column range, summed in double in idx order
// (the reference's order).
template <class T>
inline void mix_tile(const T* Xb, index_t d, const std::int64_t* idx, index_t m, index_t k, index_t c0,
                     index_t w, double* acc, T* outb) {
  for (index_t j = 0; j < m; ++j) {
    std::fill(acc, acc + w, 0.0);
    index_t count = 0;
    for (index_t t = 0; t < k; ++t) {
      const std::int64_t r = idx[j * k + t];
      if (r < 0) continue;
      const T* row = Xb + r * d + c0;
      for (index_t c = 0; c < w; ++c) acc[c] += static_cast<double>(row[c]);
      ++count;
    }
    T* o = outb + j * d + c0;
    for (index_t c = 0; c < w; ++c) o[c] = static_cast<T>(acc[c] / static_cast<double>(count));
  }
}
BYZKERN_DISPATCH(mix_tile_dispatched, mix_tile)

template <class T>
void mix_rows(const T* X, index_t B, index_t n, index_t d, const std::int64_t* idx, index_t m, index_t k,
              index_t tile, T* out) {
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel
  {
    std::vector<double> acc(tile);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile;
      mix_tile_dispatched<T>(X + b * n * d, d, idx + b * m * k, m, k, c0, std::min(tile, d - c0), acc.data(),
                             out + b * m * d);
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

// Rows scaled to norm <= tau: one pass for the norms, one to scale. A row with a non-finite entry
// keeps scale 1 (passes unchanged, for the aggregator to reject).
template <class T>
void clip(const T* X, index_t B, index_t n, index_t d, double tau, index_t tile, index_t slabs, T* out) {
  std::vector<double> scale(B * n);
  std::unique_ptr<bool[]> nonfinite(new bool[B * n]);
  row_norms_of_kind(X, B, n, d, NormKind::two, 2.0, tile, slabs, scale.data(), nonfinite.get());
  for (index_t r = 0; r < B * n; ++r)
    scale[r] = nonfinite[r] ? 1.0 : std::min(1.0, tau / (scale[r] > 0 ? scale[r] : 1.0));
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
                            index_t, T*);                                                                   \
  template void clip<T>(const T*, index_t, index_t, index_t, double, index_t, index_t, T*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
