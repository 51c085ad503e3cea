"""Continual-learning metrics on hand-made accuracy matrices and blocks, plus property tests
(README "Continual-learning metrics")."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cl_metrics import acc, bwt, continual_metrics, env_schedule, forgetting, fwt, schedule_blocks
from tests.examples import examples

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


def test_a_task_not_evaluated_right_after_its_own_training_is_missing():
    """R[j][j] (task j just after its training) is the first required entry of column j: left NaN, BWT and
    forgetting would be computed from it (a NaN metric) instead of the run being told."""
    with pytest.raises(ValueError, match=r"R\[1\]\[1\] is NaN"):
        continual_metrics([[0.9, np.nan], [0.5, np.nan]], [0.1, 0.1])


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
    """The definition (README "Continual-learning metrics") verbatim on a square R without NaN: the reference for
    the sequential case."""
    T = R.shape[0]
    if T == 1:
        return {"ACC": float(R[-1].mean()), "BWT": None, "FWT": None, "forgetting": None}
    j = np.arange(T - 1)
    return {"ACC": float(R[-1].mean()), "BWT": float((R[-1, j] - R[j, j]).mean()),
            "FWT": float((R[j, j + 1] - b[j + 1]).mean()),
            "forgetting": float((R[: T - 1, : T - 1].max(axis=0) - R[-1, : T - 1]).mean())}


@settings(max_examples=examples(50))
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


def test_env_schedule_from_a_per_episode_schedule():
    """An env without ContinualShift's compact blocks gives its schedule as one task per episode: the run's
    episode count is that schedule's length (the trainer trains that many episodes)."""
    class PerEpisode:
        schedule = (0, 0, 1, 1, 1, 0)

    starts, tasks, episodes = env_schedule(PerEpisode())
    assert starts.tolist() == [0, 2, 5] and tasks.tolist() == [0, 1, 0] and episodes == 6
    assert env_schedule(type("NoSchedule", (), {"schedule": ()})()) is None
