"""Mutation-testing kills (round 6) for how a command line and config files become a validated run config: the
bounds of `validate` at their edges, the helpers of a path and a count setting, and what a saved config keeps."""

import pytest

from agents.config import ConfigError, absolute_path, load_config, positive_int_setting
from envs.options import SEED_LIMIT
from envs.token_env import MAX_LANES


def test_the_largest_lane_count_and_the_last_seedable_lane_are_accepted():
    """train.lanes=MAX_LANES is in range, and seed + lanes == 2^32 seeds its last lane 2^32 - 1, which is valid."""
    assert load_config([f"train.lanes={MAX_LANES}"]).train.lanes == MAX_LANES
    assert load_config([f"seed={SEED_LIMIT - 4}", "train.lanes=4"]).seed == SEED_LIMIT - 4
    with pytest.raises(ConfigError, match=rf"^seed={SEED_LIMIT - 3}: the 4 lanes are seeded"):
        load_config([f"seed={SEED_LIMIT - 3}", "train.lanes=4"])


@pytest.mark.parametrize("scope, fits, short", [("shared", 64, 63), ("lane", 8, 7)])
def test_a_stores_capacity_must_hold_one_chunk_calls_writes_exactly(scope, fits, short):
    """A shared store takes chunk x lanes memories per chunk call, a per-lane one chunk: that many exactly fits."""
    line = ["agent=memnet", "memory.store=true", f"memory.store_scope={scope}", "model.window=8", "train.chunk=8",
            "train.lanes=8", "memory.store_top_k=4"]
    assert load_config([*line, f"memory.store_capacity={fits}"]).memory.store_capacity == fits
    with pytest.raises(ConfigError, match=rf"^memory.store_capacity={short}: a chunk call writes up to {fits} "):
        load_config([*line, f"memory.store_capacity={short}"])


@pytest.mark.parametrize("value", [True, 2.5, 0, "0", float("inf")])
def test_a_count_setting_refuses_a_boolean_a_fraction_and_zero(value):
    """positive_int_setting (num_samples, max_t, a benchmark's seeds): True is not the count 1."""
    with pytest.raises(ConfigError, match=r"^num_samples=.*: must be an integer >= 1$"):
        positive_int_setting("num_samples", value)
    assert positive_int_setting("num_samples", "3") == 3 and positive_int_setting("num_samples", 2.0) == 2


def test_an_env_file_option_is_made_absolute_but_an_empty_one_stays_empty():
    """agents.run saves an env's relative *_path option absolute (resume= and agents.evaluate read it elsewhere);
    an empty one stays '' rather than naming the working folder."""
    import os

    from agents.run_config import config_for

    assert absolute_path("") == ""
    assert absolute_path("a/b.txt") == os.path.join(os.getcwd(), "a", "b.txt")
    assert config_for(["env=NeedleRecall-v0", "env.kwargs.haystack_path=''"])[0].env.kwargs.haystack_path == ""
    relative = config_for(["env=NeedleRecall-v0", "env.kwargs.haystack_path=a/b.txt"])[0].env.kwargs.haystack_path
    assert relative == os.path.join(os.getcwd(), "a", "b.txt")


def test_a_baselines_memory_keys_are_not_checked_as_memnets():
    """agent=lstm builds no memory: memory.slots=64 memory.read_heads=3 with model.dim=8 is no refusal (MemNet's
    is one), and the config keeps what was given."""
    cfg = load_config(["agent=lstm", "memory.slots=64", "model.dim=8", "memory.read_heads=3"])
    assert cfg.memory.read_heads == 3 and cfg.memory.slots == 64
    with pytest.raises(ConfigError, match=r"^memory.read_heads=3: must be >= 1 and divide model.dim=8"):
        load_config(["agent=memnet", "model.dim=8", "memory.read_heads=3"])


def test_only_a_matching_pair_of_quotes_is_taken_off_a_path():
    """unquoted: 'a' and "a" are a; 'a" (no pair) is kept as given."""
    from agents.cli_args import unquoted

    assert unquoted("'a'") == "a" and unquoted('"a"') == "a"
    assert unquoted("'a\"") == "'a\"" and unquoted("'") == "'"


def test_a_saved_config_of_an_unshipped_env_gets_no_other_envs_options(tmp_path):
    """An env id with no file in agents/conf/env (registered elsewhere) and no env.kwargs in the file: its options are
    none, not ContinualShift-v0's (the default env's), which it may not take."""
    from agents.config_file import from_yaml_file

    path = tmp_path / "config.yaml"
    path.write_text("env: {id: MyOwnEnv-v0}\nagent: {name: lstm}\n")
    cfg = from_yaml_file(str(path))
    assert cfg.env.id == "MyOwnEnv-v0" and dict(cfg.env.kwargs) == {}


def test_flattening_a_config_keeps_the_envs_options_as_one_value():
    """flatten_config: dotted keys, but env.kwargs stays one dict (an option's own dict value is not split up)."""
    from agents.config import flatten_config

    flat = flatten_config({"env": {"id": "X-v0", "kwargs": {"a": 1, "table": {"b": 2}}}, "train": {"lr": 0.1}})
    assert flat == {"env.id": "X-v0", "env.kwargs": {"a": 1, "table": {"b": 2}}, "train.lr": 0.1}


def test_a_saved_configs_list_for_a_text_key_is_one_line_naming_the_key(tmp_path):
    """OmegaConf's other refusals keep the key in front ("train.mode: Cannot convert ..."): its own text names none."""
    from agents.config_file import from_yaml_file

    path = tmp_path / "config.yaml"
    path.write_text("env: {id: ContinualShift-v0}\nagent: {name: lstm}\ntrain: {mode: [a]}\n")
    with pytest.raises(ConfigError, match=r"^train.mode: Cannot convert 'ListConfig' to string"):
        from_yaml_file(str(path))


def test_one_and_one_point_zero_are_one_value_given_twice():
    """check_values_once: a float key holds 1 as 1.0, so [1, 1.0] gives one value twice (True stays apart from 1)."""
    from agents.cli_args import check_values_once

    with pytest.raises(ConfigError, match=r"^grid: 1.0 is given twice; give each value once$"):
        check_values_once("grid", [1, 1.0])
    check_values_once("grid", [1, True, "1"])
