"""Mutation-testing kills (round 8) for a sweep's trial (agents/tune_trial.py: the column order of what a trial reports,
a swept whole number in a trial's folder name) and the checks before Ray (agents/tune_metrics.py: an evaluation known to
fill no distance bucket, the corners of a choice and of a part that is there or not, the lanes that measure the
filled buckets). No Ray is started."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from agents.config import ConfigError, load_config
from agents.tb_tags import TRAIN_TAGS
from agents.tune_metrics import EnvFacts, check_metric, filled_edges, reported_metrics, sweep_corners, sweep_facts
from agents.tune_trial import trial_dirname
from tests.test_mutants_round7_tune import ScoredEnv, distances_env


# ---------------------------------------------------------------- agents/tune_trial.py
def test_a_report_lists_the_metric_then_the_training_tags_then_the_evaluation_s(monkeypatch, tmp_path):
    """Ray's progress.csv keeps the first result's columns in their order: the sweep's metric comes first, then the
    training and memory tags (a None among them NaN, in its own place), the evaluation's other tags, the counters."""
    from ray import tune

    from agents.tune_trial import TuneReporter

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append(metrics))
    reporter = TuneReporter(tmp_path / "checkpoints", logger=None, metric="recall/accuracy_d512")
    trainer = SimpleNamespace(episode=1, total_episodes=2, train_steps=10,
                              cfg=load_config(["env=ContinualShift-v0", "memory.slots=0"]))
    reporter(trainer, {"cl/ACC": 0.5, "train/loss": None})
    store = ["memory/store_hit_rate", "memory/memory_share_mean", "memory/store_entries"]
    assert list(sent[0]) == ["recall/accuracy_d512", *TRAIN_TAGS, *store, "cl/ACC", "episode", "total_episodes",
                             "train_steps"]
    assert math.isnan(sent[0]["train/loss"]) and sent[0]["cl/ACC"] == 0.5


def test_a_swept_whole_number_keeps_all_its_digits_in_the_folder_name():
    """Only floats are cut to 3 significant digits: memory.slots=4096 (or a numpy 1024) is not '4.1e+03'."""
    config = {"memory.slots": 4096, "train.episodes": np.int64(1024), "memory.pressure_weight": 1234.5}
    assert trial_dirname(SimpleNamespace(trial_id="t0", config=config)) == \
        "t0_pressure_weight=1.23e+03_slots=4096_episodes=1024"


# ---------------------------------------------------------------- agents/tune_metrics.py
def test_an_evaluation_known_to_fill_no_distance_bucket_reports_no_distance_tag():
    """filled=() is known and empty (not unknown, None): no recall/accuracy_d<b> tag, not every bucket's."""
    tags = reported_metrics(EnvFacts("LongDependency-v0", 1, 8, filled=()))
    assert not any(tag.startswith("recall/") for tag in tags) and "eval/accuracy" in tags
    assert "recall/accuracy_d8" in reported_metrics(EnvFacts("LongDependency-v0", 1, 8))


def test_a_part_that_is_there_or_not_keeps_the_grid_s_order_and_one_value_of_each():
    """The on/off reduction keeps the values in the grid's order ([8, 0] stays [8, 0]), one of each kind, and a
    memory.store named twice is one corner."""
    assert sweep_corners({"memory.slots": {"grid": [8, 0]}}) == [{"memory.slots": 8}, {"memory.slots": 0}]
    assert sweep_corners({"memory.slots": {"grid": [0, 8]}}) == [{"memory.slots": 0}, {"memory.slots": 8}]
    assert sweep_corners({"memory.store": {"choice": [True, False, True]}}) == [{"memory.store": False},
                                                                              {"memory.store": True}]


def test_every_value_of_a_choice_is_a_corner():
    """A choice is a list of values, not a range's two ends: its third value sets a trial's length too."""
    assert sweep_corners({"train.episodes": {"choice": [4, 8, 40]}}) == [
        {"train.episodes": 4}, {"train.episodes": 8}, {"train.episodes": 40}]


def test_the_filled_buckets_are_measured_on_up_to_256_lanes_of_about_steps_steps(monkeypatch):
    """Lanes: steps // (episodes x (length + 1)), at most 256 and at least 1."""
    from agents import episodes

    lanes = []

    def make(env_id, n, kwargs):
        lanes.append(n)
        return distances_env([1, 4])

    monkeypatch.setattr(episodes, "make_vector_env", make)
    for steps in (2**21, 20, 3):
        assert filled_edges("LongDependency-v0", {}, [1, 2, 4], 1, 4, steps=steps) == (4, (1, 4))
    assert filled_edges("LongDependency-v0", {}, [1, 2, 4], 2, 4, steps=40) == (4, (1, 4))
    assert lanes == [256, 4, 1, 4]


def _first_step_scores() -> ScoredEnv:
    """An evaluation whose first step (the reset) scores distance / delay 4, and the rest of its episode 1."""
    return ScoredEnv({"scored": np.ones(1, bool), "distance": np.full(1, 4), "delay": np.full(1, 4)},
                     {"scored": np.ones(9, bool), "distance": np.ones(9, int), "delay": np.ones(9, int)})


def test_the_first_step_s_scored_distance_fills_its_bucket(monkeypatch):
    """The reset's info is an evaluation's first step: its scored distance counts as the rest of the episode's."""
    from agents import episodes

    monkeypatch.setattr(episodes, "make_vector_env", lambda *args: _first_step_scores())
    assert filled_edges("LongDependency-v0", {}, [1, 2, 4], 1, 4) == (4, (1, 4))


def test_the_first_step_s_recall_delay_is_one_of_the_env_s_delays():
    """eval_delays reads the reset's info too: a recall scored at an episode's first step gives its delay tag."""
    from agents.tune_metrics import eval_delays

    assert eval_delays(_first_step_scores()) == (1, 4)


def test_a_trial_s_report_is_written_then_its_writer_closed_once_only(monkeypatch, tmp_path):
    """finish runs at the final evaluation and again after fit: the report is written once, and the TensorBoard writer
    closed after it (its last points reach the event file before Tune may end the trial)."""
    from agents import report
    from agents.tune_trial import TuneReporter

    done = []
    monkeypatch.setattr(report, "final_metrics", lambda trainer: {"cl/ACC": 0.5})
    monkeypatch.setattr(report, "write_report", lambda trainer, metrics, logger: done.append(("report", metrics)))
    reporter = TuneReporter(tmp_path / "checkpoints", SimpleNamespace(close=lambda: done.append("close")), "cl/ACC")
    reporter.finish(SimpleNamespace())
    reporter.finish(SimpleNamespace())
    assert done == [("report", {"cl/ACC": 0.5}), "close"] and reporter.report_written


def test_a_report_after_last_pt_is_gone_carries_no_checkpoint(monkeypatch, tmp_path):
    """Only a present, fresh last.pt is a Tune checkpoint: with none left (removed after the restore) a report carries
    none (not an empty folder)."""
    import os

    from ray import tune

    from agents.tune_trial import TuneReporter

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append(checkpoint is not None))
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.pt").write_text("restored from")
    reporter = TuneReporter(folder, logger=None, metric="cl/ACC")
    os.remove(folder / "last.pt")
    trainer = SimpleNamespace(episode=1, total_episodes=9, train_steps=10, cfg=load_config(["env=ContinualShift-v0"]))
    reporter(trainer, {"cl/ACC": 0.5})
    assert sent == [False]


def test_a_trial_writes_its_run_into_the_sweep_folder_under_its_trial_folder_s_name(tmp_path, monkeypatch):
    """Tune's own trial folder may lie elsewhere (its local copy): the run folder is the sweep folder's entry of that
    name, so `tensorboard --logdir <sweep dir>` shows the trial."""
    from agents.tune_trial import run_trial
    from tests.test_mutants_round6_tune_results import _fake_tune
    from tests.test_mutants_round7_tune import _tiny_base

    _fake_tune(monkeypatch, tmp_path / "ray_local" / "t0_lr=0.003", lambda metrics, checkpoint=None: None)
    run_trial({}, base=_tiny_base(tmp_path, "train.episodes=1"), sweep_dir=str(tmp_path / "sweep"), threads=1,
              metric="cl/ACC")
    run_dir = tmp_path / "sweep" / "t0_lr=0.003"
    assert (run_dir / "metrics.json").is_file() and not (tmp_path / "ray_local").exists()
    assert OmegaConf.load(run_dir / "config.yaml").run_dir == str(run_dir)


def test_an_unswept_run_length_of_zero_is_named_by_its_value():
    """train.episodes=0 set on the run (not swept) is refused naming the key and its value."""
    base = load_config(["env=ContinualShift-v0", "env.kwargs.episodes_per_task=1", "train.episodes=0"])
    with pytest.raises(ConfigError, match=r"^train\.episodes=0: a trial that trains no episode reports no result"):
        sweep_facts({}, base)


def test_a_mistyped_perf_metric_is_one_the_env_does_not_report():
    """Only perf/act_ms is missing for want of step-by-step acting: any other unknown perf/ tag is not reported."""
    with pytest.raises(ConfigError, match=r"^sweep.metric='perf/act_msx': ContinualShift-v0 does not report it; "):
        check_metric("perf/act_msx", [EnvFacts("ContinualShift-v0", 2, 64)])


def test_the_filled_buckets_are_counted_over_every_repeat_of_an_evaluation(monkeypatch):
    """train.eval_repeats lengthens each evaluation: LongDependency's filled buckets are measured over all its eval
    episodes in a row (eval_episodes x eval_repeats)."""
    from agents import tune_metrics

    seen = []
    monkeypatch.setattr(tune_metrics, "filled_edges", lambda *args: (seen.append(args[3]), (4, (1, 4)))[1])
    for repeats in (1, 3):
        facts, _ = tune_metrics.env_facts(load_config(["env=LongDependency-v0", "train.episodes=2",
                                                       f"train.eval_repeats={repeats}"]))
        assert (facts.far_edge, facts.filled) == (4, (1, 4))
    assert seen[1] == 3 * seen[0] >= 3
