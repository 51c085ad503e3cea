"""`python -m agents.tune` arguments and sweep fields, adversarially: each bad one is one ConfigError line before Ray
starts (YAML's .nan / .inf and true, a repeated argument, a truncated randint bound, a swept env or agent), and a
refusal never escapes as another exception. No Ray, no training."""

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.config import ConfigError
from agents.tune import prepare
from agents.tune_command_line import parse_command_line
from agents.tune_space import load_sweep
from tests.examples import examples

SMOKE = ["env=ContinualShift-v0", "sweep=smoke"]


@pytest.mark.parametrize("argv, message", [
    (["sweep=smoke", "sweep=memory"], "sweep= is given 2 times ('smoke', 'memory'); give it once"),  # memory ran
    (["num_samples=2", "num_samples=3"], "num_samples= is given 2 times"),
    (["resume=a", "resume=b"], "resume= is given 2 times"),
    # an audit, 2026-12-01: the last one won silently
    (["sweep.search_space.memory.slots=grid:[4]", "sweep.search_space.memory.slots=grid:[8]"],
     "sweep.search_space.memory.slots= is given 2 times ('grid:[4]', 'grid:[8]'); give it once"),
    (["train.lanes=2", "+train.lanes=4"], "train.lanes= is given 2 times"),
])
def test_a_repeated_argument_is_refused(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_command_line(argv)


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_resume_is_refused(value):
    """Was "resume='<the working folder>' is not a sweep folder": a folder the user never named."""
    with pytest.raises(ConfigError, match=r"^resume= is empty; point it at a sweep folder \(runs/sweeps/"):
        parse_command_line([f"resume={value}"])


@pytest.mark.parametrize("argv", [["sweep=smoke", "sweep"], ["num_samples=2", "num_samples"], ["resume", "resume=a"]])
def test_a_key_given_with_and_without_a_value_is_one_line(argv):  # the repeat check split the bare one: IndexError
    with pytest.raises(ConfigError, match=r"is not key=value; usage: python -m agents.tune"):
        parse_command_line(argv)


@pytest.mark.parametrize("edit, message", [
    # YAML's .nan / .inf are floats: nan passed `<= 0` and every local-CPU check, inf went to Ray
    ("sweep.resources.cpus=.nan", "sweep.resources.cpus=nan: must be a number > 0"),
    ("sweep.resources.cpus=.inf", "sweep.resources.cpus=inf: must be a number > 0"),
    ("sweep.resources.gpus=.nan", "sweep.resources.gpus=nan: must be a number >= 0"),
    ("sweep.resources.gpus=-1", "sweep.resources.gpus=-1: must be a number >= 0"),
    ("sweep.resources.gpus=true", "sweep.resources.gpus=True: must be a number >= 0"),
    ("sweep.scheduler.reduction_factor=.nan", "sweep.scheduler.reduction_factor=nan: must be a number > 1"),
    ("sweep.scheduler.reduction_factor=.inf", "sweep.scheduler.reduction_factor=inf: must be a number > 1"),
    # YAML's true is an int to Python: max_concurrent=True ran one trial at a time
    ("sweep.max_concurrent=true", "sweep.max_concurrent=True: must be an integer >= 0"),
    ("sweep.max_failures=true", "sweep.max_failures=True: must be an integer >= -1"),
    ("sweep.search_space=null", "sweep 'smoke' has an empty search space"),  # was a TypeError traceback
    # randint:[1.5, 4] drew from [1, 4); true was 1
    ("sweep.search_space.memory.slots=randint:[1.5,4]", "randint=[1.5, 4]: low and high must be finite integers"),
    ("sweep.search_space.memory.slots=randint:[true,4]", "randint=[True, 4]: low and high must be finite integers"),
    ("sweep.search_space.train.lr=uniform:[true,4]", "uniform=[True, 4]: low and high must be finite numbers"),
    ("sweep.search_space.train.lr=loguniform:[1e-4,.inf]", "low and high must be finite numbers"),
])
def test_bad_sweep_fields_are_one_line(edit, message):
    with pytest.raises(ConfigError) as caught:
        load_sweep("smoke", [edit])
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("argv, message", [
    # each trial kept ContinualShift's options under the Gradual id (abrupt, no revisit), or MemNet's lr and memory
    # settings under agent.name=transformer
    (["sweep.search_space.env.id=grid:[ContinualShift-Gradual-v0]"], "sweep.search_space.env.id: the env and agent "
     "cannot be swept"),
    (["sweep.search_space.agent.name=grid:[memnet,transformer]"], "sweep.search_space.agent.name: the env and agent"),
    (["sweep.search_space.run_dir=grid:[a]"], "sweep.search_space.run_dir: cannot be swept"),
    (["sweep.search_space.resume=grid:[a]"], "sweep.search_space.resume: cannot be swept"),
    (["sweep.search_space.runs_root=grid:[a,b]"], "sweep.search_space.runs_root: cannot be swept"),  # trials ran twice
    # each valid alone, the trial of 24 and 8 not (24 // 8 odd): it failed inside Ray, max_failures times
    (["sweep.search_space.model.dim=grid:[32,24]", "sweep.search_space.model.heads=grid:[2,8]"],
     "model.dim=24 model.heads=8 is no valid run (model.heads=8: dim // heads = 3 must be even (rotary positions)); "
     "choose values that are valid together"),
    (["sweep.search_space.train.progress=grid:[true,false]"], "sweep.search_space.train.progress: cannot be swept, "
     "every trial runs without its progress bar (train.progress=false); drop it"),  # the same trial twice
    (["env.id=ContinualShift-Gradual-v0"], "env.id=ContinualShift-Gradual-v0: choose the env with env=<name>"),
    (["hydra.run.dir=x"], "hydra.run.dir=x: Hydra's own settings (hydra.*) are not used here"),
    (["seed=1,2"], "seed=1,2: one value per key (a comma list, range() or choice() is a sweep: python -m agents.tune "
     "sweep.search_space.<key>=grid:[a,b])"),
])
def test_bad_trial_settings_are_one_line_before_ray(argv, message):
    with pytest.raises(ConfigError) as caught:
        prepare(SMOKE + argv)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


FIELDS = ["sweep.resources.cpus", "sweep.resources.gpus", "sweep.resources.threads", "sweep.scheduler.reduction_factor",
          "sweep.scheduler.grace_period", "sweep.scheduler.max_t", "sweep.scheduler.type", "sweep.max_concurrent",
          "sweep.max_failures", "sweep.mode", "sweep.num_samples", "sweep.overrides", "sweep.search_space",
          "sweep.scheduler", "sweep.search_space.memory.slots", "sweep.search_space.train.lr"]
SPELLINGS = ["null", "~", ".nan", ".inf", "-.inf", "true", "yes", "0", "-1", "1.5", "1e3", "0x10", "[]", "[1]", "{}",
             "{a: 1}", "''", "grid:[]", "grid:[1,2]", "grid:1,2", "randint:[4,1]", "uniform:[0,1]", "loguniform:[0,1]",
             "choice:[a]", "none", "[seed=1]", "é", "'", "[", "{"]


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(SPELLINGS) | st.text(max_size=5)), max_size=3))
@example([("sweep.search_space", ".nan"), ("sweep.search_space.memory.slots", "\n")])  # the argument was echoed raw
@example([("sweep.search_space.memory.slots", "none\n")])
def test_any_sweep_edit_is_accepted_or_one_config_error_line(edits):
    try:
        load_sweep("smoke", [f"{field}={value}" for field, value in edits])
    except ConfigError as exc:
        assert str(exc).strip() and "\n" not in str(exc), str(exc)


def test_a_metric_better_lower_under_mode_max_is_a_note(tmp_path, capsys):
    """The sweep files' mode is max: sweep.metric=train/loss alone ranked the largest loss best, unsaid."""
    plan = prepare([*SMOKE, f"runs_root={tmp_path}", "sweep.metric=train/loss"])[0]
    assert (plan.metric, plan.mode) == ("train/loss", "max")
    assert capsys.readouterr().err.strip() == ("note: sweep.metric=train/loss is better lower, and sweep.mode=max "
                                               "ranks its largest value best; add sweep.mode=min")
    prepare([*SMOKE, f"runs_root={tmp_path}", "sweep.metric=cl/forgetting", "sweep.mode=min"])
    prepare([*SMOKE, f"runs_root={tmp_path}", "sweep.metric=perf/tokens_per_s"])
    assert "note" not in capsys.readouterr().err


def test_a_sweep_over_the_run_length_checks_every_trials_length_and_metrics(tmp_path, capsys):
    """ASHA stops a trial at max_t: taken from the base config (4 episodes here) it cut the 12-episode trials short,
    and a bucket only those trials reach was refused."""
    argv = [*SMOKE, f"runs_root={tmp_path}", "sweep.search_space.train.episodes=grid:[4,12]"]
    plan, _, _ = prepare(argv)
    assert plan.scheduler["max_t"] == 12 and plan.metric == "cl/ACC"
    assert "note" not in capsys.readouterr().err  # every trial reports cl/ACC
    far = prepare([*argv, "sweep.metric=recall/accuracy_d1024"])[0]  # reached across episodes by the long trials
    assert far.metric == "recall/accuracy_d1024"
    assert capsys.readouterr().err.strip() == ("note: sweep.metric=recall/accuracy_d1024: trials with "
                                               "train.episodes=4 do not report it (NaN: they cannot be the best "
                                               "trial)")
    with pytest.raises(ConfigError, match=r"sweep.metric='recall/accuracy_d1024': ContinualShift-v0 does not report"):
        prepare([*SMOKE, f"runs_root={tmp_path}", "sweep.metric=recall/accuracy_d1024"])


def test_resume_expands_the_home_folder(tmp_path, monkeypatch):
    """A quoted resume='~/runs/sweeps/...' (the shell leaves it alone) was read as a folder named ~ in the working
    folder: "resume='<cwd>/~/runs/...' is not a sweep folder", where agents.run's resume= expands it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_command_line(["resume=~/runs/sweeps/smoke/1"]).resume == str(tmp_path / "runs/sweeps/smoke/1")


@pytest.mark.parametrize("argv, message", [
    # the smoke sweep with its one random key pinned or dropped: 2 x 2 trials, each pair the same trial
    (["memory.pressure_weight=0.01"], "num_samples=2: its search space has no random dimension (grid only): one "
     "setting per grid point, and every trial runs with the same seed, so some trials would repeat another exactly; "
     "give num_samples=1 (to repeat each setting with other seeds, sweep the seed: sweep.search_space.seed=grid:"
     "[0,1,2])"),
    (["sweep.search_space.memory.pressure_weight=none", "sweep.search_space.seed=grid:[0,1]"], "num_samples=2: "),
    (["sweep.search_space.memory.pressure_weight=choice:[0.01,0.02,0.01]", "sweep.search_space.memory.top_k="
      "randint:[1,3]", "num_samples=5"], "num_samples=5: its random dimensions draw at most 4 distinct settings "
     "(memory.pressure_weight: 2, memory.top_k: 2) per grid point, and every trial runs with the same seed, so some "
     "trials would repeat another exactly; give num_samples=4 or less "),
])
def test_more_samples_than_the_random_dimensions_can_draw_are_refused(argv, message):
    """num_samples had no bound: num_samples=2 of an all-grid space ran every trial twice (same config, same seed)."""
    with pytest.raises(ConfigError) as refused:
        prepare([*SMOKE, *argv])
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("argv, samples", [
    (["num_samples=1", "memory.pressure_weight=0.01"], 1),
    (["sweep.search_space.memory.pressure_weight=choice:[0.01,0.02]", "sweep.search_space.memory.top_k="
      "randint:[1,3]", "num_samples=4"], 4),  # as many as there are settings to draw
    (["num_samples=1000000000000000000000"], 10**21),  # a continuous dimension: every draw differs
])
def test_samples_up_to_what_the_random_dimensions_can_draw_are_taken(argv, samples):
    assert prepare([*SMOKE, *argv])[0].num_samples == samples
