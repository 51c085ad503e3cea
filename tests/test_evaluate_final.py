"""`python -m agents.evaluate checkpoint=<run>` gives the run's own final evaluation back, number for number:
eval.json's per-task accuracies are the accuracy matrix's last row, its mean is metrics.json's ACC, its distance
buckets are the final evaluation's, and the run it names is the run's episode count; the memory it read (most of
the cache in the cold tier, on disk) and the checkpoint are left as they were."""

import json

import pytest
import torch

from agents import evaluate, run
from tests.test_run import tiny


def test_evaluate_writes_the_runs_final_evaluation_back_with_its_memory_mostly_in_the_cold_tier(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "memory.cache_hot=2", "memory.cache_warm=2")) == 0
    checkpoint = run_dir / "checkpoints" / "last.pt"
    before = checkpoint.read_bytes()
    tiers = torch.load(checkpoint, weights_only=False)["memory"]["cache"]["tier"]
    assert int((tiers == 2).sum()) > len(tiers) // 2, "the run's cache should hold most entries cold"
    final = json.loads((run_dir / "metrics.json").read_text())
    assert evaluate.main([f"checkpoint={run_dir}"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["accuracy_by_task"] == {str(j): a for j, a in enumerate(final["accuracy_matrix"][-1])}
    assert result["accuracy"] == pytest.approx(final["ACC"], abs=1e-12) and final["ACC"] > 0
    assert result["accuracy_by_distance"] == final["accuracy_by_distance"]
    assert result["scored_by_distance"] == final["scored_by_distance"]
    assert result["episodes_trained"] == final["episodes"] == 2
    assert checkpoint.read_bytes() == before
    assert "task 0" in capsys.readouterr().out


def test_evaluate_sets_the_callers_torch_thread_count_back(memnet_run):
    """evaluate() runs with the run's own thread count (or `threads=`), set by the trainer, and sets the caller's
    back when it returns: a notebook or a script that evaluates, then trains, kept the evaluation's count."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        evaluate.evaluate(memnet_run, out=None, threads=1, note=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_evaluate_runs_on_the_device_it_is_given(memnet_run, monkeypatch):
    """device= replaces the run's saved device (cpu here): with no CUDA visible, device=cuda is the trainer's one
    line, where it was dropped and the evaluation ran on the saved device."""
    from agents.config import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda but no CUDA device is visible"):
        evaluate.evaluate(memnet_run, device="cuda", out=None, note=False)


def test_evaluate_runs_with_the_thread_count_it_is_given(memnet_run, monkeypatch):
    """threads= replaces the run's own count (1 here) while the tasks are evaluated."""
    from agents.trainer import Trainer

    seen, evaluate_all = [], Trainer.evaluate_all

    def counted(self):
        seen.append(torch.get_num_threads())
        return evaluate_all(self)

    monkeypatch.setattr(Trainer, "evaluate_all", counted)
    before = torch.get_num_threads()
    try:
        evaluate.evaluate(memnet_run, out=None, threads=2, note=False)
    finally:
        torch.set_num_threads(before)
    assert seen == [2]
