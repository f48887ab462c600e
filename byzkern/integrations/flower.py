"""Byzantine-robust aggregation for Flower (``pip install byzkern[flower]``; flwr's Message API,
``flwr.serverapp.strategy``, flwr >= 1.21).

``RobustFedAvg(pipeline)`` is Flower's ``FedAvg`` with the weighted average of the clients'
arrays replaced by any byzkern rule or ``Pipeline`` on the flattened arrays, one row per
client; sampling, configuration, evaluation and metrics stay FedAvg's, with its defaults:

    strategy = RobustFedAvg(bk.Pipeline(bk.nnm(f=1), bk.cwtm(f=1)), min_available_nodes=5)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()))

Weights: a rule that takes ``weights`` (geomed) gets each client's ``weighted_by_key`` metric
(the sample count, "num-examples" by default), like FedAvg's weighted mean, but capped at the
median count, since a Byzantine client can report any count: a claim of 1e9 samples weighs what
a typical client's does, and a count that is negative or not finite weighs 0. Other rules and
pipelines treat every client alike. The rows are
the clients' models, which share a large common component: byzkern's distances stay exact there
(``pairwise_sqdist``), where Flower's own Krum uses the Gram trick.

A round with too few replies for the rule (n <= 2f for cwtm, krum, ...) raises the rule's
ValueError; set ``min_train_nodes`` and ``min_available_nodes`` so that every round has enough.
"""
from __future__ import annotations

from collections import Counter
from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from .. import _checks
from ..model import flatten, unflatten
from ..pipeline import accepts


def aggregate_arrayrecords(records, pipeline, weighted_by_key="num-examples"):
    """One ArrayRecord from the clients' replies ``records`` (a list of RecordDict, each with one
    ArrayRecord and one MetricRecord, as Flower checks them): every client's arrays flattened
    into one row of X (n, d), ``pipeline(X)`` (with ``weights=`` the clients' ``weighted_by_key``
    values, capped, when the rule takes weights), cut back into the arrays' keys, shapes and
    dtypes: for each array, the dtype most replies carry, ties going to a float and then to the
    wider (a Byzantine reply of int8 arrays must not make the model int8). Replies may list the
    keys in any order. Mixed dtypes are aggregated in their common NumPy type. Cost: two copies
    of every reply (its flat row, then X), one run of the rule.
    """
    if not records:
        raise ValueError("aggregate_arrayrecords needs at least one reply")
    arrays = [next(iter(r.array_records.values())) for r in records]
    keys = list(arrays[0].keys())
    for i, a in enumerate(arrays):
        if set(a.keys()) != set(keys):
            raise ValueError(f"reply {i} carries arrays {_layout(a)}; reply 0 carries {_layout(arrays[0])}")
    ndarrays = [[a[k].numpy() for k in keys] for a in arrays]
    rows, specs = zip(*(flatten(x) for x in ndarrays))
    for i, spec in enumerate(specs):
        if spec != specs[0]:
            raise ValueError(f"reply {i} carries arrays {_layout(arrays[i])}; reply 0 carries {_layout(arrays[0])}")
    options = {}
    if accepts(pipeline, "weights"):
        options["weights"] = _capped([next(iter(r.metric_records.values()))[weighted_by_key] for r in records])
    out = pipeline(np.stack(rows), **options)
    pieces = unflatten(out, specs[0])
    dtypes = [_most_carried(reply[i].dtype for reply in ndarrays) for i in range(len(keys))]
    # integer arrays (step counters) come back rounded: a weighted mean of equal integers may
    # land an ulp below them, which a cast would truncate to the integer below
    return ArrayRecord({k: Array(np.asarray(np.rint(p) if np.issubdtype(dtype, np.integer) else p, dtype=dtype))
                        for k, p, dtype in zip(keys, pieces, dtypes)})


def _most_carried(dtypes):
    counts = Counter(dtypes)
    return max(counts, key=lambda dt: (counts[dt], dt.kind == "f", dt.itemsize))


def _capped(counts):
    """Clients' reported sample counts as weights: each at most the median count, where a count
    that is negative or not finite is 0; all 1 where the median is 0 (most clients report no
    samples, or a count they cannot have)."""
    counts = np.array(counts, dtype=np.float64)
    counts[~(np.isfinite(counts) & (counts >= 0))] = 0.0
    weights = np.minimum(counts, np.median(counts))
    return weights if weights.max() > 0 else np.ones_like(weights)


def _layout(record):
    return {k: tuple(v.shape) for k, v in record.items()}


class RobustFedAvg(FedAvg):
    """FedAvg whose aggregation of the clients' arrays is ``pipeline`` (any byzkern rule or
    Pipeline, see :func:`aggregate_arrayrecords`). Every other option is FedAvg's, with its
    defaults (``min_available_nodes=2``, ``weighted_by_key="num-examples"``, ...).
    """

    def __init__(self, pipeline, **fedavg_options):
        _checks.function(pipeline, "pipeline", "callable (a byzkern rule or Pipeline)")
        super().__init__(**fedavg_options)
        self.pipeline = pipeline

    def summary(self):
        log(INFO, "\t├──> Robust aggregation: %r", self.pipeline)
        super().summary()

    def aggregate_train(self, server_round, replies):
        """The replies' arrays through the pipeline; metrics as FedAvg aggregates them."""
        # Flower's own FedMedian and Krum check replies with this same FedAvg helper.
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        arrays = aggregate_arrayrecords(contents, self.pipeline, self.weighted_by_key)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)
