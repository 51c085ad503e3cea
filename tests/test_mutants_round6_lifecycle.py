"""Mutation round 6 (the run lifecycle): behaviours of agents/agent.py, episodes.py, interrupts.py, startup.py,
threads.py, run_failures.py, preflight.py and inert_notes.py that no test checked before."""

import numpy as np
import pytest

from agents.agent import Agent
from agents.trainer import Trainer
from tests.test_agent import push, same_end
from tests.test_run import tiny


def _tiny_agent(tmp_path, *extra, **kwargs) -> Agent:
    return Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path / "cfg", *extra), **kwargs)


def test_save_is_refused_between_two_steps_of_an_episode_not_only_after_an_act(tmp_path):
    """Agent.save after an observe() that did not end the episode: still inside it (its chunk is not learned)."""
    agent = _tiny_agent(tmp_path)
    env = agent.make_env()
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
    agent.observe(reward, terminated, truncated)
    with pytest.raises(RuntimeError, match=r"an episode is under way"):
        agent.save(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_a_token_or_a_scored_target_equal_to_the_vocabulary_size_is_refused(tmp_path):
    """The vocabulary is [0, vocab): `vocab` itself is outside it, as an observation and as a scored target."""
    agent = _tiny_agent(tmp_path)
    env = agent.make_env()
    obs, info = env.reset(seed=0)
    v = agent.vocab
    with pytest.raises(ValueError, match=rf"token {v}, outside this model's vocabulary \[0, {v}\)"):
        agent.act(np.array([0, v]), info)
    with pytest.raises(ValueError, match=rf"info\['target'\] is {v} on lane 0, which is scored"):
        agent.act(obs, info | {"scored": np.ones(2, bool), "target": np.array([v, 0])})
    agent.act(obs, info)  # nothing was half done


def test_a_bool_target_is_refused(tmp_path):
    """info['target'] is a token per lane: bools are accepted for the flags (scored, memory_writes) only."""
    agent = _tiny_agent(tmp_path)
    env = agent.make_env()
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"info\['target'\] is bool of shape \(2,\); pass one int per lane"):
        agent.act(obs, info | {"target": np.zeros(2, bool)})


def test_an_agent_saved_on_task_0_restores_task_0_as_its_last_task(tmp_path):
    """A saved last task 0 is a task (memory.reset=task's reference), not "none yet": task 1 next is a switch."""
    agent = Agent.from_config(tiny("ContinualShift-v0", "gru", tmp_path / "cfg", "memory.reset=task"),
                              autoreset=False)
    push(agent, agent.make_env(), 1, by_hand=True, first={"seed": 1, "options": {"phase": "train"}})
    assert agent.trainer.loop_task == 0
    agent.save(tmp_path / "saved")
    back = Agent.from_checkpoint(tmp_path / "saved", autoreset=False)
    assert back.trainer.loop_task == 0
    assert back.trainer._task_switch(1) and not back.trainer._task_switch(0)


def test_an_agent_resets_the_slot_lifetimes_where_the_trainer_clears_the_memory(tmp_path):
    """memory.reset=episode clears the slot lifetime tracker with the memory, as the trainer's train_episode does."""
    overrides = tiny("LongDependency-v0", "memnet", tmp_path / "cfg", "train.acting=step", "memory.reset=episode")
    agent = Agent.from_config(overrides)
    push(agent, agent.make_env(), 2, by_hand=False, first={"seed": 0, "options": {"phase": "train"}})
    trainer = Trainer(agent.cfg, agent.cfg.run_dir)
    for _ in range(2):
        trainer.train_episode()
    same_end(agent, trainer)
    assert agent.trainer.lifetimes.state_dict().keys() == trainer.lifetimes.state_dict().keys()
    for key, value in trainer.lifetimes.state_dict().items():
        np.testing.assert_array_equal(np.asarray(agent.trainer.lifetimes.state_dict()[key]), np.asarray(value), key)


def test_closing_an_agent_drops_its_store_and_cache(tmp_path):
    """Agent.close (and leaving its `with` block) releases the model's store and cache (the cold tier's file)."""
    with Agent.from_config(tiny("LongDependency-v0", "memnet", tmp_path / "cfg")) as agent:
        assert agent.model.store is not None and agent.model.cache is not None
    assert agent.model.store is None and agent.model.cache is None


def _feed_two_episodes(agent: Agent, by_hand: bool) -> None:
    """Two episodes with the loop's own rewards: (step in the episode) % 5 per lane, 9 at the autoreset step."""
    env = agent.make_env()
    obs, info = env.reset(seed=3, options={"phase": "train"})
    t, resetting = 0, False
    while agent.episodes < 2:
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        reward = np.full(2, 9.0) if resetting else np.full(2, float(t % 5))
        t = 0 if resetting else t + 1
        agent.observe(reward, terminated, truncated)
        done = bool(np.all(terminated | truncated))
        resetting = done and not by_hand
        if done and by_hand and agent.episodes < 2:
            obs, info = env.reset(options={"phase": "train"})
            t = 0


def test_under_reinforce_the_autoreset_steps_reward_joins_no_chunk(tmp_path):
    """The vector env's autoreset step (after an episode's end) takes no action: the reward passed for it must not
    join the next episode's chunk, where REINFORCE's update would read every reward one step late."""
    overrides = tiny("LongDependency-v0", "gru", tmp_path / "cfg", "train.acting=step", "train.mode=reinforce",
                     "train.chunk=64")  # one chunk per episode: every scored step's reward is read
    autoreset = Agent.from_config(overrides)  # (each made just before its loop: its seed starts the draws again)
    _feed_two_episodes(autoreset, by_hand=False)
    by_hand = Agent.from_config(overrides, autoreset=False)
    _feed_two_episodes(by_hand, by_hand=True)
    same_end(autoreset, by_hand.trainer)


def test_every_kind_of_signal_held_in_the_block_is_raised_after_it_in_order():
    """interrupts_held: a SIGTERM and a SIGINT that both came inside the block both reach their handlers after it,
    in the order they came (not only the first kind)."""
    import signal

    from agents.interrupts import interrupts_held

    got = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in before:
            signal.signal(sig, lambda signum, frame: got.append(signum))
        with interrupts_held():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
            assert got == []
        assert got == [signal.SIGTERM, signal.SIGINT]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_sigterm_as_interrupt_off_the_main_thread_changes_nothing():
    """Off the main thread (where handlers cannot be set) sigterm_as_interrupt is a plain block, not a ValueError."""
    import signal
    import threading

    from agents.interrupts import sigterm_as_interrupt

    before, failures, ran = signal.getsignal(signal.SIGTERM), [], []

    def body():
        try:
            with sigterm_as_interrupt():
                ran.append(True)
        except Exception as exc:  # signal.signal raises ValueError off the main thread
            failures.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert failures == [] and ran == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_end_startup_puts_sigterm_back_to_its_default_from_the_startup_guard_only():
    """end_startup: SIGTERM goes from the startup guard's handler back to SIG_DFL (the command's own handling takes
    over); a SIGTERM handler of someone else's stays; Ctrl+C is KeyboardInterrupt again."""
    import signal

    from agents.startup import end_startup

    def _interrupted_while_starting(signum, frame):  # the startup guard's handler, by its name
        pass

    def theirs(signum, frame):
        pass

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _interrupted_while_starting)
        end_startup()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGTERM, theirs)
        end_startup()
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_the_preflight_env_check_makes_an_unknown_env_id_one_line():
    """env_source: an id Gymnasium does not know (its own error class, not a ValueError) is one ConfigError line."""
    from agents.config import ConfigError
    from agents.preflight import env_source

    with pytest.raises(ConfigError, match="Nope-v0") as caught:
        env_source("Nope-v0", {})
    assert "\n" not in str(caught.value)


def test_a_key_given_twice_is_named_once_in_the_note():
    """inert_note: the keys of a sweep's several override sets may repeat; each is named once."""
    from agents.config import load_config
    from agents.inert_notes import inert_note

    assert inert_note(load_config(["agent=gru"]), ["memory.slots", "memory.slots"]) == \
        "note: agent=gru has no memory; memory.slots changes nothing"
