"""The other memory components' cost at MemNet's shapes, against one transformer layer of the same width.

    python benchmarks/components.py                  # ContinualShift-v0's MemNet, 16 lanes, 2 threads; Markdown table
    python benchmarks/components.py --threads 1 --repeats 50

Shapes come from MemNet's own config (agents/conf/config.yaml with env=ContinualShift-v0): D=128, 4 attention
heads, window W=64 (C=63 cached positions), chunk T=32, 16 lanes, slot bank of 64 slots (4 heads, top-4),
internal memories of 16 slots, 8 retrieved memories per query, store key inputs of 3 D-wide blocks (lag pair 1:0
and the task context) and query inputs of 2. Two settings (float32, CPU, torch threads as given):
- step (an acting call: 3 new tokens per lane, the output needed at the last one only, under torch.no_grad()):
  LM2Memory / LinformerMemory `read_out` at the last token (acting calls write nothing, so no `updated_state`);
  MemoryAttention as MemNet's store read (agents/memnet_store.py `_read_store`: queries_in_context over
  [window ; call], folded memory inputs, `window_mask`, return_probs for the copy read-out); Fusion of the
  last token's two reads (slot bank and store) by each strategy.
- chunk (a learning chunk: T tokens per lane, forward + backward of the sum of squares of every output):
  the same calls at all T positions, the internal memories also with `updated_state` over the chunk; plus
  `memory_regularisers` with all three weights > 0 on the slot bank's read / write of a chunk, and the
  per-chunk metrics (read_entropy, write_rate, store_hit_rate, slot_usage: floats, forward only).
  MemNet runs neither of these two on acting calls, so they have no step row.
The reference in both settings is `nn.TransformerEncoderLayer(D, nhead=4, dim_feedforward=4D, dropout=0,
batch_first=True)` as benchmarks/slots.py uses it, here over the window as MemNet's controller layer works:
the call's tokens attend over the window's cached K/V (projected in advance) and themselves under the same
window mask; in step mode its output is computed at the last token only. The ratio is component / layer,
the median over rounds; each round times the layer and every component of a setting back to back
(`interleaved_ms` of benchmarks/slots.py), so load from other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from agents.cli_args import counted, measured_or_usage, positive_int, thread_count  # noqa: E402
from agents.config import load_config, memory_config  # noqa: E402
from agents.controller import window_mask  # noqa: E402
from agents.startup import run_script  # noqa: E402
from memory.attention import MemoryAttention  # noqa: E402
from memory.fusion import Fusion  # noqa: E402
from memory.internal import LinformerMemory, LM2Memory  # noqa: E402
from memory.losses import memory_regularisers  # noqa: E402
from memory.metrics import read_entropy, slot_usage, store_hit_rate, write_rate  # noqa: E402
from memory.slots import MultiHeadMemoryBank, ReadInfo, WriteInfo  # noqa: E402

# benchmarks/ is no package, and putting it on sys.path would let benchmarks/memory.py shadow the memory package
_spec = importlib.util.spec_from_file_location("benchmarks_slots", os.path.join(HERE, "slots.py"))
_slots_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_slots_benchmark)
interleaved_ms = _slots_benchmark.interleaved_ms

ACT_TOKENS = 3  # tokens per lane of an acting call (the steps not yet fed, then this one)
FULL_WINDOW = 10_000  # tokens each lane has seen: every window slot holds an earlier position


def timed(forward, inputs: tuple, backward: bool):
    """A callable for `interleaved_ms`: forward(*inputs) under no_grad, or (backward) with the inputs as fresh
    leaves that require grad and the backward of the sum of squares of forward's outputs."""
    def call():
        if not backward:
            with torch.no_grad():
                forward(*inputs)
            return
        out = forward(*(t.detach().requires_grad_(True) for t in inputs))
        sum(o.pow(2).sum() for o in out).backward()
    return call


def run(args) -> tuple[str, list[tuple[str, str, float, float, float]]]:
    """The shapes in words, and rows (component, setting, layer ms, component ms, component / layer), step first."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = load_config(["env=ContinualShift-v0"])
    m = memory_config(cfg)
    B, D, H, T, C, k = args.lanes, m.dim, m.attn_heads, cfg.train.chunk, cfg.model.window - 1, m.store_top_k
    layer = nn.TransformerEncoderLayer(D, nhead=H, dim_feedforward=4 * D, dropout=0.0, batch_first=True)
    attn = layer.self_attn
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    window_x = torch.randn(B, C, D)  # the window's inputs (LN of earlier hidden states)
    with torch.no_grad():  # the window's keys / values, projected once as the controller's K/V cache holds them
        k_cache = F.linear(window_x, w_k, b_k).view(B, C, H, D // H).transpose(1, 2)  # (B, H, C, D/H)
        v_cache = F.linear(window_x, w_v, b_v).view(B, C, H, D // H).transpose(1, 2)
    pos = torch.full((B,), FULL_WINDOW)

    def layer_call(T_call: int, last_only: bool):
        mask = window_mask(pos, T_call, C)  # (B, 1, T, C+T)
        mask = mask[:, :, -1:] if last_only else mask  # (B, 1, T', C+T)

        def fn(x):  # x (B, T, D): the call's tokens over [window ; call] (post-norm, as the layer)
            heads = (B, -1, H, D // H)
            k_all = torch.cat((k_cache, F.linear(x, w_k, b_k).view(heads).transpose(1, 2)), dim=2)  # (B, H, C+T, d)
            v_all = torch.cat((v_cache, F.linear(x, w_v, b_v).view(heads).transpose(1, 2)), dim=2)
            xq = x[:, -1:] if last_only else x  # (B, T', D)
            q = F.linear(xq, w_q, b_q).view(heads).transpose(1, 2)  # (B, H, T', d)
            a = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask).transpose(1, 2).flatten(2)
            h = layer.norm1(xq + attn.out_proj(a))  # (B, T', D)
            return (layer.norm2(h + layer.linear2(F.relu(layer.linear1(h)))),)
        return fn

    internals = {"LM2Memory": LM2Memory(m), "LinformerMemory": LinformerMemory(m)}
    internal_state = torch.randn(B, m.internal_slots, D)  # (B, S, D)

    def internal_call(memory, last_only: bool):
        def fn(h):  # h (B, T, D) controller states of the call
            if last_only:
                return (memory.read_out(h[:, -1:], internal_state),)  # (B, 1, D)
            return memory.read_out(h, internal_state), memory.updated_state(h, internal_state)  # (B, T, D), (B, S, D)
        return fn

    store_attn = MemoryAttention(m, key_in=m.key_blocks * D, query_in=m.query_blocks * D)

    def store_read_call(T_call: int, at: torch.Tensor):
        keys_in = torch.randn(B, C + T_call, m.key_blocks * D)  # (B, C+T, a D): token codes and context, no grad
        queries_in = torch.randn(B, len(at), m.query_blocks * D)  # (B, T', b D)
        mem_keys_in = torch.randn(B, len(at), k, m.key_blocks * D)  # (B, T', k, a D): the cache's key inputs
        mem_inputs = torch.randn(B, len(at), k, D)  # (B, T', k, D)
        mem_mask = torch.ones(B, len(at), k, dtype=torch.bool)  # a full store: every query finds k memories
        kw = {"attn_mask": window_mask(pos, T_call, C)[:, :, at], "key_input": keys_in, "query_input": queries_in,
              "return_probs": m.copy > 0, "queries_in_context": True}
        if m.recency:
            kw["context_age"] = C + at[:, None] - torch.arange(C + T_call)  # (T', C+T)
            kw["mem_age"] = torch.randint(0, 4 * C, (B, len(at), k))  # (B, T', k)

        def fn(x):  # x (B, T, D): LN(h) of the call
            xs = torch.cat((window_x, x), dim=1)  # (B, C+T, D)
            read, info = store_attn(x[:, at], mem_keys_in, mem_inputs, mem_mask, context=xs, mem_inputs=True, **kw)
            return (read, info["probs"]) if m.copy > 0 else (read,)  # (B, T', D), (B, T', C+T+k)
        return fn

    sources = (m.slots > 0) + (m.internal != "none") + m.store
    fusions = {s: Fusion(dataclasses.replace(m, fusion=s), sources) for s in ("gated", "concat", "cross_attention")}

    def fusion_call(fusion, last_only: bool):
        def fn(h, reads):  # h (B, T, D), reads (B, T, R, D)
            return (fusion(h[:, -1:], reads[:, -1:]) if last_only else fusion(h, reads),)  # (B, T', D)
        return fn

    # the slot bank's read and write of a chunk (full bank): what the regularisers and metrics are computed on
    bank = MultiHeadMemoryBank(m)
    chunk_h = torch.randn(B, T, D)
    with torch.no_grad():
        slots = bank(torch.randn(B, m.slots, D), bank.initial_state(B), torch.ones(B, m.slots, dtype=torch.bool))[1]
        read_info = bank.read(chunk_h, slots)[1]  # weights, slot_ids (B, T, H, top_k)
        slots, write_info = bank.write(chunk_h, slots, torch.ones(B, T, dtype=torch.bool), read_info)  # (B, T)
    store_ids = torch.randint(-1, 4096, (B, T, k))  # (B, T, k), -1 = no memory
    reg_cfg = dataclasses.replace(m, util_weight=0.01, pressure_weight=0.01, sparsity_weight=0.01)

    def regularisers(read_weights, write_gate, slot_memory):  # (B, T, H, top_k), (B, T), (B, N, D)
        terms = memory_regularisers(reg_cfg, ReadInfo(read_weights, read_info.slot_ids),
                                    WriteInfo(write_gate, write_info.slot_ids), slots._replace(memory=slot_memory))
        return tuple(terms.values())  # three scalars

    def metrics():
        return read_entropy(read_info), write_rate(write_info), store_hit_rate(store_ids), slot_usage(slots)

    modules = [layer, store_attn, bank, *internals.values(), *fusions.values()]
    rows = []
    for setting, T_call in (("step", ACT_TOKENS), ("chunk", T)):
        last_only, backward = setting == "step", setting == "chunk"
        for module in modules:
            module.train(backward)  # acting runs in eval mode, learning in train mode (dropout is 0 either way)
        x = torch.randn(B, T_call, D)  # (B, T, D)
        reads = torch.randn(B, T_call, sources, D)  # (B, T, R, D)
        at = torch.tensor([T_call - 1]) if last_only else torch.arange(T_call)  # the positions read
        cases = [(name, internal_call(mem, last_only), (x,), backward) for name, mem in internals.items()]
        cases.append((f"MemoryAttention (store read, k={k})", store_read_call(T_call, at), (x,), backward))
        cases += [(f"Fusion {s} (R={sources})", fusion_call(f, last_only), (x, reads), backward)
                  for s, f in fusions.items()]
        if setting == "chunk":
            leaves = (read_info.weights, write_info.gate, slots.memory)
            cases.append(("memory_regularisers (3 terms)", regularisers, leaves, True))
            cases.append(("per-chunk metrics (4, forward only)", metrics, (), False))
        calls = [timed(layer_call(T_call, last_only), (x,), backward)]
        calls += [timed(fn, inputs, grad) for _, fn, inputs, grad in cases]
        layer_ms, *component_ms = interleaved_ms(calls, args.repeats)
        for (name, *_), times in zip(cases, component_ms, strict=True):
            ratio = statistics.median(c / lm for c, lm in zip(times, layer_ms, strict=True))
            rows.append((name, setting, statistics.median(layer_ms), statistics.median(times), ratio))
    shapes = (f"B={B} lanes, D={D}, H={H} heads, window {C + 1}, chunk {T}, step = {ACT_TOKENS} tokens read at the "
              f"last, k={k} memories, key inputs {m.key_blocks} x D, {m.internal_slots} internal slots, {m.slots} "
              f"bank slots")
    return shapes, rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lanes", type=positive_int, default=16, help="B (MemNet's train.lanes)")
    p.add_argument("--threads", type=thread_count, default=2)
    p.add_argument("--repeats", type=positive_int, default=30, help="timed rounds (3 warm-up rounds before them)")
    args = p.parse_args(argv)
    shapes, rows = measured_or_usage(p, lambda: run(args), "--lanes")  # was torch's traceback
    print(f"Memory components at MemNet's ContinualShift-v0 shapes: {shapes}; torch {torch.__version__}, "
          f"{counted(args.threads, 'thread')}\n")
    print("| component | setting | transformer layer ms | component ms | component / layer |")
    print("|---|---|---:|---:|---:|")
    for name, setting, layer_ms, component_ms, ratio in rows:
        print(f"| {name} | {setting} | {layer_ms:.2f} | {component_ms:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    run_script(main)
