"""device=cuda end to end, where a CUDA device is visible (skipped elsewhere, as on CI). The rest of the suite runs on
the CPU (tests/conftest.py hides CUDA); these tests start their commands with the user's devices (tests/cuda.py).

On an H200 (2026-12-04) the main command failed on CUDA at its first checkpoint: the cache's compact save read the
model's token codes, on the GPU, as numpy (fixed in agents/memnet_cache_codes.py `cache_codes`). With the fix these
three passed there in 142 s (`pytest tests/test_cuda.py -n 0`, the same day)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.cuda import cuda_env, cuda_visible
from tests.repo_env import REPO
from tests.test_run import tiny


@pytest.fixture(scope="module")
def cuda():
    if not cuda_visible():
        pytest.skip("no CUDA device is visible here")


def command(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args` with the user's CUDA devices; its output kept for the failure message."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=cuda_env(), capture_output=True,
                          text=True, timeout=600, **kwargs)


def test_a_memnet_run_on_cuda_checkpoints_and_a_machine_without_cuda_evaluates_it(cuda, tmp_path):
    run_dir = tmp_path / "run"
    done = command("agents.run", *tiny("ContinualShift-v0", "memnet", run_dir, "device=cuda", "train.episodes=2"))
    assert done.returncode == 0, done.stderr
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "metrics.json").is_file()
    body = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert "cache_codes" in body["memory"]  # the compact save that failed on CUDA

    on_cuda = command("agents.evaluate", f"checkpoint={run_dir}", "out=cuda.json")
    assert on_cuda.returncode == 0, on_cuda.stderr  # (the run's own device, cuda)
    # this process has no CUDA (tests/conftest.py): a laptop reading a GPU machine's run
    from agents import evaluate

    assert evaluate.main([f"checkpoint={run_dir}", "device=cpu", "out=cpu.json"]) == 0
    a, b = (json.loads((run_dir / name).read_text()) for name in ("cuda.json", "cpu.json"))
    assert a["accuracy_by_task"].keys() == b["accuracy_by_task"].keys() and 0 <= b["accuracy"] <= 1


def test_a_run_killed_on_cuda_resumes_to_the_metrics_of_an_uninterrupted_one(cuda, tmp_path):
    """Seen on an H200 (2026-12-04): LongDependency, MemNet, SIGKILLed after its first checkpoint and resumed, ended
    at the uninterrupted run's ACC and accuracy."""
    args = ("env=LongDependency-v0", "train.episodes=6", "train.checkpoint_every=2", "seed=3")
    straight = command("agents.run", *args, f"run_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "agents.run", *args, f"run_dir={killed}"], cwd=REPO,
                            env=cuda_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(killed / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    episode = ckpt["trainer"]["episode"]
    assert 1 <= episode < 6, f"killed after episode {episode}: nothing to resume"
    resumed = command("agents.run", f"resume={killed}")
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "straight", killed))
    for m in (a, b):
        m.pop("tokens_per_s")
    assert a == b


def test_the_throughput_benchmark_runs_on_cuda_and_says_so(cuda):
    done = subprocess.run([sys.executable, "benchmarks/agents.py", "--agents", "memnet,transformer", "--episodes", "1",
                           "--lanes", "2"], cwd=REPO, env=cuda_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert ", on cuda (" in lines[0] and "not judged here (on cuda (" in lines[-1], done.stdout
