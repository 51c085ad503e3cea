"""FaissStore eviction: FIFO, LRU and importance policies, and ids that stay valid and unique."""

import numpy as np

from memory.store import FaissStore


def fill(store, n, lane=0, importance=None):
    keys = np.eye(store.dim, dtype=np.float32)[np.arange(n) % store.dim] + 0.01
    return store.add(keys, np.arange(n, dtype=np.float32)[:, None] * np.ones((1, store.value_dim)),
                     np.full(n, lane), importance=importance)[0]


def test_fifo_evicts_oldest_first():
    store = FaissStore(8, 1, capacity=4, eviction="fifo")
    ids = fill(store, 4)
    store.search(np.eye(8, dtype=np.float32)[None, :1], 1)  # accesses do not matter for fifo
    new, evicted = store.add(np.ones((2, 8)), np.zeros((2, 1)), [0, 0])
    np.testing.assert_array_equal(evicted, ids[:2])


def test_lru_evicts_least_recently_used():
    store = FaissStore(8, 1, capacity=4, eviction="lru")
    ids = fill(store, 4)
    hit = store.search(np.eye(8, dtype=np.float32)[None, [0, 1]], 1)  # touches ids[0] and ids[1]
    np.testing.assert_array_equal(hit.ids[0, :, 0], ids[:2])
    _, evicted = store.add(np.ones((2, 8)), np.zeros((2, 1)), [0, 0])
    np.testing.assert_array_equal(np.sort(evicted), ids[2:])


def test_lru_entries_returned_by_one_search_are_tied_and_the_oldest_goes_first():
    """The hits of one search got stamps in row order: an entry written into an emptied lower row counted as less
    recent than an older entry returned with it (an audit's case, 2026-12-01)."""
    store = FaissStore(2, 1, capacity=3, eviction="lru")
    ids, _ = store.add(np.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]]), np.zeros((3, 1)), [0, 0, 0])
    (newer,), (evicted,) = store.add(np.array([[0.8, 0.6]]), np.zeros((1, 1)), [0])
    assert evicted == ids[0]  # newer takes row 0, below ids[1]'s row
    hit = store.search(np.array([[[0.8, 0.6]]]), 2)
    assert sorted(hit.ids[0, 0]) == sorted([ids[1], newer])  # returned together
    assert store.add(np.array([[0.0, 1.0]]), np.zeros((1, 1)), [0])[1].tolist() == [ids[2]]  # never returned
    assert store.add(np.array([[0.0, 1.0]]), np.zeros((1, 1)), [0])[1].tolist() == [ids[1]]  # the older of the tie


def test_importance_evicts_lowest_importance_then_oldest():
    store = FaissStore(8, 1, capacity=4, eviction="importance")
    ids = fill(store, 4, importance=[5.0, 1.0, 3.0, 1.0])
    _, evicted = store.add(np.ones((1, 8)), np.zeros((1, 1)), [0], importance=[10.0])
    np.testing.assert_array_equal(evicted, ids[[1]])  # tie at 1.0: the older one goes
    store.search(np.eye(8, dtype=np.float32)[None, [3, 3, 3]], 1)  # three hits lift ids[3] to 4.0
    _, evicted = store.add(np.ones((1, 8)), np.zeros((1, 1)), [0], importance=[10.0])
    np.testing.assert_array_equal(evicted, ids[[2]])


def test_ids_stay_valid_and_unique_after_eviction_and_clear():
    store = FaissStore(8, 2, capacity=5, lanes=2, eviction="fifo")
    seen = []
    for round_ in range(6):
        keys = np.random.default_rng(round_).normal(size=(3, 8))
        values = np.full((3, 2), round_, dtype=np.float32)
        ids, evicted = store.add(keys, values, [round_ % 2] * 3, meta={"episode": [round_] * 3})
        seen.append(ids)
        for old in evicted:
            assert not store.get([old])[1]["found"][0]
        if round_ == 3:
            store.clear()
    all_ids = np.concatenate(seen)
    assert len(np.unique(all_ids)) == len(all_ids)  # never reused, not even after clear()
    values, meta = store.get(seen[-1])
    np.testing.assert_array_equal(values, np.full((3, 2), 5.0))  # live ids read their own entries
    np.testing.assert_array_equal(meta["episode"], [5, 5, 5])
    np.testing.assert_array_equal(meta["lane"], [1, 1, 1])
    assert (store.get(seen[0])[1]["found"] == False).all()  # noqa: E712


def test_lowest_returns_the_victims_smallest_priority_first_ties_oldest_first():
    """`lowest` orders what it picks by (priority, insertion sequence), as documented: not by sequence alone."""
    import numpy as np

    from memory.eviction import lowest

    primary = np.array([3.0, 1.0, 2.0, 1.0, -np.inf])
    secondary = np.array([0, 4, 1, 2, 3])
    assert lowest(primary, secondary, 4).tolist() == [4, 3, 1, 2]
    assert lowest(primary, secondary, 5).tolist() == [4, 3, 1, 2, 0]


def test_a_search_that_finds_fewer_than_k_entries_touches_only_the_entries_it_returns():
    """Misses (id -1) are no access: lane 1 is empty, so its query's two misses must not add importance to
    anything, in particular not to the store's first row (lane 0's oldest entry)."""
    store = FaissStore(2, 1, capacity=3, lanes=2, eviction="importance")
    ids, _ = store.add(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), np.zeros((3, 1)), [0, 0, 0])
    hit = store.search(np.array([[[0.6, 0.8]], [[1.0, 0.0]]]), 2)
    assert sorted(hit.ids[0, 0].tolist()) == sorted(ids[1:].tolist())  # lane 0: the two entries near the query
    assert hit.ids[1, 0].tolist() == [-1, -1]  # lane 1: nothing stored
    _, evicted = store.add(np.array([[-1.0, 0.0]]), np.zeros((1, 1)), [0])
    assert evicted.tolist() == [ids[0]]  # never returned: importance 0 against 1 for the other two
