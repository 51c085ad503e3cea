"""`python -m agents.tune` refuses, in one `error:` line and before Ray starts, what used to crash, hang or be
silently dropped: an uncreatable sweep folder, more CPUs or GPUs per trial than a local Ray has, device=cuda
trials that reserve no GPU, `=none` or env_overrides
naming nothing, a search-space list without brackets, and run_dir= / a run's resume= among the trial overrides."""

from __future__ import annotations

import os
import re
import sys

import pytest

from agents import tune as agents_tune
from agents import tune_preflight
from agents.config import ConfigError
from agents.tune_preflight import check_local_resources, local_cpus
from agents.tune_space import load_sweep, parse_space_value

SMOKE = ["env=ContinualShift-v0", "sweep=smoke"]


class RayWouldStart(Exception):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    """Stands in for start_ray: whatever reaches it would start (or, for a too-big trial, hang on) a real Ray."""
    def refuse(sweep_dir):
        raise RayWouldStart(str(sweep_dir))

    monkeypatch.setattr(agents_tune, "start_ray", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- 1: the sweep folder
def test_a_sweep_folder_that_cannot_be_created_is_one_line_before_ray(tmp_path, capsys, no_ray):
    """Was NotADirectoryError with a traceback (exit 1), raised after Ray had started."""
    (tmp_path / "file.sh").write_text("")
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path / 'file.sh' / 'x'}"]) == 2
    err = _error_line(capsys)
    assert re.fullmatch(rf"error: cannot create the sweep folder '{re.escape(str(tmp_path))}/file.sh/x/sweeps/smoke/"
                        r"[\d_-]+' \(Not a directory\); choose another runs_root=", err), err


# ---------------------------------------------------------------- 2: resources of a local Ray
def test_more_cpus_per_trial_than_a_local_ray_has_is_refused(tmp_path, capsys, no_ray):
    """Was a sweep that printed its header and waited forever (Ray's warning went to ray.log only)."""
    assert agents_tune.main([*SMOKE, "sweep.resources.cpus=4096", f"runs_root={tmp_path}"]) == 2
    err = _error_line(capsys)
    have = local_cpus()
    assert 1 <= have <= (os.cpu_count() or 1)  # Ray's count: os.cpu_count(), capped by a cgroup quota
    assert err == (f"error: sweep.resources.cpus=4096: no trial would ever start, this machine has {have:g} CPU(s) "
                   f"(as Ray counts them); set sweep.resources.cpus={have:g} or less, or run the sweep on a cluster "
                   "with bigger nodes (RAY_ADDRESS)")
    assert not (tmp_path / "sweeps").exists()  # refused before the sweep folder too


def test_the_cpu_count_is_ray_s_own_override_when_set(tmp_path, monkeypatch, no_ray):
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"CPU": 4096}')  # what ray.init would give its node
    assert local_cpus() == 4096
    with pytest.raises(RayWouldStart):  # not refused: a local Ray started now would have 4096 CPUs
        agents_tune.main([*SMOKE, "sweep.resources.cpus=4096", f"runs_root={tmp_path}"])


def test_a_cluster_is_not_refused_for_cpus_this_machine_lacks(tmp_path, monkeypatch, no_ray):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # its nodes may be bigger, or autoscale
    with pytest.raises(RayWouldStart):
        agents_tune.main([*SMOKE, "sweep.resources.cpus=4096", f"runs_root={tmp_path}"])


def test_more_gpus_per_trial_than_a_local_ray_has_is_refused(tmp_path, capsys, no_ray):
    """A trial reserving a GPU this machine lacks was never scheduled: the sweep waited forever."""
    assert tune_preflight.local_gpus() == 0  # the suite hides CUDA (tests/conftest.py)
    assert agents_tune.main([*SMOKE, "sweep.resources.gpus=0.5", f"runs_root={tmp_path}"]) == 2
    assert _error_line(capsys) == (
        "error: sweep.resources.gpus=0.5: no trial would ever start, this machine has 0 GPU(s) (as torch counts "
        "them); set sweep.resources.gpus=0 (the trials train on the CPU), or run the sweep on a cluster with GPUs "
        "(RAY_ADDRESS)")
    assert not (tmp_path / "sweeps").exists()


RESOURCES = {"cpus": 1, "gpus": 0, "threads": 1}


@pytest.mark.parametrize("base, space", [({"device": "cuda"}, {}),
                                         ({"device": "cpu"}, {"device": {"grid": ["cpu", "cuda"]}})])
def test_device_cuda_trials_that_reserve_no_gpu_are_refused_wherever_ray_runs(base, space, monkeypatch, no_ray):
    """Ray hides the GPUs from a trial that reserves none (CUDA_VISIBLE_DEVICES=""): every such trial failed on
    "device=cuda but no CUDA device is visible", on a GPU machine too. (Here, without CUDA, agents.tune refuses
    device=cuda earlier, as agents.run does: this is the check a GPU machine reaches.)"""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a cluster's GPUs are hidden from such trials too
    with pytest.raises(ConfigError) as caught:
        check_local_resources(RESOURCES, base, space)
    assert str(caught.value) == ("device=cuda: the trials reserve no GPU (sweep.resources.gpus=0), and Ray hides the "
                                 "GPUs from such trials; set sweep.resources.gpus=1 (0.5: two trials share one GPU)")
    check_local_resources(RESOURCES | {"gpus": 1}, base, space)  # a cluster may have them: not refused


@pytest.mark.parametrize("gpus, device, noted", [(0, "auto", True), (0, "cpu", False), (1, "auto", False),
                                                 (0.5, "cuda", False)])
def test_trials_that_would_train_on_the_cpu_beside_gpus_get_a_note(gpus, device, noted, monkeypatch, capsys, no_ray):
    monkeypatch.setattr(tune_preflight, "local_gpus", lambda: 2)  # a machine with 2 GPUs
    check_local_resources(RESOURCES | {"gpus": gpus}, {"device": device}, {})
    out = capsys.readouterr().out
    assert (out == "note: the trials reserve no GPU (sweep.resources.gpus=0), so Ray hides this machine's 2 GPU(s) "
                   "from them and device=auto trains them on the CPU; sweep.resources.gpus=1 (0.5: two trials share "
                   "one) gives each trial a GPU\n") if noted else out == ""


@pytest.mark.parametrize("resume", [False, True])
def test_a_ray_tune_that_does_not_import_is_one_line_before_ray(resume, tmp_path, capsys, monkeypatch, no_ray):
    """Under NumPy 1.26 Tune's import of pyarrow stopped ("pyarrow requires NumPy 2.0 or newer"), and Ray's own
    ImportError, which says to install ray[tune] whatever the cause, came as a traceback after Ray had started."""
    monkeypatch.setitem(sys.modules, "ray.tune", None)  # `import ray.tune` raises ImportError, as it did there
    argv = [f"resume={tmp_path / 'sweep'}"] if resume else [*SMOKE, f"runs_root={tmp_path}"]
    assert agents_tune.main(argv) == 2
    assert _error_line(capsys) == (
        "error: Ray Tune cannot be imported here (ModuleNotFoundError: import of ray.tune halted; None in "
        "sys.modules); install memstream as the README's set-up command does (pip install -e \".[dev]\"), which "
        "brings the versions it needs")
    assert list(tmp_path.iterdir()) == []  # no sweep folder


# ---------------------------------------------------------------- 3: edits that name nothing
def test_dropping_a_key_that_is_not_swept_is_refused_with_the_keys():
    """`memory.slot=none` (a typo) was accepted and left memory.slots in the sweep."""
    with pytest.raises(ConfigError) as err:
        load_sweep("smoke", ["sweep.search_space.memory.slot=none"])
    assert str(err.value) == ("sweep.search_space.memory.slot=none: 'memory.slot' is not in the search space of "
                              "sweep 'smoke'; its keys: memory.slots, memory.pressure_weight")
    assert list(load_sweep("smoke", ["sweep.search_space.memory.slots=none"]).search_space) == \
        ["memory.pressure_weight"]
    added_then_dropped = load_sweep("smoke", ["sweep.search_space.train.lr=loguniform:[1e-4,1e-2]",
                                              "sweep.search_space.train.lr=none"])
    assert "train.lr" not in added_then_dropped.search_space


def test_env_overrides_for_an_unregistered_env_are_refused():
    """`sweep.env_overrides.Bogus=[...]` was accepted; its overrides matched no env and were dropped."""
    with pytest.raises(ConfigError) as err:
        load_sweep("smoke", ["sweep.env_overrides.Bogus=[train.lr=0.1]"])
    message = str(err.value)
    assert message.startswith("sweep.env_overrides.Bogus: unknown env id 'Bogus'; choose one of: ")
    assert "ContinualShift-v0" in message and "LongDependency-Easy-v0" in message
    assert message.endswith("or a family: ContinualShift, LongDependency, NeedleRecall") and "\n" not in message
    for key in ("NeedleRecall-Hard-v0", "NeedleRecall"):  # an id and a family are both keys
        assert load_sweep("smoke", [f"sweep.env_overrides.{key}=[train.lr=0.1]"]).env_overrides[key] == \
            ["train.lr=0.1"]


def test_a_field_given_twice_in_a_sweep_mapping_is_refused():
    """PyYAML kept the last of two equal keys without a word (`{type: asha, type: fifo}` ran fifo); a suite file's
    second `seeds:` or env entry too (tests/test_benchmark_cli.py)."""
    with pytest.raises(ConfigError) as err:
        load_sweep("smoke", ["sweep.scheduler={type: asha, type: fifo}"])
    assert str(err.value) == "sweep.scheduler: not valid YAML (key 'type' is given twice (line 1); give it once)"
    assert load_sweep("smoke", ["sweep.scheduler={type: fifo, grace_period: 1}"]).scheduler["type"] == "fifo"


# ---------------------------------------------------------------- 4: lists without brackets
@pytest.mark.parametrize("value, fix", [("grid:8,16", "grid:[8,16]"), ("choice:a,b", "choice:[a,b]"),
                                        ("uniform:0.1", "uniform:[0.1]"), ("grid:", "grid:[...]")])
def test_search_space_values_without_brackets_say_so(value, fix):
    """`grid:8,16` printed Hydra's ChoiceSweep(...) and called the list empty."""
    with pytest.raises(ConfigError) as err:
        parse_space_value("memory.slots", value)
    assert str(err.value) == f"sweep.search_space.memory.slots={value}: write the values in brackets: {fix}"
    assert load_sweep("smoke", ["sweep.search_space.memory.slots=grid:[8,16]"]).search_space["memory.slots"] == \
        {"grid": [8, 16]}


# ---------------------------------------------------------------- 5: run folders among the trial overrides
@pytest.mark.parametrize("extra, shown", [
    (["run_dir=/tmp/xx"], "run_dir=/tmp/xx"),
    (["++run_dir=/tmp/xx"], "++run_dir=/tmp/xx"),
    (["sweep.overrides=[run_dir=/tmp/xx]"], "run_dir=/tmp/xx"),
    (["sweep.env_overrides.ContinualShift=[run_dir=/tmp/xx]"], "run_dir=/tmp/xx"),
])
def test_run_dir_in_a_sweep_is_refused(tmp_path, capsys, no_ray, extra, shown):
    """Was ignored by the trials yet written to best_overrides.txt, so its rerun wrote to that folder."""
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path}", *extra]) == 2
    assert _error_line(capsys) == (f"error: {shown}: a sweep gives each trial its own folder under "
                                   "<runs_root>/sweeps/<sweep>/<time>/; drop run_dir= (runs_root= picks where)")


@pytest.mark.parametrize("extra, shown", [(["+resume=/tmp/r"], "+resume=/tmp/r"),
                                          (["sweep.overrides=[resume=/tmp/r]"], "resume=/tmp/r")])
def test_a_run_s_resume_in_a_sweep_is_refused(tmp_path, capsys, no_ray, extra, shown):
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path}", *extra]) == 2
    assert _error_line(capsys) == (f"error: {shown}: trials cannot continue a run folder; drop it (to continue an "
                                   "interrupted sweep: python -m agents.tune resume=<sweep dir>, alone)")


def test_a_saved_config_file_in_a_sweep_is_refused_in_one_line(tmp_path, capsys, no_ray):
    """Was "unknown config key 'config'; run `python -m agents.run --help` to list the keys", whose --help lists it."""
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path}", "config=best_config.yaml"]) == 2
    assert _error_line(capsys) == ("error: config=best_config.yaml: a sweep does not start from a saved config file; "
                                   "give its settings as key=value (env=, agent= and the keys that differ), or run "
                                   "that config alone with python -m agents.run config=best_config.yaml")


def test_a_sweep_folder_another_sweep_runs_in_is_refused_before_ray(tmp_path, capsys, no_ray):
    """A resume= of a sweep still running started a second Tune on its trials: their folder locks failed the copies,
    and the first sweep, whose four trials had trained to the end, ended "interrupted" with three trials "error"."""
    from agents.run_lock import RUN_LOCK, RunLocks

    plan, base, sweep_dir = agents_tune.prepare([*SMOKE, f"runs_root={tmp_path}"])
    sweep_dir.mkdir(parents=True)
    with RunLocks() as running:  # the sweep's own driver
        running.hold(sweep_dir)
        with pytest.raises(ConfigError, match=rf"^sweep folder '{sweep_dir}' is in use by another sweep \(pid "
                                              rf"{os.getpid()}\); wait for it to end or stop it, then continue it "
                                              rf"with: python -m agents.tune resume={sweep_dir}$"):
            agents_tune.run_sweep(plan, base, sweep_dir, restore=True)
    with pytest.raises(RayWouldStart):  # once it ended, the folder is free
        agents_tune.run_sweep(plan, base, sweep_dir, restore=True)
    new = sweep_dir.parent / "new"
    with pytest.raises(RayWouldStart):  # a new sweep whose Ray does not start leaves no folder, its lock file included
        agents_tune.run_sweep(plan, base, new)
    assert not new.exists() and (sweep_dir / RUN_LOCK).is_file()


def test_the_sweep_s_own_resume_still_reads_a_sweep_folder(tmp_path, capsys, no_ray):
    """resume= alone is agents.tune's: it continues a sweep folder (here: not one), not a run's resume."""
    assert agents_tune.main([f"resume={tmp_path}"]) == 2
    assert "is not a sweep folder" in _error_line(capsys)


@pytest.mark.parametrize("metric, says", [
    # was "this env never measures it" for LongDependency's 1024 bucket, which one lane's 16 queries had missed
    ("recall/accuracy_d1024", "no evaluation query fell in that distance bucket: the env's options may not reach "
                              "it, or the evaluations sampled too few queries (raise train.lanes or "
                              "train.eval_repeats)"),
    ("recall/accuracy_delay3", "no evaluation query fell in that delay: "),
    ("cl/FWT", "so this env never measures it"),
])
def test_a_metric_that_no_finished_trial_reported_is_explained_by_its_kind(metric, says):
    assert says in agents_tune._never_measured(metric)


def test_a_bad_sweep_is_refused_before_torch_and_ray_load():
    """`python -m agents.tune` refused a mistyped sweep only after loading torch, matplotlib and Ray's modules (~5 s
    on 2 cores; now ~0.6 s): agents.tune_prepare.early_answer runs `prepare` while the command starts."""
    import subprocess
    import sys
    from pathlib import Path

    program = ("import runpy, sys; sys.argv = ['agents.tune', 'env=ContinualShift-v0', 'sweep=nonexist']\n"
               "try:\n    runpy.run_module('agents.tune', run_name='__main__')\n"
               "except SystemExit as exc:\n"
               "    print('exit', exc.code, [m for m in ('torch', 'ray', 'matplotlib') if m in sys.modules], "
               "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: unknown sweep 'nonexist'; choose one of: memory, smoke (files in agents/conf/sweep/)",
                     "exit 2 []"], done.stderr


def test_what_the_early_answer_prepared_is_what_main_runs_and_its_notes_come_once(tmp_path, capsys):
    from agents.tune_prepare import early_answer, prepare

    argv = ["env=ContinualShift-v0", "sweep=smoke", "memory.slots=4", f"runs_root={tmp_path}"]
    assert early_answer(argv) is None
    assert capsys.readouterr().err.strip() == "note: memory.slots fixed on the command line, not swept"
    plan, _, _ = prepare(argv)  # main()'s call: the same plan, no second note
    assert "memory.slots" not in plan.search_space and capsys.readouterr().err == ""
    prepare(argv)  # taken once: a later call prepares anew
    assert "note: memory.slots fixed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, note", [
    (["agent=transformer"], "note: agent=transformer has no memory; memory.slots, memory.decay, "
                            "memory.pressure_weight, memory.util_weight, memory.sparsity_weight change nothing (every "
                            "trial of this sweep runs the same settings)"),
    (["agent=lstm", "sweep=smoke", "sweep.search_space.train.lr=grid:[0.001,0.01]"],
     "note: agent=lstm has no memory; memory.slots, memory.pressure_weight change nothing (the trials differ only in "
     "train.lr)"),
    (["agent=memnet", "sweep=smoke"], None),  # MemNet's inert keys depend on each trial's values: no note
])
def test_a_sweep_of_memory_keys_for_an_agent_without_memory_says_so(tmp_path, capsys, argv, note):
    """A transformer's memory sweep started 16 trials of one and the same run without a word (agents.run says so of
    one `memory.slots=` for a baseline)."""
    from agents.tune_prepare import prepare

    prepare(["env=ContinualShift-v0", *argv, f"runs_root={tmp_path}"])
    assert capsys.readouterr().err.strip() == (note or "")


def test_a_boolean_key_swept_as_numbers_is_refused_before_ray_starts(tmp_path):
    """grid:[0,1] for memory.decay ran (OmegaConf takes any number as a boolean), but best_overrides.txt then held
    memory.decay=1, which agents.run refuses: the rerun line the sweep printed failed."""
    from agents.tune_prepare import prepare

    with pytest.raises(ConfigError, match=r"^memory.decay: 1 is not a boolean; give one, e.g. memory.decay=false$"):
        prepare(["env=ContinualShift-v0", "sweep=smoke", "sweep.search_space.memory.decay=grid:[false,1]",
                 f"runs_root={tmp_path}"])


@pytest.mark.parametrize("extra, shown", [
    (["train.episodes=0"], "train.episodes=0"),
    (["train.episodes=0", "sweep.scheduler.type=fifo"], "train.episodes=0"),
    (["sweep.search_space.train.episodes=grid:[0,2]"], "sweep.search_space.train.episodes reaches 0"),
])
def test_a_sweep_with_a_trial_that_trains_no_episode_is_refused_before_ray(tmp_path, capsys, no_ray, extra, shown):
    """With fifo, Ray's metric check raised a ValueError traceback at the trial's empty result; with asha the line
    said to set sweep.scheduler.grace_period=0 or less, which the next run refused (it must be >= 1)."""
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path}", *extra]) == 2
    assert _error_line(capsys) == (f"error: {shown}: a trial that trains no episode reports no result; every trial "
                                   "of a sweep needs train.episodes >= 1")
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("argv", [
    ["memory.slots=4", "é=1"],  # the pinned key's note came first, then the refusal of a later override
    ["agent=gru", "memory.slots=4", "sweep.metric=cl/nope"],  # the notes of a pinned and an unused key, then it
])
def test_a_refused_sweep_prints_its_error_line_alone(tmp_path, capsys, no_ray, argv):
    """Notes are printed once every check passed: a refused command line is the one `error:` line."""
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path}", *argv]) == 2
    _error_line(capsys)
