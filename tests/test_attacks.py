"""Attacks (SPEC §5): hand-computed values, batching, libraries, Mimic, optimized."""
import math
import statistics

import numpy as np
import pytest

import byzkern as bk
from byzkern import _config, _dispatch, _random, attacks
from byzkern._arrays import host
from byzkern.attacks import DEFAULT_ETAS, alie_z
from byzkern.backends import deviations_of_built_candidates, reference

H = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])  # mean (3, 2); std ddof=1 (2, 2)
OWN = np.array([[1.0, -1.0], [0.5, 2.0]])

CASES = [
    # (attack, options, expected rows)
    (bk.sign_flip, dict(f=2), [[-3.0, -2.0], [-3.0, -2.0]]),
    (bk.sign_flip, dict(f=1, scale=2.0), [[-6.0, -4.0]]),
    (bk.sign_flip, dict(f=2, own=OWN), [[-1.0, 1.0], [-0.5, -2.0]]),
    (bk.sign_flip, dict(f=2, scale=-5.0, own=OWN), [[-5.0, 5.0], [-2.5, -10.0]]),
    (bk.ipm, dict(f=1), [[-0.3, -0.2]]),
    (bk.ipm, dict(f=2, eps=2.0), [[-6.0, -4.0], [-6.0, -4.0]]),
    (bk.foe, dict(f=1, eta=3.0), [[-6.0, -4.0]]),
    (bk.alie, dict(f=2, z=1.0), [[1.0, 0.0], [1.0, 0.0]]),
    (bk.alie, dict(f=1, z=0.5, ddof=0), [[3.0 - 0.5 * math.sqrt(8 / 3), 2.0 - 0.5 * math.sqrt(8 / 3)]]),
    (bk.mimic, dict(f=3, target=2), [[5.0, 0.0]] * 3),
    (bk.gaussian, dict(f=2, std=0.0, own=OWN, seed=1), OWN),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("attack, options, expected", CASES)
def test_hand_computed(attack, options, expected, dtype):
    options = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    out = attack(H.astype(dtype), **options)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, np.array(expected, dtype), rtol=1e-6)


def test_foe_is_ipm_with_eps_eta_minus_one():
    X = np.random.default_rng(0).standard_normal((5, 7))
    np.testing.assert_allclose(bk.foe(X, f=2, eta=4.5), bk.ipm(X, f=2, eps=3.5), rtol=1e-14)


def test_alie_default_z_is_baruch():
    # h = 3, f = 2: n = 5, s = floor(5/2 + 1) - 2 = 1, z = Phi^-1(4/5)
    z = statistics.NormalDist().inv_cdf(0.8)
    assert alie_z(5, 2) == z
    np.testing.assert_allclose(bk.alie(H, f=2), [[3 - 2 * z, 2 - 2 * z]] * 2, rtol=1e-14)
    # seed 004's setting n = 17, f = 4: s = 5, z = Phi^-1(12/17)
    assert math.isclose(alie_z(17, 4), statistics.NormalDist().inv_cdf(12 / 17))


def test_batched_equals_each_item():
    rng = np.random.default_rng(1)
    HB = rng.standard_normal((3, 6, 4))
    own = rng.standard_normal((3, 2, 4))
    for attack, options in [(bk.sign_flip, {}), (bk.sign_flip, dict(own=own)), (bk.ipm, {}),
                            (bk.foe, dict(eta=2.0)), (bk.alie, {}), (bk.mimic, dict(target=4))]:
        out = attack(HB, f=2, **options)
        assert out.shape == (3, 2, 4)
        for b in range(3):
            item = {k: (v[b] if isinstance(v, np.ndarray) else v) for k, v in options.items()}
            np.testing.assert_allclose(out[b], attack(HB[b], f=2, **item), rtol=1e-14)


def test_torch_input_gives_torch_output():
    torch = pytest.importorskip("torch")
    t = torch.tensor(H, dtype=torch.bfloat16)
    for attack, options in [(bk.sign_flip, {}), (bk.alie, {}), (bk.gaussian, dict(std=1.0, seed=0)),
                            (bk.mimic, dict(target=0))]:
        out = attack(t, f=2, **options)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.shape == (2, 2)
    np.testing.assert_allclose(bk.ipm(torch.tensor(H), f=1).numpy(), [[-0.3, -0.2]], rtol=1e-14)


def test_gaussian_statistics_and_determinism():
    Hbig = np.zeros((3, 20000))
    out = bk.gaussian(Hbig, f=2, std=3.0, seed=4)
    assert out.shape == (2, 20000)
    N = out.size
    assert abs(out.mean()) <= 6 * 3.0 / math.sqrt(N)
    assert abs(out.std() / 3.0 - 1) <= 6 / math.sqrt(2 * N)
    assert abs(np.corrcoef(out[0], out[1])[0, 1]) <= 6 / math.sqrt(20000)
    np.testing.assert_array_equal(out, bk.gaussian(Hbig, f=2, std=3.0, seed=4))
    assert not np.array_equal(out, bk.gaussian(Hbig, f=2, std=3.0, seed=5))
    np.testing.assert_allclose(bk.gaussian(Hbig, f=2, std=3.0, seed=4, own=np.ones((2, 20000))), out + 1, rtol=1e-15)



@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
def test_gaussian_normals_are_box_muller_to_a_few_ulps(backend):
    """Against Python's math (the C library) on the same uniforms: every backend takes the
    logarithm, sine and cosine from its own port of fdlibm, and a wrong constant, quadrant or
    reduction step shows in the ulps, near the zeros of sin and cos too."""
    if _dispatch.load(backend)[0] is None:
        pytest.skip(f"backend {backend} unavailable")
    d, seed = 40001, 11
    u = _random.uniforms(seed, "gaussian", 0, d + 1).reshape(-1, 2)
    want = np.array([[math.sqrt(-2.0 * math.log1p(-u1)) * trig(2.0 * math.pi * u2) for trig in (math.cos, math.sin)]
                     for u1, u2 in u]).reshape(-1)[:d]
    got = bk.gaussian(np.zeros((1, d)), f=1, std=1.0, seed=seed, backend=backend)[0]
    ulps = np.abs(got - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 4, f"entry {ulps.argmax()}: {got[ulps.argmax()]!r} against {want[ulps.argmax()]!r}"


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_gives_the_reference_bits(backend, dtype):
    """SPEC §1: the same seed, the same result on every backend of a device kind, to the bit."""
    if _dispatch.load(backend)[0] is None:
        pytest.skip(f"backend {backend} unavailable")
    rng = np.random.default_rng(3)
    for d, seed in [(1, 0), (2, 2**64 - 1), (33, 2**40 + 12345), (20001, 11)]:
        own = rng.standard_normal((2, 3, d)).astype(dtype)
        for kw in ({}, {"own": own[:, :2]}):
            np.testing.assert_array_equal(bk.gaussian(own, f=2, std=2.5, seed=seed, backend=backend, **kw),
                                          bk.gaussian(own, f=2, std=2.5, seed=seed, backend="reference", **kw))


def test_mimic_learns_the_direction_of_largest_variance():
    rng = np.random.default_rng(2)
    v = rng.standard_normal(30)
    v /= np.linalg.norm(v)
    spread = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    attacker = bk.Mimic(warmup=3, seed=1)
    targets = []
    for step in range(3):
        Ht = 0.5 + spread[:, None] * v + 1e-3 * rng.standard_normal((5, 30))
        out = attacker(Ht, f=2)
        assert abs(attacker.z[0] @ v) > 0.999
        target = int(np.argmax(Ht @ attacker.z[0]))
        assert target in (0, 4)  # the extreme honest worker along v, on either side
        np.testing.assert_array_equal(out, [Ht[target]] * 2)
        targets.append(target)
    assert len(set(targets)) == 1
    later = rng.standard_normal((5, 30))  # after warmup the target is kept whatever H is
    np.testing.assert_array_equal(attacker(later, f=1), [later[targets[0]]])


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
def test_mimic_steps_follow_the_definition(backend, monkeypatch):
    """mu, z and the target of each warmup step, worked out here on whole float64 arrays, with
    the kernels' sums split over many tiles and slabs. The second batch item's honest rows are
    all the same row at step 0 (integers: their mean is exact), so z stays the unit Philox start
    there."""
    _available(backend)
    monkeypatch.setattr(_config, "COL_TILE", 4)
    monkeypatch.setattr(_config, "REDUCTION_SLABS", 3)
    rng = np.random.default_rng(8)
    B, h, d, seed = 2, 6, 23, 5
    attacker = bk.Mimic(warmup=3, seed=seed)
    z = reference.gaussian(np.zeros((B, 1, d)), 1.0, seed)[:, 0]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    for t in range(3):
        Ht = rng.standard_normal((B, h, d)) * rng.uniform(0.1, 3.0, (B, h, 1))
        if t == 0:
            Ht[1] = rng.integers(-5, 6, d)
        mean = Ht.mean(axis=1)
        mu = mean if t == 0 else t / (t + 1) * mu + mean / (t + 1)
        C = Ht - mu[:, None, :]
        u = np.einsum("bh,bhd->bd", np.einsum("bhd,bd->bh", C, z), C)
        norm = np.linalg.norm(u, axis=1, keepdims=True)
        u_unit = np.where(norm > 0, u / np.where(norm > 0, norm, 1.0), z)
        z = u_unit if t == 0 else t / (t + 1) * z + u_unit / (t + 1)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        target = np.argmax(np.einsum("bhd,bd->bh", Ht, z), axis=1)
        out = attacker(Ht, f=2, backend=backend)
        np.testing.assert_allclose(attacker.mu, mu, rtol=1e-13)
        np.testing.assert_allclose(attacker.z, z, rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(attacker.target, target)
        np.testing.assert_array_equal(out, Ht[np.arange(B), target][:, None, :].repeat(2, axis=1))


def _available(backend):
    if _dispatch.load(backend)[0] is None:
        pytest.skip(f"backend {backend} unavailable: {_dispatch.load(backend)[1]}")
    return _dispatch.load(backend)[0]


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("tiles", [(8, 4), (4096, 32)], ids=["small tiles", "default tiles"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 1), (1, 3, 37), (3, 20, 1001), (2, 7, 40003)], ids=str)
def test_mimic_kernels_match_the_reference(backend, tiles, shape, dtype, monkeypatch):
    """centred_dots and power_step sum in their own order: each result is within (d + h) ulps of
    the sum of its terms' magnitudes of the reference's (exact where every term is 0: h = 1)."""
    module = _available(backend)
    monkeypatch.setattr(_config, "COL_TILE", tiles[0])
    monkeypatch.setattr(_config, "REDUCTION_SLABS", tiles[1])
    rng = np.random.default_rng(sum(shape))
    B, h, d = shape
    X = (rng.standard_normal(shape) * rng.uniform(0.1, 10.0, (B, h, 1)) + rng.uniform(-5, 5, (B, 1, d))).astype(dtype)
    mu, z = X.mean(axis=1, dtype=np.float64), rng.standard_normal((B, d))
    ulps = (d + h) * np.finfo(np.float64).eps
    C = np.abs(X - mu[:, None, :])
    dots = reference.centred_dots(X, mu, z)
    assert (np.abs(module.centred_dots(X, mu, z) - dots) <= ulps * np.einsum("bhd,bd->bh", C, np.abs(z))).all()
    u, u_dots = module.power_step(X, mu, dots)
    want_u, want_u_dots = reference.power_step(X, mu, dots)
    u_magnitude = np.einsum("bh,bhd->bd", np.abs(dots), C)
    assert (np.abs(u - want_u) <= ulps * u_magnitude).all()
    assert (np.abs(u_dots - want_u_dots) <= 2 * ulps * np.einsum("bhd,bd->bh", C, u_magnitude)).all()


@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_mimic_kernels_keep_non_finite_rows_to_themselves(backend, dtype):
    """A NaN entry makes its row's dot NaN, an Inf entry its row's dot infinite, and the other
    rows' dots are those of the reference; a NaN dot makes u and every u_dot NaN."""
    module = _available(backend)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2, 6, 77)).astype(dtype)
    mu, z = X.mean(axis=1, dtype=np.float64), np.abs(rng.standard_normal((2, 77)))
    X[0, 2, 40], X[1, 5, 3:9] = np.nan, np.inf
    got, want = module.centred_dots(X, mu, z), reference.centred_dots(X, mu, z)
    assert np.isnan(got[0, 2]) and got[1, 5] == np.inf
    np.testing.assert_allclose(got, want, rtol=1e-12)
    u, u_dots = module.power_step(X, mu, want)
    assert np.isnan(u[0]).all() and np.isnan(u_dots[0]).all() and not np.isnan(u[1]).all()
    np.testing.assert_array_equal(np.isfinite(u), np.isfinite(reference.power_step(X, mu, want)[0]))


def test_mimic_keeps_one_target_per_batch_item_and_checks_the_batch():
    attacker = bk.Mimic(warmup=1)
    HB = np.random.default_rng(3).standard_normal((2, 4, 6))
    out = attacker(HB, f=1)
    assert out.shape == (2, 1, 6)
    with pytest.raises(ValueError, match=r"H has \(batch items, honest rows, d\) = \(1, 4, 6\) but this Mimic "
                                         r"tracks \(2, 4, 6\)"):
        attacker(HB[0], f=1)
    unused = bk.Mimic()
    with pytest.raises(ValueError, match="backend"):
        unused(HB, f=1, backend="gpu")
    assert unused(HB[0], f=1).shape == (1, 6)  # a call refused before it starts tracks nothing


@pytest.mark.parametrize("backend", ["reference", "cpu", "numba"])
@pytest.mark.parametrize("step", [0, 2])  # during warmup, and after it
@pytest.mark.parametrize("shape", [(3, 6), (9, 6), (4, 1), (4, 7)])
def test_mimic_refuses_another_shape_and_keeps_its_state(backend, step, shape):
    H = np.random.default_rng(8).standard_normal((4, 4, 6))
    attacker, twin = bk.Mimic(warmup=2, seed=1), bk.Mimic(warmup=2, seed=1)
    for rows in H[:step + 1]:
        attacker(rows, f=1, backend=backend)
        twin(rows, f=1, backend=backend)
    with pytest.raises(ValueError, match=rf"H has \(batch items, honest rows, d\) = \(1, {shape[0]}, {shape[1]}\)"):
        attacker(np.ones(shape), f=1, backend=backend)
    np.testing.assert_array_equal(attacker(H[step + 1], f=1, backend=backend), twin(H[step + 1], f=1, backend=backend))
    np.testing.assert_array_equal(attacker.mu, twin.mu)
    np.testing.assert_array_equal(attacker.z, twin.z)
    attacker.reset()
    assert attacker(np.ones(shape), f=1, backend=backend).shape == (1, shape[1])


class CountingAggregator:
    """A wrapper that counts the aggregator calls and records their input shapes."""

    def __init__(self, rule):
        self.rule, self.shapes = rule, []

    def __call__(self, X):
        self.shapes.append(tuple(X.shape))
        return self.rule(X)


@pytest.mark.parametrize("attack", ["alie", "foe", bk.alie, bk.foe])
def test_optimized_makes_one_call_and_picks_the_argmax(attack):
    rng = np.random.default_rng(4)
    Hh = rng.standard_normal((7, 5)) + 1.0
    aggregator = CountingAggregator(bk.cwtm(f=2))
    rows, info = bk.optimized(Hh, f=3, attack=attack, aggregator=aggregator, return_info=True)
    assert aggregator.shapes == [(len(DEFAULT_ETAS), 10, 5)]
    name = attack if isinstance(attack, str) else attack.__name__
    mu = Hh.mean(axis=0)
    a = Hh.std(axis=0, ddof=1) if name == "alie" else -mu
    deviations = []
    for eta in DEFAULT_ETAS:  # one aggregation per candidate, independently of the batched call
        candidate = np.vstack([Hh, np.tile(mu + eta * a, (3, 1))])
        deviations.append(np.linalg.norm(bk.cwtm(candidate, f=2) - mu))
    best = int(np.argmax(deviations))
    assert info["eta"] == DEFAULT_ETAS[best]
    np.testing.assert_allclose(info["deviation"], deviations, rtol=1e-12)
    np.testing.assert_allclose(rows, np.tile(mu + DEFAULT_ETAS[best] * a, (3, 1)), rtol=1e-12)


def test_optimized_batched_and_custom_etas():
    rng = np.random.default_rng(5)
    HB = rng.standard_normal((2, 6, 3))
    aggregator = CountingAggregator(bk.mean)
    rows, info = bk.optimized(HB, f=2, attack="foe", aggregator=aggregator, etas=[0.5, 4.0, 2.0], return_info=True)
    assert aggregator.shapes == [(6, 8, 3)] and rows.shape == (2, 2, 3)
    # against the mean, the largest |eta| moves the aggregate most
    np.testing.assert_array_equal(info["eta"], [4.0, 4.0])
    np.testing.assert_allclose(rows, bk.foe(HB, f=2, eta=4.0), rtol=1e-12)


def _candidate_inputs(dtype):
    """(H, mu, direction, etas) over several column tiles, with the values that test the cast:
    NaN, +-inf (inf * eta 0 is NaN), -0.0, and mu + eta * direction past the dtype's largest."""
    rng = np.random.default_rng(11)
    H, mu, direction = (rng.standard_normal(shape).astype(dtype) for shape in [(2, 5, 37), (2, 37), (2, 37)])
    big = np.finfo(dtype).max / 4
    mu[0, :6], direction[0, :6] = [np.nan, np.inf, -np.inf, -0.0, big, 1.0], [1.0, 1.0, 2.0, 0.0, big, np.inf]
    return H, mu, direction, np.array([0.0, 1e-3, 0.7, 10.0, -3.0])


@pytest.mark.parametrize("backend", ["cpu", "numba"])
@pytest.mark.parametrize("f", [1, 3])
@pytest.mark.parametrize("stream_min_bytes", [0, 32 << 20], ids=["stream stores", "cached stores"])
def test_attack_candidates_equal_the_reference_bit_for_bit(backend, f, dtype, stream_min_bytes, monkeypatch):
    monkeypatch.setattr(_config, "STREAM_MIN_BYTES", stream_min_bytes)
    module, reason = _dispatch.load(backend)
    if module is None:
        pytest.skip(f"backend {backend} unavailable: {reason}")
    H, mu, direction, etas = _candidate_inputs(dtype)
    H_before = H.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference.attack_candidates(H, mu, direction, etas, f)
        got = module.attack_candidates(H, mu, direction, etas, f)
    assert got.dtype == want.dtype and got.shape == want.shape == (2, 5, 5 + f, 37)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    np.testing.assert_array_equal(H, H_before)
    # the case proves something: the cast overflowed and inf * 0 made NaN
    assert np.isinf(want[0, 3, 5:, 4]).all() and np.isnan(want[0, 0, 5:, 5]).all()


@pytest.mark.parametrize("attack", ["alie", "foe"])
def test_optimized_rows_are_the_bits_of_the_plain_numpy_construction(attack, fast_backend, dtype):
    rng = np.random.default_rng(6)
    HB = (rng.standard_normal((2, 9, 40)) * 3.0 + 1.0).astype(dtype)
    try:
        rows, info = bk.optimized(HB, f=3, attack=attack, aggregator=bk.cwtm(f=3), return_info=True,
                                  backend=fast_backend)
    except ValueError as exc:  # host data on a device backend
        pytest.skip(str(exc))
    for b in range(2):
        mu = HB[b].astype(np.float64).mean(axis=0)
        a = HB[b].astype(np.float64).std(axis=0, ddof=1).astype(dtype) if attack == "alie" else -mu.astype(dtype)
        mu, a = mu.astype(dtype).astype(np.float64), a.astype(np.float64)
        candidates = [np.vstack([HB[b], np.tile((mu + eta * a).astype(dtype), (3, 1))]) for eta in DEFAULT_ETAS]
        deviation = [np.sqrt(((bk.cwtm(c, f=3).astype(np.float64) - mu) ** 2).sum()) for c in candidates]
        np.testing.assert_allclose(info["deviation"][b], deviation, rtol=1e-14)  # sums in another order
        assert info["eta"][b] == DEFAULT_ETAS[int(np.argmax(deviation))]
        np.testing.assert_array_equal(rows[b], candidates[int(np.argmax(deviation))][9:])


@pytest.mark.parametrize("aggregator", [bk.mean, bk.cwmed, bk.cwmed(nan_policy="propagate"), bk.cwtm(f=3),
                                        bk.meamed(f=3), bk.cwtm(f=3, backend="reference"),
                                        bk.meamed(f=3, backend="numba")],
                         ids=lambda a: getattr(a, "__name__", repr(a)))
def test_optimized_by_column_blocks_equals_one_whole_call(aggregator, fast_backend, dtype, monkeypatch):
    """Coordinate-wise aggregators take the candidates by column blocks (built, or on cpu never
    built: candidate_deviations); the answer is the one of a single call on the whole batch."""
    rng = np.random.default_rng(8)
    HB = (rng.standard_normal((2, 9, 301)) * 3.0 + 1.0).astype(dtype)
    HB[0, 4, 7], HB[0, 2, 250], HB[0, 5, 251] = np.nan, np.inf, -np.inf  # item 1 stays finite
    E = len(DEFAULT_ETAS)
    monkeypatch.setattr(_config, "CANDIDATE_BLOCK_BYTES", 3 * 2 * E * 12 * HB.itemsize)  # 3 columns a block
    calls, kernel = [], _dispatch.kernel

    def spy(op, *args):
        fn = kernel(op, *args)
        if op not in ("attack_candidates", "candidate_deviations"):
            return fn

        def counted(H, *rest):
            calls.append((op, H.shape[2]))
            return fn(H, *rest)
        counted.__module__ = fn.__module__
        return counted

    monkeypatch.setattr(_dispatch, "kernel", spy)
    whole = CountingAggregator(aggregator)  # an unknown callable: one call on the whole batch
    kw = dict(f=3, attack="alie", return_info=True, backend=fast_backend)
    try:
        with np.errstate(invalid="ignore"):
            rows, info = bk.optimized(HB, aggregator=aggregator, **kw)
            blocked, calls[:] = calls[:], []
            want_rows, want_info = bk.optimized(HB, aggregator=whole, **kw)
    except ValueError as exc:  # host data on a device backend
        pytest.skip(str(exc))
    options = getattr(aggregator, "options", {})
    # fused where the aggregator's own kernel is on optimized's backend
    own = options.get("backend") or _dispatch.kernel("cwmed", "cpu", None).__module__.rsplit(".", 1)[1]
    fused = aggregator is not bk.mean and "nan_policy" not in options and own == fast_backend
    rows_call = [("attack_candidates", 301)]  # the chosen eta's rows, from H with no rows
    if fused:
        assert blocked == [("candidate_deviations", 301)] + rows_call
    else:
        assert blocked == [("attack_candidates", 3)] * 100 + [("attack_candidates", 1)] + rows_call
    assert calls == [("attack_candidates", 301)] * 2 and whole.shapes == [(2 * E, 12, 301)]
    np.testing.assert_array_equal(info["eta"], want_info["eta"])
    np.testing.assert_allclose(info["deviation"], want_info["deviation"], rtol=1e-13)
    assert np.isfinite(info["deviation"][1]).all()
    np.testing.assert_array_equal(rows.view(np.uint8), want_rows.view(np.uint8))


@pytest.mark.parametrize("rule, trims", [("cwmed", False), ("cwtm", True), ("meamed", True), ("cwtm", False)])
@pytest.mark.parametrize("h, f", [(5, 1), (5, 3), (31, 9), (50, 15)])  # unrolled networks; runtime (numba: 65)
@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_candidate_deviations_are_those_of_the_built_batch(rule, trims, h, f, backend, dtype):
    module, reason = _dispatch.load(backend)
    if module is None:
        pytest.skip(f"backend {backend} unavailable: {reason}")
    trim = f if trims else 0
    _, mu, direction, etas = _candidate_inputs(dtype)
    mu[0, :6], direction[0, :6] = 1.0, 0.5  # finite sums, so that rounding shows; NaN/Inf rows below
    H = np.random.default_rng(12).standard_normal((2, h, 37)).astype(dtype)
    H[1, 0, :3], H[1, 1, 3], H[0, :, 9] = [np.nan, np.inf, -np.inf], np.inf, 2.5  # and a tied column
    before = [a.copy() for a in (H, mu, direction)]
    with np.errstate(invalid="ignore", over="ignore"):
        got = module.candidate_deviations(H, mu, direction, etas, f, rule, trim)
        built = deviations_of_built_candidates(module, H, mu, direction, etas, f, rule, trim)
        want = reference.candidate_deviations(H, mu, direction, etas, f, rule, trim)
    assert got.shape == (2, 5) and got.dtype == np.float64
    # the rule's values are the built batch's bits (only the order of the float64 sum differs)
    np.testing.assert_allclose(got, built, rtol=1e-14)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)
    assert np.isfinite(got).all() == (trim > 0 or rule == "cwmed")  # the NaN/Inf rows are outliers
    for a, b in zip((H, mu, direction), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="trim"):
        module.candidate_deviations(H, mu, direction, etas, f, "cwtm", (h + f + 1) // 2)
    with pytest.raises(ValueError, match="rule must be"):
        module.candidate_deviations(H, mu, direction, etas, f, "mean", 0)


@pytest.mark.parametrize("rule", ["cwmed", "cwtm", "meamed"])
@pytest.mark.parametrize("h, f", [(4, 1), (9, 7), (3, 5), (40, 3)])  # f > h: Byzantine keys at both ends
@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_candidate_deviations_where_byzantine_values_tie_honest_ones(rule, h, f, backend, dtype):
    """The Byzantine value equals honest values (both zeros among them), or is NaN or +-inf, in
    some column of every candidate. Small integers: each column's rule adds the same values in
    any order, so only the sum over the columns may round differently, and a value merged into
    the wrong position would move a deviation by far more than rtol."""
    module, reason = _dispatch.load(backend)
    if module is None:
        pytest.skip(f"backend {backend} unavailable: {reason}")
    rng = np.random.default_rng(h + f)
    H = rng.integers(-3, 4, (2, h, 45)).astype(dtype)
    H[:, ::2, :9] = -0.0
    mu, direction = rng.integers(-3, 4, (2, 2, 45)).astype(dtype)
    direction[0, :3] = [np.nan, np.inf, -np.inf]  # NaN, and at eta 0 NaN for inf too
    mu[1, :9], direction[1, :9] = -0.0, 0.0  # -0.0 at eta -1, else +0.0
    etas = np.array([0.0, 1.0, -1.0, 2.0, 5.0])
    trim = 0 if rule == "cwmed" else min(f, (h + f - 1) // 2)
    with np.errstate(invalid="ignore", over="ignore"):
        got = module.candidate_deviations(H, mu, direction, etas, f, rule, trim)
        built = deviations_of_built_candidates(module, H, mu, direction, etas, f, rule, trim)
    np.testing.assert_allclose(got, built, rtol=1e-14)
    assert np.isfinite(got).all() == (2 * f < h + f if rule == "cwmed" else trim >= f)  # the outliers' rows trimmed


def exact_mean_std(column, ddof):
    """Mean and std of a float64 column, scaled exactly by the power of two at its largest |x|
    so that neither the sums nor the squares leave float64's normal range."""
    e = np.frexp(np.abs(column).max())[1]
    scaled = np.ldexp(column, -e)
    mean = math.fsum(scaled) / column.size
    return np.ldexp(mean, e), np.ldexp(math.sqrt(math.fsum((scaled - mean) ** 2) / (column.size - ddof)), e)


@pytest.mark.parametrize("plain_columns", [0, 100], ids=["few columns", "many columns"])
def test_alie_takes_the_std_of_float64_rows_whose_squared_deviations_overflow_or_underflow(fast_backend, plain_columns):
    """plain_columns of plain values beside: with many, the small stds' rows are gathered; with
    few, their largest entries come from two reductions of H."""
    big = np.finfo(np.float64).max
    HB = np.array([[[1e200, big, 1.0, 1e160, 1e-300, 0.0], [2e200, -big, 2.0, 1e160, -2e-300, 0.0],
                    [3e200, big / 2, 3.0, 1e160, 3e-300, 0.0], [-1e200, 0.0, 4.0, 1e160, 0.0, 0.0]]] * 2)
    HB[1, :, 0] = 1e-300  # equal rows: a std of 0
    HB = np.concatenate([HB, np.random.default_rng(7).standard_normal((2, 4, plain_columns))], axis=2)
    mu, std = np.array([[exact_mean_std(column, ddof=1) for column in item.T] for item in HB]).transpose(2, 0, 1)
    # where the kernels' squares overflow, and where they underflow
    assert (np.isfinite(std) & (std > 1e154)).sum() == 3 and ((0 < std) & (std < 1e-154)).sum() == 2
    for backend in ["reference", fast_backend]:
        data = __import__("cupy").asarray(HB) if backend == "cuda" else HB
        with np.errstate(over="ignore"):  # the reference's squares overflow here by design
            rows = host(bk.alie(data, f=2, z=0.5, backend=backend))
            candidates = bk.optimized(data, f=1, attack="alie", aggregator=bk.cwtm(f=1), etas=[0.5],
                                      backend=backend)
        bound = 1e-15 * (np.abs(mu) + 0.5 * std)[:, None]  # where mean -+ z std rounds
        assert (np.abs(rows - (mu - 0.5 * std)[:, None]) <= bound).all(), rows
        assert (np.abs(host(candidates) - (mu + 0.5 * std)[:, None]) <= bound).all(), host(candidates)


def test_attacks_past_the_dtypes_range_give_infinite_rows_without_a_warning(fast_backend):
    """NumPy's overflow warnings in the attacks' host arithmetic (an error under -W error) are
    not raised: the rows say it, as the kernels' do."""
    H32 = np.full((4, 3), np.finfo(np.float32).max, np.float32)
    H64 = np.full((4, 3), np.finfo(np.float64).max)
    H64[1:, 1:] = np.random.default_rng(2).standard_normal((3, 2))

    def attack(fn, H, **options):
        data = __import__("cupy").asarray(H) if fast_backend == "cuda" else H
        return host(fn(data, backend=fast_backend, **options))

    assert (attack(bk.sign_flip, H32, f=2, scale=-5.0, own=H32[:2]) == -np.inf).all()
    assert (attack(bk.foe, H32, f=1, eta=5.0) == -np.inf).all()
    assert np.isnan(attack(bk.alie, H64, f=1)[:, 0]).all()  # the mean is +Inf, mean - z std NaN
    assert (attack(bk.Mimic(), H64, f=1) == H64[:, None]).all(axis=2).any()  # a copy of an honest row
    rows = attack(bk.optimized, H64, f=1, attack="foe", aggregator=bk.krum(f=1))
    assert np.isnan(rows[:, 0]).all()  # Inf + eta (-Inf) for every eta > 0


def test_optimized_default_grid():
    assert len(DEFAULT_ETAS) == 17 and DEFAULT_ETAS[0] == 0.0
    np.testing.assert_allclose(DEFAULT_ETAS[1:], np.geomspace(0.1, 10, 16))


@pytest.mark.parametrize("call, error, match", [
    (lambda: bk.ipm(H, f=0), ValueError, "f must be >= 1"),
    (lambda: bk.ipm(H), TypeError, "f"),
    (lambda: bk.ipm(H[0], f=1), ValueError, "must have shape"),
    (lambda: bk.alie(H, f=1, ddof=3), ValueError, "ddof must be <= h - 1 = 2"),
    (lambda: bk.alie(H, f=4), ValueError, "ALIE's default z"),
    (lambda: bk.sign_flip(H, f=3, own=OWN), ValueError, "own must have shape"),
    (lambda: bk.gaussian(H, f=1, std=-1.0, seed=0), ValueError, "std must be >= 0"),
    (lambda: bk.gaussian(H, f=1, std=1.0), ValueError, "seed="),
    (lambda: bk.mimic(H, f=1, target=3), ValueError, "target must be <= h - 1 = 2"),
    (lambda: bk.Mimic(warmup=0), ValueError, "warmup must be >= 1"),
    (lambda: bk.optimized(H, f=1, attack="sign_flip", aggregator=bk.mean), ValueError, "attack must be one of"),
    (lambda: bk.optimized(H, f=1, attack="foe", aggregator=3), TypeError, "aggregator must be callable"),
    (lambda: bk.optimized(H, f=1, attack="foe", aggregator=bk.mean, etas=[]), ValueError, "etas"),
    (lambda: bk.foe(H, f=1, eta=np.nan), ValueError, "eta must be finite"),
    (lambda: bk.optimized(H[:1], f=1, attack="alie", aggregator=bk.mean), ValueError, "needs h >= 2"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_rule_form():
    r = bk.alie(f=2, z=1.0)
    assert repr(r) == "alie(f=2, z=1.0)"
    np.testing.assert_array_equal(r(H), bk.alie(H, f=2, z=1.0))
