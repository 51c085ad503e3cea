"""Atomic writes (memory/persist.py `atomic_file`), used by checkpoints, memory files, metrics.json and plots."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from agents.report import write_text_atomic
from memory.persist import atomic_file, atomic_torch_save


def exited_pid() -> str:
    """The pid of a process that has exited (a dead writer's, in a temp file's name)."""
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=300).stdout.strip()


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_files_get_the_permissions_a_plain_open_gives(tmp_path):
    (tmp_path / "plain.txt").write_text("x")  # what the umask makes of a new file
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "ckpt.pt")
    write_text_atomic(tmp_path / "metrics.json", "{}")
    assert _mode(tmp_path / "ckpt.pt") == _mode(tmp_path / "plain.txt")  # mkstemp alone gives 0600
    assert _mode(tmp_path / "metrics.json") == _mode(tmp_path / "plain.txt")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_file(path, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("where", ["the pickle", "a tensor"])
def test_a_flipped_byte_in_a_saved_file_is_reported_damaged_not_loaded_as_other_numbers(tmp_path, where):
    """torch.load does not check the zip records' CRC-32: a flipped bit loaded as another number."""
    from agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from memory.persist import atomic_torch_save, checked_torch_load

    payload = {"weights": torch.arange(4096, dtype=torch.float32)}
    atomic_torch_save({"format": "x/1", **payload}, tmp_path / "store.pt")
    save_checkpoint(tmp_path / "last.pt", {"config": {}, **payload})
    for name in ("store.pt", "last.pt"):
        data = bytearray((tmp_path / name).read_bytes())
        at = data.find(b"data.pkl") + 200 if where == "the pickle" else data.find(b"\x00\x00\x80\x3f")  # 1.0f
        data[at] ^= 0x01
        (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"store.pt is damaged \(its record .* fails its checksum\)"):
        checked_torch_load(tmp_path / "store.pt", "FaissStore", "x/1")
    with pytest.raises(CheckpointError, match=r"last.pt' is damaged \(its record .* fails its checksum\); resume"):
        load_checkpoint(tmp_path / "last.pt")


def test_a_file_saved_without_checksums_still_loads(tmp_path):
    """torch's documented save option compute_crc32=False writes CRC 0: nothing to verify, not damage."""
    serialization = pytest.importorskip("torch.utils.serialization", reason="no compute_crc32 save option (torch 2.6)")
    config = serialization.config

    from agents.checkpoint import load_checkpoint, save_checkpoint

    previous = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        save_checkpoint(tmp_path / "last.pt", {"config": {}, "weights": torch.ones(64)})
    finally:
        config.save.compute_crc32 = previous
    with pytest.raises(Exception, match="incomplete"):  # past the checksum: the body lacks the other fields
        load_checkpoint(tmp_path / "last.pt")


def test_no_single_flipped_byte_loads_as_other_content(tmp_path):
    """Every byte of a small memory file, flipped in turn: the load either raises the one-line damaged error or
    gives back exactly what was saved (zip padding, unused header fields). A flipped file-name length in a local
    header made zipfile raise UnicodeDecodeError, taken for "not a zip", and torch.load read shifted bytes."""
    import numpy as np

    from memory.persist import checked_torch_load

    saved = {"format": "x/1", "values": torch.arange(24, dtype=torch.float32).reshape(4, 6), "count": 7}
    atomic_torch_save(saved, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    silent = []
    for at in range(len(good)):
        data = bytearray(good)
        data[at] ^= 0x04
        (tmp_path / "bad.pt").write_bytes(bytes(data))
        try:
            got = checked_torch_load(tmp_path / "bad.pt", "FaissStore", "x/1")
        except ValueError as exc:
            assert "\n" not in str(exc) and "bad.pt" in str(exc)
            continue
        same = (set(got) == set(saved) and got["count"] == saved["count"] and got["format"] == saved["format"]
                and torch.equal(got["values"], saved["values"]))
        if not same:
            silent.append(at)
    assert not silent, f"flips at bytes {silent[:10]} of {len(good)} loaded as other content"
    assert np.frombuffer(good[:4], np.uint8).tolist() == [0x50, 0x4B, 3, 4]  # a zip file, as torch.save writes


@pytest.mark.parametrize("failure", ["torch", "os"])
def test_ctrl_c_inside_a_write_stays_an_interrupt_not_a_full_disk(tmp_path, monkeypatch, failure):
    """Ctrl+C in a record's write leaves torch's zip writer unable to finish the file: the error it raises in its
    place ("unexpected pos N vs M", or an OSError of the file) was reported as a short write on a full disk."""
    path = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.zeros(3)}, path)

    def save(obj, f, *args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:  # what torch's writer does: fail while the interrupt unwinds
            if failure == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 27 vs 25")  # noqa: B904
            raise OSError(5, os.strerror(5))  # noqa: B904 (implicit chaining, as torch)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": torch.ones(3)}, path)
    monkeypatch.undo()
    assert torch.load(path)["a"].tolist() == [0.0, 0.0, 0.0] and os.listdir(tmp_path) == ["x.pt"]


_INTERRUPTED_SAVE = """
import gc, sys, torch, torch.serialization as ser
from memory.persist import atomic_torch_save
built = ser._opener.__init__
def init(self, file_like):  # the interrupt lands once torch.save has built its zip writer, before its `with` enters
    built(self, file_like)
    raise KeyboardInterrupt
ser._opener.__init__ = init
try:
    atomic_torch_save({"a": torch.ones(3)}, sys.argv[1])
except KeyboardInterrupt:
    print("interrupted", flush=True)
gc.collect()  # frees the unfinished writer, which then finishes its file
print("end", flush=True)
"""


def test_an_interrupt_before_torch_saves_writer_starts_does_not_abort_the_process(tmp_path):
    """A zip writer left unfinished finishes its file when it is freed. Given the temp file as a file object, closed
    by then, that write raised inside a C++ destructor: `terminate called after throwing an instance of
    'pybind11::error_already_set' what(): ValueError: write to closed file`, SIGABRT, after a SIGTERM-ed run had
    printed its "interrupted" line (seen once in CI)."""
    path = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.zeros(3)}, path)
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_SAVE, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert (proc.returncode, proc.stdout.split()) == (0, ["interrupted", "end"]), proc.stderr
    assert torch.load(path)["a"].tolist() == [0.0, 0.0, 0.0] and os.listdir(tmp_path) == ["x.pt"]


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    """The file was fsynced before its rename, the folder never: a power loss could lose the new name."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "a.pt")
    if sys.platform.startswith("linux"):
        assert synced[-1] == str(tmp_path.resolve())  # the folder, after the file
    assert len(synced) == 2 and torch.load(tmp_path / "a.pt", weights_only=True)["x"].sum() == 2


def test_a_saved_state_without_one_of_its_settings_says_it_is_damaged():
    """A store.pt without its 'metric' said "build it with the saved settings or use FaissStore.load(path)" to a
    caller of FaissStore.load."""
    from memory.store import FaissStore

    d = FaissStore(4, 2, capacity=4).state_dict()
    del d["config"]["metric"]
    with pytest.raises(ValueError, match=r"^FaissStore: the saved state lacks its setting 'metric'; it is damaged$"):
        FaissStore(4, 2, capacity=4).load_state_dict(d)


_KILLED_SAVE = """
import os, signal, sys, torch
from memory.store import FaissStore
store = FaissStore(4, 2, capacity=8)
store.add(torch.ones(1, 4), torch.ones(1, 2), lanes=[0])
real_save = torch.save
def save(obj, path, *args, **kwargs):  # SIGKILL once the temp file holds part of the write: no `except` runs
    real_save(obj, path, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
store.save(sys.argv[1])
"""


@pytest.mark.skipif(os.name != "posix", reason="a writer's pid is checked with os.kill(pid, 0)")
def test_the_next_save_removes_the_temp_files_that_killed_saves_left(tmp_path):
    """SIGKILL mid-save (no `except` runs) left a temp file as large as the write next to the store, one per kill,
    forever (only run folders were cleaned, by agents.run). The next save of that file removes those of dead
    writers of this machine, and keeps a live writer's and another machine's (a shared file system)."""
    from memory.persist import _WRITER_TAG
    from memory.store import FaissStore

    folder = tmp_path / "store"
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(folder)], capture_output=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and all(n.startswith(".index-") and n.endswith(".tmp") for n in left), left
    # an index file's temp; the same name (store.pt) for the others: a live writer, another host, an older shape
    live = folder / f".store.pt.{_WRITER_TAG}-{os.getpid()}.abc.tmp"
    other_host = folder / f".store.pt.{_WRITER_TAG}x-1.abc.tmp"
    older = folder / ".store.pt.k9x2a1.tmp"
    dead_pid = exited_pid()
    dead = folder / f".store.pt.{_WRITER_TAG}-{dead_pid}.abc.tmp"
    stale = folder / ".store.pt.0a1b2c3d-77.abc.tmp"  # another boot's or container's, untouched for two days
    for f in (live, other_host, older, dead, stale):
        f.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    store = FaissStore(4, 2, capacity=8)
    store.add(torch.full((1, 4), 2.0), torch.ones(1, 2), lanes=[0])
    store.save(folder)
    names = {p.name for p in folder.iterdir()}
    assert {live.name, other_host.name, older.name} <= names and dead.name not in names and stale.name not in names
    assert not any(n.startswith(".index-") for n in names)  # the killed saves' index temps: removed
    loaded = FaissStore.load(folder)  # the save itself is whole
    values, meta = loaded.get(loaded.search(torch.full((1, 1, 4), 2.0), 1).ids)
    assert len(loaded) == 1 and meta["found"].all() and values.tolist() == [[[[1.0, 1.0]]]]


def test_the_writer_tag_tells_apart_hosts_that_a_shortened_name_made_one(monkeypatch):
    """The tag was the hostname's letters and digits: ip-10-0-1-23 and ip-10-0-12-3 were one host, and a live save
    of the other was taken for a dead writer of this one (its pid is not running here) and removed mid-write."""
    import socket

    from memory import persist

    tags = set()
    for name in ("ip-10-0-1-23", "ip-10-0-12-3", "gpu-1-2", "gpu-12"):
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        tags.add(persist._pid_space())
    assert len(tags) == 4 and all(t.isalnum() for t in tags)


def test_a_hostname_with_undecodable_bytes_still_makes_a_tag(monkeypatch):
    import socket

    from memory import persist

    monkeypatch.setattr(socket, "gethostname", lambda: "h\udcff")  # what Python makes of a non-UTF-8 name
    assert persist._pid_space().isalnum()


@pytest.mark.parametrize("first", [True, False])
def test_a_failed_save_says_whether_a_file_was_there_before(tmp_path, monkeypatch, first):
    """A full disk at a file's first save said "the file there before is kept", of a file that never was."""
    import errno
    import re

    path = tmp_path / "c.pt"
    if not first:
        atomic_torch_save({"x": torch.ones(3)}, path)
    kept = None if first else path.read_bytes()

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    said = "nothing was written there" if first else "the file there before is kept"
    with pytest.raises(OSError, match=rf"^cannot write {re.escape(str(path))} \(No space left on device; .* free "
                                      rf"there\); {said}: free space"):
        atomic_torch_save({"x": torch.zeros(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ([] if first else ["c.pt"])
    assert first or path.read_bytes() == kept


@pytest.mark.skipif(os.name != "posix", reason="a writer's pid is checked with os.kill(pid, 0)")
def test_a_save_removes_only_its_own_files_dead_temp_files(tmp_path):
    """A save of `state.pt` cleans the temp files dead writers left of `state.pt`, not those of `state.pt.bak`
    beside it (whose name it prefixes): that file's cleaning belongs to its own next save."""
    from memory.persist import _WRITER_TAG, atomic_file

    dead_pid = exited_pid()
    own = tmp_path / f".state.pt.{_WRITER_TAG}-{dead_pid}.abc.tmp"
    longer = tmp_path / f".state.pt.bak.{_WRITER_TAG}-{dead_pid}.abc.tmp"
    for f in (own, longer):
        f.write_bytes(b"partial")
    with atomic_file(tmp_path / "state.pt") as f:
        f.write(b"whole")
    assert not own.exists() and longer.exists()
    assert (tmp_path / "state.pt").read_bytes() == b"whole"


def test_a_save_that_fails_with_another_runtime_error_keeps_it_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """Only torch's short-write error (inline_container) is a full disk; any other RuntimeError is a bug, raised as
    it is (it read as "cannot write ... free space"), and the temp file goes with it."""
    from memory.persist import atomic_torch_save

    def broken(obj, path):
        open(path, "wb").write(b"part")
        raise RuntimeError("a bug while pickling")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug while pickling"):
        atomic_torch_save({"a": 1}, tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []


class Opens:
    """Unpickling it calls open(path, "w"): code a file could run when loaded with weights_only=False."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_memory_file_or_checkpoint_holding_a_pickled_object_is_refused_without_running_it(tmp_path):
    """Memory files and checkpoints load with weights_only=True (README): a file that would run code when unpickled is
    one line, and the code does not run. Was untested: weights_only=False loaded it, and no test failed."""
    from agents.checkpoint import FORMAT, CheckpointError, load_checkpoint
    from memory.persist import checked_torch_load

    ran = tmp_path / "ran"
    torch.save({"format": "memstream.TieredKVCache/2", "x": Opens(ran)}, tmp_path / "cache.pt")
    with pytest.raises(ValueError, match=r"cache.pt is damaged or not a torch file \(UnpicklingError\)"):
        checked_torch_load(tmp_path / "cache.pt", "TieredKVCache", "memstream.TieredKVCache/2")
    torch.save({"format": FORMAT, "x": Opens(ran)}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"damaged or not a memstream checkpoint \(UnpicklingError\)"):
        load_checkpoint(tmp_path / "last.pt")
    assert not ran.exists()
