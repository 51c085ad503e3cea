"""Env options that change nothing under the others (`StreamSource.inert_options`): ContinualShift's shift_window with
shift=abrupt, LongDependency's cross_episode_gap without cross-episode queries. Each gives the same stream whatever
its value (and another where it acts), and agents.run and agents.evaluate name it in their `note:` line."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from agents.config import load_config
from agents.inert_notes import inert_note

CS = {"num_tasks": 2, "episodes_per_task": 3, "trials_per_episode": 20}
LD = {"distances": [1, 4, 16], "queries_per_episode": 2, "episode_length": 96, "vocab_size": 512}
CASES = [  # env, fixed options, the option, its values, the change of the fixed options under which it acts
    ("ContinualShift-v0", CS, "shift_window", (1, 3), {"shift": "gradual"}),
    ("LongDependency-v0", LD, "cross_episode_gap", (1, 3), {"cross_episode_queries": 2}),
]


def stream(env_id: str, options: dict, episodes: int = 6) -> list[np.ndarray]:
    """Observations, targets and distances of 2 lanes over `episodes` training episodes, from a seeded reset."""
    env = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **options)
    obs, info = env.reset(seed=0)
    out, ended = [], 0
    while ended < episodes:
        out += [obs.copy(), info["target"].copy(), info["distance"].copy()]
        obs, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.int64))
        ended += bool(terminated[0] or truncated[0])
    env.close()
    return out


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("env_id, fixed, option, values, acts", CASES, ids=[c[2] for c in CASES])
def test_the_option_changes_nothing_there_and_something_where_it_acts(env_id, fixed, option, values, acts):
    first, second = (stream(env_id, {**fixed, option: v}) for v in values)
    assert same(first, second)
    first, second = (stream(env_id, {**fixed, **acts, option: v}) for v in values)
    assert not same(first, second)


@pytest.mark.parametrize("env_id, fixed, option, values, acts", CASES, ids=[c[2] for c in CASES])
def test_the_note_names_it_where_it_changes_nothing(env_id, fixed, option, values, acts):
    cfg = load_config([f"env={env_id}"])
    keys = [f"env.kwargs.{option}", "env.kwargs.vocab_size"]
    for options, noted in ((fixed, True), ({**fixed, **acts}, False)):
        env = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", **options)
        note = inert_note(cfg, keys, env=env)
        assert (note is not None and note.startswith(f"note: env.kwargs.{option} changes nothing with ")) == noted
        assert note is None or "vocab_size" not in note
        env.close()


def test_agents_run_and_evaluate_say_so(tmp_path, capsys):
    from agents import evaluate, run
    from tests.test_run import tiny

    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1", "env.kwargs.shift_window=1")) == 0
    line = "note: env.kwargs.shift_window changes nothing with shift=abrupt (it is how long a gradual shift blends)"
    assert line in capsys.readouterr().out.splitlines()
    assert evaluate.main([f"checkpoint={run_dir}", "env.kwargs.shift_window=1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == line


def _stream(options: dict, episodes: int = 4) -> list[np.ndarray]:
    venv = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="vector_entry_point", **options)
    obs, info = venv.reset(seed=0)
    out = []
    for _ in range(episodes * (venv.episode_length + 1)):
        out += [obs.copy(), info["target"].copy(), info["distance"].copy(), info["task_id"].copy()]
        obs, _, _, _, info = venv.step(np.zeros(2, dtype=np.int64))
    venv.close()
    return out


def test_shift_and_shift_window_are_inert_with_one_task_and_the_env_says_so():
    """One task has no next task to blend in: a gradual shift ran the abrupt stream, with no note."""
    one = {"num_tasks": 1, "episodes_per_task": 3, "trials_per_episode": 20}
    abrupt = _stream({**one, "shift": "abrupt"})
    gradual = _stream({**one, "shift": "gradual", "shift_window": 3})
    assert all(np.array_equal(a, b) for a, b in zip(abrupt, gradual, strict=True))  # nothing to blend in
    venv = gym.make_vec("ContinualShift-v0", num_envs=1, vectorization_mode="vector_entry_point",
                        **one, shift="gradual", shift_window=2)
    inert = venv.inert_options()
    assert "shift" in inert and "shift_window" in inert, inert
    venv.close()
    # with two tasks a gradual shift acts, and shift_window with it
    two = gym.make_vec("ContinualShift-v0", num_envs=1, vectorization_mode="vector_entry_point", num_tasks=2,
                       episodes_per_task=3, trials_per_episode=20, shift="gradual")
    assert two.inert_options() == {}
    two.close()
