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

struct Comparator {
  int a, b;
};
using Comparators = std::vector<Comparator>;

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
  batcher_comparators(n, [&](index_t a, index_t b) { net.push_back(Comparator{int(a), int(b)}); }, first_level);
  return net;
}

// Which comparators of net a rule needs. A rule reads the output positions by class (the median
// reads positions (n-1)/2 and n/2, a trimmed mean only the set in the middle), so a comparator
// of two positions of one class that no later needed comparator touches only permutes values
// inside that class, and is dropped. Walking backwards finds them all. constexpr, so the
// networks unrolled at compile time are pruned the same way as the runtime ones.
template <class Net, class Class, class Touched, class Flags>
constexpr void mark_needed(const Net& net, Class position_class, Touched& touched_later, Flags& needed) {
  for (std::size_t k = net.size(); k-- > 0;) {
    const int a = net[k].a, b = net[k].b;
    needed[k] = touched_later[a] || touched_later[b] || position_class(a) != position_class(b);
    if (needed[k]) touched_later[a] = touched_later[b] = true;
  }
}

inline Comparators prune_network(const Comparators& net, const std::vector<int>& position_class) {
  std::vector<bool> touched_later(position_class.size(), false), needed(net.size());
  mark_needed(net, [&](int p) { return position_class[p]; }, touched_later, needed);
  Comparators kept;
  for (std::size_t k = 0; k < net.size(); ++k)
    if (needed[k]) kept.push_back(net[k]);
  return kept;
}

// The classes of a rule that reads every position in order: nothing is pruned.
struct AllPositions {
  static constexpr int position_class(index_t, index_t p) { return static_cast<int>(p); }
};

// The network for N rows, pruned for Classes::position_class(N, p), built at compile time.
template <int N, class Classes>
struct StaticNetwork {
  static constexpr index_t full_size() {
    index_t size = 0;
    batcher_comparators(N, [&](index_t, index_t) { ++size; });
    return size;
  }
  static constexpr std::array<Comparator, full_size()> full() {
    std::array<Comparator, full_size()> net{};
    index_t k = 0;
    batcher_comparators(N, [&](index_t a, index_t b) { net[k++] = Comparator{int(a), int(b)}; });
    return net;
  }
  static constexpr std::array<bool, full_size()> needed() {
    std::array<bool, full_size()> flags{};
    std::array<bool, N> touched_later{};
    mark_needed(full(), [](int p) { return Classes::position_class(N, p); }, touched_later, flags);
    return flags;
  }
  static constexpr index_t size() {
    index_t size = 0;
    for (bool b : needed()) size += b;
    return size;
  }
  static constexpr std::array<Comparator, size()> comparators() {
    std::array<Comparator, size()> net{};
    const auto all = full();
    const auto flags = needed();
    index_t k = 0;
    for (std::size_t i = 0; i < all.size(); ++i)
      if (flags[i]) net[k++] = all[i];
    return net;
  }
};

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
// network at run time (its levels below GROUP_ROWS stay inside the groups). Groups of 32 rather
// than 16 leave the runtime network, two loads and two stores per comparator, a fifth fewer
// comparators at n = 256 (meamed 2489 -> 1969) and half at n = 64 (241 -> 111).
constexpr int MAX_STATIC_ROWS = 32;
constexpr int GROUP_ROWS = MAX_STATIC_ROWS;
constexpr int PREFETCH_BLOCKS = 8;  // how far ahead along each row the loads are prefetched
// Up to this many rows the prefetches go into L1; past it into L2: n * PREFETCH_BLOCKS lines in
// flight are half of a 32 KiB L1 at n = 32 and evict the block and each other before use
// (measured, (32, 1e6) float32 2 threads: cwmed 4.6x -> 2.5x floor, (64, 1e6) 5.1x -> 3.8x,
// (256, 1e5) 8.9x -> 8.0x; at n = 20 L1 stays faster).
constexpr int L1_PREFETCH_ROWS = 28;

template <class T>
inline void compare_exchange(keyvec<T>& x, keyvec<T>& y) {
  const keyvec<T> lo = x < y ? x : y, hi = x < y ? y : x;
  x = lo;
  y = hi;
}

// The n rows of an ordered block from keys back to values: done once per element here, eight
// lanes at a time, instead of at every read of a rule.
template <class T>
inline void keys_to_values(keyvec<T>* block, index_t n) {
  for (index_t i = 0; i < n * BLOCK_VECS; ++i) store_vec(block + i, flip_negative<T>(load_vec<keyvec<T>>(block + i)));
}

// Keys of block_lanes columns of N rows (row stride d), ordered, into the block; as values
// (keys_to_values) where AsValues, for a rule to read, else as keys, for more ordering.
// Positions are ordered as far as Classes needs (AllPositions: fully).
// prefetch_to_l2: the block is one group of more rows than L1_PREFETCH_ROWS.
// rows < N: only the first rows are read and stored; the network orders them with N - rows keys
// above every value's (a NaN's included) in place of the rest, which stay at the end. One
// network for a last, shorter group of the runtime path, where one per size doubled its
// unrolled code, and the build time with it.
template <class T, int N, class Classes, bool AsValues, std::size_t... I>
inline void load_and_order_block_static(const T* base, index_t d, keyvec<T>* block, bool prefetch_to_l2,
                                        std::index_sequence<I...>, index_t rows = N) {
  using V = keyvec<T>;
  [[maybe_unused]] constexpr auto net = StaticNetwork<N, Classes>::comparators();  // empty for N = 1
  // One cache line per row per block: with tens of rows read side by side the hardware
  // prefetchers lose track of the streams, and the loads wait on memory.
  const T* ahead = base + PREFETCH_BLOCKS * block_lanes<T>();
  if (prefetch_to_l2 || N > L1_PREFETCH_ROWS)
    for (int i = 0; i < rows; ++i) __builtin_prefetch(ahead + i * d, 0, 2);
  else
    for (int i = 0; i < rows; ++i) __builtin_prefetch(ahead + i * d);
  const V above_every_value = V{} + std::numeric_limits<typename KeyTraits<T>::type>::max();
  for (int u = 0; u < BLOCK_VECS; ++u) {
    // Unrolled, so that r stays in registers (as far as they go) between the loads, the network
    // and the stores: a loop kept it in memory, the network loading its operands from there.
    V r[N];
#pragma GCC unroll 32
    for (int i = 0; i < N; ++i)
      r[i] = i < rows ? value_to_key<T>(load_vec<V>(base + i * d + u * vec_lanes<T>())) : above_every_value;
    (compare_exchange<T>(r[net[I].a], r[net[I].b]), ...);
#pragma GCC unroll 32
    for (int i = 0; i < N; ++i)
      if (i < rows) store_vec(block + i * BLOCK_VECS + u, AsValues ? flip_negative<T>(r[i]) : r[i]);
  }
}

// The first n rows of block ordered, group by group of GROUP_ROWS; the last group may be shorter.
template <class T>
inline void load_and_order_groups(const T* base, index_t n, index_t d, keyvec<T>* block) {
  constexpr auto comparators = std::make_index_sequence<StaticNetwork<GROUP_ROWS, AllPositions>::size()>{};
  index_t i = 0;
  // whole groups without the row checks of a shorter one (cwmed at (64, 1e6) took 9% longer with them)
  for (; i + GROUP_ROWS <= n; i += GROUP_ROWS)
    load_and_order_block_static<T, GROUP_ROWS, AllPositions, false>(base + i * d, d, block + i * BLOCK_VECS, true,
                                                                    comparators);
  if (i < n)
    load_and_order_block_static<T, GROUP_ROWS, AllPositions, false>(base + i * d, d, block + i * BLOCK_VECS, true,
                                                                    comparators, n - i);
}

}  // namespace byzkern
