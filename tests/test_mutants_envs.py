"""Mutation-testing kills for the envs: the vector env's eval stream, LongDependency's fresh evaluations."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)

BASE_IDS = ["LongDependency-v0", "ContinualShift-v0", "NeedleRecall-v0"]


def vector_episode(venv, seed=None, options=None) -> np.ndarray:
    """(L + 1, B) observations of one whole episode of every lane."""
    obs, _ = venv.reset(seed=seed, options=options)
    rows = [obs]
    actions = np.zeros(venv.num_envs, dtype=np.int64)
    for _ in range(venv.unwrapped.episode_length):
        obs, *_ = venv.step(actions)
        rows.append(obs)
    return np.stack(rows)


@pytest.mark.parametrize("env_id", BASE_IDS)
def test_vector_eval_resets_leave_every_lanes_training_stream_as_it_was(env_id):
    """The vector env's eval episodes come from the lanes' eval generators: the next training episode is the same
    whether or not the trainer evaluated in between (the scalar env's test does not reach the vector env)."""
    make = lambda: gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")  # noqa: E731
    plain, evaluated = make(), make()
    first = vector_episode(plain, seed=0)
    assert np.array_equal(vector_episode(evaluated, seed=0), first)
    evals = [vector_episode(evaluated, options={"phase": "eval", "task_id": 0}) for _ in range(2)]
    assert not np.array_equal(evals[0], evals[1])
    assert np.array_equal(vector_episode(plain), vector_episode(evaluated))


def scored_per_episode(env, episodes: int, options: dict) -> list[int]:
    counts = []
    for _ in range(episodes):
        _, info = env.reset(options=options)
        n, terminated = int(info["scored"]), False
        while not terminated:
            _, _, terminated, _, info = env.step(0)
            n += int(info["scored"])
        counts.append(n)
    return counts


def test_long_dependency_each_complete_evaluation_starts_without_carried_pairs():
    """cross_episode_queries=C, gap=1: an evaluation is 2 episodes; its first has only the Q in-episode queries
    (nothing carried from the previous evaluation), its second the Q + C. Training carries across episodes."""
    env = gym.make("LongDependency-v0", queries_per_episode=4, cross_episode_queries=3, cross_episode_gap=1)
    env.reset(seed=0)
    assert env.unwrapped.eval_episodes == 2
    ev = {"phase": "eval", "task_id": 0}
    assert scored_per_episode(env, 6, ev) == [4, 7, 4, 7, 4, 7]
    assert scored_per_episode(env, 3, {"phase": "train"}) == [7, 7, 7]  # the seeded reset was training episode 0


def _steps(env, **reset):
    """(obs, target, task_id) of every acted-upon step of one scalar episode."""
    obs, info = env.reset(**reset)
    out, terminated = [], False
    while not terminated:
        out.append((obs, info["target"], info["task_id"]))
        obs, _, terminated, _, info = env.step(0)
    return out


def test_continual_shift_blended_trials_report_the_task_whose_mapping_they_use():
    """shift="gradual": trials of the next task are blended in before a switch; info["task_id"] is the task of each
    trial (the one whose key -> value mapping the target follows), not the episode's main task."""
    env = gym.make("ContinualShift-v0", num_tasks=2, episodes_per_task=2, trials_per_episode=40, keys_per_task=8,
                   shift="gradual", shift_window=2)
    env.reset(seed=0)
    mapping = {}
    for j in range(2):  # pure eval episodes give each task's mapping (keys are shared, values conflict)
        for obs, target, task in _steps(env, options={"phase": "eval", "task_id": j}):
            if target >= 0:
                assert task == j
                assert mapping.setdefault((j, obs), target) == target
    assert any(mapping[0, k] != mapping[1, k] for (_, k) in mapping)
    # training episode 0 is blended (share 1/3 of task 1), then episode 1 (2/3)
    steps = [s for s in _steps(env, seed=0) if s[1] >= 0] + [s for s in _steps(env) if s[1] >= 0]
    assert {task for _, _, task in steps} == {0, 1}
    for obs, target, task in steps:
        assert mapping[task, obs] == target
