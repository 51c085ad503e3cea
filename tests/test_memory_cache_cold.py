"""TieredKVCache's cold tier file: its private folder's life (removed by its cache, or by the next cache once its
process is gone) and a tier too big for its disk refused in one line."""

import gc
import shutil
import sys
import time
from pathlib import Path

import pytest

from memory.cache import TieredKVCache
from memory.cache_cold_dirs import COLD_DIR_PREFIX, ColdTierError


def test_a_cold_tier_bigger_than_the_free_disk_is_one_line_naming_the_key(tmp_path, monkeypatch):
    """The file is sparse: without the check a tier the disk cannot hold is made, and the process dies of SIGBUS
    (no message, no checkpoint) when the disk fills under it; a size the file system refuses was an OSError
    traceback from numpy's memmap."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ColdTierError, match=r"needs 1\.86 TiB on disk .*lower memory\.cache_cold \(1,000,000,000 "):
        TieredKVCache(heads=4, head_dim=32, hot=0, warm=0, cold=10**9, key_dim=96)  # 2 KiB per entry
    gc.collect()
    assert not list(tmp_path.glob(f"{COLD_DIR_PREFIX}*")), "the refused cache's private folder was left behind"
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real._replace(free=4096))  # a nearly full disk
    with pytest.raises(ColdTierError, match=r"needs 8 KiB on disk .* which has 4 KiB free"):
        TieredKVCache(heads=1, head_dim=2, hot=1, warm=0, cold=512)  # 512 x (2 + 2) float32
    TieredKVCache(heads=1, head_dim=2, hot=1, warm=0, cold=256).close()  # exactly what is free: accepted


def test_a_new_cache_removes_the_cold_folders_of_processes_that_are_gone(tmp_path, monkeypatch):
    """A SIGKILLed run cannot remove its private cold-tier folder (150 were left in /tmp here). Folders made by
    older code (no owner lock) are judged by their pid, once older than a folder still being made."""
    import os
    import subprocess
    import sys
    import tempfile

    from memory.cache_cold_dirs import COLD_DIR_PREFIX, LEGACY_GRACE_S

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that has exited
    stale = tmp_path / f"{COLD_DIR_PREFIX}{gone}-abc"
    new = tmp_path / f"{COLD_DIR_PREFIX}{gone}-new"  # just made: its owner may not have locked it yet
    alive = tmp_path / f"{COLD_DIR_PREFIX}{os.getpid()}-def"
    foreign = tmp_path / f"{COLD_DIR_PREFIX}notapid"
    for folder in (stale, new, alive, foreign):
        folder.mkdir()
        (folder / "cold-kv-x.f32").write_bytes(b"\0" * 16)
    old = time.time() - 2 * LEGACY_GRACE_S
    for folder in (stale, alive, foreign):
        os.utime(folder, (old, old))
    cache = TieredKVCache(heads=1, head_dim=2, hot=1, warm=1, cold=4)
    assert not stale.exists() and new.exists() and alive.exists() and foreign.exists()
    assert cache.cold_file.parent.name.startswith(f"{COLD_DIR_PREFIX}{os.getpid()}-")
    cache.close()
    assert not cache.cold_file.parent.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_a_live_process_keeps_its_cold_folder_whatever_its_pid_says(tmp_path):
    """Liveness is the owner lock: across PID namespaces sharing /tmp the pid in a folder's name can be one this
    process sees as gone. Once the owner is killed (SIGKILL: no finalizer) the next cache removes the folder."""
    import os
    import subprocess
    import tempfile

    from memory.cache_cold_dirs import COLD_DIR_PREFIX

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from memory.cache import TieredKVCache\n"
         "c = TieredKVCache(heads=1, head_dim=2, hot=1, warm=1, cold=4); print(c.cold_file.parent, flush=True)\n"
         "time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        folder = Path(owner.stdout.readline().strip())
        assert folder.parent == tmp_path and folder.exists()
        renamed = tmp_path / f"{COLD_DIR_PREFIX}{gone}-elsewhere"  # as another namespace's pid would read
        folder.rename(renamed)
        old = time.time() - 3600
        os.utime(renamed, (old, old))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tempfile, "tempdir", str(tmp_path))
            TieredKVCache(heads=1, head_dim=2, hot=1, warm=1, cold=4).close()
            assert renamed.exists(), "a live process's cold folder was removed"
            owner.kill()
            owner.wait()
            TieredKVCache(heads=1, head_dim=2, hot=1, warm=1, cold=4).close()
            assert not renamed.exists()
    finally:
        owner.kill()
        owner.wait()


@pytest.mark.skipif(not hasattr(__import__("os"), "posix_fallocate"), reason="no posix_fallocate: the file is sparse")
def test_the_cold_tier_holds_its_disk_space_so_a_disk_filled_later_cannot_kill_the_process(tmp_path, monkeypatch):
    """The file was sparse: checked against the free space but holding none of it, a run's own checkpoints (or
    another process) filled the disk after, and the next cold write died of SIGBUS (exit 135, not a word; a small
    tmpfs as TMPDIR showed it). Now its space is reserved when it is made, or the tier is refused in one line."""
    import errno
    import os

    cache = TieredKVCache(heads=2, head_dim=8, hot=1, warm=0, cold=4096, path=tmp_path)  # 4096 x 2 x 16 float32
    assert os.stat(cache.cold_file).st_blocks * 512 >= 4096 * 2 * 16 * 4, "the cold file holds no disk space"
    cache.close()

    def full(fd, offset, size):  # the disk filled between the free-space check and the reservation
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(ColdTierError, match=r"cold tier file cannot be made in .* \(No space left on device\); "
                                            r"lower memory\.cache_cold \(4,096 entries, 512 KiB\) or pass path="):
        TieredKVCache(heads=2, head_dim=8, hot=1, warm=0, cold=4096, path=tmp_path)
    gc.collect()
    assert not list(tmp_path.glob("cold-kv-*")), "the refused tier's file was left"


def test_a_loaded_cache_puts_its_cold_tier_in_cold_path_and_a_failed_load_leaves_no_file(tmp_path, monkeypatch):
    """load(cold_path=) is where the loaded cache's cold file goes (a caller's bigger disk; TMPDIR's may not hold
    it), with the saved cold entries read back exactly; a file that fails its checks after the cache was made
    leaves no cold file there and no private folder in the temp dir."""
    import tempfile

    import numpy as np
    import torch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    rng = np.random.default_rng(3)
    keys, values = rng.standard_normal((10, 2, 4), dtype=np.float32), rng.standard_normal((10, 2, 4),
                                                                                            dtype=np.float32)
    cache = TieredKVCache(heads=2, head_dim=4, hot=2, warm=0, cold=8)
    cache.put(np.arange(10), keys, values)
    cold_ids = np.flatnonzero(cache.tier_of(np.arange(10)) == 2)
    assert len(cold_ids) == 8
    cache.save(tmp_path / "c.pt")
    cache.close()
    there = tmp_path / "there"
    back = TieredKVCache.load(tmp_path / "c.pt", cold_path=there)
    assert back.cold_file.parent == there and back.cold_file.exists()
    k, v, found = back.get_batch(cold_ids)
    assert found.all()
    np.testing.assert_array_equal(k.numpy(), keys[cold_ids])  # float32 cold tier: bit for bit
    np.testing.assert_array_equal(v.numpy(), values[cold_ids])
    back.close()
    assert not list(there.glob("cold-kv-*"))
    d = torch.load(tmp_path / "c.pt", weights_only=True)
    d["data"]["cold"] = d["data"]["cold"][:-1]  # one cold entry short: refused by load_state_dict
    torch.save(d, tmp_path / "short.pt")
    for cold_path in (there, None):
        try:  # the error, while held (its traceback keeps the load's frame and its cache alive), left nothing
            TieredKVCache.load(tmp_path / "short.pt", cold_path=cold_path)
        except ValueError as exc:
            error = exc
        assert "cold data" in str(error)
        assert not list(there.glob("cold-kv-*")), "a failed load left its cold file"
        assert not list((tmp_path / "tmp").glob(f"{COLD_DIR_PREFIX}*")), "a failed load left its private folder"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc")
def test_closing_caches_releases_their_owner_locks(tmp_path, monkeypatch):
    """Each private cold folder holds an flock-ed file open; close() must close it, or a tune run making a cache
    per trial runs out of file descriptors (and the kernel lock outlives the folder)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    TieredKVCache(heads=1, head_dim=2, hot=1, warm=0, cold=4).close()  # imports and first-use files opened
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(20):
        TieredKVCache(heads=1, head_dim=2, hot=1, warm=0, cold=4).close()
    assert len(list(Path("/proc/self/fd").iterdir())) == before
    assert not list(tmp_path.glob(f"{COLD_DIR_PREFIX}*"))
