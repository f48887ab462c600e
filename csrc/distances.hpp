#pragma once
#include "common.hpp"

namespace byzkern {

template <class T>
void pairwise_sqdist(const T* X, index_t B, index_t n, index_t d, index_t tile, index_t slabs, double* D);
template <class T>
void row_norms(const T* X, index_t B, index_t n, index_t d, double q, index_t tile, index_t slabs,
               double* norms);
template <class T>
void mix_rows(const T* X, index_t B, index_t n, index_t d, const std::int64_t* idx, index_t m,
              index_t k, index_t tile, index_t stream_min_bytes, T* out);
template <class T>
void clip(const T* X, index_t B, index_t n, index_t d, double tau, index_t tile, index_t slabs, T* out, double* norms);

}  // namespace byzkern
