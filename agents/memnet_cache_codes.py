"""The cache's key columns that are token codes, left out of MemNet's saved memory state and written back at a load.

With memory.key_source=token a cached key is the store entry's key input s = [code(token) ; code(prev) ; ...]
cut per head ((H, dk), `_write_store`), so its first W = F x D columns (F = the coded fields, token and prev) are
rows of `token_codes` that the entry's store metadata names (zeros where prev is -1, a lane's stream start), as the
store's own coded keys are (`CodedKeys`, memory/store_io.py); ContinualShift: 256 of 384 columns, heads 0 and 1
codes alone, head 2 codes and context. Every entry reaches the cold tier through the int8 warm tier
(memory/cache_moves.py), so the cold tier holds those codes quantised and read back: `dequantize(quantize(key,
channel row r))`, with the warm tier's channel row of the time and a per-entry scale per head (a head of codes
alone: the codes' absmax; a mixed head: its absmax over codes and context, recovered from the context as read back
and saved, 4 bytes an entry). `compact_cache_state` leaves the W columns out of the saved cold tier ((n, H, dk + d),
its occupied rows) and records per entry how to remake them (the codes as they are, or row r and the scale),
checked bit for bit; an entry no way remakes (a channel row dropped when the warm tier emptied, a rounded code)
keeps its columns in the record ("kept"), and where none can be remade (hidden addresses) or a cold entry is not
live in the store, the state stays whole. `expand_cache_state` remakes them from the saved store's metadata and the
model's codes, checked. The hot tier (1,024 entries, ~1 MB of codes) is saved whole: its free slots keep stale data
that a resumed run must save again bit for bit. The warm tier (int8) stays as it is.

The state lives at the MemNet level: the cache stays a generic K/V store and never sees a compact state.
"""

from __future__ import annotations

import numpy as np
import torch

from memory.cache_tiers import COLD
from memory.quant import dequantize, quantize
from memory.store_lookup import META_FIELDS
from memory.store_search import CodedKeys

FORMAT = "memstream.CacheKeyCodes/1"
WHERE = "memory state"
CHUNK = 8192  # rows per step: the compared and remade copies stay small beside a snapshot of the cold tier
RAW = 255  # `how` of an entry whose coded columns hold the codes as they are (no int8 tier on its way); else a row
KEPT = 254  # `how` of an entry no way remakes (its channel row dropped when the warm tier emptied): saved in "kept"
ULPS = (0, -1, 1)  # a mixed head's scale from its context: the estimate and its float32 neighbours (all it took)


def cold_ids(cache_state: dict) -> np.ndarray:
    """The ids of a saved cache's cold entries, in the order its cold data holds them (`TierStorage.state`)."""
    ids = cache_state["books"][COLD]["ids"].numpy()
    return ids[ids >= 0]


def remade(codes: np.ndarray, how: int, channels: np.ndarray, key_dim: int, scale: np.ndarray) -> np.ndarray:
    """codes (c, W) (an entry's first W key columns) -> what a cold entry holds of them: as they are (RAW) or through
    the int8 warm tier with channel row `how` (channels (R, H, dk)): `whole_heads` and `mixed_head` (its `scale`)."""
    heads = codes.shape[1] // key_dim
    whole = whole_heads(codes[:, :heads * key_dim], how, channels, key_dim)
    if heads * key_dim == codes.shape[1]:  # every key column a code (no context block): no head mixes them
        return whole
    return np.concatenate((whole, mixed_head(codes[:, heads * key_dim:], how, channels[:, heads], scale)), axis=1)


def whole_heads(codes: np.ndarray, how: int, channels: np.ndarray, key_dim: int) -> np.ndarray:
    """codes (c, Hc dk) of the heads made of codes alone -> what the cold tier holds of them: the cache's own
    quantize (scale: the codes' absmax) and dequantize with channel row `how`, so the same bits (RAW: the codes)."""
    if how == RAW:
        return codes
    c, heads = len(codes), codes.shape[1] // key_dim
    channel = channels[how, :heads]  # (Hc, dk)
    return dequantize(*quantize(codes.reshape(c, heads, key_dim), channel), channel).reshape(c, -1)


def mixed_head(codes: np.ndarray, how: int, channels: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """codes (c, p): the code columns of the head that mixes codes and context -> what the cold tier holds of them:
    `quantize` and `dequantize` with the head's int8 scale (c,), which its context shared; channels (R, dk) that
    head's rows (RAW: the codes)."""
    if how == RAW or not codes.shape[1]:
        return codes
    channel = channels[how, None, :codes.shape[1]]  # (1, p): the head, as quantize takes (H, d)
    q, _ = quantize(codes[:, None], channel, scale=scale[:, None])  # (c, 1, p) int8
    return dequantize(q, scale[:, None], channel)[:, 0]  # (c, p)


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(c, k) twice -> (c,) bool: rows equal bit for bit (-0.0 is not +0.0, NaN is itself)."""
    return (a.view(np.uint32) == b.view(np.uint32)).all(axis=1)


def scale_guesses(codes: np.ndarray, held: np.ndarray, channel: np.ndarray, part: int):
    """The int8 scales (c,) to try for a head of `part` code columns and context: codes (c, p), held (c, dk) what the
    cold tier holds of the head, channel (dk,). The scale is the head's absmax over its channel / 127: the codes'
    when they hold it (exact), else the context's, which the tier holds only read back (q = +-127 there)."""
    own = (np.abs(codes / channel[:part]).max(-1) / 127.0).astype(np.float32)  # as `quantize` computes it
    yield np.where(own > 0, own, np.float32(1.0))
    guess = ((np.abs(held[:, part:].astype(np.float64)) / channel[part:]).max(-1) / 127.0).astype(np.float32)
    for step in ULPS:
        s = guess
        for _ in range(abs(step)):
            s = np.nextafter(s, np.float32(np.inf if step > 0 else 0.0))
        yield np.where(s > 0, s, np.float32(1.0))


def compact_cache_state(cache_state: dict, store, coded: CodedKeys, key_dim: int) -> tuple[dict, dict | None]:
    """A cache's `state_dict()` without the coded key columns of its cold entries, and what a load needs to remake
    them ({format, fields, codes: digest, how (n,) uint8, scale (n,) float32: a mixed head's int8 scale, kept (m, W):
    the entries no way remakes bit for bit}); (cache_state, None) unchanged where a cold entry is not live in
    `store` or none can be remade."""
    full, width = cache_state["data"]["cold"].numpy(), coded.width  # (n, H, dk + d)
    ids, channels = cold_ids(cache_state), cache_state["data"]["channel"].numpy()
    n, heads, part = len(ids), *divmod(width, key_dim)
    if not n or not heads or channels.ndim != 3 or (store.meta_of(ids, "token") < 0).any():
        return cache_state, None  # nothing to leave out, no head of codes alone to find an entry's channel row by,
        # or entries the store no longer holds (a live token >= 0)
    meta = [store.meta_of(ids, field) for field in coded.fields]  # (n,) each
    how, scale = np.full(n, KEPT, dtype=np.uint8), np.ones(n, dtype=np.float32)  # (n,) each
    split, key_width = heads * key_dim, full.shape[1] * key_dim  # columns of the heads of codes alone, H dk
    rest = np.empty((n, full[0].size - width), dtype=np.float32)  # (n, H dk - W + H d): what is saved
    held_all = []  # (c, W) per chunk: the coded columns as the cold tier holds them (kept where none remakes them)
    for start in range(0, n, CHUNK):  # chunk by chunk: no (n, H dk) copy of the keys beside the cold tier's
        c = len(full[start:start + CHUNK])
        keys = full[start:start + c, :, :key_dim].reshape(c, key_width)  # (c, H dk): the key inputs s
        rest[start:start + c, :key_width - width] = keys[:, width:]
        rest[start:start + c, key_width - width:] = full[start:start + c, :, key_dim:].reshape(c, -1)
        x, held = coded_columns(meta, coded, start), keys[:, :width]  # (c, W) each
        way_of, todo = np.full(c, KEPT, dtype=np.uint8), np.arange(c)
        for way in (RAW, *range(len(channels) - 1, -1, -1)):  # the heads of codes alone tell the channel row
            same = same_bits(whole_heads(x[todo, :split], way, channels, key_dim), held[todo, :split])
            way_of[todo[same]], todo = way, todo[~same]  # (newest row first: most entries came through it)
            if not len(todo):
                break
        for way in np.unique(way_of[way_of != KEPT]) if part else ():  # the mixed head: which scale remakes it
            left = np.flatnonzero(way_of == way)
            guesses = [np.ones(c, np.float32)] if way == RAW else scale_guesses(
                x[:, split:], full[start:start + c, heads, :key_dim], channels[way, heads], part)
            for s in guesses:
                same = same_bits(mixed_head(x[left, split:], way, channels[:, heads], s[left]), held[left, split:])
                scale[start + left[same]], left = s[left[same]], left[~same]
                if not len(left):
                    break
            way_of[left] = KEPT
        how[start:start + c] = way_of
        held_all.append(held[way_of == KEPT])
    if (how == KEPT).all():
        return cache_state, None
    data = {**cache_state["data"], "cold": torch.from_numpy(rest)}
    return {**cache_state, "data": data}, {"format": FORMAT, "fields": list(coded.fields), "codes": coded.digest(),
                                           "how": torch.from_numpy(how), "scale": torch.from_numpy(scale),
                                           "kept": torch.from_numpy(np.concatenate(held_all))}  # (m, W)


def coded_columns(meta: list[np.ndarray], coded: CodedKeys, start: int) -> np.ndarray:
    """The codes of the cold entries [start, start + CHUNK): their keys' first W columns (c, W)."""
    return np.concatenate([coded.block(col[start:start + CHUNK]) for col in meta], axis=1)


def cache_codes(model) -> CodedKeys | None:
    """A MemNet's key blocks that are token codes named by store metadata (token, prev), with key_source=token; the
    codes on the CPU, as the store's (the memory is numpy: a CUDA model's codes failed every checkpoint save)."""
    m = model.cfg.memory
    if m.key_source != "token":
        return None
    return CodedKeys(model.token_codes.detach().float().cpu().contiguous(), ("token", "prev")[:m.key_inputs])


def whole_cache_state(model, d: dict):
    """The cache state of a MemNet memory state `d` (keys lanes, store, cache, and cache_codes where compact), whole."""
    if "cache_codes" not in d:  # saved whole (hidden addresses, bfloat16 autocast, a checkpoint from before)
        return d["cache"]
    if cache_codes(model) is None:
        raise ValueError(f"{WHERE}: its cache was saved without its token-code keys, but this model's "
                         "memory.key_source is not token; load it with the run's config")
    m = model.cfg.memory
    return expand_cache_state(d["cache"], d["cache_codes"], d["store"], model.token_codes, m.attn_heads,
                              m.key_blocks * m.head_dim, m.head_dim)


def expand_cache_state(cache_state, saved: dict, store_state, codes: torch.Tensor, heads: int, key_dim: int,
                       head_dim: int) -> dict:
    """The whole cache state of one `compact_cache_state` made (`saved`: its record of what was left out): each cold
    entry's coded columns remade from the saved store's metadata of its id, this model's `codes` and the saved channel
    rows. Checked (a one-line ValueError; the cache checks the rest of its state itself)."""
    fields = saved.get("fields") if isinstance(saved, dict) else None
    if not (isinstance(saved, dict) and saved.get("format") == FORMAT and isinstance(fields, (list, tuple))
            and fields and all(f in ("token", "prev") for f in fields)):
        raise ValueError(f"{WHERE}: its cache_codes is not a {FORMAT} record; the state is damaged")
    coded = CodedKeys(codes.detach().float().cpu().contiguous(), tuple(fields))
    if saved.get("codes") != coded.digest():
        raise ValueError(f"{WHERE}: the cache's key columns were saved under other token codes than this model's; load "
                         "the checkpoint's model weights (token_codes) before its memory, or re-run the experiment")
    try:
        ids, rest, channels = cold_ids(cache_state), cache_state["data"]["cold"], cache_state["data"]["channel"]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ValueError(f"{WHERE}: its cache state lacks the cold tier's ids or data; the state is damaged") from None
    n, width, how, scale, kept = len(ids), coded.width, *(saved.get(k) for k in ("how", "scale", "kept"))
    shape = (n, heads * (key_dim + head_dim) - width)
    if not isinstance(rest, torch.Tensor) or tuple(rest.shape) != shape or rest.dtype != torch.float32:
        got = f"{tuple(rest.shape)} {rest.dtype}" if isinstance(rest, torch.Tensor) else type(rest).__name__
        raise ValueError(f"{WHERE}: the cache's cold data is {got}, expected {shape} torch.float32 (keys saved "
                         "without their coded columns); the state is damaged")
    rows = len(channels) if isinstance(channels, torch.Tensor) and channels.dim() == 3 else 0
    if not (isinstance(how, torch.Tensor) and how.dtype == torch.uint8 and tuple(how.shape) == (n,)
            and bool(((how < rows) | (how == RAW) | (how == KEPT)).all())
            and isinstance(scale, torch.Tensor) and scale.dtype == torch.float32 and tuple(scale.shape) == (n,)
            and bool((scale.isfinite() & (scale > 0)).all()) and isinstance(kept, torch.Tensor)
            and kept.dtype == torch.float32 and tuple(kept.shape) == (int((how == KEPT).sum()), width)):
        raise ValueError(f"{WHERE}: its cache_codes record does not fit the cache's {n} cold entries and {rows} "
                         "channel rows; the state is damaged")
    meta, rest, how, scale = saved_meta(store_state, ids, coded), rest.numpy(), how.numpy(), scale.numpy()
    channels = channels.numpy() if rows else None
    full = np.empty((n, heads, key_dim + head_dim), dtype=np.float32)  # (n, H, dk + d)
    key_width, kept, at_kept = heads * key_dim, kept.numpy(), np.cumsum(how == KEPT) - 1  # (n,): row in kept
    for start in range(0, n, CHUNK):  # chunk by chunk: no (n, H dk) copy of the keys beside the cold tier's
        x, ways = coded_columns(meta, coded, start), how[start:start + CHUNK]  # (c, W), (c,)
        keys = np.empty((len(ways), key_width), dtype=np.float32)  # (c, H dk)
        keys[:, width:] = rest[start:start + CHUNK, :key_width - width]
        for way in np.unique(ways):
            at = np.flatnonzero(ways == way)
            keys[at, :width] = kept[at_kept[start + at]] if way == KEPT else remade(
                x[at], int(way), channels, key_dim, scale[start + at])
        full[start:start + len(ways), :, :key_dim] = keys.reshape(-1, heads, key_dim)
        full[start:start + len(ways), :, key_dim:] = rest[start:start + CHUNK, key_width - width:].reshape(
            -1, heads, head_dim)
    return {**cache_state, "data": {**cache_state["data"], "cold": torch.from_numpy(full)}}


def saved_meta(store_state, ids: np.ndarray, coded: CodedKeys) -> list[np.ndarray]:
    """ids (n,) -> the saved store's metadata of each coded field ((n,) each, within the codes' rows; prev -1), or a
    one-line ValueError where an id is not one of the store's live entries."""
    row_id, meta = (store_state.get(k) if isinstance(store_state, dict) else None for k in ("row_id", "meta"))
    if not (isinstance(row_id, torch.Tensor) and isinstance(meta, torch.Tensor) and meta.dim() == 2
            and row_id.dim() == 1 and meta.shape == (len(row_id), len(META_FIELDS))):
        raise ValueError(f"{WHERE}: the cache's coded key columns need the store's metadata, which its store state "
                         "lacks; the state is damaged")
    row_id, meta = row_id.numpy(), meta.numpy()
    order = np.argsort(row_id)
    at = np.minimum(np.searchsorted(row_id[order], ids), max(len(row_id) - 1, 0))
    if len(ids) and (not len(row_id) or (row_id[order][at] != ids).any()):
        raise ValueError(f"{WHERE}: the cache's cold tier holds ids that are not the saved store's entries, so their "
                         "coded key columns cannot be written back; the state is damaged")
    rows = order[at]
    out = []
    for field in coded.fields:
        col = meta[rows, META_FIELDS.index(field)]
        low = -1 if field == "prev" else 0
        if len(col) and not (low <= col.min() and col.max() < len(coded.codes)):
            raise ValueError(f"{WHERE}: the saved store's {field} ids of the cache's entries lie outside the "
                             f"{len(coded.codes)} token codes; the state is damaged")
        out.append(col)
    return out
