"""The end of a sweep: a row per trial, a terminal table, results.csv/json, the best config, a plot per param.

Best trial: the best value of the metric among trials that trained to the end ("done"); trials stopped early
by ASHA are ranked only when none finished (`ranked_rows`), since e.g. ACC over the tasks seen so far is not
comparable with ACC over all tasks.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shlex
from pathlib import Path

from omegaconf import OmegaConf

from agents.config import to_yaml
from agents.report import write_json_atomic, write_text_atomic
from agents.sweep_plots import plot_metric_vs_param
from agents.tune_overrides import trial_overrides
from agents.tune_space import SweepPlan, plain, trial_config, trial_threads

DONE, STOPPED, ERROR, DIVERGED, UNFINISHED = "done", "stopped early", "error", "diverged", "unfinished"


def trial_status(tune_status: str, metrics: dict | None) -> str:
    """done: trained all its episodes; stopped early: ASHA ended it; error: crashed past max_failures;
    unfinished: pending, running or paused when the sweep was interrupted (resume= continues it); diverged: its run
    stopped on its own line (`training diverged ...`), not retried (TERMINATED, `diverged` in its last report)."""
    if (metrics or {}).get("diverged"):
        return DIVERGED
    if tune_status == "ERROR":
        return ERROR
    if tune_status != "TERMINATED":
        return UNFINISHED
    metrics = metrics or {}
    done = metrics.get("total_episodes") and metrics.get("episode") == metrics.get("total_episodes")
    return DONE if done else STOPPED


def _number(value):
    value = plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def result_rows(trials, plan: SweepPlan, metric: str) -> list[dict]:
    """One dict per Tune trial (as saved in the experiment state): trial, each swept key, the metric (last
    reported value), episode, status, run_dir."""
    rows = []
    for trial in trials:
        metrics, config = trial.last_result or {}, trial.config or {}
        row = {"trial": trial.trial_id} | {key: plain(config.get(key)) for key in plan.search_space}
        row |= {metric: _number(metrics.get(metric)), "episode": metrics.get("episode"),
                "status": trial_status(trial.status, metrics), "run_dir": str(trial.path)}
        rows.append(row)
    return rows


def ranked_rows(rows: list[dict], metric: str) -> list[dict]:
    """The trials with a value that the best is chosen from: those that trained to the end (an interim value saw
    fewer tasks: an interrupted sweep named an unfinished trial best at 0.84, which ended at 0.72). When none did
    and none is left to run, the ASHA-stopped ones that trained the most episodes: with sweep.scheduler.max_t below
    the trials' episodes ASHA stops every trial at max_t, and the sweep ended with "no trial reported cl/ACC" and
    no best config although every trial had reported it."""
    scored = [r for r in rows if r[metric] is not None]
    done = [r for r in scored if r["status"] == DONE]
    if done or any(r["status"] == UNFINISHED for r in rows):  # an unfinished trial may still train to the end
        return done
    stopped = [r for r in scored if r["status"] == STOPPED]
    most = max((r["episode"] or 0 for r in stopped), default=None)
    return [r for r in stopped if (r["episode"] or 0) == most]


def best_row(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The best of `ranked_rows` by `mode`, or None."""
    pool = ranked_rows(rows, metric)
    if not pool:
        return None
    # ties go to the first trial (by id: Tune numbers them in order), so identical sweeps pick the same best
    first = {r["trial"]: i for i, r in enumerate(sorted(pool, key=lambda r: str(r["trial"])))}
    if mode == "max":
        return max(pool, key=lambda r: (r[metric], -first[r["trial"]]))
    return min(pool, key=lambda r: (r[metric], first[r["trial"]]))


def table_order(rows: list[dict], metric: str, mode: str = "max") -> list[dict]:
    """The rows best metric first (by `mode`), ties and trials without a value by trial id: the table's order, and
    results.csv/json's (they were in Tune's order, which differs from the table's on ties)."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (r[metric] is None, sign * (r[metric] or 0.0), str(r["trial"])))


def format_table(rows: list[dict], params: list[str], metric: str, best: dict | None = None,
                 mode: str = "max") -> str:
    """A fixed-width table, best metric first (by `mode`); the best trial is marked with *."""
    def cell(v) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    order = table_order(rows, metric, mode)
    columns = ["trial", *params, metric, "episode", "status"]
    body = [[("* " if r is best else "  ") + cell(r["trial"])] + [cell(r[c]) for c in columns[1:]]
            for r in order]
    header = ["  trial", *columns[1:]]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rerun_command(sweep_dir: Path) -> str:
    """The shell command that reruns the best trial from best_overrides.txt: eval reads the file's quoted words as
    the shell reads a command line (`$(cat ...)` alone split at every space and globbed), and the exit code is
    agents.run's own (xargs would turn an exit 2 into 123)."""
    return f'eval python -m agents.run "$(cat {shlex.quote(str(sweep_dir / "best_overrides.txt"))})"'


def write_results(sweep_dir: Path, rows: list[dict], plan: SweepPlan, base: dict, metric: str) -> dict | None:
    """results.csv, results.json (rows in the table's order), best_config.yaml + best_overrides.txt (when a trial
    has the metric), plots/<metric>_vs_<param>.png; returns the best row."""
    params = list(plan.search_space)
    best = best_row(rows, metric, plan.mode)
    rows = table_order(rows, metric, plan.mode)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(sweep_dir / "results.csv", buffer.getvalue())
    write_json_atomic(sweep_dir / "results.json", {"sweep": plan.name, "metric": metric, "mode": plan.mode,
                                                   "best": best, "trials": rows})
    if best is not None:
        # the trial's own thread counts where the base config's differ: another count moves the last bits of every
        # float, and a rerun of the best trial without them gave ACC 0.406 against the trial's 0.391
        saved = OmegaConf.create(base)
        threads = trial_threads(plan.resources["threads"])
        chosen = {k: best[k] for k in params} | {k: v for k, v in threads.items() if OmegaConf.select(saved, k) != v}
        if best["status"] == STOPPED and best["episode"]:  # ASHA stopped it (max_t below the episodes): its rerun
            chosen["train.episodes"] = int(best["episode"])  # trains as far (the full budget ended elsewhere)
        cfg = trial_config(saved, chosen)
        cfg.run_dir, cfg.resume = None, None
        title = f"# best trial {best['trial']} of sweep {plan.name}: {metric}={best[metric]:.6g}\n"
        write_text_atomic(sweep_dir / "best_config.yaml", title + to_yaml(cfg))
        # shell words: a value with a space (runs_root='/a b', a haystack path) was split in two by the rerun
        # command's $(cat ...), and a list value ([1,4,16]) was a glob there; `rerun_command` reads them with eval
        overrides = " ".join(map(shlex.quote, trial_overrides(plan.overrides, chosen)))
        write_text_atomic(sweep_dir / "best_overrides.txt", overrides + "\n")
    import matplotlib.pyplot as plt

    ranked = ranked_rows(rows, metric)  # as the best: an ASHA-stopped trial's value is interim
    for param in params:
        name = re.sub(r"[^\w.-]+", "_", f"{metric}_vs_{param}")
        plt.close(plot_metric_vs_param(ranked, param, metric, sweep_dir / "plots" / f"{name}.png"))
    return best
