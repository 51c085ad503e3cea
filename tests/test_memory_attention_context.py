"""MemoryAttention with context inputs: folded projections, the head-mixed probs pointer and recency by age."""

import math

import pytest
import torch
import torch.nn.functional as F

from memory.attention import MemoryAttention
from memory.config import MemoryConfig
from tests.test_memory_attention import CFG, B, H, M, T, d, memories


def test_context_gives_keys_and_values_like_the_same_positions_fed_as_queries():
    """Feeding C earlier positions as `context` gives the last T outputs of feeding all C + T as queries; a
    separate key input changes the keys only."""
    attn = MemoryAttention(CFG).eval()
    C = 3
    seq = torch.randn(B, C + T, 32)
    mem_k, mem_v = memories()
    with torch.no_grad():
        full, _ = attn(seq, torch.cat((mem_k[:, :C], mem_k), 1), torch.cat((mem_v[:, :C], mem_v), 1))
        part, _ = attn(seq[:, C:], mem_k, mem_v, context=seq[:, :C])
        assert torch.allclose(part, full[:, C:], atol=1e-5)
        keys_in = torch.randn(B, C + T, 32)
        k_full, v_full = attn.project_kv(seq, keys_in)
        assert torch.allclose(k_full, attn.project_kv(keys_in)[0]) and torch.allclose(v_full, attn.project_kv(seq)[1])
        moved, _ = attn(seq[:, C:], mem_k, mem_v, context=seq[:, :C], key_input=keys_in)
    assert not torch.allclose(moved, part)
    with pytest.raises(ValueError, match="attn_mask"):
        attn(seq[:, C:], context=seq[:, :C], attn_mask=torch.ones(T, T, dtype=torch.bool))


def test_queries_in_context_answer_some_positions_as_the_full_call_does():
    """With the queries' own positions inside `context` (queries_in_context), a few queries over [context] give
    the full call's outputs and probs at those positions; the mask is required."""
    attn = MemoryAttention(CFG).eval()
    C, at = 3, torch.tensor([1, 4])
    seq = torch.randn(B, C + T, 32)
    mem_k, mem_v = memories()
    mask = torch.cat((torch.ones(T, C, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()), 1)  # (T, C+T)
    with torch.no_grad():
        full, info = attn(seq[:, C:], mem_k, mem_v, context=seq[:, :C], return_probs=True)
        part, part_info = attn(seq[:, C:][:, at], mem_k[:, at], mem_v[:, at], context=seq, attn_mask=mask[at],
                               return_probs=True, queries_in_context=True)
    torch.testing.assert_close(part, full[:, at], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(part_info["probs"], info["probs"][:, at], atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="queries_in_context needs"):
        attn(seq[:, C:][:, at], context=seq, queries_in_context=True)


def test_folded_projections_give_the_projected_outputs_and_gradients():
    """Memories given as their inputs (mem_inputs) and a context answered in place (queries_in_context) are
    projected by folding W_k, W_v into the queries: outputs, probs and every parameter's gradient equal those of
    projecting each key and value first (`project_kv`), with key inputs wider than D as MemNet's."""
    torch.manual_seed(0)
    key_in = 96
    attn = MemoryAttention(CFG, key_in=key_in)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a gate and recency away from their zero start, so every term is exercised
        for p in (attn.gate.weight, attn.gate.bias, attn.head_mix):
            p.copy_(torch.randn(p.shape, generator=g))
    C, at = 3, torch.tensor([0, 2, 4])
    seq, keys_in = torch.randn(B, C + T, 32), torch.randn(B, C + T, key_in)
    mem_in, mem_x = torch.randn(B, len(at), M, key_in), torch.randn(B, len(at), M, 32)
    mask = torch.cat((torch.ones(T, C, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()), 1)[at]
    mem_mask = torch.rand(B, len(at), M) > 0.3
    age = (C + at[:, None] - torch.arange(C + T)).clamp(min=0)  # (T', C+T)
    common = {"attn_mask": mask, "return_probs": True, "context_age": age, "mem_age": torch.full((B, len(at), M), 7)}

    def run(folded: bool):
        attn.zero_grad()
        x = seq[:, C:][:, at]
        if folded:
            out, info = attn(x, mem_in, mem_x, mem_mask, context=seq, key_input=keys_in, queries_in_context=True,
                             mem_inputs=True, **common)
        else:  # the reference: every key and value projected, the context passed as keys before the queries
            mem_k, mem_v = attn.project_kv(mem_x, mem_in)
            k, v = attn.project_kv(seq, keys_in)
            q = attn._heads(attn.q_proj(x)).transpose(1, 2)
            logits = (q @ k.transpose(1, 2).transpose(-1, -2)) * attn.head_dim ** -0.5
            logits = (logits - attn._recency_bias(age.expand(B, -1, -1))).masked_fill(~mask, -torch.inf)
            mem_logits = torch.einsum("bhtd,btmhd->bhtm", q, mem_k) * attn.head_dim ** -0.5
            mem_logits = mem_logits + F.logsigmoid(attn.gate(x)).transpose(1, 2)[..., None]
            mem_logits = (mem_logits - attn._recency_bias(common["mem_age"])).masked_fill(~mem_mask[:, None],
                                                                                            -torch.inf)
            probs = torch.softmax(torch.cat((logits, mem_logits), -1), -1)
            read = probs[..., :C + T] @ v.transpose(1, 2) + torch.einsum("bhtm,btmhd->bhtd", probs[..., C + T:],
                                                                          mem_v)
            out = attn.out_proj(read.transpose(1, 2).flatten(2))
            info = {"probs": (probs * torch.softmax(attn.head_mix, -1)[None, :, None, None]).sum(1)}
        (out.square().sum() + info["probs"][..., 0].sum()).backward()
        return out.detach(), info["probs"].detach(), {n: p.grad.clone() for n, p in attn.named_parameters()}

    out, probs, grads = run(True)
    ref_out, ref_probs, ref_grads = run(False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-4)
    assert set(grads) == set(ref_grads)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert grads["k_proj.weight"].abs().sum() > 0 and grads["v_proj.weight"].abs().sum() > 0
    with pytest.raises(ValueError, match=r"with mem_inputs, mem_k and mem_v must be \(B, T, M, key_in\)"):
        attn(seq[:, C:][:, at], *attn.project_kv(mem_x, mem_in), mem_mask, mem_inputs=True, **common,
             context=seq, key_input=keys_in, queries_in_context=True)


def test_return_probs_are_the_attention_weights_over_context_inputs_and_memories():
    """probs (B, T, C+T+M), mixed over heads (uniform at the start): each row sums to 1, and its memory part is
    memory_share."""
    torch.manual_seed(0)
    attn = MemoryAttention(CFG).eval()
    B, C, T, M = 2, 3, 4, 5
    x, ctx = torch.randn(B, T, 32), torch.randn(B, C, 32)
    mem_k, mem_v = torch.randn(B, T, M, 4, 8), torch.randn(B, T, M, 4, 8)
    _, info = attn(x, mem_k, mem_v, context=ctx, return_probs=True)
    probs = info["probs"]
    assert probs.shape == (B, T, C + T + M)
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, T))
    torch.testing.assert_close(probs[..., C + T:].sum(-1), info["memory_share"])
    assert (probs[:, 0, C + 1:C + T] == 0).all()  # causal: the first input sees no later input
    _, plain = attn(x, mem_k, mem_v, context=ctx)
    assert "probs" not in plain


def test_probs_mix_the_heads_by_a_learned_softmax():
    """The copy pointer "probs" mixes the heads by a learned softmax: uniform (the mean over heads) at the start;
    a large weight on head h gives head h's own weights, and the uniform pointer is the mean of those."""
    torch.manual_seed(0)
    attn = MemoryAttention(CFG).eval()
    x, ctx = torch.randn(B, T, 32), torch.randn(B, 3, 32)
    mem_k, mem_v = torch.randn(B, T, M, H, d), torch.randn(B, T, M, H, d)
    with torch.no_grad():
        _, uniform = attn(x, mem_k, mem_v, context=ctx, return_probs=True)
        per_head = []
        for h in range(H):
            attn.head_mix.copy_(torch.full((H,), -50.0))
            attn.head_mix[h] = 50.0  # all of the pointer from head h
            per_head.append(attn(x, mem_k, mem_v, context=ctx, return_probs=True)[1]["probs"])
    torch.testing.assert_close(uniform["probs"], torch.stack(per_head).mean(0))  # uniform mix = mean of heads
    assert not torch.allclose(per_head[0], per_head[-1])  # the heads differ, so the mix matters
    torch.testing.assert_close(per_head[0].sum(-1), torch.ones(B, T))


def test_recency_term_weights_equal_matches_by_age():
    """Two memories with the same key: without ages they split evenly; with ages 9 and 99 each head's logits
    get -s_h log(1 + age), s_h = softplus(r_h) (at the start geometric over the heads, 0.5 ... 4)."""
    attn = MemoryAttention(CFG)
    slopes = F.softplus(attn.recency.detach())
    torch.testing.assert_close(slopes[[0, -1]], torch.tensor([0.5, 4.0]))
    assert (slopes[1:] / slopes[:-1]).allclose(slopes[1] / slopes[0])  # geometric
    one = F.softplus(MemoryAttention(MemoryConfig(dim=32, attn_heads=1)).recency.detach())  # one head: their
    torch.testing.assert_close(one, torch.tensor([2.0 ** 0.5]))  # geometric mean, not either end
    x = torch.randn(1, 1, 32)
    k, v = torch.randn(1, 1, 1, H, d).expand(1, 1, 2, H, d), torch.randn(1, 1, 2, H, d)
    ages = torch.tensor([[[9.0, 99.0]]])  # (B, T, M)
    with torch.no_grad():
        attn.recency.copy_(torch.tensor([0.0, 0.5, 1.0, 2.0]))
        _, plain = attn(x, k, v, return_probs=True)
        _, aged = attn(x, k, v, return_probs=True, mem_age=ages)
        q = attn._heads(attn.q_proj(x))[0, 0]  # (H, d)
        own = (q * attn._heads(attn.k_proj(x))[0, 0]).sum(-1) / d ** 0.5  # (H,) the query's own position
        mem = (q * k[0, 0, 0]).sum(-1) / d ** 0.5 + F.logsigmoid(attn.gate(x))[0, 0]  # (H,) either memory
        slope = F.softplus(attn.recency)  # (H,)
        logits = torch.stack([own, mem - slope * math.log(10), mem - slope * math.log(100)], -1)  # (H, 3)
    torch.testing.assert_close(plain["probs"][0, 0, 1], plain["probs"][0, 0, 2])
    torch.testing.assert_close(aged["probs"][0, 0], torch.softmax(logits, -1).mean(0))
    assert aged["probs"][0, 0, 1] > 2 * aged["probs"][0, 0, 2]


def test_context_ages_penalise_older_window_positions():
    attn = MemoryAttention(CFG)
    x, ctx = torch.randn(B, T, 32), torch.randn(B, 3, 32)
    age = 3 + torch.arange(T)[:, None] - torch.arange(3 + T)  # (T, C+T): steps from each position to each query
    mask = age >= 0
    with torch.no_grad():
        plain, _ = attn(x, context=ctx, attn_mask=mask)
        aged, _ = attn(x, context=ctx, attn_mask=mask, context_age=age)
        attn.recency.fill_(-30.0)  # slope ~ 0: the term vanishes
        off, _ = attn(x, context=ctx, attn_mask=mask, context_age=age)
    assert not torch.allclose(plain, aged)
    torch.testing.assert_close(plain, off)

    # the masked positions after each query have negative ages (MemNet's store attention passes them so): their
    # log1p(age) is -inf or NaN unless clamped, and 0 x NaN made the recency slopes' gradient NaN
    attn.recency.grad = None
    attn(x, context=ctx, attn_mask=mask, context_age=age)[0].square().sum().backward()
    assert torch.isfinite(attn.recency.grad).all() and attn.recency.grad.abs().sum() > 0
