// Python bindings of byzkern._cpu: shapes and pointers are taken with the GIL held, then the
// kernel runs in a scope that releases it and touches no Python object (pybind11 #4748).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <omp.h>

#include "coordinatewise.hpp"

namespace py = pybind11;
using byzkern::index_t;

template <class T>
using carray = py::array_t<T, py::array::c_style>;

namespace {

template <class T>
py::array_t<T> mean_py(carray<T> X, index_t tile) {
  if (X.ndim() != 3) throw std::invalid_argument("mean: X must be (B, n, d)");
  const index_t B = X.shape(0), n = X.shape(1), d = X.shape(2);
  py::array_t<T> out({B, d});
  const T* x = X.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    byzkern::mean<T>(x, B, n, d, tile, o);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "byzkern C++ kernels (OpenMP, GIL released). Called by byzkern.backends.cpu.";
  m.def("mean", &mean_py<float>, py::arg("X"), py::arg("tile"), "Row mean of (B, n, d) -> (B, d).");
  m.def("mean", &mean_py<double>, py::arg("X"), py::arg("tile"));
  static const int default_threads = omp_get_max_threads();
  m.def("max_threads", []() { return omp_get_max_threads(); }, "OpenMP threads a kernel uses.");
  m.def(
      "set_threads", [](int threads) { omp_set_num_threads(threads > 0 ? threads : default_threads); },
      py::arg("threads"), "Set the OpenMP thread count; 0 restores the default.");
}
