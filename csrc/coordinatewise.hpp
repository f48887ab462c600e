#pragma once
#include "common.hpp"

namespace byzkern {

template <class T>
void mean(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out);

}  // namespace byzkern
