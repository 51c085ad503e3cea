"""A run whose checkpoints/ folder, or whose last.pt, is reached through a symlink: resume=, agents.evaluate and
Agent.from_checkpoint name the run the link leads to, and write beside it, not into checkpoints/."""

import shutil

import pytest

from agents import evaluate, run
from tests.test_run import tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny finished run; each test links to a copy of it."""
    run_dir = tmp_path_factory.mktemp("checkpoint_links") / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.episodes=1")) == 0
    return run_dir


@pytest.fixture
def linked_checkpoints(finished, tmp_path):
    """A copy of a finished run whose checkpoints/ folder was moved to another disk and linked back."""
    run_dir, elsewhere = tmp_path / "run", tmp_path / "big_disk" / "run1_checkpoints"
    shutil.copytree(finished, run_dir)
    elsewhere.parent.mkdir()
    shutil.move(run_dir / "checkpoints", elsewhere)
    (run_dir / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    return run_dir


@pytest.mark.parametrize("named", ["", "checkpoints", "checkpoints/last.pt"])
def test_a_run_whose_checkpoints_folder_is_a_link_is_read_from_its_own_folder(linked_checkpoints, capsys, named):
    """The run folder was worked out after the links were followed: resume= of the linked checkpoints/ or its
    last.pt was refused as "last.pt loose, outside a run's checkpoints/ folder", and agents.evaluate took the link's
    target for the run folder and wrote its eval.json there (and an Agent loaded there would save there)."""
    from agents.agent import Agent

    given = linked_checkpoints / named
    assert run.main([f"resume={given}"]) == 0, capsys.readouterr().err
    assert "this run is finished" in capsys.readouterr().out
    assert evaluate.main([f"checkpoint={given}", "out=e.json"]) == 0, capsys.readouterr().err
    assert (linked_checkpoints / "e.json").is_file() and not (linked_checkpoints / "checkpoints" / "e.json").exists()
    assert evaluate.evaluate(given, out="f.json")["agent"] == "transformer"
    assert (linked_checkpoints / "f.json").is_file()
    assert Agent.from_checkpoint(given).trainer.run_dir == linked_checkpoints.resolve()


@pytest.mark.parametrize("named", ["checkpoints", "checkpoints/last.pt"])
def test_a_link_elsewhere_to_a_runs_checkpoint_names_that_run(tmp_path, named):
    """run_dir_of read only the name as given (for a linked checkpoints/ folder): a link elsewhere to
    run/checkpoints/last.pt, or to run/checkpoints, was taken for a loose file, and its own folder for the run's."""
    from agents.checkpoint_paths import run_dir_of

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    link = tmp_path / "elsewhere" / "model"
    link.parent.mkdir()
    link.symlink_to(run_dir / named)
    assert run_dir_of(link) == run_dir_of(run_dir / named) == run_dir.resolve()


def test_resume_and_evaluate_of_a_link_to_a_runs_last_pt(finished, tmp_path, capsys):
    """resume= of such a link was refused as a loose last.pt, and evaluate wrote its eval.json into checkpoints/."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    link = tmp_path / "model.pt"
    link.symlink_to(run_dir / "checkpoints" / "last.pt")
    assert run.main([f"resume={link}"]) == 0, capsys.readouterr().err
    assert evaluate.main([f"checkpoint={link}", "out=e.json"]) == 0, capsys.readouterr().err
    assert (run_dir / "e.json").is_file() and not (run_dir / "checkpoints" / "e.json").exists()
