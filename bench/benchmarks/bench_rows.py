"""Row-wise rules and pre-aggregators: norm_filter, bucketing, resampling, clip beside NumPy
(and torch for clip)."""
from .common import SHAPES, _Family, cases


class Rows(_Family):
    params = [cases("rows"), SHAPES]
