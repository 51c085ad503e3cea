"""Mutation-testing kills (round 8): MemoryAttention's folded memory inputs without queries_in_context, the
internal memories' identity-like start, the concat fusion's [h ; r_1 ; ... ; r_R] layout and the cache's
from_config settings."""

import numpy as np
import pytest
import torch

from memory.attention import MemoryAttention
from memory.augmented import MemoryAugmentedTransformer
from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from memory.fusion import Fusion
from memory.internal import build_internal_memory
from tests.test_memory_attention import CFG, B, M, T


def test_memory_inputs_without_queries_in_context_equal_the_projected_memories():
    """mem_inputs on its own (keys and values of [context ; x] projected as usual): the memories' inputs are folded
    into the query and give what their projections (project_kv) give."""
    torch.manual_seed(0)
    attn = MemoryAttention(CFG, key_in=48).eval()
    with torch.no_grad():
        attn.gate.bias.fill_(2.0)  # memory weighted well above the start's half
        x, ctx, keys_in = torch.randn(B, T, 32), torch.randn(B, 2, 32), torch.randn(B, 2 + T, 48)
        mem_in, mem_x = torch.randn(B, T, M, 48), torch.randn(B, T, M, 32)
        mem_mask = torch.tensor([True, False, True]).expand(B, T, M)
        folded, info = attn(x, mem_in, mem_x, mem_mask, context=ctx, key_input=keys_in, mem_inputs=True,
                            return_probs=True)
        ref, ref_info = attn(x, *attn.project_kv(mem_x, mem_in), mem_mask, context=ctx, key_input=keys_in,
                             return_probs=True)
    torch.testing.assert_close(folded, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(info["probs"], ref_info["probs"], atol=1e-6, rtol=1e-4)
    assert info["memory_share"].min() > 0.1


def test_float64_memory_inputs_are_refused_by_name():
    """mem_v of another dtype is refused naming mem_v, with memory inputs (folded, which would have cast it) too."""
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32)
    with pytest.raises(ValueError, match=r"^mem_v is torch.float64, the weights torch.float32"):
        attn(x, torch.randn(B, T, M, 32), torch.randn(B, T, M, 32, dtype=torch.float64), mem_inputs=True)


@pytest.mark.parametrize("kind", ["lm2", "linformer"])
def test_slots_past_dim_start_a_tenth_of_a_unit_from_their_repeated_row(kind):
    """Slot i >= dim is e_(i mod dim) plus 0.1 x a random unit-scale part: close to that row, yet distinct."""
    torch.manual_seed(0)
    mem = build_internal_memory(MemoryConfig(dim=32, internal=kind, internal_slots=40, attn_heads=4))
    slots = mem.initial_state(1)[0]
    gap = (slots[32:] / slots[32:].norm(dim=-1, keepdim=True) - torch.eye(32)[:8]).norm(dim=-1)  # (8,)
    assert gap.min() > 0.05 and gap.max() < 0.2, gap
    if kind == "lm2":  # the first dim slots are the identity rows exactly
        assert torch.equal(slots[:32], torch.eye(32))


def test_concat_fusion_reads_h_first_then_the_sources_in_order():
    """concat is h + W [h ; r_1 ; r_2]: W's first D columns read h, the next D r_1, the last D r_2."""
    D = 8
    h, reads = torch.randn(2, 3, D), torch.randn(2, 3, 2, D)
    fusion = Fusion(MemoryConfig(dim=D, attn_heads=2, fusion="concat"), num_sources=2)
    with torch.no_grad():
        fusion.proj.bias.zero_()
        for block, expected in ((0, h), (1, reads[:, :, 0]), (2, reads[:, :, 1])):
            fusion.proj.weight.zero_()
            fusion.proj.weight[:, block * D:(block + 1) * D] = torch.eye(D)
            torch.testing.assert_close(fusion(h, reads), h + expected)


def test_cache_from_config_takes_the_quantize_setting_and_the_cold_folder(tmp_path):
    """from_config passes memory.cache_quantize (false: the warm tier keeps keys exactly) and path (the cold file's
    folder)."""
    cfg = MemoryConfig(dim=16, attn_heads=2, cache_hot=1, cache_warm=2, cache_cold=2, cache_quantize=False)
    cache = TieredKVCache.from_config(cfg, path=tmp_path, promote_after=0)
    try:
        keys = np.random.default_rng(0).normal(size=(3, 2, 8)).astype(np.float32)
        cache.put(np.arange(3), keys, keys)
        assert cache.quantize is False and cache.tier_of(np.arange(3)).tolist() == [1, 1, 0]
        np.testing.assert_array_equal(cache.get_batch(np.arange(3))[0].numpy(), keys)  # warm ones exact
        assert cache.cold_file.parent == tmp_path and cache.cold_file.exists()
    finally:
        cache.close()


def test_negative_memory_ages_count_as_age_zero():
    """Ages below 0 count as 0 (documented): a memory at age -3 gets no recency bonus over one at age 0."""
    torch.manual_seed(0)
    attn = MemoryAttention(CFG).eval()
    x = torch.randn(B, T, 32)
    mem_k, mem_v = torch.randn(B, T, M, 4, 8), torch.randn(B, T, M, 4, 8)
    with torch.no_grad():
        at_zero, _ = attn(x, mem_k, mem_v, mem_age=torch.zeros(B, T, M))
        before, _ = attn(x, mem_k, mem_v, mem_age=torch.full((B, T, M), -3.0))
        older, _ = attn(x, mem_k, mem_v, mem_age=torch.full((B, T, M), 3.0))
    torch.testing.assert_close(before, at_zero)
    assert not torch.allclose(older, at_zero)


def test_memory_queries_are_the_first_memory_layers_input_and_retrieve_runs_once():
    """With memory in several layers, info["memory_queries"] is the first memory layer's input, and `retrieve` is
    called once, on it."""
    torch.manual_seed(0)
    model = MemoryAugmentedTransformer(CFG, vocab=7, n_layers=3, memory_layers=(1, 2)).eval()
    tokens = torch.randint(0, 7, (B, T))
    seen = []

    def retrieve(h):
        seen.append(h)
        return torch.zeros(B, T, M, 4, 8), torch.zeros(B, T, M, 4, 8), torch.ones(B, T, M, dtype=torch.bool)

    with torch.no_grad():
        _, info = model(tokens, retrieve=retrieve)
        first = model.layers[0](model.tok_emb(tokens) + model.pos_emb(torch.arange(T)))[0]
    assert len(seen) == 1
    torch.testing.assert_close(info["memory_queries"], first)
    assert info["memory_queries"] is seen[0]


def test_a_non_bool_memory_mask_or_float64_query_input_is_one_line():
    """A 0/1 integer mem_mask and a float64 query_input are refused by name (not inside a masked_fill or matmul)."""
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32)
    mem_k, mem_v = torch.randn(B, T, M, 4, 8), torch.randn(B, T, M, 4, 8)
    with pytest.raises(ValueError, match=r"mem_mask must be a \(2, 5, 3\) bool tensor, got \(2, 5, 3\) torch.int64"):
        attn(x, mem_k, mem_v, torch.ones(B, T, M, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"^query_input is torch.float64, the weights torch.float32"):
        attn(x, query_input=torch.randn(B, T, 32, dtype=torch.float64))


def test_initial_state_lanes_are_copies_of_the_initial_slots():
    """initial_state gives each lane its own copy: writing one lane in place changes neither another lane nor the
    learned initial slots."""
    mem = build_internal_memory(MemoryConfig(dim=16, internal="lm2", internal_slots=4, attn_heads=2))
    state = mem.initial_state(2)
    with torch.no_grad():
        state[0].zero_()
    assert torch.equal(state[1], torch.eye(16)[:4]) and torch.equal(mem.init_slots.detach(), torch.eye(16)[:4])


def test_hit_rate_is_zero_before_any_id_is_asked_for():
    """stats()["hit_rate"] is 0.0 while no real id has been asked for (fresh, or only -1 'missing' ids read)."""
    cache = TieredKVCache(1, 2, hot=2, warm=0, cold=0)
    assert cache.stats()["hit_rate"] == 0.0
    cache.get_batch(np.full(3, -1))
    assert (cache.stats()["hits"], cache.stats()["misses"], cache.stats()["hit_rate"]) == (0, 0, 0.0)


def test_dropout_also_mixes_the_values_of_a_context_answered_in_place():
    """queries_in_context mixes the context's inputs by the dropped-out weights, as the projected path mixes its
    values: the same dropout draw gives the same output either way (and not the eval output)."""
    torch.manual_seed(0)
    attn = MemoryAttention(CFG, dropout=0.5).train()
    x, ctx = torch.randn(B, T, 32), torch.randn(B, 3, 32)
    mask = torch.cat((torch.ones(T, 3, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()), 1)
    with torch.no_grad():
        torch.manual_seed(1)
        ref, _ = attn(x, context=ctx)
        torch.manual_seed(1)
        folded, _ = attn(x, context=torch.cat((ctx, x), 1), attn_mask=mask, queries_in_context=True)
        plain, _ = attn.eval()(x, context=ctx)
    torch.testing.assert_close(folded, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ref, plain, atol=1e-3)
    mem_in, mem_x = torch.randn(B, T, M, 32), torch.randn(B, T, M, 32)  # memories given as inputs: the same
    with torch.no_grad():
        attn.train()
        torch.manual_seed(2)
        ref, _ = attn(x, *attn.project_kv(mem_x, mem_in), context=ctx)
        torch.manual_seed(2)
        folded, _ = attn(x, mem_in, mem_x, context=ctx, mem_inputs=True)
    torch.testing.assert_close(folded, ref, atol=1e-5, rtol=1e-4)
