"""Mutation round 7 (support modules): behaviours of memory/disk.py, ram.py, persist.py, undo.py, losses.py and
agents/plots.py that no other test pinned down."""

import errno
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.plots import plot_slot_usage_heatmap
from memory import ram
from memory.disk import free_there, write_failure
from memory.losses import pressure_loss
from memory.persist import _writer_of, atomic_file, atomic_torch_save, checked_torch_load
from memory.slots import SlotState, WriteInfo
from memory.store import FaissStore
from memory.undo import RowUndo


def test_the_free_space_of_a_folder_that_cannot_be_read_is_said_so(tmp_path):
    """A failed write into a folder whose disk cannot be asked says so in its line (no "N GiB free there")."""
    missing = tmp_path / "gone"
    assert free_there(missing) == "its folder cannot be read"
    assert write_failure(OSError(errno.ENOSPC, "No space left on device"), missing) == (
        "No space left on device; its folder cannot be read", "free space")


def test_arrays_exactly_as_large_as_the_machine_s_memory_fit(monkeypatch):
    """check_fits refuses only sizes past memory and swap: exactly that size is let through."""
    monkeypatch.setattr(ram, "machine_bytes", lambda: 3 << 30)  # any machine: 3 GiB of memory and swap
    ram.check_fits(3 << 30, "a store")
    with pytest.raises(MemoryError, match=r"^Unable to allocate 3 GiB for a store: more than this machine's 3 GiB "):
        ram.check_fits((3 << 30) + 1, "a store")


def test_a_machine_that_reports_no_memory_pages_has_unknown_memory(monkeypatch):
    """sysconf saying 0 pages is no answer (None: check_fits lets sizes through), not a machine of 0 bytes."""
    monkeypatch.setattr(os, "sysconf", lambda name: 0)
    assert ram.machine_bytes() is None
    ram.check_fits(1 << 20, "a store")


def test_a_temp_file_that_cannot_be_made_is_named_by_the_file_being_written(tmp_path, monkeypatch):
    """mkstemp's failure (here no inode left) names the file being written, not the temp file's name a user never
    gave. (A name near NAME_MAX was the failure once: its temp file's name is now cut to fit.)"""
    import tempfile

    def no_inode(dir, prefix, suffix):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(dir, prefix + "x" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", no_inode)
    path = tmp_path / "store.pt"
    with pytest.raises(OSError) as caught, atomic_file(path) as f:
        f.write(b"x")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == os.fspath(path)
    assert os.listdir(tmp_path) == []


def test_a_record_whose_local_header_is_garbled_cannot_be_read(tmp_path):
    """A record whose header magic is damaged is reported as unreadable, not as failing its checksum."""
    path = tmp_path / "store.pt"
    atomic_torch_save({"format": "x/1", "a": torch.arange(8.0)}, path)
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[1]
    data = bytearray(path.read_bytes())
    data[info.header_offset:info.header_offset + 4] = b"XXXX"  # its local header's "PK\x03\x04"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"store.pt is damaged \(its record {info.filename} cannot be read\)"):
        checked_torch_load(path, "FaissStore", "x/1")


def test_pressure_occupancy_is_the_mean_over_lanes_and_slots_of_tanh_of_each_slot_s_rms():
    """The occupancy term: tanh of a slot's root-mean-square content, averaged over lanes and slots (in [0, 1])."""
    memory = torch.zeros(2, 2, 4)
    memory[0, 0] = torch.tensor([3.0, -1.0, 1.0, -1.0])  # rms sqrt(3)
    memory[1, 1] = 0.5  # rms 0.5
    state = SlotState(memory=memory, usage=torch.zeros(2, 2), age=torch.zeros(2, 2),
                      written=torch.zeros(2, 2, dtype=torch.bool))
    writes = WriteInfo(gate=torch.zeros(2, 1), slot_ids=torch.zeros(2, 1, dtype=torch.long))  # no write intensity
    expected = (math.tanh(math.sqrt(3.0)) + math.tanh(0.5)) / 4
    assert pressure_loss(writes, state).item() == pytest.approx(expected, abs=1e-3)


def test_an_undo_rebuilds_only_the_indexes_changed_since_the_last_undo():
    """An index rebuilt by one undo and left alone since is not rebuilt again by the next (each rebuild costs its
    size): a second undo with nothing changed keeps the index objects it found."""
    store = FaissStore(8, 2, capacity=30, lanes=2, index="hnsw", hnsw_min_entries=6, hnsw_neighbors=4)
    rng = np.random.default_rng(0)
    store.add(rng.standard_normal((20, 8)), rng.standard_normal((20, 2)), np.repeat([0, 1], 10))
    store.mark()
    store.add(rng.standard_normal((1, 8)), np.zeros((1, 2)), np.array([1]))
    store.undo()
    rebuilt = list(store._ann)
    store.undo()
    assert all(a is b for a, b in zip(store._ann, rebuilt, strict=True))
    store.release()


def test_row_undo_of_a_slice_saves_only_the_rows_of_the_slice():
    """A mark keeps the old contents of the rows written, not of every row: a slice of rows saves those rows."""
    keys = np.arange(12.0).reshape(6, 2)
    undo = RowUndo()
    undo.start([keys])
    undo.before_write(slice(2, 4))
    keys[2:4] = -1.0
    assert [rows.tolist() for rows, _ in undo.saved] == [[2, 3]]
    undo.undo()
    np.testing.assert_array_equal(keys, np.arange(12.0).reshape(6, 2))


def test_slot_usage_of_late_snapshots_is_ticked_with_their_steps_not_an_offset(tmp_path):
    """Snapshots at steps 12,800 .. 12,802 are ticked with their steps, not 0, 1, 2 under a "+1.28e4" offset."""
    figure = plot_slot_usage_heatmap(np.ones((3, 3)), tmp_path / "u.png", steps=[12800, 12801, 12802])
    figure.canvas.draw()
    ax = figure.axes[0]
    assert ax.xaxis.get_major_formatter().get_offset() == ""
    low, high = ax.get_xlim()
    assert [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high] == [
        "12800", "12801", "12802"]


def test_a_temp_name_without_a_writer_tag_is_no_writer_s():
    """A temp-shaped name whose <tag>-<pid> lacks the tag is another shape's file: no writer, so never removed."""
    assert _writer_of(Path(".store.pt.-123.abcd.tmp")) is None
    assert _writer_of(Path(".store.pt.ab12-123.abcd.tmp")) == ("store.pt", "ab12", 123)


def test_a_save_under_a_file_names_that_file_not_a_missing_folder(tmp_path):
    """A path under a file (f/sub/x.pt, f a file) names f as the file in the way, not the missing folder f/sub."""
    (tmp_path / "f").write_text("a file")
    with pytest.raises(OSError, match=r"/f is a file, not a folder; pass a path whose parents are folders"):
        atomic_torch_save({"a": 1}, tmp_path / "f" / "sub" / "x.pt")

