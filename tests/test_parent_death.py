"""`agents.parent_death`: a child started with `child_env` that calls `die_with_parent` ends when its parent is
SIGKILLed: by the kernel's SIGTERM on Linux, by its watchdog elsewhere (forced here), by SIGKILL after the grace
when it ignores the SIGTERM. Real processes: a parent that starts the child and sleeps, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.repo_env import REPO, repo_env
from tests.test_benchmark_signals import alive

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the child's state in /proc")

CHILD = r"""
import pathlib, signal, sys, time
from agents import parent_death
if sys.argv[2] == "watchdog":  # as on macOS: no prctl
    parent_death._kernel_signals_at_parent_death = lambda: False
if sys.argv[2] == "stubborn":  # a SIGTERM that does not end it: the watchdog's SIGKILL does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:  # a run's SIGTERM: it ends as at Ctrl+C, its cleanup done
    def ended(signum, frame):
        pathlib.Path(sys.argv[1] + ".terminated").write_text("SIGTERM")
        sys.exit(1)
    signal.signal(signal.SIGTERM, ended)
parent_death.POLL_S = 0.1
parent_death.die_with_parent(grace_s=1.0)
pathlib.Path(sys.argv[1]).write_text("started")
time.sleep(120)
"""
PARENT = r"""
import subprocess, sys, time
from agents.parent_death import child_env
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], env=child_env())
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["kernel", "watchdog", "stubborn"])
def test_the_child_ends_with_its_sigkilled_parent(tmp_path, how):
    started = tmp_path / "started"
    env = repo_env()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(started), how], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and alive(child), "the child did not start"
            time.sleep(0.02)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while alive(child):
            assert time.monotonic() < deadline, "the child outlived its SIGKILLed parent"
            time.sleep(0.05)
        # SIGTERM first (its command ends as at Ctrl+C: one line, the last checkpoint whole), SIGKILL only after the
        # grace: a child ended by SIGKILL alone also died with its parent, cut short (was unchecked)
        assert (tmp_path / "started.terminated").exists() == (how != "stubborn")
    finally:
        for pid in (parent.pid, child):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


def test_a_process_not_started_by_a_benchmark_is_not_watched(monkeypatch):
    from agents import parent_death

    monkeypatch.delenv(parent_death.PARENT_ENV, raising=False)
    before = {t.name for t in __import__("threading").enumerate()}
    parent_death.die_with_parent()
    assert "die-with-parent" not in before | {t.name for t in __import__("threading").enumerate()}


def test_the_watch_is_not_inherited_by_the_childs_own_children(monkeypatch):
    """die_with_parent's doc: the variable is removed, so this process's own children do not inherit the watch (a
    grandchild seeing the variable would find its parent is not the one named, and SIGTERM itself at start)."""
    from agents import parent_death

    started = []
    monkeypatch.setenv(parent_death.PARENT_ENV, str(os.getppid()))
    monkeypatch.setattr(parent_death, "_kernel_signals_at_parent_death", lambda: True)  # no prctl on pytest
    monkeypatch.setattr(parent_death.threading, "Thread",
                        lambda **kw: type("T", (), {"start": lambda self: started.append(kw["args"])})())
    parent_death.die_with_parent()
    assert started == [(os.getppid(), True, parent_death.GRACE_S)]
    assert parent_death.PARENT_ENV not in os.environ
