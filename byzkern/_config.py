"""Tile and block sizes the kernels take as arguments (never compiled in).

Tests shrink them so that small inputs cover the multi-tile and tail paths (stumpy's config
pattern); benchmarks use the defaults.
"""
#: columns per work item of the coordinate-wise C++/Numba kernels
COL_TILE = 4096
#: threads per block of the CUDA kernels
CUDA_THREADS = 256
#: column reductions (distances, norms) of the C++ kernels are summed in this many slabs of
#: tiles, then the slabs in order: the split never depends on the thread count
REDUCTION_SLABS = 32
