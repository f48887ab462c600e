// Sorting many short columns at once: one sorting network applied across SIMD lanes.
//
// A block holds n rows of LANES consecutive columns of X (row-major, as X itself), so no
// transpose is needed: each compare-exchange of rows a < b is an elementwise min/max of two
// rows of the block, and all LANES columns are sorted by the same data-independent sequence
// of comparators. Measured faster than per-column selection (std::nth_element on a transposed
// tile) for every n we benchmark (n <= 256): ~n log2(n)^2 / 4 vector min/max pairs per
// LANES columns against ~3n scalar branches per column.
#pragma once
#include <utility>

#include "common.hpp"

namespace byzkern {

using Comparators = std::vector<std::pair<std::int32_t, std::int32_t>>;

// Batcher's odd-even merge sort (Knuth, TAOCP vol. 3, 5.3.4) for any n: the network for the
// next power of two with every comparator touching an index >= n removed, which is exact
// because those positions would hold +Inf padding that no comparator moves.
inline Comparators sorting_network(index_t n) {
  Comparators net;
  for (index_t p = 1; p < n; p <<= 1)
    for (index_t k = p; k >= 1; k >>= 1)
      for (index_t j = k % p; j + k < n; j += 2 * k)
        for (index_t i = 0; i < std::min(k, n - j - k); ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p))
            net.emplace_back(static_cast<std::int32_t>(i + j), static_cast<std::int32_t>(i + j + k));
  return net;
}

// A block is n rows of BLOCK_VECS vectors; 128 bytes per row keeps n = 256 rows in a 32 KiB L1.
constexpr int BLOCK_VECS = 2;
template <class T>
constexpr index_t block_lanes() {
  return BLOCK_VECS * static_cast<index_t>(sizeof(vec64<T>) / sizeof(T));
}
template <class T>
using lane_mask = decltype(vec64<T>{} != vec64<T>{});  // int32 lanes for float, int64 for double

// Copies w <= block_lanes columns of n rows (row stride d) into the block, pads the other
// lanes with zeros, and replaces NaN by +Inf while counting NaNs per lane: NaN orders above
// +Inf (SPEC §8), so after sorting the last nan_count[lane] positions of a lane are its NaNs.
template <class T>
inline void load_block(const T* base, index_t n, index_t d, index_t w, vec64<T>* block,
                       lane_mask<T>* nan_count) {
  using V = vec64<T>;
  const V inf = V{} + std::numeric_limits<T>::infinity();
  for (int u = 0; u < BLOCK_VECS; ++u) nan_count[u] = lane_mask<T>{};
  for (index_t i = 0; i < n; ++i) {
    V* row = block + i * BLOCK_VECS;
    if (w == block_lanes<T>()) {
      std::memcpy(row, base + i * d, sizeof(V) * BLOCK_VECS);
    } else {
      std::memset(static_cast<void*>(row), 0, sizeof(V) * BLOCK_VECS);
      std::memcpy(row, base + i * d, sizeof(T) * w);
    }
    for (int u = 0; u < BLOCK_VECS; ++u) {
      const lane_mask<T> nan = row[u] != row[u];
      nan_count[u] -= nan;  // a true lane of a vector comparison is -1
      row[u] = nan ? inf : row[u];
    }
  }
}

// The compare-exchange is written per lane, in std::min/std::max form, because GCC turns that
// into vminps/vmaxps; the same select on the 64-byte generic vectors came out as scalar
// vminss/vmaxss with spills. The block holds no NaN here (load_block made them +Inf).
template <class T>
inline void sort_block(vec64<T>* block, const Comparators& net) {
  constexpr index_t lanes = block_lanes<T>();
  for (const auto& [a, b] : net) {
    T* __restrict ra = reinterpret_cast<T*>(block + static_cast<index_t>(a) * BLOCK_VECS);
    T* __restrict rb = reinterpret_cast<T*>(block + static_cast<index_t>(b) * BLOCK_VECS);
    for (index_t l = 0; l < lanes; ++l) {
      const T x = ra[l], y = rb[l];
      ra[l] = y < x ? y : x;
      rb[l] = y < x ? x : y;
    }
  }
}

// Puts the NaNs back at the top of each sorted lane.
template <class T>
inline void restore_nans(vec64<T>* block, index_t n, const lane_mask<T>* nan_count) {
  using M = lane_mask<T>;
  M any = M{};
  for (int u = 0; u < BLOCK_VECS; ++u) any |= nan_count[u];
  bool has_nan = false;
  for (size_t l = 0; l < sizeof(M) / sizeof(any[0]); ++l) has_nan |= any[l] != 0;
  if (!has_nan) return;
  const vec64<T> nan = vec64<T>{} + std::numeric_limits<T>::quiet_NaN();
  for (index_t p = 0; p < n; ++p)
    for (int u = 0; u < BLOCK_VECS; ++u) {
      const M above = nan_count[u] >= (M{} + static_cast<std::int32_t>(n - p));
      block[p * BLOCK_VECS + u] = above ? nan : block[p * BLOCK_VECS + u];
    }
}

}  // namespace byzkern
