"""Regularisers (values and what minimising them does) and memory metrics (hand-computed values)."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from memory.config import MemoryConfig
from memory.losses import (
    addressing_distribution,
    entropy,
    memory_regularisers,
    pressure_loss,
    read_sparsity_loss,
    utilisation_loss,
)
from memory.metrics import (
    SlotLifetimeTracker,
    context_influence,
    format_bytes,
    kaplan_meier,
    memory_bytes,
    memory_share_of_params,
    pattern_similarity,
    read_entropy,
    slot_usage,
    store_hit_rate,
    write_rate,
)
from memory.slots import MultiHeadMemoryBank, ReadInfo, SlotState, WriteInfo


def filled_bank(seed=0, B=1, **overrides):
    """A bank whose N slots hold N random patterns (gate and erase pinned to 1 for the fill)."""
    torch.manual_seed(seed)
    cfg = MemoryConfig(**{"dim": 16, "slots": 16, "read_heads": 2, "top_k": 4, **overrides})
    bank = MultiHeadMemoryBank(cfg)
    with torch.no_grad():
        bank.write_gate.bias.fill_(30.0)
        bank.erase.bias.fill_(30.0)
    patterns = torch.randn(B, cfg.slots, cfg.dim)
    state, _ = bank.write(patterns, bank.initial_state(B), torch.ones(B, cfg.slots, dtype=torch.bool))
    with torch.no_grad():
        bank.write_gate.bias.zero_()
        bank.erase.bias.fill_(2.0)
    return bank, SlotState(*(t.detach() for t in state)), patterns


def info(weights, ids):
    return ReadInfo(torch.tensor(weights, dtype=torch.float32), torch.tensor(ids))


# ---------------------------------------------------------------- loss values
def test_utilisation_loss_is_negative_entropy_of_mean_addressing():
    even = info([[[[0.5, 0.5]], [[0.5, 0.5]]]], [[[[0, 1]], [[2, 3]]]])  # (B=1, Q=2, H=1, k=2): 4 slots evenly
    assert utilisation_loss(even, 4).item() == pytest.approx(-math.log(4), abs=1e-6)
    one_slot = info([[[[1.0, 0.0]], [[1.0, 0.0]]]], [[[[2, 0]], [[2, 1]]]])
    assert utilisation_loss(one_slot, 4).item() == pytest.approx(0.0, abs=1e-6)
    dist = addressing_distribution(even, 6)
    assert torch.allclose(dist, torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0, 0.0]]))
    # each lane's distribution is its own (B=2): lane 0 on slot 0 alone, lane 1 evenly on slots 1 and 2
    lanes = info([[[[1.0, 0.0]]], [[[0.5, 0.5]]]], [[[[0, 3]]], [[[1, 2]]]])
    assert torch.allclose(addressing_distribution(lanes, 4), torch.tensor([[1.0, 0, 0, 0], [0, 0.5, 0.5, 0]]))
    assert utilisation_loss(lanes, 4).item() == pytest.approx(-math.log(2) / 2, abs=1e-6)


def test_read_sparsity_and_pressure_values():
    sharp_and_flat = info([[[[1.0, 0.0, 0.0, 0.0]], [[0.25, 0.25, 0.25, 0.25]]]], [[[[0, 1, 2, 3]]] * 2])
    assert read_sparsity_loss(sharp_and_flat).item() == pytest.approx(math.log(4) / 2, abs=1e-6)
    state = SlotState(memory=torch.zeros(1, 2, 4), usage=torch.zeros(1, 2), age=torch.zeros(1, 2),
                      written=torch.zeros(1, 2, dtype=torch.bool))
    state.memory[0, 0] = 1.0  # slot 0 rms 1, slot 1 empty
    writes = WriteInfo(gate=torch.tensor([[0.2, 0.6, 0.0]]), slot_ids=torch.tensor([[0, 1, -1]]))
    expected = (0.2 + 0.6) / 2 + (math.tanh(1.0) + 0.0) / 2
    assert pressure_loss(writes, state).item() == pytest.approx(expected, abs=1e-4)


def test_memory_regularisers_weighs_terms_and_skips_zero_weights():
    bank, state, patterns = filled_bank()
    _, state2, read_info, write_info = bank(patterns, state, torch.ones(1, 16, dtype=torch.bool))
    off = memory_regularisers(MemoryConfig(dim=16, slots=16), read_info, write_info, state2)
    assert set(off) == {"util", "pressure", "sparsity"} and all(v.item() == 0.0 for v in off.values())
    cfg = MemoryConfig(dim=16, slots=16, util_weight=2.0, pressure_weight=0.5, sparsity_weight=3.0)
    on = memory_regularisers(cfg, read_info, write_info, state2)
    assert on["util"].item() == pytest.approx(2.0 * utilisation_loss(read_info, 16).item(), rel=1e-6)
    assert on["pressure"].item() == pytest.approx(0.5 * pressure_loss(write_info, state2).item(), rel=1e-6)
    assert on["sparsity"].item() == pytest.approx(3.0 * read_sparsity_loss(read_info).item(), rel=1e-6)
    # each term follows its own weight: pressure alone is on, whatever util_weight is
    alone = memory_regularisers(MemoryConfig(dim=16, slots=16, pressure_weight=0.5), read_info, write_info, state2)
    assert alone["pressure"].item() == pytest.approx(on["pressure"].item()) and alone["pressure"].item() > 0
    assert alone["util"].item() == 0.0 and alone["sparsity"].item() == 0.0


def test_the_regularisers_of_an_empty_block_are_zero_not_nan():
    """A T = 0 block (the bank takes it and leaves its state alone): the sparsity term was NaN, the mean of no
    entropies, and made the whole task loss NaN."""
    cfg = MemoryConfig(dim=16, slots=8, read_heads=4, top_k=4, util_weight=1.0, pressure_weight=1.0,
                       sparsity_weight=0.1)
    bank = MultiHeadMemoryBank(cfg)
    _, state, read_info, write_info = bank(torch.randn(1, 0, 16), bank.initial_state(1), torch.ones(1, 0, dtype=bool))
    terms = memory_regularisers(cfg, read_info, write_info, state)
    assert terms["sparsity"].item() == 0.0 and terms["util"].item() == 0.0
    assert all(torch.isfinite(t) for t in terms.values())


# ---------------------------------------------------------------- what minimising does
def optimise(loss_fn, params, steps=60, lr=0.05):
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()


def test_minimising_utilisation_loss_raises_addressing_entropy():
    bank, state, patterns = filled_bank()
    # all 8 queries start next to pattern 0: addressing piles onto a few slots
    queries = nn.Parameter(patterns[:, :1].repeat(1, 8, 1) + 0.05 * torch.randn(1, 8, 16))

    def addressing_entropy():
        return entropy(addressing_distribution(bank.read(queries, state)[1], 16)).item()

    before = addressing_entropy()
    optimise(lambda: utilisation_loss(bank.read(queries, state)[1], 16), [queries, *bank.parameters()])
    after = addressing_entropy()
    assert before < 1.0 and after > before + 1.0, (before, after)


def test_minimising_sparsity_penalty_sharpens_reads():
    bank, state, patterns = filled_bank()
    with torch.no_grad():
        bank.sharpness_raw.fill_(0.5)  # start with soft reads
    queries = nn.Parameter(torch.randn(1, 8, 16))
    before = read_entropy(bank.read(queries, state)[1])
    optimise(lambda: read_sparsity_loss(bank.read(queries, state)[1]), [queries, *bank.parameters()])
    after = read_entropy(bank.read(queries, state)[1])
    assert after < 0.5 * before, (before, after)


def test_minimising_pressure_lowers_write_rate_and_occupancy():
    bank, state, patterns = filled_bank(B=4)
    content = torch.randn(4, 8, 16)
    mask = torch.ones(4, 8, dtype=torch.bool)

    def rate_and_occupancy():
        new, writes = bank.write(content, state, mask)
        return write_rate(writes), torch.tanh(new.memory.pow(2).mean(-1).sqrt()).mean().item()

    rate0, occ0 = rate_and_occupancy()
    optimise(lambda: pressure_loss(*reversed(bank.write(content, state, mask))), list(bank.parameters()))
    rate1, occ1 = rate_and_occupancy()
    assert rate1 < 0.5 * rate0 and occ1 < occ0, (rate0, rate1, occ0, occ1)


# ---------------------------------------------------------------- metrics
def test_usage_entropy_and_write_rate_values():
    state = SlotState(memory=torch.zeros(2, 3, 4), usage=torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]]),
                      age=torch.zeros(2, 3), written=torch.ones(2, 3, dtype=torch.bool))
    assert np.allclose(slot_usage(state), [[1, 0, 2], [3, 0, 0]])
    assert np.allclose(slot_usage(state, mean_over_lanes=True), [2, 0, 1])
    uniform = info([[[[0.5, 0.5]]]], [[[[0, 1]]]])
    assert read_entropy(uniform) == pytest.approx(math.log(2), abs=1e-6)
    # a head that selected only empty slots read nothing: left out of the mean, not a perfectly sharp 0
    one_empty = info([[[[0.5, 0.5], [0.0, 0.0]]]], [[[[0, 1], [2, 3]]]])
    assert read_entropy(one_empty) == pytest.approx(math.log(2), abs=1e-6)
    assert math.isnan(read_entropy(info([[[[0.0, 0.0]]]], [[[[2, 3]]]])))  # a fresh bank's first read
    writes = WriteInfo(gate=torch.tensor([[1.0, 0.0], [0.5, 0.5]]), slot_ids=torch.tensor([[0, -1], [1, 2]]))
    assert write_rate(writes) == pytest.approx(0.5)


def test_metrics_of_a_bfloat16_bank_equal_its_float32_values():
    """bf16 write gates (a write under autocast) and a bank moved to bf16 gave numpy's "unsupported ScalarType
    BFloat16" in write_rate, slot_usage, pattern_similarity and SlotLifetimeTracker.observe."""
    bank, state, patterns = filled_bank(B=2)
    h, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, _, autocast_writes = bank(h, state, mask)
    assert autocast_writes.gate.dtype == torch.bfloat16
    state16 = SlotState(*(t.bfloat16() if t.is_floating_point() else t for t in state))
    writes16 = WriteInfo(autocast_writes.gate, autocast_writes.slot_ids)
    assert write_rate(writes16) == pytest.approx(float(autocast_writes.gate.float().mean()), rel=1e-6)
    assert np.array_equal(slot_usage(state16), state16.usage.float().numpy())
    assert np.allclose(pattern_similarity(state16, patterns.bfloat16()), pattern_similarity(state, patterns),
                       atol=0.02)
    tracker = SlotLifetimeTracker(batch_size=2, slots=16)
    tracker.observe(writes16)  # counts the slots written, as for float32 gates
    reference = SlotLifetimeTracker(batch_size=2, slots=16)
    reference.observe(WriteInfo(autocast_writes.gate.float(), autocast_writes.slot_ids))
    assert np.array_equal(tracker.born, reference.born) and (tracker.born >= 0).any()


def test_rates_of_an_empty_block_are_nan_without_warnings():
    """A T = 0 block read and wrote nothing: its rates are undefined (NaN), not 0 (a sharp read, no writes), and
    numpy's empty-mean RuntimeWarnings are not raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(read_entropy(info(np.zeros((2, 0, 4, 8)), np.zeros((2, 0, 4, 8), dtype=np.int64))))
        assert math.isnan(write_rate(WriteInfo(gate=torch.zeros(2, 0), slot_ids=torch.zeros(2, 0, dtype=torch.long))))
        assert math.isnan(store_hit_rate(torch.full((2, 0, 8), -1)))
        assert store_hit_rate(torch.tensor([[[-1, 3], [-1, -1]]])) == 0.5


def test_slot_lifetimes_and_kaplan_meier_curve():
    tracker = SlotLifetimeTracker(batch_size=1, slots=3)

    def step(ids, gates=None):
        ids = torch.tensor([ids])
        gate = torch.tensor([gates]) if gates is not None else (ids >= 0).float()
        tracker.observe(WriteInfo(gate=gate, slot_ids=ids))

    step([0, 1])  # t=1: slots 0, 1 born
    step([2, -1])  # t=2: slot 2 born
    step([0, -1])  # t=3: slot 0 replaced after 2 steps
    step([1, 2])  # t=4: slot 1 after 3, slot 2 after 2
    step([0, -1])  # t=5: slot 0 after 2
    assert sorted(tracker.lifetimes().tolist()) == [2, 2, 2, 3]
    assert sorted(tracker.alive_ages().tolist()) == [0, 1, 1]  # slot 0 born t=5, slots 1, 2 born t=4
    t, s = tracker.survival_curve()
    # at risk: 7 contents; t=0: 1 censored; t=1: 2 censored; t=2: 3 deaths of 4 at risk; t=3: 1 death of 1.
    # The curve steps only at death times (censoring changes who is at risk, not S).
    assert t.tolist() == [0, 2, 3]
    assert np.allclose(s, [1.0, 0.25, 0.0])
    tracker.reset()
    assert sorted(tracker.lifetimes().tolist()) == [0, 1, 1, 2, 2, 2, 3] and tracker.alive_ages().size == 0
    gated = SlotLifetimeTracker(batch_size=1, slots=2, min_gate=0.5)
    gated.observe(WriteInfo(gate=torch.tensor([[0.9, 0.1]]), slot_ids=torch.tensor([[0, 1]])))
    assert gated.alive_ages().tolist() == [0]  # the weak write to slot 1 does not count as new content


def test_pattern_similarity_context_influence_and_hit_rate():
    memory = torch.zeros(1, 3, 2)
    memory[0, 0] = torch.tensor([2.0, 0.0])
    memory[0, 1] = torch.tensor([0.0, 1.0])
    state = SlotState(memory, torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool))
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # mean (2, 0)
    assert np.allclose(pattern_similarity(state, hidden), [[1.0, 0.0, 0.0]])
    ctx = torch.tensor([[3.0, 0.0]])
    mem = torch.tensor([[0.0, 1.0]])
    assert context_influence(ctx + mem, mem) == pytest.approx(0.25)
    assert context_influence(ctx, torch.zeros_like(ctx)) == 0.0
    assert context_influence(mem, mem) == pytest.approx(1.0)
    assert store_hit_rate(torch.tensor([[3, -1], [-1, -1], [0, 5], [-1, 2]])) == pytest.approx(0.75)


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "0.977 KiB"), (1024, "1 KiB"), (37.3 * 2**30, "37.3 GiB"),
    # 1000 to 1023 of a unit: .3g wrote 1e+03 MiB / 1.02e+03 GiB; such sizes read in the next unit
    (1000 * 2**20, "0.977 GiB"), (1023 * 2**30, "0.999 TiB"), (1023.4 * 2**10, "0.999 MiB"),
    (2**60, "1,024 PiB"),  # the last unit has no next one: in full
])
def test_format_bytes_never_writes_an_exponent(n, text):
    assert format_bytes(n) == text


def test_memory_bytes_and_share_of_params():
    state = SlotState(torch.zeros(2, 4, 8), torch.zeros(2, 4), torch.zeros(2, 4),
                      torch.zeros(2, 4, dtype=torch.bool))
    assert memory_bytes(state) == 2 * 4 * 8 * 4 + 2 * 4 * 4 * 2 + 2 * 4 * 1

    class Sized:
        nbytes = 1000

    assert memory_bytes({"a": np.zeros(10, np.float64), "b": [Sized()]}) == 1080
    model = nn.Linear(10, 10)  # 110 float32 parameters = 440 bytes
    assert memory_share_of_params(880, model) == pytest.approx(2.0)
    with pytest.raises(TypeError, match="cannot size a str"):
        memory_bytes("x")
    with pytest.raises(ValueError, match="no parameters"):
        memory_share_of_params(1, nn.ReLU())


def test_lifetimes_are_kept_as_a_histogram_with_the_same_survival_curve():
    """A long run ends millions of slot contents: the tracker counts lifetimes per value instead of listing them
    (the list grew ~130 MB per million steps of 16 lanes and was saved again in every checkpoint)."""
    rng = np.random.default_rng(0)
    tracker = SlotLifetimeTracker(batch_size=4, slots=8)
    for _ in range(3000):
        ids = torch.from_numpy(rng.integers(-1, 8, size=(4, 3)))
        tracker.observe(WriteInfo(gate=(ids >= 0).float(), slot_ids=ids))
    values, counts = tracker.lifetime_counts()
    assert counts.sum() > 5000 and tracker._counts.size == values.max() + 1 < 200  # bounded by the longest life
    listed = tracker.lifetimes()
    assert np.array_equal(np.unique(listed), values) and listed.size == counts.sum()
    alive = tracker.alive_ages()
    expanded = kaplan_meier(np.concatenate([listed, alive]),
                            np.concatenate([np.ones(listed.size, bool), np.zeros(alive.size, bool)]))
    for got, want in zip(tracker.survival_curve(), expanded, strict=True):
        np.testing.assert_allclose(got, want)
    again = SlotLifetimeTracker(batch_size=4, slots=8)
    again.load_state_dict(tracker.state_dict())
    assert np.array_equal(again.lifetimes(), listed)
    legacy = {**tracker.state_dict(), "done": torch.from_numpy(rng.permutation(listed))}  # saved as a list
    del legacy["done_counts"]
    again.load_state_dict(legacy)
    assert np.array_equal(again.lifetimes(), listed)


def test_kaplan_meier_with_counts_equals_the_expanded_durations():
    rng = np.random.default_rng(1)
    durations, observed = rng.integers(0, 20, 40), rng.random(40) < 0.7
    counts = rng.integers(0, 5, 40)
    got = kaplan_meier(durations, observed, counts)
    want = kaplan_meier(np.repeat(durations, counts), np.repeat(observed, counts))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="counts must be non-negative integers"):
        kaplan_meier([1, 2], counts=[1, -1])
