// Coordinate-wise rules on row-major (B, n, d) buffers.
#include "coordinatewise.hpp"

#include "select.hpp"

namespace byzkern {

// Adds the n rows of a column tile into acc in row order, four rows per pass over acc: the same
// additions in the same order as one row per pass, with a quarter of the accumulator loads and
// stores (one pass per row made the loop bound by them, not by reading X).
template <class T>
inline void add_rows(const T* base, index_t n, index_t d, index_t w, double* acc) {
  index_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* r0 = base + i * d;
    const T *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
    for (index_t j = 0; j < w; ++j) acc[j] = (((acc[j] + r0[j]) + r1[j]) + r2[j]) + r3[j];
  }
  for (; i < n; ++i) {
    const T* row = base + i * d;
    for (index_t j = 0; j < w; ++j) acc[j] += row[j];
  }
}
BYZKERN_DISPATCH(add_rows_dispatched, add_rows)

// Mean over rows, accumulated in double per column (float32 input loses nothing to the sum).
// OpenMP splits (batch item, column tile) pairs; each row of a tile is a contiguous read.
template <class T>
void mean(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out) {
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel
  {
    std::vector<double> acc(tile);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile;
      const index_t w = std::min(tile, d - c0);
      const T* base = X + b * n * d + c0;
      std::fill(acc.begin(), acc.begin() + w, 0.0);
      add_rows_dispatched<T>(base, n, d, w, acc.data());
      T* o = out + b * d + c0;
      for (index_t j = 0; j < w; ++j) o[j] = static_cast<T>(acc[j] / static_cast<double>(n));
    }
  }
}

// ---- rules on sorted columns ---------------------------------------------------------------
// Each rule reads a sorted block (select.hpp) eight lanes at a time in double, exactly as the
// reference computes on its float64 copy, and writes w lanes of the result.

template <class T>
const T* block_row(const T* block, index_t p) {
  return block + p * block_lanes<T>();
}

template <class T>
inline void store_lanes(T* out, index_t w, const v8d& r) {
  T buf[8];
  store8_rounded(buf, r);
  std::memcpy(out, buf, sizeof(T) * std::min<index_t>(8, w));
}

// The median as the reference takes it: 0.5*lo + 0.5*hi in double, halves first so huge float64
// values do not overflow; for odd n lo and hi are the same element.
template <class T>
inline v8d block_median(const T* block, index_t n, index_t g) {
  const v8d lo = load8_as_double(block_row(block, (n - 1) / 2) + g);
  const v8d hi = load8_as_double(block_row(block, n / 2) + g);
  return 0.5 * lo + 0.5 * hi;
}

struct MedianOfBlock {
  template <class T>
  void operator()(const T* block, index_t n, index_t g, index_t w, T* out) const {
    store_lanes(out, w, block_median(block, n, g));
  }
};

// Middle n - 2f values summed in row order, as numpy sums the reference's sorted slice.
struct TrimmedMeanOfBlock {
  index_t f;
  template <class T>
  void operator()(const T* block, index_t n, index_t g, index_t w, T* out) const {
    v8d acc = load8_as_double(block_row(block, f) + g);
    for (index_t p = f + 1; p < n - f; ++p) acc += load8_as_double(block_row(block, p) + g);
    store_lanes(out, w, acc / static_cast<double>(n - 2 * f));
  }
};

// Mean of the n - f values closest to the median, ties in distance to the smaller value.
// In a sorted column those values are a window [s, s + n - f) with s in [0, f]: dropping the f
// values of largest (distance, position) merges two sorted lists, the left end (distances
// falling inward) and the right end (rising outward), so s is the merge-path split where the
// last dropped left value is strictly farther than the first kept right one and the last
// dropped right value is at least as far as the first kept left one. A NaN distance (NaN value
// or infinite median) counts as +Inf, as in the reference.
struct MeanAroundMedianOfBlock {
  index_t f;
  template <class T>
  void operator()(const T* block, index_t n, index_t g, index_t w, T* out) const {
    const v8d med = block_median(block, n, g);
    const v8d inf = v8d{} + std::numeric_limits<double>::infinity();
    auto dist = [&](index_t p) {
      const v8d diff = load8_as_double(block_row(block, p) + g) - med;
      const v8d a = diff < 0 ? -diff : diff;
      return a == a ? a : inf;
    };
    const index_t keep = n - f;
    v8d start = v8d{};
    for (index_t s = 0; s <= f; ++s) {
      auto ok = dist(s) == dist(s);  // all true
      if (s > 0) ok &= dist(s - 1) > dist(s + keep - 1);
      if (s < f) ok &= dist(s + keep) >= dist(s);
      start = ok ? v8d{} + static_cast<double>(s) : start;
    }
    v8d acc = v8d{};
    for (index_t p = f; p < keep; ++p) acc += load8_as_double(block_row(block, p) + g);
    for (index_t p = 0; p < f; ++p) {
      const v8d x = load8_as_double(block_row(block, p) + g);
      acc += start <= static_cast<double>(p) ? x : v8d{};
    }
    for (index_t p = keep; p < n; ++p) {
      const v8d x = load8_as_double(block_row(block, p) + g);
      acc += start + static_cast<double>(keep) > static_cast<double>(p) ? x : v8d{};
    }
    store_lanes(out, w, acc / static_cast<double>(keep));
  }
};

template <class T, class Rule>
inline void sorted_rule_block(const T* base, index_t n, index_t d, index_t w, const Comparators* net,
                              vec64<T>* block, lane_mask<T>* nan_count, Rule rule, T* out) {
  load_block(base, n, d, w, block, nan_count);
  sort_block<T>(block, *net);
  restore_nans<T>(block, n, nan_count);
  for (index_t g = 0; g < w; g += 8) rule(reinterpret_cast<const T*>(block), n, g, w - g, out + g);
}
BYZKERN_DISPATCH(sorted_rule_block_dispatched, sorted_rule_block)

// OpenMP over (batch item, column tile); each tile is cut into blocks of block_lanes columns.
template <class T, class Rule>
void sorted_rule(const T* X, index_t B, index_t n, index_t d, index_t tile, Rule rule, T* out) {
  const Comparators net = sorting_network(n);
  const index_t tiles = num_tiles(d, tile), lanes = block_lanes<T>();
#pragma omp parallel
  {
    AlignedVectors<vec64<T>> block(n * BLOCK_VECS);
    AlignedVectors<lane_mask<T>> nan_count(BLOCK_VECS);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile;
      const index_t c1 = std::min(d, c0 + tile);
      for (index_t c = c0; c < c1; c += lanes)
        sorted_rule_block_dispatched<T>(X + b * n * d + c, n, d, std::min(lanes, c1 - c), &net,
                                        block.data(), nan_count.data(), rule, out + b * d + c);
    }
  }
}

template <class T>
void cwmed(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out) {
  sorted_rule(X, B, n, d, tile, MedianOfBlock{}, out);
}
template <class T>
void cwtm(const T* X, index_t B, index_t n, index_t d, index_t f, index_t tile, T* out) {
  sorted_rule(X, B, n, d, tile, TrimmedMeanOfBlock{f}, out);
}
template <class T>
void meamed(const T* X, index_t B, index_t n, index_t d, index_t f, index_t tile, T* out) {
  sorted_rule(X, B, n, d, tile, MeanAroundMedianOfBlock{f}, out);
}

#define BYZKERN_INSTANTIATE(T)                                                              \
  template void mean<T>(const T*, index_t, index_t, index_t, index_t, T*);                  \
  template void cwmed<T>(const T*, index_t, index_t, index_t, index_t, T*);                 \
  template void cwtm<T>(const T*, index_t, index_t, index_t, index_t, index_t, T*);         \
  template void meamed<T>(const T*, index_t, index_t, index_t, index_t, index_t, T*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
