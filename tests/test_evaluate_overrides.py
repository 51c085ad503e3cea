"""`python -m agents.evaluate ... memory.<key>=<value>`: the trained memory evaluated another way."""

import json
import re

import pytest

from agents import evaluate, report, run
from agents.config import ConfigError
from agents.trainer import Trainer

NEEDLE = ["env=NeedleRecall-v0", "train.lanes=4", "train.threads=1", "train.progress=false", "train.episodes=2",
          "env.kwargs.delay=1", "env.kwargs.haystack_length=48", "env.kwargs.facts_per_episode=2",
          "env.kwargs.train_facts=64", "env.kwargs.fresh_facts=16"]


@pytest.fixture(scope="module")
def needle_run(tmp_path_factory):
    """A small MemNet trained 2 episodes on NeedleRecall with delay 1: each fact is recalled one episode after it
    was shown, so the recall comes from memory kept across episodes (the store), not from the weights."""
    run_dir = tmp_path_factory.mktemp("needle") / "run"
    assert run.main([*NEEDLE, f"run_dir={run_dir}"]) == 0
    return run_dir


def test_memory_reset_per_episode_at_evaluation_removes_the_recall_that_memory_carried(needle_run):
    kept = evaluate.evaluate(needle_run, out=None)
    reset = evaluate.evaluate(needle_run, memory={"reset": "episode"}, out=None)
    assert kept["recall_by_delay"][1] >= 0.75  # measured 0.875: the store carries the facts across episodes
    assert reset["recall_by_delay"][1] <= 1 / 16  # fresh facts, memory cleared: nothing left to recall them from
    assert (kept["memory"], reset["memory"]) == ({}, {"reset": "episode"})


def test_a_memory_sweep_writes_one_evaluation_per_value_naming_its_setting(needle_run, capsys):
    assert evaluate.main([f"checkpoint={needle_run}", "memory.reset=never,episode", "out=sweep.json"]) == 0
    results = json.loads((needle_run / "sweep.json").read_text())["evaluations"]
    assert [r["memory"] for r in results] == [{"reset": "never"}, {"reset": "episode"}]
    assert results[0]["accuracy"] > results[1]["accuracy"]
    out = capsys.readouterr().out
    assert "(memory.reset=episode)" in out
    # each recall accuracy printed with the scored steps it rests on (also in the file)
    steps = results[0]["scored_by_delay"]["1"]
    assert steps >= 1 and f"  delay 1: {results[0]['recall_by_delay']['1']:.3f} (n={steps})" in out


@pytest.mark.parametrize("override, message", [
    ("memory.store_top_k=4", "memory.store_top_k: the trained weights and saved memory were made with the run's "
                             "value; an evaluation may change memory.{"),
    ("memory.slots=8", "memory.slots: the trained weights"),
    ("memory.util_weight=1.0", "memory.util_weight: the trained weights"),  # acts on learning only
    ("memory.no_such_key=1", "unknown config key 'memory.no_such_key'"),
    ("memory.reset=sometimes", "memory.reset='sometimes': choose one of"),
])
def test_memory_settings_an_evaluation_cannot_use_give_one_line(needle_run, capsys, override, message):
    assert evaluate.main([f"checkpoint={needle_run}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("out, message", [
    ("plots", "is a folder; name a file (e.g. out=eval.json)"),
    ("metrics.json/eval.json", "metrics.json' is a file, not a folder"),
    # a folder still to be made: was written as a file named `results` (Path() drops the slash), exit 0
    ("results/", "out='results/' names a folder (it ends with /); name a file, e.g. out=results/eval.json"),
    # a file of the run: the example was out=metrics.json/eval.json, inside it
    ("metrics.json/", "out='metrics.json/' names a folder (it ends with /); name a file, e.g. out=eval.json"),
])
def test_an_unusable_out_file_is_one_line_before_anything_is_evaluated(needle_run, capsys, out, message):
    for sweep in ([], ["memory.reset=never,episode"]):
        assert evaluate.main([f"checkpoint={needle_run}", f"out={out}", *sweep]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # refused before the evaluation, not after it (was a traceback at the end)
        err = captured.err.strip()
        assert err.startswith("error: out=") and message in err and len(err.splitlines()) == 1, err


def test_a_failed_write_of_the_out_file_is_one_line(needle_run, capsys, monkeypatch):
    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_json_atomic", disk_full)  # (eval_out imports it when it writes)
    assert evaluate.main([f"checkpoint={needle_run}", "out=full.json"]) == 2
    err = capsys.readouterr().err.strip()
    # any other file on that disk fails as well: "name another file" was no fix
    assert re.search(r"full\.json': cannot write it \(No space left on device; \d[^;\n]* free there\); free space, or "
                     r"name a file on another disk$", err), err
    assert len(err.splitlines()) == 1


def test_out_may_name_a_file_in_a_folder_still_to_be_made(needle_run):
    assert evaluate.main([f"checkpoint={needle_run}", "out=evals/first.json"]) == 0
    assert not (needle_run / "results").exists()  # the refused out=results/ above wrote nothing
    assert json.loads((needle_run / "evals" / "first.json").read_text())["recall_by_delay"]


@pytest.mark.parametrize("kwargs, message", [
    ({"env_kwargs": "x"}, "evaluate: env_kwargs is a str; pass a dict"),  # was a multi-line OmegaConf error
    ({"memory": ["reset"]}, "evaluate: memory is a list; pass a dict"),
    ({"out": 5}, "evaluate: out=5; pass a file name"),  # was TypeError: unsupported operand
])
def test_the_python_api_of_evaluate_checks_its_arguments(needle_run, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        evaluate.evaluate(needle_run, **kwargs)


def test_evaluate_takes_an_omegaconf_mapping_too(needle_run):
    from omegaconf import OmegaConf

    kwargs = OmegaConf.create({"delay": 1})
    assert evaluate.evaluate(needle_run, env_kwargs=kwargs, out=None)["env_kwargs"] == {"delay": 1}


def _files(run_dir):
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("out", ["checkpoints/last.pt", "checkpoints/eval.json", "metrics.json", "config.yaml",
                                 "plots/eval.json", "evals/../metrics.json", "<events file>", "<absolute checkpoint>"])
def test_out_may_not_name_a_file_the_run_wrote(needle_run, capsys, out):
    """out=checkpoints/last.pt replaced the checkpoint with the JSON (exit 0), metrics.json and config.yaml too."""
    out = {"<events file>": next(needle_run.glob("events.out.tfevents.*")).name,
           "<absolute checkpoint>": str(needle_run / "checkpoints" / "last.pt")}.get(out, out)
    before = _files(needle_run)
    for sweep in ([], ["memory.reset=never,episode"]):
        assert evaluate.main([f"checkpoint={needle_run}", f"out={out}", *sweep]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # refused before anything is evaluated
        err = captured.err.strip()
        assert err.startswith("error: out=") and "the evaluation does not write over the run's own files" in err
        assert len(err.splitlines()) == 1, err
    assert _files(needle_run) == before


def test_out_may_not_name_a_checkpoint_outside_a_checkpoints_folder(needle_run, tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes((needle_run / "checkpoints" / "last.pt").read_bytes())  # a copied run
    assert evaluate.main([f"checkpoint={tmp_path}", "out=last.pt"]) == 2
    assert "is the run's checkpoint" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="is the run's checkpoint"):  # the Python API checks it too
        evaluate.evaluate(tmp_path / "last.pt", out="last.pt")


def test_out_may_write_over_an_earlier_evaluation(needle_run):
    for _ in range(2):
        assert evaluate.main([f"checkpoint={needle_run}", "out=again.json"]) == 0
    assert json.loads((needle_run / "again.json").read_text())["recall_by_delay"]


@pytest.mark.parametrize("argv, message", [
    (["checkpoint="], "checkpoint= is empty; point it at a run folder"),  # was: no checkpoint at '<cwd>/last.pt'
    (["checkpoint=RUN", "checkpoint=RUN"], "checkpoint= is given 2 times"),  # was accepted: the first one dropped
    (["checkpoint=RUN", "out="], "out= is empty; name a file"),  # was: '<run>' is a folder
    (["checkpoint=RUN", "out=a.json", "out=b.json"], "out= is given 2 times ('a.json', 'b.json'); give it once"),
    (["checkpoint=RUN", "device=cpu", "device=auto"], "device= is given 2 times"),
    (["checkpoint=RUN", "env.kwargs.delay=1", "env.kwargs.delay=2"],
     "env.kwargs.delay= is given 2 times ('1', '2'); give it once (a comma list evaluates several values"),
])
def test_an_empty_or_repeated_argument_is_one_line(needle_run, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # where an empty checkpoint= looked
    assert evaluate.main([a.replace("RUN", str(needle_run)) for a in argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    with pytest.raises(ConfigError, match="checkpoint= is empty"):
        evaluate.evaluate("")


def test_an_evaluation_that_does_not_fit_in_memory_is_one_line(needle_run, monkeypatch, capsys):
    """The run's sizes on a machine with less free memory; any other RuntimeError keeps its traceback."""
    from agents.trainer import Trainer

    def too_big(self):
        raise MemoryError("Unable to allocate 2.18 PiB for an array with shape (1599999999984, 384) and data type "
                          "float32")  # numpy's words, as a run with memory.store_capacity=99999999999 got them

    monkeypatch.setattr(Trainer, "evaluate_all", too_big)
    assert evaluate.main([f"checkpoint={needle_run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: evaluating this checkpoint does not fit in memory (an allocation of 2.18 PiB "
                          "failed) with the sizes train.lanes=4,") and len(err.splitlines()) == 1, err
    assert "memory.store_capacity=" in err and "memory.slots=" in err

    def bug(self):
        raise RuntimeError("The size of tensor a (4) must match the size of tensor b (8)")

    monkeypatch.setattr(Trainer, "evaluate_all", bug)
    with pytest.raises(RuntimeError, match="must match"):
        evaluate.main([f"checkpoint={needle_run}"])


@pytest.mark.parametrize("sweep, message", [
    # a value the env refuses (one cycle of delay x facts_per_episode facts must fit the pool of 64)
    (["env.kwargs.facts_per_episode=1,2,100"], "env.kwargs for NeedleRecall-v0: train_facts=64 is too small"),
    (["memory.reset=never,episode,bogus"], "memory.reset='bogus'"),  # a value validate refuses
])
def test_a_sweep_is_checked_whole_before_its_first_evaluation(needle_run, capsys, monkeypatch, sweep, message):
    """A bad value last in a sweep was refused only after the evaluations before it had run (seconds to minutes
    each), and those were not written."""
    calls = []
    monkeypatch.setattr(Trainer, "evaluate_all", lambda self: calls.append(1) or {})
    assert evaluate.main([f"checkpoint={needle_run}", *sweep, "out=bad_sweep.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert calls == [] and not (needle_run / "bad_sweep.json").exists()


@pytest.mark.parametrize("sweep, value", [(["env.kwargs.facts_per_episode=2,1,2"], "2"),
                                          (["memory.reset=never,episode,never"], "'never'"),
                                          (["env.kwargs.facts_per_episode=[1,2],[1,2]"], "[1, 2]")])
def test_a_value_given_twice_in_a_sweep_is_refused(needle_run, capsys, monkeypatch, sweep, value):
    """2,1,2 evaluated facts_per_episode=2 twice (the same evaluation, twice the time, two entries in the JSON)."""
    calls = []
    monkeypatch.setattr(Trainer, "evaluate_all", lambda self: calls.append(1) or {})
    assert evaluate.main([f"checkpoint={needle_run}", *sweep, "out=twice.json"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {sweep[0]}: {value} is given twice; give each value once " \
        "(each value of a comma list is one evaluation)"
    assert calls == [] and not (needle_run / "twice.json").exists()


@pytest.mark.parametrize("second", ["./hay.txt", "sub/../hay.txt", "{tmp}/hay.txt"])
def test_one_haystack_file_named_twice_in_a_sweep_is_refused(second, tmp_path, monkeypatch):
    """evaluate() reads a file option made absolute: hay.txt,./hay.txt (or its absolute path) ran the same evaluation
    twice, where hay.txt,hay.txt was refused. Two files are two evaluations."""
    from agents.evaluate_args import override_grid

    monkeypatch.chdir(tmp_path)
    item = f"env.kwargs.haystack_path=hay.txt,{second.format(tmp=tmp_path)}"
    with pytest.raises(ConfigError, match=f"^{re.escape(item)}: '{re.escape(str(tmp_path))}/hay.txt' is given twice"):
        override_grid([item])
    assert [changes for changes, _ in override_grid(["env.kwargs.haystack_path=a.txt,b.txt"])] == [
        {"haystack_path": "a.txt"}, {"haystack_path": "b.txt"}]


@pytest.mark.parametrize("item", ["env.kwargs.facts_per_episode=range(1,3),4",
                                  "env.kwargs.facts_per_episode=[range(1,3)]",
                                  "env.kwargs.facts_per_episode={a:choice(1,2)}",
                                  "memory.reset=choice(never,episode),never"])
def test_a_sweep_inside_a_value_is_refused_in_one_line(needle_run, capsys, item):
    """Hydra parses range(1,3),4 as [RangeSweep, 4]: the RangeSweep reached the config, an omegaconf traceback."""
    assert evaluate.main([f"checkpoint={needle_run}", item, "out=nested.json"]) == 2
    key = item.split("=", 1)[0]
    assert capsys.readouterr().err.strip() == f"error: {item}: a range() or choice() inside a comma list, a list " \
        f"or a mapping is no value; write the values as one comma list ({key}=a,b,c) or one range()"
    assert not (needle_run / "nested.json").exists()


def test_a_misspelt_env_option_gets_agents_runs_line(needle_run, capsys):
    """Was the env's own error, which named the env twice and guessed nothing."""
    assert evaluate.main([f"checkpoint={needle_run}", "env.kwargs.facts_per_episod=2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown config key 'env.kwargs.facts_per_episod': NeedleRecall-v0 has no option 'facts_per_episod'; "
        "did you mean 'facts_per_episode'? its options: vocab_size, facts_per_episode, delay, haystack_length, "
        "cue_length, recall_cue_length, answer_length, train_facts, fresh_facts, haystack_path, world_seed, "
        "render_mode")


def test_a_store_setting_for_a_memnet_run_without_a_store_is_refused(tmp_path):
    """MemNet with memory.store=false has no store either (the GRU case is test_evaluate_cli's): a store setting
    would change nothing and be recorded in the JSON as if it had."""
    from tests.test_run import tiny

    run_dir = tmp_path / "run"
    assert run.main(tiny("LongDependency-v0", "memnet", run_dir, "train.episodes=1", "memory.store=false")) == 0
    with pytest.raises(ConfigError, match=r"this run \(memnet, memory.store=False\) has no store"):
        evaluate.evaluate(run_dir, out=None, memory={"store_hnsw_ef_search": 5}, note=False)
