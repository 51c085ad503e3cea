"""The scalars a run writes to TensorBoard (README "TensorBoard"), checked against the run's own metrics.json:
recall accuracy by delay, the memory metrics' steps and the training throughput in tokens (all lanes)."""

import json

import pytest

from agents import run
from agents.tb_logger import read_scalars
from tests.test_run import tiny


def test_a_needle_recall_run_logs_delay_accuracy_memory_metrics_and_tokens_per_s(tmp_path):
    run_dir = tmp_path / "run"
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, "train.lanes=3")) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tags = read_scalars(run_dir)
    # recall accuracy by delay (NeedleRecall's delay 1): the final point is metrics.json's
    assert set(metrics["recall_by_delay"]) == {"1"}
    assert tags["recall/accuracy_delay1"][-1][1] == pytest.approx(metrics["recall_by_delay"]["1"], abs=1e-6)
    # the training curves are logged at the training steps per lane after each episode (32 steps an episode), the
    # memory metrics too (the first episode only writes, so train/loss starts at the second)
    assert [step for step, _ in tags["perf/tokens_per_s"]] == [32, 64]
    assert [step for step, _ in tags["memory/write_rate"]] == [32, 64]
    memory = [tag for tag in tags if tag.startswith("memory/")]
    assert all({step for step, _ in tags[tag]} <= {32, 64} for tag in memory)
    # tokens per second over every lane (3 here): its last point is what metrics.json reports
    assert tags["perf/tokens_per_s"][-1][1] == pytest.approx(metrics["tokens_per_s"], rel=1e-5)
