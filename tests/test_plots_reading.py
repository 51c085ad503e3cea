"""Plots read as figures: what a reader needs to find on them (the trained cells, gaps, ranges) is there."""

import numpy as np
from matplotlib.patches import Rectangle

from agents.plots import plot_accuracy_matrix, plot_recall_vs_delay, plot_slot_usage_heatmap


def _outlined_cells(figure) -> list[tuple[int, int]]:
    """(row, column) of each outlined cell of an accuracy matrix."""
    return [(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in figure.axes[0].patches
            if isinstance(p, Rectangle) and not p.get_fill()]


def test_accuracy_matrix_outlines_the_task_each_row_trained(tmp_path):
    """The diagonal (the accuracy just after learning a task) is what forgetting and transfer are read against:
    it was an ordinary cell, told apart only by counting rows and columns."""
    figure = plot_accuracy_matrix(np.full((3, 3), 0.5), tmp_path / "R.png")
    assert _outlined_cells(figure) == [(0, 0), (1, 1), (2, 2)]
    assert "outlined" in figure.axes[0].get_title()
    revisits = plot_accuracy_matrix(np.full((4, 2), 0.5), tmp_path / "RK.png", tasks=[0, 1, 0, 1])
    assert _outlined_cells(revisits) == [(0, 0), (1, 1), (2, 0), (3, 1)]  # block k's own task, not (k, k)
    many = plot_accuracy_matrix(np.full((25, 25), 0.5), tmp_path / "R25.png")  # no numbers: the outline still
    assert len(_outlined_cells(many)) == 25


def test_slot_usage_colour_scale_starts_at_zero(tmp_path):
    """Every slot in use at ~20: scaled to the data (19.6 .. 20.8) the low ones drew black, read as unused."""
    usage = np.array([[19.6, 20.0, 20.8], [20.1, 19.9, 20.4]])  # (time, N)
    figure = plot_slot_usage_heatmap(usage, tmp_path / "u.png", steps=[100, 200])
    mesh = figure.axes[0].collections[0]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 20.8)
    assert figure.axes[1].get_ylabel() == "slot usage (decayed access count, mean over lanes)"  # the colour bar
    idle = plot_slot_usage_heatmap(np.zeros((2, 3)), tmp_path / "u0.png").axes[0].collections[0]
    assert idle.norm.vmin == 0.0 and idle.norm.vmax > 0.0  # a never-used bank: one colour, no empty range


def test_recall_vs_delay_ticks_are_whole_episodes_with_one_delay(tmp_path):
    """NeedleRecall's default measures one delay (10): the axis was ticked 9.6, 9.8, 10.0, 10.2, 10.4."""
    figure = plot_recall_vs_delay({"10": 0.986}, tmp_path / "r.png", counts={"10": 1280})
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert [t for t in ax.get_xticks() if low <= t <= high] == [10.0]
    many = plot_recall_vs_delay({d: 0.5 for d in range(1, 40)}, tmp_path / "r40.png")
    assert all(float(t).is_integer() for t in many.axes[0].get_xticks())
