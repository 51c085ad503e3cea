"""agents.evaluate under memory.reset=task clears the tasks the run's (or an Agent loop's) final evaluation cleared,
whatever the evaluated env's schedule says (it compared each task with the changed schedule's, and an Agent's save
with none)."""

import numpy as np
import pytest

from agents import evaluate, run
from agents.agent import Agent
from agents.trainer import Trainer

SHIFT = ["env=ContinualShift-v0", "env.kwargs.num_tasks=2", "env.kwargs.episodes_per_task=2",
         "env.kwargs.trials_per_episode=8", "env.kwargs.keys_per_task=4", "agent=lstm", "model.dim=16",
         "train.lanes=2", "train.threads=1", "train.progress=false", "memory.reset=task"]


@pytest.fixture
def cleared(monkeypatch):
    """The tasks whose evaluation starts from a cleared memory (memory.reset=task's rule), in evaluation order."""
    seen = []
    switch = Trainer._task_switch

    def spy(self, task):
        answer = switch(self, task)
        if self.evaluating:
            seen.append((task, answer))
        return answer

    monkeypatch.setattr(Trainer, "_task_switch", spy)
    return seen


def test_evaluate_with_a_changed_schedule_clears_the_tasks_the_run_cleared(tmp_path, cleared):
    # trained 4 episodes: tasks 0, 0, 1, 1; the final evaluation starts task 0 cleared (the last task trained is 1)
    run_dir = tmp_path / "run"
    assert run.main([*SHIFT, f"run_dir={run_dir}"]) == 0
    cleared.clear()
    evaluate.evaluate(run_dir, out=None)
    assert cleared == [(0, True), (1, False)]
    # README: options that shape ContinualShift's schedule replay another history, "its accuracy is the same";
    # with episodes_per_task=10 the 4 episodes read as task 0 only, and task 1 was cleared instead of task 0
    cleared.clear()
    evaluate.evaluate(run_dir, env_kwargs={"episodes_per_task": 10}, out=None)
    assert cleared == [(0, True), (1, False)]


def test_evaluate_of_an_agent_save_clears_as_the_loaded_agent_does(tmp_path, cleared):
    agent = Agent.from_config(SHIFT)
    env = agent.make_env()
    obs, info = env.reset(seed=0)
    while agent.episodes < 4:  # the loop meets tasks 0, 0, 1, 1
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        agent.observe(reward, terminated, truncated)
    assert agent.trainer.loop_task == 1
    agent.save(tmp_path / "agent")
    loaded = Agent.from_checkpoint(tmp_path / "agent")
    cleared.clear()
    expected = loaded.trainer.evaluate_all()
    assert cleared == [(0, True), (1, False)]  # README: a task other than the last one the loop met starts cleared
    cleared.clear()
    result = evaluate.evaluate(tmp_path / "agent", out=None)
    assert cleared == [(0, True), (1, False)]
    np.testing.assert_equal(result["accuracy_by_task"], expected)
