// Row norms and static norm clipping over (B, n, d); the reductions live in rows.cuh.
#include "rows.cuh"

// out[r] = the q-norm of row r from the chunk partials of Op; +Inf for rows with a non-finite entry.
template <class Op>
__global__ void row_norms_finish(const double* partial, index_t chunks, index_t rows, double q,
                                 const int* nonfinite_row, double* out) {
  for (index_t r = byzkern::global_thread(); r < rows; r += byzkern::global_stride()) {
    const double total = byzkern::combine_chunks<Op>(partial, chunks, rows, r);
    out[r] = nonfinite_row[r] ? byzkern::positive_infinity() : Op::root(total, q);
  }
}

// out[r, c] = X[r, c] * scale[r], the product in double and rounded once.
template <class T>
__global__ void scale_rows(const T* X, index_t rows, index_t d, const double* scale, T* out) {
  for (index_t g = byzkern::global_thread(); g < rows * d; g += byzkern::global_stride()) {
    out[g] = static_cast<T>(static_cast<double>(X[g]) * scale[g / d]);
  }
}
