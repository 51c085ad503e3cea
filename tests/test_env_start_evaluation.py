"""`start_evaluation()`: the next eval reset begins a complete evaluation (NeedleRecall's write -> recall cycle,
LongDependency's cross-episode chain). A no-op where the eval stream stands at a cycle's start, as in a run; after
`agents.evaluate` replayed a run's resets under another `delay` or `cross_episode_gap`, the re-evaluation started
mid-cycle and scored recalls of facts no write had shown (0.000 at delay 4 where the aligned evaluation made 0.406).
"""

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)
from agents import evaluate, run
from agents.trainer import Trainer
from tests.test_run import tiny

NR = {"delay": 2, "facts_per_episode": 2, "haystack_length": 32}
LD = {"distances": [1, 2, 4], "queries_per_episode": 3, "episode_length": 64, "cross_episode_queries": 2,
      "cross_episode_gap": 1}
EVAL = {"phase": "eval", "task_id": 0}


def make(env_id, **kwargs):
    return gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)


def eval_episodes(venv, n, start=False):
    """The next `n` eval episodes' (phase, scored steps whose pair came in an earlier episode, obs)."""
    if start:
        venv.start_evaluation()
    out = []
    for _ in range(n):
        first, info = venv.reset(options=EVAL)
        obs, rest = venv.upcoming(venv.episode_length)  # the episode's other steps, to its terminal one
        distance = np.concatenate([info["distance"][:, None], rest["distance"]], axis=1)  # (B, L)
        scored = np.concatenate([info["scored"][:, None], rest["scored"]], axis=1)
        before = scored & (distance > np.arange(distance.shape[1]))  # reaches back past the episode's start
        out.append((str(info["phase"][0]), int(before.sum()), np.concatenate([first[:, None], obs], axis=1)))
    return out


def test_needle_recall_skips_to_the_next_cycle_and_changes_nothing_at_its_start():
    venv = make("NeedleRecall-v0", **NR)
    venv.reset(seed=0)
    eval_episodes(venv, 3)  # 3 of a 4-episode cycle: write, write, recall
    assert [p for p, _, _ in eval_episodes(venv, 4, start=True)] == ["write", "write", "recall", "recall"]
    aligned, plain = make("NeedleRecall-v0", **NR), make("NeedleRecall-v0", **NR)
    for venv in (aligned, plain):
        venv.reset(seed=0)
        eval_episodes(venv, 4)  # a whole cycle: at the next one's start
    ours, theirs = eval_episodes(aligned, 4, start=True), eval_episodes(plain, 4)
    assert all(a[0] == b[0] and np.array_equal(a[2], b[2]) for a, b in zip(ours, theirs, strict=True))


def test_long_dependency_starts_a_new_chain_of_cross_episode_queries():
    venv = make("LongDependency-v0", **LD)
    venv.reset(seed=0)
    assert venv.eval_episodes == 2
    first, second = eval_episodes(venv, 2)
    assert first[1] == 0 and second[1] > 0  # the second episode of a chain asks for the first one's pairs
    eval_episodes(venv, 1)  # mid-chain
    again = eval_episodes(venv, 2, start=True)
    assert again[0][1] == 0 and again[1][1] > 0
    aligned, plain = make("LongDependency-v0", **LD), make("LongDependency-v0", **LD)
    for venv in (aligned, plain):
        venv.reset(seed=0)
        eval_episodes(venv, 2)
    ours, theirs = eval_episodes(aligned, 2, start=True), eval_episodes(plain, 2)
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(ours, theirs, strict=True))


def test_a_re_evaluation_under_another_delay_starts_with_the_write_episodes(tmp_path, monkeypatch):
    """The run (delay 2: evaluations of 4 episodes) replays 2 evaluations, 8 eval resets, before its last; under
    delay 3 (6 per evaluation) those leave the eval cycle 2 episodes in."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, "env.kwargs.delay=2", "train.eval_every=1")) == 0
    phases, evaluating, real = [], [False], Trainer._evaluate

    def spied(self, task):
        evaluating[0] = True
        try:
            return real(self, task)
        finally:
            evaluating[0] = False

    reset = Trainer._reset

    def recorded(self, phase, task, *args, **kwargs):
        obs, info = reset(self, phase, task, *args, **kwargs)
        if evaluating[0]:
            phases.append(str(info["phase"][0]))
        return obs, info

    monkeypatch.setattr(Trainer, "_evaluate", spied)
    monkeypatch.setattr(Trainer, "_reset", recorded)
    result = evaluate.evaluate(run_dir, env_kwargs={"delay": 3}, out=None, note=False)
    assert phases == ["write"] * 3 + ["recall"] * 3
    assert result["recall_by_delay"] is not None and set(result["recall_by_delay"]) == {3}


def test_continual_shift_measures_each_evaluation_from_the_training_stream():
    """The trainer evaluates on a copy of the memory and puts it back: a second evaluation with no training between
    (one task: `evaluate_all()` twice) sees the memory the first saw, but its distances were measured from the first
    evaluation's reveals. Now it equals an evaluation made right after training, episode for episode."""
    import copy

    def distances(venv, episodes):
        venv.start_evaluation()
        out = []
        for _ in range(episodes):
            first, info = venv.reset(options=EVAL)
            obs, rest = venv.upcoming(venv.episode_length)
            out.append((np.concatenate([first[:, None], obs], axis=1),
                        np.concatenate([info["distance"][:, None], rest["distance"]], axis=1)))
        return out

    venv = make("ContinualShift-v0", num_tasks=1, episodes_per_task=2, trials_per_episode=40, keys_per_task=32)
    venv.reset(seed=0)
    venv.reset(options={"phase": "train"})  # two training episodes (their reveals are noted as they are made)
    fresh = copy.deepcopy(venv)
    distances(venv, 1)
    fresh._eval_rngs = copy.deepcopy(venv._eval_rngs)  # the second evaluation's draws, right after training
    ((obs, second),), ((obs_alone, alone),) = distances(venv, 1), distances(fresh, 1)
    assert np.array_equal(obs, obs_alone) and np.array_equal(second, alone)
    # (the episodes of one evaluation still chain: tests/test_continual_shift_distance.py, "start" resets)
