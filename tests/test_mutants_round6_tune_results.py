"""Mutation-testing kills for what `python -m agents.tune` writes and reports once Ray runs: the results table and
files (agents/tune_results.py), the terminal lines (agents/tune_progress.py), a sweep folder read back
(agents/tune_saved.py), a trial's function and folder name (agents/tune_trial.py), the signal handling around Ray
(agents/tune_signals.py) and the metric checks before it (agents/tune_metrics.py). No Ray is started."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from agents.config import ConfigError, load_config
from agents.tune_metrics import EnvFacts, missing_in, sweep_facts
from agents.tune_overrides import resolve_overrides
from agents.tune_progress import ProgressLine
from agents.tune_results import DONE, STOPPED, best_row, format_table, result_rows, trial_status, write_results
from agents.tune_saved import planned_trials
from agents.tune_space import load_sweep
from agents.tune_trial import TuneReporter, trial_dirname
from tests.test_tune_progress import trial as progress_trial
from tests.test_tune_results import _trial


def _smoke_plan():
    plan = load_sweep("smoke")
    plan.overrides = resolve_overrides(plan, [])  # as agents.tune.prepare leaves it
    return plan


# ---------------------------------------------------------------- agents/tune_results.py
def test_a_trial_that_ended_without_reporting_its_episodes_is_not_done():
    """Tune ended it (TERMINATED) but no result names its episodes: "stopped early", not "done" (None == None)."""
    assert trial_status("TERMINATED", {}) == STOPPED
    assert trial_status("TERMINATED", None) == STOPPED
    assert trial_status("TERMINATED", {"episode": 4, "total_episodes": 4}) == DONE


def test_a_result_row_names_the_trial_s_own_folder(smoke):
    """run_dir is the trial's folder (its TensorBoard run, checkpoints), not its id."""
    (row,) = result_rows([_trial("a", 4, 0.5, 4)], smoke, "cl/ACC")
    assert row["run_dir"] == "/sweep/a_x" and row["trial"] == "a"


def test_a_sweep_where_no_trial_measured_the_metric_writes_its_results_and_no_best(tmp_path, smoke, smoke_base):
    """No best trial: results.csv/json still written (best null), and no best_config.yaml or best_overrides.txt."""
    rows = result_rows([_trial("a", 4, None, 4), _trial("b", 8, float("nan"), 4)], smoke, "cl/ACC")
    assert write_results(tmp_path, rows, _smoke_plan(), OmegaConf.to_container(smoke_base, resolve=True),
                         "cl/ACC") is None
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best"] is None and [r["trial"] for r in saved["trials"]] == ["a", "b"]
    assert (tmp_path / "results.csv").is_file()
    assert not (tmp_path / "best_config.yaml").exists() and not (tmp_path / "best_overrides.txt").exists()


def test_best_config_yaml_starts_with_the_best_trial_and_its_value(tmp_path, smoke, smoke_base):
    rows = result_rows([_trial("a", 4, 0.5, 4), _trial("c", 8, 0.7, 4)], smoke, "cl/ACC")
    write_results(tmp_path, rows, _smoke_plan(), OmegaConf.to_container(smoke_base, resolve=True), "cl/ACC")
    assert (tmp_path / "best_config.yaml").read_text().splitlines()[0] == "# best trial c of sweep smoke: cl/ACC=0.7"


def test_the_table_shows_a_missing_value_as_a_dash_and_floats_to_four_digits():
    rows = [{"trial": "a", "memory.pressure_weight": 0.0123456, "cl/ACC": None, "episode": None, "status": "error"}]
    table = format_table(rows, ["memory.pressure_weight"], "cl/ACC").splitlines()
    assert table[2].split() == ["a", "0.01235", "-", "-", "error"]


def test_tied_trials_in_mode_min_pick_the_first_trial_by_id():
    """Ties go to the first trial by id in either mode (identical sweeps pick the same best)."""
    rows = [{"trial": t, "loss": 0.5, "episode": 4, "status": DONE} for t in ("x_00002", "x_00000", "x_00001")]
    assert best_row(rows, "loss", "min")["trial"] == "x_00000"
    assert best_row(rows, "loss", "max")["trial"] == "x_00000"


# ---------------------------------------------------------------- agents/tune_progress.py
def test_a_nan_value_is_no_measurement_in_the_progress_line(capsys):
    """Trials report NaN where their run does not reach the metric: shown as n/a, never ranked best."""
    nan = progress_trial("a", "RUNNING", float("nan"), 4)
    ProgressLine("cl/ACC").on_trial_complete(0, [nan], nan)
    assert capsys.readouterr().out.strip() == ("trial a done at episode 4/4: cl/ACC=n/a   [1 finished, 0 running, "
                                               "0 pending, 0 failed of 1] no trial measured cl/ACC")


def test_more_trials_than_planned_count_in_the_total():
    two = [progress_trial("a", "TERMINATED", 0.5, 4), progress_trial("b", "RUNNING", None, 2)]
    assert ProgressLine("cl/ACC", total=1)._status(two).startswith("[1 finished, 1 running, 0 pending, 0 failed of 2]")


def test_a_retried_and_a_failed_trial_each_get_their_line(capsys):
    failed = SimpleNamespace(trial_id="t1", status="ERROR", path="/sweep/t1_x", last_result={})
    line = ProgressLine("cl/ACC")
    line.on_trial_recover(0, [failed], failed)
    line.on_trial_error(0, [failed], failed)
    assert capsys.readouterr().out.splitlines() == ["  trial t1 crashed; retrying from its last checkpoint",
                                                    "  trial t1 failed for good; see /sweep/t1_x/error.txt"]


def test_off_a_terminal_a_report_prints_nothing(capsys):
    """The status line is rewritten in place only on a terminal: a log file would get one per report, with escapes."""
    running = progress_trial("a", "RUNNING", 0.5, 2)
    ProgressLine("cl/ACC").on_trial_result(0, [running], running, {})
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- agents/tune_saved.py
def _sweep_folder(folder, plan_text: str):
    folder.mkdir()
    (folder / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    (folder / "experiment_state-2026-12-02_00-00-00.json").write_text("{}")  # and Tune's saved trials
    (folder / "sweep.yaml").write_text(plan_text)
    return folder


def test_a_sweep_yaml_without_its_plan_is_damaged_in_one_line(tmp_path):
    """Valid YAML lacking the `plan` key is the damaged-file line, not a KeyError traceback."""
    from agents.tune_saved import load_saved_plan

    folder = _sweep_folder(tmp_path / "sweep", "base: {}\n")
    with pytest.raises(ConfigError) as err:
        load_saved_plan(folder)
    assert str(err.value) == f"{str(folder / 'sweep.yaml')!r} is damaged; start the sweep afresh"


def test_only_an_empty_folder_gets_the_killed_while_ray_started_hint(tmp_path):
    from agents.tune_saved import load_saved_plan

    (tmp_path / "notes.txt").write_text("not a sweep")
    with pytest.raises(ConfigError) as err:
        load_saved_plan(tmp_path)
    assert str(err.value).endswith("experiment state); point it at runs/sweeps/<sweep>/<time>")


def test_a_choice_is_drawn_per_trial_and_does_not_multiply_the_trials():
    space = {"memory.slots": {"choice": [4, 8, 16]}, "train.lr": {"grid": [0.1, 0.2]}}
    assert planned_trials(SimpleNamespace(num_samples=3, search_space=space)) == 6


# ---------------------------------------------------------------- agents/tune_trial.py
def test_the_report_is_written_before_the_final_result_reaches_tune(monkeypatch, tmp_path):
    """ASHA may end a trial as soon as it sees the final result: the run's report comes first, and only then."""
    from ray import tune

    order = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: order.append(("report", metrics["episode"])))
    reporter = TuneReporter(tmp_path / "checkpoints", logger=None, metric="cl/ACC")
    monkeypatch.setattr(reporter, "finish", lambda trainer: order.append(("finish", trainer.episode)))
    trainer = SimpleNamespace(episode=2, total_episodes=4, train_steps=10, cfg=load_config(["env=ContinualShift-v0"]))
    reporter(trainer, {"cl/ACC": 0.25})
    trainer.episode = 4
    reporter(trainer, {"cl/ACC": 0.5})
    assert order == [("report", 2), ("finish", 4), ("report", 4)]


def test_a_trial_stopped_after_writing_its_report_records_no_second_hparams(tmp_path):
    """Stopped at its final report (report written, status success), a trial must not record hparams again with an
    unknown status."""
    recorded = []
    logger = SimpleNamespace(hparams=lambda *args, **kwargs: recorded.append(kwargs))
    reporter = TuneReporter(tmp_path / "checkpoints", logger, metric="cl/ACC")
    trainer = SimpleNamespace(cfg=load_config(["env=ContinualShift-v0"]))
    reporter.report_written = True
    reporter.stopped(trainer)
    assert recorded == []
    reporter.report_written = False
    reporter.stopped(trainer)
    assert recorded == [{"status": None}]


def test_trial_folder_names_are_cut_at_120_characters_and_name_a_folder_by_its_name():
    long = trial_dirname(SimpleNamespace(trial_id="t0", config={"env.kwargs.note": "x" * 200}))
    assert len(long) == 120 and long.startswith("t0_note=xxx")
    assert trial_dirname(SimpleNamespace(trial_id="t1", config={"env.kwargs.haystack_path": "/data/hay/"})) == \
        "t1_haystack_path=hay"


def _fake_tune(monkeypatch, trial_dir, on_report, checkpoint=None):
    """Tune's context for run_trial: its trial folder, the checkpoint it restores from, and each report."""
    from ray import tune

    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_dir=lambda: str(trial_dir)))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: checkpoint[0] if checkpoint else None)
    monkeypatch.setattr(tune, "report", on_report)


def test_a_trial_restored_from_its_checkpoint_keeps_its_tensorboard_points(tmp_path, monkeypatch):
    """Tune's context faked (no Ray): a trial stopped at its episode-1 report and restored from that report's
    checkpoint goes on in the same TensorBoard run; its earlier points stay (a restart would drop them)."""
    import shutil

    from ray import tune

    from agents.tb_logger import read_scalars
    from agents.tune_trial import run_trial
    from tests.test_run import tiny

    trial_dir, saved = tmp_path / "sweep" / "t0", tmp_path / "tune_copy"
    restored, reported = [], []

    def stop_at_episode_1(metrics, checkpoint=None):  # as ASHA: Tune keeps the checkpoint, then ends the trial
        reported.append(metrics["episode"])
        if metrics["episode"] == 1 and checkpoint is not None and not restored:
            shutil.copytree(checkpoint.path, saved)
            restored.append(tune.Checkpoint.from_directory(str(saved)))
            raise SystemExit(0)

    _fake_tune(monkeypatch, trial_dir, stop_at_episode_1, restored)
    base = OmegaConf.to_container(load_config(tiny("ContinualShift-v0", "lstm", tmp_path / "unused", "train.episodes=2",
                                                   "train.eval_every=1", "train.checkpoint_every=1")), resolve=True)
    with pytest.raises(SystemExit):
        run_trial({}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=1, metric="cl/ACC")
    before = read_scalars(trial_dir)["train/loss"]
    assert restored and before and reported == [0, 1]
    run_trial({}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=1, metric="cl/ACC")
    after = read_scalars(trial_dir)["train/loss"]
    assert reported == [0, 1, 2]  # it went on from episode 1
    assert after[:len(before)] == before and len(after) > len(before)
    assert [step for step, _ in after] == sorted({step for step, _ in after})  # each step once, in order


# ---------------------------------------------------------------- agents/tune_signals.py
def test_restore_handlers_puts_back_python_handlers_and_leaves_a_foreign_one_alone():
    from agents.tune_signals import restore_handlers, saved_handlers

    saved = saved_handlers()
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # a handler set outside Python reads back as None: nothing to put back (signal.signal(sig, None) raises)
        restore_handlers({signal.SIGINT: None})
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        restore_handlers(saved)
        assert saved_handlers() == saved
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_ray_s_processes_start_in_their_own_session_only_while_ray_starts():
    """Else a stop sent to the sweep's process group would kill Ray's GCS server with it."""
    from ray._private import services

    from agents.tune_signals import _ray_processes_in_their_own_session

    before = services.ConsolePopen
    with _ray_processes_in_their_own_session():
        proc = services.ConsolePopen([sys.executable, "-c", "import os; print(os.getsid(0))"],
                                     stdout=subprocess.PIPE, text=True)
        out = proc.communicate(timeout=60)[0]
    assert int(out) == proc.pid  # a session leader
    assert services.ConsolePopen is before


# ---------------------------------------------------------------- agents/tune_metrics.py
def test_missing_in_names_only_the_swept_values_that_differ():
    """memory.slots=4 in every corner tells the trials apart no more than an unswept key."""
    short, long = EnvFacts("ContinualShift-v0", 3, 1024), EnvFacts("ContinualShift-v0", 5, 4096)
    corners = [{"memory.slots": 4, "train.episodes": 10}, {"memory.slots": 4, "train.episodes": 40}]
    assert missing_in("recall/accuracy_d4096", corners, [short, long]) == [{"train.episodes": 10}]


def test_asha_s_max_t_is_the_longest_trial_whatever_the_grid_s_order(smoke_base):
    corners, facts, episodes = sweep_facts({"train.episodes": {"grid": [40, 4]}}, smoke_base)
    assert [c["train.episodes"] for c in corners] == [40, 4] and episodes == 40
    assert facts[0].max_distance > facts[1].max_distance
