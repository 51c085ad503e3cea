"""The benchmark's figures read as figures: ticks, legends and lines say what was measured."""

from agents import benchmark_plots


def test_benchmark_recall_vs_delay_ticks_whole_episodes_with_one_delay(tmp_path, monkeypatch):
    """No delay probe (one delay, 10, for every variant): the axis was ticked 9.6, 9.8, 10.0, 10.2, 10.4."""
    drawn = []
    monkeypatch.setattr(benchmark_plots, "_save", lambda figure, path: drawn.append(figure))
    stat = {"mean": 0.9, "low": 0.85, "high": 0.95}
    variants = {"memnet": {"metrics": {"recall_delay10": stat}}, "transformer": {"metrics": {"recall_delay10": stat}}}
    benchmark_plots._series_figure(variants, "recall_delay", tmp_path / "r.png", "t", "delay (episodes)", "recall",
                                   chance=0.008, level=0.95)
    figure = drawn[0]
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert [t for t in ax.get_xticks() if low <= t <= high] == [10.0]

