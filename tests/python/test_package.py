"""What pip installed: one version everywhere, and the dependencies that keep every rank's
output clean."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

import qccl

pytestmark = pytest.mark.unit

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_one_version_string():
    assert importlib.metadata.version("qccl") == qccl.__version__
    release = re.search(r"\(release (\d+\.\d+)\)", README.read_text()).group(1)
    assert qccl.__version__.startswith(release + ".")


def test_numpy_is_a_dependency():
    requires = importlib.metadata.requires("qccl") or []
    assert any(re.match(r"numpy\b", r) for r in requires), requires


def test_importing_torch_and_qccl_prints_nothing():
    """torch prints "Failed to initialize NumPy" on every rank when numpy is missing."""
    done = subprocess.run(
        [sys.executable, "-c", "import torch, torch.distributed, qccl"],
        capture_output=True, text=True, check=True, cwd="/",
    )
    assert done.stdout == "" and done.stderr == "", done.stderr
