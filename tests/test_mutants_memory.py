"""Mutation-testing kills for the store and the cache: counters and clocks that must survive a save/load."""

import numpy as np

from memory.cache import TieredKVCache
from memory.store import FaissStore


def _store(capacity=3, eviction="lru") -> FaissStore:
    return FaissStore(dim=4, value_dim=2, capacity=capacity, lanes=1, eviction=eviction)


def _keys(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def test_a_loaded_store_continues_the_time_metadata_and_the_lru_clock():
    """`time` is the add() call index and the lru stamps a running clock: a store loaded from a state_dict goes on
    from where the saved one stopped, so both give the same metadata and evict the same entry afterwards."""
    stores = [_store(), _store()]
    a = stores[0]
    ids = [a.add(_keys(1, i), np.zeros((1, 2)), [0])[0][0] for i in range(3)]  # add calls 0, 1, 2
    a.search(_keys(1, 0)[None], k=3)  # every entry is hit: stamps now 3, 4, 5 in the order of the scores
    b = stores[1]
    b.load_state_dict(a.state_dict())
    for s in stores:
        _, meta = s.get(np.array(ids))
        assert meta["time"].tolist() == [0, 1, 2]
    for s in stores:  # one more read of two entries (the third is the least recent now), then a new entry
        s.search(np.stack([s.keys_of(np.array(ids[:2]))]), k=1)
    results = [s.add(_keys(1, 9), np.zeros((1, 2)), [0]) for s in stores]
    (new_a, gone_a), (new_b, gone_b) = results
    assert gone_a.tolist() == [ids[2]] and gone_b.tolist() == [ids[2]]
    assert a.get(new_a)[1]["time"].tolist() == [3] and b.get(new_b)[1]["time"].tolist() == [3]
    assert new_a.tolist() == new_b.tolist()


def _cache() -> TieredKVCache:
    return TieredKVCache(heads=1, head_dim=2, hot=2, warm=0, cold=0, policy="lru")


def _kv(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.ones((n, 1, 2), np.float32), np.ones((n, 1, 2), np.float32)


def test_a_loaded_cache_continues_its_lru_clock():
    """After load_state_dict an access is newer than every access before the save (the clock is restored), so the
    entry read after loading is kept and the other one evicted, as in the cache that never went through a save."""
    a = _cache()
    a.put([10, 11], *_kv(2))
    a.get_batch(np.array([10]))  # 11 is now the least recent
    b = _cache()
    b.load_state_dict(a.state_dict())
    for c in (a, b):
        c.get_batch(np.array([11]))  # now 10 is the least recent
        assert c.put([12], *_kv(1)).tolist() == [10]
        assert c.tier_of(np.array([10, 11, 12])).tolist() == [-1, 0, 0]


def test_cache_hit_and_miss_counters_ignore_missing_ids():
    """-1 marks 'no id' in get_batch (padding of store search results): neither a hit nor a miss."""
    c = _cache()
    c.put([5], *_kv(1))
    _, _, mask = c.get_batch(np.array([[5, -1, 7, -1]]))
    assert mask.tolist() == [[True, False, False, False]]
    stats = c.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (1, 1, 0.5)


def test_a_full_store_puts_a_new_entry_in_a_removed_entrys_row_before_evicting_any():
    """A row emptied by remove() (a replaced memory, MemNet's store_replace) is taken before any live entry is
    evicted, under every policy, whatever priority the removed entry had (here the newest, most used one)."""
    for eviction in ("fifo", "lru", "importance"):
        store = _store(eviction=eviction)
        ids = [store.add(_keys(1, i), np.zeros((1, 2)), [0], importance=[5.0 * (i == 2)])[0][0] for i in range(3)]
        store.search(_keys(1, 2)[None], k=1)  # the newest entry is also the most recent hit
        assert store.remove(np.array([ids[2]])) == 1
        _, evicted = store.add(_keys(1, 9), np.zeros((1, 2)), [0])
        assert evicted.tolist() == [] and len(store) == 3, eviction
        assert store.get(np.array(ids[:2]))[1]["found"].all()  # both older entries are still there
