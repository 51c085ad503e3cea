"""agents.evaluate() of an Agent's save whose own record is damaged (one line, as Agent.from_checkpoint says it), and
of numpy scalars (the values they hold)."""

import pytest
import torch

from agents.agent import Agent
from agents.checkpoint import CheckpointError
from tests.test_agent import play
from tests.test_run import tiny


def saved_agent(tmp_path, *extra):
    """An Agent trained for two episodes (learn=True) of a tiny ContinualShift run, saved to tmp_path / 'saved'."""
    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path / "cfg", *extra), learn=True,
                              autoreset=False)
    env = agent.make_env()
    play(agent, env, 0)
    play(agent, env, None)
    assert agent.episodes == 2
    return agent, agent.save(tmp_path / "saved")


@pytest.mark.parametrize("entry", [{"episodes": "x", "last_task": "y"}, [1, 2],
                                   {"episodes": 2, "last_task": 1.5}, {"episodes": -3, "last_task": 0}])
def test_evaluate_refuses_a_damaged_agent_entry_as_from_checkpoint_does(tmp_path, entry):
    from agents.evaluate import evaluate

    _, path = saved_agent(tmp_path)
    body = torch.load(path, weights_only=True)
    body["agent"] = entry
    torch.save(body, path)
    with pytest.raises(CheckpointError, match=r"does not hold what this memstream saves \(agent: "):
        Agent.from_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"does not hold what this memstream saves \(agent: "):
        evaluate(tmp_path / "saved", out=None, note=False)  # was evaluated silently, last_task ignored


def test_evaluate_takes_numpy_scalars_as_the_plain_values_they_are(tmp_path):
    """A script's sweep (`for d in np.arange(1, 4): evaluate(run, env_kwargs={"delay": d})`) passes numpy scalars:
    they were OmegaConf's multi-line UnsupportedValueType, and threads=np.int64(1) was refused as out of [1, 1024]."""
    import numpy as np

    from agents.evaluate import evaluate

    saved_agent(tmp_path)
    plain = evaluate(tmp_path / "saved", out=None, note=False, threads=1,
                     env_kwargs={"trials_per_episode": 3}, memory={"store_replace": 0.5, "reset": "episode"})
    given = evaluate(tmp_path / "saved", out=None, note=False, threads=np.int64(1),
                     env_kwargs={"trials_per_episode": np.int64(3)},
                     memory={"store_replace": np.float64(0.5), "reset": np.str_("episode")})
    assert given["accuracy_by_task"] == plain["accuracy_by_task"]
    assert given["env_kwargs"] == plain["env_kwargs"] and given["memory"] == plain["memory"]


@pytest.mark.parametrize("note", [1, 0, "np.True_", "np.False_"])
def test_evaluate_takes_any_truth_value_for_note(capsys, note):
    """`note` was read for its truth; once a set (a sweep's notes, said once) was added, 1 or numpy's True was
    searched (`line in 1`: a TypeError), and so were 0 and numpy's False."""
    import numpy as np

    from agents import evaluate

    note = {"np.True_": np.True_, "np.False_": np.False_}.get(note, note)
    evaluate.say("note: x", note)
    assert capsys.readouterr().out == ("note: x\n" if note else "")
