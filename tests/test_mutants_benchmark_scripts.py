"""Numbers the benchmark scripts print, from fixed measurements: benchmarks/agents.py's cost column, median [min,
max], target verdict and per-call times; benchmarks/envs.py's vector tokens/s and CPU column; the rebuilt report's
MISSED count (one-line mutations of each went unnoticed before)."""

import json
import subprocess

import pytest

from agents import benchmark_rebuild
from tests.scripts import load_script, run_main
from tests.test_benchmark_audit import saved_benchmark

TARGET = "target (MemNet >= 20,000 tokens/s and <= 1.5x transformer): "


def _answer(monkeypatch, speeds):
    """speeds: {agent: [tokens/s of round 1, round 2, ...]} answered in order."""
    module = load_script("agents")
    calls = {agent: iter(values) for agent, values in speeds.items()}

    def measured(cmd, **kwargs):
        agent = cmd[cmd.index("--one") + 1]
        tps = next(calls[agent])
        result = {"agent": agent, "device": "cpu", "params": 1, "tokens_per_s": tps, "plain_tokens_per_s": tps,
                  "peak_rss_mib": 1.0, "act_ms": None, "learn_ms": 1.0, "update_ms": 1.0, "act_calls": 0,
                  "chunks": 5, "shares": {"act": 0.0, "learn": 0.5, "update": 0.4, "rest": 0.1}}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(result), "")

    monkeypatch.setattr(module.subprocess, "run", measured)


def _row(out, agent):
    return [c.strip() for c in next(ln for ln in out.splitlines() if ln.startswith(f"| {agent} |")).split("|")]


def test_the_cost_column_is_the_transformers_tokens_per_s_over_the_rows(monkeypatch, capsys):
    _answer(monkeypatch, {"memnet": [30_000.0], "transformer": [40_000.0]})
    assert run_main("agents", ["--agents", "memnet,transformer"], monkeypatch) == 0
    row = _row(capsys.readouterr().out, "memnet")
    assert row[3:7] == ["30,000", "1.33x", "30,000", "1.33x"]


def test_several_rounds_are_the_median_with_min_and_max(monkeypatch, capsys):
    _answer(monkeypatch, {"memnet": [10_000.0, 30_000.0, 80_000.0], "transformer": [40_000.0] * 3})
    assert run_main("agents", ["--agents", "memnet,transformer", "--repeats", "3"], monkeypatch) == 0
    row = _row(capsys.readouterr().out, "memnet")
    assert row[3] == "30,000 [10,000, 80,000]"  # the median (a mean read 40,000)
    assert row[4] == "1.33x [0.50x, 4.00x]"


@pytest.mark.parametrize("memnet, transformer, verdict", [
    (30_000.0, 40_000.0, "met"),
    (15_000.0, 20_000.0, "NOT met"),  # cost 1.33x, but under 20,000 tokens/s
    (30_000.0, 60_000.0, "NOT met"),  # 30,000 tokens/s, but 2x the transformer
])
def test_the_target_needs_both_its_speed_and_its_cost(memnet, transformer, verdict, monkeypatch, capsys):
    _answer(monkeypatch, {"memnet": [memnet], "transformer": [transformer]})
    assert run_main("agents", ["--agents", "memnet,transformer"], monkeypatch) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == TARGET + verdict


def test_a_vector_step_counts_every_lane_and_the_wall_and_cpu_medians_are_their_own(monkeypatch):
    module = load_script("envs")
    monkeypatch.setattr(module, "timed", lambda loop, seconds: (loop(), 0.0))  # the units of one loop
    assert module.vector_tokens_per_s("ContinualShift-v0", 4, 0.01)[0] == 200 * 4
    assert module.scalar_steps_per_s("ContinualShift-v0", 0.01)[0] == 10_000
    assert module.median_pair([(1.0, 30.0), (2.0, 10.0), (9.0, 20.0)]) == (2.0, 20.0)


def test_the_rebuild_line_counts_only_the_missed_targets(tmp_path, capsys):
    bench = tmp_path / "bench"
    saved_benchmark(bench)
    statuses = [t["status"] for t in json.loads((bench / "results.json").read_text())["targets"]]
    assert benchmark_rebuild.main([str(bench)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(f"written again from 5 runs ({len(statuses)} targets, {statuses.count('MISSED')} MISSED)\n")
    assert statuses.count("MISSED") == 1 and len(statuses) == 6


def test_measure_divides_each_time_by_the_count_of_what_it_timed(monkeypatch):
    """benchmarks/agents.py's "where the time goes": acting ms per acting call, chunk forward ms per chunk, update
    ms per chunk that had a loss, summed over the timed episodes (the warm-up's left out). Dividing the chunk time
    by the acting calls went unnoticed before."""
    from agents.episodes import EpisodeStats
    from agents.trainer import Trainer

    played = iter([(9.0, 9.0, 9.0, 1, 1, 1),  # the warm-up episode: left out
                   (0.1, 0.5, 0.3, 2, 5, 4), (0.2, 0.3, 0.1, 3, 3, 2)])  # act, learn, update s; calls, chunks, losses

    def episode(trainer):
        act, learn, update, calls, chunks, losses = next(played)
        trainer.train_seconds += 2.0
        trainer.train_tokens += 1000
        return EpisodeStats(seconds={"act": act, "learn": learn, "update": update}, act_calls=calls,
                            chunks=chunks, losses=losses)

    monkeypatch.setattr(Trainer, "train_episode", episode)
    row = load_script("agents").measure("transformer", "ContinualShift-v0", episodes=2, lanes=2, threads=1)
    assert row["act_ms"] == pytest.approx(1e3 * 0.3 / 5) and row["learn_ms"] == pytest.approx(1e3 * 0.8 / 8)
    assert row["update_ms"] == pytest.approx(1e3 * 0.4 / 6) and row["tokens_per_s"] == pytest.approx(500.0)
    assert (row["act_calls"], row["chunks"]) == (2.5, 4.0)
    assert row["shares"] == pytest.approx({"act": 0.3 / 4, "learn": 0.8 / 4, "update": 0.4 / 4, "rest": 1 - 1.5 / 4})
