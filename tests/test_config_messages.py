"""The one-line messages for an unknown key and a value of the wrong type (agents/config_messages.py), through
load_config and agents.run as a user meets them. They were OmegaConf's words: `train.lr: Value 'abc' of type 'str'
could not be converted to Float`, and no hint for a near-miss key."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import run
from agents.config import ConfigError, load_config
from agents.config_messages import default_of, schema_keys
from agents.run_schema import RunSchema
from tests.examples import examples


@pytest.mark.parametrize("typo, meant", [("train.episode", "train.episodes"), ("memory.slot", "memory.slots"),
                                         ("memory.store_topk", "memory.store_top_k"),
                                         ("train.eval_evry", "train.eval_every"), ("model.windw", "model.window")])
def test_a_near_miss_key_names_the_key_meant(typo, meant, capsys):
    assert run.main([f"{typo}=2"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: unknown config key {typo!r}; did you mean {meant!r}? run "
                                               "`python -m agents.run --help` to list the keys")


def test_a_key_like_none_gets_no_guess():
    with pytest.raises(ConfigError) as err:
        load_config(["train.zzzz=1"])
    assert str(err.value) == "unknown config key 'train.zzzz'; run `python -m agents.run --help` to list the keys"


def test_schema_keys_cover_every_section_and_defaults_read_back():
    keys = schema_keys(RunSchema)
    assert {"seed", "env.id", "env.kwargs", "model.window", "train.lr", "memory.slots"} <= set(keys)
    assert len(keys) == len(set(keys)) > 60
    assert default_of(RunSchema, "model.window") == 64 and default_of(RunSchema, "train.progress") is True


def _typed_keys(kind):
    return sorted(k for k in schema_keys(RunSchema) if type(default_of(RunSchema, k)) is kind)


@settings(max_examples=examples(40), deadline=None)
@given(key=st.sampled_from(_typed_keys(int) + _typed_keys(float)),
       value=st.text(alphabet="abcxyz_", min_size=1, max_size=6))
def test_a_word_for_a_number_is_one_line_with_an_example(key, value):
    with pytest.raises(ConfigError) as err:
        load_config([f"{key}={value}"])
    kind = "a whole number" if type(default_of(RunSchema, key)) is int else "a number"
    assert str(err.value) == f"{key}: {value!r} is not {kind}; give one, e.g. {key}={default_of(RunSchema, key)}"


@settings(max_examples=examples(20), deadline=None)
@given(key=st.sampled_from(_typed_keys(bool)), value=st.sampled_from(["maybe", "yess", "on_", "nope"]))
def test_a_word_for_a_boolean_is_one_line_naming_both_values(key, value):
    with pytest.raises(ConfigError) as err:
        load_config([f"{key}={value}"])
    assert str(err.value) == f"{key}: {value!r} is not a boolean; give {key}=true or {key}=false"


def test_every_schema_section_is_a_dataclass_the_walk_expands():
    sections = [f.name for f in dataclasses.fields(RunSchema) if f.default_factory is not dataclasses.MISSING
                and dataclasses.is_dataclass(f.default_factory)]
    assert sections == ["env", "agent", "model", "memory", "train"]


_MAPPINGS = st.dictionaries(st.sampled_from(["a", "b", "k1"]), st.integers(0, 9), max_size=2).map(
    lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}")


@settings(max_examples=examples(15), deadline=None)
@given(mapping=_MAPPINGS, plus=st.sampled_from(["", "+"]))
def test_a_mapping_for_a_list_option_is_one_line_naming_the_key(mapping, plus):
    """env.kwargs.distances={} was Hydra's "Error merging override env.kwargs.distances={}": no reason, no fix."""
    with pytest.raises(ConfigError) as err:
        load_config(["env=LongDependency-v0", f"{plus}env.kwargs.distances={mapping}"])
    assert str(err.value) == ("env.kwargs.distances: a mapping cannot replace its list; give a list "
                              "(`python -m agents.run --help` shows its value)")
