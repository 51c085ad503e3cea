"""Atomic save and checked load of the memory components' state dicts.

`memory` may not import `agents` (it is usable on its own), so the store and the cache share these two helpers
instead of the agents' checkpoint module. State dicts hold torch tensors and python scalars only, so they
load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from memory.disk import write_failure, written_path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


TEMP_SUFFIX = ".tmp"  # a temp file of `_atomic_path`: .<name>.<host tag>-<pid>.<random>.tmp next to the file
_UMASK = _read_umask()  # read once: setting it is process-wide, so not done per write (threads)


def _pid_space() -> str:
    """A tag of this machine, boot and pid namespace (hex: no "." or "-", which the temp names are parsed on): two
    processes whose tags are equal see each other's pids, so `_alive` answers for the writer. A hostname alone is
    not that: hosts can share one (containers with the host's network, each with its own pids), and a lossy
    shortening made ip-10-0-1-23 and ip-10-0-12-3 one."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(source).read_text().strip() if "boot" in source else str(os.stat(source).st_ino))
        except OSError:  # not Linux: the hostname alone
            pass
    return hashlib.sha1("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:16]  # (odd bytes too)


_WRITER_TAG = _pid_space()
STALE_S = 24 * 3600  # another writer's temp file unchanged this long: its writer is gone


def _writer_of(temp: Path) -> tuple[str, str, int] | None:
    """(file it was for, writer tag, pid) of a temp file `_atomic_path` made; None for another name (an older shape)."""
    if not (temp.name.startswith(".") and temp.name.endswith(TEMP_SUFFIX)):
        return None
    parts = temp.name[1:-len(TEMP_SUFFIX)].rsplit(".", 2)  # <name>, <host>-<pid>, mkstemp's letters (no ".")
    host, _, pid = parts[1].rpartition("-") if len(parts) == 3 else ("", "", "")
    return (parts[0], host, int(pid)) if host and pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, the pid is only checked
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (PermissionError: alive); a pid out of range: kept
        return True
    return True


def remove_dead_writers_temp_files(folder: Path, name: str | re.Pattern) -> list[Path]:
    """Remove the temp files in `folder` of the file `name` (or of names the pattern matches) whose writer has
    died: SIGKILL mid-write runs no `except`, and each kill left a temp file as large as what it was writing, next
    to a store or cache a user saves again and again. A writer with this process's tag is dead when its pid is;
    another's (another machine, boot or pid namespace: a restarted container) when its file has not changed for
    STALE_S (a save writes on until it ends, in minutes). An older shape's are left (`remove_temp_files` takes the
    run folders'). POSIX only: on Windows os.kill ends the process it is given."""
    if os.name != "posix":
        return []
    found = []
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        writer = _writer_of(temp)
        if writer is None or not (writer[0] == name if isinstance(name, str) else name.fullmatch(writer[0])):
            continue
        try:
            dead = not _alive(writer[2]) if writer[1] == _WRITER_TAG else time.time() - temp.stat().st_mtime > STALE_S
        except OSError:  # gone meanwhile (its writer renamed it)
            continue
        if dead and temp.is_file():
            temp.unlink(missing_ok=True)
            found.append(temp)
    return found


_TEMP_ROOM = 255 - len(f"..{_WRITER_TAG}-4194304.abcdefgh{TEMP_SUFFIX}")  # NAME_MAX less the temp name's own parts


def _temp_stem(name: str) -> str:
    """`name` as its temp files carry it: cut (with a digest of the whole, so two long names stay apart) where the
    temp name would pass NAME_MAX, 255 bytes; a name of 217..255 bytes was valid but its temp file ENAMETOOLONG."""
    raw = os.fsencode(name)
    if len(raw) <= _TEMP_ROOM:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:16]
    # cut at a character's boundary: a cut inside a UTF-8 sequence left a lone surrogate, a name of invalid UTF-8
    # bytes that file systems holding UTF-8 names only (APFS, ZFS utf8only) refuse; the digest keeps names apart
    head = raw[:_TEMP_ROOM - 17].decode("utf-8", "ignore")
    return head.replace(".", "_") + "~" + digest


@contextmanager
def _atomic_path(path: Path):
    """Yield a temp file's path next to `path`; when the block ends without an error the file is fsynced, given
    the permissions a plain open() would give (mkstemp's are 0600) and os.replace-d onto `path`, so readers see
    the old file or the new one, never half of one. Parent folders are created; temp files of `path` that killed
    writers left are removed (`remove_dead_writers_temp_files`). A symbolic link is written through, as a plain
    open() writes: its target is replaced and the link kept (a checkpoints/last.pt linked to another disk was replaced
    by a file on the run's disk)."""
    path = written_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = _temp_stem(path.name)
    remove_dead_writers_temp_files(path.parent, stem)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.{_WRITER_TAG}-{os.getpid()}.",
                                   suffix=TEMP_SUFFIX)
    except OSError as exc:  # a read-only disk, no inode left: named by the file being written, as below
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # fsync by path: the writer's own handle may be gone (torch.save)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:  # a plain open() of an existing file keeps its mode (a user's 0600 stays private)
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != os.fspath(path):
            # the temp file's name in the error, or none (a flush's ENOSPC): name the file being written instead
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power loss (the file's own fsync does not cover its new
    name); where folders cannot be opened or synced (Windows, some network file systems) the rename stands as is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> list[Path]:
    """Remove the temp files `_atomic_path` left in `folder` (all, or those of the files `names`) and return them.
    A process killed mid-write (SIGKILL: no `except` runs) leaves one, as large as what it was writing, each time.
    Only for a folder no other process writes into now (agents/run_lock.py: the run folder's lock)."""
    patterns = [f".*{TEMP_SUFFIX}"] if names is None else [f".{name}.*{TEMP_SUFFIX}" for name in names]
    found = {f for pattern in patterns for f in Path(folder).glob(pattern) if f.is_file()}
    for f in found:
        f.unlink(missing_ok=True)
    return sorted(found)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb"):
    """Open a temp file next to `path` for writing; it replaces `path` when the block ends without an error
    (`_atomic_path`)."""
    with _atomic_path(Path(path)) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that `exc` was raised while handling, if any (its __context__ chain). Ctrl+C while
    torch.save writes interrupts a record; torch's zip writer then fails to finish the file ("unexpected pos N vs
    M", a RuntimeError that replaces the KeyboardInterrupt), which would read as a short write (a full disk)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


# torch's zip writer reports a short write (ENOSPC underneath) as a RuntimeError that says nothing of the disk: its
# checks ("[enforce fail at inline_container.cc: ...] unexpected pos N vs M"), or the C++ stream's failure at the
# file's end ("basic_ios::clear: iostream error": a full tmpfs under a run's checkpoint, a traceback and exit 1)
_SHORT_WRITE = ("inline_container", "basic_ios::clear")


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` atomically (`atomic_file`). A write that fails (a full disk, no permission)
    raises one OSError line naming the file and the fix (the free space, or the folder to make writable); the file
    there before is kept. A Ctrl+C during the write stays a KeyboardInterrupt (the file there before is kept too)."""
    try:
        # torch.save is given the path, not a file object: a zip writer left unfinished by an interrupt (one that
        # lands after torch builds the writer, before its `with` enters) finishes the file when it is freed; given
        # a file object closed by then, that write raised inside a C++ destructor and aborted the process (SIGABRT
        # after the "interrupted" line). Given a path, the writer owns its stream.
        with _atomic_path(Path(path)) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        interrupt = _interrupt_behind(exc)
        if interrupt is not None:  # Ctrl+C inside a record's write: the file is cut short, the disk is fine
            raise interrupt from None
        if isinstance(exc, RuntimeError) and not any(words in str(exc) for words in _SHORT_WRITE):
            raise  # any other RuntimeError is a bug
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the write stopped short"
        # (a first save has no file there before: it said one was kept)
        before = "the file there before is kept" if os.path.isfile(path) else "nothing was written there"
        if isinstance(exc, OSError) and exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
            raise OSError(f"cannot write {path} ({why}): {_not_a_file_path(Path(path))}; {before}") from None
        exc = OSError(exc.errno if isinstance(exc, OSError) else errno.ENOSPC, why)  # torch's short write: a full disk
        folder = next((p for p in Path(path).parents if p.exists()), Path(path).parent)  # (the one to fix)
        why, fix = write_failure(exc, folder)
        raise OSError(f"cannot write {path} ({why}); {before}: {fix} and retry") from None


def file_stamp(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """Which version of the file at `path` is there (None: none): each atomic save's os.replace makes a new inode."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _not_a_file_path(path: Path) -> str:
    """Why `path` cannot be a file (a folder is there, or one of its parents is a file), with the fix."""
    if path.is_dir():
        return f"{path} is a folder; pass a file path (e.g. {path / 'state.pt'})"
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder; pass a path whose parents are folders"
    return "pass a file path whose parents are folders"


ZIP_MAGIC = b"PK\x03\x04"  # a zip file's first local header: every torch.save file since torch 1.6


def zip_damage(path: str | os.PathLike) -> str | None:
    """What is damaged in a torch zip file, as a phrase for messages ("its record X fails its checksum"), or None
    (every record reads back intact, or not a zip file: torch.load reports those). A flipped bit on disk shows as
    a record whose CRC-32 does not match its bytes, or as garbled headers; torch.load checks neither, and a damaged
    tensor loaded as other numbers. Reading the file once more costs ~0.1 s per 240 MB."""
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == ZIP_MAGIC
    except OSError:
        return None
    if not is_zip:
        return None
    try:
        archive = zipfile.ZipFile(path)
    except Exception:  # a garbled directory raises BadZipFile, ValueError, struct.error, ...
        return "its zip directory cannot be read"
    with archive:
        for info in archive.infolist():
            if info.CRC == 0 and info.file_size:  # not recorded (torch's save option compute_crc32=False)
                continue
            try:
                with archive.open(info) as record:
                    while record.read(1 << 24):
                        pass
            except zipfile.BadZipFile as exc:
                if "CRC" in str(exc):
                    return f"its record {info.filename} fails its checksum"
                return f"its record {info.filename} cannot be read"
            except Exception:  # a garbled local header: UnicodeDecodeError, zlib.error, ...
                return f"its record {info.filename} cannot be read"
    return None


def unreadable(path: str | os.PathLike) -> str | None:
    """Why the file `path` cannot be opened for reading ("Permission denied"), or None. Such a file is only out of
    reach: loads called it "damaged or not a torch file (PermissionError)", and a user would delete it."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def checked_torch_load(path: str | os.PathLike, what: str, fmt: str | tuple[str, ...], writer: str | None = None,
                       saved_as: str = "file") -> dict:
    """Load a dict saved by `atomic_torch_save`; a missing, unreadable, damaged or foreign file raises a one-line
    error.

    `what` names the component in messages; `fmt` is the value its "format" entry must have (or a tuple: the newest
    format first, then older ones its loader converts); `writer` names the function that writes such files (default
    `{what}.save`, for classes with save/load methods); `saved_as`: what `{what}.save` writes, the file itself or a
    folder holding `path` (FaissStore).
    """
    path = Path(path)
    if not path.is_file():
        if writer is None:
            fix = f"point {what}.load at the {saved_as} that {what}.save wrote"
        else:  # the slot and internal states are written by functions, not by a `{what}.save`
            fix = f"pass a file that {writer} wrote"
        where = f"{path} is a folder, not a file" if path.is_dir() else f"no file at {path}"
        raise FileNotFoundError(f"{what}: {where}; {fix}")
    if (why := unreadable(path)) is not None:
        raise OSError(f"{what}: cannot read {path} ({why}); give it read permission and retry")
    bad = zip_damage(path)
    if bad is not None:
        raise ValueError(f"{what}: {path} is damaged ({bad})")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file; report them as one
        raise ValueError(f"{what}: {path} is damaged or not a torch file ({type(e).__name__})") from None
    formats = (fmt,) if isinstance(fmt, str) else fmt
    if not isinstance(d, dict) or d.get("format") not in formats:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{what}: {path} has format {got!r}, expected {formats[0]!r}")
    return d
