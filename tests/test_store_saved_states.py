"""A FaissStore saved in any state goes on, read back, as the store that was not saved: an HNSW store saved before
its graph was built (fewer entries than hnsw_min_entries) builds it once adds pass that mark, over every entry, and
finds what the unsaved store finds; a store saved after removals and evictions finds neither kind of entry, keeps
its eviction order, and answers every search as the unsaved one does."""

import numpy as np
import pytest

from memory.store import FaissStore
from tests.test_memory_store import clustered


def test_an_hnsw_store_saved_before_its_graph_builds_it_over_every_entry_after_the_load(tmp_path):
    rng = np.random.default_rng(5)
    keys, values = clustered(rng, 100, 16, clusters=6), rng.normal(size=(100, 3))
    store = FaissStore(16, 3, capacity=200, lanes=1, index="hnsw", hnsw_min_entries=64)
    ids = list(store.add(keys[:40], values[:40], [0] * 40)[0])
    assert not store._ann[0].ready  # 40 < 64: exact search, no graph yet
    store.save(tmp_path / "s")
    back = FaissStore.load(tmp_path / "s")
    assert not back._ann[0].ready
    for s in (store, back):
        got = s.add(keys[40:], values[40:], [0] * 60)[0]
    ids += list(got)
    for s in (store, back):
        assert s._ann[0].ready and s._ann[0].index.ntotal == 100  # built, over the 40 saved entries too
    a, b = store.search(keys[None], 1), back.search(keys[None], 1)
    np.testing.assert_array_equal(np.asarray(b.ids)[0, :, 0], ids)  # each key finds its own entry
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind, precision", [("flat", "fp32"), ("flat", "bf16"), ("ivf", "fp32")])
def test_a_store_saved_after_removals_and_evictions_searches_as_the_unsaved_one(tmp_path, kind, precision):
    """bf16: exact search scans a bfloat16 copy of the keys, which a load must write from the keys it reads."""
    rng = np.random.default_rng(8)
    keys, values = clustered(rng, 400, 16, clusters=8), rng.normal(size=(400, 3))
    store = FaissStore(16, 3, capacity=300, lanes=1, index=kind, eviction="lru", ivf_lists=4, precision=precision)
    ids = np.asarray(store.add(keys[:250], values[:250], [0] * 250)[0])
    store.search(keys[None, :50], 3)  # reads: the LRU order is no longer the add order
    removed = ids[100:130]
    assert store.remove(removed) == 30
    ids = np.concatenate([ids, np.asarray(store.add(keys[250:], values[250:], [0] * 150)[0])])  # 70 evicted
    assert kind != "ivf" or store._ann[0].ready
    store.save(tmp_path / "s")
    back, later = FaissStore.load(tmp_path / "s"), FaissStore.load(tmp_path / "s")
    found = np.asarray(back.search(keys[None], 1).ids)[0, :, 0]
    evicted = np.setdiff1d(ids[:250], np.concatenate([removed, found]))
    assert len(evicted) == 70 and not np.isin(found, removed).any()
    np.testing.assert_array_equal(found[250:], ids[250:])  # the newest entries each find themselves
    # read back and used on at once, it evicts what the unsaved store evicts (its LRU stamps and clock)
    more = clustered(rng, 40, 16, clusters=8)
    for s in (store, later):
        s.add(more, np.zeros((40, 3)), [0] * 40)
    a, b = store.search(keys[None], 1), later.search(keys[None], 1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(np.asarray(b.ids)[0, :, 0], found)  # the adds evicted some entries found before
