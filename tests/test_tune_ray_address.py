"""RAY_ADDRESS unset, empty, `local` (a local Ray of the sweep's own, whose CPUs are checked) and `auto` with no Ray
running (no cluster answers: not an auth-token problem)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from agents import tune_preflight
from agents.config import ConfigError
from agents.tune_preflight import check_local_resources
from tests.repo_env import REPO, repo_env

NO_RAY_RUNNING = ("Could not find any running Ray instance. Please specify the one to connect to by setting "
                  "`--address` flag or `RAY_ADDRESS` environment variable.")


def test_ray_address_auto_without_a_running_ray_is_not_called_an_auth_token_problem(tmp_path, monkeypatch):
    """RAY_ADDRESS=auto with no Ray running anywhere: ray.init says so in its ConnectionError. With a token at hand
    (~/.ray/auth_token, which any earlier local sweep writes) the line said "the Ray cluster there probably needs its
    auth token ...; set RAY_AUTH_MODE=token": there is no cluster, and that fix changes nothing."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    token = tmp_path / "auth_token"
    token.write_text("token")  # what a first local sweep leaves in ~/.ray
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    line = tune_preflight.connect_error("auto", ConnectionError(NO_RAY_RUNNING))
    assert "auth token" not in line and "RAY_AUTH_MODE" not in line, line
    assert line.startswith("RAY_ADDRESS='auto': no Ray cluster answers there (Could not find any running Ray "
                           "instance."), line


def test_ray_address_local_starts_a_local_ray_so_its_cpus_are_checked(monkeypatch):
    """RAY_ADDRESS=local is Ray's spelling of "start a local Ray" (what an unset RAY_ADDRESS does): a trial that
    reserves more CPUs than this machine has is never scheduled there either. The check was skipped for any set
    RAY_ADDRESS, so `RAY_ADDRESS=local ... sweep.resources.cpus=4` on 2 cores waited forever with every trial
    pending, where the same line without RAY_ADDRESS is refused at once."""
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setattr(tune_preflight, "local_cpus", lambda: 2.0)
    with pytest.raises(ConfigError) as caught:
        check_local_resources({"cpus": 4, "gpus": 0, "threads": 1}, {"device": "cpu"}, {})
    assert str(caught.value).startswith("sweep.resources.cpus=4: no trial would ever start, this machine has 2 CPU(s)")



@pytest.mark.parametrize("value", [None, ""])
def test_a_sweep_without_ray_address_starts_its_own_local_ray(value, tmp_path, monkeypatch):
    """README: "Without RAY_ADDRESS, agents.tune starts a local Ray on this machine and stops it at the end".
    ray.init() without an address joins the cluster that a `ray start` left in Ray's temp folder
    (/tmp/ray/ray_current_cluster, shared by every user of the machine unless RAY_TMPDIR is set): measured with
    `ray start --head --num-cpus 1` running, a plain sweep with sweep.resources.cpus=2 passed the local CPU check (2
    cores) and waited forever in that 1-CPU cluster. Ray's own word for "start a new local Ray" is address="local".
    An empty RAY_ADDRESS (`export RAY_ADDRESS=$UNSET_VAR`) was passed to ray.init as "" and ended in a ValueError
    traceback (exit 1): it is no address either."""
    from agents import tune as agents_tune

    if value is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", value)
    seen = {}
    monkeypatch.setattr(agents_tune, "init_ray_held", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(agents_tune, "log_ray_to", lambda sweep_dir: None)
    assert agents_tune.start_ray(tmp_path / "sweep") is True
    assert seen["address"] == "local", seen


def test_a_diverged_trial_ends_its_sweep_without_retries(tmp_path):
    """`training diverged ... lower train.lr` comes again from the same checkpoint and seed: under
    sweep.max_failures=-1 ("retry without limit") the sweep never ended (14 retries in 60 s, each adding an event
    file). The trial ends at once, marked diverged; the other trial is the best."""
    import json

    cmd = [sys.executable, "-m", "agents.tune", "env=ContinualShift-v0", "sweep=smoke", "num_samples=1",
           f"runs_root={tmp_path}", "sweep.search_space.memory.slots=none",
           "sweep.search_space.memory.pressure_weight=none", "sweep.search_space.train.lr=grid:[1e-3,1e5]",
           "sweep.scheduler.type=fifo", "sweep.max_failures=-1"]
    process = subprocess.Popen(cmd, cwd=REPO, env=repo_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        out, _ = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # the sweep saves its state and stops Ray
        out, _ = process.communicate(timeout=120)
        pytest.fail(f"the sweep never ended: its diverged trial was retried without end\n{out[-2000:]}")
    assert process.returncode == 0, out[-2000:]
    assert "failed, not retried: training diverged in episode 1" in out and "1 trial(s) diverged, not retried" in out
    rows = json.loads(next(tmp_path.glob("sweeps/smoke/*/results.json")).read_text())["trials"]
    assert sorted(r["status"] for r in rows) == ["diverged", "done"], rows
    trial = next(tmp_path.glob("sweeps/smoke/*/*_lr=1e+05"))
    assert [p.suffix for p in sorted(trial.glob("events.out.tfevents.*"))] == [".0", ".failure"]  # one attempt
