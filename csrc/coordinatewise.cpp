// Coordinate-wise rules on row-major (B, n, d) buffers.
#include "coordinatewise.hpp"

#include <vector>

namespace byzkern {

// Mean over rows, accumulated in double per column (float32 input loses nothing to the sum).
// OpenMP splits (batch item, column tile) pairs; each row of a tile is a contiguous read.
template <class T>
void mean(const T* X, index_t B, index_t n, index_t d, index_t tile, T* out) {
  const index_t tiles = num_tiles(d, tile);
#pragma omp parallel
  {
    std::vector<double> acc(tile);
#pragma omp for schedule(static)
    for (index_t job = 0; job < B * tiles; ++job) {
      const index_t b = job / tiles, c0 = (job % tiles) * tile;
      const index_t w = std::min(tile, d - c0);
      const T* base = X + b * n * d + c0;
      std::fill(acc.begin(), acc.begin() + w, 0.0);
      for (index_t i = 0; i < n; ++i) {
        const T* row = base + i * d;
        for (index_t j = 0; j < w; ++j) acc[j] += row[j];
      }
      T* o = out + b * d + c0;
      for (index_t j = 0; j < w; ++j) o[j] = static_cast<T>(acc[j] / static_cast<double>(n));
    }
  }
}

template void mean<float>(const float*, index_t, index_t, index_t, index_t, float*);
template void mean<double>(const double*, index_t, index_t, index_t, index_t, double*);

}  // namespace byzkern
