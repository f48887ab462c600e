"""The memory-read floor every kernel is compared with: one streaming read of X."""
import numpy as np

from byzkern.bench import _stream_sum

from .common import SHAPES, matrix


class ReadFloor:
    params = [SHAPES]
    param_names = ["shape"]

    def setup(self, shape):
        self.X = matrix(*shape)
        self.flat = self.X.reshape(-1)
        self.out = np.empty_like(self.flat)
        _stream_sum(self.flat)  # compile outside the timing

    def time_stream_sum(self, shape):
        _stream_sum(self.flat)

    def time_copy(self, shape):
        # reads and writes every byte: twice the traffic of a read
        np.copyto(self.out, self.flat)
