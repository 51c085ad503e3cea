"""TieredKVCache: precomputed attention keys/values per memory id, in a hot, a warm and a cold tier.

- hot: float32 arrays in RAM (exact).
- warm: int8 codes in RAM (`memory/quant.py`: keys per-channel scaled then absmax per entry and head,
  values absmax per entry and head); `quantize=False` keeps it float32 for ablations. The key channel scales
  (each channel's RMS over every key put so far, hot ones included) are set when the warm tier starts empty,
  and again as a new row each time the number of keys put has doubled since; a warm entry keeps the row it was
  quantised with, so a recalibration never re-rounds a stored key.
- cold: a float32 numpy memmap file on disk (exact; float32 so a cold round trip is lossless), in `path`
  or a private temp folder; the file is deleted by `close()` (or when the cache is garbage-collected).

New entries enter the highest tier with capacity. A full tier demotes its lowest-priority entries one
tier down; the last tier keeps the highest-priority of its entries and those arriving, and evicts the rest
(an arrival, even one just put, can be evicted at once). More entries than the next tier holds: it keeps the
highest-priority of them, the rest continue down with its own entries (`TierMoves`). Priority by `policy`:
"lru" = last access (one time per `get_batch` call), "fifo" = insertion order, "importance" = the caller's
importance at `put`, or the entry's access count when none was given (ties: the older goes first). A put enters
by id, under "importance" least important first, so its most important entries end on top. `get_batch` promotes a warm
or cold entry to the top tier once it has been read `promote_after` times (0 turns automatic promotion off);
`manage_tiers()` re-places everything at once: the highest-priority entries hot, the next warm, the rest cold.

Id lookup is a sorted id array + searchsorted (vectorised, O(log n) per id); the map changes only when
entries are added or removed, while moves between tiers rewrite (tier, slot) in place.
"""

from __future__ import annotations

import os
import uuid
import weakref
from pathlib import Path

import numpy as np
import torch

from memory.cache_cold_dirs import ColdTierError, make_private_cold_dir, remove_cold_file
from memory.cache_io import CachePersistence
from memory.cache_moves import TierMoves, join_packets
from memory.cache_state import as_floats
from memory.cache_tiers import COLD, WARM, Book, TierStorage
from memory.config import CACHE_POLICIES, MemoryConfig
from memory.quant import KEY_LIMIT
from memory.ram import check_fits
from memory.undo import CacheUndo

TIER_NAMES = ("hot", "warm", "cold")


class TieredKVCache(CachePersistence, TierMoves, CacheUndo):
    """Three-tier K/V cache keyed by memory id (see module doc). Per entry: keys (H, dk), values (H, d); dk =
    `key_dim` (default d) may differ, e.g. when keys are projected from several inputs."""

    def __init__(self, heads: int, head_dim: int, hot: int, warm: int, cold: int, policy: str = "lru",
                 quantize: bool = True, path: str | os.PathLike | None = None, promote_after: int = 2,
                 key_dim: int | None = None):
        key_dim = head_dim if key_dim is None else key_dim
        for name, v, low in (("heads", heads, 1), ("head_dim", head_dim, 1), ("hot", hot, 0), ("warm", warm, 0),
                             ("cold", cold, 0), ("promote_after", promote_after, 0), ("key_dim", key_dim, 1)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise ValueError(f"TieredKVCache: {name}={v!r}: must be an int >= {low}")
        if hot + warm + cold < 1:
            raise ValueError("TieredKVCache: the total capacity hot + warm + cold must be >= 1 (got 0 in every tier)")
        if policy not in CACHE_POLICIES:
            raise ValueError(f"TieredKVCache: policy={policy!r}: choose one of {CACHE_POLICIES}")
        if not isinstance(quantize, (bool, np.bool_)):  # bool("false") is True: a string would switch int8 on
            raise ValueError(f"TieredKVCache: quantize={quantize!r}: must be True or False (a bool)")
        self.heads, self.head_dim, self.key_dim, self.policy = int(heads), int(head_dim), int(key_dim), policy
        self.capacities = (int(hot), int(warm), int(cold))
        self.quantize, self.promote_after = bool(quantize), int(promote_after)
        H, width = self.heads, self.key_dim + self.head_dim  # K and V per head (the warm tier's: codes and scales)
        check_fits(hot * H * width * 4 + warm * (H * width * (1 if quantize else 4) + 8 * H + 1),
                   f"the cache's {hot + warm:,} hot and warm entries")
        private_dir = None
        cold_file = lock_fd = None
        if cold:
            if path is None:
                private_dir, lock_fd = make_private_cold_dir()
            folder = Path(private_dir or path)
            if folder.exists() and not folder.is_dir():  # mkdir raised a bare "[Errno 17] File exists"
                raise NotADirectoryError(f"TieredKVCache: path={os.fspath(path)!r} is a file; the cold tier's file "
                                         "goes into a folder: pass a folder (or None for a private temp folder)")
            folder.mkdir(parents=True, exist_ok=True)
            cold_file = folder / f"cold-kv-{uuid.uuid4().hex}.f32"
        self.cold_file = cold_file
        self._finalizer = weakref.finalize(self, remove_cold_file, cold_file, private_dir, lock_fd)
        try:
            self._store = TierStorage(self.heads, self.head_dim, self.key_dim, self.capacities, self.quantize,
                                      cold_file)
        except ColdTierError as exc:  # its fix names TMPDIR, which does not move a folder given as path=
            if path is None:
                raise
            raise ColdTierError(exc.folder, exc.entries, exc.needed, exc.free, exc.reason, chosen=True) from None
        # after the cold tier's disk check (its own line), before its books: 5 numbers per slot of every tier
        check_fits(40 * (hot + warm + cold), f"the books of the cache's {hot + warm + cold:,} slots")
        self._books = [Book(c) for c in self.capacities]
        self._ids = np.zeros(0, dtype=np.int64)  # (n,) sorted ids held
        self._tier = np.zeros(0, dtype=np.int8)  # (n,) tier of each id
        self._slot = np.zeros(0, dtype=np.int64)  # (n,) slot of each id in its tier
        self._clock = 0
        self._counters = dict(hits=0, misses=0, promotions=0, demotions=0, evictions=0)
        self._evicted: list[np.ndarray] = []
        live = [t for t in range(3) if self.capacities[t]]
        self._top, self._next = live[0], {a: b for a, b in zip(live, live[1:], strict=False)}

    @classmethod
    def from_config(cls, cfg: MemoryConfig, path=None, **kwargs) -> TieredKVCache:
        return cls(cfg.attn_heads, cfg.head_dim, cfg.cache_hot, cfg.cache_warm, cfg.cache_cold,
                   policy=cfg.cache_policy, quantize=cfg.cache_quantize, path=path, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _as_ids(self, ids, name: str = "ids") -> np.ndarray:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" and ids.size:  # an empty list is float64 to numpy: an empty batch, not floats
            raise TypeError(f"TieredKVCache: {name} must be integers, got dtype {ids.dtype}")
        return ids.astype(np.int64, copy=False)

    def _lookup(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """flat (n,) ids -> map positions (n,), found (n,) bool, tier (n,) (-1 = not cached), slot (n,)."""
        if not len(self._ids):
            zeros = np.zeros(len(flat), dtype=np.int64)
            return zeros, zeros.astype(bool), zeros - 1, zeros
        pos = np.minimum(np.searchsorted(self._ids, flat), len(self._ids) - 1)
        found = self._ids[pos] == flat
        return pos, found, np.where(found, self._tier[pos], -1), self._slot[pos]

    # ------------------------------------------------------------------ public API
    def check_entries(self, n: int, keys, values, importance=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What `put` checks of n entries' keys (n, H, dk), values (n, H, d) and importance (n,) or None, without
        changing anything (`memory.retrieval.write_memory` checks before the store commits): float32 keys and
        values, float64 importance (NaN: none given), or one ValueError line."""
        shape, key_shape = (n, self.heads, self.head_dim), (n, self.heads, self.key_dim)
        keys, values = as_floats(keys, "keys"), as_floats(values, "values")
        if keys.shape != key_shape or values.shape != shape:
            raise ValueError(f"TieredKVCache.put: keys {keys.shape} and values {values.shape} must be {key_shape} "
                             f"and {shape}")
        top = float(np.abs(keys).max(initial=0.0))  # NaN when any key is NaN: refused as not finite
        if not (np.isfinite(top) and np.isfinite(values).all()):
            raise ValueError("TieredKVCache.put: keys and values must be finite (got NaN or inf)")
        if top > KEY_LIMIT and self.quantize and self.capacities[WARM]:
            raise ValueError(f"TieredKVCache.put: keys reach |{top:.3g}|, beyond the int8 warm tier's limit "
                             f"{KEY_LIMIT:.0e}; scale the keys down (or quantize=False)")
        imp = np.full(n, np.nan) if importance is None else as_floats(importance, "importance", np.float64).reshape(-1)
        # NaN is how a Book marks "none given": a NaN (or inf) passed in would silently rank by access counts
        if importance is not None and (imp.shape != (n,) or not np.isfinite(imp).all()):
            got = f"shape {imp.shape}" if imp.shape != (n,) else "NaN or inf"
            raise ValueError(f"TieredKVCache.put: importance must be {n} finite numbers, got {got}")
        return keys, values, imp

    def put(self, ids, keys, values, importance=None) -> np.ndarray:
        """Insert entries. ids (n,) int64 >= 0, unique; keys (n, H, dk), values (n, H, d); importance (n,) or None.
        An id already cached is overwritten. Returns the ids evicted from the cache: entries that lost their
        place in the last tier, older ones or ids just put (with more than the total capacity in one call, these
        include the lowest-priority of the ids just put). Any float dtype (bfloat16 too) is stored as float32."""
        ids = self._as_ids(ids).reshape(-1)
        n = len(ids)
        keys, values, imp = self.check_entries(n, keys, values, importance)
        if n and (ids.min() < 0 or len(np.unique(ids)) != n):
            raise ValueError("TieredKVCache.put: ids must be unique and >= 0 (-1 means 'missing' in get_batch)")
        self.remove(ids)
        self._evicted = []
        self._store.observe_keys(keys)
        by_id = np.sort(ids)
        pos = np.searchsorted(self._ids, by_id)
        self._ids = np.insert(self._ids, pos, by_id)
        self._tier = np.insert(self._tier, pos, -1)
        self._slot = np.insert(self._slot, pos, -1)
        # entries go in by id, or under "importance" least important first (then by id): a put larger than the top
        # tier flows down in top-sized chunks, so the last chunks stay on top and the first are the first evicted
        order = np.argsort(ids) if self.policy != "importance" else np.lexsort((ids, np.nan_to_num(imp, nan=0.0)))
        ids, keys, values, imp = ids[order], keys[order], values[order], imp[order]
        step = self.capacities[self._top]
        for start in range(0, n, step):
            sl = slice(start, start + step)
            m = len(ids[sl])
            seq = self._clock + np.arange(m)
            self._clock += m
            self._push(self._top, {"ids": ids[sl], "keys": keys[sl], "values": values[sl], "seq": seq,
                                   "stamp": seq, "count": np.zeros(m, np.int64), "imp": imp[sl]})
        return np.concatenate(self._evicted) if self._evicted else np.zeros(0, np.int64)

    def get_batch(self, ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (...) int64, -1 = missing -> keys (..., H, dk) float32, values (..., H, d), mask (...) bool
        (True = present). Counts as an access and may promote warm/cold entries (see module doc)."""
        ids = self._as_ids(ids)
        flat = ids.reshape(-1)
        _, found, tier, slot = self._lookup(flat)
        n = len(flat)
        stamp = self._clock  # one access time for the whole call: lru ties among its reads go to the older entry
        self._clock += 1
        if n and (tier == self._top).all():  # common case: one gather, no masking
            keys, values = self._store.read(self._top, slot)
            self._touch(self._top, slot, stamp)
        else:
            keys = np.zeros((n, self.heads, self.key_dim), dtype=np.float32)
            values = np.zeros((n, self.heads, self.head_dim), dtype=np.float32)
            for t in range(3):
                sel = tier == t
                if sel.any():
                    keys[sel], values[sel] = self._store.read(t, slot[sel])
                    self._touch(t, slot[sel], stamp)
        hits = int(np.count_nonzero(found))
        self._counters["hits"] += hits
        self._counters["misses"] += int(np.count_nonzero(flat >= 0)) - hits
        if self.promote_after and (tier > self._top).any():
            self._auto_promote(tier, slot)
        out = ids.shape + (self.heads, self.head_dim)
        return (torch.from_numpy(keys.reshape(out[:-1] + (self.key_dim,))), torch.from_numpy(values.reshape(out)),
                torch.from_numpy(found.reshape(ids.shape)))

    def _touch(self, t: int, slots: np.ndarray, stamp: int) -> None:
        """One access per entry and call (an id repeated within one batch counts once). The entries one call reads
        share its stamp, as a store search's hits do: stamps in batch order (tier by tier where the call spanned
        tiers) made lru demote an entry read first in a call, the best-ranked memory of a retrieval, before an older
        entry read later in the same call."""
        book = self._books[t]
        book.stamp[slots] = stamp
        book.count[slots] += 1

    def _auto_promote(self, tier: np.ndarray, slot: np.ndarray) -> None:
        """Warm and cold entries read `promote_after` times move to the top tier in one packet: the most-read of
        both tiers (warm first on ties), at most what the top tier holds. Moved tier by tier, the cold entries'
        arrival could push the warm ones just promoted straight back down (fifo: they had the oldest seq)."""
        pools = [(t, np.unique(slot[tier == t])) for t in (WARM, COLD) if t > self._top and self.capacities[t]]
        pools = [(t, c[self._books[t].count[c] >= self.promote_after]) for t, c in pools]
        reads = np.concatenate([self._books[t].count[c] for t, c in pools] or [np.zeros(0, np.int64)])
        keep = np.zeros(len(reads), dtype=bool)
        keep[np.argsort(-reads, kind="stable")[: self.capacities[self._top]]] = True  # the most-read ones
        parts = np.split(keep, np.cumsum([len(c) for _, c in pools])[:-1])
        packets = [self._extract(t, c[k]) for (t, c), k in zip(pools, parts, strict=True) if k.any()]
        if packets:
            self._push(self._top, packets[0] if len(packets) == 1 else join_packets(*packets))
            self._counters["promotions"] += int(keep.sum())

    def manage_tiers(self) -> None:
        """Re-place every entry by priority: the best `hot` entries hot, the next `warm` warm, the rest cold."""
        tiers = np.concatenate([np.full(b.used, t, np.int64) for t, b in enumerate(self._books)])
        slots = np.concatenate([np.flatnonzero(b.ids >= 0) for b in self._books])
        if not len(slots):
            return
        prio = np.concatenate([self._priority(t, slots[tiers == t]) for t in range(3)])
        seq = np.concatenate([self._books[t].seq[slots[tiers == t]] for t in range(3)])
        rank = np.empty(len(slots), np.int64)
        rank[np.lexsort((seq, prio))[::-1]] = np.arange(len(slots))  # 0 = highest priority (newest on ties)
        bounds = np.cumsum(self.capacities)
        want = np.searchsorted(bounds, rank, side="right")  # tier index by rank
        movers = np.flatnonzero(want != tiers)
        extracted = []
        for t in range(3):
            sel = movers[tiers[movers] == t]
            if len(sel):
                extracted.append((sel, self._extract(t, slots[sel])))
        for sel, packet in extracted:
            for to in range(3):
                part = want[sel] == to
                if part.any():
                    self._place(to, {k: v[part] for k, v in packet.items()})
        self._counters["promotions"] += int((want[movers] < tiers[movers]).sum())
        self._counters["demotions"] += int((want[movers] > tiers[movers]).sum())

    def remove(self, ids) -> int:
        """Drop entries by id (any shape; unknown and -1 ignored). Returns how many were removed."""
        flat = np.unique(self._as_ids(ids).reshape(-1))
        pos, found, _, _ = self._lookup(flat)
        pos = pos[found]
        for t in range(3):
            sel = pos[self._tier[pos] == t]
            if len(sel):
                self._books[t].take(self._slot[sel])
        keep = np.ones(len(self._ids), dtype=bool)
        keep[pos] = False
        self._ids, self._tier, self._slot = self._ids[keep], self._tier[keep], self._slot[keep]
        return len(pos)

    def tier_of(self, ids) -> np.ndarray:
        """ids (...) -> (...) int8: 0 hot, 1 warm, 2 cold, -1 not cached."""
        ids = self._as_ids(ids)
        return self._lookup(ids.reshape(-1))[2].astype(np.int8).reshape(ids.shape)

    def stats(self) -> dict:
        asked = self._counters["hits"] + self._counters["misses"]
        out = {name: self._books[t].used for t, name in enumerate(TIER_NAMES)}
        out.update({f"{name}_capacity": c for name, c in zip(TIER_NAMES, self.capacities, strict=True)})
        out.update(self._counters)
        out["hit_rate"] = self._counters["hits"] / asked if asked else 0.0
        out["bytes_per_entry"] = self._store.entry_bytes()
        return out

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM (hot + warm tiers, bookkeeping); the cold tier lives on disk (`disk_nbytes`)."""
        return self._store.ram_nbytes + sum(b.nbytes for b in self._books) + self._ids.nbytes * 2 + self._tier.nbytes

    @property
    def disk_nbytes(self) -> int:
        return self._store.disk_nbytes

    def close(self) -> None:
        """Release the cold tier's file (and its folder when private). The cache is unusable afterwards."""
        self._store.close()
        self._finalizer()
