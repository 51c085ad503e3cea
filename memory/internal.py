"""Internal memories: a small set of S learned slots per lane that the controller reads every forward pass
and that is rewritten from the hidden states every forward pass.

Both classes share one call shape (POPGym style, state in and out):

    y, new_state = memory(h, state, update)   # h (B, T, D), state (B, S, D) -> y (B, T, D), (B, S, D)

Reads are block-recurrent: all T tokens read the incoming state (so no token sees its own future), then
the state is updated from the whole block. `update` (B,) bool: lanes with False keep their state
bit-for-bit (e.g. while the environment forbids memory writes); so does every lane on an empty block (T = 0).

- LM2Memory (after LM2, Kang et al. 2025): slots initialised to identity rows, read by cross-attention from
  the hidden states through an output gate; updated with input and forget gates,
  M <- g_in * tanh(U) + g_forget * M, where U is what the slots gather by attending to the block.
- LinformerMemory (after Linformer, Wang et al. 2020): the block is projected onto S slots by a learned
  projection over the sequence (softmax over T), the projected vectors are L2-normalised, and a gated
  update mixes them in: M <- normalise((1 - g) * M + g * Z).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memory.checks import check_batch_size, check_float
from memory.config import MemoryConfig
from memory.persist import atomic_torch_save, checked_torch_load

INTERNAL_STATE_FORMAT = "memstream.internal_state.v1"


class _InternalMemory(nn.Module, ABC):
    """Shared parts: learned initial slots, the cross-attention read, state checks and the update mask."""

    def __init__(self, cfg: MemoryConfig):
        super().__init__()
        self.cfg = cfg
        self.slots, self.dim = cfg.internal_slots, cfg.dim
        self.init_slots = nn.Parameter(_identity_rows(self.slots, self.dim))  # (S, D)
        # the read: every token attends to the S slots
        self.read_attn = nn.MultiheadAttention(cfg.dim, cfg.attn_heads, batch_first=True)

    def initial_state(self, batch_size: int, device=None) -> Tensor:
        """(B, S, D): the initial slots, copied per lane (gradients reach init_slots when the caller keeps them;
        MemNet makes its state without, so there they stay at their initialisation)."""
        batch_size = check_batch_size(batch_size)
        slots = self.init_slots if device is None else self.init_slots.to(device)
        return slots.unsqueeze(0).expand(batch_size, -1, -1).clone()

    def check(self, h: Tensor, state: Tensor, update: Tensor | None) -> Tensor:
        """Validate shapes; return the update mask as (B, 1, 1) bool."""
        if not isinstance(h, Tensor) or h.dim() != 3 or h.shape[2] != self.dim:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"h: expected a tensor of shape (B, T, D={self.dim}), got {shape}")
        check_float(h, "h", self.init_slots)
        B = h.shape[0]
        if not isinstance(state, Tensor) or state.shape != (B, self.slots, self.dim):
            shape = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"state: expected shape (B={B}, S={self.slots}, D={self.dim}) "
                             f"(memory.internal_slots, memory.dim), got {shape}")
        if state.dtype != self.init_slots.dtype:  # failed inside a matmul ("expected m1 and m2 to have the same dtype")
            raise ValueError(f"state is {state.dtype}, the memory computes in {self.init_slots.dtype}: pass the state "
                             f"its initial_state made, or state.to({self.init_slots.dtype})")
        if update is None:
            return torch.ones(B, 1, 1, dtype=torch.bool, device=h.device)
        if not isinstance(update, Tensor) or update.shape != (B,) or update.dtype != torch.bool:
            got = f"{update.dtype} {tuple(update.shape)}" if isinstance(update, Tensor) else type(update).__name__
            raise ValueError(f"update: expected a bool tensor of shape ({B},), got {got}")
        return update.view(B, 1, 1)

    def attend(self, h: Tensor, state: Tensor) -> Tensor:
        """Cross-attention read: h (B, T, D) queries, state (B, S, D) keys/values -> (B, T, D)."""
        return self.read_attn(h, state, state, need_weights=False)[0]

    def forward(self, h: Tensor, state: Tensor, update: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep_mask = self.check(h, state, update)
        y = self.read_out(h, state)  # (B, T, D), reads the incoming state
        new_state = self.updated_state(h, state)  # (B, S, D)
        return y, torch.where(keep_mask, new_state, state)

    @abstractmethod
    def read_out(self, h: Tensor, state: Tensor) -> Tensor:
        """h (B, T, D), incoming state (B, S, D) -> y (B, T, D)."""

    @abstractmethod
    def updated_state(self, h: Tensor, state: Tensor, mask: Tensor | None = None) -> Tensor:
        """h (B, T, D), state (B, S, D) -> the state after this block (B, S, D). mask (B, T) bool: the positions
        that may write (None: all); the others take no part in the update, as if the block were without them (a
        lane with none keeps its state)."""


class LM2Memory(_InternalMemory):
    """LM2-style gated memory. Read: y = sigmoid(W_o h) * Attn(h -> M). Update: the slots attend to the
    block, U = Attn(M -> h) (B, S, D); g_in = sigmoid(W_in U), g_forget = sigmoid(W_f U);
    M <- g_in * tanh(U) + g_forget * M. Gate biases start at forget ~0.73, input ~0.27 so the slots keep most
    of their identity-like start while they learn what to hold."""

    def __init__(self, cfg: MemoryConfig):
        super().__init__(cfg)
        D = cfg.dim
        self.output_gate = nn.Linear(D, D)
        self.update_attn = nn.MultiheadAttention(D, cfg.attn_heads, batch_first=True)
        self.input_gate = nn.Linear(D, D)
        self.forget_gate = nn.Linear(D, D)
        with torch.no_grad():
            self.input_gate.bias.fill_(-1.0)
            self.forget_gate.bias.fill_(1.0)

    def read_out(self, h: Tensor, state: Tensor) -> Tensor:
        return torch.sigmoid(self.output_gate(h)) * self.attend(h, state)

    def slot_summary(self, h: Tensor, state: Tensor, mask: Tensor | None = None) -> Tensor:
        """U (B, S, D): what each slot gathers by attending over the block h (B, T, D), at the positions of `mask`
        (B, T) bool (None: all; a position left out took softmax mass as a zero input: with one writing position
        among seven that may not, the update was 0.55 long against 1.30 for that position alone)."""
        return self.update_attn(state, h, h, key_padding_mask=_left_out(mask), need_weights=False)[0]

    def updated_state(self, h: Tensor, state: Tensor, mask: Tensor | None = None) -> Tensor:
        if h.shape[1] == 0:  # an empty block brings nothing: U would be 0 and the forget gate still shrink M
            return state
        u = self.slot_summary(h, state, mask)  # (B, S, D)
        new = torch.sigmoid(self.input_gate(u)) * torch.tanh(u) + torch.sigmoid(self.forget_gate(u)) * state
        return new if mask is None else torch.where(mask.any(1)[:, None, None], new, state)


class LinformerMemory(_InternalMemory):
    """Linformer-style implicit memory. The block is projected onto the S slots, Z = softmax_T(h W_p)^T h
    (B, S, D), L2-normalised; a gate g = sigmoid(W_g [Z, M]) mixes it in: M <- normalise((1 - g) M + g Z).
    Read: y = W_y Attn(h -> M). Slots stay unit vectors, so the state cannot grow over a long stream."""

    def __init__(self, cfg: MemoryConfig):
        super().__init__(cfg)
        D = cfg.dim
        with torch.no_grad():
            self.init_slots.copy_(F.normalize(self.init_slots, dim=-1))
        self.seq_proj = nn.Linear(D, cfg.internal_slots)  # per-token score for each slot
        self.update_gate = nn.Linear(2 * D, D)
        self.out = nn.Linear(D, D)

    def read_out(self, h: Tensor, state: Tensor) -> Tensor:
        return self.out(self.attend(h, state))

    def slot_summary(self, h: Tensor, state: Tensor, mask: Tensor | None = None) -> Tensor:
        """Z (B, S, D): the block h (B, T, D) at the positions of `mask` (B, T) bool (None: all) projected onto the S
        slots, each row L2-normalised."""
        scores = self.seq_proj(h)  # (B, T, S)
        if (out := _left_out(mask)) is not None:
            scores = scores.masked_fill(out[..., None], -torch.inf)
        proj = scores.softmax(dim=1)  # (B, T, S), each slot's weights over the T tokens
        return F.normalize(torch.einsum("bts,btd->bsd", proj, h), dim=-1)

    def updated_state(self, h: Tensor, state: Tensor, mask: Tensor | None = None) -> Tensor:
        if h.shape[1] == 0:  # an empty block brings nothing: Z would be 0 and the per-channel gate still turn M
            return state
        z = self.slot_summary(h, state, mask)  # (B, S, D)
        g = torch.sigmoid(self.update_gate(torch.cat([z, state], dim=-1)))  # (B, S, D)
        new = F.normalize((1.0 - g) * state + g * z, dim=-1)
        return new if mask is None else torch.where(mask.any(1)[:, None, None], new, state)


def _left_out(mask: Tensor | None) -> Tensor | None:
    """(B, T) bool: the positions an update leaves out (~mask), or None to leave none out. A lane with no position
    in `mask` keeps all (its update is discarded by `updated_state`; all left out, the softmax would be NaN, and
    a NaN in the discarded branch of a where still poisons the gradient)."""
    if mask is None:
        return None
    return ~mask & mask.any(dim=1, keepdim=True)


def build_internal_memory(cfg: MemoryConfig) -> nn.Module | None:
    """The internal memory that cfg.internal names, or None for "none"."""
    kinds = {"none": None, "lm2": LM2Memory, "linformer": LinformerMemory}
    if cfg.internal not in kinds:
        raise ValueError(f"memory.internal={cfg.internal!r}: choose one of {tuple(kinds)}")
    cls = kinds[cfg.internal]
    return None if cls is None else cls(cfg)


def save_internal_state(path: str | os.PathLike, state: Tensor) -> None:
    """Write an internal-memory state (B, S, D) atomically. Anything else is refused before anything is written
    (a (S, D) state saved without its lane dimension could not be loaded)."""
    if not isinstance(state, Tensor):
        raise TypeError(f"save_internal_state: state must be a (B, S, D) tensor (the state a memory returns), got "
                        f"{type(state).__name__}")
    if state.dim() != 3 or not state.is_floating_point():
        raise ValueError(f"save_internal_state: state is {state.dtype} {tuple(state.shape)}, expected a floating "
                         "(B, S, D) tensor (memory.initial_state(B) or the state a memory call returns)")
    atomic_torch_save({"format": INTERNAL_STATE_FORMAT, "state": state.detach()}, path)


def load_internal_state(path: str | os.PathLike, memory: _InternalMemory) -> Tensor:
    """Read a state written by `save_internal_state`; it must fit `memory` (internal_slots, dim)."""
    state = checked_torch_load(path, "internal memory state", INTERNAL_STATE_FORMAT,
                               writer="save_internal_state").get("state")
    if not isinstance(state, Tensor) or not state.is_floating_point():
        raise ValueError(f"internal memory state file {os.fspath(path)!r}: no floating 'state' tensor in it (damaged)")
    if state.dim() != 3 or state.shape[1:] != (memory.slots, memory.dim):
        raise ValueError(f"internal memory state file {os.fspath(path)!r}: shape {tuple(state.shape)}, expected "
                         f"(B, {memory.slots}, {memory.dim}) (memory.internal_slots, memory.dim)")
    dtype = next(memory.parameters()).dtype  # (a float64 state loaded, then failed inside the memory's first call)
    if state.dtype != dtype:
        raise ValueError(f"internal memory state file {os.fspath(path)!r}: the state is {state.dtype}, this memory "
                         f"computes in {dtype}; save a state this memory made")
    if not bool(torch.isfinite(state).all()):
        raise ValueError(f"internal memory state file {os.fspath(path)!r} is damaged: its state holds NaN or inf")
    return state


def _identity_rows(rows: int, dim: int) -> Tensor:
    """(rows, dim) identity-like start: slot i is the unit vector e_(i mod dim), and slots past `dim`
    get a small random part so no two slots are equal."""
    base = torch.eye(dim)[torch.arange(rows) % dim]
    extra = (torch.arange(rows) >= dim).float().unsqueeze(1) * torch.randn(rows, dim) / math.sqrt(dim)
    return base + 0.1 * extra
