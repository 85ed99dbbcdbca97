"""Builds qccl against the torch that is installed: libqccl with CMake, then the Python
extension qccl._C (the bindings only) linked to it.

libqccl, its public headers and its CMake package are installed into the qccl Python
package (qccl/lib, qccl/include, qccl/lib/cmake/qccl), so C++ programs can
find_package(qccl) against a pip install (qccl.cmake_prefix_path), and the library
Python loads is the library C++ programs link.

Install with `pip install --no-build-isolation .`: an isolated build environment would
download a different torch than the one the build must match. Needs cmake >= 3.18.

Environment:
  QCCL_CUDA=auto|1|0   build the CUDA flavour (auto: when torch has CUDA and nvcc exists)
  QCCL_CMAKE_BUILD_DIR build libqccl in this (absolute) directory instead of a temporary one
  QCCL_BUILD_TESTS=1   build the GoogleTest suite there too (tests/run_all.sh sets both,
                       so that libqccl is compiled once for the package and the tests)
  TORCH_CUDA_ARCH_LIST GPU architectures for the CUDA flavour (default "8.0;9.0+PTX")
  MAX_JOBS             parallel compile jobs
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

try:
    from torch.utils import cpp_extension
except ImportError as error:  # pragma: no cover - a message for users, not a code path
    raise SystemExit(
        "qccl builds against an installed PyTorch: run `pip install torch` first, then "
        "`pip install --no-build-isolation .`"
    ) from error

ROOT = Path(__file__).parent.resolve()


def cmake_flavour():
    """-DQCCL_CUDA=...: CMakeLists.txt decides 'auto' (torch has CUDA and nvcc exists)."""
    choice = os.environ.get("QCCL_CUDA", "auto").lower()
    if choice in ("1", "on", "true"):
        return "ON"
    if choice in ("0", "off", "false"):
        return "OFF"
    return "AUTO"


class BuildLibraryThenBindings(cpp_extension.BuildExtension):
    def build_extension(self, ext):
        package_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        self.install_libqccl(package_dir)
        ext.library_dirs.append(str(package_dir / "lib"))
        super().build_extension(ext)

    def install_libqccl(self, prefix: Path):
        build_dir = Path(os.environ.get("QCCL_CMAKE_BUILD_DIR") or Path(self.build_temp) / "libqccl").resolve()
        tests = "ON" if os.environ.get("QCCL_BUILD_TESTS") == "1" else "OFF"
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DQCCL_BUILD_TESTS={tests}",
            f"-DQCCL_CUDA={cmake_flavour()}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            "-DCMAKE_INSTALL_LIBDIR=lib",
        ]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs], check=True)
        subprocess.run(["cmake", "--install", str(build_dir)], check=True)


bindings = cpp_extension.CppExtension(
    name="qccl._C",
    sources=["csrc/python/bindings.cpp"],
    include_dirs=[str(ROOT / "csrc")],
    libraries=["qccl"],  # found in qccl/lib, where build_extension installs it first
    extra_compile_args=["-O2"],
    extra_link_args=["-Wl,-rpath,$ORIGIN/lib"],
)

setup(
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[bindings],
    cmdclass={"build_ext": BuildLibraryThenBindings.with_options(use_ninja=True)},
)
