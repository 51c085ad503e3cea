"""MemNet's memory state (store + cache): a round trip through a weights-only load, refused states (another
config's, None) that leave the memory as it was, and copies that read the same memory and close on their own."""

import io

import numpy as np
import pytest
import torch

from agents.memnet import MemNet
from tests.test_memnet import V, model_cfg, no_writes
from tests.test_resume import assert_same
from tests.test_store_live_rows import every_row_state


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def test_memory_state_dict_round_trip_through_weights_only_load():
    cfg = model_cfg()
    model = MemNet(cfg).eval()
    B, T = 2, 10
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (B, T)), model.initial_state(B), torch.rand(B, T) < 0.8)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "memory": model.memory_state_dict(), "state": state}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    other = MemNet(cfg).eval()
    other.load_state_dict(saved["model"])
    other.load_memory_state_dict(saved["memory"])
    assert len(other.store) == len(model.store)
    tokens = torch.randint(0, V, (B, T))
    with torch.no_grad():
        a, _, aux_a = model(tokens, state, no_writes(tokens))
        b, _, aux_b = other(tokens, saved["state"], no_writes(tokens))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.equal(aux_a["metrics"]["store_ids"], aux_b["metrics"]["store_ids"])
    bigger = MemNet(model_cfg(store_capacity=128))
    with pytest.raises(ValueError, match="capacity"):
        bigger.load_memory_state_dict(saved["memory"])
    with pytest.raises(ValueError, match="memory.store=false"):
        MemNet(model_cfg(store=False)).load_memory_state_dict(saved["memory"])
    other.load_memory_state_dict({})
    assert other.store is None and other.memory_state_dict() == {}


def test_a_refused_memory_state_leaves_the_model_s_memory_as_it_was():
    """A state whose cache another config made was refused only after the store had been loaded: the store held the
    file's entries beside the old cache, and reads found nothing (store ids -1) without a word."""
    saved_model, model = MemNet(model_cfg(cache_hot=16)), MemNet(model_cfg())
    tokens = torch.randint(0, V, (2, 6))
    saved_model(tokens, saved_model.initial_state(2), torch.ones_like(tokens, dtype=torch.bool))
    state = model.initial_state(2)
    _, state, _ = model(tokens[:, :3], state, torch.ones(2, 3, dtype=torch.bool))
    before = (len(model.store), len(model.cache))
    with torch.no_grad():
        expected, _, _ = model(tokens, state)
    with pytest.raises(ValueError, match="TieredKVCache"):
        model.load_memory_state_dict(saved_model.memory_state_dict())
    assert (len(model.store), len(model.cache)) == before == (6, 6)
    with torch.no_grad():
        assert torch.equal(model(tokens, state)[0], expected)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_memnet_reads_the_same_memory_and_closes_without_touching_the_original(how):
    """A copy's close() (and load_memory_state_dict({}), which closes) was an AttributeError: its cold tier is an
    in-memory array after the copy, with no file mapping to close."""
    import copy
    import pickle

    model = MemNet(model_cfg())
    tokens = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(2), torch.ones(2, 12, dtype=torch.bool))
        twin = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
        query = torch.randint(0, V, (2, 5))
        expected = model(query, state)[0]
        torch.testing.assert_close(twin(query, state)[0], expected, rtol=0, atol=0)
        twin.close()
        assert twin.store is None
        twin.load_memory_state_dict({})  # (closes again: nothing left to close)
        torch.testing.assert_close(model(query, state)[0], expected, rtol=0, atol=0)  # the original's file intact


def test_loading_none_as_memory_state_is_refused_and_keeps_the_memory():
    """load_memory_state_dict(None) dropped the store and cache, as {} (the state of no memory) does."""
    model = MemNet(model_cfg())
    model(torch.randint(0, V, (2, 6)), model.initial_state(2), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^memory state: expected the dict memory_state_dict\(\) makes .*NoneType"):
        model.load_memory_state_dict(None)
    assert len(model.store) == 12


def test_reset_memory_drops_the_cleared_lanes_store_entries_from_the_cache_too():
    """The cleared lanes' K/V stayed in the cache (in its fp32 tier, pushing live entries to int8) until they aged
    out, though no search could return their ids again."""
    model = MemNet(model_cfg())
    tokens = torch.randint(0, V, (3, 8))
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(3), torch.ones(3, 8, dtype=torch.bool))
    ids = model.store.state_dict()["row_id"].numpy()
    ids = ids[ids >= 0]
    lanes = model.store.get(ids)[1]["lane"]
    assert len(model.store) == len(model.cache) == 24 and (model.cache.tier_of(ids) >= 0).sum() == 24
    model.reset_memory(state, torch.tensor([False, True, False]))
    assert model.store.size(1) == 0 and len(model.store) == 16
    np.testing.assert_array_equal(model.cache.tier_of(ids) >= 0, (lanes == 0) | (lanes == 2))
    model.reset_memory(state, torch.tensor([True, True, True]))
    assert len(model.store) == len(model.cache) == 0


@pytest.mark.parametrize("mem", [{}, {"key_source": "token", "store_metric": "ip", "context_decay": 0.9},
                                 {"key_source": "token", "store_metric": "ip", "store_replace": 0.5}])
def test_a_memory_state_now_and_of_a_checkpoint_from_before_loads_and_reads_the_same(mem):
    """The memory state holds the store's live entries (with token codes: without the coded key blocks), and
    checkpoints written before hold a FaissStore/3 state (every row, whole keys): each loads to the memory that was
    saved, and the model reads what the model that saved it reads. (mem: ContinualShift's token-coded keys;
    store_replace: LongDependency's, whose replaced entries leave emptied rows)"""
    model = MemNet(model_cfg(**mem)).eval()
    B, T = 2, 10
    state = model.initial_state(B)
    with torch.no_grad():
        for _ in range(2):  # tokens that repeat: replaced entries
            _, state, _ = model(torch.randint(0, 3, (B, T)), state, torch.rand(B, T) < 0.8)
    store, now = model.store, model.memory_state_dict()
    coded = store.coded.width if mem else 0
    if "store_replace" in mem:
        assert (store._count < store._fill).any()  # emptied rows among the used ones
    assert ("key_codes" in now["store"]) == bool(mem) and store.rows > len(store)
    assert now["store"]["keys"].shape == (len(store), store.dim - coded)
    old = {**now, "store": every_row_state(store)}
    assert old["store"]["keys"].shape == (store.rows, store.dim)
    tokens = torch.randint(0, V, (B, T))
    with torch.no_grad():
        a, _, aux_a = model(tokens, state, no_writes(tokens))
    for saved in (now, old):
        other = MemNet(model_cfg(**mem)).eval()
        other.load_state_dict(model.state_dict())
        other.load_memory_state_dict(saved)
        assert_same(now, other.memory_state_dict(), "memory")
        with torch.no_grad():
            b, _, aux_b = other(tokens, state, no_writes(tokens))
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert torch.equal(aux_a["metrics"]["store_ids"], aux_b["metrics"]["store_ids"])
