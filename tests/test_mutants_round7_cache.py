"""Mutation-testing kills (round 7) for the tiered K/V cache: which private cold folders a new cache leaves alone,
the cold file's reservation errors, zero entries in the int8 warm tier, and the
saved settings a load names when they differ."""

import errno
import os
import time

import numpy as np
import pytest

from memory.cache import TieredKVCache
from memory.cache_cold_dirs import COLD_DIR_PREFIX, LEGACY_GRACE_S, _owner_is_gone
from tests.test_mutants_memory import _kv
from tests.test_mutants_round6_cache import _refuse_fallocate


def _old_folder(tmp_path, name):
    folder = tmp_path / f"{COLD_DIR_PREFIX}{name}"
    folder.mkdir()
    old = time.time() - 2 * LEGACY_GRACE_S
    os.utime(folder, (old, old))
    return folder


@pytest.mark.skipif(os.name == "nt", reason="no flock")
def test_a_folder_whose_owner_lock_cannot_be_opened_is_kept(tmp_path):
    """An owner lock this process cannot open (another user's, or gone meanwhile) says nothing: the folder stays."""
    folder = _old_folder(tmp_path, "1-abc")
    (folder / "owner.lock").mkdir()  # os.open(O_RDWR) fails on it
    assert _owner_is_gone(folder) is False


def test_a_folder_named_with_a_pid_too_large_for_kill_is_kept(tmp_path):
    """A pid os.kill cannot take (OverflowError) proves nothing gone: the folder stays."""
    folder = _old_folder(tmp_path, f"{10 ** 30}-abc")
    assert _owner_is_gone(folder) is False


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate: the file is sparse")
def test_a_file_system_without_fallocate_keeps_a_sparse_cold_tier(tmp_path, monkeypatch):
    """EOPNOTSUPP (no fallocate there) is no refusal: the cache is made and its cold tier works."""
    _refuse_fallocate(monkeypatch, errno.EOPNOTSUPP)
    cache = TieredKVCache(1, 2, hot=1, warm=0, cold=4, path=tmp_path)
    keys, values = _kv(3)
    cache.put([0, 1, 2], keys, values)
    np.testing.assert_array_equal(cache.get_batch([0])[0].numpy(), keys[:1])
    cache.close()


def test_all_zero_entries_in_the_int8_warm_tier_save_and_load():
    """An all-zero key or value gets scale 1 (not 0, which a load refuses as damage) and reads back as zeros."""
    cache = TieredKVCache(1, 2, hot=1, warm=4, cold=0)
    zeros = np.zeros((3, 1, 2), np.float32)
    cache.put([0, 1, 2], zeros, zeros)
    back = TieredKVCache(1, 2, hot=1, warm=4, cold=0)
    back.load_state_dict(cache.state_dict())
    k, v, found = back.get_batch([0, 1, 2])
    assert found.all() and not k.any() and not v.any()


@pytest.mark.parametrize("setting, other", [("policy", {"policy": "fifo"}), ("hot", {"hot": 3}), ("warm", {"warm": 3}),
                                            ("cold", {"cold": 3}), ("head_dim", {"head_dim": 4}),
                                            ("key_dim", {"key_dim": 4})])
def test_a_state_saved_with_other_settings_names_the_setting(setting, other):
    """A load into a cache built otherwise is refused naming the setting that differs (with no check of it, lru
    into fifo would load silently)."""
    sizes = {"heads": 1, "head_dim": 2, "hot": 2, "warm": 2, "cold": 2, "policy": "lru"}
    cache = TieredKVCache(**sizes)
    cache.put([0, 1], *_kv(2))
    with pytest.raises(ValueError, match=f"saved state has {setting}="):
        TieredKVCache(**{**sizes, **other}).load_state_dict(cache.state_dict())


def test_a_state_without_its_clock_is_refused_in_one_line():
    """A saved state missing "clock" is damage, named in the load's ValueError (not a KeyError)."""
    cache = TieredKVCache(1, 2, hot=2, warm=0, cold=0)
    state = cache.state_dict()
    del state["clock"]
    with pytest.raises(ValueError, match="lacks clock"):
        TieredKVCache(1, 2, hot=2, warm=0, cold=0).load_state_dict(state)


def test_a_state_with_four_tier_books_is_refused_as_damaged():
    """The cache has three tiers: a state holding four books is damaged, refused in the load's own line."""
    cache = TieredKVCache(1, 2, hot=2, warm=0, cold=0)
    state = cache.state_dict()
    state["books"] = [*state["books"], state["books"][0]]
    with pytest.raises(ValueError, match="damaged or not a TieredKVCache"):
        TieredKVCache(1, 2, hot=2, warm=0, cold=0).load_state_dict(state)


def test_saved_counters_with_an_unknown_name_are_refused():
    """Counters are exactly hits, misses, promotions, demotions, evictions: an extra name is damage."""
    cache = TieredKVCache(1, 2, hot=2, warm=0, cold=0)
    state = cache.state_dict()
    state["counters"]["extra"] = 1
    with pytest.raises(ValueError, match="counters is"):
        TieredKVCache(1, 2, hot=2, warm=0, cold=0).load_state_dict(state)


def test_the_warm_tiers_key_scales_get_a_new_row_when_the_keys_seen_double():
    """_calibrate: one demotion at a time (hot=1), a new channel-scale row when the keys seen reach exactly twice
    those of the last row (2, 4, 8), so the rows stay log2(keys put) + 1."""
    cache = TieredKVCache(heads=1, head_dim=2, hot=1, warm=8, cold=0)
    keys, values = _kv(8)
    rows = []
    for i in range(8):
        cache.put([i], keys[i:i + 1], values[i:i + 1])
        rows.append((cache._store.calibrated_at, len(cache._store.channels)))
    assert rows == [(0, 1), (2, 1), (2, 1), (4, 2), (4, 2), (4, 2), (4, 2), (8, 3)]
