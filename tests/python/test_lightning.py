"""Lightning's DDP on qccl, launched with torchrun as the example's docstring says: the same
parameters as on Gloo, to the bit. Skipped where Lightning is not installed."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from world import free_port

pytest.importorskip("lightning", reason="Lightning is not installed (pip install lightning)")

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train_lightning.py"


def _run(backend, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), str(EXAMPLE), "--backend", backend, "--steps", "20"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=dict(os.environ))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    match = re.search(r"backend \w+, 2 ranks, 20 steps, final loss [\d.]+, parameters (\w+)", done.stdout)
    assert match, done.stdout[-3000:]
    return match.group(1)


def test_lightning_ddp_matches_gloo_bit_for_bit(tmp_path):
    assert _run("qccl", tmp_path) == _run("gloo", tmp_path)
