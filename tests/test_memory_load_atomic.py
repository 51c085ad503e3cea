"""A refused state leaves TieredKVCache / FaissStore exactly as they were (one-line ValueError naming the field),
and FaissStore.load refuses a store.pt with unknown settings or non-finite entries as damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memory.cache import TieredKVCache
from memory.store import FaissStore
from tests.test_store_live_rows import every_row_state


def same(a, b) -> bool:
    """Deep equality of state dicts (tensors, lists, dicts, scalars)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and bool(
            torch.equal(a, b) or torch.isnan(a).any() and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def make_cache(ids, seed) -> TieredKVCache:
    rng = np.random.default_rng(seed)
    cache = TieredKVCache(2, 4, hot=2, warm=2, cold=2)
    cache.put(ids, rng.normal(size=(len(ids), 2, 4)), rng.normal(size=(len(ids), 2, 4)))
    cache.get_batch(np.asarray(ids[:2]))  # counters and clock move
    return cache


def _set(d, path, value):
    *outer, last = path
    for k in outer:
        d = d[k]
    d[last] = value


CACHE_DAMAGE = [
    (("counters",), "x", "counters"),
    (("counters",), {"hits": 1}, "counters"),
    (("counters",), {"hits": "x", "misses": 0, "promotions": 0, "demotions": 0, "evictions": 0}, "hits"),
    (("counters",), {"hits": -1, "misses": 0, "promotions": 0, "demotions": 0, "evictions": 0}, "hits"),
    (("clock",), "x", "clock"),
    (("clock",), -3, "clock"),
    (("clock",), 2.5, "clock"),
    (("ids",), [1, 2, 3], "ids"),
    (("data", "calibrated_at"), "x", "calibrated_at"),
    (("data", "key_seen"), -1, "key_seen"),
]


@pytest.mark.parametrize("path, value, field", CACHE_DAMAGE)
def test_cache_refused_state_changes_nothing(path, value, field):
    cache = make_cache([0, 1, 2, 3, 4], seed=0)
    before = cache.state_dict()
    state = make_cache([10, 11, 12, 13], seed=1).state_dict()
    _set(state, path, value)
    with pytest.raises(ValueError, match=field) as err:
        cache.load_state_dict(state)
    assert "\n" not in str(err.value) and str(err.value).startswith("TieredKVCache.load_state_dict: ")
    after = cache.state_dict()
    assert same(before, after)
    assert sorted(cache._ids.tolist()) == [0, 1, 2, 3, 4] and len(cache) == 5
    assert cache.tier_of([10, 11, 12, 13]).tolist() == [-1] * 4
    cache.close()


def test_cache_good_state_still_loads():
    cache, other = make_cache([0, 1, 2, 3, 4], seed=0), make_cache([10, 11, 12, 13], seed=1)
    cache.load_state_dict(other.state_dict())
    assert same(cache.state_dict(), other.state_dict())


def make_store(n, seed, index="flat") -> FaissStore:
    rng = np.random.default_rng(seed)
    store = FaissStore(4, 3, 8, lanes=2, index=index, hnsw_min_entries=2)
    store.add(rng.normal(size=(n, 4)), rng.normal(size=(n, 3)), np.arange(n) % 2)
    store.search(rng.normal(size=(2, 1, 4)), k=2)  # lru stamps / importance move
    return store


STORE_DAMAGE = [
    ("clock", "x", "clock"),
    ("clock", -1, "clock"),
    ("adds", "x", "adds"),
    ("adds", None, "adds"),
    ("values", [[0.0] * 3] * 16, "values"),
    ("meta", torch.zeros(16, 8, dtype=torch.float32), "meta"),
]


@pytest.mark.parametrize("name, value, field", STORE_DAMAGE)
def test_store_refused_state_changes_nothing(name, value, field):
    store = make_store(5, seed=0)
    before = store.state_dict()
    state = make_store(3, seed=1).state_dict()
    state[name] = value
    with pytest.raises(ValueError, match=field) as err:
        store.load_state_dict(state)
    assert "\n" not in str(err.value) and str(err.value).startswith("FaissStore.load_state_dict: ")
    assert same(before, store.state_dict())
    assert int(store._count.sum()) == 5


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_store_damaged_index_state_changes_nothing(index):
    store = make_store(5, seed=0, index=index)
    before = store.state_dict()
    state = make_store(3, seed=1, index=index).state_dict()
    state["ann"][0]["blob"] = torch.tensor([1, 2, 3], dtype=torch.uint8)  # not a FAISS index
    with pytest.raises(ValueError, match="index state") as err:
        store.load_state_dict(state)
    assert "\n" not in str(err.value)
    assert same(before, store.state_dict())
    assert int(store._count.sum()) == 5


def test_store_good_state_still_loads():
    for index in ("flat", "hnsw"):
        store, other = make_store(5, seed=0, index=index), make_store(3, seed=1, index=index)
        store.load_state_dict(other.state_dict())
        assert same(store.state_dict(), other.state_dict())


def _edit_store_pt(folder, edit):
    d = torch.load(folder / "store.pt", weights_only=True)
    edit(d)
    torch.save(d, folder / "store.pt")


def test_store_load_refuses_unknown_setting(tmp_path):
    make_store(5, seed=0).save(tmp_path)
    _edit_store_pt(tmp_path, lambda d: d["config"].update(foo=1))
    with pytest.raises(ValueError, match="foo") as err:
        FaissStore.load(tmp_path)
    assert "damaged" in str(err.value) and "\n" not in str(err.value)


def test_store_load_refuses_missing_setting(tmp_path):
    make_store(5, seed=0).save(tmp_path)
    _edit_store_pt(tmp_path, lambda d: d["config"].pop("dim"))
    with pytest.raises(ValueError, match="damaged"):
        FaissStore.load(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_store_load_refuses_non_finite_values(tmp_path, bad):
    store = make_store(5, seed=0)
    store.save(tmp_path)
    row = int(np.flatnonzero(store._row_id >= 0)[0])
    _edit_store_pt(tmp_path, lambda d: d["values"].__setitem__((row, 1), bad))
    with pytest.raises(ValueError, match="values.*NaN or inf") as err:
        FaissStore.load(tmp_path)
    assert "\n" not in str(err.value)


def test_store_load_ignores_stale_values_of_empty_rows():
    """A FaissStore/3 state saved every row: an empty row's stale values are not checked (never read); a state
    of now holds none."""
    store = make_store(5, seed=0)
    assert store.state_dict()["values"].shape == (5, 3)
    d = every_row_state(store)
    d["values"][int(np.flatnonzero(store._row_id < 0)[0]), 0] = float("nan")
    loaded = FaissStore(4, 3, 8, lanes=2)
    loaded.load_state_dict(d)
    assert int(loaded._count.sum()) == 5


def test_store_load_meets_a_save_committed_while_it_reads_and_loads_that_save(tmp_path, monkeypatch):
    """Another process saves into the folder between this load's read of store.pt and of the index file it names,
    which that save's commit deletes: the load reads the new save whole (it said the index file was not in the
    folder, "a store.pt from another save", or damaged). A folder that stays as it is fails at once, as before."""
    import memory.store_io as store_io

    def store_of(n, seed):
        store = FaissStore(dim=8, capacity=16, lanes=1, value_dim=8)
        keys = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32))
        store.add(keys, keys, lanes=np.zeros(n, int))
        return store

    store_of(3, 0).save(tmp_path)
    newer, real_load, calls = store_of(5, 1), store_io.checked_torch_load, []

    def load_then_another_save(path, *args, **kwargs):
        part = real_load(path, *args, **kwargs)
        calls.append(Path(path).name)
        if len(calls) == 1:  # store.pt read: now the other process commits its save
            newer.save(tmp_path)
        return part

    monkeypatch.setattr(store_io, "checked_torch_load", load_then_another_save)
    loaded = FaissStore.load(tmp_path)
    assert len(loaded) == 5 and same(loaded.state_dict(), newer.state_dict())
    assert calls[0] == calls[1] == "store.pt" and len(calls) == 3  # read again from the new commit
    monkeypatch.setattr(store_io, "checked_torch_load", real_load)
    index = next(tmp_path.glob("index-*.pt"))
    index.unlink()  # damaged for good: no retry makes it whole
    with pytest.raises(FileNotFoundError, match=r"names index file index-.*\.pt, which is not in the folder"):
        FaissStore.load(tmp_path)
