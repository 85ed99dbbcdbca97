#!/usr/bin/env bash
# Runs the whole qccl test suite on a fresh machine (the README's test command):
#   1. installs torch, the test tools, torchft, Lightning, Accelerate and Transformers if
#      missing, and checks that the sources keep their layers (tools/check_layers.py),
#   2. builds and installs qccl against that torch (pip install --no-build-isolation .),
#      building libqccl and the GoogleTest suite once, in build/cmake,
#   3. runs the GoogleTest suite through ctest,
#   4. builds the C++ example against the installed package, as a LibTorch user would,
#   5. runs the multi-process Python tests with pytest (they run that example too).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip --version >/dev/null
python -c "import torch" 2>/dev/null || python -m pip install torch
python -c "import pytest, ninja, matplotlib, numpy" 2>/dev/null || python -m pip install pytest ninja matplotlib numpy
# torchft, for the optional integration's tests (without it they skip, saying why). Its own
# requirement on torch is met by the torch above, so it is installed without dependencies.
python -c "import torchft" 2>/dev/null || {
  python -m pip install --no-deps "torchft==0.2.0" &&
    python -m pip install "opentelemetry-sdk>=1.39" "opentelemetry-api>=1.39" "opentelemetry-exporter-otlp-proto-http>=1.39"
} || echo "torchft could not be installed: tests/python/test_torchft.py will skip" >&2
# Lightning, Accelerate and Transformers, for their recipes' tests (skipped without them);
# they keep the torch above.
python -c "import lightning, accelerate, transformers" 2>/dev/null ||
  python -m pip install "lightning==2.6.6" "accelerate==1.15.0" "transformers==5.24.0" ||
  echo "Lightning, Accelerate or Transformers could not be installed: their tests will skip" >&2
if ! command -v cmake >/dev/null || ! ls /usr/include/gtest/gtest.h >/dev/null 2>&1; then
  echo "qccl tests need cmake and GoogleTest (Debian: apt-get install cmake libgtest-dev)" >&2
  exit 1
fi

python tools/check_layers.py  # includes follow the layers of docs/design.md

export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
# One CMake build of libqccl serves the package and the GoogleTest suite (setup.py).
QCCL_CMAKE_BUILD_DIR="$PWD/build/cmake" QCCL_BUILD_TESTS=1 python -m pip install --no-build-isolation --no-deps .

ctest --test-dir build/cmake --output-on-failure -j "$MAX_JOBS"
# `cmake --install` gives a tree that find_package(qccl) accepts too.
cmake --install build/cmake --prefix build/install >/dev/null

prefix_path="$(python -c 'import torch, qccl; print(torch.utils.cmake_prefix_path + ";" + qccl.cmake_prefix_path)')"
cmake -S examples/cpp -B build/example -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix_path"
cmake --build build/example
cmake -S examples/cpp -B build/example-from-install -DCMAKE_PREFIX_PATH="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)');$PWD/build/install" >/dev/null

python -m pytest tests/python -q
