"""The episode runner acts only at scored steps; its actions must be the ones a step-by-step policy takes."""

import numpy as np
import pytest
import torch

from agents.episodes import EpisodeRunner, make_vector_env
from agents.models import ModelConfig, build_model
from memory.config import MemoryConfig

ENVS = {
    "ContinualShift-v0": dict(num_tasks=2, episodes_per_task=1, trials_per_episode=20, keys_per_task=8,
                              vocab_size=64),
    "LongDependency-v0": dict(vocab_size=64, distances=[1, 8, 40], queries_per_episode=4, episode_length=120),
}


@pytest.mark.parametrize("env_id", sorted(ENVS))
@pytest.mark.parametrize("agent", ["memnet", "lstm"])
def test_actions_at_scored_steps_are_the_argmax_of_the_chunk_forward(env_id, agent):
    """Step acting skips unscored steps and feeds them in blocks; the learning forward over the same chunk from
    the same state sees every token. At every scored step the env got the argmax of that forward's logits."""
    torch.manual_seed(0)
    venv = make_vector_env(env_id, 3, ENVS[env_id])
    mem = MemoryConfig(dim=32, slots=4, read_heads=2, top_k=2, bottleneck=8, attn_heads=2, store_capacity=256,
                       store_top_k=4, cache_hot=64, cache_warm=64, cache_cold=512)
    cfg = ModelConfig(vocab_size=int(venv.single_action_space.n), dim=32, layers=1, heads=2, window=8, memory=mem)
    model = build_model(agent, cfg).eval()
    runner = EpisodeRunner(venv, model, torch.device("cpu"), chunk=16, acting="step")
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


@pytest.mark.parametrize("util_weight", [0.0, 0.1])
def test_a_chunk_with_nothing_scored_builds_a_graph_only_for_the_models_own_losses(util_weight):
    """LongDependency's chunks mostly hold no query: with no memory regulariser their call runs without autograd
    (logits for no step, no update); with one (memory.util_weight > 0) it still trains."""
    torch.manual_seed(0)
    venv = make_vector_env("LongDependency-v0", 2, ENVS["LongDependency-v0"])
    mem = MemoryConfig(dim=32, slots=4, read_heads=2, top_k=2, bottleneck=8, attn_heads=2, store_capacity=256,
                       store_top_k=4, cache_hot=64, cache_warm=64, cache_cold=512, util_weight=util_weight)
    cfg = ModelConfig(vocab_size=int(venv.single_action_space.n), dim=32, layers=1, heads=2, window=8, memory=mem)
    model = build_model("memnet", cfg)
    assert model.learns_without_targets() == (util_weight > 0)
    seen = []

    def learner(chunk, logits, aux):
        seen.append((int(chunk.scored.sum()), logits.shape[1], logits.requires_grad,
                     sum(t.requires_grad for t in aux["losses"].values())))
        return 0.0

    obs, info = venv.reset(seed=0)
    EpisodeRunner(venv, model, torch.device("cpu"), chunk=8).run(model.initial_state(2), obs, info, episode=0,
                                                                 learner=learner)
    empty = [s for s in seen if s[0] == 0]
    assert empty and any(s[0] > 0 for s in seen)
    assert all(s[1] == 0 for s in empty)
    assert all(bool(s[3]) == (util_weight > 0) for s in empty)  # the regulariser is differentiable iff it trains
    assert all(s[2] == (util_weight > 0) for s in empty)  # no autograd for a call with nothing to learn from
    assert all(s[2] for s in seen if s[0] > 0)  # scored chunks always learn
    venv.close()


@pytest.mark.parametrize("acting", ["step", "chunk"])
def test_episode_stats_split_the_time_between_acting_learning_and_updates(acting):
    """Step acting: one acting call per step scored in some lane (chunk acting: none); one chunk call per chunk;
    the learner's time is counted as "update" (here a learner that sleeps 20 ms), the model's chunk call as
    "learn", and the three together never exceed the episode's wall time."""
    import time

    torch.manual_seed(0)
    venv = make_vector_env("ContinualShift-v0", 2, ENVS["ContinualShift-v0"])
    mem = MemoryConfig(dim=32, slots=4, read_heads=2, top_k=2, bottleneck=8, attn_heads=2, store_capacity=256,
                       store_top_k=4, cache_hot=64, cache_warm=64, cache_cold=512)
    cfg = ModelConfig(vocab_size=int(venv.single_action_space.n), dim=32, layers=1, heads=2, window=8, memory=mem)
    model = build_model("memnet", cfg)
    runner = EpisodeRunner(venv, model, torch.device("cpu"), chunk=16, acting=acting)
    scored_steps = []

    def learner(chunk, logits, aux):
        scored_steps.append(int(chunk.scored.any(0).sum()))  # the chunk's columns: steps scored in some lane
        time.sleep(0.02)
        return 0.0

    obs, info = venv.reset(seed=0)
    t0 = time.perf_counter()
    _, stats = runner.run(model.initial_state(2), obs, info, episode=0, learner=learner)
    wall = time.perf_counter() - t0
    assert sum(scored_steps) > 0
    assert stats.act_calls == (sum(scored_steps) if acting == "step" else 0)
    assert stats.chunks == stats.updates == len(scored_steps) == -(-stats.steps // 16)
    assert stats.seconds["update"] >= 0.02 * stats.updates
    assert (stats.seconds["act"] > 0) == (acting == "step") and stats.seconds["learn"] > 0
    assert sum(stats.seconds.values()) <= wall
    ms = stats.milliseconds  # what TensorBoard gets as perf/*
    assert ms["update_ms"] >= 20
    assert ms["act_ms"] == (1e3 * stats.seconds["act"] / stats.act_calls if acting == "step" else None)
    venv.close()


def test_the_mean_loss_counts_only_chunks_that_had_a_loss():
    """A learner returns None for a chunk with nothing to learn from (no scored step, no regulariser): such chunks
    still count as updates (timing) but do not pull `loss` towards 0 (LongDependency scores 16 of 1,280 steps)."""
    venv = make_vector_env("LongDependency-v0", 2, ENVS["LongDependency-v0"])
    cfg = ModelConfig(vocab_size=int(venv.single_action_space.n), dim=32, layers=1, heads=2, window=8,
                      memory=MemoryConfig(dim=32, slots=0, store=False))
    model = build_model("transformer", cfg)
    runner = EpisodeRunner(venv, model, torch.device("cpu"), chunk=8)
    returned = []

    def learner(chunk, logits, aux):
        value = 2.0 if bool(chunk.scored.any()) else None
        returned.append(value)
        return value

    obs, info = venv.reset(seed=0)
    _, stats = runner.run(model.initial_state(2), obs, info, episode=0, learner=learner)
    assert None in returned and 2.0 in returned  # both kinds of chunk occurred
    assert stats.updates == len(returned) and stats.losses == returned.count(2.0) and stats.loss == 2.0


def test_read_at_may_be_an_empty_list():
    from agents.models import check_read_at

    at = check_read_at([], 3, torch.device("cpu"))
    assert at.dtype == torch.long and at.shape == (0,)
