"""Packaging: ``python -m build`` makes an sdist and a wheel from it; the wheel, installed into a
fresh virtual environment, works without the source tree.

The build runs from a clean copy of the checkout, beside the other tests of the session
(tests/conftest.py starts it), without isolation (``--no-isolation``: setuptools and pybind11
come from the test extra) so CI downloads nothing. The virtual environment sees the running
environment's site packages for NumPy and Numba (appended to its path, after its own); the smoke
script proves that byzkern itself and its ``_cpu`` extension are the wheel's, not the source
tree's or an editable install's.
"""
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted(p.name for p in (ROOT / "cuda").glob("*.cu*"))
CPP_SOURCES = sorted(p.name for p in (ROOT / "csrc").iterdir())


def run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def clean_env():
    """The environment minus everything that could put the source tree on sys.path or change
    what the build compiles."""
    drop = ("PYTHONPATH", "BYZKERN_NO_EXTENSION", "BYZKERN_SANITIZE", "BYZKERN_ISA")
    return {k: v for k, v in os.environ.items() if k not in drop}


def clean_checkout(target):
    """The files a fresh clone would have (tracked or not ignored), copied to ``target``: build
    leftovers such as a stale ``*.egg-info/SOURCES.txt`` must not mend a broken sdist."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


class BackgroundBuild:
    """``python -m build`` of a clean copy of the checkout, running while other tests do: it
    compiles the extension for minutes, so tests/conftest.py starts it with the session."""

    def __init__(self, root, jobs=0):
        """jobs: parallel compiles (``NPY_NUM_BUILD_JOBS``; 0: one per core)."""
        source = clean_checkout(root / "source")
        self.out, self.log = root / "dist", root / "build.log"
        env = dict(clean_env(), NPY_NUM_BUILD_JOBS=str(jobs))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(self.out), str(source)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait(self):
        returncode = self.process.wait(timeout=900)
        assert returncode == 0, f"python -m build failed:\n{self.log.read_text()[-6000:]}"
        return self.out

    def stop(self):
        """End the build if the session ends first, with the compilers it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def dist(wheel_build):
    if wheel_build is None:
        pytest.skip("the build package is not installed")
    return wheel_build.wait()


def test_sdist_holds_the_sources(dist):
    (sdist,) = dist.glob("byzkern-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {Path(*Path(m).parts[1:]).as_posix() for m in archive.getnames()}
    expected = {f"csrc/{name}" for name in CPP_SOURCES} | {f"cuda/{name}" for name in CUDA_SOURCES}
    assert expected <= names, f"missing from the sdist: {sorted(expected - names)}"


def see_dependencies_of_this_environment(python):
    """Append the site directories of NumPy and Numba here to ``python``'s path. Not
    ``--system-site-packages``: when this interpreter is itself a venv, that flag shows the base
    interpreter's site packages, which may lack them. A ``.pth`` line only appends a directory;
    the ``.pth`` files inside it (this environment's editable byzkern) are not run."""
    import numba
    import numpy

    dirs = {str(Path(module.__file__).resolve().parents[1]) for module in (numpy, numba)}
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    Path(purelib, "byzkern_test_dependencies.pth").write_text("\n".join(sorted(dirs)) + "\n")


def test_wheel_installs_and_runs_without_the_source_tree(dist, tmp_path):
    (wheel,) = dist.glob("byzkern-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python, env = venv / "bin" / "python", clean_env()
    see_dependencies_of_this_environment(python)
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--quiet", str(wheel)], env=env)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    smoke = shutil.copy(ROOT / "tests" / "wheel_smoke.py", workdir)
    assert "wheel smoke: ok" in run([str(python), smoke, *CUDA_SOURCES], cwd=workdir, env=env)
    demo = run([str(venv / "bin" / "byzkern"), "demo", "--d", "2000"], cwd=workdir, env=env)
    assert "demo: n=20 workers, f=4 Byzantine" in demo
