"""The simulation layer: problems (finite-difference gradients), data, partitioners, the
simulated cluster and the history."""
import json

import numpy as np
import pytest

import byzkern as bk
from byzkern import algorithms, sim


def _directional_check(problem, x, idx, rng, h, rtol):
    """grad . v against the central difference of the loss along a random unit v."""
    v = rng.standard_normal(problem.dim)
    v /= np.linalg.norm(v)
    g = problem.gradients(x, idx[None, :])[0]
    dx = (v * h).astype(problem.dtype)
    fd = (problem.loss(x + dx, idx) - problem.loss(x - dx, idx)) / (2 * h)
    assert np.dot(g.astype(np.float64), v) == pytest.approx(fd, rel=rtol, abs=rtol * 1e-2)


def _linear_problems(rng):
    A = rng.standard_normal((30, 6))
    yield sim.LogisticRegression(A, np.where(rng.random(30) < 0.5, -1.0, 1.0), lam=0.05)
    yield sim.LeastSquares(A, rng.standard_normal(30), lam=0.1)
    yield sim.SoftmaxRegression(rng.random((30, 2, 3)), rng.integers(0, 4, 30), lam=0.01, classes=4)


def test_linear_problem_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    for problem in _linear_problems(rng):
        x = rng.standard_normal(problem.dim)
        for _ in range(5):
            _directional_check(problem, x, rng.choice(30, 12, replace=False), rng, 1e-5, 1e-6)


def test_linear_problem_full_coordinate_gradient():
    rng = np.random.default_rng(1)
    for problem in _linear_problems(rng):
        x = rng.standard_normal(problem.dim)
        idx = np.arange(30)
        g = problem.gradients(x, idx[None])[0]
        e = np.eye(problem.dim) * 1e-6
        fd = [(problem.loss(x + e[k], idx) - problem.loss(x - e[k], idx)) / 2e-6 for k in range(problem.dim)]
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_worker_rows_weights_and_per_sample_gradients_agree():
    rng = np.random.default_rng(2)
    for problem in _linear_problems(rng):
        x = rng.standard_normal(problem.dim)
        idx = rng.integers(0, 30, (4, 5))
        G = problem.gradients(x, idx)
        for i in range(4):
            np.testing.assert_allclose(G[i], problem.gradients(x, idx[i:i + 1])[0], rtol=1e-12)
        np.testing.assert_allclose(problem.sample_gradients(x, idx).mean(axis=1), G, rtol=1e-10, atol=1e-12)
        w = rng.random((4, 5))
        w /= w.sum(axis=1, keepdims=True)
        expected = np.einsum("nb,nbd->nd", w, problem.sample_gradients(x, idx))
        np.testing.assert_allclose(problem.gradients(x, idx, weights=w), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_torch_net_gradients_match_finite_differences(net):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    module = sim.mlp(hidden=(16,)) if net == "mlp" else sim.cnn()
    problem = sim.TorchNet(module, rng.random((20, 28, 28)), rng.integers(0, 10, 20), lam=1e-3)
    x = problem.init(seed=0)
    for _ in range(3):
        # float32 model: a wide step keeps rounding small next to the difference
        _directional_check(problem, x, rng.choice(20, 8, replace=False), rng, 1e-2, 2e-2)
    idx = rng.integers(0, 20, (3, 4))
    G = problem.gradients(x, idx)
    for i in range(3):
        np.testing.assert_allclose(G[i], problem.gradients(x, idx[i:i + 1])[0], rtol=1e-4, atol=1e-6)


def test_libsvm_and_mnist_data():
    A, y = sim.data.libsvm("a9a")
    assert A.shape == (32561, 123) and int((y > 0).sum()) == 7841
    assert set(np.unique(A)) <= {0.0, 1.0}
    A, y = sim.data.libsvm("w8a")
    assert A.shape == (49749, 300) and int((y > 0).sum()) == 1479
    train, train_labels, test, test_labels = sim.data.mnist()
    assert train.shape == (8000, 28, 28) and test.shape == (2000, 28, 28)
    assert 0 <= train.min() and train.max() <= 1
    total = np.bincount(np.concatenate([train_labels, test_labels]), minlength=10)
    assert total.sum() == 10000
    # stratified: each class's training share is within one image of 80%
    assert np.all(np.abs(np.bincount(train_labels, minlength=10) - 0.8 * total) <= 1)
    again = sim.data.mnist.__wrapped__()
    np.testing.assert_array_equal(again[1], train_labels)


def test_synthetic_least_squares_is_consistent():
    A, b, w_star = sim.data.synthetic_least_squares(samples=50, dim=10, seed=1)
    np.testing.assert_allclose(A @ w_star, b)
    assert sim.LeastSquares(A, b).loss(w_star) == pytest.approx(0.0, abs=1e-20)


def _is_partition(shards, samples):
    joined = np.concatenate(shards)
    return len(joined) == samples and np.array_equal(np.sort(joined), np.arange(samples))


def test_sequential_and_iid_partitions():
    shards = sim.partition.sequential(103, 10)
    assert _is_partition(shards, 103) and {len(s) for s in shards} == {10, 11}
    assert all(np.all(np.diff(s) == 1) for s in shards)
    shards = sim.partition.iid(103, 10, seed=1)
    assert _is_partition(shards, 103) and {len(s) for s in shards} == {10, 11}
    assert not all(np.all(np.diff(s) == 1) for s in shards)


def test_dirichlet_partition_class_proportions():
    labels = np.repeat(np.arange(10), 500)
    mixed = sim.partition.dirichlet(labels, 17, alpha=1e4, seed=0)
    assert _is_partition(mixed, 5000)
    for shard in mixed:  # huge alpha: every worker holds about 1/17 of every class
        np.testing.assert_allclose(np.bincount(labels[shard], minlength=10), 500 / 17, atol=4)
    skewed = sim.partition.dirichlet(labels, 17, alpha=0.1, seed=0)
    assert _is_partition(skewed, 5000)
    rng = np.random.default_rng(0)  # the same draws, by hand: each class cut by its Dirichlet shares
    for c in range(10):
        rng.permutation(np.flatnonzero(labels == c))  # the shuffle of the class, drawn first
        cuts = (np.cumsum(rng.dirichlet(np.full(17, 0.1)))[:-1] * 500).astype(int)
        expected = np.diff(np.concatenate([[0], cuts, [500]]))
        np.testing.assert_array_equal([np.sum(labels[s] == c) for s in skewed], expected)
    top_share = [np.bincount(labels[s], minlength=10).max() / len(s) for s in skewed if len(s)]
    assert np.median(top_share) > 0.5  # alpha = 0.1: most workers are dominated by one class


def test_by_class_partition():
    labels = np.repeat(np.arange(10), 31)[np.random.default_rng(0).permutation(310)]
    shards = sim.partition.by_class(labels, 30, per_class=3)
    assert _is_partition(shards, 310)
    for w, shard in enumerate(shards):
        assert set(labels[shard]) == {w // 3}
    assert sorted(len(s) for s in shards[:3]) == [10, 10, 11]
    with pytest.raises(ValueError, match="per_class"):
        sim.partition.by_class(labels, 20, per_class=3)


def _tiny_sim(**options):
    rng = np.random.default_rng(4)
    problem = sim.SoftmaxRegression(rng.random((40, 3)), np.arange(40) % 4, classes=4)
    shards = [np.arange(0, 10), np.arange(10, 16), np.arange(16, 30), np.arange(30, 40)]
    return problem, sim.Simulation(problem, shards, f=1, **options)


def test_sampling_stays_in_each_shard():
    problem, s = _tiny_sim(seed=1)
    for b in (3, 6, 8):
        batch = s.sample(b)
        assert batch.idx.shape == (4, b)
        for i in range(4):
            assert set(batch.idx[i]) <= set(s.shards[i])
            np.testing.assert_array_equal(batch.idx[i], s.shards[i][batch.positions[i]])
        np.testing.assert_array_equal(batch.labels, problem.labels[batch.idx])
    counts = np.bincount(np.concatenate([s.sample(5).positions[1] for _ in range(600)]), minlength=6)
    assert counts.min() > 400  # uniform over worker 1's 6 samples: 500 each on average


def test_full_gradients_are_local_means():
    problem, s = _tiny_sim()
    x = np.random.default_rng(5).standard_normal(problem.dim)
    G = s.gradients(x)
    for i, shard in enumerate(s.shards):
        np.testing.assert_allclose(G[i], problem.gradients(x, shard[None])[0], rtol=1e-12)


def test_label_flipping_and_duplication():
    problem, s = _tiny_sim(data_attack="label_flip")
    batch = s.sample(4)
    np.testing.assert_array_equal(batch.labels[:3], problem.labels[batch.idx[:3]])
    np.testing.assert_array_equal(batch.labels[3], 3 - problem.labels[batch.idx[3]])
    problem, s = _tiny_sim(data_attack="duplicate", duplicate_target=1)
    batch = s.sample(4)
    np.testing.assert_array_equal(batch.idx[3], batch.idx[1])
    assert np.array_equal(s.gradients(np.ones(problem.dim))[3], s.gradients(np.ones(problem.dim))[1])


def test_corrupt_passes_honest_rows_and_own_rows():
    rows = np.arange(12.0).reshape(4, 3)
    _, s = _tiny_sim(attack=bk.ipm(eps=0.5))
    out = s.corrupt(rows)
    np.testing.assert_array_equal(out[:3], rows[:3])
    np.testing.assert_allclose(out[3], -0.5 * rows[:3].mean(axis=0))
    _, s = _tiny_sim(attack=bk.sign_flip(scale=-5), attack_own=True)
    np.testing.assert_allclose(s.corrupt(rows)[3], -5 * rows[3])
    _, s = _tiny_sim()
    assert s.corrupt(rows) is rows


def test_history_round_trip_and_plot(tmp_path):
    rng = np.random.default_rng(6)
    problem = sim.LogisticRegression(rng.standard_normal((40, 4)), np.where(rng.random(40) < 0.5, -1.0, 1.0),
                                     test=(rng.standard_normal((10, 4)), np.ones(10)))
    s = sim.Simulation(problem, sim.partition.sequential(40, 4))
    history = sim.run(algorithms.sgd(lr=0.5, batch_size=5), s, 6, eval_every=3, meta={"case": "tiny"})
    assert [r["step"] for r in history.rows] == list(range(7))
    steps, losses = history.evaluated("loss")
    np.testing.assert_array_equal(steps, [0, 3, 6])
    assert losses[-1] < losses[0]
    assert history.rows[-1]["bytes_per_worker"] == 6 * 4 * 8
    history.to_json(tmp_path / "h.json")
    back = sim.History.from_json(tmp_path / "h.json")
    assert back.meta["case"] == "tiny" and json.dumps(back.rows) == json.dumps(history.rows, default=float)
    history.to_csv(tmp_path / "h.csv")
    assert (tmp_path / "h.csv").read_text().splitlines()[0].startswith("step,loss,grad_norm,accuracy,distance")
    sim.plot({"panel": {"sgd": history}}, tmp_path / "h.png", metric="loss", logy=True)
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_needs_a_panel(tmp_path):
    with pytest.raises(ValueError, match="at least one panel"):
        sim.plot({}, tmp_path / "none.png")


def test_history_json_is_strict_and_a_second_run_on_a_simulation_counts_its_own(tmp_path):
    rng = np.random.default_rng(7)
    problem = sim.LogisticRegression(rng.standard_normal((40, 4)), np.where(rng.random(40) < 0.5, -1.0, 1.0))
    s = sim.Simulation(problem, sim.partition.sequential(40, 4))
    method = algorithms.sgd(lr=0.5, batch_size=5)
    sim.run(method, s, 3)
    first = s.aggregation_seconds
    history = sim.run(method, s, 6, eval_every=3, meta={"d": np.int64(4), "x_star": np.zeros(2), "far": -np.inf})
    assert history.rows[0]["bytes_per_worker"] == 0 and history.rows[-1]["bytes_per_worker"] == 6 * 4 * 8
    assert history.rows[-1]["aggregation_seconds"] == pytest.approx(s.aggregation_seconds - first, abs=1e-12)
    history.rows[2]["loss"] = np.inf  # a run that diverged
    history.to_json(tmp_path / "h.json")
    text = (tmp_path / "h.json").read_text()
    data = json.loads(text, parse_constant=lambda word: pytest.fail(f"{word} is not JSON (RFC 8259)"))
    assert data["rows"][1]["loss"] is None and data["rows"][2]["loss"] == "inf"
    assert data["meta"] == {"method": repr(method), "steps": 6, "d": 4, "x_star": [0.0, 0.0], "far": "-inf"}
    back = sim.History.from_json(tmp_path / "h.json")
    np.testing.assert_array_equal(back.column("loss"), history.column("loss"))  # NaN where not evaluated, Inf


@pytest.mark.parametrize("call, error, match", [
    (lambda s, m: sim.run(m, s, -1), ValueError, "steps must be >= 0"),
    (lambda s, m: sim.run(m, s, 2.0), TypeError, "steps must be an int"),
    (lambda s, m: sim.run(m, s, 2, eval_every=0), ValueError, "eval_every must be >= 1"),
    (lambda s, m: sim.run(m, s, 2, metrics=("los",)), ValueError, "metrics must be among"),
    (lambda s, m: sim.run(m, s, 2, metrics="los"), ValueError, r"got \['los'\]"),
    (lambda s, m: sim.run(m, s, 2, x0=np.zeros(3)), ValueError, "x0 must have the problem's shape"),
])
def test_run_refuses_bad_arguments(call, error, match):
    problem, s = _tiny_sim()
    with pytest.raises(error, match=match):
        call(s, algorithms.sgd(lr=0.5, batch_size=2))


@pytest.mark.parametrize("options, error, match", [
    (dict(f=1.5), TypeError, "f must be an int"),
    (dict(f=4), ValueError, "f must be <= n - 1 = 3"),
    (dict(f=1, data_attack="duplicate", duplicate_target=3), ValueError, "duplicate_target must be <= h - 1 = 2"),
])
def test_simulation_refuses_bad_arguments(options, error, match):
    problem, _ = _tiny_sim()
    with pytest.raises(error, match=match):
        sim.Simulation(problem, [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30), np.arange(30, 40)], **options)
