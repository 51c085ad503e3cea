"""Searching a FaissStore (a mixin, so store.py stays about writing and evicting), and coded keys.

Coded keys. When the first F blocks of every key are rows of a fixed code table picked by the entry's metadata
(MemNet with memory.key_source=token: block 0 is the code of the entry's own token, block 1 the code of the one
before it, zeros where that metadata is -1), an inner product splits into table lookups and a shorter scan:
q.s = sum_f (q_f . codes)[meta_f] + q_rest . s_rest. Exact search then scores the F code blocks of every entry by
looking up the query's V scores per block (V x Dc multiply-adds per query, once) and scans only the rest of the
key: ContinualShift's 384-wide keys scan 128 columns (in float32 whatever the store's precision: no more bytes
than a bfloat16 scan of the whole key, and exact), LongDependency's 256-wide keys none (NeedleRecall's 768-wide
keys would scan 512, in the store's precision; MemNet leaves them uncoded, README "FaissStore"). `add` checks
that each coded block is the code its metadata names, so the shortcut ranks as a full scan does (up to float
rounding).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import torch

from memory.store_index import exact_topk, no_hits
from memory.store_lookup import META_FIELDS, check_ip_range, checked_array, normalise

SCORE_BUFFER_FLOATS = 2**24  # at most 64 MB of float32 scores per exact-search block (see exact_block)
CODE_TOLERANCE = 2.0**-7  # a coded block may differ from its code by this much relative (bfloat16 autocast)


def k_limit(capacity: int, queries: int) -> int:
    """The largest k a search of `queries` query vectors takes. A query searches one partition, so at most
    `capacity` of its k ids are entries and the rest pad (-1). Padding is still allowed, not refused: MemNet asks
    FETCH_FACTOR x store_top_k candidates whatever the capacity (store_top_k=8 from store_capacity=16 is valid), and
    fixed-width reads of a small or empty store rely on it. But only as much as one exact-search block's score
    buffer holds over all queries: a k in the billions (padding alone of terabytes) failed inside numpy."""
    return max(capacity, SCORE_BUFFER_FLOATS // max(queries, 1))


class SearchResult(NamedTuple):
    scores: np.ndarray  # (B, Q, k) float32 cosine (or inner product, metric="ip"), -inf where fewer than k exist
    ids: np.ndarray  # (B, Q, k) int64, -1 where fewer than k entries exist


class SearchHits(NamedTuple):
    scores: np.ndarray  # (B, Q, k) float32
    ids: np.ndarray  # (B, Q, k) int64
    values: np.ndarray  # (B, Q, k, Dv) float32, zeros where id is -1
    meta: dict  # field -> (B, Q, k) int64 (-1 where missing), plus "found" (B, Q, k) bool


class CodedKeys(NamedTuple):
    """Key blocks that are codes: columns [f Dc, (f+1) Dc) of every key = codes[meta[fields[f]]] (0 where -1)."""

    codes: torch.Tensor  # (V, Dc) float32
    fields: tuple[str, ...]  # metadata columns naming each leading block's code, e.g. ("token", "prev")

    @property
    def width(self) -> int:
        """Columns the coded blocks take at the start of a key."""
        return len(self.fields) * self.codes.shape[1]

    def digest(self) -> str:
        """A fingerprint of the codes and fields, saved with a coded store's state: a state whose keys were checked
        (`check`, at `add`) under the same codes needs no second check when it is loaded (a full check of a full
        store costs ~0.15 s, and an evaluation restores the memory after every task)."""
        h = hashlib.sha256(self.codes.detach().cpu().contiguous().float().numpy().tobytes())
        h.update(repr((tuple(self.codes.shape), self.fields)).encode())
        return h.hexdigest()

    def block(self, ids: np.ndarray) -> np.ndarray:
        """ids (n,) int64 -> (n, Dc) float32: the code of each id, +0.0 where it is negative (missing); ids past the
        table read its last code (callers refuse them)."""
        codes = self.codes.numpy()
        out = codes[np.clip(ids, 0, len(codes) - 1)]  # (n, Dc), a copy
        out[ids < 0] = 0.0
        return out

    def check(self, keys: np.ndarray, meta: dict, where: str = "FaissStore.add",
              fix: str = "pass the codes the keys were made of") -> None:
        """keys (n, D), meta: field -> (n,) int64: raise ValueError where a coded block is not its code."""
        codes, Dc = self.codes.numpy(), self.codes.shape[1]
        for f, field in enumerate(self.fields):
            ids = meta.get(field, np.full(len(keys), -1))
            want = self.block(ids)  # (n, Dc)
            block = keys[:, f * Dc:(f + 1) * Dc]
            # exact equality first (float32 keys made of the codes, ~20x cheaper), the tolerance only otherwise
            if ((ids >= len(codes)).any() or not (np.array_equal(block, want)
                                                  or np.allclose(block, want, rtol=CODE_TOLERANCE, atol=1e-6))):
                raise ValueError(f"{where}: key columns {f * Dc}:{(f + 1) * Dc} must be the code of "
                                 f"meta[{field!r}] (coded keys); {fix}")


class StoreSearch:
    """Mixin for FaissStore: search (exact, ANN, coded) and the access bookkeeping of its hits."""

    def search(self, queries, k: int, with_values: bool = False, count: bool = True) -> SearchResult | SearchHits:
        """queries (B, Q, D) -> SearchResult(scores (B, Q, k), ids (B, Q, k)); with_values=True adds values and
        meta (SearchHits). scope="lane": row b searches lane b only (B must equal lanes). Counts its hits as accesses
        (lru, importance), unless count=False: a caller that keeps only some of them (a re-ranking) credits those
        with `touch`.
        Exactly equal scores come in no promised order (the top-k's): callers needing one order ties themselves
        (memory.retrieval.rank)."""
        q = checked_array(queries, "queries", np.float32)
        if q.ndim != 3 or q.shape[-1] != self.dim:
            raise ValueError(f"FaissStore.search: queries must be (B, Q, {self.dim}), got {tuple(q.shape)}")
        if self.scope == "lane" and q.shape[0] != self.lanes:
            raise ValueError(f"FaissStore.search: scope='lane' needs one query row per lane: B={q.shape[0]}, "
                             f"lanes={self.lanes}")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"FaissStore.search: k={k!r}: must be an int >= 1")
        B, Q, _ = q.shape
        most = k_limit(self.capacity, B * Q)
        if k > most:
            raise ValueError(f"FaissStore.search: k={k}: at most {most} for B x Q = {B} x {Q} queries (a query "
                             f"finds at most capacity={self.capacity} entries, and a larger k only pads with id -1, "
                             f"to at most {SCORE_BUFFER_FLOATS} ids in all); pass k <= {self.capacity}")
        # no query (Q = 0, or B = 0 shared): nothing to score; the exact scan would size its block by B * Q = 0
        scores, ids = self._search(q, k, count) if B * Q else no_hits(B, Q, k)
        if not with_values:
            return SearchResult(scores, ids)
        values, meta = self.get(ids)
        return SearchHits(scores, ids, values, meta)

    def _search(self, q: np.ndarray, k: int, count: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """queries (B, Q, D) float32, B Q > 0 -> scores, ids (B, Q, k); counts the hits as accesses (`count`)."""
        B, Q, _ = q.shape
        # every metric: a NaN query scores NaN against every key, and top-k over NaN returns arbitrary ids; with ip,
        # queries keep to the keys' norm limit, so no inner product overflows float32 (an inf score ranks nothing)
        q = normalise(q, "queries") if self.metric == "cosine" else check_ip_range(q, "queries")
        groups = q if self.scope == "lane" else q.reshape(1, B * Q, self.dim)  # (P, Q', D)
        scores = np.full((self.partitions, groups.shape[1], k), -np.inf, dtype=np.float32)
        local = np.full(scores.shape, -1, dtype=np.int64)
        exact = list(range(self.partitions))
        if self._ann is not None:
            # an index answers only while its partition holds min_entries: one trained before a clear() or
            # removals keeps its centroids (and takes new entries), but probing a few lists of a small
            # partition misses most of it (2 of 5 ids found for 20 entries after a clear, IVF 10 lists, 1 probe)
            exact = [p for p in exact if not self._ann[p].ready or self._count[p] < self._ann[p].min_entries]
            for p in set(range(self.partitions)) - set(exact):
                s, r = self._ann[p].search(groups[p], k)
                scores[p], local[p] = np.where(r >= 0, s, -np.inf), r
        if exact:
            s, r = self._exact(groups, exact, k)
            scores[exact], local[exact] = s, r
        rows = np.where(local >= 0, local + np.arange(self.partitions)[:, None, None] * self.capacity, 0)
        ids = np.where(local >= 0, self._row_id[rows], -1).reshape(B, Q, k)
        if count:
            self._touch(rows[local >= 0])
        return scores.reshape(B, Q, k), ids

    def _exact(self, queries: np.ndarray, parts: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (P, Q, D) -> scores, local rows (len(parts), Q, k) by exact search over those partitions."""
        width = int(self._fill[parts].max())
        if not width:  # nothing written to these partitions yet (or since a clear): no scan, no code lookup
            return no_hits(len(parts), queries.shape[1], k)
        P = self.partitions
        some = len(parts) < P  # some lanes use their ANN index
        valid = None  # (P', width) bool: live rows; None when every row < width is live (nothing to mask)
        if not (self._count[parts] == width).all():
            row_id = self._row_id.reshape(P, self.capacity)
            valid = torch.from_numpy((row_id[parts] if some else row_id)[:, :width] >= 0)
        coded = self.coded
        skip = coded.width if coded is not None else 0  # leading columns scored by lookup instead of the scan
        if self._scan is not None:  # a copy of the scanned columns: bfloat16 and/or without the coded blocks
            keys = self._scan.view(P, self.capacity, self.dim - skip)
        else:
            keys = torch.from_numpy(self._keys).view(P, self.capacity, self.dim)  # (P, cap, D)
        if some:  # never copy the whole key matrix
            keys = keys[parts, :width]
        q = torch.from_numpy(np.ascontiguousarray(queries[parts]))  # (P', Q, D)
        pq = q.shape[0] * q.shape[1]
        block = min(width, self.exact_block or max(1024, SCORE_BUFFER_FLOATS // pq))
        if self._scores is None or len(self._scores) < pq * block:
            self._scores = torch.empty(pq * block)  # kept: reused by every later search of this size or less
        lookup = None
        if coded is not None:
            lookup = self._code_scores(q[..., :skip], parts, width)  # (P', Q, width)
            q = q[..., skip:]
        bf16 = keys.dtype == torch.bfloat16
        return exact_topk(q, None if bf16 else keys, valid, width, k, block, self._scores,
                          keys if bf16 else None, lookup)

    def _code_scores(self, q: torch.Tensor, parts: list[int], width: int) -> torch.Tensor | None:
        """q (P', Q, F Dc): the coded part of the queries -> (P', Q, width) float32: each entry's coded blocks'
        inner products, by lookup of the query's scores against every code (zero where the metadata is -1)."""
        codes, fields = self.coded
        Dc, (P, Q), F = codes.shape[1], q.shape[:2], len(fields)
        tables = q.view(P, Q, F, Dc) @ codes.T  # (P', Q, F, V): the query's score against every code, per block
        tables = torch.cat((tables, tables.new_zeros(P, Q, F, 1)), dim=-1)  # column V: no code (metadata -1)
        rows = self._code_rows.view(F, self.partitions, self.capacity)  # (F, P, cap): code row of every entry
        rows = rows[:, :, :width] if P == self.partitions else rows[:, parts, :width]  # (F, P', width)
        total = None
        for f in range(F):
            scores = tables[:, :, f].gather(2, rows[f, :, None, :].expand(P, Q, width))  # (P', Q, width)
            total = scores if total is None else total.add_(scores)
        return total

    def touch(self, ids) -> None:
        """Count the entries `ids` (any shape; -1 and ids no longer stored are skipped) as one search's hits, one
        per occurrence: what a `search(..., count=False)` caller used of its candidates."""
        rows, found = self._rows_of(ids)
        self._touch(rows[found])

    def _touch(self, rows: np.ndarray) -> None:
        """Search hits: refresh the lru stamp and add one importance per hit. One search's hits share one stamp, so
        lru eviction takes the oldest of them first (stamps in row order made a newer entry in a lower row go
        first)."""
        if not len(rows):
            return
        hit_rows, hits = np.unique(rows, return_counts=True)
        self._stamp[hit_rows] = self._clock
        self._clock += 1
        self._importance[hit_rows] += hits


def write_keys(out: np.ndarray, at: np.ndarray, rest: np.ndarray, meta: np.ndarray, coded: CodedKeys,
               chunk: int = 8192) -> None:
    """Write keys saved without their coded blocks into rows `at` (n,) of `out` (R', D): the saved rest columns
    `rest` (n, D - coded width), and each coded block the code that the entry's metadata `meta` (n, M) names. In
    chunks of rows: the gathered codes stay small beside the store (no (n, D) temporary)."""
    Dc = coded.codes.shape[1]
    for start in range(0, len(at), chunk):
        rows, part = at[start:start + chunk], slice(start, start + chunk)
        out[rows, coded.width:] = rest[part]
        for f, field in enumerate(coded.fields):
            out[rows, f * Dc:(f + 1) * Dc] = coded.block(meta[part, META_FIELDS.index(field)])  # (c, Dc)
