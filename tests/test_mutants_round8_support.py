"""Mutation round 8 (support modules): behaviours of memory/persist.py, envs/stream.py (place_patterns) and
agents/plots.py (plot_slot_survival) that no other test pinned down."""

import os

import numpy as np
import pytest

from memory.persist import _WRITER_TAG, atomic_file, remove_dead_writers_temp_files
from tests.test_persist import exited_pid

posix_only = pytest.mark.skipif(os.name != "posix", reason="a writer's pid is checked with os.kill(pid, 0)")


@posix_only
def test_a_store_save_leaves_dead_temp_files_of_names_its_index_pattern_only_begins(tmp_path):
    """The index files' pattern must match a temp file's whole name: a dead writer's temp of a user's
    index-<hex>.pt.bak beside the store is that file's, not a killed save's index, and is kept."""
    from memory.store import FaissStore

    pid = exited_pid()
    index_temp = tmp_path / f".index-{'ab' * 16}.pt.{_WRITER_TAG}-{pid}.abc.tmp"
    backup_temp = tmp_path / f".index-{'ab' * 16}.pt.bak.{_WRITER_TAG}-{pid}.abc.tmp"
    for f in (index_temp, backup_temp):
        f.write_bytes(b"partial")
    FaissStore(4, 2, capacity=8).save(tmp_path)
    assert not index_temp.exists() and backup_temp.exists()


@posix_only
def test_a_folder_named_like_a_dead_writer_s_temp_file_is_left_and_the_save_goes_on(tmp_path):
    """Only files are removed: a folder whose name reads as a dead writer's temp file stays, and the save succeeds."""
    folder = tmp_path / f".state.pt.{_WRITER_TAG}-{exited_pid()}.abc.tmp"
    folder.mkdir()
    with atomic_file(tmp_path / "state.pt") as f:
        f.write(b"whole")
    assert folder.is_dir() and (tmp_path / "state.pt").read_bytes() == b"whole"


@posix_only
def test_removing_dead_writers_temp_files_returns_those_removed(tmp_path):
    """The function returns the temp files it removed (a dead writer's), not the live writer's it kept."""
    pid = exited_pid()
    dead = tmp_path / f".state.pt.{_WRITER_TAG}-{pid}.abc.tmp"
    live = tmp_path / f".state.pt.{_WRITER_TAG}-{os.getpid()}.abc.tmp"
    for f in (dead, live):
        f.write_bytes(b"partial")
    assert remove_dead_writers_temp_files(tmp_path, "state.pt") == [dead]
    assert not dead.exists() and live.exists()


def _fails_on_folders(real, exc):
    """`real` (os.open or os.fsync), raising `exc` where it is given a folder (a path or an open folder's fd)."""
    import stat

    def call(target, *args, **kwargs):
        is_folder = os.path.isdir(target) if isinstance(target, (str, os.PathLike)) else stat.S_ISDIR(
            os.fstat(target).st_mode)
        if is_folder:
            raise exc
        return real(target, *args, **kwargs)
    return call


@pytest.mark.parametrize("call", ["open", "fsync"])
def test_a_save_stands_where_its_folder_cannot_be_opened_or_synced(tmp_path, monkeypatch, call):
    """Some file systems refuse to open or fsync a folder (EACCES, EINVAL): the rename stands and the save succeeds."""
    import errno

    monkeypatch.setattr(os, call, _fails_on_folders(getattr(os, call), OSError(errno.EINVAL, "Invalid argument")))
    with atomic_file(tmp_path / "state.pt") as f:
        f.write(b"whole")
    assert (tmp_path / "state.pt").read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp file left



def test_a_saved_count_of_exactly_2_to_the_62_is_taken_and_one_more_is_refused():
    """saved_count's range is [0, 2^62], both ends included (the message says so); 2^62 + 1 is damaged state."""
    from memory.saved_state import saved_count

    assert saved_count(2 ** 62, "clock", "S: s.pt") == 2 ** 62
    assert saved_count(np.int64(2 ** 62), "clock", "S: s.pt") == 2 ** 62
    for value in (2 ** 62 + 1, np.int64(2 ** 63 - 1)):
        with pytest.raises(ValueError, match=r"^S: s\.pt: clock is .*expected an int in \[0, 2\^62\]"):
            saved_count(value, "clock", "S: s.pt")



def test_removing_a_run_folder_s_temp_files_leaves_folders_with_a_temp_name(tmp_path):
    """remove_temp_files takes files only: a folder named like a temp file (.x.abc.tmp) is kept, not an error."""
    from memory.persist import remove_temp_files

    (tmp_path / ".cache.abc.tmp").mkdir()
    (tmp_path / ".state.pt.abc.tmp").write_bytes(b"partial")
    assert remove_temp_files(tmp_path) == [tmp_path / ".state.pt.abc.tmp"]
    assert remove_temp_files(tmp_path, ("cache",)) == []
    assert [p.name for p in tmp_path.iterdir()] == [".cache.abc.tmp"]


def _grid(cells: int, taken: list[int]) -> np.ndarray:
    occupied = np.zeros((1, cells), dtype=bool)
    occupied[0, taken] = True
    return occupied


def test_patterns_left_after_the_rounds_go_on_free_anchors_from_low_to_high_minus_1():
    """The fallback (no rounds here) puts each item in turn on the free anchor u_fallback picks among those in
    [low, high) whose cells (anchor + offsets) are all free, earlier items' cells included: u = 0 the first such
    anchor, u just under 1 the last."""
    from envs.stream import place_patterns

    occupied = _grid(12, [4])
    offsets = np.array([[[0, 2]] * 3])  # (1, 3, 2): each item takes anchor and anchor + 2
    u_fallback = np.array([[0.0, 0.0, np.nextafter(1.0, 0.0)]])
    anchors = place_patterns(occupied, offsets, np.ones((1, 3), np.int64), 9, np.zeros((1, 3, 0)), u_fallback)
    # item 0: first free of 1..8 with anchor+2 free too -> 1 (cells 1, 3); item 1: 2 and 3 clash -> 5 (5, 7);
    # item 2: 6 and 8 are left -> the last, 8 (8, 10)
    assert anchors.tolist() == [[1, 5, 8]]
    assert np.nonzero(occupied[0])[0].tolist() == [1, 3, 4, 5, 7, 8, 10]


def test_a_pattern_with_no_free_place_is_a_runtime_error():
    """Where no anchor is free the fallback says so (validation should have prevented it), not an IndexError."""
    from envs.stream import place_patterns

    with pytest.raises(RuntimeError, match="no free place for a pattern"):
        place_patterns(_grid(6, [1, 2, 3]), np.zeros((1, 1, 1), np.int64), np.ones((1, 1), np.int64), 4,
                       np.zeros((1, 1, 0)), np.zeros((1, 1)))


@posix_only
def test_a_temp_file_whose_pid_is_out_of_range_is_kept(tmp_path):
    """A pid too large for os.kill (OverflowError) cannot be checked: its temp file is kept, not taken as dead."""
    temp = tmp_path / f".state.pt.{_WRITER_TAG}-{2 ** 70}.abc.tmp"
    temp.write_bytes(b"partial")
    assert remove_dead_writers_temp_files(tmp_path, "state.pt") == []
    assert temp.exists()


def test_a_file_rewritten_in_place_to_another_size_has_another_stamp(tmp_path):
    """file_stamp tells versions apart by size too: a rewrite that keeps the inode and the mtime (a coarse clock)
    but not the size is another version."""
    from memory.persist import file_stamp

    path = tmp_path / "last.pt"
    path.write_bytes(b"first")
    before, stat = file_stamp(path), os.stat(path)
    with open(path, "ab") as f:
        f.write(b" and more")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_ino == stat.st_ino and file_stamp(path) != before


def test_slot_survival_turns_logarithmic_at_a_last_lifetime_of_exactly_20_medians(tmp_path):
    """The x axis turns symlog once the longest lifetime is 20 times the median or more (20 included), its right
    edge 10% past that lifetime; just under 20 medians it stays linear."""
    from agents.plots import plot_slot_survival

    ax = plot_slot_survival([1] * 6 + [20] * 4, tmp_path / "s.png").axes[0]  # median 1, longest 20
    assert ax.get_xscale() == "symlog" and ax.get_xlim() == pytest.approx((0.0, 22.0))
    assert plot_slot_survival([1] * 6 + [19] * 4, tmp_path / "s.png").axes[0].get_xscale() == "linear"


def test_slot_survival_with_a_median_of_0_is_measured_against_one_write(tmp_path):
    """A median lifetime of 0 (most contents overwritten at once) counts as 1 for the switch: a longest lifetime of
    5 keeps the axis linear (20 x 0 would have made any tail logarithmic)."""
    from agents.plots import plot_slot_survival

    figure = plot_slot_survival([0] * 6 + [5] * 4, tmp_path / "s.png")
    assert figure.axes[0].get_lines()[1].get_label() == "median lifetime = 0"
    assert figure.axes[0].get_xscale() == "linear"


def test_slot_survival_is_drawn_as_a_post_step(tmp_path):
    """Survival holds its value until the next event time (steps-post): S(t) is the value just after each time."""
    from agents.plots import plot_slot_survival

    line = plot_slot_survival([1, 2, 3, 3], tmp_path / "s.png").axes[0].get_lines()[0]
    assert line.get_drawstyle() == "steps-post"
