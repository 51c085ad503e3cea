"""Memory attention: causal self-attention that also attends over retrieved memory keys/values.

`MemoryAttention` puts each query's own causal context and its M retrieved memories into one softmax
(Memorizing-Transformers style, but joint rather than two separate attentions mixed afterwards). A
learnable, input-dependent gate g = sigmoid(W x + b) per token and head adds log(g) to the memory logits,
so g -> 0 removes memory exactly and masked memories (-inf) leave plain causal attention unchanged.
`MemoryAugmentedLayer`, a pre-LN transformer block around it, and `MemoryAugmentedTransformer`, a stack of
them over token embeddings, are in `memory/augmented.py`. Fusion of other memory reads lives in
`memory/fusion.py`, the store + cache adapter in `memory/retrieval.py`.

Cached memory K/V come from `project_kv` at write time; if the projections keep training, old entries
drift from what the layer would compute now (as in Memorizing Transformers). MemNet avoids that by caching
the projections' inputs and passing the retrieved ones as they are (`mem_inputs`): the current weights project
them, folded into the query (`forward` says how).

Recency: with ages given (steps between a key's position and the query), every logit gets
-softplus(r_h) log(1 + age), a learned per-head slope on log-age (ALiBi on a log scale). Among keys that match
equally (the same context seen twice with different successors), the latest wins; the log keeps a memory
thousands of steps old reachable when it is the only match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memory.checks import check_float, check_tensor
from memory.config import MemoryConfig

RECENCY_SLOPES = (0.5, 4.0)  # initial softplus(r_h): geometric from the first head to the last (ALiBi-like)


def recency_slopes(heads: int) -> Tensor:
    """(heads,) initial recency slopes, geometric from RECENCY_SLOPES[0] to [1] (one head: their geometric mean)."""
    lo, hi = (math.log(v) for v in RECENCY_SLOPES)
    if heads == 1:
        return torch.tensor([math.exp((lo + hi) / 2)])
    return torch.exp(torch.linspace(lo, hi, heads))


def causal_mask(T: int, device=None) -> Tensor:
    """(T, T) bool, True where query t may attend to key s (s <= t)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


class MemoryAttention(nn.Module):
    """Multi-head attention over [causal context ; per-query memories] with a memory gate.

    D = cfg.dim, H = cfg.attn_heads, d = cfg.head_dim (H * d = D). Queries and keys are projected from inputs of
    width `query_in` and `key_in` (default D; wider when they are made of several positions' inputs).
    """

    def __init__(self, cfg: MemoryConfig, dropout: float = 0.0, key_in: int | None = None,
                 query_in: int | None = None):
        super().__init__()
        if cfg.dim % cfg.attn_heads:  # MemoryConfig checks it only where a part attends (not with store=false)
            raise ValueError(f"memory.attn_heads={cfg.attn_heads}: must divide memory.dim={cfg.dim}")
        # 0 was taken as the default width (`key_in or D`), -1 and 2.5 failed inside nn.Linear
        for name, width in (("key_in", key_in), ("query_in", query_in)):
            if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
                raise ValueError(f"MemoryAttention: {name}={width!r}: must be an int >= 1 (the width of the inputs "
                                 "it is projected from) or None (memory.dim)")
        self.heads, self.head_dim = cfg.attn_heads, cfg.head_dim
        inner = self.heads * self.head_dim
        self.q_proj = nn.Linear(cfg.dim if query_in is None else query_in, inner, bias=False)
        self.k_proj = nn.Linear(cfg.dim if key_in is None else key_in, inner, bias=False)
        self.v_proj = nn.Linear(cfg.dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, cfg.dim)
        self.gate = nn.Linear(cfg.dim, self.heads)  # memory gate logit per token and head
        # heads start at different time scales, slopes 0.5 ... 4 (geometric): a far-reaching head recalls across
        # thousands of steps, a sharp one lets the latest of equal matches win (a memory 10x older needs a ~9
        # higher logit there). One shared slope of 1 left the in-window latest-wins and far recall both short.
        self.recency = nn.Parameter(torch.log(torch.expm1(recency_slopes(self.heads))))
        nn.init.zeros_(self.gate.weight)  # starts at g = 0.5 for every token: memory half-weighted
        nn.init.zeros_(self.gate.bias)
        # "probs" (the copy read-out's pointer) mixes the heads by a learned softmax (uniform at the start): a head
        # whose time scale is wrong for the task (a steep one for memories 95 steps back puts its weight on the
        # window) can be turned down instead of always holding 1/H of the pointer. One weight per head: a
        # token-dependent mix (softmax(W x + b)) cost LongDependency ~0.03 (README)
        self.head_mix = nn.Parameter(torch.zeros(self.heads))  # zeros: no draw from the RNG
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim))  # (..., H*d) -> (..., H, d)

    def project_kv(self, h: Tensor, key_input: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """h (..., D) -> k, v (..., H, d): what TieredKVCache stores for a memory. Keys are projected from
        `key_input` (..., key_in) when given (e.g. smeared keys: earlier positions' inputs), else from h."""
        self._check_width(h, "h", self.v_proj)
        check_float(h, "h", self.v_proj.weight)
        self._check_width(h if key_input is None else key_input, "h" if key_input is None else "key_input",
                          self.k_proj)  # keys read key_input (key_in wide) when given
        if key_input is not None:
            check_float(key_input, "key_input", self.k_proj.weight)
        return self._heads(self.k_proj(h if key_input is None else key_input)), self._heads(self.v_proj(h))

    def forward(self, x: Tensor, mem_k: Tensor | None = None, mem_v: Tensor | None = None,
                mem_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                context: Tensor | None = None, key_input: Tensor | None = None,
                return_probs: bool = False, context_age: Tensor | None = None,
                mem_age: Tensor | None = None, query_input: Tensor | None = None,
                queries_in_context: bool = False, mem_inputs: bool = False) -> tuple[Tensor, dict]:
        """x (B, T, D); mem_k, mem_v (B, T, M, H, d); mem_mask (B, T, M) bool (True = present);
        context (B, C, D): earlier inputs that give keys and values but no queries (a cached window; C = 0 if
        None); attn_mask (T, C+T) or (B, 1, T, C+T) bool over [context ; x] (True = allowed, default causal
        over x, all of the context); key_input (B, C+T, key_in): what the keys of [context ; x] are projected from
        (default [context ; x] itself, see `project_kv`); query_input (B, T, query_in): what the queries are
        projected from (default x; the gate always reads x); context_age (T, C+T) or (B, T, C+T) and mem_age
        (B, T, M): steps from each key's position to the query (None = no recency term; ages below 0, as at
        positions after the query that attn_mask hides, count as 0).
        queries_in_context: the context already holds the queries' own positions (keys and values come from it
        alone, S = C; attn_mask is then required), so a few queries can be answered over a longer sequence.
        mem_inputs: mem_k, mem_v are the memories' key inputs (B, T, M, key_in) and inputs (B, T, M, D), what
        `project_kv` would project (a cache of inputs read with today's weights, as MemNet's).
        Returns out (B, T, D) and info with "memory_share"
        (B, T): attention mass on memory (after the gate, mean over heads) and "gate" (B, T, H); with
        `return_probs` also "probs" (B, T, S+M), S = C+T: the attention weights over [context ; x ; memories], mixed
        over heads by a learned softmax, one weight per head (M = 0 without memories), e.g. for a copy
        distribution over what those positions hold."""
        check_tensor(x, "MemoryAttention: x")  # (a numpy x was told its own, right shape was wrong)
        if x.dim() != 3:  # (a (B, D) x failed to unpack its shape)
            raise ValueError(f"MemoryAttention: x must be (B, T, D), got {x.shape}")
        self._check_width(x, "x", self.v_proj)  # a wrong width failed inside a matmul, naming no argument
        check_float(x, "x", self.q_proj.weight)
        for t, name, proj in ((context, "context", self.v_proj), (key_input, "key_input", self.k_proj),
                              (query_input, "query_input", self.q_proj)):
            if t is not None:
                self._check_width(t, name, proj)
        if query_input is not None:  # projected as it is (context and key_input are cast to x's dtype)
            check_float(query_input, "query_input", self.q_proj.weight)
        if mem_k is None and (mem_v is not None or mem_mask is not None or mem_age is not None):
            # the memories are mem_k's: without it the others were silently dropped (plain causal attention)
            raise ValueError("MemoryAttention: mem_v, mem_mask and mem_age describe the memories in mem_k: pass "
                             "mem_k with them (or none of them for no memory)")
        B, T, _ = x.shape
        if context is not None and context.dim() != 3:  # (a (C, D) context took C = D)
            raise ValueError(f"MemoryAttention: context must be (B={B}, C, D), got {tuple(context.shape)}")
        C = 0 if context is None else context.shape[1]
        S = C if queries_in_context else C + T  # keys and values: [context ; x], or the context alone
        for t, name, want in ((context, "context", (B, C)), (key_input, "key_input", (B, S)),
                              (query_input, "query_input", (B, T))):  # a batch of 1 was broadcast over the lanes
            if t is not None and (t.dim() != 3 or tuple(t.shape[:2]) != want):
                raise ValueError(f"MemoryAttention: {name} must be ({want[0]}, {want[1]}, {t.shape[-1]}), got "
                                 f"{tuple(t.shape)}")
        if queries_in_context and (context is None or attn_mask is None):
            raise ValueError("MemoryAttention: queries_in_context needs the context and an attn_mask")
        scale = self.head_dim ** -0.5
        q = self._heads(self.q_proj(x if query_input is None else query_input)).transpose(1, 2)  # (B, H, T, d)
        seq = x if context is None else (context.to(x.dtype) if queries_in_context
                                         else torch.cat((context.to(x.dtype), x), dim=1))  # (B, S, D)
        # Folding (few queries over many positions, or memories met by one query each): W_k and W_v act on the
        # queries and the attention-mixed inputs instead of on every key and value, q.(W_k s) = (W_k^T q).s and
        # sum_i p_i W_v x_i = W_v (sum_i p_i x_i) per head (k_proj, v_proj have no bias). The same values as
        # projecting up to rounding, ~d / T times fewer multiplies for the context, ~d for memories: an acting
        # call (1 query over the 66 positions of [window ; call] and 8 memories) went from 8.0 to 6.8 ms.
        if queries_in_context or mem_inputs:
            w_k = self.k_proj.weight.view(self.heads, self.head_dim, -1).to(q.dtype)  # (H, d, key_in)
            w_v = self.v_proj.weight.view(self.heads, self.head_dim, -1).to(q.dtype)  # (H, d, D)
            q_in = torch.einsum("bhtd,hdk->bhtk", q, w_k)  # (B, H, T, key_in): W_k^T q per head
        if queries_in_context:
            kin = (seq if key_input is None else key_input).to(q.dtype)  # (B, S, key_in)
            logits = (q_in.flatten(1, 2) @ kin.transpose(1, 2)).view(B, self.heads, T, S)  # (B, H, T, S)
        else:
            k, v = (t.transpose(1, 2) for t in self.project_kv(seq, key_input))  # (B, H, S, d)
            logits = q @ k.transpose(-1, -2)  # (B, H, T, S)
        if attn_mask is None:
            attn_mask = torch.cat((torch.ones(T, C, dtype=torch.bool, device=x.device),
                                   causal_mask(T, x.device)), dim=1)
        if attn_mask.shape not in ((T, S), (B, 1, T, S)) or attn_mask.dtype != torch.bool:
            raise ValueError(f"MemoryAttention: attn_mask must be a ({T}, {S}) or ({B}, 1, {T}, {S}) bool "
                             f"tensor, got {tuple(attn_mask.shape)} {attn_mask.dtype}")
        logits = logits * scale
        if context_age is not None:
            if not isinstance(context_age, Tensor) or context_age.shape not in ((T, S), (B, T, S)):
                got = getattr(context_age, "shape", type(context_age).__name__)
                raise ValueError(f"MemoryAttention: context_age must be ({T}, {S}) or ({B}, {T}, {S}) (query, key "
                                 f"over [context ; x]), got {got}")
            logits = logits - self._recency_bias(context_age.expand(B, T, S)).to(logits.dtype)
        logits = logits.masked_fill(~attn_mask, -torch.inf)
        gate_logit = self.gate(x)  # (B, T, H)
        gate = torch.sigmoid(gate_logit)
        if mem_k is not None:
            self._check_memory(x, mem_k, mem_v, mem_mask, mem_inputs)
            mem_logits = (torch.einsum("bhtk,btmk->bhtm", q_in, mem_k.to(q.dtype)) if mem_inputs
                          else torch.einsum("bhtd,btmhd->bhtm", q, mem_k)) * scale  # (B, H, T, M)
            # log g, and -inf where g = sigmoid(gate logit) is 0 in the working dtype (float32 below ~-104, float16
            # below ~-17): logsigmoid stays finite there, and a memory logit that large still won weight while
            # info["gate"] said 0
            log_gate = F.logsigmoid(gate_logit).masked_fill(gate == 0, -torch.inf)
            mem_logits = mem_logits + log_gate.transpose(1, 2)[..., None]
            if mem_age is not None:
                if not isinstance(mem_age, Tensor) or mem_age.shape != mem_k.shape[:3]:
                    raise ValueError(f"MemoryAttention: mem_age must be (B, T, M) = {tuple(mem_k.shape[:3])}, got "
                                     f"{getattr(mem_age, 'shape', type(mem_age).__name__)}")
                mem_logits = mem_logits - self._recency_bias(mem_age).to(mem_logits.dtype)
            if mem_mask is not None:
                mem_logits = mem_logits.masked_fill(~mem_mask[:, None], -torch.inf)
            logits = torch.cat([logits, mem_logits], dim=-1)  # (B, H, T, S + M)
        weights = self._softmax(logits)  # (B, H, T, S (+ M)): the attention mass, what share and probs report
        probs = self.dropout(weights)  # what mixes the values (rescaled by 1 / (1 - p) where dropout keeps)
        ctx_p, mem_p = probs[..., :S], probs[..., S:]
        out, mixed = None, None  # (B, H, T, d) read of projected values, (B, H, T, D) mixed inputs (folded)
        if queries_in_context:
            mixed = (ctx_p.flatten(1, 2) @ seq.to(probs.dtype)).view(B, self.heads, T, -1)  # sum_i p_i x_i
        else:
            out = ctx_p @ v
        if mem_k is not None:
            if mem_inputs:
                mem_mixed = torch.einsum("bhtm,btmD->bhtD", mem_p, mem_v.to(probs.dtype))  # (B, H, T, D)
                mixed = mem_mixed if mixed is None else mixed + mem_mixed
            else:
                mem_out = torch.einsum("bhtm,btmhd->bhtd", mem_p, mem_v)  # (B, H, T, d)
                out = mem_out if out is None else out + mem_out
        if mixed is not None:
            folded = torch.einsum("bhtD,hdD->bhtd", mixed, w_v.to(mixed.dtype))  # (B, H, T, d): W_v per head
            out = folded if out is None else out + folded
        share = weights[..., S:].sum(-1).mean(1) if mem_k is not None else x.new_zeros(B, T)  # (B, T)
        out = self.out_proj(out.transpose(1, 2).flatten(2))  # (B, T, D)
        info = {"memory_share": share, "gate": gate}
        if return_probs:
            mix = torch.softmax(self.head_mix.float(), -1)[None, :, None, None]  # (1, H, 1, 1)
            info["probs"] = (weights * mix.to(weights.dtype)).sum(1)  # (B, T, S(+M))
        return out, info

    def _recency_bias(self, age: Tensor) -> Tensor:
        """age (B, T, S) steps -> (B, H, T, S) float32: softplus(r_h) log(1 + age), subtracted from the logits."""
        slope = F.softplus(self.recency.float())  # (H,)
        # the clamp: masked later positions come with negative ages, and log1p(< -1) is NaN in the gradient too
        return slope[None, :, None, None] * torch.log1p(age.float().clamp(min=0))[:, None]

    @staticmethod
    def _softmax(logits: Tensor) -> Tensor:
        """Attention weights; a query with nothing allowed attends to nothing (its NaN row becomes zeros). Dropout
        is applied by the caller to the values' mix only: shares and the copy pointer are the mass itself (they
        summed above 1 and drifted with dropout on)."""
        return torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)

    def _check_width(self, t: Tensor, name: str, proj: nn.Linear) -> None:
        """`t` is a floating tensor whose last dimension is what `proj` reads, or one ValueError line."""
        check_tensor(t, f"MemoryAttention: {name}")  # (a numpy array read as a wrong width: "got shape ndarray")
        if t.dim() == 0 or t.shape[-1] != proj.in_features:
            raise ValueError(f"MemoryAttention: {name}'s last dimension must be {proj.in_features}, got shape "
                             f"{tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"MemoryAttention: {name} must be a floating tensor, got {t.dtype}")

    def _check_memory(self, x: Tensor, mem_k: Tensor, mem_v: Tensor | None, mem_mask: Tensor | None,
                      mem_inputs: bool) -> None:
        B, T, _ = x.shape
        for t, name in ((mem_k, "mem_k"), (mem_v, "mem_v"), (mem_mask, "mem_mask")):  # numpy failed on .dim()
            if t is not None:
                check_tensor(t, f"MemoryAttention: {name}")
        M = mem_k.shape[2] if mem_k.dim() >= 3 else -1
        if mem_inputs:  # the memories' key inputs and inputs, projected by folding
            k_want, v_want = (B, T, M, self.k_proj.in_features), (B, T, M, self.v_proj.in_features)
            what = "with mem_inputs, mem_k and mem_v must be (B, T, M, key_in) and (B, T, M, D)"
        else:
            k_want = v_want = (B, T, M, self.heads, self.head_dim)
            what = "mem_k and mem_v must both be (B, T, M, H, d)"
        if mem_v is None or mem_k.shape != k_want or mem_v.shape != v_want:
            got = (tuple(mem_k.shape), None if mem_v is None else tuple(mem_v.shape))
            raise ValueError(f"MemoryAttention: {what} = {k_want}, {v_want}; got {got}")
        check_float(mem_k, "mem_k", self.k_proj.weight)  # float64 memories failed inside a matmul
        check_float(mem_v, "mem_v", self.v_proj.weight)
        if mem_mask is not None and (mem_mask.shape != (B, T, M) or mem_mask.dtype != torch.bool):
            raise ValueError(f"MemoryAttention: mem_mask must be a {(B, T, M)} bool tensor, got "
                             f"{tuple(mem_mask.shape)} {mem_mask.dtype}")
