"""ContinualShift's schedule by arithmetic: every episode's task and blend as the per-episode arrays gave them, and
an env of 256 tasks x 10^6 episodes x 2 passes built in little memory (the arrays took ~12 GB)."""

import tracemalloc
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs  # noqa: F401  (registers the ids)
from agents.cl_metrics import env_schedule, schedule_blocks
from agents.report import partial_block
from agents.trainer import Trainer
from envs.continual_shift import ContinualShiftSource
from tests.examples import examples


def _old_arrays(src: ContinualShiftSource) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-episode (schedule, blend task, blend share) that ContinualShiftSource built before (its code)."""
    passes = 2 if src.revisit else 1
    schedule = np.repeat(np.tile(np.arange(src.num_tasks), passes), src.episodes_per_task)
    n = len(schedule)
    blend_task, blend_share = schedule.copy(), np.zeros(n)
    if src.shift == "gradual":
        w = src.shift_window
        starts = np.flatnonzero(np.r_[True, schedule[1:] != schedule[:-1]])  # (K,)
        nxt = np.r_[starts[1:], n][np.searchsorted(starts, np.arange(n), side="right") - 1]  # (n,)
        ahead = nxt - np.arange(n)
        near = (nxt < n) & (ahead <= w)
        blend_task[near] = schedule[nxt[near]]
        blend_share[near] = (w - ahead[near] + 1) / (w + 1)
    return schedule, blend_task, blend_share


def _old_plan(arrays, episode: int) -> tuple[int, int, float]:
    """What the old generate() read for a training episode (past the end: the last task, unblended)."""
    schedule, blend_task, blend_share = arrays
    e = min(episode, len(schedule) - 1)
    if episode >= len(schedule):
        return int(schedule[e]), int(schedule[e]), 0.0
    return int(schedule[e]), int(blend_task[e]), float(blend_share[e])


@settings(max_examples=examples(200), deadline=None)
@given(tasks=st.integers(1, 6), per_task=st.integers(1, 9), revisit=st.booleans(),
       shift=st.sampled_from(["abrupt", "gradual"]), window=st.integers(1, 9) | st.none())
def test_the_arithmetic_schedule_is_the_per_episode_arrays(tasks, per_task, revisit, shift, window):
    """Task, blended task and share of every episode (and past the end), the tuple, the blocks, the current task:
    as the arrays gave them, bit for bit (num_tasks=1: its blocks are one, with no blend)."""
    window = None if window is None else min(window, per_task)
    src = ContinualShiftSource(num_tasks=tasks, episodes_per_task=per_task, revisit=revisit, shift=shift,
                               shift_window=window)
    old = _old_arrays(src)
    n = len(old[0])
    for e in range(n + 3):
        task, blend, share = src.train_plan(e)
        assert (task, blend, share) == _old_plan(old, e) and type(share) is float
        assert np.float64(share).tobytes() == np.float64(_old_plan(old, e)[2]).tobytes()
        src.episode_index = e
        assert src.current_task == int(old[0][min(max(e - 1, 0), n - 1)])
    env = gym.make("ContinualShift-v0", num_tasks=tasks, episodes_per_task=per_task, revisit=revisit, shift=shift,
                   shift_window=window).unwrapped
    assert env.schedule == tuple(int(j) for j in old[0]) and env.schedule_length == n
    starts, block_tasks = env.schedule_blocks
    ref_starts, ref_tasks = schedule_blocks(old[0])
    np.testing.assert_array_equal(starts, ref_starts)
    np.testing.assert_array_equal(block_tasks, ref_tasks)
    assert starts.dtype == block_tasks.dtype == np.int64


def test_schedule_blocks_are_copies():
    env = gym.make("ContinualShift-v0", num_tasks=2, episodes_per_task=3, revisit=True).unwrapped
    starts, tasks = env.schedule_blocks
    assert starts.tolist() == [0, 3, 6, 9] and tasks.tolist() == [0, 1, 0, 1]
    starts[:], tasks[:] = 7, 7
    assert env.schedule_blocks[0].tolist() == [0, 3, 6, 9] and env.schedule == (0, 0, 0, 1, 1, 1) * 2


@pytest.mark.parametrize("shift", ["abrupt", "gradual"])
def test_a_schedule_of_512_million_episodes_takes_little_memory(shift):
    """256 tasks x 10^6 episodes, revisited: the scalar and the vector env, the trainer's blocks and episode count
    and the report's partial block (per-episode arrays: ~49 bytes an episode for the two envs, 25 GB)."""
    kwargs = dict(num_tasks=256, episodes_per_task=1_000_000, revisit=True, vocab_size=1024, shift=shift)
    tracemalloc.start()
    try:
        env = gym.make("ContinualShift-v0", **kwargs)
        venv = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
        starts, tasks, episodes = env_schedule(venv)
        trainer = SimpleNamespace(venv=venv, episode=256_500_000, block_starts=starts, block_tasks=tasks,
                                  schedule_episodes=episodes)
        trainer.block_of = lambda e: Trainer.block_of(trainer, e)
        partial = partial_block(trainer)
        _, info = venv.reset(seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert episodes == env.unwrapped.schedule_length == 512_000_000 and len(starts) == len(tasks) == 512
    assert starts[256] == 256_000_000 and tasks[256] == 0 and tasks[-1] == 255
    assert partial == {"block": 256, "task": 0, "episodes": 500_000, "of": 1_000_000}
    assert (info["task_id"] == 0).all()
    src = venv._source
    assert src.train_plan(511_999_999) == (255, 255, 0.0) and src.train_plan(10**9) == (255, 255, 0.0)
    if shift == "gradual":
        assert src.train_plan(255_999_999) == (255, 0, 5 / 6)
