"""`python -m agents.benchmark`: aggregation over seeds, target checks, capacity probes, ETA, evaluate sweeps."""

import pytest

from agents import benchmark, benchmark_runner
from agents.benchmark_markdown import markdown
from agents.benchmark_report import (
    MET,
    MISSED,
    NOT_MEASURED,
    NOT_RUN,
    aggregate,
    capacity_notes,
    check_targets,
    flat_metrics,
)
from agents.benchmark_runner import run_command
from agents.benchmark_suite import load_suite
from agents.evaluate import override_grid

LD, NR, CS = "LongDependency-v0", "NeedleRecall-v0", "ContinualShift-v0"
BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def record(env, variant, seed, status="ok", window=64, chance=None, env_kwargs=None, probes=(), **metrics):
    agent = variant.split("-")[0]
    return {"env": env, "variant": variant, "agent": agent, "seed": seed, "status": status, "run_dir": f"/r/{seed}",
            "window": window, "chance": chance, "env_kwargs": env_kwargs or {}, "probes": list(probes),
            "wall_s": 10.0 + seed, "error": "Traceback ...\nboom" if status == "failed" else None,
            "error_kind": "exit code 1" if status == "failed" else None,
            "metrics": None if status == "failed" else {"accuracy": None, "ACC": None, "BWT": None, "params": 100,
                                                         "memory_bytes": 2**20, "tokens_per_s": 1000.0, **metrics}}


def test_aggregate_gives_mean_interval_per_seed_values_and_leaves_failed_seeds_out():
    runs = [record(LD, "memnet", s, accuracy=a) for s, a in enumerate([0.5, 0.6, 0.7])]
    runs.append(record(LD, "memnet", 3, status="failed"))
    cell = aggregate(runs)[LD]["memnet"]
    assert cell["seeds"] == [0, 1, 2] and cell["failed"] == [3]
    acc = cell["metrics"]["accuracy"]
    assert acc["mean"] == pytest.approx(0.6) and acc["n"] == 3
    assert 0.5 <= acc["low"] < 0.6 < acc["high"] <= 0.7
    assert acc["values"] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert cell["metrics"]["wall_s"]["mean"] == pytest.approx(11.0)
    assert "ACC" not in cell["metrics"]  # None in every seed: not applicable, not a zero


def test_flat_metrics_split_distance_at_the_window_and_read_capacity_probes():
    ld = record(LD, "transformer", 0, accuracy_by_distance={str(b): (1.0 if b <= 64 else 0.0) for b in BUCKETS})
    flat = flat_metrics(ld)
    assert flat["acc_d64"] == 1.0 and flat["acc_d128"] == 0.0
    assert flat["acc_within_window"] == 1.0 and flat["acc_beyond_window"] == 0.0
    probes = [{"env_kwargs": {"facts_per_episode": 8}, "accuracy": 0.97, "recall_by_delay": {"10": 0.97}},
              {"env_kwargs": {"facts_per_episode": 16}, "accuracy": 0.5, "recall_by_delay": {"10": 0.5}},
              {"env_kwargs": {"delay": 5}, "accuracy": 0.99, "recall_by_delay": {"5": 0.99}}]
    nr = record(NR, "memnet", 0, env_kwargs={"delay": 10, "facts_per_episode": 4}, probes=probes, accuracy=1.0,
                recall_by_delay={"10": 1.0})
    flat = flat_metrics(nr)
    # the run's own evaluation holds 10 x 4 facts; probes add 80 and 160; the delay probe is not a capacity point
    assert {k: v for k, v in flat.items() if k.startswith("recall_facts")} == {
        "recall_facts40": 1.0, "recall_facts80": 0.97, "recall_facts160": 0.5}
    assert flat["recall_delay10"] == 1.0 and flat["recall_delay5"] == 0.99  # a probe never replaces the run's own
    notes = capacity_notes(aggregate([nr]))
    assert notes == [f"{NR} / memnet: falls below 95% at 160 facts held (0.500); >= 95% up to 80"]


def test_targets_are_checked_on_the_mean_and_reported_met_missed_or_not_run():
    chance_ld, chance_nr = 1 / 63, 1 / 124
    good = {str(b): 0.97 for b in BUCKETS}
    runs = [record(LD, "memnet", s, accuracy_by_distance=good | {"512": 0.95 + 0.01 * s}) for s in range(3)]
    runs += [record(LD, "transformer", s, chance=chance_ld,
                    accuracy_by_distance={str(b): (1.0 if b <= 64 else 0.3) for b in BUCKETS}) for s in range(3)]
    runs += [record(CS, "memnet", s, ACC=0.95, BWT=-0.2) for s in range(3)]
    runs += [record(CS, "transformer", s, ACC=0.2, BWT=-0.9 + 0.1 * s) for s in range(3)]
    runs += [record(NR, "memnet", s, recall_by_delay={"10": 0.96}, accuracy=0.96) for s in range(2)]
    runs += [record(NR, "lstm", s, chance=chance_nr, accuracy=chance_nr) for s in range(3)]
    runs += [record(NR, "transformer", 0, status="failed", chance=chance_nr)]
    targets = check_targets(aggregate(runs), chance_margin=0.05)
    status = {(t["env"], t["variant"], t["target"].split()[-1]): t for t in targets}
    ld_memnet = status[(LD, "memnet", "1024")]
    assert ld_memnet["status"] == MET and ld_memnet["value"] == pytest.approx(0.96)  # worst bucket, mean of seeds
    assert "d<=512" in ld_memnet["detail"]
    ld_tf = status[(LD, "transformer", "W=64")]
    assert ld_tf["status"] == MISSED and ld_tf["value"] == pytest.approx(0.3)
    assert status[(CS, "memnet", "0.9")]["status"] == MET
    assert status[(CS, "memnet", "-0.05")]["status"] == MISSED
    cs_tf = status[(CS, "transformer", "-0.3")]
    assert cs_tf["status"] == MET and cs_tf["value"] == pytest.approx(-0.8)
    nr_memnet = status[(NR, "memnet", "off")]
    assert nr_memnet["status"] == MET and "2 seeds; the targets ask for >= 3" in nr_memnet["detail"]
    assert status[(NR, "lstm", "facts")]["status"] == MET
    assert status[(NR, "transformer", "facts")]["status"] == NOT_RUN
    assert status[(NR, "gru", "facts")]["status"] == NOT_RUN
    context = {"suite": "test", "command": "python -m agents.benchmark", "machine": "2 CPUs", "started": "now",
               "wall_s": 60.0, "workers": 2}
    text = markdown(aggregate(runs), targets, runs, context)
    assert "| MISSED |" in text and "| met |" in text and "worst bucket d<=512: 0.960 [" in text
    assert "## Failed runs" in text and "boom" in text and "0/1 (1 FAILED)" in text
    assert "d<=1024" in text  # the accuracy-by-distance table


def test_a_target_whose_runs_ran_but_report_no_such_number_is_not_measured_and_a_missing_window_is_not_named():
    """A one-task ContinualShift budget has no BWT: its runs ran, so not "not run"; an LD subset without the
    transformer has no window to name (it printed W=None)."""
    runs = [record(CS, "memnet", s, ACC=0.95, BWT=None) for s in range(3)]
    runs += [record(LD, "memnet", s, accuracy_by_distance={str(b): 0.97 for b in BUCKETS}) for s in range(3)]
    targets = check_targets(aggregate(runs))
    status = {(t["env"], t["variant"], t["target"]): t for t in targets}
    bwt = status[(CS, "memnet", "MemNet BWT >= -0.05")]
    assert (bwt["status"], bwt["detail"]) == (NOT_MEASURED, "its runs report no BWT")
    assert status[(CS, "transformer", "memory-free transformer forgets: BWT <= -0.3")]["status"] == NOT_RUN
    ld_tf = status[(LD, "transformer", "memory-free transformer at chance beyond its window")]
    assert (ld_tf["status"], ld_tf["detail"]) == (NOT_RUN, "no transformer variant in this benchmark")


def test_a_target_its_runs_did_not_measure_names_what_it_asks_for_and_what_they_measured():
    """A tiny NeedleRecall suite (delay 1, a probe at delay 2) printed "its runs report no recall at delay None"."""
    runs = [record(NR, "memnet", s, recall_by_delay={"1": 0.9}, accuracy=0.9, env_kwargs={"delay": 1},
                   probes=[{"env_kwargs": {"delay": 2}, "accuracy": 0.5, "recall_by_delay": {"2": 0.5}}])
            for s in range(3)]
    runs += [record(LD, "memnet", s, accuracy_by_distance={"2048": 0.9}) for s in range(3)]
    targets = {t["env"]: t for t in check_targets(aggregate(runs)) if t["variant"] == "memnet"}
    assert (targets[NR]["status"], targets[NR]["detail"]) == (
        NOT_MEASURED, "its runs report no recall at a delay >= 10 episodes (they measured delays 1, 2 only)")
    assert targets[LD]["detail"] == ("its runs report no accuracy in a bucket up to 1024 (they measured buckets "
                                     "d<=2048 only)")
    context = {"suite": "test", "command": "python -m agents.benchmark", "machine": "2 CPUs", "started": "now",
               "wall_s": 60.0, "workers": 2}
    assert "None" not in markdown(aggregate(runs), list(targets.values()), runs, context)


def test_eta_uses_the_mean_time_of_finished_runs_of_the_same_kind():
    done = [record(LD, "memnet", 0) | {"wall_s": 30.0}, record(LD, "gru", 0) | {"wall_s": 10.0}]
    job = benchmark_runner.Job(LD, "memnet", "memnet", 1, None, [])
    other = benchmark_runner.Job(CS, "lstm", "lstm", 1, None, [])
    assert benchmark_runner.eta_s(done, [job, other], {}, workers=2) == pytest.approx(30.0)  # side by side: 30, 20
    assert benchmark_runner.eta_s([], [job], {}, workers=2) is None


def test_evaluate_env_kwarg_and_memory_lists_are_sweeps():
    grid = override_grid(["env.kwargs.facts_per_episode=1,2", "env.kwargs.distances=[1,2]"])
    assert grid == [({"facts_per_episode": 1, "distances": [1, 2]}, {}),
                    ({"facts_per_episode": 2, "distances": [1, 2]}, {})]
    assert override_grid([]) == [({}, {})]
    grid = override_grid(["memory.reset=never,episode", "env.kwargs.delay=3"])
    assert grid == [({"delay": 3}, {"reset": "never"}), ({"delay": 3}, {"reset": "episode"})]


def test_each_seed_of_a_benchmark_is_a_run_of_that_seed(tmp_path):
    """seeds=3 runs seeds 0, 1, 2 (README: <out>/<env>/<variant>/s<seed>): each folder's run is trained with its own
    seed, so the report's mean and spread over seeds are over different runs, not one run three times."""
    jobs = benchmark.plan({"envs": [LD], "agents": ["lstm"], "seeds": 3}, load_suite("quick"), [], tmp_path)
    assert sorted(job.seed for job in jobs) == [0, 1, 2]
    for job in jobs:
        assert job.run_dir.name == f"s{job.seed}"
        assert [a for a in run_command(job) if a.startswith("seed=")] == [f"seed={job.seed}"]
