"""Private cold-tier folders in the temp dir: made per cache, removed by their cache, and, when a process was
killed before it could (SIGKILL runs no finalizer), by the next cache made on the machine.

Liveness is an flock on the folder's owner lock, not the pid in its name: across PID namespaces sharing the temp
dir (containers) a pid says nothing, and a live process's folder must never go (its cold file is in use).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from memory.metrics import format_bytes

try:
    import fcntl
except ImportError:  # Windows: no flock; stale folders are then judged by pid alone
    fcntl = None

COLD_DIR_PREFIX = "memstream-cold-"  # + <pid>-<random>: a private cold-tier folder in the temp dir
OWNER_LOCK = "owner.lock"  # in a private cold folder: flock-ed by the process that uses it, for as long as it lives
LEGACY_GRACE_S = 60.0  # a folder without an owner lock (older code, or one being made) is judged only this old


def _claim_cold_dir(folder: Path) -> int | None:
    """Mark `folder` as in use: an exclusive flock on its owner lock, held until the fd is closed or the process
    ends (SIGKILL included: the kernel drops it). The lock is taken before the file gets its name, so no cleaner
    sees an unlocked owner lock. Returns the fd (None where there is no flock: Windows)."""
    if fcntl is None:
        return None
    pending = folder / f".{OWNER_LOCK}.{uuid.uuid4().hex}"
    fd = os.open(pending, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a temp dir without flock (NFS without lockd, Lustre without -o flock): judged by pid, as on
        os.close(fd)  # Windows (`_owner_is_gone`: a folder without an owner lock)
        os.unlink(pending)
        return None
    os.replace(pending, folder / OWNER_LOCK)
    return fd


def _owner_is_gone(folder: Path) -> bool:
    """Whether the process that made a private cold folder has ended. The owner lock answers that across PID
    namespaces sharing the temp dir (containers), where the pid in the name may be another process's or none;
    folders without one fall back to the pid, and only once they are older than any folder still being made."""
    lock = folder / OWNER_LOCK
    if fcntl is not None and lock.exists():
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:  # another user's folder, or removed meanwhile
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:  # held: its owner lives
            return False
        finally:
            os.close(fd)
    pid = folder.name[len(COLD_DIR_PREFIX):].split("-", 1)[0]
    try:
        if not pid.isdigit() or time.time() - folder.stat().st_mtime < LEGACY_GRACE_S:
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError, OverflowError):
        return False
    return False


def _remove_stale_cold_dirs() -> None:
    """Private cold-tier folders of processes that are gone: a SIGKILLed run cannot remove its own (its finalizer
    never runs), so the next cache made on the machine does. Folders of live (or other users') processes stay."""
    for folder in Path(tempfile.gettempdir()).glob(f"{COLD_DIR_PREFIX}*-*"):
        if _owner_is_gone(folder):
            shutil.rmtree(folder, ignore_errors=True)


def remove_cold_file(file: Path | None, private_dir: str | None, lock_fd: int | None = None) -> None:
    if file is not None and file.exists():
        file.unlink()
    if private_dir is not None:
        shutil.rmtree(private_dir, ignore_errors=True)
    if lock_fd is not None:
        os.close(lock_fd)


def make_private_cold_dir() -> tuple[str, int | None]:
    """A new private cold folder, claimed by this process (its path and the owner lock's fd, for
    `remove_cold_file`); stale folders of ended processes are removed first."""
    _remove_stale_cold_dirs()
    folder = tempfile.mkdtemp(prefix=f"{COLD_DIR_PREFIX}{os.getpid()}-")
    return folder, _claim_cold_dir(Path(folder))


class ColdTierError(OSError):
    """The cold tier's file cannot be made: more entries than the disk holding it has room for, or a size the
    file system refuses. Its message is one line naming memory.cache_cold.

    The facts are attributes, set where it is raised, for callers that word the fix their own way (an evaluation
    or a resumed run keeps the run's memory.cache_cold): `folder` (where the file goes), `entries` (the tier's
    capacity, memory.cache_cold), `needed` (bytes of the full tier), `free` (bytes free in `folder`, None where not
    measured) and `reason` (the file system's words when it refused the file, None when `free` was too little).
    `problem` and `size` are the message's phrases built from them."""

    def __init__(self, folder: str | Path, entries: int, needed: int, free: int | None = None,
                 reason: str | None = None, chosen: bool = False):
        self.folder, self.entries, self.needed, self.free, self.reason = Path(folder), int(entries), int(needed), \
            free, reason
        self.chosen = chosen  # the caller's path= folder, which TMPDIR does not move
        elsewhere = "pass path= a folder" if chosen else "set TMPDIR to a folder"
        super().__init__(f"{self.problem}; lower memory.cache_cold ({self.size}) or {elsewhere} on a bigger disk")

    @property
    def problem(self) -> str:
        """What is wrong: "the cache's cold tier needs 8 KiB on disk in <folder>, which has 4 KiB free"."""
        if self.reason is not None:
            return f"the cache's cold tier file cannot be made in {self.folder} ({self.reason})"
        return (f"the cache's cold tier needs {format_bytes(self.needed)} on disk in {self.folder}, which has "
                f"{format_bytes(self.free or 0)} free")

    @property
    def size(self) -> str:
        """The tier's size: "512 entries, 8 KiB"."""
        return f"{self.entries:,} entries, {format_bytes(self.needed)}"

    def __reduce__(self):  # pickled (Ray Tune's trials) with its facts, not the message as `folder`
        return type(self), (self.folder, self.entries, self.needed, self.free, self.reason, self.chosen)


def map_cold_file(path: Path, shape: tuple[int, int, int]) -> np.memmap:
    """A new float32 memmap of `shape` (cold entries, H, dk + d) at `path`, its disk space reserved in full
    (posix_fallocate). A disk that fills under a mapping kills the process with SIGBUS, without a word or a
    checkpoint: the file was sparse, checked against the free space but holding none of it, so a checkpoint, a
    second run or anything else filling the disk later killed the run at its next cold write (exit 135). A tier that
    cannot be held in full is refused now, in one line. glibc reserves on a file system without fallocate too (it
    writes the blocks, slower); where os.posix_fallocate is missing (macOS, Windows) or refuses (EINVAL, EOPNOTSUPP)
    the file stays sparse, checked against the free space only."""
    need, folder = int(np.prod(shape, dtype=np.float64)) * 4, Path(path).parent
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ColdTierError(folder, shape[0], need, free=free)
    try:
        mapped = np.memmap(path, dtype=np.float32, mode="w+", shape=shape)
    except OSError as exc:  # e.g. EFBIG / EINVAL: a file size this file system does not allow
        raise ColdTierError(folder, shape[0], need, free=free, reason=str(exc.strerror or exc)) from None
    try:
        _reserve(path, need)
    except OSError as exc:  # another writer took the room since the check (ENOSPC), a quota (EDQUOT)
        del mapped
        now = shutil.disk_usage(folder).free
        raise ColdTierError(folder, shape[0], need, free=now,
                            reason=None if need > now else str(exc.strerror or exc)) from None
    return mapped


def _reserve(path: Path, size: int) -> None:
    """Allocate `size` bytes of `path` on its disk, so writes through a mapping of it cannot find the disk full."""
    if not hasattr(os, "posix_fallocate") or size == 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        # EOPNOTSUPP, EINVAL: not reserved here; the file stays sparse (checked against the free space)
    finally:
        os.close(fd)
