"""FaissStore metadata: values read back by id, ids_with lookups and remove_replaced against brute force."""

import numpy as np
import pytest

from memory.store import FaissStore
from tests.test_memory_store import unit


def test_metadata_below_minus_one_is_refused_and_never_matches():
    """Regression: ids_with codes (lane, value) as lane * span + value + 1, so a value below -1 ("missing") aliased
    another lane's entry; add refuses such values, and ids_with matches nothing for them."""
    store = FaissStore(2, 1, capacity=4, lanes=2)
    with pytest.raises(ValueError, match=r"meta\['prev'\] has -3: pass values >= 0, or -1 for missing"):
        store.add(np.ones((2, 2)), np.zeros((2, 1)), [0, 1], meta={"prev": [3, -3]})
    assert len(store) == 0
    ids, _ = store.add(np.ones((3, 2)), np.zeros((3, 1)), [0, 0, 1], meta={"prev": [4, 5, -1]})  # -1 is fine
    np.testing.assert_array_equal(store.meta_of(ids, "prev"), [4, 5, -1])
    np.testing.assert_array_equal(store.ids_with("prev", [-3, -1, 4], [1, 1, 0]), [[-1], [ids[2]], [ids[0]]])


def test_token_metadata_is_kept_and_read_back_by_id():
    store = FaissStore(4, 2, 8, lanes=2)
    keys = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    ids, _ = store.add(keys, np.zeros((3, 2), np.float32), np.array([0, 1, 1]),
                       meta={"token": np.array([7, 8, 9]), "position": np.array([1, 2, 3])})
    asked = np.array([[ids[2], -1], [ids[0], ids[1]]])
    np.testing.assert_array_equal(store.meta_of(asked, "token"), [[9, -1], [7, 8]])
    store.remove(ids[:1])
    np.testing.assert_array_equal(store.meta_of(ids, "token"), [-1, 8, 9])  # removed -> missing
    np.testing.assert_array_equal(store.keys_of(ids)[0], np.zeros(4))


@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_ids_with_finds_a_lanes_live_entries_by_metadata_newest_first(scope):
    store = FaissStore(4, 2, 8, lanes=2, scope=scope)
    keys = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    prev = np.array([5, 5, 6, 5, 5, 7])
    lanes = np.array([0, 0, 0, 1, 0, 1])
    ids = np.concatenate([store.add(keys[i:i + 1], np.zeros((1, 2), np.float32), lanes[i:i + 1],
                                    meta={"prev": prev[i:i + 1]})[0] for i in range(6)])
    store.remove(ids[1:2])
    found = store.ids_with("prev", np.array([5, 5, 7, 9]), np.array([0, 1, 1, 0]))  # (4, m)
    assert found.shape == (4, 2)
    np.testing.assert_array_equal(found, [[ids[4], ids[0]], [ids[3], -1], [ids[5], -1], [-1, -1]])
    assert FaissStore(4, 2, 8).ids_with("prev", np.array([1]), np.array([0])).shape == (1, 0)  # empty store


def test_ids_with_answers_for_values_near_the_end_of_int64():
    """ids_with coded (lane, value) as lane * span + value + 1: with a value near 2**62 that wrapped, and lane 4,
    which holds nothing, found lane 0's entry; at int64's largest value it was an OverflowError traceback."""
    store = FaissStore(4, 2, 4, lanes=8)
    ids, _ = store.add(np.ones((3, 4)), np.ones((3, 2)), [0, 0, 5], meta={"episode": [8, 2**62, 2**63 - 1]})
    np.testing.assert_array_equal(store.ids_with("episode", [8, 8, 2**62, 2**63 - 1, 2**63 - 1, -1, -5, 7],
                                                 [4, 0, 0, 5, 0, 0, 0, 0]),
                                  [[-1], [ids[0]], [ids[1]], [ids[2]], [-1], [-1], [-1], [-1]])
    new, _ = store.add(np.ones((2, 4)), np.ones((2, 2)), [0, 0], meta={"episode": [2**62, -1]})  # -1 as a value
    np.testing.assert_array_equal(store.ids_with("episode", [2**62, -1], [0, 0]), [[new[0], ids[1]], [new[1], -1]])


@pytest.mark.parametrize("asked", ["table", "every row", "ranked"])
def test_ids_with_and_remove_replaced_match_brute_force(monkeypatch, asked):
    """A store with evictions and removals: ids_with lists each (lane, value)'s live ids newest first, and
    remove_replaced removes exactly the same-lane, same-"prev" memories whose key part has cosine >= threshold
    with a new key, whatever its block of pairs (3 here: many blocks). ids_with sorts the rows asked for (a table
    of the codes asked) or, where the codes are too many for a table, every live row; with values near int64's end
    ("ranked") it codes their ranks."""
    import memory.retrieval as retrieval
    import memory.store_lookup as store_lookup

    if asked == "every row":
        monkeypatch.setattr(store_lookup, "ASKED_TABLE", 0)
    base = 2**62 if asked == "ranked" else 0

    rng = np.random.default_rng(7)
    store = FaissStore(6, 1, 40, lanes=3, eviction="fifo")
    for _ in range(12):  # 12 x 12 adds into 3 x 40 rows: FIFO evicts, rows are reused
        n = 12
        store.add(rng.normal(size=(n, 6)).astype(np.float32), np.zeros((n, 1), np.float32), rng.integers(0, 3, n),
                  meta={"prev": base + rng.integers(0, 4, n)})
    live = store._row_id[store._row_id >= 0]
    store.remove(rng.choice(live, 10, replace=False))
    live = store._row_id[store._row_id >= 0]
    lane, prev, seq = (store.meta_of(live, "lane"), store.meta_of(live, "prev"),
                       store._seq[live % store.rows])
    values, lanes = base + np.array([0, 1, 2, 3, 3, 9]), np.array([0, 1, 2, 0, 2, 1])
    found = store.ids_with("prev", values, lanes)
    for i, (v, b) in enumerate(zip(values, lanes, strict=True)):
        mine = live[(prev == v) & (lane == b)]
        want = mine[np.argsort(-seq[np.isin(live, mine)])]  # newest first
        np.testing.assert_array_equal(found[i][found[i] >= 0], want)

    monkeypatch.setattr(retrieval, "REPLACE_BLOCK", 3)
    new_keys = rng.normal(size=(8, 6)).astype(np.float32)
    new_keys[:4] = store.keys_of(live[:4]) + 0.05 * rng.normal(size=(4, 6)).astype(np.float32)  # near copies
    for j, cos in ((4, 0.805), (5, 0.795)):  # key parts at cosine just above / below the threshold of live[j]
        p = store.keys_of(live[j:j + 1])[0, 2:]
        side = rng.normal(size=4)
        side -= (side @ unit(p)) * unit(p)
        new_keys[j, 2:] = (cos * unit(p) + np.sqrt(1 - cos ** 2) * unit(side)) * np.linalg.norm(p)
    new_prev, new_lanes = store.meta_of(live[:8], "prev"), store.meta_of(live[:8], "lane")
    part, threshold = slice(2, None), 0.8
    want = set()
    for key, p, b in zip(new_keys, new_prev, new_lanes, strict=True):
        for i in live[(prev == p) & (lane == b)]:
            k = store.keys_of(np.array([i]))[0]
            if unit(key[part]) @ unit(k[part]) >= threshold:
                want.add(int(i))
    assert {int(i) for i in live[:5]} <= want and int(live[5]) not in want  # near copies, 0.805 in, 0.795 out

    class Cache:
        def remove(self, ids):
            self.removed = set(ids.tolist())

    cache = Cache()
    gone = retrieval.remove_replaced(store, cache, new_keys, new_prev, new_lanes, threshold, part=part)
    assert set(gone.tolist()) == want == cache.removed
    assert not np.isin(list(want), store._row_id).any()  # gone from the store


def test_remove_replaced_refuses_bool_predecessors_as_the_store_does():
    """np.where(prev >= 0, prev, -2) turned bools into 0/1 before ids_with's integer check: [True] removed the
    entries that followed token 1 (the store refuses bools everywhere else)."""
    from memory.cache import TieredKVCache
    from memory.retrieval import remove_replaced, write_memory

    store, cache = FaissStore(4, 2, 8, lanes=1), TieredKVCache(1, 4, hot=4, warm=4, cold=0)
    key = np.ones((1, 4), np.float32)
    write_memory(store, cache, key, np.zeros((1, 2), np.float32), np.zeros((1, 1, 4), np.float32),
                 np.zeros((1, 1, 4), np.float32), np.array([0]), meta={"prev": np.array([1])})
    with pytest.raises(TypeError, match="prev must be integers"):
        remove_replaced(store, cache, key, np.array([True]), np.array([0]), 0.5)
    assert len(store) == 1
