"""The episode runner acts only at scored steps; its actions must be the ones a step-by-step policy takes."""

import numpy as np
import pytest
import torch

from agents.episodes import EpisodeRunner
from agents.models import ModelConfig, build_model
from agents.trainer import make_vector_env
from memory.config import MemoryConfig

ENVS = {
    "ContinualShift-v0": dict(num_tasks=2, episodes_per_task=1, trials_per_episode=20, keys_per_task=8,
                              vocab_size=64),
    "LongDependency-v0": dict(vocab_size=64, distances=[1, 8, 40], queries_per_episode=4, episode_length=120),
}


@pytest.mark.parametrize("env_id", sorted(ENVS))
@pytest.mark.parametrize("agent", ["memnet", "lstm"])
def test_actions_at_scored_steps_are_the_argmax_of_the_chunk_forward(env_id, agent):
    """Acting skips unscored steps and feeds them in blocks; the learning forward over the same chunk from the
    same state sees every token. At every scored step the env got the argmax of that forward's logits."""
    torch.manual_seed(0)
    venv = make_vector_env(env_id, 3, ENVS[env_id])
    mem = MemoryConfig(dim=32, slots=4, read_heads=2, top_k=2, bottleneck=8, attn_heads=2, store_capacity=256,
                       store_top_k=4, cache_hot=64, cache_warm=64, cache_cold=512)
    cfg = ModelConfig(vocab_size=int(venv.single_action_space.n), dim=32, layers=1, heads=2, window=8, memory=mem)
    model = build_model(agent, cfg).eval()
    runner = EpisodeRunner(venv, model, torch.device("cpu"), chunk=16)
    checked = []

    def learner(chunk, logits, aux):  # records, never updates: weights stay as they were while acting
        scored = chunk.scored.numpy()  # the learner sees the scored steps only, logits read there
        assert logits.shape[1] == scored.shape[1] and scored.any(0).all()
        checked.append((chunk.actions.numpy()[scored], logits.argmax(-1).numpy()[scored]))
        return 0.0

    obs, info = venv.reset(seed=0)
    with torch.no_grad():
        runner.run(model.initial_state(3), obs, info, episode=0, learner=learner)
    actions = np.concatenate([a for a, _ in checked])
    argmax = np.concatenate([b for _, b in checked])
    assert len(actions) > 0 and np.array_equal(actions, argmax)
    venv.close()
