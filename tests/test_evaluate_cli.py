"""`python -m agents.evaluate` at its edges: arguments it does not take, values it does not interpolate, a cold
tier that does not fit where it is evaluated, and tasks with no query scored; one line each, the run untouched."""

import json
import math
import os
from collections import namedtuple

import pytest

from agents import evaluate, run
from agents.config import ConfigError
from agents.trainer import Trainer
from tests.test_run import tiny


def _files(run_dir):
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def refused(capsys, message: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    # was "expected checkpoint=<path>, got '+env.kwargs.delay'" and the usage on a second line
    (["checkpoint=RUN", "+env.kwargs.delay=1"], "drop the '+': write env.kwargs.delay=1"),
    (["checkpoint=RUN", "++memory.reset=task"], "drop the '++': write memory.reset=task"),
    (["checkpoint=RUN", "~memory.reset"], "neither adds nor deletes keys; set it: memory.reset=<value>"),
    (["checkpoint=RUN", "memory.reset"], "memory.reset: no value; write memory.reset=<value>"),
    (["RUN"], "arguments are key=value; write checkpoint="),
    (["checkpoint=RUN", "seed=3"], "'seed=3' is not an argument of agents.evaluate"),
    (["checkpoint=RUN", "env.id=NeedleRecall-v0"], "it takes checkpoint=, device=, out=, threads=, env.kwargs."),
    (["out=x.json"], "checkpoint= is missing; name the run to evaluate: checkpoint=<run folder"),
    ([], "checkpoint= is missing"),
])
def test_an_argument_evaluate_does_not_take_is_one_line(memnet_run, capsys, argv, message):
    assert evaluate.main([a.replace("RUN", str(memnet_run)) for a in argv]) == 2
    refused(capsys, message)


def test_a_memory_value_that_does_not_parse_names_the_memory_form(memnet_run, capsys):
    assert evaluate.main([f"checkpoint={memnet_run}", "memory.reset=~"]) == 2
    err = refused(capsys, "write memory.<key>=<value> or a comma list (memory.reset=never,episode)")
    assert "env.kwargs" not in err  # was "write env.kwargs.<option>=<value> or a comma list"
    assert evaluate.main([f"checkpoint={memnet_run}", "env.kwargs.num_tasks=[1"]) == 2
    refused(capsys, "write env.kwargs.<option>=<value> or a comma list")


@pytest.mark.parametrize("override", [
    # resolved against the run's config: was exit 0, with "${env.kwargs.keys_per_task}" recorded as the value
    "env.kwargs.trials_per_episode=${env.kwargs.keys_per_task}",
    "env.kwargs.num_tasks=[${seed}]",
    "memory.reset=never,${memory.reset}",  # refused before the sweep's first evaluation
    r"env.kwargs.num_tasks=\${seed}",  # escaped: agents.run refuses a literal '${' (config.yaml reads it back)
])
def test_an_interpolation_in_an_evaluation_value_is_one_line(memnet_run, capsys, override):
    before = _files(memnet_run)
    assert evaluate.main([f"checkpoint={memnet_run}", override, "out=interp.json"]) == 2
    refused(capsys, "an evaluation takes plain values, not interpolations ('${...}'); write the value itself")
    assert _files(memnet_run) == before
    with pytest.raises(ConfigError, match="not interpolations"):
        evaluate.evaluate(memnet_run, env_kwargs={"num_tasks": "${seed}"}, out=None)
    with pytest.raises(ConfigError, match="memory.reset='.{reset}': an evaluation takes plain values"):
        evaluate.evaluate(memnet_run, memory={"reset": "${reset}"}, out=None)


def test_a_cold_tier_without_room_on_this_disk_is_one_line(memnet_run, capsys, monkeypatch):
    """The run's memory.cache_cold, evaluated where the temp folder's disk has less room: was ColdTierError's
    traceback. The fix it names is one an evaluation has (it refuses another memory.cache_cold)."""
    from memory import cache_cold_dirs

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_cold_dirs.shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 4096, 4096))
    before = _files(memnet_run)
    for sweep in ([], ["memory.reset=never,episode"]):
        assert evaluate.main([f"checkpoint={memnet_run}", *sweep]) == 2
        err = refused(capsys, "error: the cache's cold tier needs ")
        assert "which has 4 KiB free; an evaluation keeps the run's memory.cache_cold: set TMPDIR to a folder on a " \
               "bigger disk" in err and "lower memory.cache_cold" not in err
    assert _files(memnet_run) == before
    with pytest.raises(ConfigError, match="set TMPDIR"):  # the Python API: ConfigError, as for any other size
        evaluate.evaluate(memnet_run, out=None)
    assert evaluate.main([f"checkpoint={memnet_run}", "memory.cache_cold=1"]) == 2  # the other fix is refused
    refused(capsys, "memory.cache_cold: the trained weights and saved memory were made with the run's value")


def test_a_cold_tier_file_the_file_system_refuses_is_one_line(memnet_run, capsys, monkeypatch):
    from memory import cache_cold_dirs

    def refuse(*args, **kwargs):
        raise OSError(27, "File too large")

    monkeypatch.setattr(cache_cold_dirs.np, "memmap", refuse)
    assert evaluate.main([f"checkpoint={memnet_run}"]) == 2
    refused(capsys, "cannot be made in ")


def test_a_cold_tier_error_carries_its_facts_and_the_lines_are_built_from_them(tmp_path, monkeypatch):
    """evaluate split ColdTierError's text at "; lower memory.cache_cold" to reword it; the facts are attributes."""
    import pickle

    from memory import cache_cold_dirs
    from memory.cache_cold_dirs import ColdTierError, map_cold_file

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_cold_dirs.shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 4096, 4096))
    with pytest.raises(ColdTierError) as full:
        map_cold_file(tmp_path / "cold.f32", (512, 1, 4))  # 512 x 4 float32: 8 KiB
    exc = full.value
    assert (exc.folder, exc.entries, exc.needed, exc.free, exc.reason) == (tmp_path, 512, 8192, 4096, None)
    assert str(exc) == f"the cache's cold tier needs 8 KiB on disk in {tmp_path}, which has 4 KiB free; lower " \
                       "memory.cache_cold (512 entries, 8 KiB) or set TMPDIR to a folder on a bigger disk"
    assert exc.problem == str(exc).split("; ")[0] and exc.size == "512 entries, 8 KiB"
    back = pickle.loads(pickle.dumps(exc))  # (Ray Tune's trials pickle errors) the facts, not the text, go across
    assert (type(back), str(back), back.folder, back.needed, back.free) == (ColdTierError, str(exc), tmp_path, 8192,
                                                                             4096)
    monkeypatch.setattr(cache_cold_dirs.shutil, "disk_usage", lambda path: usage(2**40, 0, 2**40))

    def refuse(*args, **kwargs):
        raise OSError(27, "File too large")

    monkeypatch.setattr(cache_cold_dirs.np, "memmap", refuse)
    with pytest.raises(ColdTierError) as refused_file:
        map_cold_file(tmp_path / "cold.f32", (512, 1, 4))
    exc = refused_file.value
    assert (exc.folder, exc.entries, exc.needed, exc.free, exc.reason) == (tmp_path, 512, 8192, 2**40, "File too large")
    assert exc.problem == f"the cache's cold tier file cannot be made in {tmp_path} (File too large)"
    # the line evaluate prints comes from the facts: a message worded otherwise changes nothing
    exc.args = ("reworded",)
    assert evaluate.cold_tier_line(exc) == f"{exc.problem}; an evaluation keeps the run's memory.cache_cold: set " \
                                          "TMPDIR to a folder on a bigger disk"


def test_a_resumed_run_whose_cold_tier_has_no_room_names_the_fixes_a_resumed_run_has(memnet_run, capsys, monkeypatch):
    """Was "...; lower memory.cache_cold (...) or set TMPDIR ... (a resumed run keeps its sizes: ...)": resume=
    refuses memory.cache_cold, so lowering it is a new run's fix."""
    from memory import cache_cold_dirs

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_cold_dirs.shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 4096, 4096))
    before = _files(memnet_run)
    assert run.main([f"resume={memnet_run}"]) == 2
    err = refused(capsys, "error: the cache's cold tier needs ")
    assert err.endswith(", which has 4 KiB free; a resumed run keeps its memory.cache_cold (64 entries, 32 KiB): set "
                        "TMPDIR to a folder on a bigger disk, or start a new run with "
                        f"config={memnet_run}/config.yaml and a lower one"), err
    assert "lower memory.cache_cold" not in err and "Traceback" not in err
    assert _files(memnet_run) == before


@pytest.mark.parametrize("accuracy, mean, shown", [
    ({0: 0.5, 1: math.nan}, 0.5, "  task 1: n/a (no query scored)\n  mean: 0.500"),  # was mean NaN, JSON null
    ({0: math.nan, 1: math.nan}, None, "  mean: n/a"),  # was a NaN mean
])
def test_the_mean_accuracy_skips_tasks_with_no_query_scored_as_the_runs_metrics_do(memnet_run, capsys, monkeypatch,
                                                                                  accuracy, mean, shown):
    monkeypatch.setattr(Trainer, "evaluate_all", lambda self: dict(accuracy))
    assert evaluate.main([f"checkpoint={memnet_run}", "out=nan.json"]) == 0
    assert shown in capsys.readouterr().out

    def no_nan(text):
        raise AssertionError(f"{text} in the JSON")

    result = json.loads((memnet_run / "nan.json").read_text(), parse_constant=no_nan)
    assert result["accuracy"] == mean and result["accuracy_by_task"]["1"] is None
    assert evaluate.evaluate(memnet_run, out=None)["accuracy"] == mean


def test_a_sweep_reads_back_as_one_evaluation_per_combination(memnet_run, capsys):
    argv = [f"checkpoint={memnet_run / 'checkpoints' / 'last.pt'}", "memory.reset=never,episode",
            "env.kwargs.trials_per_episode=8,4", "out=évals/sweep ü.json"]
    assert evaluate.main(argv) == 0
    results = json.loads((memnet_run / "évals" / "sweep ü.json").read_text())["evaluations"]
    assert [(r["memory"]["reset"], r["env_kwargs"]["trials_per_episode"]) for r in results] == \
        [("never", 8), ("never", 4), ("episode", 8), ("episode", 4)]
    assert all(r["accuracy"] is not None and 0 <= r["accuracy"] <= 1 for r in results)
    out = capsys.readouterr().out
    assert out.count("mean: ") == 4
    assert out.splitlines()[-1] == f"written to {memnet_run / 'évals' / 'sweep ü.json'}"  # not where it ran


@pytest.mark.parametrize("target", ["other run's metrics.json", "other run's checkpoint", "a fifo", "a dangling link",
                                    "a text file"])
def test_out_writes_over_no_existing_file_but_an_earlier_evaluation(memnet_run, tmp_path, capsys, target):
    """out= named another run's metrics.json or checkpoint (written over, exit 0), or /dev/null: os.replace put
    the JSON in the device's place."""
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "metrics.json").write_text('{"ACC": 0.5}')
    (other / "checkpoints" / "last.pt").write_bytes(b"weights")
    path = {"other run's metrics.json": other / "metrics.json",
            "other run's checkpoint": other / "checkpoints" / "last.pt",
            "a fifo": tmp_path / "fifo", "a dangling link": tmp_path / "link.json",
            "a text file": tmp_path / "notes"}[target]
    if target == "a fifo":
        os.mkfifo(path)
    elif target == "a dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif target == "a text file":
        path.write_text("my notes")
    before = _files(tmp_path)
    for sweep in ([], ["memory.reset=never,episode"]):
        assert evaluate.main([f"checkpoint={memnet_run}", f"out={path}", *sweep]) == 2
        refused(capsys, "exists and is not an earlier evaluation's JSON; the evaluation writes over no other file")
    assert _files(tmp_path) == before and (path.is_fifo() or path.is_symlink() or path.is_file())
    assert evaluate.main([f"checkpoint={memnet_run}", f"out={tmp_path / 'eval.json'}"]) == 0  # new, then again
    assert evaluate.main([f"checkpoint={memnet_run}", f"out={tmp_path / 'eval.json'}", "memory.reset=never,task"]) == 0
    assert evaluate.main([f"checkpoint={memnet_run}", f"out={tmp_path / 'eval.json'}"]) == 0  # over a sweep's


@pytest.mark.parametrize("overrides, message", [
    (["env.kwargs.trials_per_episode=interval(2,5)"], "a sweep here names its values: a comma list, range() or "
                                                      "choice() (env.kwargs.trials_per_episode=1,2,4)"),
    (["memory.store_threads=glob(*)"], "a sweep here names its values"),  # was Hydra's "ConfigLoader is not set"
    # was a MemoryError traceback
    (["env.kwargs.trials_per_episode=range(1,1000000000)"], ": 10,001+ evaluations; a sweep runs at most 10,000"),
    (["env.kwargs.trials_per_episode=range(1,200)", "memory.reset=never,episode,task",
      "memory.store_threads=range(1,20)"], ": 199 x 3 x 19 evaluations; a sweep runs at most 10,000: give fewer"),
])
def test_a_sweep_that_names_no_values_or_too_many_is_one_line(memnet_run, capsys, overrides, message):
    assert evaluate.main([f"checkpoint={memnet_run}", *overrides]) == 2
    refused(capsys, message)


def test_a_home_folder_path_is_expanded_as_agents_run_does(memnet_run, tmp_path, monkeypatch):
    """checkpoint=~/... found no checkpoint, out=~/x.json made a folder named '~' in the run folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    link = tmp_path / "linked"
    link.symlink_to(memnet_run)
    assert evaluate.main(["checkpoint=~/linked", f"out=~/{'é'}.json"]) == 0
    assert (tmp_path / "é.json").is_file() and not (memnet_run / "~").exists()
    assert evaluate.evaluate("~/linked", out="~/api.json")["checkpoint"] == str(memnet_run.resolve())
    assert (tmp_path / "api.json").is_file()


def test_a_store_setting_for_a_run_without_a_store_is_one_line(tmp_path, capsys):
    """A GRU (or memory.store=false) run has no store: memory.store_* was accepted and recorded as a change."""
    run_dir = tmp_path / "gru"
    assert run.main(tiny("ContinualShift-v0", "gru", run_dir, "train.episodes=1")) == 0
    capsys.readouterr()
    for sweep in (["memory.store_hnsw_ef_search=5"], ["memory.reset=never,episode", "memory.store_threads=2"]):
        assert evaluate.main([f"checkpoint={run_dir}", *sweep]) == 2
        refused(capsys, "this run (gru, memory.store=False) has no store, so it would change nothing; drop it")
    assert evaluate.main([f"checkpoint={run_dir}", "memory.reset=episode", "out=reset.json"]) == 0  # a GRU's state
    assert json.loads((run_dir / "reset.json").read_text())["memory"] == {"reset": "episode"}
    with pytest.raises(ConfigError, match="evaluate: checkpoint=None; pass the run folder"):
        evaluate.evaluate(None)


@pytest.mark.parametrize("arg", ["out=${oc.env:HOME}/x.json", "checkpoint=${oc.env:HOME}"])
def test_paths_with_interpolations_are_refused(memnet_run, capsys, arg):
    """out=${oc.env:HOME}/x.json wrote <run>/${oc.env:HOME}/x.json, a folder named so in the run folder."""
    if arg.startswith("out="):
        argv = [f"checkpoint={memnet_run}", arg]
    else:
        argv = [arg]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "an evaluation takes plain values, not interpolations" in err and len(err.splitlines()) == 1
    assert not any("${" in p.name for p in memnet_run.rglob("*"))


def test_the_python_api_refuses_paths_with_interpolations_too(memnet_run):
    with pytest.raises(ConfigError, match=r"^out='\$\{oc.env:HOME\}/x.json': an evaluation takes plain values"):
        evaluate.evaluate(memnet_run, out="${oc.env:HOME}/x.json")
    assert not any("${" in p.name for p in memnet_run.rglob("*"))


def test_the_last_line_names_the_file_written_which_a_relative_out_puts_in_the_run_folder(memnet_run, capsys,
                                                                                            tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([f"checkpoint={memnet_run}", "out=mine.json"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"written to {memnet_run / 'mine.json'}"
    assert (memnet_run / "mine.json").is_file() and not (tmp_path / "mine.json").exists()


def test_a_relative_out_that_names_a_path_from_here_into_the_run_folder_is_one_line(memnet_run, capsys, monkeypatch):
    """out=<run>/metrics.json with <run> relative was taken inside the run folder: it wrote
    <run>/<run>/metrics.json, past the guard on the run's own files, and exit 0."""
    monkeypatch.chdir(memnet_run.parent)
    given = f"{memnet_run.name}/metrics.json"
    before = _files(memnet_run)
    assert evaluate.main([f"checkpoint={memnet_run.name}", f"out={given}"]) == 2
    refused(capsys, f"out={given!r}: a relative out= is taken inside the run folder (this one would be "
                    f"'{memnet_run / memnet_run.name / 'metrics.json'}'); give the path inside it (out=metrics.json) "
                    "or an absolute path")
    assert _files(memnet_run) == before
    monkeypatch.chdir(memnet_run)  # from inside the run folder both readings are the same file
    assert evaluate.main(["checkpoint=.", "out=here.json"]) == 0 and (memnet_run / "here.json").is_file()
    # from a subfolder of the run: the default out= (eval.json) and any relative one are in the run folder, as the
    # README says (the default was refused there: "give the path inside it (out=checkpoints/eval.json)")
    monkeypatch.chdir(memnet_run / "checkpoints")
    assert evaluate.main(["checkpoint=last.pt"]) == 0 and (memnet_run / "eval.json").is_file()
    assert evaluate.main(["checkpoint=..", "out=sub/deeper.json"]) == 0
    assert (memnet_run / "sub" / "deeper.json").is_file() and not (memnet_run / "checkpoints" / "sub").exists()
    # a path that leaves the run folder from inside it is still the ambiguous case: refused, naming the fix
    capsys.readouterr()
    assert evaluate.main(["checkpoint=..", "out=../up.json"]) == 2
    refused(capsys, "out='../up.json': a relative out= is taken inside the run folder (this one would be "
                    f"'{memnet_run / '..' / 'up.json'}'); give the path inside it (out=up.json) or an absolute path")
    assert not (memnet_run.parent / "up.json").exists()


def test_the_default_out_from_a_subfolder_is_taken_by_its_words_not_where_a_link_in_the_run_points(tmp_path,
                                                                                                   monkeypatch):
    """With run/eval.json a link to an earlier evaluation elsewhere, the default out= from run/checkpoints was
    refused again (the resolved path left the run folder), suggesting out=checkpoints/eval.json."""
    from agents.eval_out import check_out_file

    run_dir, elsewhere = tmp_path / "run", tmp_path / "results"
    (run_dir / "checkpoints").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "run_eval.json").write_text('{"accuracy_by_task": {}}')
    (run_dir / "eval.json").symlink_to(elsewhere / "run_eval.json")
    monkeypatch.chdir(run_dir / "checkpoints")
    check_out_file("eval.json", run_dir, run_dir / "checkpoints" / "last.pt")  # accepted, as from the run folder
    with pytest.raises(ConfigError, match=r"^out='\.\./up\.json': a relative out= is taken inside the run folder"):
        check_out_file("../up.json", run_dir, run_dir / "checkpoints" / "last.pt")



def test_an_out_link_into_a_folder_that_is_not_writable_is_refused_before_the_evaluation(tmp_path, monkeypatch):
    """A save writes through out='s link into its target's folder: the check looked at the link's own folder, so a
    target folder that may not be written passed it, and the evaluation ran before the write was refused. (os.access
    is told the folder is read-only: the tests may run as root, whom permissions do not stop.)"""
    import re
    from pathlib import Path

    from agents.eval_out import check_out_file

    run_dir, elsewhere = tmp_path / "run", tmp_path / "read_only"
    (run_dir / "checkpoints").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "run_eval.json").write_text('{"accuracy_by_task": {}}')
    (run_dir / "eval.json").symlink_to(elsewhere / "run_eval.json")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != elsewhere and real_access(p, mode))
    with pytest.raises(ConfigError, match=rf"^out='.*/run/eval\.json': {re.escape(repr(str(elsewhere)))} is not "
                       "writable; name a file elsewhere$"):
        check_out_file("eval.json", run_dir, run_dir / "checkpoints" / "last.pt")
