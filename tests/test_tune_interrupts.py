"""A sweep stopped by SIGTERM, as by Ctrl+C (a real `python -m agents.tune` process), also before and while Ray
starts, the exit code of an interrupted sweep, a sweep whose Ray does not start (no empty sweep folder left), and
the one-line errors that name their fix: a cluster that wants its auth token, an ASHA grace period longer than a
trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from agents import tune as agents_tune
from agents import tune_preflight, tune_signals
from agents.config import ConfigError
from agents.tune_space import load_sweep
from tests.repo_env import REPO

DEADLINE_S = 240  # for what a 2-core machine under load does in seconds; hitting it is a failure


# ---------------------------------------------------------------- SIGTERM: what Ctrl+C does
@pytest.mark.parametrize("to", ["group", pytest.param("process", marks=pytest.mark.slow)])
def test_sigterm_stops_a_running_sweep_as_ctrl_c_does(tmp_path, to):
    """Was exit 134 with a stack dump from Ray's C++ core, no table, no results files, no resume line: ray.init
    installs a SIGTERM handler that calls sys.exit in the middle of Tune's loop. Sent to the sweep's process group
    (`timeout`, a scheduler's cancel), it also killed Ray's GCS server: a 60 s hang, then exit 1 and a C++ error.
    (The group covers the sweep's process too; the process alone, Ray untouched, is the slow variant.)"""
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    # one trial, far too long to end on its own (1000 episodes)
    args = ["env=ContinualShift-v0", "sweep=smoke", "num_samples=1", "sweep.search_space.memory.slots=none",
            "env.kwargs.episodes_per_task=500", f"runs_root={runs}"]
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agents.tune", *args], cwd=REPO, env=env, stdout=out,
                                stderr=err, start_new_session=True)  # its own process group, as under a scheduler
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not [p for p in runs.glob("sweeps/smoke/*/*") if p.is_dir() and (p / "config.yaml").is_file()]:
            assert proc.poll() is None, f"the sweep ended (exit {proc.returncode}) before its trial ran: " + \
                err_path.read_text()
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM) if to == "group" else proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:  # a hung sweep: Ctrl+C, then twice, to let it stop its local Ray
            for _ in range(2):
                proc.send_signal(signal.SIGINT)
                time.sleep(5)
            proc.kill()
    out, err = out_path.read_text(), err_path.read_text()
    (sweep_dir,) = runs.glob("sweeps/smoke/*")
    assert code == 130, (code, out, err)
    assert f"sweep interrupted; continue it with: python -m agents.tune resume={sweep_dir}" in out, out
    assert "unfinished" in out and (sweep_dir / "results.csv").is_file() and (sweep_dir / "results.json").is_file()
    assert "Traceback" not in err and "*** SIGTERM" not in err and "Aborted" not in err, err


def test_sigterm_does_what_the_sigint_handler_in_force_does(monkeypatch):
    calls = []
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))  # e.g. Tune's: stop after saving
        tune_signals.sigterm_as_ctrl_c(signal.SIGTERM, None)
        assert calls == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's: KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            tune_signals.sigterm_as_ctrl_c(signal.SIGTERM, None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's: SIGTERM still stops
        with pytest.raises(KeyboardInterrupt):
            tune_signals.sigterm_as_ctrl_c(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_handlers_are_installed_after_ray_starts_and_put_back_at_the_end(tmp_path, monkeypatch, capsys):
    """ray.init installs its own SIGTERM handler (sys.exit): ours must come after it, and neither stays."""
    def ray_init(sweep_dir):  # stands in for start_ray, doing to SIGTERM what ray.init does
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        return False

    seen = {}

    def fit(*args):
        seen["during"] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, lambda signum, frame: None)  # Tune's, left behind when it did not fire
        raise KeyboardInterrupt  # a second Ctrl+C while Tune saves its state

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(agents_tune, "start_ray", ray_init)
    monkeypatch.setattr(agents_tune, "_fit", fit)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    assert agents_tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={tmp_path}"]) == 130
    assert seen["during"] is tune_signals.sigterm_as_ctrl_c
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert capsys.readouterr().err.strip() == ("interrupted before any trial started; nothing to continue, start "
                                               "the sweep again")


@pytest.mark.parametrize("saved", [[], ["sweep.yaml"], ["sweep.yaml", "tuner.pkl", ".validate_storage_marker"],
                                   ["sweep.yaml", "tuner.pkl", "experiment_state-2026-12-02_00-00-00.json"]])
def test_ctrl_c_after_ray_started_before_tune_saved_its_state_leaves_no_folder(tmp_path, monkeypatch, capsys, saved):
    """Ctrl+C or SIGTERM while _fit loads Ray's Tune (seconds, after Ray started) said `interrupted before any trial
    started; nothing to continue` but left the sweep folder with its ray.log (and sweep.yaml), which resume= then
    called a sweep holding no trial. Tune writes tuner.pkl as its Tuner is made, its trials (experiment_state) at its
    first step: a stop between the two said `continue the sweep with: ... resume=`, and that resume= ran one trial of
    none of the swept values, then failed on its null memory.slots. Once Tune saved its trials the folder is kept."""
    def fit(plan, base, sweep_dir, *args):
        for name in saved:
            (sweep_dir / name).write_text("")
        raise KeyboardInterrupt

    import logging

    monkeypatch.setattr(logging.getLogger("ray"), "handlers", [])  # the Ray logger's own, put back after the test
    monkeypatch.setattr(agents_tune, "start_ray", lambda sweep_dir: tune_preflight.log_ray_to(sweep_dir) or False)
    monkeypatch.setattr(agents_tune, "_fit", fit)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    (tmp_path / "keep").write_text("")  # runs_root existed before: kept
    assert agents_tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={tmp_path}"]) == 130
    err = capsys.readouterr().err.strip()
    if any(name.startswith("experiment_state") for name in saved):
        (sweep_dir,) = tmp_path.glob("sweeps/smoke/*")
        assert sorted(p.name for p in sweep_dir.iterdir()) == sorted(["ray.log", ".run.lock", *saved])  # its driver's
        assert err == f"interrupted; continue the sweep with: python -m agents.tune resume={sweep_dir}"
    else:
        assert err == "interrupted before any trial started; nothing to continue, start the sweep again"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


# ---------------------------------------------------------------- a Ray that does not start
def _failing_start(exc):
    def start(sweep_dir):
        assert sweep_dir.is_dir()  # made before Ray starts: an uncreatable folder is refused first
        raise exc
    return start


@pytest.mark.parametrize("exc", [ConfigError("RAY_ADDRESS='x': no Ray cluster answers there"), KeyboardInterrupt()])
def test_a_sweep_whose_ray_does_not_start_leaves_no_folder(tmp_path, monkeypatch, capsys, exc):
    """A bad or unreachable RAY_ADDRESS left an empty runs/sweeps/<sweep>/<time>/ behind."""
    monkeypatch.setattr(agents_tune, "start_ray", _failing_start(exc))
    monkeypatch.setenv("RAY_ADDRESS", "x")
    (tmp_path / "keep").write_text("")  # runs_root existed before: kept
    code = agents_tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={tmp_path}"])
    assert code == (2 if isinstance(exc, ConfigError) else 130)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_a_resumed_sweep_whose_ray_does_not_start_keeps_its_folder(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    monkeypatch.setattr(agents_tune, "start_ray", _failing_start(ConfigError("no Ray")))
    plan = load_sweep("smoke")
    with pytest.raises(ConfigError):
        agents_tune.run_sweep(plan, {}, sweep_dir, restore=True)
    assert sweep_dir.is_dir()
    sub = tmp_path / "a" / "b"
    made = tune_preflight.make_sweep_folder(sub)[1]
    (tmp_path / "a" / "other").write_text("")
    tune_preflight.remove_made_folders(made)  # b was empty: gone; a holds another file: kept
    assert not sub.exists() and (tmp_path / "a" / "other").is_file()


@pytest.mark.parametrize("files", [["ray.log"], ["ray.log", "sweep.yaml", ".sweep.yaml.x.tmp"],
                                   ["ray.log", "sweep.yaml", "tuner.pkl", ".validate_storage_marker"]])
def test_resume_of_a_sweep_killed_before_its_first_trial_says_so(tmp_path, capsys, files):
    """SIGKILL while Ray starts (~10 s) or before Tune saved its state leaves the sweep folder (Ctrl+C and SIGTERM
    remove it); resume= of it said "is not a sweep folder (needs sweep.yaml and Tune's experiment state)", or, with
    the tuner.pkl Tune writes before it saves its trials, ran one trial of none of the swept values."""
    sweep_dir = tmp_path / "sweeps" / "smoke" / "2026-12-02_00-00-00"
    sweep_dir.mkdir(parents=True)
    for name in files:
        (sweep_dir / name).write_text("")
    assert agents_tune.main([f"resume={sweep_dir}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: sweep folder {str(sweep_dir)!r} holds no trial: the sweep was stopped before its first trial started "
        "(while Ray and Tune started), so nothing is there to continue; start the sweep again with its own command "
        "line")
    (sweep_dir / "trial_00000").mkdir()  # a folder Tune made: with tuner.pkl, Tune made it as it saved its first
    # trials (killed before they reached the folder: the same line); without, another case (it names the missing state)
    assert agents_tune.main([f"resume={sweep_dir}"]) == 2
    assert ("holds no trial" if "tuner.pkl" in files else "is not a sweep folder") in capsys.readouterr().err


def test_resume_of_an_empty_folder_names_a_sweep_killed_while_ray_started(tmp_path, capsys):
    """Killed while Ray starts, a sweep leaves its folder empty: resume= of it names that case too."""
    assert agents_tune.main([f"resume={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a sweep folder (needs sweep.yaml and Tune's experiment "
                                                    "state); point it at runs/sweeps/<sweep>/<time> (an empty one is "
                                                    "what a sweep killed while Ray started leaves: start it again)")


# ---------------------------------------------------------------- a cluster that wants its auth token
def test_a_cluster_that_wants_its_auth_token_says_so(tmp_path, monkeypatch):
    """Was "no Ray cluster answers there" after ~20 s of InvalidAuthToken warnings from Ray's C++ core."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))  # no token at hand
    address = "127.0.0.1:6379"
    plain = tune_preflight.connect_error(address, ConnectionError("GCS did not answer\nmore"))
    assert plain == ("RAY_ADDRESS='127.0.0.1:6379': no Ray cluster answers there (GCS did not answer); start one with "
                     "`ray start --head` or unset RAY_ADDRESS for a local Ray")
    named = tune_preflight.connect_error(address, ConnectionError("Unauthenticated: InvalidAuthToken"))
    assert named.startswith("RAY_ADDRESS='127.0.0.1:6379': the Ray cluster there needs its auth token "
                            "(Unauthenticated: InvalidAuthToken); set RAY_AUTH_MODE=token (Ray then sends the token in "
                            "RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    (tmp_path / "none").write_text("token")  # a token that Ray did not send, RAY_AUTH_MODE being unset
    assert "probably needs its auth token (GCS did not answer); set RAY_AUTH_MODE=token" in \
        tune_preflight.connect_error(address, ConnectionError("GCS did not answer"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # sent, and refused: the wrong token
    wrong = tune_preflight.connect_error(address, ConnectionError("InvalidAuthToken"))
    assert "rejected this machine's auth token" in wrong
    assert "no Ray cluster answers there" in tune_preflight.connect_error(address, ConnectionError("timed out"))


# ---------------------------------------------------------------- ASHA's grace period
def test_a_grace_period_longer_than_a_trial_names_the_fix(tmp_path):
    short = ["env=LongDependency-v0", "sweep=smoke", "train.episodes=1", f"runs_root={tmp_path}"]
    with pytest.raises(ConfigError) as err:
        agents_tune.prepare(short)
    assert str(err.value) == ("sweep.scheduler.grace_period=2 must be <= the episodes of the longest trial (1); set "
                              "sweep.scheduler.grace_period=1 or less, or sweep.scheduler.type=fifo (no early "
                              "stopping)")
    plan, _, _ = agents_tune.prepare([*short, "sweep.scheduler.grace_period=1"])  # the fix it names works
    assert plan.scheduler["grace_period"] == 1 and plan.scheduler["max_t"] == 1
    with pytest.raises(ConfigError, match=r"grace_period=2 must be <= sweep.scheduler.max_t=1; set "
                                          r"sweep.scheduler.grace_period=1 or less"):
        agents_tune.prepare(["env=ContinualShift-v0", "sweep=smoke", "sweep.scheduler.max_t=1",
                             f"runs_root={tmp_path}"])


# ---------------------------------------------------------------- SIGTERM before and while Ray starts
def test_sigterm_while_ray_starts_acts_once_it_has_started_then_stops_it(tmp_path, monkeypatch, capsys):
    """ray.init installs a SIGTERM handler that calls sys.exit: a SIGTERM while Ray started exited 15 (or 134, with
    a stack dump from Ray's C++ core) and left Ray's processes running."""
    import ray
    from ray._private import ray_constants
    from ray._private import utils as ray_utils

    state = {"initialized": False, "shutdown": 0}

    def init(**kwargs):  # what ray.init does to SIGTERM, then a SIGTERM before it returns
        ray_utils.set_sigterm_handler(lambda signum, frame: sys.exit(signum))
        state["C++ handler off"] = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER  # (its stack dump, then abort)
        signal.raise_signal(signal.SIGTERM)
        state["initialized"] = True

    def shutdown():
        state["initialized"], state["shutdown"] = False, state["shutdown"] + 1

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: state["initialized"])
    monkeypatch.setattr(ray, "shutdown", shutdown)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert agents_tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={tmp_path}"]) == 130
    assert state == {"initialized": False, "shutdown": 1, "C++ handler off": True}
    assert ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER is False  # as Ray set it: off only while it started
    assert capsys.readouterr().err.strip() == ("interrupted before any trial started; nothing to continue, start "
                                               "the sweep again")
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert ray_utils.set_sigterm_handler.__name__ == "set_sigterm_handler"  # Ray's own again
    assert list(tmp_path.iterdir()) == []  # the sweep folder made for it is gone


def test_sigterm_before_ray_starts_is_one_line(tmp_path, monkeypatch, capsys):
    """It killed the command silently (exit 143)."""
    prepare = agents_tune.prepare

    def sigterm_then_prepare(argv):
        signal.raise_signal(signal.SIGTERM)
        return prepare(argv)

    monkeypatch.setattr(agents_tune, "prepare", sigterm_then_prepare)
    assert agents_tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={tmp_path}"]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted before any trial started; nothing to continue, start "
                                               "the sweep again")


@pytest.mark.slow
def test_sigterm_while_a_real_ray_starts_is_one_line_and_leaves_no_ray_running(tmp_path):
    """The same with a real `python -m agents.tune` and a real Ray (~15 s): Ray's hooks are where the fix expects."""
    proc = subprocess.Popen([sys.executable, "-m", "agents.tune", "env=ContinualShift-v0", "sweep=smoke",
                             f"runs_root={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    deadline = time.monotonic() + DEADLINE_S
    while not (tmp_path / "sweeps").exists() and time.monotonic() < deadline:  # made just before Ray starts
        time.sleep(0.05)
    time.sleep(2)  # Ray takes ~10 s to start
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted before any trial started; nothing to continue, start the sweep again"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_a_resume_loads_ray_is_one_line(tmp_path):
    """resume= loads Ray's Tune (pandas, ~2 s) in main(): a Ctrl+C that stopped that import halfway was caught,
    and its line imported Ray's Tune again to tell whether the sweep could continue, which failed on the half-made
    modules: an AttributeError traceback from pandas, exit 1. Held inside pandas' import, as Tune loads it."""
    from ray.tune.impl.tuner_internal import _TUNER_PKL

    from tests.test_run_signals import interrupt, start, wait_for

    assert tune_signals.TUNER_STATE == _TUNER_PKL  # the line's test of a sweep that can continue is Tune's own
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "tuner.pkl").write_bytes(b"")  # (what Tune's can_restore looks for)
    (sweep_dir / "experiment_state-2026-12-02_00-00-00.json").write_text("{}")  # and Tune's saved trials
    proc = start([f"resume={sweep_dir}"], tmp_path, gate="pandas._libs.interval", main="agents.tune")
    try:
        wait_for(proc, (tmp_path / "ready").exists, "its import of pandas")
        assert (tmp_path / "ready").read_text() == "default_int_handler"  # in main(), not while it starts
        assert interrupt(proc) == f"interrupted; continue the sweep with: python -m agents.tune resume={sweep_dir}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
