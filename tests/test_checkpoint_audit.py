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
