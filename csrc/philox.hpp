// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator of byzkern/_random.py: same
// constants, same key/counter layout, so every backend draws the same words.
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (block & 0xffffffff, block >> 32, row, stream); block b gives words 4b .. 4b+3
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "common.hpp"

namespace byzkern {

// Stream ids: byzkern._random.STREAMS (one per random operation).
enum PhiloxStream : std::uint32_t {
  STREAM_RANDK = 3,
  STREAM_QSGD = 4,
  STREAM_NATURAL = 5,
  STREAM_GAUSSIAN = 6,
};

struct PhiloxKey {
  std::uint32_t k0, k1;
  explicit PhiloxKey(std::uint64_t seed)
      : k0(static_cast<std::uint32_t>(seed)), k1(static_cast<std::uint32_t>(seed >> 32)) {}
};

// The four words of one block, written to w[0..3].
inline void philox_block(PhiloxKey key, std::uint64_t block, std::uint32_t row, std::uint32_t stream,
                         std::uint32_t* w) {
  std::uint32_t c0 = static_cast<std::uint32_t>(block), c1 = static_cast<std::uint32_t>(block >> 32);
  std::uint32_t c2 = row, c3 = stream, k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c0;
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c2;
    const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<std::uint32_t>(p1);
    c3 = static_cast<std::uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  w[0] = c0; w[1] = c1; w[2] = c2; w[3] = c3;
}

// Philox over several blocks at once, one block per 32-bit SIMD lane. Compilers do not turn
// 32x32->64-bit lane products into pmuludq from portable code, so each instruction set is a
// struct of intrinsics; kernels take it as a template argument (compress.cpp dispatches).
struct PhiloxSse2 {  // the x86-64 baseline: 4 blocks
  static constexpr int lanes = 4;
  using V = __m128i;
  static V splat(std::uint32_t v) { return _mm_set1_epi32(static_cast<int>(v)); }
  static V load(const std::uint32_t* p) { return _mm_loadu_si128(reinterpret_cast<const V*>(p)); }
  // high and low halves of the lane products a * m
  static void mulhilo(V a, V m, V& hi, V& lo) {
    const V even = _mm_mul_epu32(a, m), odd = _mm_mul_epu32(_mm_srli_epi64(a, 32), m);
    const V e = _mm_shuffle_epi32(even, _MM_SHUFFLE(3, 1, 2, 0));  // lo0 lo2 hi0 hi2
    const V o = _mm_shuffle_epi32(odd, _MM_SHUFFLE(3, 1, 2, 0));   // lo1 lo3 hi1 hi3
    lo = _mm_unpacklo_epi32(e, o);
    hi = _mm_unpackhi_epi32(e, o);
  }
  // the 4 words of each block, block after block
  static void store_words(V c0, V c1, V c2, V c3, std::uint32_t* out) {
    const V t0 = _mm_unpacklo_epi32(c0, c1), t1 = _mm_unpackhi_epi32(c0, c1);
    const V t2 = _mm_unpacklo_epi32(c2, c3), t3 = _mm_unpackhi_epi32(c2, c3);
    V* o = reinterpret_cast<V*>(out);
    _mm_storeu_si128(o, _mm_unpacklo_epi64(t0, t2));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi64(t0, t2));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi64(t1, t3));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi64(t1, t3));
  }
  static V x3(V a, V b, V c) { return _mm_xor_si128(_mm_xor_si128(a, b), c); }
};

struct PhiloxAvx2 {  // 8 blocks; use only in functions compiled for AVX2
  static constexpr int lanes = 8;
  using V = __m256i;
  BYZKERN_AVX2 static V splat(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  BYZKERN_AVX2 static V load(const std::uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const V*>(p)); }
  BYZKERN_AVX2 static void mulhilo(V a, V m, V& hi, V& lo) {
    const V even = _mm256_mul_epu32(a, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  }
  BYZKERN_AVX2 static void store_words(V c0, V c1, V c2, V c3, std::uint32_t* out) {
    const V t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    const V t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    // blocks (0|4), (1|5), (2|6), (3|7) in the two 128-bit halves
    const V b04 = _mm256_unpacklo_epi64(t0, t2), b15 = _mm256_unpackhi_epi64(t0, t2);
    const V b26 = _mm256_unpacklo_epi64(t1, t3), b37 = _mm256_unpackhi_epi64(t1, t3);
    V* o = reinterpret_cast<V*>(out);
    _mm256_storeu_si256(o, _mm256_permute2x128_si256(b04, b15, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(b26, b37, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(b04, b15, 0x31));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(b26, b37, 0x31));
  }
  BYZKERN_AVX2 static V x3(V a, V b, V c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
};

// Words [4 * first_block, 4 * (first_block + B)) of a row, B a multiple of Isa::lanes.
template <class Isa, int B>
inline void philox_words(PhiloxKey key, std::uint64_t first_block, std::uint32_t row,
                         std::uint32_t stream, std::uint32_t* out) {
  using V = typename Isa::V;
  static_assert(B % Isa::lanes == 0, "whole vectors of blocks");
  for (int g = 0; g < B; g += Isa::lanes) {
    std::uint32_t lo[Isa::lanes], hi[Isa::lanes];
    for (int l = 0; l < Isa::lanes; ++l) {
      const std::uint64_t block = first_block + static_cast<std::uint64_t>(g + l);
      lo[l] = static_cast<std::uint32_t>(block);
      hi[l] = static_cast<std::uint32_t>(block >> 32);
    }
    V c0 = Isa::load(lo), c1 = Isa::load(hi), c2 = Isa::splat(row), c3 = Isa::splat(stream);
    const V m0 = Isa::splat(0xD2511F53u), m1 = Isa::splat(0xCD9E8D57u);
    std::uint32_t k0 = key.k0, k1 = key.k1;
    for (int round = 0; round < 10; ++round) {
      V hi0, lo0, hi1, lo1;
      Isa::mulhilo(c0, m0, hi0, lo0);
      Isa::mulhilo(c2, m1, hi1, lo1);
      c0 = Isa::x3(hi1, c1, Isa::splat(k0));
      c2 = Isa::x3(hi0, c3, Isa::splat(k1));
      c1 = lo1;
      c3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    Isa::store_words(c0, c1, c2, c3, out + 4 * g);
  }
}

// A uniform in [0, 1) from two words (hi, lo): the top 53 of their 64 bits, as _random.uniforms.
inline double uniform53(std::uint32_t hi, std::uint32_t lo) {
  const std::uint64_t bits = ((static_cast<std::uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(bits) * 0x1.0p-53;
}

// An integer in [0, bound) from a uniform, as _random.below.
inline std::int64_t below(double u, std::int64_t bound) {
  const std::int64_t t = static_cast<std::int64_t>(u * static_cast<double>(bound));
  return t < bound - 1 ? t : bound - 1;
}

}  // namespace byzkern
