"""agents.agent.Agent: the trainer's step acting and chunk learning pushed a step at a time from a user's own loop.
Pushed through the trainer's episodes it ends in the trainer's state, bit for bit."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents import run
from agents.agent import Agent
from agents.config import ConfigError, load_config
from agents.trainer import Trainer
from tests.examples import examples
from tests.test_resume import assert_same
from tests.test_run import TINY_ENVS, tiny


def push(agent: Agent, env, episodes: int, by_hand: bool, first: dict | tuple = (), info_change=None) -> tuple:
    """Step `env` with `agent` until it has finished `episodes` more episodes; `by_hand`: reset after each end (else
    the vector env's autoreset starts the next one). `first`: the env's reset arguments (seed, options), or the
    (obs, info) the loop has now. `info_change` is merged into every info. Returns the loop's last (obs, info)."""
    obs, info = first if isinstance(first, tuple) and first else env.reset(**(first or {}))
    goal = agent.episodes + episodes
    while agent.episodes < goal:
        actions = agent.act(obs, info | (info_change or {}))
        obs, reward, terminated, truncated, info = env.step(actions)
        agent.observe(reward, terminated, truncated)
        if by_hand and np.all(np.asarray(terminated) | np.asarray(truncated)) and agent.episodes < goal:
            obs, info = env.reset(options={"phase": "train"})
    return obs, info


def same_end(a: Agent, trainer: Trainer) -> None:
    assert_same(a.model.state_dict(), trainer.model.state_dict())
    assert_same(a.trainer.state, trainer.state)
    assert_same(a.model.memory_state_dict(), trainer.model.memory_state_dict())
    assert_same(a.trainer.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"])


def play(agent: Agent, env, seed: int | None) -> None:
    """One episode from `env.reset(seed=seed)` (a seed starts the env's schedule again: task 0); the loop resets its
    env by hand: the agent was made with autoreset=False."""
    push(agent, env, 1, by_hand=True, first={"seed": seed, "options": {"phase": "train"}})


@settings(max_examples=examples(10), deadline=None)
@given(env_id=st.sampled_from(sorted(TINY_ENVS)), agent=st.sampled_from(["memnet", "transformer", "lstm", "gru"]),
       loop=st.sampled_from(["autoreset", "by hand", "single env"]), chunk=st.integers(1, 16),
       reset=st.sampled_from(["never", "episode", "task"]), mode=st.sampled_from(["supervised", "reinforce"]),
       seed=st.integers(0, 1000), layout=st.sampled_from([(), ("memory.internal=lm2", "memory.fusion=cross_attention"),
                                                          ("memory.internal=linformer", "memory.fusion=concat"),
                                                          ("memory.store_scope=shared", "memory.slots=0")]))
@example(env_id="ContinualShift-v0", agent="memnet", loop="autoreset", chunk=8, reset="task", mode="supervised", seed=1,
         layout=("memory.internal=lm2", "memory.fusion=cross_attention"))
@example(env_id="NeedleRecall-v0", agent="memnet", loop="single env", chunk=5, reset="episode", mode="reinforce",
         seed=2, layout=())
@example(env_id="LongDependency-v0", agent="lstm", loop="by hand", chunk=16, reset="never", mode="supervised", seed=3,
         layout=())
@example(env_id="ContinualShift-v0", agent="memnet", loop="by hand", chunk=3, reset="never", mode="supervised", seed=4,
         layout=("memory.store_scope=shared", "memory.slots=0"))
def test_an_agent_pushed_through_the_trainers_episodes_ends_in_the_trainers_state(
        env_id, agent, loop, chunk, reset, mode, seed, layout, tmp_path_factory):
    lanes = 1 if loop == "single env" else 2
    overrides = tiny(env_id, agent, tmp_path_factory.mktemp("run"), "train.acting=step", f"train.chunk={chunk}",
                     f"memory.reset={reset}", f"train.mode={mode}", f"seed={seed}", f"train.lanes={lanes}", *layout)
    pushed = Agent.from_config(overrides, autoreset=False if loop == "by hand" else None)
    cfg = pushed.cfg
    env = gym.make(cfg.env.id, **dict(cfg.env.kwargs)) if loop == "single env" else pushed.make_env()
    push(pushed, env, 2, by_hand=loop != "autoreset", first={"seed": seed, "options": {"phase": "train"}})
    trainer = Trainer(load_config(overrides), cfg.run_dir)
    stats = [trainer.train_episode() for _ in range(2)][-1]
    same_end(pushed, trainer)
    assert pushed.episodes == trainer.episode == 2
    for field in ("steps", "scored", "correct", "losses", "updates", "chunks", "act_calls"):
        assert getattr(pushed.last_episode, field) == getattr(stats, field), field
    assert pushed.last_episode.loss == stats.loss
    pushed.close()


def test_a_single_env_gets_int_actions_and_a_vector_env_arrays(tmp_path):
    one = Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path, "train.lanes=1"))
    env = gym.make(one.cfg.env.id, **dict(one.cfg.env.kwargs))
    obs, info = env.reset(seed=0)
    action = one.act(obs, info)
    assert type(action) is int
    one.observe(*env.step(action)[1:4])
    two = Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path))
    venv = two.make_env()
    actions = two.act(*venv.reset(seed=0))
    assert actions.shape == (2,) and actions.dtype == np.int64


def written(agent: Agent) -> dict:
    """The store's entries; not the access times its searches move (`clock`, `stamp`, `importance`)."""
    return {k: v for k, v in agent.model.store.state_dict().items() if k not in ("clock", "stamp", "importance")}


def test_without_learning_the_weights_stay_and_the_memory_is_written_where_the_env_says(tmp_path):
    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path), learn=False)
    weights = {k: v.clone() for k, v in agent.model.state_dict().items()}
    env = agent.make_env()
    now = push(agent, env, 1, by_hand=False, first={"seed": 0})
    assert_same(agent.model.state_dict(), weights)
    assert agent.model.store.size(0) > 0  # the episode's writes are in the store
    assert agent.last_episode.losses == 0 and agent.last_episode.scored > 0
    store = written(agent)
    slots = {k: v.clone() for k, v in agent.trainer.state.items() if k.startswith("slot.")}
    push(agent, env, 1, by_hand=False, first=now, info_change={"memory_writes": np.zeros(2, dtype=bool)})
    assert agent.last_episode.scored > 0
    assert_same(written(agent), store)
    assert_same({k: v for k, v in agent.trainer.state.items() if k.startswith("slot.")}, slots)
    assert_same(agent.model.state_dict(), weights)


def test_bad_config_is_the_runs_one_line(tmp_path):
    with pytest.raises(ConfigError, match="memory.slotz"):
        Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path, "memory.slotz=3"))
    with pytest.raises(TypeError, match="list of key=value"):
        Agent.from_config("env=LongDependency-v0")
    with pytest.raises(ValueError, match="autoreset='yes'"):
        Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path), autoreset="yes")


@pytest.fixture
def agent(tmp_path):
    return Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path))


def first_step(agent):
    env = agent.make_env()
    return env, *env.reset(seed=0)


def test_calls_out_of_order_are_one_line(agent):
    env, obs, info = first_step(agent)
    with pytest.raises(RuntimeError, match=r"no act\(\) before it"):
        agent.observe(np.zeros(2), np.zeros(2, bool), np.zeros(2, bool))
    agent.act(obs, info)
    with pytest.raises(RuntimeError, match=r"called twice without observe\(\)"):
        agent.act(obs, info)
    agent.observe(np.zeros(2), np.zeros(2, bool), np.zeros(2, bool))


@pytest.mark.parametrize("obs, info_change, line", [
    (np.zeros(3, np.int64), {}, r"obs has shape \(3,\).*pass integer tokens of shape \(2,\)"),
    (np.zeros(2, np.float32), {}, r"dtype float32"),
    (np.array([0, 999]), {}, r"token 999, outside this model's vocabulary \[0, "),
    (np.array([-1, 0]), {}, r"token -1, outside"),
    (np.zeros(2, np.int64), {"scored": None}, r"info has no 'scored'; the env must give 'scored', 'memory_writes'"),
    (np.zeros(2, np.int64), {"target": np.zeros(3, np.int64)}, r"info\['target'\] is int64 of shape \(3,\); pass one "
     r"int per lane \(2,\)"),
    (np.zeros(2, np.int64), {"target": np.zeros(2)}, r"info\['target'\] is float64 of shape \(2,\)"),
    (np.zeros(2, np.int64), {"memory_writes": np.array(["yes", "no"])}, r"pass one bool per lane"),
    # a target the loss cannot read: refused at act, not in the chunk's cross-entropy at a later observe()
    (np.zeros(2, np.int64), {"scored": np.ones(2, bool), "target": np.array([0, 999])},
     r"info\['target'\] is 999 on lane 1, which is scored; pass a token in \[0, \d+\) where scored, -1 where not"),
    (np.zeros(2, np.int64), {"scored": np.array([True, False]), "target": np.array([-1, -1])},
     r"info\['target'\] is -1 on lane 0, which is scored"),
    (np.zeros(2, np.int64), {"scored": np.zeros(2, bool), "target": np.array([-1, -5])},
     r"info\['target'\] is -5 on lane 1, which is not scored"),
])
def test_bad_observations_and_infos_are_one_line_and_leave_the_agent_usable(agent, obs, info_change, line):
    env, good_obs, info = first_step(agent)
    bad_info = {k: v for k, v in (info | info_change).items() if v is not None}
    with pytest.raises(ValueError, match=line) as err:
        agent.act(obs, bad_info)
    assert "\n" not in str(err.value)
    agent.act(good_obs, info)  # nothing was half done
    agent.observe(np.zeros(2), np.zeros(2, bool), np.zeros(2, bool))


def test_lanes_ending_apart_are_refused(agent):
    env, obs, info = first_step(agent)
    agent.act(obs, info)
    with pytest.raises(ValueError, match=r"lanes \[1\] ended and the others did not"):
        agent.observe(np.zeros(2), np.array([False, True]), np.zeros(2, bool))


def test_the_vector_autoreset_step_is_neither_read_nor_learned(tmp_path):
    """After an episode's end the next act() gets the terminal observation: zeros back, no forward, no record."""
    agent = Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path))
    env = agent.make_env()
    obs, info = push(agent, env, 1, by_hand=False, first={"seed": 0})  # the terminal observation
    calls = agent.last_episode.act_calls
    state = {k: v.clone() for k, v in agent.trainer.state.items()}
    assert np.array_equal(agent.act(obs, info | {"scored": np.ones(2, bool)}), np.zeros(2))  # even if "scored"
    agent.observe(np.ones(2), np.zeros(2, bool), np.zeros(2, bool))
    assert agent._cols["tokens"] == [] and agent.last_episode.act_calls == calls
    assert_same(agent.trainer.state, state)


def test_its_trainer_evaluates_every_task_from_the_agents_memory_and_puts_it_back(tmp_path):
    agent = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path))
    blank = Agent.from_config(tiny("ContinualShift-v0", "memnet", tmp_path))  # the same weights, no memory yet
    env = agent.make_env()
    now = push(agent, env, 2, by_hand=False, first={"seed": 0})
    memory, state = agent.model.memory_state_dict(), {k: v.clone() for k, v in agent.trainer.state.items()}
    accuracy = agent.trainer.evaluate_all()
    assert sorted(accuracy) == [0, 1] and all(0 <= a <= 1 for a in accuracy.values())
    assert_same(agent.model.memory_state_dict(), memory)
    assert_same(agent.trainer.state, state)
    assert accuracy != blank.trainer.evaluate_all()  # it evaluated the memory the agent's loop wrote
    push(agent, env, 1, by_hand=False, first=now)  # and the loop goes on


@pytest.mark.parametrize("reward, terminated, line", [
    (np.zeros(3), np.zeros(2, bool), r"reward is float64 of shape \(3,\); pass numbers, one per lane \(2,\)"),
    (np.array(["1", "0"]), np.zeros(2, bool), r"reward is <U1 of shape \(2,\); pass numbers"),
    (np.zeros(2), np.zeros(2), r"terminated is float64 of shape \(2,\); pass bools, one per lane \(2,\)"),
    # a NaN or inf reward was taken, and REINFORCE's loss then said "training diverged ... lower train.lr"
    (np.array([0.0, np.nan]), np.zeros(2, bool), r"^Agent.observe: reward is nan on lane 1 \(as float32\); pass "
                                                 r"finite numbers$"),
    (np.array([1e39, 0.0]), np.zeros(2, bool), r"reward is 1e\+39 on lane 0 \(as float32\)"),
])
def test_bad_rewards_and_flags_are_one_line(agent, reward, terminated, line):
    env, obs, info = first_step(agent)
    agent.act(obs, info)
    with pytest.raises(ValueError, match=line) as err:
        agent.observe(reward, terminated, np.zeros(2, bool))
    assert "\n" not in str(err.value)
    agent.observe(0.0, False)  # scalars stand for every lane; nothing was half done


BAD_CALLS = {  # a refused call at a step: (what it does, the error it raises, refused at the autoreset step too)
    "obs of another shape": (lambda a, obs, info: a.act(np.zeros(5, np.int64), info), ValueError, True),
    "a token out of the vocabulary": (lambda a, obs, info: a.act(np.full(2, 10**6), info), ValueError, True),
    "info without scored": (lambda a, obs, info: a.act(obs, {k: v for k, v in info.items() if k != "scored"}),
                            ValueError, False),  # the terminal observation's info is not read: the env resets
    "a float target": (lambda a, obs, info: a.act(obs, info | {"target": np.zeros(2)}), ValueError, False),
    "a scored target out of the vocabulary": (lambda a, obs, info: a.act(obs, info | {
        "scored": np.ones(2, bool), "target": np.full(2, 10**6)}), ValueError, False),
    "observe first": (lambda a, obs, info: a.observe(np.zeros(2), np.zeros(2, bool)), RuntimeError, True),
}


@settings(max_examples=examples(5), deadline=None)
@given(data=st.data())
def test_refused_calls_anywhere_change_nothing(data, tmp_path_factory):
    """An agent that meets refused calls at random steps (before its act, and a second act or a bad observe after
    it) acts, learns and remembers exactly as one that never met them."""
    overrides = tiny("LongDependency-v0", "memnet", tmp_path_factory.mktemp("run"), "train.chunk=5")
    clean, noisy = Agent.from_config(overrides), Agent.from_config(overrides)
    envs = [clean.make_env(), noisy.make_env()]
    (obs, info), (obs2, info2) = envs[0].reset(seed=0), envs[1].reset(seed=0)
    resetting = False  # the step after an episode's end: the vector env resets and takes no action
    while clean.episodes < 2:
        bad = data.draw(st.sampled_from([None, *(k for k, c in BAD_CALLS.items() if c[2] or not resetting)]))
        if bad is not None:
            call, error, _ = BAD_CALLS[bad]
            with pytest.raises(error):
                call(noisy, obs2, info2)
        actions, actions2 = clean.act(obs, info), noisy.act(obs2, info2)
        assert np.array_equal(actions, actions2)
        after = data.draw(st.sampled_from([None, "act again", "a reward per 3 lanes"]))
        if after == "act again":
            with pytest.raises(RuntimeError):
                noisy.act(obs2, info2)
        elif after is not None:
            with pytest.raises(ValueError):
                noisy.observe(np.zeros(3), np.zeros(2, bool))
        obs, reward, terminated, truncated, info = envs[0].step(actions)
        obs2, reward2, terminated2, truncated2, info2 = envs[1].step(actions2)
        clean.observe(reward, terminated, truncated)
        noisy.observe(reward2, terminated2, truncated2)
        resetting = not resetting and bool(np.all(terminated | truncated))
    same_end(noisy, clean.trainer)
    assert noisy.episodes == 2 and noisy.last_episode.correct == clean.last_episode.correct


def test_an_agents_evaluation_starts_another_task_cleared_under_memory_reset_task(tmp_path, monkeypatch):
    """`agent.trainer.evaluate_all()` after the loop trained task 1 evaluates task 0 from a cleared memory and task 1
    from the memory as it is, as the trainer's own evaluations do. The trainer's rule read its own schedule, where an
    Agent's trainer stays at episode 0: no task was ever cleared."""
    overrides = tiny("ContinualShift-v0", "memnet", tmp_path / "cfg", "env.kwargs.num_tasks=2", "memory.reset=task")
    agent = Agent.from_config(overrides, autoreset=False)
    env = agent.make_env()
    cleared = []
    real = agent.trainer._cleared
    monkeypatch.setattr(agent.trainer, "_cleared", lambda state: cleared.append(agent.trainer.evaluating) or
                        real(state))
    for seed in (1, None):  # tasks 0 and 1, one episode each (num_tasks=2 with the tiny schedule's episodes)
        play(agent, env, seed)
    assert agent.trainer.loop_task == 1 and cleared == [False]  # the loop's own switch to task 1
    agent.trainer.evaluate_all()
    assert cleared == [False, True]  # task 0's evaluation only
    assert agent.trainer.episode == 0  # (the trainer's own count: the rule reads the tasks the loop met)
    # an Agent made from a run's checkpoint starts from the run's last trained task, as a resumed run would
    run_dir = tmp_path / "run"
    assert run.main(overrides[:2] + [f"run_dir={run_dir}"] + overrides[3:]) == 0
    from_run = Agent.from_checkpoint(run_dir)
    assert from_run.trainer.loop_task is None and from_run.trainer.episode == 2
    assert from_run.trainer._task_switch(0) and not from_run.trainer._task_switch(1)


def test_an_agent_that_does_not_learn_acts_greedily_even_under_reinforce(tmp_path):
    """learn=False "only acts": under train.mode=reinforce too its actions are the policy's argmax (as agents.evaluate
    takes them), not draws, so two loops over the same episode from the same weights act alike whatever the torch
    random stream."""
    runs = []
    for torch_seed in (1, 2):
        agent = Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path / str(torch_seed), "train.mode=reinforce"),
                                  learn=False, autoreset=False)
        env = agent.make_env()
        obs, info = env.reset(seed=0, options={"phase": "train"})
        torch.manual_seed(torch_seed)
        actions, done = [], False
        while not done:
            a = agent.act(obs, info)
            actions.append(np.where(info["scored"], a, -1))
            obs, reward, terminated, truncated, info = env.step(a)
            agent.observe(reward, terminated, truncated)
            done = bool(np.all(terminated | truncated))
        runs.append(np.stack(actions))
    assert (runs[0] >= 0).sum() > 0
    np.testing.assert_array_equal(runs[0], runs[1])


def test_an_env_without_tasks_is_task_0_so_reset_task_keeps_the_memory_its_evaluation_reads(tmp_path):
    """An env may leave out info["task_id"] (agents.agent: OPTIONAL, task 0 stands for it). Under memory.reset=task an
    evaluation clears the memory only when its task is another than the one the loop trained on: after a loop on an
    env without tasks, `agent.trainer.evaluate_task(0)` reads the memory the loop wrote (a -1 there made every
    evaluation of task 0 start from a cleared memory)."""
    agent = Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path, "memory.reset=task"), autoreset=False)
    env = agent.make_env()
    obs, info = env.reset(seed=0, options={"phase": "train"})
    done = False
    while not done:
        actions = agent.act(obs, {k: v for k, v in info.items() if k != "task_id"})
        obs, reward, terminated, truncated, info = env.step(actions)
        agent.observe(reward, terminated, truncated)
        done = bool(np.all(terminated | truncated))
    assert agent.trainer.loop_task == 0
    cleared = []
    clear = agent.trainer._cleared
    agent.trainer._cleared = lambda state: cleared.append(1) or clear(state)
    agent.trainer.evaluate_task(0)
    assert cleared == []
