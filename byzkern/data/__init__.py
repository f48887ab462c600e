"""Data files shipped with byzkern (compressed, exactly as in the project's shared data folder).

- ``a9a.gz``, ``w8a.gz``: LIBSVM training sets (sparse text, labels -1/+1; 123 and 300 features).
- ``mnist-t10k-images-idx3-ubyte.gz``, ``mnist-t10k-labels-idx1-ubyte.gz``: the official MNIST
  test split (10,000 images, IDX format), which ``byzkern.sim.data.mnist`` divides 8,000/2,000.

Read them through :mod:`byzkern.sim.data`.
"""
