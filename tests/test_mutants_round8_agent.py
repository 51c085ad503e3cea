"""Mutation round 8 (the Agent and the run lifecycle): behaviours of agents/agent.py, episodes.py, run_failures.py,
threads.py, preflight.py and interrupts.py that no test checked before."""

import errno
import os
import signal

import gymnasium as gym
import pytest
import torch

from agents.agent import Agent
from agents.config import ConfigError
from tests.test_agent import push
from tests.test_interrupts import failures_off_the_main_thread
from tests.test_run import tiny


def test_a_single_env_told_it_autoresets_gets_action_0_on_its_terminal_observation(tmp_path):
    """Agent.act with autoreset=True on a single env: the terminal observation after an episode's end is answered
    with the int 0 (the env resets on it), not read."""
    agent = Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path, "train.lanes=1"), autoreset=True)
    env = gym.make(agent.cfg.env.id, **dict(agent.cfg.env.kwargs))
    obs, info = push(agent, env, 1, by_hand=False, first={"seed": 0})  # the terminal observation
    steps = agent.last_episode.steps
    action = agent.act(obs, info)
    assert type(action) is int and action == 0
    agent.observe(0.0, False, False)
    assert agent._cols["tokens"] == [] and agent.last_episode.steps == steps  # nothing read or learned


def test_an_unknown_env_id_lists_memstreams_ids_only():
    """make_vector_env: an id gymnasium does not know is one ConfigError line naming memstream's own ids (the
    envs.* entry points), not gymnasium's built-in ones."""
    from agents.episodes import make_vector_env

    with pytest.raises(ConfigError) as caught:
        make_vector_env("Bogus-v0", 1, {})
    message = str(caught.value)
    assert message.startswith("unknown env id 'Bogus-v0'; choose one of: ")
    known = message.split("choose one of: ")[1].split(", ")
    assert {"ContinualShift-v0", "LongDependency-v0", "NeedleRecall-v0"} <= set(known)
    assert known == sorted(known) and "CartPole-v1" not in known


def test_a_file_failure_with_its_run_folder_gone_says_run_the_command_again(tmp_path):
    """file_failure: where the run folder does not exist (not made yet, or removed) the line ends in "run the
    command again", not how_to_continue's "start the run again (no checkpoint ...)" of a folder that is there."""
    from agents.run_failures import file_failure

    gone = tmp_path / "gone"
    exc = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(gone / "config.yaml"))
    assert file_failure(exc, gone).endswith("move it away, then run the command again")
    gone.mkdir()
    assert file_failure(exc, gone).endswith("then start the run again (no checkpoint was written before)")


def test_a_saved_thread_count_of_0_is_no_count():
    """adopt_saved_threads: 0 (no count, as None) leaves torch's thread count as it is, no error."""
    from agents.threads import adopt_saved_threads

    before = torch.get_num_threads()
    adopt_saved_threads(0, 0)
    assert torch.get_num_threads() == before


def test_an_agent_saved_before_any_episode_restores_with_0_episodes(tmp_path):
    """Agent.from_checkpoint: an Agent's entry with 0 episodes (saved before its first episode) is valid."""
    agent = Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path / "cfg"))
    assert agent.episodes == 0
    back = Agent.from_checkpoint(agent.save(tmp_path / "saved"))
    assert back.episodes == 0 and back.trainer.loop_task is None


def test_saving_leaves_the_trainers_own_run_folder(tmp_path):
    """Agent.save writes into `folder` through its trainer, then puts the trainer's run folder back."""
    agent = Agent.from_config(tiny("LongDependency-v0", "gru", tmp_path / "cfg"))
    own = agent.trainer.run_dir
    agent.save(tmp_path / "saved")
    assert agent.trainer.run_dir == own != (tmp_path / "saved").resolve()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS])
def test_every_kind_of_full_or_read_only_disk_is_a_file_failure(code, tmp_path):
    """is_file_failure: a full disk, a quota, a file past the file system's size and a read-only disk are all one
    line (file_failure's), not a bug's traceback."""
    from agents.run_failures import file_failure, is_file_failure

    exc = OSError(code, os.strerror(code), str(tmp_path / "metrics.json"))
    assert is_file_failure(exc, tmp_path)
    assert file_failure(exc, tmp_path).startswith(f"cannot write {tmp_path / 'metrics.json'} ({os.strerror(code)}")


def test_a_file_where_a_folder_is_expected_is_something_in_the_way(tmp_path):
    """run_failures: ENOTDIR (a file where the path needs a folder) is the "move it away" line."""
    from agents.run_failures import file_failure, is_file_failure

    exc = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(tmp_path / "plots" / "a.png"))
    assert is_file_failure(exc, tmp_path)
    assert "a folder is where the run writes a file, or a file where it makes a folder; move it away" in \
        file_failure(exc, tmp_path)


def test_an_operation_not_permitted_is_a_permission_line_not_a_full_disks():
    """file_failure: EPERM is no permission, as EACCES: "give it ... permission", met before the run folder too."""
    from agents.run_failures import file_failure, is_file_failure

    exc = PermissionError(errno.EPERM, os.strerror(errno.EPERM), "/x/events.out")
    assert is_file_failure(exc, None)
    assert file_failure(exc, None) == (f"cannot read or write /x/events.out ({os.strerror(errno.EPERM)}): give it "
                                       "(and its folder) read and write permission, then run the command again")


def test_the_preflight_env_check_takes_the_given_options_over_a_presets():
    """env_source: an option given for a preset id (LongDependency-Easy-v0: episode_length=320) replaces the
    preset's value, as the runs' env gets it."""
    from agents.preflight import env_source

    assert env_source("LongDependency-Easy-v0", {}).episode_length == 320
    assert env_source("LongDependency-Easy-v0", {"episode_length": 400}).episode_length == 400


def test_sigterm_as_interrupt_off_the_main_thread_changes_nothing():
    """sigterm_as_interrupt in another thread (where handlers cannot be set) is no ValueError; SIGTERM's handler
    stays as it was."""
    from agents.interrupts import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)

    def block():
        with sigterm_as_interrupt():
            pass

    assert failures_off_the_main_thread(block) == []
    assert signal.getsignal(signal.SIGTERM) == before
