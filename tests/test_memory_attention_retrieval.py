"""Memory attention's store + cache adapter: write_memory, retrieve_memory_kv, re-ranking, the retrieve hook."""

import numpy as np
import pytest
import torch

from memory.attention import MemoryAttention
from memory.augmented import MemoryAugmentedTransformer
from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from memory.retrieval import retrieve_memory_kv, write_memory
from memory.store import FaissStore
from tests.test_memory_attention import CFG, H, d


def test_retrieve_memory_kv_returns_the_stored_kv_of_the_nearest_entries():
    torch.manual_seed(6)
    attn = MemoryAttention(CFG)
    store = FaissStore(32, 1, capacity=4, lanes=2, eviction="fifo")
    cache = TieredKVCache(H, d, hot=3, warm=0, cold=0)
    hidden = torch.randn(2, 4, 32)  # 4 memories per lane
    with torch.no_grad():
        k, v = attn.project_kv(hidden)  # (2, 4, H, d)
    ids = write_memory(store, cache, hidden.flatten(0, 1), torch.zeros(8, 1), k.flatten(0, 1), v.flatten(0, 1),
                       lanes=np.repeat([0, 1], 4))
    assert len(store) == 8 and len(cache) == 3  # the cache keeps only 3 of them
    queries = hidden[:, [0, 3]] + 0.01  # (2, 2, 32): query each lane's own entries 0 and 3
    mem_k, mem_v, mask, found = retrieve_memory_kv(store, cache, queries, k=2)
    assert mem_k.shape == (2, 2, 2, H, d) and mask.shape == (2, 2, 2)
    np.testing.assert_array_equal(found[:, :, 0].numpy(), ids.reshape(2, 4)[:, [0, 3]])
    in_cache = torch.from_numpy(cache.tier_of(found.numpy()) >= 0)
    assert torch.equal(mask, in_cache) and mask.any() and not mask.all()
    hit = mask[1, 1, 0]  # lane 1's last entry was put last, so it is cached
    assert hit
    torch.testing.assert_close(mem_k[1, 1, 0], k[1, 3])
    torch.testing.assert_close(mem_v[1, 1, 0], v[1, 3])
    assert (mem_k[~mask] == 0).all()
    # store eviction drops the cache entry too, so the cache never serves a forgotten memory
    new_ids = write_memory(store, cache, torch.randn(1, 32), torch.zeros(1, 1), k[0, :1], v[0, :1], lanes=[0])
    assert not store.get(ids[:1])[1]["found"][0] and cache.tier_of(ids[:1])[0] == -1
    assert cache.tier_of(new_ids)[0] == 0


def test_retrieve_then_rerank_keeps_the_best_k_of_the_rescored_candidates():
    """fetch=4 candidates re-scored by `rescore`: the k kept are the best re-scored ones; -inf drops one."""
    store = FaissStore(8, 1, capacity=8, lanes=1, metric="ip")
    cache = TieredKVCache(2, 4, hot=8, warm=0, cold=0)
    keys = torch.eye(8)[:4] * torch.tensor([4.0, 3.0, 2.0, 1.0])[:, None]  # entry i scores 4 - i for the query
    ids = write_memory(store, cache, keys, torch.zeros(4, 1), keys.view(4, 2, 4), keys.view(4, 2, 4), lanes=[0] * 4)
    query = torch.ones(1, 1, 8)
    plain = retrieve_memory_kv(store, cache, query, k=2)[3]
    assert plain[0, 0].tolist() == ids[:2].tolist()

    def reverse(scores, found):  # prefer low scores, and drop the entry written first
        return np.where(found == ids[0], -np.inf, -scores)

    _, _, mask, kept = retrieve_memory_kv(store, cache, query, k=2, fetch=4, rescore=reverse)
    assert kept[0, 0].tolist() == [ids[3], ids[2]] and mask.all()
    _, _, mask, kept = retrieve_memory_kv(store, cache, query, k=4, fetch=4, rescore=reverse)
    assert kept[0, 0].tolist() == [ids[3], ids[2], ids[1], -1] and mask[0, 0].tolist() == [True] * 3 + [False]


@pytest.mark.parametrize("rerank", [False, True])
def test_the_store_counts_as_accessed_only_the_memories_it_serves(rerank):
    """lru and importance eviction rank entries by their use: of fetch=4 candidates only the k=2 read count. All 4
    were credited (an entry re-ranked away gained importance and recency without ever being read)."""
    store = FaissStore(8, 1, capacity=8, lanes=1, metric="ip", eviction="importance")
    cache = TieredKVCache(2, 4, hot=8, warm=0, cold=0)
    keys = torch.eye(8)[:4] * torch.tensor([4.0, 3.0, 2.0, 1.0])[:, None]  # entry i scores 4 - i for the query
    ids = write_memory(store, cache, keys, torch.zeros(4, 1), keys.view(4, 2, 4), keys.view(4, 2, 4), lanes=[0] * 4)
    before = store.state_dict()["importance"].clone()
    rescore = (lambda scores, found: -scores) if rerank else None  # the rerank keeps the two lowest scores
    kept = retrieve_memory_kv(store, cache, torch.ones(1, 1, 8), k=2, fetch=4, rescore=rescore)[3][0, 0].tolist()
    assert kept == ([ids[3], ids[2]] if rerank else [ids[0], ids[1]])
    gained = store.state_dict()["importance"] - before
    rows = {int(i): r for r, i in enumerate(store.state_dict()["row_id"].tolist()) if i >= 0}
    assert {i: float(gained[rows[int(i)]]) for i in ids} == {int(i): float(i in kept) for i in ids}


def test_transformer_retrieves_through_store_and_cache():
    torch.manual_seed(7)
    cfg = MemoryConfig(dim=32, attn_heads=4)
    model = MemoryAugmentedTransformer(cfg, vocab=9, n_layers=2, memory_layers=(1,))
    store = FaissStore(32, 1, capacity=16, lanes=2)
    cache = TieredKVCache.from_config(cfg)
    tokens = torch.randint(0, 9, (2, 6))
    with torch.no_grad():
        _, info = model(tokens)
        h = info["memory_queries"]  # (2, 6, 32): what the memory layer sees
        k, v = model.layers[1].project_kv(h)
    write_memory(store, cache, h.flatten(0, 1), torch.zeros(12, 1), k.flatten(0, 1), v.flatten(0, 1),
                 lanes=np.repeat([0, 1], 6))
    calls = []

    def retrieve(queries):
        calls.append(queries.shape)
        return retrieve_memory_kv(store, cache, queries, k=4)[:3]

    logits, info = model(tokens, retrieve=retrieve)
    assert calls == [(2, 6, 32)] and logits.shape == (2, 6, 9)
    assert (info["memory_share"] > 0).all()
    # retrieve_memory_kv as it is (its 4th item, the ids, ignored), as the docstring suggests: was "too many values
    # to unpack (expected 3)"
    same, _ = model(tokens, retrieve=lambda queries: retrieve_memory_kv(store, cache, queries, k=4))
    assert torch.equal(same, logits)
    cache.close()


def test_write_memory_is_all_or_nothing():
    """K/V the cache refuses (NaN, the wrong shape) used to reach it after the store had committed the keys: the store
    kept entries the cache never held, which searches then ranked first and masked out."""
    store = FaissStore(32, 1, capacity=4, lanes=2, eviction="fifo")
    cache = TieredKVCache(H, d, hot=2, warm=2, cold=0)
    keys, k = torch.randn(2, 32), torch.randn(2, H, d)
    first = write_memory(store, cache, keys, torch.zeros(2, 1), k, k, lanes=[0, 1])
    for bad_k in (torch.full_like(k, float("nan")), torch.randn(2, H, d + 1)):
        with pytest.raises(ValueError, match="TieredKVCache.put: keys"):
            write_memory(store, cache, torch.randn(2, 32), torch.zeros(2, 1), bad_k, k, lanes=[0, 1])
        assert len(store) == 2 and len(cache) == 2
    with pytest.raises(ValueError, match="importance must be 2 finite numbers"):
        write_memory(store, cache, keys, torch.zeros(2, 1), k, k, lanes=[0, 1], importance=[1.0, float("nan")])
    # a missing mem_v beside a tensor mem_k: an AttributeError on None.detach() before anything was checked
    with pytest.raises(TypeError, match="TieredKVCache.put: values must be a numeric array or tensor, got NoneType"):
        write_memory(store, cache, keys, torch.zeros(2, 1), k, None, lanes=[0, 1])
    assert len(store) == 2 and store.get(first)[1]["found"].all()


def test_a_rescore_never_brings_back_the_padding_of_a_store_with_fewer_than_fetch_entries():
    """fetch=4 from a store of 2: the 2 padding candidates (id -1) are out whatever `rescore` gives them. A rescore
    that looks scores up by id (priority[ids]) gives id -1 the last entry's score; competing, the padding took a
    place of the top k from a real entry."""
    store = FaissStore(8, 1, capacity=8, lanes=1, metric="ip")
    cache = TieredKVCache(2, 4, hot=8, warm=0, cold=0)
    keys = torch.eye(8)[:2]
    ids = write_memory(store, cache, keys, torch.zeros(2, 1), keys.view(2, 2, 4), keys.view(2, 2, 4), lanes=[0, 0])
    priority = np.array([1.0, 2.0])  # by id: the second written ranks first

    _, _, mask, kept = retrieve_memory_kv(store, cache, torch.ones(1, 1, 8), k=2, fetch=4,
                                          rescore=lambda scores, found: priority[found])
    assert kept[0, 0].tolist() == [ids[1], ids[0]] and mask.all()
