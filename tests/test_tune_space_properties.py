"""Hypothesis over `agents.tune`'s search-space syntax (`sweep.search_space.<key>=<kind>:[args]`): a list written
with the writer of best_overrides.txt reads back as the same values, a range is accepted exactly when the README's
rule says so and means its two numbers, and any other text is one ConfigError line. No Ray."""

import functools
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.config import ConfigError
from agents.tune_overrides import override_value
from agents.tune_space import SPACE_KINDS, check_space_entry, load_sweep, parse_space_value
from tests.examples import examples

SETTINGS = settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8).filter(
    lambda t: "${" not in t)
VALUE = st.booleans() | st.none() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | TEXT


def same(a, b) -> bool:
    """Equal, of one type, and a float's sign kept (-0.0 is not 0.0 written back)."""
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def read(kind: str, args_text: str) -> dict:
    """What `sweep.search_space.k=<kind>:<args_text>` makes of its value, checked as the plan checks it."""
    return check_space_entry("k", parse_space_value("k", f"{kind}:{args_text}"))


def one_line(exc: ConfigError) -> str:
    text = str(exc)
    assert text.strip() and "\n" not in text, text
    return text


@SETTINGS
@given(kind=st.sampled_from(["grid", "choice"]), values=st.lists(VALUE, min_size=1, max_size=5))
@example(kind="choice", values=["a", "a"])  # a choice of one value listed twice draws nothing else
@example(kind="choice", values=[16, 16, 16])
@example(kind="choice", values=[0.01, 0.02, 0.01])  # a weight: 0.01 is drawn twice as often
@example(kind="choice", values=["\n", "\n"])  # the fix it names, on the message's one line
def test_a_list_of_values_reads_back_as_written_or_is_refused_for_a_repeat(kind, values):
    """Accepted: the values as written (type, sign of zero, order, repeats). Refused, in one line, only for the
    README's reasons: a grid value listed twice (the same trials twice), or a choice whose values are all one
    value (a repeat weighs a value against the others: with no other it draws that value alone, a slip)."""
    repeated = any(v == w for i, v in enumerate(values) for w in values[:i])
    all_one = len(values) > 1 and all(v == values[0] for v in values)
    try:
        spec = read(kind, override_value(values))
    except ConfigError as exc:
        line = one_line(exc)
        assert (kind == "grid" and repeated) or (kind == "choice" and all_one), line
        assert "twice" in line or "draws only" in line, line
        return
    assert not (kind == "grid" and repeated) and not (kind == "choice" and all_one), spec
    assert same(spec[kind], values), (spec, values)


def test_a_choice_of_one_repeated_value_is_one_line_naming_the_fix():
    with pytest.raises(ConfigError) as refused:
        read("choice", "[64,64]")
    assert str(refused.value) == ("sweep.search_space.k.choice=[64, 64]: draws only 64 (a repeated value is drawn "
                                  "more often than the others, and there are none); list the other values, or fix "
                                  "the key: grid:[64] or k=64 on the command line")
    assert read("choice", "[64]") == {"choice": [64]}  # one value, listed once: the key fixed, as grid:[64]
    assert read("choice", "[64,64,32]") == {"choice": [64, 64, 32]}  # 64 drawn 2 times in 3


NUMBER = st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)


@SETTINGS
@given(kind=st.sampled_from(["uniform", "loguniform", "randint", "lograndint"]), low=NUMBER, high=NUMBER)
def test_a_range_is_accepted_exactly_when_ordered_finite_and_positive_for_a_log(kind, low, high):
    """The reference: finite numbers (integers for randint / lograndint), low < high, low > 0 on a log scale; an
    accepted range is the two numbers given (floats for uniform / loguniform, its high exclusive for randint)."""
    ints = "randint" in kind
    ok = (all(isinstance(v, int) or (not ints and math.isfinite(v)) for v in (low, high)) and low < high
          and (not kind.startswith("log") or low > 0))
    try:
        spec = read(kind, f"[{override_value(low)},{override_value(high)}]")
    except ConfigError as exc:
        assert not ok, one_line(exc)
        return
    assert ok, spec
    assert same(spec[kind], [low, high] if ints else [float(low), float(high)]), spec


@SETTINGS
@given(kind=st.sampled_from(SPACE_KINDS) | st.text(max_size=6), args=st.text(max_size=12))
@example(kind="grid", args="\n")  # the message echoed the newline (Hydra's grammar refuses it)
def test_any_search_space_text_is_a_space_entry_or_one_config_error_line(kind, args):
    try:
        spec = read(kind, args)
    except ConfigError as exc:
        one_line(exc)
        return
    ((got, values),) = spec.items()
    assert got == kind and isinstance(values, list) and values


@SETTINGS
@given(values=st.lists(st.integers(1, 64), min_size=1, max_size=4, unique=True))
def test_a_command_line_grid_replaces_the_sweep_files_entry(values):
    """`sweep.search_space.memory.slots=grid:[...]` over the smoke sweep's own `grid: [4, 8]`: the values given."""
    plan = load_sweep("smoke", [f"sweep.search_space.memory.slots=grid:{override_value(values)}"])
    assert plan.search_space["memory.slots"] == {"grid": values}


CHOICES = [0.25, 0.5, 1, 1.0, 2, 2.0]


@functools.cache
def trial_values() -> dict:
    """{(type, value): the value a trial's config holds} for each of CHOICES as memory.pressure_weight (a float)."""
    from agents.config import load_config
    from agents.tune_space import trial_config

    base = load_config(["env=ContinualShift-v0"])
    return {(type(v), v): trial_config(base, {"memory.pressure_weight": v}).memory.pressure_weight for v in CHOICES}


@SETTINGS
@given(values=st.lists(st.sampled_from(CHOICES), min_size=1, max_size=5), top_k=st.integers(1, 4))
@example(values=[0.5, 1, 1.0], top_k=1)  # 1 and 1.0 are one trial value of a float key: 2 settings, not 3
def test_num_samples_is_bounded_by_the_distinct_trial_configs_the_choices_make(values, top_k):
    """Every trial runs with the same seed, so num_samples past the distinct settings the random dimensions draw
    repeats a trial (the README's rule). The distinct settings are those of the trials' configs: a float key holds
    1 and 1.0 as one value (as a grid refuses [1, 1.0] as a value listed twice)."""
    from agents.tune_prepare import check_num_samples
    from agents.tune_space import SweepPlan

    space = {"memory.pressure_weight": {"choice": values}, "memory.top_k": {"randint": [1, 1 + top_k]}}
    settings_ = {(repr(trial_values()[type(v), v]), k) for v in values for k in range(1, 1 + top_k)}
    check_num_samples(SweepPlan("t", space, num_samples=len(settings_)))
    with pytest.raises(ConfigError, match=rf"^num_samples={len(settings_) + 1}: its random dimensions draw at most "
                                          rf"{len(settings_)} distinct settings"):
        check_num_samples(SweepPlan("t", space, num_samples=len(settings_) + 1))
