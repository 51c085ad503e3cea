"""Search back ends of FaissStore: blocked exact top-k, and one FAISS index per store partition (a lane, or
the whole store) for approximate search.

The store owns keys, values and ids; an index here only answers "which local rows are nearest". FAISS ids
are the partition's local row numbers, so an evicted row is removed by its row and a refilled row is added
again under the same number (the store's own id -> row map keeps store ids unique).

- `IVFIndex`: IndexIVFFlat (inner product). It needs training, so it switches on once the partition holds
  `min_entries` = 39 x lists keys (FAISS's minimum per centroid); until then, and whenever a clear or removals
  leave fewer, the store searches exactly (the trained index keeps its centroids and keeps taking entries).
  Removal is O(1) per row through FAISS's hash-table direct map.
- `HNSWIndex`: IndexHNSWFlat. HNSW cannot delete, so removed rows become tombstones filtered out by an
  IDSelectorBitmap at search time; the graph is rebuilt from the live rows when tombstones outnumber both them
  and `min_entries` (as `remove` does and README's hnsw_min_entries row says).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from memory.config import MIN_POINTS_PER_LIST, ivf_lists_for, ivf_probes_for

HNSW_LEVEL_SEED = 12345  # FAISS's own default seed of the HNSW level generator


def bf16_matmul_is_fast() -> bool:
    """True where this CPU runs bfloat16 matmuls on AMX tiles: there a (8 x 4096 x 768) x (32 queries) scan takes
    2.5 ms against 22 ms in float32; without AMX, bfloat16 can be slower than float32 (README "FaissStore")."""
    try:
        return bool(torch._C._cpu._init_amx())  # private, so guarded: a torch without it searches in float32
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str) -> str:
    """"auto" -> "bf16" where `bf16_matmul_is_fast()`, else "fp32"; other values unchanged."""
    if precision == "auto":
        return "bf16" if bf16_matmul_is_fast() else "fp32"
    return precision


def no_hits(P: int, Q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """scores (P, Q, k) -inf and rows (P, Q, k) -1: the answer where there is nothing to search."""
    return np.full((P, Q, k), -np.inf, dtype=np.float32), np.full((P, Q, k), -1, dtype=np.int64)


def exact_topk(queries: torch.Tensor, keys: torch.Tensor | None, valid: torch.Tensor | None, width: int, k: int,
               block: int, buffer: torch.Tensor, coarse: torch.Tensor | None = None,
               lookup: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, blocked so the scores of one block fit `buffer`.

    queries (P, Q, D); keys (P, N, D); valid (P, >= width) bool or None when every row < width is live; only rows
    [0, width) are scanned; buffer: flat float32 with >= P * Q * block elements, reused across calls (a fresh
    multi-MB buffer per call is mmap-ed and page-faulted anew, which costs more than the matmul on these VMs).
    coarse: a bfloat16 copy of keys (P, N, D), or None: if given (keys unused), the scan multiplies it with the
    queries rounded to bfloat16 (`_bf16_topk`; the matmul sums in float32 but returns bfloat16: CPU torch has no
    bfloat16 matmul with a float32 result, `mm(out_dtype=)` is CUDA-only). A score is then within
    ((1 + u)^3 (1 + g) - 1) |q| |k| of q.k, u = 2^-8: each factor rounded (u relative), the float32 sum of D
    terms (g = D 2^-24 / (1 - D 2^-24)), the sum rounded again (u), and sum |q_i k_i| <= |q| |k|; about
    3 x 2^-8 |q| |k| (an adversarial key reaches 2.96 x 2^-8, tests/test_memory_store_exactness.py). Rows within that of
    the k-th can swap places with it. lookup (P, Q, width) float32: scores of key columns not scanned (coded
    keys, `memory/store_search.py`), added to the scan's.
    Returns scores (P, Q, k) float32 (-inf = none) and rows (P, Q, k) int64 (-1 = none).
    A torch matmul: on 2-core CPUs FAISS's IndexFlatIP is 3-5x slower for batched queries.
    """
    P, Q = queries.shape[:2]
    if width <= 0:  # no row written yet (or since a clear); the blocked loops below need a block >= 1
        return no_hits(P, Q, k)
    if coarse is not None:
        return _bf16_topk(queries, coarse, valid, width, k, block, lookup)
    best_s = torch.full((P, Q, k), -torch.inf)
    best_r = torch.full((P, Q, k), -1, dtype=torch.int64)
    for start in range(0, width, block):
        stop = min(start + block, width)
        s = buffer[: P * Q * (stop - start)].view(P, Q, stop - start)
        if queries.shape[-1]:
            torch.bmm(queries, keys[:, start:stop].transpose(1, 2), out=s)  # (P, Q, block)
        else:  # every column is coded: nothing to scan
            s.zero_()
        if lookup is not None:
            s += lookup[:, :, start:stop]
        if valid is not None:
            s.masked_fill_(~valid[:, None, start:stop], -torch.inf)
        top_s, top_r = s.topk(min(k, stop - start), dim=-1)
        if start == 0 and stop == width and top_s.shape[-1] == k:  # one block: nothing to merge
            best_s, best_r = top_s, top_r
            break
        best_s, pick = torch.cat([best_s, top_s], dim=-1).topk(k, dim=-1)
        best_r = torch.cat([best_r, top_r + start], dim=-1).gather(-1, pick)
    best_r[torch.isinf(best_s)] = -1
    return best_s.numpy(), best_r.numpy()


def _bf16_topk(queries: torch.Tensor, coarse: torch.Tensor, valid: torch.Tensor | None, width: int, k: int,
               block: int, lookup: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """exact_topk over bfloat16 keys: keys-major products (block, D) x (D, Q), ~3x faster than queries-major
    ones here. coarse is (P, N, D); a bmm over a strided batch (the partitions' first `width` rows) ran 7x
    slower in bfloat16 (22.7 against 3.3 ms for 8 x 2850 x 768 keys and 32 queries), so a partial block is one
    matmul per partition, and a store at least half full scans whole partitions in one bmm (contiguous; the
    fastest for 1 query too: 2.5 ms against 3.1 in float32). Re-scoring a shortlist in float32 was tried and
    dropped: gathering its rows cost as much as the bfloat16 scan saved."""
    P, Q = queries.shape[:2]
    N = coarse.shape[1]
    qb = queries.to(torch.bfloat16).transpose(1, 2).contiguous()  # (P, D, Q)
    best_s = torch.full((P, 0, Q), -torch.inf)
    best_r = torch.zeros((P, 0, Q), dtype=torch.int64)
    for start in range(0, width, block):
        stop = min(start + block, width)
        if start == 0 and 2 * width >= N and block >= width and coarse.is_contiguous():  # one block: all of it
            s = torch.bmm(coarse, qb)[:, :stop].float()  # (P, width, Q)
        else:
            s = torch.empty((P, stop - start, Q), dtype=torch.bfloat16)
            for p in range(P):
                torch.mm(coarse[p, start:stop], qb[p], out=s[p])  # (block, Q)
            s = s.float()
        if lookup is not None:
            s += lookup[:, :, start:stop].transpose(1, 2)
        if valid is not None:
            s.masked_fill_(~valid[:, start:stop, None], -torch.inf)
        top_s, top_r = s.topk(min(k, stop - start), dim=1)  # (P, <= k, Q)
        best_s, pick = torch.cat([best_s, top_s], dim=1).topk(min(k, best_s.shape[1] + top_s.shape[1]), dim=1)
        best_r = torch.cat([best_r, top_r + start], dim=1).gather(1, pick)
    if best_s.shape[1] < k:  # fewer rows than k: pad as "none"
        pad = k - best_s.shape[1]
        best_s = torch.cat([best_s, torch.full((P, pad, Q), -torch.inf)], dim=1)
        best_r = torch.cat([best_r, torch.full((P, pad, Q), -1, dtype=torch.int64)], dim=1)
    best_s, best_r = best_s.transpose(1, 2).contiguous(), best_r.transpose(1, 2).contiguous()  # (P, Q, k)
    best_r[torch.isinf(best_s)] = -1
    return best_s.numpy(), best_r.numpy()


def _blob(index) -> torch.Tensor:
    return torch.from_numpy(faiss.serialize_index(index).copy())  # (bytes,) uint8


def _unblob(t: torch.Tensor):
    return faiss.deserialize_index(t.numpy().astype(np.uint8, copy=False))


class IVFIndex:
    """IVF-Flat over one partition. keys: (capacity, D) float32 view of the store's normalised keys."""

    kind = "ivf"

    def __init__(self, keys: np.ndarray, lists: int | None, probes: int | None, threads: int):
        capacity, dim = keys.shape
        self.lists = ivf_lists_for(capacity, lists)
        self.probes = ivf_probes_for(self.lists, probes)
        self.min_entries = MIN_POINTS_PER_LIST * self.lists
        self.keys, self.threads, self.probes_asked = keys, threads, probes
        self.index = self._empty(dim)

    def _empty(self, dim: int):
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, self.lists, faiss.METRIC_INNER_PRODUCT)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return index

    @property
    def ready(self) -> bool:
        return bool(self.index.is_trained)

    def build(self, rows: np.ndarray) -> None:
        """Train on the live rows (rows (n,) int64, n >= min_entries) and index them."""
        faiss.omp_set_num_threads(self.threads)
        sample = rows if len(rows) <= 256 * self.lists else np.random.default_rng(0).choice(
            rows, 256 * self.lists, replace=False)
        self.index.train(np.ascontiguousarray(self.keys[np.sort(sample)]))
        self.add(rows)

    def add(self, rows: np.ndarray) -> None:
        if self.ready and len(rows):
            faiss.omp_set_num_threads(self.threads)
            self.index.add_with_ids(np.ascontiguousarray(self.keys[rows]), rows.astype(np.int64))

    def remove(self, rows: np.ndarray) -> None:
        if self.ready and len(rows):
            self.index.remove_ids(faiss.IDSelectorArray(rows.astype(np.int64)))

    def reset(self) -> None:
        self.index.reset()  # keeps the trained centroids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (Q, D) float32 -> scores (Q, k) float32, local rows (Q, k) int64 (-1 = none)."""
        faiss.omp_set_num_threads(self.threads)
        self.index.nprobe = self.probes
        return self.index.search(np.ascontiguousarray(queries), k)

    @property
    def nbytes(self) -> int:
        n, d = self.index.ntotal, self.index.d
        return n * (4 * d + 8) + self.lists * 4 * d + (n * 16 if self.ready else 0)  # codes, ids, centroids, map

    def state(self) -> dict:
        # without its id -> position map: FAISS writes that hash table in an order that depends on the history of
        # adds and removals, so equal indexes would save unequal bytes (a resumed run would not be bit-identical)
        self.index.set_direct_map_type(faiss.DirectMap.NoMap)
        try:
            return {"blob": _blob(self.index)}
        finally:
            self.index.set_direct_map_type(faiss.DirectMap.Hashtable)

    def load_state(self, d: dict) -> None:
        self.index = _unblob(d["blob"])
        self.index.set_direct_map_type(faiss.DirectMap.Hashtable)  # removal by id (not saved, see state)
        # the saved index's list count wins (a store made with other ivf_lists loads it as it was trained)
        self.lists = int(self.index.nlist)
        self.probes, self.min_entries = ivf_probes_for(self.lists, self.probes_asked), MIN_POINTS_PER_LIST * self.lists
        # FAISS does not save clustering settings: an index read back untrained would train with plain k-means
        # instead of the spherical k-means the inner-product constructor sets (unnormalised centroids)
        self.index.cp.spherical = self._empty(self.index.d).cp.spherical


class HNSWIndex:
    """HNSW-Flat over one partition with tombstones. keys: (capacity, D) float32 view of the store's keys."""

    kind = "hnsw"

    def __init__(self, keys: np.ndarray, neighbors: int, ef_search: int, threads: int, min_entries: int = 1024):
        self.keys, self.neighbors, self.ef_search, self.threads = keys, neighbors, ef_search, threads
        self.min_entries = min_entries  # below this an exact scan is faster than the graph and exact
        self._reset_graph()

    def _reset_graph(self) -> None:
        self.index = faiss.IndexHNSWFlat(self.keys.shape[1], self.neighbors, faiss.METRIC_INNER_PRODUCT)
        self.row_of = np.zeros(0, dtype=np.int64)  # (ntotal,) local row of each graph node
        self.alive = np.zeros(0, dtype=bool)  # (ntotal,) False = tombstone
        self.node_of_row = np.full(self.keys.shape[0], -1, dtype=np.int64)  # (capacity,)
        self.built = False

    @property
    def ready(self) -> bool:
        return self.built

    def build(self, rows: np.ndarray) -> None:
        self._reset_graph()
        self.built = True
        self.add(rows)

    def add(self, rows: np.ndarray) -> None:
        if not self.built or not len(rows):
            return
        faiss.omp_set_num_threads(self.threads)
        start = self.index.ntotal
        # the random levels of new nodes: seeded by the node count, since FAISS does not save its generator and
        # a graph read back from a checkpoint would otherwise draw other levels than the run that saved it
        self.index.hnsw.rng = faiss.RandomGenerator(HNSW_LEVEL_SEED + start)
        self.index.add(np.ascontiguousarray(self.keys[rows]))
        self.row_of = np.concatenate([self.row_of, rows.astype(np.int64)])
        self.alive = np.concatenate([self.alive, np.ones(len(rows), dtype=bool)])
        self.node_of_row[rows] = np.arange(start, start + len(rows))

    def remove(self, rows: np.ndarray) -> None:
        if not self.built or not len(rows):
            return
        nodes = self.node_of_row[rows]
        self.alive[nodes[nodes >= 0]] = False
        self.node_of_row[rows] = -1
        live = int(self.alive.sum())
        if self.index.ntotal - live > max(live, self.min_entries):  # mostly tombstones: rebuild the graph
            self.build(self.row_of[self.alive])

    def reset(self) -> None:
        self._reset_graph()  # rebuilt once the partition holds min_entries again

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (Q, D) float32 -> scores (Q, k) float32, local rows (Q, k) int64 (-1 = none)."""
        if not self.alive.any():  # every node removed (or an empty rebuild): the graph has no row to map back to
            scores, rows = no_hits(1, len(queries), k)
            return scores[0], rows[0]
        faiss.omp_set_num_threads(self.threads)
        queries = np.ascontiguousarray(queries)
        if self.alive.all():
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            scores, nodes = self.index.search(queries, k, params=params)
        else:
            bits = np.packbits(self.alive, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self.alive), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, k))
            scores, nodes = self.index.search(queries, k, params=params)
        rows = np.where(nodes >= 0, self.row_of[np.maximum(nodes, 0)], -1)
        return scores, rows

    @property
    def nbytes(self) -> int:
        n = self.index.ntotal
        return n * (4 * self.index.d + 8 * self.neighbors + 8 + 1) + self.node_of_row.nbytes

    def state(self) -> dict:
        return {"blob": _blob(self.index), "row_of": torch.from_numpy(self.row_of.copy()),
                "alive": torch.from_numpy(self.alive.copy()), "built": self.built}

    def load_state(self, d: dict) -> None:
        self.index = _unblob(d["blob"])
        self.row_of = d["row_of"].numpy().copy()
        self.alive = d["alive"].numpy().copy()
        self.built = bool(d["built"])
        self.node_of_row[:] = -1
        self.node_of_row[self.row_of[self.alive]] = np.flatnonzero(self.alive)
