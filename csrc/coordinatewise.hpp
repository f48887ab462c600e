#pragma once
#include "common.hpp"

namespace byzkern {

template <class T>
void mean(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out);
template <class T>
void cwmed(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out);
template <class T>
void cwtm(const T* X, index_t B, index_t n, index_t d, index_t f, index_t tile, T* out);
template <class T>
void meamed(const T* X, index_t B, index_t n, index_t d, index_t f, index_t tile, T* out);

}  // namespace byzkern
