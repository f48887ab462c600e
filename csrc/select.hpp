// Ordering many short columns at once: one comparator network applied across SIMD lanes.
//
// A block holds n rows of block_lanes consecutive columns of X (row-major, as X itself), so no
// transpose is needed: each compare-exchange of rows a < b is an elementwise min/max of two
// rows of the block, and all columns are ordered by the same data-independent sequence of
// comparators. The block holds integer keys, not floats: GCC lowers min/max of integer vectors
// to vpminsd/vpmaxsd (AVX2), while for float vectors it emits compare-and-blend pairs (it does
// not turn a < b ? a : b into vminps, which differs from it only for NaN), and the key puts
// every NaN above +Inf, the 'outlier' order of SPEC §8, with no NaN bookkeeping.
#pragma once
#include <array>
#include <utility>

#include "common.hpp"

namespace byzkern {

using Comparators = std::vector<std::pair<std::int32_t, std::int32_t>>;

// Batcher's odd-even merge sort (Knuth, TAOCP vol. 3, 5.3.4) for any n: the network for the
// next power of two with every comparator touching an index >= n removed, which is exact
// because those positions would hold +Inf padding that no comparator moves. emit(a, b) is
// called for each comparator in order; constexpr, so the small networks are built at compile time.
// Levels below first_level (a power of two) are left out: they only sort each aligned group
// of first_level positions, which the caller does another way.
template <class Emit>
constexpr void batcher_comparators(index_t n, Emit&& emit, index_t first_level = 1) {
  for (index_t p = first_level; p < n; p <<= 1)
    for (index_t k = p; k >= 1; k >>= 1)
      for (index_t j = k % p; j + k < n; j += 2 * k)
        for (index_t i = 0; i < std::min(k, n - j - k); ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) emit(i + j, i + j + k);
}

inline Comparators sorting_network(index_t n, index_t first_level) {
  Comparators net;
  batcher_comparators(
      n, [&](index_t a, index_t b) { net.emplace_back(static_cast<std::int32_t>(a), static_cast<std::int32_t>(b)); },
      first_level);
  return net;
}

struct Comparator {
  int a, b;
};
template <int N>
constexpr index_t sorting_network_size() {
  index_t size = 0;
  batcher_comparators(N, [&](index_t, index_t) { ++size; });
  return size;
}
template <int N>
constexpr std::array<Comparator, sorting_network_size<N>()> static_sorting_network() {
  std::array<Comparator, sorting_network_size<N>()> net{};
  index_t k = 0;
  batcher_comparators(N, [&](index_t a, index_t b) { net[k++] = Comparator{int(a), int(b)}; });
  return net;
}

// The comparators of net that a rule needs. A rule reads the output positions by class (the
// median reads positions (n-1)/2 and n/2, a trimmed mean only the set in the middle), so a
// comparator of two positions of one class that no later kept comparator touches only
// permutes values inside that class, and is dropped. Walking backwards finds them all.
inline Comparators prune_network(const Comparators& net, const std::vector<int>& position_class) {
  std::vector<bool> touched_later(position_class.size(), false);
  Comparators kept;
  for (auto it = net.rbegin(); it != net.rend(); ++it) {
    const auto [a, b] = *it;
    if (!touched_later[a] && !touched_later[b] && position_class[a] == position_class[b]) continue;
    touched_later[a] = touched_later[b] = true;
    kept.push_back(*it);
  }
  return Comparators(kept.rbegin(), kept.rend());
}

// ---- order-preserving integer keys --------------------------------------------------------
// Flipping the magnitude bits of negative values makes signed integer order the float order
// (-0 just below +0, which compare equal and give the same median); every NaN, whatever its
// sign and payload, becomes the canonical quiet NaN, whose key is above +Inf's. The map is an
// involution on everything but NaN, so the same function turns a key back into the value.
template <class T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using type = std::int32_t;
  static constexpr type magnitude = 0x7fffffff, inf = 0x7f800000, nan = 0x7fc00000;
};
template <>
struct KeyTraits<double> {
  using type = std::int64_t;
  static constexpr type magnitude = 0x7fffffffffffffff, inf = 0x7ff0000000000000,
                        nan = 0x7ff8000000000000;
};
template <class T>
using vec32 = typename vec_of<T, 32>::type;  // 8 floats or 4 doubles: one AVX2 register
template <class T>
using keyvec = vec32<typename KeyTraits<T>::type>;
template <class T>
using vec4 = typename vec_of<T, 4 * sizeof(T)>::type;  // four lanes: what a rule computes at once
template <class T>
constexpr index_t vec_lanes() {
  return static_cast<index_t>(32 / sizeof(T));
}

// V: any vector of T's keys (a block row's 8 lanes, or 4 of them).
template <class T, class V>
inline V flip_negative(const V& v) {
  using K = KeyTraits<T>;
  constexpr int sign_shift = 8 * sizeof(typename K::type) - 1;
  return v ^ ((v >> sign_shift) & K::magnitude);
}

template <class T>
inline keyvec<T> value_to_key(const keyvec<T>& bits) {
  using K = KeyTraits<T>;
  return (bits & K::magnitude) > K::inf ? keyvec<T>{} + K::nan : flip_negative<T>(bits);
}

// Four lanes from lane 4 * g of row p of a block, as values in double (exact for float).
template <class T>
inline v4d values_as_double(const keyvec<T>* block_row, index_t g) {
  using Key = typename KeyTraits<T>::type;
  const vec4<Key> bits = flip_negative<T>(load_vec<vec4<Key>>(reinterpret_cast<const Key*>(block_row) + 4 * g));
  return __builtin_convertvector(reinterpret_cast<vec4<T>>(bits), v4d);
}

// ---- blocks -------------------------------------------------------------------------------
// A block is n rows of BLOCK_VECS key vectors; 64 bytes per row keeps n = 256 rows (16 KiB)
// in L1 beside the input rows streaming in.
constexpr int BLOCK_VECS = 2;
template <class T>
constexpr index_t block_lanes() {
  return BLOCK_VECS * vec_lanes<T>();
}

template <class T>
inline void order_block(keyvec<T>* block, const Comparators& net) {
  using V = keyvec<T>;
  for (const auto& [a, b] : net) {
    V* ra = block + static_cast<index_t>(a) * BLOCK_VECS;
    V* rb = block + static_cast<index_t>(b) * BLOCK_VECS;
    for (int u = 0; u < BLOCK_VECS; ++u) {
      const V x = load_vec<V>(ra + u), y = load_vec<V>(rb + u);
      store_vec(ra + u, x < y ? x : y);
      store_vec(rb + u, x < y ? y : x);
    }
  }
}

// For n <= MAX_STATIC_ROWS the whole network is unrolled at compile time over n key vectors in
// registers (GCC spills some past 16), fused with loading the keys: no store and reload of the
// block per comparator, which bounds the loop of order_block. Orders all n positions. Larger n
// sort each group of GROUP_ROWS rows that way and merge the groups with the rest of Batcher's
// network at run time (its levels below GROUP_ROWS stay inside the groups).
constexpr int MAX_STATIC_ROWS = 32;
constexpr int GROUP_ROWS = 16;
constexpr int PREFETCH_BLOCKS = 8;  // how far ahead along each row the loads are prefetched

template <class T>
inline void compare_exchange(keyvec<T>& x, keyvec<T>& y) {
  const keyvec<T> lo = x < y ? x : y, hi = x < y ? y : x;
  x = lo;
  y = hi;
}

// Keys of block_lanes columns of N rows (row stride d), ordered, into the block.
template <class T, int N, std::size_t... I>
inline void load_and_order_block_static(const T* base, index_t d, keyvec<T>* block,
                                        std::index_sequence<I...>) {
  using V = keyvec<T>;
  [[maybe_unused]] constexpr auto net = static_sorting_network<N>();  // empty for N = 1
  // One cache line per row per block: with tens of rows read side by side the hardware
  // prefetchers lose track of the streams, and the loads wait on memory.
  for (int i = 0; i < N; ++i) __builtin_prefetch(base + i * d + PREFETCH_BLOCKS * block_lanes<T>());
  for (int u = 0; u < BLOCK_VECS; ++u) {
    V r[N];
    for (int i = 0; i < N; ++i) r[i] = value_to_key<T>(load_vec<V>(base + i * d + u * vec_lanes<T>()));
    (compare_exchange<T>(r[net[I].a], r[net[I].b]), ...);
    for (int i = 0; i < N; ++i) store_vec(block + i * BLOCK_VECS + u, r[i]);
  }
}

// The first n rows of block ordered, group by group of GROUP_ROWS (the last may be shorter).
template <class T, int M = 1>
inline void load_and_order_groups(const T* base, index_t n, index_t d, keyvec<T>* block) {
  if constexpr (M <= GROUP_ROWS) {
    constexpr auto comparators = std::make_index_sequence<static_sorting_network<M>().size()>{};
    if (M == GROUP_ROWS) {
      for (index_t i = 0; i + GROUP_ROWS <= n; i += GROUP_ROWS)
        load_and_order_block_static<T, M>(base + i * d, d, block + i * BLOCK_VECS, comparators);
    } else if (n % GROUP_ROWS == M) {
      const index_t i = n - M;
      load_and_order_block_static<T, M>(base + i * d, d, block + i * BLOCK_VECS, comparators);
    }
    load_and_order_groups<T, M + 1>(base, n, d, block);
  }
}

}  // namespace byzkern
