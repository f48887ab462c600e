// Compressors and attacks on row-major buffers. The oracle is byzkern/backends/reference.py: the
// wire bits (codes, indices, scales) and the Philox draws are the same, whatever the thread count.
// The encoders are compiled for the x86-64 baseline and for AVX2, those that draw Philox words
// (qsgd, natural) also for AVX-512, and chosen at run time (no -march=native): Philox runs in
// SIMD lanes by intrinsics (philox.hpp), the codes come from
// branch-free loops the compiler vectorizes, sign bits from movemask, and the fixed-order sums
// keep the reference's 8 lanes as two 4-double vectors. Every variant gives the same bits.
#include "compress.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "philox.hpp"

namespace byzkern {
namespace {

// IEEE layout of the natively computed dtypes: natural compression works on these bits.
template <class T>
struct FloatBits;
template <>
struct FloatBits<float> {
  using U = std::uint32_t;
  static constexpr int exponent_bits = 8, mantissa_bits = 23;
};
template <>
struct FloatBits<double> {
  using U = std::uint64_t;
  static constexpr int exponent_bits = 11, mantissa_bits = 52;
};

template <class T>
typename FloatBits<T>::U bits_of(T x) {
  typename FloatBits<T>::U u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline int bit_length(unsigned v) { return 32 - __builtin_clz(v); }  // v >= 1

inline index_t row_bytes(index_t d, int width) { return (d * width + 7) / 8; }

// Entries per work item of the encoders: a multiple of 8, so every item starts on a byte.
inline index_t code_tile(index_t tile) { return std::max<index_t>(8, (tile + 7) / 8 * 8); }

// Codes of W <= 16 bits into a little-endian bit stream: 8 codes fill exactly W bytes. W is a
// template argument so every shift is a constant; codes are merged pairwise (2W, then 4W bits
// per 64-bit word), so 8 codes take 7 ORs instead of a 128-bit shift chain. put8 is the last
// merge: two words of 4 codes into W bytes.
template <int W>
inline void put8(std::uint64_t q0, std::uint64_t q1, std::uint8_t* out) {
  if constexpr (W <= 8) {
    const std::uint64_t low = q0 | q1 << (4 * W);
    std::memcpy(out, &low, W);
  } else if constexpr (W == 16) {
    std::memcpy(out, &q0, 8);
    std::memcpy(out + 8, &q1, 8);
  } else {
    const std::uint64_t low = q0 | q1 << (4 * W);
    const std::uint64_t high = q1 >> (64 - 4 * W);
    std::memcpy(out, &low, 8);
    std::memcpy(out + 8, &high, W - 8);
  }
}

// The pair and quad merges of 8 codes in AVX2 lanes (pack_fixed's scalar ones took about a third
// of natural's time); quad k (codes 4k .. 4k+3) ends in 64-bit lane 2k. AVX-512 runs it too: 16
// codes per zmm were no faster (0.107 against 0.102 ns per code).
template <int W>
BYZKERN_AVX2 inline void pack8(const std::uint32_t* codes, std::uint8_t* out) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
  const __m256i odd = _mm256_slli_epi64(_mm256_srli_epi64(v, 32), W);
  const __m256i pairs = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi64x(0xffffffff)), odd);
  const __m256i next = _mm256_slli_epi64(_mm256_bsrli_epi128(pairs, 8), 2 * W);
  alignas(32) std::uint64_t quads[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(quads), _mm256_or_si256(pairs, next));
  put8<W>(quads[0], quads[2], out);
}

template <int W, class Isa>
void pack_fixed(const std::uint32_t* codes, index_t count, std::uint8_t* out) {
  index_t i = 0;
  if constexpr (!std::is_same_v<Isa, PhiloxSse2>) {
    for (; i + 8 <= count; i += 8, out += W) pack8<W>(codes + i, out);
  }
  for (; i + 8 <= count; i += 8) {
    std::uint64_t pair[4];
    std::memcpy(pair, codes + i, sizeof pair);  // pair[q] = codes[2q] | codes[2q + 1] << 32
    std::uint64_t p[4];
    for (int q = 0; q < 4; ++q) p[q] = (pair[q] & 0xffffffffu) | (pair[q] >> 32) << W;
    put8<W>(p[0] | p[1] << (2 * W), p[2] | p[3] << (2 * W), out);
    out += W;
  }
  if (i < count) {
    unsigned __int128 acc = 0;
    for (index_t j = 0; i + j < count; ++j) acc |= static_cast<unsigned __int128>(codes[i + j]) << (W * j);
    std::memcpy(out, &acc, static_cast<std::size_t>(row_bytes(count - i, W)));
  }
}

template <class Isa, int... W>
void pack_width(const std::uint32_t* codes, index_t count, int width, std::uint8_t* out,
                std::integer_sequence<int, W...>) {
  ((width == W + 1 ? pack_fixed<W + 1, Isa>(codes, count, out) : void()), ...);
}

// Isa: the instruction set of the caller (philox.hpp's structs name them)
template <class Isa>
void pack(const std::uint32_t* codes, index_t count, int width, std::uint8_t* out) {
  pack_width<Isa>(codes, count, width, out, std::make_integer_sequence<int, 16>{});
}

void unpack(const std::uint8_t* in, index_t count, int width, std::uint32_t* codes) {
  const std::uint32_t mask = (1u << width) - 1u;
  for (index_t i = 0; i < count; i += 8) {
    const index_t m = std::min<index_t>(8, count - i);
    unsigned __int128 acc = 0;
    std::memcpy(&acc, in, static_cast<std::size_t>(row_bytes(m, width)));
    in += width;
    for (index_t j = 0; j < m; ++j) codes[i + j] = static_cast<std::uint32_t>(acc >> (width * j)) & mask;
  }
}

// Batches of 128 entries: 32 Philox blocks (AVX-512's 4 groups of 8) and a few codes at a time
// stay in registers/L1.
constexpr index_t BATCH = 128;

// Runs job(row, e0, e1) on every (row, tile) of entries, in parallel; e0 is a multiple of 8, so
// each job writes whole bytes of the packed codes.
template <class Job>
void for_each_code_tile(index_t n, index_t d, index_t tile, Job job) {
  tile = code_tile(tile);
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel for schedule(static)
  for (index_t item = 0; item < n * tiles; ++item) {
    const index_t row = item / tiles, e0 = (item % tiles) * tile;
    job(row, e0, std::min(d, e0 + tile));
  }
}

// Like BYZKERN_DISPATCH3, for bodies that also take the Philox instruction set (philox.hpp) as
// their second template argument.
#define BYZKERN_PHILOX_DISPATCH(name, body) \
  BYZKERN_DISPATCH3_CALLS(name, (body<T, PhiloxSse2>), (body<T, PhiloxAvx2>), (body<T, PhiloxAvx512>))

template <class Decode>
void decode_rows(const std::uint8_t* in, index_t n, index_t d, index_t tile, int width, Decode decode) {
  tile = code_tile(tile);
  const index_t tiles = num_tiles(d, tile), stride = row_bytes(d, width);
#pragma omp parallel for schedule(static)
  for (index_t job = 0; job < n * tiles; ++job) {
    const index_t row = job / tiles, e0 = (job % tiles) * tile, e1 = std::min(d, e0 + tile);
    std::uint32_t codes[BATCH];
    const std::uint8_t* src = in + row * stride + e0 / 8 * width;
    for (index_t e = e0; e < e1; e += BATCH) {
      const index_t m = std::min(BATCH, e1 - e);
      unpack(src, m, width, codes);
      decode(row, e, m, codes);
      src += BATCH / 8 * width;
    }
  }
}

// reference.ordered_row_sums: out[row] is the sum of chunk_sum(row, c0, count) over the row's
// chunks [c0, c0 + count) of SUM_CHUNK entries, added in order. Chunks run in parallel.
template <class ChunkSum>
void ordered_row_sums(index_t n, index_t d, ChunkSum chunk_sum, double* out) {
  const index_t chunks = num_tiles(d, SUM_CHUNK);
  std::vector<double> partial(static_cast<std::size_t>(n * chunks));
#pragma omp parallel for schedule(static)
  for (index_t job = 0; job < n * chunks; ++job) {
    const index_t row = job / chunks, c0 = (job % chunks) * SUM_CHUNK;
    partial[static_cast<std::size_t>(job)] = chunk_sum(row, c0, std::min(SUM_CHUNK, d - c0));
  }
  for (index_t row = 0; row < n; ++row) {
    double total = partial[static_cast<std::size_t>(row * chunks)];
    for (index_t c = 1; c < chunks; ++c) total += partial[static_cast<std::size_t>(row * chunks + c)];
    out[row] = total;
  }
}

typedef std::uint64_t v4u64 __attribute__((vector_size(32)));

// The terms of the norms: |x| (the sign bit cleared) and x^2, on doubles and on 4 doubles.
struct Magnitude {
  double operator()(double v) const { return std::fabs(v); }
  v4d operator()(v4d v) const { return (v4d)((v4u64)v & (~v4u64{} >> 1)); }
};
struct Square {
  template <class V>
  V operator()(V v) const { return v * v; }
};

// The sum of term(x[i]) over one chunk in the order of reference.ordered_row_sums: lane j adds
// the entries i = j (mod 8) in increasing i, the lanes combine as a fixed tree. visit(i) runs on
// every group of 8 entries [i, i + 8) as it is read (fusing another pass over x into this one).
template <class T, class Term, class Visit>
inline double chunk_sum(const T* x, index_t count, Term term, Visit visit) {
  v4d low = {0, 0, 0, 0}, high = low;  // lanes 0-3 and 4-7
  index_t i = 0;
  for (; i + 8 <= count; i += 8) {
    visit(i);
    low += term(load4_as_double(x + i));
    high += term(load4_as_double(x + i + 4));
  }
  double l[8];
  store_vec(l, low);
  store_vec(l + 4, high);
  for (int j = 0; i + j < count; ++j) l[j] += term(static_cast<double>(x[i + j]));
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

template <class T>
inline void square_sum(const T* x, index_t count, double* sum) {
  *sum = chunk_sum(x, count, Square{}, [](index_t) {});
}
BYZKERN_DISPATCH(square_sum_dispatched, square_sum)

// Magnitude key: the float's bits without the sign, every NaN mapped to one key just above
// Inf. Its unsigned order is the topk order (|x|, NaN above Inf, all NaNs equal).
template <class T>
inline typename FloatBits<T>::U magnitude_key(T x) {
  using U = typename FloatBits<T>::U;
  constexpr U nan_key = (((U{1} << FloatBits<T>::exponent_bits) - 1) << FloatBits<T>::mantissa_bits) + 1;
  return std::min<U>(bits_of(x) & (~U{0} >> 1), nan_key);
}

// Bit j set where !(|x[j]| < t), for 8 entries: |x| >= t, and every NaN.
inline unsigned not_below8(const float* x, float t) {
  const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff)), tv = _mm_set1_ps(t);
  return static_cast<unsigned>(_mm_movemask_ps(_mm_cmpnlt_ps(_mm_and_ps(_mm_loadu_ps(x), magnitude), tv)) |
                               _mm_movemask_ps(_mm_cmpnlt_ps(_mm_and_ps(_mm_loadu_ps(x + 4), magnitude), tv)) << 4);
}
inline unsigned not_below8(const double* x, double t) {
  const __m128d magnitude = _mm_castsi128_pd(_mm_set1_epi64x(0x7fffffffffffffffLL)), tv = _mm_set1_pd(t);
  unsigned bits = 0;
  for (int q = 0; q < 4; ++q)
    bits |= static_cast<unsigned>(_mm_movemask_pd(_mm_cmpnlt_pd(_mm_and_pd(_mm_loadu_pd(x + 2 * q), magnitude), tv))) << (2 * q);
  return bits;
}

// Topk of one row of d >= k entries: the indices, ascending, and their values.
//   1. A threshold t from a strided sample of the row, set so that with near certainty at least
//      k entries have |x| >= t, and not many more (the expected count plus 4 sigma).
//   2. One pass collects the candidates |x| >= t (and NaNs) in index order.
//   3. The k-th largest candidate key K by nth_element; the output is every candidate above K
//      and the lowest-index ones equal to K, in index order. If the sample misled (fewer than k
//      candidates), step 2 reruns with t = 0, taking every entry.
// Only the cost depends on the sample: the result is the exact topk whatever t was.
template <class T>
class TopkRow {
 public:
  using U = typename FloatBits<T>::U;
  static constexpr index_t SAMPLE = 4096;

  void operator()(const T* x, index_t d, index_t k, T* values, std::int64_t* indices) {
    collect(x, d, sample_threshold(x, d, k));
    if (static_cast<index_t>(candidates_.size()) < k) collect(x, d, T{0});
    keys_.clear();
    for (const index_t i : candidates_) keys_.push_back(magnitude_key(x[i]));
    const U kth = kth_largest_key(k);
    index_t above = 0;
    for (const U key : keys_) above += key > kth;
    index_t ties = k - above, out = 0;  // entries equal to kth taken, lowest index first
    for (std::size_t c = 0; c < candidates_.size(); ++c) {
      const bool take = keys_[c] > kth || (keys_[c] == kth && ties-- > 0);
      if (take) {
        indices[out] = candidates_[c];
        values[out++] = x[candidates_[c]];
      }
    }
  }

 private:
  // The k-th largest of keys_: a histogram over their range finds the bucket that holds it,
  // nth_element finishes within that bucket (a few keys, not all candidates).
  U kth_largest_key(index_t k) {
    constexpr index_t buckets = 2048;
    const auto [low, high] = std::minmax_element(keys_.begin(), keys_.end());
    const U lo = *low;
    int shift = 0;
    while (((*high - lo) >> shift) >= static_cast<U>(buckets)) ++shift;
    histogram_.assign(buckets, 0);
    for (const U key : keys_) ++histogram_[static_cast<std::size_t>((key - lo) >> shift)];
    index_t bucket = buckets - 1, above = 0;  // keys in buckets above `bucket`
    while (above + histogram_[static_cast<std::size_t>(bucket)] < k) above += histogram_[static_cast<std::size_t>(bucket--)];
    scratch_.clear();
    for (const U key : keys_)
      if (static_cast<index_t>((key - lo) >> shift) == bucket) scratch_.push_back(key);
    const auto rank = static_cast<std::ptrdiff_t>(k - above - 1);
    std::nth_element(scratch_.begin(), scratch_.begin() + rank, scratch_.end(), std::greater<U>());
    return scratch_[static_cast<std::size_t>(rank)];
  }

  T sample_threshold(const T* x, index_t d, index_t k) {
    if (d < 16 * SAMPLE) return T{0};
    const double expected = static_cast<double>(SAMPLE) * static_cast<double>(k) / static_cast<double>(d);
    const auto rank = static_cast<index_t>(expected + 4.0 * std::sqrt(expected) + 4.0);
    if (rank >= SAMPLE) return T{0};
    scratch_.clear();
    for (index_t s = 0; s < SAMPLE; ++s) scratch_.push_back(magnitude_key(x[s * (d / SAMPLE)]));
    std::nth_element(scratch_.begin(), scratch_.begin() + rank, scratch_.end(), std::greater<U>());
    const U key = scratch_[static_cast<std::size_t>(rank)];
    T t;
    std::memcpy(&t, &key, sizeof t);
    return t;  // a NaN threshold takes every entry
  }

  void collect(const T* x, index_t d, T t) {
    candidates_.clear();
    index_t i = 0;
    for (; i + 64 <= d; i += 64) {  // one branch per 64 entries: most groups of 8 have no candidate
      std::uint64_t bits = 0;
      for (int g = 0; g < 8; ++g) bits |= std::uint64_t{not_below8(x + i + 8 * g, t)} << (8 * g);
      for (; bits; bits &= bits - 1) candidates_.push_back(i + __builtin_ctzll(bits));
    }
    for (; i < d; ++i)
      if (!(std::fabs(x[i]) < t)) candidates_.push_back(i);
  }

  std::vector<index_t> candidates_, histogram_;
  std::vector<U> keys_, scratch_;
};

// Bit i % 8 of byte i / 8 set where x[i] < 0 (not for -0 or NaN), for 8 entries.
inline std::uint8_t negative_bits8(const float* x) {
  const __m128 zero = _mm_setzero_ps();
  return static_cast<std::uint8_t>(_mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x), zero)) |
                                   _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x + 4), zero)) << 4);
}
inline std::uint8_t negative_bits8(const double* x) {
  const __m128d zero = _mm_setzero_pd();
  int bits = 0;
  for (int q = 0; q < 4; ++q) bits |= _mm_movemask_pd(_mm_cmplt_pd(_mm_loadu_pd(x + 2 * q), zero)) << (2 * q);
  return static_cast<std::uint8_t>(bits);
}

// The packed sign bits of x[0, count), count not necessarily a multiple of 8.
template <class T>
inline void negative_bits(const T* x, index_t count, std::uint8_t* out) {
  index_t i = 0;
  for (; i + 8 <= count; i += 8) out[i / 8] = negative_bits8(x + i);
  if (i < count) {
    unsigned byte = 0;
    for (index_t j = 0; i + j < count; ++j) byte |= static_cast<unsigned>(x[i + j] < 0) << j;
    out[i / 8] = static_cast<std::uint8_t>(byte);
  }
}

// One chunk of scaled_sign: the sign bits of x[0, count) and its sum of |x|, in one pass.
template <class T>
inline void signs_and_abs_sum(const T* x, index_t count, std::uint8_t* out, double* sum) {
  *sum = chunk_sum(x, count, Magnitude{}, [&](index_t i) { out[i / 8] = negative_bits8(x + i); });
  const index_t whole = count / 8 * 8;
  negative_bits(x + whole, count - whole, out + whole / 8);
}
BYZKERN_DISPATCH(signs_and_abs_sum_dispatched, signs_and_abs_sum)

// QSGD codes of m entries from their Philox words w: level floor(r) or floor(r) + 1 with
// probability r - floor(r), r = |x| s, capped at levels; the sign above the level bits.
// s > 0 and finite, so r is finite and >= 0 and truncation is floor.
template <class T>
inline void qsgd_codes(const T* x, const std::uint32_t* w, index_t m, double s, std::int32_t levels,
                       int sign_shift, std::uint32_t* c) {
  for (index_t j = 0; j < m; ++j) {
    const double r = std::fabs(static_cast<double>(x[j])) * s;
    const std::int32_t low = static_cast<std::int32_t>(r);
    const double frac = r - static_cast<double>(low);
    // the word as a double, by way of the signed conversion that every SIMD set has (exact)
    const double u = static_cast<double>(static_cast<std::int32_t>(w[j] ^ 0x80000000u)) + 2147483648.0;
    const std::int32_t level = std::min(low + (u < frac * 4294967296.0 ? 1 : 0), levels);
    c[j] = static_cast<std::uint32_t>(level) | static_cast<std::uint32_t>(x[j] < 0) << sign_shift;
  }
}

// One tile [e0, e1) of a QSGD row; x and out are the row's input and packed codes.
template <class T, class Isa>
inline void qsgd_tile(const T* x, std::uint8_t* out, index_t e0, index_t e1, std::uint32_t row,
                      PhiloxKey key, double s, int levels, int width) {
  std::uint32_t w[BATCH], c[BATCH];
  for (index_t e = e0; e < e1; e += BATCH) {
    const index_t m = std::min(BATCH, e1 - e);
    if (s == 0.0) {  // a zero or non-finite norm: level 0 everywhere, the sign still sent
      for (index_t j = 0; j < m; ++j) c[j] = static_cast<std::uint32_t>(x[e + j] < 0) << (width - 1);
    } else {
      philox_words<Isa, BATCH / 4>(key, static_cast<std::uint64_t>(e / 4), row, STREAM_QSGD, w);
      if (m == BATCH)  // a constant count: the loop vectorizes without a remainder
        qsgd_codes(x + e, w, BATCH, s, levels, width - 1, c);
      else
        qsgd_codes(x + e, w, m, s, levels, width - 1, c);
    }
    pack<Isa>(c, m, width, out + e / 8 * width);
  }
}
BYZKERN_PHILOX_DISPATCH(qsgd_tile_dispatched, qsgd_tile)

// Natural codes of m entries (reference.natural), integers only: |x| = (1 + m / 2^P) 2^e
// rounds up to 2^(e+1) iff the uniform's top P bits are below the mantissa m.
template <class T>
inline void natural_codes(const T* x, const std::uint32_t* w, index_t m, std::uint32_t* c) {
  using U = typename FloatBits<T>::U;
  constexpr int E = FloatBits<T>::exponent_bits, P = FloatBits<T>::mantissa_bits;
  constexpr U exponent_mask = (U{1} << E) - 1, mantissa_mask = (U{1} << P) - 1;
  for (index_t j = 0; j < m; ++j) {
    const U u = bits_of(x[j]);
    const U mantissa = u & mantissa_mask;
    U exponent = (u >> P) & exponent_mask;
    U uniform;
    if constexpr (std::is_same_v<T, float>) {
      uniform = w[j] >> (32 - P);
    } else {  // P + 1 > 32 random bits needed: two words per entry
      uniform = ((static_cast<std::uint64_t>(w[2 * j]) << 32) | w[2 * j + 1]) >> (64 - P);
    }
    const bool nan = exponent == exponent_mask && mantissa != 0;
    exponent += (exponent != exponent_mask && uniform < mantissa) ? 1 : 0;
    // sign 1 with exponent 0 is the NaN code: a value rounded to zero keeps sign 0
    const U negative = (u >> (E + P)) & (exponent != 0 ? 1 : 0);
    c[j] = nan ? (1u << E) : static_cast<std::uint32_t>(negative << E | exponent);
  }
}

template <class T, class Isa>
inline void natural_tile(const T* x, std::uint8_t* out, index_t e0, index_t e1, std::uint32_t row,
                         PhiloxKey key) {
  constexpr index_t words_per_entry = std::is_same_v<T, float> ? 1 : 2;
  constexpr int width = FloatBits<T>::exponent_bits + 1;
  std::uint32_t w[BATCH * words_per_entry], c[BATCH];
  for (index_t e = e0; e < e1; e += BATCH) {
    const index_t m = std::min(BATCH, e1 - e);
    philox_words<Isa, BATCH * words_per_entry / 4>(key, static_cast<std::uint64_t>(e * words_per_entry / 4),
                                                    row, STREAM_NATURAL, w);
    if (m == BATCH)
      natural_codes(x + e, w, BATCH, c);
    else
      natural_codes(x + e, w, m, c);
    pack_fixed<width, Isa>(c, m, out + e / 8 * width);
  }
}
BYZKERN_PHILOX_DISPATCH(natural_tile_dispatched, natural_tile)

// ---- Box-Muller on SIMD vectors ------------------------------------------------------------
// The C library's log1p, cos and sin go one value at a time and took nine tenths of gaussian's
// time. These are fdlibm's algorithms (e_log.c with k_log.h, e_rem_pio2.c's medium case, k_sin.c,
// k_cos.c: each under 1 ulp) on GCC vectors, so every tier runs them in SIMD lanes; they use no
// fused operation (-ffp-contract=off), so every tier gives the same bits. The normals differ from
// those the C library's functions give by 2 ulps at most (measured; the tests allow 4), and
// byzkern/backends/reference.py and numba.py repeat these operations for the same bits.
typedef std::uint64_t v8u __attribute__((vector_size(64)));

// ln y for normal y in (0, 1]: y = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)).
inline v8d log_unit(v8d y) {
  constexpr double Lg1 = 0x1.5555555555593p-1, Lg2 = 0x1.999999997fa04p-2, Lg3 = 0x1.2492494229359p-2,
            Lg4 = 0x1.c71c51d8e78afp-3, Lg5 = 0x1.7466496cb03dep-3, Lg6 = 0x1.39a09d078c69fp-3,
            Lg7 = 0x1.2f112df3e5244p-3, ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33;
  // Adding 0x95f62 (the high word of 1 less that of sqrt(2)/2) to y's high word carries into
  // the exponent exactly where the mantissa is at least sqrt(2): the exponent field then holds
  // k + 1023, and the low 52 bits with sqrt(2)/2's high word added back are 1 + f.
  const v8u shifted = (v8u)y + (std::uint64_t{0x3ff00000 - 0x3fe6a09e} << 32);
  const v8u mantissa = (shifted & 0x000fffffffffffffu) + (std::uint64_t{0x3fe6a09e} << 32);
  const v8d k = (v8d)((shifted >> 52) | 0x4330000000000000u) - (0x1p52 + 1023.0);  // exact
  const v8d f = (v8d)mantissa - 1.0;
  const v8d hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, w = z * z;
  const v8d R = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7))) + w * (Lg2 + w * (Lg4 + w * Lg6));
  return (((s * (hfsq + R) + k * ln2_lo) - hfsq) + f) + k * ln2_hi;
}

// sin and cos of x + y, |x + y| <= pi/4, y the tail of x.
inline v8d sin_reduced(v8d x, v8d y) {
  constexpr double S1 = -0x1.5555555555549p-3, S2 = 0x1.111111110f8a6p-7, S3 = -0x1.a01a019c161d5p-13,
            S4 = 0x1.71de357b1fe7dp-19, S5 = -0x1.ae5e68a2b9cebp-26, S6 = 0x1.5d93a5acfd57cp-33;
  const v8d z = x * x, w = z * z, v = z * x;
  const v8d r = (S2 + z * (S3 + z * S4)) + z * w * (S5 + z * S6);
  return x - ((z * (0.5 * y - v * r) - y) - v * S1);
}
inline v8d cos_reduced(v8d x, v8d y) {
  constexpr double C1 = 0x1.555555555554cp-5, C2 = -0x1.6c16c16c15177p-10, C3 = 0x1.a01a019cb159p-16,
            C4 = -0x1.27e4f809c52adp-22, C5 = 0x1.1ee9ebdb4b1c4p-29, C6 = -0x1.8fae9be8838d4p-37;
  const v8d z = x * x, w = z * z;
  const v8d r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
  const v8d hz = 0.5 * z, one_minus_hz = 1.0 - hz;
  return one_minus_hz + (((1.0 - one_minus_hz) - hz) + (z * r - x * y));
}

// sin a and cos a for a in [0, 2 pi): a = n pi/2 + (y0 + y1), pi/2 taken in three 33-bit parts
// and their tails (every product n * part is exact for n <= 4), each part's rounding error
// carried into the tail, so the remainder is good to far more than 53 bits even next to a
// multiple of pi/2 (a = 2 pi u2 is one there for u2 = 1/4).
inline void sincos_angle(v8d a, v8d& sine, v8d& cosine) {
  const v8d rounder = a * 0x1.45f306dc9c883p-1 + 0x1.8p52;  // a 2/pi, rounded in the low bits
  const v8d n = rounder - 0x1.8p52;
  v8d r = a - n * 0x1.921fb544p0, tail;  // exact
  auto peel = [&](double part, double part_tail) {
    const v8d t = r, product = n * part;
    r = t - product;
    tail = n * part_tail - ((t - r) - product);
  };
  peel(0x1.0b4611a6p-34, 0x1.3198a2e037073p-69);
  peel(0x1.3198a2ep-69, 0x1.b839a252049c1p-104);
  const v8d y0 = r - tail, y1 = (r - y0) - tail;
  const v8d s = sin_reduced(y0, y1), c = cos_reduced(y0, y1);
  // The quadrant's choices by bit masks, not comparisons and ?:, which GCC does lane by lane
  // on vectors wider than the tier's (AVX2: 4 times the AVX-512 time); a sign flip is exact.
  const v8u quadrant = (v8u)rounder & 3u, sign_bit = v8u{} + (std::uint64_t{1} << 63);
  const v8u odd = -(quadrant & 1u), upper = -(quadrant >> 1);  // all ones or zeros
  const v8u sine_abs = ((v8u)c & odd) | ((v8u)s & ~odd), cosine_abs = ((v8u)s & odd) | ((v8u)c & ~odd);
  sine = (v8d)(sine_abs ^ (upper & sign_bit));
  cosine = (v8d)(cosine_abs ^ ((upper ^ odd) & sign_bit));
}

// Box-Muller on 8 Philox blocks (words 4l .. 4l + 3 for lane l): radius sqrt(-2 ln(1 - u1)) with
// u1 from words 0, 1 and angle 2 pi u2 from words 2, 3, as reference.standard_normals.
inline void box_muller8(const std::uint32_t* w, v8d& cos_part, v8d& sin_part) {
  v8d one_minus_u1, angle;
  for (int l = 0; l < 8; ++l) {
    const std::uint32_t* word = w + 4 * l;
    one_minus_u1[l] = 1.0 - uniform53(word[0], word[1]);  // exact: u1 is a multiple of 2^-53
    angle[l] = 2.0 * M_PI * uniform53(word[2], word[3]);
  }
  const v8d twice = -2.0 * log_unit(one_minus_u1);
  v8d radius;
  for (int l = 0; l < 8; ++l) radius[l] = std::sqrt(twice[l]);
  v8d sine, cosine;
  sincos_angle(angle, sine, cosine);
  cos_part = radius * cosine;
  sin_part = radius * sine;
}

// Pairs [m0, m1) of a Gaussian row: Philox block m gives entries 2m (cos) and 2m + 1 (sin).
// The words come BATCH / 4 blocks at a time from the SIMD Philox.
template <class T, class Isa>
inline void gaussian_tile(const T* own, T* out, index_t d, index_t m0, index_t m1, std::uint32_t row, PhiloxKey key,
                          double std) {
  constexpr index_t blocks = BATCH / 4;
  std::uint32_t w[4 * blocks];
  v8d cos_part[blocks / 8], sin_part[blocks / 8];
  for (index_t m = m0; m < m1; m += blocks) {
    philox_words<Isa, blocks>(key, static_cast<std::uint64_t>(m), row, STREAM_GAUSSIAN, w);
    for (index_t g = 0; g < blocks / 8; ++g) box_muller8(w + 32 * g, cos_part[g], sin_part[g]);
    const index_t count = std::min(blocks, m1 - m);
    for (index_t k = 0; k < count; ++k) {
      const index_t c = 2 * (m + k);
      out[c] = static_cast<T>(static_cast<double>(own[c]) + std * cos_part[k / 8][k % 8]);
      if (c + 1 < d) out[c + 1] = static_cast<T>(static_cast<double>(own[c + 1]) + std * sin_part[k / 8][k % 8]);
    }
  }
}
BYZKERN_PHILOX_DISPATCH(gaussian_tile_dispatched, gaussian_tile)

}  // namespace

template <class T>
void topk(const T* X, index_t n, index_t d, index_t k, T* values, std::int64_t* indices) {
#pragma omp parallel
  {
    TopkRow<T> topk_row;
#pragma omp for schedule(dynamic)
    for (index_t row = 0; row < n; ++row) topk_row(X + row * d, d, k, values + row * k, indices + row * k);
  }
}

template <class T>
void randk(const T* X, index_t n, index_t d, index_t k, std::uint64_t seed, T* values,
           std::int64_t* indices) {
  const PhiloxKey key(seed);
  const double scale = static_cast<double>(d) / static_cast<double>(k);
#pragma omp parallel
  {
    std::vector<std::uint64_t> chosen(static_cast<std::size_t>((d + 63) / 64));
#pragma omp for schedule(dynamic)
    for (index_t row = 0; row < n; ++row) {
      std::fill(chosen.begin(), chosen.end(), 0);
      auto has = [&](index_t i) { return (chosen[static_cast<std::size_t>(i >> 6)] >> (i & 63)) & 1u; };
      auto put = [&](index_t i) { chosen[static_cast<std::size_t>(i >> 6)] |= std::uint64_t{1} << (i & 63); };
      std::uint32_t w[4];
      // Floyd's algorithm: step s (j = d - k + s) draws t in [0, j]; two steps per Philox block
      for (index_t s = 0; s < k; ++s) {
        if (s % 2 == 0) philox_block(key, static_cast<std::uint64_t>(s / 2), static_cast<std::uint32_t>(row), STREAM_RANDK, w);
        const int o = static_cast<int>(s % 2) * 2;
        const index_t j = d - k + s;
        const index_t t = below(uniform53(w[o], w[o + 1]), j + 1);
        put(has(t) ? j : t);
      }
      std::int64_t* idx = indices + row * k;
      T* val = values + row * k;
      const T* x = X + row * d;
      index_t out = 0;
      for (std::size_t word = 0; word < chosen.size(); ++word) {
        for (std::uint64_t bitsleft = chosen[word]; bitsleft; bitsleft &= bitsleft - 1) {
          const index_t i = static_cast<index_t>(word * 64 + static_cast<std::size_t>(__builtin_ctzll(bitsleft)));
          idx[out] = i;
          val[out++] = static_cast<T>(static_cast<double>(x[i]) * scale);
        }
      }
    }
  }
}

template <class T>
void qsgd(const T* X, index_t n, index_t d, int levels, std::uint64_t seed, index_t tile, T* norms,
          std::uint8_t* codes) {
  std::vector<double> sums(static_cast<std::size_t>(n));
  ordered_row_sums(n, d, [&](index_t row, index_t c0, index_t count) {
    double sum;
    square_sum_dispatched<T>(X + row * d + c0, count, &sum);
    return sum;
  }, sums.data());
  std::vector<double> scale(static_cast<std::size_t>(n));
  for (index_t row = 0; row < n; ++row) {
    norms[row] = static_cast<T>(std::sqrt(sums[static_cast<std::size_t>(row)]));
    const double norm = norms[row];
    // a zero or non-finite norm sends level 0 everywhere (a non-finite one decodes to NaN)
    scale[static_cast<std::size_t>(row)] = std::isfinite(norm) && norm > 0 ? levels / norm : 0.0;
  }
  const PhiloxKey key(seed);
  const int width = bit_length(static_cast<unsigned>(levels)) + 1;
  const index_t stride = row_bytes(d, width);
  for_each_code_tile(n, d, tile, [&](index_t row, index_t e0, index_t e1) {
    qsgd_tile_dispatched<T>(X + row * d, codes + row * stride, e0, e1, static_cast<std::uint32_t>(row), key,
                            scale[static_cast<std::size_t>(row)], levels, width);
  });
}

template <class T>
void natural(const T* X, index_t n, index_t d, std::uint64_t seed, index_t tile, std::uint8_t* codes) {
  const PhiloxKey key(seed);
  const index_t stride = row_bytes(d, FloatBits<T>::exponent_bits + 1);
  for_each_code_tile(n, d, tile, [&](index_t row, index_t e0, index_t e1) {
    natural_tile_dispatched<T>(X + row * d, codes + row * stride, e0, e1, static_cast<std::uint32_t>(row), key);
  });
}

template <class T>
void sign(const T* X, index_t n, index_t d, index_t tile, std::uint8_t* codes) {
  const index_t stride = row_bytes(d, 1);
  for_each_code_tile(n, d, tile, [&](index_t row, index_t e0, index_t e1) {
    negative_bits(X + row * d + e0, e1 - e0, codes + row * stride + e0 / 8);
  });
}

template <class T>
void scaled_sign(const T* X, index_t n, index_t d, T* scales, std::uint8_t* codes) {
  const index_t stride = row_bytes(d, 1);
  std::vector<double> sums(static_cast<std::size_t>(n));
  ordered_row_sums(n, d, [&](index_t row, index_t c0, index_t count) {
    double sum;
    signs_and_abs_sum_dispatched<T>(X + row * d + c0, count, codes + row * stride + c0 / 8, &sum);
    return sum;
  }, sums.data());
  for (index_t row = 0; row < n; ++row) scales[row] = static_cast<T>(sums[static_cast<std::size_t>(row)] / static_cast<double>(d));
}

template <class T>
void scatter_rows(const T* values, const std::int64_t* indices, index_t n, index_t k, index_t d, T* out) {
#pragma omp parallel for schedule(static)
  for (index_t row = 0; row < n; ++row) {
    T* o = out + row * d;
    std::fill(o, o + d, T{0});
    for (index_t j = 0; j < k; ++j) o[indices[row * k + j]] = values[row * k + j];
  }
}

template <class T>
void qsgd_decompress(const T* norms, const std::uint8_t* codes, index_t n, index_t d, int levels,
                     index_t tile, T* out) {
  const int width = bit_length(static_cast<unsigned>(levels)) + 1;
  // magnitude of level l in row r: (T)(norm_r * (l / s)), as the reference rounds it
  std::vector<T> table(static_cast<std::size_t>(n * (levels + 1)));
  for (index_t row = 0; row < n; ++row)
    for (int l = 0; l <= levels; ++l)
      table[static_cast<std::size_t>(row * (levels + 1) + l)] =
          static_cast<T>(static_cast<double>(norms[row]) * (static_cast<double>(l) / static_cast<double>(levels)));
  const std::uint32_t level_mask = (1u << (width - 1)) - 1u;
  decode_rows(codes, n, d, tile, width, [&](index_t row, index_t e, index_t m, const std::uint32_t* c) {
    const T* t = table.data() + row * (levels + 1);
    T* o = out + row * d + e;
    for (index_t j = 0; j < m; ++j) {
      const T v = t[c[j] & level_mask];
      o[j] = (c[j] >> (width - 1)) ? -v : v;
    }
  });
}

template <class T>
void natural_decompress(const std::uint8_t* codes, index_t n, index_t d, index_t tile, T* out) {
  using U = typename FloatBits<T>::U;
  constexpr int E = FloatBits<T>::exponent_bits, P = FloatBits<T>::mantissa_bits;
  decode_rows(codes, n, d, tile, E + 1, [&](index_t row, index_t e, index_t m, const std::uint32_t* c) {
    T* o = out + row * d + e;
    for (index_t j = 0; j < m; ++j) {
      const U u = (static_cast<U>(c[j] >> E) << (E + P)) | (static_cast<U>(c[j] & ((1u << E) - 1u)) << P);
      T v;
      std::memcpy(&v, &u, sizeof v);
      o[j] = c[j] == (1u << E) ? std::numeric_limits<T>::quiet_NaN() : v;
    }
  });
}

template <class T>
void sign_decompress(const std::uint8_t* codes, const T* scales, index_t n, index_t d, index_t tile, T* out) {
  decode_rows(codes, n, d, tile, 1, [&](index_t row, index_t e, index_t m, const std::uint32_t* c) {
    T* o = out + row * d + e;
    for (index_t j = 0; j < m; ++j) o[j] = c[j] ? -scales[row] : scales[row];
  });
}

template <class I>
bool indices_ok(const I* indices, index_t n, index_t k, std::uint64_t d) {
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok)
  for (index_t row = 0; row < n; ++row) {
    const I* idx = indices + row * k;
    bool row_ok = static_cast<std::uint64_t>(idx[k - 1]) < d;
    for (index_t j = 1; j < k; ++j) row_ok &= idx[j] > idx[j - 1];
    ok = ok && row_ok;
  }
  return ok;
}

bool qsgd_levels_ok(const std::uint8_t* codes, index_t n, index_t d, int levels) {
  const int width = bit_length(static_cast<unsigned>(levels)) + 1;
  const std::uint32_t level_mask = (1u << (width - 1)) - 1u;
  const index_t stride = row_bytes(d, width);
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok)
  for (index_t row = 0; row < n; ++row) {
    std::uint32_t c[BATCH];
    std::uint32_t worst = 0;
    for (index_t e = 0; e < d; e += BATCH) {
      const index_t m = std::min(BATCH, d - e);
      unpack(codes + row * stride + e / 8 * width, m, width, c);
      for (index_t j = 0; j < m; ++j) worst = std::max(worst, c[j] & level_mask);
    }
    ok = ok && worst <= static_cast<std::uint32_t>(levels);
  }
  return ok;
}

// Mean and std over the h rows of a column tile, in double: the mean (add_rows), then the sum of
// squared deviations from it while the tile is still in cache (two-pass variance, no
// cancellation), four rows per pass in row order as well: the reference's additions, in its
// order. Here and not in mean_std, the square roots too: the baseline tier takes them two at a time.
// An AVX-512 variant too: on float32 (20, 1e6) it took 0.75-0.85 of the AVX2 time (one thread of
// an AVX-512 AMD EPYC; float64: no change).
template <class T>
inline void mean_std_tile(const T* base, index_t h, index_t d, index_t w, index_t ddof, double* mu, double* ss,
                          T* mean, T* std) {
  std::fill(mu, mu + w, 0.0);
  std::fill(ss, ss + w, 0.0);
  add_rows(base, h, d, w, mu);
  for (index_t j = 0; j < w; ++j) mu[j] /= static_cast<double>(h);
  index_t i = 0;
  for (; i + 4 <= h; i += 4) {
    const T* r0 = base + i * d;
    const T *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
    for (index_t j = 0; j < w; ++j) {
      const double d0 = r0[j] - mu[j], d1 = r1[j] - mu[j], d2 = r2[j] - mu[j], d3 = r3[j] - mu[j];
      ss[j] = (((ss[j] + d0 * d0) + d1 * d1) + d2 * d2) + d3 * d3;
    }
  }
  for (; i < h; ++i)
    for (index_t j = 0; j < w; ++j) {
      const double dev = base[i * d + j] - mu[j];
      ss[j] += dev * dev;
    }
  for (index_t j = 0; j < w; ++j) {
    mean[j] = static_cast<T>(mu[j]);
    std[j] = static_cast<T>(std::sqrt(ss[j] / static_cast<double>(h - ddof)));
  }
}
BYZKERN_DISPATCH3(mean_std_tile_dispatched, mean_std_tile)

template <class T>
void mean_std(const T* X, index_t B, index_t h, index_t d, index_t ddof, index_t tile, T* mean, T* std) {
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel
  {
    std::vector<double> mu(static_cast<std::size_t>(tile)), ss(static_cast<std::size_t>(tile));
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile, w = std::min(tile, d - c0);
      mean_std_tile_dispatched<T>(X + b * h * d + c0, h, d, w, ddof, mu.data(), ss.data(), mean + b * d + c0,
                                  std + b * d + c0);
    }
  }
}

template <class T>
void gaussian(const T* own, index_t B, index_t f, index_t d, double std, std::uint64_t seed, index_t tile, T* out) {
  const PhiloxKey key(seed);
  for_each_code_tile(B * f, (d + 1) / 2, tile, [&](index_t row, index_t m0, index_t m1) {
    gaussian_tile_dispatched<T>(own + row * d, out + row * d, d, m0, m1, static_cast<std::uint32_t>(row), key, std);
  });
}

// ---- Mimic's learning step ------------------------------------------------------------------
// parts[r] += <x_r - mu, v> over w columns for Rows rows at once, in double: each vector of mu
// and v is loaded once for all of them (a row at a time loaded them once a row, from L2: four
// times the bytes of X), and two chains of four lanes per row keep the adds' latency hidden.
template <int Rows, class T>
inline void add_centred_dots_of_rows(const T* const* x, const double* mu, const double* v, index_t w, double* parts) {
  v4d acc[Rows][2] = {};
  index_t k = 0;
  for (; k + 8 <= w; k += 8)
    for (int j = 0; j < 2; ++j) {
      const index_t c = k + 4 * j;
      const v4d m = load4_as_double(mu + c), z = load4_as_double(v + c);
      for (int r = 0; r < Rows; ++r) acc[r][j] += (load4_as_double(x[r] + c) - m) * z;
    }
  for (int r = 0; r < Rows; ++r) {
    double total = sum_lanes(acc[r][0] + acc[r][1]);
    for (index_t c = k; c < w; ++c) total += (static_cast<double>(x[r][c]) - mu[c]) * v[c];
    parts[r] += total;
  }
}

// parts[i] += <x_i - mu, v> over the w columns at base (row i at base + i * d), four rows at a time.
template <class T>
inline void add_centred_dots(const T* base, index_t h, index_t d, const double* mu, const double* v, index_t w,
                             double* parts) {
  index_t i = 0;
  for (; i + 4 <= h; i += 4) {
    const T* rows[4] = {base + i * d, base + (i + 1) * d, base + (i + 2) * d, base + (i + 3) * d};
    add_centred_dots_of_rows<4>(rows, mu, v, w, parts + i);
  }
  for (; i < h; ++i) {
    const T* row = base + i * d;
    add_centred_dots_of_rows<1>(&row, mu, v, w, parts + i);
  }
}

template <class T>
inline void centred_dots_slab(const T* Xb, index_t h, index_t d, index_t c0, index_t c1, const double* mu,
                              const double* z, double* parts) {
  std::fill(parts, parts + h, 0.0);
  add_centred_dots(Xb + c0, h, d, mu + c0, z + c0, c1 - c0, parts);
}
BYZKERN_DISPATCH(centred_dots_slab_dispatched, centred_dots_slab)

// u over the columns [c0, c1) one tile at a time, u_c = sum_i dots_i (x_ic - mu_c) in row order
// (four rows per pass over u, as add_rows), then the rows' dots with that tile of u while the
// tile is still in cache: one read of X from memory for both.
template <class T>
inline void power_step_slab(const T* Xb, index_t h, index_t d, index_t c0, index_t c1, index_t tile,
                            const double* mu, const double* dots, double* u, double* parts) {
  std::fill(parts, parts + h, 0.0);
  for (index_t t0 = c0; t0 < c1; t0 += tile) {
    const index_t w = std::min(tile, c1 - t0);
    const double* m = mu + t0;
    double* ut = u + t0;
    std::fill(ut, ut + w, 0.0);
    index_t i = 0;
    for (; i + 4 <= h; i += 4) {
      const T* r0 = Xb + i * d + t0;
      const T *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
      const double a0 = dots[i], a1 = dots[i + 1], a2 = dots[i + 2], a3 = dots[i + 3];
      for (index_t j = 0; j < w; ++j)
        ut[j] = (((ut[j] + a0 * (r0[j] - m[j])) + a1 * (r1[j] - m[j])) + a2 * (r2[j] - m[j])) + a3 * (r3[j] - m[j]);
    }
    for (; i < h; ++i) {
      const T* row = Xb + i * d + t0;
      for (index_t j = 0; j < w; ++j) ut[j] += dots[i] * (row[j] - m[j]);
    }
    add_centred_dots(Xb + t0, h, d, m, ut, w, parts);
  }
}
BYZKERN_DISPATCH(power_step_slab_dispatched, power_step_slab)

// Each batch item's row sums, per slab in parallel, then in slab order (1 and 2 threads: same bits).
template <class Slab>
void sum_slabs(index_t B, index_t h, index_t d, index_t tile, index_t max_slabs, double* sums, Slab slab) {
  const Slabs slabs(d, tile, max_slabs);
  std::vector<double> parts(B * slabs.count * h);
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    slab(b, c0, c1, parts.data() + (b * slabs.count + s) * h);
  });
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < h; ++i) {
      double total = 0.0;
      for (index_t s = 0; s < slabs.count; ++s) total += parts[(b * slabs.count + s) * h + i];
      sums[b * h + i] = total;
    }
}

template <class T>
void centred_dots(const T* X, const double* mu, const double* z, index_t B, index_t h, index_t d, index_t tile,
                  index_t max_slabs, double* dots) {
  sum_slabs(B, h, d, tile, max_slabs, dots, [&](index_t b, index_t c0, index_t c1, double* parts) {
    centred_dots_slab_dispatched<T>(X + b * h * d, h, d, c0, c1, mu + b * d, z + b * d, parts);
  });
}

template <class T>
void power_step(const T* X, const double* mu, const double* dots, index_t B, index_t h, index_t d, index_t tile,
                index_t max_slabs, double* u, double* u_dots) {
  sum_slabs(B, h, d, tile, max_slabs, u_dots, [&](index_t b, index_t c0, index_t c1, double* parts) {
    power_step_slab_dispatched<T>(X + b * h * d, h, d, c0, c1, tile, mu + b * d, dots + b * h, u + b * d, parts);
  });
}

// dst[0..count) = src[0..count) with streaming stores where dst is 16-byte aligned: the
// destination is never read back soon (it is far larger than the caches), and a plain store that
// misses would first read its line from memory.
template <class T>
void copy_streaming(T* dst, const T* src, index_t count) {
  constexpr index_t lane = 16 / sizeof(T);
  index_t j = 0;
  for (; j < count && reinterpret_cast<std::uintptr_t>(dst + j) % 16 != 0; ++j) dst[j] = src[j];
  for (; j + lane <= count; j += lane)
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + j), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j)));
  for (; j < count; ++j) dst[j] = src[j];
}

// Candidate e of item b: the h honest rows, then f copies of candidate_row. A job is one column tile of
// one candidate; a thread's jobs are consecutive candidates of a tile, so it reads that tile of H
// from memory once. Outputs of at least stream_min_bytes are written with streaming stores (they
// outgrow the caches); smaller ones, such as optimized()'s column blocks, stay in cache for the
// aggregator that reads them next.
template <class T>
void attack_candidates(const T* H, const T* mu, const T* direction, const double* etas, index_t B, index_t h,
                       index_t d, index_t E, index_t f, index_t tile, index_t stream_min_bytes, T* out) {
  const index_t tiles = num_tiles(d, tile), n = h + f;
  const bool stream = B * E * n * d * static_cast<index_t>(sizeof(T)) >= stream_min_bytes;
  const auto copy = [stream](T* dst, const T* src, index_t count) {
    if (stream)
      copy_streaming(dst, src, count);
    else
      std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(T));
  };
#pragma omp parallel
  {
    std::vector<T> byzantine(static_cast<std::size_t>(tile));
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles * E; ++job) {
      const index_t b = job / (tiles * E), t = job / E % tiles, e = job % E;
      const index_t c0 = t * tile, w = std::min(tile, d - c0);
      const T* m = mu + b * d + c0;
      const T* a = direction + b * d + c0;
      T* candidate = out + (b * E + e) * n * d + c0;
      for (index_t i = 0; i < h; ++i) copy(candidate + i * d, H + (b * h + i) * d + c0, w);
      candidate_row(m, a, etas[e], w, byzantine.data());
      for (index_t i = h; i < n; ++i) copy(candidate + i * d, byzantine.data(), w);
    }
    if (stream) _mm_sfence();  // the streaming stores are visible to whoever reads out next
  }
}

#define BYZKERN_COMPRESS_INSTANTIATE(T)                                                                   \
  template void topk<T>(const T*, index_t, index_t, index_t, T*, std::int64_t*);                           \
  template void randk<T>(const T*, index_t, index_t, index_t, std::uint64_t, T*, std::int64_t*);           \
  template void qsgd<T>(const T*, index_t, index_t, int, std::uint64_t, index_t, T*, std::uint8_t*);       \
  template void natural<T>(const T*, index_t, index_t, std::uint64_t, index_t, std::uint8_t*);             \
  template void sign<T>(const T*, index_t, index_t, index_t, std::uint8_t*);                               \
  template void scaled_sign<T>(const T*, index_t, index_t, T*, std::uint8_t*);                             \
  template void scatter_rows<T>(const T*, const std::int64_t*, index_t, index_t, index_t, T*);             \
  template void qsgd_decompress<T>(const T*, const std::uint8_t*, index_t, index_t, int, index_t, T*);     \
  template void natural_decompress<T>(const std::uint8_t*, index_t, index_t, index_t, T*);                 \
  template void sign_decompress<T>(const std::uint8_t*, const T*, index_t, index_t, index_t, T*);          \
  template void mean_std<T>(const T*, index_t, index_t, index_t, index_t, index_t, T*, T*);                \
  template void centred_dots<T>(const T*, const double*, const double*, index_t, index_t, index_t, index_t,    \
                                index_t, double*);                                                          \
  template void power_step<T>(const T*, const double*, const double*, index_t, index_t, index_t, index_t,      \
                              index_t, double*, double*);                                                   \
  template void gaussian<T>(const T*, index_t, index_t, index_t, double, std::uint64_t, index_t, T*);                \
  template void attack_candidates<T>(const T*, const T*, const T*, const double*, index_t, index_t, index_t,  \
                                     index_t, index_t, index_t, index_t, T*);

BYZKERN_COMPRESS_INSTANTIATE(float)
BYZKERN_COMPRESS_INSTANTIATE(double)
template bool indices_ok<std::uint16_t>(const std::uint16_t*, index_t, index_t, std::uint64_t);
template bool indices_ok<std::uint32_t>(const std::uint32_t*, index_t, index_t, std::uint64_t);
template bool indices_ok<std::uint64_t>(const std::uint64_t*, index_t, index_t, std::uint64_t);

}  // namespace byzkern
