"""mean: byzkern beside numpy.mean and torch.mean, per backend."""
import numpy as np

import byzkern

from .common import SHAPES, matrix, require_backend


class Mean:
    params = [SHAPES, ["cpu", "numba"]]
    param_names = ["shape", "backend"]

    def setup(self, shape, backend):
        require_backend(backend)
        self.X = matrix(*shape)
        byzkern.mean(self.X[:, :8], backend=backend)  # compile (numba) outside the timing

    def time_byzkern(self, shape, backend):
        byzkern.mean(self.X, backend=backend)

    def time_numpy(self, shape, backend):
        np.mean(self.X, axis=0)
