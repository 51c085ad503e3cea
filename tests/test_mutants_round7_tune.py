"""Mutation-testing kills (round 7) for a sweep's trial function (agents/tune_trial.py: its thread counts, its lock on
the trial folder, its report when restored at the very end) and the checks before Ray (agents/tune_metrics.py: a run
length that cannot be found, the corner that trains no episode, the 2% share of the farthest distance bucket).
Tune's context is faked where a trial runs: no Ray is started."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from agents.config import ConfigError, load_config
from agents.tune_metrics import FAR_SHARE, env_facts, filled_edges, sweep_corners, sweep_facts
from tests.test_mutants_round6_tune_results import _fake_tune


def _tiny_base(tmp_path, *extra):
    from tests.test_run import tiny

    return OmegaConf.to_container(load_config(tiny("ContinualShift-v0", "lstm", tmp_path / "unused", *extra)),
                                  resolve=True)


# ---------------------------------------------------------------- agents/tune_trial.py
def test_a_trial_computes_with_the_sweeps_threads_and_holds_its_folder_while_it_runs(tmp_path, monkeypatch):
    """sweep.resources.threads is each trial's torch count (and its config.yaml's train.threads and
    memory.store_threads); the trial folder is locked while the trial writes it (an agents.run resume= of it is
    refused) and free once it ends."""
    from agents.run_lock import FolderInUse, lock_run
    from agents.tune_trial import run_trial

    trial_dir = tmp_path / "sweep" / "t0_lr=0.003"
    seen = []

    def report(metrics, checkpoint=None):
        with pytest.raises(FolderInUse, match="is in use by another process"):
            lock_run(trial_dir)
        seen.append((metrics["episode"], torch.get_num_threads()))

    _fake_tune(monkeypatch, trial_dir, report)
    base = _tiny_base(tmp_path, "train.episodes=1")
    run_trial({"train.lr": 0.003}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=2, metric="cl/ACC")
    assert seen == [(0, 2), (1, 2)]
    saved = OmegaConf.load(trial_dir / "config.yaml")
    assert (saved.train.threads, saved.memory.store_threads, saved.train.lr) == (2, 2, 0.003)
    assert saved.train.progress is False and saved.run_dir == str(trial_dir)
    fd = lock_run(trial_dir)  # released at the end
    assert fd is not None


def test_a_trial_restored_at_its_very_end_still_writes_its_report(tmp_path, monkeypatch):
    """A trial restored from its final checkpoint has nothing left to evaluate: it writes its report (metrics.json)
    all the same."""
    from ray import tune

    from agents.tune_trial import run_trial

    trial_dir, saved, restored, reported = tmp_path / "sweep" / "t0", tmp_path / "tune_copy", [], []

    def keep_the_last_checkpoint(metrics, checkpoint=None):
        reported.append(metrics["episode"])
        if checkpoint is not None:
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(checkpoint.path, saved)

    _fake_tune(monkeypatch, trial_dir, keep_the_last_checkpoint, restored)
    base = _tiny_base(tmp_path, "train.eval_every=1", "train.checkpoint_every=1")
    run_trial({}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=1, metric="cl/ACC")
    assert reported == [0, 1, 2] and (trial_dir / "metrics.json").is_file()
    (trial_dir / "metrics.json").unlink()
    restored.append(tune.Checkpoint.from_directory(str(saved)))  # Tune's retry of it, from its last checkpoint
    run_trial({}, base=base, sweep_dir=str(tmp_path / "sweep"), threads=1, metric="cl/ACC")
    assert reported == [0, 1, 2] and (trial_dir / "metrics.json").is_file()


# ---------------------------------------------------------------- agents/tune_metrics.py
def test_an_env_without_a_schedule_and_no_train_episodes_is_one_line():
    """LongDependency has no schedule to take a run length from: train.episodes=null is refused naming the key."""
    with pytest.raises(ConfigError) as refused:
        env_facts(load_config(["env=LongDependency-v0", "train.episodes=null"]))
    assert str(refused.value) == "train.episodes is not set for LongDependency-v0; set train.episodes=<n>"


def test_a_grid_whose_later_value_trains_no_episode_is_refused():
    """The shortest corner decides, wherever it lies in the grid."""
    base = load_config(["env=ContinualShift-v0", "env.kwargs.episodes_per_task=1"])
    with pytest.raises(ConfigError, match=r"^sweep.search_space.train.episodes reaches 0: a trial that trains no "):
        sweep_facts({"train.episodes": {"grid": [2, 0]}}, base)


class ScoredEnv:
    """A vector env of one evaluation episode: `first` is its reset's info (the first step), `rest` what
    `upcoming` gives for the steps after it."""

    eval_episodes, episode_length = 1, 4

    def __init__(self, first: dict, rest: dict):
        self.first, self.rest = first, rest

    def reset(self, seed=None, options=None):
        return None, self.first

    def upcoming(self, length):
        return None, self.rest

    def close(self):
        pass


def distances_env(distances) -> ScoredEnv:
    """An evaluation scoring the given distances after a first step that scores none."""
    distances = np.asarray(distances)
    return ScoredEnv({"scored": np.zeros(1, bool), "distance": np.full(1, -1)},
                     {"scored": np.ones(len(distances), bool), "distance": distances})


def test_the_far_bucket_counts_at_exactly_its_two_percent_share(monkeypatch):
    """FAR_SHARE is "at least": 1 scored step of 50 (exactly 2%) in bucket 4 makes it the far edge."""
    from agents import episodes

    assert FAR_SHARE == 0.02
    monkeypatch.setattr(episodes, "make_vector_env", lambda *args: distances_env([1] * 49 + [4]))
    assert filled_edges("LongDependency-v0", {}, [1, 2, 4], 1, 4) == (4, (1, 4))
    monkeypatch.setattr(episodes, "make_vector_env", lambda *args: distances_env([1] * 50 + [4]))  # 1 of 51: under
    assert filled_edges("LongDependency-v0", {}, [1, 2, 4], 1, 4) == (1, (1, 4))



def test_an_evaluation_that_scores_no_distance_keeps_every_bucket_and_the_last_edge(monkeypatch):
    """Nothing scored to count: every edge stays a candidate and the far edge is the last (not an empty list)."""
    from agents import episodes

    monkeypatch.setattr(episodes, "make_vector_env", lambda *args: distances_env([]))
    assert filled_edges("LongDependency-v0", {}, [1, 2, 4], 1, 4) == (4, (1, 2, 4))


def test_an_evaluation_repeated_reaches_farther_back_in_continual_shift():
    """train.eval_repeats lengthens each evaluation: ContinualShift's distances, which reach back across episodes,
    fill a farther bucket (d256 at 8 repeats of this tiny run, d128 at 1)."""
    tiny = ["env=ContinualShift-v0", "env.kwargs.num_tasks=2", "env.kwargs.episodes_per_task=1",
            "env.kwargs.trials_per_episode=8"]
    assert env_facts(load_config([*tiny, "train.eval_repeats=1"]))[0].max_distance == 128
    assert env_facts(load_config([*tiny, "train.eval_repeats=8"]))[0].max_distance == 256


def test_a_lograndint_run_length_s_corner_is_its_largest_drawable_value():
    """lograndint's high is exclusive like randint's: [4, 9) trains at most 8 episodes (ASHA's max_t)."""
    assert sweep_corners({"train.episodes": {"lograndint": [4, 9]}}) == [{"train.episodes": 4}, {"train.episodes": 8}]

# ---------------------------------------------------------------- agents/tune_csv.py
def test_a_restored_result_lacking_a_column_of_the_files_header_leaves_that_cell_empty(tmp_path):
    """The continued file's header rules: a result without one of its columns gets an empty cell there, and its
    later columns stay under their own names."""
    import csv

    from agents.tune_csv import ProgressCSV
    from tests.test_tune_csv import Trial

    trial = Trial(tmp_path)
    first = ProgressCSV()
    first.log_trial_result(0, trial, {"episode": 0, "memory/write_rate": 0.5, "cl/ACC": 0.25})
    first.log_trial_end(trial)
    again = ProgressCSV()
    again.log_trial_result(1, trial, {"episode": 2, "cl/ACC": 0.75, "should_checkpoint": True})
    again.log_trial_end(trial)
    with open(tmp_path / "progress.csv", newline="") as f:
        assert list(csv.reader(f)) == [["episode", "memory/write_rate", "cl/ACC"], ["0", "0.5", "0.25"],
                                       ["2", "", "0.75"]]
