"""The C++ example (examples/cpp/train.cpp) as a LibTorch user runs it: two processes
from a plain shell-style launcher, and under `torchrun --no-python`.

tests/run_all.sh builds it first against the installed package, with the commands of
examples/README.md; QCCL_CPP_EXAMPLE names another binary.
"""

import os
import pathlib
import re
import subprocess

import pytest

from world import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("QCCL_CPP_EXAMPLE", ROOT / "build" / "example" / "train"))

pytestmark = pytest.mark.skipif(
    not BINARY.exists(),
    reason=f"{BINARY} is not built: run the C++ build commands of examples/README.md (tests/run_all.sh does)",
)

RESULT = re.compile(r"rank (\d+) first_loss (\S+) final_loss (\S+) digest (\w+)")


def results(output):
    """rank -> (first loss, final loss, parameter digest) from the example's last lines."""
    found = {int(m[1]): (float(m[2]), float(m[3]), m[4]) for m in RESULT.finditer(output)}
    assert sorted(found) == [0, 1], output
    return found


def launch_two_processes(codec, steps=100):
    """What a shell loop does: RANK and WORLD_SIZE per process, rank 0 hosts the store."""
    port = free_port()
    processes = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), TRAIN_STEPS=str(steps), QCCL_CODEC=codec)
        processes.append(subprocess.Popen([str(BINARY)], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    return results("".join(outputs))


def test_int8_training_converges_like_exact_training_with_identical_ranks():
    exact = launch_two_processes("none")
    int8 = launch_two_processes("int8")
    for run in (exact, int8):
        assert run[0][2] == run[1][2], f"ranks ended with different parameters: {run}"
        for first, final, _ in run.values():
            assert final < first / 1000, run
    assert int8[0][2] != exact[0][2], "int8 left the gradients exact: compression was not applied"
    for rank in (0, 1):
        assert int8[rank][1] <= exact[rank][1] * 1.1, (int8, exact)


def test_runs_under_torchrun_without_python():
    command = ["torchrun", "--nproc-per-node", "2", "--no-python", "--master-port", str(free_port()),
               str(BINARY)]
    env = dict(os.environ, TRAIN_STEPS="20", QCCL_CODEC="int8")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    run = results(result.stdout)
    assert run[0][2] == run[1][2] and "codec int8" in result.stdout, result.stdout
