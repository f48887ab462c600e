#pragma once
#include "common.hpp"

namespace byzkern {

// dist[b, i] = ||x_i - center_b|| (double), finite[b, i]: row i has no NaN or Inf entry.
template <class T>
void center_distances(const T* X, index_t B, index_t n, index_t d, const double* center, index_t tile,
                      index_t slabs, double* dist, bool* finite);
// For the items with which[b]: z_b = sum_{coef_i != 0} coef_i x_i / sum_i coef_i formed in double,
// stored rounded to T; with dist non-null, dist[b, i] = ||x_i - z_b|| from the double z_b.
template <class T>
void weighted_center(const T* X, index_t B, index_t n, index_t d, const double* coef, const bool* which,
                     index_t tile, index_t slabs, T* z, double* dist);
enum class GeomedInit { mean = 0, zero = 1, given = 2 };

// The whole smoothed Weiszfeld loop with every step a pass over X (the reference's algorithm):
// for inputs small enough that backends/_weiszfeld.py's per-step Python costs more than a pass.
template <class T>
void geomed(const T* X, index_t B, index_t n, index_t d, const double* weights, GeomedInit init_kind,
            const T* init, index_t maxiter, double eps, double nu, index_t tile, index_t slabs, T* z,
            std::int64_t* iterations, double* objective);
// Centered clipping from v0 ((B, d)), or from the coordinate-wise median where v0 is null;
// overflowed[b]: whether a finite row's distance to an iterate of item b overflowed (its factor
// was taken as 0).
template <class T>
void cclip(const T* X, index_t B, index_t n, index_t d, double tau, index_t iters, const T* v0, index_t tile,
           index_t slabs, T* out, bool* overflowed);

}  // namespace byzkern
