"""`read_at`: a forward call that reads memory and computes logits at some positions only gives exactly the full
call's logits, gradients, state and writes there (acting reads the last position, learning the scored ones, an
evaluation's chunk call none)."""

import copy

import numpy as np
import pytest
import torch

from agents.episodes import EpisodeStats
from agents.memnet import MemNet
from agents.models import build_model
from tests.test_memnet import V, model_cfg
from tests.test_models import semantic

B, T = 3, 10
MEMORIES = [
    dict(),
    dict(internal="lm2", fusion="concat"),
    dict(internal="linformer", fusion="cross_attention"),
    dict(key_lags="1:0+2:1", context_decay=0.5, key_source="token", store_replace=0.5),
    dict(window=1, recency=False, copy=0.0),
]


def primed(mem: dict) -> tuple[MemNet, dict, dict]:
    """A MemNet whose store already holds memories, its state, and a deep copy of its memory objects."""
    torch.manual_seed(0)
    model = MemNet(model_cfg(**mem))
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (B, 2 * T)), model.initial_state(B), torch.rand(B, 2 * T) < 0.8)
    assert len(model.store) > 0
    return model, state, copy.deepcopy(model.memory_state_dict())


def store_rows(model: MemNet) -> tuple[np.ndarray, np.ndarray]:
    """Every live entry's id and key, in id order."""
    ids = np.sort(np.concatenate([model.store.ids_with("lane", [b], [b])[0] for b in range(B)]))
    ids = ids[ids >= 0]
    return ids, model.store.keys_of(ids)


@pytest.mark.parametrize("mem", MEMORIES)
def test_read_at_gives_the_full_calls_logits_gradients_state_and_writes(mem):
    model, state, saved = primed(mem)
    tokens, writes = torch.randint(0, V, (B, T)), torch.rand(B, T) < 0.5
    at = torch.tensor([2, 5, 9])

    full, s_full, aux_full = model(tokens, state, writes)
    full[:, at].logsumexp(-1).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    entries = store_rows(model)

    model.zero_grad(set_to_none=True)
    model.load_memory_state_dict(copy.deepcopy(saved))
    part, s_part, aux_part = model(tokens, state, writes, read_at=at)
    part.logsumexp(-1).sum().backward()

    assert part.shape == (B, len(at), V)
    torch.testing.assert_close(part, full[:, at], atol=2e-5, rtol=1e-4)
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, g in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, g, atol=2e-5, rtol=1e-4)
    a, b = semantic(model, s_full), semantic(model, s_part)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=2e-5, rtol=1e-4)
    # the same memories read (as sets: equal-scoring memories, e.g. two that differ only in what the query does
    # not match, come in an order set by float rounding, which differs between a 3-query and a 10-query search)
    assert torch.equal(aux_part["metrics"]["store_ids"].sort(-1).values,
                       aux_full["metrics"]["store_ids"][:, at].sort(-1).values)
    ids, keys = store_rows(model)
    assert np.array_equal(ids, entries[0]) and np.allclose(keys, entries[1], atol=1e-5)


def test_read_at_nothing_still_makes_the_writes():
    model, state, saved = primed(dict(internal="lm2"))
    tokens, writes = torch.randint(0, V, (B, T)), torch.rand(B, T) < 0.5
    with torch.no_grad():
        _, s_full, _ = model(tokens, state, writes)
        entries = store_rows(model)
        model.load_memory_state_dict(copy.deepcopy(saved))
        logits, s_none, aux = model(tokens, state, writes, read_at=torch.zeros(0, dtype=torch.long))
    assert logits.shape == (B, 0, V) and aux["metrics"]["store_ids"].shape[1] == 0
    assert "store_hit_rate" not in aux["metrics"] and aux["metrics"]["store_entries"] == len(model.store)
    ids, keys = store_rows(model)
    assert np.array_equal(ids, entries[0]) and np.allclose(keys, entries[1], atol=1e-5)
    for name, t in semantic(model, s_full).items():
        torch.testing.assert_close(semantic(model, s_none)[name], t, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_regularisers_see_every_positions_slot_reads_with_read_at(weight):
    """A learning call with writes off: with a regulariser on, its terms are the full call's (every position's
    slot reads); with none on, the slot bank is read at the read positions only and the terms stay zero."""
    model, state, _ = primed(dict(util_weight=weight, sparsity_weight=weight))
    tokens = torch.randint(0, V, (B, T))
    _, _, full = model(tokens, state)
    _, _, part = model(tokens, state, read_at=torch.tensor([4]))
    assert part["metrics"]["read_info"].weights.shape[1] == (T if weight else 1)
    for name, term in full["losses"].items():
        torch.testing.assert_close(part["losses"][name], term)
        assert (float(term.detach()) != 0) == (weight > 0 and name != "pressure")  # util is -entropy: negative


@pytest.mark.parametrize("agent", ["transformer", "lstm", "gru"])
def test_baselines_read_at_is_the_full_calls_logits(agent):
    torch.manual_seed(0)
    model = build_model(agent, model_cfg())
    tokens, at = torch.randint(0, V, (B, T)), torch.tensor([0, 7])
    with torch.no_grad():
        full, s_full, _ = model(tokens, model.initial_state(B))
        part, s_part, _ = model(tokens, model.initial_state(B), read_at=at)
    torch.testing.assert_close(part, full[:, at], atol=2e-5, rtol=1e-4)
    for name, t in s_full.items():
        torch.testing.assert_close(s_part[name], t)


@pytest.mark.parametrize("bad", [[3, 1], [1, 1], [-1], [T], [[0, 1]], [0.5]])
def test_bad_read_at_is_one_clear_error(bad):
    model = MemNet(model_cfg())
    with pytest.raises(ValueError, match="read_at: expected increasing distinct positions"):
        model(torch.randint(0, V, (B, T)), model.initial_state(B), read_at=torch.tensor(bad))


def test_episode_memory_metrics_average_over_the_chunks_that_report_them():
    stats = EpisodeStats(memory_sums={"store_hit_rate": 1.5, "write_rate": 0.9},
                         memory_counts={"store_hit_rate": 2, "write_rate": 3})
    assert stats.memory == pytest.approx({"store_hit_rate": 0.75, "write_rate": 0.3})


@pytest.mark.parametrize("weight", ["util_weight", "pressure_weight", "sparsity_weight"])
def test_any_one_regulariser_makes_a_call_without_read_positions_learn(weight):
    """Each weighted regulariser on its own gives the loss a term of its own, so a chunk with no scored step still
    builds a graph and trains (`learns_without_targets`): pressure alone too, not only the read regularisers."""
    model, state, _ = primed({weight: 0.5})
    assert model.learns_without_targets()
    tokens = torch.randint(0, V, (B, T))
    _, _, aux = model(tokens, state, torch.ones(B, T, dtype=torch.bool), read_at=torch.zeros(0, dtype=torch.long))
    term = aux["losses"][weight.split("_")[0]]
    assert term.requires_grad and float(term.detach()) != 0
    assert not MemNet(model_cfg()).learns_without_targets()  # none on: nothing to learn without targets
