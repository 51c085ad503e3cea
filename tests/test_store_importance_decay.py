"""store_eviction=importance: LFU without a half-life, LRFU with one (references decay, the write is one)."""

import numpy as np
import pytest

from agents.config import ConfigError, load_config, memory_config
from memory.config import MemoryConfig
from memory.store import FaissStore

KEYS = np.eye(8, dtype=np.float32)  # entry i has key e_i: a query e_i returns exactly entry i at k=1


def add(store, i):
    return int(store.add(KEYS[i:i + 1], np.full((1, 1), i), [0])[0][0])


def hit(store, i, times):
    for _ in range(times):
        assert store.search(KEYS[None, i:i + 1], 1).ids[0, 0, 0] >= 0


def victim(halflife):
    """A is hit 8 times, then B, C, D are added and hit 3 times each; the fifth add evicts someone."""
    store = FaissStore(8, 1, capacity=4, eviction="importance", metric="ip", importance_halflife=halflife)
    ids = {"A": add(store, 0)}
    hit(store, 0, 8)
    for name, i in (("B", 1), ("C", 2), ("D", 3)):
        ids[name] = add(store, i)
    for i in (1, 2, 3):
        hit(store, i, 3)
    evicted = store.add(KEYS[4:5], np.full((1, 1), 4), [0])[1]
    return next(name for name, id_ in ids.items() if id_ == int(evicted[0])), store


def test_without_decay_early_hits_outrank_later_ones_for_good():
    name, store = victim(None)
    assert name == "B"  # A's 8 > the others' 3; of those, B is the oldest
    assert store._importance[0] == 8.0


def test_with_a_half_life_of_one_add_the_entry_hit_long_ago_goes_first():
    name, store = victim(1)
    # A: (1 write + 8 hits) halved by the 4 adds since = 0.5625; B, C, D: written (1) and decayed, hit 3 times, then
    # halved by E's add: 1.625, 1.75, 2.0; E: its write, 1
    assert name == "A"
    live = store._row_id >= 0
    np.testing.assert_allclose(np.sort(store._importance[live]), [1.0, 1.625, 1.75, 2.0])


@pytest.mark.parametrize("halflife, kept", [(None, True), (1.0, False)])
def test_an_entry_hit_early_outlives_never_used_new_ones_only_without_a_half_life(halflife, kept):
    """LFU keeps an entry returned three times early for good while every new memory churns; LRFU lets it go once
    its references are older than the new entries' writes (here after ~5 half-lives)."""
    store = FaissStore(8, 1, capacity=4, eviction="importance", metric="ip", importance_halflife=halflife)
    first = add(store, 0)
    hit(store, 0, 3)
    for i in range(10):
        add(store, 1 + i % 7)
    assert (store.get(np.array([first]))[1]["found"][0]) == kept


@pytest.mark.parametrize("halflife", [2.0, 7.0])
def test_importance_decays_by_half_every_halflife_adds(halflife):
    store = FaissStore(8, 1, capacity=8, eviction="importance", metric="ip", importance_halflife=halflife)
    add(store, 0)
    hit(store, 0, 16)
    for i in range(1, 8):
        add(store, i)
    np.testing.assert_allclose(store._importance[0], (1 + 16) * 0.5 ** (7 / halflife))  # its write and 16 hits


def test_the_half_life_is_a_run_config_key_saved_with_the_store():
    cfg = memory_config(load_config(["memory.store_eviction=importance", "memory.store_importance_halflife=50"]))
    store = FaissStore.from_config(cfg, lanes=1, value_dim=1)
    assert store.importance_halflife == 50.0
    assert FaissStore.from_config(MemoryConfig(), lanes=1, value_dim=1).importance_halflife is None  # 0: no decay
    assert store.state_dict()["config"]["importance_halflife"] == 50.0
    with pytest.raises(ConfigError, match=r"memory.store_importance_halflife=-1.0: must be >= 0"):
        load_config(["memory.store_importance_halflife=-1"])
    for bad in (0, -2.0, float("inf"), "10"):
        with pytest.raises(ValueError, match="importance_halflife"):
            FaissStore(8, 1, capacity=4, importance_halflife=bad)
    with pytest.raises(ValueError, match=r"importance_halflife=inf: must be a finite number > 0"):  # inf is > 0
        FaissStore(8, 1, capacity=4, importance_halflife=float("inf"))


def test_a_store_saved_with_a_half_life_loads_with_it(tmp_path):
    store = FaissStore(8, 1, capacity=4, eviction="importance", metric="ip", importance_halflife=3)
    add(store, 0)
    store.save(tmp_path / "s")
    loaded = FaissStore.load(tmp_path / "s")
    assert loaded.importance_halflife == 3.0
    add(loaded, 1)
    add(store, 1)
    np.testing.assert_array_equal(loaded._importance, store._importance)
