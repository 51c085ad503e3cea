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



def test_benchmark_marks_the_window_of_an_agent_that_attends_over_one(tmp_path, monkeypatch):
    """A suite of LSTM and GRU variants marked "window W = 64" from the first of them: model.window, which a recurrent
    net ignores; beside a transformer, its window is the one marked."""
    windows = []
    monkeypatch.setattr(benchmark_plots, "_series_figure",
                        lambda variants, key, *args, **kw: windows.append(kw.get("window")) if key == "acc_d" else None)
    monkeypatch.setattr(benchmark_plots, "_forgetting_figure", lambda *args: None)
    recurrent = {"lstm": {"agent": "lstm", "window": 64}, "gru": {"agent": "gru", "window": 64}}
    benchmark_plots.write_plots(tmp_path, {"LongDependency-v0": recurrent}, [])
    benchmark_plots.write_plots(tmp_path, {"LongDependency-v0": {**recurrent, "transformer": {"agent": "transformer",
                                                                                              "window": 32}}}, [])
    assert windows == [None, 32]
