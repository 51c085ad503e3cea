"""Checkpoints, resume= and agents.evaluate at what their docs promise (README "Checkpoints and resume")."""

import pytest

from agents import run
from tests.test_run import tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny MemNet run that trained nothing (train.episodes=0: a checkpoint and a report, in ~2 s), in a home."""
    home = tmp_path_factory.mktemp("home")
    assert run.main(tiny("ContinualShift-v0", "memnet", home / "run", "train.episodes=0")) == 0
    return home / "run"


def test_resume_takes_a_home_folder_path(finished, monkeypatch, capsys):
    """README: a path may start with ~ in resume= as in config= and checkpoint=; resume='~/run' (quoted, or from sh
    or zsh, which leave ~ after = alone) was "no checkpoint at '<cwd>/~/run'"."""
    monkeypatch.setenv("HOME", str(finished.parent))
    capsys.readouterr()
    assert run.main(["resume=~/run"]) == 0
    out = capsys.readouterr().out
    assert "this run is finished: it trained all its 0 episodes" in out, out
    assert f"run folder: {finished}" in out


def test_another_runs_checkpoint_names_the_env_option_that_differs(tmp_path):
    """A checkpoint of other env options in a run folder named both whole env.kwargs dicts (~600 characters, the
    differing option somewhere inside); the line names that option and its two values."""
    import yaml

    from agents.checkpoint import CheckpointError, check_own_run

    folder = {"env": {"id": "ContinualShift-v0", "kwargs": {"num_tasks": 2, "episodes_per_task": 3, "world_seed": 0}},
              "agent": {"name": "memnet"}, "seed": 0}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(folder))
    saved = {**folder, "env": {"id": "ContinualShift-v0",
                               "kwargs": {"num_tasks": 2, "episodes_per_task": 1, "world_seed": 0}}}
    with pytest.raises(CheckpointError) as err:
        check_own_run(saved, tmp_path, tmp_path / "checkpoints" / "last.pt", "resume")
    assert "it has env.kwargs.episodes_per_task=1, the folder's config.yaml env.kwargs.episodes_per_task=3 " \
           "(another run's checkpoint" in str(err.value), str(err.value)
    check_own_run(folder, tmp_path, tmp_path / "checkpoints" / "last.pt", "resume")  # its own: no error
    # an option only one side has (added by a later memstream) is not compared, as any other key
    check_own_run({**folder, "env": {"id": "ContinualShift-v0", "kwargs": {"num_tasks": 2, "episodes_per_task": 3}}},
                  tmp_path, tmp_path / "checkpoints" / "last.pt", "resume")


@pytest.mark.parametrize("purpose, key", [("resume", "resume="), ("evaluate", "checkpoint=")])
def test_a_pipe_named_as_the_checkpoint_file_is_named_so(tmp_path, purpose, key):
    """A pipe (or /dev/null) given as the checkpoint file was "no checkpoint at '<it>'", a path that exists; the
    line says what it is (a pipe at a run folder's checkpoints/last.pt, met through the folder, says to move it)."""
    import os

    from agents.checkpoint import CheckpointError, load_checkpoint

    pipe = tmp_path / "checkpoints" / "last.pt"
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    for given in (pipe, "/dev/null"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(given, purpose)
        assert str(err.value) == (f"{str(given)!r} is not a regular file (a device, pipe or socket); point {key} at "
                                  "a run folder or its checkpoints/last.pt")


def test_a_fresh_run_never_overwrites_a_finished_run_without_its_checkpoint(finished, tmp_path, capsys):
    """README: run_dir= must not hold a run already. A finished run whose checkpoints/ were removed (the big files)
    was written over by another run given its folder: another seed's metrics.json and config.yaml replaced its own,
    and its curves joined the folder's TensorBoard run. The same run again (the restart resume= names) is allowed."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    shutil.rmtree(folder / "checkpoints")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    capsys.readouterr()
    assert run.main(tiny("ContinualShift-v0", "memnet", folder, "train.episodes=0", "seed=9")) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: run_dir={str(folder)!r} holds a finished run of another config (its config.yaml has seed=0, this run "
        "9); a fresh run there would overwrite its metrics.json, config.yaml and plots: choose a new run_dir")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not (folder / "checkpoints").exists()
    (folder / "config.yaml").unlink()  # nothing to tell the run by: refused too
    assert run.main(tiny("ContinualShift-v0", "memnet", folder, "train.episodes=0")) == 2
    assert "holds a finished run with no readable config.yaml" in capsys.readouterr().err
    assert (folder / "metrics.json").read_bytes() == before["metrics.json"]


def test_a_suggested_command_pastes_as_one_argument_per_key(tmp_path, capsys):
    """The command an error line tells the user to run quotes a folder with a space (`My Drive`) in it: it
    was printed bare, and pasted into a shell as two arguments ("no checkpoint at '.../My'")."""
    import shlex

    from agents.checkpoint import how_to_continue

    folder = tmp_path / "My Drive" / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", folder, "train.episodes=0")) == 0
    assert shlex.split(how_to_continue(folder).removeprefix("continue with ")) == [f"resume={folder}"]
    capsys.readouterr()
    assert run.main(tiny("ContinualShift-v0", "memnet", folder, "train.episodes=0")) == 2  # the folder holds a run
    line = capsys.readouterr().err.strip()
    suggested = line.split("continue it with ", 1)[1].split(", or choose", 1)[0]
    assert shlex.split(suggested) == [f"resume={folder}"], line
    assert run.main(shlex.split(suggested)) == 0  # pasted: the run's own folder, whole
    assert f"run folder: {folder}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["n(1)", "n,2", "n=3", "it's", "a {b}", "1e-3"])
def test_a_suggested_restart_pastes_for_a_folder_name_hydra_would_misread(tmp_path, capsys, name):
    """A run stopped before its first checkpoint is started again with `config=<run>/config.yaml run_dir=<run>`;
    run_dir= goes through Hydra's grammar, which refused the folder printed bare ("mismatched input '('") or read
    it as a sweep (`n,2`). The suggestion now spells it as Hydra reads it back, inside one shell word."""
    import shlex

    from agents.checkpoint_paths import hydra_spelling

    finished = tmp_path / "finished"
    assert run.main(tiny("ContinualShift-v0", "memnet", finished, "train.episodes=0")) == 0
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.yaml").write_bytes((finished / "config.yaml").read_bytes())  # stopped before a checkpoint
    capsys.readouterr()
    assert run.main([f"resume={folder}"]) == 2
    line = capsys.readouterr().err.strip()
    suggested = line.split("start it again in that folder with python -m agents.run ", 1)[1]
    assert shlex.split(suggested) == [f"config={folder / 'config.yaml'}", f"run_dir={hydra_spelling(str(folder))}"]
    assert run.main(shlex.split(suggested)) == 0, capsys.readouterr().err
    assert f"run folder: {folder}" in capsys.readouterr().out and (folder / "checkpoints" / "last.pt").is_file()
