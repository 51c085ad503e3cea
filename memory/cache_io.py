"""Persistence of TieredKVCache (a mixin, so cache.py stays about putting, reading and moving entries).

`state_dict()` holds tensors and python scalars only (a checkpoint loads it with `torch.load(weights_only=True)`);
`save(path)` writes it as one file, atomically, the cold tier's occupied entries included. A load checks the whole
state (`checked_state`) before it changes anything (`apply_state`), so a refused state leaves the cache as it was.
"""

from __future__ import annotations

import numpy as np
import torch

from memory.cache_state import checked_counters, checked_map, count_value
from memory.cache_tiers import Book, TierStorage
from memory.persist import atomic_torch_save, checked_torch_load
from memory.saved_state import build_from_saved, check_saved_config

FORMAT = "memstream.TieredKVCache/2"  # /2: cold tier (n, H, dk + d), key_dim


class CachePersistence:
    """Mixin for TieredKVCache: state_dict / load_state_dict (checked_state + apply_state) / save / load."""

    heads: int
    head_dim: int
    key_dim: int
    capacities: tuple[int, int, int]
    policy: str
    quantize: bool
    promote_after: int
    _books: list[Book]
    _store: TierStorage
    _ids: np.ndarray
    _tier: np.ndarray
    _slot: np.ndarray
    _clock: int
    _counters: dict

    def _settings(self) -> dict:
        hot, warm, cold = self.capacities
        return {"heads": self.heads, "head_dim": self.head_dim, "key_dim": self.key_dim, "hot": hot, "warm": warm,
                "cold": cold,
                "policy": self.policy, "quantize": self.quantize}

    def state_dict(self) -> dict:
        """Tensors and python scalars only (loads with torch.load(weights_only=True))."""
        return {"format": FORMAT, "config": {**self._settings(), "promote_after": self.promote_after},
                "ids": torch.from_numpy(self._ids.copy()), "tier": torch.from_numpy(self._tier.copy()),
                "slot": torch.from_numpy(self._slot.copy()), "clock": self._clock, "counters": dict(self._counters),
                "books": [b.state() for b in self._books],
                "data": self._store.state([np.flatnonzero(b.ids >= 0) for b in self._books])}

    def load_state_dict(self, d: dict) -> None:
        self.apply_state(self.checked_state(d))

    def checked_state(self, d: dict) -> tuple:
        """A saved state checked whole, for `apply_state` (which cannot fail): a caller loading other memory with it
        checks every part before it changes any. A failed check leaves this cache as it was (loading the books
        first left them describing the file's entries while the id map and data were this cache's)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"TieredKVCache.load_state_dict: format {got!r}, expected {FORMAT!r}")
        missing = sorted({"config", "books", "data", "ids", "tier", "slot", "clock", "counters"} - set(d))
        if missing or not isinstance(d["config"], dict) or not isinstance(d["books"], (list, tuple)) or len(
                d["books"]) != 3:
            raise ValueError(f"TieredKVCache.load_state_dict: the saved state lacks {', '.join(missing) or 'a part'}; "
                             "it is damaged or not a TieredKVCache's")
        check_saved_config("TieredKVCache", d["config"], self._settings())
        books = [book.checked_state(state) for book, state in zip(self._books, d["books"], strict=True)]
        data = self._store.checked_state(d["data"], [np.flatnonzero(b["ids"] >= 0) for b in books])
        return books, data, *checked_map(d, books), count_value(d["clock"], "clock"), checked_counters(d["counters"])

    def apply_state(self, checked: tuple) -> None:
        books, data, ids, tier, slot, clock, counters = checked
        for book, arrays in zip(self._books, books, strict=True):
            book.load_state(arrays)
        self._store.load_state(data)
        self._ids, self._tier, self._slot, self._clock, self._counters = ids, tier, slot, clock, counters

    def save(self, path) -> None:
        """One file, written atomically (temp file + os.replace); the cold tier's data is copied into it."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path, cold_path=None) -> CachePersistence:
        """Rebuild a cache saved with `save(path)`; its cold tier goes to `cold_path` (private temp if None)."""
        d = checked_torch_load(path, "TieredKVCache", FORMAT)
        cache = build_from_saved(cls, d.get("config"), f"TieredKVCache: {path}", path=cold_path)
        try:
            cache.load_state_dict(d)
        except BaseException:
            cache.close()  # its cold tier's file
            raise
        return cache
