// Compressor and attack kernels, as csrc/compress.cpp. So far the attacks' mean_std over the
// honest rows (B, h, d) and gaussian over the Byzantine rows (B, f, d).
//
// Products and sums use __dmul_rn / __dadd_rn: the compiler would otherwise fuse them into FMAs,
// and these results must equal backends/reference.py bit for bit (gaussian up to the ulp its
// log/sin/cos may differ by).
#include "philox.cuh"

using byzkern::index_t;

// Per coordinate: mean = sum_i x_i / h, std = sqrt(sum_i (x_i - mean)^2 / (h - ddof)), rows added
// in order 0..h-1 as NumPy reduces axis 1; one thread per (item, column).
template <class T>
__global__ void mean_std(const T* X, index_t B, index_t h, index_t d, index_t ddof, T* mean, T* std) {
  for (index_t g = byzkern::global_thread(); g < B * d; g += byzkern::global_stride()) {
    const index_t b = g / d, c = g - b * d;
    const T* column = X + b * h * d + c;
    double sum = 0.0;
    for (index_t i = 0; i < h; ++i) sum = __dadd_rn(sum, static_cast<double>(column[i * d]));
    const double mu = sum / static_cast<double>(h);
    double squares = 0.0;
    for (index_t i = 0; i < h; ++i) {
      const double diff = static_cast<double>(column[i * d]) - mu;
      squares = __dadd_rn(squares, __dmul_rn(diff, diff));
    }
    mean[g] = static_cast<T>(mu);
    std[g] = static_cast<T>(sqrt(squares / static_cast<double>(h - ddof)));
  }
}

// out = own + std * z with z standard normal: Box-Muller on Philox, entries (2m, 2m+1) of row r
// (r = b * f + j) from block m of (seed, stream, r): sqrt(-2 ln(1 - u1)) (cos, sin)(2 pi u2) with
// u1 from words 0-1 and u2 from words 2-3. One thread per (row, pair).
template <class T>
__global__ void gaussian(const T* own, index_t rows, index_t d, double std, unsigned long long seed,
                         unsigned long long stream, T* out) {
  const index_t pairs = (d + 1) / 2;
  for (index_t g = byzkern::global_thread(); g < rows * pairs; g += byzkern::global_stride()) {
    const index_t r = g / pairs, m = g - r * pairs;
    const byzkern::PhiloxBlock block = byzkern::philox4x32_10(seed, stream, static_cast<unsigned long long>(r),
                                                              static_cast<unsigned long long>(m));
    const double u1 = byzkern::uniform53(block.w[0], block.w[1]);
    const double u2 = byzkern::uniform53(block.w[2], block.w[3]);
    const double radius = sqrt(-2.0 * log1p(-u1));
    const double angle = __dmul_rn(2.0 * 3.141592653589793, u2);
    const index_t c = 2 * m;
    const T* base = own + r * d;
    out[r * d + c] = static_cast<T>(__dadd_rn(static_cast<double>(base[c]), __dmul_rn(std, __dmul_rn(radius, cos(angle)))));
    if (c + 1 < d) {
      out[r * d + c + 1] =
          static_cast<T>(__dadd_rn(static_cast<double>(base[c + 1]), __dmul_rn(std, __dmul_rn(radius, sin(angle)))));
    }
  }
}
