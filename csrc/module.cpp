// Python bindings of byzkern._cpu: shapes and pointers are taken with the GIL held, then the
// kernel runs in a scope that releases it and touches no Python object (pybind11 #4748).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <string>

#include "coordinatewise.hpp"
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
py::array_t<T> mix_rows_py(carray<T> X, carray<std::int64_t> idx, index_t tile) {
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
    byzkern::mix_rows<T>(x, s.B, s.n, s.d, ix, m, k, tile, o);
  }
  return out;
}

template <class T>
py::array_t<T> clip_py(carray<T> X, double tau, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "clip");
  py::array_t<T> out({s.B, s.n, s.d});
  const T* x = X.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::clip<T>(x, s.B, s.n, s.d, tau, tile, slabs, o);
  }
  return out;
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
py::array_t<T> cclip_py(carray<T> X, double tau, index_t iters, carray<T> v0, index_t tile, index_t slabs) {
  const Shape s = shape_of(X, "cclip");
  if (v0.ndim() != 2 || v0.shape(0) != s.B || v0.shape(1) != s.d) throw std::invalid_argument("cclip: v0 must be (B, d)");
  py::array_t<T> out({s.B, s.d});
  const T* x = X.data();
  const T* v = v0.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::cclip<T>(x, s.B, s.n, s.d, tau, iters, v, tile, slabs, o);
  }
  return out;
}

// Both dtypes of one kernel under one name; pybind11 picks by the array's dtype (no conversion:
// the float overload is tried first and accepts only float32 without copying).
template <class F32, class F64, class... Extra>
void def_both(py::module_& m, const char* name, F32 f32, F64 f64, const char* doc, Extra... extra) {
  m.def(name, f32, py::arg("X").noconvert(), extra..., doc);
  m.def(name, f64, py::arg("X").noconvert(), extra...);
}

}  // namespace

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
           "Squared distances (B, n, d) -> (B, n, n) float64, exact differences.", py::arg("tile"), py::arg("slabs"));
  def_both(m, "row_norms", &row_norms_py<float>, &row_norms_py<double>, "Row q-norms (B, n, d) -> (B, n) float64.",
           py::arg("q"), py::arg("tile"), py::arg("slabs"));
  def_both(m, "mix_rows", &mix_rows_py<float>, &mix_rows_py<double>, "Means of chosen rows -> (B, m, d).",
           py::arg("idx"), py::arg("tile"));
  def_both(m, "clip", &clip_py<float>, &clip_py<double>, "Rows clipped to l2 norm <= tau.", py::arg("tau"),
           py::arg("tile"), py::arg("slabs"));
  def_both(m, "geomed", &geomed_py<float>, &geomed_py<double>, "Smoothed Weiszfeld -> (z, iterations, objective).",
           py::arg("weights"), py::arg("init"), py::arg("maxiter"), py::arg("eps"), py::arg("nu"), py::arg("tile"),
           py::arg("slabs"));
  def_both(m, "cclip", &cclip_py<float>, &cclip_py<double>, "Centered clipping from v0 -> (B, d).", py::arg("tau"),
           py::arg("iters"), py::arg("v0"), py::arg("tile"), py::arg("slabs"));
  m.def("isa", []() { return byzkern::cpu_has_avx2() ? "avx2" : "baseline"; }, "SIMD variant the kernels run.");
  static const int default_threads = omp_get_max_threads();
  m.def("max_threads", []() { return omp_get_max_threads(); }, "OpenMP threads a kernel uses.");
  m.def(
      "set_threads", [](int threads) { omp_set_num_threads(threads > 0 ? threads : default_threads); },
      py::arg("threads"), "Set the OpenMP thread count; 0 restores the default.");
}
