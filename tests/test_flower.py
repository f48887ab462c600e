"""byzkern's Flower strategy through Flower's own API: real RecordDicts and Messages, and one
real simulation (Ray on loopback) with a Byzantine client, in flower_simulation.py.
"""
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords as flower_weighted_mean

import byzkern as bk
from byzkern.integrations.flower import RobustFedAvg, aggregate_arrayrecords

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"dense.weight": (3, 4), "dense.bias": (4,), "head": (2, 2, 2)}


def client_arrays(rng, scale=1.0):
    """One client's model: float32 layers near a common model, plus an int64 step counter."""
    arrays = {k: (scale * (1000.0 + 0.1 * rng.standard_normal(s))).astype(np.float32) for k, s in SHAPES.items()}
    return {**arrays, "steps": np.array(7, dtype=np.int64)}


def reply_content(arrays, num_examples, loss=0.0):
    return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                       "metrics": MetricRecord({"num-examples": num_examples, "train-loss": loss})})


def flat(arrays):
    """A client's dict of arrays, or an ArrayRecord, as one float64 row."""
    values = [a.numpy() if isinstance(a, Array) else a for a in arrays.values()]
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in values])


@pytest.fixture
def replies():
    """Five clients' replies; the last is Byzantine and sends -100 times its model."""
    rng = np.random.default_rng(0)
    clients = [client_arrays(rng) for _ in range(4)] + [client_arrays(rng, scale=-100.0)]
    counts = [10, 20, 30, 40, 50]
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    return clients, counts, [reply_content(a, c, l) for a, c, l in zip(clients, counts, losses)]


def test_aggregate_is_the_rule_on_the_flattened_arrays(replies):
    clients, _, records = replies
    out = aggregate_arrayrecords(records, bk.cwtm(f=1))
    X = np.stack([flat(a) for a in clients])
    assert list(out.keys()) == list(clients[0].keys())
    np.testing.assert_allclose(flat(out),
                               bk.cwtm(X, f=1), rtol=1e-6)
    for key, array in out.items():
        assert array.numpy().shape == clients[0][key].shape
        assert array.numpy().dtype == clients[0][key].dtype
    assert int(out["steps"].numpy()) == 7
    honest_mean = X[:4].mean(axis=0)
    assert np.abs(flat(out) - honest_mean).max() < 0.3
    # Flower's own FedAvg aggregation is dragged far away by the one Byzantine client.
    fedavg = flower_weighted_mean(records, "num-examples")
    assert np.abs(flat(fedavg) - honest_mean).max() > 1e4


def test_weights_go_to_rules_that_take_them(replies):
    clients, counts, records = replies
    X = np.stack([flat(a) for a in clients])
    weighted = aggregate_arrayrecords(records, bk.geomed(maxiter=50))
    capped = np.minimum(counts, np.median(counts))  # 10, 20, 30, 30, 30
    expected = bk.geomed(X, maxiter=50, weights=capped)
    np.testing.assert_allclose(flat(weighted), expected, rtol=1e-5)
    assert not np.allclose(expected, bk.geomed(X, maxiter=50), rtol=1e-6)
    # A pipeline passes its options to every stage, so it gets no weights.
    piped = aggregate_arrayrecords(records, bk.Pipeline(bk.nnm(f=1), bk.cwtm(f=1)))
    np.testing.assert_allclose(flat(piped),
                               bk.Pipeline(bk.nnm(f=1), bk.cwtm(f=1))(X), rtol=1e-6)


@pytest.mark.parametrize("claim", [1e9, -5.0, float("nan"), float("inf")])
def test_a_byzantine_count_weighs_no_more_than_the_median(replies, claim):
    """The Byzantine client (the last) claims ``claim`` samples: geomed stays by the honest
    models, as with the counts capped at the median, and the round runs."""
    clients, counts, _ = replies
    X = np.stack([flat(a) for a in clients])
    records = [reply_content(a, c) for a, c in zip(clients, counts[:4] + [claim])]
    got = flat(aggregate_arrayrecords(records, bk.geomed(maxiter=50)))
    assert np.abs(got - X[:4].mean(axis=0)).max() < 1.0
    valid = np.array(counts[:4] + [claim if np.isfinite(claim) and claim >= 0 else 0.0])
    np.testing.assert_allclose(got, bk.geomed(X, maxiter=50, weights=np.minimum(valid, np.median(valid))), rtol=1e-5)


def test_the_dtypes_are_those_most_replies_carry_and_keys_may_come_in_any_order(replies):
    clients, counts, records = replies
    byzantine = {k: np.zeros(np.shape(v), np.int8) for k, v in reversed(clients[0].items())}
    out = aggregate_arrayrecords([reply_content(byzantine, 10)] + records[:4], bk.cwtm(f=1))
    assert list(out.keys()) == list(reversed(clients[0].keys()))
    assert {k: a.numpy().dtype for k, a in out.items()} == {k: np.asarray(v).dtype for k, v in clients[0].items()}
    X = np.stack([0 * flat(clients[0])] + [flat(a) for a in clients[:4]])
    np.testing.assert_allclose(flat({k: out[k] for k in clients[0]}), bk.cwtm(X, f=1), rtol=1e-6)
    # two int8 replies beside two float32 and one float64 one: a tie, which goes to the float
    wider = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in clients[2].items()}
    honest = [reply_content(a, 10) for a in (clients[0], clients[1], wider)]
    out = aggregate_arrayrecords([reply_content(byzantine, 10)] * 2 + honest, bk.cwtm(f=2))
    assert out["head"].numpy().dtype == np.float32 and out["steps"].numpy().dtype == np.int64


def test_mismatched_replies_raise(replies):
    clients, _, records = replies
    odd = dict(clients[0], head=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="reply 5 carries arrays"):
        aggregate_arrayrecords(records + [reply_content(odd, 10)], bk.cwtm(f=1))
    with pytest.raises(ValueError, match="at least one reply"):
        aggregate_arrayrecords([], bk.cwmed())


def reply_message(content=None, error=None, node=1):
    """A reply as the server receives it: Flower builds these from the SuperLink's metadata."""
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                        reply_to_message_id=f"i{node}", group_id="1", created_at=time.time(),
                        ttl=60.0, message_type="train")
    return Message(content, metadata=metadata) if error is None else Message(error, metadata=metadata)


def test_aggregate_train_on_real_messages(replies):
    clients, _, records = replies
    messages = [reply_message(r, node=i + 1) for i, r in enumerate(records)]
    messages.append(reply_message(error=Error(code=0, reason="client crashed"), node=99))
    strategy = RobustFedAvg(bk.cwtm(f=1))
    arrays, metrics = strategy.aggregate_train(1, messages)
    expected = aggregate_arrayrecords(records, bk.cwtm(f=1))
    for key in expected:
        np.testing.assert_array_equal(arrays[key].numpy(), expected[key].numpy())
    # Metrics are FedAvg's: the mean weighted by num-examples.
    assert metrics["train-loss"] == pytest.approx(np.average([1, 2, 3, 4, 5], weights=[10, 20, 30, 40, 50]))
    assert strategy.aggregate_train(1, []) == (None, None)


def saved(array):
    """``array``'s bytes as Flower's Array carries them, so a reply can declare other dtypes and shapes."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def malformed_replies(arrays):
    """Replies a Byzantine client can send that FedAvg cannot aggregate, each with what makes it so."""
    def content(array_records=None, metrics=None):
        records = {"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()})} if array_records is None else array_records
        return RecordDict({**records, "metrics": MetricRecord({"num-examples": 10, "train-loss": 1.0}
                                                              if metrics is None else metrics)})

    def record(**changes):
        return {"arrays": ArrayRecord({**{k: Array(v) for k, v in arrays.items()}, **changes})}

    head = arrays["head"]
    return {
        "another shape": content(record(head=Array(np.zeros((2, 4), np.float32)))),
        "another key": content(record(extra=Array(np.zeros(2, np.float32)))),
        "a key missing": content({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items() if k != "head"})}),
        "two ArrayRecords": content({**record(), "more": ArrayRecord({"head": Array(head)})}),
        "no count": content(metrics={"train-loss": 1.0}),
        "a negative count": content(metrics={"num-examples": -5, "train-loss": 1.0}),
        "a count that is not finite": content(metrics={"num-examples": float("nan"), "train-loss": 1.0}),
        "a list for a count": content(metrics={"num-examples": [10, 10], "train-loss": 1.0}),
        "a list for a number": content(metrics={"num-examples": 10, "train-loss": [1.0, 2.0]}),
        "complex arrays": content(record(head=Array(head.astype(np.complex64)))),
        "bytes that do not read": content(record(head=Array(dtype="float32", shape=head.shape,
                                                            stype="numpy.ndarray", data=b"not an array"))),
        "bytes of another shape": content(record(head=Array(dtype="float32", shape=head.shape, stype="numpy.ndarray",
                                                            data=saved(head.reshape(2, 4))))),
    }


@pytest.mark.parametrize("kind", list(malformed_replies(client_arrays(np.random.default_rng(0)))))
def test_a_malformed_reply_is_dropped_and_the_round_goes_on(replies, kind, caplog):
    # FedAvg's checks end the run (InconsistentMessageReplies) on any of these, so one Byzantine
    # client could stop the training; the strategy drops the reply as it drops a client's error.
    clients, _, records = replies
    byzantine = malformed_replies(clients[0])[kind]
    messages = [reply_message(r, node=i + 1) for i, r in enumerate(records)]
    for at in (0, 2, len(messages)):
        strategy = RobustFedAvg(bk.cwtm(f=1))
        with caplog.at_level(logging.WARNING, logger="flwr"):
            arrays, metrics = strategy.aggregate_train(1, messages[:at] + [reply_message(byzantine, node=77)] + messages[at:])
        assert "Dropped the reply of node 77" in caplog.text
        expected = aggregate_arrayrecords(records, bk.cwtm(f=1))
        for key in expected:
            np.testing.assert_array_equal(arrays[key].numpy(), expected[key].numpy())
        assert metrics["train-loss"] == pytest.approx(np.average([1, 2, 3, 4, 5], weights=[10, 20, 30, 40, 50]))
        caplog.clear()
    strategy = RobustFedAvg(bk.cwtm(f=1))
    evaluation = [reply_message(RecordDict({"metrics": r["metrics"]}), node=i + 1) for i, r in enumerate(records)]
    malformed = RecordDict({"metrics": next(iter(byzantine.metric_records.values()))})
    metrics = strategy.aggregate_evaluate(1, evaluation + [reply_message(malformed, node=77)])
    losses, counts = [1, 2, 3, 4, 5], [10, 20, 30, 40, 50]
    if "Dropped the reply of node 77" not in caplog.text:  # its metrics were well formed
        assert kind not in ("no count", "a negative count", "a count that is not finite", "a list for a count",
                            "a list for a number")
        losses, counts = losses + [1], counts + [10]
    assert metrics["train-loss"] == pytest.approx(np.average(losses, weights=counts))


def test_rounds_where_no_reply_can_be_aggregated(replies):
    _, _, records = replies
    strategy = RobustFedAvg(bk.cwtm(f=1), weighted_by_key="samples")
    with pytest.raises(ValueError, match="no reply can be aggregated; the first carries 'samples' = None"):
        strategy.aggregate_train(1, [reply_message(r, node=i + 1) for i, r in enumerate(records)])
    assert strategy.aggregate_evaluate(1, []) is None


def test_defaults_are_fedavgs():
    ours, theirs = RobustFedAvg(bk.cwmed()), FedAvg()
    for option in ("fraction_train", "fraction_evaluate", "min_train_nodes", "min_available_nodes",
                   "weighted_by_key", "arrayrecord_key", "configrecord_key"):
        assert getattr(ours, option) == getattr(theirs, option)
    with pytest.raises(TypeError):
        RobustFedAvg("cwmed")


def test_simulation_with_a_byzantine_client():
    # A process of its own: Ray leaves threads and open files behind at shutdown, which would
    # trip this suite's warnings-as-errors and can keep the pytest process from exiting.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # Ray listens on 127.0.0.1 only
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("flower_simulation.py"))],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(errors) == {"honest FedAvg", "attacked FedAvg", "attacked RobustFedAvg", "malformed RobustFedAvg"}
    assert errors["attacked FedAvg"] > 100
    # Every run starts at distance ||w*|| = 3.9 from the solution; the honest one ends at 0.36.
    # cwtm averages the 3 middle of 5 values per coordinate, so one honest client is always
    # dropped: it ends a little farther (0.51 seen), within 0.25 of the honest run.
    assert errors["attacked RobustFedAvg"] <= errors["honest FedAvg"] + 0.25
    # The malformed reply is dropped each round (FedAvg would end the run): cwtm on 4 honest rows.
    assert errors["malformed RobustFedAvg"] <= errors["honest FedAvg"] + 0.25
