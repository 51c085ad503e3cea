"""Mutation-testing kills (round 6) for the shared env machinery: reset options, the scalar and vector envs'
render and step, and ContinualShift's token names and distance bound."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)

CS = dict(num_tasks=3, episodes_per_task=2, trials_per_episode=6, keys_per_task=3)


def _vec(num_envs=1, **kwargs):
    return gym.make_vec("ContinualShift-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def test_an_eval_reset_without_task_id_evaluates_task_0():
    """reset(options={"phase": "eval"}) is an eval episode of task 0 (task_id defaults to 0), not another task."""
    env = gym.make("ContinualShift-v0", **CS)
    env.reset(seed=0)
    _, info = env.reset(options={"phase": "eval"})
    tasks, terminated = [info["task_id"]], False
    while not terminated:
        _, _, terminated, _, info = env.step(0)
        tasks.append(info["task_id"])
    assert set(tasks) == {0}


def test_scalar_render_before_the_first_reset_is_none():
    """render_mode="ansi" before any reset: render() returns None (no episode yet), not an AttributeError."""
    env = gym.make("ContinualShift-v0", render_mode="ansi", **CS)
    assert env.unwrapped.render() is None  # past gym.make's order-enforcing wrapper, which raises itself
    env.reset(seed=0)
    assert env.render().startswith("[ContinualShift-v0 train step 0/")


def test_vector_step_refuses_bool_actions():
    """The vector env takes integer actions only: a bool array (True would read as action 1) is a ValueError."""
    venv = _vec(2, **CS)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="integer array"):
        venv.step(np.array([True, False]))


def test_vector_render_shows_the_first_four_lanes():
    """The vector env's render is one line per lane for its first 4 lanes (of 5 here)."""
    venv = _vec(5, render_mode="ansi", **CS)
    venv.reset(seed=0)
    assert len(venv.render().splitlines()) == 4


def test_continual_shift_names_the_first_value_token_v0():
    """token_name: the first value id is v0 (values start at value0), the last key id before it a key."""
    env = gym.make("ContinualShift-v0", **CS)
    src = env.unwrapped._source
    assert src.token_name(src.value0) == "v0"
    assert src.token_name(src.value0 - 1).startswith("k")
    assert src.token_name(src.filler0) == "f0"


def test_continual_shift_distance_bound_is_at_least_one():
    """distance_bound(0, 0) is 1, not 0: the buckets' last edge stays positive for a run with no episodes."""
    venv = _vec(1, **CS)
    assert venv.distance_bound(0, 0) == 1
    assert venv.distance_bound(1, 0) == venv.episode_length
