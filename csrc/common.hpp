// Shared helpers for the byzkern C++ kernels: int64 sizes, OpenMP tiling.
#pragma once
#include <cstdint>
#include <algorithm>

namespace byzkern {

using index_t = std::int64_t;  // every size and offset: n * d may exceed 2^31

// Columns per OpenMP work item. Passed from Python (byzkern._config) so tests can shrink it
// and cover the multi-tile and tail paths with small inputs.
inline index_t num_tiles(index_t d, index_t tile) { return (d + tile - 1) / tile; }

}  // namespace byzkern
