"""Accelerate on qccl, as the README says: init_process_group("qccl") first, then
Accelerator(). DDP's gradients go through qccl, and the parameters end as on Gloo, to the
bit. Skipped where Accelerate is not installed."""

import pathlib
import re

import pytest

from world import run_torchrun

pytest.importorskip("accelerate", reason="Accelerate is not installed (pip install accelerate)")

WORKER = pathlib.Path(__file__).resolve().parent / "accelerate_worker.py"


def _run(backend, tmp_path):
    output = run_torchrun(WORKER, backend, cwd=tmp_path)
    match = re.search(r"DistributedDataParallel parameters (\w+) qccl all_reduces (\d+)", output)
    assert match, output[-3000:]
    return match.group(1), int(match.group(2))


def test_accelerate_after_init_process_group_matches_gloo(tmp_path):
    qccl_digest, qccl_calls = _run("qccl", tmp_path)
    gloo_digest, _ = _run("gloo", tmp_path)
    assert qccl_digest == gloo_digest
    assert qccl_calls >= 10, "the gradients did not go through qccl"
