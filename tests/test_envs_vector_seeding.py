"""Seeding and autoreset of every env, scalar and vector: a seed names one stream (training episodes through the
vector env's autoreset, and the eval episodes beside them), reset(seed=) in the middle of a run starts that stream
again exactly as a new env does, another seed gives another, and the autoreset step takes no action and pays
nothing."""

import gymnasium as gym
import numpy as np
import pytest

import envs

IDS = list(envs.ENV_IDS)
EVAL = {"phase": "eval", "task_id": 0}


def vector_stream(venv, seed):
    """Observations and targets of two training episodes (through the autoreset) and then one eval episode."""
    L = venv.episode_length
    obs, info = venv.reset(seed=seed)
    rows, targets = [obs], [info["target"]]
    for _ in range(2 * (L + 1) - 1):
        obs, _, _, _, info = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
        rows.append(obs)
        targets.append(info["target"])
    obs, info = venv.reset(options=EVAL)
    evals = [obs]
    for _ in range(L):
        evals.append(venv.step(np.zeros(venv.num_envs, dtype=np.int64))[0])
    return np.stack(rows), np.stack(targets), np.stack(evals)


def scalar_stream(env, seed):
    rows = []
    for options in (None, None, EVAL):
        obs, info = env.reset(seed=seed if not rows else None, options=options)
        rows.append((obs, info["target"]))
        terminated = False
        while not terminated:
            obs, _, terminated, _, info = env.step(0)
            rows.append((obs, info["target"]))
    return rows


@pytest.mark.parametrize("env_id", IDS)
def test_a_seeded_reset_mid_run_restarts_the_vector_stream_as_a_new_env_does(env_id):
    """The stream's state (schedule position, carried pairs) and the eval generators derived from the lanes' own
    are made again by a seeded reset: a run that trained and evaluated, then reset(seed=7), sees a new env's
    stream, training and eval alike."""
    def make():
        return gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")

    fresh = vector_stream(make(), 7)
    used = make()
    vector_stream(used, 7)
    vector_stream(used, None)  # further on, unseeded: the stream and the eval generators move on
    again = vector_stream(used, 7)
    for part, (a, b) in enumerate(zip(fresh, again, strict=True)):
        np.testing.assert_array_equal(b, a, err_msg=f"part {part} (0 obs, 1 targets, 2 eval obs)")
    assert not np.array_equal(fresh[0][:, 0], fresh[0][:, 1]), "two lanes drew the same stream"
    assert not np.array_equal(fresh[2][:, 0], fresh[2][:, 1]), "two lanes drew the same eval episode"
    other = vector_stream(make(), 8)
    assert not np.array_equal(other[0], fresh[0]) and not np.array_equal(other[2], fresh[2])


@pytest.mark.parametrize("env_id", IDS)
def test_a_seeded_reset_mid_run_restarts_the_scalar_stream_as_a_new_env_does(env_id):
    fresh = scalar_stream(gym.make(env_id).unwrapped, 7)
    used = gym.make(env_id).unwrapped
    scalar_stream(used, 7)
    scalar_stream(used, None)
    assert scalar_stream(used, 7) == fresh
    assert scalar_stream(gym.make(env_id).unwrapped, 8) != fresh


@pytest.mark.parametrize("env_id", IDS)
def test_the_autoreset_step_pays_nothing_and_ends_no_episode_even_for_the_right_answer(env_id):
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    L = venv.episode_length
    _, info = venv.reset(seed=2)
    for _ in range(L):  # every answer right
        right = np.maximum(info["target"], 0)
        _, _, terminated, truncated, info = venv.step(right)
    assert terminated.all() and not truncated.any()
    terminal_targets = np.maximum(info["target"], 0)
    obs, reward, terminated, truncated, info = venv.step(terminal_targets)  # the autoreset step
    np.testing.assert_array_equal(reward, np.zeros(3))
    assert not terminated.any() and not truncated.any()
    first = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    first.reset(seed=2)
    for _ in range(L + 1):
        expected = first.step(np.zeros(3, dtype=np.int64))[0]
    np.testing.assert_array_equal(obs, expected)  # the next episode's first observation, whatever the actions


def test_the_autoreset_step_reports_the_info_of_the_new_episodes_first_observation():
    """The step that autoresets returns observation 0 of the next episode, and its info must describe that
    observation (as reset's does), not step 1's: under a gradual shift step 1 can already be a trial of the task
    blended in, while observation 0 (BOS) carries the episode's own task."""
    kwargs = {"num_tasks": 2, "episodes_per_task": 2, "shift": "gradual", "shift_window": 2,
              "trials_per_episode": 4, "keys_per_task": 2}
    lanes, episodes = 8, 4
    venv = gym.make_vec("ContinualShift-v0", num_envs=lanes, vectorization_mode="vector_entry_point", **kwargs)
    scalars = [gym.make("ContinualShift-v0", **kwargs).unwrapped for _ in range(lanes)]
    L = venv.episode_length
    _, info = venv.reset(seed=5)
    firsts = [info]
    for _episode in range(episodes - 1):
        for _ in range(L):
            venv.step(np.zeros(lanes, dtype=np.int64))
        firsts.append(venv.step(np.zeros(lanes, dtype=np.int64))[4])  # the autoreset step
    blended = 0  # autoreset episodes whose step 1 shows another task than observation 0
    for lane, env in enumerate(scalars):
        for e, vec_info in enumerate(firsts):
            _, info = env.reset(seed=5 + lane if e == 0 else None)
            blended += e > 0 and env.step(0)[4]["task_id"] != info["task_id"]
            for _ in range(L - 1):
                env.step(0)
            for key in ("target", "scored", "task_id", "distance", "memory_writes", "delay"):
                assert vec_info[key][lane] == info[key], (lane, e, key)
    assert blended  # else this test could not tell observation 0's info from step 1's
