"""Mutation-testing kills for agents/report.py: which plots a run's report holds, and when a finished report is
taken as this run's."""

from types import SimpleNamespace

from agents.report import finished_report, report_plots, summary_table, write_json_atomic

METRICS = {"env": "LongDependency-v0", "agent": "memnet", "seed": 0, "ACC": 0.5, "BWT": None, "FWT": None,
           "forgetting": None, "accuracy": 0.5, "tokens_per_s": None, "params": 1, "memory_bytes": 2,
           "accuracy_by_distance": None, "recall_by_delay": None, "accuracy_matrix": [[0.5]],
           "accuracy_matrix_tasks": [0], "episodes": 3}
BASE = ["forgetting_curves", "accuracy_matrix", "accuracy_vs_distance"]


def test_a_slot_bank_that_took_no_snapshot_still_gets_its_usage_and_survival_plots():
    """Slot lifetimes are tracked (a slot bank), but no usage snapshot was taken (a run shorter than the snapshot
    interval): write_report still writes slot_usage (the plot says there is none) and slot_survival, and
    finished_report must look for both."""
    trainer = SimpleNamespace(usage_history=[], lifetimes=object())
    assert report_plots(trainer, METRICS) == BASE + ["slot_usage", "slot_survival"]
    assert report_plots(SimpleNamespace(usage_history=[], lifetimes=None), METRICS) == BASE
    recalled = METRICS | {"recall_by_delay": {"10": 0.5}}
    assert report_plots(SimpleNamespace(usage_history=[[1]], lifetimes=None), recalled) == \
        BASE + ["recall_vs_delay", "slot_usage"]


def test_a_finished_report_of_another_episode_count_is_written_again(tmp_path):
    """metrics.json with its plots, written after 3 episodes: whole for a trainer at episode 3, to be written again
    for one at episode 5 (a resumed run that trained on must not keep the old numbers)."""
    write_json_atomic(tmp_path / "metrics.json", METRICS)
    (tmp_path / "plots").mkdir()
    for name in BASE:
        (tmp_path / "plots" / f"{name}.png").write_bytes(b"png")
    trainer = SimpleNamespace(usage_history=[], lifetimes=None, episode=3)
    assert finished_report(tmp_path, trainer)["episodes"] == 3
    assert finished_report(tmp_path, SimpleNamespace(usage_history=[], lifetimes=None, episode=5)) is None
    (tmp_path / "plots" / "accuracy_matrix.png").unlink()
    assert finished_report(tmp_path, trainer) is None  # a plot missing: not whole


def test_a_run_whose_blocks_are_its_tasks_in_order_gets_the_plain_accuracy_matrix():
    """Every run now records each block's task (`accuracy_matrix_tasks`); where they are 0, 1, ... (no revisit)
    the table is the plain one, row i after task i, as for older metrics.json files without them."""
    from agents.report import summary_table

    table = summary_table(METRICS | {"accuracy_matrix": [[0.5, 0.25], [0.75, 1.0]], "accuracy_matrix_tasks": [0, 1]})
    assert "  accuracy matrix (row i: after training task i; column j: task j)" in table
    assert "\n    0.50 0.25\n    0.75 1.00" in table
    revisit = summary_table(METRICS | {"accuracy_matrix": [[0.5, 0.25], [0.75, 1.0]], "accuracy_matrix_tasks": [1, 0]})
    assert "row k: after training block k (its task in brackets)" in revisit and " 1 [0]  0.75 1.00" in revisit


def test_the_scored_counts_name_the_same_buckets_as_the_accuracies():
    """metrics.json's scored_by_distance holds the scored steps of the buckets accuracy_by_distance shows: an empty
    bucket (no scored step, accuracy null and left out) is left out of both, not listed with 0 steps."""
    import numpy as np

    from agents.cl_metrics import AccuracyByKey
    from agents.report import measured, scored

    by = AccuracyByKey([1, 4, 16])
    by.update(np.array([1, 3, 3]), np.array([True, False, True]))
    assert measured(by) == {1: 1.0, 4: 0.5}
    assert scored(by) == {1: 1, 4: 2}


def test_json_reports_write_nan_as_null(tmp_path):
    """metrics.json (and eval.json, results.json) hold NaN as null: json.dumps writes a bare NaN, which is not
    JSON and which strict readers (JavaScript's JSON.parse, jq) refuse. The accuracy matrix's untrained cells are
    NaN."""
    import json
    import math

    import numpy as np

    def strict(text):
        return json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))

    write_json_atomic(tmp_path / "m.json", {"R": np.array([[math.nan, 0.5]]), "x": np.float32("nan"), "n": np.int64(3)})
    assert strict((tmp_path / "m.json").read_text()) == {"R": [[None, 0.5]], "x": None, "n": 3}


def test_the_summary_says_n_a_for_a_metric_that_does_not_apply_and_rounds_tokens_per_s():
    """BWT of one task is null in metrics.json: "n/a" in the table, not a number; tokens/s is a whole number."""
    text = summary_table(METRICS | {"tokens_per_s": 1234.567})
    assert "  BWT               n/a" in text.splitlines()
    assert "  tokens/s (train)  1235" in text.splitlines()
    assert "  ACC               0.500" in text.splitlines()
