"""Sweep plans without Ray: sweep files, command line, search spaces, trial configs, metric names, results."""

from __future__ import annotations

import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from agents.cl_metrics import distance_buckets
from agents.config import ConfigError, group_options, load_config
from agents.tune_metrics import EnvFacts, check_metric, default_metric, reported_metrics
from agents.tune_overrides import merge_overrides, override_value, pin_swept_keys, resolve_overrides, trial_overrides
from agents.tune_space import (
    build_param_space,
    check_space_entry,
    check_space_keys,
    load_sweep,
    make_plan,
    parse_command_line,
    parse_space_value,
    trial_config,
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
    from agents.tune import env_facts

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
    ({"overrides": ["seed"]}, "overrides must be a list of key=value"),
    ({"color": "red"}, "unknown field 'color'"),
])
def test_bad_sweep_fields(raw, message):
    with pytest.raises(ConfigError, match=message):
        make_plan("x", {"search_space": {"memory.slots": {"grid": [8]}}} | raw)


@pytest.mark.parametrize("edit, message", [
    ("sweep.scheduler=fifo", r"sweep.scheduler='fifo': must be a group of fields \(type, grace_period, "
                             r"reduction_factor, max_t\); set one as sweep.scheduler.<field>=<value>"),
    ("sweep.resources=2", r"sweep.resources=2: must be a group of fields \(cpus, threads\)"),
    ("sweep.resources.cpu=2", "sweep.resources.cpu: unknown field; fields of sweep.resources: cpus, threads"),
    ("sweep.scheduler.grace=3", "sweep.scheduler.grace: unknown field; fields of sweep.scheduler: type, "
                                "grace_period, reduction_factor, max_t"),
    ("sweep.resources.cpus=true", "sweep.resources.cpus=True: must be a number > 0"),
    ("sweep.scheduler.reduction_factor=true", "sweep.scheduler.reduction_factor=True: must be a number > 1"),
])
def test_scheduler_and_resources_sub_fields_are_checked(edit, message):
    with pytest.raises(ConfigError, match=message) as err:  # was a ValueError / TypeError, or silently kept
        load_sweep("smoke", [edit])
    assert "\n" not in str(err.value)
    assert load_sweep("smoke", ["sweep.resources.cpus=2"]).resources == {"cpus": 2, "threads": 1}


# ---------------------------------------------------------------- search spaces
def test_space_entries_are_checked():
    assert parse_space_value("memory.slots", "grid:[16,64]") == {"grid": [16, 64]}
    # YAML 1.1 reads 1e-4 as a string
    assert check_space_entry("k", {"loguniform": ["1e-4", 0.1]}) == {"loguniform": [1e-4, 0.1]}
    for spec, message in [({"loguniform": [0.0, 1.0]}, "log range needs low > 0"),
                          ({"uniform": [1.0, 1.0]}, "low must be < high"), ({"grid": []}, "non-empty list"),
                          ({"normal": [0, 1]}, "unknown kind 'normal'"), ({"uniform": [1]}, r"\[low, high\]"),
                          ([16, 64], "one {kind: \\[args\\]}")]:
        with pytest.raises(ConfigError, match=message):
            check_space_entry("memory.slots", spec)
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


# ---------------------------------------------------------------- trial configs and the command line
def test_trial_config_sets_the_swept_values(smoke_base):
    cfg = trial_config(smoke_base, {"memory.slots": np.int64(8), "memory.pressure_weight": np.float64(0.02),
                                    "memory.decay": False, "env.kwargs.vocab_size": 64})
    assert (cfg.memory.slots, cfg.memory.pressure_weight, cfg.memory.decay) == (8, 0.02, False)
    assert type(cfg.memory.slots) is int and cfg.env.kwargs.vocab_size == 64
    assert smoke_base.memory.slots == 64 and smoke_base.env.kwargs.vocab_size != 64  # base untouched
    # was OmegaConf's "Value 'many' of type 'str' could not be converted to Integer"
    with pytest.raises(ConfigError, match=r"^memory.slots: 'many' is not a whole number; give one, e.g. memory.slots="):
        trial_config(smoke_base, {"memory.slots": "many"})
    with pytest.raises(ConfigError, match=r"^memory.decay: 'maybe' is not a boolean; give memory.decay=true or "):
        trial_config(smoke_base, {"memory.decay": "maybe"})


def test_best_overrides_rebuild_the_trial_config_exactly(smoke, smoke_base):
    params = {"memory.slots": np.int64(8), "memory.pressure_weight": np.float64(1e-05), "memory.decay": False,
              "memory.fusion": "concat", "train.lr": 0.0025, "env.kwargs.keys_per_task": 6}
    base_overrides = resolve_overrides(smoke, [])
    overrides = trial_overrides(base_overrides, params)
    assert "memory.pressure_weight=1e-05" in overrides and "memory.decay=false" in overrides
    assert "++env.kwargs.keys_per_task=6" in overrides and "++env.kwargs.keys_per_task=4" not in overrides
    rebuilt = OmegaConf.to_container(load_config(overrides), resolve=True)
    expected = trial_config(load_config(base_overrides), params)
    assert rebuilt == OmegaConf.to_container(expected, resolve=True)
    assert expected.env.kwargs.keys_per_task == 6


def test_override_values_survive_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in (True, False, 0, -3, 0.1, 1e-7, 2.5e10, None, "lru", "a b", "true", "it's"):
        assert parser.parse_override(f"x={override_value(value)}").value() == value, value


def test_merge_overrides_later_wins_in_place():
    assert merge_overrides(["a=1", "b=2"], ["c=3", "a=4"]) == ["b=2", "c=3", "a=4"]
    assert merge_overrides(["+env.kwargs.delay=1"], ["env.kwargs.delay=3"]) == ["env.kwargs.delay=3"]


def test_env_overrides_follow_the_chosen_env(smoke):
    overrides = resolve_overrides(smoke, ["env=LongDependency-v0", "env.kwargs.queries_per_episode=2"])
    assert "++env.kwargs.distances=[1,4,16]" in overrides
    assert "++env.kwargs.queries_per_episode=2" in overrides
    assert not any("num_tasks" in o or "queries_per_episode=4" in o for o in overrides)
    cfg = load_config(overrides)
    assert cfg.env.id == "LongDependency-v0" and cfg.train.episodes == 4
    assert {k: cfg.env.kwargs[k] for k in ("distances", "queries_per_episode", "episode_length")} == \
        {"distances": [1, 4, 16], "queries_per_episode": 2, "episode_length": 64}
    shift = load_config(resolve_overrides(smoke, []))  # the config's default env: ContinualShift-v0
    assert shift.env.kwargs.num_tasks == 2 and shift.model.dim == 32


def test_command_line_is_split():
    cli = parse_command_line(["env=NeedleRecall-v0", "sweep=smoke", "num_samples=3", "sweep.mode=min",
                              "seed=2"])
    assert (cli.sweep, cli.num_samples) == ("smoke", 3)
    assert cli.sweep_overrides == ["sweep.mode=min"]
    assert cli.run_overrides == ["env=NeedleRecall-v0", "seed=2"]
    assert parse_command_line(["resume=runs/sweeps/x/1"]).resume == "runs/sweeps/x/1"
    for argv, message in [(["resume=x", "seed=1"], "resume= continues a sweep"), (["num_samples=0"], ">= 1"),
                          (["num_samples=two"], "num_samples='two'"), (["smoke"], "not key=value")]:
        with pytest.raises(ConfigError, match=message):
            parse_command_line(argv)


def test_command_line_value_fixes_a_swept_key(smoke):
    plan = load_sweep("smoke")
    assert pin_swept_keys(plan, ["memory.slots=16", "seed=1"]) == ["memory.slots"]
    assert list(plan.search_space) == ["memory.pressure_weight"]
    with pytest.raises(ConfigError, match="search space is empty"):
        pin_swept_keys(plan, ["memory.pressure_weight=0.1"])


# ---------------------------------------------------------------- metrics
def test_default_metric_by_env():
    assert default_metric(EnvFacts("ContinualShift-v0", 4, 1024)) == "cl/ACC"
    assert default_metric(EnvFacts("NeedleRecall-v0", 1, 300)) == "eval/accuracy"
    far = int(distance_buckets(1000)[-1])
    assert default_metric(EnvFacts("LongDependency-Easy-v0", 1, 1000)) == f"recall/accuracy_d{far}" == \
        "recall/accuracy_d1024"


def test_metrics_the_env_does_not_report_are_rejected():
    shift = EnvFacts("ContinualShift-v0", 3, 1024)
    assert check_metric("cl/BWT", shift) == "cl/BWT" and check_metric("eval/task_2/accuracy", shift)
    assert "recall/accuracy_d1024" in reported_metrics(shift) and "recall/accuracy_d2048" not in \
        reported_metrics(shift)
    assert not any("delay" in tag for tag in reported_metrics(shift))
    with pytest.raises(ConfigError, match=r"sweep.metric='cl/nope': ContinualShift-v0 does not report it; "
                                          r"choose one of: eval/accuracy, .*cl/ACC"):
        check_metric("cl/nope", shift)
    single = EnvFacts("LongDependency-v0", 1, 64)
    with pytest.raises(ConfigError, match="does not report"):
        check_metric("cl/BWT", single)
    assert check_metric("recall/accuracy_d64", single) and check_metric("recall/accuracy_delay3",
                                                                        EnvFacts("NeedleRecall-v0", 1, 64))


# ---------------------------------------------------------------- resume= and Ray (nothing starts)
def _saved_sweep(folder, pickle_bytes: bytes, plan_text: bytes | None = None):
    import yaml

    from agents.tune import prepare

    plan, base, _ = prepare(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={folder / 'runs'}"])
    folder.mkdir(exist_ok=True)
    (folder / "tuner.pkl").write_bytes(pickle_bytes)
    (folder / "sweep.yaml").write_bytes(plan_text or yaml.safe_dump({"plan": plan.to_dict(), "base": base}).encode())
    return folder


@pytest.mark.parametrize("pickle_bytes, plan_text, message", [
    (b"garbage not a pickle", None, r"tuner.pkl' is damaged \(UnpicklingError: .*\); start the sweep afresh"),
    (b"", None, r"tuner.pkl' is damaged \(EOFError: .*\); start the sweep afresh"),
    (b"x", b"\xff\xfe\x00garbage\x80", r"sweep.yaml' is damaged; start the sweep afresh"),
])
def test_resume_of_a_damaged_sweep_folder_is_one_line(tmp_path, monkeypatch, capsys, pickle_bytes, plan_text,
                                                      message):
    from agents import tune as agents_tune

    folder = _saved_sweep(tmp_path / "sweep", pickle_bytes, plan_text)
    monkeypatch.setattr(agents_tune, "start_ray", lambda sweep_dir: False)  # Tune fails before it needs Ray
    assert agents_tune.main([f"resume={folder}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and re.search(message, err), err


def test_a_malformed_ray_address_is_one_line(tmp_path, monkeypatch):
    import ray

    from agents.tune import start_ray

    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")  # ray.init rejects it before it starts or connects anything
    with pytest.raises(ConfigError, match=r"RAY_ADDRESS='nonsense': not a Ray address \(.*\); set it to "
                                          "host:port") as err:
        start_ray(tmp_path)
    assert "\n" not in str(err.value) and not ray.is_initialized()


def test_an_unreachable_ray_address_is_one_line_at_once(tmp_path, monkeypatch):
    """ray.init retried a host:port where nothing listens for over 3 minutes; the address is now tried first."""
    import socket

    import ray

    from agents.tune import start_ray

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(ConfigError, match=rf"RAY_ADDRESS='{re.escape(address)}': nothing answers at "
                                              rf"127.0.0.1:{port} \(.*\); start the cluster's head") as err:
            start_ray(tmp_path)
        assert "\n" not in str(err.value) and not ray.is_initialized()


def test_a_listening_ray_address_passes_the_reachability_check():
    import socket

    from agents.tune_preflight import check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
    for left_to_ray in (None, "", "auto", "local", "nonsense", "http://127.0.0.1:1"):
        check_reachable(left_to_ray)


def test_the_grace_period_is_checked_only_for_asha_which_uses_it(tmp_path):
    """The README turns early stopping off with sweep.scheduler.type=fifo; short trials then failed on ASHA's
    grace period all the same."""
    from agents.tune import prepare

    short = ["env=LongDependency-v0", "sweep=memory", "train.episodes=1", f"runs_root={tmp_path}"]
    with pytest.raises(ConfigError, match=r"sweep.scheduler.grace_period=10 must be <= the episodes of a trial \(1\)"):
        prepare(short)
    plan, _, _ = prepare([*short, "sweep.scheduler.type=fifo"])
    assert plan.scheduler["type"] == "fifo" and plan.scheduler["max_t"] == 1


def test_search_space_values_on_the_command_line_read_as_any_override_does():
    """YAML 1.1 read grid:[010,012] as [8, 10] and choice:[1:0,3:0+4:1] as [60, ...] (refused as key_lags='60')."""
    lags = load_sweep("smoke", ["sweep.search_space.memory.key_lags=choice:[1:0,3:0+4:1]"])
    assert lags.search_space["memory.key_lags"] == {"choice": ["1:0", "3:0+4:1"]}
    padded = load_sweep("smoke", ["sweep.search_space.env.kwargs.shift=grid:[010,012]"])
    assert padded.search_space["env.kwargs.shift"] == {"grid": ["010", "012"]}
