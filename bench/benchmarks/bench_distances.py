"""pairwise_sqdist and the rules built on it (krum, multikrum, nnm) beside the Gram trick in
NumPy and torch.cdist."""
from .common import SHAPES, _Family, cases


class Distances(_Family):
    params = [cases("distances"), SHAPES]
