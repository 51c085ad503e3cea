"""The sweep's terminal output: one line per finished, failed or retried trial (Tune's own reporter is off).

On a terminal a status line (`[done/running/failed] best <metric>`) is rewritten in place after every report.
Stateless apart from its settings: Tune pickles the callbacks with the sweep and restores them on resume.
"""

from __future__ import annotations

import math
import sys

from ray.tune import Callback

from agents.tune_results import STOPPED, best_row, trial_status


class ProgressLine(Callback):
    """total: the trials the sweep plans (`planned_trials`). Tune makes them as it goes (one at a time under
    sweep.max_concurrent), so counting the trials made so far showed "[1 finished ... of 1] no trial measured" with
    a second one still to run."""

    def __init__(self, metric: str, mode: str = "max", total: int | None = None):
        self.metric, self.mode, self.total = metric, mode, total

    def _value(self, trial) -> float | None:
        value = (trial.last_result or {}).get(self.metric)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    def _status(self, trials, finishing=None) -> str:
        """finishing: the trial whose completion is being reported (Tune marks it TERMINATED just after)."""
        states = ("TERMINATED", "RUNNING", "ERROR", "PENDING")
        status = {t.trial_id: "TERMINATED" if t is finishing else t.status for t in trials}
        counts = {s: sum(status[t.trial_id] == s for t in trials) for s in states}
        total = max(self.total or 0, len(trials))
        counts["PENDING"] += total - len(trials)  # planned, not made yet
        # the best as the final table picks it (`best_row`): among trials that trained to the end (a running trial's
        # interim value, or an ASHA-stopped one's, saw fewer tasks: counting them showed a "best" that no finished
        # trial had), and once none is left to run and none trained to the end (max_t below the episodes: ASHA
        # stopped them all), among the stopped ones that trained the most, which the table then marks best (this
        # line said "no finished trial measured" just before it)
        rows = [{"trial": t.trial_id, self.metric: self._value(t), "episode": (t.last_result or {}).get("episode"),
                 "status": trial_status(status[t.trial_id], t.last_result)} for t in trials]
        best = best_row(rows, self.metric, self.mode)
        done = counts["TERMINATED"] + counts["ERROR"] == total  # no trial left that could still measure it
        best_text = f"no trial measured {self.metric}" if best is None and done else \
            f"no finished {self.metric} yet" if best is None else f"best {self.metric} {best[self.metric]:.4g}"
        if best is not None and best["status"] == STOPPED:
            best_text += f" (trial {best['trial']}, stopped early at episode {best['episode']}: no trial trained to " \
                         "the end)"
        return (f"[{counts['TERMINATED']} finished, {counts['RUNNING']} running, {counts['PENDING']} "
                f"pending, {counts['ERROR']} failed of {total:,}] {best_text}")

    def _line(self, text: str) -> None:
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K")
        print(text, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K" + self._status(trials))
            sys.stdout.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        if r.get("diverged"):  # ended by its run's own line, not retried (agents.tune_trial)
            self._line(f"  trial {trial.trial_id} failed, not retried: {r['diverged']}   "
                       f"{self._status(trials, finishing=trial)}")
            return
        value = self._value(trial)
        shown = "n/a" if value is None else f"{value:.4g}"
        how = "done" if _trained_to_end(trial) else "stopped early"
        where = f"episode {r.get('episode', 0)}/{r.get('total_episodes', '?')}"
        self._line(f"  trial {trial.trial_id} {how} at {where}: {self.metric}={shown}   "
                   f"{self._status(trials, finishing=trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(f"  trial {trial.trial_id} crashed; retrying from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(f"  trial {trial.trial_id} failed for good; see {trial.path}/error.txt")


def _trained_to_end(trial) -> bool:
    r = trial.last_result or {}
    return r.get("episode") is not None and r.get("episode") == r.get("total_episodes")
