"""A checkpoint that cannot be used is one line naming the file, the problem and the fix that the command has:
`agents.run resume=` continues the run, `agents.evaluate checkpoint=` re-evaluates it (evaluate showed resume's
"resume from another run or start afresh" and "point resume=/checkpoint= at ...")."""

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from agents import evaluate, run
from agents.checkpoint import RUN_SECTIONS, CheckpointError, check_compatible, load_checkpoint
from tests.repo_env import REPO
from tests.test_run import tiny

# what each command's line says to do, and what only the other command's line says
FIXES = {
    "resume": {"missing": "start it again in that folder with python -m agents.run config=",
               "damaged": "resume from another run or start afresh",
               "foreign": "point resume= at a memstream run folder (one that has checkpoints/last.pt)",
               "version": "this memstream reads version 2; re-run the experiment",
               "architecture": "(another memstream version wrote it): resume it with that version, or start a new "
                               "run with config="},
    "evaluate": {"missing": "start it again in that folder with python -m agents.run config=",
                 "damaged": "evaluate another run's checkpoint, or re-run the experiment",
                 "foreign": "point checkpoint= at a memstream run folder (one that has checkpoints/last.pt)",
                 "version": "this memstream reads version 2; re-run the experiment, then evaluate the new run",
                 "architecture": "(another memstream version wrote it): evaluate it with that version"},
}
NOT_FOR = {"resume": ("checkpoint=", "evaluate"), "evaluate": ("resume=", "resume from", "resume it", "afresh")}

# case -> (problem the line names, kind of fix)
CASES = {
    "missing": ("has no checkpoint (checkpoints/last.pt: the run stopped before its first one, or it was "
                "removed)", "missing"),
    "truncated": ("is damaged", "damaged"),
    # (said "(KeyError)", torch.load's exception for bytes that are no zip archive)
    "random bytes": ("is damaged or not a memstream checkpoint (not the zip archive torch.save writes)", "damaged"),
    "empty": ("is damaged or not a memstream checkpoint (not the zip archive torch.save writes)", "damaged"),
    "not a memstream checkpoint": ("is not a memstream checkpoint (no 'memstream-checkpoint' marker)", "foreign"),
    "wrong version": ("has format version 1, this memstream reads version 2", "version"),
    "incomplete": ("is incomplete (missing optimizer)", "damaged"),
    "other architecture": ("was written by another architecture (model.dropout: None vs 0.0)", "architecture"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny finished run; each test damages a copy of it."""
    run_dir = tmp_path_factory.mktemp("checkpoint_messages") / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "train.episodes=1")) == 0
    return run_dir


def damaged_copy(finished: Path, where: Path, case: str) -> Path:
    """A copy of the run folder whose checkpoints/last.pt has the problem `case` names."""
    run_dir = where / "run"
    shutil.copytree(finished, run_dir)
    ckpt = run_dir / "checkpoints" / "last.pt"
    good = ckpt.read_bytes()
    body = torch.load(ckpt, weights_only=True)
    if case == "missing":
        ckpt.unlink()
    elif case == "truncated":  # as by a full disk
        ckpt.write_bytes(good[: len(good) // 2])
    elif case == "random bytes":
        ckpt.write_bytes(random.Random(0).randbytes(4096))
    elif case == "empty":
        ckpt.write_bytes(b"")
    elif case == "not a memstream checkpoint":  # a torch file of something else
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif case == "wrong version":
        torch.save({**body, "version": 1}, ckpt)
    elif case == "incomplete":
        torch.save({k: v for k, v in body.items() if k != "optimizer"}, ckpt)
    elif case == "other architecture":  # a saved config this memstream reads as another model: a key it lacks
        model = {k: v for k, v in body["config"]["model"].items() if k != "dropout"}
        torch.save({**body, "config": {**body["config"], "model": model}}, ckpt)
    return run_dir


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in captured.err
    return err


@pytest.mark.parametrize("case", list(CASES))
def test_a_checkpoint_that_cannot_be_used_names_the_fix_of_the_command_that_loads_it(finished, tmp_path, capsys,
                                                                                      case):
    run_dir = damaged_copy(finished, tmp_path, case)
    problem, kind = CASES[case]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for command, main, argv in (("resume", run.main, [f"resume={run_dir}"]),
                                ("evaluate", evaluate.main, [f"checkpoint={run_dir}"])):
        assert main(argv) == 2, command
        err = one_line(capsys)
        shown = err.replace(str(run_dir), "<run>")  # (the path may hold any word)
        assert problem in shown and FIXES[command][kind] in shown, (command, err)
        assert not any(other in shown for other in NOT_FOR[command]), (command, err)
        assert "<run>" in shown, err  # names the file
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # neither wrote anything
    with pytest.raises(CheckpointError, match=re.escape(FIXES["evaluate"][kind])):
        evaluate.evaluate(run_dir, out=None)  # the Python API words it for the evaluation too


def test_resume_names_a_new_run_from_the_saved_config_for_another_architecture(finished, tmp_path, capsys):
    run_dir = damaged_copy(finished, tmp_path, "other architecture")
    assert run.main([f"resume={run_dir}"]) == 2
    assert one_line(capsys).endswith(f"or start a new run with config={run_dir}/config.yaml")
    assert run.main([f"config={run_dir}/config.yaml", f"run_dir={tmp_path / 'new'}"]) == 0  # the fix works


def test_a_saved_config_this_memstream_refuses_blames_the_checkpoint(finished, tmp_path, capsys):
    """An edited model.dim (memory.dim is tied to it) gave validate's "set model.dim only": a fix for a command
    line, which neither resume= (no overrides) nor agents.evaluate (no model.*) takes."""
    run_dir = damaged_copy(finished, tmp_path, "incomplete")  # then the edit below replaces the file
    ckpt = run_dir / "checkpoints" / "last.pt"
    body = torch.load(finished / "checkpoints" / "last.pt", weights_only=True)
    body["config"]["model"]["dim"] = 2 * body["config"]["model"]["dim"]
    torch.save(body, ckpt)
    problem = (f"error: checkpoint {str(run_dir)!r} holds a config this memstream refuses (memory.dim=32 must equal "
               "model.dim=64): it was edited, or another memstream version wrote it: ")
    for main, argv, fix in ((run.main, [f"resume={run_dir}"], "resume it with that version, or start a new run with "
                             f"config={run_dir}/config.yaml"),
                            (evaluate.main, [f"checkpoint={run_dir}"], "evaluate it with that version")):
        assert main(argv) == 2
        assert one_line(capsys) == problem + fix


def test_the_lines_of_a_missing_checkpoint_not_in_a_run_folder(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    assert run.main([f"resume={nowhere}"]) == 2
    assert one_line(capsys) == f"error: no checkpoint at {str(nowhere)!r}: point resume= at a run folder that has " \
                               "checkpoints/last.pt"  # was "point resume=/checkpoint= at"
    assert evaluate.main([f"checkpoint={nowhere}"]) == 2
    assert one_line(capsys) == f"error: no checkpoint at {str(nowhere)!r}: point checkpoint= at a run folder that " \
                               "has checkpoints/last.pt"


def test_a_folder_that_is_no_run_is_named_as_it_was_given(tmp_path, capsys):
    """Was: no checkpoint at '<folder>/last.pt' (a path the user never named)."""
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    for main, key in ((run.main, "resume="), (evaluate.main, "checkpoint=")):
        assert main([f"{key}{folder}"]) == 2
        assert one_line(capsys) == f"error: no checkpoint in {str(folder)!r} (no checkpoints/last.pt): it is not a " \
                                   f"run folder; point {key} at one (runs/<env>/<agent>/<time>_s<seed>)"


def test_load_checkpoint_words_its_lines_for_resume_unless_told_otherwise(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="; resume from another run or start afresh$"):
        load_checkpoint(path)  # Trainer.restore's call, and any other that names no purpose
    with pytest.raises(CheckpointError, match="; evaluate another run's checkpoint, or re-run the experiment$"):
        load_checkpoint(path, purpose="evaluate")
    with pytest.raises(ValueError, match="purpose='train': choose one of"):
        load_checkpoint(path, purpose="train")


def test_check_compatible_names_the_callers_config_unless_it_is_the_saved_one():
    saved, now = {"agent": {"name": "gru"}, "model": {}}, {"agent": {"name": "lstm"}, "model": {}}
    with pytest.raises(CheckpointError, match=r"\(agent: .* vs .*\); use the run's own config.yaml$"):
        check_compatible(saved, now, "x.pt")  # a config the caller made (Trainer.restore)
    with pytest.raises(CheckpointError, match="; this memstream reads its saved config as another model .*: evaluate "
                                              "it with that version$"):
        check_compatible(saved, now, "x.pt", purpose="evaluate")
    check_compatible(saved, saved, "x.pt", purpose="resume")


def test_a_damaged_checkpoint_is_one_line_from_both_commands_run_as_programs(finished, tmp_path):
    """As a user runs them: exit code 2, one line on stderr, no traceback."""
    run_dir = damaged_copy(finished, tmp_path, "random bytes")
    for module, arg, fix in (("agents.run", "resume", FIXES["resume"]["damaged"]),
                             ("agents.evaluate", "checkpoint", FIXES["evaluate"]["damaged"])):
        proc = subprocess.run([sys.executable, "-m", module, f"{arg}={run_dir}"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: checkpoint {str(run_dir / 'checkpoints' / 'last.pt')!r} is damaged") \
            and proc.stderr.strip().endswith(fix), proc.stderr


def test_a_run_folder_stopped_before_its_first_checkpoint_names_the_restart(finished, tmp_path, capsys):
    """Was: no checkpoint at '<run>/last.pt' (a path the run never had): point resume= at a run folder that has ..."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    line = (f"error: run folder {str(run_dir)!r} has no checkpoint (checkpoints/last.pt: the run stopped before its "
            f"first one, or it was removed); start it again in that folder with python -m agents.run "
            f"config={run_dir / 'config.yaml'} run_dir={run_dir}")
    assert run.main([f"resume={run_dir}"]) == 2
    assert one_line(capsys) == line
    assert evaluate.main([f"checkpoint={run_dir}"]) == 2
    assert one_line(capsys) == line
    # the fix works, in the folder: a killed first checkpoint write's temp file (as large as a checkpoint) goes
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / ".last.pt.x1y2.tmp").write_bytes(b"cut short")
    assert run.main([f"config={run_dir / 'config.yaml'}", f"run_dir={run_dir}"]) == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]


@pytest.mark.parametrize("odd", ["folder at last.pt", "file at checkpoints"])
def test_a_folder_in_place_of_the_checkpoint_is_named_as_such(finished, tmp_path, capsys, odd):
    """A folder at checkpoints/last.pt (or a file at checkpoints/) was "has no checkpoint ... start it again", and that
    command then refused the folder as one that holds a run."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    if odd == "folder at last.pt":
        (run_dir / "checkpoints" / "last.pt").mkdir(parents=True)
        where, kind, given = run_dir / "checkpoints" / "last.pt", "a folder, not a checkpoint file", \
            ("", "/checkpoints", "/checkpoints/last.pt")
    else:
        (run_dir / "checkpoints").write_text("x")
        where, kind, given = run_dir / "checkpoints", "a file, not the folder of the run's checkpoints", ("",)
    for main, key in ((run.main, "resume="), (evaluate.main, "checkpoint=")):
        for tail in given:
            assert main([f"{key}{run_dir}{tail}"]) == 2
            assert one_line(capsys) == f"error: {str(where)!r} is {kind}; move it away (a run's checkpoint is the " \
                                       f"file checkpoints/last.pt in its folder), then give {key} again"


@pytest.mark.parametrize("name", ["config.yaml", "metrics.json"])
def test_a_file_of_the_run_folder_that_is_no_checkpoint_says_so(finished, capsys, name):
    """Was: is damaged or not a memstream checkpoint (IndexError / UnpicklingError); evaluate another run's ..."""
    assert evaluate.main([f"checkpoint={finished / name}"]) == 2
    assert one_line(capsys) == f"error: {str(finished / name)!r} is not a checkpoint file; point checkpoint= at a " \
                               "run folder or its checkpoints/last.pt"
    assert run.main([f"resume={finished / name}"]) == 2
    assert one_line(capsys).endswith("point resume= at a run folder or its checkpoints/last.pt")


def test_another_runs_checkpoint_copied_into_a_run_folder_is_refused_and_nothing_changes(finished, tmp_path,
                                                                                          capsys):
    """Was: resumed as if it were this run (exit 0), and its config.yaml, metrics.json and plots replaced this run's;
    agents.evaluate evaluated the other run under this folder's name."""
    other = tmp_path / "other"
    assert run.main(tiny("ContinualShift-v0", "transformer", other, "train.episodes=1", "seed=7")) == 0
    capsys.readouterr()
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    shutil.copy(other / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".run.lock"}
    ckpt = run_dir / "checkpoints" / "last.pt"
    for main, key in ((run.main, "resume="), (evaluate.main, "checkpoint=")):
        assert main([f"{key}{run_dir}"]) == 2
        assert one_line(capsys) == (f"error: checkpoint {str(ckpt)!r} is not this run folder's: it has seed=7, the "
                                    "folder's config.yaml seed=0 (another run's checkpoint, or an edited one); "
                                    f"{key} takes a run folder with its own checkpoint")
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".run.lock"}
    assert after == before
    shutil.copy(finished / "checkpoints" / "last.pt", ckpt)  # its own checkpoint back: resumes (done: no-op)
    assert run.main([f"resume={run_dir}"]) == 0


@pytest.mark.parametrize("text", ["", "{}\n", "- a\n", "model: {dim: 32}\n", "a: [\n"])
def test_a_config_yaml_without_the_run_s_keys_is_not_called_another_run_s(finished, tmp_path, capsys, text):
    """An emptied config.yaml was refused as "not this run folder's: it has seed=0, the folder's config.yaml
    seed=None (another run's checkpoint ...)", while an unparsable one ("a: [") resumed: the checkpoint's config is
    all there is, and the resume writes config.yaml again (keys only one side has are not compared)."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "config.yaml").write_text(text)
    assert evaluate.main([f"checkpoint={run_dir}", "out=e.json"]) == 0
    (run_dir / "metrics.json").unlink()  # stopped while writing its report: the resume writes it, config.yaml too
    assert run.main([f"resume={run_dir}"]) == 0
    written, own = (yaml.safe_load((d / "config.yaml").read_text()) for d in (run_dir, finished))
    assert {k: written[k] for k in RUN_SECTIONS} == {k: own[k] for k in RUN_SECTIONS}


@pytest.mark.parametrize("text", ["", "- a\n", "model: {dim: 32}\n", "a: [\n"])
def test_resuming_a_finished_run_writes_its_damaged_config_yaml_again(finished, tmp_path, capsys, text):
    """A finished run (its report whole) answered "nothing to do" and left a damaged config.yaml as it was (a later
    config=<run> refused it), where an unfinished one's resume wrote it again."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "config.yaml").write_text(text)
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: its config.yaml was damaged or incomplete; written again from its checkpoint\n"
                          "this run is finished"), out
    written, own = (yaml.safe_load((d / "config.yaml").read_text()) for d in (run_dir, finished))
    assert {k: written[k] for k in RUN_SECTIONS} == {k: own[k] for k in RUN_SECTIONS}
    assert run.main([f"resume={run_dir}"]) == 0  # whole now: no note
    assert "config.yaml was damaged" not in capsys.readouterr().out


def test_an_edited_checkpoint_that_validates_is_named_as_not_the_folders(finished, tmp_path, capsys):
    """model.dim and memory.dim both edited (a valid config): was "does not fit this model (size mismatch ...); keep
    the run's own config.yaml", a fix that resume= (no overrides) cannot take."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    ckpt = run_dir / "checkpoints" / "last.pt"
    body = torch.load(ckpt, weights_only=True)
    dim = body["config"]["model"]["dim"]
    body["config"]["model"]["dim"] = body["config"]["memory"]["dim"] = 2 * dim
    torch.save(body, ckpt)
    for main, key in ((run.main, "resume="), (evaluate.main, "checkpoint=")):
        assert main([f"{key}{run_dir}"]) == 2
        assert one_line(capsys).startswith(f"error: checkpoint {str(ckpt)!r} is not this run folder's: it has "
                                           f"model.dim={2 * dim}, the folder's config.yaml model.dim={dim} (another "
                                           "run's checkpoint, or an edited one)")


def test_resuming_a_finished_run_writes_a_config_yaml_missing_its_seed_again(finished, tmp_path, capsys):
    """Every run section counts, the last (seed) too: a config.yaml without it is incomplete and written again."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    own = yaml.safe_load((finished / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in own.items() if k != "seed"}))
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 0
    assert capsys.readouterr().out.startswith("note: its config.yaml was damaged or incomplete")
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert {k: written[k] for k in RUN_SECTIONS} == {k: own[k] for k in RUN_SECTIONS}


def test_resuming_a_finished_run_keeps_a_config_yaml_of_just_the_run_sections(finished, tmp_path, capsys):
    """A config.yaml holding every run section (and nothing else) is complete: no note, left as it is."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    own = yaml.safe_load((finished / "config.yaml").read_text())
    text = yaml.safe_dump({k: own[k] for k in RUN_SECTIONS})
    (run_dir / "config.yaml").write_text(text)
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 0
    assert "config.yaml was damaged" not in capsys.readouterr().out
    assert (run_dir / "config.yaml").read_text() == text
