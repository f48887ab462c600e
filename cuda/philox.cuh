// Philox4x32-10 (Salmon et al., SC'11) with the constants and key/counter layout of
// byzkern/_random.py, so a random word is the same function of (seed, stream, row, block) on
// every backend:
//     key     = (seed & 0xffffffff, seed >> 32)
//     counter = (block & 0xffffffff, block >> 32, row & 0xffffffff, stream)
// Each block gives four 32-bit words; a float64 uniform takes two consecutive words (hi, lo).
#pragma once
#include "common.cuh"

namespace byzkern {

struct PhiloxBlock {
  unsigned int w[4];
};

__device__ __forceinline__ PhiloxBlock philox4x32_10(unsigned long long seed, unsigned long long stream,
                                                     unsigned long long row, unsigned long long block) {
  unsigned int c0 = static_cast<unsigned int>(block), c1 = static_cast<unsigned int>(block >> 32);
  unsigned int c2 = static_cast<unsigned int>(row), c3 = static_cast<unsigned int>(stream);
  unsigned int k0 = static_cast<unsigned int>(seed), k1 = static_cast<unsigned int>(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

// A float64 uniform in [0, 1) from 53 bits of the words (hi, lo), as _random.uniforms.
__device__ __forceinline__ double uniform53(unsigned int hi, unsigned int lo) {
  const unsigned long long bits = ((static_cast<unsigned long long>(hi) << 32) | lo) >> 11;
  return static_cast<double>(bits) * 1.1102230246251565e-16;  // 2^-53
}

}  // namespace byzkern
