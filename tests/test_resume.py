"""A run SIGKILLed after its first checkpoint and resumed ends in the same state as an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from agents import run
from agents.tb_logger import read_scalars
from agents.tune_overrides import merge_overrides
from tests.repo_env import REPO, repo_env
from tests.test_run import TINY_ENVS, TINY_MODEL

OVERRIDES = ["env=ContinualShift-v0", "agent=memnet", "seed=5", "env.kwargs.num_tasks=2",
             "env.kwargs.episodes_per_task=3", "env.kwargs.trials_per_episode=12", "env.kwargs.keys_per_task=4",
             "train.checkpoint_every=1", "train.eval_every=2", *TINY_MODEL]


def assert_same(a, b, where="checkpoint"):
    """Nested dicts / lists of tensors, numpy arrays and plain values equal bit for bit (NaN equals NaN)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert_same(torch.from_numpy(a), torch.from_numpy(b), where)
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype, where
        same = a == b
        if a.is_floating_point():
            same |= a.isnan() & b.isnan()  # NaN marks empty rows (e.g. importance of a free cache row)
        assert bool(same.all()), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def test_killed_run_resumes_to_the_same_state(tmp_path):
    check_resume(tmp_path, OVERRIDES)
    # the checkpoints hold the cold tier without its token-code keys (agents/memnet_cache_codes.py), some remade at a
    # load, some kept (the warm tier, no wider than a call's 16 writes, empties and drops its older channel rows)
    for run_dir in ("straight", "killed"):
        memory = torch.load(tmp_path / run_dir / "checkpoints" / "last.pt", weights_only=True)["memory"]
        how = memory["cache_codes"]["how"]
        assert bool((how < 254).any()) and bool((how == 254).any()), run_dir


def check_resume(tmp_path, overrides: list[str], episodes: int = 6) -> None:
    """Run `overrides` straight, and again SIGKILLed after its first checkpoint and resumed: the two end in the
    same weights, optimiser, state, memory, RNG, trainer state, metrics.json and TensorBoard curves."""
    overrides = merge_overrides(overrides)  # agents.run takes each key once: a later one replaces an earlier one
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run.main([*overrides, f"run_dir={straight}"]) == 0

    env = repo_env(OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "agents.run", *overrides, f"run_dir={killed}"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), "the run never wrote its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = torch.load(ckpt, weights_only=True)["trainer"]["episode"]
    assert 1 <= partial < episodes, f"killed after episode {partial}: not a run cut short, nothing to resume"
    assert run.main([f"resume={killed}"]) == 0

    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert b["trainer"]["episode"] == episodes and a["trainer"]["episode"] == episodes
    print(f"killed after episode {partial} of {episodes}")
    for section in ("model", "optimizer", "state", "memory", "rng"):
        assert_same(a[section], b[section], section)
    for key in ("episode", "lane_steps", "train_steps", "reset_log", "R", "b", "curves", "task_boundaries",
                "by_distance", "by_delay", "usage_history", "usage_steps", "slot_lifetimes"):
        assert_same(a["trainer"][key], b["trainer"][key], f"trainer.{key}")
    ma = json.loads((straight / "metrics.json").read_text())
    mb = json.loads((killed / "metrics.json").read_text())
    for m in (ma, mb):
        m.pop("tokens_per_s")
    assert ma == mb
    # TensorBoard: every curve as in the uninterrupted run, the checkpoint step's points included (a resumed run
    # logs from the step after its checkpoint on); perf/* are timings
    ta, tb = read_scalars(straight), read_scalars(killed)
    curves = sorted(tag for tag in ta if tag.startswith(("train/", "eval/", "cl/", "recall/", "memory/")))
    assert curves == sorted(tag for tag in tb if tag.startswith(("train/", "eval/", "cl/", "recall/", "memory/")))
    for tag in curves:
        assert ta[tag] == tb[tag], tag


# merged over each case: its budget wins, the case's own model and memory keys stay (TINY_MODEL comes first there)
TINY = ["seed=5", "train.checkpoint_every=1", "train.eval_every=2", "train.episodes=6"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["env=NeedleRecall-v0", "agent=memnet", *TINY_ENVS["NeedleRecall-v0"], *TINY_MODEL],
    ["env=LongDependency-v0", "agent=memnet", *TINY_ENVS["LongDependency-v0"], "env.kwargs.cross_episode_queries=2",
     "env.kwargs.episode_length=80", *TINY_MODEL],
    [*OVERRIDES, "train.mode=reinforce"],
    [*OVERRIDES, "agent=lstm"],
    [*OVERRIDES, "memory.internal=lm2"],
    [*OVERRIDES, "memory.store_index=ivf"],  # capacity 64: the IVF index trains mid-run (39 entries, 1 list)
    [*OVERRIDES, "memory.store_scope=shared", "memory.store_capacity=128"],
    [*OVERRIDES, "memory.reset=task"],
    [*OVERRIDES, "train.amp=true"],
    [*OVERRIDES, "memory.cache_hot=4", "memory.cache_warm=2", "memory.cache_cold=8"],  # tiers that demote a lot
], ids=["needle", "long-dependency-cross-episode", "reinforce", "lstm", "lm2", "ivf", "shared-store",
        "reset-task", "amp", "small-cache-tiers"])
def test_other_configurations_resume_to_the_same_state(tmp_path, overrides):
    check_resume(tmp_path, merge_overrides(overrides, TINY))  # TINY's budget (6 episodes) over the env's tiny one
