"""One process per run folder: agents.run holds an flock on `<run>/.run.lock` while it trains or resumes a run.

Without it, `resume=` of a run still training (or two runs given the same `run_dir=`) ran two writers of one
folder: the same checkpoint, metrics and plots, and two TensorBoard event files. The kernel drops an flock when
its process ends, SIGKILL included, so a killed run's folder is free at once: there is no stale lock to judge (the
pid in the file is only for the message). Where there is no flock (Windows) the folder is not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.config import ConfigError
from memory.persist import remove_temp_files

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_LOCK = ".run.lock"
RUN_FILES = ("config.yaml", "metrics.json")  # the run folder's own atomic files, besides checkpoints/ and plots/


def lock_run(run_dir: Path) -> int | None:
    """Take `run_dir`'s lock without waiting and write this pid into it; returns its fd (closing it releases the
    lock; None without flock). A folder another process holds is one ConfigError line naming that process. Then
    the temp files a killed writer of this run left are removed (no other writer is left): checkpoints/ and plots/,
    and those of config.yaml and metrics.json (an agents.evaluate may be writing its out file next to them)."""
    if fcntl is None:
        return None
    fd = os.open(run_dir / RUN_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held (BlockingIOError)
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"run folder {str(run_dir)!r} is in use by another process (pid {holder}); wait for it "
                          f"to end or stop it, then continue it with resume={run_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    remove_temp_files(run_dir, RUN_FILES)
    for sub in ("checkpoints", "plots"):
        remove_temp_files(run_dir / sub)
    return fd
