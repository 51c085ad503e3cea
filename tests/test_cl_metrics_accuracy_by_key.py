"""Accuracy by key: distance bucket edges and the streaming AccuracyByKey counter, its state dict, bad input."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cl_metrics import AccuracyByKey, distance_buckets
from tests.examples import examples


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


@settings(max_examples=examples(50))
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
    with pytest.raises(ValueError, match="strictly increasing"):  # a repeated edge would be a bucket of no key
        AccuracyByKey([1, 2, 2, 4])
    with pytest.raises(TypeError, match="keys must be integers"):
        AccuracyByKey().update([1.5], [True])
    with pytest.raises(TypeError, match="correct must be booleans"):
        AccuracyByKey().update([1], [1])
    with pytest.raises(ValueError, match="equal lengths"):
        AccuracyByKey().update([1, 2], [True])
