// Coordinate-wise rules on row-major (B, n, d) buffers.
//
// This file is compiled twice: here for float, and through coordinatewise_double.cpp for double
// (BYZKERN_COORDINATEWISE_TYPE). The networks unrolled for every n <= MAX_STATIC_ROWS make it by
// far the slowest file to compile; two translation units let the parallel build (setup.py's
// ParallelCompile) run the halves on two cores instead of making one file the critical path.
#include "coordinatewise.hpp"

#include "compress.hpp"
#include "select.hpp"

namespace byzkern {

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
// Each rule reads an ordered block (select.hpp) a whole row at a time, in double, exactly as the
// reference computes on its float64 copy, and writes the block_lanes results. A row is read as
// chunks of four lanes (one AVX2 register of doubles; GCC lowers compares and selects of wider
// vectors lane by lane in the AVX2 tier), each with its own accumulator: the chunks' additions
// are independent chains, where a rule that ran chunk after chunk made one dependent chain of n
// additions at a time (half the meamed time at (20, 1e6) waited on it). Each lane's additions
// keep their order, so every tier gives the same bits. position_class(n, p) says which output
// positions the rule must find exactly (select.hpp's pruning); compile_time_classes prunes the
// unrolled networks, where the classes do not depend on a runtime parameter (f), and is
// AllPositions where they do.

typedef std::int64_t v4l __attribute__((vector_size(32)));

template <class T>
constexpr int chunks_per_row() {
  return static_cast<int>(block_lanes<T>() / 4);
}

// Lanes 4h..4h+3 of row p, in double.
template <class T>
inline v4d chunk_at(const keyvec<T>* block, index_t p, int h) {
  return load4_as_double(reinterpret_cast<const T*>(block + p * BLOCK_VECS) + 4 * h);
}

template <class T>
inline void store_chunk(T* out, int h, const v4d& v) {
  store_vec(out + 4 * h, __builtin_convertvector(v, typename vec_of<T, 4 * sizeof(T)>::type));
}

// The median as the reference takes it: 0.5*lo + 0.5*hi in double, halves first so huge float64
// values do not overflow; for odd n lo and hi are the same element.
template <class T>
inline v4d chunk_median(const keyvec<T>* block, index_t n, int h) {
  return 0.5 * chunk_at<T>(block, (n - 1) / 2, h) + 0.5 * chunk_at<T>(block, n / 2, h);
}

struct MedianOfBlock {
  using compile_time_classes = MedianOfBlock;
  static constexpr int position_class(index_t n, index_t p) {
    return p < (n - 1) / 2 ? 0 : p == (n - 1) / 2 ? 1 : p == n / 2 ? 2 : 3;
  }
  static std::pair<index_t, index_t> positions_read(index_t n) { return {(n - 1) / 2, n / 2 + 1}; }
  template <class T>
  void operator()(const keyvec<T>* block, index_t n, T* out) const {
    for (int h = 0; h < chunks_per_row<T>(); ++h) store_chunk(out, h, chunk_median<T>(block, n, h));
  }
};

// The middle n - 2f values summed in position order (the network leaves them as a set, not
// sorted: the sum differs from the reference's only by rounding, within the tests' tolerance).
struct TrimmedMeanOfBlock {
  index_t f;
  using compile_time_classes = AllPositions;
  int position_class(index_t n, index_t p) const { return p < f ? 0 : p < n - f ? 1 : 2; }
  std::pair<index_t, index_t> positions_read(index_t n) const { return {f, n - f}; }
  template <class T>
  void operator()(const keyvec<T>* block, index_t n, T* out) const {
    constexpr int H = chunks_per_row<T>();
    v4d acc[H];
    for (int h = 0; h < H; ++h) acc[h] = chunk_at<T>(block, f, h);
    for (index_t p = f + 1; p < n - f; ++p)
      for (int h = 0; h < H; ++h) acc[h] += chunk_at<T>(block, p, h);
    for (int h = 0; h < H; ++h) store_chunk(out, h, acc[h] / static_cast<double>(n - 2 * f));
  }
};

// Mean of the n - f values closest to the median, ties in distance to the smaller value.
// In a sorted column those values are a window [s, s + n - f) with s in [0, f]: dropping the f
// values of largest (distance, position) merges two sorted lists, the left end (distances
// falling inward) and the right end (rising outward). So the left value p < f is dropped exactly
// when it is strictly farther than the right value n - f + p it is paired with, and then that
// right value is kept in its place: of each pair (p, n - f + p) exactly one is kept, and no
// search for s is needed. A NaN distance (NaN value or infinite median) counts as +Inf, as in
// the reference: the right value is kept when its distance is below +Inf and the left one's is
// not at most it (NaN included). Only positions [0, f), [n-f, n) and the median's must be exact;
// the middle is summed as a set.
struct MeanAroundMedianOfBlock {
  index_t f;
  using compile_time_classes = AllPositions;
  int position_class(index_t n, index_t p) const {
    const bool middle = p >= f && p < n - f && p != (n - 1) / 2 && p != n / 2;
    return middle ? -1 : static_cast<int>(p);
  }
  static std::pair<index_t, index_t> positions_read(index_t n) { return {0, n}; }
  template <class T>
  void operator()(const keyvec<T>* block, index_t n, T* out) const {
    constexpr int H = chunks_per_row<T>();
    const v4d inf = v4d{} + std::numeric_limits<double>::infinity();
    // |v - med| as the sign bit cleared (a cast between vector types reinterprets the bits)
    auto distance = [](const v4d& v, const v4d& med) {
      return (v4d)((v4l)(v - med) & std::numeric_limits<std::int64_t>::max());
    };
    const index_t keep = n - f;
    v4d med[H], acc[H];
    for (int h = 0; h < H; ++h) {
      med[h] = chunk_median<T>(block, n, h);
      acc[h] = v4d{};
    }
    for (index_t p = f; p < keep; ++p)
      for (int h = 0; h < H; ++h) acc[h] += chunk_at<T>(block, p, h);
    for (index_t p = 0; p < f; ++p)
      for (int h = 0; h < H; ++h) {
        const v4d left = chunk_at<T>(block, p, h), right = chunk_at<T>(block, keep + p, h);
        const v4d to_left = distance(left, med[h]), to_right = distance(right, med[h]);
        // Selected by bits: an 8-lane vector ?: on this mask compiled lane by lane, with branches.
        const v4l keep_right = (to_right < inf) & ~(to_left <= to_right);
        acc[h] += (v4d)(((v4l)right & keep_right) | ((v4l)left & ~keep_right));
      }
    for (int h = 0; h < H; ++h) store_chunk(out, h, acc[h] / static_cast<double>(keep));
  }
};

// Rows known at compile time (N <= MAX_STATIC_ROWS, unrolled network) or not (N = 0).
template <class T, int N>
struct RowCount {
  using value_type = T;
  static constexpr int rows = N;
};

// The block of n rows at src (row stride d, wb columns) as full vectors: in place, or, for a last
// block narrower than block_lanes, copied into tail (n rows of block_lanes, the rest zero).
template <class T>
inline std::pair<const T*, index_t> full_block(const T* src, index_t n, index_t d, index_t wb, T* tail) {
  constexpr index_t lanes = block_lanes<T>();
  if (wb == lanes) return {src, d};
  std::fill(tail, tail + n * lanes, T(0));
  for (index_t i = 0; i < n; ++i) std::memcpy(tail + i * lanes, src + i * d, sizeof(T) * wb);
  return {tail, lanes};
}

// One column tile [0, w) of batch item base: block by block, keys in, network, values back, rule out.
template <class S, class Rule>
inline void ordered_rule_tile(const typename S::value_type* base, index_t n, index_t d, index_t w,
                              const Comparators* net, keyvec<typename S::value_type>* block,
                              typename S::value_type* tail, Rule rule, typename S::value_type* out) {
  using T = typename S::value_type;
  constexpr index_t lanes = block_lanes<T>();
  for (index_t c = 0; c < w; c += lanes) {
    const index_t wb = std::min(lanes, w - c);
    const auto [src, stride] = full_block(base + c, n, d, wb, tail);
    if constexpr (S::rows > 0) {
      using Classes = typename Rule::compile_time_classes;
      load_and_order_block_static<T, S::rows, Classes, true>(
          src, stride, block, false, std::make_index_sequence<StaticNetwork<S::rows, Classes>::size()>{});
    } else {
      load_and_order_groups<T>(src, n, stride, block);
      order_block<T>(block, *net);
      keys_to_values<T>(block, n);
    }
    // The rule sees n as a constant where the network is unrolled, so its loops unroll too.
    const index_t rows = S::rows > 0 ? S::rows : n;
    if (wb == lanes) {
      rule.template operator()<T>(block, rows, out + c);
    } else {
      T partial[lanes];
      rule.template operator()<T>(block, rows, partial);
      std::memcpy(out + c, partial, sizeof(T) * wb);
    }
  }
}
// The baseline tier unrolls networks only up to BASELINE_STATIC_ROWS rows and orders larger n
// on the runtime path, whose group of GROUP_ROWS rows (padded above every value) gives the same
// fully ordered block and so the same bits. Without SSE4.1's pminsd its unrolled networks are
// compare-and-blend sequences of 128-bit vectors: 3.2 of the 4.6 MB of this file's object code,
// and most of its build time (about 100 s a dtype on this machine), for a tier that only CPUs
// without AVX2 (before 2013) run.
// The runtime path is one out-of-line copy per dtype and rule, which every n past the limit calls.
constexpr int BASELINE_STATIC_ROWS = 8;
template <class S, class... A>
__attribute__((noinline, flatten)) void ordered_rule_tile_runtime_baseline(A... a) {
  ordered_rule_tile<S>(a...);
}
template <class S, class... A>
inline void ordered_rule_tile_baseline(A... a) {
  if constexpr (S::rows > 0 && S::rows <= BASELINE_STATIC_ROWS)
    ordered_rule_tile<S>(a...);
  else
    ordered_rule_tile_runtime_baseline<RowCount<typename S::value_type, 0>>(a...);
}
BYZKERN_DISPATCH3_CALLS(ordered_rule_tile_dispatched, (ordered_rule_tile_baseline<T>), (ordered_rule_tile<T>),
                        (ordered_rule_tile<T>))

// The tile kernel with the network unrolled for n rows where there is one, else the runtime one.
template <class T, int N = 1, class... A>
void ordered_rule_tile_for(index_t n, A... a) {
  if constexpr (N <= MAX_STATIC_ROWS) {
    if (n == N) return ordered_rule_tile_dispatched<RowCount<T, N>>(a...);
    ordered_rule_tile_for<T, N + 1>(n, a...);
  } else {
    ordered_rule_tile_dispatched<RowCount<T, 0>>(a...);
  }
}

// The sorting network for n rows, pruned to the output positions the rule must find exactly.
template <class Rule>
Comparators rule_network(index_t n, const Rule& rule) {
  std::vector<int> classes(n);
  for (index_t p = 0; p < n; ++p) classes[p] = rule.position_class(n, p);
  return prune_network(sorting_network(n, GROUP_ROWS), classes);
}

// w columns of n rows, from src_stride apart to dst_stride apart.
template <class T>
void copy_rows(const T* src, index_t src_stride, index_t n, index_t w, T* dst, index_t dst_stride) {
  for (index_t i = 0; i < n; ++i) std::memcpy(dst + i * dst_stride, src + i * src_stride, sizeof(T) * w);
}

// The row stride of a tile copied to a buffer: a cache line longer than the tile, since rows a
// multiple of 4 KiB apart all fall in one L1 set (8 ways), and the tile kernel, which reads a line
// of every row per block, then misses on every read.
template <class T>
constexpr index_t padded_stride(index_t tile) {
  return tile + 64 / static_cast<index_t>(sizeof(T));
}

// Whether n rows `stride` elements apart put more than 4 lines in one of the 64 sets of the L1.
template <class T>
bool rows_crowd_l1_sets(index_t n, index_t stride) {
  int lines[64] = {};
  for (index_t i = 0; i < n; ++i)
    if (++lines[i * stride * static_cast<index_t>(sizeof(T)) / 64 % 64] > 4) return true;
  return false;
}

// Whether a tile of n rows d apart is first copied to rows `padded` apart: where the rows crowd L1
// sets, and only where the padded tile stays in L2 (not past 32 float32 rows of 8 KiB): many more
// rows than L1 sets crowd them whatever the stride, and a larger buffer would be reread from L3.
template <class T>
bool pad_rows(index_t n, index_t d, index_t padded) {
  return n * padded * static_cast<index_t>(sizeof(T)) <= (1 << 20) && rows_crowd_l1_sets<T>(n, d);
}

// OpenMP over (batch item, column tile). Rows that crowd L1 sets are copied tile by tile, a row at
// a time, to a buffer with padded rows first (pad_rows). 1 thread, CPU time, float32, (20, 2^20): cwtm 14.4
// -> 10.5 ms, cwmed 12.4 -> 9.6, against 5.1 and 4.2 at d = 2^20 + 16. The rest is the memory
// side: copying the rows interleaved, as the kernel reads them, took 13.1 ms (their lines share
// L2 sets too, so the prefetched ones evict each other).
template <class T, class Rule>
void ordered_rule(const T* X, index_t B, index_t n, index_t d, index_t tile, Rule rule, T* out) {
  const Comparators net = rule_network(n, rule);
  const index_t tiles = num_tiles(d, tile), stride = padded_stride<T>(tile);
  const bool copy = pad_rows<T>(n, d, stride);
#pragma omp parallel
  {
    AlignedVectors<keyvec<T>> block(n * BLOCK_VECS);
    std::vector<T> tail(n * block_lanes<T>()), padded(copy ? n * stride : 0);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile, w = std::min(tile, d - c0);
      const T* base = X + b * n * d + c0;
      if (copy) {
        copy_rows(base, d, n, w, padded.data(), stride);
        base = padded.data();
      }
      ordered_rule_tile_for<T>(n, base, n, copy ? stride : d, w, &net, block.data(), tail.data(), rule,
                               out + b * d + c0);
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

// ---- candidate_deviations ------------------------------------------------------------------
// The candidates attack_candidates would build from one tile of H differ only in their f
// Byzantine rows, which are equal. So the tile's h honest rows are ordered once, and each
// candidate's ordered column is a merge: with r honest keys below the Byzantine key b, position
// p holds honest key p for p < r, b for r <= p < r + f, and honest key p - f after. Since the
// honest keys are sorted, p < r exactly when honest key p is below b: two compares a position,
// no search for r.

// The h rows of a column tile, ordered as keys block by block into sorted (h rows of BLOCK_VECS
// per block), as the runtime path orders them: groups of GROUP_ROWS, then the merging levels
// (net; empty for h <= GROUP_ROWS).
template <class T>
inline void order_tile(const T* base, index_t h, index_t d, index_t w, const Comparators* net, keyvec<T>* sorted,
                       T* tail) {
  constexpr index_t lanes = block_lanes<T>();
  for (index_t c = 0; c < w; c += lanes) {
    const auto [src, stride] = full_block(base + c, h, d, std::min(lanes, w - c), tail);
    keyvec<T>* block = sorted + c / lanes * h * BLOCK_VECS;
    load_and_order_groups<T>(src, h, stride, block);
    order_block<T>(block, *net);
  }
}
BYZKERN_DISPATCH3(order_tile_dispatched, order_tile)

// Positions [first, last) of the ordered column of h honest keys (one ordered block) and f keys
// byzantine, as values, into merged.
template <class T>
inline void merge_byzantine_rows(const keyvec<T>* honest, index_t h, index_t f, const keyvec<T>* byzantine,
                                 index_t first, index_t last, keyvec<T>* merged) {
  using V = keyvec<T>;
  for (index_t p = first; p < last; ++p)
    for (int u = 0; u < BLOCK_VECS; ++u) {
      const V b = byzantine[u];
      // after all honest keys, or after the Byzantine ones where p - f < 0
      const V at = p < h ? load_vec<V>(honest + p * BLOCK_VECS + u) : b;
      const V shifted = p >= f ? load_vec<V>(honest + (p - f) * BLOCK_VECS + u) : b;
      const V key = at < b ? at : shifted < b ? b : shifted;
      store_vec(merged + p * BLOCK_VECS + u, flip_negative<T>(key));
    }
}

// squares[e * block_lanes + j] += (rule - mu)^2 of candidate e at lane j, over the blocks of an
// ordered tile (order_tile), for each of the E candidates in turn while a block is in L1.
template <class T, class Rule>
inline void merged_rule_deviations(const keyvec<T>* sorted, index_t h, index_t f, index_t w, const T* mu,
                                   const T* direction, const double* etas, index_t E, keyvec<T>* merged, Rule rule,
                                   double* squares) {
  using V = keyvec<T>;
  constexpr index_t lanes = block_lanes<T>();
  const index_t n = h + f;
  const auto [first, last] = rule.positions_read(n);
  for (index_t c = 0; c < w; c += lanes) {
    const index_t wb = std::min(lanes, w - c);
    const V* honest = sorted + c / lanes * h * BLOCK_VECS;
    for (index_t e = 0; e < E; ++e) {
      T values[lanes] = {}, aggregate[lanes];
      candidate_row(mu + c, direction + c, etas[e], wb, values);
      V byzantine[BLOCK_VECS];
      for (int u = 0; u < BLOCK_VECS; ++u) byzantine[u] = value_to_key<T>(load_vec<V>(values + u * vec_lanes<T>()));
      merge_byzantine_rows<T>(honest, h, f, byzantine, first, last, merged);
      rule.template operator()<T>(merged, n, aggregate);
      for (index_t j = 0; j < wb; ++j) {
        const double gap = static_cast<double>(aggregate[j]) - static_cast<double>(mu[c + j]);
        squares[e * lanes + j] += gap * gap;
      }
    }
  }
}
BYZKERN_DISPATCH3(merged_rule_deviations_dispatched, merged_rule_deviations)

// The squared distance from mu of the rule of each candidate attack_candidates would build (H's
// h rows, then f rows of candidate_row), without building the batch. A job orders one column
// tile of H (padded rows where they crowd L1 sets, as ordered_rule) and merges the candidates
// in. The rule reads the values of the fully ordered column: the same as on the built batch at
// every position, though where the built batch's pruned network leaves the middle as a set
// (cwtm, meamed) the float64 sum adds them in another order.
// Each (candidate, tile) sum is kept apart, then the tiles are added in order: the same bits for
// any thread count.
template <class T, class Rule>
void merged_candidate_deviations(const T* H, const T* mu, const T* direction, const double* etas, index_t B,
                                 index_t h, index_t d, index_t E, index_t f, index_t tile, Rule rule, double* out) {
  constexpr index_t lanes = block_lanes<T>();
  const index_t tiles = num_tiles(d, tile), stride = padded_stride<T>(tile);
  const Comparators net = sorting_network(h, GROUP_ROWS);
  const bool copy = pad_rows<T>(h, d, stride);
  std::vector<double> partial(B * E * tiles);
#pragma omp parallel
  {
    AlignedVectors<keyvec<T>> sorted(num_tiles(tile, lanes) * h * BLOCK_VECS), merged((h + f) * BLOCK_VECS);
    std::vector<T> tail(h * lanes), padded(copy ? h * stride : 0);
    std::vector<double> squares(E * lanes);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, t = job % tiles, c0 = t * tile, w = std::min(tile, d - c0);
      const T* base = H + b * h * d + c0;
      if (copy) {
        copy_rows(base, d, h, w, padded.data(), stride);
        base = padded.data();
      }
      order_tile_dispatched<T>(base, h, copy ? stride : d, w, &net, sorted.data(), tail.data());
      std::fill(squares.begin(), squares.end(), 0.0);
      merged_rule_deviations_dispatched<T>(static_cast<const keyvec<T>*>(sorted.data()), h, f, w, mu + b * d + c0,
                                           direction + b * d + c0, etas, E, merged.data(), rule, squares.data());
      for (index_t e = 0; e < E; ++e) {
        // pairs, then pairs of pairs: lanes is a power of two
        double* s = squares.data() + e * lanes;
        for (index_t span = lanes / 2; span >= 1; span /= 2)
          for (index_t j = 0; j < span; ++j) s[j] = s[2 * j] + s[2 * j + 1];
        partial[(b * E + e) * tiles + t] = s[0];
      }
    }
  }
  for (index_t be = 0; be < B * E; ++be) {
    double total = 0.0;
    for (index_t t = 0; t < tiles; ++t) total += partial[be * tiles + t];
    out[be] = total;
  }
}

template <class T>
void candidate_deviations(const T* H, const T* mu, const T* direction, const double* etas, index_t B, index_t h,
                          index_t d, index_t E, index_t f, CoordinateRule rule, index_t trim, index_t tile,
                          double* out) {
  const auto run = [&](auto r) { merged_candidate_deviations(H, mu, direction, etas, B, h, d, E, f, tile, r, out); };
  switch (rule) {
    case CoordinateRule::cwmed: return run(MedianOfBlock{});
    case CoordinateRule::cwtm: return run(TrimmedMeanOfBlock{trim});
    case CoordinateRule::meamed: return run(MeanAroundMedianOfBlock{trim});
  }
}

template <class T>
struct ColumnMedians<T>::Scratch {
  index_t n;
  Comparators net;
  AlignedVectors<keyvec<T>> block;
  std::vector<T> tail, padded;
  explicit Scratch(index_t n_)
      : n(n_), net(rule_network(n_, MedianOfBlock{})), block(n_ * BLOCK_VECS), tail(n_ * block_lanes<T>()) {}
};

template <class T>
ColumnMedians<T>::ColumnMedians(index_t n) : scratch_(new Scratch(n)) {}
template <class T>
ColumnMedians<T>::~ColumnMedians() = default;
template <class T>
void ColumnMedians<T>::operator()(const T* base, index_t d, index_t w, T* out) {
  Scratch& s = *scratch_;
  index_t stride = d;
  // As ordered_rule, but only up to MAX_STATIC_ROWS rows: cclip's ranges are narrow enough that
  // the L2 bound alone let n = 256 copy, which made cclip at (256, 1e5) 35 -> 42 ms (1 thread).
  if (s.n <= MAX_STATIC_ROWS && pad_rows<T>(s.n, d, padded_stride<T>(w))) {
    stride = padded_stride<T>(w);
    s.padded.resize(s.n * stride);
    copy_rows(base, d, s.n, w, s.padded.data(), stride);
    base = s.padded.data();
  }
  ordered_rule_tile_for<T>(s.n, base, s.n, stride, w, &s.net, s.block.data(), s.tail.data(), MedianOfBlock{}, out);
}

#ifndef BYZKERN_COORDINATEWISE_TYPE
#define BYZKERN_COORDINATEWISE_TYPE float
#endif
using Instantiated = BYZKERN_COORDINATEWISE_TYPE;
template void mean<Instantiated>(const Instantiated*, index_t, index_t, index_t, index_t, Instantiated*);
template void cwmed<Instantiated>(const Instantiated*, index_t, index_t, index_t, index_t, Instantiated*);
template void cwtm<Instantiated>(const Instantiated*, index_t, index_t, index_t, index_t, index_t, Instantiated*);
template void meamed<Instantiated>(const Instantiated*, index_t, index_t, index_t, index_t, index_t, Instantiated*);
template void candidate_deviations<Instantiated>(const Instantiated*, const Instantiated*, const Instantiated*,
                                                const double*, index_t, index_t, index_t, index_t, index_t,
                                                CoordinateRule, index_t, index_t, double*);
template class ColumnMedians<Instantiated>;

}  // namespace byzkern
