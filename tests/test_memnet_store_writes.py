"""MemNet's store writes and replacement (memory.store_replace): a write refused for its meta or its size removes no
memory first; an unknown predecessor (prev -1) replaces nothing; store_replace=1 replaces identical contexts."""

import numpy as np
import pytest
import torch

from agents.memnet import MemNet
from agents.models import ModelConfig
from memory.config import MemoryConfig

V, D = 31, 16


def memnet(window=4, dim=D, **mem) -> MemNet:
    base = dict(dim=dim, slots=0, attn_heads=2, store_capacity=256, store_top_k=4, store_metric="ip", copy=0.7)
    base.update(mem)
    torch.manual_seed(0)
    return MemNet(ModelConfig(vocab_size=V, dim=dim, layers=1, heads=2, window=window,
                              memory=MemoryConfig(**base))).eval()


@pytest.mark.parametrize("bad_meta", [
    {"episode": torch.zeros(1, 5, dtype=torch.long)},  # wrong shape
    {"episode": torch.full((1, 4), 0.5)},  # not integers
])
def test_a_call_refused_for_its_meta_leaves_the_store_and_cache_as_they_were(bad_meta):
    """A forward refused over `meta` must not have changed the memory: with memory.store_replace the replaced
    entries were removed from store and cache before the meta was checked, so the refused call lost them."""
    model = memnet(key_source="token", store_replace=0.5)
    every = torch.ones(1, 4, dtype=torch.bool)
    tokens = torch.tensor([[5, 7, 2, 3]])
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(1), every)
        before = len(model.store)
        cached = len(model.cache)
        with pytest.raises((ValueError, TypeError)):
            model(tokens, state, every, bad_meta)
    assert len(model.store) == before == 4
    assert len(model.cache) == cached == 4


def test_with_a_one_token_window_replacement_never_removes_a_memory_of_another_predecessor():
    """model.window=1 (train.chunk=1): every memory records prev -1 (its call's first position), and replacement
    looked up the lane's entries with prev -1 (all of them), so a write removed memories that followed *other*
    tokens whenever their contexts had cosine >= memory.store_replace (hidden addresses: most). A stream of
    distinct tokens repeats no predecessor: replacement must remove nothing."""
    model = memnet(window=1, key_source="hidden", store_replace=0.5)
    state = model.initial_state(1)
    tokens = torch.randperm(V - 1, generator=torch.Generator().manual_seed(1))[:24] + 1  # distinct, no BOS
    with torch.no_grad():
        for t in tokens.tolist():
            _, state, _ = model(torch.tensor([[t]]), state, torch.ones(1, 1, dtype=torch.bool))
    assert len(model.store) == len(tokens)
    ids = np.arange(64)
    held = model.store.meta_of(ids, "token")
    assert sorted(held[held >= 0].tolist()) == sorted(tokens.tolist())


def test_store_replace_1_replaces_a_memory_whose_context_is_identical():
    """memory.store_replace=1.0 (in the allowed [0, 1]) replaces memories whose context has cosine >= 1: with token
    codes and key_lags 1:0 the context is the code of the predecessor, identical for every memory after the same
    token, so the newer successor must always replace the older one. The float32 cosine of a code with itself
    came out 0.99999994 for some tokens (1.0 for others): those memories were never replaced."""
    model = memnet(window=4, key_source="token", store_replace=1.0, attn_heads=4, dim=128)
    state = model.initial_state(1)
    every = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        for p in range(3, V):
            _, state, _ = model(torch.tensor([[p, 1]]), state, every)  # "1 after p"
            _, state, _ = model(torch.tensor([[p, 2]]), state, every)  # "2 after p" replaces it
    ids = np.arange(4 * V)
    prev, token = model.store.meta_of(ids, "prev"), model.store.meta_of(ids, "token")
    stale = sorted(set(prev[(token == 1) & (prev >= 3)].tolist()))
    assert stale == [], f"'1 after p' still stored for p in {stale}"


def test_a_write_the_store_refuses_for_its_size_removes_no_memory_first():
    """A chunk writing more memories into a lane than memory.store_capacity is refused by FaissStore.add ("split the
    call"); with memory.store_replace the replaced entries had already been removed by then: 2 of 3 memories lost."""
    model = memnet(key_source="token", store_replace=0.5, store_capacity=4, cache_hot=8, cache_warm=0, cache_cold=0)
    with torch.no_grad():
        _, state, _ = model(torch.tensor([[1, 2, 3]]), model.initial_state(1), torch.ones(1, 3, dtype=torch.bool))
        assert len(model.store) == len(model.cache) == 3
        with pytest.raises(ValueError, match="capacity"):
            model(torch.tensor([[1, 2, 3, 1, 2, 3]]), state, torch.ones(1, 6, dtype=torch.bool))
    assert len(model.store) == len(model.cache) == 3
