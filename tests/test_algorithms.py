"""Each method's first steps against a hand-written NumPy version of its algorithm box, on a
tiny least-squares problem: 6 workers with 4 samples each, the last 2 Byzantine."""
import numpy as np
import pytest

import byzkern as bk
from byzkern import algorithms as al
from byzkern import sim

N, D, WORKERS, F = 24, 5, 6, 2
H = WORKERS - F


class Recording(sim.Simulation):
    """Keeps every batch it hands out, so the hand-written version can use the same samples."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def sample(self, batch_size):
        batch = super().sample(batch_size)
        self.batches.append(batch)
        return batch


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    A, y = rng.standard_normal((N, D)), rng.standard_normal(N)
    shards = sim.partition.sequential(N, WORKERS)

    def grads(x, idx):
        """Row i: the least-squares gradient of worker i on samples idx[i]."""
        return np.stack([A[s].T @ (A[s] @ x - y[s]) / len(s) for s in idx])

    def make(**options):
        return Recording(sim.LeastSquares(A, y), shards, f=F, **options)

    return grads, make, np.array(shards), rng.standard_normal(D)


def ipm_by_hand(rows, eps=0.5):
    out = rows.copy()
    out[H:] = -eps * rows[:H].mean(axis=0)
    return out


def sign_flip_by_hand(rows):
    out = rows.copy()
    out[H:] = -rows[H:]
    return out


ATTACKS = {"ipm": (dict(attack=bk.ipm(eps=0.5)), ipm_by_hand),
           "sign flip": (dict(attack=bk.sign_flip(scale=-1), attack_own=True), sign_flip_by_hand)}


def topk_by_hand(rows, k):
    out = np.zeros_like(rows)
    for i, r in enumerate(rows):
        keep = np.argsort(-np.abs(r), kind="stable")[:k]
        out[i, keep] = r[keep]
    return out


def scaled_sign_by_hand(rows):
    """The scale goes on the wire as a float32 (seed 001 counts d + 32 bits)."""
    scale = (np.abs(rows).sum(axis=1, keepdims=True) / rows.shape[1]).astype(np.float32)
    return scale.astype(np.float64) * np.where(rows >= 0, 1.0, -1.0)


def trimmed_mean_by_hand(rows, f):
    return np.sort(rows, axis=0)[f:len(rows) - f].mean(axis=0)


def drop_largest_by_hand(rows, norms, drop):
    order = sorted(range(len(rows)), key=lambda i: (norms[i], i))  # ties: the higher index goes
    return rows[order[:len(rows) - drop]].mean(axis=0)


def test_robust_dgd_steps_and_output(setup):
    grads, make, shards, x0 = setup
    s = make(attack=bk.ipm(eps=0.5))
    method = al.RobustDGD(aggregator=bk.cwmed(), lr=lambda t: 0.1 / (1 + t))  # lr(0) for the first step
    method.start(s, x0)
    x, norms, iterates = x0.copy(), [], []
    for t in range(3):
        method.step(s)
        R = np.median(ipm_by_hand(grads(x, shards)), axis=0)
        norms.append(np.linalg.norm(R))
        iterates.append(x)
        x = x - 0.1 / (1 + t) * R
        np.testing.assert_allclose(method.x, x, rtol=1e-12)
    np.testing.assert_allclose(method.output, iterates[int(np.argmin(norms))])
    assert s.bytes_sent == 3 * D * 8


def test_robust_dshb_momentum_clipping_and_schedule(setup):
    grads, make, _, x0 = setup
    s = make(attack=bk.ipm(eps=0.5), seed=3)
    method = al.RobustDSHB(aggregator=bk.cwtm(f=F), lr=lambda t: 0.2 / (1 + t), beta=0.9, batch_size=2, clip=0.5)
    method.start(s, x0)
    x, m = x0.copy(), np.zeros((WORKERS, D))
    for t in range(3):
        method.step(s)
        G = grads(x, s.batches[t].idx)
        G = G * np.minimum(1.0, 0.5 / np.linalg.norm(G, axis=1, keepdims=True))
        m = 0.9 * m + 0.1 * G
        x = x - 0.2 / (1 + t) * trimmed_mean_by_hand(ipm_by_hand(m), F)
        np.testing.assert_allclose(method.x, x, rtol=1e-12)
        np.testing.assert_allclose(method.momentum, m, rtol=1e-12)


def test_robust_dshb_default_schedule_is_004s_with_steps_counted_from_one():
    lr = al.RobustDSHB(aggregator=bk.cwtm(f=F)).lr  # 004 Table 3: 0.75 / (1 + floor(t/50)), t = 1..T
    assert [lr(t - 1) for t in (1, 49, 50, 99, 100)] == [0.75, 0.75, 0.375, 0.375, 0.25]


def test_one_seed_gives_the_simulation_the_method_and_its_resampling_streams_of_their_own(setup):
    """A run hands one seed to everything: two default_rng(seed) would draw the same stream."""
    _, make, _, x0 = setup
    s = make(seed=3)
    method = al.rs_byrd_sgd(lr=0.1, seed=3)
    method.start(s, x0)
    streams = [s.rng, method._rng, method.aggregator.stages[0].options["rng"]]
    firsts = [int(g.bit_generator.random_raw()) for g in streams]
    assert len(set(firsts)) == 3


def test_sgd_baselines_are_plain_and_robust_sgd(setup):
    grads, make, _, x0 = setup
    s = make(seed=1)
    method = al.sgd(lr=0.3, batch_size=2)
    method.start(s, x0)
    method.step(s)
    np.testing.assert_allclose(method.x, x0 - 0.3 * grads(x0, s.batches[0].idx).mean(axis=0), rtol=1e-12)
    s = make(seed=1, attack=bk.sign_flip(scale=-5), attack_own=True)
    method = al.byrd_sgd(lr=0.3, batch_size=2, maxiter=50)
    method.start(s, x0)
    method.step(s)
    rows = grads(x0, s.batches[0].idx)
    rows[H:] *= -5
    np.testing.assert_allclose(method.x, x0 - 0.3 * bk.geomed(rows, maxiter=50, backend="reference"), rtol=1e-9)


@pytest.mark.parametrize("target", ["estimates", "messages"])
@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("p", [0.0, 1.0], ids=["compressed-difference", "full-gradient"])
def test_byz_vr_marina_both_branches(setup, p, attack, target):
    """The attack takes the estimates g^k + Q(D_i) (000's experiments) or the messages Q(D_i)
    (002's) in the compressed rounds; the full rounds have one row per worker either way."""
    grads, make, shards, x0 = setup
    options, attacked = ATTACKS[attack]
    s = make(seed=2, **options)
    method = al.ByzVRMarina(aggregator=bk.cwmed(), lr=0.1, p=p, compressor=bk.topk(k=2), batch_size=2,
                            attacked=target)
    method.start(s, x0)
    g = np.median(attacked(grads(x0, shards)), axis=0)  # the c = 1 round at x^0
    np.testing.assert_allclose(method.g, g, rtol=1e-12)
    x = x0
    for k in range(2):
        method.step(s)
        x_next = x - 0.1 * g
        if p == 1.0:
            g = np.median(attacked(grads(x_next, shards)), axis=0)
        else:
            idx = s.batches[k].idx
            Q = topk_by_hand(grads(x_next, idx) - grads(x, idx), 2)
            g = np.median(attacked(g + Q) if target == "estimates" else g + attacked(Q), axis=0)
        x = x_next
        np.testing.assert_allclose(method.x, x, rtol=1e-12)
        np.testing.assert_allclose(method.g, g, rtol=1e-12)
    per_round = D * 8 if p == 1.0 else bk.topk(np.ones(D), k=2).nbytes
    assert s.bytes_sent == D * 8 + 2 * per_round


def test_byz_vr_marina_names_what_its_attack_may_take():
    with pytest.raises(ValueError, match="attacked must be one of"):
        al.ByzVRMarina(aggregator=bk.cwmed(), lr=0.1, p=0.5, attacked="rows")


@pytest.mark.parametrize("option", ["I", "II"])
def test_robust_compressed_gd_norm_thresholding(setup, option):
    grads, make, shards, x0 = setup
    s = make(attack=bk.sign_flip(scale=-3), attack_own=True)
    method = al.RobustCompressedGD(lr=0.1, drop=3, compressor=bk.scaled_sign(), option=option)
    method.start(s, x0)
    method.step(s)
    G = grads(x0, shards)
    if option == "I":  # Byzantine workers choose the compressor's input; norms of the inputs
        G[H:] *= -3
        Q = scaled_sign_by_hand(G)
        norms = np.linalg.norm(G, axis=1)
    else:  # Byzantine workers replace the compressed vector; norms of what arrives
        Q = scaled_sign_by_hand(G)
        Q[H:] *= -3
        norms = np.linalg.norm(Q, axis=1)
    np.testing.assert_allclose(method.x, x0 - 0.1 * drop_largest_by_hand(Q, norms, 3), rtol=1e-12)
    # d sign bits and a float32 scale, plus the float64 norm beside it in Option I
    assert s.bytes_sent == -(-D // 8) + 4 + (8 if option == "I" else 0)


def test_vanilla_compressed_gd_is_the_mean(setup):
    grads, make, shards, x0 = setup
    s = make()
    method = al.RobustCompressedGD(lr=0.1, drop=0, compressor=bk.scaled_sign())
    method.start(s, x0)
    method.step(s)
    np.testing.assert_allclose(method.x, x0 - 0.1 * scaled_sign_by_hand(grads(x0, shards)).mean(axis=0), rtol=1e-12)
    assert method.output is method.x  # seed 001 measures the last iterate


def test_error_feedback_gd(setup):
    grads, make, shards, x0 = setup
    s = make(attack=bk.sign_flip(scale=-3), attack_own=True)
    method = al.ErrorFeedbackGD(lr=0.1, drop=3, compressor=bk.scaled_sign())
    method.start(s, x0)
    x, e = x0.copy(), np.zeros((WORKERS, D))
    for _ in range(3):
        method.step(s)
        G = grads(x, shards)
        G[H:] *= -3
        p = 0.1 * G + e
        Q = scaled_sign_by_hand(p)
        e = p - Q
        x = x - drop_largest_by_hand(Q, np.linalg.norm(Q, axis=1), 3)  # no second step size
        np.testing.assert_allclose(method.x, x, rtol=1e-12)
        np.testing.assert_allclose(method.feedback.error, e, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("attack", ATTACKS)
def test_byz_ef21_sgdm(setup, attack):
    """002: a Byzantine worker's own g_i follows its true c_i (sign flipping sends -c_i of an
    honest state), and an attacker Top_k-compresses what it sends."""
    grads, make, _, x0 = setup
    options, attacked = ATTACKS[attack]
    s = make(seed=4, **options)
    method = al.ByzEF21SGDM(aggregator=bk.cwmed(), lr=0.1, compressor=bk.topk(k=2), eta=0.2, batch_size=2)
    method.start(s, x0)
    v = grads(x0, s.batches[0].idx)
    local, g = v.copy(), attacked(v)  # the dense first messages, attacked
    x = x0
    for k in range(1, 4):
        method.step(s)
        x = x - 0.1 * np.median(g, axis=0)  # the server aggregates its g_i, then steps
        v = 0.8 * v + 0.2 * grads(x, s.batches[k].idx)
        c = topk_by_hand(v - local, 2)
        sent = attacked(c)
        sent[H:] = topk_by_hand(sent[H:], 2)
        local, g = local + c, g + sent
        np.testing.assert_allclose(method.x, x, rtol=1e-12)
        np.testing.assert_allclose(method.v, v, rtol=1e-12)
        np.testing.assert_allclose(method.local_g, local, rtol=1e-12)
        np.testing.assert_allclose(method.g, g, rtol=1e-12)
    assert s.bytes_sent == D * 8 + 3 * bk.topk(np.ones(D), k=2).nbytes


def test_byz_ef21_sgdm_with_an_attack_and_no_byzantine_worker_is_the_honest_run(setup):
    _, make, _, x0 = setup
    runs = []
    for options in ({}, {"attack": bk.alie()}):
        s = sim.Simulation(make().problem, make().shards, f=0, seed=4, **options)
        runs.append(sim.run(al.ByzEF21SGDM(aggregator=bk.cwmed(), lr=0.1, compressor=bk.topk(k=2)), s, 3, x0=x0))
    np.testing.assert_array_equal(runs[1].column("loss"), runs[0].column("loss"))


@pytest.mark.parametrize("make, error, match", [
    (lambda: al.RobustDSHB(aggregator=bk.cwmed(), beta=1.0), ValueError, r"beta must be in \[0, 1\)"),
    (lambda: al.RobustDSHB(aggregator=bk.cwmed(), batch_size=0), ValueError, "batch_size must be >= 1"),
    (lambda: al.ByzVRMarina(aggregator=bk.cwmed(), lr=0.1, p=2), ValueError, r"p must be in \[0, 1\]"),
    (lambda: al.ByzEF21SGDM(aggregator=bk.cwmed(), lr=0.1, compressor=None, eta=0), ValueError,
     r"eta must be in \(0, 1\]"),
    (lambda: al.BRDIANA(aggregator=bk.cwmed(), lr=0.1, compressor=bk.topk(k=1), beta=-1), ValueError,
     r"beta must be in \(0, 1\]"),
    (lambda: al.BRCSGD(aggregator=bk.cwmed(), lr=0.1, compressor=None), TypeError, "compressor must be a compressor"),
    (lambda: al.ByrdSAGA(lr=0.1, batch_size=2.5), TypeError, "batch_size must be an int"),
])
def test_methods_refuse_bad_options(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_methods_repr_is_its_options_after_a_run_too(setup):
    _, make, _, x0 = setup
    method = al.ByzEF21SGDM(aggregator=bk.cwmed(), lr=0.1, compressor=bk.topk(k=2))
    before = repr(method)
    assert before == "ByzEF21SGDM(aggregator=cwmed(), lr=0.1, compressor=topk(k=2), eta=0.01, batch_size=1, seed=0)"
    history = sim.run(method, make(), 2, x0=x0)
    assert repr(method) == before == history.meta["method"]

    class Mine(al.Method):  # a user's method, keeping an option under another name
        def __init__(self, *, lr, rule, seed=0, **more):
            super().__init__(lr=lr, seed=seed)
            self.aggregator = rule

    assert repr(Mine(lr=0.5, rule=bk.cwmed(), extra=1)) == "Mine(lr=0.5, seed=0)"


def test_br_csgd(setup):
    grads, make, _, x0 = setup
    s = make(attack=bk.ipm(eps=0.5), seed=5)
    method = al.BRCSGD(aggregator=bk.cwmed(), lr=0.1, compressor=bk.topk(k=3), batch_size=2)
    method.start(s, x0)
    method.step(s)
    Q = topk_by_hand(grads(x0, s.batches[0].idx), 3)
    np.testing.assert_allclose(method.x, x0 - 0.1 * np.median(ipm_by_hand(Q), axis=0), rtol=1e-12)


@pytest.mark.parametrize("attack", ATTACKS)
def test_br_diana(setup, attack):
    grads, make, _, x0 = setup
    options, attacked = ATTACKS[attack]
    s = make(seed=6, **options)
    method = al.BRDIANA(aggregator=bk.cwmed(), lr=0.1, compressor=bk.topk(k=2), beta=0.3, batch_size=2)
    method.start(s, x0)
    x, h, local = x0.copy(), np.zeros((WORKERS, D)), np.zeros((WORKERS, D))
    for k in range(3):
        method.step(s)
        q = topk_by_hand(grads(x, s.batches[k].idx) - local, 2)
        x = x - 0.1 * np.median(h + attacked(q), axis=0)
        h, local = h + 0.3 * attacked(q), local + 0.3 * q
        np.testing.assert_allclose(method.x, x, rtol=1e-12)
        np.testing.assert_allclose(method.h, h, rtol=1e-12)
        np.testing.assert_allclose(method.local_h, local, rtol=1e-12)


def test_byrd_saga_tables(setup):
    grads, make, shards, x0 = setup
    s = make(attack=bk.sign_flip(scale=-5), attack_own=True, seed=7)
    method = al.ByrdSAGA(lr=0.1, aggregator=bk.mean(), batch_size=2)
    method.start(s, x0)
    table = np.stack([[grads(x0, [[j]])[0] for j in shard] for shard in shards])  # (n, J, d) at x^0
    np.testing.assert_allclose(method.table, table, rtol=1e-12)
    x = x0
    for k in range(3):
        method.step(s)
        positions = s.batches[k].positions
        G = np.empty((WORKERS, D))
        for i in range(WORKERS):
            fresh = np.stack([grads(x, [[shards[i][j]]])[0] for j in positions[i]])
            G[i] = (fresh - table[i, positions[i]]).mean(axis=0) + table[i].mean(axis=0)
            table[i, positions[i]] = fresh  # stored after the corrected gradient is formed
        G[H:] *= -5
        x = x - 0.1 * G.mean(axis=0)
        np.testing.assert_allclose(method.x, x, rtol=1e-11)
        np.testing.assert_allclose(method.table, table, rtol=1e-12)
        np.testing.assert_allclose(method.table_mean, table.mean(axis=1), rtol=1e-10, atol=1e-13)


def test_random_iterate_output_is_one_of_the_iterates(setup):
    _, make, _, x0 = setup
    s = make(seed=8)
    method = al.RobustDSHB(aggregator=bk.mean(), lr=0.1, batch_size=2)
    method.start(s, x0)
    seen = [x0.copy()]
    for _ in range(5):
        method.step(s)
        seen.append(method.x.copy())
    assert any(np.array_equal(method.output, it) for it in seen[:-1])
