"""A folder without search (x) permission on the way to a file the product reads or writes: every look inside it
is refused, and Path.is_file / is_dir / exists raise PermissionError for it (Python < 3.14), where they were
tracebacks (exit 1). Each is one line naming the path and the fix. Simulated, so they run anywhere (root too);
a chmod 000 folder and a user without rights (setpriv without CAP_DAC_OVERRIDE) showed the same."""

from __future__ import annotations

import errno
import os
import re

import pytest

from agents import evaluate, run
from tests.os_patch import patch_os
from tests.test_run import tiny
from tests.test_write_failures import _no_read_permission_on, assert_unreadable_checkpoint_refused


def _no_search_permission_in(monkeypatch, folder, *also) -> None:
    """Every look at a path inside `folder` (and at the paths `also`) is refused, as in a folder without search (x)
    permission; `folder` itself can be looked at."""
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if os.fspath(path).startswith(f"{folder}{os.sep}") or os.fspath(path) in map(os.fspath, also):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_stat(path, *args, **kwargs)

    patch_os(monkeypatch, "stat", stat)
    patch_os(monkeypatch, "lstat", stat)


@pytest.mark.parametrize("named", ["run folder", "checkpoint file"])
def test_a_checkpoints_folder_without_search_permission_is_one_line(tmp_path, capsys, monkeypatch, named):
    """checkpoints/ without x: every look at last.pt is refused, and Path.is_file raised it (Python < 3.14): resume=
    and agents.evaluate were a PermissionError traceback, exit 1."""
    run_dir = tmp_path / "run"
    given = run_dir if named == "run folder" else run_dir / "checkpoints" / "last.pt"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    checkpoint = run_dir / "checkpoints" / "last.pt"
    before = checkpoint.read_bytes()
    _no_read_permission_on(monkeypatch, checkpoint)
    _no_search_permission_in(monkeypatch, checkpoint.parent)
    assert_unreadable_checkpoint_refused(given, checkpoint, capsys)
    monkeypatch.undo()
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("given", ["resume", "run_dir", "runs_root"])
def test_a_folder_without_search_permission_is_one_line(tmp_path, capsys, monkeypatch, given):
    """A run folder (or runs_root) without x: every look inside it is refused, and Path.is_dir / exists raised it
    (Python < 3.14): resume=, run_dir= and runs_root= of one were a PermissionError traceback, exit 1."""
    folder = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", folder, "train.episodes=1")) == 0
    _no_search_permission_in(monkeypatch, folder)
    capsys.readouterr()
    fresh = [a for a in tiny("ContinualShift-v0", "memnet", folder) if not a.startswith("run_dir=")]
    argv = {"resume": [f"resume={folder}"], "run_dir": [*fresh, f"run_dir={folder}"],
            "runs_root": [*fresh, f"runs_root={folder}"]}[given]
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: cannot read or write {re.escape(str(folder))}/\S+ \(Permission denied\): give it "
                        r"\(and its folder\) read and write permission, then run the command again", err), err


def test_a_sweep_folder_out_of_reach_is_one_line(tmp_path, capsys, monkeypatch):
    """runs_root= without search permission (Path.exists raised it while the sweep folder was named), and resume= of a
    sweep folder that may not be read (Tune's restore: pyarrow's PermissionError): both were tracebacks, exit 1."""
    from agents import tune

    root = tmp_path / "root"
    root.mkdir()
    real_listdir = os.listdir

    def listdir(path="."):
        if os.fspath(path) == os.fspath(root):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_listdir(path)

    _no_search_permission_in(monkeypatch, root)
    patch_os(monkeypatch, "listdir", listdir)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert tune.main(["env=ContinualShift-v0", "sweep=smoke", f"runs_root={root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: cannot create the sweep folder '{re.escape(str(root))}/sweeps/smoke/[^/']+' "
                        r"\(Permission denied\); choose another runs_root=", err), err
    assert tune.main([f"resume={root}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: resume='{root}': cannot read it (Permission denied); give it "
                                               "(and the folders above it) read and search permission, then run "
                                               "the command again")


def test_an_out_file_in_a_folder_without_search_permission_is_one_line(tmp_path, capsys, monkeypatch):
    """agents.evaluate's out= inside a folder without x: Path.is_dir raised PermissionError, a traceback while the
    command started."""
    run_dir, blocked = tmp_path / "run", tmp_path / "blocked"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "train.episodes=1")) == 0
    blocked.mkdir()
    _no_search_permission_in(monkeypatch, blocked)
    capsys.readouterr()
    assert evaluate.main([f"checkpoint={run_dir}", f"out={blocked / 'eval.json'}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: out='{blocked / 'eval.json'}': cannot look there (Permission "
                                               "denied); name a file elsewhere")
