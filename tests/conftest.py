"""Shared fixtures: the backends under test, dtypes, small tile sizes, and the wheel build.

Tile sizes are shrunk for the whole session so that the small inputs of the tests cover the
multi-tile and tail paths of the fast kernels.
"""
import importlib.util

import numpy as np
import pytest

import byzkern
from byzkern import _config, _dispatch

_config.COL_TILE = _config.MEAN_TILE = 8
_config.SHARED_PREFIX_MIN_COLUMNS = 0
_config.CUDA_THREADS = 32

#: every fast backend the parity tests compare with the reference; ``cuda`` runs where a device
#: is usable and is skipped with the reason elsewhere (every CI run)
FAST_BACKENDS = ("cpu", "numba", "cuda")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def wheel_build(request, tmp_path_factory):
    """test_wheel.py's sdist and wheel, building from the session's first test on (None when
    none of its tests runs or the build package is missing): compiling the extension takes
    minutes, nearly all of them on the core that pytest, running one test at a time, leaves idle."""
    selected = {item.path.name for item in request.session.items}
    if "test_wheel.py" not in selected or importlib.util.find_spec("build") is None:
        yield None
        return
    import test_wheel

    # beside other tests, one compile job: the build keeps to the idle core
    jobs = 1 if len(selected) > 1 else 0
    build = test_wheel.BackgroundBuild(tmp_path_factory.mktemp("wheel"), jobs)
    yield build
    build.stop()


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    """Each fast backend, skipped with the reason when it is not available here."""
    module, reason = _dispatch.load(request.param)
    if module is None:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def pytest_report_header(config):
    rows = byzkern.info()["backends"]
    return "byzkern backends: " + ", ".join(
        f"{k}={'yes' if v['available'] else 'no'}" for k, v in rows.items())
