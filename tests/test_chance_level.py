"""Each env's chance level (`agents.benchmark_report.chance_level`, marked on a run's and the benchmark's figures) is
what a blind policy scores: a uniform guess among the env's answer tokens, whatever it observes."""

import numpy as np
import pytest

from agents.benchmark_report import chance_level
from agents.preflight import env_source
from tests.test_envs_behaviour import chance_bound, replay_score, rollout


def answer_tokens(env_id: str, source) -> np.ndarray:
    """The tokens an env's targets are drawn from (checked against the targets below)."""
    if env_id.startswith("LongDependency"):
        return source.value0 + np.arange(source.n)
    if env_id.startswith("NeedleRecall"):
        return np.arange(len(source.special_tokens), source.vocab_size)
    return source.value0 + np.arange(source.num_values)


@pytest.mark.parametrize("env_id, kwargs, chance, lanes, episodes", [
    ("LongDependency-v0", {}, 1 / 63, 32, 8),  # (256 - 2) // 4 values
    ("NeedleRecall-v0", {"delay": 2, "facts_per_episode": 32, "haystack_length": 64, "vocab_size": 32,
                         "train_facts": 64, "fresh_facts": 64}, 1 / 28, 32, 4),  # 32 - 4 content tokens
    ("ContinualShift-v0", {}, 1 / 108, 32, 4),  # (256 - 2 - 5 tasks - 32 shared keys) // 2 values
    # 4 of 8 keys shared: 4 + 3 x 4 = 16 keys, (64 - 2 - 3 - 16) // 2 = 21 values, hidden tasks, gradual shifts
    ("ContinualShift-v0", {"vocab_size": 64, "num_tasks": 3, "keys_per_task": 8, "key_overlap": 0.5,
                           "episodes_per_task": 2, "shift": "gradual", "shift_window": 1}, 1 / 21, 16, 6),
])
def test_a_blind_policy_scores_the_env_chance_level(env_id, kwargs, chance, lanes, episodes):
    """ContinualShift had none (its figures marked no chance line though a blind policy scores 1 / its values)."""
    assert chance_level(env_id, kwargs) == pytest.approx(chance)  # from the options alone
    recorded, _ = rollout(env_id, lanes, episodes, **kwargs)
    scored = recorded["scored"]
    answers = answer_tokens(env_id, env_source(env_id, kwargs))
    assert np.isin(recorded["target"][scored], answers).all() and len(answers) == round(1 / chance)
    guesses = np.random.default_rng(5).choice(answers, recorded["obs"].shape)  # blind: the observations unused
    reward = replay_score(env_id, lanes, episodes, guesses, recorded, **kwargs)[scored]
    assert reward.size >= 4000 and abs(reward.mean() - chance) < chance_bound(chance, reward.size)
