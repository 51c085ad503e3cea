"""Mutation round 6 (MemNet agent): behaviours of agents/memnet*.py, controller, objectives and allocation that no
test checked before (each test names the behaviour it guards)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.allocation import allocation_failure, allocation_reason
from agents.memnet import MemNet
from agents.objectives import overflowing_weight
from memory.metrics import memory_bytes as bytes_of
from memory.store_lookup import META_FIELDS
from tests.test_memnet import V, model_cfg, no_writes


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def test_memory_bytes_count_the_state_the_store_and_the_cache():
    """memory_bytes is the state tensors + the store + the cache's RAM tiers (the cache too)."""
    model = MemNet(model_cfg()).eval()
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (2, 6)), model.initial_state(2), torch.ones(2, 6, dtype=torch.bool))
    assert model.cache.nbytes > 0
    assert model.memory_bytes(state) == bytes_of(state) + model.store.nbytes + model.cache.nbytes


def test_a_query_lag_beyond_every_key_lag_acts_as_the_chunk_forward():
    """key_lags "0:2": the query reads an address two steps back while keys read none, so the state carries the
    last max(a, b) - 1 = 2 addresses (not a - 1 = 0): acting token by token equals the chunk forward."""
    model = MemNet(model_cfg(key_lags="0:2")).eval()
    B, T = 2, 8
    with torch.no_grad():
        state = model.initial_state(B)
        assert state["window.recent"].shape == (B, 2, model.cfg.dim)
        _, state, _ = model(torch.randint(0, V, (B, T)), state, torch.ones(B, T, dtype=torch.bool))
        tokens = torch.randint(0, V, (B, T))
        chunk, _, _ = model(tokens, state, no_writes(tokens))
        stepped, s = [], state
        for t in range(T):
            logits, s, _ = model(tokens[:, t:t + 1], s, no_writes(tokens[:, t:t + 1]))
            stepped.append(logits)
    torch.testing.assert_close(torch.cat(stepped, 1), chunk, atol=3e-5, rtol=1e-4)


def test_a_chunk_that_reads_an_empty_slot_bank_reports_no_read_entropy():
    """A fresh bank's first chunk reads no slot: read_entropy is left out of the chunk's floats (not NaN, which
    would make an episode's mean NaN), while write_rate is still reported."""
    model = MemNet(model_cfg(store=False)).eval()
    tokens = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        _, state, aux = model(tokens, model.initial_state(2), no_writes(tokens))
    assert "read_entropy" not in aux["metrics"] and aux["metrics"]["write_rate"] == 0.0
    with torch.no_grad():
        _, state, _ = model(tokens, state, torch.ones(2, 6, dtype=torch.bool))
        _, _, aux = model(tokens, state, no_writes(tokens))
    assert aux["metrics"]["read_entropy"] >= 0.0  # once the bank holds something, it is reported


def test_loading_a_memory_state_of_another_lane_count_remakes_the_store_for_it():
    """A memory state of 3 lanes loaded into a model whose store serves 2 makes a 3-lane store and cache, which then
    read as the saved model's do."""
    cfg = model_cfg()
    saved = MemNet(cfg).eval()
    model = MemNet(cfg).eval()
    model.load_state_dict(saved.state_dict())
    with torch.no_grad():
        _, state, _ = saved(torch.randint(0, V, (3, 6)), saved.initial_state(3), torch.ones(3, 6, dtype=torch.bool))
        model(torch.randint(0, V, (2, 6)), model.initial_state(2), torch.ones(2, 6, dtype=torch.bool))
    model.load_memory_state_dict(saved.memory_state_dict())
    assert model.store.lanes == 3 and len(model.store) == len(saved.store) == 18
    tokens = torch.randint(0, V, (3, 5))
    with torch.no_grad():
        a, _, aux_a = saved(tokens, state, no_writes(tokens))
        b, _, aux_b = model(tokens, state, no_writes(tokens))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.equal(aux_a["metrics"]["store_ids"], aux_b["metrics"]["store_ids"])


def test_close_closes_the_cache_and_its_cold_tier():
    """MemNet.close() drops the store and cache and closes the cache (its cold-tier file goes), not only forgets it."""
    model = MemNet(model_cfg())
    with torch.no_grad():
        model(torch.randint(0, V, (2, 6)), model.initial_state(2), torch.ones(2, 6, dtype=torch.bool))
    cache = model.cache
    cache.state_dict()  # open
    model.close()
    assert model.store is None and model.cache is None
    with pytest.raises(RuntimeError, match="closed"):
        cache.state_dict()


def test_store_replace_compares_the_context_without_the_position_s_own_token():
    """key_lags "1:0" with token codes: a memory that followed the same token in the same context replaces the old one
    even where the token it holds differs (its own code, the key's first block, is left out of the comparison)."""
    model = MemNet(model_cfg(key_source="token", store_replace=0.99)).eval()
    everywhere = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        _, state, _ = model(torch.tensor([[1, 2, 3]]), model.initial_state(1), everywhere)
        model(torch.tensor([[4, 2, 5]]), state, everywhere)  # 5 after 2 replaces 3 after 2
    ids = torch.arange(4 * 6).numpy()
    tokens = sorted(t for t in model.store.meta_of(ids, "token").tolist() if t >= 0)
    assert tokens == [1, 2, 2, 4, 5]


def test_meta_of_another_shape_than_the_call_is_refused_by_name():
    """A meta column of another shape than the tokens is one ValueError naming the field and both shapes."""
    model = MemNet(model_cfg()).eval()
    tokens = torch.randint(0, V, (1, 6))
    shapes = r"expected shape \(1, 6\), got \(1, 5\)$"
    with torch.no_grad(), pytest.raises(ValueError, match=r"^meta\['episode'\]: " + shapes):
        model(tokens, model.initial_state(1), torch.ones(1, 6, dtype=torch.bool), {"episode": np.zeros((1, 5), int)})


@pytest.mark.parametrize("field, value, ok", [("token", V, False), ("token", V - 1, True), ("prev", V, False),
                                              ("prev", -1, True)])
def test_a_memory_state_s_token_and_prev_ids_must_lie_in_the_vocabulary(field, value, ok):
    """A saved store's token ids lie in [0, V) and prev ids in [-1, V) (-1: a lane's stream start); the first id past
    the vocabulary is refused at the load with one line naming the field."""
    saved = MemNet(model_cfg()).eval()
    with torch.no_grad():
        saved(torch.randint(0, V, (2, 6)), saved.initial_state(2), torch.ones(2, 6, dtype=torch.bool))
    d = saved.memory_state_dict()
    store = d["store"]
    store["meta"][store["row_id"] >= 0, META_FIELDS.index(field)] = value
    model = MemNet(model_cfg()).eval()
    if ok:
        model.load_memory_state_dict(d)
        assert len(model.store) == 12
    else:
        with pytest.raises(ValueError, match=rf"^memory state: the store's entries hold {field} ids outside "):
            model.load_memory_state_dict(d)


def test_a_one_token_window_with_token_codes_finds_what_a_chunk_written_memory_finds():
    """window=1: a call's first position does not know the token before it (its "prev" is -1), so the store does not
    score keys by their token codes (coded lookup): memories written one token at a time are found as the same
    memories written in one chunk are (same keys: token codes)."""
    cfg = model_cfg(window=1, key_source="token", store_metric="ip", slots=0, store_top_k=2)
    tokens = torch.randint(1, V, (2, 40))
    models = [MemNet(cfg).eval() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    states = []
    with torch.no_grad():
        state = models[0].initial_state(2)
        for t in range(40):
            _, state, _ = models[0](tokens[:, t:t + 1], state, torch.ones(2, 1, dtype=torch.bool))
        states.append(state)
        states.append(models[1](tokens, models[1].initial_state(2), torch.ones(2, 40, dtype=torch.bool))[1])
        query = torch.randint(1, V, (2, 6))
        ids = [m(query, s, no_writes(query))[2]["metrics"]["store_ids"].numpy() for m, s in zip(models, states,
                                                                                                strict=True)]
    assert (ids[0] >= 0).all()  # the found memories by their clock steps (ids count writes, in another order)
    found = [np.sort(m.store.meta_of(i, "step"), axis=-1) for m, i in zip(models, ids, strict=True)]
    np.testing.assert_array_equal(found[0], found[1])


def test_the_loudest_of_several_overflowing_loss_terms_is_blamed():
    """Two weighted terms past OVERFLOW_NEAR: the hint names the weight of the larger one (not the first listed)."""
    cfg = SimpleNamespace(memory=SimpleNamespace(util_weight=1e31, pressure_weight=1e38))
    terms = {"memory.util_weight": torch.tensor(2e31), "memory.pressure_weight": torch.tensor(float("-inf")),
             "train.entropy_coef": torch.tensor(0.5)}
    hint = overflowing_weight(terms, cfg)
    assert hint.startswith("the loss term weighted by memory.pressure_weight=1e+38 is -inf")
    assert overflowing_weight({"memory.util_weight": torch.tensor(float("nan"))}, cfg) is None  # NaN: divergence


@pytest.mark.parametrize("exc", [torch.cuda.OutOfMemoryError("HIP error: device exhausted"),
                                 RuntimeError("std::bad_alloc"), MemoryError()])
def test_allocation_failures_in_any_allocator_s_words_are_told_from_bugs(exc):
    """torch's OutOfMemoryError whatever its message, and FAISS's std::bad_alloc, are allocation failures; a
    RuntimeError in other words is a bug."""
    assert allocation_failure(exc)
    assert not allocation_failure(RuntimeError("index 3 is out of bounds"))


def test_numpy_s_size_with_a_trailing_point_reads_as_a_plain_number():
    """numpy writes a whole size as "8. EiB": the does-not-fit line says "8 EiB"."""
    assert allocation_reason(MemoryError("Unable to allocate 8. EiB for an array with shape (10,)")) == (
        "an allocation of 8 EiB failed")
