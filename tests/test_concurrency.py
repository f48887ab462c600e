"""Concurrency: kernels called from many Python threads at once give the bits of serial calls,
and the C++ kernels release the GIL while they run (shown without timing anything)."""
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import byzkern as bk
from _harness import byzantine_rows, gaussian

CALLS = {
    "mean": lambda X, **kw: bk.mean(X, **kw),
    "cwmed": lambda X, **kw: bk.cwmed(X, **kw),
    "cwtm": lambda X, **kw: bk.cwtm(X, f=3, **kw),
    "meamed": lambda X, **kw: bk.meamed(X, f=3, **kw),
    "geomed": lambda X, **kw: bk.geomed(X, maxiter=8, eps=0.0, **kw),
    "krum": lambda X, **kw: bk.krum(X, f=3, **kw),
    "multikrum": lambda X, **kw: bk.multikrum(X, f=3, **kw),
    "nnm": lambda X, **kw: bk.nnm(X, f=3, **kw),
    "cclip": lambda X, **kw: bk.cclip(X, tau=0.5, iters=3, **kw),
    "norm_filter": lambda X, **kw: bk.norm_filter(X, f=3, **kw),
    "clip": lambda X, **kw: bk.clip(X, tau=0.5, **kw),
    "resampling": lambda X, **kw: bk.resampling(X, s=2, seed=3, **kw),
    "qsgd": lambda X, **kw: bk.qsgd(X[0], levels=8, seed=3, **kw).decompress(**kw),
    "randk": lambda X, **kw: bk.randk(X[0], k=50, seed=3, **kw).decompress(**kw),
    "natural": lambda X, **kw: bk.natural(X[0], seed=3, **kw).decompress(**kw),
    "topk": lambda X, **kw: bk.topk(X[0], k=50, **kw).decompress(**kw),
    "scaled_sign": lambda X, **kw: bk.scaled_sign(X[0], **kw).decompress(**kw),
    "alie": lambda X, **kw: bk.alie(X[0], f=3, **kw),
    "gaussian": lambda X, **kw: bk.gaussian(X[0], f=3, std=1.0, seed=3, **kw),
}


def test_eight_threads_give_the_bits_of_serial_calls(fast_backend):
    rng = np.random.default_rng(5)
    inputs = [byzantine_rows(rng, (2, 11, 300), dtype, f=3) for dtype in (np.float32, np.float64)] * 2
    jobs = [(name, i) for name in CALLS for i in range(len(inputs))]
    with np.errstate(over="ignore", invalid="ignore"):
        serial = {job: CALLS[job[0]](inputs[job[1]], backend=fast_backend) for job in jobs}
        start = threading.Barrier(8)

        def worker(my_jobs):
            start.wait()
            return [(job, CALLS[job[0]](inputs[job[1]], backend=fast_backend)) for job in my_jobs]

        with ThreadPoolExecutor(8) as pool:
            parts = list(pool.map(worker, [jobs[t::8] for t in range(8)]))
    for job, out in (item for part in parts for item in part):
        np.testing.assert_array_equal(out, serial[job], err_msg=str(job))


def cpu_kernel_calls():
    """Every kernel of the C++ extension, called directly (no NumPy glue that could release the
    GIL by itself), on data big enough to run for a while."""
    cpu = pytest.importorskip("byzkern.backends.cpu", reason="the C++ extension is not built")
    X = gaussian(np.random.default_rng(6), (1, 16, 1 << 17), np.float32)
    x = X[0]
    index = np.tile(np.arange(8, dtype=np.int64), (1, 16, 1))
    v0 = cpu.cwmed(X)
    values, indices = cpu.topk(x, 1 << 16)  # enough entries that scattering them takes a while
    wire_indices = indices.astype(np.uint32)  # as a received message holds them
    norms, qsgd_codes = cpu.qsgd(x, 8, 1)
    scales, sign_codes = cpu.scaled_sign(x)
    natural_codes = cpu.natural(x, 1)
    d = x.shape[1]
    mu, z = X.mean(axis=1, dtype=np.float64), np.ones((1, d))
    dots = cpu.centred_dots(X, mu, z)
    return {
        "mean": lambda: cpu.mean(X), "cwmed": lambda: cpu.cwmed(X), "cwtm": lambda: cpu.cwtm(X, 4),
        "meamed": lambda: cpu.meamed(X, 4), "pairwise_sqdist": lambda: cpu.pairwise_sqdist(X),
        "mix_rows": lambda: cpu.mix_rows(X, index), "row_norms": lambda: cpu.row_norms(X, 2.0),
        "clip": lambda: cpu.clip(X, 1.0), "cclip": lambda: cpu.cclip(X, 1.0, 2, v0),
        "geomed": lambda: cpu.geomed(X, np.ones((1, 16)), "mean", 2, 0.0, 1e-6),
        "topk": lambda: cpu.topk(x, 1 << 12), "randk": lambda: cpu.randk(x, 1 << 12, 1),
        "qsgd": lambda: cpu.qsgd(x, 8, 1), "natural": lambda: cpu.natural(x, 1),
        "sign": lambda: cpu.sign(x), "scaled_sign": lambda: cpu.scaled_sign(x),
        "scatter_rows": lambda: cpu.scatter_rows(values, indices, d),
        "qsgd_decompress": lambda: cpu.qsgd_decompress(norms, qsgd_codes, 8, d),
        "sign_decompress": lambda: cpu.sign_decompress(sign_codes, scales, d),
        "natural_decompress": lambda: cpu.natural_decompress(natural_codes, d, x.dtype),
        "indices_ok": lambda: cpu.indices_ok(wire_indices, d),
        "qsgd_levels_ok": lambda: cpu.qsgd_levels_ok(qsgd_codes, 8, d),
        "mean_std": lambda: cpu.mean_std(X, 1), "gaussian": lambda: cpu.gaussian(X, 1.0, 1),
        "centred_dots": lambda: cpu.centred_dots(X, mu, z), "power_step": lambda: cpu.power_step(X, mu, dots),
    }


def progress_of_another_thread(calls, attempts=200):
    """For each call, whether a second Python thread ran while the call was in progress.

    The switch interval is set far beyond the test's length, so the calling thread never gives
    up the GIL by preemption: the counting thread can only run when a call releases the GIL
    itself. A call that holds it sees the counter unchanged, however long it runs; one that
    releases it is retried until the scheduler has let the counter move (if ever).
    """
    counter, stop = [0], threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)  # hands the GIL back at once, so the caller never waits for it

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    counting = threading.Thread(target=count)
    counting.start()
    try:
        while counter[0] == 0:
            time.sleep(0.001)
        progressed = {}
        for name, call in calls.items():
            for _ in range(attempts):
                before = counter[0]
                call()
                if counter[0] != before:
                    break
            progressed[name] = counter[0] != before
        return progressed
    finally:
        stop.set()
        counting.join()
        sys.setswitchinterval(switch_interval)


def test_cpu_kernels_release_the_gil():
    from byzkern.backends import cpu

    calls = cpu_kernel_calls()
    cpu.set_threads(1)  # leave the other core to the counting thread
    try:
        progressed = progress_of_another_thread(
            {**calls, "control: a loop holding the GIL": lambda: sum(range(200_000))})
    finally:
        cpu.set_threads(0)
    assert progressed.pop("control: a loop holding the GIL") is False
    assert [name for name, ran in progressed.items() if not ran] == []
