"""SIGTERM / SIGINT sent to the benchmark process alone (a scheduler's stop, `kill <pid>`; not Ctrl+C at a terminal,
which reaches the whole process group): the runs in flight are stopped, the results so far written, exit 130.

SIGTERM used to end `python -m agents.benchmark` at once (exit 143, no results.md) and leave its `agents.run`
children training, orphaned. In a real process: the benchmark of one run far too long to end on its own, signalled
once that run trains (its TensorBoard event file exists)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.repo_env import REPO, repo_env
from tests.test_run import TINY_ENVS, TINY_MODEL

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the runs' processes in /proc")
DEADLINE_S = 300  # for a condition a 2-core machine under load reaches in seconds; hitting it is a failure
CS = "ContinualShift-v0"


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, IndexError):  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_all(proc: subprocess.Popen, runs: list[int]) -> None:
    """After a failed test: the benchmark and its runs, nothing left running."""
    for pid in [proc.pid, *runs]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.communicate()


def long_run_benchmark(tmp_path: Path, *overrides: str) -> tuple[list[str], Path, dict]:
    """A benchmark of one long transformer run on ContinualShift: its command line, the run's folder, its env."""
    long_cs = [o for o in TINY_ENVS[CS] if "episodes_per_task" not in o] + list(overrides)
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"overrides": TINY_MODEL, "envs": {CS: {"overrides": long_cs}},
                                     "variants": {"transformer": {"agent": "transformer"}}}))
    out = tmp_path / "bench"
    env = repo_env()
    cmd = [sys.executable, "-m", "agents.benchmark", f"suite={suite}", "seeds=1", "workers=1", f"out={out}"]
    return cmd, out / CS / "transformer" / "s0", env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_benchmark_alone_stops_its_runs_and_writes_the_results_so_far(tmp_path, signum):
    cmd, run_dir, env = long_run_benchmark(tmp_path, "env.kwargs.episodes_per_task=1000")
    out = run_dir.parents[2]  # the benchmark's out=
    # SIGINT as a terminal's Ctrl+C finds it, even where this test was started with SIGINT ignored (a background job)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs: list[int] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (runs := children(proc.pid)) or not any(run_dir.glob("events.out.tfevents.*")):
            if proc.poll() is not None:
                pytest.fail(f"the benchmark ended (exit {proc.returncode}) before its run trained: "
                            f"{proc.stderr.read()}")
            assert time.monotonic() < deadline, f"its run did not start training in {DEADLINE_S} s"
            time.sleep(0.05)
        proc.send_signal(signum)  # the benchmark alone: its run hears of it only from the benchmark
        err = proc.communicate(timeout=DEADLINE_S)[1]
        assert proc.returncode == 130, err
        assert "interrupted: stopping the runs in flight; writing the results so far" in err and "Traceback" not in err
        assert not [pid for pid in runs if alive(pid)]  # stopped, and waited for: no run left behind
        assert "interrupted; " in (run_dir / "run.log").read_text()  # agents.run's own line: it ended as at Ctrl+C
        assert "(INTERRUPTED: partial results)" in (out / "results.md").read_text()
        # the run stopped in flight is in the results, as failed with its log's tail (it was left out: "runs: 0")
        (record,) = json.loads((out / "results.json").read_text())["runs"]
        assert (record["status"], record["error_kind"]) == ("failed", "interrupted")
        assert "interrupted; " in record["error"]
        assert "runs: 1 (0 ok, 1 failed)" in (out / "results.md").read_text()
    finally:
        kill_all(proc, runs)


# A Ctrl+C the moment `import torch` begins (the benchmark's preflight, after its startup guard, is where torch loads)
PREFLIGHT_INTERRUPTED = r"""
import signal, sys

from agents.config import load_config
from agents.preflight import model_fits


class InterruptAtTorch:  # a meta path finder: the signal comes as torch's import starts
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            signal.raise_signal(signal.SIGINT)
        return None


cfg = load_config(["env=ContinualShift-v0", "agent=transformer", "device=cpu", "train.lanes=1"])
signal.signal(signal.SIGINT, signal.default_int_handler)  # as end_startup leaves it
sys.meta_path.insert(0, InterruptAtTorch())
try:
    model_fits(cfg, 256)
except KeyboardInterrupt:
    print("interrupted; torch imported:", hasattr(sys.modules.get("torch"), "nn"))
"""


def test_a_ctrl_c_in_the_preflight_waits_for_torchs_import_to_end():
    """A KeyboardInterrupt raised inside torch's import could land in one of its C++ callbacks: `agents.benchmark`
    stopped while planning (its preflight imports torch) aborted now and then (exit 134, `terminate called after
    throwing an instance of 'pybind11::error_already_set'`) instead of saying `interrupted before any run started`
    (exit 130). The preflight's imports hold the signal; it is raised once they have ended."""
    env = repo_env()
    done = subprocess.run([sys.executable, "-c", PREFLIGHT_INTERRUPTED], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=DEADLINE_S)
    assert done.stdout.strip() == "interrupted; torch imported: True", done.stdout + done.stderr


@pytest.mark.parametrize("where", ["write_results", "machine"])
def test_a_signal_while_the_results_are_written_ends_the_benchmark_after_them(tmp_path, monkeypatch, capsys, where):
    """SIGTERM (or Ctrl+C) as the benchmark wrote its results (results.json, results.md, the plots: a second or two
    at its end) was a KeyboardInterrupt traceback, with results.md or the plots not written; so was one in the
    milliseconds before, while the results' header described the machine (`machine`)."""
    from agents import benchmark

    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"overrides": TINY_MODEL, "envs": {CS: {"overrides": TINY_ENVS[CS]}},
                                     "variants": {"transformer": {"agent": "transformer"}}}))
    monkeypatch.setattr(benchmark, "execute", lambda jobs, workers, timeout: ([], False))
    owner = benchmark.report if where == "write_results" else benchmark
    step = getattr(owner, where)

    def signalled(*args, **kwargs):  # a scheduler's stop, just as that step of the results starts
        os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    monkeypatch.setattr(owner, where, signalled)
    from agents import benchmark_plots

    plotted = []
    monkeypatch.setattr(benchmark_plots, "write_plots", lambda *args: plotted.append(args) or [])
    out = tmp_path / "bench"
    try:
        code = benchmark.main([f"suite={suite}", "seeds=1", f"out={out}"])
    except KeyboardInterrupt:  # (what it did: caught here, so that the test fails instead of stopping pytest)
        code = "KeyboardInterrupt"
    assert code == 130
    assert capsys.readouterr().err.strip() == f"interrupted; the results are written: {out / 'results.md'}, " \
                                              "results.json, the plots"
    assert (out / "results.md").is_file() and (out / "results.json").is_file() and len(plotted) == 1


def ctrl_c_once_started(started: Path) -> None:
    """On a thread: SIGINT to this process (Ctrl+C) once the stand-in run has written `started`."""
    import threading

    def ctrl_c():
        deadline = time.monotonic() + DEADLINE_S
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c, daemon=True).start()


def test_the_runs_killed_at_a_second_ctrl_c_are_in_the_results(tmp_path, monkeypatch):
    """A second Ctrl+C while the benchmark waited for its stopped runs killed them, and left them out of the results
    (results.md "runs: 0" beside folders holding their checkpoints and logs): their records were read before the
    killed runs had ended."""
    import threading

    from agents import benchmark_runner
    from agents.benchmark_runner import Job, Runner, execute

    started = tmp_path / "started"
    stubborn = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "pathlib.Path(sys.argv[1]).write_text('x'); time.sleep(120)")  # a run that outlasts its SIGTERM
    monkeypatch.setattr(benchmark_runner, "run_command", lambda job: [sys.executable, "-c", stubborn, str(started)])
    stop = Runner.stop

    def second_ctrl_c(self, kill=False):  # a second Ctrl+C while the benchmark waits for its stopped runs (30 s)
        stop(self, kill)
        if not kill:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    monkeypatch.setattr(Runner, "stop", second_ctrl_c)

    ctrl_c_once_started(started)  # the first Ctrl+C
    job = Job(CS, "transformer", "transformer", 0, tmp_path / "run", [])
    records, interrupted = execute([job], workers=1, timeout_s=None)
    assert interrupted
    assert [(r["variant"], r["status"], r["error_kind"]) for r in records] == [("transformer", "failed", "interrupted")]


def test_a_sigkilled_benchmark_takes_its_runs_with_it(tmp_path):
    """SIGKILL to the benchmark (an OOM killer, `kill -9`, a scheduler's hard stop) left its `agents.run` children
    training on, orphaned, still writing their folders. Each child now ends with it: SIGTERM from the kernel (Linux)
    or its watchdog, so the run ends as at Ctrl+C, its log saying how to resume it."""
    cmd, run_dir, env = long_run_benchmark(tmp_path, "env.kwargs.episodes_per_task=100000", "train.checkpoint_every=2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs: list[int] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (runs := children(proc.pid)) or not (run_dir / "checkpoints" / "last.pt").is_file():
            assert proc.poll() is None, f"the benchmark ended (exit {proc.returncode}) before its run checkpointed"
            assert time.monotonic() < deadline, f"its run did not write a checkpoint in {DEADLINE_S} s"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60  # the run's own stop takes a second or two; its watchdog's SIGKILL, 31 s
        while [pid for pid in runs if alive(pid)]:
            assert time.monotonic() < deadline, "the SIGKILLed benchmark's run is still running, orphaned"
            time.sleep(0.1)
        assert "interrupted; " in (run_dir / "run.log").read_text()  # agents.run's own line: it ended as at Ctrl+C
        # the same command again: out= is refused as used, and the line says what the killed benchmark left
        again = subprocess.run(proc.args, cwd=REPO, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
        assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
        assert "stopped before it wrote its results (killed?): 0 of its 1 started runs finished, 1 stopped part " \
               f"way (python -m agents.run resume=<run> continues one, e.g. resume={run_dir})" in again.stderr
    finally:
        kill_all(proc, runs)


def test_the_runs_stopped_by_a_ctrl_c_get_their_line_on_the_terminal(tmp_path, monkeypatch, capsys):
    """The terminal prints a line per finished run; the runs that ended while the benchmark stopped (stopped in
    flight, or one that finished as the signal came) were counted in the results without one."""
    from agents import benchmark_runner
    from agents.benchmark_runner import Job, execute

    started = tmp_path / "started"
    run = ("import pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text('x'); "
           "time.sleep(120)")  # a run that ends at its SIGTERM (exit -15: the benchmark stopped it)
    monkeypatch.setattr(benchmark_runner, "run_command", lambda job: [sys.executable, "-c", run, str(started)])

    ctrl_c_once_started(started)
    job = Job(CS, "transformer", "transformer", 0, tmp_path / "run", [])
    records, interrupted = execute([job], workers=1, timeout_s=None)
    assert interrupted and [r["error_kind"] for r in records] == ["interrupted"]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith(f"[1/1] {CS}")
    assert f"failed (interrupted; see {tmp_path / 'run'}/*.log)" in lines[0] and "ETA" not in lines[0]


def test_a_signal_as_the_runs_pool_shuts_down_is_a_stop_with_the_results(monkeypatch):
    """A signal after the runs had ended (the first Ctrl+C's stopped runs, or the last run done) and while the pool of
    run threads shut down was a KeyboardInterrupt traceback out of `execute` (`kill -INT` twice, 30 ms apart: 1 time
    in 7), and no results.md. Now it is held until the pool is down and counts as a stop: the results are written."""
    from agents import benchmark_runner
    from agents.interrupts import sigterm_as_interrupt

    class SignalledPool(benchmark_runner.ThreadPoolExecutor):
        def shutdown(self, *args, **kwargs):  # a scheduler's stop as the pool shuts down
            os.kill(os.getpid(), signal.SIGTERM)
            return super().shutdown(*args, **kwargs)

    monkeypatch.setattr(benchmark_runner, "ThreadPoolExecutor", SignalledPool)
    with sigterm_as_interrupt():  # (as `python -m agents.benchmark` sets it)
        try:
            result = benchmark_runner.execute([], 1, None)
        except KeyboardInterrupt:  # (what it did: caught here, so that the test fails instead of stopping pytest)
            result = "KeyboardInterrupt"
    assert result == ([], True)
