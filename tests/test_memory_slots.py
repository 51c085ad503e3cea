"""MultiHeadMemoryBank: read-back, allocation, decay, erase, gradients, stability, purity, save/load."""

import math

import pytest
import torch
import torch.nn.functional as F

from memory.config import MemoryConfig
from memory.persist import atomic_torch_save
from memory.slots import (
    MultiHeadMemoryBank,
    ReadInfo,
    SlotState,
    load_slot_state,
    save_slot_state,
    topk_last_dim,
)


def make_bank(seed=0, **overrides) -> MultiHeadMemoryBank:
    torch.manual_seed(seed)
    cfg = MemoryConfig(**{"dim": 32, "slots": 16, "read_heads": 2, "top_k": 4, "bottleneck": 8, **overrides})
    return MultiHeadMemoryBank(cfg)


def force_write(bank, gate: float | None = None, erase: float | None = None) -> None:
    """Pin the write gate / erase to a constant by zeroing their weights and setting the bias."""
    with torch.no_grad():
        for layer, value in ((bank.write_gate, gate), (bank.erase, erase)):
            if value is not None:
                layer.weight.zero_()
                layer.bias.fill_(30.0 if value == 1 else -30.0 if value == 0 else math.log(value / (1 - value)))


def write_each(bank, state, patterns, read_info=None):
    """Write patterns (B, M, D) one per call, in order; return the state and the slot of each write."""
    B = patterns.shape[0]
    slots = []
    for j in range(patterns.shape[1]):
        state, info = bank.write(patterns[:, j:j + 1], state, torch.ones(B, 1, dtype=torch.bool), read_info)
        slots.append(info.slot_ids[:, 0])
    return state, torch.stack(slots, dim=1)


def test_written_pattern_is_read_back_by_matching_query():
    bank = make_bank()
    force_write(bank, gate=1, erase=1)
    patterns = torch.randn(3, 16, 32)
    state, info = bank.write(patterns, bank.initial_state(3), torch.ones(3, 16, dtype=torch.bool))
    assert sorted(info.slot_ids[0].tolist()) == list(range(16))  # 16 writes -> 16 distinct slots
    stored = state.memory.gather(1, info.slot_ids.unsqueeze(-1).expand(-1, -1, 32))
    assert torch.allclose(stored, patterns)  # erase=1, gate=1, untrained bottleneck: the slot holds the pattern
    noisy_query = patterns + 0.1 * torch.randn_like(patterns)
    raw_reads, read_info = bank.address(noisy_query, state)  # (B, Q, D): the H heads' D/H-wide reads
    cos = F.cosine_similarity(raw_reads, patterns, dim=-1)
    assert cos.min() > 0.99
    assert (read_info.slot_ids[..., 0] == info.slot_ids.unsqueeze(-1)).all()  # best slot is the written one
    reads, _ = bank.read(noisy_query, state)
    assert reads.shape == (3, 16, 32) and torch.isfinite(reads).all()


def test_full_bank_writes_into_least_recently_used_slot():
    bank = make_bank(slots=4, decay=False)
    patterns = torch.randn(2, 6, 32)
    state, slots = write_each(bank, bank.initial_state(2), patterns[:, :4])
    assert slots.tolist() == [[0, 1, 2, 3]] * 2  # empty slots first
    lru_state, lru_slot = write_each(bank, state, patterns[:, 4:5])
    assert lru_slot[:, 0].tolist() == [0, 0]  # all full, slot 0 was used longest ago
    # a read of slot 0 refreshes it: lane 0 reads it, lane 1 does not -> lane 0 writes into slot 1
    force_write(bank, gate=1, erase=1)
    state_exact, _ = write_each(bank, bank.initial_state(2), patterns[:, :4])
    _, read_info = bank.read(patterns[:, :1], state_exact)
    assert (read_info.slot_ids[0, 0, :, 0] == 0).all()
    weights = read_info.weights.clone()
    weights[1] = 0.0
    _, refreshed = write_each(bank, state_exact, patterns[:, 4:5], ReadInfo(weights, read_info.slot_ids))
    assert refreshed[:, 0].tolist() == [1, 0]


def test_more_writes_than_slots_keep_the_last_ones_and_masked_rows_change_nothing():
    bank = make_bank(slots=4)
    force_write(bank, gate=1, erase=1)
    content = torch.randn(1, 6, 32)
    mask = torch.tensor([[True, True, False, True, True, True]])
    state, info = bank.write(content, bank.initial_state(1), mask)
    assert info.slot_ids.tolist() == [[-1, 0, -1, 1, 2, 3]]  # 5 unmasked writes, 4 slots: the first is dropped
    assert info.gate[0, [0, 2]].tolist() == [0.0, 0.0]
    assert torch.allclose(state.memory[0], content[0, [1, 3, 4, 5]])


def test_decay_shrinks_unused_slots_only():
    bank = make_bank(slots=8)
    force_write(bank, gate=1, erase=1)
    with torch.no_grad():
        bank.decay_logit.fill_(math.log(0.9 / 0.1))  # retention 0.9 per step
    patterns = torch.randn(1, 6, 32)
    state, _ = write_each(bank, bank.initial_state(1), patterns)  # slot j written at step j, then idle
    norms = state.memory[0, :6].norm(dim=-1) / patterns[0].norm(dim=-1)
    assert torch.allclose(norms, 0.9 ** torch.arange(5, -1, -1.0), rtol=1e-5)
    # a slot that is read every step does not shrink (sharp reads put all their weight on it)
    with torch.no_grad():
        bank.sharpness_raw.fill_(100.0)
    for _ in range(5):
        _, read_info = bank.read(patterns[:, :1], state)
        state, _ = bank.write(torch.randn(1, 1, 32), state, torch.ones(1, 1, dtype=torch.bool), read_info)
    kept = (state.memory[0, 0].norm() / patterns[0, 0].norm()).item()
    assert kept == pytest.approx(0.9 ** 5, rel=1e-3)  # shrank only while it sat unread
    no_decay = make_bank(slots=8, decay=False)
    force_write(no_decay, gate=1, erase=1)
    state, _ = write_each(no_decay, no_decay.initial_state(1), patterns)
    assert torch.allclose(state.memory[0, :6], patterns[0])


def test_a_slot_read_by_one_head_alone_is_touched_and_does_not_shrink():
    """Each head reads a different slot with weight 1 (top_k=1): both are touched this step. Counting a read
    at usage's 1/H share left each only half touched, so they shrank as if half unread."""
    bank = MultiHeadMemoryBank(MemoryConfig(dim=4, slots=3, read_heads=2, top_k=1))
    with torch.no_grad():
        bank.decay_logit.fill_(0.0)  # retention 0.5: an untouched slot halves
        bank.query_proj.weight.copy_(torch.eye(4))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    memory = torch.stack([torch.cat([a, -b]), torch.cat([-a, b]), torch.zeros(4)])[None]  # slot 2 empty
    state = SlotState(memory, torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[True, True, False]]))
    _, read_info = bank.read(torch.cat([a, b])[None, None], state)
    assert sorted(read_info.slot_ids.flatten().tolist()) == [0, 1] and read_info.weights.min() == 1.0
    new, info = bank.write(torch.randn(1, 1, 4), state, torch.ones(1, 1, dtype=torch.bool), read_info)
    assert info.slot_ids.tolist() == [[2]]
    assert torch.allclose(new.memory[0, :2], memory[0, :2])


def test_a_permuted_memory_tensor_still_receives_the_write():
    bank = make_bank(slots=4)
    force_write(bank, gate=1, erase=1)
    state = bank.initial_state(2)
    permuted = state._replace(memory=state.memory.transpose(0, 1).contiguous().transpose(0, 1))  # (B, N, D) view
    assert not permuted.memory.is_contiguous()
    content = torch.randn(2, 1, 32)
    for s in (state, permuted):
        new, info = bank.write(content, s, torch.ones(2, 1, dtype=torch.bool))
        rows = new.memory[torch.arange(2), info.slot_ids[:, 0]]
        assert torch.allclose(rows, bank.write_vectors(content)[0][:, 0], atol=1e-6)  # written, not dropped


def test_erase_and_gate_control_what_a_write_replaces():
    bank = make_bank(slots=1, decay=False)
    p, q = torch.randn(1, 1, 32), torch.randn(1, 1, 32)
    one = torch.ones(1, 1, dtype=torch.bool)

    def overwrite(gate, erase):
        force_write(bank, gate=1, erase=1)
        state, _ = bank.write(p, bank.initial_state(1), one)
        force_write(bank, gate=gate, erase=erase)
        return bank.write(q, state, one)[0].memory[0, 0]

    assert torch.allclose(overwrite(1, 1), q[0, 0])  # erase clears: nothing of p is left
    assert torch.allclose(overwrite(1, 0), p[0, 0])  # nothing erased, nothing replaced
    assert torch.allclose(overwrite(0, 1), p[0, 0])  # gate closed: the write is skipped
    assert torch.allclose(overwrite(1, 0.5), 0.5 * (p + q)[0, 0], atol=1e-6)
    # erasing with zero content empties the slot
    force_write(bank, gate=1, erase=1)
    state, _ = bank.write(p, bank.initial_state(1), one)
    cleared, _ = bank.write(torch.zeros(1, 1, 32), state, one)
    assert cleared.memory.abs().max() == 0


def test_each_channel_stays_within_its_writes_but_the_norm_can_exceed_every_write():
    """The erase is per channel, so the bound is per channel: |m_c| <= max |a_c| over the writes the slot got.
    The docstring once claimed it for the norm; erasing one channel per write builds a slot no write matches."""
    bank = make_bank(dim=4, slots=1, read_heads=1, top_k=1, decay=False)
    with torch.no_grad():
        bank.write_gate.weight.zero_()
        bank.write_gate.bias.fill_(20.0)
        bank.erase.weight.copy_(20.0 * torch.eye(4))
        bank.erase.bias.fill_(-8.0)  # write e_i erases (and adds) channel i only
    state, _ = write_each(bank, bank.initial_state(1), torch.eye(4).unsqueeze(0))
    torch.testing.assert_close(state.memory[0, 0], torch.ones(4), atol=2e-3, rtol=0)
    assert state.memory[0, 0].norm() > 1.99  # against writes of norm 1
    # adversarial weights (sharp per-channel erase, random gates, contents over 3 orders of magnitude), with and
    # without decay: every channel of every slot stays within that channel of the writes the slot received
    for decay in (False, True):
        bank = make_bank(seed=3, slots=4, decay=decay)
        with torch.no_grad():
            bank.erase.weight.normal_(0, 20.0)
            bank.erase.bias.normal_(0, 8.0)
            bank.write_gate.weight.normal_(0, 2.0)
            bank.bottleneck_up.weight.normal_(0, 1.0)
        B, M = 8, 3
        state, bound = bank.initial_state(B), torch.zeros(B, 4, 32)
        with torch.no_grad():
            for _ in range(60):
                x = torch.randn(B, M, 32) * 10.0 ** torch.empty(B, M, 1).uniform_(-1.5, 1.5)
                add = bank.write_vectors(x)[0].abs()
                _, state, _, info = bank(x, state, torch.rand(B, M) < 0.8)
                for b, m in (info.slot_ids >= 0).nonzero().tolist():
                    slot = info.slot_ids[b, m]
                    bound[b, slot] = torch.maximum(bound[b, slot], add[b, m])
        assert bool(state.written.all())
        assert (state.memory.abs() <= bound * (1 + 1e-5) + 1e-30).all()


@pytest.mark.parametrize("n_queries", [3, 20])  # head width 16: 3 queries take the step layout, 20 the chunk one
def test_gradients_reach_query_content_parameters_and_flow_through_state(n_queries):
    bank = make_bank()
    content = torch.randn(2, 5, 32, requires_grad=True)
    query = torch.randn(2, n_queries, 32, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    _, state, read_info, _ = bank(content, bank.initial_state(2), mask)
    state, _ = bank.write(content, state, mask, read_info)  # second write through the carried state
    reads, _ = bank.read(query, state)
    reads.pow(2).sum().backward()
    assert query.grad.abs().sum() > 0
    assert content.grad.abs().sum() > 0  # through state.memory, across two calls
    for name in ("query_proj.weight", "sharpness_raw", "read_out.weight", "bottleneck_up.weight",
                 "erase.weight", "write_gate.weight", "decay_logit"):
        assert dict(bank.named_parameters())[name].grad.abs().sum() > 0, name


def test_100k_random_writes_stay_finite_and_bounded():
    torch.manual_seed(1)
    bank = make_bank(slots=32)
    with torch.no_grad():  # random erase / gate behaviour instead of the near-constant start
        bank.erase.weight.normal_(0, 0.5)
        bank.write_gate.weight.normal_(0, 0.5)
        bank.bottleneck_up.weight.normal_(0, 0.5)
    B, M, steps = 64, 16, 100  # 102,400 writes
    state = bank.initial_state(B)
    max_add = torch.zeros(32)
    with torch.no_grad():
        for _ in range(steps):
            x = torch.randn(B, M, 32) * torch.exp(torch.randn(B, M, 1))  # scales over ~2 orders of magnitude
            add, _, _ = bank.write_vectors(x)
            max_add = torch.maximum(max_add, add.abs().amax(dim=(0, 1)))
            _, state, _, info = bank(x, state, torch.rand(B, M) < 0.9)
    assert bool(state.written.all())
    for t in state:
        assert torch.isfinite(t.float()).all()
    # each channel of a slot is a convex mix of 0 and that channel of its writes: none exceeds the largest write's
    assert (state.memory.abs() <= max_add * (1 + 1e-5)).all()
    assert state.usage.max() <= (M + 1) / (1 - bank.usage_decay)  # per step <= M reads + 1 write, decayed


def test_read_is_pure_and_masked_lanes_keep_state_bit_for_bit():
    bank = make_bank()
    state = bank(torch.randn(2, 8, 32), bank.initial_state(2), torch.ones(2, 8, dtype=torch.bool))[1]
    before = SlotState(*(t.clone() for t in state))
    _, read_info = bank.read(torch.randn(2, 4, 32), state)
    assert all(torch.equal(a, b) for a, b in zip(before, state, strict=True))
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[0, 1] = True  # lane 0 writes once, lane 1 is frozen (memory_writes=False)
    new, info = bank.write(torch.randn(2, 3, 32), state, mask, read_info)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(new, state, strict=True))
    assert info.slot_ids[1].tolist() == [-1, -1, -1] and info.gate[1].abs().sum() == 0
    assert not torch.equal(new.memory[0], state.memory[0])
    assert (new.age[0] != state.age[0]).any()


def test_empty_bank_reads_give_the_query_and_zero_weights():
    bank = make_bank()
    query = torch.randn(2, 3, 32)
    reads, info = bank.read(query, bank.initial_state(2))
    assert torch.equal(info.weights, torch.zeros(2, 3, 2, 4))
    assert torch.allclose(reads, query)  # LN of an all-zero read is 0 at init, the residual path carries q


def test_top_k_larger_than_slots_is_clamped():
    bank = make_bank(slots=3, top_k=8)
    state = bank(torch.randn(1, 3, 32), bank.initial_state(1), torch.ones(1, 3, dtype=torch.bool))[1]
    _, info = bank.read(torch.randn(1, 2, 32), state)
    assert info.weights.shape == (1, 2, 2, 3)
    assert torch.allclose(info.weights.sum(-1), torch.ones(1, 2, 2))


def test_step_and_chunk_read_layouts_agree():
    bank = make_bank(slots=64, read_heads=4)  # head width 8: a query count above 8 takes the chunk layout
    state = bank(torch.randn(3, 40, 32), bank.initial_state(3), torch.rand(3, 40) < 0.8)[1]
    queries = torch.randn(3, 20, 32)
    reads, info = bank.address(queries, state)
    one_by_one = [bank.address(queries[:, j:j + 1], state) for j in range(20)]
    assert torch.allclose(reads, torch.cat([r for r, _ in one_by_one], dim=1), atol=1e-5)
    assert torch.allclose(info.weights, torch.cat([i.weights for _, i in one_by_one], dim=1), atol=1e-5)
    assert torch.equal(info.slot_ids, torch.cat([i.slot_ids for _, i in one_by_one], dim=1))


@pytest.mark.parametrize("shape,k", [((8, 32, 128), 4), ((5, 256), 8), ((2, 512), 16), ((2, 1024), 4), ((3, 16), 4),
                                     ((4, 30), 3)])
def test_grouped_topk_matches_torch_topk(shape, k):
    torch.manual_seed(0)
    x = torch.randn(shape)
    values, ids = topk_last_dim(x, k)
    expected = x.topk(k, dim=-1)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="memory.slots=0"):
        MultiHeadMemoryBank(MemoryConfig(slots=0))
    bank = make_bank()
    state = bank.initial_state(2)
    with pytest.raises(ValueError, match="query: expected a tensor of shape"):
        bank.read(torch.randn(2, 3, 31), state)
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        bank.write(torch.randn(2, 3, 32), state, torch.ones(2, 3))
    for mask in (None, [[True] * 3] * 2):  # not tensors: an AttributeError on mask.shape
        with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(2, 3\), got (NoneType|list)"):
            bank(torch.randn(2, 3, 32), state, mask)
    with pytest.raises(ValueError, match="state.memory shape"):
        make_bank(slots=8).read(torch.randn(2, 3, 32), state)
    with pytest.raises(ValueError, match=r"memory.read_heads=3: .*divide dim=32"):
        MultiHeadMemoryBank(MemoryConfig(dim=32, read_heads=3))
    with pytest.raises(ValueError, match="batch_size=0"):
        bank.initial_state(0)
    for bad in (math.nan, math.inf, 0.0, -1.0, 1e7, True, "10"):  # NaN once passed and made every read NaN
        with pytest.raises(ValueError, match=rf"init_sharpness={bad!r}: must be a number in \(0, 1e\+06\]"):
            MultiHeadMemoryBank(MemoryConfig(dim=32), init_sharpness=bad)
    for bad in (math.nan, 1.0, -0.1, True, "0.9"):  # a string failed at the comparison, naming nothing
        with pytest.raises(ValueError, match=rf"^usage_decay={bad!r}: must be a number in \[0, 1\)$"):
            MultiHeadMemoryBank(MemoryConfig(dim=32), usage_decay=bad)
    for bad in (math.nan, 0.0, 1.0, False, "0.999"):
        with pytest.raises(ValueError, match=rf"^init_retention={bad!r}: must be a number in \(0, 1\)$"):
            MultiHeadMemoryBank(MemoryConfig(dim=32), init_retention=bad)


def test_state_save_load_round_trip_and_clear_errors(tmp_path):
    bank = make_bank()
    state = bank(torch.randn(2, 8, 32), bank.initial_state(2), torch.ones(2, 8, dtype=torch.bool))[1]
    path = tmp_path / "slots.pt"
    save_slot_state(path, state)
    loaded = load_slot_state(path, bank)
    assert all(torch.equal(a, b) for a, b in zip(loaded, state, strict=True))
    assert [p.name for p in tmp_path.iterdir()] == ["slots.pt"]  # no temp file left behind
    with pytest.raises(ValueError, match="does not fit this bank"):
        load_slot_state(path, make_bank(slots=8))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged"):
        load_slot_state(path, bank)
    atomic_torch_save({"format": "something.else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="has format 'something.else'"):
        load_slot_state(tmp_path / "other.pt", bank)
    with pytest.raises(FileNotFoundError, match="no file at"):
        load_slot_state(tmp_path / "missing.pt", bank)

