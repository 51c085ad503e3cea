"""Memory edges one-line mutations got past: swap counted in bytes,
the coded-key width bound, compact cache codes with a single key input."""

import os

import pytest
import torch

from agents.memnet_cache_codes import cache_codes
from memory import ram
from memory.store import CodedKeys, FaissStore
from tests.test_memnet_cache_codes import WARM, filled, loaded, reads
from tests.test_resume import assert_same


class _FakePath:
    def __init__(self, *_):
        pass

    def read_text(self):
        return "MemTotal:       1000 kB\nSwapTotal:       2048 kB\nSwapFree:  0 kB\n"


def test_swap_is_counted_in_bytes(monkeypatch):
    monkeypatch.setattr(ram, "Path", _FakePath)
    ram_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert ram.machine_bytes() == ram_bytes + 2048 * 1024


def test_no_meminfo_is_the_memory_alone(monkeypatch):
    class Missing(_FakePath):
        def read_text(self):
            raise FileNotFoundError("/proc/meminfo")

    monkeypatch.setattr(ram, "Path", Missing)
    assert ram.machine_bytes() == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


V, DC, CAP = 20, 8, 64


def test_a_key_one_column_short_of_its_codes_is_refused_and_one_exactly_as_wide_is_not():
    coded = CodedKeys(torch.zeros(V, DC), ("token", "prev"))
    with pytest.raises(ValueError, match=r"at most dim=15 coded columns; .*, 16 columns"):
        FaissStore(2 * DC - 1, 4, CAP, metric="ip", coded=coded)
    assert FaissStore(2 * DC, 4, CAP, metric="ip", coded=coded).coded is not None


def test_a_key_of_one_token_code_is_saved_without_it_and_loads_bit_for_bit():
    model = filled({**WARM, "key_lags": "0:0"})
    assert model.cfg.memory.key_inputs == 1 and cache_codes(model).fields == ("token",)
    saved, whole = model.memory_state_dict(), model.memory_state_dict(compact=False)
    H, dk, d = model.cache.heads, model.cache.key_dim, model.cache.head_dim
    n = model.cache.stats()["cold"]
    assert n > 0 and "cache_codes" in saved and saved["cache_codes"]["fields"] == ["token"]
    assert saved["cache"]["data"]["cold"].shape == (n, H * (dk + d) - model.cfg.dim)  # one code block left out
    other = loaded(model, saved)
    assert_same(whole, other.memory_state_dict(compact=False), "memory")
    for a, b in zip(reads(model), reads(other), strict=True):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
