"""Long-term memory performance: FaissStore (exact and IVF) and TieredKVCache, printed as Markdown tables.

    python benchmarks/memory.py                       # 1M x 128 store, cache of 12 heads x 64 dims; ~3-5 min
    python benchmarks/memory.py --entries 200000      # quicker
    python benchmarks/memory.py --threads 1
    python benchmarks/memory.py --only precision        # float32 vs bfloat16 exact search at MemNet's shapes
    python benchmarks/memory.py --only coded            # coded keys (MemNet with token codes) vs a full scan
    python benchmarks/memory.py --only undo             # an evaluation's way back: a whole snapshot vs a mark

What is measured (float32, CPU, torch and FAISS threads as given):
- store add: entries/s for `FaissStore.add` in chunks of 100,000 into a shared store of `--entries` rows,
  once into a fresh store (the OS maps its memory on first touch) and once refilled after `clear()`.
- exact search: one `search` of 64 queries, top-8, over all entries (median of `--repeats`), next to what
  it must not be slower than: a plain torch matmul + topk, and FAISS's IndexFlatIP on the same keys.
- IVF search: a store with index="ivf" over clustered keys (2,000 unit centres + Gaussian noise of norm
  ~0.8); median ms per
  64-query batch and recall@8 against exact search; the add time includes training the IVF centroids.
- precision: exact search at MemNet's shapes (8 lanes x 4,096 entries, 32 queries per lane, top-32: the
  candidates of one learning chunk) with precision="fp32" and "bf16" (`memory.store_precision`), key widths
  256 (MemNet's default key input) and 768 (NeedleRecall's); median ms per search and the share of the float32
  top-32 that bfloat16 returns. Whether "auto" picks bf16 on this machine is printed with it.
- coded: exact search with coded keys (`FaissStore(coded=)`, what MemNet uses with token codes as addresses)
  against the same store scanning whole keys, both at precision "auto", at ContinualShift's and NeedleRecall's
  key layouts (NeedleRecall at two store sizes), 16 lanes, 1 and 11 queries per lane; median ms per search.
- cache: `get_batch` of 100 random ids, all in one tier (hot, warm or cold; automatic promotion off so the
  ids stay put), median over `--cache-repeats` calls; bytes per entry per tier; warm-tier relative error
  on keys with outlier channels (4 of 64 channels per head 10x larger), on values, and on the output of
  softmax attention over the 100 entries.
- undo: what an evaluation's way back to the memory it started from costs at the main command's full memory: a
  whole snapshot (`state_dict` of the store and cache, loaded after the task) against a mark (`mark`, `undo`;
  memory/undo.py); median ms to take and to put back, and the MiB each holds (`--repeats`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import faiss
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents.cli_args import measured_or_usage, non_negative_int, positive_int, thread_count  # noqa: E402
from agents.startup import run_script  # noqa: E402
from memory.cache import TieredKVCache  # noqa: E402
from memory.config import ivf_lists_for  # noqa: E402
from memory.metrics import memory_bytes  # noqa: E402
from memory.store import FaissStore  # noqa: E402

CHUNK = 100_000


def median_s(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fill(store: FaissStore, keys: np.ndarray, values: np.ndarray) -> float:
    """Add everything in CHUNK-sized calls; returns seconds."""
    lanes = np.zeros(CHUNK, dtype=np.int64)
    t0 = time.perf_counter()
    for i in range(0, len(keys), CHUNK):
        store.add(keys[i:i + CHUNK], values[i:i + CHUNK], lanes[: len(keys[i:i + CHUNK])])
    return time.perf_counter() - t0


def exact_rows(args, rng) -> list[tuple]:
    n, D = args.entries, args.dim
    keys = rng.standard_normal((n, D), dtype=np.float32)
    values = rng.standard_normal((n, args.value_dim), dtype=np.float32)
    store = FaissStore(D, args.value_dim, n, scope="shared", threads=args.faiss_threads)
    fresh = fill(store, keys, values)
    store.clear()
    refill = fill(store, keys, values)
    queries = rng.standard_normal((1, 64, D), dtype=np.float32)
    t_store = median_s(lambda: store.search(queries, 8), args.repeats)
    unit = torch.from_numpy(store._keys)  # the same normalised keys, read directly
    q = torch.nn.functional.normalize(torch.from_numpy(queries[0]), dim=-1)
    t_torch = median_s(lambda: (q @ unit.T).topk(8, dim=-1), args.repeats)
    flat_ip = faiss.IndexFlatIP(D)
    flat_ip.add(store._keys)
    t_faiss = median_s(lambda: flat_ip.search(q.numpy(), 8), args.repeats)
    same = np.array_equal(np.sort(store.search(queries, 8).ids[0] % store.rows, axis=1),  # id -> row
                          np.sort((q @ unit.T).topk(8, dim=-1).indices.numpy(), axis=1))
    per_entry = store.nbytes / n
    return [
        ("add, fresh store (incl. first-touch page faults)", f"{n / fresh / 1e6:.2f} M entries/s", ">= 1 M/s"),
        ("add, refill after clear()", f"{n / refill / 1e6:.2f} M entries/s", ">= 1 M/s"),
        ("exact search, 64 queries top-8 (FaissStore)", f"{t_store * 1e3:.0f} ms", "<= torch matmul+topk"),
        ("  torch matmul + topk, same data", f"{t_torch * 1e3:.0f} ms", "reference"),
        ("  faiss IndexFlatIP, same data", f"{t_faiss * 1e3:.0f} ms", "reference"),
        ("  exact ids equal torch's", str(same), "True"),
        (f"memory per entry (D={D}, Dv={args.value_dim}, exact)", f"{per_entry:.0f} B", "reported"),
    ]


def clustered(rng, n, D, centres, spread):
    noise = rng.standard_normal((n, D), dtype=np.float32)
    noise *= np.float32(spread)
    return centres[rng.integers(len(centres), size=n)] + noise


def ivf_rows(args, rng) -> list[tuple]:
    n, D = args.entries, args.dim
    centres = rng.standard_normal((2000, D), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = 0.8 / np.sqrt(D)  # noise of norm ~0.8 around unit centres: clusters overlap at their edges
    keys = clustered(rng, n, D, centres, spread)
    values = np.zeros((n, args.value_dim), dtype=np.float32)
    lists = ivf_lists_for(n, args.ivf_lists)  # at most n // 39: a smaller --entries trains fewer lists
    store = FaissStore(D, args.value_dim, n, scope="shared", index="ivf", threads=args.faiss_threads,
                       ivf_lists=lists, ivf_probes=min(args.ivf_probes, lists))
    t_add = fill(store, keys, values)
    queries = clustered(rng, 64, D, centres, spread)[None]
    t_search = median_s(lambda: store.search(queries, 8), args.repeats * 4)
    got = store.search(queries, 8).ids[0]
    unit = torch.from_numpy(store._keys)
    truth = (torch.nn.functional.normalize(torch.from_numpy(queries[0]), dim=-1) @ unit.T).topk(8).indices.numpy()
    recall = np.mean([len(set(got[i]) & set(truth[i])) / 8 for i in range(64)])  # ids == rows on a first fill
    ann = store._ann[0]
    return [
        (f"IVF add incl. training ({ann.lists} lists)", f"{n / t_add / 1e3:.0f} k entries/s", "reported"),
        (f"IVF search, 64 queries top-8 ({ann.probes} probes)", f"{t_search * 1e3:.1f} ms", "<= 10 ms"),
        ("IVF recall@8 vs exact, clustered data", f"{recall:.3f}", ">= 0.95"),
        ("memory per entry (IVF)", f"{store.nbytes / n:.0f} B", "reported"),
    ]


def attention(q, k, v):
    """q (Q, H, d), k/v (N, H, d) -> (Q, H, d): softmax attention of every query over all N entries."""
    logits = torch.einsum("qhd,nhd->hqn", q, k) / k.shape[-1] ** 0.5
    return torch.einsum("hqn,nhd->qhd", logits.softmax(-1), v)


def cache_rows(args, rng) -> list[tuple]:
    H, d, n = 12, 64, args.cache_entries
    keys = rng.standard_normal((n, H, d), dtype=np.float32)
    keys[:, :, rng.choice(d, 4, replace=False)] *= 10.0  # outlier channels, as in real attention keys
    values = rng.standard_normal((n, H, d), dtype=np.float32)
    rows, targets = [], {"hot": "<= 0.1 ms", "warm": "<= 0.3 ms", "cold": "<= 1 ms"}
    for tier, caps in (("hot", (n, 0, 0)), ("warm", (0, n, 0)), ("cold", (0, 0, n))):
        cache = TieredKVCache(H, d, *caps, promote_after=0)
        cache.put(np.arange(n), keys, values)
        batches = [rng.choice(n, 100, replace=False) for _ in range(64)]
        turn = iter(range(10**9))
        t = median_s(lambda c=cache, b=batches, i=turn: c.get_batch(b[next(i) % 64]), args.cache_repeats, warmup=20)
        per_entry = cache.stats()["bytes_per_entry"][tier]
        rows.append((f"get_batch(100 ids), {tier} tier", f"{t * 1e3:.3f} ms", targets[tier]))
        rows.append((f"  bytes per entry, {tier}" + (" (on disk)" if tier == "cold" else ""), f"{per_entry} B",
                     "reported"))
        if tier == "warm":
            ids = batches[0]
            k_q, v_q, _ = cache.get_batch(ids)
            k_t, v_t = torch.from_numpy(keys[ids]), torch.from_numpy(values[ids])
            q = torch.from_numpy(rng.standard_normal((32, H, d), dtype=np.float32))
            rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
            rows.append(("  warm relative error, keys (outlier channels)", f"{rel(k_q, k_t):.2%}", "<= 1%"))
            rows.append(("  warm relative error, values", f"{rel(v_q, v_t):.2%}", "reported"))
            out_err = rel(attention(q, k_q, v_q), attention(q, k_t, v_t))
            rows.append(("  warm relative error, attention output", f"{out_err:.2%}", "<= 2%"))
        cache.close()
    return rows


def precision_rows(args, rng) -> list[tuple]:
    from memory.store_index import bf16_matmul_is_fast

    rows = [("auto picks bf16 here (AMX bfloat16 matmuls)", str(bf16_matmul_is_fast()), "reported")]
    lanes, n, queries, k = 8, 4096, 32, 32
    for dim in (256, 768):
        keys = rng.normal(size=(lanes * n, dim)).astype(np.float32)
        q = rng.normal(size=(lanes, queries, dim)).astype(np.float32)
        found, ms = {}, {}
        for precision in ("fp32", "bf16"):
            store = FaissStore(dim, 8, n, lanes=lanes, metric="ip", precision=precision)
            for lane in range(lanes):
                store.add(keys[lane * n:(lane + 1) * n], np.zeros((n, 8), np.float32), np.full(n, lane))
            ms[precision] = median_s(lambda s=store: s.search(q, k), args.repeats) * 1e3  # noqa: B023 (q: this dim's)
            found[precision] = store.search(q, k).ids
        overlap = np.mean([len(np.intersect1d(a, b)) / k for a, b in
                           zip(found["fp32"].reshape(-1, k), found["bf16"].reshape(-1, k), strict=True)])
        rows += [(f"exact search, keys {dim} wide, fp32", f"{ms['fp32']:.1f} ms", "reference"),
                 (f"exact search, keys {dim} wide, bf16", f"{ms['bf16']:.1f} ms ({ms['fp32'] / ms['bf16']:.1f}x)",
                  "faster where auto picks it"),
                 (f"  bf16 top-{k} = fp32 top-{k}", f"{overlap:.3f}", ">= 0.95")]
    return rows


def coded_rows(args, rng) -> list[tuple]:
    """Coded keys (token codes as addresses) against the plain store at the same precision ("auto"), at
    ContinualShift's keys (token, prev, context: 3 x 128) and NeedleRecall's (6 lags x 128; MemNet leaves those
    uncoded), 16 lanes: one query per lane (an acting call) and 11 (a learning chunk's scored steps)."""
    from memory.store import CodedKeys

    rows, lanes, D, V, k = [], 16, 128, 256, 32
    codes = torch.from_numpy(rng.normal(size=(V, D)).astype(np.float32))
    for name, blocks, n in (("ContinualShift", 3, 1914), ("NeedleRecall", 6, 800), ("NeedleRecall", 6, 3000)):
        tok, prev = rng.integers(0, V, (lanes, n)), rng.integers(0, V, (lanes, n))
        free = rng.normal(size=(lanes, n, (blocks - 2) * D)).astype(np.float32)
        keys = np.concatenate([codes.numpy()[tok], codes.numpy()[prev], free], axis=-1)
        stores = {}
        for kind in ("plain", "coded"):
            coded = CodedKeys(codes, ("token", "prev")) if kind == "coded" else None
            store = FaissStore(blocks * D, 8, 4096, lanes=lanes, metric="ip", precision="auto", coded=coded)
            for lane in range(lanes):
                store.add(keys[lane], np.zeros((n, 8), np.float32), np.full(n, lane),
                          meta={"token": tok[lane], "prev": prev[lane]})
            stores[kind] = store
        for queries in (1, 11):
            q = rng.normal(size=(lanes, queries, blocks * D)).astype(np.float32)
            ms = {kind: median_s(lambda s=s: s.search(q, k), args.repeats) * 1e3  # noqa: B023 (q: this case's)
                  for kind, s in stores.items()}
            case = f"{name}: keys {blocks * D} wide, {n:,} entries, {queries} query row(s) per lane"
            rows.append((case, f"{ms['plain']:.2f} -> {ms['coded']:.2f} ms", "reported"))
    return rows


def held_bytes(obj) -> int:
    """Bytes of the arrays inside a (nested) dict / list / tuple, what a snapshot or a mark keeps: memory_bytes,
    but its numbers, texts and sets (a state's clock, format, the ann partitions changed) count nothing."""
    if isinstance(obj, dict):
        return sum(held_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(held_bytes(v) for v in obj)
    return memory_bytes(obj) if isinstance(obj, (np.ndarray, torch.Tensor)) else 0


def undo_rows(args, rng) -> list[tuple]:
    """An evaluation's way back, at the main command's memory when full (16 lanes x 3,000 of 4,096 entries, keys
    384 wide, values 128; a cache of 4 heads, keys 96 and values 32 wide, hot 1,024 / warm 4,096 / cold 65,536,
    40,000 entries): a whole snapshot (`state_dict`, taken, then loaded) against a mark (`mark`, then `undo`), with
    one evaluated task's writes between (5 chunks of 16 x 20 entries, each searched before it is written)."""
    lanes, per_lane, cached = 16, 3000, 40_000
    store = FaissStore(384, 128, 4096, lanes=lanes, metric="ip")
    for lane in range(lanes):
        store.add(rng.normal(size=(per_lane, 384)).astype(np.float32), rng.normal(size=(per_lane, 128)),
                  np.full(per_lane, lane))
    cache = TieredKVCache(4, 32, 1024, 4096, 65536, key_dim=96, promote_after=0)
    for start in range(0, cached, 512):  # MemNet puts a chunk's entries at a time
        ids = np.arange(start, min(start + 512, cached))
        cache.put(ids, rng.normal(size=(len(ids), 4, 96)), rng.normal(size=(len(ids), 4, 32)))
    chunks = [(rng.normal(size=(lanes * 20, 384)).astype(np.float32), rng.normal(size=(lanes * 20, 128)),
               np.repeat(np.arange(lanes), 20)) for _ in range(5)]

    def writes():
        for keys, values, lane in chunks:
            store.search(keys[::20, None], 32)
            ids, _ = store.add(keys, values, lane)
            cache.put(ids, np.zeros((len(ids), 4, 96)), np.zeros((len(ids), 4, 32)))

    def whole():
        t0 = time.perf_counter()
        saved = store.state_dict(), cache.state_dict()
        t1 = time.perf_counter()
        writes()
        t2 = time.perf_counter()
        store.load_state_dict(saved[0])
        cache.load_state_dict(saved[1])
        return t1 - t0, time.perf_counter() - t2, held_bytes(saved)

    def marked():
        t0 = time.perf_counter()
        store.mark()
        cache.mark()
        t1 = time.perf_counter()
        writes()
        held = held_bytes([store.held(), cache.held()])
        t2 = time.perf_counter()
        store.undo()
        cache.undo()
        out = t1 - t0, time.perf_counter() - t2, held
        store.release()
        cache.release()
        return out

    rows = []
    for name, way in (("a whole snapshot (state_dict, load_state_dict)", whole), ("a mark (mark, undo)", marked)):
        runs = [way() for _ in range(args.repeats + 1)][1:]  # the first: allocations on first touch
        take, back = (statistics.median(r[i] for r in runs) * 1e3 for i in (0, 1))
        rows.append((name, f"take {take:.1f} ms, put back {back:.1f} ms, holds {runs[-1][2] / 2**20:.1f} MiB",
                     "reported"))
    cache.close()
    return rows


def table(title: str, rows: list[tuple]) -> str:
    lines = [f"### {title}", "", "| measure | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=positive_int, default=1_000_000)
    p.add_argument("--dim", type=positive_int, default=128)
    p.add_argument("--value-dim", type=positive_int, default=128)
    p.add_argument("--threads", type=thread_count, default=2, help="torch threads (exact search is a torch matmul)")
    p.add_argument("--faiss-threads", type=thread_count, default=1,
                   help="FAISS threads (1 = MemoryConfig.store_threads' default; 2 contends with torch's pool)")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--ivf-lists", type=positive_int, default=1024, help="at most --entries // 39 (fewer are used)")
    p.add_argument("--ivf-probes", type=positive_int, default=2)
    p.add_argument("--cache-entries", type=positive_int, default=10_000)
    p.add_argument("--cache-repeats", type=positive_int, default=2000)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--only", choices=("exact", "ivf", "cache", "precision", "coded", "undo"), help="run one section")
    args = p.parse_args()
    if args.entries < 8:  # each search asks for the top 8
        p.error(f"--entries: must be at least 8 (searches return the top 8); got {args.entries}")
    if args.cache_entries < 100:  # each get_batch reads 100 distinct ids of one tier
        p.error(f"--cache-entries: must be at least 100 (get_batch reads 100 ids); got {args.cache_entries}")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.faiss_threads)
    rng = np.random.default_rng(args.seed)
    print(f"torch {torch.__version__}, faiss {faiss.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPU cores, {args.threads} torch / {args.faiss_threads} FAISS threads\n")
    sections = {
        "exact": (f"FaissStore, {args.entries:,} entries x {args.dim} dims, exact (index=flat)", exact_rows),
        "ivf": (f"FaissStore, {args.entries:,} entries x {args.dim} dims, IVF (index=ivf)", ivf_rows),
        "precision": ("FaissStore at MemNet's shapes: exact search in float32 and bfloat16", precision_rows),
        "coded": ("FaissStore with coded keys (token codes looked up, the rest scanned) against a full scan",
                  coded_rows),
        "cache": (f"TieredKVCache, 12 heads x 64 dims, {args.cache_entries:,} entries per tier", cache_rows),
        "undo": ("An evaluation's way back: the store and cache of the main command, full", undo_rows),
    }
    for name, (title, rows) in sections.items():
        if args.only in (None, name):
            lower = "--entries, --dim, --value-dim or --cache-entries"
            print(table(title, measured_or_usage(p, lambda rows=rows: rows(args, rng), lower, f"{name}: ")))


if __name__ == "__main__":
    run_script(main)
