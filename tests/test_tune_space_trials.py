"""Sweep plans without Ray: trial configs, override lists, the command line and metric names."""

from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf

from agents.cl_metrics import distance_buckets
from agents.config import ConfigError, load_config
from agents.run import main as run_main
from agents.tb_tags import MEMORY_TAGS, memory_tags
from agents.tune_command_line import parse_command_line
from agents.tune_metrics import (
    ENV_RANGE_VALUES,
    EnvFacts,
    check_metric,
    default_metric,
    env_facts,
    missing_in,
    reported_metrics,
    sweep_corners,
    sweep_facts,
)
from agents.tune_overrides import merge_overrides, override_value, pin_swept_keys, resolve_overrides, trial_overrides
from agents.tune_space import load_sweep, trial_config
from agents.tune_trial import trial_dirname


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


def test_trial_folder_names_hold_no_path_separator():
    """Tune refuses a '/' in a trial's folder name: a sweep of env.kwargs.haystack_path (its values made absolute)
    crashed with "Trial dirname must not contain '/'. Got f9f39_00000_haystack_path=/tmp/h3/hay/a.txt_slots=4"."""
    from types import SimpleNamespace

    config = {"env.kwargs.haystack_path": "/tmp/h3/hay/a.txt", "memory.slots": np.int64(4),
              "memory.pressure_weight": 0.018789, "env.kwargs.distances": [1, 4], "memory.decay": True}
    name = trial_dirname(SimpleNamespace(trial_id="f9f39_00000", config=config))
    assert name == "f9f39_00000_distances=1_4_haystack_path=a.txt_decay=True_pressure_weight=0.0188_slots=4"
    assert trial_dirname(SimpleNamespace(trial_id="f9f39_00001", config={"env.kwargs.path": "/"})) == \
        "f9f39_00001_path=_"


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
    assert default_metric([EnvFacts("ContinualShift-v0", 4, 1024)]) == "cl/ACC"
    assert default_metric([EnvFacts("NeedleRecall-v0", 1, 300)]) == "eval/accuracy"
    far = int(distance_buckets(1000)[-1])
    assert default_metric([EnvFacts("LongDependency-Easy-v0", 1, 1000)]) == f"recall/accuracy_d{far}" == \
        "recall/accuracy_d1024"
    # a sweep over distances: the farthest bucket that every trial reports
    assert default_metric([EnvFacts("LongDependency-v0", 1, 1000), EnvFacts("LongDependency-v0", 1, 60)]) == \
        "recall/accuracy_d64"
    # where an evaluation's distances are known, the farthest bucket they fill
    assert default_metric([EnvFacts("LongDependency-v0", 1, 4096, 2048), EnvFacts("LongDependency-v0", 1, 4096,
                                                                                   1024)]) == "recall/accuracy_d1024"


def test_the_long_dependency_default_metric_is_the_farthest_bucket_its_evaluations_fill():
    """Cross-episode queries reach up to (gap + 1) x episode_length = 2560 steps, so the buckets run to 4096, but
    only ~0.7% of an evaluation's scored steps lie beyond 2048: the default metric was recall/accuracy_d4096, a
    handful of queries per evaluation. Now it is the farthest bucket holding >= 2% of them."""
    crossing, _ = env_facts(load_config(["env=LongDependency-v0", "env.kwargs.cross_episode_queries=4"]))
    assert (crossing.max_distance, crossing.far_edge) == (4096, 2048)
    assert default_metric([crossing]) == "recall/accuracy_d2048"
    # in-episode queries only: every distance is drawn as often, the largest (1024) in 1 of 11
    plain, _ = env_facts(load_config(["env=LongDependency-v0"]))
    assert (plain.max_distance, plain.far_edge) == (1024, 1024)
    # one distance beyond the rest: drawn in 1 of 21 queries its bucket counts, in 1 of 101 (under 2%) it does not
    few, _ = env_facts(load_config(["env=LongDependency-v0", f"env.kwargs.distances={list(range(1, 21)) + [200]}"]))
    assert (few.max_distance, few.far_edge) == (256, 256)
    many, _ = env_facts(load_config(["env=LongDependency-v0", f"env.kwargs.distances={list(range(1, 101)) + [200]}"]))
    assert (many.max_distance, many.far_edge) == (256, 128)


def test_metrics_the_env_does_not_report_are_rejected():
    shift = EnvFacts("ContinualShift-v0", 3, 1024)
    assert check_metric("cl/BWT", [shift]) == "cl/BWT" and check_metric("eval/task_2/accuracy", [shift])
    assert "recall/accuracy_d1024" in reported_metrics(shift) and "recall/accuracy_d2048" not in \
        reported_metrics(shift)
    assert not any("delay" in tag for tag in reported_metrics(shift))
    with pytest.raises(ConfigError, match=r"sweep.metric='cl/nope': ContinualShift-v0 does not report it; "
                                          r"choose one of: eval/accuracy, .*cl/ACC"):
        check_metric("cl/nope", [shift])
    single = EnvFacts("LongDependency-v0", 1, 64)
    with pytest.raises(ConfigError, match="does not report"):
        check_metric("cl/BWT", [single])
    assert check_metric("recall/accuracy_d64", [single])
    assert check_metric("recall/accuracy_delay3", [EnvFacts("NeedleRecall-v0", 1, 64, None, (3,))])


def test_training_and_memory_tags_may_be_the_sweeps_metric(monkeypatch):
    """Tune got only the evaluation's tags, so `sweep.metric=perf/tokens_per_s` or `memory/store_hit_rate` (the
    TensorBoard tags DESIGN section 8 names as reported to Tune) was refused. Now every trial reports train/* and
    perf/*, and memory/<name> where its MemNet has the part that measures it."""
    from agents import tune_metrics

    memnet = EnvFacts("ContinualShift-v0", 3, 1024, memory=memory_tags("memnet", 0, True))
    assert check_metric("perf/tokens_per_s", [memnet]) and check_metric("train/loss", [memnet])
    assert check_metric("memory/store_hit_rate", [memnet])
    with pytest.raises(ConfigError, match=r"^sweep.metric='memory/write_rate': no trial's agent has the memory part "
                                          r"that measures it; choose one of: eval/accuracy, .*memory/store_entries$"):
        check_metric("memory/write_rate", [memnet])  # no slot bank
    with pytest.raises(ConfigError, match=r"memory/store_hit': ContinualShift-v0 does not report it"):
        check_metric("memory/store_hit", [memnet])  # a misspelt name: not "no trial's agent has the memory part"
    # perf/act_ms: only trials that act step by step make acting calls (chunk acting, the default, makes none)
    with pytest.raises(ConfigError, match=r"^sweep.metric='perf/act_ms': no trial acts step by step \(train.acting="
                                          r"step, or auto with model.dropout > 0 under supervised training\)"):
        check_metric("perf/act_ms", [memnet])
    assert check_metric("perf/act_ms", [replace(memnet, steps=True)])
    transformer = EnvFacts("ContinualShift-v0", 3, 1024, memory=memory_tags("transformer", 64, True))
    assert transformer.memory == () and check_metric("train/accuracy", [transformer])
    with pytest.raises(ConfigError, match="no trial's agent has the memory part that measures it; .*update_ms$"):
        check_metric("memory/store_hit_rate", [transformer])
    # a sweep over the slot count: its slot-less trials are named, and the env is measured once for all of them
    measured = []
    real = tune_metrics.env_facts
    monkeypatch.setattr(tune_metrics, "env_facts", lambda cfg: measured.append(cfg) or real(cfg))
    base = load_config(["env=ContinualShift-v0", "env.kwargs.episodes_per_task=1"])
    corners, facts, _ = sweep_facts({"memory.slots": {"grid": [0, 16]}, "memory.decay": {"grid": [True, False]}},
                                    base)
    assert corners == [{"memory.slots": 0}, {"memory.slots": 16}] and len(measured) == 1
    assert "memory/write_rate" not in facts[0].memory and "memory/write_rate" in facts[1].memory
    assert check_metric("memory/write_rate", facts) and missing_in("memory/write_rate", corners, facts) == corners[:1]
    # whether a trial acts step by step comes from its own settings: auto acts by chunks unless it drops out
    corners, facts, _ = sweep_facts({"model.dropout": {"grid": [0.0, 0.1, 0.2]}}, base)
    assert corners == [{"model.dropout": 0.0}, {"model.dropout": 0.1}] and [f.steps for f in facts] == [False, True]
    assert missing_in("perf/act_ms", corners, facts) == corners[:1]


def test_memnet_logs_the_memory_tags_a_sweep_allows(tmp_path):
    """`agents.tb_tags.memory_tags` (what a sweep may optimise and a trial reports) names what MemNet logs."""
    from agents.tb_logger import read_scalars

    run_dir = tmp_path / "run"
    assert run_main(["env=ContinualShift-v0", "train.lanes=2", "train.episodes=2", "env.kwargs.trials_per_episode=8",
                     "train.progress=false", "train.threads=1", f"run_dir={run_dir}"]) == 0
    logged = {tag for tag in read_scalars(run_dir) if tag.startswith("memory/")}
    assert logged == set(memory_tags("memnet", 64, True)) == set(MEMORY_TAGS)


def test_a_distance_bucket_no_evaluation_fills_is_refused_before_ray():
    """LongDependency with distances [1, 4, 16] fills buckets 1, 4 and 16 and never 2 or 8: recall/accuracy_d2 was
    allowed (and offered in the refusal's list), and the sweep ran to its end to say no trial reported it."""
    facts, _ = env_facts(load_config(["env=LongDependency-v0", "env.kwargs.distances=[1,4,16]"]))
    assert facts.filled == (1, 4, 16) and check_metric("recall/accuracy_d4", [facts]) == "recall/accuracy_d4"
    with pytest.raises(ConfigError, match=r"sweep.metric='recall/accuracy_d2': LongDependency-v0 does not report it; "
                                          r"choose one of: .*cl/ACC, recall/accuracy_d1, recall/accuracy_d4, "
                                          r"recall/accuracy_d16, train/loss, "):
        check_metric("recall/accuracy_d2", [facts])
    wider, _ = env_facts(load_config(["env=LongDependency-v0", "env.kwargs.distances=[2,8]"]))  # swept: either's
    assert check_metric("recall/accuracy_d2", [facts, wider]) and missing_in(
        "recall/accuracy_d2", [{"env.kwargs.distances": [1, 4, 16]}, {"env.kwargs.distances": [2, 8]}],
        [facts, wider]) == [{"env.kwargs.distances": [1, 4, 16]}]


def test_a_delay_the_env_never_recalls_at_is_refused_before_ray():
    """NeedleRecall recalls every fact exactly `delay` episodes on: recall/accuracy_delay<any k> was allowed, and
    the sweep ran to its end to say "no trial reported recall/accuracy_delay3"."""
    base = ["env=NeedleRecall-v0", "env.kwargs.delay=2", "env.kwargs.haystack_length=32",
            "env.kwargs.facts_per_episode=2"]
    facts, _ = env_facts(load_config(base))
    assert facts.delays == (2,)
    assert check_metric("recall/accuracy_delay2", [facts]) == "recall/accuracy_delay2"
    with pytest.raises(ConfigError, match=r"sweep.metric='recall/accuracy_delay3': NeedleRecall-v0 does not report "
                                          r"it; choose one of: .*recall/accuracy_delay2, train/loss, "):
        check_metric("recall/accuracy_delay3", [facts])
    wider, _ = env_facts(load_config([*base[:1], "env.kwargs.delay=3", *base[2:]]))  # a sweep over delay: any one
    assert check_metric("recall/accuracy_delay3", [facts, wider]) and missing_in(
        "recall/accuracy_delay3", [{"env.kwargs.delay": 2}, {"env.kwargs.delay": 3}], [facts, wider]) == \
        [{"env.kwargs.delay": 2}]


def test_a_metric_some_trials_of_the_sweep_report_is_allowed_and_the_others_are_named():
    short, long = EnvFacts("ContinualShift-v0", 3, 1024), EnvFacts("ContinualShift-v0", 5, 4096)
    corners = [{"train.episodes": 10}, {"train.episodes": 40}]
    assert check_metric("recall/accuracy_d4096", [short, long]) == "recall/accuracy_d4096"
    assert check_metric("eval/task_4/accuracy", [short, long])
    assert missing_in("recall/accuracy_d4096", corners, [short, long]) == [{"train.episodes": 10}]
    assert missing_in("cl/ACC", corners, [short, long]) == []
    with pytest.raises(ConfigError, match=r"of: .*eval/task_4/accuracy.*recall/accuracy_d4096, train/loss, "):
        check_metric("recall/accuracy_d8192", [short, long])  # the list is every trial's tags, each once


def test_sweep_corners_take_the_values_that_set_a_trials_tags_and_length():
    space = {"train.episodes": {"randint": [10, 50]}, "env.kwargs.num_tasks": {"grid": [2, 3]},
             "memory.slots": {"grid": [4, 8, 16]}, "train.lr": {"loguniform": [1e-4, 1e-2]},
             "train.eval_repeats": {"uniform": [1, 3]}}
    corners = sweep_corners(space)
    # memory.slots: whether the slot bank is there (its memory/* tags), one value for 4, 8 and 16
    assert len(corners) == 8 and {tuple(sorted(c)) for c in corners} == {("env.kwargs.num_tasks", "memory.slots",
                                                                          "train.episodes", "train.eval_repeats")}
    assert {c["memory.slots"] for c in corners} == {4}
    assert [c["memory.slots"] for c in sweep_corners({"memory.slots": {"randint": [0, 9]}})] == [0, 8]
    assert {c["train.episodes"] for c in corners} == {10, 49}  # randint's high is exclusive
    assert {c["env.kwargs.num_tasks"] for c in corners} == {2, 3} and {c["train.eval_repeats"] for c in corners} == \
        {1, 3}
    assert sweep_corners({"memory.slots": {"grid": [4, 8]}}) == [{"memory.slots": 4}]
    assert sweep_corners({"train.lr": {"grid": [0.1, 0.01]}}) == [{}]
    # an env option's short integer range at each value: delay=randint:[1,4]'s trials with delay 2 report
    # recall/accuracy_delay2, which its ends' trials do not (the metric was refused); a long one at its ends
    assert sweep_corners({"env.kwargs.delay": {"randint": [1, 4]}}) == [{"env.kwargs.delay": d} for d in (1, 2, 3)]
    assert sweep_corners({"env.kwargs.delay": {"lograndint": [1, 1 + ENV_RANGE_VALUES]}}) == [
        {"env.kwargs.delay": d} for d in range(1, 1 + ENV_RANGE_VALUES)]
    assert sweep_corners({"env.kwargs.delay": {"randint": [1, 2 + ENV_RANGE_VALUES]}}) == [
        {"env.kwargs.delay": 1}, {"env.kwargs.delay": 1 + ENV_RANGE_VALUES}]
    # only the delay's values name metrics: another option's short range is measured at its ends (every value of
    # each multiplied the corners: 256 env builds for delay and facts_per_episode of 16 values each)
    corners = sweep_corners({"env.kwargs.delay": {"randint": [1, 17]}, "env.kwargs.facts_per_episode":
                             {"randint": [1, 17]}})
    assert len(corners) == 32 and {c["env.kwargs.facts_per_episode"] for c in corners} == {1, 16}
    # ContinualShift's num_tasks names eval/task_<j>/accuracy per value: at its ends, a sweep.metric of the last
    # task's said only num_tasks=1 did not report it, not 2 and 3
    assert sweep_corners({"env.kwargs.num_tasks": {"randint": [1, 5]}}) == [
        {"env.kwargs.num_tasks": n} for n in range(1, 5)]


def test_sweep_facts_follow_each_trials_run_length(smoke_base):
    """ContinualShift's distances reach back across episodes: a longer trial reports farther buckets, and ASHA's
    max_t must be the longest trial (it stops a trial there)."""
    corners, facts, episodes = sweep_facts({"train.episodes": {"grid": [4, 40]}}, smoke_base)
    assert corners == [{"train.episodes": 4}, {"train.episodes": 40}] and episodes == 40
    assert facts[0].max_distance < facts[1].max_distance and facts[0].num_tasks == facts[1].num_tasks == 2
    alone, base_episodes = env_facts(smoke_base)
    assert sweep_facts({}, smoke_base) == ([{}], [alone], base_episodes)


def test_a_trial_always_reports_the_sweeps_metric(monkeypatch, tmp_path):
    """Tune refuses a result without the sweep's metric (a trial too short to reach a distance bucket that the
    longer trials reach crashed the sweep): it is reported as NaN."""
    from types import SimpleNamespace

    from ray import tune

    from agents.tune_trial import TuneReporter

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append(metrics))
    reporter = TuneReporter(tmp_path / "checkpoints", logger=None, metric="recall/accuracy_d512")
    cfg = load_config(["env=ContinualShift-v0", "memory.slots=0"])
    trainer = SimpleNamespace(episode=1, total_episodes=2, train_steps=10, cfg=cfg)
    reporter(trainer, {"cl/ACC": 0.5, "recall/accuracy_d64": None})
    assert sent[0]["cl/ACC"] == 0.5 and np.isnan(sent[0]["recall/accuracy_d64"])
    assert np.isnan(sent[0]["recall/accuracy_d512"]) and sent[0]["episode"] == 1
    reporter(trainer, {"recall/accuracy_d512": 0.75, "train/loss": 1.5, "memory/store_entries": 12})
    assert sent[1]["recall/accuracy_d512"] == 0.75 and sent[1]["train/loss"] == 1.5  # reported values are kept
    # the first report already has every training tag, NaN until an episode trained (Ray's progress.csv keeps the
    # first result's columns), the memory tags of this MemNet's parts (a store, no slot bank) among them
    store = {"memory/store_hit_rate", "memory/memory_share_mean", "memory/store_entries"}
    assert {k for k in sent[0] if k.startswith(("train/", "perf/", "memory/"))} == {
        "train/loss", "train/accuracy", "perf/tokens_per_s", "perf/act_ms", "perf/chunk_forward_ms",
        "perf/update_ms"} | store
    assert all(np.isnan(sent[0][k]) for k in store) and sent[1]["memory/store_entries"] == 12


def test_a_trial_tune_stops_early_is_listed_in_the_hparams_tab(monkeypatch, tmp_path):
    """Tune stops a trial (ASHA) by a sys.exit in its tune.report: only trials that wrote their report recorded
    hparams, so the sweep's HParams tab lacked every trial ASHA stopped. Now it lists one with its latest points,
    its status unknown (it said success, as a finished trial) and its real start time (it was 0)."""
    from types import SimpleNamespace

    from ray import tune
    from tensorboard.plugins.hparams import api_pb2

    from agents.tb_logger import TBLogger, read_hparams
    from agents.tune_trial import TuneReporter
    from tests.test_tb_logger import hparams_tab
    from tests.test_tb_sessions import hparams_sessions

    def stop_trial(metrics, checkpoint=None):
        raise SystemExit(0)

    monkeypatch.setattr(tune, "report", stop_trial)
    cfg = load_config(["env=ContinualShift-v0", "memory.slots=8"])
    trainer = SimpleNamespace(episode=2, total_episodes=4, train_steps=98, cfg=cfg)
    with TBLogger(tmp_path / "trial") as logger, pytest.raises(SystemExit):
        logger.scalars({"cl/ACC": 0.25}, 98)
        TuneReporter(tmp_path / "trial" / "checkpoints", logger, metric="cl/ACC")(trainer, {"cl/ACC": 0.25})
    assert read_hparams(tmp_path / "trial")["memory.slots"] == 8
    columns, metrics = hparams_tab(tmp_path)
    assert columns["memory.slots"].domain_interval.max_value == 8 and metrics == ["cl/ACC"]
    session = hparams_sessions(tmp_path)["trial"]
    assert session.status == api_pb2.STATUS_UNKNOWN and session.start_time_secs > 0 and session.end_time_secs == 0
