"""How TieredKVCache's entries move between its tiers: `TierMoves` (a mixin of the cache) demotes, settles and
evicts entries by the cache's policy and keeps the cache's id -> (tier, slot) map in step; entries on their way
are packets (field -> array), ranked by the same `priority` as the entries a tier holds."""

from __future__ import annotations

import numpy as np

from memory.cache_tiers import Book, TierStorage
from memory.eviction import lowest


def priority(policy: str, entries, at=slice(None)) -> np.ndarray:
    """The policy's priority (lower leaves a tier first) of entries: a Book's slots `at`, or an extracted packet
    (field -> array), so entries in a tier and entries on their way down are ranked by the same rule."""
    if policy == "lru":
        return entries["stamp"][at].astype(np.float64)
    if policy == "fifo":
        return entries["seq"][at].astype(np.float64)
    imp = entries["imp"][at]
    return np.where(np.isnan(imp), entries["count"][at], imp)


def split_packet(packet: dict, policy: str, excess: int) -> tuple[dict, dict]:
    """An extracted packet -> (the rest, its `excess` lowest-priority entries; ties: the older goes first)."""
    out = np.zeros(len(packet["ids"]), dtype=bool)
    out[lowest(priority(policy, packet), packet["seq"], excess)] = True
    return {f: v[~out] for f, v in packet.items()}, {f: v[out] for f, v in packet.items()}


def join_packets(a: dict, b: dict) -> dict:
    return {f: np.concatenate([a[f], b[f]]) for f in a}


class TierMoves:
    """Mixin for TieredKVCache: demotion and eviction between tiers of any capacities (a tier may hold fewer
    entries than the one above, or none: `_next` skips empty tiers)."""

    policy: str
    capacities: tuple[int, int, int]
    _books: list[Book]
    _store: TierStorage
    _ids: np.ndarray
    _tier: np.ndarray
    _slot: np.ndarray
    _next: dict
    _counters: dict
    _evicted: list

    def _priority(self, t: int, slots: np.ndarray) -> np.ndarray:
        return priority(self.policy, self._books[t], slots)

    def _extract(self, t: int, slots: np.ndarray) -> dict:
        """Take entries out of tier t (their map rows stay, pointing nowhere until `_place`)."""
        keys, values = self._store.read(t, slots)
        packet = {"keys": keys, "values": values, **self._books[t].take(slots)}
        return packet

    def _place(self, t: int, packet: dict) -> None:
        """Put extracted or new entries into free slots of tier t and point the map at them."""
        book = self._books[t]
        dst = book.free_slots(len(packet["ids"]))
        self._store.write(t, dst, packet["keys"], packet["values"], book_empty=book.used == 0)
        book.give(dst, packet)
        pos = np.searchsorted(self._ids, packet["ids"])
        self._tier[pos], self._slot[pos] = t, dst

    def _make_room(self, t: int, n: int) -> None:
        """Free n (<= capacity) slots in tier t (not the last): its lowest-priority entries go down."""
        book = self._books[t]
        need = n - (book.capacity - book.used)
        if need <= 0:
            return
        occupied = np.flatnonzero(book.ids >= 0)
        victims = occupied[lowest(self._priority(t, occupied), book.seq[occupied], need)]
        self._sink(t, self._extract(t, victims))

    def _settle_last(self, t: int, packet: dict) -> None:
        """Entries arriving in the last tier t compete with its residents: the highest-priority of both stay, the
        rest leave the cache (arrivals that lose are never written). Making room among the residents alone let
        whatever sank down get in, so the bottom tier evicted more important entries than the ones it took."""
        book = self._books[t]
        need = book.used + len(packet["ids"]) - book.capacity
        if need > 0:
            held = np.flatnonzero(book.ids >= 0)
            prio = np.concatenate([self._priority(t, held), priority(self.policy, packet)])
            out = lowest(prio, np.concatenate([book.seq[held], packet["seq"]]), need)  # ties: the older goes
            refused = np.zeros(len(packet["ids"]), dtype=bool)
            refused[out[out >= len(held)] - len(held)] = True
            self._evict(np.concatenate([book.take(held[out[out < len(held)]])["ids"], packet["ids"][refused]]))
            packet = {f: v[~refused] for f, v in packet.items()}
        self._place(t, packet)

    def _evict(self, gone: np.ndarray) -> None:
        keep = ~np.isin(self._ids, gone)
        self._ids, self._tier, self._slot = self._ids[keep], self._tier[keep], self._slot[keep]
        self._evicted.append(gone)
        self._counters["evictions"] += len(gone)

    def _sink(self, t: int, packet: dict) -> None:
        """Entries leaving tier t (not the last) downward, into the next tier with capacity."""
        self._counters["demotions"] += len(packet["ids"])
        self._push(self._next[t], packet)

    def _push(self, t: int, packet: dict) -> None:
        """Place extracted or new entries into tier t, making room by demotion. A packet larger than the tier (a
        lower tier may be smaller than the one above) keeps its highest-priority entries there; the rest and
        everything the tier held sink further as one packet, so the tier below picks among all of them. The last
        tier picks among its residents and the packet (`_settle_last`)."""
        if t not in self._next:
            self._settle_last(t, packet)
            return
        excess = len(packet["ids"]) - self.capacities[t]
        if excess > 0:
            packet, rest = split_packet(packet, self.policy, excess)
            held = np.flatnonzero(self._books[t].ids >= 0)
            self._sink(t, join_packets(self._extract(t, held), rest))
        else:
            self._make_room(t, len(packet["ids"]))
        self._place(t, packet)

    def _move(self, t: int, slots: np.ndarray, to: int) -> None:
        self._push(to, self._extract(t, slots))
