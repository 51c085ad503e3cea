"""Internal memories (LM2-style gated, Linformer-style implicit): gate limits, carry-over, masking, files."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memory.config import MemoryConfig
from memory.internal import (
    LinformerMemory,
    LM2Memory,
    build_internal_memory,
    load_internal_state,
    save_internal_state,
)
from memory.slots import MultiHeadMemoryBank

KINDS = ["lm2", "linformer"]


def make(kind, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = MemoryConfig(**{"dim": 32, "internal": kind, "internal_slots": 6, "attn_heads": 4, **overrides})
    return build_internal_memory(cfg)


def pin_gates(mem, keep: bool) -> None:
    """Drive the update gates to their limits: keep (forget=1, input=0) or overwrite (forget=0, input=1)."""
    with torch.no_grad():
        if isinstance(mem, LM2Memory):
            for layer, bias in ((mem.forget_gate, 50.0), (mem.input_gate, -50.0)):
                layer.weight.zero_()
                layer.bias.fill_(bias if keep else -bias)
        else:
            mem.update_gate.weight.zero_()
            mem.update_gate.bias.fill_(-50.0 if keep else 50.0)


def test_build_picks_the_configured_memory():
    assert build_internal_memory(MemoryConfig(internal="none")) is None
    assert isinstance(make("lm2"), LM2Memory)
    assert isinstance(make("linformer"), LinformerMemory)


@pytest.mark.parametrize("kind", KINDS)
def test_gates_at_their_limits_keep_or_overwrite(kind):
    mem = make(kind)
    h = torch.randn(3, 10, 32)
    state = mem.initial_state(3) + 0.3 * torch.randn(3, 6, 32)
    if kind == "linformer":
        state = F.normalize(state, dim=-1)
    pin_gates(mem, keep=True)
    _, kept = mem(h, state)
    assert torch.allclose(kept, state, atol=1e-6)
    pin_gates(mem, keep=False)
    _, overwritten = mem(h, state)
    summary = mem.slot_summary(h, state)  # what the slots gathered from this block
    expected = torch.tanh(summary) if kind == "lm2" else summary
    assert torch.allclose(overwritten, expected, atol=1e-6)
    assert not torch.allclose(overwritten, state, atol=1e-2)


def test_lm2_output_gate_closed_silences_the_read():
    mem = make("lm2")
    with torch.no_grad():
        mem.output_gate.weight.zero_()
        mem.output_gate.bias.fill_(-50.0)
    y, _ = mem(torch.randn(2, 5, 32), mem.initial_state(2))
    assert y.abs().max() < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_state_carries_over_calls_and_reads_are_block_recurrent(kind):
    mem = make(kind)
    first_a, first_b, second = torch.randn(2, 8, 32), torch.randn(2, 8, 32), torch.randn(2, 8, 32)
    _, state_a = mem(first_a, mem.initial_state(2))
    _, state_b = mem(first_b, mem.initial_state(2))
    y_a, _ = mem(second, state_a)
    y_b, _ = mem(second, state_b)
    assert (y_a - y_b).abs().max() > 1e-3  # the second call's output depends on what the first call saw
    # within a block a token reads only the incoming state: changing the last token leaves the others alone
    changed = second.clone()
    changed[:, -1] += 1.0
    y_c, new_c = mem(changed, state_a)
    assert torch.allclose(y_c[:, :-1], y_a[:, :-1], atol=1e-6)
    assert not torch.allclose(new_c, mem(second, state_a)[1])


@pytest.mark.parametrize("kind", KINDS)
def test_lanes_without_update_keep_state_bit_for_bit(kind):
    mem = make(kind)
    state = mem.initial_state(3)
    _, new = mem(torch.randn(3, 4, 32), state, torch.tensor([True, False, True]))
    assert torch.equal(new[1], state[1])
    assert not torch.equal(new[0], state[0]) and not torch.equal(new[2], state[2])


@pytest.mark.parametrize("kind", KINDS)
def test_positions_a_mask_leaves_out_take_no_part_in_the_update(kind):
    """updated_state(h, M, mask) is the update by the masked-in positions alone, whatever the others hold; a lane
    with none keeps M, and gradients stay finite. LM2's slots attended to left-out positions too (given as zeros,
    they took softmax mass: one writing position among seven that may not moved M 0.55, alone 1.30)."""
    mem = make(kind)
    _, state = mem(torch.randn(3, 5, 32), mem.initial_state(3))  # a dense state
    h = torch.randn(3, 8, 32, requires_grad=True)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, 7], mask[1, [1, 4]] = True, True  # lane 2: no position may write
    new = mem.updated_state(h, state, mask)
    torch.testing.assert_close(new[0], mem.updated_state(h[:1, 7:], state[:1])[0])
    torch.testing.assert_close(new[1], mem.updated_state(h[1:2, [1, 4]], state[1:2])[0])
    assert torch.equal(new[2], state[2])
    other = h.detach().clone()
    other[~mask] = torch.randn(int((~mask).sum()), 32)  # what the left-out positions hold: nothing changes
    torch.testing.assert_close(mem.updated_state(other, state, mask), new.detach())
    new.sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad[2].abs().sum() == 0 and h.grad[0, :7].abs().sum() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_block_leaves_the_state_unchanged(kind):
    """Regression (linformer): normalise((1 - g) M) with a per-channel gate g turned a dense state (0.069 after
    one empty call); the identity-like initial state hid it (one channel per slot). LM2's forget gate shrank M."""
    mem = make(kind)
    _, state = mem(torch.randn(2, 5, 32), mem.initial_state(2))  # a real block first: a dense state
    empty = torch.zeros(2, 0, 32)
    assert torch.equal(mem.updated_state(empty, state), state)
    after = state
    for _ in range(50):
        y, after = mem(empty, after)
        assert y.shape == (2, 0, 32)
    assert torch.equal(after, state)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_inputs_and_initial_slots_across_calls(kind):
    mem = make(kind)
    h1 = torch.randn(2, 5, 32, requires_grad=True)
    h2 = torch.randn(2, 5, 32, requires_grad=True)
    _, state = mem(h1, mem.initial_state(2))
    y, _ = mem(h2, state)
    y.pow(2).sum().backward()
    assert h1.grad.abs().sum() > 0 and h2.grad.abs().sum() > 0
    assert mem.init_slots.grad.abs().sum() > 0


def test_identity_like_initial_slots_and_bounded_linformer_state():
    lm2 = make("lm2")
    assert torch.equal(lm2.initial_state(1)[0], torch.eye(32)[:6])
    lin = make("linformer")
    state = lin.initial_state(4)
    with torch.no_grad():
        for _ in range(200):
            _, state = lin(10 * torch.randn(4, 8, 32), state)
    assert torch.allclose(state.norm(dim=-1), torch.ones(4, 6), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_more_slots_than_dim_start_distinct_and_linformer_unit_length(kind):
    """Slots past `dim` repeat e_(i mod dim) plus a small random part: without it slot 32 would equal slot 0 and
    the two read and update as one. Linformer's slots are unit vectors from the start, as its updates keep them."""
    mem = make(kind, internal_slots=40)
    slots = mem.initial_state(1)[0]  # (40, 32)
    assert torch.cdist(slots, slots).add(torch.eye(40)).min() > 1e-3
    if kind == "linformer":
        assert torch.allclose(slots.norm(dim=-1), torch.ones(40), atol=1e-6)


def test_lm2_gates_start_keeping_most_of_the_state():
    """An all-zero block gives U = 0 (the attention's projection biases start at 0), so the update is the forget
    gate's start alone: M <- sigmoid(1) M, 0.73 kept (the input gate's sigmoid(-1) multiplies tanh(0))."""
    mem = make("lm2")
    state = mem.initial_state(2) + 0.3 * torch.randn(2, 6, 32)
    _, new = mem(torch.zeros(2, 3, 32), state)
    assert torch.allclose(new, torch.sigmoid(torch.tensor(1.0)) * state, atol=1e-6)


def test_lm2_input_gate_starts_letting_in_a_quarter_of_what_the_slots_gather():
    """With the gates' weights zeroed their biases alone set them: M <- sigmoid(-1) tanh(U) + sigmoid(1) M, the
    input gate at 0.27 (not 0.73) on what the slots gather from a non-zero block, U = Attn(M -> h)."""
    mem = make("lm2")
    with torch.no_grad():
        mem.input_gate.weight.zero_()
        mem.forget_gate.weight.zero_()
    state = mem.initial_state(2) + 0.3 * torch.randn(2, 6, 32)
    h = torch.randn(2, 3, 32)
    _, new = mem(h, state)
    u = mem.slot_summary(h, state)
    assert u.abs().max() > 0.05
    one = torch.tensor(1.0)
    assert torch.allclose(new, torch.sigmoid(-one) * torch.tanh(u) + torch.sigmoid(one) * state, atol=1e-6)


def test_linformer_slot_weights_are_a_softmax_over_the_blocks_tokens():
    """Each slot spreads its weight over the T tokens: a slot scoring one channel steeply picks the token that is
    largest there, a slot scoring nothing averages the block."""
    mem = make("linformer")
    with torch.no_grad():
        mem.seq_proj.weight.zero_()
        mem.seq_proj.bias.zero_()
        mem.seq_proj.weight[0, 0] = 50.0  # slot 0 scores channel 0
    h = torch.randn(1, 5, 32)
    h[0, :, 0] = torch.tensor([0.1, -0.5, 2.0, 0.3, -1.0])
    z = mem.slot_summary(h, mem.initial_state(1))
    assert torch.allclose(z[0, 0], F.normalize(h[0, 2], dim=-1), atol=1e-5)
    assert torch.allclose(z[0, 1], F.normalize(h[0].mean(0), dim=-1), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_state_file_round_trip_and_clear_errors(kind, tmp_path):
    mem = make(kind)
    _, state = mem(torch.randn(2, 4, 32), mem.initial_state(2))
    path = tmp_path / "internal.pt"
    save_internal_state(path, state)
    assert torch.equal(load_internal_state(path, mem), state)
    with pytest.raises(ValueError, match="memory.internal_slots"):
        load_internal_state(path, make(kind, internal_slots=4))
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="damaged"):
        load_internal_state(path, mem)


def test_bad_shapes_give_clear_errors():
    mem = make("lm2")
    with pytest.raises(ValueError, match=r"h: expected a tensor of shape \(B, T, D=32\)"):
        mem(torch.randn(2, 4, 16), mem.initial_state(2))
    with pytest.raises(ValueError, match="state: expected shape"):
        mem(torch.randn(2, 4, 32), mem.initial_state(3))
    with pytest.raises(ValueError, match="update: expected a bool tensor"):
        mem(torch.randn(2, 4, 32), mem.initial_state(2), torch.ones(2))


@pytest.mark.parametrize("make", [lambda cfg: MultiHeadMemoryBank(cfg), lambda cfg: LM2Memory(cfg),
                                  lambda cfg: LinformerMemory(cfg)], ids=["bank", "lm2", "linformer"])
def test_initial_state_takes_whole_numbers_only(make):
    """initial_state(True) reached torch as a size (`zeros() takes 1 positional argument but 3 were given`), and
    numpy's 2 was refused as "must be an int >= 1"."""
    core = make(MemoryConfig(dim=16, slots=8, read_heads=2, top_k=2, internal_slots=4))
    for bad in (True, 0, -1, 2.0, "2"):
        with pytest.raises(ValueError, match=r"^batch_size=.*: must be an int >= 1$"):
            core.initial_state(bad)
    state = core.initial_state(np.int64(2))
    first = state[0] if isinstance(state, tuple) else state
    assert first.shape[0] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_state_of_another_float_dtype_is_one_line(kind):
    """A float64 state failed inside a matmul ("expected m1 and m2 to have the same dtype"); the state file's load
    refused it in one line already."""
    mem = make(kind)
    with pytest.raises(ValueError, match=r"^state is torch.float64, the memory computes in torch.float32: pass the "
                                         r"state its initial_state made, or state.to\(torch.float32\)$"):
        mem(torch.randn(2, 4, 32), mem.initial_state(2).double())
