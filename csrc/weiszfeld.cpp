// Iterative rules: geometric median by smoothed Weiszfeld, and centered clipping.
//
// Both are a center c and per-row distances ||x_i - c||. One pass over X per step is fused:
// for a strip of 8 columns it forms the new center from the coefficients of the previous step
// (all rows of the strip are read), then, while the strip is still in L1, adds the strip's part
// of every ||x_i - c_new||^2. Distances are direct differences in double
// (not Gram-based): Weiszfeld steps that approach a data point need ||z - x_i|| accurate to
// below nu, which a Gram matrix centered elsewhere cannot give. Per-slab partial distances are
// added in slab order, so 1 and 2 threads give the same bits.
#include "weiszfeld.hpp"

#include <cmath>

namespace byzkern {

enum class Center {
  given,          // c is already in the center buffer
  weighted_mean,  // c = sum_i a_i x_i / sum_i a_i (Weiszfeld, RFA)
  clip_step,      // c = c + (1/n) sum_i a_i (x_i - c) (centered clipping)
};

struct PassItem {      // one batch item of a pass
  const double* coef;  // a_i; rows with a_i == 0 never enter a sum (their NaN/Inf stay out)
  double coef_sum;     // sum_i a_i for weighted_mean, n for clip_step
  double* center;      // (d,) in/out
  double* sqdist;      // (slabs, n) partial ||x_i - c||^2, or null when not needed
  double* nonfinite;   // (slabs, n) partial sums of x * 0 (NaN for a non-finite row), or null
};

// Asks for the bytes of the same row a few strips ahead: the rows are n streams read 32 bytes
// at a time each, more streams than the hardware prefetcher follows.
inline void prefetch_ahead(const void* x) { __builtin_prefetch(static_cast<const char*>(x) + 512); }

// One slab of columns, strip by strip (8 columns, two vectors): the strip's new centre from
// all rows (a sum kept in registers, in row order as the reference adds), then, while the strip
// is still in L1, every row's part of ||x_i - c||^2 and of its finiteness check, added into
// four lanes per row (sq, check: n x 4 doubles, summed at the end of the slab).
template <class T>
inline void center_slab(const T* Xb, index_t n, index_t d, index_t c0, index_t w, Center kind,
                         PassItem item, double* sq, double* check) {
  double* c = item.center + c0;
  const v4d total = {item.coef_sum, item.coef_sum, item.coef_sum, item.coef_sum}, zero = {0, 0, 0, 0};
  index_t k = 0;
  for (; k + 8 <= w; k += 8) {
    v4d c_lo = load_vec<v4d>(c + k), c_hi = load_vec<v4d>(c + k + 4);
    if (kind != Center::given) {
      v4d s_lo = zero, s_hi = zero;
      for (index_t i = 0; i < n; ++i) {
        const T* x = Xb + i * d + c0 + k;
        prefetch_ahead(x);
        const double a = item.coef[i];
        if (a == 0.0) continue;
        const v4d av = {a, a, a, a};
        if (kind == Center::weighted_mean) {
          s_lo += av * load4_as_double(x);
          s_hi += av * load4_as_double(x + 4);
        } else {
          s_lo += av * (load4_as_double(x) - c_lo);
          s_hi += av * (load4_as_double(x + 4) - c_hi);
        }
      }
      c_lo = kind == Center::weighted_mean ? s_lo / total : c_lo + s_lo / total;
      c_hi = kind == Center::weighted_mean ? s_hi / total : c_hi + s_hi / total;
      store_vec(c + k, c_lo);
      store_vec(c + k + 4, c_hi);
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
    if (kind != Center::given) {
      double s = 0.0;
      for (index_t i = 0; i < n; ++i) {
        const double a = item.coef[i], x = static_cast<double>(Xb[i * d + c0 + k]);
        if (a != 0.0) s += kind == Center::weighted_mean ? a * x : a * (x - c[k]);
      }
      c[k] = kind == Center::weighted_mean ? s / item.coef_sum : c[k] + s / item.coef_sum;
    }
    for (index_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(Xb[i * d + c0 + k]);
      if (sq != nullptr) sq[4 * i] += (x - c[k]) * (x - c[k]);
      if (check != nullptr) check[4 * i] += x * 0.0;
    }
  }
}
BYZKERN_DISPATCH(center_slab_dispatched, center_slab)

// One pass over X for the items with items[b].center != null.
template <class T>
void center_pass(const T* X, index_t B, index_t n, index_t d, index_t tile, const Slabs& slabs, Center kind,
                 const std::vector<PassItem>& items) {
  for_each_slab(B, d, tile, slabs, [&](index_t b, index_t s, index_t c0, index_t c1) {
    const PassItem& item = items[b];
    if (item.center == nullptr) return;
    std::vector<double> sq(item.sqdist ? 4 * n : 0, 0.0), check(item.nonfinite ? 4 * n : 0, 0.0);
    center_slab_dispatched<T>(X + b * n * d, n, d, c0, c1 - c0, kind, item, item.sqdist ? sq.data() : nullptr,
                              item.nonfinite ? check.data() : nullptr);
    for (index_t i = 0; i < n; ++i) {
      if (item.sqdist) item.sqdist[s * n + i] = sum_lanes(load_vec<v4d>(sq.data() + 4 * i));
      if (item.nonfinite) item.nonfinite[s * n + i] = sum_lanes(load_vec<v4d>(check.data() + 4 * i));
    }
  });
}

// Per-item buffers and the slab reductions shared by geomed and cclip.
template <class T>
struct CenterState {
  index_t B, n, d, tile;
  Slabs slabs;
  std::vector<double> center, coef, coef_sum, sqdist, nonfinite, dist;
  std::vector<char> bad;  // rows with a NaN or Inf entry

  CenterState(index_t B_, index_t n_, index_t d_, index_t tile_, index_t max_slabs)
      : B(B_), n(n_), d(d_), tile(tile_), slabs(d_, tile_, max_slabs), center(B_ * d_), coef(B_ * n_),
        coef_sum(B_), sqdist(B_ * slabs.count * n_), nonfinite(B_ * slabs.count * n_), dist(B_ * n_),
        bad(B_ * n_, 0) {}

  // Runs a pass on the items marked in `active`; distances always, finiteness when asked.
  void pass(const T* X, Center kind, const std::vector<char>& active, bool distances, bool check_finite) {
    std::vector<PassItem> items(B);
    for (index_t b = 0; b < B; ++b)
      if (active[b])
        items[b] = {coef.data() + b * n, coef_sum[b], center.data() + b * d,
                    distances ? sqdist.data() + b * slabs.count * n : nullptr,
                    check_finite ? nonfinite.data() + b * slabs.count * n : nullptr};
    center_pass(X, B, n, d, tile, slabs, kind, items);
    for (index_t b = 0; b < B; ++b) {
      if (!active[b]) continue;
      for (index_t i = 0; i < n; ++i) {
        double sq = 0.0, check = 0.0;
        for (index_t s = 0; s < slabs.count; ++s) {
          sq += sqdist[(b * slabs.count + s) * n + i];
          check += nonfinite[(b * slabs.count + s) * n + i];
        }
        if (distances) dist[b * n + i] = std::sqrt(sq);
        if (check_finite) bad[b * n + i] = check != 0.0;  // NaN != 0
      }
    }
  }

  template <class U>
  void write_center(U* out) const {
    for (index_t r = 0; r < B * d; ++r) out[r] = static_cast<U>(center[r]);
  }
};

template <class T>
void geomed(const T* X, index_t B, index_t n, index_t d, const double* weights, GeomedInit init_kind,
            const T* init, index_t maxiter, double eps, double nu, index_t tile, index_t slabs, T* z,
            std::int64_t* iterations, double* objective) {
  CenterState<T> st(B, n, d, tile, slabs);
  std::vector<double> w(weights, weights + B * n);
  std::vector<char> active(B, 1);
  auto set_weighted_mean = [&](index_t b) {
    double sum = 0.0;
    for (index_t i = 0; i < n; ++i) sum += st.coef[b * n + i] = w[b * n + i];
    st.coef_sum[b] = sum;
  };
  if (init_kind == GeomedInit::mean) {
    for (index_t b = 0; b < B; ++b) set_weighted_mean(b);
    st.pass(X, Center::weighted_mean, active, true, true);
    // Rows found non-finite get weight zero; the items that had given them weight start over.
    std::vector<char> redo(B, 0);
    bool any = false;
    for (index_t r = 0; r < B * n; ++r)
      if (st.bad[r] && w[r] > 0) {
        w[r] = 0.0;
        redo[r / n] = any = true;
      }
    if (any) {
      for (index_t b = 0; b < B; ++b)
        if (redo[b]) set_weighted_mean(b);
      st.pass(X, Center::weighted_mean, redo, true, false);
    }
  } else {
    for (index_t r = 0; r < B * d; ++r) st.center[r] = init_kind == GeomedInit::zero ? 0.0 : double(init[r]);
    st.pass(X, Center::given, active, true, true);
    for (index_t r = 0; r < B * n; ++r)
      if (st.bad[r]) w[r] = 0.0;
  }
  auto objective_of = [&](index_t b) {
    double obj = 0.0;
    for (index_t i = 0; i < n; ++i)
      if (w[b * n + i] > 0) obj += w[b * n + i] * st.dist[b * n + i];
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
      double sum = 0.0;
      for (index_t i = 0; i < n; ++i) {
        const double wi = w[b * n + i];
        st.coef[b * n + i] = wi > 0 ? wi / std::max(nu, st.dist[b * n + i]) : 0.0;
        sum += st.coef[b * n + i];
      }
      st.coef_sum[b] = sum;
    }
    if (!any) break;
    st.pass(X, Center::weighted_mean, active, true, false);
    for (index_t b = 0; b < B; ++b) {
      if (!active[b]) continue;
      const double previous = objective[b];
      objective[b] = objective_of(b);
      iterations[b] = t;
      if (std::fabs(previous - objective[b]) < eps * objective[b]) active[b] = 0;  // RFA's stopping rule
    }
  }
  st.write_center(z);
}

template <class T>
void cclip(const T* X, index_t B, index_t n, index_t d, double tau, index_t iters, const T* v0, index_t tile,
           index_t slabs, T* out) {
  if (iters == 0) {
    std::copy(v0, v0 + B * d, out);
    return;
  }
  CenterState<T> st(B, n, d, tile, slabs);
  const std::vector<char> all(B, 1);
  for (index_t r = 0; r < B * d; ++r) st.center[r] = static_cast<double>(v0[r]);
  st.pass(X, Center::given, all, true, true);
  for (index_t t = 1; t <= iters; ++t) {
    for (index_t r = 0; r < B * n; ++r) {
      const double norm = st.dist[r];
      st.coef[r] = st.bad[r] ? 0.0 : std::min(1.0, tau / (norm > 0 ? norm : 1.0));
    }
    std::fill(st.coef_sum.begin(), st.coef_sum.end(), static_cast<double>(n));  // bad rows add 0 but count
    st.pass(X, Center::clip_step, all, t < iters, false);
  }
  st.write_center(out);
}

#define BYZKERN_INSTANTIATE(T)                                                                                 \
  template void geomed<T>(const T*, index_t, index_t, index_t, const double*, GeomedInit, const T*, index_t,    \
                          double, double, index_t, index_t, T*, std::int64_t*, double*);                       \
  template void cclip<T>(const T*, index_t, index_t, index_t, double, index_t, const T*, index_t, index_t, T*);
BYZKERN_INSTANTIATE(float)
BYZKERN_INSTANTIATE(double)

}  // namespace byzkern
