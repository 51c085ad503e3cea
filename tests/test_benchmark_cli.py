"""`python -m agents.benchmark` CLI: bad input and suite files exit 2 with one line, failed runs, end to end."""

import json
import sys

import pytest
import yaml

from agents import benchmark, benchmark_runner
from agents.benchmark_suite import load_suite
from tests.test_benchmark import LD, NR
from tests.test_run import TINY_MODEL
from tests.test_run_disk_full import full_disk_at


@pytest.mark.parametrize("argv, message", [
    (["seeds=0"], "seeds='0': must be an integer >= 1"),
    (["seeds=99999999999"], "seeds=99999999999: must be at most 10,000"),  # built its plan until memory ran out
    (["workers=100000000"], "workers=100000000: must be at most 1,024"),  # started every run at once
    (["workers=two"], "workers='two'"),
    (["foo=1"], "unknown key 'foo'"),
    (["seed=1"], "use seeds="),
    (["seeds"], "not key=value"),
    (["suite=nope"], "unknown suite 'nope'"),
    (["envs=Nope-v0"], "Nope-v0 is not in the suite"),
    (["agents=cnn"], "cnn is not in the suite"),
    (["train.foo=1"], "unknown config key 'train.foo'"),
    (["envs=LongDependency-v0", "env.kwargs.delay=3"], "unknown config key 'env.kwargs.delay': LongDependency-v0 "
                                                       "has no option 'delay'"),
    # an empty item was dropped: agents=memnet,,transformer ran the whole suite's envs with two variants (and
    # agents=, ran every variant), while envs= alone was refused
    (["agents=memnet,,transformer"], "agents=memnet,,transformer: item 2 is empty; separate the names with single"),
    (["agents=,"], "agents=,: item 1 is empty"),
    (["envs=NeedleRecall-v0,"], "envs=NeedleRecall-v0,: item 2 is empty"),
    (["envs="], "envs= is empty; name at least one"),
    (["envs=NeedleRecall-v0", "envs=LongDependency-v0"], "envs= is given twice ('NeedleRecall-v0', 'LongDependency"),
    # a name twice was taken once, silently
    (["agents=memnet,lstm,memnet"], "agents=memnet,lstm,memnet: 'memnet' is given twice; give each value once"),
    (["envs=NeedleRecall-v0,NeedleRecall-v0"], "'NeedleRecall-v0' is given twice; give each value once"),
    # a run-config key twice: the last one won silently, and the whole quick suite (63 runs) started with it
    (["train.episodes=1", "train.episodes=2"], "train.episodes= is given 2 times ('1', '2'); give it once"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    assert benchmark.main([*argv, f"out={tmp_path / 'bench'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "bench").exists()  # nothing starts before every config is valid


def test_device_cuda_without_cuda_is_refused_before_any_run_starts(capsys, tmp_path):
    """Every run started and failed on it (exit 1 at the end, each run's log saying why)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is visible here: device=cuda is valid")
    argv = ["envs=LongDependency-v0", "agents=gru", "seeds=1", "workers=1", "device=cuda"]
    assert benchmark.main([*argv, f"out={tmp_path / 'bench'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: device=cuda but no CUDA device is visible; use device=auto or device=cpu"
    assert not (tmp_path / "bench").exists()  # no run started


def test_sizes_past_this_machines_memory_are_refused_before_any_run_starts(capsys, tmp_path):
    """Every run started and failed on them, each saying so only in its log; the model of each (env, variant) is
    made once, on the CPU, as benchmarks/agents.py checks its rows. 224 TiB: beyond any machine's address space."""
    argv = ["envs=LongDependency-v0", "agents=gru,memnet", "seeds=1", "memory.store_capacity=10000000000"]
    assert benchmark.main([*argv, f"out={tmp_path / 'bench'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: LongDependency-v0 / memnet: its model does not fit in memory (an allocation of ")
    assert "memory.store_capacity=10000000000" in err and err.endswith("; lower them (in the suite or on the command "
                                                                       "line)")
    assert len(err.splitlines()) == 1 and not (tmp_path / "bench").exists()  # no run started


def test_a_cold_tier_past_the_disk_is_one_line_before_any_run_starts(capsys, tmp_path):
    """The cache's ColdTierError (an OSError) escaped the benchmark's model check as a traceback and exit 1; before
    that check every run started and failed on it in its log. 4e9 entries: 5.6 TiB, past any /tmp here."""
    argv = ["envs=LongDependency-v0", "agents=memnet", "seeds=1", "memory.cache_cold=4000000000"]
    assert benchmark.main([*argv, f"out={tmp_path / 'bench'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: LongDependency-v0 / memnet: its model: the cache's cold tier needs ")
    assert "lower memory.cache_cold (4,000,000,000 entries, " in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "bench").exists()  # no run started


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
    assert capsys.readouterr().err == f"error: out={str(tmp_path / 'used')!r} is not empty; choose a new folder\n"


def test_a_used_out_of_a_killed_benchmark_says_how_far_its_runs_got(tmp_path):
    """The out= of a benchmark killed before its results (no results.json): its runs by how far they got."""
    out = tmp_path / "bench"
    for seed, files in enumerate([["metrics.json", "checkpoints/last.pt"], ["checkpoints/last.pt"], []]):
        for name in ["run.log", *files]:
            (out / LD / "memnet" / f"s{seed}" / name).parent.mkdir(parents=True, exist_ok=True)
            (out / LD / "memnet" / f"s{seed}" / name).write_text("x")
    with pytest.raises(benchmark.ConfigError) as err:
        benchmark.check_out(out)
    assert str(err.value) == (
        f"out={str(out)!r} is not empty: it holds a benchmark stopped before it wrote its results (killed?): 1 of its "
        f"3 started runs finished, 1 stopped part way (python -m agents.run resume=<run> continues one, e.g. "
        f"resume={out / LD / 'memnet' / 's1'}), 1 before their first checkpoint; a benchmark cannot be resumed; "
        "choose a new folder")
    (out / LD / "memnet" / "s1" / "checkpoints" / "last.pt").unlink()
    (out / LD / "memnet" / "s2" / "run.log").unlink()
    with pytest.raises(benchmark.ConfigError, match=r"1 of its 2 started runs finished, 0 stopped part way, 1 before "
                                                    r"their first checkpoint; a benchmark cannot be resumed; choose"):
        benchmark.check_out(out)



@pytest.mark.parametrize("fields, message", [
    # NaN timed every run out at once; .inf a thread's OverflowError traceback per run, and no limit
    ({"timeout_s": float("nan")}, "timeout_s=nan: must be > 0 and at most 10,000,000 seconds, or null for none"),
    ({"timeout_s": float("inf")}, "timeout_s=inf: must be > 0 and at most 10,000,000 seconds"),
    # "at chance" = accuracy <= chance + margin: NaN and -1 judged no baseline at chance, 5 every one
    ({"targets": {"chance_margin": float("nan")}}, "targets.chance_margin=nan: must be a number in [0, 1)"),
    ({"targets": {"chance_margin": -1}}, "targets.chance_margin=-1.0: must be a number in [0, 1)"),
    ({"targets": {"chance_margin": 5}}, "targets.chance_margin=5.0: must be a number in [0, 1)"),
    # a variant's name is its runs' folder: '..' wrote every env's runs into <out>/s<seed>, 'a/b' nested folders
    ({"variants": {"..": {"agent": "lstm"}}}, "variants.'..': a variant's name is a folder of its runs"),
    ({"variants": {"a/b": {"agent": "lstm"}}}, "variants.'a/b': a variant's name is a folder of its runs"),
    ({"variants": {"": {"agent": "lstm"}}}, "variants.'': a variant's name is a folder of its runs"),
    ({"variants": {"a,b": {"agent": "lstm"}}}, "variants.'a,b': a variant's name is a folder of its runs and an "
     "item of agents="),
    # a list for an override: `"=" in ['=']` held and the next check's .lstrip was an AttributeError traceback
    ({"variants": {"lstm": {"agent": "lstm", "overrides": [["="]]}}}, "variants.lstm.overrides: overrides are "
     "key=value strings; got [['=']]"),
])
def test_suite_fields_that_would_misjudge_or_misplace_runs_exit_2(tmp_path, capsys, fields, message):
    suite = write_suite(tmp_path / "s.yaml", **({"envs": {LD: {}}, "variants": {"lstm": {"agent": "lstm"}}} | fields))
    assert benchmark.main([f"suite={suite}", f"out={tmp_path / 'bench'}"]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "bench").exists()


def test_a_suite_file_that_gives_a_key_twice_exits_2(tmp_path, capsys):
    """The second of two equal keys replaced the first without a word: a second entry of one env dropped the
    first's overrides (its budget), a second seeds: the first. A YAML merge (<<) may still set a merged key."""
    (tmp_path / "env.yaml").write_text(f"envs:\n  {LD}: {{overrides: [train.episodes=1]}}\n  {LD}: {{}}\n"
                                       "variants: {lstm: {agent: lstm}}\n")
    assert benchmark.main([f"suite={tmp_path / 'env.yaml'}", f"out={tmp_path / 'bench'}"]) == 2
    assert f"not valid YAML (key '{LD}' is given twice (line 3); give it once)" in _one_error_line(capsys)
    (tmp_path / "merge.yaml").write_text(f"envs: {{{LD}: {{}}}}\nvariants:\n  a: &a {{agent: lstm}}\n"
                                         "  b: {<<: *a, agent: gru}\n")
    assert load_suite(str(tmp_path / "merge.yaml")).variants["b"].agent == "gru"


@pytest.mark.parametrize("env, vary", [(LD, {"vocab_size": [512]}), ("ContinualShift-v0", {"revisit": [True]}),
                                       ("ContinualShift-v0", {"num_tasks": [3]})])
def test_a_probe_that_agents_evaluate_cannot_restore_the_run_on_exits_2(tmp_path, capsys, env, vary):
    """Every probed variant's runs trained to the end, then each probe failed in agents.evaluate (another vocabulary
    or task schedule than the weights and accuracy matrix)."""
    suite = write_suite(tmp_path / "s.yaml", envs={env: {"probes": {"variants": ["lstm"], "vary": vary}}},
                        variants={"lstm": {"agent": "lstm"}})
    assert benchmark.main([f"suite={suite}", f"out={tmp_path / 'bench'}"]) == 2
    key, values = next(iter(vary.items()))
    assert f"envs.{env}.probes.vary.{key}={values[0]!r}: agents.evaluate cannot restore a run's weights and " \
        "accuracy matrix on an env with another vocab_size or task schedule" in _one_error_line(capsys)
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("probes, message", [
    ({"variants": ["lstm"], "vary": {"delay": [2, 3, 2]}}, "probes.vary.delay: 2 is given twice; give each value once"),
    ({"variants": ["lstm", "lstm"], "vary": {"delay": [2]}}, "probes.variants: 'lstm' is given twice"),
])
def test_a_probe_value_or_variant_given_twice_exits_2(tmp_path, capsys, probes, message):
    """delay: [2, 3, 2] evaluated every probed run twice with delay=2 (the same probe, twice the time)."""
    suite = write_suite(tmp_path / "s.yaml", envs={NR: {"probes": probes}}, variants={"lstm": {"agent": "lstm"}})
    assert benchmark.main([f"suite={suite}", f"out={tmp_path / 'bench'}"]) == 2
    assert f"envs.{NR}.{message}" in _one_error_line(capsys)
    assert not (tmp_path / "bench").exists()


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


def test_a_full_disk_after_results_json_points_at_the_rebuild_not_a_rerun(tmp_path, monkeypatch, capsys):
    """results.json is written first and holds every run's record: a full disk at results.md or a plot said "free
    space and rerun", the whole benchmark again, where agents.benchmark_report writes the rest from it."""

    from agents.benchmark_rebuild import main as rebuild

    suite = write_suite(tmp_path / "s.yaml", overrides=TINY_MODEL, envs={LD: {"overrides": TINY_LD}},
                        variants={"lstm": {"agent": "lstm"}})
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout: ([], False))
    full_disk_at(monkeypatch, "results.md")
    out = tmp_path / "bench"
    assert benchmark.main([f"suite={suite}", "seeds=1", f"out={out}"]) == 1
    assert capsys.readouterr().err.strip() == (f"error: cannot write the results in {out} (No space left on "
                                               f"device); free space, then write them again with: python -m "
                                               f"agents.benchmark_report {out}")
    saved = (out / "results.json").read_bytes()
    assert not (out / "results.md").exists() and not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    assert rebuild([str(out)]) == 0  # the command the line gives
    assert (out / "results.md").is_file() and (out / "results.json").read_bytes() == saved


def test_a_benchmark_of_presets_only_prints_no_empty_targets_table_and_counts_one_run(tmp_path, monkeypatch, capsys):
    """A preset has no targets: results.md held the targets table's header with no row under it, the console an
    empty "targets:" section; one run and one worker read "1 runs" and "1 runs at a time"."""
    from tests.test_benchmark import record

    easy = "LongDependency-Easy-v0"
    suite = write_suite(tmp_path / "s.yaml", overrides=TINY_MODEL, envs={easy: {"overrides": ["train.episodes=1"]}},
                        variants={"lstm": {"agent": "lstm"}})
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout: ([record(easy, "lstm", 0)], False))
    out = tmp_path / "bench"
    assert benchmark.main([f"suite={suite}", "seeds=1", "workers=1", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert f"\ntargets: none\n  No targets for {easy}: the issue states them for the base envs' settings.\n" in printed
    assert "\n1 run (0 failed) in " in printed and "1 runs" not in printed
    md = (out / "results.md").read_text()
    assert f"## Targets\n\nNo targets for {easy}:" in md and "| target |" not in md
    assert "1 run at a time" in md and "1 runs" not in md
