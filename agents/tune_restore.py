"""What a sweep's resume needs from this machine, and a restore that Ray Tune gives up on.

When Tune cannot restore a sweep's saved state it logs "Failed to restore the run state." and starts the experiment
afresh in the same folder, without the sweep's search space: one trial of the base config ran, and `agents.tune
resume=` then ended in "memory.slots: null is not a whole number", far from the cause. Seen for a second user of a
machine: Ray's lock folder in /tmp belonged to the first (created with mode 755), so Tune's lock for reading the
saved state was refused."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from agents.config import ConfigError

RESTORE_FAILED = "Failed to restore the run state"  # Tune's words (ray.tune.execution.tune_controller)


def ray_lock_folder() -> Path:
    """Where Ray keeps its file locks: `_ray_lockfiles` in $RAY_TMPDIR, else $TMPDIR (Linux), else /tmp (Ray's
    `get_default_system_temp_dir`, a private function, so its rule is repeated here)."""
    if "RAY_TMPDIR" in os.environ:
        top = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        top = os.environ["TMPDIR"]
    elif sys.platform.startswith(("linux", "darwin")):
        top = "/tmp"
    else:
        import tempfile

        top = tempfile.gettempdir()
    return Path(top) / "_ray_lockfiles"


def unwritable_ray_lock_folder() -> Path | None:
    """Ray's lock folder where it exists but this user may not make files in it (another user's Ray made it)."""
    folder = ray_lock_folder()
    return folder if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK) else None


def check_ray_lock_folder() -> None:
    """One line, before Ray starts, where this user may not make files in Ray's lock folder: Tune's restore and the
    trials' checkpoint reads take a lock there."""
    folder = unwritable_ray_lock_folder()
    if folder is not None:
        raise ConfigError(f"Ray's lock folder {folder} is not writable by this user (another user's Ray made it): "
                          "set RAY_TMPDIR to a folder of your own (e.g. RAY_TMPDIR=/tmp/$USER-ray) and run the command "
                          "again")


class RestoreFailed(Exception):
    """Raised out of Tune's log call for a failed restore, before Tune starts the experiment afresh."""


class _StopOnFailedRestore(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(RESTORE_FAILED):
            raise RestoreFailed(record.exc_info[1] if record.exc_info else None)
        return True


@contextmanager
def stop_on_failed_restore(sweep_dir: Path, restoring: bool = True):
    """While Tune runs a restored sweep: a restore it gives up on is one line naming Tune's reason, before it starts
    anything in the folder (a filter's exception leaves the logging call; a handler's would be swallowed)."""
    if not restoring:
        yield
        return
    logger = logging.getLogger("ray.tune.execution.tune_controller")
    stop = _StopOnFailedRestore()
    logger.addFilter(stop)
    try:
        yield
    except RestoreFailed as exc:
        cause = exc.args[0]
        why = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}" if cause else "see its ray.log"
        raise ConfigError(f"cannot continue the sweep in {sweep_dir}: Ray Tune could not restore its state ({why}); "
                          "nothing was run, and the folder is as it was") from None
    finally:
        logger.removeFilter(stop)
