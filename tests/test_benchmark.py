"""`python -m agents.benchmark`: aggregation over seeds, target checks, capacity probes, CLI errors, end to end."""

import json
import sys

import pytest
import yaml

from agents import benchmark, benchmark_runner
from agents.benchmark_report import (
    MET,
    MISSED,
    NOT_MEASURED,
    NOT_RUN,
    aggregate,
    capacity_notes,
    check_targets,
    flat_metrics,
    markdown,
)
from agents.evaluate import override_grid
from tests.test_run import TINY_MODEL

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
    assert (ld_tf["status"], ld_tf["detail"]) == (NOT_RUN, "not run")


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
    assert benchmark_runner.eta_s(done, [job, other], {}, workers=2) == pytest.approx((30.0 + 20.0) / 2)
    assert benchmark_runner.eta_s([], [job], {}, workers=2) is None


def test_evaluate_env_kwarg_and_memory_lists_are_sweeps():
    grid = override_grid(["env.kwargs.facts_per_episode=1,2", "env.kwargs.distances=[1,2]"])
    assert grid == [({"facts_per_episode": 1, "distances": [1, 2]}, {}),
                    ({"facts_per_episode": 2, "distances": [1, 2]}, {})]
    assert override_grid([]) == [({}, {})]
    grid = override_grid(["memory.reset=never,episode", "env.kwargs.delay=3"])
    assert grid == [({"delay": 3}, {"reset": "never"}), ({"delay": 3}, {"reset": "episode"})]


@pytest.mark.parametrize("argv, message", [
    (["seeds=0"], "seeds='0': must be an integer >= 1"),
    (["workers=two"], "workers='two'"),
    (["foo=1"], "unknown key 'foo'"),
    (["seed=1"], "use seeds="),
    (["seeds"], "not key=value"),
    (["suite=nope"], "unknown suite 'nope'"),
    (["envs=Nope-v0"], "Nope-v0 is not in the suite"),
    (["agents=cnn"], "cnn is not in the suite"),
    (["train.foo=1"], "unknown config key 'train.foo'"),
    (["envs=LongDependency-v0", "env.kwargs.delay=3"], "unknown option(s) ['delay']"),
    # an empty item was dropped: agents=memnet,,transformer ran the whole suite's envs with two variants (and
    # agents=, ran every variant), while envs= alone was refused
    (["agents=memnet,,transformer"], "agents=memnet,,transformer: item 2 is empty; separate the names with single"),
    (["agents=,"], "agents=,: item 1 is empty"),
    (["envs=NeedleRecall-v0,"], "envs=NeedleRecall-v0,: item 2 is empty"),
    (["envs="], "envs= is empty; name at least one"),
    (["envs=NeedleRecall-v0", "envs=LongDependency-v0"], "envs= is given twice ('NeedleRecall-v0', 'LongDependency"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    assert benchmark.main([*argv, f"out={tmp_path / 'bench'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "bench").exists()  # nothing starts before every config is valid


def write_suite(path, **fields):
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def test_bad_suite_files_and_a_used_out_folder_exit_2(tmp_path, capsys):
    bad = write_suite(tmp_path / "a.yaml", envs={LD: {}}, variants={"x": {"agent": "cnn"}})
    assert benchmark.main([f"suite={bad}"]) == 2
    assert "variants.x.agent='cnn'" in capsys.readouterr().err
    bad = write_suite(tmp_path / "b.yaml", envs={LD: {"budget": 1}}, variants={"x": {"agent": "gru"}})
    assert benchmark.main([f"suite={bad}"]) == 2
    assert f"envs.{LD}.budget is not a field (fields: overrides, probes)" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "results.json").write_text("{}")
    assert benchmark.main([f"out={tmp_path / 'used'}"]) == 2
    assert "is not empty" in capsys.readouterr().err



def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_out_that_cannot_be_a_folder_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out, message in [(tmp_path / "afile", "afile' is a file, not a folder; choose a new folder"),
                         (tmp_path / "afile" / "sub", "sub': cannot create the folder (Not a directory)")]:
        assert benchmark.main(["envs=LongDependency-v0", "agents=lstm", f"out={out}"]) == 2, out
        assert message in _one_error_line(capsys)


def test_a_suite_file_that_is_not_a_mapping_or_not_text_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "str.yaml").write_text("hello\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage\x80")
    for name, message in [("str.yaml", "the file must be a mapping of fields (description, seeds, "),
                          ("list.yaml", "mapping of fields (description, seeds, timeout_s, overrides, envs, variants, "
                                        "targets); got a list"),
                          ("bin.yaml", "cannot be read (not UTF-8 text); a suite is a YAML text file")]:
        assert benchmark.main([f"suite={tmp_path / name}", f"out={tmp_path / 'bench'}"]) == 2
        assert message in _one_error_line(capsys)
    assert not (tmp_path / "bench").exists()


TINY_NR = ["env.kwargs.delay=1", "env.kwargs.haystack_length=24", "env.kwargs.facts_per_episode=1",
           "env.kwargs.train_facts=16", "env.kwargs.fresh_facts=8", "train.episodes=2"]
TINY_LD = ["env.kwargs.distances=[1,2,4,8,16]", "env.kwargs.queries_per_episode=4", "env.kwargs.episode_length=64",
           "train.episodes=1"]


def test_a_failed_run_is_reported_and_the_rest_goes_on(tmp_path, monkeypatch, capsys):
    suite = write_suite(tmp_path / "s.yaml", overrides=TINY_MODEL, envs={LD: {"overrides": TINY_LD}},
                        variants={"lstm": {"agent": "lstm"}, "gru": {"agent": "gru"}})
    real = benchmark_runner.run_command

    def fail_lstm(job):
        if job.variant == "lstm":
            return [sys.executable, "-c", "import sys; print('boom: lstm broke', file=sys.stderr); sys.exit(3)"]
        return real(job)

    monkeypatch.setattr(benchmark_runner, "run_command", fail_lstm)
    out = tmp_path / "bench"
    assert benchmark.main([f"suite={suite}", "seeds=1", f"out={out}"]) == 1
    printed = capsys.readouterr().out
    assert "failed (exit code 3" in printed and "lstm" in printed
    runs = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["lstm"]["status"] == "failed" and "boom: lstm broke" in runs["lstm"]["error"]
    assert runs["gru"]["status"] == "ok" and runs["gru"]["metrics"]["params"] > 0
    text = (out / "results.md").read_text()
    assert "0/1 (1 FAILED)" in text and "boom: lstm broke" in text


def test_end_to_end_tiny_suite_writes_tables_json_and_plots_with_the_runs_numbers(tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.yaml", overrides=TINY_MODEL,
                        envs={NR: {"overrides": TINY_NR,
                                   "probes": {"variants": ["memnet"], "vary": {"facts_per_episode": [1, 2]}}}},
                        variants={"memnet": {"agent": "memnet"}, "transformer": {"agent": "transformer"}})
    out = tmp_path / "bench"
    assert benchmark.main([f"suite={suite}", "seeds=1", "workers=2", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "[2/2]" in printed and "targets:" in printed
    results = json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["status"]) for r in results["runs"]} == {("memnet", "ok"), ("transformer", "ok")}
    for r in results["runs"]:
        run_dir = out / NR / r["variant"] / "s0"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert r["metrics"] == metrics  # every number of the run is in results.json
        assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard sees each run under the bench folder
        cell = results["aggregate"][NR][r["variant"]]["metrics"]
        assert cell["accuracy"]["mean"] == pytest.approx(metrics["accuracy"])
        assert cell["params"]["mean"] == metrics["params"]
    memnet = results["aggregate"][NR]["memnet"]["metrics"]
    assert set(k for k in memnet if k.startswith("recall_facts")) == {"recall_facts1", "recall_facts2"}  # delay 1
    assert results["runs"][0]["chance"] == pytest.approx(1 / (128 - 4))
    text = (out / "results.md").read_text()
    assert f"## {NR}" in text and "## Targets" in text and "Recall by facts held" in text
    assert f"{memnet['accuracy']['mean']:.3f}" in text and f"{memnet['params']['mean']:,.0f}" in text
    for plot in ("recall_vs_delay", "recall_vs_facts_held"):
        assert (out / "plots" / f"{NR}_{plot}.png").stat().st_size > 1000


@pytest.mark.parametrize("script, args, message", [
    ("envs.py", ["--repeats", "0"], "argument --repeats: '0': must be an integer >= 1"),  # was StatisticsError
    ("envs.py", ["--seconds", "-1"], "argument --seconds: '-1': must be a finite number > 0"),  # was 0 steps/s
    ("slots.py", ["--heads", "3"], "memory.read_heads=3: must be >= 1 and divide dim=128"),  # was a traceback
    ("agents.py", ["--env", "Foo"], "--env Foo: not a registered env id"),  # was CalledProcessError
    ("memory.py", ["--entries", "x"], "argument --entries: 'x' is not an integer >= 1"),
])
def test_benchmark_scripts_refuse_bad_arguments_with_their_usage_line(script, args, message):
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("acting", ["auto", "step"])
def test_the_agent_throughput_benchmark_measures_the_acting_it_names(acting):
    """benchmarks/agents.py (the README's throughput tables): chunk acting (auto) makes no acting call, step acting
    one per step scored in some lane (ContinualShift asks every third step: 50 per 151-step episode)."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "agents.py"
    done = subprocess.run([sys.executable, str(path), "--agents", "transformer", "--episodes", "1", "--warmup", "0",
                           "--lanes", "2", "--threads", "1", "--acting", acting],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"train.acting={acting}" in done.stdout
    calls = 0 if acting == "auto" else 50
    assert f"where the time goes, per episode: {calls} acting calls, 5 learning chunks" in done.stdout
    row = next(ln for ln in done.stdout.splitlines() if ln.startswith("| transformer | 462,592 |"))
    cells = row.split("|")
    assert float(cells[3].replace(",", "")) > 0 and float(cells[5].replace(",", "")) > 0  # trainer, plain batches
    assert cells[4].strip() == cells[6].strip() == "1.00x"  # the transformer against itself


@pytest.mark.parametrize("clip", ["1.0", "0"])  # 0: no clipping, as in the trainer (clipping to 0 zeroed gradients)
def test_plain_batches_learn_and_write_every_position_with_the_state_carried(tmp_path, clip):
    """The plain-batch reference of benchmarks/agents.py trains the trainer's own model and optimiser: weights move,
    MemNet writes every position of every batch (warm-up included) and the state is carried from chunk to chunk."""
    import importlib.util
    from pathlib import Path

    import torch

    from agents.config import load_config
    from agents.trainer import Trainer

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "agents.py"
    spec = importlib.util.spec_from_file_location("benchmarks_agents", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = load_config([*TINY_MODEL, "env=LongDependency-v0", "memory.store_replace=0", "train.lanes=2",
                       "train.chunk=8", f"train.grad_clip={clip}", f"run_dir={tmp_path}"])
    trainer = Trainer(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    pos = int(trainer.state["ctrl.pos"][0])
    assert module.plain_batches(trainer, 3, warmup=1) > 0
    assert len(trainer.model.store) == 4 * 2 * 8  # (warm-up + 3 chunks) x lanes x chunk
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True)
               if p.grad is not None)
    assert int(trainer.state["ctrl.pos"][0]) == pos  # the trainer's own state is not advanced


def test_a_full_disk_when_the_results_are_written_is_one_line(tmp_path, monkeypatch, capsys):
    """The suite's last step, on a full disk, ended in write_json_atomic's traceback."""
    import errno
    import os

    suite = write_suite(tmp_path / "s.yaml", overrides=TINY_MODEL, envs={LD: {"overrides": TINY_LD}},
                        variants={"lstm": {"agent": "lstm"}})
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout: ([], False))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(benchmark.report, "write_results", full)
    out = tmp_path / "bench"
    assert benchmark.main([f"suite={suite}", "seeds=1", f"out={out}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot write the results in {out} (No space left on device); free space and rerun"
