"""Undo to a mark, for FaissStore and TieredKVCache (the mixins `StoreUndo` and `CacheUndo`).

`mark()` begins; `undo()` puts the object back as it was at the mark, as often as asked; `release()` ends the mark
(the changes made since the last undo stay). An evaluation works so: each task from the memory as it stood, and that
memory afterwards (`MemNet.memory_undo`, agents/trainer.py). Saving and loading the whole state for it instead
(`state_dict`) took ~50-180 ms to save and ~66 ms to load at ContinualShift's full store, a quarter of an
evaluation, and held a copy of the memory-mapped cold tier in RAM. A mark copies the small arrays whole (bookkeeping,
per-row stamps, the RAM tiers); of the large arrays written by row (the store's keys, values and scan copy, the
cache's cold tier) it keeps a row's old contents only, saved when a write first reaches the row (`RowUndo`).
"""

from __future__ import annotations

import numpy as np
import torch


def _copy(a):
    return a.clone() if isinstance(a, torch.Tensor) else a.copy()


def _put_back(obj, name: str, saved) -> None:
    """`obj.name` := a copy of `saved`, in place where it has its shape and dtype (views of it stay valid)."""
    now = getattr(obj, name)
    if isinstance(saved, torch.Tensor) and isinstance(now, torch.Tensor) and now.shape == saved.shape \
            and now.dtype == saved.dtype:
        now.copy_(saved)
    elif isinstance(saved, np.ndarray) and isinstance(now, np.ndarray) and now.shape == saved.shape \
            and now.dtype == saved.dtype:
        np.copyto(now, saved)
    else:  # replaced by an array of another size since (the cache's id map, its calibration rows)
        setattr(obj, name, _copy(saved))


class RowUndo:
    """Rows (axis 0) of arrays of one length (numpy or torch) as they were at `start`: a row's old contents are
    saved when `before_write` first names it, and `undo` writes them back. Does nothing until `start`."""

    def __init__(self):
        self.arrays: list | None = None
        self.seen = np.zeros(0, dtype=bool)  # (rows,) saved since start / the last undo
        self.saved: list[tuple[np.ndarray, list]] = []  # (rows (n,), each array's old contents at them)

    def start(self, arrays: list) -> None:
        self.arrays = list(arrays)
        self._forget()

    def before_write(self, rows: np.ndarray | slice) -> None:
        """`rows` (int array or slice) of the arrays are about to be written."""
        if self.arrays is None:
            return
        at = np.arange(len(self.seen))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        new = np.unique(at[~self.seen[at]])
        if len(new):
            self.seen[new] = True
            index = torch.from_numpy(new)
            self.saved.append((new, [a[index] if isinstance(a, torch.Tensor) else a[new] for a in self.arrays]))

    def undo(self) -> None:
        """Every row written since `start` (or the last undo) back as it was; goes on recording."""
        for rows, old in self.saved:  # rows of different entries are disjoint: any order
            index = torch.from_numpy(rows)
            for a, o in zip(self.arrays, old, strict=True):
                a[index if isinstance(a, torch.Tensor) else rows] = o
        self._forget()

    def stop(self) -> None:
        self.arrays, self.seen, self.saved = None, np.zeros(0, dtype=bool), []

    def _forget(self) -> None:
        self.seen = np.zeros(len(self.arrays[0]) if self.arrays else 0, dtype=bool)
        self.saved = []


class _Mark:
    """Shared by both mixins: one open mark at a time, and the error for undo / release without one."""

    _marked: dict | None = None  # what the mark copied whole; None: no mark open

    @property
    def marked(self) -> bool:
        """Whether a mark is open."""
        return self._marked is not None

    def held(self) -> list:
        """What the mark keeps to undo with: its whole copies and the rows saved since (empty without a mark)."""
        return [self._marked or {}, self._row_undo().saved]

    def _check_mark(self, what: str, want_open: bool) -> None:
        name = type(self).__name__
        if want_open and not self.marked:
            raise RuntimeError(f"{name}.{what}: no mark is open; call mark() first")
        if not want_open and self.marked:
            raise RuntimeError(f"{name}.{what}: a mark is open already; undo() or release() it first")


class StoreUndo(_Mark):
    """Mixin for FaissStore: mark / undo / release. Needs `self._undo = RowUndo()` and `_undo.before_write(rows)`
    wherever keys, values or the scan copy are written (`add`, `load_state_dict`), and `_ann_changes(partitions)`
    before a FAISS index changes (an add, a removal, a clear, a load)."""

    # copied whole at the mark: per-row bookkeeping, small beside the keys (the metadata: 8 ints a row)
    _SMALL = ("_meta", "_row_id", "_gen", "_seq", "_stamp", "_importance", "_fill", "_count", "_code_rows")

    def _row_undo(self) -> RowUndo:
        return self._undo

    def mark(self) -> None:
        self._check_mark("mark", False)
        self._undo.start([a for a in (self._keys, self._values, self._scan) if a is not None])
        self._marked = {name: _copy(getattr(self, name)) for name in self._SMALL if getattr(self, name) is not None}
        self._marked |= {"clock": self._clock, "adds": self._adds, "ann": {}, "ann_changed": set()}

    def _ann_changes(self, parts) -> None:
        """Partitions `parts` (an int or ints) of the FAISS indexes are about to change: the first change after a
        mark saves the partition's index state (serialising an index costs its size: an evaluation that writes
        nothing, NeedleRecall's, saves none)."""
        m = self._marked
        if m is None or self._ann is None:
            return
        for p in np.atleast_1d(parts).tolist():
            if p not in m["ann"]:
                m["ann"][p] = self._ann[p].state()
            m["ann_changed"].add(p)

    def undo(self) -> None:
        self._check_mark("undo", True)
        self._undo.undo()
        m = self._marked
        for name in self._SMALL:
            if name in m:
                _put_back(self, name, m[name])
        self._clock, self._adds = m["clock"], m["adds"]
        for p in sorted(m["ann_changed"]):  # FAISS indexes changed since: rebuilt from their state at the mark
            self._ann[p] = self._make_ann(p)
            self._ann[p].load_state(m["ann"][p])
        m["ann_changed"] = set()

    def release(self) -> None:
        self._check_mark("release", True)
        self._undo.stop()
        self._marked = None


class CacheUndo(_Mark):
    """Mixin for TieredKVCache: mark / undo / release. Its tiers' RAM arrays and the bookkeeping are copied whole;
    the cold tier by row (`TierStorage.cold_undo`, told of every cold write)."""

    _TIERS = ("hot_k", "hot_v", "warm_k", "warm_v", "warm_sk", "warm_sv", "channels", "warm_cal", "key_sq")
    _MAP = ("_ids", "_tier", "_slot")

    def _row_undo(self) -> RowUndo:
        return self._store.cold_undo

    def mark(self) -> None:
        self._check_mark("mark", False)
        tiers = self._store
        tiers._check_open()
        tiers.cold_undo.start([tiers.cold])
        self._marked = {"tiers": {name: getattr(tiers, name).copy() for name in self._TIERS},
                        "seen": (tiers.key_seen, tiers.calibrated_at),
                        "books": [({f: b[f].copy() for f in b.fields}, b.used) for b in self._books],
                        "map": {name: getattr(self, name).copy() for name in self._MAP},
                        "clock": self._clock, "counters": dict(self._counters), "evicted": list(self._evicted)}

    def undo(self) -> None:
        self._check_mark("undo", True)
        tiers, m = self._store, self._marked
        tiers._check_open()
        tiers.cold_undo.undo()
        for name, saved in m["tiers"].items():
            _put_back(tiers, name, saved)
        tiers.key_seen, tiers.calibrated_at = m["seen"]
        for book, (arrays, used) in zip(self._books, m["books"], strict=True):
            for f, saved in arrays.items():
                _put_back(book, f, saved)
            book.used = used
        for name, saved in m["map"].items():
            _put_back(self, name, saved)
        self._clock, self._counters, self._evicted = m["clock"], dict(m["counters"]), list(m["evicted"])

    def release(self) -> None:
        self._check_mark("release", True)
        self._store.cold_undo.stop()
        self._marked = None
