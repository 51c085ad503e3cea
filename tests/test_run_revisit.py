"""End to end with ContinualShift's revisit=true (tasks 0, 1, 0, 1): one accuracy-matrix row per trained block,
the metrics as the block definitions give them (also mid-run and for shorter or longer runs), and a checkpoint whose
matrix has another shape refused in one line."""

import json

import numpy as np
import pytest
import torch

from agents import run
from tests.test_run import tiny


def _by_block_definitions(R, tasks, b):
    """The generalised section-7 metrics written out loop by loop (README, Continual-learning metrics)."""
    K, T = R.shape
    first = {j: tasks.index(j) for j in range(T)}
    last = {j: K - 1 - tasks[::-1].index(j) for j in range(T)}
    fwt = [R[first[j] - 1][j] - b[j] for j in range(T) if first[j] >= 1]
    bwt = [R[K - 1][j] - R[last[j]][j] for j in range(T) if last[j] < K - 1]
    forget = [max(R[k][j] for k in range(K - 1)) - R[K - 1][j] for j in range(T) if last[j] < K - 1]
    return {"ACC": float(np.mean(R[K - 1])), "BWT": float(np.mean(bwt)) if bwt else None,
            "FWT": float(np.mean(fwt)) if fwt else None, "forgetting": float(np.mean(forget)) if forget else None}


def test_revisit_schedule_gets_one_matrix_row_per_block(tmp_path, capsys):
    """revisit=true trains tasks 0, 1, 0, 1: four rows, so the second pass no longer overwrites the first and FWT
    reads the accuracy measured before task 1's first block."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "env.kwargs.revisit=true")) == 0
    assert "row k: after training block k (its task in brackets)" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    R, tasks, b = np.array(metrics["accuracy_matrix"], dtype=float), metrics["accuracy_matrix_tasks"], \
        metrics["untrained_accuracy"]
    assert R.shape == (4, 2) and not np.isnan(R).any() and tasks == [0, 1, 0, 1]
    expected = _by_block_definitions(R, tasks, b)
    assert metrics["FWT"] == pytest.approx(R[0][1] - b[1]) and metrics["FWT"] == pytest.approx(expected["FWT"])
    for key in ("ACC", "BWT", "forgetting"):
        assert metrics[key] == pytest.approx(expected[key]), key
    assert len(metrics["task_boundaries"]) == 4  # one per block, the last one the end of training


@pytest.mark.parametrize("episodes, rows", [(3, [0, 1, 2]), (6, [0, 1, 2, 3])])
def test_revisit_rows_follow_the_schedule_for_shorter_and_longer_runs(tmp_path, episodes, rows):
    """train.episodes shorter than the schedule (0, 1, 0, 1) leaves the unreached blocks' rows empty; longer runs
    keep training the last block, whose row is written at the end."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "env.kwargs.revisit=true",
                         f"train.episodes={episodes}")) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    R = np.array(metrics["accuracy_matrix"], dtype=float)
    assert R.shape == (4, 2) and np.flatnonzero(~np.isnan(R).all(axis=1)).tolist() == rows
    done = rows[-1] + 1
    expected = _by_block_definitions(R[:done], metrics["accuracy_matrix_tasks"][:done], metrics["untrained_accuracy"])
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)


def test_trainer_metrics_mid_run_use_the_blocks_done_and_their_tasks():
    from types import SimpleNamespace

    from agents.trainer import Trainer

    R = np.full((4, 3), np.nan)  # blocks train tasks 0, 2, 0, 1; three of them done
    R[:3] = [[0.8, 0.1, 0.2], [0.5, 0.3, 0.9], [0.85, 0.2, 0.6]]
    trainer = SimpleNamespace(R=R, b=np.array([0.1, 0.15, 0.2]), block_tasks=np.array([0, 2, 0, 1]))
    metrics = Trainer.continual_metrics(trainer)  # columns: tasks 0 and 2, the ones trained so far
    assert metrics == pytest.approx({"ACC": (0.85 + 0.6) / 2, "BWT": 0.6 - 0.9, "FWT": 0.2 - 0.2,
                                     "forgetting": 0.9 - 0.6})
    trainer.R[:] = np.nan
    assert Trainer.continual_metrics(trainer) == {"ACC": None, "BWT": None, "FWT": None, "forgetting": None}


def test_checkpoint_with_a_matrix_of_another_shape_is_refused(tmp_path, capsys):
    """A revisiting run's checkpoint from before R had one row per block holds a (T, T) matrix: one line, no resume."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "env.kwargs.revisit=true")) == 0
    capsys.readouterr()
    ckpt = run_dir / "checkpoints" / "last.pt"
    body = torch.load(ckpt, weights_only=True)
    body["trainer"]["R"] = body["trainer"]["R"][:2]
    torch.save(body, ckpt)
    assert run.main([f"resume={run_dir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "accuracy matrix has shape (2, 2), this run's schedule needs (4, 2)" in err and "start a new run" in err
    assert len(err.splitlines()) == 1 and str(ckpt.parent.parent) in err
    # an evaluation sweep over memory settings alone keeps the run's env: the restore's line (what is wrong: the
    # saved matrix), not the sweep check's, which is about env.kwargs values the sweep does not have
    from agents import evaluate

    assert evaluate.main([f"checkpoint={run_dir}", "memory.reset=never,episode"]) == 2
    err = capsys.readouterr().err.strip()
    assert "accuracy matrix has shape (2, 2), this run's schedule needs (4, 2)" in err and "env.kwargs" not in err
