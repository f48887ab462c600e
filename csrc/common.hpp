// Shared helpers for the byzkern C++ kernels: int64 sizes, OpenMP tiling, SIMD variants.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

namespace byzkern {

using index_t = std::int64_t;  // every size and offset: n * d may exceed 2^31

// Columns per OpenMP work item. Passed from Python (byzkern._config) so tests can shrink it
// and cover the multi-tile and tail paths with small inputs.
inline index_t num_tiles(index_t d, index_t tile) { return (d + tile - 1) / tile; }

// Kernels that reduce over columns (distances, norms) split the tiles into a fixed number of
// contiguous slabs, each summed in column order; the slabs are then added in slab order. The
// split depends on d, tile and the slab count only, never on the thread count, so 1 and 2
// threads give the same bits.
struct Slabs {
  index_t tiles, count;
  Slabs(index_t d, index_t tile, index_t max_slabs)
      : tiles(num_tiles(d, tile)), count(std::max<index_t>(1, std::min(tiles, max_slabs))) {}
  index_t first_tile(index_t s) const { return tiles * s / count; }
};

// Adds the n rows of a column tile into acc in row order, four rows per pass over acc: the same
// additions in the same order as one row per pass, with a quarter of the accumulator loads and
// stores (one pass per row made the loop bound by them, not by reading X).
template <class T>
inline void add_rows(const T* base, index_t n, index_t d, index_t w, double* acc) {
  index_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* r0 = base + i * d;
    const T *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
    for (index_t j = 0; j < w; ++j) acc[j] = (((acc[j] + r0[j]) + r1[j]) + r2[j]) + r3[j];
  }
  for (; i < n; ++i) {
    const T* row = base + i * d;
    for (index_t j = 0; j < w; ++j) acc[j] += row[j];
  }
}
// Runs job(b, s, c0, c1) for every (batch item, slab) pair, in parallel; slab s covers the
// columns [c0, c1) and the job walks them in order.
template <class Job>
void for_each_slab(index_t B, index_t d, index_t tile, const Slabs& slabs, Job job) {
#pragma omp parallel for schedule(static)
  for (index_t item = 0; item < B * slabs.count; ++item) {
    const index_t b = item / slabs.count, s = item % slabs.count;
    job(b, s, slabs.first_tile(s) * tile, std::min(d, slabs.first_tile(s + 1) * tile));
  }
}

// ---- SIMD ----------------------------------------------------------------------------------
// Hot loops are written with GCC vector extensions (fixed-width vectors that GCC lowers to
// whatever the target has) and compiled once per instruction-set tier: the x86-64 baseline that
// any wheel may assume (SSE2), AVX2+FMA (Haswell, Zen and later) and, where it pays, AVX-512
// (F, BW, DQ, VL: Skylake-X, Ice Lake, Zen 4 and later). The tier is chosen once per process from
// CPUID (__builtin_cpu_supports); BYZKERN_ISA=baseline|avx2|avx512 caps it, so the tests can run
// every tier on one machine and require the same bits (but for pairwise_sqdist's Gram sums, which
// the baseline cannot fuse). No -march=native anywhere.

template <class T, int Bytes>
struct vec_of {
  typedef T type __attribute__((vector_size(Bytes)));
};
template <class T>
using vec64 = typename vec_of<T, 64>::type;  // 16 floats or 8 doubles
typedef double v4d __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));

// A heap array of n SIMD vectors at 64-byte alignment. std::vector<vec64<T>> does not give it:
// GCC drops a vector type's alignment when the type is a template argument, so the aligned
// loads and stores of the AVX2 code faulted whenever malloc returned a 16-byte aligned block.
template <class V>
class AlignedVectors {
 public:
  explicit AlignedVectors(index_t n)
      : data_(static_cast<V*>(std::aligned_alloc(64, (n * sizeof(V) + 63) / 64 * 64))) {
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~AlignedVectors() { std::free(data_); }
  AlignedVectors(const AlignedVectors&) = delete;
  AlignedVectors& operator=(const AlignedVectors&) = delete;
  V* data() { return data_; }

 private:
  V* data_;
};

template <class V>
inline V load_vec(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));  // an unaligned vector load
  return v;
}
template <class V>
inline void store_vec(void* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Eight consecutive values of T as doubles (exact for float32).
inline v8d load8_as_double(const double* p) { return load_vec<v8d>(p); }
inline v8d load8_as_double(const float* p) {  // element by element: see load4_as_double
  const v8f f = load_vec<v8f>(p);
  return v8d{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
}
inline void store8_rounded(double* p, const v8d& v) { store_vec(p, v); }
inline void store8_rounded(float* p, const v8d& v) { store_vec(p, __builtin_convertvector(v, v8f)); }

inline double sum_lanes(const v4d& v) { return (v[0] + v[1]) + (v[2] + v[3]); }

typedef float v4f __attribute__((vector_size(16)));
inline v4d load4_as_double(const double* p) { return load_vec<v4d>(p); }
// Spelled element by element: GCC 12 lowers __builtin_convertvector of floats to doubles for
// SSE2 before inlining it into a tier (2-wide conversions, moves and inserts, even in the
// AVX-512 variants; GCC PR 85048), while this form becomes one vcvtps2pd in each tier.
inline v4d load4_as_double(const float* p) {
  const v4f f = load_vec<v4f>(p);
  return v4d{f[0], f[1], f[2], f[3]};
}

enum class Isa { baseline, avx2, avx512 };  // in increasing order

inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "baseline";
}

// The best tier this CPU runs, capped by BYZKERN_ISA (byzkern/backends/cpu.py refuses any value
// but a tier's name, so an unknown one never reaches here).
inline Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::baseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      best = Isa::avx2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        best = Isa::avx512;
    }
    const char* forced = std::getenv("BYZKERN_ISA");
    for (Isa cap : {Isa::baseline, Isa::avx2})
      if (forced != nullptr && std::strcmp(forced, isa_name(cap)) == 0) return std::min(best, cap);
    return best;
  }();
  return isa;
}

#define BYZKERN_AVX2 __attribute__((target("avx2,fma")))
#define BYZKERN_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")))

// Defines name<T>(args...) that runs body<T>(args...) compiled for the best tier the CPU has.
// body must be an inline template so each variant gets its own copy; flatten makes GCC inline
// it even where it judges the body too big (it kept pair_block out of line, and the AVX2
// variant then jumped to the baseline code).
// BYZKERN_DISPATCH_CALLS is the general form, for bodies that take an ISA-specific argument:
// each variant makes its own call. It has no AVX-512 variant (an AVX-512 CPU runs the AVX2 one):
// on Zen 4 the distance, Weiszfeld, mean and sign loops ran no faster with one (they wait on
// memory), and each variant costs build time. BYZKERN_DISPATCH3_CALLS adds one, for the loops
// it speeds up (the Philox encoders: 0.73-0.78 of their AVX2 time).
#define BYZKERN_DISPATCH_VARIANTS_(name, baseline_call, avx2_call)                      \
  template <class T, class... A>                                                         \
  __attribute__((flatten)) void name##_baseline(A... a) {                                \
    baseline_call(a...);                                                                 \
  }                                                                                      \
  template <class T, class... A>                                                         \
  BYZKERN_AVX2 __attribute__((flatten)) void name##_avx2(A... a) {                       \
    avx2_call(a...);                                                                     \
  }
#define BYZKERN_DISPATCH_CALLS(name, baseline_call, avx2_call)                          \
  BYZKERN_DISPATCH_VARIANTS_(name, baseline_call, avx2_call)                             \
  template <class T, class... A>                                                         \
  void name(A... a) {                                                                    \
    if (cpu_isa() >= Isa::avx2)                                                          \
      name##_avx2<T>(a...);                                                              \
    else                                                                                 \
      name##_baseline<T>(a...);                                                          \
  }
#define BYZKERN_DISPATCH3_CALLS(name, baseline_call, avx2_call, avx512_call)            \
  BYZKERN_DISPATCH_VARIANTS_(name, baseline_call, avx2_call)                             \
  template <class T, class... A>                                                         \
  BYZKERN_AVX512 __attribute__((flatten)) void name##_avx512(A... a) {                   \
    avx512_call(a...);                                                                   \
  }                                                                                      \
  template <class T, class... A>                                                         \
  void name(A... a) {                                                                    \
    const Isa isa = cpu_isa();                                                           \
    if (isa == Isa::avx512)                                                              \
      name##_avx512<T>(a...);                                                            \
    else if (isa == Isa::avx2)                                                           \
      name##_avx2<T>(a...);                                                              \
    else                                                                                 \
      name##_baseline<T>(a...);                                                          \
  }
#define BYZKERN_DISPATCH(name, body) BYZKERN_DISPATCH_CALLS(name, body<T>, body<T>)
#define BYZKERN_DISPATCH3(name, body) BYZKERN_DISPATCH3_CALLS(name, body<T>, body<T>, body<T>)

}  // namespace byzkern
