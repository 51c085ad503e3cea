"""agents.agent.Agent as agents.run's other commands see it: from_config reads config= and refuses resume=, a save
holds absolute env file paths and never lands over a run resumed in its folder, agents.evaluate counts the
agent's episodes; a negative task id is one act() line."""

import json

import numpy as np
import pytest

from agents import evaluate
from agents.agent import Agent
from agents.config import ConfigError
from tests.test_agent import push
from tests.test_run import tiny


def test_from_config_refuses_resume_instead_of_building_a_fresh_model(tmp_path):
    """`resume=<run>` is one of agents.run's overrides; from_config took it and silently built a new, untrained model
    (episodes 0), its config.yaml then naming the run as resume."""
    with pytest.raises(ConfigError, match="from_checkpoint"):
        Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg", f"resume={tmp_path / 'run'}"))


def test_from_config_takes_a_saved_config_as_agents_run_does(tmp_path):
    """`config=<run>/config.yaml` starts a new run from a saved config in agents.run; from_config said "unknown config
    key 'config'; run `python -m agents.run --help` to list the keys", whose list has it."""
    first = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg", "seed=3"))
    first.save(tmp_path / "saved")
    again = Agent.from_config([f"config={tmp_path / 'saved' / 'config.yaml'}", f"run_dir={tmp_path / 'new'}"])
    assert again.cfg.seed == 3 and again.cfg.model.dim == first.cfg.model.dim


def test_a_saved_agent_with_a_relative_haystack_path_loads_from_another_folder(tmp_path, monkeypatch):
    """agents.run makes env file options absolute before saving the config (resume=, config= and agents.evaluate
    read it from other folders); Agent.from_config kept `haystack_path=hay.txt` relative, so its save could not be
    loaded or evaluated from any other working folder: "the haystack file 'hay.txt' the run was trained on is not
    there any more (moved or deleted)", while it was."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "hay.txt").write_text("the quick brown fox jumps over the lazy dog " * 200)
    monkeypatch.chdir(work)
    agent = Agent.from_config(tiny("NeedleRecall-v0", "memnet", tmp_path / "cfg", "env.kwargs.haystack_path=hay.txt"))
    push(agent, agent.make_env(), 1, by_hand=False, first={"seed": 0})
    agent.save(tmp_path / "saved")
    monkeypatch.chdir(tmp_path)
    back = Agent.from_checkpoint(tmp_path / "saved")
    assert back.episodes == 1


def test_a_negative_task_id_is_one_act_line_not_a_store_error_at_every_later_observe(tmp_path):
    """info["task_id"] = -3 was taken by act(); the chunk's end then failed inside the store (FaissStore.add: meta
    ['task'] has -3 ...), and every later observe() failed again on the same chunk: the agent was stuck."""
    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg"))
    env = agent.make_env()
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"^Agent\.act: info\['task_id'\]") as err:
        agent.act(obs, info | {"task_id": np.full(2, -3)})
    assert "\n" not in str(err.value)
    push(agent, env, 1, by_hand=False, first=(obs, info))  # the agent is usable after the refusal
    assert agent.episodes == 1


def test_agents_evaluate_of_an_agents_save_reports_the_episodes_it_trained(tmp_path):
    """An Agent that learned 2 episodes and saved: `agents.evaluate` said "after 0 episodes" (episodes_trained: 0,
    the trainer's own count, which an Agent's loop never moves), while the save holds the agent's count, 2."""
    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg"))
    push(agent, agent.make_env(), 2, by_hand=False, first={"seed": 0})
    agent.save(tmp_path / "saved")
    assert evaluate.main([f"checkpoint={tmp_path / 'saved'}", f"out={tmp_path / 'ev.json'}"]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["episodes_trained"] == 2


def test_an_agent_does_not_save_over_a_run_resumed_in_its_folder(tmp_path):
    """README: `python -m agents.run resume=<folder>` trains a saved agent on with the trainer; the agent's next
    save(folder) then wrote its own checkpoint over the resumed run's (its training lost), beside the run's
    metrics.json and plots, which no longer matched it. A folder holding a metrics.json the agent did not write is
    refused (README "Saving"), its own earlier save or not."""
    from agents import run

    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg"))
    push(agent, agent.make_env(), 1, by_hand=False, first={"seed": 0})
    folder = tmp_path / "saved"
    agent.save(folder)
    assert run.main([f"resume={folder}"]) == 0
    before = (folder / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="metrics.json"):
        agent.save(folder)
    assert (folder / "checkpoints" / "last.pt").read_bytes() == before
