"""Undo to a mark (memory/undo.py): after `undo()` a store or cache holds exactly what it held at `mark()`, every
array and number of it, and then behaves as a twin that never saw the undone operations."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memory.cache import TieredKVCache
from memory.cache_tiers import Book, TierStorage
from memory.store import CodedKeys, FaissStore
from memory.store_index import HNSWIndex, IVFIndex
from tests.examples import examples
from tests.test_resume import assert_same

V, DC = 12, 4  # coded stores: token codes (V, DC)
CODES = torch.from_numpy(np.random.default_rng(7).standard_normal((V, DC)).astype(np.float32))
STORES = {
    "flat-lru": lambda: FaissStore(8, 3, capacity=12, lanes=2, eviction="lru"),
    "coded-importance": lambda: FaissStore(2 * DC + 5, 3, capacity=10, lanes=2, metric="ip", eviction="importance",
                                           importance_halflife=3.0, coded=CodedKeys(CODES, ("token", "prev"))),
    "shared-fifo": lambda: FaissStore(6, 2, capacity=15, lanes=3, scope="shared"),
    "hnsw": lambda: FaissStore(8, 2, capacity=30, lanes=2, index="hnsw", hnsw_min_entries=6, hnsw_neighbors=4),
    "ivf": lambda: trained_ivf(),
}
CACHES = {
    "lru": lambda: TieredKVCache(2, 4, 3, 4, 6, policy="lru", promote_after=0),
    "fifo-promote": lambda: TieredKVCache(2, 4, 2, 3, 5, policy="fifo", promote_after=2, key_dim=6),
    "importance-float": lambda: TieredKVCache(2, 4, 4, 2, 8, policy="importance", quantize=False),
}
# SKIP: the undo machinery itself, the cache's file handles, a search's scratch buffer and what never changes
SKIP = {"_undo", "cold_undo", "_marked", "_finalizer", "mmap", "_scores", "coded", "cold_file", "keys", "index"}
OPS = st.lists(st.tuples(st.sampled_from(["add", "add", "read", "remove", "clear", "reload", "tiers"]),
                         st.integers(1, 9), st.integers(0, 2**16)), max_size=12)


def trained_ivf() -> FaissStore:
    """An IVF store past its training size (39 entries a list), so that the operations change a trained index."""
    store = FaissStore(8, 2, capacity=60, lanes=2, index="ivf", ivf_lists=1)
    rng = np.random.default_rng(3)
    store.add(rng.standard_normal((80, 8)), rng.standard_normal((80, 2)), np.repeat([0, 1], 40))
    assert all(index.ready for index in store._ann)
    return store


def contents(obj) -> dict:
    """Every array and number an object holds, copied (its Books, TierStorage and FAISS index wrappers too); an
    attribute of another kind fails the test, so that a new kind of state is looked at here."""
    out = {}
    for name, v in vars(obj).items():
        if name in SKIP:
            continue
        if isinstance(v, (np.ndarray, torch.Tensor)):
            out[name] = v.copy() if isinstance(v, np.ndarray) else v.clone()
        elif isinstance(v, (Book, TierStorage, HNSWIndex, IVFIndex)):
            out[name] = contents(v)
        elif isinstance(v, list) and all(isinstance(x, (Book, HNSWIndex, IVFIndex)) for x in v):
            out[name] = [contents(x) for x in v]
        elif isinstance(v, (int, float, str, bool, tuple, type(None))):
            out[name] = v
        elif isinstance(v, (dict, list)):
            out[name] = repr(v)  # counters, evicted ids, the tier chain
        else:
            raise TypeError(f"{type(obj).__name__}.{name}: {type(v).__name__} is state this test does not compare")
    if isinstance(obj, (HNSWIndex, IVFIndex)):
        out["ntotal"] = obj.index.ntotal
    return out


def store_op(store: FaissStore, op: tuple, donor: dict | None = None) -> list:
    """One operation from (kind, size, seed); returns what it returned, as arrays. "reload" loads the store's own
    state, or with an even size `donor` (another store's state) where given."""
    kind, n, seed = op
    rng = np.random.default_rng(seed)
    if kind == "add":
        meta = {"token": rng.integers(0, V, n), "prev": np.where(rng.random(n) < 0.3, -1, rng.integers(0, V, n))}
        keys = rng.standard_normal((n, store.dim)).astype(np.float32)
        if store.coded is not None:  # the leading blocks are the codes the metadata names
            for f, field in enumerate(("token", "prev")):
                keys[:, f * DC:(f + 1) * DC] = np.where((meta[field] >= 0)[:, None], CODES.numpy()[meta[field]], 0)
        lanes = rng.integers(0, store.lanes, n)
        return list(store.add(keys, rng.standard_normal((n, store.value_dim)), lanes, meta=meta,
                              importance=rng.random(n)))
    if kind == "read":
        res = store.search(rng.standard_normal((store.lanes, 1 + n % 3, store.dim)).astype(np.float32), 3)
        return [res.scores, res.ids]
    if kind == "remove":
        live = store._row_id[store._row_id >= 0]
        return [store.remove(live[rng.random(len(live)) < 0.4])]
    if kind == "clear":
        return [store.clear(lanes=[n % store.lanes]) if n % 4 else store.clear()]
    if kind == "reload":
        store.load_state_dict(donor if donor is not None and n % 2 == 0 else store.state_dict())
    return []


def cache_op(cache: TieredKVCache, op: tuple, ids_seen: list) -> list:
    kind, n, seed = op
    rng = np.random.default_rng(seed)
    H, d, dk = cache.heads, cache.head_dim, cache.key_dim
    if kind == "add":
        ids = np.unique(rng.integers(0, 40, n))
        ids_seen.extend(ids.tolist())
        imp = rng.random(len(ids)) if cache.policy == "importance" else None
        return [cache.put(ids, rng.standard_normal((len(ids), H, dk)) * 3, rng.standard_normal((len(ids), H, d)),
                          importance=imp)]
    if kind == "read":
        ids = rng.integers(-1, 40, (2, n))
        return [t.numpy() for t in cache.get_batch(ids)]
    if kind in ("remove", "clear"):
        return [cache.remove(rng.integers(0, 40, n))]
    if kind == "reload":
        cache.load_state_dict(cache.state_dict())
    if kind == "tiers":
        cache.manage_tiers()
    return []


def check_undo(make, apply, before, during, again, after):
    """Run `before`, mark, run `during`, undo; `again`, undo; then both the object and a twin that only ran `before`
    run `after`: the same results and, at each point, the same contents."""
    obj, twin = make(), make()
    for op in before:
        apply(obj, op)
        apply(twin, op)
    obj.mark()
    at_mark = contents(obj)
    for ops in (during, again):
        for op in ops:
            apply(obj, op)
        obj.undo()
        assert_same(contents(obj), at_mark)
    obj.release()
    for op in after:
        assert_same(apply(obj, op), apply(twin, op))
    assert_same(contents(obj), contents(twin))
    return obj, twin


@pytest.mark.parametrize("name", sorted(STORES))
@settings(max_examples=examples(25), deadline=None)
@given(before=OPS, during=OPS, again=OPS, after=OPS)
def test_a_store_undone_holds_what_it_held_at_the_mark_and_acts_as_if_nothing_happened(name, before, during, again,
                                                                                       after):
    donor = STORES[name]()
    store_op(donor, ("add", 9, 99))
    state = donor.state_dict()
    check_undo(STORES[name], lambda store, op: store_op(store, op, state), before, during, again, after)


@pytest.mark.parametrize("name", sorted(CACHES))
@settings(max_examples=examples(25), deadline=None)
@given(before=OPS, during=OPS, again=OPS, after=OPS)
def test_a_cache_undone_holds_what_it_held_at_the_mark_and_acts_as_if_nothing_happened(name, before, during, again,
                                                                                       after):
    seen: list = []
    objs = check_undo(CACHES[name], lambda c, op: cache_op(c, op, seen), before, during, again, after)
    for cache in objs:
        cache.close()


def test_changes_after_release_stay_and_marks_do_not_nest():
    store = STORES["flat-lru"]()
    store_op(store, ("add", 5, 0))
    with pytest.raises(RuntimeError, match=r"FaissStore.undo: no mark is open; call mark\(\) first"):
        store.undo()
    store.mark()
    with pytest.raises(RuntimeError, match="a mark is open already"):
        store.mark()
    store_op(store, ("add", 3, 1))
    marked, rows = store.held()  # what the mark keeps: its copies, and the keys' rows written since (3 new ones)
    assert set(marked) >= {"_meta", "clock"} and sum(len(r) for r, _ in rows) == 3
    store.release()
    assert len(store) == 8 and store.held() == [{}, []]
    with pytest.raises(RuntimeError, match="no mark is open"):
        store.release()


def test_a_mark_keeps_the_cold_tier_on_disk_and_copies_only_the_cold_rows_written():
    """The cold tier is a memory-mapped file; a mark saves a cold slot's old contents only when a write reaches it
    (a whole snapshot held all of it in RAM)."""
    cache = TieredKVCache(2, 8, 1, 1, 1000, policy="fifo", quantize=False)
    cache.put(np.arange(900), np.ones((900, 2, 8)), np.ones((900, 2, 8)))
    cache.mark()
    cache.put(np.arange(900, 905), np.zeros((5, 2, 8)), np.zeros((5, 2, 8)))  # 5 new entries push 5 down
    marked, saved = cache.held()
    assert 1 <= sum(len(rows) for rows, _ in saved) <= 5 + 2 and "cold" not in marked["tiers"]
    cache.undo()
    k, _, found = cache.get_batch(np.arange(905))
    assert found[:900].all() and not found[900:].any() and (k[:900] == 1).all()
    cache.release()
    assert cache.held() == [{}, []]
    cache.close()


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
def test_a_mark_serialises_only_the_faiss_indexes_that_change(name):
    """An index's state is saved at its partition's first change after the mark: searches alone (an evaluation
    with writes off) save none, a write to one lane saves that lane's."""
    store = STORES[name]()
    for seed in range(4):
        store_op(store, ("add", 9, seed))
    store.mark()
    store_op(store, ("read", 3, 0))
    assert store._marked["ann"] == {}
    keys = np.random.default_rng(5).standard_normal((1, 8)).astype(np.float32)
    store.add(keys, np.zeros((1, 2)), np.array([1]))
    assert set(store._marked["ann"]) == {1}
    store.undo()
    store.release()
