"""MemNet's long-term memory objects (FaissStore + TieredKVCache) as a whole: their state dict and its load (a
checkpoint's `memory`), undo to a mark (an evaluation's), closing. A mixin of MemNet (agents/memnet.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from agents.memnet_cache_codes import cache_codes, compact_cache_state, whole_cache_state
from memory.cache import TieredKVCache
from memory.store import FaissStore


class MemoryObjects:
    """Mixin for MemNet (before AgentModel in its bases): `store` and `cache` are None until made."""

    store: FaissStore | None
    cache: TieredKVCache | None

    def memory_state_dict(self, compact: bool = True) -> dict:
        """Store + cache state (tensors and python scalars), {} before the first forward or with store off. Holds
        copies: the memory's later changes do not reach it, and loading it copies it in again. With token codes as
        addresses and `compact` (a checkpoint's), the cache's cold entries without their key columns that are codes,
        where they can be remade bit for bit ("cache_codes" says how; agents/memnet_cache_codes.py);
        compact=False is faster to take and load."""
        if self.store is None:
            return {}
        d = {"lanes": self.store.lanes, "store": self.store.state_dict(), "cache": self.cache.state_dict()}
        coded = cache_codes(self) if compact else None
        if coded is not None:
            d["cache"], saved = compact_cache_state(d["cache"], self.store, coded, self.cache.key_dim)
            if saved is not None:
                d["cache_codes"] = saved
        return d

    def load_memory_state_dict(self, d: dict) -> None:
        if not isinstance(d, dict):  # None dropped the whole store and cache, as {} (no memory) does
            raise ValueError(f"memory state: expected the dict memory_state_dict() makes ({{}}: no memory), got "
                             f"{type(d).__name__}")
        if not d:
            self.close()
            return
        if not self.cfg.memory.store:
            raise ValueError("memory state holds a store, but this model has memory.store=false")
        if not {"lanes", "store", "cache"} <= set(d):
            raise ValueError(f"memory state: expected keys lanes, store, cache; got {sorted(d)}")
        self._check_saved_tokens(d["store"])
        cache = whole_cache_state(self, d)  # a compact state's cold entries get their coded heads back first
        if self.store is None or self.store.lanes != int(d["lanes"]):
            self.close()
            self._memory_objects(int(d["lanes"]))
        # else loaded in place: every array of the store and cache is overwritten (new objects meant fresh ~150 MB
        # allocations and a new cold-tier file each time)
        cache = self.cache.checked_state(cache)  # both checked before either changes (a refused cache left
        self.store.load_state_dict(d["store"])  # the loaded store beside the old cache: reads found nothing)
        self.cache.apply_state(cache)

    @contextlib.contextmanager
    def memory_undo(self) -> Iterator[Callable[[], None]]:
        """As AgentModel's, by the store's and the cache's marks (memory/undo.py): ~5 ms to mark and undo the main
        command's full memory, where a state dict took ~140 ms to take and load, and the cold tier stays on disk
        (`python benchmarks/memory.py --only undo`). Memory objects made within (none at entry) are dropped by an
        undo."""
        store, cache = self.store, self.cache
        if store is None or store.marked or cache.marked:  # {} at entry: an undo closes what was made since; or
            with super().memory_undo() as undo:  # within another memory_undo (one mark at a time): a snapshot,
                yield undo  # whose loads the open mark records like any other change
            return
        store.mark()
        cache.mark()

        def undo() -> None:
            if self.store is not store or self.cache is not cache:  # a load of other lanes replaced them
                raise RuntimeError("MemNet.memory_undo: the store and cache were replaced inside; undo cannot reach "
                                   "the new ones")
            store.undo()
            cache.undo()
        try:
            yield undo
        finally:
            try:
                undo()
            finally:
                store.release()
                cache.release()

    def close(self) -> None:
        """Drop the store and cache (the cache's cold-tier file is deleted)."""
        if self.cache is not None:
            self.cache.close()
        self.store = self.cache = None
