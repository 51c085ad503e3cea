"""TieredKVCache's int8 warm tier with keys its channel scales were not calibrated on: keys and values of large
magnitude come back finite, within the int8 error, with no overflow warning, and subnormal ones with their sign;
keys beyond the quantiser's limit are refused at put (one line); a channel silent at calibration does not flatten
the later keys that use it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from memory.cache import TieredKVCache
from memory.quant import KEY_LIMIT, dequantize, quantize

REL = 2.5 / 127  # int8: half a step of the per-entry absmax scale, with room for the channel scaling


def check_round_trip(got: torch.Tensor, want: np.ndarray) -> None:
    got = got.numpy()
    assert np.isfinite(got).all()
    top = np.abs(want).max(axis=-1, keepdims=True)
    assert (np.abs(got - want) <= REL * top).all()


@pytest.mark.parametrize("magnitude", [1e19, 1e22, 1e25])
def test_large_keys_round_trip_through_warm_tier(magnitude):
    cache = TieredKVCache(2, 4, hot=2, warm=4, cold=0)
    keys = torch.full((6, 2, 4), magnitude)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old code warned "invalid value encountered in multiply"
        cache.put(np.arange(6), keys, keys)
        assert (cache.tier_of(np.arange(6)) == 1).sum() == 4
        k, v, mask = cache.get_batch(np.arange(6))
    assert mask.all()
    check_round_trip(k, keys.numpy())
    check_round_trip(v, keys.numpy())


def test_large_keys_after_calibration_on_small_ones():
    rng = np.random.default_rng(0)
    cache = TieredKVCache(2, 8, hot=2, warm=8, cold=0)
    small = rng.normal(size=(4, 2, 8)).astype(np.float32)
    cache.put(np.arange(4), small, small)  # the first demotion calibrates the channels on these
    big = (rng.normal(size=(4, 2, 8)) * 1e19).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.put(np.arange(4, 8), big, big)
        cache.put(np.arange(8, 10), small[:2], small[:2])  # the big ones go warm
        assert (cache.tier_of(np.arange(4, 8)) == 1).all()
        k, v, _ = cache.get_batch(np.arange(4, 8))
    check_round_trip(k, big)
    check_round_trip(v, big)


def test_a_channel_silent_at_calibration_does_not_flatten_later_keys():
    """A channel that was 0 in every calibration key gets the floor 1e-3 x the mean channel RMS as its scale: a later
    key of 1e-3 there is ~1 after the division, and its other channels keep their int8 precision. Was untested: with
    a bare 1e-12 floor that 1e-3 became ~1e9, took the key's absmax scale, and every other channel rounded to 0."""
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(16, 2, 8)).astype(np.float32)
    calibration[..., 0] = 0.0  # channel 0 silent in every key the scales are calibrated on
    cache = TieredKVCache(2, 8, hot=0, warm=32, cold=0)  # warm only: the first put calibrates
    cache.put(np.arange(16), calibration, calibration)
    late = rng.normal(size=(1, 2, 8)).astype(np.float32)
    late[..., 0] = 1e-3
    cache.put(np.array([16]), late, late)  # 17 of 32 entries: no recalibration
    k, _, _ = cache.get_batch(np.array([16]))
    error = np.abs(k.numpy() - late)[..., 1:]  # (1, 2, 7) the channels that were not silent
    assert (error <= REL * np.abs(late[..., 1:]).max(axis=-1, keepdims=True)).all(), error


def test_values_near_float32_max_stay_finite():
    top = np.finfo(np.float32).max
    x = np.full((3, 2, 4), top, np.float32)
    x[1] *= -1
    x[2, :, 1:] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = dequantize(*quantize(x))
    assert np.isfinite(back).all()
    assert (np.abs(back - x) <= REL * np.abs(x).max(axis=-1, keepdims=True)).all()


def test_subnormal_values_keep_their_sign_through_the_warm_tier():
    """absmax / 127 below float32's normal range rounds to a coarse scale: a code then went past 127 and wrapped."""
    x = np.array([[[2e-43, -1e-43, 5e-44]]], np.float32)
    codes, scale = quantize(x)
    assert int(np.abs(codes.astype(np.int64)).max()) == 127
    cache = TieredKVCache(1, 3, hot=0, warm=1, cold=0)  # the warm tier only
    cache.put([0], np.ones((1, 1, 3), np.float32), x)
    _, values, found = cache.get_batch([0])
    assert bool(found[0]) and np.array_equal(np.sign(values.numpy()), np.sign(x))
    assert np.array_equal(values.numpy(), dequantize(codes, scale))


def test_keys_beyond_limit_are_refused_when_quantised():
    cache = TieredKVCache(2, 4, hot=2, warm=4, cold=0)
    with pytest.raises(ValueError, match="limit") as err:
        cache.put(np.arange(3), torch.full((3, 2, 4), KEY_LIMIT * 10), torch.ones(3, 2, 4))
    assert "\n" not in str(err.value) and "quantize=False" in str(err.value)
    assert len(cache) == 0
    exact = TieredKVCache(2, 4, hot=2, warm=4, cold=0, quantize=False)
    keys = torch.full((3, 2, 4), KEY_LIMIT * 10)
    exact.put(np.arange(3), keys, keys)
    assert torch.equal(exact.get_batch(np.arange(3))[0], keys)


def test_large_keys_survive_save_and_load(tmp_path):
    cache = TieredKVCache(2, 4, hot=2, warm=4, cold=2)
    keys = torch.full((8, 2, 4), 1e19)
    cache.put(np.arange(8), keys, keys)
    cache.save(tmp_path / "c.pt")
    back = TieredKVCache.load(tmp_path / "c.pt")
    k, _, mask = back.get_batch(np.arange(8))
    assert mask.all()
    check_round_trip(k, keys.numpy())
    back.close()
    cache.close()
