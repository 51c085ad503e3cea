"""A sweep's results without Ray (Tune's Result objects faked): the table, the best trial, results.csv/json,
best_config.yaml, best_overrides.txt and the plots."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from agents.config import load_config
from agents.config_file import from_yaml_file
from agents.tune_overrides import resolve_overrides
from agents.tune_results import (
    DONE,
    STOPPED,
    UNFINISHED,
    best_row,
    format_table,
    rerun_command,
    result_rows,
    table_order,
    trial_status,
    write_results,
)
from agents.tune_space import SweepPlan, load_sweep


def _trial(trial_id, slots, acc, episode, total=4, status="TERMINATED"):
    """What agents.tune reads from Tune's saved experiment state for one trial."""
    metrics = {"trial_id": trial_id, "cl/ACC": acc, "episode": episode, "total_episodes": total}
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=metrics, path=f"/sweep/{trial_id}_x",
                           config={"memory.slots": slots, "memory.pressure_weight": 0.01})


def test_results_table_best_config_and_plots(tmp_path, smoke, smoke_base):
    # b tops the table with other values than the best trial c's: best_config.yaml taken from the table's first row
    # instead of the best trial passed while b and c both had memory.slots=8
    trials = [_trial("a", 4, 0.5, 4), _trial("b", 4, 0.9, 2), _trial("c", 8, 0.7, 4),
              _trial("d", 4, float("nan"), 4), _trial("e", 4, None, 0, status="ERROR")]
    rows = result_rows(trials, smoke, "cl/ACC")
    assert [r["status"] for r in rows] == [DONE, STOPPED, DONE, DONE, "error"]
    assert rows[3]["cl/ACC"] is None
    best = best_row(rows, "cl/ACC", "max")
    assert best["trial"] == "c"  # b is higher but stopped early by ASHA
    assert best_row(rows, "cl/ACC", "min")["trial"] == "a"
    table = format_table(rows, list(smoke.search_space), "cl/ACC", best).splitlines()
    assert table[0].split() == ["trial", "memory.slots", "memory.pressure_weight", "cl/ACC", "episode",
                                "status"]
    assert table[2].split()[:2] == ["b", "4"] and table[3].startswith("* c")  # sorted by the metric
    base = OmegaConf.to_container(smoke_base, resolve=True)
    plan = load_sweep("smoke")
    plan.overrides = resolve_overrides(plan, [])  # as agents.tune.prepare leaves it
    assert write_results(tmp_path, rows, plan, base, "cl/ACC") == best
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best"]["trial"] == "c" and len(saved["trials"]) == 5
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("trial,memory.slots")
    best_cfg = from_yaml_file(str(tmp_path / "best_config.yaml"))
    assert best_cfg.memory.slots == 8 and best_cfg.memory.pressure_weight == 0.01 and best_cfg.run_dir is None
    # the trial's thread count (sweep.resources.threads), which the base config's 0 (torch's default) is not: a rerun
    # with another count differed in its last bits, and in its ACC (0.406 against 0.391)
    assert best_cfg.train.threads == plan.resources["threads"] == 1 and best_cfg.memory.store_threads == 1
    assert "train.threads=1" in shlex.split((tmp_path / "best_overrides.txt").read_text())
    assert "memory.store_threads=1" not in (tmp_path / "best_overrides.txt").read_text()  # its value already
    from_overrides = load_config(shlex.split((tmp_path / "best_overrides.txt").read_text()))
    assert OmegaConf.to_container(from_overrides) == OmegaConf.to_container(best_cfg)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"cl_ACC_vs_memory.slots.png",
                                                                "cl_ACC_vs_memory.pressure_weight.png"}



def test_the_rerun_command_passes_a_value_with_a_space_as_one_argument(tmp_path):
    """`python -m agents.run $(cat <sweep>/best_overrides.txt)` split runs_root='/x/a b' in two ('/x/a, b') and
    globbed a list value: the file holds shell words, which the printed command (eval) reads as the shell does."""
    sweep_dir = tmp_path / "my sweeps" / "smoke"  # the file's own path has a space too
    sweep_dir.mkdir(parents=True)
    plan = load_sweep("smoke")
    run_overrides = [f"runs_root='{tmp_path / 'a b'}'", "++env.kwargs.distances=[1,4,16]"]
    plan.overrides = resolve_overrides(plan, ["env=LongDependency-v0", *run_overrides])
    base = OmegaConf.to_container(load_config(plan.overrides), resolve=True)
    write_results(sweep_dir, result_rows([_trial("a", 4, 0.5, 4)], plan, "cl/ACC"), plan, base, "cl/ACC")
    # the printed command with agents.run swapped for a printer of the arguments it is given
    printer = tmp_path / "print_argv.py"
    printer.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    command = rerun_command(sweep_dir).replace("-m agents.run", shlex.quote(str(printer))).replace(
        "eval python", f"eval {shlex.quote(sys.executable)}")
    argv = json.loads(subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True).stdout)
    assert set(run_overrides) <= set(argv)
    rerun = OmegaConf.to_container(load_config(argv))
    assert rerun == OmegaConf.to_container(from_yaml_file(str(sweep_dir / "best_config.yaml")))
    assert rerun["runs_root"] == str(tmp_path / "a b")

def test_the_best_config_keeps_the_trials_thread_counts(tmp_path, smoke_base):
    """A sweep whose trials ran 2 torch and 2 FAISS threads: the best config reruns with both (the base config's 0
    and 1 move the last bits of every float, and the store's searches)."""
    plan = load_sweep("smoke", ["sweep.resources.threads=2"])
    plan.overrides = resolve_overrides(plan, [])
    rows = result_rows([_trial("a", 4, 0.5, 4)], plan, "cl/ACC")
    write_results(tmp_path, rows, plan, OmegaConf.to_container(smoke_base, resolve=True), "cl/ACC")
    best_cfg = from_yaml_file(str(tmp_path / "best_config.yaml"))
    assert best_cfg.train.threads == 2 and best_cfg.memory.store_threads == 2
    overrides = shlex.split((tmp_path / "best_overrides.txt").read_text())
    assert {"train.threads=2", "memory.store_threads=2"} <= set(overrides)


def test_sweep_plots_show_the_trials_that_trained_to_the_end(tmp_path, smoke, smoke_base, monkeypatch):
    """An ASHA-stopped trial's interim value (b: 0.9 at episode 2 of 4) was drawn among the finished ones."""
    import agents.tune_results as tune_results

    plotted = []
    draw = tune_results.plot_metric_vs_param
    monkeypatch.setattr(tune_results, "plot_metric_vs_param",
                        lambda rows, *args: (plotted.append([r["trial"] for r in rows]), draw(rows, *args))[1])
    rows = result_rows([_trial("a", 4, 0.5, 4), _trial("b", 8, 0.9, 2), _trial("c", 8, 0.7, 4)], smoke, "cl/ACC")
    plan = load_sweep("smoke")
    plan.overrides = resolve_overrides(plan, [])
    write_results(tmp_path, rows, plan, OmegaConf.to_container(smoke_base, resolve=True), "cl/ACC")
    assert plotted == [["c", "a"], ["c", "a"]]  # one plot per swept key, in the table's order


def test_an_interrupted_sweep_names_no_unfinished_trial_best(smoke):
    """With no finished trial the best fell back to the unfinished ones: an interim 0.84 (episode 8 of 10) was named
    best and written to best_config.yaml; that trial ended at 0.72."""
    running = _trial("b", 8, 0.84, 8, total=10, status="RUNNING")
    rows = result_rows([running, _trial("a", 4, 0.5, 10, total=10)], smoke, "cl/ACC")
    assert [r["status"] for r in rows] == [UNFINISHED, DONE]
    assert best_row(rows, "cl/ACC", "max")["trial"] == "a"
    assert best_row(result_rows([running], smoke, "cl/ACC"), "cl/ACC", "max") is None


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_tied_trials_pick_the_first_trial_as_best_in_any_order(smoke, order):
    """Tied trials (the smoke sweep's four 0.5469s) picked whichever Tune listed first: identical sweeps wrote
    different best_config.yaml files."""
    trials = [_trial(f"3d25e_0000{i}", 4, 0.5469 if i else 0.5, 4) for i in range(4)]
    rows = result_rows([trials[i] for i in order], smoke, "cl/ACC")
    assert best_row(rows, "cl/ACC", "max")["trial"] == "3d25e_00001"
    assert best_row(rows, "cl/ACC", "min")["trial"] == "3d25e_00000"
    table = format_table(rows, list(smoke.search_space), "cl/ACC", best_row(rows, "cl/ACC", "max"))
    assert [line.split()[-6] if line.startswith("*") else line.split()[0] for line in table.splitlines()[2:]] == \
        ["3d25e_00001", "3d25e_00002", "3d25e_00003", "3d25e_00000"]


def test_results_files_list_the_trials_in_the_table_s_order(tmp_path, smoke, smoke_base):
    """With tied metrics the table sorted by trial id while results.csv/json kept Tune's order."""
    trials = [_trial(f"3d25e_0000{i}", 4, 0.5469 if i else 0.5, 4) for i in (2, 0, 3, 1)]
    rows = result_rows(trials, smoke, "cl/ACC")
    plan = load_sweep("smoke")
    plan.overrides = resolve_overrides(plan, [])
    write_results(tmp_path, rows, plan, OmegaConf.to_container(smoke_base, resolve=True), "cl/ACC")
    in_table = ["3d25e_00001", "3d25e_00002", "3d25e_00003", "3d25e_00000"]
    assert [r["trial"] for r in json.loads((tmp_path / "results.json").read_text())["trials"]] == in_table
    assert [line.split(",")[0] for line in (tmp_path / "results.csv").read_text().splitlines()[1:]] == in_table


def test_unfinished_sweep_status():
    for state in ("PENDING", "RUNNING", "PAUSED"):  # interrupted: resume= continues these
        assert trial_status(state, {"episode": 2, "total_episodes": 4}) == "unfinished"
    assert trial_status("TERMINATED", {"episode": 4, "total_episodes": 4}) == DONE
    assert trial_status("TERMINATED", {"episode": 2, "total_episodes": 4}) == STOPPED




@pytest.mark.parametrize("mode", ["max", "min"])
def test_trials_without_a_value_come_last_in_either_mode(mode):
    """A trial that never reported the metric is no 0.0: it sorts after every value, negative ones or (min) any."""
    rows = [{"trial": "a", "acc": None}, {"trial": "b", "acc": 0.5}, {"trial": "c", "acc": -1.0}]
    want = ["b", "c", "a"] if mode == "max" else ["c", "b", "a"]
    assert [r["trial"] for r in table_order(rows, "acc", mode)] == want


def test_a_sweep_whose_every_trial_asha_stopped_names_the_furthest_trained_best(tmp_path, smoke, smoke_base,
                                                                                 monkeypatch):
    """sweep.scheduler.max_t=2 with 4-episode trials: ASHA stopped every trial at episode 2, each reported cl/ACC, and
    the sweep ended with "no trial reported cl/ACC ... this env never measures it", exit 1 and no best_config.yaml."""
    import agents.tune_results as tune_results

    plotted = []
    draw = tune_results.plot_metric_vs_param
    monkeypatch.setattr(tune_results, "plot_metric_vs_param",
                        lambda rows, *args: (plotted.append([r["trial"] for r in rows]), draw(rows, *args))[1])
    trials = [_trial("a", 4, 0.5, 2), _trial("b", 8, 0.625, 2), _trial("c", 8, 0.9, 1), _trial("d", 4, None, 2)]
    rows = result_rows(trials, smoke, "cl/ACC")
    assert {r["status"] for r in rows} == {STOPPED}
    assert best_row(rows, "cl/ACC", "max")["trial"] == "b"  # c's 0.9 came at episode 1, fewer tasks seen
    assert best_row(rows, "cl/ACC", "min")["trial"] == "a"
    plan = load_sweep("smoke")
    plan.overrides = resolve_overrides(plan, [])
    assert write_results(tmp_path, rows, plan, OmegaConf.to_container(smoke_base, resolve=True), "cl/ACC")["trial"] \
        == "b"
    assert from_yaml_file(str(tmp_path / "best_config.yaml")).memory.slots == 8
    assert json.loads((tmp_path / "results.json").read_text())["best"]["cl/ACC"] == 0.625
    assert plotted == [["b", "a"], ["b", "a"]]
    # an interrupted sweep still names no stopped trial best: its unfinished trials may yet train to the end
    unfinished = rows + result_rows([_trial("e", 4, 0.3, 1, status="RUNNING")], smoke, "cl/ACC")
    assert best_row(unfinished, "cl/ACC", "max") is None


def test_a_sweep_of_a_list_valued_option_ends_in_its_table_best_config_and_plot(tmp_path):
    """A grid of LongDependency's distances (a list per trial) ran every trial, then the plot grouped the trials by
    the list itself: TypeError: unhashable type: 'list', a traceback instead of the table (and again on resume=)."""
    distances, metric = "env.kwargs.distances", "recall/accuracy_d1"
    plan = SweepPlan(name="smoke", search_space={distances: {"grid": [[1, 4], [1, 16]]}}, metric=metric)
    base = OmegaConf.to_container(load_config(["env=LongDependency-v0", f"runs_root={tmp_path}"]), resolve=True)
    rows = [{"trial": f"a_0000{i}", distances: d, metric: v, "episode": 4, "status": "done",
             "run_dir": str(tmp_path / f"t{i}")} for i, (d, v) in enumerate([([1, 4], 0.5), ([1, 16], 0.75)])]
    assert write_results(tmp_path, rows, plan, base, metric)["trial"] == "a_00001"
    assert json.loads((tmp_path / "results.json").read_text())["best"]["trial"] == "a_00001"
    assert "++env.kwargs.distances=[1,16]" in (tmp_path / "best_overrides.txt").read_text()
    assert [p.name for p in (tmp_path / "plots").glob("*.png")]


def test_a_stopped_best_trial_reruns_for_the_episodes_it_trained(tmp_path, smoke_base):
    """`sweep.scheduler.max_t=2` with 4-episode trials: ASHA stops every trial at episode 2 and the best is chosen
    among them (cl/ACC 0.5 at episode 2). best_overrides.txt / best_config.yaml kept the full budget, so the
    printed rerun trained 4 episodes and ended at another cl/ACC (0.547 in the smoke sweep): not the trial."""
    plan = load_sweep("smoke")
    plan.overrides = resolve_overrides(plan, [])
    base = OmegaConf.to_container(smoke_base, resolve=True)
    rows = result_rows([_trial("a", 4, 0.5, 2), _trial("b", 8, 0.4, 2)], plan, "cl/ACC")  # ASHA stopped both
    assert [r["status"] for r in rows] == [STOPPED, STOPPED]
    best = write_results(tmp_path, rows, plan, base, "cl/ACC")
    assert best["trial"] == "a"
    rerun = load_config(shlex.split((tmp_path / "best_overrides.txt").read_text()))
    assert rerun.train.episodes == 2  # the episodes the trial trained (its checkpoint's state; tensors equal)
    assert from_yaml_file(str(tmp_path / "best_config.yaml")).train.episodes == 2
