"""Mutation round 6 (memory support modules): behaviours of memory/metrics.py, retrieval.py, undo.py, persist.py,
disk.py and ram.py that no other test pinned down."""

import os

import numpy as np
import pytest
import torch

from memory.cache import TieredKVCache
from memory.metrics import SlotLifetimeTracker, kaplan_meier, memory_bytes, pattern_similarity, store_hit_rate
from memory.retrieval import recency_rescore, retrieve_memory_kv, write_memory
from memory.slots import SlotState, WriteInfo
from memory.store import FaissStore


def test_memory_bytes_calls_an_nbytes_method():
    """An object whose nbytes is a method (not a property) is sized by calling it."""

    class Sized:
        def nbytes(self):
            return 7

    assert memory_bytes([Sized(), np.zeros(2, np.int8)]) == 9


def test_kaplan_meier_refuses_fractional_counts():
    """counts are contents per duration: a fraction is refused, not weighed in."""
    with pytest.raises(ValueError, match="counts must be non-negative integers"):
        kaplan_meier([1, 2], counts=[1.5, 1.0])


def test_retrieve_memory_kv_keeps_the_later_written_of_equal_matches():
    """With a rescore, equal scores rank by the store's write time: the newest of two identical memories is served."""
    store = FaissStore(4, 1, capacity=8, lanes=1, metric="ip")
    cache = TieredKVCache(1, 4, hot=8, warm=0, cold=0)
    key = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    old = write_memory(store, cache, key, torch.zeros(1, 1), key.view(1, 1, 4), key.view(1, 1, 4), lanes=[0])
    new = write_memory(store, cache, key, torch.zeros(1, 1), key.view(1, 1, 4), key.view(1, 1, 4), lanes=[0])
    got = retrieve_memory_kv(store, cache, key.view(1, 1, 4), k=1, fetch=2, rescore=lambda s, i: s)[3]
    assert got[0, 0].tolist() == [int(new[0])] != [int(old[0])]


def test_recency_term_of_an_entry_written_at_the_query_step_is_zero():
    """Another lane's entry of age 0 (a shared store) loses nothing to recency: slope x log(1 + 0)."""
    store = FaissStore(4, 1, capacity=8, lanes=2, scope="shared")
    ids, _ = store.add(np.ones((1, 4)), np.zeros((1, 1)), [1], meta={"step": [5]})
    scores = recency_rescore(store, np.array([[5], [5]]), window=2, scale=1.0, slope=0.5)(
        np.full((2, 1, 1), 0.25), np.broadcast_to(ids, (2, 1, 1)))
    assert scores[0, 0, 0] == pytest.approx(0.25)  # lane 0: lane 1's entry, age 0, not in lane 0's window
    assert np.isneginf(scores[1, 0, 0])  # lane 1's own entry is in its window


def test_retrieve_memory_kv_with_a_fetch_below_k_still_serves_k():
    """fetch < k searches k candidates: the result has k columns, and both memories come back."""
    store = FaissStore(4, 1, capacity=8, lanes=1, metric="ip")
    cache = TieredKVCache(1, 4, hot=8, warm=0, cold=0)
    keys = torch.eye(4)[:2]
    ids = write_memory(store, cache, keys, torch.zeros(2, 1), keys.view(2, 1, 4), keys.view(2, 1, 4), lanes=[0, 0])
    _, _, mask, got = retrieve_memory_kv(store, cache, torch.ones(1, 1, 4), k=2, fetch=1)
    assert got.shape == (1, 1, 2) and sorted(got[0, 0].tolist()) == sorted(ids.tolist()) and bool(mask.all())


def test_undo_restores_a_store_s_bookkeeping_in_place():
    """undo writes the marked bookkeeping back into the same arrays: a view taken before the mark sees it undone."""
    store = FaissStore(4, 1, capacity=8, lanes=1)
    store.add(np.ones((2, 4)), np.zeros((2, 1)), [0, 0])
    row_ids = store._row_id[:]  # a view, as callers holding the store's arrays keep
    store.mark()
    store.add(np.ones((3, 4)), np.zeros((3, 1)), [0, 0, 0])
    store.undo()
    store.release()
    assert len(store) == 2 and (row_ids >= 0).sum() == 2 and np.array_equal(row_ids, store._row_id)


def test_a_foreign_format_names_the_newest_accepted_format(tmp_path):
    """With several accepted formats (newest first), the error names the newest, the one a fresh save writes."""
    from memory.persist import atomic_torch_save, checked_torch_load

    path = tmp_path / "thing.pt"
    atomic_torch_save({"format": "other-v0"}, path)
    with pytest.raises(ValueError, match=r"has format 'other-v0', expected 'thing-v2'$"):
        checked_torch_load(path, "Thing", ("thing-v2", "thing-v1"))
    assert checked_torch_load(path, "Thing", ("thing-v2", "other-v0"))["format"] == "other-v0"


def test_a_saved_count_that_is_a_bool_is_refused():
    """A saved clock of True is damage, not the count 1 (bool is an int subclass)."""
    from memory.saved_state import saved_count

    assert saved_count(np.int64(3), "clock", "S: s.pt") == 3
    with pytest.raises(ValueError, match=r"^S: s.pt: clock is True, expected an int in \[0, 2\^62\]"):
        saved_count(True, "clock", "S: s.pt")


def test_a_skipped_setting_in_a_saved_config_is_unknown():
    """`skip` names constructor arguments that are no saved settings: a file holding one is refused as damaged."""
    from memory.saved_state import build_from_saved

    class Thing:
        def __init__(self, size, coded=None):
            self.size, self.coded = size, coded

    assert build_from_saved(Thing, {"size": 3}, "Thing: t.pt", skip=("coded",)).size == 3
    with pytest.raises(ValueError, match=r"settings this version does not know \(coded\)"):
        build_from_saved(Thing, {"size": 3, "coded": 1}, "Thing: t.pt", skip=("coded",))


def test_remove_temp_files_of_named_files_leaves_the_others(tmp_path):
    """remove_temp_files(folder, names) takes only the temp files of those names."""
    from memory.persist import remove_temp_files

    mine = tmp_path / ".a.pt.tag-1.x1.tmp"
    other = tmp_path / ".b.pt.tag-1.x2.tmp"
    for f in (mine, other):
        f.write_bytes(b"x")
    assert remove_temp_files(tmp_path, ("a.pt",)) == [mine]
    assert other.exists() and not mine.exists()


def test_the_machine_s_memory_counts_its_swap(monkeypatch):
    """machine_bytes is RAM plus swap (this machine may have none: a meminfo with 2 MiB of swap stands in)."""
    from memory import ram

    class Meminfo:
        def __init__(self, path):
            pass

        def read_text(self):
            return "MemTotal:  4 kB\nSwapTotal:    2048 kB\n"

    monkeypatch.setattr(ram, "Path", Meminfo)
    assert ram.machine_bytes() == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + 2048 * 1024


def test_a_slot_lifetime_tracker_refuses_writes_of_another_lane_count():
    """observe() with fewer lanes than the tracker was built for is an error, not writes credited to lane 0."""
    tracker = SlotLifetimeTracker(batch_size=2, slots=3)
    with pytest.raises(ValueError, match="write_info has 1 lanes, tracker was built for 2"):
        tracker.observe(WriteInfo(gate=torch.ones(1, 1), slot_ids=torch.tensor([[0]])))
    assert tracker.step == 0 and (tracker.born == -1).all()


def test_a_slot_lifetime_state_of_another_shape_is_refused():
    """load_state_dict of a tracker built for other lanes or slots raises instead of adopting its shape."""
    tracker = SlotLifetimeTracker(batch_size=2, slots=3)
    with pytest.raises(ValueError, match=r"has shape \(1, 3\), tracker expects \(2, 3\)"):
        tracker.load_state_dict(SlotLifetimeTracker(batch_size=1, slots=3).state_dict())
    assert tracker.born.shape == (2, 3)


def test_pattern_similarity_refuses_hidden_states_of_another_lane_count():
    """One lane's hidden state against a two-lane bank is an error, not broadcast onto both lanes."""
    state = SlotState(torch.ones(2, 3, 4), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert pattern_similarity(state, torch.ones(2, 5, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"hidden shape \(1, 4\): expected"):
        pattern_similarity(state, torch.ones(1, 4))


def test_store_hit_rate_refuses_ids_without_a_k_axis():
    """ids (..., 0) retrieved nothing by construction: an error, not a hit rate of 0."""
    with pytest.raises(ValueError, match=r"expected \(\.\.\., k\) with k >= 1"):
        store_hit_rate(np.zeros((2, 3, 0), np.int64))


def test_kaplan_meier_refuses_a_nan_duration():
    """A NaN lifetime is refused (NaN < 0 is False: a min check alone let it through)."""
    with pytest.raises(ValueError, match="durations must be non-negative numbers"):
        kaplan_meier([1.0, float("nan")])


def test_the_machine_s_memory_is_unknown_without_sysconf(monkeypatch):
    """Where os has no sysconf (Windows) the memory is unknown (None), and check_fits lets any size through."""
    from memory import ram

    monkeypatch.delattr(os, "sysconf")
    assert ram.machine_bytes() is None
    ram.check_fits(2**70, "a store")


def test_a_file_stamp_tells_an_atomic_save_of_the_same_size_and_time_apart(tmp_path):
    """Each atomic save is a new inode: the stamp changes even where size and mtime come out the same."""
    from memory.persist import atomic_torch_save, file_stamp

    path = tmp_path / "s.pt"
    assert file_stamp(path) is None
    atomic_torch_save({"format": "x", "v": torch.zeros(3)}, path)
    first, stat = file_stamp(path), os.stat(path)
    atomic_torch_save({"format": "x", "v": torch.ones(3)}, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and file_stamp(path) != first
