"""The adapter between the long-term store, the K/V cache and MemoryAttention.

Read: hidden states -> FaissStore.search (ids) -> TieredKVCache.get_batch -> per-query memory K/V.
Write: one call that adds entries to the store, drops whatever the store evicted from the cache (so the
cache never serves a memory the store forgot), and caches the new entries' attention K/V under their ids;
`remove_replaced` first drops the memories that new ones overwrite (same predecessor token, close key).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from memory.cache import TieredKVCache
from memory.store import FaissStore
from memory.store_lookup import checked_array, inverse_norms

REPLACE_BLOCK = 2048  # (new memory, candidate) pairs compared at a time by remove_replaced
COSINE_ROUNDING = 1e-6  # a float32 cosine of identical vectors is 1 within this (memory.store_replace=1)


def retrieve_memory_kv(store: FaissStore, cache: TieredKVCache, queries: Tensor, k: int, fetch: int | None = None,
                       rescore: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """queries (B, T, D) -> mem_k, mem_v (B, T, k, H, d) on queries' device/dtype, mem_mask (B, T, k) bool,
    ids (B, T, k) int64 (-1 where the store had fewer than k entries). An id the store returned but the
    cache no longer holds is masked out. No gradient flows into the search.

    Retrieve-then-rerank: with `rescore(scores, ids) -> scores` (all (B, T, fetch)), the store's best `fetch`
    (>= k) entries are re-scored (e.g. a recency term; -inf drops an entry) and the best k of them kept."""
    if not isinstance(queries, Tensor) or queries.dim() != 3:  # (a numpy array had no .dim())
        got = tuple(queries.shape) if isinstance(queries, Tensor) else type(queries).__name__
        raise ValueError(f"retrieve_memory_kv: queries must be a (B, T, D) tensor, got {got}")
    # the store counts as accessed (lru / importance eviction) the k it serves, as the cache does, not the candidates
    # the rerank drops (3 in 4 at MemNet's fetch of 4 k: entries gained importance without ever being read)
    found = store.search(queries.detach().float().cpu(), max(k, fetch or k), count=False)
    ids = found.ids
    if rescore is not None:
        scores = np.where(ids >= 0, rescore(found.scores, ids), -np.inf)  # (B, T, fetch)
        best = rank(scores, ids, store.meta_of(ids, "time"))[..., :k]  # (B, T, k)
        ids = np.where(np.isfinite(np.take_along_axis(scores, best, -1)), np.take_along_axis(ids, best, -1), -1)
    else:
        ids = ids[..., :k]
    store.touch(ids)
    mem_k, mem_v, mask = cache.get_batch(ids)
    to = {"device": queries.device, "dtype": queries.dtype}
    return mem_k.to(**to), mem_v.to(**to), mask.to(queries.device), torch.from_numpy(ids).to(queries.device)


TIE_TOLERANCE = 1e-4  # relative to a row's largest finite |score|: re-scored candidates this close rank as equal


def rank(scores: np.ndarray, ids: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The candidates' order, best first, along the last axis (all (..., F)): in score order, each group of equals
    starts at its best candidate and holds the finite ones within TIE_TOLERANCE x the row's largest finite |score|
    below it; within a group the later written (the store's "time"), then the larger id, come first; -inf, +inf
    and NaN rank alone, after the finite ones. Why: equal matches are common (keys whose scored blocks hold the
    same addresses: the same preceding token), and a query's scores come from a matmul whose rounding depends on
    how many queries share the call, so the rounding ordered them: acting one token at a time and the chunk
    forward kept different memories at a tie (on another machine's BLAS kernels). The row's scale, not the
    pair's: rounding errors scale with the summands, so scores near 0 tie as well as large ones."""
    finite = np.isfinite(scores)
    order = np.argsort(np.where(finite, -scores, np.inf), axis=-1, kind="stable")  # finite first, best first
    ranked, alive = np.take_along_axis(scores, order, -1), np.take_along_axis(finite, order, -1)
    tol = TIE_TOLERANCE * np.maximum(np.where(finite, np.abs(scores), 0.0).max(axis=-1), 1e-30)  # (...)
    group, leader, count = np.zeros(order.shape, np.int64), ranked[..., 0], np.zeros(order.shape[:-1], np.int64)
    for f in range(1, order.shape[-1]):  # F ~ 4 k: a few vector steps
        with np.errstate(invalid="ignore"):  # (inf - inf where neither is alive: a new group anyway)
            new = ~(alive[..., f] & np.isfinite(leader) & (leader - ranked[..., f] <= tol))
        count = count + new
        leader = np.where(new, ranked[..., f], leader)
        group[..., f] = count
    within = np.lexsort((-np.take_along_axis(ids, order, -1), -np.take_along_axis(time, order, -1), group),
                        axis=-1)
    return np.take_along_axis(order, within, -1)


def recency_rescore(store: FaissStore, clock: np.ndarray, window: int, scale: float, slope: float
                    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A `rescore` for retrieve_memory_kv: score * scale - slope * log(1 + age), age = clock (B, T) minus the
    entry's "step" metadata; the query lane's own entries with age <= window (still in its attention window)
    dropped. Query row b is lane b; in a shared store another lane's entry is never in this lane's window (its
    clock runs alongside: the trainer steps and resets every lane together)."""
    def rescore(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:  # (B, T, F) each
        age = clock[..., None] - store.meta_of(ids, "step")  # (B, T, F)
        out = scores * scale - slope * np.log1p(np.maximum(age, 0))
        own = store.meta_of(ids, "lane") == np.arange(len(ids))[:, None, None]  # (B, T, F)
        return np.where(own & (age <= window), -np.inf, out)

    return rescore


def write_memory(store: FaissStore, cache: TieredKVCache, keys, values, mem_k, mem_v, lanes,
                 meta: dict | None = None, importance=None) -> np.ndarray:
    """Add n memories to store and cache together. keys (n, D) search keys; values (n, Dv) store values;
    mem_k, mem_v (n, H, d) attention K/V (e.g. from `MemoryAttention.project_kv`); lanes (n,).
    Returns the new ids (n,) int64. All or nothing: inputs either object refuses change neither."""
    # each on its own: mem_v was converted whenever mem_k was a tensor (an AttributeError where it was None)
    keys, values, mem_k, mem_v = (x.detach().float().cpu() if isinstance(x, Tensor) else x
                                  for x in (keys, values, mem_k, mem_v))
    # the cache's checks first: K/V it refuses after the store committed left store entries the cache never held
    cache.check_entries(len(keys), mem_k, mem_v, importance)
    ids, evicted = store.add(keys, values, lanes, meta=meta, importance=importance)
    cache.remove(evicted)
    cache.put(ids, mem_k, mem_v, importance=importance)
    return ids


def remove_replaced(store: FaissStore, cache: TieredKVCache, keys: np.ndarray, prev: np.ndarray, lanes: np.ndarray,
                    threshold: float, part: slice = slice(None)) -> np.ndarray:
    """Before n new memories (keys (n, D), predecessor tokens (n,), lanes (n,)) are added, remove from store and
    cache their lanes' memories that followed the same token (`prev` metadata) with a cosine >= threshold between
    the keys' `part` (e.g. the context inputs of a key made of several positions' inputs; default all of it).
    Returns the removed ids. The store then keeps the latest thing that followed a context, so a changed mapping
    overwrites the old one instead of competing with it. The token condition makes this safe (contextual keys of
    unrelated memories that one query retrieves have cosines of 0.7-0.95); candidates come from an exact lookup,
    since a nearest-neighbour search by inner product missed stale entries of smaller norm (README). A `prev` of -1
    (unknown: a lane's stream start, a one-token window's call) matches nothing: with model.window=1 every memory
    has it, and a write removed the memories that followed other tokens. threshold 1 means an identical context, up
    to float32's rounding of a cosine (a code's with itself came out 0.99999994: never replaced)."""
    prev = checked_array(prev, "prev", np.int64)  # (bools and floats refused, as ids_with refuses them)
    same = store.ids_with("prev", np.where(prev >= 0, prev, -2), lanes)  # (n, m), -1 padded (-2 matches nothing)
    new, slot = np.nonzero(same >= 0)  # the P (new memory, candidate) pairs; padding is never gathered
    cand = same[new, slot]  # (P,)
    keys = np.asarray(keys, dtype=np.float32)[..., part]  # (n, D')
    # inverse_norms: float64 where a float32 square overflows (a cosine store holds keys of any finite size)
    unit = keys * inverse_norms(keys, "keys")[:, None]  # (n, D')
    cos = np.empty(len(cand), dtype=np.float32)  # (P,)
    # in blocks of pairs: a full store has ~38 candidates per new memory (ContinualShift: P ~ 19,000 x 256 columns),
    # and gathering all their keys at once made two ~20 MB temporaries, fresh pages each call (16 ms -> 6 ms)
    for start in range(0, len(cand), REPLACE_BLOCK):
        block = slice(start, start + REPLACE_BLOCK)
        near = store.keys_of(cand[block], part)  # (p, D')
        inv = inverse_norms(near, "stored keys")  # (p,)
        near = near.astype(inv.dtype, copy=False)  # float64 where norms overflow float32: so can the dots
        cos[block] = np.einsum("pd,pd->p", unit[new[block]], near) * inv
    gone = np.unique(cand[cos >= min(threshold, 1.0 - COSINE_ROUNDING)])
    store.remove(gone)
    cache.remove(gone)
    return gone
