"""Windowed causal transformer controller with a cached incremental forward (MemNet's core).

Every token attends to itself and the W - 1 tokens before it (W = `ModelConfig.window`), whether they came
in this call or in earlier ones: the K/V of the last W - 1 tokens are carried in the state. So the stream can
be fed one token at a time (acting) or in chunks (learning) and gives the same outputs either way.

Positions are rotary (RoPE) on absolute token counts, which only ever enter as differences inside a
window; the angles are reduced modulo 2*pi in float64, so streams of any length keep full precision.

State (tensors only; C = W - 1, S = C + slack columns):
    k<l>, v<l> : (B, H, S, d) per layer l   append buffer of rotated keys / values; the window is the C
                                            columns before `end`, oldest first
    end        : () long                    where this state's window ends in the buffers
    mark       : (1,) long                  how far the buffers have been written (shared by every state
                                            that uses the same buffers)
    pos        : (B,) long                  tokens seen per lane (window columns older than that are empty)

Why an append buffer: copying the whole window every step (torch.cat) costs more than the attention itself
at T = 1 on small CPUs. A call without gradient whose state is the newest on its buffers (end == mark) writes
its K/V in place after `end`; no other state reads those columns, so every state stays valid (states are
never changed, only the unused tail of a shared buffer is). Any other call (with gradient, from an older
state, or a full buffer) starts fresh buffers holding the window + slack. The window K/V carry no gradient
into the next call (truncated BPTT).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.models import ModelConfig


def rotary_tables(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """positions (B, T) long -> cos, sin (B, 1, T, d/2) float32, exact for any position (float64 mod 2*pi)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    angles = torch.remainder(positions.double()[..., None] * inv_freq, 2 * math.pi)  # (B, T, d/2)
    return angles.cos().float()[:, None], angles.sin().float()[:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (..., B, H, T, d) rotated pairwise (first half, second half) by the angles in cos/sin (B, 1, T, d/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


def window_mask(pos: Tensor, T: int, C: int) -> Tensor:
    """Which keys each query may see. pos (B,) tokens seen before the call; C = W - 1 cached slots.

    Keys are [cache (C) ; chunk (T)]; query t may see key i when i lies in [t, t + C] (itself and the C tokens
    before it) and the key is not an empty cache slot (i >= C - pos). Returns (B, 1, T, C + T) bool.
    """
    i = torch.arange(C + T, device=pos.device)
    t = torch.arange(T, device=pos.device)[:, None]
    band = (i >= t) & (i <= t + C)  # (T, C+T)
    filled = i[None, :] >= (C - pos)[:, None]  # (B, C+T)
    return (band[None] & filled[:, None])[:, None]


class WindowAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor, k_buf: Tensor, v_buf: Tensor, window: tuple[int, int], in_place: bool,
                cos: Tensor, sin: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D); k_buf, v_buf (B, H, S, d) with this call's window in columns [start, end);
        mask (B, 1, T, C+T) -> y (B, T, D) and the buffers of the new state."""
        B, T, D = x.shape
        start, end = window
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, d)
        (q, k), v = apply_rotary(qkv[:2], cos, sin), qkv[2]  # one rotation for queries and keys
        if in_place:
            k_buf[:, :, end:end + T] = k
            v_buf[:, :, end:end + T] = v
            keys, values = k_buf[:, :, start:end + T], v_buf[:, :, start:end + T]  # (B, H, C+T, d) views
        else:
            keys = torch.cat((k_buf[:, :, start:end].to(k.dtype), k), dim=2)  # (B, H, C+T, d)
            values = torch.cat((v_buf[:, :, start:end].to(v.dtype), v), dim=2)
            C = end - start
            k_buf, v_buf = _fresh_buffer(keys, k_buf.shape[2], C), _fresh_buffer(values, v_buf.shape[2], C)
        y = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, d)
        return self.proj(y.transpose(1, 2).reshape(B, T, D)), k_buf, v_buf


def _fresh_buffer(kv: Tensor, size: int, window: int) -> Tensor:
    """New (B, H, size, d) float32 buffer whose first `window` columns are the newest of kv (B, H, n, d)."""
    buf = kv.new_zeros(kv.shape[:2] + (size, kv.shape[3]), dtype=torch.float32)
    buf[:, :, :window] = kv[:, :, kv.shape[2] - window:].detach()
    return buf


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = WindowAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, k_buf, v_buf, window, in_place, cos, sin, mask):
        y, k_buf, v_buf = self.attn(self.ln1(x), k_buf, v_buf, window, in_place, cos, sin, mask)
        x = x + self.drop(y)
        return x + self.mlp(self.ln2(x)), k_buf, v_buf


class WindowedTransformer(nn.Module):
    """L pre-LN blocks over a sliding window of W tokens; input and output (B, T, D), no final LayerNorm
    (MemNet applies it after fusing memory reads)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.head_dim = cfg.dim // cfg.heads
        self.context = cfg.window - 1  # C: cached tokens each query sees besides itself
        self.slack = max(cfg.window, 32)  # appends before a buffer is full (>= a learning chunk)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))

    def initial_state(self, batch_size: int, device=None) -> dict[str, Tensor]:
        c = self.cfg
        shape = (batch_size, c.heads, self.context + self.slack, self.head_dim)
        # end / mark stay on the CPU: they are read as Python ints every call (no device sync)
        state = {"pos": torch.zeros(batch_size, dtype=torch.long, device=device),
                 "end": torch.tensor(self.context), "mark": torch.tensor([self.context])}
        for layer in range(c.layers):
            state[f"k{layer}"] = torch.zeros(shape, device=device)
            state[f"v{layer}"] = torch.zeros(shape, device=device)
        return state

    def forward(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) embedded tokens; state as made by initial_state -> h (B, T, D), new state."""
        B, T, _ = x.shape
        pos, C = state["pos"], self.context
        if pos.shape[0] != B:
            raise ValueError(f"state: made for {pos.shape[0]} lanes, but tokens have batch size {B}")
        end, mark, size = int(state["end"]), state["mark"], state["k0"].shape[2]
        in_place = (not torch.is_grad_enabled() and end == int(mark) and end + T <= size
                    and not state["k0"].requires_grad)
        positions = pos[:, None] + torch.arange(T, device=x.device)  # (B, T)
        cos, sin = rotary_tables(positions, self.head_dim)
        mask = window_mask(pos, T, C)
        for layer, block in enumerate(self.blocks):
            x, state_k, state_v = block(x, state[f"k{layer}"], state[f"v{layer}"], (end - C, end), in_place,
                                        cos, sin, mask)
            state = {**state, f"k{layer}": state_k, f"v{layer}": state_v}
        if in_place:
            mark.fill_(end + T)
            new_end, new_mark = end + T, mark
        else:
            new_end, new_mark = C, torch.tensor([C])
        return x, {**state, "pos": pos + T, "end": torch.tensor(new_end), "mark": new_mark}

    def window(self, state: dict[str, Tensor], layer: int) -> tuple[Tensor, Tensor]:
        """The cached keys, values (B, H, W-1, d) of one layer (views; oldest first; columns older than a
        lane's `pos` are empty)."""
        end = int(state["end"])
        return (state[f"k{layer}"][:, :, end - self.context:end], state[f"v{layer}"][:, :, end - self.context:end])

    @staticmethod
    def reset_lanes(state: dict[str, Tensor], lanes: Tensor) -> dict[str, Tensor]:
        """Forget the window of the lanes where `lanes` (B,) bool is True: their position counter restarts at
        0, which marks every cached column empty (masked), so the stale K/V values are never read."""
        return {**state, "pos": torch.where(lanes, torch.zeros_like(state["pos"]), state["pos"])}
