"""Writes and reads that fail at the product's files: a disk that fills in the middle of torch's write, a folder
without write permission, a file without read permission. Each is one line naming the file, the problem and the
fix, and what was there before stays whole. Simulated (the OSError raised where the kernel would raise it), so they
run anywhere, also as root, whom permissions do not stop; a 1.6 MB tmpfs and a folder without rights showed the
same."""

from __future__ import annotations

import builtins
import errno
import os
import re
import tempfile

import pytest
import torch

from agents import evaluate, run
from agents.checkpoint import load_checkpoint
from memory.persist import atomic_torch_save
from tests.os_patch import patch_os
from tests.test_run import tiny
from tests.test_run_disk_full import full_disk_at


def _no_write_permission_in(monkeypatch, folder) -> None:
    """A new file in `folder` is refused, as in a folder without write permission (the temp file is the first)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.fspath(dir) == os.fspath(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, "tmpname"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def assert_unreadable_checkpoint_refused(given, checkpoint, capsys) -> None:
    """agents.run's resume= and agents.evaluate's checkpoint= of `given` are each one line: `checkpoint` cannot be
    read, and the fix is its read permission (not "damaged ... start afresh")."""
    capsys.readouterr()
    line = (f"error: cannot read checkpoint '{checkpoint}' (Permission denied); give it (and the folders above it) "
            "read permission, then retry")
    assert run.main([f"resume={given}", "train.progress=false"]) == 2
    assert capsys.readouterr().err.strip() == line
    assert evaluate.main([f"checkpoint={given}"]) == 2
    assert capsys.readouterr().err.strip() == line


def _no_read_permission_on(monkeypatch, path) -> None:
    real = builtins.open

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == os.fspath(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)


def test_no_write_permission_names_the_folder_to_fix_not_free_space(tmp_path, monkeypatch):
    """It said "(Permission denied; 52 GiB free there) ...: free space (or fix the folder's permissions)"."""
    path = tmp_path / "cache.pt"
    atomic_torch_save({"a": torch.zeros(3)}, path)
    before = path.read_bytes()
    _no_write_permission_in(monkeypatch, tmp_path)
    with pytest.raises(OSError) as info:
        atomic_torch_save({"a": torch.ones(3)}, path)
    assert str(info.value) == (f"cannot write {path} (Permission denied); the file there before is kept: make "
                               f"{tmp_path} writable and retry")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["cache.pt"]


def test_no_permission_for_a_new_folder_names_the_folder_that_exists(tmp_path, monkeypatch):
    """A save into a folder still to be made, under one without write permission: the one to fix is the latter."""
    real = os.mkdir

    def mkdir(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(tmp_path / "store"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path, *args, **kwargs)

    patch_os(monkeypatch, "mkdir", mkdir)
    with pytest.raises(OSError) as info:
        atomic_torch_save({"a": torch.ones(3)}, tmp_path / "store" / "store.pt")
    assert str(info.value) == (f"cannot write {tmp_path / 'store' / 'store.pt'} (Permission denied); nothing was "
                               f"written there: make {tmp_path} writable and retry")


def test_no_write_permission_at_a_checkpoint_is_one_line_and_resume_continues(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.pt"
    from agents.trainer import Trainer

    real_save, calls = Trainer.save, []

    def save(self, config):
        calls.append(1)
        if len(calls) == 2:  # the folder's rights were taken after the first checkpoint
            _no_write_permission_in(monkeypatch, checkpoint.parent)
        return real_save(self, config)

    monkeypatch.setattr(Trainer, "save", save)
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.checkpoint_every=1")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: checkpoint: cannot write {checkpoint} (Permission denied); the file there before is "
                   f"kept: make {checkpoint.parent} writable and retry; then continue with resume={run_dir}")
    assert load_checkpoint(checkpoint)["trainer"]["episode"] == 1
    assert os.listdir(checkpoint.parent) == ["last.pt"]
    monkeypatch.undo()
    assert run.main([f"resume={run_dir}", "train.progress=false"]) == 0
    assert load_checkpoint(checkpoint)["trainer"]["episode"] == 2 and (run_dir / "metrics.json").is_file()


def test_a_checkpoint_without_read_permission_is_not_called_damaged(tmp_path, capsys, monkeypatch):
    """resume= and agents.evaluate said "is damaged or not a memstream checkpoint ...; resume from another run or
    start afresh" of a whole checkpoint they could not open: the fix it gave throws the run away."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    checkpoint = run_dir / "checkpoints" / "last.pt"
    before = checkpoint.read_bytes()
    _no_read_permission_on(monkeypatch, checkpoint)
    assert_unreadable_checkpoint_refused(run_dir, checkpoint, capsys)
    monkeypatch.undo()
    assert checkpoint.read_bytes() == before and load_checkpoint(checkpoint)["trainer"]["episode"] == 1


def test_a_memory_file_without_read_permission_is_not_called_damaged(tmp_path, monkeypatch):
    """TieredKVCache.load (FaissStore.load, the slot and internal states: the same loader) said "is damaged or not
    a torch file (PermissionError)"."""
    from memory.cache import TieredKVCache

    path = tmp_path / "cache.pt"
    cache = TieredKVCache(2, 8, 4, 4, 16)
    cache.save(path)
    cache.close()
    _no_read_permission_on(monkeypatch, path)
    with pytest.raises(OSError) as info:
        TieredKVCache.load(path)
    assert str(info.value) == (f"TieredKVCache: cannot read {path} (Permission denied); give it read permission "
                               "and retry")
    monkeypatch.undo()
    TieredKVCache.load(path).close()


def test_a_store_save_that_fails_at_its_commit_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    """FaissStore.save writes its index file, then store.pt (the commit). A full disk at store.pt kept the save
    before (its store.pt names its own index), but left the new index file, the larger part, on the full disk
    until a later save committed: a retry after freeing its size failed again."""
    from memory.store import FaissStore

    folder = tmp_path / "store"
    store = FaissStore(8, 8, capacity=16)
    store.add(torch.randn(4, 8), torch.randn(4, 8), lanes=[0] * 4)
    store.save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    full_disk_at(monkeypatch, "store.pt")
    bigger = FaissStore(8, 8, capacity=16)
    bigger.add(torch.randn(6, 8), torch.randn(6, 8), lanes=[0] * 6)
    with pytest.raises(OSError, match=r"^cannot write .*store\.pt \(No space left on device; .* free there\); the "
                                      r"file there before is kept: free space"):
        bigger.save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no new index file, no temp file
    assert len(FaissStore.load(folder)) == 4


def test_a_full_disk_as_a_sweep_writes_its_plan_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """sweep.yaml is written once Ray has started: a full disk there was an OSError traceback, exit 1, and a sweep
    folder with no plan, which resume= then refused."""
    import logging

    from agents import tune, tune_preflight

    monkeypatch.setattr(logging.getLogger("ray"), "handlers", [])  # the Ray logger's own, put back after the test
    monkeypatch.setattr(tune, "start_ray", lambda sweep_dir: tune_preflight.log_ray_to(sweep_dir) or False)
    full_disk_at(monkeypatch, "sweep.yaml")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    (tmp_path / "keep").write_text("")
    assert tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: cannot write {re.escape(str(tmp_path))}/sweeps/smoke/[^/\n]+/sweep\.yaml \(No space "
                        r"left on device; \d[^;\n]* free there\): free space, then start the sweep again", err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no sweep folder left, no temp file


def test_no_write_permission_at_a_sweep_s_results_says_so_not_free_space(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from agents import tune

    monkeypatch.setattr(tune, "result_rows", lambda trials, plan, metric: [])
    _no_write_permission_in(monkeypatch, tmp_path)
    plan = SimpleNamespace(metric="cl/ACC", name="s", mode="max", search_space={})
    assert tune._report([], plan, {}, tmp_path) == 2
    assert capsys.readouterr().err.strip() == (f"error: cannot write the results in {tmp_path} (Permission denied); "
                                               "make it writable, then write them again with: python -m agents.tune "
                                               f"resume={tmp_path}")


def test_a_full_disk_at_the_run_folder_s_new_lock_file_is_one_line_and_releases_it(tmp_path, capsys, monkeypatch):
    """resume= of a run folder without a .run.lock (copied, or from before the lock) on a full disk: writing its
    pid into the new lock file failed with an OSError traceback (exit 1) and kept the lock's fd open."""
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    (run_dir / "metrics.json").unlink()  # stopped while writing its report: resume= has a report to write
    (run_dir / ".run.lock").unlink()
    checkpoint = (run_dir / "checkpoints" / "last.pt").read_bytes()

    def pwrite(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", pwrite)
    capsys.readouterr()
    assert run.main([f"resume={run_dir}", "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: cannot lock the run folder '{re.escape(str(run_dir))}' \(\.run\.lock: No space left "
                        r"on device; \d[^;\n]* free there\): free space, then run the command again", err), err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == checkpoint
    monkeypatch.undo()
    assert run.main([f"resume={run_dir}", "train.progress=false"]) == 0  # the lock was released (same process)
    assert (run_dir / "metrics.json").is_file()
