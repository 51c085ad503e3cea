"""Mutation-testing kills for what a run writes for a user to inspect: TensorBoard scalars, images and the HParams
session (agents/tb_logger.py, agents/tb_hparams.py), the accuracy-by-key counts (agents/cl_metrics.py) and the plots
(agents/plots.py, agents/sweep_plots.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agents.cl_metrics import AccuracyByKey
from agents.tb_logger import TBLogger, read_images, read_scalars
from tests.test_tb_logger import CONFIG
from tests.test_tb_sessions import hparams_sessions


# ---------------------------------------------------------------- AccuracyByKey.load_state_dict
def test_a_bucket_state_whose_counts_are_short_is_refused_as_damaged():
    """keys, correct and total must be equally long: a short `correct` would load silently and break the next update."""
    state = {"edges": [1, 2, 4], "keys": [1, 2, 4], "correct": [1, 0], "total": [1, 1, 1]}
    with pytest.raises(ValueError, match="damaged: keys, correct and total differ in length"):
        AccuracyByKey([1, 2, 4]).load_state_dict(state)


def test_a_bucket_state_whose_keys_are_not_its_edges_is_refused_as_damaged():
    """Counts saved under other bucket keys than the edges would land in the wrong buckets."""
    state = {"edges": [1, 2, 4], "keys": [4, 2, 1], "correct": [3, 0, 0], "total": [3, 1, 1]}
    with pytest.raises(ValueError, match="bucket keys do not match its edges"):
        AccuracyByKey([1, 2, 4]).load_state_dict(state)


# ---------------------------------------------------------------- TBLogger
def test_final_metrics_land_at_the_largest_step_logged_not_the_last_call(tmp_path):
    """A point logged at an earlier step after a later one does not pull the final metrics back to it."""
    with TBLogger(tmp_path, hparams=CONFIG) as logger:
        logger.scalars({"train/loss": 1.0}, 30)
        logger.scalars({"eval/accuracy": 0.5}, 10)
        logger.hparams(None, {"accuracy": 0.7})
    assert read_scalars(tmp_path)["accuracy"] == [(30, pytest.approx(0.7))]


def test_a_resumed_run_does_not_log_again_a_final_value_not_exact_in_float32(tmp_path):
    """The kept latest point is read back as float32: 0.61 compared as a float64 would look new and be logged twice."""
    with TBLogger(tmp_path, hparams=CONFIG) as logger:
        logger.scalars({"cl/ACC": 0.61}, 20)
        logger.hparams(None, {"cl/ACC": 0.61})
    with TBLogger(tmp_path, hparams=CONFIG, resume_step=20) as logger:
        logger.hparams(None, {"cl/ACC": 0.61})
    assert read_scalars(tmp_path)["cl/ACC"] == [(20, pytest.approx(0.61))]


def test_hparams_refuses_an_empty_dict(tmp_path):
    """An explicit {} is no hyper-parameters: refused like None without constructor hparams, not an empty session."""
    with TBLogger(tmp_path, hparams=CONFIG) as logger, pytest.raises(ValueError, match="non-empty dict"):
        logger.hparams({}, {"accuracy": 0.5})


def test_a_resumed_run_skips_every_image_step_it_holds(tmp_path):
    """An image tag logged at several steps before the checkpoint: each of them is kept, none is logged twice."""
    image = np.full((4, 6, 3), 100, np.uint8)
    with TBLogger(tmp_path) as logger:
        for step in (10, 20):
            logger.image("memory/slot_usage", image, step)
    with TBLogger(tmp_path, resume_step=20) as logger:
        logger.image("memory/slot_usage", image, 10)
        logger.image("memory/slot_usage", image, 20)
    assert read_images(tmp_path)["memory/slot_usage"] == [(10, 4, 6), (20, 4, 6)]


def test_the_hparams_session_starts_when_the_run_started(tmp_path):
    """The session's start time is the logger's creation, not the moment the report records the hparams."""
    logger = TBLogger(tmp_path / "run", hparams=CONFIG)
    started = time.time()
    time.sleep(0.05)
    with logger:
        logger.scalars({"train/loss": 1.0}, 10)
        logger.hparams(None, {"cl/ACC": 0.5})
    assert hparams_sessions(tmp_path)["run"].start_time_secs <= started


def test_a_resumed_run_that_records_its_hparams_first_starts_at_the_killed_runs_start(tmp_path):
    """Killed before its report, resumed and finished: its session starts at the first run's first event."""
    with TBLogger(tmp_path / "run", hparams=CONFIG) as logger:
        logger.scalars({"train/loss": 1.0}, 10)
    killed = time.time()
    time.sleep(0.05)
    with TBLogger(tmp_path / "run", hparams=CONFIG, resume_step=10) as logger:
        logger.scalars({"train/loss": 0.5}, 20)
        logger.hparams(None, {"cl/ACC": 0.5})
    assert hparams_sessions(tmp_path)["run"].start_time_secs <= killed


# ---------------------------------------------------------------- plots
def test_the_median_lifetime_is_where_survival_first_reaches_one_half(tmp_path):
    """Survival exactly 0.5 at t = 1 (2 of 4 contents overwritten): the median is 1, not the next drop."""
    from agents.plots import plot_slot_survival

    figure = plot_slot_survival([1, 1, 2, 2], tmp_path / "s.png")
    survival_line, median_line = figure.axes[0].get_lines()
    assert list(survival_line.get_ydata()) == pytest.approx([1.0, 0.5, 0.0])
    assert median_line.get_xdata()[0] == 1 and median_line.get_label() == "median lifetime = 1"


def test_ten_tasks_keep_the_default_colour_cycle():
    """Up to 10 tasks use C0..C9 (the colours of every other matplotlib figure); only past 10 a colour map."""
    from agents.plots import task_colors

    assert task_colors(10) == [f"C{n}" for n in range(10)]
    assert len(task_colors(11)) == 11 and not any(isinstance(color, str) for color in task_colors(11))


def test_the_survival_legend_counts_the_contents_of_a_histogram(tmp_path):
    """With counts (a histogram of lifetimes) n is the number of contents, not the number of histogram rows."""
    from agents.plots import plot_slot_survival

    figure = plot_slot_survival([1, 2], tmp_path / "s.png", counts=[3, 5])
    assert figure.axes[0].get_lines()[0].get_label() == "Kaplan-Meier (n = 8)"


def test_past_30_block_ends_the_last_one_is_always_named(tmp_path):
    """Every n-th boundary label is counted from the last, so "end" is shown also with an even count (32 here)."""
    from agents.plots import plot_forgetting_curves

    boundaries = list(range(10, 330, 10))  # 32 block ends
    labels = [f"task {n % 2}" for n in range(1, 32)] + ["end"]
    figure = plot_forgetting_curves({0: [(0, 0.5), (320, 0.5)]}, boundaries, tmp_path / "f.png", labels=labels)
    named = [text.get_text() for text in figure.axes[0].texts]
    assert len(named) == 16 and named[-1] == "end"


def test_a_chance_line_alone_gets_its_legend_on_the_distance_plot(tmp_path):
    """Without a window the chance line is still labelled in a legend (a dotted line with no key otherwise)."""
    from agents.plots import plot_accuracy_vs_distance

    figure = plot_accuracy_vs_distance({1: 0.9, 2: 0.5}, tmp_path / "d.png", chance=0.125)
    legend = figure.axes[0].get_legend()
    assert legend is not None and "chance = 0.125" in [t.get_text() for t in legend.get_texts()]


def test_sweep_plot_draws_numeric_values_in_order_whatever_the_trial_order(tmp_path):
    """Trials finish in any order: the mean line runs through the swept values left to right, not zig-zag."""
    from agents.sweep_plots import plot_metric_vs_param

    rows = [{"slots": 8, "cl/ACC": 0.8}, {"slots": 2, "cl/ACC": 0.2}, {"slots": 4, "cl/ACC": 0.4}]
    ax = plot_metric_vs_param(rows, "slots", "cl/ACC", tmp_path / "p.png").axes[0]
    mean_line = ax.get_lines()[0]
    assert list(mean_line.get_xdata()) == [2, 4, 8]
    assert list(mean_line.get_ydata()) == pytest.approx([0.2, 0.4, 0.8])


def test_sweep_plot_is_logarithmic_from_a_tenfold_span(tmp_path):
    """Swept values spanning exactly 10x (slots 4 .. 40) get a log axis."""
    from agents.sweep_plots import plot_metric_vs_param

    rows = [{"slots": 4, "cl/ACC": 0.5}, {"slots": 40, "cl/ACC": 0.6}]
    assert plot_metric_vs_param(rows, "slots", "cl/ACC", tmp_path / "p.png").axes[0].get_xscale() == "log"


def test_sweep_plot_names_any_row_that_lacks_the_parameter(tmp_path):
    """Not only the first row is checked: a later run without the swept key is named in a ValueError."""
    from agents.sweep_plots import plot_metric_vs_param

    rows = [{"slots": 4, "cl/ACC": 0.5}, {"cl/ACC": 0.6}]
    with pytest.raises(ValueError, match=r"rows\[1\] has no key 'slots'"):
        plot_metric_vs_param(rows, "slots", "cl/ACC", tmp_path / "p.png")


def test_sweep_plot_of_a_bool_parameter_is_categorical(tmp_path):
    """A swept bool (memory.store) is ticked False / True, not drawn as the numbers 0 and 1."""
    from agents.sweep_plots import plot_metric_vs_param

    rows = [{"memory.store": True, "cl/ACC": 0.7}, {"memory.store": False, "cl/ACC": 0.4}]
    ax = plot_metric_vs_param(rows, "memory.store", "cl/ACC", tmp_path / "p.png").axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["False", "True"]


def test_sweep_plot_error_bars_span_the_bootstrap_interval(tmp_path):
    """Each bar runs from the interval's low to its high end (swapped, an asymmetric one would be drawn flipped)."""
    from agents.cl_metrics import bootstrap_ci
    from agents.sweep_plots import plot_metric_vs_param

    values = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    rows = [{"slots": 4, "cl/ACC": v} for v in values]
    ax = plot_metric_vs_param(rows, "slots", "cl/ACC", tmp_path / "p.png").axes[0]
    (segment,) = ax.containers[0].lines[2][0].get_segments()  # the vertical error bar at slots=4
    mean, low, high = bootstrap_ci(values)
    assert high - mean > mean - low + 0.1  # asymmetric: longer above the mean
    assert sorted(segment[:, 1]) == pytest.approx([low, high])


# ---------------------------------------------------------------- cl_metrics.accuracy_shape
def test_the_accuracy_matrix_of_a_run_has_one_row_per_training_block():
    """ContinualShift 2 tasks revisited: blocks 0, 1, 0, 1 give R (4, 2); without revisits R is (2, 2)."""
    import gymnasium as gym

    from agents.cl_metrics import accuracy_shape

    revisit = gym.make("ContinualShift-v0", num_tasks=2, episodes_per_task=3, revisit=True).unwrapped
    single = gym.make("ContinualShift-v0", num_tasks=2, episodes_per_task=3).unwrapped
    assert accuracy_shape(revisit) == (4, 2) and accuracy_shape(single) == (2, 2)


def test_a_numpy_bool_is_recorded_as_a_bool_hyper_parameter():
    """np.bool_ (a swept value out of numpy) is a bool in the HParams tab, as a Python bool is, not the text "True"."""
    from agents.tb_hparams import flatten_hparams

    flat = flatten_hparams({"memory": {"store": np.bool_(True)}, "seed": np.int64(3)})
    assert flat == {"memory.store": True, "seed": 3} and type(flat["memory.store"]) is bool
