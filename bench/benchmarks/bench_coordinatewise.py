"""mean, cwmed, cwtm, meamed on each CPU backend beside NumPy's and torch's way."""
from .common import SHAPES, _Family, cases


class Coordinatewise(_Family):
    params = [cases("coordinatewise"), SHAPES]
