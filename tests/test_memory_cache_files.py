"""TieredKVCache's files: save and load round trips, damaged or mismatched files refused in one line, the cold tier's
file removed at close, and bad arguments."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from tests.test_memory_cache import H, d, kv

ROOT = Path(__file__).resolve().parents[1]


def test_save_load_round_trip(tmp_path):
    keys, values = kv(12)
    cache = TieredKVCache(H, d, hot=4, warm=4, cold=4, policy="lru")
    cache.put(np.arange(12), keys, values)
    cache.get_batch(np.array([5, 5, 1]))
    cache.save(tmp_path / "cache.pt")
    back = TieredKVCache.load(tmp_path / "cache.pt")
    np.testing.assert_array_equal(cache.tier_of(np.arange(12)), back.tier_of(np.arange(12)))
    for a, b in zip(cache.get_batch(np.arange(12)), back.get_batch(np.arange(12)), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert cache.stats() == back.stats()
    cache.close()
    back.close()


def test_damaged_and_mismatched_state_raise_clear_errors(tmp_path):
    cache = TieredKVCache(H, d, 2, 2, 2)
    cache.save(tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[:100])
    with pytest.raises(ValueError, match="damaged"):
        TieredKVCache.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        TieredKVCache.load(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="heads=3"):
        TieredKVCache(4, d, 2, 2, 2).load_state_dict(cache.state_dict())


def test_close_removes_cold_file_and_private_folder(tmp_path):
    cache = TieredKVCache(H, d, 1, 1, 4)
    cache.put(np.arange(6), *kv(6))
    file = cache.cold_file
    assert file.exists()
    cache.close()
    assert not file.exists() and not file.parent.exists()
    with pytest.raises(RuntimeError, match="closed"):
        cache.get_batch(np.arange(6))
    own = TieredKVCache(H, d, 1, 1, 4, path=tmp_path)
    assert own.cold_file.parent == tmp_path
    own.close()
    assert tmp_path.exists() and not own.cold_file.exists()


def test_a_view_of_the_cold_tier_held_past_close_still_reads(tmp_path):
    """close() leaves the unmapping to the mapping's last reference: a view a caller still holds reads what it held
    (unmapping at close made its next read a segfault; run in a child process so that would be a failed test)."""
    code = ("import sys, numpy as np\n"
            "from memory.cache import TieredKVCache\n"
            ""
            "cache = TieredKVCache(heads=1, head_dim=2, hot=1, warm=0, cold=4, path=sys.argv[1])\n"
            "keys, values = np.ones((3, 1, 2), np.float32), np.ones((3, 1, 2), np.float32)\n"
            "cache.put([0, 1, 2], keys, values)\n"
            "view = cache._store.cold[:4]\n"
            "before = view.copy()\n"
            "cache.close()\n"
            "assert np.array_equal(view, before) and before.any()\n"
            "print('read after close')\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "read after close"), done.stderr[-400:]
    assert not any(tmp_path.iterdir())  # the cold file is gone all the same


def test_bad_input_and_from_config():
    with pytest.raises(ValueError, match="policy='mru'"):
        TieredKVCache(H, d, 1, 1, 1, policy="mru")
    with pytest.raises(ValueError, match="total capacity"):
        TieredKVCache(H, d, 0, 0, 0)
    cache = TieredKVCache(H, d, 2, 0, 0)
    with pytest.raises(ValueError, match="must be"):
        cache.put(np.arange(2), np.zeros((2, H, d + 1)), np.zeros((2, H, d)))
    with pytest.raises(ValueError, match="unique"):
        cache.put(np.array([1, 1]), *kv(2))
    np.testing.assert_array_equal(cache.put(np.arange(3), *kv(3)), [0])  # over capacity: the oldest goes
    np.testing.assert_array_equal(cache.tier_of(np.arange(3)), [-1, 0, 0])
    with pytest.raises(TypeError, match="integers"):
        cache.get_batch(np.array([0.5]))
    cfg = MemoryConfig(dim=64, attn_heads=4, cache_hot=8, cache_warm=4, cache_cold=0, cache_policy="fifo")
    c = TieredKVCache.from_config(cfg, key_dim=64)  # e.g. keys made of 4 inputs: 4 x 16 per head
    assert (c.heads, c.head_dim, c.key_dim, c.capacities, c.policy) == (4, 16, 64, (8, 4, 0), "fifo")
    k, v, m = c.get_batch(torch.full((2, 5), -1))
    assert k.shape == (2, 5, 4, 64) and v.shape == (2, 5, 4, 16) and not m.any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_a_cache_file_whose_cold_data_has_another_dtype_is_refused(tmp_path, dtype):
    """A cache file's cold data of another dtype is refused, as every other tier array's: float64 data was cast into
    the float32 tier (1e300 became inf, which put() refuses and the finite check had passed), int64 data taken as is."""
    import copy

    from memory.cache import TieredKVCache
    from memory.persist import atomic_torch_save

    cache = TieredKVCache(2, 4, hot=2, warm=2, cold=4)
    cache.put(torch.arange(6), torch.randn(6, 2, 4), torch.randn(6, 2, 4))
    cache.save(tmp_path / "c.pt")
    body = torch.load(tmp_path / "c.pt", weights_only=True)
    assert body["data"]["cold"].shape[0] == 2  # two entries in the cold tier
    bad = copy.deepcopy(body)
    bad["data"]["cold"] = bad["data"]["cold"].to(dtype)
    if dtype == torch.float64:
        bad["data"]["cold"][0, 0, 0] = 1e300  # finite in float64, inf in the float32 tier
    atomic_torch_save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"TieredKVCache.load_state_dict: cold"):
        TieredKVCache.load(tmp_path / "bad.pt")
