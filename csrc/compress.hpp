// Compressor and attack kernels (SPEC §4, §5). Row-major (n, d) input; results bit-identical to
// byzkern/backends/reference.py (wire formats, Philox draws and summation order included),
// except gaussian, whose normals (fdlibm's logarithm, sine and cosine on SIMD vectors) differ from
// NumPy's by a few ulps, and Mimic's centred_dots and power_step (float64 sums in their own order).
#pragma once
#include <cstdint>

#include "common.hpp"

namespace byzkern {

// Entries per chunk of the fixed-order row sums (reference.SUM_CHUNK): it defines the bits of
// QSGD norms and scaled-sign scales, so it is a constant, not a tile size.
constexpr index_t SUM_CHUNK = 65536;

template <class T>
void topk(const T* X, index_t n, index_t d, index_t k, T* values, std::int64_t* indices);
template <class T>
void randk(const T* X, index_t n, index_t d, index_t k, std::uint64_t seed, T* values,
           std::int64_t* indices);
template <class T>
void qsgd(const T* X, index_t n, index_t d, int levels, std::uint64_t seed, index_t tile, T* norms,
          std::uint8_t* codes);
template <class T>
void natural(const T* X, index_t n, index_t d, std::uint64_t seed, index_t tile, std::uint8_t* codes);
template <class T>
void sign(const T* X, index_t n, index_t d, index_t tile, std::uint8_t* codes);
template <class T>
void scaled_sign(const T* X, index_t n, index_t d, T* scales, std::uint8_t* codes);

template <class T>
void scatter_rows(const T* values, const std::int64_t* indices, index_t n, index_t k, index_t d, T* out);
template <class T>
void qsgd_decompress(const T* norms, const std::uint8_t* codes, index_t n, index_t d, int levels,
                     index_t tile, T* out);
template <class T>
void natural_decompress(const std::uint8_t* codes, index_t n, index_t d, index_t tile, T* out);
template <class T>
void sign_decompress(const std::uint8_t* codes, const T* scales, index_t n, index_t d, index_t tile, T* out);
template <class I>
bool indices_ok(const I* indices, index_t n, index_t k, std::uint64_t d);
bool qsgd_levels_ok(const std::uint8_t* codes, index_t n, index_t d, int levels);

template <class T>
void mean_std(const T* X, index_t B, index_t h, index_t d, index_t ddof, index_t tile, T* mean, T* std);
// Mimic's learning step, float64 sums in the kernel's own order (not the reference's): dots
// (B, h) = <x_i - mu, z>; u (B, d) = sum_i dots_i (x_i - mu) and u_dots (B, h) = <x_i - mu, u>.
template <class T>
void centred_dots(const T* X, const double* mu, const double* z, index_t B, index_t h, index_t d, index_t tile,
                  index_t max_slabs, double* dots);
template <class T>
void power_step(const T* X, const double* mu, const double* dots, index_t B, index_t h, index_t d, index_t tile,
                index_t max_slabs, double* u, double* u_dots);
template <class T>
void gaussian(const T* own, index_t B, index_t f, index_t d, double std, std::uint64_t seed, index_t tile, T* out);
// The f Byzantine rows' values of candidate eta over w columns: T(mu + eta * direction) in
// double (a multiply, then an add: the reference's two roundings). attack_candidates writes them
// and candidate_deviations aggregates them, so both take them from here.
template <class T>
inline void candidate_row(const T* mu, const T* direction, double eta, index_t w, T* out) {
  for (index_t j = 0; j < w; ++j)
    out[j] = static_cast<T>(static_cast<double>(mu[j]) + eta * static_cast<double>(direction[j]));
}

template <class T>
void attack_candidates(const T* H, const T* mu, const T* direction, const double* etas, index_t B, index_t h,
                       index_t d, index_t E, index_t f, index_t tile, index_t stream_min_bytes, T* out);

}  // namespace byzkern
