"""MemoryAttention, Fusion, MemoryAugmentedLayer/Transformer: masking, gating, gradients, causality, bad shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memory.attention import MemoryAttention
from memory.augmented import MemoryAugmentedLayer, MemoryAugmentedTransformer
from memory.config import MemoryConfig
from memory.fusion import Fusion

CFG = MemoryConfig(dim=32, attn_heads=4)
B, T, M, H, d = 2, 5, 3, 4, 8


def memories(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, M, H, d, generator=g), torch.randn(B, T, M, H, d, generator=g)


def plain_causal(attn: MemoryAttention, x):
    """Reference: the same projections through torch's own causal attention."""
    q = attn._heads(attn.q_proj(x)).transpose(1, 2)
    k, v = (t.transpose(1, 2) for t in attn.project_kv(x))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def test_all_masked_memory_equals_plain_causal_attention():
    torch.manual_seed(0)
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32)
    mem_k, mem_v = memories()
    masked, info = attn(x, mem_k, mem_v, torch.zeros(B, T, M, dtype=torch.bool))
    none, _ = attn(x)
    torch.testing.assert_close(masked, plain_causal(attn, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(none, masked, rtol=1e-6, atol=1e-6)
    assert (info["memory_share"] == 0).all()


def test_closed_gate_ignores_memory_and_open_gate_uses_it():
    torch.manual_seed(1)
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32)
    mem_k, mem_v = memories(1)
    present = torch.ones(B, T, M, dtype=torch.bool)
    with_memory, info = attn(x, mem_k, mem_v, present)
    assert ((info["memory_share"] > 0.05) & (info["memory_share"] < 1)).all()
    assert (with_memory - attn(x)[0]).abs().max() > 1e-2
    with torch.no_grad():
        attn.gate.bias.fill_(-1e4)  # sigmoid -> 0: log-gate -1e4 on every memory logit
    closed, info = attn(x, mem_k, mem_v, present)
    torch.testing.assert_close(closed, attn(x)[0], rtol=1e-6, atol=1e-6)
    assert info["memory_share"].max() == 0


def test_memory_matching_the_query_takes_the_attention_mass():
    torch.manual_seed(2)
    attn = MemoryAttention(CFG)
    x = torch.randn(1, 1, 32)
    q = attn._heads(attn.q_proj(x))  # (1, 1, H, d)
    mem_k = torch.zeros(1, 1, 2, H, d)
    mem_k[0, 0, 0] = 50 * q[0, 0] / q[0, 0].norm(dim=-1, keepdim=True)  # aligned with every head's query
    mem_v = torch.randn(1, 1, 2, H, d)
    with torch.no_grad():
        attn.gate.bias.fill_(10.0)  # gate open
        out, info = attn(x, mem_k, mem_v, torch.ones(1, 1, 2, dtype=torch.bool))
    assert info["memory_share"].item() > 0.99
    expected = attn.out_proj(mem_v[0, 0, 0].flatten())
    torch.testing.assert_close(out[0, 0], expected, rtol=1e-2, atol=1e-2)


def test_gradients_reach_memory_gate_and_projections():
    torch.manual_seed(3)
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32, requires_grad=True)
    mem_k, mem_v = (t.requires_grad_() for t in memories(3))
    out, _ = attn(x, mem_k, mem_v, torch.rand(B, T, M) > 0.3)
    out.square().mean().backward()
    for g in (x.grad, mem_k.grad, mem_v.grad, attn.gate.weight.grad, attn.q_proj.weight.grad):
        assert g is not None and g.abs().sum() > 0


def test_fusion_values_worked_by_hand():
    """concat adds its projection to h (a zero projection leaves h as it is); gated adds every source's gated
    content, summed over the sources (gates fully open, W_r = I: h + r_1 + r_2)."""
    h, reads = torch.randn(B, T, 32), torch.randn(B, T, 2, 32)
    concat = Fusion(MemoryConfig(dim=32, attn_heads=4, fusion="concat"), num_sources=2)
    gated = Fusion(MemoryConfig(dim=32, attn_heads=4, fusion="gated"), num_sources=2)
    with torch.no_grad():
        concat.proj.weight.zero_()
        concat.proj.bias.zero_()
        gated.read_w.copy_(torch.eye(32).expand(2, 32, 32))
        gated.gate_w.zero_()
        gated.gate_b.fill_(50.0)
        torch.testing.assert_close(concat(h, reads), h)
        torch.testing.assert_close(gated(h, reads), h + reads.sum(2))


def test_cross_attention_fusion_adds_its_read_to_h():
    """cross_attention is residual like the others: h + MHA(h -> reads + e_r). With the attention's output
    projection zeroed it leaves h as it is; otherwise it adds exactly what the attention returns for each token."""
    h, reads = torch.randn(B, T, 32), torch.randn(B, T, 2, 32)
    fusion = Fusion(MemoryConfig(dim=32, attn_heads=4, fusion="cross_attention"), num_sources=2)
    with torch.no_grad():
        fusion.source_emb.copy_(torch.randn(2, 32))
        kv = (reads + fusion.source_emb).reshape(B * T, 2, 32)
        read = fusion.attn(h.reshape(B * T, 1, 32), kv, kv, need_weights=False)[0].reshape(B, T, 32)
        torch.testing.assert_close(fusion(h, reads), h + read)
        fusion.attn.out_proj.weight.zero_()
        fusion.attn.out_proj.bias.zero_()
        torch.testing.assert_close(fusion(h, reads), h)


@pytest.mark.parametrize("strategy", ["concat", "gated", "cross_attention"])
def test_fusion_strategies_shape_and_gradients(strategy):
    torch.manual_seed(4)
    fusion = Fusion(MemoryConfig(dim=32, attn_heads=4, fusion=strategy), num_sources=3)
    h = torch.randn(B, T, 32, requires_grad=True)
    reads = torch.randn(B, T, 3, 32, requires_grad=True)
    out = fusion(h, reads)
    assert out.shape == (B, T, 32)
    out.square().mean().backward()
    assert h.grad.abs().sum() > 0 and reads.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())
    other = reads.detach().clone()
    other[:, :, 1] += 1.0
    assert (fusion(h, other) - out).abs().max() > 1e-4  # every source changes the result
    with pytest.raises(ValueError, match="reads must be"):
        fusion(h, reads[:, :, :2])


@pytest.mark.parametrize("strategy", ["concat", "gated", "cross_attention"])
@pytest.mark.parametrize("h, reads, message", [
    # a matmul's own error, worded per strategy ("expected scalar type Float but found Double", "mat1 and mat2 ...")
    (torch.zeros(B, T, 32, dtype=torch.float64), torch.zeros(B, T, 3, 32, dtype=torch.float64),
     "h is torch.float64, the weights torch.float32: pass h.to(torch.float32) (or call it under torch.autocast)"),
    (torch.zeros(B, T, 32), torch.zeros(B, T, 3, 32, dtype=torch.long),
     "reads: expected a floating tensor, got torch.int64; pass reads.float()"),
    (torch.zeros(B, 32), torch.zeros(B, 1, 3, 32), "Fusion: h must be (B, T, D=32), got (2, 32)"),  # unpacking error
    (torch.zeros(B, T, 16), torch.zeros(B, T, 3, 16), "Fusion: h must be (B, T, D=32), got (2, 5, 16)"),
    ([0.0] * 32, torch.zeros(B, T, 3, 32), "Fusion: h must be (B, T, D=32), got list"),
    (torch.zeros(B, T, 32), 0.0, "Fusion: reads must be (B, T, R, D) = (2, 5, 3, 32), got float"),
])
def test_fusion_refuses_a_bad_input_in_one_line(strategy, h, reads, message):
    fusion = Fusion(MemoryConfig(dim=32, attn_heads=4, fusion=strategy), num_sources=3)
    with pytest.raises(ValueError) as err:
        fusion(h, reads)
    assert str(err.value) == message


def test_fusion_takes_bfloat16_inputs_under_autocast():
    fusion = Fusion(MemoryConfig(dim=32, attn_heads=4, fusion="gated"), num_sources=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusion(torch.randn(B, T, 32, dtype=torch.bfloat16), torch.randn(B, T, 3, 32))
    assert out.shape == (B, T, 32) and torch.isfinite(out.float()).all()


def test_layer_and_transformer_forward_backward():
    torch.manual_seed(5)
    layer = MemoryAugmentedLayer(CFG)
    x = torch.randn(B, T, 32)
    mem_k, mem_v = layer.project_kv(torch.randn(B, T, M, 32))
    assert mem_k.shape == (B, T, M, H, d)
    y, info = layer(x, mem_k, mem_v, torch.ones(B, T, M, dtype=torch.bool))
    assert y.shape == x.shape and info["memory_share"].shape == (B, T)
    model = MemoryAugmentedTransformer(CFG, vocab=11, n_layers=2)
    tokens = torch.randint(0, 11, (B, T))
    logits, info = model(tokens, mem_k, mem_v, torch.ones(B, T, M, dtype=torch.bool))
    assert logits.shape == (B, T, 11) and info["hidden"].shape == (B, T, 32)
    F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    assert model.layers[1].attn.gate.weight.grad.abs().sum() > 0
    # causality: changing the last token leaves earlier logits unchanged
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 11
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 600, dtype=torch.long))


def test_bad_memory_shapes_raise():
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32)
    mem_k, mem_v = memories()
    with pytest.raises(ValueError, match="mem_k and mem_v"):
        attn(x, mem_k[..., :4], mem_v)
    with pytest.raises(ValueError, match="mem_mask"):
        attn(x, mem_k, mem_v, torch.ones(B, T, M + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, attn_mask=torch.ones(T, T))
    with pytest.raises(ValueError, match="memory_layers"):
        MemoryAugmentedTransformer(CFG, vocab=5, n_layers=2, memory_layers=(2,))


def test_transformer_memory_share_is_the_mean_over_its_memory_layers():
    """With memory in several layers, info["memory_share"] averages the layers' shares (not the last layer's)."""
    torch.manual_seed(6)
    model = MemoryAugmentedTransformer(CFG, vocab=11, n_layers=3, memory_layers=(0, 2))
    mem_k, mem_v = memories(3)
    mask = torch.ones(B, T, M, dtype=torch.bool)
    mask[0, :, 1:] = False  # lane 0 sees one memory per query, lane 1 three
    shares = {}
    for i, layer in enumerate(model.layers):
        layer.register_forward_hook(lambda _m, _in, out, i=i: shares.__setitem__(i, out[1]["memory_share"]))
    with torch.no_grad():
        _, info = model(torch.randint(0, 11, (B, T)), mem_k, mem_v, mask)
    assert sorted(shares) == [0, 1, 2] and not shares[1].any()  # layer 1 holds no memory: share 0
    assert not torch.allclose(shares[0], shares[2], atol=1e-3)
    torch.testing.assert_close(info["memory_share"], (shares[0] + shares[2]) / 2)


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.zeros(B * T, dtype=torch.long)),
     r"tokens must be a \(B, T\) int64 tensor, got torch.int64 \(10,\)"),
    (lambda m: m(torch.zeros(B, T)), r"tokens must be a \(B, T\) int64 tensor, got torch.float32 \(2, 5\)"),
    (lambda m: m(torch.full((B, T), 11)), r"tokens must lie in \[0, 11\) \(vocab=11\), got min 11 max 11"),
    (lambda m: m(torch.full((B, T), -1)), r"tokens must lie in \[0, 11\) \(vocab=11\), got min -1 max -1"),
    (lambda m: MemoryAugmentedTransformer(CFG, vocab=True), r"vocab=True: must be an int >= 1"),
    (lambda m: MemoryAugmentedTransformer(CFG, vocab=5, mlp_ratio=0), r"mlp_ratio=0: must be an int >= 1"),
    (lambda m: MemoryAugmentedTransformer(CFG, vocab=5, memory_layers=1),
     r"memory_layers=1: must be a tuple of layer indices, e.g. \(1,\)"),
    (lambda m: MemoryAugmentedTransformer(CFG, vocab=5, memory_layers=(0.5,)),
     r"memory_layers=\(0.5,\): each must lie in \[0, 2\)"),
    (lambda m: Fusion(CFG, num_sources=True), r"num_sources=True: must be an int >= 1"),
])
def test_transformer_and_fusion_refuse_bad_arguments_in_one_line(call, message):
    """Float or 1-D tokens failed inside the embedding or at unpacking, an out-of-range token with an IndexError; a
    bool num_sources inside torch.randn; mlp_ratio=0 built empty MLPs, a bare int memory_layers was not iterable."""
    model = MemoryAugmentedTransformer(CFG, vocab=11, n_layers=1)
    with pytest.raises(ValueError, match=message):
        call(model)
    assert MemoryAugmentedTransformer(CFG, vocab=5, memory_layers=tuple(np.arange(2))).memory_layers == (0, 1)


def test_memory_attention_refuses_memory_parts_without_mem_k():
    """mem_v / mem_mask / mem_age without mem_k were dropped silently: the call ran as plain causal attention."""
    attn = MemoryAttention(CFG)
    x = torch.randn(B, T, 32)
    _, mem_v = memories()
    for kwargs in ({"mem_v": mem_v}, {"mem_mask": torch.ones(B, T, M, dtype=torch.bool)},
                   {"mem_age": torch.zeros(B, T, M)}):
        with pytest.raises(ValueError, match="describe the memories in mem_k: pass mem_k with them"):
            attn(x, **kwargs)


@pytest.mark.parametrize("kwargs", [{"key_in": 0}, {"key_in": -1}, {"query_in": 2.5}, {"query_in": True}])
def test_memory_attention_refuses_an_input_width_that_is_no_positive_int(kwargs):
    """key_in=0 was taken as the default width, -1 and 2.5 failed inside nn.Linear."""
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"^MemoryAttention: {name}={value!r}: must be an int >= 1"):
        MemoryAttention(CFG, **kwargs)
    assert MemoryAttention(CFG, key_in=96, query_in=64).k_proj.in_features == 96


def test_dropout_mixes_the_values_but_shares_and_probs_stay_the_attention_mass():
    """Dropout on the attention weights rescales the kept ones by 1 / (1 - p): memory_share ("the attention mass on
    memory") reached 1.02 and the copy read-out's pointer rows summed to 0.66-1.23. The output still sees dropout."""
    torch.manual_seed(0)
    attn = MemoryAttention(CFG, dropout=0.5).train()
    x = torch.randn(B, T, 32)
    mem_k, mem_v = memories()
    mask = torch.ones(B, T, M, dtype=torch.bool)
    out, info = attn(x, mem_k, mem_v, mask, return_probs=True)
    torch.testing.assert_close(info["probs"].sum(-1), torch.ones(B, T))
    assert (info["memory_share"] >= 0).all() and (info["memory_share"] <= 1).all()
    clean, clean_info = attn.eval()(x, mem_k, mem_v, mask, return_probs=True)
    torch.testing.assert_close(info["memory_share"], clean_info["memory_share"])  # the same mass, dropout or not
    torch.testing.assert_close(info["probs"], clean_info["probs"])
    assert not torch.allclose(out, clean)  # ... while the values' mix is dropped out in training
