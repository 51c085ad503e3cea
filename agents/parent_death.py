"""A child process that dies with the process that started it: the benchmark's runs (`agents.run`, `agents.evaluate`
started by `agents.benchmark`) and `benchmarks/agents.py`'s measuring processes.

The parent names itself in the child's environment (`child_env`); the child calls `die_with_parent` first thing.
A SIGKILLed benchmark (an OOM killer, `kill -9`, a scheduler's hard stop) left its runs training on, orphaned, each
still writing its folder. Now, once the parent is gone, the child gets SIGTERM (its commands end as at Ctrl+C: one
line, the last checkpoint whole) and SIGKILL if it is still going `GRACE_S` later. On Linux the kernel sends the
SIGTERM (prctl PR_SET_PDEATHSIG, set by the child itself: a `preexec_fn` is unsafe in the benchmark's threads);
elsewhere on POSIX a watchdog thread notices the parent's end (the child is handed to another parent, so getppid()
changes) within a second. The watchdog also sends the SIGKILL. On Windows nothing is done. Imports nothing slow.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PARENT_ENV = "MEMSTREAM_PARENT_PID"
GRACE_S = 30.0  # after the SIGTERM, as the benchmark gives a run it stops (benchmark_runner.GRACE_S)
POLL_S = 1.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_env(env: dict | None = None) -> dict:
    """`env` (default os.environ) plus this process's pid, for a child that is to die with it."""
    return dict(os.environ if env is None else env) | {PARENT_ENV: str(os.getpid())}


def _kernel_signals_at_parent_death() -> bool:
    """Linux: ask the kernel for SIGTERM when the parent thread ends. False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, kernel: bool, grace_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    if not kernel:  # (with the kernel's SIGTERM, a second one would cut short what the first lets end whole)
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)  # still going: a stop that did not end it


def die_with_parent(grace_s: float = GRACE_S) -> None:
    """If this process was started by one that named itself (`PARENT_ENV`), end it when that process ends (see the
    module's doc). The variable is removed, so this process's own children do not inherit the watch. Call it once
    the SIGTERM handler is set (a parent gone already is told at once, by SIGTERM)."""
    given = os.environ.pop(PARENT_ENV, "")
    if os.name != "posix" or not given.isdigit():
        return
    parent = int(given)
    kernel = _kernel_signals_at_parent_death()
    if os.getppid() != parent:  # it ended before the kernel was asked: nobody will tell us
        os.kill(os.getpid(), signal.SIGTERM)
        kernel = True  # (told now; the watchdog only escalates)
    threading.Thread(target=_watch, args=(parent, kernel, grace_s), name="die-with-parent", daemon=True).start()
