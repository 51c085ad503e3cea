"""MemNet: acting == chunk forward with memory on, writes=False freezes memory, recall across chunks,
gradients, lane resets, ablation switches (its memory state: test_memnet_memory_state.py)."""

import numpy as np
import pytest
import torch

from agents.memnet import MemNet
from agents.models import ModelConfig, build_model
from memory.config import MemoryConfig
from tests.test_models import semantic

V, D = 31, 32


def mem_cfg(**kw) -> MemoryConfig:
    # a small hot tier, so retrieved K/V come from all three tiers (int8 warm included)
    base = dict(dim=D, slots=8, read_heads=2, top_k=2, bottleneck=8, attn_heads=4, store_capacity=64,
                store_top_k=4, cache_hot=8, cache_warm=16, cache_cold=256)
    base.update(kw)
    return MemoryConfig(**base)


def model_cfg(window=4, layers=2, **mem) -> ModelConfig:
    return ModelConfig(vocab_size=V, dim=D, layers=layers, heads=4, window=window, memory=mem_cfg(**mem))


def no_writes(tokens):
    return torch.zeros_like(tokens, dtype=torch.bool)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("mem", [
    dict(),
    dict(internal="lm2", fusion="concat"),
    dict(internal="linformer", fusion="cross_attention"),
    dict(slots=0, store_scope="shared"),
    dict(window=1),  # no window at all: the store path carries only the previous input
    dict(key_lags="1:0+3:0+4:1+5:2", key_source="token"),  # lagged addresses from before the call's start
    dict(window=1, key_lags="2:1", context_decay=0.9),
    dict(key_lags="1:0+2:1", context_decay=0.5, key_source="token"),
])
def test_acting_equals_chunk_forward_with_memory(mem):
    model = MemNet(model_cfg(**mem)).eval()
    B, T = 3, 12
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (B, T)), model.initial_state(B), torch.rand(B, T) < 0.7)
        assert len(model.store) > 0
        tokens = torch.randint(0, V, (B, T))
        stepped, ids, s = [], [], state
        for t in range(T):
            logits, s, aux = model(tokens[:, t:t + 1], s, no_writes(tokens[:, t:t + 1]))
            stepped.append(logits)
            ids.append(aux["metrics"]["store_ids"])
        chunk, s_chunk, aux = model(tokens, state, no_writes(tokens))
    torch.testing.assert_close(torch.cat(stepped, 1), chunk, atol=3e-5, rtol=1e-4)
    assert torch.equal(torch.cat(ids, 1).sort(-1).values, aux["metrics"]["store_ids"].sort(-1).values)
    retrieved = aux["metrics"]["store_ids"]
    assert 1 in set(model.cache.tier_of(retrieved[retrieved >= 0].numpy()).tolist())  # int8 tier read too
    s, s_chunk = semantic(model, s), semantic(model, s_chunk)
    for name in s_chunk:
        torch.testing.assert_close(s[name], s_chunk[name], atol=3e-5, rtol=1e-4)


def test_writes_false_freezes_every_memory_and_writes_true_changes_them():
    model = MemNet(model_cfg(internal="lm2")).eval()
    B, T = 2, 10
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (B, T)), model.initial_state(B), torch.ones(B, T, dtype=torch.bool))
        size = len(model.store)
        tokens = torch.randint(0, V, (B, T))
        _, frozen, _ = model(tokens, state, no_writes(tokens))
        assert len(model.store) == size
        for name in state:
            if not name.startswith(("ctrl.", "window.")):  # the windows move with every token, memory does not
                assert torch.equal(frozen[name], state[name]), name
        one_lane = torch.zeros(B, T, dtype=torch.bool)
        one_lane[1, 3] = True
        _, written, _ = model(tokens, state, one_lane)
    assert len(model.store) == size + 1 and model.store.size(1) == size // 2 + 1
    assert torch.equal(written["slot.memory"][0], state["slot.memory"][0])  # lane 0 may not write: unchanged
    assert torch.equal(written["internal"][0], state["internal"][0])
    assert not torch.equal(written["slot.memory"][1], state["slot.memory"][1])
    assert not torch.equal(written["internal"][1], state["internal"][1])


def test_fact_written_in_one_chunk_is_recalled_chunks_later_without_learning():
    """Every position is written; in chunk e+4, shown the fact's context again, the search at position p
    returns exactly the entry written at p + 1 in chunk e (among ~50 per lane): the entry that followed the
    same context, whose value holds what came next (smeared keys); and the read changes the logits."""
    model = MemNet(model_cfg(window=4, layers=2)).eval()
    B, T, p = 2, 12, 9  # p >= layers * (window - 1): the hidden state at p depends on the fact's tokens only
    fact = torch.randint(0, V, (B, T))
    everywhere = torch.ones(B, T, dtype=torch.bool)

    def meta(episode):
        return {"episode": np.full((B, T), episode), "position": np.arange(T)[None].repeat(B, 0)}

    with torch.no_grad():
        _, state, _ = model(fact, model.initial_state(B), everywhere, meta(5))
        for e in (6, 7, 8):  # later episodes: other tokens, also written
            noise = torch.randint(0, V, (B, T))
            _, state, _ = model(noise, state, everywhere, meta(e))
        assert [model.store.size(b) for b in range(B)] == [4 * T] * B
        recall, _, aux = model(fact, state, no_writes(fact))
        _, found = model.store.get(aux["metrics"]["store_ids"][:, p, 0].numpy())
        assert found["episode"].tolist() == [5, 5] and found["position"].tolist() == [p + 1, p + 1]
        assert found["lane"].tolist() == [0, 1]
        assert (aux["metrics"]["memory_share"][:, p] > 0).all()
        scalars = {k: v for k, v in aux["metrics"].items() if isinstance(v, float)}
        assert scalars["store_hit_rate"] == 1.0 and scalars["store_entries"] == 4 * T * B
        assert scalars["write_rate"] == 0.0 and 0 < scalars["memory_share_mean"] < 1 and scalars["read_entropy"] >= 0
        model.store.clear()  # same state, empty store: the read disappears and the logits change
        empty, _, _ = model(fact, state, no_writes(fact))
    assert (recall[:, p] - empty[:, p]).abs().max() > 1e-3


def test_slot_bank_keeps_a_write_across_chunks():
    model = MemNet(model_cfg(store=False, slots=4)).eval()
    B = 2
    tokens = torch.randint(0, V, (B, 8))
    writes = torch.zeros(B, 8, dtype=torch.bool)
    writes[:, 7] = True
    with torch.no_grad():
        _, state, aux = model(tokens, model.initial_state(B), writes)
        slot = aux["metrics"]["write_info"].slot_ids[:, 7]
        kept = state["slot.memory"][torch.arange(B), slot].clone()
        for _ in range(3):
            noise = torch.randint(0, V, (B, 8))
            _, state, _ = model(noise, state, no_writes(noise))
    torch.testing.assert_close(state["slot.memory"][torch.arange(B), slot], kept, atol=0, rtol=0)
    assert state["slot.written"].sum(1).tolist() == [1, 1]


def test_gradients_reach_embedding_and_memory_parameters():
    model = MemNet(model_cfg(internal="lm2", pressure_weight=0.1, util_weight=0.1))
    B, T = 2, 10
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (B, T)), model.initial_state(B), torch.ones(B, T, dtype=torch.bool))
    tokens = torch.randint(0, V, (B, T))
    logits, _, aux = model(tokens, model.detach_state(state), torch.ones(B, T, dtype=torch.bool))
    assert set(aux["losses"]) == {"util", "pressure", "sparsity"}
    assert aux["losses"]["pressure"] > 0 and aux["losses"]["sparsity"] == 0
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1)) + sum(aux["losses"].values())
    loss.backward()
    for name in ("embed.weight", "controller.blocks.0.attn.qkv.weight", "bank.query_proj.weight",
                 "bank.read_out.weight", "bank.write_gate.weight", "internal.read_attn.in_proj_weight",
                 "internal.output_gate.weight", "store_attn.q_proj.weight", "store_attn.v_proj.weight",
                 "store_attn.gate.weight", "fusion.read_w", "head.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_reset_memory_clears_only_chosen_lanes():
    model = MemNet(model_cfg(internal="linformer")).eval()
    B, T = 3, 10
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (B, T)), model.initial_state(B), torch.ones(B, T, dtype=torch.bool))
    sizes = [model.store.size(b) for b in range(B)]
    reset = model.reset_memory(state, torch.tensor([False, True, False]))
    fresh = model.initial_state(B)
    assert [model.store.size(b) for b in range(B)] == [sizes[0], 0, sizes[2]] and sizes[1] == T
    assert reset["ctrl.pos"].tolist() == [T, 0, T]
    for name, t in reset.items():
        if name.startswith("ctrl."):
            continue
        assert torch.equal(t[1], fresh[name][1]), name
        assert torch.equal(t[[0, 2]], state[name][[0, 2]]), name
    reset_view, state_view = semantic(model, reset), semantic(model, state)
    for name, t in reset_view.items():
        assert torch.equal(t[[0, 2]], state_view[name][[0, 2]]), name
    with torch.no_grad():  # lane 1 now behaves exactly like a fresh lane (empty store, window, slots)
        nxt = torch.randint(0, V, (B, 5))
        out, _, _ = model(nxt, reset, no_writes(nxt))
        model.store.clear()
        out_fresh, _, _ = model(nxt, fresh, no_writes(nxt))
    torch.testing.assert_close(out[1], out_fresh[1], atol=1e-5, rtol=1e-4)


def test_everything_off_is_exactly_the_transformer():
    cfg = model_cfg(slots=0, store=False, internal="none")
    torch.manual_seed(3)
    memnet = MemNet(cfg)
    torch.manual_seed(3)
    transformer = build_model("transformer", model_cfg())
    assert [n for n, _ in memnet.named_parameters()] == [n for n, _ in transformer.named_parameters()]
    tokens = torch.randint(0, V, (2, 9))
    a, _, aux = memnet(tokens, memnet.initial_state(2), torch.ones(2, 9, dtype=torch.bool))
    b, _, _ = transformer(tokens, transformer.initial_state(2))
    assert torch.equal(a, b) and aux["losses"] == {}
    assert memnet.memory_state_dict() == {}


def test_store_is_tied_to_the_lane_count_and_bytes_grow_with_memory():
    model = MemNet(model_cfg()).eval()
    with torch.no_grad():
        state = model.initial_state(2)
        before = model.memory_bytes(state)
        _, state, _ = model(torch.randint(0, V, (2, 6)), state, torch.ones(2, 6, dtype=torch.bool))
        assert model.memory_bytes(state) > before
        with pytest.raises(ValueError, match="same number of lanes"):
            model(torch.randint(0, V, (3, 6)), model.initial_state(3))
    model.close()
    assert model.store is None


def test_bf16_autocast_forward_and_backward():
    model = MemNet(model_cfg(internal="lm2"))
    tokens = torch.randint(0, V, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state, _ = model(tokens, model.initial_state(2), torch.ones(2, 8, dtype=torch.bool))
    assert torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert model.embed.weight.grad is not None and all(torch.isfinite(g).all() for g in grads)
    assert model.embed.weight.grad.abs().sum() > 0 and model.internal is not None
    assert all(t.dtype in (torch.float32, torch.long, torch.bool) for t in state.values())


def test_store_replace_keeps_the_latest_memory_of_a_context():
    """With memory.store_replace, writing the same stream twice replaces the first copies (same keys, cosine 1)
    instead of doubling the store; without it, both copies stay."""
    tokens = torch.randint(0, V, (2, 12))
    sizes = {}
    for replace in (0.0, 0.99):
        model = MemNet(model_cfg(store_replace=replace)).eval()
        with torch.no_grad():
            # a first call without writes: no position of the test starts the stream (whose key input is 0)
            _, state, _ = model(torch.randint(0, V, (2, 3)), model.initial_state(2), torch.zeros(2, 3, dtype=bool))
            everywhere = torch.ones(2, 12, dtype=torch.bool)
            model(tokens, state, everywhere)
            first = len(model.store)
            model(tokens, state, everywhere)  # the same call again: identical keys
        sizes[replace] = (first, len(model.store))
    assert sizes[0.0] == (24, 48)
    assert sizes[0.99] == (24, 24)


def test_store_replace_needs_the_same_preceding_token():
    """Replacement removes a lane's memory only when the new one followed the same token (and the keys are
    close): with key input = x_t, rewriting a stream with one token changed keeps the memory right after the
    change (same token, key cosine >= 0.9, but a different predecessor) and replaces the later ones."""
    model = MemNet(model_cfg(store_replace=0.9, key_lags="0:0")).eval()  # key input = x_t
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (2, 3)), model.initial_state(2), torch.zeros(2, 3, dtype=bool))
        first = torch.stack([torch.randperm(V)[:12] for _ in range(2)])
        second = first.clone()
        for b in range(2):  # a token that the first stream does not hold
            second[b, 5] = min(set(range(V)) - set(first[b].tolist()))
        everywhere = torch.ones(2, 12, dtype=torch.bool)
        model(first, state, everywhere)
        model(second, state, everywhere)
    ids = np.arange(4 * len(model.store))
    lane, token, prev = (model.store.meta_of(ids, f) for f in ("lane", "token", "prev"))
    for b in range(2):
        old = lane == b  # this lane's live entries (-1: missing)
        kept_first = old & (prev == first[b, 5].item()) & (token == first[b, 6].item())  # first@6 survives
        rewritten = old & (prev == second[b, 5].item()) & (token == first[b, 6].item())  # second@6
        assert kept_first.sum() == 1 and rewritten.sum() == 1
        k1, k2 = model.store.keys_of(ids[kept_first])[0], model.store.keys_of(ids[rewritten])[0]
        assert k1 @ k2 / np.linalg.norm(k1) / np.linalg.norm(k2) >= 0.9  # the cosine alone would have replaced it
        for t in range(7, 12):  # same predecessor, nearly the same key: only the new copy is left
            assert ((lane == b) & (token == first[b, t].item())).sum() == 1


def test_meta_step_is_memnets_own_clock():
    model = MemNet(model_cfg(window=4))
    tokens = torch.randint(0, V, (1, 6))
    with torch.no_grad():
        state = model(tokens, model.initial_state(1), torch.ones(1, 6, dtype=torch.bool))[1]
        model(tokens, state, torch.ones(1, 6, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"^meta\['step'\]: MemNet records its clock"):
            model(tokens, state, torch.ones(1, 6, dtype=torch.bool), {"step": np.zeros((1, 6))})
        # token and prev are its own too: a passed token replaced the copy read-out's pointer without a word
        for field, what in (("token", "the token it holds"), ("prev", "the token before it")):
            with pytest.raises(ValueError, match=rf"^meta\['{field}'\]: MemNet records {what} "):
                model(tokens, state, torch.ones(1, 6, dtype=torch.bool), {field: np.zeros((1, 6), int)})
        with pytest.raises(ValueError, match=r"^meta: a dict of field -> \(B, T\) ints .*got list$"):
            model(tokens, state, torch.ones(1, 6, dtype=torch.bool), [1, 2])
    assert model.store.meta_of(np.arange(12), "step").tolist() == list(range(12))  # tokens seen by the lane
    assert model.store.meta_of(np.arange(12), "token").tolist() == tokens[0].tolist() * 2


def test_acting_equals_the_chunk_forward_under_bf16_autocast_with_a_task_context():
    """train.amp=true: the task context's running mean came from a bf16 matmul over the chunk, and from a carry
    rounded to bf16 at every acting step: logits 2.6 apart and other actions at 4 of 128 positions. Both run in
    float32 now; what is left is bf16's rounding elsewhere (~0.01)."""
    model = MemNet(model_cfg(window=8, key_source="token", context_decay=0.95, copy=0.85, store_metric="ip",
                             recency=False)).eval()
    B, T = 4, 32
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        state = model.initial_state(B)
        for _ in range(4):
            _, state, _ = model(torch.randint(0, V, (B, T), generator=gen), state, torch.ones(B, T, dtype=torch.bool))
        tokens = torch.randint(0, V, (B, T), generator=gen)
        chunk = model(tokens, state)[0].float()
        stepped, s = [], state
        for t in range(T):
            logits, s, _ = model(tokens[:, t:t + 1], s)
            stepped.append(logits.float())
    assert (torch.cat(stepped, 1) - chunk).abs().max() < 0.1


def test_memnet_starts_its_internal_memory_from_init_slots_without_training_them():
    """The docs said gradients reach init_slots; in MemNet they do not (its state is made without them and detached
    between chunks), as the README now says. The component on its own does pass them (test_memory_internal)."""
    model = MemNet(model_cfg(internal="lm2"))
    state = model.initial_state(2)
    assert torch.equal(state["internal"][0], model.internal.init_slots) and not state["internal"].requires_grad
    logits, _, _ = model(torch.randint(0, V, (2, 6)), state, torch.ones(2, 6, dtype=torch.bool))
    logits.sum().backward()
    assert model.internal.init_slots.grad is None and model.internal.read_attn.in_proj_weight.grad is not None
