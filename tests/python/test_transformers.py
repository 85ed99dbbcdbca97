"""The Transformers Trainer on qccl, as the README says: init_process_group("qccl") first,
then the Trainer. Its gradients go through qccl, and the parameters end as on Gloo, to the
bit. Skipped where Transformers is not installed."""

import pathlib
import re

import pytest

from world import run_torchrun

pytest.importorskip("transformers", reason="Transformers is not installed (pip install transformers)")

WORKER = pathlib.Path(__file__).resolve().parent / "transformers_worker.py"


def _run(backend, tmp_path):
    output = run_torchrun(WORKER, backend, tmp_path / f"trainer-{backend}", cwd=tmp_path)
    match = re.search(r"parameters (\w+) qccl all_reduces (\d+)", output)
    assert match, output[-3000:]
    return match.group(1), int(match.group(2))


def test_trainer_after_init_process_group_matches_gloo(tmp_path):
    qccl_digest, qccl_calls = _run("qccl", tmp_path)
    gloo_digest, _ = _run("gloo", tmp_path)
    assert qccl_digest == gloo_digest
    assert qccl_calls >= 10, "the gradients did not go through qccl"
