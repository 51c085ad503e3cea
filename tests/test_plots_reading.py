"""Plots read as figures: what a reader needs to find on them (the trained cells, gaps, ranges) is there."""

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle

from agents.plots import (
    plot_accuracy_matrix,
    plot_accuracy_vs_distance,
    plot_forgetting_curves,
    plot_recall_vs_delay,
    plot_slot_usage_heatmap,
)


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


def test_accuracy_vs_distance_breaks_the_line_at_a_missing_bucket(tmp_path):
    """ContinualShift's transformer measured 0.99 at <= 256 and 0.0 at <= 1024, no step in the 512 bucket: the
    line ran straight across it, drawing a fall through 512 that nobody measured."""
    by_bucket = {"4": 1.0, "8": 1.0, "256": 0.99, "1024": 0.0, "2048": 0.0}  # metrics.json: no "16".."128", "512"
    line = plot_accuracy_vs_distance(by_bucket, tmp_path / "d.png", window=64).axes[0].get_lines()[0]
    x, y = line.get_xdata(), line.get_ydata()
    assert list(x[np.isfinite(y)]) == [4, 8, 256, 1024, 2048] and list(y[np.isfinite(y)]) == [1, 1, 0.99, 0, 0]
    assert list(np.isnan(y)) == [False, False, True, False, True, False, False]  # breaks after 8 and after 256
    assert np.sqrt(8 * 256) == x[2] and 256 < x[4] < 1024  # each break sits inside its gap on the log axis


def test_benchmark_distance_lines_break_at_a_missing_bucket(tmp_path, monkeypatch):
    """The benchmark's accuracy-vs-distance figure: a variant without a bucket broke neither its line nor band."""
    from agents import benchmark_plots

    drawn = []
    monkeypatch.setattr(benchmark_plots, "_save", lambda figure, path: drawn.append(figure))
    stat = {"mean": 0.5, "low": 0.4, "high": 0.6}
    variants = {"memnet": {"metrics": {"acc_d64": stat, "acc_d128": stat, "acc_d1024": stat}},
                "transformer": {"metrics": {"acc_d64": stat, "acc_d128": stat, "acc_d256": stat}}}
    benchmark_plots._series_figure(variants, "acc_d", tmp_path / "b.png", "t", "x", "y", log_x=True, window=64)
    memnet, transformer = drawn[0].axes[0].get_lines()[:2]
    assert list(np.isnan(memnet.get_ydata())) == [False, False, True, False]  # 256 and 512 missing
    assert not np.isnan(transformer.get_ydata()).any() and list(transformer.get_xdata()) == [64, 128, 256]
    band = drawn[0].axes[0].collections[0]  # memnet's 90% band: two pieces, none across the gap
    assert max(path.vertices[:, 0].max() for path in band.get_paths()) == 1024
    assert all(not (128 < path.vertices[:, 0]).any() or (path.vertices[:, 0] >= 1024).all()
               for path in band.get_paths())


def _many_tasks(T: int) -> tuple[dict, list[int], list[str]]:
    """Curves, block ends and their labels for T tasks trained one after the other, 300 steps each."""
    from agents.report import boundary_labels

    ends = [300 * (t + 1) for t in range(T)]
    curves = {t: [(0, 0.2)] + [(s, 0.9 if s >= ends[t] else 0.2) for s in ends] for t in range(T)}
    return curves, ends, boundary_labels(list(range(T)), T)


@pytest.mark.parametrize("T", [12, 20, 45])
def test_forgetting_curves_stay_legible_with_many_tasks(tmp_path, T):
    """Past 10 tasks the colours repeated (task 10 drawn as task 0), the block-end labels ran into each other and
    a legend of 20 entries ran off the figure's foot."""
    figure = plot_forgetting_curves(*_many_tasks(T)[:2], tmp_path / "f.png", labels=_many_tasks(T)[2])
    figure.canvas.draw()
    ax = figure.axes[0]
    colors = [tuple(line.get_color()) for line in ax.get_lines() if line.get_label().startswith("task")]
    assert len(colors) == T and len(set(colors)) == T
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False))
    assert ax.texts[-1].get_text() == "end" and len(ax.texts) == (T if T <= 30 else 23)
    title = ax.title.get_window_extent(renderer)
    assert all(not title.overlaps(box) for box in boxes)
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.y0 >= 0 and legend.x1 <= figure.bbox.x1  # whole, on the figure


def test_forgetting_curves_with_few_tasks_keep_their_look(tmp_path):
    figure = plot_forgetting_curves(*_many_tasks(5)[:2], tmp_path / "f.png", labels=_many_tasks(5)[2])
    assert [t.get_rotation() for t in figure.axes[0].texts] == [0.0] * 5
    assert to_hex(figure.axes[0].get_lines()[0].get_color()) == "#1f77b4"  # the default cycle's first colour


def _chance_lines(figure) -> list:
    return [line for line in figure.axes[0].get_lines() if line.get_label().startswith("chance")]


def test_accuracy_and_recall_mark_chance_as_the_benchmark_does(tmp_path):
    """A run's accuracy-vs-distance and recall-vs-delay had no chance level (the benchmark's figures of the same
    numbers do): a memory-free agent at 0.02 beyond its window read as bad rather than as guessing."""
    figure = plot_accuracy_vs_distance({64: 1.0, 128: 0.02}, tmp_path / "d.png", window=64, chance=1 / 63)
    (line,) = _chance_lines(figure)
    assert line.get_label() == "chance = 0.016" and list(line.get_ydata()) == [1 / 63, 1 / 63]
    assert "chance = 0.016" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    figure = plot_recall_vs_delay({10: 0.986}, tmp_path / "r.png", chance=1 / 124)
    (line,) = _chance_lines(figure)
    assert line.get_ydata()[0] == 1 / 124
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["recall accuracy", "chance = 0.008"]
    assert not _chance_lines(plot_accuracy_vs_distance({64: 1.0}, tmp_path / "n.png", window=64))  # None: no line


@pytest.mark.parametrize("env_id, plot", [("LongDependency-v0", "plot_accuracy_vs_distance"),
                                          ("NeedleRecall-v0", "plot_recall_vs_delay"),
                                          ("ContinualShift-v0", "plot_accuracy_vs_distance")])
def test_a_run_passes_its_env_chance_level_to_its_plots(tmp_path, monkeypatch, env_id, plot):
    import yaml

    from agents import plots, run
    from agents.benchmark_report import chance_level
    from tests.test_run import tiny

    drawn = {}
    original = getattr(plots, plot)

    def spy(*args, **kwargs):
        drawn.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(plots, plot, spy)
    assert run.main(tiny(env_id, "memnet", tmp_path / "run")) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert drawn["chance"] == chance_level(env_id, config["env"]["kwargs"]) and 0 < drawn["chance"] < 0.1


@pytest.mark.parametrize("agent, window", [("memnet", 16), ("transformer", 16), ("lstm", None), ("gru", None)])
def test_the_window_is_marked_only_for_agents_that_have_one(tmp_path, monkeypatch, agent, window):
    """An LSTM's or GRU's accuracy-vs-distance marked "controller window W = 64": model.window, which they ignore."""
    from agents import plots, run
    from tests.test_run import tiny

    drawn = {}
    original = plots.plot_accuracy_vs_distance

    def spy(*args, **kwargs):
        drawn.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_accuracy_vs_distance", spy)
    assert run.main(tiny("LongDependency-v0", agent, tmp_path / "run")) == 0
    assert drawn["window"] == window  # the tiny model's model.window=16


def _tick_labels(figure) -> list[str]:
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high and t.get_text()]


def test_sweep_plot_ticks_read_with_few_integer_values_and_with_random_ones(tmp_path):
    """The smoke sweep: slots 4 and 8 were ticked 4.0, 4.5, 5.0, ...; its loguniform pressure weights were each a
    tick, 0.00107908 and 0.00120767 printed over each other."""
    from agents.sweep_plots import plot_metric_vs_param

    rows = [{"memory.slots": s, "memory.pressure_weight": w, "cl/ACC": 0.546875}
            for s, w in [(4, 0.01878985), (8, 0.00346396), (4, 0.00120767), (8, 0.00107908)]]
    assert _tick_labels(plot_metric_vs_param(rows, "memory.slots", "cl/ACC", tmp_path / "s.png")) == ["4", "8"]
    figure = plot_metric_vs_param(rows, "memory.pressure_weight", "cl/ACC", tmp_path / "w.png")
    assert figure.axes[0].get_xscale() == "log" and _tick_labels(figure) == ["0.001", "0.01"]
    assert _ticks_apart(figure)
    drawn = [{"train.lr": 1e-4 * 1.13 ** i, "eval/accuracy": 0.5} for i in range(12)]  # 12 values, linear: the
    figure = plot_metric_vs_param(drawn, "train.lr", "eval/accuracy", tmp_path / "lr.png")  # axis' own ticks
    assert figure.axes[0].get_xscale() == "linear" and len(_tick_labels(figure)) < 12 and _ticks_apart(figure)


def _ticks_apart(figure) -> bool:
    ticks = [t.get_window_extent() for t in figure.axes[0].get_xticklabels() if t.get_text()]
    return all(not a.overlaps(b) for a, b in zip(ticks, ticks[1:], strict=False))


def test_sweep_plot_of_an_accuracy_spans_0_to_1(tmp_path):
    """Fitted to the data, two settings at 0.90 and 0.92 filled the plot's height: a 2-point gap drawn as a cliff."""
    from agents.sweep_plots import plot_metric_vs_param

    rows = [{"memory.slots": s, "cl/ACC": a, "recall/accuracy_d64": a, "cl/BWT": a - 1}
            for s, a in [(8, 0.9), (64, 0.92)]]
    for metric in ("cl/ACC", "recall/accuracy_d64"):
        figure = plot_metric_vs_param(rows, "memory.slots", metric, tmp_path / "a.png")
        assert figure.axes[0].get_ylim() == (-0.02, 1.02)
    low, high = plot_metric_vs_param(rows, "memory.slots", "cl/BWT", tmp_path / "b.png").axes[0].get_ylim()
    assert -0.2 < low < high < 0  # not an accuracy: fitted to its values


def test_benchmark_forgetting_legend_beside_the_panels_and_colours_by_task(tmp_path, monkeypatch):
    """The legend sat inside the first panel's lower left, over its curves' untrained points; a panel without
    task 0 would have drawn task 1 in task 0's colour (colours followed plotting order)."""
    from matplotlib.colors import to_hex

    from agents import benchmark_plots

    drawn = []
    monkeypatch.setattr(benchmark_plots, "_save", lambda figure, path: drawn.append(figure))
    curves = {"0": [[0, 0.2], [600, 0.9]], "1": [[0, 0.2], [600, 0.25]], "2": [[0, 0.1], [600, 0.3]]}
    records = [{"env": "E", "variant": "memnet", "status": "ok",
                "metrics": {"forgetting_curves": curves, "task_boundaries": [600]}},
               {"env": "E", "variant": "lstm", "status": "ok",  # task 0 never evaluated in this one
                "metrics": {"forgetting_curves": {"1": curves["1"], "2": curves["2"]}, "task_boundaries": [600]}}]
    benchmark_plots._forgetting_figure("E", {"memnet": {}, "lstm": {}}, records, tmp_path / "f.png")
    figure = drawn[0]
    assert all(ax.get_legend() is None for ax in figure.axes)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["task 0", "task 1", "task 2"]
    colour = [{line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()} for ax in figure.axes[:2]]
    assert colour[0]["task 1"] == colour[1]["task 1"] and colour[0]["task 2"] == colour[1]["task 2"]


def test_slot_usage_ticks_whole_steps_and_slots(tmp_path):
    """One snapshot (an evaluation at step 12800) was ticked -0.4 .. 0.4 under a '+1.28e4' offset; 3 slots were
    ticked -0.5, 0.0, 0.5, ..."""
    figure = plot_slot_usage_heatmap([[1.0, 2.0, 3.0]], tmp_path / "u.png", steps=[12800])
    figure.canvas.draw()
    ax = figure.axes[0]
    assert _tick_labels(figure) == ["12800"] and ax.xaxis.get_offset_text().get_text() == ""
    low, high = ax.get_ylim()
    assert [t for t in ax.get_yticks() if low <= t <= high] == [0, 1, 2]
    wide = plot_slot_usage_heatmap(np.ones((6, 256)), tmp_path / "u256.png", steps=[604, 1208, 1510, 1812, 2416, 3020])
    wide.canvas.draw()
    assert all(float(t).is_integer() for t in wide.axes[0].get_yticks()) and len(wide.axes[0].get_yticks()) < 12
    assert _ticks_apart(wide)


def test_slot_survival_with_a_long_tail_is_logarithmic_past_1(tmp_path):
    """NeedleRecall's contents: median 2, a few kept ~90 writes: on a linear axis the whole drop sat in its left 2%."""
    from agents.plots import plot_slot_survival

    rng = np.random.default_rng(0)
    lifetimes = np.concatenate([rng.geometric(0.45, 5000), rng.integers(85, 96, 120)])
    ax = plot_slot_survival(lifetimes, tmp_path / "s.png").axes[0]
    assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] == 0  # t = 0 at the left edge, no negative margin
    ax.figure.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()] == ["0", "1", "10", "100"]
    short = plot_slot_survival(rng.geometric(0.45, 5000), tmp_path / "s2.png").axes[0]  # ContinualShift's: to ~24
    assert short.get_xscale() == "linear"


def test_distance_and_delay_legends_sit_above_the_axes_under_the_title(tmp_path):
    """ContinualShift's transformer: the legend ("best" spot, upper right) sat over the n=113 label at 256."""
    by_bucket = {"4": 1.0, "64": 1.0, "128": 0.33, "256": 0.99, "1024": 0.0, "4096": 0.0}
    counts = {"4": 1, "64": 76, "128": 1734, "256": 113, "1024": 512, "4096": 512}
    for figure in (plot_accuracy_vs_distance(by_bucket, tmp_path / "d.png", window=64, counts=counts, chance=0.016),
                   plot_recall_vs_delay({10: 0.986}, tmp_path / "r.png", counts={10: 1280}, chance=0.008)):
        figure.canvas.draw()
        ax = figure.axes[0]
        legend = ax.get_legend().get_window_extent()
        assert legend.y0 >= ax.bbox.y1 - 1  # outside the axes: no point or label under it
        assert ax.title.get_window_extent().y0 >= legend.y1 - 1  # and the title clear of it
        assert legend.x1 <= figure.bbox.x1


def test_benchmark_series_legend_beside_the_axes(tmp_path, monkeypatch):
    """7 variants + window + chance: inside the axes ("best") the legend covered memnet_no_store's curve."""
    from agents import benchmark_plots

    drawn = []
    monkeypatch.setattr(benchmark_plots, "_save", lambda figure, path: drawn.append(figure))
    names = ["memnet", "memnet_no_store", "memnet_no_slots", "memnet_no_cache", "transformer", "lstm", "gru"]
    variants = {v: {"metrics": {f"acc_d{b}": {"mean": 0.7, "low": 0.6, "high": 0.8} for b in (1, 2, 64, 1024)}}
                for v in names}
    benchmark_plots._series_figure(variants, "acc_d", tmp_path / "b.png", "t", "x", "y", log_x=True,
                                   chance=1 / 63, window=64)
    figure = drawn[0]
    figure.canvas.draw()
    ax = figure.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.bbox.x1 and legend.x1 <= figure.bbox.x1  # outside the axes, on the figure
    assert len(ax.get_legend().get_texts()) == 9


def test_point_counts_stay_readable_over_the_window_line(tmp_path):
    """The red window line ran through "n=89" at distance 64 (the bucket that holds W): a white rim keeps it legible."""
    from matplotlib.patheffects import withStroke

    figure = plot_accuracy_vs_distance({64: 0.94, 128: 0.99}, tmp_path / "d.png", window=64, counts={64: 89, 128: 1140})
    labels = [t for t in figure.axes[0].texts if t.get_text().startswith("n=")]
    assert [t.get_text() for t in labels] == ["n=89", "n=1140"]
    for label in labels:
        (rim,) = label.get_path_effects()
        assert isinstance(rim, withStroke) and rim._gc["foreground"] == "white"


def test_forgetting_curves_of_the_evaluation_before_training_tick_step_0(tmp_path):
    """train.episodes=0: one evaluation per task, at step 0; the axis was ticked -0.04, -0.02, 0.00, 0.02, 0.04."""
    curves = {t: [(0, 0.17 + 0.01 * t)] for t in range(5)}
    figure = plot_forgetting_curves(curves, [], tmp_path / "f.png")
    assert _tick_labels(figure) == ["0"]
    figure = plot_forgetting_curves(*_many_tasks(5)[:2], tmp_path / "g.png")
    assert _tick_labels(figure) == ["0", "200", "400", "600", "800", "1000", "1200", "1400"]  # unchanged past it


def test_accuracy_matrix_says_what_its_grey_cells_are(tmp_path):
    """A run stopped before its last block has grey '–' rows: nothing on the figure said they are not evaluated."""
    stopped = plot_accuracy_matrix(np.array([[0.9, 0.2], [np.nan, np.nan]]), tmp_path / "R.png")
    assert stopped.axes[0].get_xlabel() == "evaluated on task j\n(grey –: not evaluated)"
    whole = plot_accuracy_matrix(np.array([[0.9, 0.2], [0.8, 0.9]]), tmp_path / "R2.png")
    assert whole.axes[0].get_xlabel() == "evaluated on task j"  # no grey cell, no key


def test_whole_number_ticks_keep_round_spacing(tmp_path):
    """The main command's forgetting curves (steps 0 .. 3020): whole-number ticks had come out 400 apart (0, 400, ...,
    2800, the end unticked), where matplotlib's own were 500 apart."""
    ends = [604, 1208, 1812, 2416, 3020]
    curves = {t: [(0, 0.2)] + [(s, 0.9) for s in ends] for t in range(5)}
    figure = plot_forgetting_curves(curves, ends, tmp_path / "f.png")
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert [int(t) for t in ax.get_xticks() if low <= t <= high] == [0, 500, 1000, 1500, 2000, 2500, 3000]
