"""agents.run / agents.evaluate at the edges a combination test found: a budget past the schedule with
memory.reset=task, a relative haystack file, a zero-episode run, Ctrl+C during an evaluation, a full disk."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from omegaconf import OmegaConf

from agents import evaluate, run
from agents.checkpoint import load_checkpoint
from agents.config import load_config
from agents.trainer import Trainer
from tests.test_run import TINY_ENVS, TINY_MODEL, tiny


def test_memory_reset_task_past_the_schedule_keeps_the_last_task_s_memory(tmp_path):
    """The schedule's last task goes on after its end: that is no task switch (the memory was cleared at every
    episode past the end, and evaluations cleared the task just trained instead of the others)."""
    cfg = load_config(["env=ContinualShift-v0", "agent=memnet", f"run_dir={tmp_path}", "memory.reset=task",
                       *TINY_ENVS["ContinualShift-v0"], *TINY_MODEL, "train.episodes=4"])
    trainer = Trainer(cfg, tmp_path)
    switches = []
    for _ in range(4):
        task = trainer.current_task()
        switches.append(trainer._task_switch(task))
        trainer.train_episode()
    assert trainer.venv.schedule == (0, 1)
    assert switches == [False, True, False, False]
    assert [trainer._task_switch(j) for j in range(2)] == [True, False]  # evaluations: only the other task


def test_a_relative_haystack_path_is_saved_absolute(tmp_path, monkeypatch):
    """Saved as given, resume=, config= and agents.evaluate from another folder found no such file."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    (work / "hay.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    monkeypatch.chdir(work)
    run_dir = tmp_path / "run"
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, "env.kwargs.haystack_path=hay.txt")) == 0
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.env.kwargs.haystack_path == str(work / "hay.txt")
    monkeypatch.chdir(elsewhere)
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0


def test_a_zero_episode_run_writes_its_checkpoint(tmp_path, capsys):
    """It finished with exit 0 and no checkpoints/last.pt, so evaluate and resume= found no checkpoint. evaluate
    re-scores the run's own evaluation (it replayed it and scored the next eval episodes: no training reset in the
    log kept it from rewinding)."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=0")) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["episode"] == 0
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0
    curves = json.loads((run_dir / "metrics.json").read_text())["forgetting_curves"]  # one point: the evaluation
    scored = json.loads((run_dir / "eval.json").read_text())["accuracy_by_task"]
    assert scored == pytest.approx({j: curve[-1][1] for j, curve in curves.items()}) and len(scored) == 2
    # every plot of a MemNet run, the slot-usage heatmap too (it took no snapshot: the figure says so)
    assert {f.name for f in (run_dir / "plots").iterdir()} >= {"slot_usage.png", "slot_survival.png",
                                                               "accuracy_matrix.png", "forgetting_curves.png"}
    assert run.main([f"resume={run_dir}"]) == 0  # nothing left to train: it reports and ends


def test_ctrl_c_during_an_evaluation_is_one_line(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "gru", run_dir)) == 0
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "evaluate_all", interrupted)
    assert evaluate.main([f"checkpoint={run_dir}"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted; no evaluation was written (the run and its checkpoint are untouched)"
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize("failure", ["torch", "stream", "os"])
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch,
                                                                               failure):
    """torch's zip writer reported ENOSPC as a RuntimeError traceback ("unexpected pos N vs M"; "basic_ios::clear:
    iostream error" where the disk fills as it writes the file's end: a 1.6 MB tmpfs under the second checkpoint)."""
    run_dir = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: the disk is full now
            if failure == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2712384 vs 2712272")
            if failure == "stream":  # every record written, the end cut short
                real_save(obj, f, *args, **kwargs)
                os.truncate(f, os.path.getsize(f) - 22)
                raise RuntimeError("basic_ios::clear: iostream error")
            raise OSError(28, os.strerror(28))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.checkpoint_every=1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: checkpoint: cannot write {run_dir / 'checkpoints' / 'last.pt'} (")
    assert re.search(r"\d (B|[KMGTP]iB) free there\); the file there before is kept", err)
    # (a folder the run may not write has its own line: "or fix the folder's permissions" here was noise)
    assert err.endswith(f"the file there before is kept: free space and retry; then continue with resume={run_dir}")
    assert "\n" not in err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["episode"] == 1
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.pt"]  # no temp file left


def test_a_cold_tier_too_big_for_the_disk_is_one_line_and_leaves_no_run_folder(tmp_path, capsys):
    """Was numpy's OSError traceback from the memmap (and, below the file system's limit, a sparse file that kills
    the process with SIGBUS once the disk fills under it)."""
    assert run.main(tiny("ContinualShift-v0", "memnet", tmp_path / "run", "memory.cache_cold=100000000000")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the cache's cold tier needs ") and "lower memory.cache_cold (100,000,000,000" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_resume_may_change_how_a_run_runs_but_not_what_it_computes(tmp_path, capsys, monkeypatch):
    """resume= refused every override, so a resumed run could not silence its progress bar or change threads."""
    first = tmp_path / "run"
    stop_in_episode_2(monkeypatch)  # so that the resume below trains
    assert run.main(tiny("LongDependency-v0", "gru", first, "train.checkpoint_every=1")) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert run.main([f"resume={first}", "train.lr=0.1"]) == 2
    assert "drop the other overrides (train.lr=0.1; only train.progress, train.threads, device may change)" in \
        capsys.readouterr().err
    assert run.main([f"resume={first}", "train.threads=x"]) == 2
    assert "train.threads" in capsys.readouterr().err
    assert run.main([f"resume={first}", "train.threads=${oops"]) == 2
    assert "'train.threads=${oops' is not a key=value override" in capsys.readouterr().err  # as a fresh run's
    assert run.main([f"resume={first}", "train.progress=false", "train.threads=1"]) == 0
    saved = (first / "config.yaml").read_text()
    assert "threads: 1" in saved and "progress: false" in saved
    # read as a fresh run reads it (Hydra's grammar): YAML 1.1 made 010 octal, 8 threads (the run is finished now:
    # its config.yaml stays as it ran)
    capsys.readouterr()
    assert run.main([f"resume={first}", "train.progress=false", "train.threads=010"]) == 0
    assert "note: train.threads=10: the run computed with 1 torch thread" in capsys.readouterr().out
    # checked as a fresh run's: a sweep was omegaconf's "Unexpected type annotation" traceback (exit 1), and a
    # number for train.progress was taken as a boolean
    for change, why in (("device=cpu,cuda", "one value per key"), ("train.threads=range(1,3)", "one value per key"),
                        ("train.progress=choice(true,false)", "one value per key"),
                        ("train.threads=[range(1,2)]", "one value"), ("device=[cpu]", "takes one value"),
                        ("train.progress=2", "not a boolean"),
                        ("train.progress=0", "not a boolean")):
        assert run.main([f"resume={first}", change]) == 2, change
        err = capsys.readouterr().err
        assert err.startswith(f"error: {change.split('=')[0]}") and why in err and err.count("\n") == 1, err



def test_a_run_trained_with_device_cuda_resumes_on_a_machine_without_cuda_given_device_cpu(tmp_path, monkeypatch,
                                                                                            capsys):
    """A GPU run (saved device=cuda) cut short continues where no CUDA is visible: resume= says device=cuda cannot
    run here and takes `device=cpu`, which it refused as an override before (a dead end: the one line said to use
    device=cpu). On the CPU it then ends as the uninterrupted CPU run does."""
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = ("train.checkpoint_every=1", "train.episodes=3")
    assert run.main(tiny("LongDependency-v0", "memnet", straight, *args)) == 0
    stop_in_episode_2(monkeypatch)
    assert run.main(tiny("LongDependency-v0", "memnet", cut, *args)) == 130
    monkeypatch.undo()
    ckpt = cut / "checkpoints" / "last.pt"
    body = torch.load(ckpt, weights_only=True)
    body["config"]["device"] = "cuda"  # as a GPU machine saved it (this one has none: tests/conftest.py)
    torch.save(body, ckpt)
    (cut / "config.yaml").write_text((cut / "config.yaml").read_text().replace("device: auto", "device: cuda"))
    capsys.readouterr()
    assert run.main([f"resume={cut}"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: device=cuda but no CUDA device is visible; use device=auto or device=cpu"
    assert run.main([f"resume={cut}", "device=cpu"]) == 0
    assert "device: cpu" in (cut / "config.yaml").read_text()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, cut))
    for m in (a, b):
        m.pop("tokens_per_s")
    assert a == b


def stop_in_episode_2(monkeypatch) -> None:
    """Ctrl+C in a run's second training episode (this process's next run): with train.checkpoint_every=1 the run
    stops (exit 130) after its first checkpoint, with something left to resume."""
    real, calls = Trainer.train_episode, []

    def stopped_in_episode_2(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_episode", stopped_in_episode_2)
