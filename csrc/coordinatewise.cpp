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

// ---- rules on ordered columns --------------------------------------------------------------
// Each rule reads an ordered block (select.hpp) one key vector (8 floats or 4 doubles) at a
// time, in double, exactly as the reference computes on its float64 copy, and returns the
// result lanes. network_classes says which output positions the rule must find exactly.

template <class T>
using dvec = typename vec_of<double, 8 * vec_lanes<T>()>::type;  // a key vector's lanes as doubles

template <class T>
inline dvec<T> value_at(const keyvec<T>* block, index_t p, int u) {
  return __builtin_convertvector(key_to_value<T>(load_vec<keyvec<T>>(block + p * BLOCK_VECS + u)), dvec<T>);
}

// The median as the reference takes it: 0.5*lo + 0.5*hi in double, halves first so huge float64
// values do not overflow; for odd n lo and hi are the same element.
template <class T>
inline dvec<T> block_median(const keyvec<T>* block, index_t n, int u) {
  return 0.5 * value_at<T>(block, (n - 1) / 2, u) + 0.5 * value_at<T>(block, n / 2, u);
}

struct MedianOfBlock {
  std::vector<int> network_classes(index_t n) const {
    std::vector<int> c(n);
    for (index_t p = 0; p < n; ++p) c[p] = p < (n - 1) / 2 ? 0 : p == (n - 1) / 2 ? 1 : p == n / 2 ? 2 : 3;
    return c;
  }
  template <class T>
  dvec<T> operator()(const keyvec<T>* block, index_t n, int u) const {
    return block_median<T>(block, n, u);
  }
};

// The middle n - 2f values summed in position order (the network leaves them as a set, not
// sorted: the sum differs from the reference's only by rounding, within the tests' tolerance).
struct TrimmedMeanOfBlock {
  index_t f;
  std::vector<int> network_classes(index_t n) const {
    std::vector<int> c(n);
    for (index_t p = 0; p < n; ++p) c[p] = p < f ? 0 : p < n - f ? 1 : 2;
    return c;
  }
  template <class T>
  dvec<T> operator()(const keyvec<T>* block, index_t n, int u) const {
    dvec<T> acc = value_at<T>(block, f, u);
    for (index_t p = f + 1; p < n - f; ++p) acc += value_at<T>(block, p, u);
    return acc / static_cast<double>(n - 2 * f);
  }
};

// Mean of the n - f values closest to the median, ties in distance to the smaller value.
// In a sorted column those values are a window [s, s + n - f) with s in [0, f]: dropping the f
// values of largest (distance, position) merges two sorted lists, the left end (distances
// falling inward) and the right end (rising outward), so s is the merge-path split where the
// last dropped left value is strictly farther than the first kept right one and the last
// dropped right value is at least as far as the first kept left one. A NaN distance (NaN value
// or infinite median) counts as +Inf, as in the reference. Only positions [0, f], [n-f-1, n)
// and the median's must be exact; the rest of the middle is summed as a set.
struct MeanAroundMedianOfBlock {
  index_t f;
  std::vector<int> network_classes(index_t n) const {
    std::vector<int> c(n);
    for (index_t p = 0; p < n; ++p) {
      const bool middle = p > f && p < n - f - 1 && p != (n - 1) / 2 && p != n / 2;
      c[p] = middle ? -1 : static_cast<int>(p);
    }
    return c;
  }
  template <class T>
  dvec<T> operator()(const keyvec<T>* block, index_t n, int u) const {
    using D = dvec<T>;
    const D med = block_median<T>(block, n, u);
    const D inf = D{} + std::numeric_limits<double>::infinity();
    auto dist = [&](index_t p) {
      const D diff = value_at<T>(block, p, u) - med;
      const D a = diff < 0 ? -diff : diff;
      return a == a ? a : inf;
    };
    const index_t keep = n - f;
    D start = D{};
    for (index_t s = 0; s <= f; ++s) {
      auto ok = med == med || med != med;  // all lanes true
      if (s > 0) ok &= dist(s - 1) > dist(s + keep - 1);
      if (s < f) ok &= dist(s + keep) >= dist(s);
      start = ok ? D{} + static_cast<double>(s) : start;
    }
    D acc = D{};
    for (index_t p = f; p < keep; ++p) acc += value_at<T>(block, p, u);
    for (index_t p = 0; p < f; ++p) acc += start <= static_cast<double>(p) ? value_at<T>(block, p, u) : D{};
    for (index_t p = keep; p < n; ++p)
      acc += start + static_cast<double>(keep) > static_cast<double>(p) ? value_at<T>(block, p, u) : D{};
    return acc / static_cast<double>(keep);
  }
};

// One column tile [0, w) of batch item base: block by block, keys in, network, rule out.
template <class T, class Rule>
inline void ordered_rule_tile(const T* base, index_t n, index_t d, index_t w, const Comparators* net,
                              keyvec<T>* block, Rule rule, T* out) {
  constexpr index_t lanes = vec_lanes<T>();
  for (index_t c = 0; c < w; c += block_lanes<T>()) {
    load_block(base + c, n, d, std::min(block_lanes<T>(), w - c), block);
    order_block<T>(block, *net);
    for (int u = 0; u < BLOCK_VECS && c + u * lanes < w; ++u) {
      const vec32<T> r = __builtin_convertvector(rule.template operator()<T>(block, n, u), vec32<T>);
      std::memcpy(out + c + u * lanes, &r, sizeof(T) * std::min(lanes, w - c - u * lanes));
    }
  }
}
BYZKERN_DISPATCH(ordered_rule_tile_dispatched, ordered_rule_tile)

// OpenMP over (batch item, column tile).
template <class T, class Rule>
void ordered_rule(const T* X, index_t B, index_t n, index_t d, index_t tile, Rule rule, T* out) {
  const Comparators net = prune_network(sorting_network(n), rule.network_classes(n));
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel
  {
    AlignedVectors<keyvec<T>> block(n * BLOCK_VECS);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile;
      ordered_rule_tile_dispatched<T>(X + b * n * d + c0, n, d, std::min(tile, d - c0), &net,
                                      block.data(), rule, out + b * d + c0);
    }
  }
}

template <class T>
void cwmed(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out) {
  ordered_rule(X, B, n, d, tile, MedianOfBlock{}, out);
}
template <class T>
void cwtm(const T* X, index_t B, index_t n, index_t d, index_t f, index_t tile, T* out) {
  ordered_rule(X, B, n, d, tile, TrimmedMeanOfBlock{f}, out);
}
template <class T>
void meamed(const T* X, index_t B, index_t n, index_t d, index_t f, index_t tile, T* out) {
  ordered_rule(X, B, n, d, tile, MeanAroundMedianOfBlock{f}, out);
}

#define BYZKERN_INSTANTIATE(T)                                                              \
  template void mean<T>(const T*, index_t, index_t, index_t, index_t, T*);                  \
  template void cwmed<T>(const T*, index_t, index_t, index_t, index_t, T*);                 \
  template void cwtm<T>(const T*, index_t, index_t, index_t, index_t, index_t, T*);         \
  template void meamed<T>(const T*, index_t, index_t, index_t, index_t, index_t, T*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
