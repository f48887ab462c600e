// Passes over X for the iterative rules: a center and the per-row distances ||x_i - c||.
//
// Geometric median: byzkern/backends/_weiszfeld.py takes the Weiszfeld steps on coefficients
// (distances from pairwise_sqdist) and asks here for the passes it still needs: the distances
// from a given start (init "zero" or an array), the weighted mean of the rows (the result),
// and that mean with its direct distances where the coefficient formula would cancel, or at
// every step where the rows are too many for pairwise_sqdist to pay off. Small inputs run the
// whole loop here instead (geomed), every step a pass, without a Python call per step.
// Centered clipping has its own passes, at the end of this file.
//
// One pass fuses a center and the distances to it: for a strip of 8 columns it forms the new
// center from the coefficients (all rows of the strip are read), then, while the strip is still
// in L1, adds the strip's part of every ||x_i - c||^2. Distances are direct differences in
// double (not Gram-based): they are the fallback for steps that come close to a data point.
// Per-slab partial distances are added in slab order, so 1 and 2 threads give the same bits.
#include "weiszfeld.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "coordinatewise.hpp"

namespace byzkern {

enum class Center {
  given,          // c is already in the center buffer
  weighted_mean,  // c = sum_i a_i x_i / sum_i a_i (Weiszfeld, RFA)
};

template <class T>
struct PassItem {      // one batch item of a pass; an item with neither center nor rounded is skipped
  const double* coef = nullptr;  // a_i; rows with a_i == 0 never enter a sum (their NaN/Inf stay out)
  double coef_sum = 0.0;         // sum_i a_i for weighted_mean
  double* center = nullptr;      // (d,) read by given
  T* rounded = nullptr;          // (d,) weighted_mean's center, rounded to T; distances use it unrounded
  double* sqdist = nullptr;      // (slabs, n) partial ||x_i - c||^2, or null when not needed
  double* nonfinite = nullptr;   // (slabs, n) partial sums of x * 0 (NaN for a non-finite row), or null
};

inline void store4_rounded(double* p, const v4d& v) { store_vec(p, v); }
inline void store4_rounded(float* p, const v4d& v) { store_vec(p, __builtin_convertvector(v, v4f)); }

// Asks for the bytes of the same row a few strips ahead: the rows are n streams read 32 bytes
// at a time each, more streams than the hardware prefetcher follows.
inline void prefetch_ahead(const void* x) { __builtin_prefetch(static_cast<const char*>(x) + 512); }

// One slab of columns, strip by strip (8 columns, two vectors): the strip's new centre from
// all rows (a sum kept in registers, in row order as the reference adds), then, while the strip
// is still in L1, every row's part of ||x_i - c||^2 and of its finiteness check, added into
// four lanes per row (sq, check: n x 4 doubles, summed at the end of the slab).
template <class T>
inline void center_slab(const T* Xb, index_t n, index_t d, index_t c0, index_t w, Center kind,
                        PassItem<T> item, double* sq, double* check) {
  double* c = item.center == nullptr ? nullptr : item.center + c0;
  T* rounded = item.rounded == nullptr ? nullptr : item.rounded + c0;
  const v4d total = {item.coef_sum, item.coef_sum, item.coef_sum, item.coef_sum}, zero = {0, 0, 0, 0};
  index_t k = 0;
  for (; k + 8 <= w; k += 8) {
    v4d c_lo = zero, c_hi = zero;
    if (kind != Center::weighted_mean) {
      c_lo = load_vec<v4d>(c + k);
      c_hi = load_vec<v4d>(c + k + 4);
    }
    if (kind != Center::given) {
      v4d s_lo = zero, s_hi = zero;
      for (index_t i = 0; i < n; ++i) {
        const T* x = Xb + i * d + c0 + k;
        prefetch_ahead(x);
        const double a = item.coef[i];
        if (a == 0.0) continue;
        const v4d av = {a, a, a, a};
        s_lo += av * load4_as_double(x);
        s_hi += av * load4_as_double(x + 4);
      }
      c_lo = s_lo / total;
      c_hi = s_hi / total;
      store4_rounded(rounded + k, c_lo);
      store4_rounded(rounded + k + 4, c_hi);
    }
    if (sq != nullptr || check != nullptr)
      for (index_t i = 0; i < n; ++i) {
        const T* x = Xb + i * d + c0 + k;
        if (kind == Center::given) prefetch_ahead(x);
        const v4d x_lo = load4_as_double(x), x_hi = load4_as_double(x + 4);
        if (sq != nullptr) {
          const v4d t_lo = x_lo - c_lo, t_hi = x_hi - c_hi;
          store_vec(sq + 4 * i, load_vec<v4d>(sq + 4 * i) + t_lo * t_lo + t_hi * t_hi);
        }
        if (check != nullptr) store_vec(check + 4 * i, load_vec<v4d>(check + 4 * i) + x_lo * 0.0 + x_hi * 0.0);
      }
  }
  for (; k < w; ++k) {  // the last columns, fewer than a strip
    double ck = kind == Center::weighted_mean ? 0.0 : c[k];
    if (kind != Center::given) {
      double s = 0.0;
      for (index_t i = 0; i < n; ++i) {
        const double a = item.coef[i], x = static_cast<double>(Xb[i * d + c0 + k]);
        if (a != 0.0) s += a * x;
      }
      ck = s / item.coef_sum;
      rounded[k] = static_cast<T>(ck);
    }
    for (index_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(Xb[i * d + c0 + k]);
      if (sq != nullptr) sq[4 * i] += (x - ck) * (x - ck);
      if (check != nullptr) check[4 * i] += x * 0.0;
    }
  }
}
BYZKERN_DISPATCH(center_slab_dispatched, center_slab)

// One pass over X for the items that have a center or a rounded center, then the slab sums
// reduced in slab order: dist[b * n + i] = ||x_i - c|| (when dist is given) and
// finite[b * n + i] (when finite is given) for those items.
template <class T>
void center_pass(const T* X, index_t B, index_t n, index_t d, index_t tile, index_t max_slabs, Center kind,
                 std::vector<PassItem<T>> items, double* dist, bool* finite) {
  const Slabs slabs(d, tile, max_slabs);
  auto active = [&](index_t b) { return items[b].center != nullptr || items[b].rounded != nullptr; };
  std::vector<double> sqdist(dist ? B * slabs.count * n : 0), nonfinite(finite ? B * slabs.count * n : 0);
  for (index_t b = 0; b < B; ++b) {
    items[b].sqdist = dist ? sqdist.data() + b * slabs.count * n : nullptr;
    items[b].nonfinite = finite ? nonfinite.data() + b * slabs.count * n : nullptr;
  }
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    const PassItem<T>& item = items[b];
    if (!active(b)) return;
    std::vector<double> sq(item.sqdist ? 4 * n : 0, 0.0), check(item.nonfinite ? 4 * n : 0, 0.0);
    center_slab_dispatched<T>(X + b * n * d, n, d, c0, c1 - c0, kind, item, item.sqdist ? sq.data() : nullptr,
                              item.nonfinite ? check.data() : nullptr);
    for (index_t i = 0; i < n; ++i) {
      if (item.sqdist) item.sqdist[s * n + i] = sum_lanes(load_vec<v4d>(sq.data() + 4 * i));
      if (item.nonfinite) item.nonfinite[s * n + i] = sum_lanes(load_vec<v4d>(check.data() + 4 * i));
    }
  });
  for (index_t b = 0; b < B; ++b) {
    if (!active(b)) continue;
    for (index_t i = 0; i < n; ++i) {
      double sq = 0.0, check = 0.0;
      for (index_t s = 0; s < slabs.count; ++s) {
        if (dist) sq += sqdist[(b * slabs.count + s) * n + i];
        if (finite) check += nonfinite[(b * slabs.count + s) * n + i];
      }
      if (dist) dist[b * n + i] = std::sqrt(sq);
      if (finite) finite[b * n + i] = check == 0.0;  // NaN != 0
    }
  }
}

template <class T>
void center_distances(const T* X, index_t B, index_t n, index_t d, const double* center, index_t tile,
                      index_t slabs, double* dist, bool* finite) {
  std::vector<PassItem<T>> items(B);
  for (index_t b = 0; b < B; ++b) items[b].center = const_cast<double*>(center + b * d);  // given: only read
  center_pass(X, B, n, d, tile, slabs, Center::given, items, dist, finite);
}

template <class T>
void weighted_center(const T* X, index_t B, index_t n, index_t d, const double* coef, const bool* which,
                     index_t tile, index_t slabs, T* z, double* dist) {
  std::vector<PassItem<T>> items(B);
  for (index_t b = 0; b < B; ++b) {
    if (!which[b]) continue;
    double sum = 0.0;
    for (index_t i = 0; i < n; ++i) sum += coef[b * n + i];
    items[b].coef = coef + b * n;
    items[b].coef_sum = sum;
    items[b].rounded = z + b * d;
  }
  center_pass(X, B, n, d, tile, slabs, Center::weighted_mean, items, dist, nullptr);
}

template <class T>
void geomed(const T* X, index_t B, index_t n, index_t d, const double* weights, GeomedInit init_kind,
            const T* init, index_t maxiter, double eps, double nu, index_t tile, index_t slabs, T* z,
            std::int64_t* iterations, double* objective) {
  std::vector<double> w(weights, weights + B * n), coef(B * n), dist(B * n), start;
  std::unique_ptr<bool[]> finite(new bool[B * n]);
  // One pass for the items marked in `on`: the weighted mean of coef (rounded into z) or the
  // distances from `start`, and the rows' finiteness when asked.
  auto pass = [&](Center kind, const std::vector<char>& on, bool check_finite) {
    std::vector<PassItem<T>> items(B);
    for (index_t b = 0; b < B; ++b) {
      if (!on[b]) continue;
      if (kind == Center::given) {
        items[b].center = start.data() + b * d;  // given: only read
        continue;
      }
      double sum = 0.0;
      for (index_t i = 0; i < n; ++i) sum += coef[b * n + i];
      items[b].coef = coef.data() + b * n;
      items[b].coef_sum = sum;
      items[b].rounded = z + b * d;
    }
    center_pass(X, B, n, d, tile, slabs, kind, items, dist.data(), check_finite ? finite.get() : nullptr);
  };
  std::vector<char> active(B, 1);
  if (init_kind == GeomedInit::mean) {
    coef = w;
    pass(Center::weighted_mean, active, true);
    // Rows found non-finite get weight zero; the items that had given them weight start over.
    std::vector<char> redo(B, 0);
    bool any = false;
    for (index_t r = 0; r < B * n; ++r)
      if (!finite[r] && w[r] > 0) {
        w[r] = 0.0;
        redo[r / n] = any = true;
      }
    if (any) {
      coef = w;
      pass(Center::weighted_mean, redo, false);
    }
  } else {
    start.resize(B * d);
    for (index_t r = 0; r < B * d; ++r) start[r] = init_kind == GeomedInit::zero ? 0.0 : double(init[r]);
    pass(Center::given, active, true);
    for (index_t r = 0; r < B * n; ++r)
      if (!finite[r]) w[r] = 0.0;
    for (index_t r = 0; r < B * d; ++r) z[r] = static_cast<T>(start[r]);  // the result if maxiter == 0
  }
  auto objective_of = [&](index_t b) {
    double obj = 0.0;
    for (index_t i = 0; i < n; ++i)
      if (w[b * n + i] > 0) obj += w[b * n + i] * dist[b * n + i];
    return obj;
  };
  for (index_t b = 0; b < B; ++b) {
    objective[b] = objective_of(b);
    iterations[b] = 0;
    active[b] = maxiter > 0;
  }
  for (index_t t = 1; t <= maxiter; ++t) {
    bool any = false;
    for (index_t b = 0; b < B; ++b) {
      if (!active[b]) continue;
      any = true;
      for (index_t i = 0; i < n; ++i) {
        // max(nu, dist) keeping a NaN distance (from a NaN start), as NumPy's maximum does in the
        // reference: std::max gives nu there, and the step would go to the weighted mean
        const double wi = w[b * n + i], di = dist[b * n + i];
        coef[b * n + i] = wi > 0 ? wi / (di > nu || std::isnan(di) ? di : nu) : 0.0;
      }
    }
    if (!any) break;
    pass(Center::weighted_mean, active, false);
    for (index_t b = 0; b < B; ++b) {
      if (!active[b]) continue;
      const double previous = objective[b];
      objective[b] = objective_of(b);
      iterations[b] = t;
      if (std::fabs(previous - objective[b]) < eps * objective[b]) active[b] = 0;  // RFA's stopping rule
    }
  }
}

// ---- centered clipping -----------------------------------------------------------------------
// X is read 1 + iters times. The first pass takes the start column range by column range (the
// coordinate-wise median of the range, or init) and, while the range is still in L2, its part of
// every ||x_i - v||^2: the median and the distances cost one read of X, not two. Each step's
// pass then forms the new centre strip by strip from all rows (in row order, as the reference
// adds) and, but for the last step, the distances to it. The centre is held in out (as T) at
// the start and after the last step and in double between steps, so iters = 1 writes only out.

// Columns per range of the first pass: n rows of them in about 256 KiB (a quarter of L2), a
// multiple of the median's blocks (at most 64 columns).
template <class T>
inline index_t start_range_columns(index_t n) {
  return std::max<index_t>(64, (256 << 10) / (n * static_cast<index_t>(sizeof(T))) / 64 * 64);
}

// Adds columns [c0, c0 + w) of every ||x_i - v||^2 to the four lanes of row i in sq; v holds
// the start over those columns in double (converted once per range, not once per row). Row by
// row: each row's range is one contiguous read from L2, so the loop is bound by its arithmetic:
// four chains of sums (two 8-lane vectors: AVX-512 registers in that tier), and no finiteness
// check here: a non-finite entry makes the row's sum non-finite, and only such rows are checked
// afterwards. (The check and the per-row conversions made this loop 20% of cclip's time at
// (20, 1e6), 1 thread; it is 8% now, the median 17%.)
template <class T>
inline void start_distances(const T* Xb, index_t n, index_t d, index_t c0, index_t w, const double* v, double* sq) {
  for (index_t i = 0; i < n; ++i) {
    const T* x = Xb + i * d + c0;
    v8d s_lo = {}, s_hi = {};
    index_t k = 0;
    for (; k + 16 <= w; k += 16) {
      const v8d t_lo = load8_as_double(x + k) - load_vec<v8d>(v + k);
      const v8d t_hi = load8_as_double(x + k + 8) - load_vec<v8d>(v + k + 8);
      s_lo += t_lo * t_lo;
      s_hi += t_hi * t_hi;
    }
    const v8d s8 = s_lo + s_hi;
    v4d s = {s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]};
    for (; k < w; ++k) {  // the last columns, fewer than a pass
      const double t = static_cast<double>(x[k]) - v[k];
      s[0] += t * t;
    }
    store_vec(sq + 4 * i, load_vec<v4d>(sq + 4 * i) + s);
  }
}
BYZKERN_DISPATCH3(start_distances_dispatched, start_distances)

// One step over columns [c0, c0 + w): v' = v + (1/n) sum_i a_i (x_i - v) over the finite rows
// (a row with a non-finite entry adds 0, as in the reference; a finite row with a_i = 0 still
// adds its 0 * (x_i - v), which is NaN where that difference is infinite), v read from `from` and
// v' written to `to` (each T or double; the same buffer when both are out); with sq non-null,
// every row's part of ||x_i - v'||^2 added into its four lanes.
template <class T, class From, class To>
inline void clip_step(const T* Xb, index_t n, index_t d, index_t c0, index_t w, const double* coef,
                      const bool* finite, const From* from, To* to, double* sq) {
  const double count = static_cast<double>(n);
  const v4d zero = {0, 0, 0, 0};
  index_t k = c0;
  for (; k + 8 <= c0 + w; k += 8) {
    const v4d c_lo = load4_as_double(from + k), c_hi = load4_as_double(from + k + 4);
    v4d s_lo = zero, s_hi = zero;
    for (index_t i = 0; i < n; ++i) {
      const T* x = Xb + i * d + k;
      prefetch_ahead(x);
      if (!finite[i]) continue;
      const double a = coef[i];
      const v4d av = {a, a, a, a};
      s_lo += av * (load4_as_double(x) - c_lo);
      s_hi += av * (load4_as_double(x + 4) - c_hi);
    }
    const v4d v_lo = c_lo + s_lo / count, v_hi = c_hi + s_hi / count;
    store4_rounded(to + k, v_lo);
    store4_rounded(to + k + 4, v_hi);
    if (sq != nullptr)
      for (index_t i = 0; i < n; ++i) {
        const T* x = Xb + i * d + k;
        const v4d t_lo = load4_as_double(x) - v_lo, t_hi = load4_as_double(x + 4) - v_hi;
        store_vec(sq + 4 * i, load_vec<v4d>(sq + 4 * i) + t_lo * t_lo + t_hi * t_hi);
      }
  }
  for (; k < c0 + w; ++k) {  // the last columns, fewer than a strip
    const double ck = static_cast<double>(from[k]);
    double s = 0.0;
    for (index_t i = 0; i < n; ++i)
      if (finite[i]) s += coef[i] * (static_cast<double>(Xb[i * d + k]) - ck);
    const double v = ck + s / count;
    to[k] = static_cast<To>(v);
    if (sq != nullptr)
      for (index_t i = 0; i < n; ++i) {
        const double t = static_cast<double>(Xb[i * d + k]) - v;
        sq[4 * i] += t * t;
      }
  }
}
BYZKERN_DISPATCH(clip_step_dispatched, clip_step)

// Runs slab(b, c0, c1, median, sq, v) for every (batch item, slab) pair in parallel, with sq (n x 4
// lanes, zeroed), where a median is asked for the thread's ColumnMedians and its own v (range
// doubles); then sqdist[(b * slabs + s) * n + i] is row i's lane sum, where sqdist is not null.
// Each thread takes a contiguous share of the pairs, from its first forward or from its last
// back (backward): passes alternate, so each starts on the columns the one before read last,
// which are still in L3 (with 32 MiB of L3, about a third of the 80 MB of a (20, 1e6) float32 X).
template <class T, class Slab>
void for_each_cclip_slab(index_t B, index_t n, index_t d, index_t tile, const Slabs& slabs, bool median,
                         bool backward, index_t range, double* sqdist, Slab slab) {
  const index_t items = B * slabs.count;
#pragma omp parallel
  {
    std::unique_ptr<ColumnMedians<T>> medians(median ? new ColumnMedians<T>(n) : nullptr);
    std::vector<double> sq(4 * n), v(range);
    const index_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const index_t first = items * t / threads, last = items * (t + 1) / threads;
    for (index_t j = first; j < last; ++j) {
      const index_t item = backward ? first + last - 1 - j : j;
      const index_t b = item / slabs.count, s = item % slabs.count;
      std::fill(sq.begin(), sq.end(), 0.0);
      slab(b, slabs.first_tile(s) * tile, std::min(d, slabs.first_tile(s + 1) * tile), medians.get(), sq.data(),
           v.data());
      if (sqdist != nullptr)
        for (index_t i = 0; i < n; ++i) sqdist[item * n + i] = sum_lanes(load_vec<v4d>(sq.data() + 4 * i));
    }
  }
}

template <class T>
void cclip(const T* X, index_t B, index_t n, index_t d, double tau, index_t iters, const T* v0, index_t tile,
           index_t max_slabs, T* out, bool* overflowed) {
  std::fill(overflowed, overflowed + B, false);
  if (v0 != nullptr && iters == 0) {
    std::copy(v0, v0 + B * d, out);
    return;
  }
  const Slabs slabs(d, tile, max_slabs);
  const T* start = v0 != nullptr ? v0 : out;
  const index_t range = start_range_columns<T>(n);
  std::vector<double> sqdist(iters > 0 ? B * slabs.count * n : 0);
  for_each_cclip_slab<T>(
      B, n, d, tile, slabs, v0 == nullptr, false, range, iters > 0 ? sqdist.data() : nullptr,
      [&](index_t b, index_t c0, index_t c1, ColumnMedians<T>* median, double* sq, double* v) {
        const T* Xb = X + b * n * d;
        for (index_t c = c0; c < c1; c += range) {
          const index_t w = std::min(range, c1 - c);
          const T* start_range = start + b * d + c;
          if (median != nullptr) (*median)(Xb + c, d, w, out + b * d + c);
          if (iters == 0) continue;
          for (index_t k = 0; k < w; ++k) v[k] = static_cast<double>(start_range[k]);
          start_distances_dispatched<T>(Xb, n, d, c, w, v, sq);
        }
      });
  if (iters == 0) return;
  // ||x_i - v||: the slab sums in slab order.
  std::vector<double> dist(B * n);
  auto reduce = [&] {
    for (index_t r = 0; r < B * n; ++r) {
      const index_t b = r / n, i = r % n;
      double sq = 0.0;
      for (index_t s = 0; s < slabs.count; ++s) sq += sqdist[(b * slabs.count + s) * n + i];
      dist[r] = std::sqrt(sq);
    }
  };
  reduce();
  // A row is finite where its distance is; one whose distance is not (a non-finite entry, an
  // infinite start, an overflow) is checked entry by entry.
  std::unique_ptr<bool[]> finite(new bool[B * n]);
  for (index_t r = 0; r < B * n; ++r) {
    const T* x = X + r * d;
    finite[r] = std::isfinite(dist[r]) || std::all_of(x, x + d, [](T value) { return std::isfinite(value); });
  }
  std::vector<double> center(iters > 1 ? B * d : 0), coef(B * n);
  for (index_t t = 1; t <= iters; ++t) {
    for (index_t r = 0; r < B * n; ++r) {
      const double norm = dist[r];
      coef[r] = finite[r] ? std::min(1.0, tau / (norm > 0 ? norm : 1.0)) : 0.0;  // bad rows add 0 but count
      // +Inf only: a NaN distance (a start with a NaN) is no overflow, and scaling does not mend it
      if (finite[r] && std::isinf(norm)) overflowed[r / n] = true;
    }
    const bool distances = t < iters;
    auto step = [&](const auto* from, auto* to) {
      for_each_cclip_slab<T>(B, n, d, tile, slabs, false, t % 2 == 1, 0, distances ? sqdist.data() : nullptr,
                             [&](index_t b, index_t c0, index_t c1, ColumnMedians<T>*, double* sq, double*) {
                               clip_step_dispatched<T>(X + b * n * d, n, d, c0, c1 - c0, coef.data() + b * n,
                                                       finite.get() + b * n, from + b * d, to + b * d,
                                                       distances ? sq : nullptr);
                             });
    };
    const double* between = center.data();
    if (t == 1 && iters == 1)
      step(start, out);
    else if (t == 1)
      step(start, center.data());
    else if (t < iters)
      step(between, center.data());
    else
      step(between, out);
    if (distances) reduce();
  }
}

#define BYZKERN_INSTANTIATE(T)                                                                                  \
  template void center_distances<T>(const T*, index_t, index_t, index_t, const double*, index_t, index_t,       \
                                    double*, bool*);                                                           \
  template void weighted_center<T>(const T*, index_t, index_t, index_t, const double*, const bool*, index_t,    \
                                   index_t, T*, double*);                                                      \
  template void geomed<T>(const T*, index_t, index_t, index_t, const double*, GeomedInit, const T*, index_t,      \
                          double, double, index_t, index_t, T*, std::int64_t*, double*);                       \
  template void cclip<T>(const T*, index_t, index_t, index_t, double, index_t, const T*, index_t, index_t, T*,  \
                         bool*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
