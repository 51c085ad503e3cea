"""Mutation-testing kills for the store and the cache: counters and clocks that must survive a save/load, which
entries promotion picks, the bytes an entry costs, and the store and cache forgetting together."""

import numpy as np

from memory.cache import TieredKVCache
from memory.retrieval import remove_replaced, write_memory
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


def _kv(n: int, heads: int = 1, dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    return (rng.normal(size=(n, heads, dim)).astype(np.float32),) * 2


def test_promotion_takes_the_most_read_entries_when_the_top_tier_cannot_hold_all():
    """Read counts travel with an entry when it is demoted: 10 (read 5 times while hot) and 11 (twice) both reach
    promote_after in one read, and the one hot slot goes to the more-read 10."""
    cache = TieredKVCache(1, 2, hot=1, warm=4, cold=0, promote_after=2)
    cache.put([10], *_kv(1))
    for _ in range(5):
        cache.get_batch([10])
    cache.put([11], *_kv(1))  # 10 -> warm
    for _ in range(2):
        cache.get_batch([11])
    cache.put([12], *_kv(1))  # 11 -> warm
    cache.get_batch([10, 11])
    assert cache.tier_of([10, 11, 12]).tolist() == [0, 1, 1]


def test_manage_tiers_counts_its_demotions_and_promotions():
    cache = TieredKVCache(1, 2, hot=1, warm=2, cold=0, promote_after=0)
    cache.put([1], *_kv(1))
    cache.put([2], *_kv(1))  # 1 -> warm: one demotion
    cache.get_batch([1])  # now the most recently used: manage_tiers swaps 1 and 2
    cache.manage_tiers()
    assert cache.tier_of([1, 2]).tolist() == [0, 1]
    assert (cache.stats()["promotions"], cache.stats()["demotions"]) == (1, 2)


def test_bytes_per_entry_of_each_tier():
    """H=2 heads, keys 6 and values 4 wide: float32 hot and cold; warm int8 codes (one byte a number), a float32
    scale per head for keys and for values, and one byte for the entry's calibration row."""
    cache = TieredKVCache(2, 4, hot=1, warm=1, cold=0, key_dim=6)
    assert cache.stats()["bytes_per_entry"] == {"hot": 80, "warm": 20 + 16 + 1, "cold": 80}
    assert TieredKVCache(2, 4, hot=1, warm=1, cold=0, key_dim=6, quantize=False).stats()["bytes_per_entry"][
        "warm"] == 80


def test_what_the_store_evicts_leaves_the_cache_too():
    """write_memory: the cache never serves (or keeps room for) a memory the store forgot."""
    store, cache = _store(capacity=2, eviction="fifo"), TieredKVCache(1, 2, hot=8, warm=0, cold=0)
    ids = [write_memory(store, cache, _keys(1, i), np.zeros((1, 2), np.float32), *_kv(1), [0])[0] for i in range(3)]
    assert len(store) == len(cache) == 2
    assert cache.tier_of(ids).tolist() == [-1, 0, 0]


def test_a_replacement_threshold_of_one_removes_an_identical_memory():
    """store_replace lies in [0, 1]: at 1 exactly an identical key (cosine 1) after the same token is replaced."""
    store, cache = _store(capacity=4), TieredKVCache(1, 2, hot=8, warm=0, cold=0)
    key = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    [old] = write_memory(store, cache, key, np.zeros((1, 2), np.float32), *_kv(1), [0], meta={"prev": [5]})
    gone = remove_replaced(store, cache, key, np.array([5]), np.array([0]), threshold=1.0)
    assert gone.tolist() == [old] and len(store) == len(cache) == 0
