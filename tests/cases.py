"""Hand-checked cases: (op, X, options, expected), each worked out on paper in its comment.

Columns of X are workers' coordinates; a 1-column X is a list of scalars.
"""
import numpy as np

nan, inf = np.nan, np.inf


def col(*values):
    return np.array(values, dtype=np.float64)[:, None]


KRUM_ROWS = np.array([[0, 0], [1, 0], [0, 1], [10, 10], [11, 10]], dtype=np.float64)
# squared distances: d01 = d02 = 1, d12 = 2, d34 = 1, d13 = d23 = 181, d03 = 200, d14 = 200,
# d24 = 202, d04 = 221. With f = 1, k = n - f - 2 = 2: scores 2, 3, 3, 182, 201 -> row 0.

CASES = [
    # mean
    ("mean", col(1, 2, 3, 6), {}, [3.0]),
    # cwmed: odd n, even n (mean of the two middle values), ties, NaN above +Inf
    ("cwmed", col(3, 1, 2), {}, [2.0]),
    ("cwmed", col(1, 2, 3, 10), {}, [2.5]),
    ("cwmed", col(1, 1, 1, 5), {}, [1.0]),
    ("cwmed", col(nan, 1, 2), {}, [2.0]),            # sorted 1, 2, NaN
    ("cwmed", col(inf, -inf, 0), {}, [0.0]),
    ("cwmed", np.array([[1.0, 4], [3, 2], [2, 6]]), {}, [2.0, 4.0]),
    # cwtm: drop f lowest and f highest
    ("cwtm", col(1, 2, 3, 4, 100), {"f": 1}, [3.0]),
    ("cwtm", col(5, 1, 3), {"f": 1}, [3.0]),           # n = 2f + 1: the median
    ("cwtm", col(1, 2, 3, 6), {"f": 0}, [3.0]),        # f = 0: the mean
    ("cwtm", col(nan, 1, 2, 3, -inf), {"f": 1}, [2.0]),  # sorted -inf, 1, 2, 3, NaN
    ("cwtm", col(2, 2, 2, 7, 7), {"f": 2}, [2.0]),     # ties at both trimmed ends
    # meamed: median 3, distances 2 1 0 1 97 -> keep 3, 2, 4, 1
    ("meamed", col(1, 2, 3, 4, 100), {"f": 1}, [2.5]),
    # median 2, distances 2 0 2: the tie between 0 and 4 goes to the smaller value
    ("meamed", col(0, 2, 4), {"f": 1}, [1.0]),
    # even n: median 2.5, distances 1.5 .5 .5 1.5 -> 2, 3, then 1 (tie with 4, smaller wins)
    ("meamed", col(4, 3, 2, 1), {"f": 1}, [2.0]),
    ("meamed", col(nan, 1, 2, 3, inf), {"f": 2}, [2.0]),
    # krum / multikrum on KRUM_ROWS
    ("krum", KRUM_ROWS, {"f": 1}, [0.0, 0.0]),
    # k = n - f - 1 = 3: scores 202, 184, 184, 363, 403 -> row 1 (tie with row 2: lower index)
    ("krum", KRUM_ROWS, {"f": 1, "k": 3}, [1.0, 0.0]),
    ("multikrum", KRUM_ROWS, {"f": 1, "m": 3}, [1 / 3, 1 / 3]),
    ("multikrum", KRUM_ROWS, {"f": 1, "m": 1}, [0.0, 0.0]),
    # tie in score (rows 0 and 1 both score 4): the lower index wins
    ("krum", np.array([[1.0, 0], [-1, 0], [0, 5]]), {"f": 0}, [1.0, 0.0]),
    ("krum", np.array([[-1.0, 0], [1, 0], [0, 5]]), {"f": 0}, [-1.0, 0.0]),
    # NaN row: infinite score
    ("krum", np.array([[nan, 0], [0, 1], [0, 2], [0, 4], [9, 9]]), {"f": 1}, [0.0, 2.0]),
    # geomed: one step from zero, nu = 0.1: b = (1/0.1, 1/2) -> z = 2 * 0.5 / 10.5
    ("geomed", col(0, 2), {"maxiter": 1, "eps": 0.0, "nu": 0.1, "init": "zero"}, [1 / 10.5]),
    # weights 3 and 1, nu = 1, one step from zero: b = (3/1, 1/1) -> z = 1 / 4
    ("geomed", col(0, 1), {"maxiter": 1, "eps": 0.0, "nu": 1.0, "init": "zero",
                           "weights": np.array([3.0, 1.0])}, [0.25]),
    # symmetric square: the mean is the geometric median and a fixed point
    ("geomed", np.array([[1.0, 1], [1, -1], [-1, 1], [-1, -1]]), {}, [0.0, 0.0]),
    # NaN row has zero weight: the rest is symmetric around 0
    ("geomed", np.array([[1.0, 1], [nan, 2], [-1, -1]]), {}, [0.0, 0.0]),
    # cclip from v = 0, tau = 1: scales (1, 1/10) -> v = (0 + 1) / 2
    ("cclip", col(0, 10), {"tau": 1.0, "init": np.array([0.0])}, [0.5]),
    # default init: the median 1; diffs -1, 0, 9, scales 1, 1, 1/9 -> 1 + (-1 + 0 + 1) / 3
    ("cclip", col(0, 1, 10), {"tau": 1.0}, [1.0]),
    # norm_filter: norms 5, 1, 2, 10 -> drop row 3
    ("norm_filter", np.array([[3.0, 4], [1, 0], [0, 2], [6, 8]]), {"f": 1}, [4 / 3, 2.0]),
    # all norms tie: the higher index is dropped
    ("norm_filter", np.array([[1.0, 0], [0, 1], [1, 0]]), {"f": 1}, [0.5, 0.5]),
    # l1 norms 2 and 1.8 vs l2 norms 1.41 and 1.8
    ("norm_filter", np.array([[1.0, 1], [0, 1.8]]), {"f": 1, "q": 1}, [0.0, 1.8]),
    ("norm_filter", np.array([[1.0, 1], [0, 1.8]]), {"f": 1, "q": 2}, [1.0, 1.0]),
    ("norm_filter", np.array([[1.0, 1], [0, 1.8]]), {"f": 1, "norms": np.array([5.0, 1.0])}, [0.0, 1.8]),
    # pre-aggregators (results are (n', d))
    ("nnm", col(0, 1, 10), {"f": 1}, [[0.5], [0.5], [5.5]]),
    ("nnm", col(0, 1, 2), {"f": 1}, [[0.5], [0.5], [1.5]]),  # row 1: tie 0 vs 2 -> index 0
    ("clip", np.array([[3.0, 4], [0.3, 0.4], [0, 0]]), {"tau": 1.0}, [[0.6, 0.8], [0.3, 0.4], [0, 0]]),
    ("pairwise_sqdist", np.array([[0.0, 0], [3, 4]]), {}, [[0.0, 25], [25, 0]]),
    ("pairwise_sqdist", np.array([[0.0, 0], [3, 4], [nan, 1]]), {},
     [[0.0, 25, inf], [25, 0, inf], [inf, inf, 0]]),
]
