"""Regularisers for the slot bank: utilisation, memory pressure, read sparsity.

Pure functions of what a step's read / write touched (ReadInfo, WriteInfo) and of the SlotState; each
returns a scalar tensor that carries gradient back into the bank's parameters and the controller.
`memory_regularisers` weighs them with the `*_weight` fields of MemoryConfig.
"""

from __future__ import annotations

import torch
from torch import Tensor

from memory.config import MemoryConfig
from memory.slots import ReadInfo, SlotState, WriteInfo

EPS = 1e-8


def addressing_distribution(read_info: ReadInfo, n_slots: int) -> Tensor:
    """Mean addressing weight per slot, per lane: (B, N), each row sums to 1 (0 if nothing was read).

    Every (query, head) row of weights (B, Q, H, k) is scattered onto the N slots and averaged."""
    w = read_info.weights  # (B, Q, H, k)
    B = w.shape[0]
    mass = w.new_zeros(B, n_slots).scatter_add(1, read_info.slot_ids.reshape(B, -1), w.reshape(B, -1))  # (B, N)
    return mass / mass.sum(dim=1, keepdim=True).clamp(min=EPS)


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """-sum p log(p + eps) along `dim` (nats)."""
    return -(p * torch.log(p + EPS)).sum(dim=dim)


def utilisation_loss(read_info: ReadInfo, n_slots: int) -> Tensor:
    """Negative entropy of the mean addressing weights w over the N slots, averaged over lanes.

    The seed wrote L_util = -sum_i w_i log(w_i + eps); that expression is the entropy H(w) itself, and
    minimising it would push every read onto one slot. The intent is the opposite (use all slots), so the
    loss here is L_util = -H(w) = sum_i w_i log(w_i + eps): minimising it raises the addressing entropy.
    Range [-log N, 0]."""
    return -entropy(addressing_distribution(read_info, n_slots)).mean()


def pressure_loss(write_info: WriteInfo, state: SlotState) -> Tensor:
    """Global memory pressure = write intensity + occupancy, each in [0, 1].

    write intensity: mean write gate over the writes that were offered (unmasked, slot_ids >= 0);
    occupancy: mean over lanes and slots of tanh(rms(slot)), a smooth "how much content is held" that
    falls as decay and erasure empty slots. Minimising it makes the bank write less and keep less."""
    landed = (write_info.slot_ids >= 0).to(write_info.gate.dtype)  # (B, M)
    intensity = (write_info.gate * landed).sum() / landed.sum().clamp(min=1.0)
    rms = state.memory.pow(2).mean(dim=-1).add(EPS).sqrt()  # (B, N)
    return intensity + torch.tanh(rms).mean()


def read_sparsity_loss(read_info: ReadInfo) -> Tensor:
    """Mean entropy (nats) of each head's weights over its k selected slots; minimising it sharpens reads.
    Heads that selected only empty slots (all-zero weights) contribute 0. Range [0, log k]; 0 when nothing was read
    (a T = 0 block: the mean of no entropies was NaN, which made the whole loss NaN)."""
    per_head = entropy(read_info.weights)  # (B, Q, H)
    return per_head.mean() if per_head.numel() else per_head.sum()


def memory_regularisers(cfg: MemoryConfig, read_info: ReadInfo | None, write_info: WriteInfo | None,
                        state: SlotState) -> dict[str, Tensor]:
    """Weighted terms {"util", "pressure", "sparsity"} to add to the task loss.

    A term whose weight is 0 (or whose input is None) is a zero tensor and costs nothing."""
    zero = state.memory.new_zeros(())
    terms = {"util": zero, "pressure": zero, "sparsity": zero}
    if cfg.util_weight > 0 and read_info is not None:
        terms["util"] = cfg.util_weight * utilisation_loss(read_info, state.memory.shape[1])
    if cfg.pressure_weight > 0 and write_info is not None:
        terms["pressure"] = cfg.pressure_weight * pressure_loss(write_info, state)
    if cfg.sparsity_weight > 0 and read_info is not None:
        terms["sparsity"] = cfg.sparsity_weight * read_sparsity_loss(read_info)
    return terms
