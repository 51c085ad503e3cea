"""The public methods of FaissStore and TieredKVCache under wrong, empty and odd arguments, and save/load round
trips checked by what the loaded object does afterwards (hypothesis: random histories of puts, reads, removals,
searches and clears, then the same calls on the original and on the copy read back must give the same answers,
bit for bit). The argument cases were found by adversarial testing and failed before."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.cache import TieredKVCache
from memory.store import FaissStore
from tests.examples import examples

H, d, DK = 2, 3, 5


# ---------------------------------------------------------------------- TieredKVCache arguments
@pytest.mark.parametrize("empty", [[], (), np.zeros(0), torch.zeros(0)])
def test_cache_takes_an_empty_batch_of_ids_in_any_form(tmp_path, empty):
    """[] is float64 to numpy: get_batch([]), remove([]) and put([], ...) raised "ids must be integers" (the
    store takes empty batches of any type)."""
    cache = TieredKVCache(H, d, 2, 2, 2, path=tmp_path)
    cache.put([1], np.ones((1, H, d)), np.ones((1, H, d)))
    assert cache.put(empty, np.zeros((0, H, d)), np.zeros((0, H, d))).tolist() == []
    k, v, mask = cache.get_batch(empty)
    assert k.shape == (0, H, d) and v.shape == (0, H, d) and mask.shape == (0,)
    assert cache.remove(empty) == 0
    assert cache.tier_of(empty).shape == (0,)
    assert len(cache) == 1 and cache.get_batch([1])[2].tolist() == [True]
    with pytest.raises(TypeError, match="ids must be integers, got dtype float64"):
        cache.get_batch([1.0])  # floats are still refused
    cache.close()


@pytest.mark.parametrize("importance", [[np.nan, 1.0], [np.inf, 1.0], [1.0]])
def test_cache_put_refuses_importance_that_is_not_finite_or_not_one_per_entry(importance):
    """NaN is how a tier marks "no importance given": a NaN passed in was taken silently and the entry ranked by its
    access count instead (the store refuses non-finite importance)."""
    cache = TieredKVCache(H, d, 2, 0, 0, policy="importance")
    with pytest.raises(ValueError, match=r"^TieredKVCache\.put: importance must be 2 finite numbers"):
        cache.put([1, 2], np.ones((2, H, d)), np.ones((2, H, d)), importance=importance)
    assert len(cache) == 0


@pytest.mark.parametrize("arg", ["keys", "values", "importance"])
@pytest.mark.parametrize("bad", ["a", None])
def test_cache_put_names_an_argument_that_is_not_numbers(arg, bad):
    """Was numpy's "could not convert string to float: 'a'", which names no argument; None (numpy makes it NaN)
    was a shape error or a non-finite one, naming no type."""
    args = {"keys": np.ones((1, H, d)), "values": np.ones((1, H, d)), "importance": [1.0]}
    args[arg] = bad if arg != "importance" else [bad]
    cache = TieredKVCache(H, d, 2, 0, 0, policy="importance")
    with pytest.raises(TypeError, match=rf"^TieredKVCache\.put: {arg} must be a numeric array or tensor, got"):
        cache.put([1], args["keys"], args["values"], importance=args["importance"])
    assert len(cache) == 0


# ---------------------------------------------------------------------- FaissStore arguments
def small_store():
    store = FaissStore(4, 2, 8, lanes=2)
    store.add(np.eye(4)[:2], np.ones((2, 2)), [0, 1], meta={"token": [3, 3]})
    return store


@pytest.mark.parametrize("call", ["meta_of", "ids_with"])
def test_store_lookups_name_an_unknown_metadata_field(call):
    """Was "tuple.index(x): x not in tuple"."""
    store = small_store()
    with pytest.raises(ValueError, match=rf"^FaissStore\.{call}: field='bogus' is no metadata field; choose one of "
                                         r"\('lane', 'episode'"):
        store.meta_of([0], "bogus") if call == "meta_of" else store.ids_with("bogus", [0], [0])
    assert store.meta_of([0, 8], "token").tolist() == [3, 3]


def test_store_ids_with_refuses_lookups_it_cannot_answer():
    """values and lanes of other lengths raised numpy's "operands could not be broadcast together"; a lane
    outside the store matched nothing, silently (add and clear refuse such lanes)."""
    store = small_store()
    with pytest.raises(ValueError, match=r"^FaissStore\.ids_with: values \(3\) and lanes \(2\) must have one entry"):
        store.ids_with("token", [3, 3, 3], [0, 1])
    for lane in (2, -1):
        with pytest.raises(ValueError, match=r"^FaissStore\.ids_with: lanes must lie in \[0, 2\)"):
            store.ids_with("token", [3], [lane])
    assert store.ids_with("token", [3, 3], [0, 1]).tolist() == [[0], [8]]
    assert store.ids_with("token", [], []).shape == (0, 0)


def test_store_add_refuses_meta_that_is_not_a_dict():
    """Was "cannot convert dictionary update sequence element #0 to a sequence"."""
    store = FaissStore(4, 2, 8)
    with pytest.raises(TypeError, match=r"^FaissStore\.add: meta must be a dict field -> \(n,\) ints, got list"):
        store.add(np.ones((1, 4)), np.ones((1, 2)), [0], meta=[1])
    assert len(store) == 0


# ---------------------------------------------------------------------- round trips: later behaviour is equal
IDS = st.lists(st.integers(-1, 30), max_size=8)
CACHE_OPS = st.lists(st.tuples(st.sampled_from(["put", "get", "remove", "manage"]), IDS, st.integers(0, 2**31)),
                     min_size=1, max_size=20)


def cache_call(cache, op):
    kind, ids, seed = op
    rng = np.random.default_rng(seed)
    if kind == "put":
        new = np.unique([i for i in ids if i >= 0]).astype(np.int64)
        imp = rng.random(len(new)) if seed % 2 and cache.policy == "importance" else None
        return cache.put(new, 3 * rng.standard_normal((len(new), H, DK)), rng.standard_normal((len(new), H, d)),
                         importance=imp).tolist()
    if kind == "get":
        return [t.numpy().tobytes() for t in cache.get_batch(np.array(ids, dtype=np.int64))]
    if kind == "remove":
        return cache.remove(np.array(ids, dtype=np.int64))
    return cache.manage_tiers()


def cache_view(cache):
    return cache.stats(), cache.tier_of(np.arange(-1, 31)).tolist(), len(cache)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=list(HealthCheck))
@given(before=CACHE_OPS, after=CACHE_OPS, policy=st.sampled_from(["lru", "fifo", "importance"]),
       caps=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)).filter(lambda c: sum(c) > 0),
       quantize=st.booleans(), promote_after=st.integers(0, 3))
def test_a_cache_read_back_answers_every_later_call_as_the_one_saved(tmp_path_factory, before, after, policy, caps,
                                                                     quantize, promote_after):
    folder = tmp_path_factory.mktemp("cache")
    cache = TieredKVCache(H, d, *caps, policy=policy, quantize=quantize, promote_after=promote_after, key_dim=DK,
                          path=folder / "cold")
    for op in before:
        cache_call(cache, op)
    cache.save(folder / "c.pt")
    copy = TieredKVCache.load(folder / "c.pt", cold_path=folder / "cold2")
    assert cache_view(copy) == cache_view(cache)
    for op in after:
        assert cache_call(copy, op) == cache_call(cache, op)
        assert cache_view(copy) == cache_view(cache)
    cache.close()
    copy.close()


STORE_OPS = st.lists(st.tuples(st.sampled_from(["add", "add", "search", "remove", "clear", "clear_lane"]),
                               st.integers(0, 40), st.integers(0, 2**31)), min_size=1, max_size=10)


def store_call(store, op):
    kind, n, seed = op
    rng = np.random.default_rng(seed)
    if kind == "add":
        lanes = rng.integers(0, store.lanes, n)
        if store.scope == "shared":
            lanes = lanes[:store.capacity]
        else:  # at most a lane's capacity per lane and call
            lanes = np.concatenate([lanes[lanes == lane][:store.capacity] for lane in range(store.lanes)])
        n = len(lanes)
        ids, evicted = store.add(rng.standard_normal((n, 6)), rng.standard_normal((n, 2)), lanes,
                                 meta={"token": rng.integers(0, 5, n)}, importance=rng.random(n) if seed % 2 else None)
        return ids.tolist(), evicted.tolist()
    if kind == "search":
        hits = store.search(rng.standard_normal((store.lanes, 3, 6)), 1 + n % 7, with_values=True)
        return hits.ids.tolist(), hits.scores.tobytes(), hits.values.tobytes()
    if kind == "remove":
        return store.remove(rng.integers(-1, 3 * store.rows, n))
    return (store.clear() if kind == "clear" else store.clear([n % store.lanes])).tolist()  # the removed ids


def store_view(store):
    ids = np.arange(-1, 4 * store.rows)
    values, meta = store.get(ids)
    return (len(store), [store.size(lane) for lane in range(store.lanes)], values.tobytes(),
            {k: v.tolist() for k, v in meta.items()}, store.keys_of(ids).tobytes(),
            store.ids_with("token", np.arange(5), np.zeros(5, int)).tolist())


@settings(max_examples=examples(40), deadline=None, suppress_health_check=list(HealthCheck))
@given(before=STORE_OPS, after=STORE_OPS, index=st.sampled_from(["flat", "ivf", "hnsw"]),
       metric=st.sampled_from(["ip", "cosine"]), eviction=st.sampled_from(["fifo", "lru", "importance"]),
       scope=st.sampled_from(["lane", "shared"]), halflife=st.sampled_from([None, 3.0]))
def test_a_store_read_back_answers_every_later_call_as_the_one_saved(tmp_path_factory, before, after, index, metric,
                                                                     eviction, scope, halflife):
    """Every index type (IVF trains at 39 entries with one list, HNSW takes over at 5), both metrics, every
    eviction policy: ids, evictions, search ids, scores and values, metadata and sizes stay equal after a load."""
    ann = {"ivf": {"ivf_lists": 1}, "hnsw": {"hnsw_min_entries": 5, "hnsw_neighbors": 4}}.get(index, {})
    store = FaissStore(6, 2, 40, lanes=2, scope=scope, index=index, metric=metric, eviction=eviction,
                       importance_halflife=halflife, **ann)
    for op in before:
        store_call(store, op)
    folder = tmp_path_factory.mktemp("store")
    store.save(folder)
    copy = FaissStore.load(folder)
    assert store_view(copy) == store_view(store)
    for op in after:
        assert store_call(copy, op) == store_call(store, op)
        assert store_view(copy) == store_view(store)


@pytest.mark.parametrize("kwargs, message", [
    ({"index": "hnsw", "hnsw_neighbors": 1}, "FaissStore: hnsw_neighbors=1: must be an int in [2, 2147483647]"),
    # FAISS takes C ints: a TypeError from its constructor, an OverflowError at the first search
    ({"index": "hnsw", "hnsw_neighbors": 2**31}, "FaissStore: hnsw_neighbors=2147483648: must be an int in [2, "
                                                 "2147483647]"),
    ({"index": "hnsw", "hnsw_ef_search": 2**31}, "FaissStore: hnsw_ef_search=2147483648: must be an int in [1, "
                                                 "2147483647]"),
    ({"threads": 5000}, "FaissStore: threads=5000: must be an int in [1, 1024]"),  # MemoryConfig's bound
    ({"threads": 0}, "FaissStore: threads=0: must be an int in [1, 1024]"),
])
def test_store_keywords_have_the_run_configs_bounds(kwargs, message):
    with pytest.raises(ValueError) as err:
        FaissStore(8, 2, 64, **kwargs)
    assert str(err.value) == message


def test_an_importance_that_is_not_finite_says_so_rather_than_repeat_a_right_shape(tmp_path):
    """importance=[nan] read "must be 1 finite numbers, got shape (1,)": the shape was right."""
    store = FaissStore(4, 1, 8)
    with pytest.raises(ValueError) as err:
        store.add(np.ones((1, 4)), np.ones((1, 1)), [0], importance=[np.nan])
    assert str(err.value) == "FaissStore.add: importance must be 1 finite numbers, got NaN or inf"
    with pytest.raises(ValueError) as err:
        store.add(np.ones((1, 4)), np.ones((1, 1)), [0], importance=[1.0, 2.0])
    assert str(err.value) == "FaissStore.add: importance must be 1 finite numbers, got shape (2,)"
    cache = TieredKVCache(2, 4, 4, 4, 0, path=tmp_path / "cold")
    with pytest.raises(ValueError) as err:
        cache.put([10], torch.ones(1, 2, 4), torch.ones(1, 2, 4), importance=[np.inf])
    assert str(err.value) == "TieredKVCache.put: importance must be 1 finite numbers, got NaN or inf"
    cache.close()


def test_lanes_of_another_length_than_the_keys_are_named_with_the_keys():
    """Was "keys (2, 4) and values (2, 1) must be (1, 4) and (1, 1) for 1 lanes entries": lanes was the odd one."""
    with pytest.raises(ValueError) as err:
        FaissStore(4, 1, 8).add(np.ones((2, 4)), np.ones((2, 1)), [0])
    assert str(err.value) == ("FaissStore.add: keys (2, 4), values (2, 1) and lanes (1,) must agree: keys (n, 4), "
                              "values (n, 1), lanes (n,)")


def test_a_missing_save_names_what_save_writes_a_folder_for_the_store_a_file_for_the_cache(tmp_path):
    """Both said "point ....load at a folder (or file)": the store refuses a file, the cache a folder."""
    with pytest.raises(FileNotFoundError) as err:
        FaissStore.load(tmp_path / "none")
    assert str(err.value).endswith("; point FaissStore.load at the folder that FaissStore.save wrote")
    with pytest.raises(FileNotFoundError) as err:
        TieredKVCache.load(tmp_path)
    assert str(err.value) == (f"TieredKVCache: {tmp_path} is a folder, not a file; point TieredKVCache.load at the "
                              "file that TieredKVCache.save wrote")


def test_a_cold_tier_too_big_for_a_chosen_folder_names_path_not_tmpdir(tmp_path):
    """With path= given the line said "set TMPDIR to a folder on a bigger disk", which does not move that folder."""
    import pickle

    with pytest.raises(OSError) as err:
        TieredKVCache(12, 64, 1, 1, 10**11, path=tmp_path / "cold")
    assert str(err.value).endswith("lower memory.cache_cold (100,000,000,000 entries, 559 TiB) or pass path= a "
                                   "folder on a bigger disk")
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)  # as Ray Tune's trials send it
    with pytest.raises(OSError) as err:
        TieredKVCache(12, 64, 1, 1, 10**11)
    assert str(err.value).endswith("or set TMPDIR to a folder on a bigger disk")
