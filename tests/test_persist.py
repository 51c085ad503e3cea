"""Atomic writes (memory/persist.py `atomic_file`), used by checkpoints, memory files, metrics.json and plots."""

import os

import pytest
import torch

from agents.report import write_text_atomic
from memory.persist import atomic_file, atomic_torch_save


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
