"""Mutation-testing kills for the slot bank's allocation order (tie-breaks the behaviour tests did not pin) and its
usage bookkeeping."""

import torch

from memory.config import MemoryConfig
from memory.slots import MultiHeadMemoryBank, SlotState


def _bank(slots: int) -> MultiHeadMemoryBank:
    torch.manual_seed(0)
    return MultiHeadMemoryBank(MemoryConfig(dim=8, slots=slots, read_heads=1, top_k=2, bottleneck=4, decay=False))


def _state(usage, age, written) -> SlotState:
    usage, age = torch.tensor([usage], dtype=torch.float32), torch.tensor([age], dtype=torch.float32)
    return SlotState(memory=torch.zeros(1, usage.shape[1], 8), usage=usage, age=age,
                     written=torch.tensor([written]))


def test_allocation_breaks_usage_ties_by_the_oldest_write():
    """Equal usage: the slot written longest ago (largest age) goes first; never-written slots before all."""
    bank = _bank(5)
    state = _state(usage=[0.5, 0.5, 0.5, 0.5, 0.5], age=[2.0, 7.0, 0.0, 4.0, 1.0], written=[True] * 5)
    assert bank.allocation_order(state).tolist() == [[1, 3, 0, 4, 2]]
    # usage ranks first, age only among equals; an empty slot beats any written one, whatever its age
    state = _state(usage=[0.2, 0.5, 0.2, 0.0, 0.5], age=[1.0, 9.0, 3.0, 0.0, 8.0],
                   written=[True, True, True, False, True])
    assert bank.allocation_order(state).tolist() == [[3, 2, 0, 1, 4]]


def test_the_next_write_lands_in_the_oldest_of_equally_used_slots():
    bank = _bank(3)
    state = _state(usage=[1.0, 1.0, 1.0], age=[3.0, 5.0, 4.0], written=[True] * 3)
    _, info = bank.write(torch.randn(1, 1, 8), state, torch.ones(1, 1, dtype=torch.bool))
    assert info.slot_ids.tolist() == [[1]]


def test_a_read_by_every_head_adds_one_to_usage_as_a_write_does():
    """usage counts a read of all H heads as one access (README: reads add their weight mass / H, writes 1)."""
    torch.manual_seed(0)
    bank = MultiHeadMemoryBank(MemoryConfig(dim=8, slots=2, read_heads=2, top_k=1, bottleneck=4, decay=False))
    pattern = torch.randn(1, 1, 8)
    state = SlotState(memory=torch.cat([pattern, torch.zeros(1, 1, 8)], dim=1), usage=torch.zeros(1, 2),
                      age=torch.zeros(1, 2), written=torch.tensor([[True, False]]))
    _, new, read_info, write_info = bank(pattern, state, torch.ones(1, 1, dtype=torch.bool))
    assert read_info.slot_ids.flatten().tolist() == [0, 0] and write_info.slot_ids.tolist() == [[1]]
    assert torch.allclose(new.usage, torch.tensor([[1.0, 1.0]]))  # slot 0: two heads' weight 1 / 2; slot 1: written
