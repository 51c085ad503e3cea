"""Mutation-testing kills (round 6) for the tiered K/V cache and its helpers: argument checks, what a put refuses
and accepts, persistence checks, the cold-tier file's disk reservation,
the transformer's max_len and fusion's sources."""

import errno
import os
import shutil

import numpy as np
import pytest
import torch

from memory.augmented import MemoryAugmentedTransformer
from memory.cache import TieredKVCache
from memory.cache_cold_dirs import ColdTierError
from memory.config import MemoryConfig
from memory.fusion import Fusion
from tests.test_mutants_memory import _kv


def test_a_bool_capacity_is_refused():
    """hot=True is an int to isinstance, but a capacity of True is a slip: refused by name."""
    with pytest.raises(ValueError, match="hot=True"):
        TieredKVCache(1, 2, hot=True, warm=0, cold=0)


def test_keys_beyond_the_int8_limit_are_kept_exactly_without_a_warm_tier():
    """The int8 key limit applies only where a warm tier quantises: a hot-only cache keeps a 1e30 key exactly."""
    cache = TieredKVCache(1, 2, hot=2, warm=0, cold=0)
    keys = np.full((1, 1, 2), 1e30, np.float32)
    cache.put([0], keys, np.ones((1, 1, 2), np.float32))
    np.testing.assert_array_equal(cache.get_batch([0])[0].numpy(), keys)


def test_put_refuses_the_missing_id_minus_one():
    """-1 marks a missing id in get_batch, so put refuses it (it would read back as absent)."""
    cache = TieredKVCache(1, 2, hot=2, warm=0, cold=0)
    with pytest.raises(ValueError, match=">= 0"):
        cache.put([-1], *_kv(1))
    assert len(cache) == 0


def test_nbytes_counts_the_id_map_of_every_entry():
    """nbytes holds the id map: an int64 id, an int64 slot and an int8 tier per cached entry (17 bytes)."""
    cache = TieredKVCache(1, 2, hot=10, warm=0, cold=0)
    empty = cache.nbytes
    cache.put(np.arange(10), *_kv(10))
    assert cache.nbytes - empty == 10 * (8 + 8 + 1)


def _refused(edit, match: str, **sizes) -> None:
    """A cache of `sizes` holding ids 0 and 1, its saved state edited by `edit(state)`: refused at load."""
    cache = TieredKVCache(1, 2, **sizes)
    cache.put([0, 1], *_kv(2))
    state = cache.state_dict()
    edit(state)
    with pytest.raises(ValueError, match=match):
        TieredKVCache(1, 2, **sizes).load_state_dict(state)


def test_a_saved_warm_slot_pointing_one_past_the_channel_rows_is_refused():
    """warm_cal indexes the key channel rows: a held slot pointing at row len(rows) is damage, refused at load."""
    def past_the_rows(state):
        slot = int(np.flatnonzero(state["books"][1]["ids"].numpy() >= 0)[0])  # id 0, gone warm
        state["data"]["warm_cal"][slot] = len(state["data"]["channel"])

    _refused(past_the_rows, "warm_cal points past", hot=1, warm=2, cold=0)


def test_a_saved_id_map_with_a_slot_before_the_tier_is_refused_in_one_line():
    """A negative slot in the saved map is damage: one ValueError, not an IndexError from inside the check."""
    _refused(lambda state: state["slot"].__setitem__(0, -3), "id map does not match", hot=2, warm=0, cold=0)


def test_a_saved_state_with_more_channel_rows_than_a_uint8_reaches_is_refused():
    """A warm slot's calibration row is a uint8: a state with 257 channel rows is damaged."""
    _refused(lambda state: state["data"].__setitem__("channel", torch.ones(257, 1, 2)), "257 channel rows",
             hot=1, warm=2, cold=0)


def test_an_unquantised_warm_tier_state_holding_nan_is_refused():
    """With quantize=False the warm tier holds float32 K/V, checked finite at load like hot and cold."""
    _refused(lambda state: state["data"]["warm_k"].fill_(float("nan")), "warm_k holds NaN",
             hot=1, warm=2, cold=0, quantize=False)


def _refuse_fallocate(monkeypatch, code: int) -> None:
    def refuse(fd, offset, size):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", refuse)


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate: the file is sparse")
@pytest.mark.parametrize("code", [errno.EDQUOT, errno.EFBIG])
def test_a_disk_quota_refusing_the_cold_tier_is_one_line(tmp_path, monkeypatch, code):
    """EDQUOT (a quota) is a full disk for this user, EFBIG a file larger than this file system holds: the tier is
    refused, not left sparse to die of SIGBUS later."""
    _refuse_fallocate(monkeypatch, code)
    with pytest.raises(ColdTierError, match="cold tier file cannot be made"):
        TieredKVCache(1, 2, hot=1, warm=0, cold=64, path=tmp_path)


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate: the file is sparse")
def test_a_disk_filled_during_the_reservation_reports_the_free_space(tmp_path, monkeypatch):
    """When the disk filled between the check and the reservation, the error says how much is free now."""
    real = shutil.disk_usage(tmp_path)
    calls = []

    def usage(path):
        calls.append(path)
        return real if len(calls) == 1 else real._replace(free=16)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    _refuse_fallocate(monkeypatch, errno.ENOSPC)
    with pytest.raises(ColdTierError, match=r"needs 512 B on disk in .* which has 16 B free"):
        TieredKVCache(1, 2, hot=1, warm=0, cold=32, path=tmp_path)


def test_a_sequence_one_past_max_len_is_refused_by_name():
    """max_len positions are learned: T = max_len + 1 is refused in one line naming max_len."""
    cfg = MemoryConfig(dim=8, attn_heads=2)
    model = MemoryAugmentedTransformer(cfg, vocab=5, n_layers=1, max_len=4)
    model(torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="exceeds max_len=4"):
        model(torch.zeros(1, 5, dtype=torch.int64))


def test_fusion_of_no_sources_is_refused():
    """Fusion needs at least one memory read to fuse: num_sources=0 is refused by name."""
    with pytest.raises(ValueError, match="num_sources=0"):
        Fusion(MemoryConfig(dim=8, attn_heads=2, fusion="concat"), 0)
