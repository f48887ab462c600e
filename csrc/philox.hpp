// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator of byzkern/_random.py: same
// constants, same key/counter layout, so every backend draws the same words.
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (block & 0xffffffff, block >> 32, row, stream); block b gives words 4b .. 4b+3
#pragma once
#include <cstdint>

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

// Words [4 * first_block, 4 * (first_block + L)) of a row, L blocks side by side: the lanes are
// independent, so the compiler vectorizes the rounds (32x32->64 multiplies across lanes).
template <int L>
inline void philox_words(PhiloxKey key, std::uint64_t first_block, std::uint32_t row,
                         std::uint32_t stream, std::uint32_t* out) {
  std::uint32_t c0[L], c1[L], c2[L], c3[L];
  for (int l = 0; l < L; ++l) {
    const std::uint64_t block = first_block + static_cast<std::uint64_t>(l);
    c0[l] = static_cast<std::uint32_t>(block);
    c1[l] = static_cast<std::uint32_t>(block >> 32);
    c2[l] = row;
    c3[l] = stream;
  }
  std::uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    for (int l = 0; l < L; ++l) {
      const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c0[l];
      const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c2[l];
      const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
      const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
      c1[l] = static_cast<std::uint32_t>(p1);
      c3[l] = static_cast<std::uint32_t>(p0);
      c0[l] = n0;
      c2[l] = n2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int l = 0; l < L; ++l) {
    out[4 * l] = c0[l]; out[4 * l + 1] = c1[l]; out[4 * l + 2] = c2[l]; out[4 * l + 3] = c3[l];
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
