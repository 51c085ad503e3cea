"""One process per run folder (agents/run_lock.py), the temp files a killed writer left, and the torch thread count
a resumed run computes with."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from agents import checkpoint, run
from agents.checkpoint import CheckpointError, load_checkpoint
from agents.config import validate
from agents.run_lock import RUN_LOCK, lock_run
from agents.trainer import Trainer
from tests.test_run import tiny

pytestmark = pytest.mark.skipif(os.name == "nt", reason="no flock on Windows: run folders are not locked there")


@pytest.fixture
def finished(tmp_path):
    run_dir = tmp_path / "run"
    # train.threads=0, the default: torch's own count, which conftest pins to 1 (a resume must keep that count)
    assert run.main(tiny("ContinualShift-v0", "lstm", run_dir, "train.threads=0")) == 0
    return run_dir


def test_a_run_folder_another_process_holds_is_refused_in_one_line(finished, capsys):
    """A resume= of a run still training ran a second writer of its checkpoint, metrics and event files."""
    held = lock_run(finished)  # another open file description: flock treats it as another process's
    try:
        before = (finished / "checkpoints" / "last.pt").read_bytes()
        capsys.readouterr()
        assert run.main([f"resume={finished}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: run folder {str(finished)!r} is in use by another process (pid {os.getpid()}); "
                       f"wait for it to end or stop it, then continue it with resume={finished}")
        # a fresh run told to write there: "in use" (the run's own "already holds a run" named a refused resume=),
        # and so while a run still starting holds no checkpoint yet
        assert run.main(tiny("ContinualShift-v0", "lstm", finished)) == 2
        assert "is in use by another process" in capsys.readouterr().err
        (finished / "checkpoints" / "last.pt").rename(finished / "kept.pt")
        assert run.main(tiny("ContinualShift-v0", "lstm", finished)) == 2
        assert "is in use by another process" in capsys.readouterr().err
        (finished / "kept.pt").rename(finished / "checkpoints" / "last.pt")
        assert (finished / "checkpoints" / "last.pt").read_bytes() == before
    finally:
        os.close(held)
    assert run.main([f"resume={finished}"]) == 0  # released: the run continues (here: it had finished)
    assert lock_run(finished) is not None  # and the resumed run released it when it ended


def test_a_resume_removes_the_temp_files_a_killed_writer_left(finished):
    """SIGKILL in a checkpoint's or a plot's write left its .tmp file, as large as the checkpoint, forever."""
    left = [finished / "checkpoints" / ".last.pt.k9x2a1.tmp", finished / "plots" / ".forgetting_curves.png.a1.tmp",
            finished / ".metrics.json.zz.tmp", finished / ".config.yaml.q.tmp"]
    others = [finished / ".eval.json.b7.tmp", finished / "notes.tmp"]  # an evaluation's out file; not ours
    for f in left + others:
        f.write_bytes(b"partial")
    assert run.main([f"resume={finished}"]) == 0
    assert [f for f in left if f.exists()] == []
    assert all(f.exists() for f in others)
    assert (finished / RUN_LOCK).read_text().strip().isdigit()


def test_a_resume_computes_with_the_runs_own_thread_count_unless_told_otherwise(finished, capsys):
    """A default run (train.threads=0: torch's count) resumed in a shell with another count differed in the last
    bits of 117 tensors from an uninterrupted run."""
    saved = load_checkpoint(finished / "checkpoints" / "last.pt")["trainer"]["torch_threads"]
    assert saved == torch.get_num_threads() == 1  # the tests pin one thread (conftest)
    try:
        torch.set_num_threads(2)  # another shell's default
        capsys.readouterr()
        assert run.main([f"resume={finished}"]) == 0
        assert torch.get_num_threads() == 1 and "note: train.threads" not in capsys.readouterr().out
        torch.set_num_threads(1)
        assert run.main([f"resume={finished}", "train.threads=2"]) == 0
        assert torch.get_num_threads() == 2
        assert ("note: train.threads=2: the run computed with 1 torch thread; with 2 its numbers can differ in "
                "the last bits from the run's own (leave train.threads out to keep 1)") in \
            capsys.readouterr().out
    finally:
        torch.set_num_threads(1)


def test_a_checkpoint_with_an_impossible_thread_count_is_one_line(finished, tmp_path):
    body = load_checkpoint(finished / "checkpoints" / "last.pt")
    body["trainer"]["torch_threads"] = 0
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    torch.save(body, path)
    trainer = Trainer(validate(OmegaConf.create(body["config"])), tmp_path)
    with pytest.raises(CheckpointError, match=r"trainer\.torch_threads.*0, not a thread count in \[1, "):
        trainer.restore(path, body["config"])


def test_a_resume_of_a_run_still_before_its_first_checkpoint_says_it_is_in_use_not_stopped(finished, capsys):
    """A run starting (or in its first episodes) has config.yaml and its lock, no checkpoints/ yet: a resume= of it
    said "the run stopped before its first one; start it again", and that command then hit the lock."""
    (finished / "checkpoints").rename(finished / "kept")
    held = lock_run(finished)
    try:
        capsys.readouterr()
        assert run.main([f"resume={finished}"]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: run folder {str(finished)!r} is in use by "
                                                          "another process")
    finally:
        os.close(held)
    assert run.main([f"resume={finished}"]) == 2  # stopped: now it has no checkpoint, and says so
    assert "has no checkpoint (checkpoints/last.pt: the run stopped before its first one" in capsys.readouterr().err


def test_a_held_run_is_refused_before_its_checkpoint_is_read(finished, capsys, monkeypatch):
    """The refusal came after the whole checkpoint (several GB for a big store) was loaded."""
    def not_read(*args, **kwargs):
        raise AssertionError("the checkpoint was read")

    held = lock_run(finished)
    try:
        monkeypatch.setattr(checkpoint, "load_checkpoint", not_read)  # config_for imports it when it runs
        assert run.main([f"resume={finished}"]) == 2
        assert "is in use by another process" in capsys.readouterr().err
    finally:
        os.close(held)


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_a_lock_file_that_cannot_be_opened_is_one_line_and_a_link_target_is_untouched(finished, capsys, kind):
    """A folder there was an IsADirectoryError traceback; a link had its target truncated to the pid."""
    lock = finished / RUN_LOCK
    lock.unlink()
    target = finished.parent / "notes.txt"
    target.write_text("important")
    lock.mkdir() if kind == "folder" else lock.symlink_to(target)
    capsys.readouterr()
    assert run.main([f"resume={finished}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot lock the run folder {str(finished)!r} ({RUN_LOCK}: ") and err.endswith(
        f"a run writes into its folder: make it writable, with {RUN_LOCK} a plain file or absent")
    assert len(err.splitlines()) == 1 and target.read_text() == "important"


def test_a_file_system_without_flock_runs_unlocked_with_a_note(finished, capsys, monkeypatch):
    import errno

    import agents.run_lock as run_lock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    capsys.readouterr()
    assert run.main([f"resume={finished}"]) == 0
    assert ("note: the run folder cannot be locked here (No locks available): make sure no other process writes it "
            "while this run does") in capsys.readouterr().err


def test_a_saved_thread_count_above_this_machines_cores_is_kept_with_a_note(finished, capsys):
    from agents.threads import usable_cores

    path = finished / "checkpoints" / "last.pt"
    body = load_checkpoint(path)
    many = usable_cores() + 1
    body["trainer"]["torch_threads"] = many
    torch.save(body, path)
    try:
        capsys.readouterr()
        assert run.main([f"resume={finished}"]) == 0
        assert torch.get_num_threads() == many
        assert (f"note: the run computed with {many} torch threads, more than the {usable_cores()} cores here: kept, "
                f"so its numbers stay the same, but slower; train.threads={usable_cores()} is faster") in \
            capsys.readouterr().out
    finally:
        torch.set_num_threads(1)


def test_a_run_that_set_more_threads_than_this_machines_cores_gets_the_same_note():
    """A run started with train.threads=N (saved in its config, so given again on resume) above the cores of the
    machine that resumes or evaluates it had no note, where one started with train.threads=0 had it."""
    from agents.threads import threads_note, usable_cores

    many = usable_cores() + 1
    for key in ("train.threads", "threads"):
        assert threads_note(many, many, key) == (
            f"note: the run computed with {many} torch threads, more than the {usable_cores()} cores here: kept, so "
            f"its numbers stay the same, but slower; {key}={usable_cores()} is faster, its numbers then differ in the "
            "last bits")
    assert threads_note(usable_cores(), usable_cores(), "train.threads") is None


def test_evaluate_uses_the_runs_thread_count_or_threads_and_gives_the_callers_back(finished, capsys):
    from agents import evaluate

    torch.set_num_threads(2)
    try:
        first = evaluate.evaluate(finished, out=None)
        assert torch.get_num_threads() == 2  # the caller's count again (it computed with the run's 1)
        capsys.readouterr()
        assert evaluate.main([f"checkpoint={finished}", "threads=2", "out=two.json"]) == 0
        assert "note: threads=2: the run computed with 1 torch thread; with 2 its numbers can differ" in \
            capsys.readouterr().out
        assert evaluate.main([f"checkpoint={finished}", "threads=x"]) == 2
        assert capsys.readouterr().err.strip() == ("error: threads=x: not an integer; give a torch thread count, e.g. "
                                                   "threads=2 (default: the run's own)")
        assert first["accuracy_by_task"] == evaluate.evaluate(finished, out=None)["accuracy_by_task"]
    finally:
        torch.set_num_threads(1)


def test_the_lock_file_holds_exactly_this_pid_after_a_longer_one(tmp_path):
    """The pid is for the message of a second process: a lock file left by a run whose pid had more digits must
    not keep its tail (the message then named a pid that never ran it)."""
    (tmp_path / RUN_LOCK).write_text("4194304999\nleft over\n")
    fd = lock_run(tmp_path)
    try:
        assert (tmp_path / RUN_LOCK).read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)


@pytest.mark.parametrize("named", [True, False], ids=["run_dir", "generated"])
@pytest.mark.parametrize("at", ["config", "lock"])
def test_a_run_stopped_before_its_config_yaml_leaves_no_folder_behind(tmp_path, capsys, monkeypatch, named, at):
    """Ctrl+C / SIGTERM after a new run made (and locked) its folder, before config.yaml was written: the line says
    "nothing was written", and the folder (holding only .run.lock) was left behind, one resume= called no run."""
    def stopped(*args):
        raise KeyboardInterrupt

    if at == "config":
        monkeypatch.setattr(run, "write_text_atomic", stopped)
    else:  # made, not locked yet: empty
        monkeypatch.setattr(run.RunLocks, "hold", stopped)
    run_dir = tmp_path / "run"
    args = tiny("ContinualShift-v0", "lstm", run_dir) if named else \
        [o for o in tiny("ContinualShift-v0", "lstm", run_dir) if not o.startswith("run_dir=")] + \
        [f"runs_root={tmp_path / 'runs'}"]
    assert run.main(args) == 130
    assert capsys.readouterr().err.strip() == "interrupted; nothing was written"
    assert not run_dir.exists() and [p for p in tmp_path.rglob("*") if not p.is_dir()] == []
    assert not any(p.name.endswith("_s0") for p in tmp_path.rglob("*"))  # (a generated folder: <time>_s<seed>)


def test_a_folder_of_a_run_killed_before_its_config_yaml_is_named_so_on_resume(tmp_path, capsys):
    """SIGKILL there leaves the folder with its lock file alone: resume= said "it is not a run folder; point
    resume= at one" of the folder the run was given."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_LOCK).write_text("123\n")
    (run_dir / ".config.yaml.abc-123.x.tmp").write_text("partial")
    assert run.main([f"resume={run_dir}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: run folder {str(run_dir)!r} holds no checkpoint and no config.yaml: its run was stopped while it "
        f"started, before it wrote anything; start the run again with its own command line (run_dir={run_dir} "
        "writes it into this folder)")
    assert run.main(tiny("ContinualShift-v0", "lstm", run_dir)) == 0  # which works, and cleans the temp file
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == [RUN_LOCK]


def test_a_stopped_run_leaves_the_lock_of_a_run_that_took_its_folder_first(tmp_path):
    """The folder a stopped run made may be held by another run started with the same run_dir= (which took the lock
    first, and is writing its config.yaml): its lock and temp file stay."""
    from agents.run_lock import remove_unstarted

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    held = lock_run(run_dir)
    try:
        (run_dir / ".config.yaml.x.tmp").write_text("partial")
        remove_unstarted(run_dir, held=False)
        assert sorted(p.name for p in run_dir.iterdir()) == [".config.yaml.x.tmp", RUN_LOCK]
        remove_unstarted(run_dir, held=True)  # its own: removed
        assert not run_dir.exists()
    finally:
        os.close(held)


def test_a_run_that_ends_while_another_starts_in_its_run_dir_is_not_overwritten(tmp_path, monkeypatch, capsys):
    """Two runs given one run_dir=: the second checked that the folder held no run before it took the folder's lock,
    so a run that ended in between (while the second made its model) was overwritten: its checkpoint, metrics.json
    and plots, and its TensorBoard curves (a second event file, purge step 0)."""
    import json

    run_dir, real_init, other = tmp_path / "run", Trainer.__init__, []

    def init(self, *args, **kwargs):  # the second run makes its model: the first runs from start to end meanwhile
        if not other:
            other.append("running")  # (the first run's own model is made through here too)
            other[0] = run.main(tiny("ContinualShift-v0", "lstm", run_dir))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", init)
    assert run.main(tiny("ContinualShift-v0", "lstm", run_dir, "seed=1")) == 2
    assert other == [0]
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: run_dir={str(run_dir)!r} already holds a run; continue it with resume=")
    assert json.loads((run_dir / "metrics.json").read_text())["seed"] == 0  # the first run's report stands
    assert len([f for f in os.listdir(run_dir) if "tfevents" in f]) == 1  # and no second TensorBoard run there
