"""Controller, baselines and build_model: acting == chunk forward, the window, positions, sizes, resets (a forward's
bad inputs: test_models_forward_inputs.py)."""

import pytest
import torch

from agents.baselines import recurrent_param_count
from agents.controller import apply_rotary, rotary_tables
from agents.models import AGENTS, ModelConfig, build_model, memory_free
from memory.config import MemoryConfig

V = 23


def small_cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=V, dim=32, layers=2, heads=4, window=8)
    base.update(kw)
    dim = base["dim"]
    return ModelConfig(**base, memory=MemoryConfig(dim=dim, slots=0, store=False, attn_heads=4))


def semantic(model, state) -> dict:
    """What a state means, independent of buffer layout: per-lane tensors, lanes first (controller windows
    as (B, H, W-1, d) views, position counters; recurrent hidden states moved to lanes-first)."""
    if not hasattr(model, "controller"):
        return {name: t.transpose(0, 1) for name, t in state.items()}  # (L, B, Hh) -> (B, L, Hh)
    ctrl = {k[5:]: t for k, t in state.items() if k.startswith("ctrl.")}
    out = {k: t for k, t in state.items() if not k.startswith("ctrl.")}
    out["pos"] = ctrl["pos"]
    for layer in range(model.cfg.layers):
        out[f"k{layer}"], out[f"v{layer}"] = model.controller.window(ctrl, layer)
    return out


def act_stepwise(model, tokens, state):
    """Feed tokens (B, T) one at a time with writes off; returns logits (B, T, V) and the final state."""
    outs = []
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            logits, state, _ = model(tokens[:, t:t + 1], state, torch.zeros_like(tokens[:, t:t + 1], dtype=bool))
            outs.append(logits)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("agent", ["transformer", "lstm", "gru"])
def test_acting_equals_chunk_forward(agent):
    torch.manual_seed(0)
    model = build_model(agent, small_cfg()).eval()
    tokens = torch.randint(0, V, (3, 21))
    state = model.initial_state(3)
    # warm the state past one window so the chunk starts mid-stream with a full cache
    with torch.no_grad():
        _, state, _ = model(torch.randint(0, V, (3, 11)), state)
    stepped, s_step = act_stepwise(model, tokens, state)
    with torch.no_grad():
        chunk, s_chunk, _ = model(tokens, state, torch.zeros_like(tokens, dtype=bool))
    assert chunk.shape == (3, 21, V)
    torch.testing.assert_close(stepped, chunk, atol=2e-5, rtol=1e-4)
    s_step, s_chunk = semantic(model, s_step), semantic(model, s_chunk)
    for name in s_chunk:
        torch.testing.assert_close(s_step[name], s_chunk[name], atol=2e-5, rtol=1e-4)


def test_states_stay_valid_when_the_stream_branches():
    """Acting appends K/V in place into a shared buffer; a state that is reused later (the trainer learns from
    the chunk's start state after acting from it) must still mean what it meant: every branch equals a
    recomputation from scratch, with and without gradient, in any order."""
    torch.manual_seed(7)
    model = build_model("transformer", small_cfg(window=6)).eval()
    prefix, a, b, x = (torch.randint(0, V, (2, n)) for n in (9, 5, 4, 7))

    def scratch(*parts):
        with torch.no_grad():
            return model(torch.cat(parts, 1), model.initial_state(2))[0][:, -parts[-1].shape[1]:]

    with torch.no_grad():
        _, s0, _ = model(prefix, model.initial_state(2))
        out_a, s_a, _ = model(a, s0)  # in place after s0
        out_b, s_b, _ = model(b, s0)  # s0 is no longer the newest: fresh buffers
        out_ax, _, _ = model(x, s_a)  # s_a is still the newest on its buffers: in place again
    out_bx, _, _ = model(x, s_b)  # with gradient: fresh buffers
    for got, parts in ((out_a, (prefix, a)), (out_b, (prefix, b)), (out_ax, (prefix, a, x)), (out_bx, (prefix, b, x))):
        torch.testing.assert_close(got, scratch(*parts), atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        for _ in range(12):  # run far past the buffer's slack: it is renewed when full
            _, s_a, _ = model(x, s_a)
        far, _, _ = model(b, s_a)
    torch.testing.assert_close(far, scratch(prefix, a, x, *[x] * 12, b)[:, -4:], atol=2e-5, rtol=1e-4)


def test_chunks_compose():
    torch.manual_seed(1)
    model = build_model("transformer", small_cfg()).eval()
    tokens = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        whole, _, _ = model(tokens, model.initial_state(2))
        first, s, _ = model(tokens[:, :13], model.initial_state(2))
        second, _, _ = model(tokens[:, 13:], s)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layers", [1, 2])
def test_window_limits_what_a_token_sees(layers):
    """Each layer looks W - 1 tokens back, so the output at t depends on tokens t - L(W-1) .. t and on nothing
    older, also when the window spans two calls (the cached K/V carry it)."""
    torch.manual_seed(2)
    W = 8
    model = build_model("transformer", small_cfg(window=W, layers=layers)).eval()
    tokens = torch.randint(0, V, (1, 40))
    t, reach = 36, layers * (W - 1)

    def out_at(seq):
        with torch.no_grad():
            a, s, _ = model(seq[:, :33], model.initial_state(1))  # split so the window spans two calls
            b, _, _ = model(seq[:, 33:], s)
        return torch.cat([a, b], 1)[0, t]

    def changed(i):
        seq = tokens.clone()
        seq[0, i] = (seq[0, i] + 1) % V
        return seq

    base = out_at(tokens)
    torch.testing.assert_close(out_at(changed(t - reach - 1)), base, atol=1e-6, rtol=0)  # out of reach
    assert (out_at(changed(t - reach)) - base).abs().max() > 1e-4  # the oldest token in reach matters


@pytest.mark.parametrize("T, C", [(1, 0), (1, 3), (4, 3), (2, 7)])
def test_the_window_mask_is_each_token_and_the_filled_positions_before_it(T, C):
    """Query t of a call that starts at stream position p sees the key at position p - C + i ([cache (C) ; call (T)])
    when it is itself or one of the C before it and the stream has reached it (>= 0). Was unchecked: a mask without
    the token itself, or without a stream's first token, kept acting equal to the chunk forward, and the window test
    above looks at one position only."""
    from agents.controller import window_mask

    pos = [0, 1, 3, 9]  # (B,) the lanes' positions at the call's start
    want = torch.tensor([[[[0 <= p - C + i and p + t - C <= p - C + i <= p + t for i in range(C + T)]
                           for t in range(T)]] for p in pos])  # (B, 1, T, C+T)
    assert torch.equal(window_mask(torch.tensor(pos), T, C), want)


def test_the_first_token_of_a_stream_reaches_the_tokens_after_it():
    """One layer, a fresh state: the output at t = 3 depends on token 0 (through the attention only)."""
    torch.manual_seed(0)
    model = build_model("transformer", small_cfg(window=8, layers=1)).eval()
    tokens = torch.randint(0, V, (1, 6))
    changed = tokens.clone()
    changed[0, 0] = (changed[0, 0] + 1) % V
    with torch.no_grad():
        a, b = (model(seq, model.initial_state(1))[0][0, 3] for seq in (tokens, changed))
    assert (a - b).abs().max() > 1e-4


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)

    def score(p_q, p_k):
        cq, sq = rotary_tables(torch.tensor([[p_q]]), 16)
        ck, sk = rotary_tables(torch.tensor([[p_k]]), 16)
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum(-1)

    near = score(12, 5)
    far = score(12 + 10**12, 5 + 10**12)  # a stream of a trillion tokens: same geometry
    torch.testing.assert_close(far, near, atol=1e-4, rtol=1e-4)
    assert (score(12, 5) - score(12, 6)).abs().max() > 1e-3


def test_state_counts_positions_and_holds_only_the_window():
    cfg = small_cfg(window=5)
    model = build_model("transformer", cfg)
    state = model.initial_state(2)
    assert model.controller.window({k[5:]: t for k, t in state.items() if k.startswith("ctrl.")}, 1)[0].shape == (
        2, cfg.heads, 4, cfg.dim // cfg.heads)
    _, state, _ = model(torch.randint(0, V, (2, 7)), state)
    assert state["ctrl.pos"].tolist() == [7, 7]
    assert all(isinstance(t, torch.Tensor) for t in state.values())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_baseline_sizes_match_transformer(cell):
    for cfg in (small_cfg(), ModelConfig(vocab_size=64)):
        target = build_model("transformer", cfg).num_params()
        model = build_model(cell, cfg)
        assert abs(model.num_params() - target) / target < 0.25, (cell, model.num_params(), target)
        assert model.num_params() == recurrent_param_count(cell, cfg.vocab_size, model.hidden, cfg.layers)


@pytest.mark.parametrize("agent", ["transformer", "lstm", "gru"])
def test_gradients_reach_embedding_and_all_parameters(agent):
    torch.manual_seed(4)
    model = build_model(agent, small_cfg())
    tokens = torch.randint(0, V, (2, 12))
    logits, _, _ = model(tokens, model.initial_state(2))
    torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens.roll(-1, 1).reshape(-1)).backward()
    assert model.embed.weight.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("agent", ["transformer", "lstm", "gru"])
def test_reset_memory_clears_only_chosen_lanes(agent):
    torch.manual_seed(5)
    model = build_model(agent, small_cfg()).eval()
    tokens = torch.randint(0, V, (3, 10))
    with torch.no_grad():
        _, state, _ = model(tokens, model.initial_state(3))
        reset = model.reset_memory(state, torch.tensor([False, True, False]))
        fresh = model.initial_state(3)
        nxt = torch.randint(0, V, (3, 4))
        out_reset, _, _ = model(nxt, reset)
        out_fresh, _, _ = model(nxt, fresh)
        out_kept, _, _ = model(nxt, state)
    reset_view, state_view = semantic(model, reset), semantic(model, state)
    for name, t in reset_view.items():
        torch.testing.assert_close(t[[0, 2]], state_view[name][[0, 2]])
    torch.testing.assert_close(out_reset[1], out_fresh[1], atol=1e-6, rtol=0)  # lane 1 starts afresh
    torch.testing.assert_close(out_reset[[0, 2]], out_kept[[0, 2]])  # the others keep their past
    assert (out_kept[1] - out_fresh[1]).abs().max() > 1e-4  # and the past did matter


def test_memory_free_transformer_and_memnet_share_the_controller():
    cfg = ModelConfig(vocab_size=V, dim=32, heads=4, window=8, memory=MemoryConfig(dim=32))
    off = memory_free(cfg)
    assert (off.memory.slots, off.memory.store, off.memory.internal) == (0, False, "none")
    assert cfg.memory.slots == 64  # the input config is not modified
    assert build_model("transformer", cfg).num_params() < build_model("memnet", cfg).num_params()


@pytest.mark.parametrize("kw, words", [
    (dict(window=0), "model.window=0"),
    (dict(heads=5), "model.heads=5"),
    (dict(heads=32), "must be even"),
    (dict(layers=0), "model.layers=0"),
    (dict(dropout=1.0), "model.dropout=1.0"),
    (dict(vocab_size=1), "model.vocab_size=1"),
    (dict(dim="128"), "model.dim='128'"),
])
def test_bad_config_names_the_option(kw, words):
    base = dict(vocab_size=V, dim=32, heads=4, memory=MemoryConfig(dim=32))
    with pytest.raises(ValueError, match=words.replace(".", r"\.").replace("(", r"\(")):
        ModelConfig(**{**base, **kw})


def test_memory_dim_must_match_model_dim_and_agent_names_are_checked():
    with pytest.raises(ValueError, match=r"memory\.dim=128: must equal model\.dim=32"):
        ModelConfig(vocab_size=V, dim=32, heads=4)
    with pytest.raises(ValueError, match=r"agent='rnn'"):
        build_model("rnn", small_cfg())
    assert set(AGENTS) == {"memnet", "transformer", "lstm", "gru"}


@pytest.mark.parametrize("agent,context", [("memnet", 0.9), ("memnet", 0.0), ("transformer", 0.0), ("gru", 0.0)])
def test_weight_decay_skips_biases_norms_and_fixed_context_columns(agent, context):
    """train.weight_decay = 0: one group, no decay (the layout of older checkpoints). > 0: every 1-d parameter, the
    gated fusion's gate biases and, with a fixed context block, the store attention's W_k / W_q go to a group without
    decay; the rest decays."""
    cfg = ModelConfig(vocab_size=16, dim=16, heads=2, window=4, memory=MemoryConfig(
        dim=16, slots=4, read_heads=2, top_k=2, bottleneck=4, attn_heads=2, context_decay=context))
    model = build_model(agent, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    (only,) = model.optimizer_groups(0.0)
    assert only["weight_decay"] == 0.0 and len(only["params"]) == len(names)
    decayed, kept = model.optimizer_groups(0.1)
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0
    fixed = {"store_attn.k_proj.weight", "store_attn.q_proj.weight"} if context else set()
    if agent == "memnet":  # the gated fusion's per-source gate biases (R, D) are biases too
        fixed |= {"fusion.gate_b"}
    one_d = {n for n, p in model.named_parameters() if p.dim() < 2}
    assert {names[id(p)] for p in kept["params"]} == one_d | fixed
    assert {names[id(p)] for p in decayed["params"]} == set(names.values()) - one_d - fixed


@pytest.mark.parametrize("agent", ["memnet", "transformer", "lstm", "gru"])
def test_every_agent_takes_an_empty_call_and_refuses_a_bad_lane_count_alike(agent):
    """lstm/gru raised torch's RuntimeErrors for both (MemNet already answered them)."""
    cfg = ModelConfig(vocab_size=8, dim=16, heads=2, window=8, layers=1,
                      memory=MemoryConfig(dim=16, read_heads=2, attn_heads=2, slots=4))
    model = build_model(agent, cfg)
    state = model.initial_state(2)
    logits, after, _ = model(torch.zeros(2, 0, dtype=torch.long), state)
    assert logits.shape == (2, 0, 8)
    assert all(torch.equal(after[k], state[k]) for k in state)
    for bad in (-1, 0, True, 2.0):
        with pytest.raises(ValueError, match=r"batch_size=.*: must be an int >= 1"):
            model.initial_state(bad)
    with pytest.raises(TypeError, match="pass an agents.models.ModelConfig"):
        build_model(agent, {"vocab_size": 8})


def test_the_lstm_trains_under_cpu_autocast_in_float32(tmp_path):
    """agent=lstm train.amp=true ended in "could not create a primitive descriptor for the LSTM forward propagation
    primitive": CPU autocast sends nn.LSTM to oneDNN's bfloat16 kernel, which CPUs without bf16 support cannot
    build. It runs in float32 there, as nn.GRU does (autocast leaves it alone)."""
    from agents.run import main
    from tests.test_run import tiny

    torch.manual_seed(0)
    model = build_model("lstm", ModelConfig(vocab_size=16, dim=32, memory=MemoryConfig(dim=32)))
    tokens = torch.randint(0, 16, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state, _ = model(tokens, model.initial_state(2))
    logits.float().sum().backward()
    assert state["h"].dtype == state["c"].dtype == torch.float32
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.rnn.parameters())
    plain, _, _ = model(tokens, model.initial_state(2))
    torch.testing.assert_close(logits.float(), plain, atol=0.05, rtol=0.05)  # only the head ran in bfloat16
    assert main(tiny("ContinualShift-v0", "lstm", tmp_path / "run", "train.amp=true")) == 0
