"""agents/tune_restore.py: Ray's lock folder checked before Ray starts, and a restore that Tune gives up on stopped
in one line (a real Tune restore that fails: tests/test_tune_integration.py)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from agents import tune as agents_tune
from agents.config import ConfigError
from agents.tune_restore import check_ray_lock_folder, ray_lock_folder, stop_on_failed_restore
from tests.test_tune_refusals import SMOKE, _error_line, no_ray  # noqa: F401  (no_ray: a fixture)

TUNE_CONTROLLER = logging.getLogger("ray.tune.execution.tune_controller")


def _not_writable(monkeypatch, folder: Path) -> None:
    """`folder` refuses new files to this user, as another user's folder of mode 755 does (root may write anywhere,
    so a chmod would not show it here)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs: (
        False if os.fspath(path) == os.fspath(folder) else real(path, mode, *args, **kwargs)))


def test_the_lock_folder_is_where_ray_puts_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    assert ray_lock_folder() == tmp_path / "ray" / "_ray_lockfiles"
    monkeypatch.delenv("RAY_TMPDIR")
    assert ray_lock_folder() == tmp_path / "tmp" / "_ray_lockfiles"
    monkeypatch.delenv("TMPDIR")
    assert ray_lock_folder() == Path("/tmp/_ray_lockfiles")


@pytest.mark.usefixtures("no_ray")
def test_another_user_s_lock_folder_is_one_line_before_ray_and_no_sweep_folder(monkeypatch, tmp_path, capsys):
    """For a second user of a machine every resume= failed (Tune started the sweep afresh without its search space,
    then "memory.slots: null is not a whole number"); RAY_TMPDIR gives Ray a lock folder of their own."""
    folder = tmp_path / "ray" / "_ray_lockfiles"
    folder.mkdir(parents=True)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    _not_writable(monkeypatch, folder)
    assert agents_tune.main([*SMOKE, f"runs_root={tmp_path / 'runs'}"]) == 2
    assert _error_line(capsys) == (
        f"error: Ray's lock folder {folder} is not writable by this user (another user's Ray made it): set RAY_TMPDIR "
        "to a folder of your own (e.g. RAY_TMPDIR=/tmp/$USER-ray) and run the command again")
    assert not (tmp_path / "runs").exists()


def test_a_lock_folder_still_to_be_made_or_writable_passes(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    check_ray_lock_folder()  # none yet: Ray makes it
    (tmp_path / "_ray_lockfiles").mkdir()
    check_ray_lock_folder()


def test_a_restore_tune_gives_up_on_stops_before_tune_starts_afresh(tmp_path):
    afresh = []
    with pytest.raises(ConfigError) as info, stop_on_failed_restore(tmp_path):
        try:
            raise PermissionError(errno.EACCES, "Permission denied", "/tmp/_ray_lockfiles/x.lock")
        except PermissionError:
            TUNE_CONTROLLER.exception("Failed to restore the run state.")  # Tune's words, then it starts afresh
            afresh.append("Restarting experiment.")
    assert afresh == [] and TUNE_CONTROLLER.filters == []
    assert str(info.value) == (
        f"cannot continue the sweep in {tmp_path}: Ray Tune could not restore its state (PermissionError: [Errno 13] "
        "Permission denied: '/tmp/_ray_lockfiles/x.lock'); nothing was run, and the folder is as it was")


def test_other_log_lines_and_new_sweeps_pass(tmp_path):
    with stop_on_failed_restore(tmp_path):
        TUNE_CONTROLLER.error("Trial failed.")
    with stop_on_failed_restore(tmp_path, restoring=False):  # a new sweep: nothing to restore
        TUNE_CONTROLLER.error("Failed to restore the run state.")
    assert TUNE_CONTROLLER.filters == []
