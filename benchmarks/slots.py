"""MultiHeadMemoryBank read+write cost against one transformer layer of the same width.

    python benchmarks/slots.py                  # B=64 lanes, N=128 slots, D=128, H=4, k=4; prints a Markdown table
    python benchmarks/slots.py --threads 1 --repeats 50

Two comparisons, each against the same `nn.TransformerEncoderLayer(D, nhead=H, dim_feedforward=4D,
dropout=0, batch_first=True)` doing the equivalent amount of work (float32, CPU, torch threads as given):
- step (acting token by token): the bank's `forward` on x (B, 1, D) -- every lane reads and writes one
  token -- against the layer processing one new token per lane that attends over a cached window of T
  keys/values (K/V cache of the window projected in advance, then self-attention, norms and feed-forward).
- chunk (training on a chunk): the bank's `forward` on x (B, T, D) -- T reads of the incoming state, then T
  candidate writes -- against the layer on (B, T, D) with a causal mask.
The ratio is bank time / layer time for the same tokens (target <= 1x). Each round times the four calls one
after the other and the ratio is the median over rounds, so load from other processes on a shared machine
affects both sides alike; times are medians over rounds. "train" rows time forward + backward of a
sum-of-squares loss, "infer" rows run under torch.no_grad(). The bank starts full (all N slots written).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents.cli_args import counted, measured_or_usage, positive_int, thread_count  # noqa: E402
from agents.startup import run_script  # noqa: E402
from memory.config import MemoryConfig  # noqa: E402
from memory.slots import MultiHeadMemoryBank  # noqa: E402


def interleaved_ms(calls: list, repeats: int, warmup: int = 3) -> list[list[float]]:
    """Time each callable once per round, round after round, so that load from other processes on a
    shared machine hits all of them alike; returns per-callable lists of milliseconds."""
    for _ in range(warmup):
        for fn in calls:
            fn()
    times = [[] for _ in calls]
    for _ in range(repeats):
        for fn, out in zip(calls, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
    return times


def run(args) -> list[tuple[str, str, float, float, int, float]]:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    B, N, D, H, T = args.lanes, args.slots, args.dim, args.heads, args.chunk
    bank = MultiHeadMemoryBank(bank_config(args))
    layer = nn.TransformerEncoderLayer(D, nhead=H, dim_feedforward=4 * D, dropout=0.0, batch_first=True)
    causal = nn.Transformer.generate_square_subsequent_mask(T)

    with torch.no_grad():  # a full bank: every slot written, as after the first N steps of a stream
        state = bank(torch.randn(B, N, D), bank.initial_state(B), torch.ones(B, N, dtype=torch.bool))[1]
    step_x, chunk_x = torch.randn(B, 1, D), torch.randn(B, T, D)
    step_mask, chunk_mask = torch.ones(B, 1, dtype=torch.bool), torch.ones(B, T, dtype=torch.bool)

    attn = layer.self_attn
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    with torch.no_grad():  # the window's keys / values, projected once as a K/V cache would hold them
        k_cache = F.linear(chunk_x, w_k, b_k).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)
        v_cache = F.linear(chunk_x, w_v, b_v).view(B, T, H, D // H).transpose(1, 2)

    def layer_step(x):  # x (B, 1, D): one new token per lane over the cached window (post-norm, as the layer)
        heads = (B, 1, H, D // H)
        q = F.linear(x, w_q, b_q).view(heads).transpose(1, 2)
        k = torch.cat([k_cache[:, :, 1:], F.linear(x, w_k, b_k).view(heads).transpose(1, 2)], dim=2)
        v = torch.cat([v_cache[:, :, 1:], F.linear(x, w_v, b_v).view(heads).transpose(1, 2)], dim=2)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, D)
        h = layer.norm1(x + attn.out_proj(a))
        return layer.norm2(h + layer.linear2(F.relu(layer.linear1(h))))

    def timed(fn, x, train):
        def call():
            if train:
                out = fn(x.clone().requires_grad_(True))
                sum(t.pow(2).sum() for t in out).backward()
            else:
                with torch.no_grad():
                    fn(x)
        return call

    def bank_fn(mask):
        def fn(x):
            reads, new, _, _ = bank(x, state, mask)
            return reads, new.memory
        return fn

    def layer_chunk(x):
        return (layer(x, src_mask=causal, is_causal=True),)

    rows = []
    for mode in ("infer", "train"):
        train = mode == "train"
        calls = [timed(lambda x: (layer_step(x),), step_x, train), timed(bank_fn(step_mask), step_x, train),
                 timed(layer_chunk, chunk_x, train), timed(bank_fn(chunk_mask), chunk_x, train)]
        l_step, b_step, l_chunk, b_chunk = interleaved_ms(calls, args.repeats)
        for what, layer_ms, bank_ms, tokens in ((f"step (B={B}, 1 token, window {T})", l_step, b_step, B),
                                                (f"chunk (B={B}, T={T})", l_chunk, b_chunk, B * T)):
            ratio = statistics.median(b / lm for b, lm in zip(bank_ms, layer_ms, strict=True))
            rows.append((what, mode, statistics.median(layer_ms), statistics.median(bank_ms), tokens, ratio))
    return rows


def bank_config(args) -> MemoryConfig:
    """The measured bank's config; attn_heads=1: the store attention's heads are no part of the bank (its default 4
    made --dim 6 fail on them)."""
    return MemoryConfig(dim=args.dim, slots=args.slots, read_heads=args.heads, top_k=args.top_k, attn_heads=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lanes", type=positive_int, default=64)
    p.add_argument("--slots", type=positive_int, default=128)
    p.add_argument("--dim", type=positive_int, default=128)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--top-k", type=positive_int, default=4)
    p.add_argument("--chunk", type=positive_int, default=64)
    p.add_argument("--threads", type=thread_count, default=torch.get_num_threads())
    p.add_argument("--repeats", type=positive_int, default=30)
    args = p.parse_args()
    if args.top_k > args.slots:  # the header said k=500 for a bank that reads its 8 slots
        p.error(f"--top-k {args.top_k}: at most --slots ({args.slots})")
    try:
        bank_config(args)
    except ValueError as exc:  # e.g. --heads that does not divide --dim: named by this script's flags
        flags = {"memory.read_heads": "--heads", "memory.slots": "--slots", "memory.top_k": "--top-k", "dim=": "--dim "}
        p.error(re.sub("|".join(map(re.escape, flags)), lambda m: flags[m[0]], str(exc)))
    rows = measured_or_usage(p, lambda: run(args), "--lanes, --slots, --dim or --chunk")  # was torch's traceback
    print(f"MultiHeadMemoryBank read+write, B={args.lanes} lanes, N={args.slots} slots, D={args.dim}, "
          f"H={args.heads} heads, k={args.top_k}; torch {torch.__version__}, {counted(args.threads, 'thread')}\n")
    print("| work | mode | transformer layer ms | bank read+write ms | bank us/token | bank / layer |")
    print("|---|---|---:|---:|---:|---:|")
    for what, mode, layer_ms, bank_ms, tokens, ratio in rows:
        print(f"| {what} | {mode} | {layer_ms:.2f} | {bank_ms:.2f} | {1e3 * bank_ms / tokens:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    run_script(main)
