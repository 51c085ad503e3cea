"""A trial's progress.csv stays one table across a restore (agents/tune_csv.py): Ray's CSV logger took a continued
file's columns from the first result after the restore, one more than the header had where that result carried a
checkpoint, and pandas refused the file. A report that a continued trial makes again (it resumed from the checkpoint
before it) replaces the file's row of that iteration, in progress.csv and result.json alike: Ray appended it again."""

import csv
import json

import pytest

pytest.importorskip("ray")

from agents.tune_csv import ProgressCSV, ResultJSON  # noqa: E402


class Trial:
    """What the CSV logger reads of a Tune trial."""

    checkpoint = None
    config = {"memory.slots": 4}

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


def report(iteration, episode, acc, **more):
    """A result as Tune logs it: training_iteration counts the reports (a resumed trial's from its checkpoint's)."""
    return {"episode": episode, "cl/ACC": acc, "training_iteration": iteration} | more


def test_a_report_made_again_after_a_restore_is_one_row_in_progress_csv_and_result_json(tmp_path):
    """Stopped after Tune logged episode 4's report and before it registered the checkpoint that came with it, the
    trial resumed from episode 2's checkpoint and reported episode 4 again: both files held it twice ([0, 2, 4, 4])."""
    trial = Trial(tmp_path)
    first = [ProgressCSV(), ResultJSON()]
    for logger in first:
        for r in (report(1, 0, 0.25), report(2, 2, 0.5, should_checkpoint=True), report(3, 4, 0.7)):
            logger.log_trial_result(0, trial, r)
        logger.log_trial_end(trial)
    for logger in (ProgressCSV(), ResultJSON()):  # resume=: the trial goes on from iteration 2's checkpoint
        logger.log_trial_result(0, trial, report(3, 4, 0.75, should_checkpoint=True, done=True))
        logger.log_trial_end(trial)
    table = rows(tmp_path / "progress.csv")
    assert table == [["episode", "cl/ACC", "training_iteration"], ["0", "0.25", "1"], ["2", "0.5", "2"],
                     ["4", "0.75", "3"]]
    reports = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [(r["episode"], r["cl/ACC"]) for r in reports] == [(0, 0.25), (2, 0.5), (4, 0.75)]


def test_a_trial_retried_from_an_earlier_checkpoint_in_the_same_sweep_drops_the_rows_it_runs_again(tmp_path):
    """Tune's retry of a crashed trial (the same loggers) goes back to its checkpoint: the rows after it are run again,
    and the next new report follows them once."""
    trial = Trial(tmp_path)
    loggers = [ProgressCSV(), ResultJSON()]
    for logger in loggers:
        for r in (report(1, 0, 0.25), report(2, 1, 0.3), report(3, 2, 0.5), report(4, 3, 0.6)):
            logger.log_trial_result(0, trial, r)
        logger.log_trial_end(trial, failed=True)
        for r in (report(2, 1, 0.35), report(3, 2, 0.55), report(4, 3, 0.65), report(5, 4, 0.8)):  # from iteration 1
            logger.log_trial_result(0, trial, r)
        logger.log_trial_end(trial)
    assert [row[:2] for row in rows(tmp_path / "progress.csv")[1:]] == [
        ["0", "0.25"], ["1", "0.35"], ["2", "0.55"], ["3", "0.65"], ["4", "0.8"]]
    reports = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [r["cl/ACC"] for r in reports] == [0.25, 0.35, 0.55, 0.65, 0.8]


def test_a_row_cut_inside_a_character_does_not_stop_the_resumed_trial(tmp_path):
    """A kill (or a full disk) that cut the last row inside a UTF-8 character: the logger decoded the whole file
    strictly and raised UnicodeDecodeError at every resume=, where Ray's own logger appended."""
    trial = Trial(tmp_path)
    first = ProgressCSV()
    for r in (report(1, 0, 0.25, diverged="é"), report(2, 2, 0.5, diverged="éé")):
        first.log_trial_result(0, trial, r)
    first.log_trial_end(trial)
    path = tmp_path / "progress.csv"
    path.write_bytes(path.read_bytes()[:-5])  # ...2,0.5,2,\xc3: the row of iteration 2 cut inside its "é"
    again = ProgressCSV()
    again.log_trial_result(0, trial, report(2, 2, 0.55, diverged="x"))
    again.log_trial_end(trial)
    assert [row[:3] for row in rows(path)[1:]] == [["0", "0.25", "1"], ["2", "0.55", "2"]]
