"""One small config for every memory component (nanoGPT style: the same dataclass is passed to each module).

The agents' Hydra config has a `memory:` group whose keys are exactly these fields, so an override such as
`memory.slots=64` reaches the component that uses it unchanged.

The defaults here are each component's plain setting (cosine search, no copy read-out, hidden-state addresses).
The MemNet that `python -m agents.run` builds is configured by agents/conf/config.yaml and the env's file, which
differ: store_metric=ip, copy=0.7 (ContinualShift 0.85) and key_source=token in every env, and per env
store_replace, context_decay, key_lags, recency.
From Python, `agents.config.memory_config(agents.config.load_config(["env=<id>"]))` gives that one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

FUSIONS = ("gated", "concat", "cross_attention")
INTERNAL_KINDS = ("none", "lm2", "linformer")
STORE_INDEXES = ("flat", "ivf", "hnsw")
STORE_EVICTIONS = ("fifo", "lru", "importance")
STORE_METRICS = ("cosine", "ip")
STORE_PRECISIONS = ("auto", "fp32", "bf16")
CACHE_POLICIES = ("lru", "fifo", "importance")
RESET_MODES = ("never", "episode", "task")
KEY_SOURCES = ("hidden", "token")
MAX_CONTEXT_SCALE = 1e6  # memory.context_scale bound (1e18 made store queries overflow float32 mid-run)
MAX_LAG = 64  # largest key / query lag in memory.key_lags
# thread counts (memory.store_threads, agents' train.threads): torch and FAISS take any int, then starting 10^5
# threads fails mid-run
MAX_THREADS = 1024
FAISS_INT_MAX = 2**31 - 1  # FAISS's int settings (HNSW degree, search breadth)
MIN_POINTS_PER_LIST = 39  # FAISS warns (and clusters poorly) below 39 training points per IVF centroid
# keys that change behaviour but not the shapes of saved tensors: a checkpoint loads under other values of these
MEMORY_RUNTIME_KEYS = frozenset({"util_weight", "pressure_weight", "sparsity_weight", "store_threads",
                                 "store_precision", "store_replace", "reset", "store_ivf_probes",
                                 "store_hnsw_ef_search", "store_hnsw_min_entries", "store_importance_halflife"})


def ivf_lists_for(capacity: int, lists: int | None) -> int:
    """The IVF lists of a store partition of `capacity` rows: `lists`, or None for the automatic 4 sqrt(capacity);
    at most capacity // 39 (FAISS trains each list on >= 39 keys), at least 1."""
    want = lists if lists is not None else int(4 * math.sqrt(capacity))
    return max(1, min(want, capacity // MIN_POINTS_PER_LIST))


def ivf_probes_for(lists: int, probes: int | None) -> int:
    """The lists an IVF search visits: `probes`, or None for max(8, lists / 64); at most `lists`."""
    return min(lists, probes if probes is not None else max(8, lists // 64))


def parse_lags(text) -> tuple[tuple[int, int], ...] | None:
    """'1:0+3:0' -> ((1, 0), (3, 0)); None if `text` is not such a string (lags in [0, MAX_LAG], no repeats)."""
    if not isinstance(text, str):
        return None
    pairs = []
    for part in text.split("+"):
        o, sep, p = part.partition(":")
        if not (sep and o.isdigit() and p.isdigit() and o.isascii() and p.isascii()):
            return None
        pairs.append((int(o), int(p)))
    if any(v > MAX_LAG for pair in pairs for v in pair) or len(set(pairs)) != len(pairs):
        return None
    return tuple(pairs)


@dataclass
class MemoryConfig:
    # --- shared ---
    dim: int = 128  # D: width of the hidden states that read and write memory
    # --- MultiHeadMemoryBank (memory/slots.py); slots=0 switches the bank off ---
    slots: int = 64  # N slots per lane
    read_heads: int = 4  # H read heads
    top_k: int = 4  # slots each read head attends to (softmax over these k only)
    bottleneck: int = 32  # width of the semantic-bottleneck MLP on the write path
    decay: bool = True  # learnable slot-wise decay gates
    # --- internal memory (memory/internal.py) ---
    internal: str = "none"  # none | lm2 | linformer
    internal_slots: int = 16
    # --- FaissStore (memory/store.py) + TieredKVCache (memory/cache.py); store=False switches both off ---
    store: bool = True
    store_capacity: int = 4096  # entries per lane (scope=lane) or in all (scope=shared)
    store_scope: str = "lane"  # lane | shared
    store_index: str = "flat"  # flat | ivf | hnsw
    store_eviction: str = "fifo"  # fifo | lru | importance
    # store_eviction=importance: > 0 makes it LRFU, the write and each search hit count 1 and halve every this many
    # store writes (add calls; MemNet: its writing chunk calls); 0 = LFU, hits long ago outrank new memories for good
    store_importance_halflife: float = 0.0
    store_top_k: int = 8  # memories retrieved per query
    store_metric: str = "cosine"  # cosine | ip (inner product: rank memories by the attention logit q.k)
    store_replace: float = 0.0  # drop lane entries after the same token with context cosine >= this (0: never)
    store_threads: int = 1  # FAISS OpenMP threads (README: keep 1 where processes fork)
    # approximate indexes (store_index=ivf | hnsw), per store partition. IVF: lists (0 = 4 sqrt(store_capacity)),
    # lists searched per query (0 = max(8, lists / 64)); it takes over from exact search at 39 x lists entries.
    # HNSW: neighbours per node (M), search breadth (efSearch), entries before the graph takes over
    store_ivf_lists: int = 0
    store_ivf_probes: int = 0
    store_hnsw_neighbors: int = 32
    store_hnsw_ef_search: int = 64
    store_hnsw_min_entries: int = 1024
    # exact search's scan: bf16 multiplies a bfloat16 copy of the keys (scores carry its rounding); auto = bf16
    # where the CPU has AMX (1.8-3x faster there at MemNet's shapes), fp32 elsewhere
    store_precision: str = "auto"
    # copy read-out: output = (1 - copy) softmax(logits) + copy x (store attention's weights over the tokens its
    # window positions and memories hold); 0 = off (a pointer over memory, as in kNN-LM / pointer-generators)
    copy: float = 0.0
    # store attention: -softplus(r_h) log(1 + age) on every logit, so the latest of equally matching memories wins
    recency: bool = True
    # store addressing, "o:p+o:p...": each lag pair o:p lets a query match a memory whose input o steps before it
    # equals the query's input p steps back. "1:0" (smeared keys): memories that followed the current token.
    # Keys see inputs 0..max(o) back, queries 0..max(p) back; the pairs set the initial projections (learned)
    key_lags: str = "1:0"
    key_source: str = "hidden"  # what store addresses are made of: hidden (LN of the controller state) | token (codes)
    # > 0 adds a context block to store keys and queries: the normalised running mean (this decay per step) of the
    # addresses, a memory's context just before it against the query's context now (which task / topic it was)
    context_decay: float = 0.0
    # the context block's columns of W_k and W_q keep their initial map (a fixed cosine prior). Learned, they
    # unlearn the first task: sequential training only ever rewards the newest task's memories (README)
    context_fixed: bool = True
    # the context match's strength: a context cosine of 1 scores ~8 x this on the attention logits (a lag pair: ~8)
    context_scale: float = 3.0
    context_restart: bool = True  # the running mean starts again at each BOS (id 0: an episode's first observation)
    attn_heads: int = 4  # heads of MemoryAttention; the cache stores K/V per head (dim // attn_heads each)
    cache_hot: int = 1024  # entries in the float32 tier
    cache_warm: int = 4096  # entries in the int8 tier
    cache_cold: int = 65536  # entries in the memory-mapped tier
    cache_policy: str = "lru"  # lru | fifo | importance
    cache_quantize: bool = True  # False keeps the warm tier in float32 (ablation)
    # --- how reads are fused into the controller ---
    fusion: str = "gated"  # gated | concat | cross_attention
    # --- regulariser weights (memory/losses.py) ---
    util_weight: float = 0.0  # slot-utilisation entropy loss
    pressure_weight: float = 0.0  # memory-pressure regulariser
    sparsity_weight: float = 0.0  # read-sparsity entropy penalty
    # --- persistence ---
    reset: str = "never"  # never | episode | task

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and the allowed values/range."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"memory.{msg}")

        for f in fields(self):
            want = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool,
                                                              "str": str}[f.type]
            v = getattr(self, f.name)
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                try:  # an int past float range (10**400) was float()'s OverflowError, naming no field
                    as_float = float(v)
                except OverflowError:
                    as_float = None  # (refused below, outside the except: no OverflowError chained to the line)
                need(as_float is not None, f"{f.name}: an integer beyond float range: must be a finite number")
                setattr(self, f.name, as_float)
                ok = True
            need(ok, f"{f.name}={v!r}: expected {want.__name__}")
            need(want is not float or math.isfinite(getattr(self, f.name)), f"{f.name}={v!r}: must be a finite number")
        need(self.dim >= 1, f"dim={self.dim}: must be >= 1")
        need(self.slots >= 0, f"slots={self.slots}: must be >= 0 (0 switches the slot bank off)")
        # the heads' widths only where something reads with them (a baseline's model.dim=18 was refused for
        # memory.read_heads=4 or attn_heads=4, keys with no part to set: `INERT_WHEN`); the parts check again
        need(self.read_heads >= 1 and (self.slots == 0 or self.dim % self.read_heads == 0),
             f"read_heads={self.read_heads}: must be >= 1 and divide dim={self.dim} (each head reads a D/H slice)")
        need(self.top_k >= 1, f"top_k={self.top_k}: must be >= 1")
        need(self.bottleneck >= 1, f"bottleneck={self.bottleneck}: must be >= 1")
        need(self.internal in INTERNAL_KINDS, f"internal={self.internal!r}: choose one of {INTERNAL_KINDS}")
        need(self.internal_slots >= 1, f"internal_slots={self.internal_slots}: must be >= 1")
        need(self.store_capacity >= 1, f"store_capacity={self.store_capacity}: must be >= 1")
        need(self.store_scope in ("lane", "shared"), f"store_scope={self.store_scope!r}: choose lane or shared")
        need(self.store_index in STORE_INDEXES, f"store_index={self.store_index!r}: choose one of {STORE_INDEXES}")
        need(self.store_eviction in STORE_EVICTIONS,
             f"store_eviction={self.store_eviction!r}: choose one of {STORE_EVICTIONS}")
        need(self.store_metric in STORE_METRICS, f"store_metric={self.store_metric!r}: choose one of {STORE_METRICS}")
        # bounds between store keys bite only where the store is built (`inert_reason`, as the IVF bounds):
        # memory.store=false was refused over store_top_k > store_capacity, two keys it never reads
        store_built = inert_reason(self, "store_top_k") is None
        need(1 <= self.store_top_k and (not store_built or self.store_top_k <= self.store_capacity),
             f"store_top_k={self.store_top_k}: must be in [1, store_capacity={self.store_capacity}] (a query "
             "retrieves at most what a store partition holds)")
        need(self.store_importance_halflife >= 0, f"store_importance_halflife={self.store_importance_halflife}: must "
             "be >= 0 (store writes; 0 = no decay)")
        # FAISS takes any int, and an overflowing one is an OverflowError from inside it
        need(1 <= self.store_threads <= MAX_THREADS,
             f"store_threads={self.store_threads}: must be in [1, {MAX_THREADS}]")
        self._validate_ann(need)
        need(self.store_precision in STORE_PRECISIONS,
             f"store_precision={self.store_precision!r}: choose one of {STORE_PRECISIONS}")
        need(0.0 <= self.store_replace <= 1.0, f"store_replace={self.store_replace}: must lie in [0, 1]")
        need(0.0 <= self.copy < 1.0, f"copy={self.copy}: must lie in [0, 1) (0 switches the copy read-out off)")
        need(self.attn_heads >= 1 and (_no_attention(self) is not None or self.dim % self.attn_heads == 0),
             f"attn_heads={self.attn_heads}: must divide dim={self.dim}")
        for name in ("cache_hot", "cache_warm", "cache_cold"):
            need(getattr(self, name) >= 0, f"{name}={getattr(self, name)}: must be >= 0")
        need(not store_built or self.cache_hot + self.cache_warm + self.cache_cold >= 1,
             "cache_*: total capacity must be >= 1")
        need(self.cache_policy in CACHE_POLICIES, f"cache_policy={self.cache_policy!r}: choose one of {CACHE_POLICIES}")
        need(self.fusion in FUSIONS, f"fusion={self.fusion!r}: choose one of {FUSIONS}")
        for name in ("util_weight", "pressure_weight", "sparsity_weight"):
            need(getattr(self, name) >= 0, f"{name}={getattr(self, name)}: must be >= 0")
        lags = parse_lags(self.key_lags)
        parts = self.key_lags.split("+") if lags is None and isinstance(self.key_lags, str) else []
        pairs = [parse_lags(part) for part in parts]  # each ((o, p),), or None where malformed
        if None not in pairs and len(set(pairs)) < len(pairs):  # a pair repeated, as numbers ('1:0' and '01:0')
            o, p = next(pair for i, pair in enumerate(pairs) if pair in pairs[:i])[0]
            need(False, f"key_lags={self.key_lags!r}: the lag pair '{o}:{p}' is given twice; give each pair once")
        need(lags is not None, f"key_lags={self.key_lags!r}: expected lag pairs 'o:p' joined by '+' (e.g. '1:0' or "
                               f"'1:0+3:0+4:1'), each o and p an int in [0, {MAX_LAG}]")
        need(0.0 <= self.context_decay < 1.0,
             f"context_decay={self.context_decay}: must lie in [0, 1) (0 switches the context block off)")
        need(0 < self.context_scale <= MAX_CONTEXT_SCALE, f"context_scale={self.context_scale}: must be in (0, "
             f"{MAX_CONTEXT_SCALE:g}] (a context match scores ~8 x this: past ~1e3 the softmax is a hard choice "
             "already, and far larger store queries overflow the store's float32 inner products)")
        need(self.key_source in KEY_SOURCES, f"key_source={self.key_source!r}: choose one of {KEY_SOURCES}")
        need(self.reset in RESET_MODES, f"reset={self.reset!r}: choose one of {RESET_MODES}")

    def _validate_ann(self, need) -> None:
        """The approximate indexes' settings. An impossible value (a negative count) is refused always; the IVF
        bounds that depend on the store's size only where the IVF index is built, with memory.store=true and
        store_index=ivf (`inert_reason`, the note's own rule): a sweep may set them for every trial, flat ones and
        storeless ones included. memory.store=false refused store_ivf_lists=5000 with store_index=ivf while
        store_index=flat took it, inert in both."""
        need(self.store_ivf_lists >= 0, f"store_ivf_lists={self.store_ivf_lists}: must be >= 0 (0 = automatic)")
        need(self.store_ivf_probes >= 0, f"store_ivf_probes={self.store_ivf_probes}: must be >= 0 (0 = automatic)")
        for name, low in (("store_hnsw_neighbors", 2), ("store_hnsw_ef_search", 1)):  # FAISS takes a C int:
            value = getattr(self, name)  # past it, a traceback at the first build or search
            need(low <= value <= FAISS_INT_MAX, f"{name}={value}: must be in [{low}, {FAISS_INT_MAX}]")
        need(self.store_hnsw_min_entries >= 1,
             f"store_hnsw_min_entries={self.store_hnsw_min_entries}: must be >= 1")
        if inert_reason(self, "store_ivf_lists"):  # (the same rows hold store_ivf_probes)
            return
        most = max(1, self.store_capacity // MIN_POINTS_PER_LIST)
        need(self.store_ivf_lists <= most, f"store_ivf_lists={self.store_ivf_lists}: at most store_capacity // "
             f"{MIN_POINTS_PER_LIST} = {most} (FAISS trains each list on >= {MIN_POINTS_PER_LIST} keys); lower it or "
             "raise store_capacity")
        lists = ivf_lists_for(self.store_capacity, self.store_ivf_lists or None)
        need(self.store_ivf_probes <= lists, f"store_ivf_probes={self.store_ivf_probes}: at most the {lists} IVF "
             "lists a partition has (store_ivf_lists, 0 = automatic)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.attn_heads

    @property
    def lag_pairs(self) -> tuple[tuple[int, int], ...]:
        """((key lag o, query lag p), ...) of `key_lags`, in the order given."""
        return parse_lags(self.key_lags)

    @property
    def key_inputs(self) -> int:
        """How many inputs a store key is made of (x_t ... x_{t-max o}): its key input is key_inputs x dim wide."""
        return 1 + max(o for o, _ in self.lag_pairs)

    @property
    def query_inputs(self) -> int:
        """How many inputs a store query is made of (x_t ... x_{t-max p})."""
        return 1 + max(p for _, p in self.lag_pairs)

    @property
    def key_blocks(self) -> int:
        """D-wide blocks of a store key input: key_inputs addresses, then the context block if context_decay > 0."""
        return self.key_inputs + (self.context_decay > 0)

    @property
    def query_blocks(self) -> int:
        """D-wide blocks of a store query input: query_inputs addresses, then the context block if any."""
        return self.query_inputs + (self.context_decay > 0)

    def to_dict(self) -> dict:
        return asdict(self)


# Memory keys that change nothing under another setting: (keys, when) rows; `when(cfg)` is that setting's text where
# it holds, else None. agents.run and agents.evaluate print one `note:` line for such keys given on the command line
# (a note, not an error: a sweep or suite may pass shared overrides). Where each key is read only under the setting
# (tests/test_inert_notes.py changes each row's keys and gets MemNet's weights, logits and gradients bit for bit):
_SLOT_BANK = ("read_heads", "top_k", "bottleneck", "decay", "util_weight", "pressure_weight", "sparsity_weight")
_STORE_PATH = tuple(f.name for f in fields(MemoryConfig) if f.name.startswith(("store_", "cache_"))) + (
    "copy", "recency", "key_lags", "key_source", "context_decay", "context_fixed", "context_scale", "context_restart")


def _index_not(kind: str):
    return lambda c: None if c.store_index == kind else f"memory.store_index={c.store_index}"


def _graph_never_built(c: MemoryConfig) -> str | None:
    """hnsw takes over from exact search at store_hnsw_min_entries, more than a store partition holds here."""
    if c.store_index == "hnsw" and c.store_hnsw_min_entries > c.store_capacity:
        return (f"memory.store_hnsw_min_entries={c.store_hnsw_min_entries} above memory.store_capacity="
                f"{c.store_capacity} (a store partition never holds enough for the graph: exact search)")
    return None


def _no_attention(c: MemoryConfig) -> str | None:
    """attn_heads: the store's MemoryAttention and cache, the internal memories' attention, cross_attention fusion."""
    if c.store or c.internal != "none" or (c.slots and c.fusion == "cross_attention"):
        return None
    return "memory.store=false, memory.internal=none and " + (f"memory.fusion={c.fusion}" if c.slots else
                                                              "memory.slots=0")


INERT_WHEN = (
    # agents/memnet.py: the bank only `if m.slots > 0`, memory_regularisers and learns_without_targets only with it
    (_SLOT_BANK, lambda c: "memory.slots=0" if c.slots == 0 else None),
    # memory/internal.py build_internal_memory: internal=none builds nothing
    (("internal_slots",), lambda c: "memory.internal=none" if c.internal == "none" else None),
    # agents/memnet.py + memnet_store.py: store attention, token codes, window.* state, store and cache only `if
    # m.store`; copy = m.copy if m.store else 0
    (_STORE_PATH, lambda c: None if c.store else "memory.store=false"),
    # memory/store.py: FAISS indexes (_make_ann) only with index != flat, IVFIndex with ivf, HNSWIndex with hnsw
    (("store_ivf_lists", "store_ivf_probes"), _index_not("ivf")),
    (("store_hnsw_neighbors", "store_hnsw_ef_search", "store_hnsw_min_entries"), _index_not("hnsw")),
    (("store_hnsw_neighbors", "store_hnsw_ef_search"), _graph_never_built),  # memory/store.py _sync_ann
    # memory/store_index.py: threads go to faiss.omp_set_num_threads in IVF/HNSW; flat search is torch
    (("store_threads",), lambda c: "memory.store_index=flat" if c.store_index == "flat" else None),
    # memory/store.py: the bfloat16 scan copy only `index == "flat"`
    (("store_precision",), lambda c: None if c.store_index == "flat" else f"memory.store_index={c.store_index}"),
    # memory/store.py _take_rows: importances are read only by eviction=importance
    (("store_importance_halflife",),
     lambda c: None if c.store_eviction == "importance" else f"memory.store_eviction={c.store_eviction}"),
    # memory/cache_tiers.py: quantize picks the warm tier's int8 or float32 (hot is float32, cold holds what it gets)
    (("cache_quantize",), lambda c: "memory.cache_warm=0" if c.cache_warm == 0 else None),
    # agents/memnet.py + memnet_store.py: context_fixed / _scale / _restart only where `m.context_decay > 0`
    (("context_fixed", "context_scale", "context_restart"),
     lambda c: "memory.context_decay=0" if c.context_decay == 0 else None),
    (("attn_heads",), _no_attention),
    # agents/memnet.py: Fusion only with a source to fuse
    (("fusion",), lambda c: None if c.slots or c.internal != "none" or c.store
     else "memory.slots=0, memory.internal=none and memory.store=false"),
)


def inert_reason(cfg: MemoryConfig, name: str) -> str | None:
    """The setting of `cfg` under which the field `name` changes nothing (INERT_WHEN's first row that applies), or
    None where it is read."""
    return next((why for keys, when in INERT_WHEN if name in keys and (why := when(cfg))), None)


def inert_keys(cfg: MemoryConfig, given: Iterable[str]) -> list[str]:
    """One reason per `memory.<key>` in `given` (command-line keys; others are skipped) that changes nothing under
    `cfg`'s other settings (`inert_reason`), in the order given: "memory.store_ivf_probes changes nothing with
    memory.store_index=flat"."""
    reasons = []
    for key in dict.fromkeys(given):
        why = inert_reason(cfg, key[len("memory."):]) if key.startswith("memory.") else None
        if why:
            reasons.append(f"{key} changes nothing with {why}")
        elif key == "memory.store_index" and (why := _graph_never_built(cfg)):  # not inert: exact search, fp32
            reasons.append(f"memory.store_index=hnsw builds no graph with {why}")
    return reasons
