"""Why a write failed, for one-line messages: how much room a folder's disk has, and the fix a failed write calls for
(every writer of the project words its line with these); and which file a write replaces (`written_path`: a link's
target). No torch: the command lines' checks use it before torch loads."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

NO_RIGHTS = (errno.EACCES, errno.EPERM, errno.EROFS)  # a write refused: the fix is the folder's rights, not room


def free_there(folder: str | os.PathLike) -> str:
    """How much a folder's disk has free, as a message phrase ("3.2 MiB free there")."""
    from memory.metrics import format_bytes  # here: memory.metrics imports the modules that import this one

    try:
        return f"{format_bytes(shutil.disk_usage(folder).free)} free there"
    except OSError:
        return "its folder cannot be read"


def write_failure(exc: OSError, folder: str | os.PathLike) -> tuple[str, str]:
    """(what went wrong, the fix) of a write into `folder` that failed: refused (`NO_RIGHTS`: no permission, a
    read-only disk) -> make the folder writable; anything else (a full disk) -> the free space, and free space. One
    rule for every writer's line: a refused write said "N GiB free there: free space"."""
    why = exc.strerror or str(exc)
    if exc.errno in NO_RIGHTS:
        return why, f"make {folder} writable"
    return f"{why}; {free_there(folder)}", "free space"


def written_path(path: Path) -> Path:
    """The file an atomic save of `path` replaces: a symbolic link's target, where the target's folder exists (a
    dangling link into a folder that is not there, a disk not mounted: no folder is made there, and the link itself
    is replaced, as before links were written through); else `path`."""
    if path.is_symlink() and Path(os.path.realpath(path)).parent.is_dir():
        return Path(os.path.realpath(path))
    return path
