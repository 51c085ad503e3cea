"""Sweep plans without Ray: sweep files, their fields and command-line edits, search spaces and swept keys."""

from __future__ import annotations

import numpy as np
import pytest

from agents.config import ConfigError, group_options, load_config
from agents.tune_space import (
    build_param_space,
    check_space_entry,
    check_space_keys,
    load_sweep,
    make_plan,
    parse_space_value,
)


# ---------------------------------------------------------------- sweep files
def test_shipped_sweeps_cover_the_memory_hyper_parameters():
    assert {"memory", "smoke"} <= set(group_options("sweep"))
    memory = load_sweep("memory")
    assert {"memory.slots", "memory.pressure_weight", "memory.decay", "memory.util_weight",
            "memory.sparsity_weight"} <= set(memory.search_space)
    assert memory.search_space["memory.slots"] == {"grid": [16, 32, 64, 128]}
    assert memory.search_space["memory.pressure_weight"] == {"loguniform": [1e-4, 1e-1]}
    assert memory.scheduler["type"] == "asha" and memory.mode == "max"
    check_space_keys(memory, load_config(memory.overrides))  # every swept value is a valid run config


def test_smoke_sweep_is_small(smoke, smoke_base):
    grid = np.prod([len(v["grid"]) for v in smoke.search_space.values() if "grid" in v])
    assert 2 <= grid * smoke.num_samples <= 4
    from agents.tune_metrics import env_facts

    facts, episodes = env_facts(smoke_base)
    assert episodes == 4 and facts.num_tasks == 2 and smoke_base.model.dim <= 32


def test_unknown_sweep_name_is_one_line_listing_the_sweeps():
    with pytest.raises(ConfigError, match=r"unknown sweep 'nope'; choose one of: .*memory.*smoke") as err:
        load_sweep("nope")
    assert "\n" not in str(err.value)


def test_command_line_edits_the_sweep(smoke):
    plan = load_sweep("smoke", ["sweep.search_space.memory.top_k=choice:[1,2]", "sweep.scheduler.type=fifo",
                                "sweep.mode=min", "sweep.search_space.memory.slots=none"], num_samples=3)
    assert plan.search_space == {"memory.pressure_weight": {"loguniform": [1e-3, 1e-1]},
                                 "memory.top_k": {"choice": [1, 2]}}
    assert (plan.scheduler["type"], plan.mode, plan.num_samples) == ("fifo", "min", 3)
    assert smoke.search_space["memory.slots"] == {"grid": [4, 8]}  # the loaded file is not mutated
    with pytest.raises(ConfigError, match="sweep.mode: not valid YAML"):
        load_sweep("smoke", ["sweep.mode=[a"])
    fields = load_sweep("smoke", ["sweep.overrides=[model.dim=32,train.lanes=2]", "sweep.description=a, b"])
    assert fields.overrides == ["model.dim=32", "train.lanes=2"] and fields.description == "a, b"
    with pytest.raises(ConfigError, match="'mode' is not a group of fields"):
        load_sweep("smoke", ["sweep.mode.x=1"])


def test_empty_search_space_is_rejected():
    with pytest.raises(ConfigError, match="empty search space"):
        load_sweep("smoke", ["sweep.search_space.memory.slots=none",
                             "sweep.search_space.memory.pressure_weight=none"])
    with pytest.raises(ConfigError, match="empty search space"):
        make_plan("x", {"search_space": {}})


@pytest.mark.parametrize("raw, message", [
    ({"mode": "median"}, r"sweep.mode='median': choose one of \('max', 'min'\)"),
    ({"scheduler": {"type": "hyperband"}}, "sweep.scheduler.type='hyperband'"),
    ({"resources": {"cpus": 0}}, r"sweep.resources.cpus=0: must be a number > 0"),
    ({"num_samples": 0}, "num_samples=0: must be an integer >= 1"),
    ({"max_failures": -2}, "sweep.max_failures=-2"),
    ({"scheduler": {"reduction_factor": 1}}, r"reduction_factor=1: must be a number > 1"),  # ASHA keeps every trial
    ({"max_concurrent": -1}, r"sweep.max_concurrent=-1: must be an integer >= 0"),
    ({"overrides": ["seed"]}, "overrides must be a list of key=value"),
    ({"color": "red"}, "unknown field 'color'"),
    ({"description": [1]}, r"sweep.description=\[1\]: must be a line of text"),  # was kept, a list, in sweep.yaml
])
def test_bad_sweep_fields(raw, message):
    with pytest.raises(ConfigError, match=message):
        make_plan("x", {"search_space": {"memory.slots": {"grid": [8]}}} | raw)


def test_a_number_as_the_description_is_its_text():  # sweep.description=2026 (YAML reads a number)
    assert make_plan("x", {"search_space": {"memory.slots": {"grid": [8]}}, "description": 2026}).description == \
        "2026"


def test_max_failures_minus_one_retries_forever():  # the one value below 0 that Tune takes
    assert make_plan("x", {"search_space": {"memory.slots": {"grid": [8]}}, "max_failures": -1}).max_failures == -1


@pytest.mark.parametrize("edit, message", [
    ("sweep.scheduler=fifo", r"sweep.scheduler='fifo': must be a group of fields \(type, grace_period, "
                             r"reduction_factor, max_t\); set one as sweep.scheduler.<field>=<value>"),
    ("sweep.resources=2", r"sweep.resources=2: must be a group of fields \(cpus, gpus, threads\)"),
    ("sweep.resources.cpu=2", "sweep.resources.cpu: unknown field; fields of sweep.resources: cpus, gpus, threads"),
    ("sweep.scheduler.grace=3", "sweep.scheduler.grace: unknown field; fields of sweep.scheduler: type, "
                                "grace_period, reduction_factor, max_t"),
    ("sweep.resources.cpus=true", "sweep.resources.cpus=True: must be a number > 0"),
    ("sweep.scheduler.reduction_factor=true", "sweep.scheduler.reduction_factor=True: must be a number > 1"),
])
def test_scheduler_and_resources_sub_fields_are_checked(edit, message):
    with pytest.raises(ConfigError, match=message) as err:  # was a ValueError / TypeError, or silently kept
        load_sweep("smoke", [edit])
    assert "\n" not in str(err.value)
    assert load_sweep("smoke", ["sweep.resources.cpus=2"]).resources == {"cpus": 2, "gpus": 0, "threads": 1}


# ---------------------------------------------------------------- search spaces
def test_space_entries_are_checked():
    assert parse_space_value("memory.slots", "grid:[16,64]") == {"grid": [16, 64]}
    # YAML 1.1 reads 1e-4 as a string
    assert check_space_entry("k", {"loguniform": ["1e-4", 0.1]}) == {"loguniform": [1e-4, 0.1]}
    for spec, message in [({"loguniform": [0.0, 1.0]}, "log range needs low > 0"),
                          ({"uniform": [1.0, 1.0]}, "low must be < high"), ({"grid": []}, "non-empty list"),
                          ({"normal": [0, 1]}, "unknown kind 'normal'"), ({"uniform": [1]}, r"\[low, high\]"),
                          ([16, 64], "one {kind: \\[args\\]}"),
                          ({"grid": [16, 64, 16]}, r"16 is listed twice .* list each value once"),
                          ({"grid": [[1, 2], [1, 2]]}, r"\[1, 2\] is listed twice"),
                          ({"grid": [None, 8, None]}, "None is listed twice")]:
        with pytest.raises(ConfigError, match=message):
            check_space_entry("memory.slots", spec)
    # a choice may repeat a value (drawn more often); null is a value a grid can list once
    assert check_space_entry("k", {"choice": [16, 16, 64]}) == {"choice": [16, 16, 64]}
    assert check_space_entry("k", {"grid": [None, 8]}) == {"grid": [None, 8]}
    with pytest.raises(ConfigError, match="write <kind>:\\[values\\]"):
        parse_space_value("memory.slots", "16,64")


def test_param_space_builds_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = build_param_space({"memory.slots": {"grid": [16, 64]}, "memory.decay": {"choice": [True, False]},
                               "memory.util_weight": {"loguniform": [1e-4, 1e-1]},
                               "train.lr": {"uniform": [1e-3, 2e-3]}, "memory.top_k": {"randint": [1, 5]}})
    assert space["memory.slots"] == {"grid_search": [16, 64]}
    assert isinstance(space["memory.decay"], Categorical)
    assert space["memory.decay"].categories == [True, False]
    util = space["memory.util_weight"]
    assert isinstance(util, Float) and (util.lower, util.upper) == (1e-4, 1e-1)
    draws = np.array(util.sample(size=400, random_state=np.random.default_rng(0)))
    assert draws.min() >= 1e-4 and draws.max() <= 1e-1
    assert np.mean(draws < 1e-2) > 0.5  # log-uniform: 2 of 3 decades lie below 1e-2; uniform would give ~0.09
    top_k = space["memory.top_k"]
    assert isinstance(top_k, Integer)
    draws = top_k.sample(size=200, random_state=np.random.default_rng(0))
    assert set(draws) == {1, 2, 3, 4}  # high is exclusive


def test_swept_keys_must_exist_and_their_values_must_be_valid(smoke, smoke_base):
    bad_key = make_plan("x", {"search_space": {"memory.nope": {"grid": [1]}}})
    with pytest.raises(ConfigError, match="'memory.nope' is not a key of the run config"):
        check_space_keys(bad_key, smoke_base)
    group = make_plan("x", {"search_space": {"memory": {"grid": [1]}}})
    with pytest.raises(ConfigError, match="not a key of the run config"):
        check_space_keys(group, smoke_base)
    bad_value = make_plan("x", {"search_space": {"memory.slots": {"grid": [8, -1]}}})
    with pytest.raises(ConfigError, match="memory.slots=-1"):
        check_space_keys(bad_value, smoke_base)
    bad_range = make_plan("x", {"search_space": {"model.dropout": {"uniform": [0.0, 1.0]}}})
    with pytest.raises(ConfigError, match="model.dropout"):
        check_space_keys(bad_range, smoke_base)
    # uniform draws fractions: over a whole-number key every trial would be refused, so its [1, 5] (read as 1.0,
    # 5.0) is refused before Ray starts; randint is the kind for it
    fractions = make_plan("x", {"search_space": {"memory.top_k": {"uniform": [1, 5]}}})
    with pytest.raises(ConfigError, match="memory.top_k: '1.0' is not a whole number"):
        check_space_keys(fractions, smoke_base)
    check_space_keys(make_plan("x", {"search_space": {"env.kwargs.vocab_size": {"grid": [64]}}}), smoke_base)


@pytest.mark.parametrize("space, message", [
    ({"env.kwargs.bogus": {"grid": [1, 2]}}, r"env.kwargs.bogus=1: unknown option\(s\) \['bogus'\] for "
                                             "ContinualShift-v0; allowed: num_tasks"),
    ({"env.kwargs.num_tasks": {"grid": [0, 2]}}, "env.kwargs.num_tasks=0: ContinualShift-v0: num_tasks must be"),
    ({"env.kwargs.num_tasks": {"randint": [1, 300]}}, "env.kwargs.num_tasks=299: .*num_tasks must be"),
])
def test_swept_env_options_are_checked_by_building_the_env(smoke_base, space, message):
    with pytest.raises(ConfigError, match=message) as err:  # each trial crashed on them after Ray started
        check_space_keys(make_plan("x", {"search_space": space}), smoke_base)
    assert "\n" not in str(err.value)
    check_space_keys(make_plan("x", {"search_space": {"env.kwargs.num_tasks": {"randint": [1, 4]}}}), smoke_base)


def test_relative_haystack_paths_reach_the_trials_absolute(tmp_path, monkeypatch):
    from agents.tune import prepare

    monkeypatch.chdir(tmp_path)  # Ray runs each trial elsewhere: a relative path would name nothing there
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("the quick brown fox jumps over the lazy dog " * 40)
    argv = ["env=NeedleRecall-v0", "sweep=smoke", f"runs_root={tmp_path / 'runs'}"]
    plan, base, _ = prepare([*argv, "env.kwargs.haystack_path=a.txt"])
    assert base["env"]["kwargs"]["haystack_path"] == str(tmp_path / "a.txt")
    assert f"++env.kwargs.haystack_path='{tmp_path / 'a.txt'}'" in plan.overrides  # best_overrides.txt too
    assert load_config(plan.overrides).env.kwargs.haystack_path == str(tmp_path / "a.txt")
    plan, base, _ = prepare([*argv, "sweep.search_space.env.kwargs.haystack_path=grid:[a.txt,b.txt]"])
    assert plan.search_space["env.kwargs.haystack_path"] == {"grid": [str(tmp_path / "a.txt"),
                                                                      str(tmp_path / "b.txt")]}
    with pytest.raises(ConfigError, match="haystack_path=.*c.txt': no such file"):
        prepare([*argv, "sweep.search_space.env.kwargs.haystack_path=grid:[a.txt,c.txt]"])


def test_search_space_values_on_the_command_line_read_as_any_override_does():
    """YAML 1.1 read grid:[010,012] as [8, 10] and choice:[1:0,3:0+4:1] as [60, ...] (refused as key_lags='60')."""
    lags = load_sweep("smoke", ["sweep.search_space.memory.key_lags=choice:[1:0,3:0+4:1]"])
    assert lags.search_space["memory.key_lags"] == {"choice": ["1:0", "3:0+4:1"]}
    padded = load_sweep("smoke", ["sweep.search_space.env.kwargs.shift=grid:[010,012]"])
    assert padded.search_space["env.kwargs.shift"] == {"grid": ["010", "012"]}
