"""The benchmark's plots: every variant of an env on one figure (mean over seeds with its 90% bootstrap band).

    <env>_accuracy_vs_distance.png   accuracy per distance bucket, controller window W and chance marked
    <env>_forgetting_curves.png      one panel per variant: each task's eval accuracy against training step
    <env>_recall_vs_delay.png        NeedleRecall: recall of fresh facts against the delay in episodes
    <env>_recall_vs_facts_held.png   NeedleRecall: recall against facts held (delay x facts_per_episode)

Same conventions as agents/plots.py (Agg canvas without pyplot, atomic PNG, a note instead of empty axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from agents.baselines import CELLS
from agents.benchmark_report import FAILED, series
from agents.plots import (
    _new_figure,
    _note,
    _save,
    break_at_missing_buckets,
    mark_chance,
    task_colors,
    whole_number_ticks,
)


def _series_figure(variants: dict, prefix: str, path: Path, title: str, xlabel: str, ylabel: str,
                   log_x: bool = False, chance: float | None = None, window: int | None = None,
                   level: float | None = None) -> Path | None:
    """One line per variant through the means of the metrics <prefix><key>, a band for the 90% interval."""
    curves = {v: series(cell["metrics"], prefix) for v, cell in variants.items()}
    curves = {v: c for v, c in curves.items() if c}
    if not curves:
        return None
    figure, ax = _new_figure(7.0, 4.4)
    for variant, curve in curves.items():
        x = np.array([k for k, _ in curve], dtype=np.float64)  # (K,)
        mean, low, high = (np.array([s[f] for _, s in curve]) for f in ("mean", "low", "high"))  # (K,) each
        if prefix == "acc_d":  # distance buckets: the line and band break where a variant has no bucket
            x, mean, low, high = break_at_missing_buckets(x, mean, low, high)
        (line,) = ax.plot(x, mean, marker="o", markersize=3, linewidth=1.5, label=variant)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    if log_x:  # ticks at the values measured, written plainly (160 rather than 2^7.3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({k for c in curves.values() for k, _ in c}))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    else:  # keys are whole numbers (delays): one delay measured was ticked 9.6, 9.8, ... as on a run's plot
        ax.xaxis.set_major_locator(whole_number_ticks())
    if window is not None:
        ax.axvline(window, color="tab:red", linestyle="--", linewidth=1, label=f"window W = {window}")
    mark_chance(ax, chance)
    if level is not None:
        ax.axhline(level, color="0.2", linestyle="--", linewidth=1, label=f"target {level:.0%}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    # beside the axes: with the quick suite's 7 variants, window and chance, "best" still put it over a curve
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(figure, path)
    return path


def _mean_curves(runs: list[dict]) -> dict[int, list[tuple[float, float]]]:
    """{task: [(training step, mean eval accuracy over the seeds evaluated at that step)]}."""
    points: dict[int, dict[float, list[float]]] = {}
    for r in runs:
        for task, curve in ((r.get("metrics") or {}).get("forgetting_curves") or {}).items():
            for step, acc in curve:
                if acc is not None:
                    points.setdefault(int(task), {}).setdefault(float(step), []).append(float(acc))
    return {t: sorted((s, float(np.mean(v))) for s, v in by_step.items()) for t, by_step in sorted(points.items())}


def _forgetting_figure(env: str, variants: dict, records: list[dict], path: Path) -> Path | None:
    """A panel per variant with each task's mean forgetting curve; dotted lines at the task boundaries."""
    runs = {v: [r for r in records if r["env"] == env and r["variant"] == v and r["status"] != FAILED]
            for v in variants}
    runs = {v: rs for v, rs in runs.items() if rs}
    if not runs or max(len((r.get("metrics") or {}).get("forgetting_curves") or {})
                       for rs in runs.values() for r in rs) < 2:
        return None  # one task: no forgetting to show
    cols = min(len(runs), 4)
    rows = -(-len(runs) // cols)
    figure = Figure(figsize=(3.4 * cols, 2.8 * rows + 0.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    means = {variant: _mean_curves(rs) for variant, rs in runs.items()}
    tasks = sorted({task for curves in means.values() for task, curve in curves.items() if curve})
    colors = dict(zip(tasks, task_colors(len(tasks)), strict=True))  # a task's colour is the same in every panel
    for ax, (variant, rs) in zip(axes, runs.items(), strict=False):
        curves = means[variant]
        for task, curve in curves.items():
            if curve:
                steps, accs = zip(*curve, strict=True)
                ax.plot(steps, accs, marker="o", markersize=2, linewidth=1.2, label=f"task {task}", color=colors[task])
        for boundary in (rs[0].get("metrics") or {}).get("task_boundaries") or []:
            ax.axvline(boundary, color="0.6", linestyle=":", linewidth=0.8)
        if not curves:
            _note(ax, "no evaluations")
        ax.set_title(f"{variant} ({len(rs)} seed{'s' * (len(rs) != 1)})", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    # one legend beside the panels: inside the first one's lower left it hid its curves' untrained points
    handles = [Line2D([], [], color=colors[t], marker="o", markersize=3, label=f"task {t}") for t in tasks]
    figure.legend(handles=handles, title="evaluated on", fontsize=7, loc="outside right upper",
                  ncols=max(1, -(-len(tasks) // (8 * rows))))
    figure.supxlabel("training step")
    figure.supylabel("eval accuracy (mean over seeds)")
    figure.suptitle(f"{env}: forgetting curves per agent")
    _save(figure, path)
    return path


def write_plots(plot_dir: Path, agg: dict, records: list[dict]) -> list[Path]:
    """Every plot that the runs have numbers for; returns the files written."""
    written = []
    for env, variants in agg.items():
        first = next(iter(variants.values()))
        long_dependency = env.startswith("LongDependency")
        # the window of a variant that attends over one (MemNet, the transformer): an LSTM or GRU ignores
        # model.window, and a suite of recurrent variants alone marked it from the first of them
        window = next((v.get("window") for v in variants.values() if v.get("agent") not in CELLS), None)
        written += [
            _series_figure(variants, "acc_d", plot_dir / f"{env}_accuracy_vs_distance.png",
                           f"{env}: accuracy vs distance", "distance to the needed token (bucket upper bound, steps)",
                           "accuracy", log_x=True, chance=first.get("chance"),
                           window=window) if long_dependency else None,
            _forgetting_figure(env, variants, records, plot_dir / f"{env}_forgetting_curves.png"),
            _series_figure(variants, "recall_delay", plot_dir / f"{env}_recall_vs_delay.png",
                           f"{env}: recall vs delay (fresh facts, writes off)", "delay (episodes)",
                           "recall accuracy", chance=first.get("chance"), level=0.95),
            _series_figure(variants, "recall_facts", plot_dir / f"{env}_recall_vs_facts_held.png",
                           f"{env}: recall vs facts held", "facts held (delay x facts_per_episode)",
                           "recall accuracy", log_x=True, chance=first.get("chance"), level=0.95),
        ]
    return [p for p in written if p is not None]
