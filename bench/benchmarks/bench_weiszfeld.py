"""The iterative rules: geomed (8 Weiszfeld steps) and cclip (median init, one step) beside the
same loops written in NumPy and torch."""
from .common import SHAPES, _Family, cases


class Weiszfeld(_Family):
    params = [cases("weiszfeld"), SHAPES]
