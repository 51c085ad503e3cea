"""Publication-ready PNG plots of a run: forgetting curves, accuracy matrix, accuracy vs distance / delay,
slot usage and slot survival (a sweep's metric against a swept parameter: agents/sweep_plots.py).

Figures are built on matplotlib's Agg canvas without pyplot: they never enter pyplot's global figure
list (no backend switch, nothing to close, safe in threads and notebooks) and are freed once unreferenced.
Each function saves its PNG atomically (temp file + os.replace, parent folders created) and returns the
figure so that the caller can also log it to TensorBoard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import patheffects, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from memory.metrics import kaplan_meier
from memory.persist import atomic_file


def _new_figure(width: float = 6.4, height: float = 4.2) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Figure, path: str | os.PathLike) -> Figure:
    """Write the figure as PNG to `path` atomically and return it."""
    with atomic_file(path) as handle:
        figure.savefig(handle, format="png")
    return figure


def _note(ax: Axes, text: str) -> None:
    """Say on the plot why it is empty instead of drawing blank axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


# a white rim around small labels' letters: the window line or a grid line through "n=76" made it unreadable, where
# a white box behind the label would hide the curve passing under it
_HALO = [patheffects.withStroke(linewidth=2.5, foreground="white")]


def whole_number_ticks() -> ticker.MaxNLocator:
    """Ticks for steps, episodes and slot indices: whole numbers at 1, 2 or 5 x 10^k apart (matplotlib's default
    spacing but 2.5, so 500 rather than 400 apart), one tick allowed (the default fell back to fractions where the
    view holds one whole number: 9.6, 9.8, 10.0 around a single delay)."""
    return ticker.MaxNLocator(nbins="auto", steps=[1, 2, 5, 10], integer=True, min_n_ticks=1)


def _legend_above(ax: Axes) -> None:
    """The legend in one row above the axes: inside, where matplotlib's "best" spot skips the n= labels, it hid the
    label of a point (a transformer's n=113 at distance 256)."""
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, frameon=False, borderaxespad=0.2)


def mark_chance(ax: Axes, chance: float | None) -> None:
    """A dotted line at the accuracy of guessing (1 / possible answers), labelled for the legend: where a curve
    sits on it there is no memory of the answer, not merely a low score."""
    if chance is not None:
        ax.axhline(chance, color="0.4", linestyle=":", linewidth=1, label=f"chance = {chance:.3f}")


def figure_to_array(figure: Figure) -> np.ndarray:
    """Render a figure to an RGB image.  # (H, W, 3) uint8"""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)


def png_pixels(path: str | os.PathLike) -> np.ndarray:
    """A PNG file's RGB pixels: a plot as written, for TensorBoard (a second draw changed ~6%).  # (H, W, 3) uint8"""
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3)


def task_colors(count: int) -> list:
    """A colour for each of `count` tasks in order: the default cycle's up to 10; past 10 (where the cycle made task
    10 task 0's colour) evenly along a colour map."""
    if count <= 10:
        return [f"C{n}" for n in range(count)]
    return list(matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, count)))


def plot_forgetting_curves(
    curves: Mapping[int, Sequence[tuple[int, float]]], task_boundaries: Sequence[int], path: str | os.PathLike,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Eval accuracy of each task j against training step, one line per task.

    curves: {task j: [(training step, eval accuracy), ...]}; task_boundaries: training steps at which a block of
    the schedule ends (drawn as dotted vertical lines; one at step 0 is not drawn). labels: one per boundary, what
    follows it (the trainer's: "task <j>" for the task that starts, "end" where training ends); None numbers them
    "task 1", "task 2", ..., which is right only for switches of a single pass over the tasks."""
    if labels is not None and len(labels) != len(task_boundaries):
        raise ValueError(f"labels must hold one label per task boundary ({len(task_boundaries)}); got {len(labels)}")
    tasks = [task for task in sorted(curves) if curves[task]]
    columns = max(1, -(-len(tasks) // 15))  # legend columns: one of 20 tasks ran off the figure's foot
    figure, ax = _new_figure(6.4 + 1.0 * (columns - 1))
    colors = task_colors(len(tasks))
    for task, color in zip(tasks, colors, strict=True):
        steps, accuracies = zip(*sorted(curves[task]), strict=True)
        ax.plot(steps, accuracies, marker="o", markersize=3, linewidth=1.5, label=f"task {task}", color=color)
    if labels is None:
        drawn_boundaries = [(b, f"task {n}") for n, b in enumerate(sorted(b for b in task_boundaries if b > 0), 1)]
    else:
        drawn_boundaries = sorted((b, str(label)) for b, label in zip(task_boundaries, labels, strict=True) if b > 0)
    # past 10 block ends the labels ran into each other: upright, and past 30 only every n-th (the last one) named
    crowded = len(drawn_boundaries) > 10
    every = -(-len(drawn_boundaries) // 30)
    for number, (boundary, label) in enumerate(drawn_boundaries, 1):
        ax.axvline(boundary, color="0.5", linestyle=":", linewidth=1)
        if (len(drawn_boundaries) - number) % every == 0:  # counted from the last: it and its neighbour apart
            ax.text(boundary, 1.02, label, ha="center", va="bottom", fontsize=7 if crowded else 8, color="0.35",
                    rotation=90 if crowded else 0, transform=ax.get_xaxis_transform())
    if tasks:
        # outside the axes: inside, any corner hides some curve's points (lower left: the untrained ones)
        ax.legend(title="evaluated on", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  ncols=columns)
    else:
        _note(ax, "no evaluations yet")
    ax.set_ylim(-0.02, 1.02)
    # whole steps: with only the evaluation before training (train.episodes=0) the axis read -0.04 .. 0.04
    ax.xaxis.set_major_locator(whole_number_ticks())
    ax.set_xlabel("training step")
    ax.set_ylabel("eval accuracy (scored steps)")
    ax.set_title("Forgetting curves", pad=42 if crowded else 20)  # clear of the boundary labels above the axes
    ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_accuracy_matrix(R, path: str | os.PathLike, tasks=None) -> Figure:
    """Heatmap of R[k][j] (rows: after training block k; columns: evaluated on task j), values in the cells.

    tasks: (K,) the task trained in each row's block (a schedule that revisits tasks has K > T rows), shown in
    the row labels; None: R is square and row i is after training task i."""
    R = np.asarray(R, dtype=np.float64)  # (K, T)
    if R.size == 0 and (tasks is None or len(tasks) == 0):  # no block trained yet: nothing to draw, said so
        figure, ax = _new_figure(4.4, 3.2)
        _note(ax, "no evaluations yet")
        return _save(figure, path)
    if tasks is None:
        if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
            raise ValueError(f"R must be a square (T, T) accuracy matrix (or (K, T) with tasks=, one task per row) "
                             f"with T >= 1; got shape {R.shape}")
    elif R.ndim != 2 or min(R.shape) < 1 or np.shape(tasks) != (R.shape[0],):
        raise ValueError(f"R must be a (K, T) accuracy matrix and tasks (K,), one task per row; got R {R.shape}, "
                         f"tasks {np.shape(tasks)}")
    K, T = R.shape
    if tasks is not None and K == T and [int(t) for t in tasks] == list(range(T)):
        tasks = None  # a single pass over the tasks: label it as one (row i: after training task i)
    side = min(3.2 + 0.6 * T, 12.0)
    height = min(3.2 + 0.6 * K, 12.0)
    figure, ax = _new_figure(side + 1.2 + (0.6 if tasks is not None else 0.0), height)
    shown = np.ma.masked_invalid(R)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")  # grey cells: not evaluated (NaN)
    image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap=cmap)
    if max(K, T) <= 20:  # past that the numbers would not fit in the cells
        for (i, j), value in np.ndenumerate(R):
            text = "–" if np.isnan(value) else f"{value:.2f}"
            color = "black" if np.isnan(value) or value > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8 if max(K, T) > 8 else 10, color=color)
    # outline each row's cell for the task that row's block trained (the diagonal of a single pass): the
    # just-learned accuracy that the cells left of it (forgetting) and right of it (forward transfer) are read against
    trained = np.arange(K) if tasks is None else np.asarray(tasks, dtype=np.int64)  # (K,)
    for row, column in enumerate(trained):
        if 0 <= column < T and not np.isnan(R[row]).all():  # (a block a stopped run never trained: no outline)
            ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=2,
                                   clip_on=False, zorder=3))  # unclipped, over the frame: a corner cell shows its edge
    ax.set_xticks(np.arange(T), [str(j) for j in range(T)])
    ax.set_xlabel("evaluated on task j")
    if tasks is None:
        ax.set_yticks(np.arange(K), [str(i) for i in range(K)])
        ax.set_ylabel("after training task i")
        ax.set_title("Accuracy matrix R[i][j]\n(outlined: the task just trained)")
    else:
        ax.set_yticks(np.arange(K), [f"{k} (task {int(t)})" for k, t in enumerate(tasks)])
        ax.set_ylabel("after training block k")
        ax.set_title("Accuracy matrix R[k][j]\n(outlined: the task block k trained)")
    if np.isnan(R).any():  # the grey cells had no key: a stopped run's rows read as a colour off the scale
        ax.set_xlabel("evaluated on task j\n(grey –: not evaluated)")
    figure.colorbar(image, ax=ax, label="accuracy", shrink=0.85)
    return _save(figure, path)


def _key_number(key):
    """A bucket / delay key as a number: metrics.json (JSON) holds them as strings ("64")."""
    if isinstance(key, str):
        number = float(key)
        return int(number) if number.is_integer() else number
    return key


def break_at_missing_buckets(buckets, *columns) -> list[np.ndarray]:
    """(buckets, *columns) with a NaN row between two neighbouring distance buckets that are not 2x apart, so that
    a line through them breaks there: buckets double (`agents.cl_metrics.distance_buckets`), and one that saw no
    scored step is not in the data; a line drawn across it showed a value nobody measured."""
    x = np.asarray(buckets, dtype=np.float64)  # (K,)
    gaps = np.nonzero(x[1:] > 2 * x[:-1])[0] + 1  # index of the bucket after each gap
    return [np.insert(x, gaps, np.sqrt(x[gaps - 1] * x[gaps]))] + [
        np.insert(np.asarray(c, dtype=np.float64), gaps, np.nan) for c in columns]


def _plot_accuracy_series(ax: Axes, accuracy_by_key: Mapping[int, float | None], label: str,
                          counts: Mapping[int, int] | None = None, buckets: bool = False) -> bool:
    """Line through the keys that have an accuracy; None entries (no scored step) are left out, and with
    `buckets` (keys are doubling distance buckets) the line breaks where one is missing. `counts` ({key: scored
    steps}, keys as in accuracy_by_key) label each point with the steps it rests on (n=1 is no trend)."""
    points = sorted((_key_number(k), v) for k, v in accuracy_by_key.items() if v is not None)
    if not points:
        _note(ax, "no scored steps")
        return False
    keys, accuracies = zip(*points, strict=True)
    if buckets:
        keys, accuracies = break_at_missing_buckets(keys, accuracies)
    ax.plot(keys, accuracies, marker="o", linewidth=1.5, label=label)
    numbers = {_key_number(k): n for k, n in (counts or {}).items()}
    for key, accuracy in points:
        if key in numbers:
            below = accuracy > 0.1  # under the point, above it at the bottom of the axes
            ax.annotate(f"n={numbers[key]}", (key, accuracy), textcoords="offset points",
                        xytext=(0, -7 if below else 7), ha="center", va="top" if below else "bottom", fontsize=7,
                        color="dimgray", path_effects=_HALO)
    return True


def plot_accuracy_vs_distance(
    acc_by_bucket: Mapping[int, float | None], path: str | os.PathLike, window: int | None = None,
    counts: Mapping[int, int] | None = None, chance: float | None = None
) -> Figure:
    """Accuracy per distance bucket on a log2 x axis; a vertical line at the controller's window W and a dotted one
    at `chance` (as the benchmark's figure has them); each point labelled with its scored steps where `counts`
    ({bucket: steps}) gives them."""
    figure, ax = _new_figure()
    _plot_accuracy_series(ax, acc_by_bucket, "accuracy", counts, buckets=True)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))  # 64 rather than 2^6
    if window is not None:
        ax.axvline(window, color="tab:red", linestyle="--", label=f"controller window W = {window}")
    mark_chance(ax, chance)
    if window is not None or chance is not None:
        _legend_above(ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("distance to the needed token (steps; bucket upper bound)")
    ax.set_ylabel("accuracy (scored steps)")
    ax.set_title("Accuracy vs distance", pad=22)  # above the legend
    ax.grid(alpha=0.3, which="both")
    return _save(figure, path)


def plot_recall_vs_delay(acc_by_delay: Mapping[int, float | None], path: str | os.PathLike,
                         counts: Mapping[int, int] | None = None, chance: float | None = None) -> Figure:
    """Recall accuracy against the delay (episodes) between storing a fact and being asked for it (points labelled
    with their scored steps where `counts` gives them), a dotted line at `chance`."""
    figure, ax = _new_figure()
    if _plot_accuracy_series(ax, acc_by_delay, "recall accuracy", counts):
        # min_n_ticks=1: with the default 2, one delay (NeedleRecall's default, 10) has one integer in its view and
        # the locator fell back to 9.6, 9.8, ... (delays are whole episodes)
        ax.xaxis.set_major_locator(whole_number_ticks())
    mark_chance(ax, chance)
    if chance is not None:
        _legend_above(ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("delay (episodes between the fact and the query)")
    ax.set_ylabel("recall accuracy")
    ax.set_title("Recall vs delay", pad=22)  # above the legend
    ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_slot_usage_heatmap(
    usage_history, path: str | os.PathLike, steps: Sequence[int] | None = None
) -> Figure:
    """Usage of each memory slot over training: usage_history (time, N) with one row per snapshot.

    steps: (time,) training step of each snapshot for the x axis; None = snapshot index."""
    usage = np.asarray(usage_history, dtype=np.float64)  # (time, N)
    if usage.size == 0:  # [] (no snapshot) reads as shape (0,): empty too
        usage = usage.reshape(0, 0)
    if usage.ndim != 2:
        raise ValueError(f"usage_history must be a (time, N) array; got shape {usage.shape}")
    figure, ax = _new_figure(7.0, 4.2)
    if usage.size == 0:
        _note(ax, "no slot usage recorded (no evaluation after training, or memory.slots=0)")
    else:
        if steps is not None and len(steps) != usage.shape[0]:
            raise ValueError(f"steps must have one entry per snapshot ({usage.shape[0]}); got {len(steps)}")
        x = np.asarray(steps if steps is not None else np.arange(usage.shape[0]), dtype=np.float64)  # (time,)
        # each snapshot's column is centred on its step and reaches halfway to its neighbours (an imshow extent
        # of +-0.5 around the first and last step spread the columns evenly off their steps)
        mids = (x[1:] + x[:-1]) / 2
        first, last = (x[0] - (mids[0] - x[0]), x[-1] + (x[-1] - mids[-1])) if x.size > 1 else (x[0] - .5, x[0] + .5)
        edges = np.concatenate([[first], mids, [last]])  # (time + 1,)
        # the scale starts at 0 (an unused slot): scaled to the data's own range, slots at 19.6 and 20.8 drew as
        # black and white, as if some slots went unused
        image = ax.pcolormesh(edges, np.arange(usage.shape[1] + 1) - 0.5, usage.T, cmap="magma", shading="flat",
                              vmin=0.0, vmax=max(float(usage.max()), 1e-12))
        figure.colorbar(image, ax=ax, label="slot usage (decayed access count, mean over lanes)")
        # steps and slot indices are whole numbers: one snapshot (a column 1 step wide) was ticked -0.4 .. 0.4 under
        # a "+1.28e4" offset, and 3 slots -0.5, 0.0, 0.5, ...
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(whole_number_ticks())
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.set_xlabel("training step" if steps is not None else "snapshot")
    ax.set_ylabel("slot index")
    ax.set_title("Slot usage over training")
    return _save(figure, path)


def plot_slot_survival(lifetimes, path: str | os.PathLike, observed=None, unit: str = "slot-bank writes",
                       counts=None) -> Figure:
    """Kaplan-Meier survival of slot contents: share still present t steps after being written.

    lifetimes: (n,) steps each content stayed before being overwritten, in `unit` (the x axis names it: the
    trainer's tracker counts slot-bank writes, one per learning chunk); observed: (n,) bool, False for content
    still present at the end (censored); None = all overwritten; counts: (n,) contents per entry (a histogram;
    None = one each)."""
    figure, ax = _new_figure()
    lifetimes = np.asarray(lifetimes, dtype=np.float64).ravel()  # (n,)
    times, survival = kaplan_meier(lifetimes, observed, counts)
    contents = int(np.sum(counts)) if counts is not None else lifetimes.size
    if contents == 0:
        _note(ax, "no slot contents recorded")
    else:
        ax.step(times, survival, where="post", linewidth=1.5, label=f"Kaplan-Meier (n = {contents:,})")
        below_half = np.nonzero(survival <= 0.5)[0]
        if below_half.size:
            median = times[below_half[0]]
            ax.axvline(median, color="0.5", linestyle=":", linewidth=1, label=f"median lifetime = {median:g}")
            if times.max() >= 20 * max(median, 1.0):
                # a long tail (NeedleRecall: median 2, last content 125) squeezed the drop into the left 2% of a
                # linear axis: logarithmic past 1 (linear below, where t = 0 sits)
                ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
                ax.set_xlim(0, times.max() * 1.1)  # a margin below 0 read as negative lifetimes
                ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.legend(fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{unit} since the content was written")
    ax.set_ylabel("fraction of slot contents still present")
    ax.set_title("Slot content survival")
    ax.grid(alpha=0.3)
    return _save(figure, path)
