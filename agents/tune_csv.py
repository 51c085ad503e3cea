"""Each trial's progress.csv under one header, across a sweep's `resume=` and Tune's retries of a failed trial.

Ray's CSVLoggerCallback continues an existing progress.csv without writing a header, but takes the columns of its
rows from the first result after the restore. A result that carries a checkpoint has a column more
(`should_checkpoint`) than the untrained evaluation's, which gave the header: every row after the restore was shifted
from that column on (Tune's `done` column read True), and pandas refused the file ("Expected 47 fields in line 15,
saw 48"). Here a continued file is written under its own header, a column it lacks left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ray.tune.logger import CSVLoggerCallback
from ray.tune.result import EXPR_PROGRESS_FILE


class ProgressCSV(CSVLoggerCallback):
    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_files:
            self._setup_trial(trial)
        if self._trial_csv.get(trial) is None and self._trial_continue.get(trial):
            with open(Path(trial.local_path, EXPR_PROGRESS_FILE), newline="") as f:
                header = next(csv.reader(f), None)
            if header:  # the parent writes each row by these names (the names it lacks are dropped: "ignore")
                self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header, extrasaction="ignore")
        super().log_trial_result(iteration, trial, result)
