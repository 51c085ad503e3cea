"""One process per run folder: agents.run (and each Tune trial) holds an flock on `<run>/.run.lock` while it runs.

Without it, `resume=` of a run still training (or two runs given the same `run_dir=`) ran two writers of one
folder: the same checkpoint, metrics and plots, and two TensorBoard event files. The kernel drops an flock when
its process ends, SIGKILL included, so a killed run's folder is free at once: there is no stale lock to judge (the
pid in the file is only for the message). Where there is no flock (Windows, a file system without it) the folder
is not locked.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from agents.checkpoint_paths import shell_arg, started_only
from agents.config import ConfigError
from memory.disk import free_there
from memory.persist import remove_temp_files

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_LOCK = ".run.lock"
RUN_FILES = ("config.yaml", "metrics.json")  # the run folder's own atomic files, besides checkpoints/ and plots/


class FolderInUse(ConfigError):
    """`lock_run`'s line for a folder another process holds; `holder` is that process's pid as its lock file says."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


def lock_run(run_dir: Path) -> int | None:
    """Take `run_dir`'s lock without waiting and write this pid into it; returns its fd (closing it releases the
    lock; None where nothing could be locked). A folder another process holds, or one where the lock file cannot
    be opened, is one ConfigError line. Then the temp files a killed writer of this run left are removed (no other
    writer is left): checkpoints/ and plots/, and those of config.yaml and metrics.json (an agents.evaluate may be
    writing its out file next to them)."""
    if fcntl is None:
        return None
    lock = run_dir / RUN_LOCK
    try:  # O_NOFOLLOW: a link planted there would have had its target truncated
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:  # a folder this user cannot write, a read-only disk, a folder or link in the way
        raise ConfigError(_cannot_lock(run_dir, exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUse(f"run folder {str(run_dir)!r} is in use by another process (pid {holder}); wait for it "
                          f"to end or stop it, then continue it with {shell_arg('resume', run_dir)}", holder) from None
    except OSError as exc:  # no flock on this file system (ENOLCK, EOPNOTSUPP): run, unprotected, and say so
        os.close(fd)
        print(f"note: the run folder cannot be locked here ({exc.strerror or exc}): make sure no other process "
              "writes it while this run does", file=sys.stderr, flush=True)
        return None
    try:  # the pid, for another process's message: a full disk refuses even these bytes to a new lock file
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # (resume= of a run folder without one, on a full disk: a traceback, exit 1)
        os.close(fd)
        raise ConfigError(_cannot_lock(run_dir, exc)) from None
    remove_temp_files(run_dir, RUN_FILES)
    for sub in ("checkpoints", "plots"):
        remove_temp_files(run_dir / sub)
    return fd


def _cannot_lock(run_dir: Path, exc: OSError) -> str:
    said = f"cannot lock the run folder {str(run_dir)!r} ({RUN_LOCK}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{said}; {free_there(run_dir)}): free space, then run the command again"
    return f"{said}); a run writes into its folder: make it writable, with {RUN_LOCK} a plain file or absent"


class RunLocks:
    """The run folders this process holds, each locked once (`hold`) and all released on exit."""

    def __init__(self):
        self._fds: dict[Path, int | None] = {}

    def hold(self, run_dir: str | os.PathLike) -> None:
        folder = Path(run_dir).resolve()
        if folder not in self._fds:
            self._fds[folder] = lock_run(folder)

    def holds(self, run_dir: str | os.PathLike) -> bool:
        return Path(run_dir).resolve() in self._fds

    def __enter__(self) -> RunLocks:
        return self

    def __exit__(self, *exc) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()


def remove_unstarted(run_dir: Path, held: bool) -> None:
    """Remove a run folder that this run made and was stopped in (Ctrl+C, SIGTERM) before it wrote its config.yaml:
    it holds only the run's lock file (and a temp file of config.yaml). The line says "nothing was written", and a
    generated folder (<time>_s<seed>) was left behind empty, one that resume= called "not a run folder". A folder
    holding anything else is left as it is, and so is the lock file of a folder this run does not hold (`held`):
    another run's, which took it first."""
    try:
        if held:
            if not started_only(run_dir):
                return
            for file in run_dir.iterdir():
                file.unlink(missing_ok=True)
        run_dir.rmdir()  # only while empty (not held: stopped before its lock, or another run's folder now)
    except OSError:  # another process took the folder meanwhile, or it cannot be changed: it stays
        pass
