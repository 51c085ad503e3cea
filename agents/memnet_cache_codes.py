"""The cache's key columns that are token codes, left out of MemNet's saved memory state and written back at a load.

With memory.key_source=token a cached key is the store entry's key input s = [code(token) ; code(prev) ; ...]
cut per head ((H, dk), `_write_store`), so the heads whose dk columns lie within the first F blocks (F = the
coded fields, token and prev; ContinualShift: heads 0 and 1 of 4, 192 of each key's 384 columns) hold rows of
`token_codes` that the entry's store metadata names (zeros where prev is -1, a lane's stream start), as the store's
own coded keys do (`CodedKeys`, memory/store_io.py). Every entry reaches the cold tier through the int8 warm tier
(memory/cache_moves.py), so the cold tier holds those codes quantised and read back: `dequantize(quantize(codes,
channel))`, with the warm tier's channel row of the time (the per-entry scale of a head made of codes alone is the
codes' absmax). `compact_cache_state` leaves those heads' keys out of the saved cold tier ((n, H, dk + d), its
occupied rows) and records per entry how to remake them (the codes as they are, or quantised with channel row r of
the saved state), checked bit for bit; an entry no way remakes (a channel row dropped when the warm tier emptied,
a rounded code) keeps its columns in the record ("kept"), and where none can be remade (hidden addresses) or a
cold entry is not live in the store, the state stays whole. `expand_cache_state` remakes them from the saved
store's metadata and the model's codes, checked.
A head that mixes codes and context (ContinualShift's head 2) stays: its int8 scale depends on the context
columns, saved only as read back. The hot tier (1,024 entries, ~0.8 MB of codes) is saved whole: its free slots
keep stale data that a resumed run must save again bit for bit. The warm tier (int8) stays as it is.

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
RAW = 255  # `how` of an entry whose coded heads hold the codes as they are (no int8 tier on its way); else a row
KEPT = 254  # `how` of an entry no way remakes (its channel row dropped when the warm tier emptied): saved in "kept"


def cold_ids(cache_state: dict) -> np.ndarray:
    """The ids of a saved cache's cold entries, in the order its cold data holds them (`TierStorage.state`)."""
    ids = cache_state["books"][COLD]["ids"].numpy()
    return ids[ids >= 0]


def remade(codes: np.ndarray, how: int, channels: np.ndarray) -> np.ndarray:
    """codes (c, Hc, dk) -> what a cold entry holds of them: as they are (RAW) or through the int8 warm tier with
    channel row `how` (channels (R, H, dk)): the cache's own quantize and dequantize, so the same bits."""
    if how == RAW:
        return codes
    channel = channels[how, :codes.shape[1]]  # (Hc, dk)
    return dequantize(*quantize(codes, channel), channel)


def coded_heads(meta: list[np.ndarray], coded: CodedKeys, key_dim: int, start: int) -> np.ndarray:
    """The codes the coded heads were made of, for the cold entries [start, start + CHUNK): (c, Hc, dk)."""
    heads = coded.width // key_dim
    blocks = np.concatenate([coded.block(col[start:start + CHUNK]) for col in meta], axis=1)  # (c, F D)
    return blocks[:, :heads * key_dim].reshape(len(blocks), heads, key_dim)


def compact_cache_state(cache_state: dict, store, coded: CodedKeys, key_dim: int) -> tuple[dict, dict | None]:
    """A cache's `state_dict()` without the keys of its cold entries' coded heads, and what a load needs to remake
    them ({format, fields, codes: digest, heads, how (n,) uint8, kept (m, Hc, dk): the entries no way remakes bit for
    bit}); (cache_state, None) unchanged where a cold entry is not live in `store` or none can be remade."""
    full, heads = cache_state["data"]["cold"].numpy(), coded.width // key_dim  # (n, H, dk + d), Hc
    ids, channels = cold_ids(cache_state), cache_state["data"]["channel"].numpy()
    if not len(ids) or not heads or channels.ndim != 3 or (store.meta_of(ids, "token") < 0).any():
        return cache_state, None  # nothing to leave out, or entries the store no longer holds (a live token >= 0)
    meta = [store.meta_of(ids, field) for field in coded.fields]  # (n,) each
    how = np.full(len(ids), -1, dtype=np.int16)  # (n,) -1: not remade yet
    for start in range(0, len(ids), CHUNK):
        x, held = coded_heads(meta, coded, key_dim, start), full[start:start + CHUNK, :heads, :key_dim]
        todo = np.arange(len(x))
        for way in (RAW, *range(len(channels) - 1, -1, -1)):  # newest row first: most entries came through it
            same = (remade(x[todo], way, channels).view(np.uint32) == held[todo].view(np.uint32)).all(axis=(1, 2))
            how[start + todo[same]] = way
            todo = todo[~same]
            if not len(todo):
                break
        how[start + todo] = KEPT
    kept = how == KEPT
    if kept.all():
        return cache_state, None
    n = len(full)  # the rest: the coded heads' values, then the other heads whole
    rest = np.concatenate((full[:, :heads, key_dim:].reshape(n, -1), full[:, heads:].reshape(n, -1)), axis=1)
    data = {**cache_state["data"], "cold": torch.from_numpy(rest)}
    return {**cache_state, "data": data}, {"format": FORMAT, "fields": list(coded.fields), "codes": coded.digest(),
                                           "heads": heads, "how": torch.from_numpy(how.astype(np.uint8)),
                                           "kept": torch.from_numpy(full[kept, :heads, :key_dim])}  # (m, Hc, dk)


def cache_codes(model) -> CodedKeys | None:
    """A MemNet's key blocks that are token codes named by store metadata (token, prev), with key_source=token."""
    m = model.cfg.memory
    return CodedKeys(model.token_codes, ("token", "prev")[:m.key_inputs]) if m.key_source == "token" else None


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
    entry's coded heads remade from the saved store's metadata of its id, this model's `codes` and the saved channel
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
    n, hc, how = len(ids), coded.width // key_dim, saved.get("how")
    shape = (n, heads * (key_dim + head_dim) - hc * key_dim)
    if not isinstance(rest, torch.Tensor) or tuple(rest.shape) != shape or rest.dtype != torch.float32:
        got = f"{tuple(rest.shape)} {rest.dtype}" if isinstance(rest, torch.Tensor) else type(rest).__name__
        raise ValueError(f"{WHERE}: the cache's cold data is {got}, expected {shape} torch.float32 (keys saved "
                         "without their coded heads); the state is damaged")
    rows, kept = len(channels) if isinstance(channels, torch.Tensor) and channels.dim() == 3 else 0, saved.get("kept")
    if not (saved.get("heads") == hc and isinstance(how, torch.Tensor) and how.dtype == torch.uint8
            and tuple(how.shape) == (n,) and bool(((how < rows) | (how == RAW) | (how == KEPT)).all())
            and isinstance(kept, torch.Tensor) and kept.dtype == torch.float32
            and tuple(kept.shape) == (int((how == KEPT).sum()), hc, key_dim)):
        raise ValueError(f"{WHERE}: its cache_codes record does not fit the cache's {n} cold entries and {rows} "
                         "channel rows; the state is damaged")
    meta, rest, how = saved_meta(store_state, ids, coded), rest.numpy(), how.numpy()
    full = np.empty((n, heads, key_dim + head_dim), dtype=np.float32)  # (n, H, dk + d)
    full[how == KEPT, :hc, :key_dim] = kept.numpy()
    channels = channels.numpy() if rows else None
    full[:, :hc, key_dim:] = rest[:, :hc * head_dim].reshape(n, hc, head_dim)
    full[:, hc:] = rest[:, hc * head_dim:].reshape(n, heads - hc, key_dim + head_dim)
    for start in range(0, n, CHUNK):
        x, ways = coded_heads(meta, coded, key_dim, start), how[start:start + CHUNK]  # (c, Hc, dk), (c,)
        for way in np.unique(ways[ways != KEPT]):
            at = np.flatnonzero(ways == way)
            full[start + at, :hc, :key_dim] = remade(x[at], int(way), channels)
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
