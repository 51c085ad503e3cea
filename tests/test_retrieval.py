"""memory/retrieval.py's re-scoring: the window filter and the recency term, per lane and in a shared store."""

import numpy as np
import pytest

from memory.retrieval import recency_rescore
from memory.store import FaissStore


@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_only_the_query_lanes_own_recent_entries_count_as_in_its_window(scope):
    store = FaissStore(4, 1, capacity=32, lanes=2, scope=scope)
    steps = np.arange(10)
    ids, _ = store.add(np.ones((10, 4)), np.zeros((10, 1)), [1] * 10, meta={"step": steps})  # lane 1 writes
    clock = np.array([[10], [10]])  # (B, T): both lanes' clocks, which run together
    rescore = recency_rescore(store, clock, window=4, scale=1.0, slope=0.0)
    found = np.broadcast_to(ids, (2, 1, 10))  # (B, T, F): every entry offered to both lanes
    scores = rescore(np.zeros((2, 1, 10)), found)
    # lane 1: steps 6..9 are within its window of 4 (age <= 4) and dropped; older ones kept
    np.testing.assert_array_equal(np.isinf(scores[1, 0]), steps >= 6)
    # lane 0 never saw lane 1's tokens: nothing of lane 1 is in its window (a shared store offers them all)
    assert not np.isinf(scores[0, 0]).any()


def test_recency_term_subtracts_slope_times_log_one_plus_age():
    store = FaissStore(4, 1, capacity=8, lanes=1)
    ids, _ = store.add(np.ones((2, 4)), np.zeros((2, 1)), [0, 0], meta={"step": [0, 3]})
    scores = recency_rescore(store, np.array([[20]]), window=4, scale=2.0, slope=0.5)(np.ones((1, 1, 2)),
                                                                                        ids[None, None])
    np.testing.assert_allclose(scores[0, 0], [2.0 - 0.5 * np.log1p(20), 2.0 - 0.5 * np.log1p(17)])


def test_rank_orders_equal_matches_by_recency_whatever_the_rounding():
    """Equal matches (the same preceding token) were ordered by the rounding of the matmul that scored them, which
    depends on how many queries share the call: acting one token at a time and the chunk forward kept different
    memories at a tie (tests/test_memnet.py's acting = chunk check failed on another machine's BLAS)."""
    from memory.retrieval import rank

    ids = np.array([[10, 11, 12, 13, 14]])
    time = np.array([[1, 3, 2, 3, 0]])
    for noise in (1e-9, -1e-9):  # one of two equal scores a rounding above or below the other
        scores = np.array([[0.5, 0.5 + noise, 0.5 - noise, 0.9, -np.inf]])
        assert rank(scores, ids, time).tolist() == [[3, 1, 2, 0, 4]]  # best; then equal ones newest first; -inf
    same_time = rank(np.array([[0.2, 0.2 + 1e-9]]), np.array([[7, 9]]), np.array([[4, 4]]))
    assert same_time.tolist() == [[1, 0]]  # then the larger id
    apart = rank(np.array([[-3.0, -2.9]]), np.array([[1, 2]]), np.array([[9, 0]]))
    assert apart.tolist() == [[1, 0]]  # a real difference is not a tie, whatever the age
    assert rank(np.full((1, 3), -np.inf), np.array([[-1, -1, -1]]), np.full((1, 3), -1)).shape == (1, 3)
    for noise in (1e-9, -1e-9):  # no bucket edge between two equal scores, wherever they lie
        assert rank(np.array([[1.0, 0.3, 0.3 + noise]]), np.array([[1, 2, 3]]), np.array([[0, 5, 1]])).tolist() \
            == [[0, 1, 2]]
    # a dropped candidate (-inf: in the window) never ties with a real one, however new (it took a top-k slot)
    assert rank(np.array([[0.1, -np.inf, -np.inf]]), np.array([[1, 2, 3]]), np.array([[0, 0, 9]]))[0, 0] == 0
    assert rank(np.array([[np.nan, 0.5, -np.inf, 0.5, np.inf]]), np.array([[1, 2, 3, 4, 5]]),
                np.array([[9, 0, 9, 1, 9]]))[0, :2].tolist() == [3, 1]
    for noise in (1e-9, -1e-9):  # near 0 too: the tolerance is the row's scale, as rounding errors are
        assert rank(np.array([[1.0, 1e-6, 1e-6 + noise]]), np.array([[1, 2, 3]]),
                    np.array([[0, 9, 1]])).tolist() == [[0, 1, 2]]
    # a group spans the tolerance from its best: an unrelated 0.99992 does not chain 0.99985 onto 1.0
    chained = rank(np.array([[1.0, 0.99985, 0.99992]]), np.array([[1, 2, 3]]), np.array([[0, 9, 5]]))
    assert chained.tolist() == [[2, 0, 1]]
    assert rank(np.array([[1.0, 0.99985]]), np.array([[1, 2]]), np.array([[0, 9]])).tolist() == [[0, 1]]
