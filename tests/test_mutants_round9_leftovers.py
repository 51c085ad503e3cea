"""Mutation round 9 (leftovers): behaviours of memory/fusion.py (gated and cross_attention), memory/internal.py
(LinformerMemory's gate input), memory/cache.py (the stable tie order of automatic promotion), envs/stream.py
(`buffer` and `__getstate__`) and agents/tune_metrics.py (`default_metric`'s per-corner fallback) that no other test
pinned down. The round's tests of agents/run.py (an incomplete config.yaml rewritten when a finished run is resumed)
are in tests/test_checkpoint_messages.py."""

import pickle

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from agents.tune_metrics import EnvFacts, default_metric
from envs.stream import eval_stream
from memory.augmented import MemoryAugmentedLayer, MemoryAugmentedTransformer
from memory.cache import TieredKVCache
from memory.config import MemoryConfig
from memory.fusion import Fusion
from memory.internal import LinformerMemory, LM2Memory


def test_gated_fusion_gates_each_source_on_h_first_then_that_source():
    """gated: h + sum_r sigmoid(G_r [h ; r_r] + b_r) * (W_r r_r), with h the first half of the gate's input."""
    torch.manual_seed(0)
    B, T, R, D = 2, 3, 2, 8
    fusion = Fusion(MemoryConfig(dim=D, attn_heads=2, fusion="gated"), num_sources=R)
    with torch.no_grad():
        fusion.gate_b.normal_()
    h, reads = torch.randn(B, T, D), torch.randn(B, T, R, D)
    expected = h.clone()
    for r in range(R):
        gate = torch.sigmoid(torch.cat([h, reads[:, :, r]], dim=-1) @ fusion.gate_w[r] + fusion.gate_b[r])
        expected = expected + gate * (reads[:, :, r] @ fusion.read_w[r])
    torch.testing.assert_close(fusion(h, reads), expected)


def test_a_fresh_gated_fusion_opens_every_gate_halfway_where_the_gate_weights_are_zero():
    """The gate biases start at 0: with G_r zero every gate is sigmoid(0) = 0.5."""
    torch.manual_seed(1)
    fusion = Fusion(MemoryConfig(dim=4, attn_heads=2, fusion="gated"), num_sources=2)
    with torch.no_grad():
        fusion.gate_w.zero_()
    h, reads = torch.randn(1, 2, 4), torch.randn(1, 2, 2, 4)
    content = torch.einsum("btri,rio->btro", reads, fusion.read_w)
    torch.testing.assert_close(fusion(h, reads), h + 0.5 * content.sum(dim=2))


def test_a_fresh_cross_attention_fusion_is_plain_attention_over_the_reads():
    """The source embeddings start at 0: a fresh cross_attention fusion is h + MHA(h, reads, reads), with
    memory.attn_heads heads."""
    torch.manual_seed(2)
    B, T, R, D = 2, 3, 3, 8
    fusion = Fusion(MemoryConfig(dim=D, attn_heads=2, fusion="cross_attention"), num_sources=R)
    h, reads = torch.randn(B, T, D), torch.randn(B, T, R, D)
    out = _mha(fusion.attn, h.reshape(B * T, 1, D), reads.reshape(B * T, R, D), 2)  # memory.attn_heads=2 heads
    torch.testing.assert_close(fusion(h, reads), h + out.reshape(B, T, D))


def test_linformer_update_gate_reads_the_block_summary_first_then_the_slots():
    """LinformerMemory: g = sigmoid(W_g [Z, M]), M <- normalise((1 - g) M + g Z), Z first in the gate's input."""
    torch.manual_seed(3)
    mem = LinformerMemory(MemoryConfig(dim=8, attn_heads=2, internal="linformer", internal_slots=3))
    h = torch.randn(2, 5, 8)
    state = F.normalize(torch.randn(2, 3, 8), dim=-1)
    _, new = mem(h, state)
    z = mem.slot_summary(h, state)
    g = torch.sigmoid(torch.cat([z, state], dim=-1) @ mem.update_gate.weight.T + mem.update_gate.bias)
    torch.testing.assert_close(new, F.normalize((1 - g) * state + g * z, dim=-1))


def test_promotion_ties_at_the_top_tier_s_size_go_to_the_lower_slot(tmp_path):
    """_auto_promote ranks by reads with a stable sort: of two entries read equally often where only one fits the
    top tier, the one in the lower slot moves up (numpy's default sort took the other on this input)."""
    cache = TieredKVCache(1, 2, hot=1, warm=6, cold=0, promote_after=2, path=tmp_path)
    cache.put(np.arange(7), np.zeros((7, 1, 2)), np.zeros((7, 1, 2)))  # 0..5 warm (in id order), 6 hot
    cache.get_batch(np.arange(6))  # every warm entry read once
    cache.get_batch(np.array([2, 3, 4]))  # 2, 3, 4 read twice: 2 moves up, 3 and 4 wait
    assert cache.tier_of(np.array([2])).tolist() == [0]
    cache.get_batch(np.array([0, 1, 3, 4]))  # reads 2, 2, 3, 3: one top place for 3 and 4
    assert cache.tier_of(np.arange(7)).tolist() == [1, 1, 1, 0, 1, 1, 1]
    cache.close()


def _source(env_id="LongDependency-v0"):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    return env, env._source


def test_a_stream_buffer_asked_for_in_another_dtype_is_made_anew():
    """StreamSource.buffer reuses a scratch array only for the same shape and dtype."""
    _, src = _source()
    ints = src.buffer("probe", (2, 3))
    assert src.buffer("probe", (2, 3)) is ints
    flags = src.buffer("probe", (2, 3), bool)
    assert flags.dtype == bool and flags is not ints
    assert src.buffer("probe", (2, 4), bool).shape == (2, 4)


def test_pickling_a_source_leaves_its_scratch_buffers_behind_and_in_place():
    """__getstate__ drops the scratch buffers from the pickle, not from the live source (it keeps reusing them)."""
    env, src = _source()
    kept = src.buffer("obs", (1, env.episode_length + 1))
    copy = pickle.loads(pickle.dumps(src))
    assert "_buffers" not in copy.__dict__
    assert src.buffer("obs", (1, env.episode_length + 1)) is kept


def test_default_metric_falls_back_per_corner_where_one_corner_s_far_edge_is_unknown():
    """A corner without far_edge counts with the last bucket of its max_distance, against the others' far_edge."""
    corners = [EnvFacts("LongDependency-v0", 1, 4096, 2048), EnvFacts("LongDependency-v0", 1, 1000)]
    assert default_metric(corners) == "recall/accuracy_d1024"
    corners = [EnvFacts("LongDependency-v0", 1, 4096, 2048), EnvFacts("LongDependency-v0", 1, 4096)]
    assert default_metric(corners) == "recall/accuracy_d2048"


def _perturbed_layer(dropout=0.0):
    """A MemoryAugmentedLayer whose two LayerNorms differ (at their initialisation they are the same function)."""
    torch.manual_seed(4)
    layer = MemoryAugmentedLayer(MemoryConfig(dim=8, attn_heads=2), mlp_ratio=2, dropout=dropout)
    with torch.no_grad():
        for ln in (layer.ln_attn, layer.ln_mlp):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_()
    return layer


def test_memory_augmented_layer_is_pre_ln_attention_then_a_gelu_mlp_each_with_its_residual():
    """x1 = x + Attn(LN_attn(x)); y = x1 + W2 gelu(W1 LN_mlp(x1) + b1) + b2."""
    layer = _perturbed_layer().eval()
    x = torch.randn(2, 5, 8)
    y, _ = layer(x)
    x1 = x + layer.attn(layer.ln_attn(x))[0]
    first, last = layer.mlp[0], layer.mlp[2]
    torch.testing.assert_close(y, x1 + last(F.gelu(first(layer.ln_mlp(x1)))))


def test_memory_augmented_layer_projects_memory_kv_through_its_attention_layernorm():
    """project_kv(h) computes k, v from LN_attn(h), as the block computes its own context."""
    layer = _perturbed_layer()
    h = torch.randn(3, 8)
    for got, want in zip(layer.project_kv(h), layer.attn.project_kv(layer.ln_attn(h)), strict=True):
        torch.testing.assert_close(got, want)


def test_memory_augmented_layer_drops_out_inside_its_mlp_while_training():
    """dropout also acts on the MLP's output: with the attention's output zeroed, two training calls differ and
    eval calls agree."""
    layer = _perturbed_layer(dropout=0.5)
    with torch.no_grad():
        layer.attn.out_proj.weight.zero_()
        layer.attn.out_proj.bias.zero_()
    x = torch.randn(2, 6, 8)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])


def test_memory_augmented_transformer_logits_read_the_final_layernormed_hidden_state():
    """logits = head(ln_f(x)), the "hidden" it reports."""
    torch.manual_seed(5)
    model = MemoryAugmentedTransformer(MemoryConfig(dim=8, attn_heads=2), vocab=11, n_layers=2, max_len=16)
    logits, info = model(torch.randint(0, 11, (2, 6)))
    torch.testing.assert_close(logits, model.head(info["hidden"]))


def test_memory_augmented_transformer_hands_mlp_ratio_and_dropout_to_its_layers():
    """mlp_ratio sets every layer's MLP width; dropout makes training calls differ (eval calls agree)."""
    torch.manual_seed(6)
    model = MemoryAugmentedTransformer(MemoryConfig(dim=8, attn_heads=2), vocab=11, n_layers=2, max_len=16,
                                       mlp_ratio=2, dropout=0.5)
    assert [layer.mlp[0].out_features for layer in model.layers] == [16, 16]
    tokens = torch.randint(0, 11, (2, 6))
    assert not torch.equal(model(tokens)[0], model(tokens)[0])
    model.eval()
    assert torch.equal(model(tokens)[0], model(tokens)[0])


def test_linformer_read_is_the_output_projection_of_the_slot_attention():
    """LinformerMemory: y = W_y Attn(h -> M), with the incoming state."""
    torch.manual_seed(7)
    mem = LinformerMemory(MemoryConfig(dim=8, attn_heads=2, internal="linformer", internal_slots=3))
    h, state = torch.randn(2, 4, 8), mem.initial_state(2)
    y, _ = mem(h, state)
    torch.testing.assert_close(y, mem.out(mem.read_attn(h, state, state, need_weights=False)[0]))


def test_eval_stream_is_the_training_generator_jumped_once_and_leaves_it_as_it_was():
    """eval_stream: a PCG64 generator's eval stream starts one jump ((phi - 1) x 2^128 draws) ahead of it."""
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    ev = eval_stream(rng)
    assert ev.random(4).tolist() == np.random.Generator(ref.bit_generator.jumped()).random(4).tolist()
    assert rng.random(4).tolist() == ref.random(4).tolist()


def _mha(module, q, kv, heads):
    """nn.MultiheadAttention's weights applied with `heads` heads: q (B, Tq, D), kv (B, Tk, D) -> (B, Tq, D)."""
    out = F.multi_head_attention_forward(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), q.shape[-1], heads,
                                         module.in_proj_weight, module.in_proj_bias, None, None, False, 0.0,
                                         module.out_proj.weight, module.out_proj.bias, training=False,
                                         need_weights=False)[0]
    return out.transpose(0, 1)


def test_lm2_memory_reads_and_updates_with_memory_attn_heads_heads():
    """LM2Memory: y = sigmoid(W_o h) * Attn(h -> M), U = Attn(M -> h), both with memory.attn_heads heads."""
    torch.manual_seed(8)
    mem = LM2Memory(MemoryConfig(dim=8, attn_heads=4, internal="lm2", internal_slots=3))
    h, state = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    y, new = mem(h, state)
    torch.testing.assert_close(y, torch.sigmoid(mem.output_gate(h)) * _mha(mem.read_attn, h, state, 4))
    u = _mha(mem.update_attn, state, h, 4)
    torch.testing.assert_close(new, torch.sigmoid(mem.input_gate(u)) * torch.tanh(u)
                               + torch.sigmoid(mem.forget_gate(u)) * state)
