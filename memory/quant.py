"""Int8 quantisation of attention keys and values for the warm tier of TieredKVCache.

Keys carry outlier channels (a few channels much larger than the rest for every token), so one scale per
token would spend the int8 range on those channels and flatten the others. Keys are therefore first divided
by a per-channel scale (the channel's RMS over the keys seen at calibration), then stored with an absmax
scale per entry and head; the per-entry factor guarantees that no key can overflow even if it is far
outside what the channel scales were calibrated on. Values have no channel structure worth the extra
step: absmax per entry and head ("per token").
"""

from __future__ import annotations

import numpy as np

LEVELS = 127.0  # symmetric int8: codes in [-127, 127]
# the largest key magnitude the warm tier quantises: a channel scale is at least channel_scale's floor of 1e-12
# (float32: 9.99e-13), so a key over its channel stays below 1.01e38, inside float32 (max 3.4e38), and so do its
# per-entry scale and its codes times that scale; TieredKVCache.put refuses larger keys when it quantises
KEY_LIMIT = 1e26


def _largest_scale() -> np.float32:
    """The largest float32 scale whose product with LEVELS is finite in float32."""
    s = np.float32(np.finfo(np.float32).max / LEVELS)
    with np.errstate(over="ignore"):
        while not np.isfinite(s * np.float32(LEVELS)):
            s = np.nextafter(s, np.float32(0))
        while np.isfinite(np.nextafter(s, np.float32(np.inf)) * np.float32(LEVELS)):
            s = np.nextafter(s, np.float32(np.inf))
    return s


SCALE_MAX = _largest_scale()


def channel_scale(sum_sq: np.ndarray, count: int) -> np.ndarray:
    """Per-channel key scale from running sums. sum_sq (H, d) float64 of k**2 over `count` keys -> (H, d) float32."""
    if count == 0:
        return np.ones(sum_sq.shape, dtype=np.float32)
    rms = np.sqrt(sum_sq / count)
    floor = 1e-3 * rms.mean() + 1e-12  # a channel that was ~0 during calibration must not blow up later
    return np.maximum(rms, floor).astype(np.float32)


def quantize(x: np.ndarray, channel: np.ndarray | None = None,
             scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (n, H, d) float32 -> codes (n, H, d) int8, scale (n, H) float32; channel (H, d) divides x first. A given
    scale (n, H) is used as it is: part of an entry's columns rounded as they were with the whole entry's scale
    (agents/memnet_cache_codes.py remakes a head's code columns so)."""
    z = x / channel if channel is not None else x.astype(np.float32)  # a new array: scaled in place below
    if scale is None:
        scale = np.abs(z).max(axis=-1) / LEVELS  # (n, H)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        over = scale > SCALE_MAX  # (n, H): absmax near float32's max, where 127 x its scale would round to inf
        if over.any():  # (rare) the largest safe scale keeps the codes at 127 and their products finite on read
            scale[over] = SCALE_MAX
    np.divide(z, scale[..., None], out=z)  # in place: this runs on every demotion into the warm tier
    np.rint(z, out=z)
    # a subnormal scale (absmax below ~1e-40) rounds coarsely: z reached ~143, which int8 wrapped to -113 (a sign flip)
    return np.clip(z, -LEVELS, LEVELS, out=z).astype(np.int8), scale


def dequantize(codes: np.ndarray, scale: np.ndarray, channel: np.ndarray | None = None) -> np.ndarray:
    """codes (n, H, d) int8, scale (n, H) -> (n, H, d) float32 (times channel (H, d) when given)."""
    x = codes.astype(np.float32)
    np.multiply(x, scale[..., None], out=x)  # in place: this runs on every warm-tier read
    if channel is not None:
        np.multiply(x, channel, out=x)
    return x
