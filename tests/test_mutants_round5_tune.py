"""Mutation-testing kills for `python -m agents.tune` before Ray starts: its command line (agents/tune_command_line.py),
the overrides of every trial (agents/tune_overrides.py), `prepare` (agents/tune_prepare.py) and a resume's lock
folder and failed restore (agents/tune_restore.py). No Ray, no training."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from agents.config import ConfigError
from agents.tune_command_line import parse_command_line
from agents.tune_overrides import override_value, pin_swept_keys, resolve_overrides
from agents.tune_prepare import check_num_samples, prepare
from agents.tune_restore import check_ray_lock_folder, ray_lock_folder, stop_on_failed_restore
from agents.tune_space import SweepPlan, load_sweep

SMOKE = ["env=ContinualShift-v0", "sweep=smoke"]
TUNE_CONTROLLER = logging.getLogger("ray.tune.execution.tune_controller")


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize("argv, extra", [
    (["resume=runs/sweeps/smoke/1", "num_samples=2"], "num_samples=2"),  # was continued, num_samples dropped
    (["resume=runs/sweeps/smoke/1", "seed=1", "sweep.mode=min"], "sweep.mode=min"),
])
def test_resume_with_any_other_argument_is_refused_naming_it(argv, extra):
    with pytest.raises(ConfigError) as refused:
        parse_command_line(argv)
    assert str(refused.value) == ("resume= continues a sweep with its own saved sweep.yaml; drop the other arguments "
                                  f"({extra})")


def test_name_is_a_run_override_not_a_sweep_field_to_prefix():
    """sweep.name is no field a command line sets (the sweep= key names the file): `name=x` is a run key, unknown."""
    assert parse_command_line(["name=x"]).run_overrides == ["name=x"]
    with pytest.raises(ConfigError, match=r"^unknown config key 'name'"):
        prepare([*SMOKE, "name=x"])


# ---------------------------------------------------------------- the overrides of every trial
def test_the_env_the_sweep_file_chooses_picks_its_env_overrides():
    overrides = resolve_overrides(load_sweep("smoke", ["sweep.overrides=[env=LongDependency-v0]"]), [])
    assert "++env.kwargs.distances=[1,4,16]" in overrides and not any("num_tasks" in o for o in overrides)


def test_env_overrides_of_the_env_id_replace_its_family_s():
    """`by id, else by family`: the id's list alone, not the family's too."""
    plan = load_sweep("smoke", ["sweep.env_overrides.ContinualShift-Gradual-v0=[train.lr=0.5]"])
    overrides = resolve_overrides(plan, ["env=ContinualShift-Gradual-v0"])
    assert "train.lr=0.5" in overrides and not any("env.kwargs." in o for o in overrides)
    assert "++env.kwargs.num_tasks=2" in resolve_overrides(plan, ["env=ContinualShift-v0"])


def test_env_overrides_win_over_the_sweep_file_s_overrides():
    overrides = resolve_overrides(load_sweep("smoke", ["sweep.env_overrides.ContinualShift=[train.lanes=3]"]), [])
    assert "train.lanes=3" in overrides and "train.lanes=2" not in overrides


@pytest.mark.parametrize("override", ["+memory.slots=4", "++memory.slots=4"])
def test_a_swept_key_given_with_plus_signs_is_pinned(override):
    """The trials' swept value would otherwise replace the command line's."""
    plan = load_sweep("smoke")
    assert pin_swept_keys(plan, [override]) == ["memory.slots"] and "memory.slots" not in plan.search_space


@pytest.mark.parametrize("value", ["nan", "inf", "True", "NULL", "False", "a\\'b", "\\'"])
def test_a_text_hydra_would_read_as_another_value_is_quoted(value):
    """Written bare, 'nan' and 'inf' read back as floats, 'True' / 'NULL' as a bool / None; a backslash before a
    quote must be doubled (Hydra refused the line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_override(f"x={override_value(value)}").value() == value


# ---------------------------------------------------------------- prepare
def test_the_early_answer_leaves_a_resume_to_main(tmp_path, monkeypatch, capsys):
    """A resume= reads its saved sweep: the early answer prepares no new sweep for it (nothing kept for main)."""
    from agents import tune_prepare

    monkeypatch.setattr(tune_prepare, "_checked", {})
    monkeypatch.chdir(tmp_path)
    assert tune_prepare.early_answer([f"resume={tmp_path / 'sweep'}"]) is None
    assert tune_prepare._checked == {} and capsys.readouterr().err == ""


def test_the_prepared_plan_holds_the_env_overrides_applied(tmp_path):
    """What is saved as the sweep's plan: the full override list, no env_overrides left to apply again."""
    plan = prepare([*SMOKE, f"runs_root={tmp_path}"])[0]
    assert plan.env_overrides == {} and "++env.kwargs.num_tasks=2" in plan.overrides


def test_an_env_option_that_is_not_utf8_is_refused_before_ray(tmp_path):
    """Each trial's TensorBoard hparams take UTF-8 text only."""
    with pytest.raises(ConfigError, match=r"^env.kwargs.haystack_path='.*': not UTF-8 text"):
        prepare(["env=NeedleRecall-v0", "sweep=smoke", f"env.kwargs.haystack_path='{tmp_path}/h\udcff.txt'",
                 f"runs_root={tmp_path}"])


def test_a_baseline_s_swept_memory_reset_is_a_setting_the_trials_differ_in(tmp_path, capsys):
    prepare(["env=ContinualShift-v0", "agent=lstm", "sweep=smoke", "sweep.search_space.memory.reset=grid:[episode,"
             "never]", f"runs_root={tmp_path}"])
    assert capsys.readouterr().err.strip() == ("note: agent=lstm has no memory; memory.slots, memory.pressure_weight "
                                               "change nothing (the trials differ only in memory.reset)")


def test_a_swept_train_mode_decides_whether_the_baseline_decay_acts(tmp_path, capsys):
    prepare([*SMOKE, "agent=gru", "train.baseline_decay=0.9", "sweep.search_space.train.mode=grid:[supervised,"
             "reinforce]", f"runs_root={tmp_path}"])
    assert capsys.readouterr().err.strip() == ("note: agent=gru has no memory; memory.slots, memory.pressure_weight "
                                               "change nothing (the trials differ only in train.mode)")


def test_a_fifo_sweep_takes_any_grace_period(tmp_path):
    """ASHA's grace period is checked against the trial length; fifo, the refusal's own fix, uses none."""
    plan = prepare([*SMOKE, "sweep.scheduler.type=fifo", "sweep.scheduler.grace_period=9", f"runs_root={tmp_path}"])[0]
    assert plan.scheduler["max_t"] == 4


def test_a_relative_runs_root_gives_an_absolute_sweep_folder(tmp_path, monkeypatch):
    """Ray runs each trial in its own working folder: a relative sweep folder would name another place there."""
    monkeypatch.chdir(tmp_path)
    sweep_dir = prepare([*SMOKE, "runs_root=rel"])[2]
    assert sweep_dir.is_absolute() and sweep_dir.parent == tmp_path / "rel" / "sweeps" / "smoke"


def test_a_thread_count_of_one_is_offered_as_the_sweep_s(tmp_path):
    with pytest.raises(ConfigError) as refused:
        prepare([*SMOKE, "train.threads=1", "sweep.resources.threads=2", f"runs_root={tmp_path}"])
    assert str(refused.value).endswith("; set sweep.resources.threads=1 instead")


def test_a_lograndint_dimension_bounds_num_samples_by_its_values():
    space = {"memory.slots": {"lograndint": [4, 9]}}  # [4, 9): 5 values
    check_num_samples(SweepPlan("t", space, num_samples=5))
    with pytest.raises(ConfigError, match=r"^num_samples=6: its random dimensions draw at most 5 distinct settings "
                                          r"\(memory.slots: 5\)"):
        check_num_samples(SweepPlan("t", space, num_samples=6))


def test_a_choice_of_paths_reaches_the_trials_absolute_and_still_a_choice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("the quick brown fox jumps over the lazy dog " * 40)
    plan = prepare(["env=NeedleRecall-v0", "sweep=smoke", "sweep.search_space.env.kwargs.haystack_path=choice:[a.txt,"
                    "b.txt]", f"runs_root={tmp_path / 'runs'}"])[0]
    assert plan.search_space["env.kwargs.haystack_path"] == {"choice": [str(tmp_path / "a.txt"),
                                                                        str(tmp_path / "b.txt")]}


# ---------------------------------------------------------------- a resume's lock folder and failed restore
def test_ray_s_lock_folder_on_macos_ignores_tmpdir(monkeypatch):
    """Ray reads TMPDIR on Linux only; macOS sets it for every user (/var/folders/...), where Ray's locks are not."""
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/var/folders/xy/T")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert str(ray_lock_folder()) == "/tmp/_ray_lockfiles"


def test_a_lock_folder_without_search_permission_is_refused(monkeypatch, tmp_path):
    """Making a file in a folder takes write and search (x) permission: a folder of mode 766 refuses it too."""
    folder = tmp_path / "_ray_lockfiles"
    folder.mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs: (
        False if os.fspath(path) == os.fspath(folder) and mode & os.X_OK else real(path, mode, *args, **kwargs)))
    with pytest.raises(ConfigError, match=rf"^Ray's lock folder {folder} is not writable by this user"):
        check_ray_lock_folder()


def test_tune_s_other_log_lines_still_reach_its_log_during_a_restore(tmp_path):
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    TUNE_CONTROLLER.addHandler(handler)
    try:
        with stop_on_failed_restore(tmp_path):
            TUNE_CONTROLLER.error("Trial failed.")
    finally:
        TUNE_CONTROLLER.removeHandler(handler)
    assert seen == ["Trial failed."]


def test_a_failed_restore_names_the_first_line_of_its_cause_or_ray_s_log(tmp_path):
    with pytest.raises(ConfigError) as info, stop_on_failed_restore(tmp_path):
        try:
            raise ValueError("the saved state is damaged\nand a second line")
        except ValueError:
            TUNE_CONTROLLER.exception("Failed to restore the run state.")
    assert "(ValueError: the saved state is damaged); nothing was run" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info, stop_on_failed_restore(tmp_path):
        TUNE_CONTROLLER.error("Failed to restore the run state.")  # logged without an exception
    assert "could not restore its state (see its ray.log); nothing was run" in str(info.value)
