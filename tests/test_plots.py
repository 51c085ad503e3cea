"""Plots: valid PNG files with the expected content; degenerate inputs draw an explanatory empty plot."""

import os

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from agents.plots import (
    figure_to_array,
    plot_accuracy_matrix,
    plot_accuracy_vs_distance,
    plot_forgetting_curves,
    plot_recall_vs_delay,
    plot_slot_survival,
    plot_slot_usage_heatmap,
)
from agents.sweep_plots import plot_metric_vs_param

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> np.ndarray:
    """The file is a readable PNG of a sensible size and no temp file was left next to it."""
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)  # (H, W, 4) floats in [0, 1]
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert not [name for name in os.listdir(os.path.dirname(path)) if name.startswith(".tmp_")]
    return pixels


def _texts(figure: Figure) -> list[str]:
    ax = figure.axes[0]
    return [t.get_text() for t in ax.texts] + [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]


def test_forgetting_curves(tmp_path):
    curves = {0: [(0, 0.2), (100, 0.9), (200, 0.4)], 1: [(100, 0.1), (200, 0.95)], 2: []}
    path = tmp_path / "plots" / "forgetting_curves.png"  # folder created on demand
    figure = plot_forgetting_curves(curves, task_boundaries=[0, 100, 200], path=path)
    pixels = _assert_png(path)
    ax = figure.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["task 0", "task 1"]  # one line per task with points; task 2 has none yet
    boundaries = [line.get_xdata()[0] for line in ax.get_lines()[2:]]
    assert boundaries == [100, 200]  # a boundary at step 0 is not a switch
    assert "task 1" in _texts(figure) and "task 2" in _texts(figure)
    assert ax.get_xlabel() == "training step" and ax.get_title() == "Forgetting curves"
    assert pixels.std() > 0.05  # something was drawn


def test_forgetting_curves_labels_say_what_follows_each_boundary(tmp_path):
    """A revisiting schedule (blocks 0, 1, 0, 1): each block end names the task that starts, the last one "end"."""
    from agents.report import boundary_labels

    labels = boundary_labels([0, 1, 0, 1], 4)
    assert labels == ["task 1", "task 0", "task 1", "end"]
    curves = {0: [(0, 0.1), (25, 0.9), (50, 0.5), (75, 0.9), (100, 0.6)], 1: [(0, 0.1), (50, 0.9), (100, 0.9)]}
    figure = plot_forgetting_curves(curves, [25, 50, 75, 100], tmp_path / "f.png", labels=labels)
    _assert_png(tmp_path / "f.png")
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts == ["task 1", "task 0", "task 1", "end"]
    assert boundary_labels([0, 1, 0, 1], 2) == ["task 1", "end"]  # train.episodes shorter than the schedule
    with pytest.raises(ValueError, match=r"one label per task boundary \(4\); got 3"):
        plot_forgetting_curves(curves, [25, 50, 75, 100], tmp_path / "bad.png", labels=labels[:3])
    figure = plot_forgetting_curves(curves, [0, 25, 50], tmp_path / "g.png", labels=["task 0", "task 1", "task 0"])
    assert [t.get_text() for t in figure.axes[0].texts] == ["task 1", "task 0"]  # step 0 is no switch, labelled too


def test_forgetting_curves_empty(tmp_path):
    figure = plot_forgetting_curves({}, [], tmp_path / "empty.png")
    _assert_png(tmp_path / "empty.png")
    assert "no evaluations yet" in _texts(figure)


def test_accuracy_matrix_values_in_cells(tmp_path):
    R = np.array([[0.9, np.nan, np.nan], [0.5, 0.8, np.nan], [0.3, 0.4, 0.7]])
    figure = plot_accuracy_matrix(R, tmp_path / "R.png")
    _assert_png(tmp_path / "R.png")
    texts = _texts(figure)
    assert texts.count("–") == 3 and {"0.90", "0.50", "0.80", "0.30", "0.40", "0.70"} <= set(texts)
    assert figure.axes[0].get_ylabel() == "after training task i"
    color = {t.get_text(): t.get_color() for t in figure.axes[0].texts}  # dark text on viridis' light end
    assert color["0.90"] == color["–"] == "black" and color["0.40"] == "white"
    for T, numbers in ((20, True), (21, False)):  # past 20 tasks the numbers would not fit in the cells
        shown = plot_accuracy_matrix(np.full((T, T), 0.5), tmp_path / f"R{T}.png")
        assert ("0.50" in _texts(shown)) is numbers


def test_accuracy_matrix_single_task_and_bad_shape(tmp_path):
    figure = plot_accuracy_matrix([[1.0]], tmp_path / "R1.png")
    _assert_png(tmp_path / "R1.png")
    assert "1.00" in _texts(figure)
    with pytest.raises(ValueError, match=r"square \(T, T\).*\(2, 3\)"):
        plot_accuracy_matrix(np.zeros((2, 3)), tmp_path / "bad.png")


def test_accuracy_matrix_one_row_per_block(tmp_path):
    R = np.array([[0.9, np.nan], [0.8, 0.9], [0.95, 0.7], [0.6, 0.9]])  # blocks 0, 1, 0, 1 of two tasks
    figure = plot_accuracy_matrix(R, tmp_path / "RK.png", tasks=[0, 1, 0, 1])
    _assert_png(tmp_path / "RK.png")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 (task 0)", "1 (task 1)", "2 (task 0)", "3 (task 1)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    assert ax.get_ylabel() == "after training block k" and _texts(figure).count("–") == 1
    sequential = plot_accuracy_matrix(R[:2], tmp_path / "R2.png", tasks=[0, 1])  # one pass: labelled as before
    assert sequential.axes[0].get_ylabel() == "after training task i"
    with pytest.raises(ValueError, match=r"tasks \(K,\), one task per row; got R \(4, 2\), tasks \(3,\)"):
        plot_accuracy_matrix(R, tmp_path / "bad.png", tasks=[0, 1, 0])


def test_accuracy_matrix_outlines_only_the_blocks_a_stopped_run_trained(tmp_path):
    """A run stopped in its third block of four: the fourth row (never trained, all grey) had its cell outlined as
    "the task block k trained"."""
    from matplotlib.patches import Rectangle

    R = np.array([[0.9, np.nan], [0.8, 0.9], [0.95, 0.7], [np.nan, np.nan]])
    figure = plot_accuracy_matrix(R, tmp_path / "RK.png", tasks=[0, 1, 0, 1])
    outlined = [p.get_xy() for p in figure.axes[0].patches if isinstance(p, Rectangle)]
    assert outlined == [(-0.5, -0.5), (0.5, 0.5), (-0.5, 1.5)]


def test_accuracy_vs_distance_with_window_and_empty_buckets(tmp_path):
    figure = plot_accuracy_vs_distance({1: 1.0, 2: 0.9, 4: None, 64: 0.6, 1024: 0.1}, tmp_path / "d.png", window=64)
    _assert_png(tmp_path / "d.png")
    ax = figure.axes[0]
    accuracy_line, window_line = ax.get_lines()
    x, y = accuracy_line.get_xdata(), accuracy_line.get_ydata()
    assert list(x[np.isfinite(y)]) == [1, 2, 64, 1024]  # the empty bucket is left out (the line breaks there)
    assert window_line.get_xdata()[0] == 64 and window_line.get_label() == "controller window W = 64"
    assert ax.get_xscale() == "log"


def test_each_point_says_how_many_scored_steps_it_rests_on(tmp_path):
    figure = plot_accuracy_vs_distance({1: 0.0, 64: 0.6, 1024: None}, tmp_path / "d.png", counts={1: 1, 64: 250})
    assert sorted(t for t in _texts(figure) if t.startswith("n=")) == ["n=1", "n=250"]
    figure = plot_recall_vs_delay({"1": 0.5, "2": 1.0}, tmp_path / "r.png", counts={"1": 4, "2": 8})  # JSON's keys
    assert sorted(t for t in _texts(figure) if t.startswith("n=")) == ["n=4", "n=8"]


def test_accuracy_vs_distance_all_empty(tmp_path):
    figure = plot_accuracy_vs_distance({1: None, 2: None}, tmp_path / "d0.png")
    _assert_png(tmp_path / "d0.png")
    assert "no scored steps" in _texts(figure)


def test_recall_vs_delay(tmp_path):
    figure = plot_recall_vs_delay({3: 0.4, 1: 0.9, 2: None}, tmp_path / "r.png")
    _assert_png(tmp_path / "r.png")
    line, = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 3] and list(line.get_ydata()) == [0.9, 0.4]
    plot_recall_vs_delay({}, tmp_path / "r0.png")
    _assert_png(tmp_path / "r0.png")


def test_slot_usage_heatmap(tmp_path):
    usage = np.linspace(0, 1, 6 * 32).reshape(6, 32)  # (time, N)
    figure = plot_slot_usage_heatmap(usage, tmp_path / "u.png", steps=[0, 10, 30, 40, 50, 60])
    _assert_png(tmp_path / "u.png")
    mesh = figure.axes[0].collections[0]
    assert mesh.get_array().shape == (32, 6)  # slots on the y axis, time on the x axis
    # each column centred on its snapshot's step, reaching halfway to its neighbours (uneven spacing too)
    assert mesh.get_coordinates()[0, :, 0].tolist() == [-5, 5, 20, 35, 45, 55, 65]
    assert figure.axes[0].get_xlabel() == "training step"
    with pytest.raises(ValueError, match="one entry per snapshot"):
        plot_slot_usage_heatmap(usage, tmp_path / "bad.png", steps=[0, 1])
    with pytest.raises(ValueError, match=r"\(time, N\)"):
        plot_slot_usage_heatmap(np.zeros(5), tmp_path / "bad.png")


@pytest.mark.parametrize("usage", [np.zeros((0, 0)), np.zeros((0, 8)), []])  # [] was "(time, N)" ValueError
def test_slot_usage_heatmap_empty(tmp_path, usage):
    figure = plot_slot_usage_heatmap(usage, tmp_path / "u0.png")
    _assert_png(tmp_path / "u0.png")
    assert any("no slot usage" in text for text in _texts(figure))


@pytest.mark.parametrize("R", [np.zeros((0, 0)), [], np.zeros((0, 3))])  # was "R must be a square" ValueError
def test_accuracy_matrix_empty_says_so(tmp_path, R):
    figure = plot_accuracy_matrix(R, tmp_path / "r0.png")
    _assert_png(tmp_path / "r0.png")
    assert any("no evaluations yet" in text for text in _texts(figure))


def test_slot_survival_marks_median(tmp_path):
    lifetimes = np.array([1, 2, 2, 3, 5])
    figure = plot_slot_survival(lifetimes, tmp_path / "s.png", observed=[True, True, False, True, False])
    _assert_png(tmp_path / "s.png")
    survival_line, median_line = figure.axes[0].get_lines()
    assert list(survival_line.get_ydata()) == pytest.approx([1.0, 0.8, 0.6, 0.3])
    assert median_line.get_xdata()[0] == 3  # survival first drops to <= 0.5 at t = 3
    assert figure.axes[0].get_xlabel() == "slot-bank writes since the content was written"
    unit = plot_slot_survival(lifetimes, tmp_path / "s.png", unit="learning chunks").axes[0].get_xlabel()
    assert unit == "learning chunks since the content was written"
    plot_slot_survival([], tmp_path / "s0.png")
    _assert_png(tmp_path / "s0.png")


def test_metric_vs_param_numeric(tmp_path):
    rows = [{"memory.slots": n, "seed": s, "cl/ACC": 0.1 * np.log2(n) + 0.01 * s} for n in (8, 64, 512)
            for s in range(3)] + [{"memory.slots": 8, "seed": 9, "cl/ACC": None}]
    figure = plot_metric_vs_param(rows, "memory.slots", "cl/ACC", tmp_path / "sweep.png")
    _assert_png(tmp_path / "sweep.png")
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "64", "512"]
    means = ax.containers[0].lines[0].get_ydata()
    assert means == pytest.approx([0.31, 0.61, 0.91])  # the None run is left out


def test_metric_vs_param_categorical_and_empty(tmp_path):
    rows = [{"memory.fusion": f, "accuracy": a} for f, a in [("gated", 0.5), ("concat", 0.4), ("gated", 0.7)]]
    figure = plot_metric_vs_param(rows, "memory.fusion", "accuracy", tmp_path / "cat.png")
    _assert_png(tmp_path / "cat.png")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["concat", "gated"]
    figure = plot_metric_vs_param(rows, "memory.fusion", "cl/BWT", tmp_path / "none.png")
    _assert_png(tmp_path / "none.png")
    assert "no run reports 'cl/BWT'" in _texts(figure)
    with pytest.raises(ValueError, match=r"rows\[0\] has no key 'memory.slots'"):
        plot_metric_vs_param(rows, "memory.slots", "accuracy", tmp_path / "bad.png")


def test_figure_to_array_and_overwrite(tmp_path):
    path = tmp_path / "R.png"
    plot_accuracy_matrix([[0.2]], path)
    figure = plot_accuracy_matrix([[0.9, 0.1], [0.2, 0.8]], path)  # replaces the old file atomically
    assert "0.80" in _texts(figure)
    image = figure_to_array(figure)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[:2] == _assert_png(path).shape[:2]


def test_series_read_back_from_metrics_json_plot_on_a_numeric_axis(tmp_path):
    """metrics.json stores {bucket: accuracy} and {delay: accuracy} with string keys ("10"): they were drawn as
    categories in file order ("10" left of "2") on the delay plot, and matplotlib warned."""
    figure = plot_recall_vs_delay({"10": 0.5, "2": 0.9, "5": None}, tmp_path / "r.png")
    line, = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == [2, 10] and list(line.get_ydata()) == [0.9, 0.5]
    figure = plot_accuracy_vs_distance({"1024": 0.1, "64": 0.6}, tmp_path / "d.png", window=64)
    line = figure.axes[0].get_lines()[0]
    assert list(line.get_xdata()[np.isfinite(line.get_ydata())]) == [64, 1024]


@pytest.mark.filterwarnings("error::DeprecationWarning")  # one swept value left: matplotlib 3.10 warned (Python 3.10)
def test_metric_vs_param_leaves_out_nan_as_it_does_none(tmp_path):
    """Ray Tune reports a metric that does not apply yet as NaN; such a run failed the whole plot (bootstrap_ci
    refuses NaN) instead of being left out like None."""
    rows = [{"memory.slots": 8, "cl/BWT": float("nan")}, {"memory.slots": 8, "cl/BWT": -0.2},
            {"memory.slots": 64, "cl/BWT": np.float32("nan")}]
    figure = plot_metric_vs_param(rows, "memory.slots", "cl/BWT", tmp_path / "nan.png")
    _assert_png(tmp_path / "nan.png")
    assert figure.axes[0].containers[0].lines[0].get_ydata() == pytest.approx([-0.2])
    figure = plot_metric_vs_param(rows[:1], "memory.slots", "cl/BWT", tmp_path / "nan0.png")
    assert "no run reports 'cl/BWT'" in _texts(figure)
