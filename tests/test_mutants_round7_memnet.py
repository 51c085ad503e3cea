"""Mutation round 7 (MemNet agent): behaviours of agents/memnet*.py, the controller, allocation and memory/attention.py
that no test checked before (each test names the behaviour it guards)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.allocation import allocation_failure, allocation_reason
from agents.controller import WindowedTransformer, apply_rotary, rotary_tables
from agents.memnet import MemNet
from memory.attention import MemoryAttention
from memory.config import MemoryConfig
from tests.test_memnet import V, model_cfg, no_writes


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def _store_attn_calls(model: MemNet) -> list:
    """The store attention's calls as (args, kwargs, output), recorded as they happen."""
    calls = []
    model.store_attn.register_forward_hook(lambda _m, args, kwargs, out: calls.append((args, kwargs, out)),
                                           with_kwargs=True)
    return calls


def test_the_store_attention_weighs_window_positions_by_their_age_on_the_lane_clock():
    """A position of [window ; call] is (query's clock - its clock) steps old: with the recency term the store
    attention's weights are q.k / sqrt(d) - softplus(r_h) log(1 + age), softmaxed over the positions the query sees
    and mixed over heads, as computed here by hand (an age one step off would move no read's top weight, only these)."""
    model = MemNet(model_cfg(slots=0, copy=0.5)).eval()  # copy > 0: the attention returns its weights
    attn, C = model.store_attn, model.controller.context
    H, d = attn.heads, attn.head_dim
    calls = _store_attn_calls(model)
    first, second = torch.randint(1, V, (2, 5)), torch.randint(1, V, (2, 3))
    with torch.no_grad():
        _, state, _ = model(first, model.initial_state(2), no_writes(first))
        model(second, state, no_writes(second))
        _, kw, (_, info) = calls[-1]
        key_clock = torch.arange(5 - C, 5 + 3)  # the window: the first call's last C steps (clock 2, 3, 4), then 5..7
        age = (5 + torch.arange(3))[:, None] - key_clock  # (T, C+T)
        assert torch.equal(kw["context_age"].expand(3, C + 3), age)
        q = (kw["query_input"] @ attn.q_proj.weight.T).unflatten(-1, (H, d))  # (B, T, H, d)
        k = (kw["key_input"] @ attn.k_proj.weight.T).unflatten(-1, (H, d))  # (B, C+T, H, d)
        logits = torch.einsum("bthd,bshd->bhts", q, k) / d ** 0.5
        logits = logits - F.softplus(attn.recency)[:, None, None] * torch.log1p(age.clamp(min=0).float())
        seen = (age >= 0) & (age <= C)  # itself and the C steps before it
        weights = torch.softmax(logits.masked_fill(~seen, -torch.inf), -1)  # (B, H, T, C+T)
        expected = (weights * torch.softmax(attn.head_mix, 0)[:, None, None]).sum(1)
    torch.testing.assert_close(info["probs"], expected, atol=1e-5, rtol=1e-4)


def test_a_retrieved_memory_is_as_old_as_the_steps_since_it_was_written():
    """mem_age is the query's clock minus the clock its memory was written at (here passed as "position" too)."""
    model = MemNet(model_cfg(slots=0)).eval()
    calls = _store_attn_calls(model)
    tokens, query = torch.randint(1, V, (2, 6)), torch.randint(1, V, (2, 3))
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(2), torch.ones(2, 6, dtype=torch.bool),
                            {"position": np.tile(np.arange(6), (2, 1))})
        _, _, aux = model(query, state, no_writes(query))
    ids = aux["metrics"]["store_ids"].numpy()  # (B, T, k)
    found = ids >= 0
    assert found.any()
    expected = (6 + np.arange(3))[None, :, None] - model.store.meta_of(ids, "position")
    np.testing.assert_array_equal(calls[-1][1]["mem_age"].numpy()[found], expected[found])


def test_the_copy_mixture_is_floored_by_one_millionth_per_token():
    """log((1 - c) softmax + c p_copy + 1e-6): the mixture sums to 1, so the exp of the logits sums to 1 + V 1e-6."""
    model = MemNet(model_cfg(slots=0, copy=0.5)).eval()
    tokens = torch.randint(1, V, (2, 5))
    with torch.no_grad():
        logits, _, _ = model(tokens, model.initial_state(2), no_writes(tokens))
    total = logits.double().exp().sum(-1)
    torch.testing.assert_close(total, torch.full_like(total, 1 + V * 1e-6), atol=4e-6, rtol=0)


def test_the_copy_pointer_over_missing_memories_is_empty_not_an_error():
    """Memory slots the store could not fill (id -1, token -1) carry no copy mass: the copy distribution still
    sums to the weight on the window and the call (1), with fewer memories than store_top_k found."""
    model = MemNet(model_cfg(slots=0, copy=0.9, store_top_k=4)).eval()
    tokens = torch.randint(1, V, (1, 5))
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(1), torch.ones(1, 5, dtype=torch.bool))
        query = torch.randint(1, V, (1, 4))
        logits, _, aux = model(query, state, no_writes(query))
    assert (aux["metrics"]["store_ids"] < 0).any() and (aux["metrics"]["store_ids"] >= 0).any()
    total = logits.double().exp().sum(-1)
    torch.testing.assert_close(total, torch.full_like(total, 1 + V * 1e-6), atol=4e-6, rtol=0)


def test_with_a_one_token_window_a_call_s_first_memory_has_no_known_predecessor():
    """window=1 carries no token into the next call: the memory written at a call's first position records prev -1
    (unknown, as at the stream start), not token 0; the others the token before them."""
    model = MemNet(model_cfg(window=1, slots=0)).eval()
    every = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        _, state, _ = model(torch.tensor([[3, 4, 5]]), model.initial_state(1), every)
        model(torch.tensor([[6, 7, 8]]), state, every)
    ids = np.arange(16)
    steps, prev = model.store.meta_of(ids, "step"), model.store.meta_of(ids, "prev")
    assert dict(zip(steps[steps >= 0].tolist(), prev[steps >= 0].tolist(), strict=True)) == {
        0: -1, 1: 3, 2: 4, 3: -1, 4: 6, 5: 7}


@pytest.mark.parametrize("grad", [False, True])  # in place on the append buffer / fresh buffers
def test_the_window_view_holds_the_rotated_keys_and_values_of_the_last_tokens(grad):
    """WindowedTransformer.window(state, 0): the last W - 1 tokens' layer-0 keys (rotated at their positions) and
    values, oldest first, as computed here from the block's own projections."""
    cfg = model_cfg(window=4)
    ctrl = WindowedTransformer(cfg).eval()
    x = torch.randn(2, 6, cfg.dim)
    with torch.set_grad_enabled(grad):
        _, state = ctrl(x, ctrl.initial_state(2))
    keys, values = ctrl.window(state, 0)
    block, H, d = ctrl.blocks[0], cfg.heads, cfg.dim // cfg.heads
    with torch.no_grad():
        qkv = block.attn.qkv(block.ln1(x)).view(2, 6, 3, H, d).permute(2, 0, 3, 1, 4)  # (3, B, H, T, d)
        cos, sin = rotary_tables(torch.arange(6).expand(2, 6), d)
        k = apply_rotary(qkv[1], cos, sin)
    torch.testing.assert_close(keys, k[:, :, 3:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, qkv[2][:, :, 3:], atol=1e-5, rtol=1e-5)


def test_token_code_keys_whose_rest_is_half_the_key_are_searched_by_code_lookups():
    """Coded search (scores of the token and prev codes looked up) is used where the key's other blocks are at most
    half of it: lags 1:0 + 2:1 with a context block make 4 blocks, 2 coded, 2 scanned; 3 lag blocks + context (rest
    3 of 5) are scanned whole."""
    half = MemNet(model_cfg(key_source="token", store_metric="ip", key_lags="1:0+2:1", context_decay=0.5))
    more = MemNet(model_cfg(key_source="token", store_metric="ip", key_lags="1:0+3:1", context_decay=0.5))
    half.allocate_memory(1)
    more.allocate_memory(1)
    assert half.cfg.memory.key_blocks == 4 and half.store.coded is not None
    assert more.cfg.memory.key_blocks == 5 and more.store.coded is None


def test_a_one_token_call_reports_no_chunk_floats():
    """Only chunk calls (T > 1) add the floats (store_entries, store_hit_rate, ...) to the metrics: a one-token call,
    an acting step, skips their host syncs even without read_at."""
    model = MemNet(model_cfg(slots=0)).eval()
    with torch.no_grad():
        _, state, chunk = model(torch.randint(1, V, (2, 2)), model.initial_state(2), no_writes(torch.zeros(2, 2)))
        _, _, step = model(torch.randint(1, V, (2, 1)), state, no_writes(torch.zeros(2, 1)))
    assert chunk["metrics"]["store_entries"] == 0.0
    assert "store_entries" not in step["metrics"] and "store_hit_rate" not in step["metrics"]


def test_an_undo_after_a_load_that_replaced_the_store_is_refused():
    """A load of another lane count inside memory_undo makes new store and cache objects: the undo cannot reach them
    and says so (undoing the old, dropped objects went back nowhere, silently)."""
    model, other = MemNet(model_cfg()).eval(), MemNet(model_cfg()).eval()
    with torch.no_grad():
        model(torch.randint(1, V, (2, 4)), model.initial_state(2), torch.ones(2, 4, dtype=torch.bool))
        other(torch.randint(1, V, (3, 4)), other.initial_state(3), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="the store and cache were replaced inside; undo cannot reach"):
        with model.memory_undo() as undo:
            model.load_memory_state_dict(other.memory_state_dict())
            undo()


def test_a_query_that_may_see_nothing_reads_nothing():
    """A query whose mask row allows no position and which has no memory attends to nothing: zero weights and a
    read of the output bias alone, not NaN (softmax over all -inf)."""
    attn = MemoryAttention(MemoryConfig(dim=32, attn_heads=4)).eval()
    mask = torch.ones(3, 3, dtype=torch.bool).tril()
    mask[1] = False  # query 1 may see nothing
    with torch.no_grad():
        out, info = attn(torch.randn(2, 3, 32), attn_mask=mask, return_probs=True)
    assert torch.equal(info["probs"][:, 1], torch.zeros(2, 3))
    torch.testing.assert_close(out[:, 1], attn.out_proj.bias.expand(2, 32))
    assert torch.isfinite(out).all()


def test_the_controller_refuses_a_state_of_another_lane_count():
    """WindowedTransformer called with a state made for 1 lane and tokens of 2: one ValueError naming both (a
    1-lane state broadcast its clock over the 2 lanes before failing inside the buffer write)."""
    cfg = model_cfg()
    ctrl = WindowedTransformer(cfg).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"^state: made for 1 lanes, but tokens have batch size 2$"):
        ctrl(torch.randn(2, 3, cfg.dim), ctrl.initial_state(1))


def test_numpy_s_size_in_thousands_of_units_is_read_whole():
    """numpy writes sizes past 999 PiB with thousands separators: the line says the whole "1,234 PiB"."""
    assert allocation_reason(MemoryError("Unable to allocate 1,234 PiB for an array with shape (10,)")) == (
        "an allocation of 1,234 PiB failed")


def test_a_size_that_overflows_torch_s_long_unpacking_is_an_allocation_failure():
    """torch's TypeError "Overflow when unpacking long" (a size past int64) is a size beyond what can be allocated,
    not a bug; another TypeError is a bug."""
    exc = TypeError("empty(): argument 'size' failed to unpack the object at pos 2 with error "
                    "\"Overflow when unpacking long long\"")
    assert allocation_failure(exc)
    assert allocation_reason(exc) == "sizes beyond what can be allocated"
    assert not allocation_failure(TypeError("unsupported operand type(s) for +: 'int' and 'str'"))


def test_numpy_s_too_many_elements_is_a_size_beyond_what_can_be_allocated():
    """numpy's ValueError "Maximum allowed dimension exceeded" is an allocation failure of sizes beyond what can be
    allocated; a bare MemoryError, which names no size, reads as "out of memory"."""
    exc = ValueError("Maximum allowed dimension exceeded")
    assert allocation_failure(exc) and allocation_reason(exc) == "sizes beyond what can be allocated"
    assert allocation_reason(MemoryError()) == "out of memory"


def test_a_cosine_store_search_leaves_out_memories_still_in_the_window():
    """memory.store_metric=cosine (no recency re-scoring): memories still in the window (the attention sees them
    there already) are still dropped from the candidates, so the k read are all older than the window."""
    model = MemNet(model_cfg(slots=0, store_top_k=4, store_metric="cosine")).eval()
    C = model.controller.context
    tokens, query = torch.randint(1, V, (2, 8)), torch.randint(1, V, (2, 1))
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(2), torch.ones(2, 8, dtype=torch.bool))
        _, _, aux = model(query, state, no_writes(query))
    ids = aux["metrics"]["store_ids"].numpy()
    assert (ids >= 0).all()  # 4 of the 5 memories out of the window
    assert (model.store.meta_of(ids, "step") < 8 - C).all()  # the query is step 8; the window steps 5, 6, 7


def test_a_memory_mask_that_is_not_bool_is_refused_by_name():
    """mem_mask must be bool: a float 0/1 mask is one ValueError naming it (torch's "~" failed on it unnamed)."""
    attn = MemoryAttention(MemoryConfig(dim=32, attn_heads=4))
    mem_k, mem_v = torch.randn(2, 3, 2, 4, 8), torch.randn(2, 3, 2, 4, 8)
    with pytest.raises(ValueError, match=r"^MemoryAttention: mem_mask must be a \(2, 3, 2\) bool tensor"):
        attn(torch.randn(2, 3, 32), mem_k, mem_v, torch.ones(2, 3, 2))


def test_the_window_carries_no_gradient_into_the_next_call():
    """Truncated BPTT: a learning call's new controller state (the window K/V buffers) holds no graph."""
    model = MemNet(model_cfg(slots=0)).train()
    tokens = torch.randint(1, V, (2, 5))
    _, state, _ = model(tokens, model.initial_state(2), torch.ones(2, 5, dtype=torch.bool))
    assert not [name for name, t in state.items() if name.startswith("ctrl.") and t.requires_grad]


def test_a_memory_state_without_its_store_or_cache_is_refused_by_name():
    """A memory state missing "store" or "cache" is one ValueError naming the keys it has (a KeyError before)."""
    model = MemNet(model_cfg()).eval()
    with pytest.raises(ValueError, match=r"^memory state: expected keys lanes, store, cache; got \['cache', 'lanes'\]"):
        model.load_memory_state_dict({"lanes": 2, "cache": {}})
