"""An Agent over a SAME_STEP autoreset vector env (gymnasium's `AutoresetMode.SAME_STEP`)."""

import gymnasium as gym
import pytest
import torch

from agents.agent import Agent
from tests.test_run import tiny


def test_a_same_step_autoreset_env_loses_no_step(tmp_path):
    """gymnasium's SAME_STEP autoreset shows the next episode's first observation at the step that ends one (with
    info["final_obs"]): the Agent took it for NEXT_STEP's terminal observation and answered it blind, so every
    episode after the first lost its first step (15 of 16 steps) unseen. Now it learns as from a NEXT_STEP env."""
    ends = []
    for mode in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP):
        agent = Agent.from_config(tiny("ContinualShift-v0", "lstm", tmp_path / "cfg", "train.lanes=2"))
        env = gym.make_vec("ContinualShift-v0", num_envs=2, vectorization_mode="sync",
                           vector_kwargs={"autoreset_mode": mode}, **agent.cfg.env.kwargs)
        obs, info = env.reset(seed=0)
        steps = []
        while agent.episodes < 3:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            agent.observe(reward, terminated, truncated)
            if terminated.all():
                steps.append(agent.last_episode.steps)
        ends.append((steps, agent.model.state_dict()))
        if mode == gym.vector.AutoresetMode.SAME_STEP:  # told it resets on the terminal observation: one line
            wrong = Agent.from_config(tiny("ContinualShift-v0", "lstm", tmp_path / "cfg", "train.lanes=2"),
                                      autoreset=True)
            wrong._ended = True
            with pytest.raises(ValueError, match=r"^Agent.act: info holds 'final_obs': this env resets a lane at the "
                                                 r"step that ends it \(autoreset SAME_STEP\)"):
                wrong.act(obs, info | {"final_obs": obs})
    (next_steps, next_weights), (same_steps, same_weights) = ends
    assert same_steps == next_steps and len(set(next_steps)) == 1
    assert all(torch.equal(next_weights[k], same_weights[k]) for k in next_weights)
