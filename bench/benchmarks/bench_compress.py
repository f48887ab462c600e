"""Compressors (topk and randk at k = d/100, qsgd, natural, sign, scaled_sign) beside NumPy and
torch.topk; to_bytes/from_bytes of a QSGD message beside a memcpy of the same bytes."""
from .common import SHAPES, _Family, cases


class Compress(_Family):
    params = [cases("compress"), SHAPES]
