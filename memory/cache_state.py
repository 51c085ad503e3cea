"""Checks of TieredKVCache's saved id map, clock and counters (a helper of `memory/cache_io.py`, the cache's
persistence): everything a load takes is checked here before anything is loaded, so a refused state leaves the cache
exactly as it was."""

from __future__ import annotations

import functools

import numpy as np
import torch

from memory.saved_state import saved_count

COUNTERS = ("hits", "misses", "promotions", "demotions", "evictions")
WHERE = "TieredKVCache.load_state_dict"


count_value = functools.partial(saved_count, where=WHERE)  # (value, name) -> int, or the cache's one-line error


def checked_counters(counters) -> dict:
    """The saved counters (name -> int >= 0, exactly COUNTERS) as a new dict, or a one-line ValueError."""
    if not isinstance(counters, dict) or set(counters) != set(COUNTERS):
        got = sorted(counters) if isinstance(counters, dict) else repr(counters)
        raise ValueError(f"{WHERE}: counters is {got}, expected a dict of {', '.join(COUNTERS)} (damaged state)")
    return {name: count_value(counters[name], f"counters[{name!r}]") for name in COUNTERS}


def checked_map(d: dict, books: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The saved id map (ids, tier, slot), checked against the tiers' checked books: each tier's ids must be mapped
    to the slots that hold them. Returns new int64 ids, int8 tier, int64 slot arrays."""
    for name in ("ids", "tier", "slot"):
        if not isinstance(d[name], torch.Tensor) or d[name].is_floating_point() or d[name].is_complex():
            got = d[name].dtype if isinstance(d[name], torch.Tensor) else type(d[name]).__name__
            raise ValueError(f"{WHERE}: {name} is {got}, expected an integer tensor (damaged state)")
    ids, tier, slot = (d[n].numpy().astype(np.int64) for n in ("ids", "tier", "slot"))
    held = np.concatenate([b["ids"][b["ids"] >= 0] for b in books])
    fits = ids.shape == tier.shape == slot.shape == held.shape and bool((np.diff(ids) > 0).all())
    for t, b in enumerate(books):  # the map must point each of a tier's ids at the slot that holds it
        at = tier == t
        fits = fits and int(at.sum()) == int((b["ids"] >= 0).sum()) and bool(
            ((slot[at] >= 0) & (slot[at] < len(b["ids"]))).all()) and bool((b["ids"][slot[at]] == ids[at]).all())
    if not fits:
        raise ValueError(f"{WHERE}: the saved id map does not match its tiers; the state is damaged")
    return ids, tier.astype(np.int8), slot


def as_floats(x, name: str, dtype=np.float32) -> np.ndarray:
    """A tensor (any float dtype: numpy has no bfloat16, so convert in torch) or array-like -> float32 (or `dtype`)
    array; a one-line TypeError naming the argument for anything else (strings, ragged lists, None)."""
    try:
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float32 if dtype == np.float32 else torch.float64).numpy()
        arr = np.asarray(x)
        if arr.dtype == object:  # None (or a list holding one): astype made it NaN, a silent K/V of NaNs
            raise TypeError("not numbers")
        return arr.astype(dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"TieredKVCache.put: {name} must be a numeric array or tensor, got {type(x).__name__} "
                        f"({str(e).splitlines()[0]})") from None


def check_tier_values(got: dict, quantize: bool) -> dict:
    """`got` (`TierStorage.checked_state`'s arrays, their shapes and dtypes checked there) once its values are
    checked, or a one-line ValueError: K/V data finite (`put` refuses NaN / inf; a saved NaN was read back as it
    was), int8 scales and key channel scales finite and > 0 (quantize never makes others: a negative one flipped the
    signs of what it read), the calibration's running sum of squares finite and >= 0 (a negative one made NaN
    channel scales, and NaN reads of every key put after the load), and no calibration after more keys than seen."""
    data = ("hot_k", "hot_v", "cold", *(() if quantize else ("warm_k", "warm_v")))
    bad = next((name for name in data if not np.isfinite(got[name]).all()), None)
    if bad is not None:
        raise ValueError(f"{WHERE}: {bad} holds NaN or inf, which put() refuses (damaged state)")
    scales = ("warm_sk", "warm_sv", "channels") if quantize else ()
    bad = next((name for name in scales if not (np.isfinite(got[name]) & (got[name] > 0)).all()), None)
    if bad is not None:
        raise ValueError(f"{WHERE}: {bad} holds scales that are not finite and > 0 (damaged state)")
    if not (np.isfinite(got["key_sq"]) & (got["key_sq"] >= 0)).all():
        raise ValueError(f"{WHERE}: key_sq (a sum of squares) holds values that are not finite and >= 0 (damaged "
                         "state)")
    if len(got["channels"]) > 256:  # a slot's row is a uint8 (`warm_cal`); doubling makes <= 64 rows
        raise ValueError(f"{WHERE}: {len(got['channels'])} channel rows, more than a uint8 row index reaches (damaged "
                         "state)")
    if got["calibrated_at"] > got["key_seen"]:
        raise ValueError(f"{WHERE}: calibrated_at={got['calibrated_at']} is past key_seen={got['key_seen']} (damaged "
                         "state)")
    return got
