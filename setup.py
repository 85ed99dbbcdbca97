"""Builds qccl's Python extension qccl._C against the torch that is installed.

Install with `pip install --no-build-isolation .`: an isolated build environment would
download a different torch than the one the extension must match.

Environment:
  QCCL_CUDA=auto|1|0   build the CUDA flavour (auto: when torch has CUDA and nvcc exists)
  TORCH_CUDA_ARCH_LIST GPU architectures for the CUDA flavour (default "8.0;9.0+PTX")
  MAX_JOBS             parallel compile jobs (torch's ninja build honours it)
"""

import os
from pathlib import Path

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError as error:  # pragma: no cover - a message for users, not a code path
    raise SystemExit(
        "qccl builds against an installed PyTorch: run `pip install torch` first, then "
        "`pip install --no-build-isolation .`"
    ) from error

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"


def library_sources():
    """The shared source list (csrc/sources.txt), also read by CMakeLists.txt."""
    lines = (CSRC / "sources.txt").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


def want_cuda():
    choice = os.environ.get("QCCL_CUDA", "auto").lower()
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if choice in ("1", "on", "true"):
        if not available:
            raise SystemExit("qccl: QCCL_CUDA=1 but torch has no CUDA or nvcc was not found")
        return True
    if choice in ("0", "off", "false"):
        return False
    return available


def extension():
    sources = library_sources()
    cuda = want_cuda()
    if not cuda:
        sources = [s for s in sources if not s.endswith(".cu")]
    paths = [str(Path("csrc") / s) for s in sources] + ["csrc/python/bindings.cpp"]
    # -fopenmp: ATen's parallel_for (the codecs use it) is OpenMP pragmas inlined from
    # torch's headers; without the flag they compile to a serial loop. The runtime is the
    # libgomp torch already loads. -ffp-contract=off: no fused multiply-adds, so the
    # codecs round the same way on every CPU and match their Python reference.
    # -fno-trapping-math: lets the compiler vectorize the codecs' float-to-int loops
    # (qccl never inspects floating-point exception flags).
    cxx_flags = [
        "-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-Wall", "-Wno-unused-parameter",
    ]
    kwargs = dict(
        name="qccl._C",
        sources=paths,
        include_dirs=[str(CSRC)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
    if not cuda:
        return cpp_extension.CppExtension(**kwargs)
    # Without a GPU to look at, torch would compile for every architecture it knows.
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    kwargs["define_macros"] = [("QCCL_WITH_CUDA", "1")]
    kwargs["extra_compile_args"] = {"cxx": cxx_flags + ["-DQCCL_WITH_CUDA"], "nvcc": ["-O3"]}
    return cpp_extension.CUDAExtension(**kwargs)


setup(
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
