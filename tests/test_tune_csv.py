"""A trial's progress.csv stays one table across a restore (agents/tune_csv.py): Ray's CSV logger took a continued
file's columns from the first result after the restore, one more than the header had where that result carried a
checkpoint, and pandas refused the file."""

import csv

import pytest

pytest.importorskip("ray")

from agents.tune_csv import ProgressCSV  # noqa: E402


class Trial:
    """What the CSV logger reads of a Tune trial."""

    checkpoint = None

    def __init__(self, path):
        self.local_path = str(path)

    def init_local_path(self):
        pass


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_restored_trial_writes_its_rows_under_the_files_header(tmp_path):
    trial = Trial(tmp_path)
    first = ProgressCSV()
    first.log_trial_result(0, trial, {"episode": 0, "cl/ACC": float("nan"), "train/loss": float("nan"), "done": False})
    first.log_trial_result(1, trial, {"episode": 2, "cl/ACC": 0.5, "train/loss": 2.0, "done": False})
    first.log_trial_end(trial)
    again = ProgressCSV()  # the sweep's resume= (or Tune's retry): the first result after it carries a checkpoint
    again.log_trial_result(2, trial, {"episode": 4, "cl/ACC": 0.75, "should_checkpoint": True, "train/loss": 1.5,
                                      "done": True})
    again.log_trial_end(trial)
    table = rows(tmp_path / "progress.csv")
    assert table[0] == ["episode", "cl/ACC", "train/loss", "done"] and all(len(row) == 4 for row in table)
    assert table[1:] == [["0", "nan", "nan", "False"], ["2", "0.5", "2.0", "False"], ["4", "0.75", "1.5", "True"]]


def test_a_new_trial_gets_the_header_of_its_first_result(tmp_path):
    trial = Trial(tmp_path)
    logger = ProgressCSV()
    logger.log_trial_result(0, trial, {"episode": 0, "cl/ACC": 0.25})
    logger.log_trial_end(trial)
    assert rows(tmp_path / "progress.csv") == [["episode", "cl/ACC"], ["0", "0.25"]]
