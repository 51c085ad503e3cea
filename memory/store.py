"""FaissStore: the long-term memory of (key, value, metadata) entries that MemNet searches by similarity.

Layout. Entries live in fixed rows: `partitions x capacity` of them, one partition per lane (scope="lane", each lane
searches only its own entries) or a single one (scope="shared"). With metric="cosine" keys are L2-normalised on the
way in, and queries too, so scores are cosines; with metric="ip" both stay as given and scores are inner products
(maximum inner-product search: the ranking of an attention layer's logits q.k, which is what a memory read by
attention should be retrieved by).

Ids. A row remembers how often it has been written (`gen`); the entry written into row r the g-th time gets id
`g * rows + r`. The id -> row map is therefore `row = id % rows`, checked against the id the row holds now: an evicted
or removed id reads as missing instead of silently pointing at the entry that replaced it (the stale-id bug of
memorizing-transformers' kNN memory). Ids are never reused, also across `clear()` and save/load.

Search. index="flat" is exact: a blocked torch matmul + top-k over the normalised key matrix (on these
2-core machines FAISS's IndexFlatIP is 3-5x slower than torch for batched queries); with precision="bf16" the
scan reads a bfloat16 copy of the keys (3x faster at 768-wide keys where the CPU has AMX; "auto" picks it there,
float32 elsewhere): scores carry bfloat16 rounding, so near ties at the k-th place can swap (`exact_topk`).
index="ivf"/"hnsw" use FAISS per partition (`memory/store_index.py`) while a partition holds the index's
min_entries, exact search below that (also after a clear or removals: a trained index is kept, and used again).

Eviction when a partition is full: "fifo" drops the oldest entry, "lru" the one least recently added or
returned by a search, "importance" the one with the lowest importance (the caller's value at add, default
0, plus 1 each time a search returns it); ties go to the oldest. That is LFU: an entry never returned goes before
any entry ever returned, however long ago. With importance_halflife = h it is LRFU (Lee et al., 2001): the write
counts as a reference too (+1 at add) and every importance halves each h adds (each add() call multiplies them by
2^(-1/h), before its writes), so an entry's importance is its references' decayed count and what is used now
outranks what was used long ago; small h approaches LRU, large h LFU.
"""

from __future__ import annotations

import numpy as np
import torch

from memory.config import MemoryConfig
from memory.eviction import lowest
from memory.ram import check_fits
from memory.store_index import HNSWIndex, IVFIndex, resolve_precision
from memory.store_io import StorePersistence
from memory.store_lookup import CALLER_META, META_FIELDS, StoreLookup, check_ip_range, checked_array, inverse_norms
from memory.store_search import CodedKeys, SearchHits, SearchResult, StoreSearch
from memory.store_settings import check_settings
from memory.undo import RowUndo, StoreUndo

__all__ = ["CodedKeys", "FaissStore", "SearchHits", "SearchResult"]

TIME = META_FIELDS.index("time")


class FaissStore(StorePersistence, StoreLookup, StoreSearch, StoreUndo):
    """Long-term key/value store with metadata, per-lane or shared, bounded with eviction (see module doc).

    dim: key width D; value_dim: value width Dv; capacity: entries per lane (scope="lane") or in all
    (scope="shared"); lanes: B; index: flat | ivf | hnsw; eviction: fifo | lru | importance; threads: FAISS
    OpenMP threads, set before every FAISS call. ivf_lists / ivf_probes (default 4 sqrt(capacity) lists,
    max(8, lists / 64) probes), hnsw_neighbors / hnsw_ef_search tune the approximate indexes, which take
    over from exact search once a partition holds 39 x lists (ivf) or hnsw_min_entries (hnsw) entries;
    exact_block: keys scored per matmul block in exact search; None = as many as fit a 64 MB score buffer
    (P, Q, block), which the store keeps and reuses across searches. precision: fp32 | bf16 | auto, exact
    search's scan (module doc). coded: key blocks that are codes named by metadata (metric="ip", index="flat";
    `memory/store_search.py`): exact search looks their scores up instead of scanning them. It is how this store
    searches, not what it holds: a store made to load a state takes `coded` from its maker again
    (`FaissStore.load(folder)` makes a plain one), and the state carries its own code table, so that its keys'
    coded blocks need not be saved (state_dict: the live entries only, and the coded blocks written back at a
    load where they are their codes bit for bit; `memory/store_io.py`).
    """

    def __init__(self, dim: int, value_dim: int, capacity: int, lanes: int = 1, scope: str = "lane",
                 index: str = "flat", eviction: str = "fifo", threads: int = 1, ivf_lists: int | None = None,
                 ivf_probes: int | None = None, hnsw_neighbors: int = 32, hnsw_ef_search: int = 64,
                 hnsw_min_entries: int = 1024, exact_block: int | None = None, metric: str = "cosine",
                 precision: str = "fp32", coded: CodedKeys | None = None, importance_halflife: float | None = None):
        ivf_lists, ivf_probes, exact_block = check_settings(
            dim, value_dim, capacity, lanes, scope, index, eviction, threads, ivf_lists, ivf_probes, hnsw_neighbors,
            hnsw_ef_search, hnsw_min_entries, exact_block, metric, precision, coded, importance_halflife)
        self.importance_halflife = None if importance_halflife is None else float(importance_halflife)
        self.precision = precision  # as given ("auto" is resolved on each machine, also after a load)
        self.metric = metric
        self.coded = None if coded is None else CodedKeys(coded.codes.detach().float().cpu().contiguous(),
                                                         tuple(coded.fields))
        self.dim, self.value_dim, self.capacity, self.lanes = int(dim), int(value_dim), int(capacity), int(lanes)
        self.scope, self.index, self.eviction, self.threads = scope, index, eviction, int(threads)
        self.ivf_lists, self.ivf_probes = ivf_lists, ivf_probes
        self.hnsw_neighbors, self.hnsw_ef_search = int(hnsw_neighbors), int(hnsw_ef_search)
        self.exact_block, self.hnsw_min_entries = exact_block, int(hnsw_min_entries)
        self.partitions = self.lanes if scope == "lane" else 1
        self.rows = self.partitions * self.capacity
        R = self.rows
        # (the arrays below, before any is made: float32 keys and values, int64 meta, id, gen, seq, stamp, float64
        # importance)
        check_fits(R * (4 * (self.dim + self.value_dim) + 8 * (len(META_FIELDS) + 5)), f"the store's {R:,} rows")
        self._keys = np.zeros((R, self.dim), dtype=np.float32)  # (R, D) normalised for metric="cosine"
        self._values = np.zeros((R, self.value_dim), dtype=np.float32)  # (R, Dv)
        self._meta = np.full((R, len(META_FIELDS)), -1, dtype=np.int64)  # (R, len(META_FIELDS))
        self._row_id = np.full(R, -1, dtype=np.int64)  # id held by each row, -1 = empty
        self._gen = np.zeros(R, dtype=np.int64)  # times each row was written: ids are gen * R + row
        self._seq = np.zeros(R, dtype=np.int64)  # insertion order (fifo, tie-breaks)
        self._stamp = np.zeros(R, dtype=np.int64)  # last add or search (lru); one search's hits share one
        self._importance = np.zeros(R, dtype=np.float64)  # caller importance + search hits
        self._fill = np.zeros(self.partitions, dtype=np.int64)  # rows [0, fill) of a partition were used
        self._count = np.zeros(self.partitions, dtype=np.int64)  # live entries per partition
        self._clock = 0  # source of seq and stamp values
        self._adds = 0  # add() calls so far: the "time" metadata
        self._ann = [self._make_ann(p) for p in range(self.partitions)] if index != "flat" else None
        self._undo = RowUndo()  # old rows of keys, values and the scan copy at their first write after a mark
        self._scores: torch.Tensor | None = None  # exact-search score buffer, grown on demand
        # what exact search scans when not _keys itself (R, D'): the columns after any coded blocks, in bfloat16
        # where precision says so, except that coded keys whose rest is at most half the key scan it in float32
        # (no more bytes than a bfloat16 scan of the whole key, and exact; ContinualShift: 128 of 384 columns). A
        # copy, not a column view of _keys: the strided view scanned 40% slower (0.53 vs 0.38 ms, 16 x 1,914 rows)
        rest = self.dim - (self.coded.width if self.coded is not None else 0)
        bf16 = index == "flat" and resolve_precision(precision) == "bf16" and not (
            self.coded is not None and 2 * rest <= self.dim)
        scan = bf16 or (self.coded is not None and rest > 0)
        self._scan = torch.zeros(R, rest, dtype=torch.bfloat16 if bf16 else torch.float32) if scan else None
        # coded keys: each entry's code row per coded block (F, R), the metadata's with -1 as V (the lookup tables'
        # zero column): a search gathers from it directly, 4x faster for one query than reading the metadata
        self._code_rows = (torch.full((len(self.coded.fields), R), len(self.coded.codes), dtype=torch.long)
                           if self.coded is not None else None)

    @classmethod
    def from_config(cls, cfg: MemoryConfig, lanes: int, value_dim: int, key_dim: int | None = None,
                    **kwargs) -> FaissStore:
        """Keys are cfg.dim wide unless `key_dim` says otherwise (MemNet's key inputs: cfg.key_inputs x dim)."""
        return cls(key_dim or cfg.dim, value_dim, cfg.store_capacity, lanes=lanes, scope=cfg.store_scope,
                   index=cfg.store_index, eviction=cfg.store_eviction, threads=cfg.store_threads,
                   metric=cfg.store_metric, precision=cfg.store_precision, ivf_lists=cfg.store_ivf_lists or None,
                   ivf_probes=cfg.store_ivf_probes or None, hnsw_neighbors=cfg.store_hnsw_neighbors,
                   hnsw_ef_search=cfg.store_hnsw_ef_search, hnsw_min_entries=cfg.store_hnsw_min_entries,
                   importance_halflife=cfg.store_importance_halflife or None, **kwargs)

    def _make_ann(self, p: int):
        keys = self._keys[p * self.capacity:(p + 1) * self.capacity]  # view: the index reads keys by row
        if self.index == "ivf":
            return IVFIndex(keys, self.ivf_lists, self.ivf_probes, self.threads)
        return HNSWIndex(keys, self.hnsw_neighbors, self.hnsw_ef_search, self.threads, self.hnsw_min_entries)

    # ------------------------------------------------------------------ writing
    def partition_counts(self, lanes) -> tuple[np.ndarray, np.ndarray]:
        """lanes (n,) of one add -> each entry's partition (n,) and the entries per partition (P,), or the ValueError
        `add` raises for a call that holds more than a partition's capacity (a caller that removes entries before its
        add checks so first)."""
        part = np.asarray(lanes, dtype=np.int64).reshape(-1) if self.scope == "lane" else np.zeros(len(lanes), np.int64)
        counts = np.bincount(part, minlength=self.partitions)
        if len(part) and counts.max() > self.capacity:
            p = int(counts.argmax())
            raise ValueError(f"FaissStore.add: {counts[p]} entries for partition {p} in one call exceed "
                             f"capacity={self.capacity}; split the call")
        return part, counts

    def add(self, keys, values, lanes, meta: dict | None = None, importance=None) -> tuple[np.ndarray, np.ndarray]:
        """Add n entries. keys (n, D), values (n, Dv), lanes (n,) int in [0, lanes); meta: field -> (n,) int
        for fields among episode/position/step/task/token/prev (missing -> -1); importance (n,) float (default 0).
        Returns (ids (n,) int64, evicted ids (m,) int64)."""
        keys, values = checked_array(keys, "keys", np.float32), checked_array(values, "values", np.float32)
        lanes = checked_array(lanes, "lanes", np.int64).reshape(-1)
        n = len(lanes)
        if keys.shape != (n, self.dim) or values.shape != (n, self.value_dim):
            raise ValueError(f"FaissStore.add: keys {tuple(keys.shape)}, values {tuple(values.shape)} and lanes ({n},) "
                             f"must agree: keys (n, {self.dim}), values (n, {self.value_dim}), lanes (n,)")
        if n and (lanes.min() < 0 or lanes.max() >= self.lanes):
            raise ValueError(f"FaissStore.add: lanes must lie in [0, {self.lanes}), got {lanes.min()}..{lanes.max()}")
        if not np.isfinite(values).all():
            raise ValueError("FaissStore.add: values must be finite (got NaN or inf)")
        inv_norm = inverse_norms(keys, "keys") if self.metric == "cosine" else None  # (n,); both refuse NaN / inf
        if inv_norm is None:  # ip stores keys as given: only norms whose inner products float32 can hold
            check_ip_range(keys, "keys")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"FaissStore.add: meta must be a dict field -> (n,) ints, got {type(meta).__name__}")
        meta = dict(meta or {})
        unknown = set(meta) - set(CALLER_META)
        if unknown:
            raise ValueError(f"FaissStore.add: meta keys {sorted(unknown)} unknown; allowed: {CALLER_META}")
        for name, col in meta.items():
            meta[name] = col = checked_array(col, f"meta[{name!r}]", np.int64).reshape(-1)
            if col.shape != (n,):
                raise ValueError(f"FaissStore.add: meta[{name!r}] must have {n} entries, got {col.shape}")
            if n and col.min() < -1:  # -1 means "missing" everywhere; lower values would alias in ids_with
                raise ValueError(f"FaissStore.add: meta[{name!r}] has {col.min()}: pass values >= 0, or -1 for missing")
        if self.coded is not None:
            self.coded.check(keys, meta)
        imp = np.zeros(n) if importance is None else checked_array(importance, "importance", np.float64).reshape(-1)
        if imp.shape != (n,) or not np.isfinite(imp).all():
            got = f"shape {imp.shape}" if imp.shape != (n,) else "NaN or inf"
            raise ValueError(f"FaissStore.add: importance must be {n} finite numbers, got {got}")
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        part, counts = self.partition_counts(lanes)
        if self.importance_halflife is not None:  # before choosing victims: the add is one step of the decay's clock
            self._importance *= 2.0 ** (-1.0 / self.importance_halflife)
        order = np.argsort(part, kind="stable")  # entries grouped by partition
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(n) - starts[part[order]]  # position of each sorted entry inside its group
        if (self._fill + counts <= self.capacity).all():  # fast path: fresh rows, nothing to evict
            rows = part[order] * self.capacity + self._fill[part[order]] + rank
        else:
            rows = np.concatenate([self._take_rows(p, int(c)) for p, c in enumerate(counts) if c])
        self._fill += np.minimum(counts, self.capacity - self._fill)
        self._undo.before_write(rows)
        evicted_rows = rows[self._row_id[rows] >= 0]
        evicted = self._row_id[evicted_rows].copy()
        self._drop_rows(evicted_rows, from_ann=True)
        ids = self._gen[rows] * self.rows + rows
        self._gen[rows] += 1
        in_order = bool((order == np.arange(n)).all())
        src = slice(None) if in_order else order  # bulk adds to one lane need no gather ...
        contiguous = in_order and bool((np.diff(rows) == 1).all())
        dst = slice(rows[0], rows[0] + n) if contiguous else rows  # ... nor scatter
        self._row_id[dst] = ids
        if isinstance(dst, slice):
            if inv_norm is None:
                self._keys[dst] = keys
            else:
                np.multiply(keys, inv_norm[:, None], out=self._keys[dst])  # normalise in place, no temporary
        else:
            self._keys[dst] = keys[src] if inv_norm is None else keys[src] * inv_norm[src, None]
        self._values[dst] = values[src]
        self._meta[dst] = -1
        self._meta[dst, 0] = lanes[src]
        for name, col in meta.items():
            self._meta[dst, META_FIELDS.index(name)] = col[src]
        self._meta[dst, TIME] = self._adds
        self._write_search_copies(dst)
        self._seq[dst] = self._stamp[dst] = self._clock + np.arange(n)
        self._clock += n
        self._adds += 1
        # LRFU (a half-life): the write is the entry's first reference, decayed like the hits that follow
        self._importance[dst] = imp[src] + (self.importance_halflife is not None)
        self._count += counts
        if self._ann is not None:
            for p in np.flatnonzero(counts):
                self._sync_ann(p, rows[part[order] == p] - p * self.capacity)
        out = np.empty(n, dtype=np.int64)
        out[order] = ids
        return out, evicted

    def _write_search_copies(self, dst: slice | np.ndarray = slice(None)) -> None:
        """Rows `dst` of what exact search reads instead of the keys and metadata: the scan copy (its columns, its
        precision) and, with coded keys, the code rows. After the rows' keys and metadata are written; rows that are
        emptied keep stale copies, as search reads only live rows."""
        at = dst if isinstance(dst, slice) else torch.from_numpy(dst)
        if self._scan is not None:
            skip = self.coded.width if self.coded is not None else 0
            self._scan[at] = torch.from_numpy(self._keys[dst, skip:]).to(self._scan.dtype)
        if self._code_rows is not None:
            for f, field in enumerate(self.coded.fields):
                meta = self._meta[dst, META_FIELDS.index(field)]
                self._code_rows[f, at] = torch.from_numpy(np.where(meta >= 0, meta, len(self.coded.codes)))

    def _take_rows(self, p: int, n: int) -> np.ndarray:
        """n rows of partition p for new entries: fresh rows, then emptied ones, then victims by policy."""
        base = p * self.capacity
        fresh = np.arange(self._fill[p], min(self._fill[p] + n, self.capacity)) + base
        if len(fresh) == n:
            return fresh
        used = slice(base, base + self._fill[p])
        if self.eviction == "fifo":
            primary = self._seq[used].astype(np.float64)
        elif self.eviction == "lru":
            primary = self._stamp[used].astype(np.float64)
        else:
            primary = self._importance[used].copy()
        primary[self._row_id[used] < 0] = -np.inf  # emptied rows first
        return np.concatenate([fresh, base + lowest(primary, self._seq[used], n - len(fresh))])

    def _drop_rows(self, rows: np.ndarray, from_ann: bool) -> None:
        if not len(rows):
            return
        part = rows // self.capacity
        self._count -= np.bincount(part, minlength=self.partitions)
        self._row_id[rows] = -1
        self._meta[rows] = -1  # (the search copies of these rows go stale: search masks empty rows)
        if from_ann and self._ann is not None:
            self._ann_changes(np.unique(part))
            for p in np.unique(part):
                self._ann[p].remove(rows[part == p] - p * self.capacity)

    def _sync_ann(self, p: int, local_rows: np.ndarray) -> None:
        self._ann_changes(p)
        ann = self._ann[p]
        if ann.ready:
            ann.add(local_rows)
        elif self._count[p] >= ann.min_entries:
            live = np.flatnonzero(self._row_id[p * self.capacity:(p + 1) * self.capacity] >= 0)
            ann.build(live)

    def remove(self, ids) -> int:
        """Remove entries by id (any shape; -1, stale or unknown ids are ignored). Returns how many went."""
        rows, found = self._rows_of(ids)
        rows = np.unique(rows[found])
        self._drop_rows(rows, from_ann=True)
        return len(rows)

    def clear(self, lanes=None) -> np.ndarray:
        """Remove every entry (lanes=None) or those of the given lanes. Ids issued so far stay invalid. Returns the
        removed ids (n,) int64, so that a cache holding their K/V can drop them too."""
        if lanes is None:
            rows = np.flatnonzero(self._row_id >= 0)
            gone = self._row_id[rows].copy()
            self._drop_rows(rows, from_ann=False)
            self._fill[:] = 0
            self._ann_changes(range(self.partitions))
            for ann in self._ann or []:
                ann.reset()
            return gone
        lanes = checked_array(lanes, "lanes", np.int64).reshape(-1)
        if len(lanes) and (lanes.min() < 0 or lanes.max() >= self.lanes):
            raise ValueError(f"FaissStore.clear: lanes must lie in [0, {self.lanes}), got {lanes.tolist()}")
        rows = np.flatnonzero((self._row_id >= 0) & np.isin(self._meta[:, 0], lanes))
        gone = self._row_id[rows].copy()
        self._drop_rows(rows, from_ann=True)
        return gone

    def __len__(self) -> int:
        return int(self._count.sum())

    def size(self, lane: int) -> int:
        """Live entries of one lane."""
        if not isinstance(lane, (int, np.integer)) or isinstance(lane, bool) or not 0 <= lane < self.lanes:
            raise ValueError(f"FaissStore.size: lane={lane} must lie in [0, {self.lanes})")
        if self.scope == "lane":
            return int(self._count[lane])
        return int(((self._row_id >= 0) & (self._meta[:, 0] == lane)).sum())

    @property
    def nbytes(self) -> int:
        arrays = (self._keys, self._values, self._meta, self._row_id, self._gen, self._seq, self._stamp,
                  self._importance)
        copies = sum(t.nbytes for t in (self._scan, self._code_rows) if t is not None)
        return sum(a.nbytes for a in arrays) + sum(a.nbytes for a in self._ann or []) + copies
