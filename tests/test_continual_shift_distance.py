"""ContinualShift's info["distance"] reaches back across episodes: steps to the pair's last reveal in the lane's
stream (L positions per episode), evaluations continuing the training stream as the trainer's memory sees it."""

import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs  # noqa: F401
from agents import evaluate, run
from agents.cl_metrics import run_distance_buckets
from tests.examples import examples
from tests.test_run import TINY_MODEL

LANES = 2


def last_reveal(stream: list[int], t: int) -> int:
    """The definition, by search: steps back from the key at t to the latest (key, answer) pair before it (the
    answer comes right after its key only where it is revealed), -1 if none."""
    key, answer = stream[t], stream[t + 1]  # the answer is revealed at t + 1, after the key step
    return next((t - p for p in range(t - 1, 0, -1) if stream[p] == answer and stream[p - 1] == key), -1)


def play(venv, resets: list[tuple[str, int]], seed: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(phase label, obs (L, B), target (L, B), distance (L, B)) per episode: observations 0..L-1."""
    out, L = [], venv.episode_length
    for phase, task in resets:
        if phase == "start":  # an evaluation starts (the trainer's call): its eval episodes begin a new chain
            if out:  # (before the first reset there is no stream)
                venv.start_evaluation()
                out.append(("start", None, None, None))
            continue
        options = {"phase": "train"} if phase == "train" else {"phase": "eval", "task_id": task}
        obs, info = venv.reset(seed=None if out else seed, options=options)  # the first reset seeds
        rows = [(obs, info)]
        for _ in range(L - 1):
            obs, _, _, _, info = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
            rows.append((obs, info))
        out.append((f"{phase}{task}", np.array([r[0] for r in rows]), np.array([r[1]["target"] for r in rows]),
                    np.array([r[1]["distance"] for r in rows])))
    return out


def check_against_the_definition(episodes) -> int:
    """Asserts every step's distance against `last_reveal` over the stream the step belongs to; returns how many
    scored steps reach back into an earlier episode."""
    across = 0
    for b in range(LANES):
        train, chain, chain_label = [], [], None
        for label, obs, target, distance in episodes:
            if label == "start":
                chain_label = None
                continue
            if label.startswith("train"):
                stream, chain, chain_label = train, [], None
            else:
                if label != chain_label:  # another task's eval (or one after training) starts a new chain
                    chain, chain_label = [], label
                stream = train + chain
            start = len(stream)
            stream = stream + obs[:, b].tolist() + [-1]  # -1: past the episode (a key step is never the last)
            for t in np.nonzero(target[:, b] >= 0)[0]:
                expected = last_reveal(stream, start + t)
                assert distance[t, b] == expected, f"lane {b}, {label}, step {t}"
                across += expected > t
            assert (distance[target[:, b] < 0, b] == -1).all()
            (train if label.startswith("train") else chain).extend(obs[:, b].tolist())
    return across


@settings(max_examples=examples(80), deadline=None)
@given(trials=st.integers(1, 12), keys=st.integers(1, 6), overlap=st.sampled_from([0.0, 0.5, 1.0]),
       shift=st.sampled_from(["abrupt", "gradual"]), revisit=st.booleans(), per_task=st.integers(1, 3),
       resets=st.lists(st.tuples(st.sampled_from(["train", "eval", "eval", "start"]), st.integers(0, 2)), min_size=1,
                       max_size=9),
       seed=st.integers(0, 2**16))
def test_every_distance_is_the_step_count_back_to_the_last_reveal_of_its_pair(trials, keys, overlap, shift, revisit,
                                                                               per_task, resets, seed):
    venv = gym.make_vec("ContinualShift-v0", num_envs=LANES, vectorization_mode="vector_entry_point", num_tasks=3,
                        episodes_per_task=per_task, trials_per_episode=trials, keys_per_task=keys,
                        key_overlap=overlap, shift=shift, revisit=revisit, vocab_size=64)
    episodes = play(venv, resets, seed)
    check_against_the_definition(episodes)
    trained = sum(phase == "train" for phase, _ in resets)
    most = max((int(d.max()) for *_, d in episodes if d is not None), default=-1)
    assert most <= venv.distance_bound(trained, len(resets) - trained)


def test_the_main_commands_first_trials_of_an_episode_reach_back_into_the_last_one():
    # before, the first keys_per_task trials of every episode said -1: 64% of the main command's scored steps
    venv = gym.make_vec("ContinualShift-v0", num_envs=LANES, vectorization_mode="vector_entry_point",
                        episodes_per_task=4, trials_per_episode=50)
    episodes = play(venv, [("train", 0)] * 5 + [("eval", 0), ("eval", 0), ("eval", 3)], seed=3)
    assert check_against_the_definition(episodes) > 0
    scored = sum(int((target >= 0).sum()) for _, _, target, _ in episodes)
    unknown = sum(int(((target >= 0) & (distance < 0)).sum()) for _, _, target, distance in episodes)
    # per lane, a first showing of the pair anywhere before: the first 32 trials of task 0's first episode, of task
    # 1's (the fifth episode) and of the eval of task 3 (never trained); task 0's evaluations know every pair
    assert (scored, unknown) == (LANES * 8 * 50, LANES * 3 * 32)


def test_evaluations_do_not_change_the_training_streams_distances():
    kw = dict(num_envs=LANES, vectorization_mode="vector_entry_point", episodes_per_task=2, trials_per_episode=40)
    plain = play(gym.make_vec("ContinualShift-v0", **kw), [("train", 0)] * 6, seed=5)
    mixed = play(gym.make_vec("ContinualShift-v0", **kw),
                 [("train", 0), ("eval", 1), ("train", 0), ("train", 0), ("eval", 0), ("eval", 2), ("train", 0),
                  ("train", 0), ("train", 0)], seed=5)
    trained = [ep for ep in mixed if ep[0].startswith("train")]
    for a, b in zip(plain, trained, strict=True):
        np.testing.assert_array_equal(a[3], b[3])


def test_max_distance_covers_the_schedule_and_a_run_buckets_its_own_length():
    venv = gym.make_vec("ContinualShift-v0", num_envs=1, vectorization_mode="vector_entry_point",
                        episodes_per_task=4, trials_per_episode=50)
    L = venv.episode_length
    assert venv.max_distance == (20 + 1) * L == venv.distance_bound(20, 1)
    assert run_distance_buckets(venv, 20, 1)[-1] == 4096  # the main command's buckets: 1, 2, ..., 4096
    assert run_distance_buckets(venv, 40, 3)[-1] == 8192  # a longer run, more evaluation episodes in a row
    assert run_distance_buckets(venv, 10**17, 1)[-1] == 2**62  # no run gets there; the last edge fits an int64
    with pytest.raises(ValueError, match="train_episodes must be an integer"):
        venv.distance_bound(-1, 1)
    long_dependency = gym.make_vec("LongDependency-v0", num_envs=1, vectorization_mode="vector_entry_point")
    assert long_dependency.distance_bound(10**6, 5) == long_dependency.max_distance  # bounded by its structure


def test_a_re_evaluation_on_a_shorter_schedule_buckets_the_episodes_it_replays(tmp_path, capsys):
    # evaluate replays the run's 6 training episodes whatever the changed env's schedule: its buckets were sized for
    # the new schedule's 2 and the first distance above them raised (key 238 above the last bucket edge 128)
    run_dir = tmp_path / "run"
    env = ["env=ContinualShift-v0", "env.kwargs.num_tasks=2", "env.kwargs.episodes_per_task=3",
           "env.kwargs.trials_per_episode=10", "env.kwargs.keys_per_task=4"]
    assert run.main([*env, *TINY_MODEL, f"run_dir={run_dir}"]) == 0
    shorter = evaluate.evaluate(run_dir, env_kwargs={"episodes_per_task": 1}, out=None)
    assert max(shorter["scored_by_distance"]) > 2 * 31  # distances from episodes before the last two
    assert capsys.readouterr().err == ""


def test_a_re_evaluation_on_another_schedule_says_its_distance_buckets_are_not_the_runs(tmp_path, capsys):
    """agents.evaluate with a changed episodes_per_task / shift replays the run's training as another schedule: the
    bucket edges and the accuracy stay the run's, but queries move between buckets (or out of all: 8 of 48 scored
    steps here), and nothing said so; the run's own schedule, or an option that changes no replayed episode, says
    nothing."""
    run_dir = tmp_path / "run"
    env = ["env=ContinualShift-v0", "env.kwargs.num_tasks=2", "env.kwargs.episodes_per_task=3",
           "env.kwargs.trials_per_episode=12", "env.kwargs.keys_per_task=4", "train.episodes=4"]
    assert run.main([*env, *TINY_MODEL, f"run_dir={run_dir}"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    capsys.readouterr()
    same = evaluate.evaluate(run_dir, env_kwargs={"episodes_per_task": 3, "shift_window": 1}, out=None)
    assert "replays the run's" not in capsys.readouterr().out  # (shift_window: inert under shift=abrupt)
    assert same["scored_by_distance"] == {int(k): v for k, v in metrics["scored_by_distance"].items()}
    longer = evaluate.evaluate(run_dir, env_kwargs={"episodes_per_task": 7}, out=None)
    out = capsys.readouterr().out
    assert longer["accuracy"] == metrics["accuracy"]
    assert sum(longer["scored_by_distance"].values()) < sum(metrics["scored_by_distance"].values())
    assert ("note: env.kwargs.episodes_per_task=7 replays the run's 4 training episodes as another task schedule than "
            "it trained on (no evaluated episode changes): accuracy_by_distance measures each query's distance back "
            "through that schedule, not the run's: its buckets are not comparable with metrics.json's\n") in out
    evaluate.evaluate(run_dir, env_kwargs={"shift": "gradual"}, out=None)
    assert "note: env.kwargs.shift=gradual replays the run's 4 training episodes" in capsys.readouterr().out
