"""Lightning's DDP on qccl, launched with torchrun as the example's docstring says: the same
parameters as on Gloo, to the bit. Skipped where Lightning is not installed."""

import pathlib
import re

import pytest

from world import run_torchrun

pytest.importorskip("lightning", reason="Lightning is not installed (pip install lightning)")

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train_lightning.py"


def _run(backend, tmp_path):
    output = run_torchrun(EXAMPLE, "--backend", backend, "--steps", 20, cwd=tmp_path)
    match = re.search(r"backend \w+, 2 ranks, 20 steps, final loss [\d.]+, parameters (\w+)", output)
    assert match, output[-3000:]
    return match.group(1)


def test_lightning_ddp_matches_gloo_bit_for_bit(tmp_path):
    assert _run("qccl", tmp_path) == _run("gloo", tmp_path)
