"""A FaissStore read back goes on as the one saved: entries removed after the load (tombstones in the HNSW graph,
removal by id from the IVF lists) are never found again, and both stores keep answering alike."""

import numpy as np
import pytest

from memory.store import FaissStore
from tests.test_memory_store import clustered


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_entries_removed_after_a_load_are_not_found_and_the_stores_agree(tmp_path, kind):
    rng = np.random.default_rng(7)
    store = FaissStore(16, 3, capacity=1500, lanes=1, index=kind, eviction="lru", hnsw_min_entries=200,
                       ivf_lists=4)
    keys = clustered(rng, 1200, 16, clusters=10)
    ids = store.add(keys, rng.normal(size=(1200, 3)), [0] * 1200)[0]
    assert store._ann[0].ready
    store.save(tmp_path / "s")
    back = FaissStore.load(tmp_path / "s")
    gone = np.asarray(ids)[:40]  # the first 40 keys: each one's own nearest entry before the removal
    for s in (store, back):
        s.remove(gone)
    q = keys[None, :40]
    a, b = store.search(q, 5), back.search(q, 5)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    found = np.asarray(b.ids)
    assert not np.isin(found, gone).any() and (found >= 0).all()
