"""agents.benchmark's report and runner, at the edges a mutation round found unchecked: the seed-count note at
exactly MIN_SEEDS, the chance margin, a target met at exactly its bound and at bucket 1024, a run whose probe failed
(its training numbers count, it is listed under "Failed runs"), a failed run's log tail, the capacity note at exactly
95%, a delay probe that is not a capacity point, no bucket beyond the window, an every-run-failed row, and the
runner's record of its probes and CPU time."""

from __future__ import annotations

import json
import sys

import pytest

from agents import benchmark_runner
from agents.benchmark_report import (
    FAILED,
    MET,
    MISSED,
    NOT_MEASURED,
    PROBE_FAILED,
    aggregate,
    capacity_notes,
    check_targets,
    flat_metrics,
    write_results,
)
from tests.test_benchmark import BUCKETS, CS, LD, NR, record

CONTEXT = {"suite": "test", "command": "python -m agents.benchmark", "machine": "2 CPUs", "started": "now",
           "wall_s": 60.0, "workers": 2, "interrupted": False}


def _targets(runs, **kwargs) -> dict:
    return {(t["env"], t["variant"]): t for t in check_targets(aggregate(runs), **kwargs)}


def test_the_seed_count_note_appears_below_three_seeds_only():
    for seeds, noted in ((2, True), (3, False)):
        runs = [record(NR, "memnet", s, recall_by_delay={"10": 0.97}, accuracy=0.97) for s in range(seeds)]
        detail = _targets(runs)[(NR, "memnet")]["detail"]
        assert ("the targets ask for >= 3" in detail) is noted, (seeds, detail)


@pytest.mark.parametrize("above, margin, status", [(0.03, 0.05, MET), (0.03, 0.0, MISSED), (0.06, 0.05, MISSED)])
def test_at_chance_allows_the_chance_margin_and_no_more(above, margin, status):
    chance = 1 / 124
    runs = [record(NR, "lstm", s, chance=chance, accuracy=chance + above) for s in range(3)]
    target = [t for t in check_targets(aggregate(runs), chance_margin=margin) if t["variant"] == "lstm"][0]
    assert (target["status"], target["value"]) == (status, pytest.approx(chance + above))
    assert f"(chance {chance:.3f}; at chance means <= chance + {margin})" in target["detail"]


def test_a_worst_bucket_of_exactly_095_is_met_and_bucket_1024_counts_but_2048_does_not():
    exact = {str(b): 0.97 for b in BUCKETS} | {"256": 0.95, "2048": 0.1}
    (target,) = [t for t in check_targets(aggregate([record(LD, "memnet", 0, accuracy_by_distance=exact)]))
                 if t["variant"] == "memnet"]
    assert (target["status"], target["value"]) == (MET, 0.95) and "d<=256" in target["detail"]
    weak_1024 = {str(b): 0.97 for b in BUCKETS} | {"1024": 0.5}
    runs = [record(LD, "memnet", s, accuracy_by_distance=weak_1024) for s in range(3)]
    (target,) = [t for t in check_targets(aggregate(runs)) if t["variant"] == "memnet"]
    assert (target["status"], target["value"]) == (MISSED, 0.5) and "worst bucket d<=1024" in target["detail"]


def test_a_run_whose_probe_failed_counts_its_training_numbers_and_is_listed_under_failed_runs(tmp_path):
    runs = [record(NR, "memnet", s, accuracy=0.9 + 0.01 * s) for s in range(2)]
    runs.append(record(NR, "memnet", 2, status=PROBE_FAILED, accuracy=0.92) | {
        "error_kind": "exit code 1", "error": "Traceback\nprobe broke"})
    agg, _, text = write_results(tmp_path, runs, CONTEXT)
    cell = agg[NR]["memnet"]
    assert (cell["seeds"], cell["failed"]) == ([0, 1, 2], [])
    assert cell["metrics"]["accuracy"]["values"] == [(0, 0.9), (1, 0.91), (2, 0.92)]
    failed = text.split("## Failed runs", 1)[1]
    assert f"- {NR} / memnet / seed 2: probe failed (exit code 1), `/r/2`" in failed and "probe broke" in failed
    assert "runs: 3 (2 ok, 1 failed)" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in saved["runs"]] == ["ok", "ok", PROBE_FAILED]


def test_a_variant_whose_every_run_failed_reads_failed_in_its_row(tmp_path):
    runs = [record(LD, "memnet", 0, accuracy=0.9), record(LD, "lstm", 0, status=FAILED)]
    text = write_results(tmp_path, runs, CONTEXT)[2]
    (row,) = [line for line in text.splitlines() if line.startswith("| lstm |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "0/1 (1 FAILED)" and set(cells[3:]) == {"FAILED"}


def test_a_failed_runs_record_keeps_the_last_lines_of_its_log(tmp_path):
    runner = benchmark_runner.Runner(timeout_s=None)
    script = "import sys\nfor i in range(40): print(f'line {i}')\nsys.exit(2)"
    kind, tail, _ = runner._call([sys.executable, "-c", script], tmp_path / "run.log", None)
    assert kind == "exit code 2"
    assert tail.splitlines() == [f"line {i}" for i in range(40 - benchmark_runner.TAIL_LINES, 40)]


def test_capacity_held_at_exactly_95_percent_counts_as_held():
    probes = [{"env_kwargs": {"facts_per_episode": 8}, "accuracy": 0.95},
              {"env_kwargs": {"facts_per_episode": 16}, "accuracy": 0.5}]
    nr = record(NR, "memnet", 0, env_kwargs={"delay": 10, "facts_per_episode": 4}, probes=probes, accuracy=0.95)
    assert capacity_notes(aggregate([nr])) == [
        f"{NR} / memnet: falls below 95% at 160 facts held (0.500); >= 95% up to 80"]


def test_a_probe_at_another_delay_is_no_capacity_point_even_with_other_facts_per_episode():
    probes = [{"env_kwargs": {"delay": 5, "facts_per_episode": 2}, "accuracy": 0.3, "recall_by_delay": {"5": 0.3}}]
    nr = record(NR, "memnet", 0, env_kwargs={"delay": 10, "facts_per_episode": 4}, probes=probes, accuracy=1.0)
    flat = flat_metrics(nr)
    assert {k: v for k, v in flat.items() if k.startswith("recall_facts")} == {"recall_facts40": 1.0}
    assert flat["recall_delay5"] == 0.3


def test_no_bucket_beyond_the_window_is_no_number_not_a_zero_and_the_target_is_not_measured():
    runs = [record(LD, "transformer", s, chance=1 / 63, window=64,
                   accuracy_by_distance={str(b): 0.9 for b in BUCKETS if b <= 64}) for s in range(3)]
    flat = flat_metrics(runs[0])
    assert flat["acc_within_window"] == pytest.approx(0.9) and "acc_beyond_window" not in flat
    (target,) = [t for t in check_targets(aggregate(runs)) if t["variant"] == "transformer"]
    assert target["status"] == NOT_MEASURED


def _fake_call(cpu_by_log: dict, fail: str | None = None):
    """A Runner._call that writes what agents.run / agents.evaluate would, without their processes."""
    def call(self, cmd, log, deadline):
        run_dir = log.parent
        if log.name == "run.log":
            (run_dir / "metrics.json").write_text(json.dumps({"accuracy": 0.8, "params": 10}))
        elif log.stem == fail:
            return "exit code 1", "probe broke", cpu_by_log[log.name]
        else:
            key = log.stem.removeprefix("probe_")
            evaluations = [{"env_kwargs": {key: v}, "accuracy": v / 10} for v in (1, 2)]
            (run_dir / f"probe_{key}.json").write_text(json.dumps({"evaluations": evaluations}))
        return None, "", cpu_by_log[log.name]
    return call


@pytest.mark.parametrize("fail", [None, "probe_delay"])
def test_the_runner_records_every_probe_and_the_cpu_time_of_all_its_processes(tmp_path, monkeypatch, fail):
    cpu = {"run.log": 1.5, "probe_facts_per_episode.log": 0.25, "probe_delay.log": 0.125}
    monkeypatch.setattr(benchmark_runner.Runner, "_call", _fake_call(cpu, fail))
    job = benchmark_runner.Job(NR, "memnet", "memnet", 0, tmp_path / "s0", [],
                               probes={"facts_per_episode": [1, 2], "delay": [1, 2]})
    rec = benchmark_runner.Runner(timeout_s=None).run(job)
    assert rec["metrics"] == {"accuracy": 0.8, "params": 10}
    assert rec["cpu_s"] == pytest.approx(1.875)
    first = [{"env_kwargs": {"facts_per_episode": v}, "accuracy": v / 10} for v in (1, 2)]
    if fail is None:
        assert rec["status"] == "ok" and rec["error"] is None
        assert rec["probes"] == first + [{"env_kwargs": {"delay": v}, "accuracy": v / 10} for v in (1, 2)]
    else:  # the training ran: a probe's failure keeps its numbers
        assert (rec["status"], rec["error_kind"], rec["error"]) == (PROBE_FAILED, "exit code 1", "probe broke")
        assert rec["probes"] == first


@pytest.mark.parametrize("variant, key, bound", [("transformer", "BWT", -0.3), ("memnet", "ACC", 0.9),
                                                 ("memnet", "BWT", -0.05)])
def test_a_continual_shift_target_at_exactly_its_bound_is_met(variant, key, bound):
    """The issue's targets read BWT <= -0.3, ACC >= 0.9, BWT >= -0.05: the bound itself meets them."""
    runs = [record(CS, variant, 0, **{key: bound})]
    (target,) = [t for t in check_targets(aggregate(runs)) if t["target"].endswith(f"{key} >= {bound}")
                 or t["target"].endswith(f"{key} <= {bound}")]
    assert (target["status"], target["value"]) == (MET, bound), target


def test_a_variant_with_one_capacity_point_gets_no_capacity_note():
    """Only the run's own evaluation (no facts_per_episode probe): no curve to read a capacity from."""
    nr = record(NR, "memnet", 0, env_kwargs={"delay": 10, "facts_per_episode": 4}, accuracy=0.5)
    assert "recall_facts40" in flat_metrics(nr)
    assert capacity_notes(aggregate([nr])) == []


def test_a_target_met_on_short_buckets_only_says_how_far_they_reach():
    short = {str(b): 0.97 for b in BUCKETS if b < 256} | {"256": 0.96}
    runs = [record(LD, "memnet", s, accuracy_by_distance=short) for s in range(3)]
    (target,) = [t for t in check_targets(aggregate(runs)) if t["variant"] == "memnet"]
    assert target["status"] == MET
    assert target["detail"] == "worst bucket d<=256: 0.960; buckets only up to 256"


def test_the_accuracy_by_distance_table_needs_two_buckets():
    from agents.benchmark_markdown import env_tables

    def table(buckets):
        agg = aggregate([record(LD, "memnet", 0, accuracy_by_distance={str(b): 0.9 for b in buckets})])
        return "\n".join(env_tables(LD, agg[LD]))

    assert "Accuracy by distance" not in table([64])  # every recall as far: no table of one column
    assert "| variant | d<=64 | d<=128 |" in table([64, 128])
