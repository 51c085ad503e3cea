"""Plots read as figures: what a reader needs to find on them (the trained cells, gaps, ranges) is there."""

import numpy as np
from matplotlib.patches import Rectangle

from agents.plots import plot_accuracy_matrix


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
