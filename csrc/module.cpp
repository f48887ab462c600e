// Python bindings of byzkern._cpu: shapes and pointers are taken with the GIL held, then the
// kernel runs in a scope that releases it and touches no Python object (pybind11 #4748).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <string>

#include "coordinatewise.hpp"
#include "compress.hpp"
#include "distances.hpp"
#include "weiszfeld.hpp"

namespace py = pybind11;
using byzkern::index_t;

template <class T>
using carray = py::array_t<T, py::array::c_style>;

namespace {

// (B, n, d) of a kernel input; anything else is a caller bug (the Python layer canonicalizes).
struct Shape {
  index_t B, n, d;
};
template <class T>
Shape shape_of(const carray<T>& X, const char* op) {
  if (X.ndim() != 3) throw std::invalid_argument(std::string(op) + ": X must be (B, n, d)");
  return {X.shape(0), X.shape(1), X.shape(2)};
}

template <class T>
py::array_t<T> mean_py(carray<T> X, index_t tile) {
  const Shape s = shape_of(X, "mean");
  py::array_t<T> out({s.B, s.d});
  const T* x = X.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::mean<T>(x, s.B, s.n, s.d, tile, o);
  }
  return out;
}

template <class T>
py::array_t<T> cwmed_py(carray<T> X, index_t tile) {
  const Shape s = shape_of(X, "cwmed");
  py::array_t<T> out({s.B, s.d});
  const T* x = X.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::cwmed<T>(x, s.B, s.n, s.d, tile, o);
  }
  return out;
}

// cwtm and meamed: (X, f, tile) -> (B, d)
template <class T, void (*Kernel)(const T*, index_t, index_t, index_t, index_t, index_t, T*)>
py::array_t<T> trimmed_py(carray<T> X, index_t f, index_t tile) {
  const Shape s = shape_of(X, "cwtm/meamed");
  if (f < 0 || 2 * f >= s.n) throw std::invalid_argument("f must satisfy 0 <= 2f < n");
  py::array_t<T> out({s.B, s.d});
  const T* x = X.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    Kernel(x, s.B, s.n, s.d, f, tile, o);
  }
  return out;
}

template <class T>
py::array_t<double> pairwise_sqdist_py(carray<T> X, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "pairwise_sqdist");
  py::array_t<double> out({s.B, s.n, s.n});
  const T* x = X.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::pairwise_sqdist<T>(x, s.B, s.n, s.d, tile, slabs, o);
  }
  return out;
}

template <class T>
py::array_t<double> row_norms_py(carray<T> X, double q, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "row_norms");
  py::array_t<double> out({s.B, s.n});
  const T* x = X.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::row_norms<T>(x, s.B, s.n, s.d, q, tile, slabs, o);
  }
  return out;
}

template <class T>
py::array_t<T> mix_rows_py(carray<T> X, carray<std::int64_t> idx, index_t tile, index_t stream_min_bytes) {
  const Shape s = shape_of(X, "mix_rows");
  if (idx.ndim() != 3 || idx.shape(0) != s.B) throw std::invalid_argument("mix_rows: idx must be (B, m, k)");
  const index_t m = idx.shape(1), k = idx.shape(2);
  const std::int64_t* ix = idx.data();
  for (index_t r = 0; r < s.B * m; ++r) {
    bool any = false;
    for (index_t t = 0; t < k; ++t) {
      if (ix[r * k + t] >= s.n) throw std::invalid_argument("mix_rows: index out of range");
      any |= ix[r * k + t] >= 0;
    }
    if (!any) throw std::invalid_argument("mix_rows: every output row needs at least one index >= 0");
  }
  py::array_t<T> out({s.B, m, s.d});
  const T* x = X.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::mix_rows<T>(x, s.B, s.n, s.d, ix, m, k, tile, stream_min_bytes, o);
  }
  return out;
}

template <class T>
py::tuple clip_py(carray<T> X, double tau, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "clip");
  py::array_t<T> out({s.B, s.n, s.d});
  py::array_t<double> norms({s.B, s.n});
  const T* x = X.data();
  T* o = out.mutable_data();
  double* r = norms.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::clip<T>(x, s.B, s.n, s.d, tau, tile, slabs, o, r);
  }
  return py::make_tuple(out, norms);
}

// init: "mean", "zero" or a (B, d) array of X's dtype.
template <class T>
py::tuple geomed_py(carray<T> X, carray<double> weights, py::object init, index_t maxiter, double eps, double nu,
                    index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "geomed");
  if (weights.ndim() != 2 || weights.shape(0) != s.B || weights.shape(1) != s.n)
    throw std::invalid_argument("geomed: weights must be (B, n)");
  byzkern::GeomedInit kind = byzkern::GeomedInit::given;
  carray<T> init_array;
  if (py::isinstance<py::str>(init)) {
    const std::string name = init.cast<std::string>();
    if (name != "mean" && name != "zero") throw std::invalid_argument("geomed: init must be 'mean', 'zero' or an array");
    kind = name == "mean" ? byzkern::GeomedInit::mean : byzkern::GeomedInit::zero;
  } else {
    init_array = init.cast<carray<T>>();
    if (init_array.ndim() != 2 || init_array.shape(0) != s.B || init_array.shape(1) != s.d)
      throw std::invalid_argument("geomed: init must be (B, d)");
  }
  py::array_t<T> z({s.B, s.d});
  py::array_t<std::int64_t> iterations(s.B);
  py::array_t<double> objective(s.B);
  const T* x = X.data();
  const double* w = weights.data();
  const T* z0 = kind == byzkern::GeomedInit::given ? init_array.data() : nullptr;
  T* zo = z.mutable_data();
  std::int64_t* it = iterations.mutable_data();
  double* obj = objective.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::geomed<T>(x, s.B, s.n, s.d, w, kind, z0, maxiter, eps, nu, tile, slabs, zo, it, obj);
  }
  return py::make_tuple(z, iterations, objective);
}

template <class T>
py::tuple center_distances_py(carray<T> X, carray<double> center, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "center_distances");
  if (center.ndim() != 2 || center.shape(0) != s.B || center.shape(1) != s.d)
    throw std::invalid_argument("center_distances: center must be (B, d)");
  py::array_t<double> dist({s.B, s.n});
  py::array_t<bool> finite({s.B, s.n});
  const T* x = X.data();
  const double* c = center.data();
  double* dd = dist.mutable_data();
  bool* f = finite.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::center_distances<T>(x, s.B, s.n, s.d, c, tile, slabs, dd, f);
  }
  return py::make_tuple(dist, finite);
}

template <class T>
py::tuple weighted_center_py(carray<T> X, carray<double> coef, py::array_t<bool, py::array::c_style> items,
                             bool distances, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "weighted_center");
  if (coef.ndim() != 2 || coef.shape(0) != s.B || coef.shape(1) != s.n)
    throw std::invalid_argument("weighted_center: coef must be (B, n)");
  if (items.ndim() != 1 || items.shape(0) != s.B) throw std::invalid_argument("weighted_center: items must be (B,)");
  py::array_t<T> z({s.B, s.d});
  py::object dist = py::none();
  double* dd = nullptr;
  if (distances) {
    py::array_t<double> d({s.B, s.n});
    dd = d.mutable_data();
    dist = d;
  }
  const T* x = X.data();
  const double* a = coef.data();
  const bool* which = items.data();
  T* zo = z.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::weighted_center<T>(x, s.B, s.n, s.d, a, which, tile, slabs, zo, dd);
  }
  return py::make_tuple(z, dist);
}

// v0: a (B, d) array of X's dtype, or None for the coordinate-wise median.
template <class T>
py::tuple cclip_py(carray<T> X, double tau, index_t iters, py::object v0, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "cclip");
  carray<T> v0_array;
  if (!v0.is_none()) {
    v0_array = v0.cast<carray<T>>();
    if (v0_array.ndim() != 2 || v0_array.shape(0) != s.B || v0_array.shape(1) != s.d)
      throw std::invalid_argument("cclip: v0 must be (B, d)");
  }
  py::array_t<T> out({s.B, s.d});
  py::array_t<bool> overflowed(s.B);
  const T* x = X.data();
  const T* v = v0.is_none() ? nullptr : v0_array.data();
  T* o = out.mutable_data();
  bool* flags = overflowed.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::cclip<T>(x, s.B, s.n, s.d, tau, iters, v, tile, slabs, o, flags);
  }
  return py::make_tuple(out, overflowed);
}

// Both dtypes of one kernel under one name; pybind11 picks by the array's dtype (no conversion:
// the float overload is tried first and accepts only float32 without copying).
template <class F32, class F64, class... Extra>
void def_both(py::module_& m, const char* name, F32 f32, F64 f64, const char* doc, Extra... extra) {
  m.def(name, f32, py::arg("X").noconvert(), extra..., doc);
  m.def(name, f64, py::arg("X").noconvert(), extra...);
}

}  // namespace

// ---- compressors and attacks (SPEC §4, §5): wrappers ------------------------------------------
namespace compress_py {

using u8array = py::array_t<std::uint8_t, py::array::c_style>;

template <class T>
std::pair<index_t, index_t> rows_of(const carray<T>& X, const char* name) {
  if (X.ndim() != 2) throw std::invalid_argument(std::string(name) + ": X must be (n, d)");
  return {X.shape(0), X.shape(1)};
}

inline index_t code_bytes(index_t d, int width) { return (d * width + 7) / 8; }
inline int qsgd_width(int levels) { return 33 - __builtin_clz(static_cast<unsigned>(levels)); }

template <class T>
py::tuple topk(carray<T> X, index_t k) {
  auto [n, d] = rows_of(X, "topk");
  py::array_t<T> values({n, k});
  py::array_t<std::int64_t> indices({n, k});
  const T* x = X.data();
  T* v = values.mutable_data();
  std::int64_t* i = indices.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::topk<T>(x, n, d, k, v, i);
  }
  return py::make_tuple(values, indices);
}

template <class T>
py::tuple randk(carray<T> X, index_t k, std::uint64_t seed) {
  auto [n, d] = rows_of(X, "randk");
  py::array_t<T> values({n, k});
  py::array_t<std::int64_t> indices({n, k});
  const T* x = X.data();
  T* v = values.mutable_data();
  std::int64_t* i = indices.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::randk<T>(x, n, d, k, seed, v, i);
  }
  return py::make_tuple(values, indices);
}

template <class T>
py::tuple qsgd(carray<T> X, int levels, std::uint64_t seed, index_t tile) {
  auto [n, d] = rows_of(X, "qsgd");
  py::array_t<T> norms(n);
  u8array codes({n, code_bytes(d, qsgd_width(levels))});
  const T* x = X.data();
  T* nr = norms.mutable_data();
  std::uint8_t* c = codes.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::qsgd<T>(x, n, d, levels, seed, tile, nr, c);
  }
  return py::make_tuple(norms, codes);
}

template <class T>
u8array natural(carray<T> X, std::uint64_t seed, index_t tile) {
  auto [n, d] = rows_of(X, "natural");
  u8array codes({n, code_bytes(d, sizeof(T) == 4 ? 9 : 12)});
  const T* x = X.data();
  std::uint8_t* c = codes.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::natural<T>(x, n, d, seed, tile, c);
  }
  return codes;
}

template <class T>
u8array sign(carray<T> X, index_t tile) {
  auto [n, d] = rows_of(X, "sign");
  u8array codes({n, code_bytes(d, 1)});
  const T* x = X.data();
  std::uint8_t* c = codes.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::sign<T>(x, n, d, tile, c);
  }
  return codes;
}

template <class T>
py::tuple scaled_sign(carray<T> X) {
  auto [n, d] = rows_of(X, "scaled_sign");
  py::array_t<T> scales(n);
  u8array codes({n, code_bytes(d, 1)});
  const T* x = X.data();
  T* s = scales.mutable_data();
  std::uint8_t* c = codes.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::scaled_sign<T>(x, n, d, s, c);
  }
  return py::make_tuple(scales, codes);
}

template <class T>
py::array_t<T> scatter_rows(carray<T> values, carray<std::int64_t> indices, index_t d) {
  auto [n, k] = rows_of(values, "scatter_rows");
  if (indices.ndim() != 2 || indices.shape(0) != n || indices.shape(1) != k)
    throw std::invalid_argument("scatter_rows: indices must have the shape of values");
  py::array_t<T> out({n, d});
  const T* v = values.data();
  const std::int64_t* i = indices.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::scatter_rows<T>(v, i, n, k, d, o);
  }
  return out;
}

template <class T>
py::array_t<T> qsgd_decompress(carray<T> norms, u8array codes, int levels, index_t d, index_t tile) {
  const index_t n = norms.shape(0);
  if (codes.ndim() != 2 || codes.shape(0) != n || codes.shape(1) != code_bytes(d, qsgd_width(levels)))
    throw std::invalid_argument("qsgd_decompress: codes do not match (n, d, levels)");
  py::array_t<T> out({n, d});
  const T* nr = norms.data();
  const std::uint8_t* c = codes.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::qsgd_decompress<T>(nr, c, n, d, levels, tile, o);
  }
  return out;
}

template <class T>
py::array_t<T> natural_decompress(u8array codes, index_t d, index_t tile) {
  const index_t n = codes.shape(0);
  if (codes.ndim() != 2 || codes.shape(1) != code_bytes(d, sizeof(T) == 4 ? 9 : 12))
    throw std::invalid_argument("natural_decompress: codes do not match (n, d)");
  py::array_t<T> out({n, d});
  const std::uint8_t* c = codes.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::natural_decompress<T>(c, n, d, tile, o);
  }
  return out;
}

template <class T>
py::array_t<T> sign_decompress(u8array codes, carray<T> scales, index_t d, index_t tile) {
  const index_t n = scales.shape(0);
  if (codes.ndim() != 2 || codes.shape(0) != n || codes.shape(1) != code_bytes(d, 1))
    throw std::invalid_argument("sign_decompress: codes do not match (n, d)");
  py::array_t<T> out({n, d});
  const std::uint8_t* c = codes.data();
  const T* s = scales.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::sign_decompress<T>(c, s, n, d, tile, o);
  }
  return out;
}

template <class I>
bool indices_ok(carray<I> indices, std::uint64_t d) {
  auto [n, k] = rows_of(indices, "indices_ok");
  const I* i = indices.data();
  py::gil_scoped_release release;
  return byzkern::indices_ok<I>(i, n, k, d);
}

inline bool qsgd_levels_ok(u8array codes, int levels, index_t d) {
  const index_t n = codes.shape(0);
  if (codes.ndim() != 2 || codes.shape(1) != code_bytes(d, qsgd_width(levels)))
    throw std::invalid_argument("qsgd_levels_ok: codes do not match (n, d, levels)");
  const std::uint8_t* c = codes.data();
  py::gil_scoped_release release;
  return byzkern::qsgd_levels_ok(c, n, d, levels);
}

template <class T>
py::tuple mean_std(carray<T> X, index_t ddof, index_t tile) {
  if (X.ndim() != 3) throw std::invalid_argument("mean_std: X must be (B, h, d)");
  const index_t B = X.shape(0), h = X.shape(1), d = X.shape(2);
  py::array_t<T> mean({B, d}), std({B, d});
  const T* x = X.data();
  T* m = mean.mutable_data();
  T* s = std.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::mean_std<T>(x, B, h, d, ddof, tile, m, s);
  }
  return py::make_tuple(mean, std);
}

template <class T>
py::array_t<T> gaussian(carray<T> own, double std, std::uint64_t seed, index_t tile) {
  if (own.ndim() != 3) throw std::invalid_argument("gaussian: own must be (B, f, d)");
  const index_t B = own.shape(0), f = own.shape(1), d = own.shape(2);
  py::array_t<T> out({B, f, d});
  const T* o = own.data();
  T* r = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::gaussian<T>(o, B, f, d, std, seed, tile, r);
  }
  return out;
}

// Mimic's learning step: X (B, h, d); mu (B, d), and z (B, d) or dots (B, h), all float64.
void check_matrix(const py::array& a, index_t rows, index_t columns, const char* what) {
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != columns) throw std::invalid_argument(what);
}

template <class T>
py::array_t<double> centred_dots(carray<T> X, carray<double> mu, carray<double> z, index_t tile, index_t slabs) {
  if (X.ndim() != 3) throw std::invalid_argument("centred_dots: X must be (B, h, d)");
  const index_t B = X.shape(0), h = X.shape(1), d = X.shape(2);
  check_matrix(mu, B, d, "centred_dots: mu must be (B, d)");
  check_matrix(z, B, d, "centred_dots: z must be (B, d)");
  py::array_t<double> dots({B, h});
  const T* x = X.data();
  const double *m = mu.data(), *v = z.data();
  double* o = dots.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::centred_dots<T>(x, m, v, B, h, d, tile, slabs, o);
  }
  return dots;
}

template <class T>
py::tuple power_step(carray<T> X, carray<double> mu, carray<double> dots, index_t tile, index_t slabs) {
  if (X.ndim() != 3) throw std::invalid_argument("power_step: X must be (B, h, d)");
  const index_t B = X.shape(0), h = X.shape(1), d = X.shape(2);
  check_matrix(mu, B, d, "power_step: mu must be (B, d)");
  check_matrix(dots, B, h, "power_step: dots must be (B, h)");
  py::array_t<double> u({B, d}), u_dots({B, h});
  const T* x = X.data();
  const double *m = mu.data(), *a = dots.data();
  double *uo = u.mutable_data(), *o = u_dots.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::power_step<T>(x, m, a, B, h, d, tile, slabs, uo, o);
  }
  return py::make_tuple(u, u_dots);
}

// attack_candidates' inputs: H (B, h, d), mu and direction (B, d), etas 1-D, f >= 0.
template <class T>
void check_candidate_inputs(const carray<T>& H, const carray<T>& mu, const carray<T>& direction,
                            const carray<double>& etas, index_t f, const std::string& name) {
  if (H.ndim() != 3) throw std::invalid_argument(name + ": H must be (B, h, d)");
  for (const auto* row : {&mu, &direction})
    if (row->ndim() != 2 || row->shape(0) != H.shape(0) || row->shape(1) != H.shape(2))
      throw std::invalid_argument(name + ": mu and direction must be (B, d)");
  if (etas.ndim() != 1 || f < 0) throw std::invalid_argument(name + ": etas must be 1-D and f >= 0");
}

template <class T>
py::array_t<T> attack_candidates(carray<T> H, carray<T> mu, carray<T> direction, carray<double> etas, index_t f,
                                 index_t tile, index_t stream_min_bytes) {
  check_candidate_inputs(H, mu, direction, etas, f, "attack_candidates");
  const index_t B = H.shape(0), h = H.shape(1), d = H.shape(2), E = etas.size();
  py::array_t<T> out({B, E, h + f, d});
  const T* x = H.data();
  const T* m = mu.data();
  const T* a = direction.data();
  const double* e = etas.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::attack_candidates<T>(x, m, a, e, B, h, d, E, f, tile, stream_min_bytes, o);
  }
  return out;
}

template <class T>
py::array_t<double> candidate_deviations(carray<T> H, carray<T> mu, carray<T> direction, carray<double> etas,
                                         index_t f, const std::string& rule, index_t trim, index_t tile) {
  check_candidate_inputs(H, mu, direction, etas, f, "candidate_deviations");
  const index_t B = H.shape(0), h = H.shape(1), d = H.shape(2), E = etas.size(), n = h + f;
  using byzkern::CoordinateRule;
  if (rule != "cwmed" && rule != "cwtm" && rule != "meamed")
    throw std::invalid_argument("candidate_deviations: rule must be cwmed, cwtm or meamed; got " + rule);
  const CoordinateRule which = rule == "cwmed"  ? CoordinateRule::cwmed
                               : rule == "cwtm" ? CoordinateRule::cwtm
                                                : CoordinateRule::meamed;
  if (trim < 0 || 2 * trim >= n)
    throw std::invalid_argument("candidate_deviations: trim must satisfy 0 <= 2 trim < h + f");
  py::array_t<double> out({B, E});
  const T* x = H.data();
  const T* m = mu.data();
  const T* a = direction.data();
  const double* e = etas.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::candidate_deviations<T>(x, m, a, e, B, h, d, E, f, which, trim, tile, o);
  }
  return out;
}

}  // namespace compress_py


PYBIND11_MODULE(_cpu, m) {
  m.doc() = "byzkern C++ kernels (OpenMP, GIL released). Called by byzkern.backends.cpu.";
  def_both(m, "mean", &mean_py<float>, &mean_py<double>, "Row mean of (B, n, d) -> (B, d).", py::arg("tile"));
  def_both(m, "cwmed", &cwmed_py<float>, &cwmed_py<double>, "Coordinate-wise median (B, n, d) -> (B, d).",
           py::arg("tile"));
  def_both(m, "cwtm", &trimmed_py<float, byzkern::cwtm<float>>, &trimmed_py<double, byzkern::cwtm<double>>,
           "Coordinate-wise trimmed mean (B, n, d) -> (B, d).", py::arg("f"), py::arg("tile"));
  def_both(m, "meamed", &trimmed_py<float, byzkern::meamed<float>>, &trimmed_py<double, byzkern::meamed<double>>,
           "Mean around the coordinate-wise median (B, n, d) -> (B, d).", py::arg("f"), py::arg("tile"));
  def_both(m, "pairwise_sqdist", &pairwise_sqdist_py<float>, &pairwise_sqdist_py<double>,
           "Squared distances (B, n, d) -> (B, n, n) float64, exact for nearly equal rows.", py::arg("tile"), py::arg("slabs"));
  def_both(m, "row_norms", &row_norms_py<float>, &row_norms_py<double>, "Row q-norms (B, n, d) -> (B, n) float64.",
           py::arg("q"), py::arg("tile"), py::arg("slabs"));
  def_both(m, "mix_rows", &mix_rows_py<float>, &mix_rows_py<double>, "Means of chosen rows -> (B, m, d).",
           py::arg("idx"), py::arg("tile"), py::arg("stream_min_bytes"));
  def_both(m, "clip", &clip_py<float>, &clip_py<double>, "Rows clipped to l2 norm <= tau -> (rows, their l2 norms).", py::arg("tau"),
           py::arg("tile"), py::arg("slabs"));
  def_both(m, "geomed", &geomed_py<float>, &geomed_py<double>, "Smoothed Weiszfeld -> (z, iterations, objective).",
           py::arg("weights"), py::arg("init"), py::arg("maxiter"), py::arg("eps"), py::arg("nu"), py::arg("tile"),
           py::arg("slabs"));
  def_both(m, "center_distances", &center_distances_py<float>, &center_distances_py<double>,
           "Distances (B, n) from each row to center (B, d) float64, and which rows are finite.",
           py::arg("center"), py::arg("tile"), py::arg("slabs"));
  def_both(m, "weighted_center", &weighted_center_py<float>, &weighted_center_py<double>,
           "For the items marked: z = sum_i coef_i x_i / sum coef (rows with coef 0 left out) -> "
           "(z (B, d), its distances (B, n) or None).",
           py::arg("coef"), py::arg("items"), py::arg("distances"), py::arg("tile"), py::arg("slabs"));
  def_both(m, "cclip", &cclip_py<float>, &cclip_py<double>, "Centered clipping from v0 (None: the coordinate-wise median) -> (v (B, d), overflowed (B,)).", py::arg("tau"),
           py::arg("iters"), py::arg("v0"), py::arg("tile"), py::arg("slabs"));
  m.def("isa", []() { return byzkern::isa_name(byzkern::cpu_isa()); }, "SIMD tier the kernels run.");
  static const int default_threads = omp_get_max_threads();
  m.def("max_threads", []() { return omp_get_max_threads(); }, "OpenMP threads a kernel uses.");
  m.def(
      "set_threads", [](int threads) { omp_set_num_threads(threads > 0 ? threads : default_threads); },
      py::arg("threads"), "Set the OpenMP thread count; 0 restores the default.");

  // ---- compressors and attacks (SPEC §4, §5); semantics in byzkern/backends/__init__.py ----
  m.def("topk", &compress_py::topk<float>, py::arg("X"), py::arg("k"), "Top-k values and ascending indices per row.");
  m.def("topk", &compress_py::topk<double>, py::arg("X"), py::arg("k"));
  m.def("randk", &compress_py::randk<float>, py::arg("X"), py::arg("k"), py::arg("seed"), "Random-k (Floyd on Philox), scaled by d/k.");
  m.def("randk", &compress_py::randk<double>, py::arg("X"), py::arg("k"), py::arg("seed"));
  m.def("qsgd", &compress_py::qsgd<float>, py::arg("X"), py::arg("levels"), py::arg("seed"), py::arg("tile"), "QSGD norms and packed codes.");
  m.def("qsgd", &compress_py::qsgd<double>, py::arg("X"), py::arg("levels"), py::arg("seed"), py::arg("tile"));
  m.def("natural", &compress_py::natural<float>, py::arg("X"), py::arg("seed"), py::arg("tile"), "Natural compression codes.");
  m.def("natural", &compress_py::natural<double>, py::arg("X"), py::arg("seed"), py::arg("tile"));
  m.def("sign", &compress_py::sign<float>, py::arg("X"), py::arg("tile"), "Sign bits (sign(0) = +1).");
  m.def("sign", &compress_py::sign<double>, py::arg("X"), py::arg("tile"));
  m.def("scaled_sign", &compress_py::scaled_sign<float>, py::arg("X"), "l1/d scales and sign bits.");
  m.def("scaled_sign", &compress_py::scaled_sign<double>, py::arg("X"));
  m.def("scatter_rows", &compress_py::scatter_rows<float>, py::arg("values"), py::arg("indices"), py::arg("d"), "Dense rows from values at indices.");
  m.def("scatter_rows", &compress_py::scatter_rows<double>, py::arg("values"), py::arg("indices"), py::arg("d"));
  m.def("qsgd_decompress", &compress_py::qsgd_decompress<float>, py::arg("norms"), py::arg("codes"), py::arg("levels"), py::arg("d"), py::arg("tile"));
  m.def("qsgd_decompress", &compress_py::qsgd_decompress<double>, py::arg("norms"), py::arg("codes"), py::arg("levels"), py::arg("d"), py::arg("tile"));
  m.def("natural_decompress_f32", &compress_py::natural_decompress<float>, py::arg("codes"), py::arg("d"), py::arg("tile"));
  m.def("natural_decompress_f64", &compress_py::natural_decompress<double>, py::arg("codes"), py::arg("d"), py::arg("tile"));
  m.def("sign_decompress", &compress_py::sign_decompress<float>, py::arg("codes"), py::arg("scales"), py::arg("d"), py::arg("tile"));
  m.def("sign_decompress", &compress_py::sign_decompress<double>, py::arg("codes"), py::arg("scales"), py::arg("d"), py::arg("tile"));
  m.def("indices_ok", &compress_py::indices_ok<std::uint16_t>, py::arg("indices"), py::arg("d"), "Rows strictly increasing and below d.");
  m.def("indices_ok", &compress_py::indices_ok<std::uint32_t>, py::arg("indices"), py::arg("d"));
  m.def("indices_ok", &compress_py::indices_ok<std::uint64_t>, py::arg("indices"), py::arg("d"));
  m.def("qsgd_levels_ok", &compress_py::qsgd_levels_ok, py::arg("codes"), py::arg("levels"), py::arg("d"), "Every QSGD level <= levels.");
  m.def("mean_std", &compress_py::mean_std<float>, py::arg("X"), py::arg("ddof"), py::arg("tile"), "Mean and std over rows of (B, h, d).");
  m.def("mean_std", &compress_py::mean_std<double>, py::arg("X"), py::arg("ddof"), py::arg("tile"));
  m.def("centred_dots", &compress_py::centred_dots<float>, py::arg("X"), py::arg("mu"), py::arg("z"), py::arg("tile"),
        py::arg("slabs"), "<x_i - mu, z> (B, h) of (B, h, d), in float64.");
  m.def("centred_dots", &compress_py::centred_dots<double>, py::arg("X"), py::arg("mu"), py::arg("z"), py::arg("tile"),
        py::arg("slabs"));
  m.def("power_step", &compress_py::power_step<float>, py::arg("X"), py::arg("mu"), py::arg("dots"), py::arg("tile"),
        py::arg("slabs"), "u = sum_i dots_i (x_i - mu) (B, d) and <x_i - mu, u> (B, h), in float64.");
  m.def("power_step", &compress_py::power_step<double>, py::arg("X"), py::arg("mu"), py::arg("dots"), py::arg("tile"),
        py::arg("slabs"));
  m.def("gaussian", &compress_py::gaussian<float>, py::arg("own"), py::arg("std"), py::arg("seed"), py::arg("tile"),
        "own + std * N(0, 1) (Box-Muller on Philox).");
  m.def("gaussian", &compress_py::gaussian<double>, py::arg("own"), py::arg("std"), py::arg("seed"), py::arg("tile"));
  m.def("attack_candidates", &compress_py::attack_candidates<float>, py::arg("H"), py::arg("mu"), py::arg("direction"),
        py::arg("etas"), py::arg("f"), py::arg("tile"), py::arg("stream_min_bytes"), "(B, E, h + f, d): H, then f rows of mu + eta * direction.");
  m.def("attack_candidates", &compress_py::attack_candidates<double>, py::arg("H"), py::arg("mu"), py::arg("direction"),
        py::arg("etas"), py::arg("f"), py::arg("tile"), py::arg("stream_min_bytes"));
  m.def("candidate_deviations", &compress_py::candidate_deviations<float>, py::arg("H"), py::arg("mu"),
        py::arg("direction"), py::arg("etas"), py::arg("f"), py::arg("rule"), py::arg("trim"), py::arg("tile"),
        "(B, E) float64: sum of (rule - mu)^2 for the rule (cwmed, cwtm or meamed; trim: its f) of each "
        "candidate attack_candidates would build.");
  m.def("candidate_deviations", &compress_py::candidate_deviations<double>, py::arg("H"), py::arg("mu"),
        py::arg("direction"), py::arg("etas"), py::arg("f"), py::arg("rule"), py::arg("trim"), py::arg("tile"));
}
