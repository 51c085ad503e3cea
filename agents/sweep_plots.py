"""A sweep's plot: a metric against a swept parameter (`agents.tune` writes plots/<metric>_vs_<param>.png).

Same conventions as agents/plots.py (Agg canvas without pyplot, atomic PNG, a note instead of empty axes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from agents.cl_metrics import bootstrap_ci
from agents.plots import _new_figure, _note, _save, whole_number_ticks


def plot_metric_vs_param(rows: Sequence[Mapping], param: str, metric: str, path: str | os.PathLike) -> Figure:
    """A metric against a swept parameter: each run as a dot, the mean with a 90% bootstrap interval.

    rows: one dict per run (trial x seed) holding `param` and `metric`; runs where the metric is None or NaN
    (not applicable) are left out. Numeric parameters get a numeric axis (log when spanning >= 10x)."""
    for number, row in enumerate(rows):
        if param not in row:
            raise ValueError(f"rows[{number}] has no key {param!r}; keys present: {sorted(row)}")
    groups: dict = {}
    for row in rows:
        if row.get(metric) is not None and not np.isnan(float(row[metric])):  # NaN: what Tune reports for None
            value = row[param]  # a list (LongDependency's distances swept) by its text: a list keys no dict
            groups.setdefault(str(value) if isinstance(value, (list, dict)) else value, []).append(float(row[metric]))
    figure, ax = _new_figure()
    if not groups:
        _note(ax, f"no run reports {metric!r}")
    else:
        keys = list(groups)
        numeric = all(isinstance(k, (int, float, np.number)) and not isinstance(k, bool) for k in keys)
        keys = sorted(keys) if numeric else sorted(keys, key=str)
        x = np.asarray(keys, dtype=np.float64) if numeric else np.arange(len(keys), dtype=np.float64)  # (G,)
        stats = np.array([bootstrap_ci(groups[k]) for k in keys])  # (G, 3): mean, low, high
        for position, key in zip(x, keys, strict=True):
            ax.scatter(np.full(len(groups[key]), position), groups[key], s=12, color="0.6", zorder=2)
        # yerr as one (2, G) array: a list of two (1,) arrays (one swept value) made matplotlib 3.10 (the last for
        # Python 3.10) convert an array to a scalar, which NumPy deprecates (a warning now, an error to come)
        yerr = np.stack([stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]])  # (2, G)
        ax.errorbar(x, stats[:, 0], yerr=yerr, marker="o",
                    capsize=3, linewidth=1.5, zorder=3, label="mean, 90% bootstrap CI")
        log = numeric and x.min() > 0 and x.max() / x.min() >= 10
        if log:
            ax.set_xscale("log")
        # ticks at the swept values where they are few and apart (a grid: 8, 64, 512; slots 4 and 8 were ticked
        # 4.0, 4.5, ...); a random search's values crowd (0.00108 and 0.00121 printed over each other), so those
        # get the axis' own ticks, written plainly
        position = np.log(x) if log else x  # (G,) where the ticks sit
        apart = len(x) < 2 or np.diff(position).min() >= 0.1 * (position.max() - position.min())
        if not numeric or (len(keys) <= 8 and apart):
            ax.set_xticks(x, [f"{k:g}" if numeric else str(k) for k in keys])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
        elif log:
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        elif all(float(k).is_integer() for k in keys):
            ax.xaxis.set_major_locator(whole_number_ticks())
        ax.legend(fontsize=8)
    if "accuracy" in metric or metric.endswith("/ACC"):
        # 0..1 as on every accuracy figure: fitted to the data, 0.90 against 0.92 filled the whole height
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {param}")
    ax.grid(alpha=0.3)
    return _save(figure, path)
