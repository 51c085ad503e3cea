"""Mutation-testing kills (round 7): what no test checked of `python -m agents.evaluate`'s evaluate() arguments and
env-shape line (agents/evaluate.py), of agents.run's resume of a finished run (agents/run.py), and of the shell
words and no-checkpoint lines of agents/checkpoint_paths.py."""

import shlex

import pytest
import torch

from agents import evaluate
from agents.checkpoint_paths import CheckpointError, existing_checkpoint, shell_arg, started_only
from agents.config import ConfigError
from memory.config import MAX_THREADS

# --- agents/checkpoint_paths.py ------------------------------------------------------------------------------------


def test_a_shell_word_with_a_space_is_double_quoted_and_a_plain_one_is_bare():
    """`"resume=/r/My Drive"` reads better than '...' quoting; a plain path is printed as it is."""
    assert shell_arg("resume", "/r/run") == "resume=/r/run"
    assert shell_arg("resume", "/r/My Drive/run") == '"resume=/r/My Drive/run"'


@pytest.mark.parametrize("char", ["$", "`", "\\", "!", '"'])
def test_a_shell_word_with_a_character_double_quotes_expand_is_single_quoted(char):
    """Inside "...", $ ` \\ ! and " are still read by the shell: the word would paste as another path."""
    word = f"resume=/r/a{char}b"
    assert shell_arg("resume", f"/r/a{char}b") == shlex.quote(word)
    assert shlex.split(shell_arg("resume", f"/r/a{char}b")) == [word]


def test_a_folder_with_a_lock_and_other_files_is_no_run_killed_while_starting(tmp_path):
    """Only a lock (and config.yaml's temp file) is a run killed while it started; a folder holding anything else
    too is no run folder, and says so."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / ".run.lock").write_text("1\n")
    (folder / ".config.yaml.x.tmp").write_text("partial")
    assert started_only(folder)
    (folder / "notes.txt").write_text("mine")
    assert not started_only(folder)
    with pytest.raises(CheckpointError, match=r"^no checkpoint in .*: it is not a run folder; point resume= at one"):
        existing_checkpoint(folder, "resume")


def test_a_path_through_a_file_is_no_checkpoint_not_an_unreadable_one(tmp_path):
    """checkpoint=<file>/x (a file used as a folder): "no checkpoint at", not "cannot read checkpoint (...)"."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match=r"^no checkpoint at '.*/file/x': point checkpoint= at a run folder"):
        existing_checkpoint(tmp_path / "file" / "x", "evaluate")



# --- agents/evaluate.py --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [0, MAX_THREADS + 1])
def test_evaluate_refuses_a_thread_count_outside_its_range(tmp_path, threads):
    """evaluate(threads=0) / one past MAX_THREADS: its own one line, before the checkpoint is read."""
    with pytest.raises(ConfigError, match=rf"^evaluate: threads={threads}; pass a torch thread count in \[1, "
                                          rf"{MAX_THREADS}\]"):
        evaluate.evaluate(tmp_path / "nowhere", out=None, threads=threads, note=False)


def test_evaluate_takes_the_largest_thread_count_past_its_own_check(tmp_path):
    """threads=MAX_THREADS is in range: the call goes on to look for the checkpoint."""
    with pytest.raises(CheckpointError, match="no checkpoint"):
        evaluate.evaluate(tmp_path / "nowhere", out=None, threads=MAX_THREADS, note=False)


def test_the_trained_shape_is_blocks_by_tasks_and_named_so():
    """R has a row per training block and a column per task: (K, T), not (T, K), in the env-shape line too."""
    body = {"trainer": {"R": [[0.5, 0.5, 0.5]]}, "model": {"embed.weight": torch.zeros(10, 2)},
            "config": {"env": {"kwargs": {"num_tasks": 3}}}}
    assert evaluate.trained_shapes(body) == (10, (1, 3))
    with pytest.raises(ConfigError, match=r"^env.kwargs.num_tasks=2: the run was trained on vocab_size=10 with 1 "
                                          r"training block\(s\) of 3 task\(s\), this env has vocab_size=10 and 1 of "
                                          r"2; .*, as the run's env.kwargs.num_tasks=3$"):
        evaluate.check_restorable(body, (10, (1, 2)), {"num_tasks": 2})


def test_a_checkpoint_body_without_a_config_still_gets_the_env_shape_line():
    """No readable saved config: the line names the options given, without the run's values (not a KeyError)."""
    body = {"trainer": {"R": [[0.5, 0.5]]}, "model": {"embed.weight": torch.zeros(10, 2)}}
    with pytest.raises(ConfigError, match=r"^env.kwargs.vocab_size=12: the run was trained on vocab_size=10 .*"
                                          r"\(num_tasks, revisit\)$"):
        evaluate.check_restorable(body, (12, (1, 2)), {"vocab_size": 12})



def test_a_checkpoint_of_a_stopped_run_records_the_episodes_it_had_trained(tmp_path, capsys, monkeypatch):
    """A run stopped after episode 1 of 2: its evaluation says 1 episode trained (not the run's budget of 2)."""
    from agents import run
    from tests.test_run import tiny
    from tests.test_run_edges import stop_in_episode_2

    run_dir = tmp_path / "run"
    stop_in_episode_2(monkeypatch)
    assert run.main(tiny("LongDependency-v0", "gru", run_dir, "train.checkpoint_every=1")) == 130
    monkeypatch.undo()
    assert evaluate.evaluate(run_dir, out=None, note=False)["episodes_trained"] == 1
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={run_dir}", "out=one.json"]) == 0
    assert "LongDependency-v0 / gru after 1 episode\n" in capsys.readouterr().out
