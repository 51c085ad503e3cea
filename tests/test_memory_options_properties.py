"""Hypothesis over the option strings of the run config: every enum-like key (memory.fusion, internal, reset,
store_index, store_eviction, store_precision, key_source, ..., train.mode, train.acting, device) takes exactly its
listed choices, from Python (MemoryConfig) and from the command line, and refuses anything else in one line naming
the key and the choices; `memory.key_lags` written from lag pairs reads back as those pairs; the bounded numbers
take exactly their documented ranges. No training."""

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from agents.config import ACTING, DEVICES, TRAIN_MODES, ConfigError, load_config, memory_config
from agents.config_messages import error_line
from agents.tune_overrides import override_value
from memory import config as memory
from memory.config import MAX_CONTEXT_SCALE, MAX_LAG, MemoryConfig
from tests.examples import examples

SETTINGS = settings(max_examples=examples(50), deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHOICES = {"fusion": memory.FUSIONS, "internal": memory.INTERNAL_KINDS, "store_index": memory.STORE_INDEXES,
           "store_eviction": memory.STORE_EVICTIONS, "store_metric": memory.STORE_METRICS,
           "store_precision": memory.STORE_PRECISIONS, "cache_policy": memory.CACHE_POLICIES,
           "reset": memory.RESET_MODES, "key_source": memory.KEY_SOURCES, "store_scope": ("lane", "shared")}
RUN_CHOICES = {"train.mode": TRAIN_MODES, "train.acting": ACTING, "device": DEVICES}
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=10).filter(
    lambda t: "${" not in t)


def near(choices):
    """The choices and spellings next to them: another case, a space around, a prefix."""
    return st.sampled_from(choices).flatmap(
        lambda c: st.sampled_from([c, c.upper(), f" {c}", f"{c} ", c[:-1], c + "s"]))


def one_line(exc) -> str:
    line = error_line(exc)
    assert "\n" not in line, line
    return line


@SETTINGS
@given(key=st.sampled_from(sorted(CHOICES)), data=st.data())
def test_an_enum_memory_key_takes_exactly_its_choices_from_python(key, data):
    value = data.draw(near(CHOICES[key]) | TEXT, label="value")
    try:
        cfg = MemoryConfig(**{key: value})
    except ValueError as exc:
        assert value not in CHOICES[key], str(exc)
        assert str(exc).startswith(f"memory.{key}={value!r}: choose ") and "\n" not in str(exc), str(exc)
        assert all(choice in str(exc) for choice in CHOICES[key]), str(exc)
        return
    assert value in CHOICES[key] and getattr(cfg, key) == value


@SETTINGS
@given(key=st.sampled_from(sorted(CHOICES)), data=st.data())
def test_an_enum_memory_key_takes_exactly_its_choices_from_the_command_line(key, data):
    """`memory.<key>=<text>` (written as Hydra reads a text back): the choice itself, or one ConfigError line
    naming the key and every choice."""
    value = data.draw(near(CHOICES[key]) | TEXT, label="value")
    try:
        cfg = load_config([f"memory.{key}={override_value(value)}"])
    except ConfigError as exc:
        line = one_line(exc)
        assert value not in CHOICES[key], line
        assert f"memory.{key}=" in line and all(choice in line for choice in CHOICES[key]), line
        return
    assert value in CHOICES[key] and cfg.memory[key] == value and getattr(memory_config(cfg), key) == value


@SETTINGS
@given(key=st.sampled_from(sorted(RUN_CHOICES)), data=st.data())
def test_an_enum_run_key_takes_exactly_its_choices(key, data):
    value = data.draw(near(RUN_CHOICES[key]) | TEXT, label="value")
    try:
        cfg = load_config([f"{key}={override_value(value)}"])
    except ConfigError as exc:
        line = one_line(exc)
        assert value not in RUN_CHOICES[key] and f"{key}=" in line, line
        return
    assert value in RUN_CHOICES[key] and OmegaConf.select(cfg, key) == value


LAG_PAIRS = st.lists(st.tuples(st.integers(0, MAX_LAG), st.integers(0, MAX_LAG)), min_size=1, max_size=5, unique=True)


@SETTINGS
@given(pairs=LAG_PAIRS)
@example(pairs=[(3, 0)])  # YAML 1.1 reads 3:0 as 180 (sexagesimal)
@example(pairs=[(1, 0), (10, 5)])
def test_key_lags_given_on_the_command_line_are_the_pairs_written(pairs):
    text = "+".join(f"{o}:{p}" for o, p in pairs)
    cfg = load_config([f"memory.key_lags={text}"])
    assert cfg.memory.key_lags == text and memory_config(cfg).lag_pairs == tuple(pairs)


BOUNDED = {  # key: (low, low included, high, high included), README's ranges
    "copy": (0.0, True, 1.0, False), "store_replace": (0.0, True, 1.0, True), "context_decay": (0.0, True, 1.0, False),
    "context_scale": (0.0, False, MAX_CONTEXT_SCALE, True), "store_importance_halflife": (0.0, True, math.inf, True),
    "util_weight": (0.0, True, math.inf, True)}


@SETTINGS
@given(key=st.sampled_from(sorted(BOUNDED)), value=st.floats(-2, 2) | st.floats() | st.sampled_from([0.0, 1.0, 1e6]))
def test_a_bounded_memory_number_takes_exactly_its_range(key, value):
    low, low_in, high, high_in = BOUNDED[key]
    ok = math.isfinite(value) and (low <= value if low_in else low < value) and \
        (value <= high if high_in else value < high)
    try:
        cfg = MemoryConfig(**{key: value})
    except ValueError as exc:
        assert not ok and str(exc).startswith(f"memory.{key}=") and "\n" not in str(exc), str(exc)
        return
    assert ok and getattr(cfg, key) == value


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_of_an_enum_key_is_taken(key):
    for choice in CHOICES[key]:
        assert getattr(MemoryConfig(**{key: choice}), key) == choice
