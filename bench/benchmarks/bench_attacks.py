"""Attacks on the (n, d) honest rows with f = n/5 beside NumPy and torch; optimized ALIE over 16
strengths with cwtm beside 16 single cwtm calls."""
from .common import SHAPES, _Family, cases


class Attacks(_Family):
    params = [cases("attacks"), SHAPES]
