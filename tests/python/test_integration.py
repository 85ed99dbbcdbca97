"""qccl as a user meets it: the torch.backends entry point, mixed backend strings,
TORCH_DISTRIBUTED_DEBUG=DETAIL, and the example under torchrun exactly as the README runs
it."""

import os
import pathlib
import re
import subprocess
import sys
import warnings

from world import World, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_python(code, env=None, timeout=120):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def test_entry_point_registers_qccl_at_import_torch():
    code = f"""
import sys, datetime
import torch, torch.distributed as dist
assert 'qccl' in dist.Backend.backend_list, dist.Backend.backend_list
assert 'qccl._C' not in sys.modules, 'the hook must not load the extension'
store = dist.TCPStore('127.0.0.1', {free_port()}, 1, True)
dist.init_process_group('qccl', store=store, rank=0, world_size=1)
t = torch.ones(3)
dist.all_reduce(t)
assert dist.group.WORLD._get_backend(torch.device('cpu')).name() == 'qccl'
dist.destroy_process_group()
print('ok')
"""
    result = run_python(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_autoload_hook_never_raises(monkeypatch):
    import qccl._autoload as hook
    import qccl._registration as registration

    def broken():
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(registration, "register_backend", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook.autoload()
    assert any("qccl: could not register" in str(w.message) for w in caught)


def test_import_qccl_before_torch_registers_without_warning():
    result = run_python(
        "import warnings; warnings.simplefilter('error'); import qccl, torch.distributed as dist; "
        "assert 'qccl' in dist.Backend.backend_list; print('ok')"
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert "qccl" not in result.stderr, result.stderr


def test_import_qccl_twice_is_harmless():
    result = run_python("import qccl, importlib; qccl.register_backend(); qccl.register_backend(); print('ok')")
    assert result.returncode == 0, result.stderr


def test_mixed_backend_string_routes_cpu_tensors_to_qccl():
    # cuda:gloo stands in for cuda:nccl, which needs a GPU to create.
    code = f"""
import torch, torch.distributed as dist
store = dist.TCPStore('127.0.0.1', {free_port()}, 1, True)
dist.init_process_group('cpu:qccl,cuda:gloo', store=store, rank=0, world_size=1)
assert dist.group.WORLD._get_backend(torch.device('cpu')).name() == 'qccl'
assert dist.group.WORLD._get_backend(torch.device('cuda')).name() == 'gloo'
t = torch.ones(2); dist.all_reduce(t); assert t.tolist() == [1.0, 1.0]
dist.destroy_process_group()
print('ok')
"""
    result = run_python(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def rank_detail_debug(ctx):
    import torch
    import torch.distributed as dist

    import qccl

    t = torch.full((4,), float(ctx.rank))
    dist.all_reduce(t)
    assert t.tolist() == [float(sum(range(ctx.size)))] * 4
    # qccl's own API reaches qccl through torch's debug wrapper.
    assert qccl.stats()["calls"] >= 1
    # The debug wrapper compares the ranks' collectives before running them.
    try:
        if ctx.rank == 0:
            dist.all_reduce(torch.ones(4))
        else:
            dist.broadcast(torch.ones(4), 0)
    except RuntimeError as error:
        return str(error)
    return "no error"


def test_torch_distributed_debug_detail():
    world = World(2, env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"})
    try:
        messages = world.run(rank_detail_debug)
    finally:
        world.broken = True
        world.close()
    assert all("mismatch" in m.lower() for m in messages), messages


def run_example(backend, cwd, steps=20, env=None):
    """The README's command, with fewer steps; returns the final loss it prints and the
    whole output."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(free_port()),
        str(ROOT / "examples" / "train_ddp.py"), "--backend", backend, "--steps", str(steps),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"backend {backend}, 2 ranks" in result.stdout
    assert "samples/s" in result.stdout
    match = re.search(r"final loss (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    return match.group(1), result.stdout


def test_example_runs_under_torchrun_with_both_backends(tmp_path):
    assert run_example("qccl", tmp_path)[0] == run_example("gloo", tmp_path)[0]


def test_example_with_int8_sends_4x_fewer_bytes_at_gloo_loss(tmp_path):
    """The README's QCCL_CODEC=int8 command: the loss stays within 2% of Gloo's, and the
    example's qccl.stats line reports about 4x fewer bytes."""
    int8_loss, output = run_example("qccl", tmp_path, steps=100, env={"QCCL_CODEC": "int8"})
    gloo_loss, _ = run_example("gloo", tmp_path, steps=100)
    assert float(int8_loss) <= float(gloo_loss) * 1.02, (int8_loss, gloo_loss)
    match = re.search(r"qccl codec int8: .* \((\d+\.\d+)x fewer bytes\)", output)
    assert match and 3.8 < float(match.group(1)) < 4.0, output
