"""What `python -m agents.run` prints and logs at its end: the summary table and the final TensorBoard points."""

import json
import math

import pytest

from agents import run
from agents.report import summary_table
from agents.tb_logger import read_scalars
from tests.test_run import tiny

NAN = math.nan


def metrics(R, tasks=None):
    return {"env": "ContinualShift-v0", "agent": "memnet", "seed": 0, "ACC": 0.5, "BWT": None, "FWT": None,
            "forgetting": None, "accuracy": 0.2, "tokens_per_s": 10.0, "params": 1, "memory_bytes": 2,
            "accuracy_by_distance": None, "recall_by_delay": None, "accuracy_matrix": R,
            "accuracy_matrix_tasks": tasks}


@pytest.mark.parametrize("tasks", [None, [0, 1, 0]], ids=["sequential", "revisit"])
def test_the_accuracy_matrix_columns_line_up_with_cells_not_evaluated(tasks):
    """A run stopped before its last block (train.episodes=2) has rows not evaluated: their '-' cells were five
    characters wide against four for a number, so the printed matrix went out of line."""
    R = [[1.0, 0.0], [NAN, NAN], [0.25, NAN]] if tasks else [[1.0, 0.0], [NAN, NAN]]
    lines = summary_table(metrics(R, tasks)).splitlines()
    rows = lines[lines.index(next(line for line in lines if "accuracy matrix" in line)) + 1:]
    assert len(rows) == len(R)
    assert len({len(row) for row in rows}) == 1, rows
    assert rows[0].endswith("1.00 0.00")


def test_each_accuracy_by_distance_or_delay_shows_its_scored_steps():
    table = summary_table({**metrics([[1.0]]), "accuracy_by_distance": {4: 0.0, 4096: 0.79296875},
                           "scored_by_distance": {4: 1, 4096: 512}, "recall_by_delay": {1: 0.875},
                           "scored_by_delay": {1: 16}})
    rows = [" ".join(line.split()) for line in table.splitlines()]
    assert "acc @ distance <= 4 0.000 (n=1)" in rows and "acc @ distance <= 4096 0.793 (n=512)" in rows
    assert "recall @ delay 1 0.875 (n=16)" in rows
    older = summary_table({**metrics([[1.0]]), "accuracy_by_distance": {128: 0.5}})  # metrics.json before the counts
    assert "acc @ distance <= 128 0.500" in [" ".join(line.split()) for line in older.splitlines()]


def test_a_rounding_residue_of_zero_prints_as_zero():  # an audit saw "forgetting -0.000" (-6.9e-18 in metrics.json)
    table = summary_table({**metrics([[1.0]]), "BWT": 6.9e-18, "forgetting": -6.9e-18, "FWT": -0.0004})
    lines = {line.split()[0]: line.split()[-1] for line in table.splitlines() if line.strip()}
    assert (lines["BWT"], lines["forgetting"], lines["FWT"]) == ("0.000", "0.000", "0.000")
    assert summary_table({**metrics([[1.0]]), "BWT": -0.0006}).count("-0.001") == 1  # a real negative keeps its sign


RUN = ["env.kwargs.num_tasks=2", "env.kwargs.trials_per_episode=5", "train.checkpoint_every=1"]  # accuracies k / 10


@pytest.mark.parametrize("stop", ["killed", "finished"])
def test_resuming_after_the_last_checkpoint_logs_no_point_twice(tmp_path, monkeypatch, stop):
    """A run killed after its last checkpoint (while it drew its plots), or resumed when already finished, wrote
    its final cl/* and eval/accuracy points again at the last step: TensorBoard showed them twice."""
    straight, other = tmp_path / "straight", tmp_path / "other"
    assert run.main(tiny("ContinualShift-v0", "memnet", straight, *RUN)) == 0
    if stop == "killed":
        def killed(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(run, "write_report", killed)
        assert run.main(tiny("ContinualShift-v0", "memnet", other, *RUN)) == 130
        monkeypatch.undo()
    else:
        assert run.main(tiny("ContinualShift-v0", "memnet", other, *RUN)) == 0
    assert run.main([f"resume={other}"]) == 0
    a, b = read_scalars(straight), read_scalars(other)
    curves = sorted(tag for tag in a if not tag.startswith("perf/"))
    assert curves == sorted(tag for tag in b if not tag.startswith("perf/"))
    for tag in curves:
        assert a[tag] == b[tag], tag


def test_mean_accuracy_leaves_out_tasks_with_no_scored_query():
    from agents.report import mean_accuracy

    assert mean_accuracy([0.5, float("nan"), 1.0]) == 0.75
    assert mean_accuracy([float("nan")]) is None and mean_accuracy([]) is None


@pytest.mark.parametrize("episodes, partial", [
    (1, {"block": 0, "task": 0, "episodes": 1, "of": 3}),  # stopped inside task 0
    (3, None),  # task 0 done, task 1 not begun
    (4, {"block": 1, "task": 1, "episodes": 1, "of": 3}),
    (6, None),  # the whole schedule
    (8, None),  # past its end: the extra episodes belong to the last block, which was finished
], ids=["inside-first", "at-boundary", "inside-second", "whole", "past-end"])
def test_a_run_stopped_inside_a_task_says_its_row_is_partly_trained(tmp_path, capsys, episodes, partial):
    """The last row read "after training task i" with an ACC from a task trained part of the way."""
    import json

    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "transformer", run_dir, "env.kwargs.episodes_per_task=3",
                         f"train.episodes={episodes}")) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["partial_block"] == partial
    notes = [line.strip() for line in capsys.readouterr().out.splitlines()
             if line.strip().startswith("note: training")]  # (not the baseline's note on TINY's memory keys)
    assert notes == ([f"note: training stopped in task {partial['task']} after {partial['episodes']} of its 3 "
                      f"episodes: row {partial['block']} is a partly trained task"] if partial else [])


def test_the_progress_bar_says_when_it_evaluates(tmp_path, capsys, monkeypatch):
    """The untrained evaluation ran before the bar was drawn (NeedleRecall: ~45 s of a blank terminal), and the
    bar stood still through each evaluation with no word of it. (On a terminal: stderr is one here.)"""
    from agents import progress

    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    assert run.main(tiny("ContinualShift-v0", "transformer", tmp_path / "run", "train.progress=true")) == 0
    states = capsys.readouterr().err.replace("\r", "\n").splitlines()
    before = [i for i, line in enumerate(states) if "evaluating every task before training" in line]
    during = [i for i, line in enumerate(states) if line.rstrip().endswith("evaluating every task]")]
    trained = [i for i, line in enumerate(states) if "acc=" in line]
    assert before and during and trained and max(before) < min(during) < max(trained), states


def test_progress_in_a_log_file_is_a_line_per_evaluation(tmp_path, capsys):
    """Where stderr is no terminal (`> run.log 2>&1`, CI, a cluster job) the bar's carriage-return redraws made one
    endless line: instead, a line when the evaluation before training starts and one per evaluated episode (every
    episode here: TINY's tasks are 1 episode long)."""
    assert run.main(tiny("ContinualShift-v0", "transformer", tmp_path / "run", "train.progress=true")) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("ContinualShift-v0/transformer: ")]
    assert lines[0] == "ContinualShift-v0/transformer: evaluating every task before training"
    assert [line.split(": ")[1].split(",")[0] for line in lines[1:]] == ["episode 1/2", "episode 2/2"]
    assert ", ~0:" in lines[1] and "left" not in lines[2]  # the time left until the last
    last_row = json.loads((tmp_path / "run" / "metrics.json").read_text())["accuracy_matrix"][-1]
    assert lines[2].endswith(f"eval={100 * sum(last_row) / len(last_row):.1f}%, task=1")  # the final evaluation's


def test_a_log_file_gets_a_line_after_the_first_episode_then_one_per_evaluation():
    """README "How a run works": after the evaluation before training, the first episode's line gives an early
    estimate of the time left (the main command's next evaluation is 4 episodes on); then only evaluated episodes
    and the last one get a line."""
    import io

    from agents.progress import EvalLines

    out = io.StringIO()
    lines = EvalLines(total=6, initial=0, desc="env/agent", stream=out, every=1e9)
    lines.set_postfix_str("evaluating every task before training")
    lines.reset()
    lines.set_postfix_str("")
    for episode in range(1, 7):
        if episode == 4:
            lines.set_postfix_str("evaluating every task")
        lines.set_postfix(acc="50.0%")
        lines.update()
    written = out.getvalue().splitlines()
    assert written[0] == "env/agent: evaluating every task before training"
    assert [line.split(": ")[1].split(",")[0] for line in written[1:]] == ["episode 1/6", "episode 4/6", "episode 6/6"]


def test_a_run_that_trained_nothing_has_no_training_speed_or_forgetting(tmp_path, capsys):
    """train.episodes=0: the untrained evaluation only. What needs training is null in metrics.json (a metric that does
    not apply), not 0, and n/a in the summary."""
    assert run.main(tiny("ContinualShift-v0", "lstm", tmp_path / "run", "train.episodes=0")) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["episodes"] == 0 and metrics["accuracy"] is not None
    assert {k: metrics[k] for k in ("tokens_per_s", "ACC", "BWT", "FWT", "forgetting")} == dict.fromkeys(
        ("tokens_per_s", "ACC", "BWT", "FWT", "forgetting"))
    assert all(v is None for row in metrics["accuracy_matrix"] for v in row)
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.splitlines() if line.strip().startswith(("tokens/s (train)", "ACC"))] \
        == ["n/a", "n/a"]
