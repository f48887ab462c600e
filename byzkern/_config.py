"""Tile and block sizes the kernels take as arguments (never compiled in).

Tests shrink them so that small inputs cover the multi-tile and tail paths (stumpy's config
pattern); benchmarks use the defaults.
"""
#: columns per work item of the coordinate-wise C++/Numba kernels
COL_TILE = 4096
#: columns per work item of mean, at most (backends.mean_tile): each row is then read in runs of
#: 256 KiB, not 16 KiB (float32, 2 threads, against 4096: (20, 1e6) 2.44 -> 1.95 ms,
#: (64, 1e6) 7.75 -> 5.54, (17, 1e7) 28.4 -> 24.9, (256, 1e5) 3.18 -> 2.96)
MEAN_TILE = 1 << 16
#: the C++ mix_rows and attack_candidates write outputs of at least this many bytes with stream
#: stores, past the caches (the L3 of one CPU); tests set 0 so that small outputs cover them
STREAM_MIN_BYTES = 32 << 20
#: nnm puts its neighbour lists in shared_prefix_order from this many columns on, where the
#: additions it saves cost more than its Python time (n = 20: 0.5 ms, n = 256: 12 ms); tests set
#: 0 so that small inputs cover it
SHARED_PREFIX_MIN_COLUMNS = 1 << 14
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
