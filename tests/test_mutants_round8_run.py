"""Mutation-testing kills (round 8): what no test checked of agents.run's interruption line, run-folder cleanup and
closing line (agents/run.py), of agents.evaluate's notes in a sweep (agents/evaluate.py), of the new-folder names
(agents/new_folders.py) and of the path helpers of agents/checkpoint_paths.py."""

import shlex

import pytest

from agents import evaluate, run
from agents.checkpoint_paths import CheckpointError, hydra_spelling, run_dir_of, shell_arg
from agents.new_folders import first_free, stamped_names
from tests.test_folder_permissions import _no_search_permission_in
from tests.test_run import tiny

# --- agents/run.py -------------------------------------------------------------------------------------------------


def test_an_interruption_in_a_folder_without_config_yaml_says_nothing_was_written(tmp_path, capsys):
    """_interrupted: a folder that exists but holds no config.yaml (the user's own run_dir=) has nothing to start
    again from; only a config.yaml makes it "no checkpoint was written yet"."""
    folder = tmp_path / "run"
    folder.mkdir()
    assert run._interrupted(folder) == 130
    assert capsys.readouterr().err.strip() == "interrupted; nothing was written"
    (folder / "config.yaml").write_text("seed: 0\n")
    assert run._interrupted(folder) == 130
    assert capsys.readouterr().err.strip() == ("interrupted; no checkpoint was written yet; start it again with: "
                                               f"python -m agents.run config={folder / 'config.yaml'} "
                                               f"run_dir={folder}")


def test_a_run_stopped_before_its_config_yaml_keeps_a_run_dir_that_was_there_before(tmp_path, capsys, monkeypatch):
    """Only a folder the run made is removed when it is stopped before config.yaml: run_dir= of a folder the user
    made (empty) stays, as it was."""
    def stopped(*args):
        raise KeyboardInterrupt

    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    monkeypatch.setattr(run, "write_text_atomic", stopped)
    assert run.main(tiny("ContinualShift-v0", "lstm", run_dir)) == 130
    assert capsys.readouterr().err.strip() == "interrupted; nothing was written"
    assert run_dir.is_dir()


def test_a_relative_runs_root_is_the_logdir_of_a_run_inside_it(tmp_path, monkeypatch):
    """closing_line: runs_root=runs (relative, as typed) holding the run folder is the logdir shown, not the lone
    run folder (whose HParams tab shows no metric values)."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "ContinualShift-v0" / "memnet" / "a"
    assert run.closing_line(run_dir, "runs") == f"run folder: {run_dir}  (tensorboard --logdir runs)"
    assert run.closing_line(run_dir, "elsewhere") == f"run folder: {run_dir}  (tensorboard --logdir {run_dir})"


# --- agents/evaluate.py --------------------------------------------------------------------------------------------


def test_a_sweep_gives_the_thread_count_note_once(memnet_run, tmp_path, capsys):
    """threads= other than the run's own: one note for a sweep, not one per evaluation (note=False after the first),
    and none at all from evaluate(note=False)."""
    out = tmp_path / "sweep.json"
    assert evaluate.main([f"checkpoint={memnet_run}", "threads=2", "memory.reset=never,episode", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("note: threads=2: the run computed with 1 torch thread") == 1, printed
    evaluate.evaluate(memnet_run, out=None, threads=2, note=False)
    assert "note:" not in capsys.readouterr().out


# --- agents/new_folders.py -----------------------------------------------------------------------------------------


def test_a_file_at_a_stamped_name_takes_that_name(tmp_path):
    """first_free: a file (not only a folder) at <stamp>_s0 makes the name taken: the next is <stamp>-1_s0."""
    (tmp_path / "2026-12-05_10-00-00_s0").write_text("not a run")
    assert first_free(stamped_names(tmp_path, "2026-12-05_10-00-00", "_s0")) == tmp_path / "2026-12-05_10-00-00-1_s0"


# --- agents/checkpoint_paths.py ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["null", "1", "true", "/r/run "])
def test_a_folder_name_hydra_reads_as_another_value_is_quoted(text):
    """hydra_spelling: a name Hydra parses without error but as another value (null -> None, 1 -> int, a trailing
    space dropped) is quoted, so that it reads back as the same text."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    spelled = hydra_spelling(text)
    assert spelled != text
    (override,) = OverridesParser.create().parse_overrides([f"run_dir={spelled}"])
    assert override.value() == text
    assert shlex.split(shell_arg("run_dir", text)) == [f"run_dir={spelled}"]


def test_a_checkpoints_folder_whose_last_pt_cannot_be_looked_at_names_that_file(tmp_path, monkeypatch):
    """run_dir_of(<run>/checkpoints) where a look at checkpoints/last.pt is refused (no search permission): the line
    names the file that could not be read, not the folder given."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    _no_search_permission_in(monkeypatch, checkpoints)
    with pytest.raises(CheckpointError) as refused:
        run_dir_of(checkpoints)
    assert str(refused.value) == (f"cannot read checkpoint {str(checkpoints / 'last.pt')!r} (Permission denied); give "
                                  "it (and the folders above it) read permission, then retry")
