"""Continual-learning metrics on hand-made accuracy matrices, plus property tests (DESIGN.md section 7)."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cl_metrics import (
    AccuracyByKey,
    acc,
    bootstrap_ci,
    bwt,
    continual_metrics,
    distance_buckets,
    forgetting,
    fwt,
    kaplan_meier,
    schedule_blocks,
)

T4_CHANCE = 0.1


def _lower_and_upper(lower: float, upper: float, T: int = 4) -> np.ndarray:
    """Accuracy `lower` on and below the diagonal, `upper` (untrained tasks) above it.  # (T, T)"""
    return np.where(np.tri(T, dtype=bool), lower, upper)


def test_perfectly_remembering_learner():
    R = _lower_and_upper(1.0, T4_CHANCE)
    b = np.full(4, T4_CHANCE)
    assert continual_metrics(R, b) == {"ACC": 1.0, "BWT": 0.0, "FWT": 0.0, "forgetting": 0.0}


def test_catastrophically_forgetting_learner():
    # Knows only the task it trained last: R[i][i] = 1, everything else at chance (0.1) or 0.
    R = np.full((4, 4), T4_CHANCE)
    np.fill_diagonal(R, 1.0)
    R[np.tril_indices(4, k=-1)] = 0.0
    b = np.full(4, T4_CHANCE)
    metrics = continual_metrics(R, b)
    assert metrics["ACC"] == pytest.approx(0.25)  # (0 + 0 + 0 + 1) / 4
    assert metrics["BWT"] == pytest.approx(-1.0)
    assert metrics["forgetting"] == pytest.approx(1.0)
    assert metrics["FWT"] == pytest.approx(0.0)


def test_asymmetric_case_worked_by_hand():
    R = [[0.6, 0.2, 0.1],
         [0.9, 0.7, 0.3],
         [0.2, 0.8, 0.5]]
    b = [0.1, 0.1, 0.2]
    assert acc(R) == pytest.approx((0.2 + 0.8 + 0.5) / 3)
    assert bwt(R) == pytest.approx(((0.2 - 0.6) + (0.8 - 0.7)) / 2)  # -0.15
    assert fwt(R, b) == pytest.approx(((0.2 - 0.1) + (0.3 - 0.2)) / 2)  # 0.1
    # Forgetting takes the best earlier accuracy (0.9 after task 1, not the diagonal 0.6) and can be
    # negative for a task that improved (task 1: 0.7 -> 0.8).
    assert forgetting(R) == pytest.approx(((0.9 - 0.2) + (0.7 - 0.8)) / 2)  # 0.3


def test_single_task_only_acc_applies():
    assert continual_metrics([[0.75]], [0.1]) == {"ACC": 0.75, "BWT": None, "FWT": None, "forgetting": None}


def test_unevaluated_future_tasks_give_no_fwt():
    # A schedule that evaluates only the tasks seen so far leaves the upper triangle NaN.
    R = np.array([[0.8, np.nan, np.nan], [0.6, 0.9, np.nan], [0.5, 0.7, 1.0]])
    metrics = continual_metrics(R, [0.1, 0.1, 0.1])
    assert metrics["FWT"] is None
    assert metrics["ACC"] == pytest.approx(2.2 / 3)
    assert metrics["BWT"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert metrics["forgetting"] == pytest.approx(((0.8 - 0.5) + (0.9 - 0.7)) / 2)  # NaN ignored in the max


def test_fwt_skips_only_the_terms_with_missing_values():
    R = np.array([[0.8, 0.3, np.nan], [0.6, 0.9, 0.4], [0.5, 0.7, 1.0]])
    assert fwt(R, [0.1, 0.1, 0.1]) == pytest.approx(((0.3 - 0.1) + (0.4 - 0.1)) / 2)
    assert fwt(R, [0.1, np.nan, 0.1]) == pytest.approx(0.4 - 0.1)  # b[1] not measured
    assert fwt(R, None) is None


def test_missing_required_entry_names_it():
    R = np.array([[0.8, 0.3, 0.2], [0.6, 0.9, 0.4], [np.nan, 0.7, 1.0]])
    with pytest.raises(ValueError, match=r"R\[2\]\[0\] is NaN.*R\[:k\+1, :k\+1\]"):
        acc(R)


@pytest.mark.parametrize(
    ("R", "message"),
    [
        ([[0.5, 0.5]], "square"),
        (np.zeros((0, 0)), "square"),
        ([[1.5]], r"allowed range \[0, 1\]"),
        ([[0.5, 0.1], [-0.2, 0.5]], r"allowed range \[0, 1\]"),
    ],
)
def test_bad_matrix_is_rejected(R, message):
    with pytest.raises(ValueError, match=message):
        continual_metrics(R)


def test_bad_untrained_accuracies_are_rejected():
    with pytest.raises(ValueError, match=r"b must have shape \(2,\)"):
        fwt([[0.5, 0.1], [0.4, 0.5]], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="b holds accuracies"):
        fwt([[0.5, 0.1], [0.4, 0.5]], [0.1, 2.0])


def _accuracy_matrices(min_tasks=1, max_tasks=6):
    return st.integers(min_tasks, max_tasks).flatmap(
        lambda T: st.lists(st.floats(0, 1), min_size=T * T, max_size=T * T).map(
            lambda v: np.array(v).reshape(T, T)
        )
    )


@given(
    columns=st.lists(st.floats(0, 1), min_size=2, max_size=6),
    b_offsets=st.lists(st.floats(0, 1), min_size=6, max_size=6),
)
def test_constant_columns_mean_no_transfer_no_forgetting(columns, b_offsets):
    T = len(columns)
    R = np.tile(np.array(columns), (T, 1))  # every task has the same accuracy at every stage
    b = np.array(b_offsets[:T])
    assert bwt(R) == pytest.approx(0.0, abs=1e-12)
    assert forgetting(R) == pytest.approx(0.0, abs=1e-12)
    assert fwt(R, b) == pytest.approx(np.mean(np.array(columns[1:]) - b[1:]))
    assert acc(R) == pytest.approx(np.mean(columns))


@given(R=_accuracy_matrices(min_tasks=2))
def test_forgetting_bounds_backward_transfer(R):
    # max_l R[l][j] >= R[j][j], so forgetting >= -BWT; all metrics stay in their natural ranges.
    assert forgetting(R) >= -bwt(R) - 1e-12
    assert 0.0 <= acc(R) <= 1.0
    assert -1.0 <= bwt(R) <= 1.0 and -1.0 <= forgetting(R) <= 1.0


@given(R=_accuracy_matrices(min_tasks=2))
def test_forgetting_is_non_negative_when_no_task_improves_by_the_end(R):
    T = R.shape[0]
    R[-1, : T - 1] = np.minimum(R[-1, : T - 1], np.diag(R)[: T - 1])  # final accuracy <= just-learned
    assert forgetting(R) >= 0.0
    assert bwt(R) <= 0.0


# ---------------------------------------------------------------- one row per training block (revisiting schedules)


def _section7(R, b):
    """DESIGN.md section 7 verbatim on a square R without NaN: the reference for the sequential case."""
    T = R.shape[0]
    if T == 1:
        return {"ACC": float(R[-1].mean()), "BWT": None, "FWT": None, "forgetting": None}
    j = np.arange(T - 1)
    return {"ACC": float(R[-1].mean()), "BWT": float((R[-1, j] - R[j, j]).mean()),
            "FWT": float((R[j, j + 1] - b[j + 1]).mean()),
            "forgetting": float((R[: T - 1, : T - 1].max(axis=0) - R[-1, : T - 1]).mean())}


@settings(max_examples=50)
@given(R=_accuracy_matrices(), b_values=st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_sequential_blocks_give_exactly_section_7(R, b_values):
    b = np.array(b_values[: R.shape[0]])
    expected = _section7(R, b)
    assert continual_metrics(R, b) == expected  # bit for bit, not approximately
    assert continual_metrics(R, b, tasks=np.arange(R.shape[0])) == expected


def test_revisit_reviewer_case_fwt_reads_the_first_pass():
    # schedule blocks 0, 1, 0, 1; accuracy 0.9 on a task once trained, 0.1 before. Indexed by task, the second
    # pass overwrote R[0] and FWT read 0.9 - 0.1 = 0.8; before its first block task 1 was at chance: FWT 0.
    tasks = [0, 1, 0, 1]
    R = np.array([[0.9, 0.1], [0.9, 0.9], [0.9, 0.9], [0.9, 0.9]])
    metrics = continual_metrics(R, [0.1, 0.1], tasks=tasks)
    assert metrics["FWT"] == pytest.approx(0.0)
    assert metrics["ACC"] == pytest.approx(0.9)
    assert metrics["BWT"] == pytest.approx(0.0)  # only task 0 ends before the last block: R[3][0] - R[2][0]
    assert metrics["forgetting"] == pytest.approx(0.0)


def test_block_matrix_worked_by_hand():
    # blocks train tasks 0, 1, 0, 2: task 0 first/last in blocks 0/2, task 1 in 1/1, task 2 in 3/3
    R = [[0.8, 0.2, 0.1],
         [0.5, 0.9, 0.3],
         [0.95, 0.6, 0.2],
         [0.7, 0.4, 0.85]]
    tasks, b = [0, 1, 0, 2], [0.1, 0.1, 0.15]
    assert acc(R, tasks) == pytest.approx((0.7 + 0.4 + 0.85) / 3)
    assert bwt(R, tasks) == pytest.approx(((0.7 - 0.95) + (0.4 - 0.9)) / 2)  # from their LAST block: -0.375
    assert fwt(R, b, tasks) == pytest.approx(((0.2 - 0.1) + (0.2 - 0.15)) / 2)  # before their FIRST block: 0.075
    assert forgetting(R, tasks) == pytest.approx(((0.95 - 0.7) + (0.9 - 0.4)) / 2)  # best over blocks 0-2: 0.375


def test_block_matrix_nan_policy():
    # not evaluated before its first block: optional (FWT has no term left); after it: required
    R = np.array([[0.9, np.nan], [0.8, 0.9], [0.9, 0.7], [0.6, 0.9]])
    assert continual_metrics(R, [0.1, 0.1], tasks=[0, 1, 0, 1])["FWT"] is None
    R[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"R\[2\]\[1\] is NaN: task 1 was not evaluated after block 2 \(task 0\)"):
        acc(R, [0, 1, 0, 1])


def test_mid_run_block_matrix_uses_only_the_blocks_done():
    # after 3 of the blocks 0, 1, 0, 1: task 0's last block so far is the final one, so BWT covers task 1 only
    R = [[0.8, 0.1], [0.5, 0.9], [0.85, 0.6]]
    metrics = continual_metrics(R, [0.1, 0.1], tasks=[0, 1, 0])
    assert metrics["BWT"] == pytest.approx(0.6 - 0.9)
    assert metrics["forgetting"] == pytest.approx(0.9 - 0.6)
    assert metrics["FWT"] == pytest.approx(0.1 - 0.1)


@pytest.mark.parametrize(
    ("R", "tasks", "message"),
    [
        (np.full((3, 2), 0.5), [0, 1], r"shape \(3,\)"),
        (np.full((2, 2), 0.5), [0, 2], r"task ids in \[0, 2\)"),
        (np.full((2, 2), 0.5), [0.0, 1.0], "int task id"),
        (np.full((2, 3), 0.5), [0, 1], "task 2 is a column of R but no block trains it"),
        (np.zeros((0, 2)), [], r"\(K, T\)"),
    ],
)
def test_bad_block_tasks_are_rejected(R, tasks, message):
    with pytest.raises(ValueError, match=message):
        continual_metrics(R, tasks=tasks)


def test_non_square_matrix_needs_its_tasks():
    with pytest.raises(ValueError, match="square"):
        acc(np.full((4, 2), 0.5))


def test_schedule_blocks():
    starts, tasks = schedule_blocks((0, 0, 1, 1, 0, 0, 1, 1))  # ContinualShift revisit, 2 episodes per task
    assert starts.tolist() == [0, 2, 4, 6] and tasks.tolist() == [0, 1, 0, 1]
    starts, tasks = schedule_blocks([0])
    assert starts.tolist() == [0] and tasks.tolist() == [0]
    with pytest.raises(ValueError, match="non-empty list of int task ids"):
        schedule_blocks([])


@pytest.mark.parametrize(
    ("max_distance", "expected"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 4]), (4, [1, 2, 4]), (5, [1, 2, 4, 8]), (1024, [2**k for k in range(11)])],
)
def test_distance_buckets_edges(max_distance, expected):
    assert distance_buckets(max_distance).tolist() == expected


@given(st.integers(1, 10**7))
def test_distance_buckets_cover_the_range_tightly(max_distance):
    edges = distance_buckets(max_distance)
    assert edges[0] == 1 and np.all(edges[1:] == 2 * edges[:-1])
    assert edges[-1] >= max_distance and (edges.size == 1 or edges[-2] < max_distance)


def test_distance_buckets_largest_edge_is_exact():  # 2**62 + 1 needs an edge of 2**63: an int64 wraps negative
    assert distance_buckets(2**62)[-1] == 2**62 and distance_buckets(2**61 + 1)[-1] == 2**62


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                              (2**62 + 1, ValueError), (2**70, ValueError)])
def test_distance_buckets_bad_input(value, error):
    with pytest.raises(error, match="max_distance"):
        distance_buckets(value)


def test_bucket_boundaries_are_upper_bounds_inclusive():
    by_distance = AccuracyByKey(distance_buckets(16))  # edges 1, 2, 4, 8, 16
    keys = [0, 1, 2, 3, 4, 5, 8, 9, 16, -1, -1]
    correct = [True, False, True, True, False, True, True, False, True, True, True]
    by_distance.update(np.array(keys), np.array(correct))
    assert by_distance.counts() == {1: (1, 2), 2: (1, 1), 4: (1, 2), 8: (2, 2), 16: (1, 2)}
    assert by_distance.result() == {1: 0.5, 2: 1.0, 4: 0.5, 8: 1.0, 16: 0.5}


def test_empty_buckets_are_none_and_negative_keys_ignored():
    by_distance = AccuracyByKey([1, 4, 64])
    by_distance.update([-1, -5, 3], [True, True, False])
    assert by_distance.result() == {1: None, 4: 0.0, 64: None}
    by_distance.update([], np.array([], dtype=bool))  # an eval step with nothing scored
    assert by_distance.result() == {1: None, 4: 0.0, 64: None}


def test_key_above_last_edge_is_rejected():
    by_distance = AccuracyByKey(distance_buckets(8))
    with pytest.raises(ValueError, match="key 9 is above the last bucket edge 8"):
        by_distance.update([9], [True])


def test_exact_keys_accumulate_across_batches():
    by_delay = AccuracyByKey()
    by_delay.update([1, 3, 3], [True, False, True])
    by_delay.update(np.array([3, 7, -1]), np.array([True, True, False]))
    assert by_delay.result() == {1: 1.0, 3: pytest.approx(2 / 3), 7: 1.0}
    by_delay.reset()
    assert by_delay.result() == {}


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(-2, 100), st.booleans()), max_size=60), st.integers(1, 5))
def test_streaming_buckets_match_a_direct_count(samples, batches):
    edges = distance_buckets(100)
    by_distance = AccuracyByKey(edges)
    for part in np.array_split(np.arange(len(samples)), batches):
        by_distance.update(
            np.array([samples[i][0] for i in part], dtype=np.int64), np.array([samples[i][1] for i in part], bool)
        )
    for edge, value in by_distance.result().items():
        lower = edge // 2 if edge > 1 else -1  # bucket e holds keys in (e/2, e], bucket 1 also holds key 0
        inside = [ok for key, ok in samples if lower < key <= edge]
        assert value == (pytest.approx(sum(inside) / len(inside)) if inside else None)


@pytest.mark.parametrize("edges", [None, [1, 2, 4, 8]])
def test_state_dict_round_trips_through_json_and_torch(edges, tmp_path):
    original = AccuracyByKey(edges)
    original.update([1, 2, 2, 5, 8], [True, False, True, True, False])
    state = original.state_dict()
    torch.save(state, tmp_path / "state.pt")
    for restored_state in (json.loads(json.dumps(state)), torch.load(tmp_path / "state.pt", weights_only=True)):
        restored = AccuracyByKey(edges)
        restored.load_state_dict(restored_state)
        assert restored.result() == original.result()
        restored.update([2], [True])  # keeps counting where it left off
        assert restored.counts()[2] == (2, 3)


def test_load_state_dict_rejects_mismatch():
    saved = AccuracyByKey([1, 2, 4]).state_dict()
    with pytest.raises(ValueError, match=r"edges \[1, 2, 4\].*\[1, 2, 4, 8\]"):
        AccuracyByKey([1, 2, 4, 8]).load_state_dict(saved)
    with pytest.raises(ValueError, match="lacks"):
        AccuracyByKey().load_state_dict({"edges": None})


def test_accuracy_by_key_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        AccuracyByKey([1, 4, 2])
    with pytest.raises(TypeError, match="keys must be integers"):
        AccuracyByKey().update([1.5], [True])
    with pytest.raises(TypeError, match="correct must be booleans"):
        AccuracyByKey().update([1], [1])
    with pytest.raises(ValueError, match="equal lengths"):
        AccuracyByKey().update([1, 2], [True])


def test_bootstrap_single_seed_and_determinism():
    assert bootstrap_ci([0.42]) == (0.42, 0.42, 0.42)
    values = [0.3, 0.5, 0.55, 0.9]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)


@settings(max_examples=50)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=30))
def test_bootstrap_interval_contains_the_mean(values):
    mean, low, high = bootstrap_ci(values)
    assert mean == pytest.approx(np.mean(values))
    assert low - 1e-12 <= mean <= high + 1e-12


def test_bootstrap_interval_shrinks_with_more_seeds():
    # The same spread of per-seed results at 4, 16 and 64 seeds: the interval of the mean narrows as 1/sqrt(n).
    pattern = np.array([0.2, 0.4, 0.6, 0.8])
    widths = {}
    for repeats in (1, 4, 16):
        mean, low, high = bootstrap_ci(np.tile(pattern, repeats))
        assert mean == pytest.approx(0.5)
        widths[4 * repeats] = high - low
    assert widths[4] > widths[16] > widths[64] > 0
    assert widths[16] / widths[4] == pytest.approx(0.5, rel=0.25)
    assert widths[64] / widths[16] == pytest.approx(0.5, rel=0.15)
    # A 90% interval of the mean is about 2 * 1.645 * sd / sqrt(n).
    assert widths[64] == pytest.approx(2 * 1.645 * pattern.std() / math.sqrt(64), rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": []}, "at least one value"),
        ({"values": [0.1, None]}, "None"),
        ({"values": [0.1, float("nan")]}, "NaN"),
        ({"values": [0.1], "level": 1.0}, "level must be in"),
        ({"values": [0.1], "n_boot": 0}, "n_boot"),
    ],
)
def test_bootstrap_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)


def test_kaplan_meier_by_hand():
    # Lifetimes 1, 2, 2+, 3, 5+ (+ = still present at the end): S = 4/5, then *3/4, then *1/2.
    times, survival = kaplan_meier([1, 2, 2, 3, 5], [True, True, False, True, False])
    assert times.tolist() == [0, 1, 2, 3]
    assert survival == pytest.approx([1.0, 0.8, 0.6, 0.3])


def test_kaplan_meier_degenerate_cases():
    times, survival = kaplan_meier([4, 4, 9], [False, False, False])  # nothing ever overwritten
    assert times.tolist() == [0] and survival.tolist() == [1.0]
    times, survival = kaplan_meier([])
    assert times.tolist() == [0] and survival.tolist() == [1.0]
    times, survival = kaplan_meier([2, 2, 6])  # no censoring: the empirical survival function
    assert survival == pytest.approx([1.0, 1 / 3, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        kaplan_meier([-1])
