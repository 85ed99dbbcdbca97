"""The layer rules of docs/design.md hold in csrc/qccl, and tools/check_layers.py catches
an include that breaks them."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "check_layers.py"

pytestmark = pytest.mark.unit


def run_check(tree):
    return subprocess.run([sys.executable, str(CHECK), str(tree)], capture_output=True, text=True)


def test_the_sources_keep_their_layers():
    result = run_check(ROOT / "csrc" / "qccl")
    assert result.returncode == 0, result.stderr


def write(tree, path, text):
    file = tree / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


def test_an_include_upwards_or_of_c10d_in_a_pure_layer_is_reported(tmp_path):
    write(tmp_path, "backend/fine.cpp", '#include "qccl/algo/x.h"\n#include "qccl/qccl.h"\n')
    write(tmp_path, "p2p/fine.h", '#include "qccl/work/work.h"\n#include <torch/csrc/distributed/c10d/Work.hpp>\n')
    write(tmp_path, "codec/upwards.cpp", '#include "qccl/codec/codec.h"\n#include "qccl/backend/work.h"\n')
    write(tmp_path, "p2p/sideways.h", '#include "qccl/algo/collectives.h"\n')
    write(tmp_path, "common/c10d.h", "#include <torch/csrc/distributed/c10d/Types.hpp>\n")
    result = run_check(tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    for offender in ["codec/upwards.cpp", "common/c10d.h", "p2p/sideways.h"]:
        assert any(offender in line for line in lines), result.stderr
