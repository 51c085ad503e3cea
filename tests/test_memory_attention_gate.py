"""MemoryAttention's gate: where info["gate"] is 0, the memories get weight exactly 0 (README "Memory attention and
fusion": "When g reaches 0 ... memory_share is 0"), whatever the memory logits."""

from __future__ import annotations

import pytest
import torch

from memory.attention import MemoryAttention
from memory.config import MemoryConfig


@pytest.mark.parametrize(("dtype", "bias", "scale"), [(torch.float32, -110.0, 1000.0), (torch.float16, -20.0, 30.0)])
def test_gate_that_reads_zero_removes_memory_exactly(dtype, bias, scale):
    torch.manual_seed(0)
    attn = MemoryAttention(MemoryConfig(dim=16, attn_heads=4)).to(dtype)
    x = torch.randn(2, 3, 16, dtype=dtype)
    with torch.no_grad():
        q = attn._heads(attn.q_proj(x))  # (B, T, H, d): memory keys along the query give large memory logits
        attn.gate.bias.fill_(bias)  # sigmoid underflows to 0 in this dtype; logsigmoid is still finite
    mem_k = (q[:, :, None] * scale / q.abs().amax()).expand(2, 3, 2, 4, 4).contiguous()
    mem_v = torch.randn(2, 3, 2, 4, 4, dtype=dtype)
    out, info = attn(x, mem_k, mem_v, torch.ones(2, 3, 2, dtype=torch.bool))
    plain, _ = attn(x)
    assert (info["gate"] == 0).all()
    assert (info["memory_share"] == 0).all()
    torch.testing.assert_close(out, plain)
