"""Tile and block sizes the kernels take as arguments (never compiled in).

Tests shrink them so that small inputs cover the multi-tile and tail paths (stumpy's config
pattern); benchmarks use the defaults.
"""
#: columns per work item of the coordinate-wise C++/Numba kernels
COL_TILE = 4096
#: the C++ mix_rows and attack_candidates write outputs of at least this many bytes with stream
#: stores, past the caches (the L3 of one CPU); tests set 0 so that small outputs cover them
STREAM_MIN_BYTES = 32 << 20
#: optimized() with a coordinate-wise aggregator builds and aggregates its candidate batch in
#: column blocks of about this many bytes, so that the batch stays in the caches (1 thread, CPU time,
#: (20, 1e6), 17 etas, cwtm: 2-4 MiB blocks 220-290 ms, 8-16 MiB 280-400, the whole batch 360-490)
CANDIDATE_BLOCK_BYTES = 4 << 20
#: threads per block of the CUDA kernels
CUDA_THREADS = 256
#: column reductions (distances, norms) of the C++ kernels are summed in this many slabs of
#: tiles, then the slabs in order: the split never depends on the thread count
REDUCTION_SLABS = 32
#: inputs with fewer elements run the CPU kernels on one thread (see
#: backends.serial_when_small); tests set 0 so that small inputs cover the threaded paths
PARALLEL_MIN_ELEMENTS = 1 << 16
