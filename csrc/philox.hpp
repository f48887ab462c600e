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

// Philox over several blocks at once, one block per 64-bit SIMD lane: pmuludq multiplies the
// low 32 bits of each lane into a 64-bit product, so a round is 2 multiplies, 2 shifts and 4
// xors per vector. A lane's high half holds garbage (the product's high word) that never
// reaches a low half: the multiplies ignore it and xor is bitwise. Compilers do not emit
// pmuludq from portable code, so each instruction set is a struct of intrinsics; kernels take
// it as a template argument (compress.cpp dispatches). `groups` vectors go through the rounds
// together: 2 (4 independent multiply chains) fill the 16 registers of SSE2/AVX2; AVX-512's 32
// registers hold 4.
struct PhiloxSse2 {  // the x86-64 baseline: 2 blocks per vector
  static constexpr int lanes = 2, groups = 2;
  using V = __m128i;
  static V splat(std::uint32_t v) { return _mm_set1_epi32(static_cast<int>(v)); }
  static V blocks(std::uint64_t first) {  // first + l in lane l
    return _mm_add_epi64(_mm_set1_epi64x(static_cast<long long>(first)), _mm_set_epi64x(1, 0));
  }
  static V mul(V a, V m) { return _mm_mul_epu32(a, m); }
  static V high(V p) { return _mm_srli_epi64(p, 32); }
  static V x2(V a, V b) { return _mm_xor_si128(a, b); }
  static V x3(V a, V b, V c) { return _mm_xor_si128(_mm_xor_si128(a, b), c); }
  // the 4 words of each block, block after block (the low halves of c0..c3)
  static void store_words(V c0, V c1, V c2, V c3, std::uint32_t* out) {
    const V lo01 = _mm_unpacklo_epi32(c0, c1), lo23 = _mm_unpacklo_epi32(c2, c3);
    const V hi01 = _mm_unpackhi_epi32(c0, c1), hi23 = _mm_unpackhi_epi32(c2, c3);
    V* o = reinterpret_cast<V*>(out);
    _mm_storeu_si128(o, _mm_unpacklo_epi64(lo01, lo23));
    _mm_storeu_si128(o + 1, _mm_unpacklo_epi64(hi01, hi23));
  }
};

struct PhiloxAvx2 {  // 4 blocks per vector; use only in functions compiled for AVX2
  static constexpr int lanes = 4, groups = 2;
  using V = __m256i;
  BYZKERN_AVX2 static V splat(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  BYZKERN_AVX2 static V blocks(std::uint64_t first) {
    return _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(first)), _mm256_set_epi64x(3, 2, 1, 0));
  }
  BYZKERN_AVX2 static V mul(V a, V m) { return _mm256_mul_epu32(a, m); }
  BYZKERN_AVX2 static V high(V p) { return _mm256_srli_epi64(p, 32); }
  BYZKERN_AVX2 static V x2(V a, V b) { return _mm256_xor_si256(a, b); }
  BYZKERN_AVX2 static V x3(V a, V b, V c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  BYZKERN_AVX2 static void store_words(V c0, V c1, V c2, V c3, std::uint32_t* out) {
    const V lo01 = _mm256_unpacklo_epi32(c0, c1), lo23 = _mm256_unpacklo_epi32(c2, c3);
    const V hi01 = _mm256_unpackhi_epi32(c0, c1), hi23 = _mm256_unpackhi_epi32(c2, c3);
    const V b02 = _mm256_unpacklo_epi64(lo01, lo23), b13 = _mm256_unpacklo_epi64(hi01, hi23);  // blocks (0|2), (1|3)
    V* o = reinterpret_cast<V*>(out);
    _mm256_storeu_si256(o, _mm256_permute2x128_si256(b02, b13, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(b02, b13, 0x31));
  }
};

// 8 blocks per vector; use only in functions compiled for AVX-512. A 16-lane variant (one block
// per 32-bit lane: vpmuludq on the even and the odd lanes, blends to put the high and low words
// back) was no faster on Zen 4 (2.69 against 2.72 Gwords/s per core, 4 groups each): it needs
// 6 multiplies per 16 blocks and round where this needs 4.
struct PhiloxAvx512 {
  static constexpr int lanes = 8, groups = 4;
  using V = __m512i;
  BYZKERN_AVX512 static V splat(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  BYZKERN_AVX512 static V blocks(std::uint64_t first) {
    return _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first)), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
  }
  // Zero-masked forms with every lane kept, here and in store_words: GCC 12's plain ones start
  // from an undefined vector that -Wmaybe-uninitialized reports (GCC bug 105593); the
  // instructions are the same.
  static constexpr __mmask8 all8 = 0xff;
  static constexpr __mmask16 all16 = 0xffff;
  BYZKERN_AVX512 static V mul(V a, V m) { return _mm512_maskz_mul_epu32(all8, a, m); }
  BYZKERN_AVX512 static V high(V p) { return _mm512_maskz_srli_epi64(all8, p, 32); }
  BYZKERN_AVX512 static V x2(V a, V b) { return _mm512_xor_si512(a, b); }
  BYZKERN_AVX512 static V x3(V a, V b, V c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }  // a ^ b ^ c
  BYZKERN_AVX512 static void store_words(V c0, V c1, V c2, V c3, std::uint32_t* out) {
    const V lo01 = _mm512_maskz_unpacklo_epi32(all16, c0, c1), lo23 = _mm512_maskz_unpacklo_epi32(all16, c2, c3);
    const V hi01 = _mm512_maskz_unpackhi_epi32(all16, c0, c1), hi23 = _mm512_maskz_unpackhi_epi32(all16, c2, c3);
    const V even = _mm512_maskz_unpacklo_epi64(all8, lo01, lo23);  // blocks 0 2 4 6
    const V odd = _mm512_maskz_unpacklo_epi64(all8, hi01, hi23);   // blocks 1 3 5 7
    _mm512_storeu_si512(out, _mm512_permutex2var_epi64(even, _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), odd));
    _mm512_storeu_si512(out + 16, _mm512_permutex2var_epi64(even, _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4), odd));
  }
};

inline std::uint32_t high_word(std::uint64_t p) { return static_cast<std::uint32_t>(p >> 32); }

// Words [4 * first_block, 4 * (first_block + B)) of a row, Isa::groups vectors of blocks at a time.
// The blocks of one call share counter words 1-3 (block >> 32, row, stream), so the first two
// rounds are partly scalar: round 0's c2 product and round 1's c0 product are the same for all.
template <class Isa, int B>
inline void philox_words(PhiloxKey key, std::uint64_t first_block, std::uint32_t row,
                         std::uint32_t stream, std::uint32_t* out) {
  using V = typename Isa::V;
  constexpr int G = Isa::groups, step = G * Isa::lanes;
  static_assert(B % step == 0, "whole groups of blocks");
  constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  const std::uint32_t high = high_word(first_block);
  if (high != high_word(first_block + B - 1)) {  // the blocks straddle a multiple of 2^32
    for (int b = 0; b < B; ++b) philox_block(key, first_block + static_cast<std::uint64_t>(b), row, stream, out + 4 * b);
    return;
  }
  // round 0 on the shared words: c0 <- hi(M1 row) ^ high ^ k0, c1 <- lo(M1 row); round 1's
  // product of that c0
  const std::uint64_t row_product = std::uint64_t{M1} * row;
  const std::uint32_t c0_after_0 = high_word(row_product) ^ high ^ key.k0;
  const std::uint64_t c0_product = std::uint64_t{M0} * c0_after_0;
  const V m0 = Isa::splat(M0), m1 = Isa::splat(M1);
  const V round0_c2 = Isa::splat(stream ^ key.k1);
  const V round1_c0 = Isa::splat(static_cast<std::uint32_t>(row_product) ^ (key.k0 + W0));
  const V round1_c2 = Isa::splat(high_word(c0_product) ^ (key.k1 + W1));
  const V round1_c3 = Isa::splat(static_cast<std::uint32_t>(c0_product));
  for (int b = 0; b < B; b += step) {
    V c0[G], c1[G], c2[G], c3[G];
    for (int g = 0; g < G; ++g) {
      const V p0 = Isa::mul(Isa::blocks(first_block + static_cast<std::uint64_t>(b + g * Isa::lanes)), m0);
      const V c2_after_0 = Isa::x2(Isa::high(p0), round0_c2);  // c3 after round 0 is p0
      const V p1 = Isa::mul(c2_after_0, m1);
      c0[g] = Isa::x2(Isa::high(p1), round1_c0);
      c1[g] = p1;
      c2[g] = Isa::x2(p0, round1_c2);
      c3[g] = round1_c3;
    }
    std::uint32_t k0 = key.k0 + 2 * W0, k1 = key.k1 + 2 * W1;
    for (int round = 2; round < 10; ++round) {
      const V key0 = Isa::splat(k0), key1 = Isa::splat(k1);
      for (int g = 0; g < G; ++g) {
        const V p0 = Isa::mul(c0[g], m0), p1 = Isa::mul(c2[g], m1);
        c0[g] = Isa::x3(Isa::high(p1), c1[g], key0);
        c2[g] = Isa::x3(Isa::high(p0), c3[g], key1);
        c1[g] = p1;
        c3[g] = p0;
      }
      k0 += W0;
      k1 += W1;
    }
    for (int g = 0; g < G; ++g) Isa::store_words(c0[g], c1[g], c2[g], c3[g], out + 4 * (b + g * Isa::lanes));
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
