"""Mutation-testing kills for the command-line helpers around runs and sweeps: the out-of-memory line's sizes, the
preflight checks shared by agents.tune and agents.benchmark, and agents.tune's trial count and closing lines."""

from types import SimpleNamespace

import pytest

from agents.config import ConfigError, load_config


def test_the_out_of_memory_line_names_the_store_sizes_only_where_there_is_a_store():
    """memory.store_capacity and the cache tiers exist only with memory.store=true: naming them as sizes to lower
    for a run without a store pointed at keys that change nothing."""
    from agents.allocation import does_not_fit

    without = does_not_fit(load_config(["agent=memnet", "memory.store=false"]), MemoryError())
    assert "memory.slots=64; lower them" in without and "store_capacity" not in without and "cache_" not in without
    with_store = does_not_fit(load_config(["agent=memnet", "memory.store=true"]), MemoryError())
    assert "memory.store_capacity=" in with_store and "memory.cache_cold=" in with_store


def test_the_preflight_env_check_builds_a_presets_env_with_its_options():
    """A preset id (ContinualShift-Gradual-v0) is its base env with the preset's options; the check builds that
    env, not the base env with the defaults, so a swept option is checked against what the runs will make."""
    from agents.preflight import env_source

    assert env_source("ContinualShift-Gradual-v0", {}).shift == "gradual"
    assert env_source("ContinualShift-Gradual-v0", {"shift_window": 2}).shift_window == 2
    with pytest.raises(ConfigError, match="shift_window must be at most episodes_per_task"):
        env_source("ContinualShift-Gradual-v0", {"episodes_per_task": 1, "shift_window": 2})


def test_the_preflight_model_check_keeps_a_bugs_traceback(monkeypatch):
    """Only an allocation failure becomes the does-not-fit line; any other error while building the model is a bug
    and keeps its traceback (it read as "does not fit in memory; lower them")."""
    # agents.trainer first binds the real build_agent: model_fits imports the trainer, which, imported under the
    # patch, kept `broken` as its build_agent for every later test of the process
    import agents.models
    import agents.trainer  # noqa: F401
    from agents.preflight import model_fits

    def broken(*args):
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(agents.models, "build_agent", broken)
    cfg = load_config(["agent=memnet", "device=cpu"])
    with pytest.raises(RuntimeError, match="a bug in the model"):
        model_fits(cfg, 64)

    def too_big(*args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2048 bytes")

    monkeypatch.setattr(agents.models, "build_agent", too_big)
    with pytest.raises(ConfigError, match="its model does not fit in memory"):
        model_fits(cfg, 64)


def test_a_sweep_plans_num_samples_times_every_combination_of_its_grids():
    """Tune runs each grid combination num_samples times (random keys drawn per trial): 2 x (3 x 2) = 12 trials,
    which `finished_trials` compares the saved trials with (a sum of the grids, 10, said a sweep had finished early)."""
    from agents.tune_saved import planned_trials

    space = {"memory.slots": {"grid": [4, 8, 16]}, "train.lr": {"grid": [1e-3, 1e-2]},
             "memory.pressure_weight": {"loguniform": [0.001, 0.1]}}
    assert planned_trials(SimpleNamespace(num_samples=2, search_space=space)) == 12


def test_an_interrupted_sweep_says_how_to_continue_it_even_with_a_best_trial_so_far(monkeypatch, tmp_path, capsys):
    """A sweep stopped with trials unfinished ends with the resume= line and the interrupted exit code, not with
    "best: ..." and 0 (its best so far is in results.json already)."""
    import agents.tune as agents_tune
    from agents.tune_results import UNFINISHED
    from agents.tune_signals import INTERRUPTED

    rows = [{"trial": "a", "status": "TERMINATED", "m": 0.5}, {"trial": "b", "status": UNFINISHED, "m": None}]
    monkeypatch.setattr(agents_tune, "result_rows", lambda *args: rows)
    monkeypatch.setattr(agents_tune, "write_results", lambda *args: rows[0])
    monkeypatch.setattr(agents_tune, "format_table", lambda *args: "the table")
    plan = SimpleNamespace(metric="m", search_space={}, mode="max", max_failures=0)
    assert agents_tune._report([], plan, {}, tmp_path) == INTERRUPTED
    out = capsys.readouterr().out
    assert f"sweep interrupted; continue it with: python -m agents.tune resume={tmp_path}" in out
    assert "best:" not in out


def test_counts_read_as_english_for_none_one_and_many():
    from agents.cli_args import counted

    assert [counted(n, "run") for n in (0, 1, 2, 1500)] == ["0 runs", "1 run", "2 runs", "1,500 runs"]


def test_a_value_given_twice_is_refused_but_1_and_true_are_different_values():
    from agents.cli_args import check_values_once

    check_values_once("env.kwargs.delay", [1, True, 1.5])  # 1 == True in Python, not here
    with pytest.raises(ConfigError, match=r"^seeds=: 1 is given twice; give each value once$"):
        check_values_once("seeds=", [1, 2, 1])


def test_a_file_name_of_exactly_255_bytes_fits_and_a_longer_one_does_not():
    from agents.cli_args import unusable_path

    assert unusable_path("runs/" + "a" * 255) is None
    assert unusable_path("runs/" + "a" * 256) == "a name in it is 256 bytes, over the 255 a file name may have"


def test_a_text_of_exactly_the_kept_length_is_shown_whole():
    from agents.cli_args import shortened

    assert shortened("x" * 60) == "x" * 60
    assert shortened("x" * 61) == "x" * 60 + "..."


def test_an_overrides_key_drops_the_add_and_delete_marks():
    from agents.cli_args import override_key

    assert [override_key(o) for o in ("+env.kwargs.delay=3", "~memory.slots", "seed=a=b")] == [
        "env.kwargs.delay", "memory.slots", "seed"]
