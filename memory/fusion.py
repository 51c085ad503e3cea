"""Fusion of R memory reads into the controller's hidden state (strategy chosen by `MemoryConfig.fusion`).

- "concat": h + W [h ; r_1 ; ... ; r_R]: one linear map over everything (cheap, no interaction terms).
- "gated": h + sum_r sigmoid(G_r [h ; r_r]) * (W_r r_r): each source has its own element-wise gate, so the
  controller can shut a source off per token (e.g. an empty store early in a run).
- "cross_attention": h attends over the R reads (plus a learned source embedding so heads can tell the
  sources apart): h + MHA(q = h, k = v = reads + e_r).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from memory.checks import check_float
from memory.config import FUSIONS, MemoryConfig


class Fusion(nn.Module):
    """h (B, T, D), reads (B, T, R, D) -> (B, T, D). R = num_sources, D = cfg.dim."""

    def __init__(self, cfg: MemoryConfig, num_sources: int):
        super().__init__()
        if isinstance(num_sources, bool) or not isinstance(num_sources, numbers.Integral) or num_sources < 1:
            raise ValueError(f"Fusion: num_sources={num_sources!r}: must be an int >= 1")  # True: randn failed
        num_sources = int(num_sources)  # numpy's too
        if cfg.fusion not in FUSIONS:
            raise ValueError(f"Fusion: fusion={cfg.fusion!r}: choose one of {FUSIONS}")
        self.strategy, self.num_sources, self.dim, D, R = cfg.fusion, num_sources, cfg.dim, cfg.dim, num_sources
        if self.strategy == "concat":
            self.proj = nn.Linear((R + 1) * D, D)
        elif self.strategy == "gated":
            self.read_w = nn.Parameter(torch.randn(R, D, D) * D ** -0.5)  # W_r
            self.gate_w = nn.Parameter(torch.randn(R, 2 * D, D) * (2 * D) ** -0.5)  # G_r
            self.gate_b = nn.Parameter(torch.zeros(R, D))
        else:
            if D % cfg.attn_heads:  # MemoryConfig checks it only where something attends (not with slots=0 alone)
                raise ValueError(f"Fusion: memory.attn_heads={cfg.attn_heads}: must divide memory.dim={D} "
                                 "(fusion=cross_attention attends over the reads with them)")
            self.source_emb = nn.Parameter(torch.zeros(R, D))
            self.attn = nn.MultiheadAttention(D, cfg.attn_heads, batch_first=True)

    def forward(self, h: Tensor, reads: Tensor) -> Tensor:
        if not isinstance(h, Tensor) or h.dim() != 3 or h.shape[-1] != self.dim:
            raise ValueError(f"Fusion: h must be (B, T, D={self.dim}), got {_shape(h)}")
        B, T, D = h.shape
        if not isinstance(reads, Tensor) or reads.shape != (B, T, self.num_sources, D):
            raise ValueError(f"Fusion: reads must be (B, T, R, D) = {(B, T, self.num_sources, D)}, got {_shape(reads)}")
        weight = next(self.parameters())  # every strategy's parameters share one dtype
        check_float(h, "h", weight)  # float64 or integer inputs failed inside a matmul, worded per strategy
        check_float(reads, "reads", weight)
        if self.strategy == "concat":
            return h + self.proj(torch.cat([h, reads.flatten(2)], dim=-1))
        if self.strategy == "gated":
            both = torch.cat([h[:, :, None].expand_as(reads), reads], dim=-1)  # (B, T, R, 2D)
            gate = torch.sigmoid(torch.einsum("btri,rio->btro", both, self.gate_w) + self.gate_b)  # (B, T, R, D)
            content = torch.einsum("btri,rio->btro", reads, self.read_w)  # (B, T, R, D)
            return h + (gate * content).sum(dim=2)
        q = h.reshape(B * T, 1, D)
        kv = (reads + self.source_emb).reshape(B * T, self.num_sources, D)
        out, _ = self.attn(q, kv, kv, need_weights=False)  # (B*T, 1, D)
        return h + out.reshape(B, T, D)


def _shape(t) -> tuple | str:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
