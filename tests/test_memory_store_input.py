"""FaissStore's inputs: empty query blocks, tensors of every float type, integers where integers are meant (floats
and bools refused, never truncated), and numeric settings that refuse bools."""

import io
import re

import numpy as np
import pytest
import torch

from memory.cache import TieredKVCache
from memory.retrieval import retrieve_memory_kv, write_memory
from memory.store import FaissStore


@pytest.mark.parametrize("kind", ["fp32", "bf16", "ivf"])
@pytest.mark.parametrize("scope", ["lane", "shared"])
def test_an_empty_query_block_gives_empty_results_of_the_right_shapes(kind, scope):
    """Regression: once the store held entries, zero queries sized the exact scan's block by 0 queries
    (ZeroDivisionError); retrieve_memory_kv failed the same way."""
    rng = np.random.default_rng(0)
    store = FaissStore(8, 2, capacity=80, lanes=2, scope=scope, index="ivf" if kind == "ivf" else "flat",
                       ivf_lists=1, precision="bf16" if kind == "bf16" else "fp32")
    store.add(rng.standard_normal((80, 8)), np.ones((80, 2)), np.repeat([0, 1], 40))
    assert kind != "ivf" or all(a.ready for a in store._ann)  # 1 list: the index answers from 39 entries
    clock = store._clock
    blocks = [(2, 0)] + ([(0, 3)] if scope == "shared" else [])  # B = 0 only where B need not equal lanes
    for B, Q in blocks:
        hits = store.search(np.zeros((B, Q, 8), np.float32), 3, with_values=True)
        assert hits.scores.shape == hits.ids.shape == hits.meta["found"].shape == (B, Q, 3)
        assert hits.values.shape == (B, Q, 3, 2) and hits.scores.dtype == np.float32 and hits.ids.dtype == np.int64
    assert store._clock == clock  # no access recorded
    np.testing.assert_array_equal(store.search(np.ones((2, 1, 8)), 1).ids >= 0, True)  # searches still work


def test_retrieve_memory_kv_with_no_queries_gives_empty_memory():
    store, cache = FaissStore(8, 1, capacity=4, lanes=2), TieredKVCache(2, 4, 8, 8, 0)
    write_memory(store, cache, torch.randn(2, 8), torch.zeros(2, 1), torch.randn(2, 2, 4), torch.randn(2, 2, 4), [0, 1])
    mem_k, mem_v, mask, ids = retrieve_memory_kv(store, cache, torch.zeros(2, 0, 8), k=3)
    assert mem_k.shape == mem_v.shape == (2, 0, 3, 2, 4) and mask.shape == ids.shape == (2, 0, 3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_tensors_of_every_float_type_are_taken_as_float32(dtype):
    """Regression: bfloat16 tensors raised a raw 'Got unsupported ScalarType BFloat16' in add and search."""
    rng = np.random.default_rng(1)
    keys, values, q = (torch.from_numpy(rng.standard_normal(s).astype(np.float32)).to(dtype)
                       for s in ((6, 8), (6, 2), (1, 3, 8)))
    typed, plain = FaissStore(8, 2, capacity=8, metric="ip"), FaissStore(8, 2, capacity=8, metric="ip")
    ids, _ = typed.add(keys, values, [0] * 6, importance=torch.ones(6, dtype=dtype))
    plain.add(keys.float().numpy(), values.float().numpy(), [0] * 6)  # the same numbers, as float32
    np.testing.assert_array_equal(typed.keys_of(ids), keys.float().numpy())
    np.testing.assert_array_equal(typed.get(ids)[0], values.float().numpy())
    got, want = typed.search(q, 4), plain.search(q.float().numpy(), 4)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_integer_arguments_refuse_floats_and_bools_instead_of_truncating():
    """Regression: lanes [0.7, 1.9] were stored as [0, 1], meta episode [2.9, -0.5] as [2, 0] (-0.5 passed the
    '-1 or >= 0' rule) and remove([id + 0.9]) removed the entry; TieredKVCache refuses non-integer ids."""
    store = FaissStore(8, 2, capacity=4, lanes=2)
    keys, values = np.eye(8)[:2], np.ones((2, 2))
    for lanes, meta, name in (([0.7, 1.9], None, "lanes"), ([True, False], None, "lanes"),
                              ([0, 1], {"episode": [2.9, -0.5]}, r"meta\['episode'\]"),
                              ([0, 1], {"task": torch.tensor([1.0, 2.0])}, r"meta\['task'\]")):
        with pytest.raises(TypeError, match=rf"^FaissStore: {name} must be integers, got dtype \w+; pass ints$"):
            store.add(keys, values, lanes, meta=meta)
    assert len(store) == 0
    ids, _ = store.add(keys, values, torch.tensor([0, 1]), meta={"episode": np.array([2, -1], np.int32)})
    np.testing.assert_array_equal(store.meta_of(ids, "episode"), [2, -1])
    for call, name in ((lambda: store.remove([ids[0] + 0.9]), "ids"), (lambda: store.get(ids * 1.0), "ids"),
                       (lambda: store.keys_of([0.5]), "ids"), (lambda: store.meta_of([1.5], "task"), "ids"),
                       (lambda: store.clear(lanes=[0.5]), "lanes"),
                       (lambda: store.ids_with("episode", [2.9], [0]), "values"),
                       (lambda: store.ids_with("episode", [2], [0.2]), "lanes")):
        with pytest.raises(TypeError, match=f"^FaissStore: {name} must be integers"):
            call()
    assert len(store) == 2 and store.get(ids)[1]["found"].all()  # nothing removed or cleared
    assert store.remove([]) == 0 and store.remove(torch.tensor([], dtype=torch.float32)) == 0  # empty: any type
    store.clear(lanes=[])
    np.testing.assert_array_equal(store.ids_with("episode", [2], [0]), [[ids[0]]])
    assert store.remove(np.array([ids[0]], np.uint32)) == 1


@pytest.mark.parametrize("name", ["dim", "value_dim", "capacity", "lanes", "threads", "ivf_lists", "ivf_probes",
                                  "hnsw_neighbors", "hnsw_ef_search", "hnsw_min_entries", "exact_block",
                                  "importance_halflife"])
def test_numeric_settings_refuse_bools(name):
    """Regression: importance_halflife, exact_block, ivf_lists and ivf_probes took True (as 1) though dim refused it."""
    args = {"dim": 8, "value_dim": 2, "capacity": 80, "index": "ivf", name: True}
    with pytest.raises(ValueError, match=rf"^FaissStore: {name}=True: must be "):
        FaissStore(**args)


@pytest.mark.parametrize("name, choices", [("scope", "('lane', 'shared')"), ("index", "('flat', 'ivf', 'hnsw')"),
                                           ("eviction", "('fifo', 'lru', 'importance')")])
def test_choice_settings_name_the_choices(name, choices):
    with pytest.raises(ValueError, match=rf"^FaissStore: {name}='lru2': choose one of {re.escape(choices)}$"):
        FaissStore(dim=8, value_dim=2, capacity=8, **{name: "lru2"})


def test_numpy_integer_settings_are_kept_as_python_ints():
    """np.int64 settings are taken (as for dim) and saved as ints: a numpy scalar would fail weights_only loads."""
    store = FaissStore(8, 2, capacity=np.int64(80), index="ivf", ivf_lists=np.int64(2), ivf_probes=np.int32(1),
                       exact_block=np.int64(16), hnsw_min_entries=np.int64(5), importance_halflife=np.float32(4))
    buf = io.BytesIO()
    torch.save(store.state_dict(), buf)
    buf.seek(0)
    config = torch.load(buf, weights_only=True)["config"]
    assert (config["ivf_lists"], config["ivf_probes"], config["exact_block"]) == (2, 1, 16)
    assert type(config["ivf_lists"]) is int and config["importance_halflife"] == 4.0
    with pytest.raises(ValueError, match=r"^FaissStore.search: k=True: must be an int >= 1$"):
        store.search(np.ones((1, 1, 8)), True)
    with pytest.raises(ValueError, match="lane=True"):
        store.size(True)


def test_complex_numbers_are_refused_not_cut_to_their_real_part():
    """Regression (an audit, 2026-12-02): complex keys were stored as their real parts, with only a ComplexWarning."""
    store = FaissStore(8, 2, capacity=4, lanes=1)
    keys = np.eye(8)[:2] * (1 + 1j)
    with pytest.raises(TypeError, match=r"^FaissStore: keys must be real numbers, got dtype complex128$"):
        store.add(keys, np.ones((2, 2)), [0, 0])
    with pytest.raises(TypeError, match=r"^FaissStore: lanes must be real numbers"):
        store.add(np.eye(8)[:2], np.ones((2, 2)), np.array([0, 0], dtype=complex))
    assert len(store) == 0
