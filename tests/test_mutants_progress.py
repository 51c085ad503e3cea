"""Progress lines one-line mutations got past: a log file's ETA and times (agents/progress.py), a sweep's status
line with a failed trial (agents/tune_progress.py), the env's name in a suite's or sweep's bad-option line, the
bound of agents.evaluate's threads=."""

import io

import pytest

from agents import progress
from agents.config import ConfigError
from agents.evaluate_args import thread_count
from agents.preflight import env_source
from agents.progress import EvalLines
from agents.tune_progress import ProgressLine
from memory.config import MAX_THREADS
from tests.test_tune_progress import trial


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_resumed_runs_time_left_is_at_this_processes_rate(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    lines = EvalLines(total=20, initial=10, desc="e/a", stream=out, every=1e9)  # resumed after 10 episodes
    clock.now += 60.0  # one episode here: 60 s
    lines.set_postfix_str("evaluating every task")
    lines.update()
    # 9 episodes left at 60 s each: 9:00 (elapsed / n, the resumed run's 11 episodes, said 0:49)
    assert out.getvalue().splitlines() == ["e/a: episode 11/20, 1:00 in, ~9:00 left"]


def test_the_evaluation_before_training_is_not_counted_in_the_rate(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    lines = EvalLines(total=3, initial=0, desc="e/a", stream=out, every=1e9)
    lines.set_postfix_str("evaluating every task before training")
    clock.now += 600.0  # a 10-minute evaluation before training
    lines.reset()
    lines.set_postfix_str("")
    clock.now += 5.0
    lines.set_postfix_str("evaluating every task")
    lines.update()
    assert out.getvalue().splitlines()[1] == "e/a: episode 1/3, 0:05 in, ~0:10 left"


def test_an_hour_and_more_reads_hours_minutes_seconds():
    assert [progress._clock(s) for s in (7, 423, 3599, 3600, 3909, 2 * 3600 + 5)] == \
        ["0:07", "7:03", "59:59", "1:00:00", "1:05:09", "2:00:05"]


def test_a_failed_trial_counts_as_over_for_a_metric_none_measured():
    finished, failed = trial("a", "TERMINATED", None, 4), trial("b", "ERROR", None, 1)
    assert ProgressLine("cl/ACC")._status([finished, failed]) == (
        "[1 finished, 0 running, 0 pending, 1 failed of 2] no trial measured cl/ACC")


def test_a_bad_option_names_its_env_once():
    with pytest.raises(ConfigError) as caught:
        env_source("ContinualShift-v0", {"num_tasks": 0})
    assert str(caught.value) == "ContinualShift-v0: num_tasks must be an integer in [1, 256], got 0"
    with pytest.raises(ConfigError) as caught:
        env_source("ContinualShift-v0", {"nope": 1})
    assert str(caught.value).startswith("unknown option(s) ['nope'] for ContinualShift-v0; allowed: ")


def test_threads_past_the_limit_are_one_line_and_the_limit_itself_is_taken():
    assert thread_count(str(MAX_THREADS)) == MAX_THREADS and thread_count("1") == 1
    for text in (str(MAX_THREADS + 1), "100000"):
        with pytest.raises(ConfigError, match=rf"^threads={text}: give a torch thread count in \[1, {MAX_THREADS}\]"):
            thread_count(text)
