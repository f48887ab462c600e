#pragma once
#include <memory>

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

enum class CoordinateRule { cwmed, cwtm, meamed };

// out (B, E): sum over the columns of (rule - mu)^2 in double, for the rule (trim: its f) of every
// candidate attack_candidates would build from H (B, h, d), mu and direction (B, d) and etas (E),
// which is never built: the rule reads the values the built batch gives it (cwtm and meamed may
// add them in another order).
template <class T>
void candidate_deviations(const T* H, const T* mu, const T* direction, const double* etas, index_t B, index_t h,
                          index_t d, index_t E, index_t f, CoordinateRule rule, index_t trim, index_t tile,
                          double* out);

// cwmed one column range at a time, for a pass that does more with the columns while they are
// still in cache (cclip takes the distances to the median). Holds scratch: one per thread.
template <class T>
class ColumnMedians {
 public:
  explicit ColumnMedians(index_t n);
  ~ColumnMedians();
  // out[j] = the median of base[i * d + j] over the n rows, j in [0, w)
  void operator()(const T* base, index_t d, index_t w, T* out);

 private:
  struct Scratch;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace byzkern
