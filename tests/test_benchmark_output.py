"""What a benchmark shows its user: LongDependency's probes in results.md (they were in results.json only), the
same after `python -m agents.benchmark_report DIR`, and the terminal's lines aligned and numbered as results.md."""

from __future__ import annotations

import json
from pathlib import Path

from agents import benchmark, benchmark_rebuild, benchmark_runner
from agents.benchmark_markdown import key_numbers, markdown
from agents.benchmark_report import PROBE_FAILED, aggregate, check_targets, flat_metrics, fmt, write_results
from tests.test_benchmark import BUCKETS, CS, LD, NR, record

CONTEXT = {"suite": "test", "command": "python -m agents.benchmark", "machine": "2 CPUs", "started": "now",
           "wall_s": 60.0, "workers": 2, "interrupted": False}


def ld_probed(seed: int) -> dict:
    """A LongDependency MemNet run probed with more queries per episode (32, then 8: out of order) and with
    cross-episode queries, whose distances reach past the run's own buckets."""
    probes = [{"env_kwargs": {"queries_per_episode": 32}, "accuracy": 0.9, "accuracy_by_distance": {"1024": 0.9}},
              {"env_kwargs": {"queries_per_episode": 8}, "accuracy": 0.97, "accuracy_by_distance": {"1024": 0.97}},
              {"env_kwargs": {"cross_episode_queries": 4}, "accuracy": 0.5 + 0.1 * seed,
               "accuracy_by_distance": {"1024": 0.96, "4096": 0.2 + 0.1 * seed}}]
    return record(LD, "memnet", seed, accuracy=0.95, accuracy_by_distance={str(b): 0.95 for b in BUCKETS},
                  probes=probes)


def test_longdependency_probes_are_a_table_of_results_md_and_rebuilt_the_same(tmp_path):
    runs = [ld_probed(s) for s in range(3)]
    bench = tmp_path / "bench"
    bench.mkdir()
    _, _, text = write_results(bench, json.loads(json.dumps(runs)), CONTEXT)
    table = text.split("Probes (final checkpoints evaluated again with changed env options; accuracy by "
                       "distance):\n\n")[1].split("\n\n")[0].splitlines()
    assert table == ["| variant | env options | eval accuracy | d<=1024 | d<=4096 |",
                     "|---|---|---:|---:|---:|",
                     "| memnet | `cross_episode_queries=4` | 0.600 [0.533, 0.667] | 0.960 | 0.300 [0.233, 0.367] |",
                     "| memnet | `queries_per_episode=8` | 0.970 | 0.970 | – |",  # 8 before 32: in numeric order
                     "| memnet | `queries_per_episode=32` | 0.900 | 0.900 | – |"]
    assert "| memnet | 0.950 | 0.950 |" in text  # the run's own buckets are the run's, not a probe's
    (bench / "results.md").unlink()
    assert benchmark_rebuild.main([str(bench)]) == 0
    assert (bench / "results.md").read_text() == text


def test_needlerecall_probes_on_a_recall_curve_get_no_probe_row_and_the_others_do():
    """A delay or facts_per_episode probe is a point of the recall curves; one of another option (its recall at the
    run's own delay, which the run's evaluation holds) was shown nowhere."""
    probes = [{"env_kwargs": {"delay": 2}, "accuracy": 0.99, "recall_by_delay": {"2": 0.99}},
              {"env_kwargs": {"haystack_length": 512}, "accuracy": 0.7, "recall_by_delay": {"10": 0.7}}]
    flat = flat_metrics(record(NR, "memnet", 0, env_kwargs={"delay": 10, "facts_per_episode": 4}, probes=probes,
                               accuracy=0.96, recall_by_delay={"10": 0.96}))
    assert flat["recall_delay2"] == 0.99 and flat["recall_delay10"] == 0.96
    assert {k: v for k, v in flat.items() if k.startswith("probe ")} == {"probe haystack_length=512: accuracy": 0.7}
    list_probe = record(LD, "memnet", 0, probes=[{"env_kwargs": {"distances": [1, 2, 4]}, "accuracy": 0.8}])
    assert "probe distances=[1,2,4]: accuracy" in aggregate([list_probe])[LD]["memnet"]["metrics"]


def test_progress_lines_keep_their_columns_with_a_preset_a_long_variant_and_seed_10(monkeypatch, capsys):
    """The env column was 17 wide and the variant's 16: LongDependency-Hard-v0 (22) and a longer variant name pushed
    every column after them out of line, and so did seed 10 after seed 9."""
    hard, name = "LongDependency-Hard-v0", "memnet-no-slots-no-store"
    jobs = [benchmark_runner.Job(env, variant, variant.split("-")[0], seed, Path(f"/r/{seed}"), [])
            for env, variant, seed in ((hard, name, 0), (NR, "gru", 10), (LD, "memnet", 3))]
    monkeypatch.setattr(benchmark_runner.Runner, "run", lambda self, job: record(
        job.env, job.variant, job.seed, accuracy=0.5) | {"wall_s": 10.0 * (job.seed + 1)})
    records, interrupted = benchmark_runner.execute(jobs, workers=1, timeout_s=None)
    assert len(records) == 3 and not interrupted
    lines = [line.split("   ETA ")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["[1/3] LongDependency-Hard-v0 memnet-no-slots-no-store s0     10.0 s  eval accuracy 0.500",
                     "[2/3] NeedleRecall-v0        gru                      s10   110.0 s  eval accuracy 0.500",
                     "[3/3] LongDependency-v0      memnet                   s3     40.0 s  eval accuracy 0.500"]
    # a run may take up to timeout_s and the 30 s grace after it: 14,430.0 s keeps the column too
    assert benchmark_runner.line_widths(jobs, 14400)["wall"] == len("14430.0")


def test_the_terminal_targets_keep_their_column_when_one_is_not_measured(tmp_path, monkeypatch, capsys):
    """The status column was 7 wide: "not measured" (a one-task budget's BWT) pushed its line out of line."""
    runs = [record(CS, "memnet", 0, accuracy=0.95, ACC=0.95, BWT=None)]
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout_s: (json.loads(json.dumps(runs)), False))
    assert benchmark.main([f"envs={CS}", "agents=memnet", "seeds=1", f"out={tmp_path / 'b'}"]) == 0
    out = capsys.readouterr().out
    assert out.split("\ntargets:\n")[1].split("\n\n")[0].splitlines() == [
        f"  not run      {CS} / transformer: memory-free transformer forgets: BWT <= -0.3  [no transformer variant in "
        "this benchmark]",
        f"  met          {CS} / memnet: MemNet ACC >= 0.9  [ACC: 0.950 (1 seed; the targets ask for >= 3)]",
        f"  not measured {CS} / memnet: MemNet BWT >= -0.05  [its runs report no BWT]"]


def test_a_run_line_names_and_writes_its_numbers_as_results_md_does():
    """The terminal said `acc_beyond_window` for results.md's `acc d>W`, wrote recall by facts held to 2 places
    (0.96, results.md 0.960), and results.md wrote a rounding residue of 0 as -0.000 (the terminal 0.000)."""
    ld = record(LD, "transformer", 0, accuracy=0.4, accuracy_by_distance={str(b): (1.0 if b <= 64 else 0.02)
                                                                           for b in BUCKETS})
    assert key_numbers(ld) == "eval accuracy 0.400, acc d>W 0.020"
    nr = record(NR, "memnet", 0, accuracy=0.96, recall_by_delay={"10": 0.96},
                env_kwargs={"delay": 10, "facts_per_episode": 4},
                probes=[{"env_kwargs": {"facts_per_episode": 16}, "accuracy": 0.7, "recall_by_delay": {"10": 0.7}}])
    assert key_numbers(nr) == "eval accuracy 0.960, recall by facts held 40:0.960 160:0.700"
    cs = record(CS, "memnet", 0, ACC=0.9, BWT=-6.9e-18)
    assert key_numbers(cs) == "ACC 0.900, BWT 0.000"
    assert fmt({"mean": -6.9e-18, "low": -1e-17, "high": 0.0, "n": 3}) == "0.000"
    assert fmt({"mean": -0.2, "low": -0.3, "high": -1e-17, "n": 3}) == "-0.200 [-0.300, 0.000]"


def test_results_md_writes_the_wall_time_as_the_terminal_does():
    """results.md's header said "wall time 14.3 min" where the terminal's last line said "in 14 min 18 s"."""
    runs = [record(NR, "memnet", 0, accuracy=0.96) | {"cpu_s": 100.0}]
    text = markdown(aggregate(runs), [], runs, CONTEXT | {"wall_s": 858.0, "workers": 1})
    assert "- started now, wall time 14 min 18 s, 1 run at a time" in text
    assert "CPU time 1.7 min, i.e. about 1 min 40 s of wall time at 1 run at a time" in text


def test_the_first_line_counts_envs_variants_and_seeds_as_the_other_lines_count(tmp_path, monkeypatch, capsys):
    """It said "1 env(s) x 2 variant(s) x 1 seed(s) = 2 runs" where every other count is "1 run" / "2 runs"."""
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout_s: ([], False))
    benchmark.main([f"envs={CS}", "agents=lstm,gru", "seeds=1", "workers=1", f"out={tmp_path / 'b'}"])
    assert capsys.readouterr().out.splitlines()[0] == (
        f"memstream benchmark 'quick': 1 env x 2 variants x 1 seed = 2 runs, 1 at a time -> {tmp_path / 'b'}")


def test_a_row_whose_run_s_probe_failed_says_so_beside_its_seeds():
    """A seed whose probe failed counts its training numbers: "seeds ok" read 3/3, while the header counted it among
    the failed runs and "Failed runs" listed it."""
    runs = [record(NR, "memnet", s, accuracy=0.9) for s in range(2)] + [
        record(NR, "memnet", 2, status=PROBE_FAILED, accuracy=0.9) | {"error_kind": "exit code 1"},
        record(NR, "memnet", 3, status="failed")]
    text = markdown(aggregate(runs), [], runs, CONTEXT)
    assert "| memnet | memnet | 3/4 (1 FAILED, 1 probe failed) | 0.900 |" in text
    assert "- runs: 4 (2 ok, 2 failed)" in text


def test_a_target_not_run_says_why_under_a_header_that_allows_a_reason():
    """The targets table read `not run | not run` under the header "number" (and the terminal `not run ... [not
    run]`): the column holds the reason where there is no number."""
    runs = [record(CS, "memnet", 0, ACC=0.95, BWT=None), record(CS, "transformer", 0, status="failed")]
    text = markdown(aggregate(runs), check_targets(aggregate(runs)), runs, CONTEXT)
    rows = text.split("## Targets\n\n")[1].split("\n\n")[0].splitlines()
    assert rows[0] == "| env | variant | target | status | number, or why none |"
    assert rows[2:] == [
        f"| {CS} | transformer | memory-free transformer forgets: BWT <= -0.3 | not run | every run failed |",
        f"| {CS} | memnet | MemNet ACC >= 0.9 | met | ACC: 0.950 (1 seed; the targets ask for >= 3) |",
        f"| {CS} | memnet | MemNet BWT >= -0.05 | not measured | its runs report no BWT |"]
    nr = check_targets(aggregate([record(NR, "memnet", 0, accuracy=0.9, recall_by_delay={"10": 0.9})]))
    assert [t["detail"] for t in nr if t["variant"] == "gru"] == ["no gru variant in this benchmark"]
