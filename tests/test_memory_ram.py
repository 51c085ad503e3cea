"""The store's and the cache's arrays, and a slot bank's state, are weighed against this machine's memory before
any is made (memory/ram.py): where the kernel overcommits, an allocation past the memory succeeded and the filled
arrays got the process killed without a word. (On an H200 machine's VM, 2026-12-04, a test worker running the
oversized-store check of agents.benchmark died: most likely so; that VM's overcommit setting was not read.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agents import run
from memory import ram
from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from memory.metrics import format_bytes
from memory.slots import MultiHeadMemoryBank
from memory.store import FaissStore
from memory.store_lookup import META_FIELDS
from tests.test_run import tiny

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_the_machine_s_memory_is_its_ram_and_swap():
    kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
          if ln.startswith(("MemTotal:", "SwapTotal:"))}
    assert ram.machine_bytes() == (kb["MemTotal"] + kb["SwapTotal"]) * 1024


def test_a_store_past_the_machine_is_refused_before_its_arrays_are_made(monkeypatch):
    monkeypatch.setattr(ram, "machine_bytes", lambda: MIB)  # a 1 MiB machine
    row = 4 * (64 + 16) + 8 * (len(META_FIELDS) + 5)  # keys, values; meta, id, gen, seq, stamp, importance
    rows = MIB // row + 1
    with pytest.raises(MemoryError) as caught:
        FaissStore(64, 16, capacity=rows)
    assert str(caught.value) == (f"Unable to allocate {format_bytes(rows * row)} for the store's {rows:,} rows: "
                                 "more than this machine's 1 MiB of memory and swap")
    store = FaissStore(64, 16, capacity=rows - 1)  # fits: made, and it works
    store.add(np.ones((1, 64), np.float32), np.ones((1, 16), np.float32), [0])
    assert len(store) == 1


def test_a_cache_past_the_machine_is_refused_before_its_tiers_are_made(monkeypatch, tmp_path):
    monkeypatch.setattr(ram, "machine_bytes", lambda: MIB)
    hot, warm = 2048, 2048  # 2 heads x (16 + 16) float32 a hot entry; int8 codes, 2 scales a head, a row warm
    need = hot * 2 * 32 * 4 + warm * (2 * 32 + 8 * 2 + 1)
    assert need <= MIB < need + hot * 2 * 32 * 4
    with pytest.raises(MemoryError, match=rf"^Unable to allocate {format_bytes(need + hot * 2 * 32 * 3)} for the "
                                          "cache's 4,096 hot and warm entries"):
        TieredKVCache(2, 16, hot=hot, warm=warm, cold=0, quantize=False)  # float32 warm entries: over
    TieredKVCache(2, 16, hot=hot, warm=warm, cold=0, quantize=True)  # int8 ones fit
    # the books of a cold tier live in memory (40 B per slot), checked after its disk's own line
    with pytest.raises(MemoryError, match=r"^Unable to allocate 3\.82 MiB for the books of the cache's 100,032 slots"):
        TieredKVCache(2, 16, hot=16, warm=16, cold=100_000, quantize=False, path=tmp_path)


def test_a_slot_bank_past_the_machine_is_refused_before_its_state_is_made(monkeypatch):
    """torch fills a new state at once: on an overcommitting kernel a bank of too many slots x lanes was killed."""
    monkeypatch.setattr(ram, "machine_bytes", lambda: MIB)
    bank = MultiHeadMemoryBank(MemoryConfig(dim=64, slots=1024, read_heads=2, top_k=4, bottleneck=8))
    need = 16 * 1024 * (66 * 4 + 1)  # memory (D floats), usage and age (floats), written (a bool) per slot and lane
    with pytest.raises(MemoryError) as caught:
        bank.initial_state(16)
    assert str(caught.value) == (f"Unable to allocate {format_bytes(need)} for the slot bank's 1,024 slots in 16 "
                                 "lanes: more than this machine's 1 MiB of memory and swap")
    state = bank.initial_state(2)  # fits
    assert state.memory.shape == (2, 1024, 64) and not state.written.any()


def test_a_run_whose_store_is_past_the_machine_is_one_line_and_leaves_no_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ram, "machine_bytes", lambda: 64 * MIB)  # where an overcommitting kernel killed the run
    run_dir = tmp_path / "run"
    assert run.main(tiny("ContinualShift-v0", "memnet", run_dir, "memory.store_capacity=1000000")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the run does not fit in memory (an allocation of ") and "GiB failed) with" in err
    assert "memory.store_capacity=1000000" in err and len(err.splitlines()) == 1 and not run_dir.exists()
