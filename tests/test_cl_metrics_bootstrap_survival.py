"""Bootstrap confidence intervals over seeds and Kaplan-Meier survival curves (agents.cl_metrics)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cl_metrics import bootstrap_ci
from memory.metrics import kaplan_meier
from tests.examples import examples


def test_bootstrap_single_seed_and_determinism():
    assert bootstrap_ci([0.42]) == (0.42, 0.42, 0.42)
    values = [0.3, 0.5, 0.55, 0.9]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)


@settings(max_examples=examples(50))
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
