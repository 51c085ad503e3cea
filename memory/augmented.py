"""Transformer blocks around `MemoryAttention` (memory/attention.py): `MemoryAugmentedLayer`, a pre-LN block that
drops into a transformer, and `MemoryAugmentedTransformer`, a stack of them over token embeddings whose chosen layers
read memory K/V given directly or fetched by a `retrieve(h)` callable (e.g. `memory.retrieval.retrieve_memory_kv`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from memory.attention import MemoryAttention
from memory.config import MemoryConfig

MemoryKV = tuple[Tensor, Tensor, Tensor]  # mem_k, mem_v (B, T, M, H, d), mem_mask (B, T, M)


class MemoryAugmentedLayer(nn.Module):
    """Pre-LN transformer block: x + MemoryAttention(LN(x), memory), then x + MLP(LN(x))."""

    def __init__(self, cfg: MemoryConfig, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.dim)
        self.attn = MemoryAttention(cfg, dropout)
        self.ln_mlp = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, mlp_ratio * cfg.dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * cfg.dim, cfg.dim), nn.Dropout(dropout))

    def project_kv(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (..., D) block input -> k, v (..., H, d), computed exactly as the block computes its context."""
        return self.attn.project_kv(self.ln_attn(h))

    def forward(self, x: Tensor, mem_k: Tensor | None = None, mem_v: Tensor | None = None,
                mem_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> tuple[Tensor, dict]:
        """x (B, T, D) -> (B, T, D), info from MemoryAttention."""
        a, info = self.attn(self.ln_attn(x), mem_k, mem_v, mem_mask, attn_mask)
        x = x + a
        return x + self.mlp(self.ln_mlp(x)), info


class MemoryAugmentedTransformer(nn.Module):
    """Token embeddings + learned positions -> n_layers MemoryAugmentedLayers -> LN -> logits.

    Memory enters the layers listed in `memory_layers` (default: the last one, where Memorizing
    Transformers put their kNN layer). Either pass memory K/V directly or a `retrieve(h)` callable that maps
    the first memory layer's input h (B, T, D) to (mem_k, mem_v, mem_mask, ...) (further items are ignored) —
    e.g. `lambda h: retrieve_memory_kv(store, cache, h, k)`, which adds the ids.
    """

    def __init__(self, cfg: MemoryConfig, vocab: int, n_layers: int = 2, max_len: int = 512,
                 memory_layers: tuple[int, ...] | None = None, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        # mlp_ratio=0 built zero-width MLPs without a word
        for name, v in (("vocab", vocab), ("n_layers", n_layers), ("max_len", max_len), ("mlp_ratio", mlp_ratio)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:  # True made a 1-token vocabulary
                raise ValueError(f"MemoryAugmentedTransformer: {name}={v!r}: must be an int >= 1")
        if isinstance(memory_layers, int):  # a bare 3 failed with "'int' object is not iterable"
            raise ValueError(f"MemoryAugmentedTransformer: memory_layers={memory_layers!r}: must be a tuple of layer "
                             f"indices, e.g. ({memory_layers},)")
        self.memory_layers = tuple(memory_layers) if memory_layers is not None else (n_layers - 1,)
        if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < n_layers
               for i in self.memory_layers):  # numpy ints too, as before
            raise ValueError(f"MemoryAugmentedTransformer: memory_layers={self.memory_layers}: each must lie in "
                             f"[0, {n_layers})")
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab, cfg.dim)
        self.pos_emb = nn.Embedding(max_len, cfg.dim)
        self.layers = nn.ModuleList(MemoryAugmentedLayer(cfg, mlp_ratio, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, vocab, bias=False)

    def forward(self, tokens: Tensor, mem_k: Tensor | None = None, mem_v: Tensor | None = None,
                mem_mask: Tensor | None = None, retrieve: Callable[[Tensor], MemoryKV] | None = None
                ) -> tuple[Tensor, dict]:
        """tokens (B, T) int64 -> logits (B, T, vocab), info: "hidden" (B, T, D) final hidden state,
        "memory_queries" (B, T, D) input of the first memory layer, "memory_share" (B, T) mean over
        memory layers."""
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"MemoryAugmentedTransformer: tokens must be a (B, T) int64 tensor, got {got}")
        B, T = tokens.shape
        if T > self.max_len:
            raise ValueError(f"MemoryAugmentedTransformer: sequence length {T} exceeds max_len={self.max_len}")
        vocab = self.tok_emb.num_embeddings
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < vocab:  # IndexError in the embedding
            raise ValueError(f"MemoryAugmentedTransformer: tokens must lie in [0, {vocab}) (vocab={vocab}), got "
                             f"min {int(tokens.min())} max {int(tokens.max())}")
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(T, device=tokens.device))  # (B, T, D)
        shares, queries = [], None
        for i, layer in enumerate(self.layers):
            if i in self.memory_layers:
                if queries is None:
                    queries = x
                    if retrieve is not None:
                        mem_k, mem_v, mem_mask = retrieve(x)[:3]  # retrieve_memory_kv adds the ids
                x, info = layer(x, mem_k, mem_v, mem_mask)
                shares.append(info["memory_share"])
            else:
                x, _ = layer(x)
        hidden = self.ln_f(x)
        share = torch.stack(shares).mean(0) if shares else x.new_zeros(B, T)
        return self.head(hidden), {"hidden": hidden, "memory_queries": queries, "memory_share": share}
