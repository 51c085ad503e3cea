"""How the envs draw their worlds and streams: the draws made faster or corrected on 2026-12-01 give the worlds they
gave before wherever there was nothing to correct (digests taken at 12b4c12), and follow their definitions."""

import hashlib

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs  # noqa: F401
from envs.continual_shift import blended_distance
from envs.needle_recall import _distinct_prefixes
from tests.examples import examples


def shift_world(**options):
    source = gym.make("ContinualShift-v0", **options).unwrapped._source
    return source, source.filler_table.tobytes() + source.values.tobytes()


def filler_counts(source) -> list[bytes]:
    return [np.bincount(row - source.filler0, minlength=source.num_fillers).tobytes() for row in source.filler_table]


@pytest.mark.parametrize("options", [{"num_tasks": 3, "keys_per_task": 1, "vocab_size": 12}, {"vocab_size": 49}])
def test_continual_shift_tasks_with_shared_keys_never_share_filler_statistics(options):
    # with few fillers two tasks' tables could come out alike (9 of these 20 worlds at V=12, 2 at V=49), and with
    # the task hidden nothing then told their conflicting mappings apart
    for seed in range(20):
        source, _ = shift_world(world_seed=seed, **options)
        assert len(set(filler_counts(source))) == source.num_tasks, f"world_seed={seed}"


def test_continual_shift_worlds_without_equal_tasks_are_unchanged():
    assert hashlib.sha256(shift_world()[1]).hexdigest().startswith("d6cba08d53062131")  # the default world
    unaffected = hashlib.sha256()  # V=49: world_seed 2 and 6 had a pair of equal tasks, the other 18 none
    for seed in set(range(20)) - {2, 6}:
        unaffected.update(shift_world(vocab_size=49, world_seed=seed)[1])
    assert unaffected.hexdigest().startswith("ac9267b159a8fd54")
    disjoint = hashlib.sha256()  # no shared keys: the keys tell tasks apart, so equal fillers (seeds 0-2, 4) stay
    for seed in range(20):
        disjoint.update(shift_world(key_overlap=0.0, keys_per_task=4, vocab_size=34, world_seed=seed)[1])
    assert disjoint.hexdigest().startswith("52bbf2a23d5e6f9e")


@settings(max_examples=examples(80), deadline=None)
@given(lanes=st.integers(1, 3), trials=st.integers(1, 60), K=st.integers(1, 8), codes=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_blended_distance_is_the_nearest_earlier_trial_with_the_same_pair(lanes, trials, K, codes, seed):
    pair = np.random.default_rng(seed).integers(0, codes, size=(lanes, trials))
    expected = np.full((lanes, trials), -1)
    for b in range(lanes):  # the definition: the smallest multiple of K back with the same (key, value)
        for i in range(trials):
            back = next((j for j in range(K, i + 1, K) if pair[b, i - j] == pair[b, i]), None)
            expected[b, i] = -1 if back is None else 3 * back - 1
    np.testing.assert_array_equal(blended_distance(pair, K), expected)


@pytest.mark.parametrize("count,length,symbols", [(3000, 3, 19), (500, 2, 32), (200, 4, 10**6), (50, 1, 100)])
def test_needle_recall_cue_prefixes_are_the_row_wise_draw(count, length, symbols):
    # the fast path (a row as one integer; 10^6 symbols ^ 4 does not fit, so rows) redraws exactly the rows the
    # row-wise np.unique redrew: the same facts as before it, all prefixes different
    rng = np.random.default_rng(7)
    rows = rng.integers(0, symbols, size=(count, length))
    while len(duplicate := np.setdiff1d(np.arange(count), np.unique(rows, axis=0, return_index=True)[1])):
        rows[duplicate] = rng.integers(0, symbols, size=(len(duplicate), length))
    fast = _distinct_prefixes(np.random.default_rng(7), count, length, symbols)
    np.testing.assert_array_equal(fast, rows)
    assert len(np.unique(fast, axis=0)) == count
