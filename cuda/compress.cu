// Compressor and attack kernels, as csrc/compress.cpp; the oracle is backends/reference.py, whose
// wire bits (codes, indices, scales) and Philox draws these reproduce exactly.
//
// Products and sums use __dmul_rn / __dadd_rn: the compiler would otherwise fuse them into FMAs,
// and these results must equal backends/reference.py bit for bit (Mimic's float64 sums: to a
// tolerance).
//
// Codes of `width` <= 16 bits are packed per row in a little-endian bit stream, so a group of 8
// entries fills exactly `width` bytes and starts on a byte: encoders and decoders run one thread
// per (row, group of 8 entries) and never share a byte, hence no atomics.
#include "philox.cuh"

using byzkern::index_t;

namespace byzkern {

__device__ __forceinline__ index_t row_bytes(index_t d, int width) { return (d * width + 7) / 8; }

__device__ __forceinline__ int bit_length(unsigned v) { return 32 - __clz(v); }  // v >= 1

__device__ __forceinline__ index_t min_index(index_t a, index_t b) { return a < b ? a : b; }

// The m <= 8 codes of one group into the bytes at `out` (code j at bits [j * width, (j + 1) * width)).
__device__ __forceinline__ void store_group(const unsigned* codes, int m, int width, unsigned char* out) {
  unsigned long long lo = 0, hi = 0;  // a 128-bit little-endian accumulator: 8 codes of <= 16 bits
  for (int j = 0; j < m; ++j) {
    const int bit = j * width;
    const unsigned long long c = codes[j];
    if (bit >= 64) {
      hi |= c << (bit - 64);
    } else {
      lo |= c << bit;
      if (bit + width > 64) hi |= c >> (64 - bit);
    }
  }
  const int bytes = (m * width + 7) / 8;
  for (int b = 0; b < bytes; ++b) out[b] = static_cast<unsigned char>(b < 8 ? lo >> (8 * b) : hi >> (8 * (b - 8)));
}

// Inverse of store_group.
__device__ __forceinline__ void load_group(const unsigned char* in, int m, int width, unsigned* codes) {
  unsigned long long lo = 0, hi = 0;
  const int bytes = (m * width + 7) / 8;
  for (int b = 0; b < bytes; ++b) {
    const unsigned long long v = in[b];
    if (b < 8) lo |= v << (8 * b);
    else hi |= v << (8 * (b - 8));
  }
  const unsigned mask = (1u << width) - 1u;
  for (int j = 0; j < m; ++j) {
    const int bit = j * width;
    unsigned long long c;
    if (bit >= 64) c = hi >> (bit - 64);
    else c = (lo >> bit) | (bit + width > 64 ? hi << (64 - bit) : 0ull);
    codes[j] = static_cast<unsigned>(c) & mask;
  }
}

// Group g of an (n, d) input: its row, first entry and size.
struct Group {
  index_t row, first;
  int size;
  __device__ Group(index_t g, index_t groups, index_t d) {
    row = g / groups;
    first = (g - row * groups) * 8;
    size = static_cast<int>(min_index(8, d - first));
  }
};

// IEEE layout of the natively computed dtypes (natural compression works on the bits) and the
// magnitude key of topk: the bits without the sign, whose unsigned order is |x|, every NaN mapped
// to one key just above Inf (the reference ranks all NaNs equal, above Inf, ties by index).
template <class T>
struct FloatBits;
template <>
struct FloatBits<float> {
  using U = unsigned;
  static constexpr int exponent_bits = 8, mantissa_bits = 23, key_bits = 32;
  __device__ static U bits(float x) { return __float_as_uint(x); }
  __device__ static float from_bits(U u) { return __uint_as_float(u); }
  __device__ static unsigned long long key(float x) {
    const unsigned magnitude = __float_as_uint(x) & 0x7fffffffu;
    return magnitude > 0x7f800000u ? 0x7f800001u : magnitude;
  }
};
template <>
struct FloatBits<double> {
  using U = unsigned long long;
  static constexpr int exponent_bits = 11, mantissa_bits = 52, key_bits = 64;
  __device__ static U bits(double x) { return static_cast<U>(__double_as_longlong(x)); }
  __device__ static double from_bits(U u) { return __longlong_as_double(static_cast<long long>(u)); }
  __device__ static unsigned long long key(double x) {
    const unsigned long long magnitude = static_cast<U>(__double_as_longlong(x)) & 0x7fffffffffffffffull;
    return magnitude > 0x7ff0000000000000ull ? 0x7ff0000000000001ull : magnitude;
  }
};

// -x by its sign bit, as NumPy negates: a device's negation may pass a NaN through unchanged
// (double) or give the canonical NaN (float), where the host flips its sign.
template <class T>
__device__ __forceinline__ T negated(T x) {
  using Bits = FloatBits<T>;
  return Bits::from_bits(Bits::bits(x) ^ (typename Bits::U(1) << (8 * sizeof(T) - 1)));
}

// An integer in [0, bound) from a uniform, as _random.below.
__device__ __forceinline__ index_t below(double u, index_t bound) {
  const index_t t = static_cast<index_t>(__dmul_rn(u, static_cast<double>(bound)));
  return t < bound - 1 ? t : bound - 1;
}

struct SquareTerm {
  __device__ static double term(double x) { return __dmul_rn(x, x); }
};
struct AbsTerm {
  __device__ static double term(double x) { return fabs(x); }
};

// reference.ordered_row_sums from the lane sums (n, chunks, 8): lanes combined as
// ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), chunks added in order.
__device__ __forceinline__ double ordered_total(const double* lanes, index_t chunks, index_t row) {
  double total = 0.0;
  for (index_t c = 0; c < chunks; ++c) {
    const double* l = lanes + (row * chunks + c) * 8;
    const double chunk = __dadd_rn(__dadd_rn(__dadd_rn(l[0], l[1]), __dadd_rn(l[2], l[3])),
                                   __dadd_rn(__dadd_rn(l[4], l[5]), __dadd_rn(l[6], l[7])));
    total = c == 0 ? chunk : __dadd_rn(total, chunk);
  }
  return total;
}

// Whether a topk key agrees with the prefix chosen so far above the digit at `shift` (every key
// does in the top pass).
__device__ __forceinline__ bool key_matches(unsigned long long key, unsigned long long prefix, index_t shift) {
  return shift + 8 >= 64 || (key >> (shift + 8)) == (prefix >> (shift + 8));
}

}  // namespace byzkern

// ---- attacks ---------------------------------------------------------------------------------

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

// ---- Box-Muller: csrc/compress.cpp's fdlibm log, sin and cos, one value per thread -----------
// The same operations in the same order, each product and sum rounded on its own, so the normals
// are the other backends' bit for bit (CUDA's log1p, sin and cos are not fdlibm's).
namespace byzkern {

__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }

// ln y for normal y in (0, 1]: y = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)).
__device__ double log_unit(double y) {
  constexpr double Lg1 = 0x1.5555555555593p-1, Lg2 = 0x1.999999997fa04p-2, Lg3 = 0x1.2492494229359p-2,
                   Lg4 = 0x1.c71c51d8e78afp-3, Lg5 = 0x1.7466496cb03dep-3, Lg6 = 0x1.39a09d078c69fp-3,
                   Lg7 = 0x1.2f112df3e5244p-3, ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33;
  const unsigned long long shifted =
      static_cast<unsigned long long>(__double_as_longlong(y)) + ((0x3ff00000ull - 0x3fe6a09eull) << 32);
  const unsigned long long mantissa = (shifted & 0x000fffffffffffffull) + (0x3fe6a09eull << 32);
  const double k =
      sub(__longlong_as_double(static_cast<long long>((shifted >> 52) | 0x4330000000000000ull)), 0x1p52 + 1023.0);
  const double f = sub(__longlong_as_double(static_cast<long long>(mantissa)), 1.0);
  const double hfsq = mul(mul(0.5, f), f), s = f / add(2.0, f), z = mul(s, s), w = mul(z, z);
  const double R = add(mul(z, add(Lg1, mul(w, add(Lg3, mul(w, add(Lg5, mul(w, Lg7))))))),
                       mul(w, add(Lg2, mul(w, add(Lg4, mul(w, Lg6))))));
  return add(add(sub(add(mul(s, add(hfsq, R)), mul(k, ln2_lo)), hfsq), f), mul(k, ln2_hi));
}

// sin and cos of x + y, |x + y| <= pi/4, y the tail of x.
__device__ double sin_reduced(double x, double y) {
  constexpr double S1 = -0x1.5555555555549p-3, S2 = 0x1.111111110f8a6p-7, S3 = -0x1.a01a019c161d5p-13,
                   S4 = 0x1.71de357b1fe7dp-19, S5 = -0x1.ae5e68a2b9cebp-26, S6 = 0x1.5d93a5acfd57cp-33;
  const double z = mul(x, x), w = mul(z, z), v = mul(z, x);
  const double r = add(add(S2, mul(z, add(S3, mul(z, S4)))), mul(mul(z, w), add(S5, mul(z, S6))));
  return sub(x, sub(sub(mul(z, sub(mul(0.5, y), mul(v, r))), y), mul(v, S1)));
}
__device__ double cos_reduced(double x, double y) {
  constexpr double C1 = 0x1.555555555554cp-5, C2 = -0x1.6c16c16c15177p-10, C3 = 0x1.a01a019cb159p-16,
                   C4 = -0x1.27e4f809c52adp-22, C5 = 0x1.1ee9ebdb4b1c4p-29, C6 = -0x1.8fae9be8838d4p-37;
  const double z = mul(x, x), w = mul(z, z);
  const double r =
      add(mul(z, add(C1, mul(z, add(C2, mul(z, C3))))), mul(mul(w, w), add(C4, mul(z, add(C5, mul(z, C6))))));
  const double hz = mul(0.5, z), one_minus_hz = sub(1.0, hz);
  return add(one_minus_hz, add(sub(sub(1.0, one_minus_hz), hz), sub(mul(z, r), mul(x, y))));
}

// sin a and cos a for a in [0, 2 pi): a = n pi/2 + (y0 + y1), pi/2 in three 33-bit parts and
// their tails (csrc/compress.cpp's sincos_angle says why this is exact enough).
__device__ void sincos_angle(double a, double& sine, double& cosine) {
  const double rounder = add(mul(a, 0x1.45f306dc9c883p-1), 0x1.8p52);
  const double n = sub(rounder, 0x1.8p52);
  double r = sub(a, mul(n, 0x1.921fb544p0)), tail = 0.0;
  const double parts[2][2] = {{0x1.0b4611a6p-34, 0x1.3198a2e037073p-69}, {0x1.3198a2ep-69, 0x1.b839a252049c1p-104}};
  for (const auto& part : parts) {
    const double t = r, product = mul(n, part[0]);
    r = sub(t, product);
    tail = sub(mul(n, part[1]), sub(sub(t, r), product));
  }
  const double y0 = sub(r, tail), y1 = sub(sub(r, y0), tail);
  const double s = sin_reduced(y0, y1), c = cos_reduced(y0, y1);
  const unsigned quadrant = static_cast<unsigned>(__double_as_longlong(rounder) & 3);
  const bool odd = quadrant & 1u, upper = quadrant >> 1;
  sine = odd ? c : s;
  cosine = odd ? s : c;
  if (upper) sine = -sine;
  if (upper != odd) cosine = -cosine;
}

}  // namespace byzkern

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
    const double one_minus_u1 = 1.0 - byzkern::uniform53(block.w[0], block.w[1]);  // exact: u1 is k 2^-53
    const double angle = __dmul_rn(2.0 * 3.141592653589793, byzkern::uniform53(block.w[2], block.w[3]));
    const double radius = sqrt(__dmul_rn(-2.0, byzkern::log_unit(one_minus_u1)));
    double sine, cosine;
    byzkern::sincos_angle(angle, sine, cosine);
    const index_t c = 2 * m;
    const T* base = own + r * d;
    out[r * d + c] = static_cast<T>(__dadd_rn(static_cast<double>(base[c]), __dmul_rn(std, __dmul_rn(radius, cosine))));
    if (c + 1 < d) {
      out[r * d + c + 1] =
          static_cast<T>(__dadd_rn(static_cast<double>(base[c + 1]), __dmul_rn(std, __dmul_rn(radius, sine))));
    }
  }
}

// Candidate e of item b (out (B, E, h + f, d)): the h rows of H, then f rows of
// candidate_value(mu, etas[e], direction). One thread per output entry.
template <class T>
__global__ void attack_candidates(const T* H, const T* mu, const T* direction, const double* etas, index_t B,
                                  index_t h, index_t d, index_t E, index_t f, T* out) {
  const index_t n = h + f;
  for (index_t g = byzkern::global_thread(); g < B * E * n * d; g += byzkern::global_stride()) {
    const index_t row = g / d, c = g - row * d, item = row / n, i = row - item * n, b = item / E;
    out[g] = i < h ? H[(b * h + i) * d + c]
                   : byzkern::candidate_value(mu[b * d + c], etas[item - b * E], direction[b * d + c]);
  }
}

// ---- Mimic's learning step ---------------------------------------------------------------------
// Float64 sums in this backend's own order, compared with the reference to a tolerance: the
// multiply-adds may fuse.

// partial[k, b * h + i] = sum over the columns of chunk k of (x[b, i, c] - mu[b, c]) v[b, c]; one
// block per (chunk, row), as rows.cuh's row_reduce. The caller adds the chunks.
template <class T>
__global__ void centred_dot_chunks(const T* X, index_t B, index_t h, index_t d, const double* mu, const double* v,
                                   index_t chunk, index_t chunks, double* partial) {
  const index_t rows = B * h;
  for (index_t job = blockIdx.x; job < chunks * rows; job += gridDim.x) {
    const index_t k = job / rows, r = job - k * rows, b = r / h;
    const index_t c_end = byzkern::min_index((k + 1) * chunk, d);
    const T* row = X + r * d;
    const double *m = mu + b * d, *w = v + b * d;
    double acc = 0.0;
    for (index_t c = k * chunk + threadIdx.x; c < c_end; c += blockDim.x)
      acc += (static_cast<double>(row[c]) - m[c]) * w[c];
    const double total = byzkern::block_reduce<false>(acc);
    if (threadIdx.x == 0) partial[k * rows + r] = total;
    __syncthreads();  // the next job's block_reduce reuses the shared warp partials
  }
}

// u[b, c] = sum_i dots[b, i] (x[b, i, c] - mu[b, c]), rows in order; one thread per (item, column).
template <class T>
__global__ void power_columns(const T* X, index_t B, index_t h, index_t d, const double* mu, const double* dots,
                              double* u) {
  for (index_t g = byzkern::global_thread(); g < B * d; g += byzkern::global_stride()) {
    const index_t b = g / d, c = g - b * d;
    const T* column = X + b * h * d + c;
    const double m = mu[g];
    double sum = 0.0;
    for (index_t i = 0; i < h; ++i) sum += dots[b * h + i] * (static_cast<double>(column[i * d]) - m);
    u[g] = sum;
  }
}

// ---- norms and scales --------------------------------------------------------------------------

// lanes[row, c, j] = sum in increasing i of Term(x[row, i]) over the i = j (mod 8) of chunk c
// (sum_chunk entries): the lane sums of reference.ordered_row_sums, one thread per (row, chunk, lane).
template <class T, class Term>
__global__ void row_sum_lanes(const T* X, index_t n, index_t d, index_t sum_chunk, double* lanes) {
  const index_t chunks = (d + sum_chunk - 1) / sum_chunk;
  for (index_t g = byzkern::global_thread(); g < n * chunks * 8; g += byzkern::global_stride()) {
    const index_t job = g / 8, row = job / chunks, c = job - row * chunks;
    const index_t end = byzkern::min_index(d, (c + 1) * sum_chunk);
    const T* x = X + row * d;
    double acc = 0.0;
#pragma unroll 8  // the loads run ahead of the chain of dependent adds
    for (index_t i = c * sum_chunk + (g - job * 8); i < end; i += 8) {
      acc = __dadd_rn(acc, Term::term(static_cast<double>(x[i])));
    }
    lanes[g] = acc;
  }
}

// QSGD's per-row norm (in the message dtype) and level scale s / norm, 0 for a zero or non-finite
// norm (the row then sends level 0 everywhere and decodes to NaN or 0).
template <class T>
__global__ void qsgd_scales(const double* lanes, index_t n, index_t chunks, index_t levels, T* norms, double* scale) {
  for (index_t row = byzkern::global_thread(); row < n; row += byzkern::global_stride()) {
    norms[row] = static_cast<T>(sqrt(byzkern::ordered_total(lanes, chunks, row)));
    const double norm = static_cast<double>(norms[row]);
    scale[row] = isfinite(norm) && norm > 0.0 ? static_cast<double>(levels) / norm : 0.0;
  }
}

// scaled_sign's per-row scale ||x||_1 / d in X's dtype (the message narrows it to float32).
template <class T>
__global__ void l1_scales(const double* lanes, index_t n, index_t chunks, index_t d, T* scales) {
  for (index_t row = byzkern::global_thread(); row < n; row += byzkern::global_stride()) {
    scales[row] = static_cast<T>(byzkern::ordered_total(lanes, chunks, row) / static_cast<double>(d));
  }
}

// ---- encoders: one thread per (row, group of 8 entries) ------------------------------------------

// Code = sign << (width - 1) | level, level = floor(r) + (word < frac(r) * 2^32), r = |x| * scale,
// capped at levels; entry e of a row uses Philox word e of (seed, stream, row).
template <class T>
__global__ void qsgd_encode(const T* X, index_t n, index_t d, index_t levels, const double* scale,
                            unsigned long long seed, unsigned long long stream, unsigned char* codes) {
  const int width = byzkern::bit_length(static_cast<unsigned>(levels)) + 1;
  const unsigned sign_bit = 1u << (width - 1);
  const index_t groups = (d + 7) / 8, stride = byzkern::row_bytes(d, width);
  const double top = static_cast<double>(levels);
  for (index_t g = byzkern::global_thread(); g < n * groups; g += byzkern::global_stride()) {
    const byzkern::Group group(g, groups, d);
    unsigned words[8];
    for (int b = 0; b * 4 < group.size; ++b) {
      const byzkern::PhiloxBlock block = byzkern::philox4x32_10(
          seed, stream, static_cast<unsigned long long>(group.row), static_cast<unsigned long long>(group.first / 4 + b));
      for (int w = 0; w < 4; ++w) words[4 * b + w] = block.w[w];
    }
    const T* x = X + group.row * d + group.first;
    const double s = scale[group.row];
    unsigned c[8];
    for (int j = 0; j < group.size; ++j) {
      const double r = s == 0.0 ? 0.0 : __dmul_rn(fabs(static_cast<double>(x[j])), s);
      const double low = floor(r);
      const bool up = static_cast<double>(words[j]) < __dmul_rn(__dsub_rn(r, low), 4294967296.0);
      const double level = fmin(__dadd_rn(low, up ? 1.0 : 0.0), top);
      c[j] = (x[j] < T(0) ? sign_bit : 0u) | static_cast<unsigned>(level);
    }
    byzkern::store_group(c, group.size, width, codes + group.row * stride + group.first / 8 * width);
  }
}

// Code = sign << E | biased exponent after rounding |x| = (1 + m / 2^P) 2^e up with probability
// m / 2^P, decided on integers (uniform >> (bits - P)) < m; float32 takes word e of the row, float64
// words 2e, 2e + 1. NaN has code 1 << E; a value rounded to zero keeps sign 0.
template <class T>
__global__ void natural_encode(const T* X, index_t n, index_t d, unsigned long long seed, unsigned long long stream,
                               unsigned char* codes) {
  using Bits = byzkern::FloatBits<T>;
  using U = typename Bits::U;
  constexpr int E = Bits::exponent_bits, P = Bits::mantissa_bits;
  constexpr int words_per_entry = sizeof(T) / 4;
  constexpr U exponent_mask = (U(1) << E) - 1, mantissa_mask = (U(1) << P) - 1;
  const index_t groups = (d + 7) / 8, stride = byzkern::row_bytes(d, E + 1);
  for (index_t g = byzkern::global_thread(); g < n * groups; g += byzkern::global_stride()) {
    const byzkern::Group group(g, groups, d);
    unsigned words[8 * words_per_entry];
    for (int b = 0; b * 4 < group.size * words_per_entry; ++b) {
      const byzkern::PhiloxBlock block = byzkern::philox4x32_10(
          seed, stream, static_cast<unsigned long long>(group.row),
          static_cast<unsigned long long>(group.first * words_per_entry / 4 + b));
      for (int w = 0; w < 4; ++w) words[4 * b + w] = block.w[w];
    }
    const T* x = X + group.row * d + group.first;
    unsigned c[8];
    for (int j = 0; j < group.size; ++j) {
      const U u = Bits::bits(x[j]);
      const U mantissa = u & mantissa_mask;
      U exponent = (u >> P) & exponent_mask;
      U uniform;
      if constexpr (words_per_entry == 1) {
        uniform = static_cast<U>(words[j] >> (32 - P));
      } else {
        uniform = static_cast<U>(((static_cast<unsigned long long>(words[2 * j]) << 32) | words[2 * j + 1]) >> (64 - P));
      }
      if (exponent != exponent_mask && uniform < mantissa) exponent += 1;
      const bool negative = x[j] < T(0) && exponent != 0;  // sign 1 with exponent 0 is the NaN code
      c[j] = isnan(x[j]) ? (1u << E) : (static_cast<unsigned>(negative) << E) | static_cast<unsigned>(exponent);
    }
    byzkern::store_group(c, group.size, E + 1, codes + group.row * stride + group.first / 8 * (E + 1));
  }
}

// One bit per entry, set for x < 0 (sign(0) = +1, NaN positive): one thread per output byte.
template <class T>
__global__ void sign_encode(const T* X, index_t n, index_t d, unsigned char* codes) {
  const index_t groups = (d + 7) / 8;
  for (index_t g = byzkern::global_thread(); g < n * groups; g += byzkern::global_stride()) {
    const byzkern::Group group(g, groups, d);
    const T* x = X + group.row * d + group.first;
    unsigned byte = 0;
    for (int j = 0; j < group.size; ++j) byte |= (x[j] < T(0) ? 1u : 0u) << j;
    codes[g] = static_cast<unsigned char>(byte);  // row stride groups bytes: byte g of the buffer
  }
}

// ---- decoders --------------------------------------------------------------------------------

// The layout of a QSGD message's codes (sign bit above the level bits), read a group at a time.
struct QsgdCodes {
  int width;
  unsigned level_mask;
  index_t groups, stride;
  __device__ QsgdCodes(index_t d, index_t levels)
      : width(byzkern::bit_length(static_cast<unsigned>(levels)) + 1),
        level_mask((1u << (width - 1)) - 1u),
        groups((d + 7) / 8),
        stride(byzkern::row_bytes(d, width)) {}
  // The codes of group g into c; returns where the group lies.
  __device__ byzkern::Group load(const unsigned char* codes, index_t g, index_t d, unsigned c[8]) const {
    const byzkern::Group group(g, groups, d);
    byzkern::load_group(codes + group.row * stride + group.first / 8 * width, group.size, width, c);
    return group;
  }
};

// Level l of row r decodes to (T)(norm_r * (l / s)), negated when the sign bit is set.
template <class T>
__global__ void qsgd_decode(const T* norms, const unsigned char* codes, index_t n, index_t d, index_t levels, T* out) {
  const QsgdCodes layout(d, levels);
  for (index_t g = byzkern::global_thread(); g < n * layout.groups; g += byzkern::global_stride()) {
    unsigned c[8];
    const byzkern::Group group = layout.load(codes, g, d, c);
    const double norm = static_cast<double>(norms[group.row]);
    T* o = out + group.row * d + group.first;
    for (int j = 0; j < group.size; ++j) {
      const double level = static_cast<double>(c[j] & layout.level_mask);
      const T v = static_cast<T>(__dmul_rn(norm, level / static_cast<double>(levels)));
      o[j] = (c[j] >> (layout.width - 1)) ? byzkern::negated(v) : v;
    }
  }
}

template <class T>
__global__ void natural_decode(const unsigned char* codes, index_t n, index_t d, T* out) {
  using Bits = byzkern::FloatBits<T>;
  using U = typename Bits::U;
  constexpr int E = Bits::exponent_bits, P = Bits::mantissa_bits;
  const index_t groups = (d + 7) / 8, stride = byzkern::row_bytes(d, E + 1);
  // the reference writes numpy.nan: the quiet NaN with a clear sign and payload
  const U quiet_nan = (((U(1) << E) - 1) << P) | (U(1) << (P - 1));
  for (index_t g = byzkern::global_thread(); g < n * groups; g += byzkern::global_stride()) {
    const byzkern::Group group(g, groups, d);
    unsigned c[8];
    byzkern::load_group(codes + group.row * stride + group.first / 8 * (E + 1), group.size, E + 1, c);
    T* o = out + group.row * d + group.first;
    for (int j = 0; j < group.size; ++j) {
      const U u = (static_cast<U>(c[j] >> E) << (E + P)) | (static_cast<U>(c[j] & ((1u << E) - 1u)) << P);
      o[j] = Bits::from_bits(c[j] == (1u << E) ? quiet_nan : u);
    }
  }
}

template <class T>
__global__ void sign_decode(const unsigned char* codes, const T* scales, index_t n, index_t d, T* out) {
  const index_t groups = (d + 7) / 8;
  for (index_t g = byzkern::global_thread(); g < n * groups; g += byzkern::global_stride()) {
    const byzkern::Group group(g, groups, d);
    const unsigned byte = codes[g];
    const T scale = scales[group.row];
    T* o = out + group.row * d + group.first;
    for (int j = 0; j < group.size; ++j) o[j] = (byte >> j) & 1u ? byzkern::negated(scale) : scale;
  }
}

// out (zeroed by the caller)[row, indices[row, j]] = values[row, j]; one thread per kept entry.
template <class T>
__global__ void scatter_values(const T* values, const long long* indices, index_t n, index_t k, index_t d, T* out) {
  for (index_t g = byzkern::global_thread(); g < n * k; g += byzkern::global_stride()) {
    out[g / k * d + indices[g]] = values[g];
  }
}

// ---- validation: set *bad when a row breaks the rule (every writer stores the same 1) ----------

// Indices of every row strictly increasing and below d.
template <class I>
__global__ void indices_check(const I* indices, index_t n, index_t k, unsigned long long d, int* bad) {
  for (index_t g = byzkern::global_thread(); g < n * k; g += byzkern::global_stride()) {
    const index_t j = g % k;
    const bool ok = (j == 0 || indices[g] > indices[g - 1]) &&
                    (j != k - 1 || static_cast<unsigned long long>(indices[g]) < d);
    if (!ok) *bad = 1;
  }
}

// Every level of a QSGD message at most `levels`.
__global__ void qsgd_levels_check(const unsigned char* codes, index_t n, index_t d, index_t levels, int* bad) {
  const QsgdCodes layout(d, levels);
  for (index_t g = byzkern::global_thread(); g < n * layout.groups; g += byzkern::global_stride()) {
    unsigned c[8];
    const byzkern::Group group = layout.load(codes, g, d, c);
    for (int j = 0; j < group.size; ++j) {
      if ((c[j] & layout.level_mask) > static_cast<unsigned>(levels)) *bad = 1;
    }
  }
}

// ---- randk: Floyd's algorithm ------------------------------------------------------------------

// draws[row, s] = t_s, step s's integer in [0, d - k + s] from the uniform of words 2s, 2s + 1
// of (seed, stream, row); one thread per (row, step).
__global__ void randk_draws(index_t n, index_t d, index_t k, unsigned long long seed, unsigned long long stream,
                            long long* draws) {
  for (index_t g = byzkern::global_thread(); g < n * k; g += byzkern::global_stride()) {
    const index_t row = g / k, s = g - row * k;
    const byzkern::PhiloxBlock block = byzkern::philox4x32_10(seed, stream, static_cast<unsigned long long>(row),
                                                              static_cast<unsigned long long>(s / 2));
    const int o = static_cast<int>(s % 2) * 2;
    draws[g] = byzkern::below(byzkern::uniform53(block.w[o], block.w[o + 1]), d - k + s + 1);
  }
}

// Floyd's step s adds t_s, or j_s = d - k + s when t_s is already in: a collision. Sequentially
// that is k dependent steps per row; instead, t_s is already in exactly when it repeats an earlier
// draw, or is some j_r (r = t_s - (d - k) < s) whose step r collided. So collision(s) is the OR of
// `repeat` along the chain s -> link(s) -> ..., which pointer jumping finds in log2(k) rounds, and
// the chosen set is every t_s plus the j_s of the collisions.

// repeat[row, s] = 1 when t_s equals an earlier draw of the row, from `sorted_keys`, the row's
// t_s * k + s in increasing order; link[row, s] = t_s - (d - k) when that is a step before s, else
// -1. One thread per (row, i): sorted position i for the first, step i for the second.
__global__ void floyd_repeats(const long long* draws, const long long* sorted_keys, index_t n, index_t d, index_t k,
                              int* repeat, long long* link) {
  for (index_t g = byzkern::global_thread(); g < n * k; g += byzkern::global_stride()) {
    const index_t row = g / k, i = g - row * k;
    const long long key = sorted_keys[g];
    repeat[row * k + key % k] = i > 0 && sorted_keys[g - 1] / k == key / k;
    const long long r = draws[g] - (d - k);
    link[g] = r >= 0 && r < i ? r : -1;
  }
}

// One pointer-jumping round: collision_out = collision | collision[link], link_out = link[link].
__global__ void floyd_jump(const int* collision, const long long* link, index_t n, index_t k, int* collision_out,
                           long long* link_out) {
  for (index_t g = byzkern::global_thread(); g < n * k; g += byzkern::global_stride()) {
    const index_t base = g / k * k;
    const long long l = link[g];
    collision_out[g] = collision[g] | (l >= 0 ? collision[base + l] : 0);
    link_out[g] = l >= 0 ? link[base + l] : -1;
  }
}

// The chosen set as a bitmap (n, words) of 64-bit words, zeroed by the caller: t_s, and j_s where
// step s collided. Several steps may set one word; OR is order-free, so the bitmap is exact.
__global__ void floyd_bitmap(const long long* draws, const int* collision, index_t n, index_t d, index_t k,
                             index_t words, unsigned long long* bitmap) {
  for (index_t g = byzkern::global_thread(); g < n * k; g += byzkern::global_stride()) {
    const index_t row = g / k, s = g - row * k;
    unsigned long long* chosen = bitmap + row * words;
    const index_t t = draws[g];
    atomicOr(&chosen[t >> 6], 1ull << (t & 63));
    if (collision[g]) {
      const index_t j = d - k + s;
      atomicOr(&chosen[j >> 6], 1ull << (j & 63));
    }
  }
}

__global__ void word_popcounts(const unsigned long long* bitmap, index_t count, long long* out) {
  for (index_t g = byzkern::global_thread(); g < count; g += byzkern::global_stride()) out[g] = __popcll(bitmap[g]);
}

// The chosen entries in increasing index, values scaled by d / k; `offsets` (n, words) holds the
// chosen entries of the row before each word. One thread per (row, word).
template <class T>
__global__ void randk_gather(const T* X, index_t n, index_t d, index_t k, index_t words,
                             const unsigned long long* bitmap, const long long* offsets, T* values, long long* indices) {
  const double scale = static_cast<double>(d) / static_cast<double>(k);
  for (index_t g = byzkern::global_thread(); g < n * words; g += byzkern::global_stride()) {
    const index_t row = g / words, w = g - row * words;
    index_t out = row * k + offsets[g];
    for (unsigned long long left = bitmap[g]; left; left &= left - 1) {
      const index_t i = w * 64 + __ffsll(static_cast<long long>(left)) - 1;
      indices[out] = i;
      values[out++] = static_cast<T>(__dmul_rn(static_cast<double>(X[row * d + i]), scale));
    }
  }
}

// ---- topk: radix select on the magnitude key, then a compaction in index order ------------------
// Each row keeps the k largest keys, ties by lowest index. Radix passes of 8 bits from the top
// find the k-th largest key (threshold) and `need`, how many entries equal to it are kept (the
// first ones by index). Blocks work on (row, chunk of `chunk` entries); counts are integers, so
// atomics give the same result on every run.

// hist[row, digit] += entries of the chunk whose key agrees with prefix[row] above bit shift + 8,
// by their digit at bits [shift, shift + 8). Each thread counts a run of chunk / blockDim.x
// consecutive entries and adds a count to shared memory only when the digit changes: in the top
// passes nearly every entry has the same digit, and one shared counter per entry would serialize.
template <class T>
__global__ void topk_histogram(const T* X, index_t n, index_t d, index_t chunk, index_t shift,
                               const unsigned long long* prefix, unsigned long long* hist) {
  __shared__ unsigned counts[256];
  const index_t chunks = (d + chunk - 1) / chunk, run = chunk / blockDim.x;
  for (index_t job = blockIdx.x; job < n * chunks; job += gridDim.x) {
    const index_t row = job / chunks, c0 = (job - row * chunks) * chunk;
    const index_t begin = byzkern::min_index(d, c0 + threadIdx.x * run), end = byzkern::min_index(d, begin + run);
    for (int b = threadIdx.x; b < 256; b += blockDim.x) counts[b] = 0;
    __syncthreads();
    const unsigned long long p = prefix[row];
    unsigned digit = 0, pending = 0;
    for (index_t i = begin; i < end; ++i) {
      const unsigned long long key = byzkern::FloatBits<T>::key(X[row * d + i]);
      if (!byzkern::key_matches(key, p, shift)) continue;
      const unsigned next = static_cast<unsigned>(key >> shift) & 255u;
      if (pending && next != digit) {
        atomicAdd(&counts[digit], pending);
        pending = 0;
      }
      digit = next;
      ++pending;
    }
    if (pending) atomicAdd(&counts[digit], pending);
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      if (counts[b]) atomicAdd(&hist[row * 256 + b], static_cast<unsigned long long>(counts[b]));
    }
    __syncthreads();  // the next job clears counts
  }
}

// The digit at `shift` of the row's threshold: the highest digit whose count, added to the counts
// of the digits above it, reaches need[row]; need drops by the entries above that digit.
__global__ void topk_select_digit(const unsigned long long* hist, index_t n, index_t shift, unsigned long long* prefix,
                                  long long* need) {
  for (index_t row = byzkern::global_thread(); row < n; row += byzkern::global_stride()) {
    long long above = 0;
    int digit = 255;
    while (above + static_cast<long long>(hist[row * 256 + digit]) < need[row]) {
      above += static_cast<long long>(hist[row * 256 + digit]);
      --digit;
    }
    prefix[row] |= static_cast<unsigned long long>(digit) << shift;
    need[row] -= above;
  }
}

// counts[row, chunk] = (entries above the threshold, entries equal to it) in the chunk.
template <class T>
__global__ void topk_chunk_counts(const T* X, index_t n, index_t d, index_t chunk, const unsigned long long* threshold,
                                  long long* above, long long* equal) {
  __shared__ unsigned long long totals[2];
  const index_t chunks = (d + chunk - 1) / chunk;
  for (index_t job = blockIdx.x; job < n * chunks; job += gridDim.x) {
    const index_t row = job / chunks, c0 = (job - row * chunks) * chunk;
    const index_t end = byzkern::min_index(d, c0 + chunk);
    if (threadIdx.x < 2) totals[threadIdx.x] = 0;
    __syncthreads();
    const unsigned long long t = threshold[row];
    unsigned long long a = 0, e = 0;
    for (index_t i = c0 + threadIdx.x; i < end; i += blockDim.x) {
      const unsigned long long key = byzkern::FloatBits<T>::key(X[row * d + i]);
      a += key > t;
      e += key == t;
    }
    if (a) atomicAdd(&totals[0], a);
    if (e) atomicAdd(&totals[1], e);
    __syncthreads();
    if (threadIdx.x == 0) {
      above[job] = static_cast<long long>(totals[0]);
      equal[job] = static_cast<long long>(totals[1]);
    }
    __syncthreads();  // the next job clears totals
  }
}

// Writes the kept entries of each chunk at their rank in the row: entry i is kept when its key is
// above the threshold or equal to it with fewer than `need` equal keys before it, and lands at
// (keys above before i) + min(equal keys before i, need). above_before / equal_before (n, chunks)
// count the row's entries before each chunk. Each thread takes a run of `chunk / blockDim.x`
// consecutive entries; a block scan gives each run its start.
template <class T>
__global__ void topk_write(const T* X, index_t n, index_t d, index_t k, index_t chunk,
                           const unsigned long long* threshold, const long long* need,
                           const long long* above_before, const long long* equal_before, T* values,
                           long long* indices) {
  __shared__ long long run_above[1024], run_equal[1024];
  const index_t chunks = (d + chunk - 1) / chunk, run = chunk / blockDim.x;
  for (index_t job = blockIdx.x; job < n * chunks; job += gridDim.x) {
    const index_t row = job / chunks, c0 = (job - row * chunks) * chunk;
    const index_t begin = byzkern::min_index(d, c0 + threadIdx.x * run), end = byzkern::min_index(d, begin + run);
    const unsigned long long t = threshold[row];
    const T* x = X + row * d;
    long long a = 0, e = 0;
    for (index_t i = begin; i < end; ++i) {
      const unsigned long long key = byzkern::FloatBits<T>::key(x[i]);
      a += key > t;
      e += key == t;
    }
    run_above[threadIdx.x] = a;
    run_equal[threadIdx.x] = e;
    __syncthreads();
    for (unsigned offset = 1; offset < blockDim.x; offset <<= 1) {  // inclusive scan over the runs
      const long long left_above = threadIdx.x >= offset ? run_above[threadIdx.x - offset] : 0;
      const long long left_equal = threadIdx.x >= offset ? run_equal[threadIdx.x - offset] : 0;
      __syncthreads();
      run_above[threadIdx.x] += left_above;
      run_equal[threadIdx.x] += left_equal;
      __syncthreads();
    }
    a = above_before[job] + run_above[threadIdx.x] - a;
    e = equal_before[job] + run_equal[threadIdx.x] - e;
    const long long row_need = need[row];
    for (index_t i = begin; i < end; ++i) {
      const unsigned long long key = byzkern::FloatBits<T>::key(x[i]);
      if (key > t || (key == t && e < row_need)) {
        const index_t at = row * k + a + (e < row_need ? e : row_need);
        values[at] = x[i];
        indices[at] = i;
      }
      a += key > t;
      e += key == t;
    }
    __syncthreads();  // the next job overwrites the runs
  }
}
