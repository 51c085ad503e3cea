"""agents.agent.Agent's checkpoints: one made from a run's checkpoint goes on as its trainer would, a saved agent goes
on exactly as the one that saved it and is a run folder `agents.evaluate` reads; missing, damaged or foreign files
and saves over another run's folder are refused in one line."""

import pytest
import torch

from agents.agent import Agent
from agents.checkpoint import CheckpointError
from agents.trainer import TRAIN
from tests.test_agent import play, push, same_end
from tests.test_resume import assert_same
from tests.test_run import tiny


def test_from_checkpoint_continues_the_run_as_its_trainer_would(memnet_run):
    pushed, trained = Agent.from_checkpoint(memnet_run, learn=True), Agent.from_checkpoint(memnet_run, learn=True)
    assert pushed.episodes == trained.trainer.episode == 1  # the run's episodes
    body = torch.load(memnet_run / "checkpoints" / "last.pt", weights_only=True)
    assert_same(pushed.model.state_dict(), body["model"])
    assert_same(pushed.model.memory_state_dict(), trained.model.memory_state_dict())
    t = pushed.trainer  # its env was replayed to the run's point: its next training episode is the run's next
    push(pushed, t.venv, 1, by_hand=False, first=t._reset(TRAIN, t.current_task()))
    # an Agent acts step by step: search hits advance the store's clock, and step acting reads each scored step
    # twice (acting call, then the chunk forward), chunk acting (the run's auto) once (tests/test_chunk_acting.py)
    trained.runner.acting = "step"
    trained.trainer.train_episode()
    same_end(pushed, trained.trainer)
    assert any(not torch.equal(v, body["model"][k]) for k, v in pushed.model.state_dict().items())  # it learned


def test_from_checkpoint_refuses_a_missing_or_damaged_file_in_one_line(tmp_path):
    with pytest.raises(CheckpointError) as err:
        Agent.from_checkpoint(tmp_path / "nowhere")
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)
    bad = tmp_path / "checkpoints" / "last.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        Agent.from_checkpoint(bad)
    assert "\n" not in str(err.value)


def test_a_saved_agent_goes_on_exactly_as_the_one_that_saved_it(tmp_path):
    overrides = tiny("ContinualShift-v0", "memnet", tmp_path / "cfg", "env.kwargs.num_tasks=4", "memory.reset=task",
                     "train.mode=reinforce")
    agent = Agent.from_config(overrides, autoreset=False)
    env = agent.make_env()
    for seed in (1, None, None):  # tasks 0, 1, 2 (one episode each); the next is task 3: memory.reset=task clears
        play(agent, env, seed)
    path = agent.save(tmp_path / "saved")
    assert path == tmp_path / "saved" / "checkpoints" / "last.pt" and (tmp_path / "saved" / "config.yaml").is_file()
    back = Agent.from_checkpoint(tmp_path / "saved", learn=True, autoreset=False)
    assert back.episodes == agent.episodes == 3
    rng = torch.get_rng_state()  # the saved one (from_checkpoint restored it): reinforce draws its actions from it
    there = back.make_env()  # an env at the same point: its episodes are a function of its seed and resets
    for seed in (1, None, None):
        there.reset(seed=seed, options={"phase": "train"})
    play(agent, env, None)
    torch.set_rng_state(rng)  # (one RNG per process: the second agent draws from where the first began)
    play(back, there, None)
    assert back.trainer.loop_task == 3
    same_end(back, agent.trainer)
    assert back.last_episode.correct == agent.last_episode.correct
    agent.save(tmp_path / "saved")  # over its own checkpoint: yes
    back.save(tmp_path / "saved")  # and the agent loaded from it too


def test_a_loaded_agent_goes_on_from_an_episodes_first_observation(tmp_path):
    """The README's autoreset loop, saved after an episode's end: the loop then holds that episode's terminal
    observation, which a loaded agent (knowing nothing of the loop) takes as an episode's first step. Stepped once
    past it, as the README says, the env gives the next episode's first observation, and the loaded agent goes on
    exactly as the one that saved it."""
    from dataclasses import replace

    import numpy as np

    agent = Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path / "cfg"))
    env = agent.make_env()
    obs, info = push(agent, env, 2, by_hand=False, first={"seed": 0})  # the terminal observation of episode 2
    agent.save(tmp_path / "saved")
    back = Agent.from_checkpoint(tmp_path / "saved", learn=True)
    there = back.make_env()  # the same env at the same point: its observations do not depend on the actions
    zeros = np.zeros(back.lanes, dtype=np.int64)
    there.reset(seed=0)
    for _ in range(2):
        while not np.all(there.step(zeros)[2]):
            pass
    first, *_, first_info = there.step(zeros)  # past the terminal observation: the next episode's first
    rng = torch.get_rng_state()
    push(agent, env, 1, by_hand=False, first=(obs, info))
    torch.set_rng_state(rng)
    push(back, there, 1, by_hand=False, first=(first, first_info))
    same_end(back, agent.trainer)
    assert replace(back.last_episode, seconds={}) == replace(agent.last_episode, seconds={})  # all but the times


def test_save_is_refused_inside_an_episode_and_over_another_checkpoint(tmp_path, memnet_run):
    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg"))
    env = agent.make_env()
    agent.act(*env.reset(seed=0))
    with pytest.raises(RuntimeError, match=r"an episode is under way; save after the observe\(\) that ends it"):
        agent.save(tmp_path / "a")
    assert not (tmp_path / "a").exists()
    run_file = memnet_run / "checkpoints" / "last.pt"
    before = run_file.read_bytes()
    fresh = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg"))
    loaded = Agent.from_checkpoint(memnet_run)  # a run's own checkpoint: never written over by an Agent
    for who in (fresh, loaded):
        with pytest.raises(FileExistsError, match=r"holds checkpoints/last.pt, config.yaml, metrics.json this "
                                                  r"agent did not write \(a run's or another agent's\); save to a "
                                                  r"new folder"):
            who.save(memnet_run)
    assert run_file.read_bytes() == before
    # a finished run whose checkpoints were deleted (to save space): its config.yaml was replaced by the agent's,
    # and `resume=` trained the agent there, over the run's metrics.json and plots
    finished = tmp_path / "finished"
    finished.mkdir()
    for name in ("config.yaml", "metrics.json"):
        (finished / name).write_bytes((memnet_run / name).read_bytes())
    with pytest.raises(FileExistsError, match=r"holds config.yaml, metrics.json this agent did not write"):
        fresh.save(finished)
    assert (finished / "config.yaml").read_bytes() == (memnet_run / "config.yaml").read_bytes()
    assert not (finished / "checkpoints").exists()


def test_a_saved_agent_is_a_run_folder_agents_evaluate_reads(tmp_path):
    from agents.evaluate import evaluate

    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg"), learn=False, autoreset=False)
    play(agent, agent.make_env(), 0)
    agent.save(tmp_path / "saved")
    result = evaluate(tmp_path / "saved", out=None, note=False)
    assert result["accuracy_by_task"] == agent.trainer.evaluate_all()  # the memory the loop wrote, evaluated


def test_a_damaged_agent_entry_is_one_line(tmp_path):
    agent = Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path / "cfg"))
    path = agent.save(tmp_path / "saved")
    body = torch.load(path, weights_only=True)
    body["agent"] = {"episodes": -3, "last_task": 0}
    torch.save(body, path)
    with pytest.raises(CheckpointError, match=r"does not hold what this memstream saves \(agent: .*episode count"):
        Agent.from_checkpoint(path)
