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

A reply the strategy cannot aggregate (other keys or shapes than the model it sent, metrics
unlike most replies', a count that is not one) is logged and dropped, like a client's error;
FedAvg would end the run. A round with too few replies for the rule (n <= 2f for cwtm, krum,
...) raises the rule's ValueError; set ``min_train_nodes`` and ``min_available_nodes`` so that
every round has enough.
"""
from __future__ import annotations

import math
from collections import Counter
from logging import INFO, WARNING

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
    counts = [_metrics(r)[weighted_by_key] for r in records] if accepts(pipeline, "weights") else None
    return _aggregated(keys, [[a[k].numpy() for k in keys] for a in arrays], pipeline, counts)


def _aggregated(keys, ndarrays, pipeline, counts):
    """aggregate_arrayrecords on replies already read: ``ndarrays[i]`` is reply i's arrays in the
    order of ``keys``, ``counts`` its sample counts (None: the rule takes no weights)."""
    rows, specs = zip(*(flatten(x) for x in ndarrays))
    for i, spec in enumerate(specs):
        if spec != specs[0]:
            raise ValueError(f"reply {i} carries arrays {_shapes(keys, ndarrays[i])}; "
                             f"reply 0 carries {_shapes(keys, ndarrays[0])}")
    options = {} if counts is None else {"weights": _capped(counts)}
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


def _shapes(keys, ndarrays):
    return {k: a.shape for k, a in zip(keys, ndarrays)}


def _metrics(content):
    return next(iter(content.metric_records.values()))


def _metric_layout(metrics):
    """A MetricRecord's keys, each with its list's length (None for a number): the replies'
    metrics are averaged key by key and list by list, so they must agree on these."""
    return {k: len(v) if isinstance(v, list) else None for k, v in metrics.items()}


def _most_common(layouts):
    """The layout (a dict) most replies carry; None where no reply carries one."""
    counts = Counter(tuple(sorted(layout.items())) for layout in layouts if layout is not None)
    return dict(counts.most_common(1)[0][0]) if counts else None


def _is_count(value):
    if isinstance(value, bool):
        return False
    return value >= 0 if isinstance(value, int) else isinstance(value, float) and math.isfinite(value) and value >= 0


class RobustFedAvg(FedAvg):
    """FedAvg whose aggregation of the clients' arrays is ``pipeline`` (any byzkern rule or
    Pipeline, see :func:`aggregate_arrayrecords`). Every other option is FedAvg's, with its
    defaults (``min_available_nodes=2``, ``weighted_by_key="num-examples"``, ...).

    A reply that cannot be aggregated is logged and dropped, as FedAvg drops a client's error:
    arrays with other keys or shapes than the model sent (or, before any was sent, than most
    replies carry), arrays that do not read as numbers, metrics with other keys or list lengths
    than most replies carry, or a ``weighted_by_key`` that is not a count. FedAvg instead ends
    the run on any such reply, which would let one Byzantine client stop the training.
    """

    def __init__(self, pipeline, **fedavg_options):
        _checks.function(pipeline, "pipeline", "callable (a byzkern rule or Pipeline)")
        super().__init__(**fedavg_options)
        self.pipeline = pipeline
        self._sent_layout = None

    def summary(self):
        log(INFO, "\t├──> Robust aggregation: %r", self.pipeline)
        super().summary()

    def configure_train(self, server_round, arrays, config, grid):
        """FedAvg's; the arrays' keys and shapes are the layout every reply must carry."""
        self._sent_layout = _layout(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        """The well-formed replies' arrays through the pipeline; metrics as FedAvg aggregates them."""
        # Flower's own FedMedian and Krum check replies with this same FedAvg helper.
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        kept = self._well_formed(valid, with_arrays=True)
        if not kept:
            return None, None
        contents, read = zip(*kept)
        keys = list(read[0])
        counts = [_metrics(c)[self.weighted_by_key] for c in contents] if accepts(self.pipeline, "weights") else None
        arrays = _aggregated(keys, [[r[k] for k in keys] for r in read], self.pipeline, counts)
        return arrays, self.train_metrics_aggr_fn(list(contents), self.weighted_by_key)

    def aggregate_evaluate(self, server_round, replies):
        """The well-formed replies' metrics, as FedAvg aggregates them."""
        valid, _ = self._check_and_log_replies(replies, is_train=False, validate=False)
        kept = self._well_formed(valid, with_arrays=False)
        if not kept:
            return None
        return self.evaluate_metrics_aggr_fn([content for content, _ in kept], self.weighted_by_key)

    def _well_formed(self, messages, with_arrays):
        """``[(content, arrays)]`` for the replies that can be aggregated (``arrays``: a dict of
        NumPy arrays, or None without ``with_arrays``); each other reply is logged and dropped.
        Raises ValueError when replies came and none can be aggregated: then the strategy's
        configuration, not a client, is at fault (``weighted_by_key`` names no metric, ...)."""
        metric_layouts = [_metric_layout(_metrics(m.content)) if len(m.content.metric_records) == 1 else None
                          for m in messages]
        usual_metrics = _most_common(metric_layouts)
        if with_arrays:
            array_layouts = [_layout(next(iter(m.content.array_records.values())))
                             if len(m.content.array_records) == 1 else None for m in messages]
            layout = self._sent_layout if self._sent_layout is not None else _most_common(array_layouts)
        kept, problems = [], []
        for message, metric_layout in zip(messages, metric_layouts):
            content = message.content
            if metric_layout is None:
                problem = f"{len(content.metric_records)} MetricRecords, not one"
            elif metric_layout != usual_metrics:
                problem = f"metrics {metric_layout}, where most replies carry {usual_metrics}"
            elif not _is_count(_metrics(content).get(self.weighted_by_key)):
                problem = f"{self.weighted_by_key!r} = {_metrics(content).get(self.weighted_by_key)!r}, not a count"
            elif with_arrays:
                problem, arrays = _read_arrays(content, layout)
            else:
                problem, arrays = None, None
            if problem is None:
                kept.append((content, arrays))
            else:
                problems.append(problem)
                log(WARNING, "\t> Dropped the reply of node %d: it carries %s", message.metadata.src_node_id, problem)
        if messages and not kept:
            raise ValueError(f"no reply can be aggregated; the first carries {problems[0]}")
        return kept


def _read_arrays(content, layout):
    """``(problem, arrays)``: a reply's arrays read as NumPy, or why they cannot be aggregated
    with arrays of ``layout``."""
    if len(content.array_records) != 1:
        return f"{len(content.array_records)} ArrayRecords, not one", None
    record = next(iter(content.array_records.values()))
    # The declared shapes first: a reply claiming other shapes is not read at all.
    if _layout(record) != layout:
        return f"arrays {_layout(record)}, where the model is {layout}", None
    try:
        arrays = {k: a.numpy() for k, a in record.items()}
    except Exception as error:  # the bytes are the client's: any failure to read them is its reply's fault
        return f"arrays that do not read ({type(error).__name__}: {error})", None
    if _shapes(arrays, arrays.values()) != layout:
        return f"arrays whose data has shapes {_shapes(arrays, arrays.values())}, where the model is {layout}", None
    odd = {k: str(a.dtype) for k, a in arrays.items() if a.dtype.kind not in "biuf"}
    if odd:
        return f"arrays that are not real numbers {odd}", None
    return None, arrays
