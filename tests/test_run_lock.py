"""One process per run folder (agents/run_lock.py), the temp files a killed writer left, and the torch thread count
a resumed run computes with."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from agents import run
from agents.checkpoint import CheckpointError, load_checkpoint
from agents.run_lock import RUN_LOCK, lock_run
from agents.trainer import Trainer
from tests.test_run import tiny

pytestmark = pytest.mark.skipif(os.name == "nt", reason="no flock on Windows: run folders are not locked there")


@pytest.fixture
def finished(tmp_path):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "lstm", run_dir)) == 0
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
        # a fresh run told to write there is refused too (it holds no checkpoint yet in a run still starting)
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
        assert ("note: train.threads=2: the run computed with 1 torch threads; from here its numbers can differ in "
                "the last bits from an uninterrupted run's (leave train.threads out to keep 1)") in \
            capsys.readouterr().out
    finally:
        torch.set_num_threads(1)


def test_a_checkpoint_with_an_impossible_thread_count_is_one_line(finished, tmp_path):
    body = load_checkpoint(finished / "checkpoints" / "last.pt")
    body["trainer"]["torch_threads"] = 0
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    torch.save(body, path)
    trainer = Trainer(run.validate(OmegaConf.create(body["config"])), tmp_path)
    with pytest.raises(CheckpointError, match=r"trainer\.torch_threads.*0, not a thread count >= 1"):
        trainer.restore(path, body["config"])
