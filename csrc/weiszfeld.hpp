#pragma once
#include "common.hpp"

namespace byzkern {

enum class GeomedInit { mean = 0, zero = 1, given = 2 };

template <class T>
void geomed(const T* X, index_t B, index_t n, index_t d, const double* weights, GeomedInit init_kind,
            const T* init, index_t maxiter, double eps, double nu, index_t tile, index_t slabs, T* z,
            std::int64_t* iterations, double* objective);
template <class T>
void cclip(const T* X, index_t B, index_t n, index_t d, double tau, index_t iters, const T* v0, index_t tile,
           index_t slabs, T* out);

}  // namespace byzkern
