"""The adapter between the long-term store, the K/V cache and MemoryAttention.

Read: hidden states -> FaissStore.search (ids) -> TieredKVCache.get_batch -> per-query memory K/V.
Write: one call that adds entries to the store, drops whatever the store evicted from the cache (so the
cache never serves a memory the store forgot), and caches the new entries' attention K/V under their ids.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from memory.cache import TieredKVCache
from memory.store import FaissStore


def retrieve_memory_kv(store: FaissStore, cache: TieredKVCache, queries: Tensor, k: int
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """queries (B, T, D) -> mem_k, mem_v (B, T, k, H, d) on queries' device/dtype, mem_mask (B, T, k) bool,
    ids (B, T, k) int64 (-1 where the store had fewer than k entries). An id the store returned but the
    cache no longer holds is masked out. No gradient flows into the search."""
    if queries.dim() != 3:
        raise ValueError(f"retrieve_memory_kv: queries must be (B, T, D), got {tuple(queries.shape)}")
    found = store.search(queries.detach().float().cpu(), k)
    mem_k, mem_v, mask = cache.get_batch(found.ids)
    to = {"device": queries.device, "dtype": queries.dtype}
    return mem_k.to(**to), mem_v.to(**to), mask.to(queries.device), torch.from_numpy(found.ids).to(queries.device)


def write_memory(store: FaissStore, cache: TieredKVCache, keys, values, mem_k, mem_v, lanes,
                 meta: dict | None = None, importance=None) -> np.ndarray:
    """Add n memories to store and cache together. keys (n, D) search keys; values (n, Dv) store values;
    mem_k, mem_v (n, H, d) attention K/V (e.g. from `MemoryAttention.project_kv`); lanes (n,).
    Returns the new ids (n,) int64."""
    if isinstance(mem_k, Tensor):
        mem_k, mem_v = mem_k.detach().float().cpu(), mem_v.detach().float().cpu()
    if isinstance(keys, Tensor):
        keys = keys.detach().float().cpu()
    if isinstance(values, Tensor):
        values = values.detach().float().cpu()
    ids, evicted = store.add(keys, values, lanes, meta=meta, importance=importance)
    cache.remove(evicted)
    cache.put(ids, mem_k, mem_v, importance=importance)
    return ids
