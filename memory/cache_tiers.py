"""Storage and bookkeeping of TieredKVCache's three tiers (hot float32, warm int8, cold memmap).

`Book` keeps per-slot metadata of one tier (id, insertion sequence, last-access stamp, access count,
caller importance); `TierStorage` keeps the K/V data of all tiers and converts on read and write. How entries
move between the tiers is `memory/cache_moves.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from memory.cache_cold_dirs import map_cold_file
from memory.cache_state import check_tier_values, count_value
from memory.quant import channel_scale, dequantize, quantize
from memory.undo import RowUndo

HOT, WARM, COLD = 0, 1, 2
_FIELDS = ("ids", "seq", "stamp", "count", "imp")


class Book:
    """Per-slot metadata of one tier with `capacity` slots; ids == -1 marks a free slot."""

    fields = _FIELDS  # its per-slot arrays (memory/undo.py copies them)

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.ids = np.full(capacity, -1, dtype=np.int64)
        self.seq = np.zeros(capacity, dtype=np.int64)  # insertion order (fifo, tie-breaks)
        self.stamp = np.zeros(capacity, dtype=np.int64)  # last access (lru)
        self.count = np.zeros(capacity, dtype=np.int64)  # accesses (promotion, importance fallback)
        self.imp = np.full(capacity, np.nan)  # caller importance, NaN = none given
        self.used = 0

    def __getitem__(self, field: str) -> np.ndarray:  # lets `priority` read a Book like a packet
        return getattr(self, field)

    def free_slots(self, n: int) -> np.ndarray:
        slots = np.flatnonzero(self.ids < 0)[:n]
        if len(slots) < n:
            raise RuntimeError(f"TieredKVCache: tier has {len(slots)} free slots, {n} needed (bookkeeping bug)")
        return slots

    def take(self, slots: np.ndarray) -> dict:
        """Free `slots` and return their metadata (field -> (n,) array)."""
        out = {f: getattr(self, f)[slots].copy() for f in _FIELDS}
        self.ids[slots] = -1
        self.imp[slots] = np.nan
        self.used -= len(slots)
        return out

    def give(self, slots: np.ndarray, packet: dict) -> None:
        for f in _FIELDS:
            getattr(self, f)[slots] = packet[f]
        self.used += len(slots)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in _FIELDS)

    def state(self) -> dict:
        return {f: torch.from_numpy(getattr(self, f).copy()) for f in _FIELDS}

    def checked_state(self, d: dict) -> dict:
        """A saved `state()` as field -> array, checked (ValueError) but not loaded: `load_state` cannot fail."""
        if not isinstance(d, dict) or not all(isinstance(d.get(f), torch.Tensor) for f in _FIELDS):
            raise ValueError(f"TieredKVCache.load_state_dict: a tier's book lacks one of {_FIELDS} (damaged state)")
        for f in _FIELDS:
            if tuple(d[f].shape) != (self.capacity,) or d[f].numpy().dtype != getattr(self, f).dtype:
                raise ValueError(f"TieredKVCache.load_state_dict: {f} is {tuple(d[f].shape)} {d[f].dtype}, "
                                 f"expected ({self.capacity},) {getattr(self, f).dtype}")
        return {f: d[f].numpy() for f in _FIELDS}

    def load_state(self, arrays: dict) -> None:
        for f in _FIELDS:
            getattr(self, f)[:] = arrays[f]
        self.used = int((self.ids >= 0).sum())


class TierStorage:
    """K/V data of the three tiers. Entries are (H, dk) keys and (H, d) values; slots index each tier."""

    def __init__(self, heads: int, head_dim: int, key_dim: int, capacities: tuple[int, int, int], quantize: bool,
                 cold_file: Path | None):
        hot, warm, cold = capacities
        H, d, dk = heads, head_dim, key_dim
        self.heads, self.head_dim, self.key_dim, self.quantize = H, d, dk, quantize
        self.hot_k = np.zeros((hot, H, dk), dtype=np.float32)
        self.hot_v = np.zeros((hot, H, d), dtype=np.float32)
        code = np.int8 if quantize else np.float32
        self.warm_k = np.zeros((warm, H, dk), dtype=code)
        self.warm_v = np.zeros((warm, H, d), dtype=code)
        self.warm_sk = np.ones((warm, H), dtype=np.float32)  # per entry and head
        self.warm_sv = np.ones((warm, H), dtype=np.float32)
        # per-channel key scales of the warm tier, one row per calibration; each warm slot keeps the row its key
        # was quantised with (re-quantising held keys with newer scales added a second rounding: 0.60 -> 0.74%)
        self.channels = np.ones((1, H, dk), dtype=np.float32)
        self.warm_cal = np.zeros(warm, dtype=np.uint8)  # (warm,) row of `channels` per slot
        self.key_sq = np.zeros((H, dk), dtype=np.float64)  # running sum of k**2 for calibration
        self.key_seen = 0
        self.calibrated_at = 0  # key_seen when the newest row of `channels` was made
        self.mmap = map_cold_file(cold_file, (cold, H, dk + d)) if cold else None
        # plain-ndarray view of the mapping ([..., :dk] keys, [..., dk:] values): indexing the np.memmap subclass
        # itself wraps every result in a memmap object, which doubles the cost of a 100-id read
        self.cold = np.asarray(self.mmap) if cold else np.zeros((0, H, dk + d), dtype=np.float32)
        self.cold_undo = RowUndo()  # a cold slot's old contents at its first write after a mark (memory/undo.py)

    def observe_keys(self, keys: np.ndarray) -> None:
        """keys (n, H, d): every key put into the cache feeds the warm tier's channel calibration."""
        if self.quantize and len(keys):
            # per call in float32 (the float64 square of every element cost 7x more), over calls in float64; in
            # float64 also where float32 squares overflow (|k| ~ 1e19: an inf scale read warm keys back as NaN)
            sq = np.einsum("nhk,nhk->hk", keys, keys)
            self.key_sq += sq if np.isfinite(sq).all() else np.einsum("nhk,nhk->hk", *(keys.astype(np.float64),) * 2)
            self.key_seen += len(keys)

    def read(self, t: int, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """slots (n,) -> keys (n, H, dk), values (n, H, d) float32."""
        if t == HOT:
            return self.hot_k[slots], self.hot_v[slots]
        if t == WARM:
            if not self.quantize:
                return self.warm_k[slots], self.warm_v[slots]
            cal = self.warm_cal[slots]
            # one broadcast row in the common case; a (n, H, dk) gather only when the slots span calibrations
            mixed = len(cal) and (cal != cal[0]).any()
            channel = self.channels[cal] if mixed else self.channels[cal[0] if len(cal) else 0]
            return (dequantize(self.warm_k[slots], self.warm_sk[slots], channel),
                    dequantize(self.warm_v[slots], self.warm_sv[slots]))
        self._check_open()
        block = self.cold[slots]  # (n, H, dk + d): one fancy index into the memmap
        return block[..., :self.key_dim], block[..., self.key_dim:]

    def write(self, t: int, slots: np.ndarray, keys: np.ndarray, values: np.ndarray, book_empty: bool) -> None:
        if t == HOT:
            self.hot_k[slots], self.hot_v[slots] = keys, values
        elif t == WARM and not self.quantize:
            self.warm_k[slots], self.warm_v[slots] = keys, values
        elif t == WARM:
            self._calibrate(book_empty)
            self.warm_k[slots], self.warm_sk[slots] = quantize(keys, self.channels[-1])
            self.warm_cal[slots] = len(self.channels) - 1
            self.warm_v[slots], self.warm_sv[slots] = quantize(values)
        else:
            self._check_open()
            self.cold_undo.before_write(slots)
            self.cold[slots] = np.concatenate((keys, values), axis=-1)

    def _calibrate(self, book_empty: bool) -> None:
        """Key channel scales from every key put so far: afresh when the warm tier is empty (no code depends on
        the old rows), and as a new row when the keys seen have doubled since the last calibration. The first
        demotion can come after very few keys (hot=1: two), and scales from two keys cost 3.7% key error for as
        long as the warm tier held anything; doubling keeps the rows to log2(keys put) + 1 (a uint8 index per slot)."""
        if book_empty:
            self.channels = channel_scale(self.key_sq, self.key_seen)[None]
        elif self.key_seen >= max(2 * self.calibrated_at, 1):
            self.channels = np.concatenate([self.channels, channel_scale(self.key_sq, self.key_seen)[None]])
        else:
            return
        self.calibrated_at = self.key_seen

    def entry_bytes(self) -> dict:
        """Bytes per entry in each tier (K and V; int8 codes plus scales in warm; cold is on disk)."""
        width = self.heads * (self.key_dim + self.head_dim)
        full = width * 4
        warm = width + 2 * self.heads * 4 + 1 if self.quantize else full  # + 1: the calibration row
        return {"hot": full, "warm": warm, "cold": full}

    @property
    def ram_nbytes(self) -> int:
        arrays = (self.hot_k, self.hot_v, self.warm_k, self.warm_v, self.warm_sk, self.warm_sv, self.channels,
                  self.warm_cal)
        return sum(a.nbytes for a in arrays)

    @property
    def disk_nbytes(self) -> int:
        return self.cold.nbytes if self.cold is not None else 0

    def _check_open(self) -> None:
        if self.cold is None:
            raise RuntimeError("TieredKVCache: the cache was closed; its cold tier is gone")

    def close(self) -> None:
        """Drop the cold tier's mapping; the last reference to it unmaps it (at once, unless a caller still holds a
        view of it). Not mmap.close(): numpy keeps no buffer export on the mapping, so that unmapped it under any
        such view, whose next read was a segfault."""
        self.cold, self.mmap = None, None
        self.cold_undo.stop()  # a mark's reference to the mapping goes too (undo after close is refused anyway)

    def state(self, occupied: list[np.ndarray]) -> dict:
        """Hot and warm arrays whole; the cold tier only at its occupied slots (occupied[COLD])."""
        t = torch.from_numpy
        self._check_open()
        return {"hot_k": t(self.hot_k.copy()), "hot_v": t(self.hot_v.copy()), "warm_k": t(self.warm_k.copy()),
                "warm_v": t(self.warm_v.copy()), "warm_sk": t(self.warm_sk.copy()), "warm_sv": t(self.warm_sv.copy()),
                "channel": t(self.channels.copy()), "warm_cal": t(self.warm_cal.copy()),
                "key_sq": t(self.key_sq.copy()), "key_seen": self.key_seen, "calibrated_at": self.calibrated_at,
                "cold": t(np.array(self.cold[occupied[COLD]]))}

    def checked_state(self, d: dict, occupied: list[np.ndarray]) -> dict:
        """A saved `state(occupied)` as name -> array / scalar, checked (ValueError) but not loaded, so that a
        failed load leaves the tiers as they were; `load_state` then cannot fail."""
        self._check_open()
        names = ("hot_k", "hot_v", "warm_k", "warm_v", "warm_sk", "warm_sv", "key_sq", "channel", "cold")
        if not isinstance(d, dict) or not all(isinstance(d.get(n), torch.Tensor) for n in names) or not isinstance(
                d.get("key_seen"), int):
            raise ValueError("TieredKVCache.load_state_dict: the saved tier data lacks arrays (damaged state)")
        got, channels = {name: d[name].numpy() for name in names[:7]}, d["channel"].numpy()
        # a file from before calibration rows holds one (H, dk) row and no warm_cal: every warm key used that row
        got["channels"] = channels[None] if channels.ndim == 2 else channels
        got["warm_cal"] = d["warm_cal"].numpy() if "warm_cal" in d else np.zeros_like(self.warm_cal)
        for name, array in got.items():
            mine = getattr(self, name)
            shape = (max(len(array), 1), *mine.shape[1:]) if name == "channels" else mine.shape
            if array.shape != shape or array.dtype != mine.dtype:
                raise ValueError(f"TieredKVCache.load_state_dict: {name} is {array.shape} {array.dtype}, expected "
                                 f"{shape} {mine.dtype}")
        # a held slot's row only: a free slot keeps the row of the key it last held, which a recalibration of the
        # emptied warm tier can leave past the rows (its own state_dict was refused as damaged)
        cal = got["warm_cal"][occupied[WARM]]
        if cal.size and int(cal.max()) >= len(got["channels"]):
            raise ValueError(f"TieredKVCache.load_state_dict: warm_cal points past the {len(got['channels'])} "
                             "channel rows (damaged state)")
        if d["cold"].dtype != torch.float32:  # cast into the float32 map, 1e300 became inf with only a warning
            raise ValueError(f"TieredKVCache.load_state_dict: cold data is {d['cold'].dtype}, expected torch.float32 "
                             "(damaged state)")
        if tuple(d["cold"].shape) != (len(occupied[COLD]), self.heads, self.key_dim + self.head_dim):
            raise ValueError(f"TieredKVCache.load_state_dict: cold data {tuple(d['cold'].shape)} does not match "
                             f"{len(occupied[COLD])} cold entries")
        seen = count_value(d["key_seen"], "key_seen")
        got |= {"key_seen": seen, "calibrated_at": count_value(d.get("calibrated_at", seen), "calibrated_at"),
                "cold": d["cold"].numpy(), "cold_slots": occupied[COLD]}
        return check_tier_values(got, self.quantize)

    def load_state(self, got: dict) -> None:
        """Load what `checked_state` returned."""
        got = dict(got)
        self.channels = got.pop("channels").copy()
        self.key_seen, self.calibrated_at = got.pop("key_seen"), got.pop("calibrated_at")
        self.cold_undo.before_write(got["cold_slots"])
        self.cold[got.pop("cold_slots")] = got.pop("cold")
        for name, array in got.items():
            getattr(self, name)[...] = array
