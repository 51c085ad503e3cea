"""The sweep's terminal output: one line per finished, failed or retried trial (Tune's own reporter is off).

On a terminal a status line (`[done/running/failed] best <metric>`) is rewritten in place after every report.
Stateless apart from its settings: Tune pickles the callbacks with the sweep and restores them on resume.
"""

from __future__ import annotations

import math
import sys

from ray.tune import Callback


class ProgressLine(Callback):
    def __init__(self, metric: str, mode: str = "max"):
        self.metric, self.mode = metric, mode

    def _value(self, trial) -> float | None:
        value = (trial.last_result or {}).get(self.metric)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    def _status(self, trials, finishing=None) -> str:
        """finishing: the trial whose completion is being reported (Tune marks it TERMINATED just after)."""
        states = ("TERMINATED", "RUNNING", "ERROR", "PENDING")
        counts = {s: sum((t.status if t is not finishing else "TERMINATED") == s for t in trials)
                  for s in states}
        # ranked as the final table ranks: trials that trained to the end (a running trial's interim value, or an
        # ASHA-stopped one's, saw fewer tasks; counting them showed a "best" that no finished trial had)
        values = [v for v in (self._value(t) for t in trials
                              if (t.status == "TERMINATED" or t is finishing) and _trained_to_end(t)) if v is not None]
        best = (max if self.mode == "max" else min)(values) if values else None
        done = counts["TERMINATED"] + counts["ERROR"] == len(trials)  # no trial left that could still measure it
        best_text = f"best {self.metric} {best:.4g}" if best is not None else \
            f"no finished trial measured {self.metric}" if done else f"no finished {self.metric} yet"
        return (f"[{counts['TERMINATED']} finished, {counts['RUNNING']} running, {counts['PENDING']} "
                f"pending, {counts['ERROR']} failed of {len(trials)}] {best_text}")

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
