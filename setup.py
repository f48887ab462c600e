"""Build the optional C++ extension ``byzkern._cpu``.

The extension is optional by design: when no C++17 compiler or no OpenMP is available the
package still installs (pure Python + Numba), and ``byzkern.info()`` reports why the ``cpu``
backend is absent. The reason is written to ``byzkern/_build_info.json`` at build time.
"""
import json
import os
import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext as _build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension, ParallelCompile
except ImportError:  # pybind11 is in build-system.requires; this only guards odd installs
    Pybind11Extension = None

HERE = Path(__file__).parent
BUILD_INFO = HERE / "byzkern" / "_build_info.json"


def _write_build_info(**info):
    BUILD_INFO.write_text(json.dumps(info))


class OptionalBuildExt(_build_ext):
    """Build the extension, but let installation succeed without it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing entirely
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            _write_build_info(cpu_built=True, reason="")
            self._copy_build_info()
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc):
        msg = f"C++ extension not built: {type(exc).__name__}: {exc}".strip()
        print("byzkern: " + msg, file=sys.stderr)
        _write_build_info(cpu_built=False, reason=msg[:500])
        self._copy_build_info()

    def _copy_build_info(self):
        # Non-editable installs read the build info from the build dir, not the source tree.
        target = Path(self.build_lib) / "byzkern" / "_build_info.json"
        if target.parent.is_dir() and target.resolve() != BUILD_INFO.resolve():
            target.write_text(BUILD_INFO.read_text())


ext_modules = []
if Pybind11Extension is not None and os.environ.get("BYZKERN_NO_EXTENSION") != "1":
    ParallelCompile("NPY_NUM_BUILD_JOBS").install()
    sanitize = os.environ.get("BYZKERN_SANITIZE") == "1"
    # Portable baseline (x86-64 SSE2); no -march=native in anything we ship.
    # -Wno-psabi: the SIMD helpers pass vectors between inline functions of one file only.
    # -ffp-contract=off: no fused multiply-adds in the AVX2+FMA and AVX-512 variants but where a
    # kernel asks for one (pairwise_sqdist's Gram sums, which are compute-bound), so they round
    # like the baseline and every tier gives the same bits elsewhere (tests/test_cpu_kernels.py).
    cflags = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off", "-Wno-psabi"]
    lflags = ["-fopenmp"]
    if sanitize:
        # The same rounding as the shipped build (the ISA tests compare bits); every report
        # stops the run; float-cast-overflow is not in GCC's "undefined"; -fno-wrapv undoes
        # Python's -fwrapv, under which GCC checks no signed overflow.
        checks = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"]
        cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-wrapv", *checks, *cflags[1:]]
        lflags = ["-fopenmp", *checks]
    ext_modules.append(
        Pybind11Extension(
            "byzkern._cpu",
            sorted(glob("csrc/*.cpp")),  # sorted for reproducible builds
            depends=sorted(glob("csrc/*.hpp")),  # headers: rebuild on change, ship in the sdist
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=cflags,
            extra_link_args=lflags,
        )
    )
else:
    _write_build_info(cpu_built=False, reason="extension build disabled (BYZKERN_NO_EXTENSION=1 or no pybind11)")

setup(
    packages=find_packages(include=["byzkern", "byzkern.*"]) + ["byzkern.cuda"],
    package_dir={"byzkern.cuda": "cuda"},
    package_data={"byzkern.cuda": ["*.cu", "*.cuh"], "byzkern": ["_build_info.json"],
                  "byzkern.data": ["*.gz"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
