"""Each trial's progress.csv and result.json: one table, one row per report, across a sweep's `resume=` and Tune's
retries of a failed trial.

Ray's CSVLoggerCallback continues an existing progress.csv without writing a header, but takes the columns of its
rows from the first result after the restore. A result that carries a checkpoint has a column more
(`should_checkpoint`) than the untrained evaluation's, which gave the header: every row after the restore was shifted
from that column on (Tune's `done` column read True), and pandas refused the file ("Expected 47 fields in line 15,
saw 48"). Here a continued file is written under its own header, a column it lacks left out.

A trial continued from its checkpoint reports again what it reported after that checkpoint: Tune logs a result
before it registers the result's checkpoint (a separate save), so a sweep stopped in between resumed the trial
from the checkpoint before it, and a report that carried no checkpoint is run again anyway. Ray's loggers appended
the report again (episodes [0, 2, 4, 4], its `training_iteration` repeated). A result whose `training_iteration`
is not past the file's last row replaces the rows from that iteration on, as TensorBoard drops the points a
stopped run logged after its checkpoint (`agents.tb_logger.TBLogger`'s resume_step): the file holds the run as
it went on, the same values as the trial's curves and last result.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import EXPR_PROGRESS_FILE, TRAINING_ITERATION


def _json_rows(text: str):
    """(start in bytes, training iteration or None) of each line of a result.json."""
    start = 0
    for line in io.StringIO(text, newline=""):
        try:
            yield start, json.loads(line).get(TRAINING_ITERATION)
        except (ValueError, AttributeError):  # a line cut short by a kill: kept
            yield start, None
        start += len(line.encode(errors="surrogateescape"))


def _csv_rows(text: str):
    """(start in bytes, training iteration or None) of each row of a progress.csv after its header."""
    lines = io.StringIO(text, newline="").readlines()
    sizes = (len(line.encode(errors="surrogateescape")) for line in lines)
    offsets = list(itertools.accumulate(sizes, initial=0))  # of each line's start
    reader = csv.reader(lines)  # a quoted value may span lines: reader.line_num counts the lines read
    header = next(reader, None) or []
    column = header.index(TRAINING_ITERATION) if TRAINING_ITERATION in header else None
    start = offsets[reader.line_num]
    for row in reader:
        try:
            yield start, int(row[column]) if column is not None else None
        except (IndexError, ValueError):
            yield start, None
        start = offsets[reader.line_num]


class _NoReplay:
    """Mixin of a Ray logger callback that appends a trial's rows to `_trial_files[trial]`: a result whose training
    iteration the file already holds replaces the rows from that iteration on."""

    _rows = None  # the file's rows: text -> (start in bytes, training iteration or None) each

    def __init__(self):
        super().__init__()
        self._last_iteration: dict = {}  # per trial: the last iteration written since the file was opened

    def _drop_replayed(self, trial, result: dict) -> None:
        iteration = result.get(TRAINING_ITERATION)
        if iteration is None:
            return
        last = self._last_iteration.get(trial)
        if last is None or iteration <= last:  # first result since the file was opened (resume=, a retry), or a replay
            file = self._trial_files[trial]
            file.flush()
            # (a row cut inside a character by a kill, or a non-UTF-8 locale's file: its bytes kept as they are)
            text = Path(file.name).read_bytes().decode(errors="surrogateescape")
            cut = next((start for start, it in self._rows(text) if it is not None and it >= iteration), None)
            if cut is not None:
                file.truncate(cut)
        self._last_iteration[trial] = iteration

    def log_trial_end(self, trial, failed: bool = False):
        self._last_iteration.pop(trial, None)
        super().log_trial_end(trial, failed)


class ProgressCSV(_NoReplay, CSVLoggerCallback):
    _rows = staticmethod(_csv_rows)

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_files:
            self._setup_trial(trial)
        if self._trial_csv.get(trial) is None and self._trial_continue.get(trial):
            with open(Path(trial.local_path, EXPR_PROGRESS_FILE), newline="") as f:
                header = next(csv.reader(f), None)
            if header:  # the parent writes each row by these names (the names it lacks are dropped: "ignore")
                self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header, extrasaction="ignore")
        self._drop_replayed(trial, result)
        super().log_trial_result(iteration, trial, result)


class ResultJSON(_NoReplay, JsonLoggerCallback):
    _rows = staticmethod(_json_rows)

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_files:
            self.log_trial_start(trial)
        self._drop_replayed(trial, result)
        super().log_trial_result(iteration, trial, result)
