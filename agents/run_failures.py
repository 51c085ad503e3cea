"""What a run's file that failed to write (or read) was, and the one line that says so (`agents.run`'s handler of
an OSError that is no bug: room, rights, or a file or folder in the way)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from agents.checkpoint import how_to_continue
from memory.disk import write_failure

# a write that failed for want of room or rights (not a bug): the run's files that are not its checkpoint
# (config.yaml, metrics.json, plots, TensorBoard's event file) were a traceback and exit 1
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
# a folder where the run writes a file (config.yaml, metrics.json), or a file where it makes a folder (plots/): a
# resume= of a folder that held one was an IsADirectoryError traceback (exit 1)
IN_THE_WAY = (errno.EISDIR, errno.ENOTDIR, errno.EEXIST)
NO_ACCESS = (errno.EACCES, errno.EPERM)


def is_file_failure(exc: OSError, run_dir: Path | None) -> bool:
    """Whether `exc` is a run's file that failed for room, rights or something in the way (`file_failure` words it);
    anything else is a bug and keeps its traceback. No permission is met also before the run folder is known."""
    return exc.errno in WRITE_FAILURES + IN_THE_WAY and (run_dir is not None or exc.errno in NO_ACCESS)


def file_failure(exc: OSError, run_dir: Path) -> str:
    """The line for a run's file that failed (`WRITE_FAILURES`). No permission is no full disk, and is met reading
    too (a resumed run's TensorBoard event file): it was "cannot write <file> (Permission denied; 70 GiB free
    there): free space" of a file that was being read. TensorBoard's names are bytes (they printed as b'...')."""
    name = os.fsdecode(exc.filename) if exc.filename is not None else str(run_dir)
    try:
        then = how_to_continue(run_dir) if run_dir is not None and run_dir.is_dir() else "run the command again"
    except OSError:  # the run folder out of reach (a folder above it without search permission)
        then = "run the command again"
    if exc.errno in IN_THE_WAY:
        return f"cannot write {name} ({exc.strerror}): a folder is where the run writes a file, or a file where it " \
            f"makes a folder; move it away, then {then}"
    if exc.errno in NO_ACCESS:
        return f"cannot read or write {name} ({exc.strerror}): give it (and its folder) read and write permission, " \
            f"then {then}"
    why, fix = write_failure(exc, run_dir)  # a full disk, or a read-only one
    return f"cannot write {name} ({why}): {fix}, then {then}"
