"""MemNet: windowed transformer controller + explicit memory that persists across episodes.

    tokens (B, T) -> embedding -> WindowedTransformer (window W, cached) -> h (B, T, D)
      reads, all from memory as it was when the call started (block-recurrent):
        slot bank     MultiHeadMemoryBank.read(h)                               (memory.slots > 0)
        internal      LM2Memory / LinformerMemory read-out                      (memory.internal != none)
        store         x = LN(h); addresses e = x (memory.key_source=hidden) or fixed token codes (token); key
                      input s_t = [e_t ; e_{t-1} ; ... e_{t-a+1}], query input u_t = [e_t ; ... e_{t-b+1}] (a, b:
                      1 + the largest lags of memory.key_lags); q = W_q u -> FaissStore.search(W_k^T q) -> rerank
                      (recency, not in window) -> TieredKVCache (s, x) -> K, V = W_k s, W_v x
                      -> MemoryAttention over [window ; x ; retrieved] (log-age recency)     (memory.store)
      -> Fusion(h, reads) -> LayerNorm -> logits (B, T, V)
      copy read-out (memory.copy = c > 0): log((1 - c) softmax(logits) + c p_copy), p_copy (B, T, V) = the store
      attention's weights summed per token id that the attended positions hold (window tokens, entries' "token")
    writes, at the end of the call, only where `writes` (B, T) is True:
        slot bank  write(h);  internal memory  update from h (other positions take no part);
        store      key = s (input of W_k), value = h, step = the lane's clock; (s, x) into the cache; with
                   memory.store_replace, entries of the lane with the same predecessor and (nearly) the same
                   context (s without x_t) are removed first.

Why (README "Agents" has the measurements): keys are smeared (lag pair o:p starts W_k reading e_{t-o} and W_q
reading 4 x the same map of e_{t-p}; the default "1:0" is token shift), so a query finds the positions that
followed the same context before; retrieved memories are projected with today's weights (no stale keys) and
ranked as the attention ranks them; the recency term lets the latest of equal matches win; the copy read-out
makes the loss train the addressing directly (pointer-generator / kNN-LM). The store path's methods live in
agents/memnet_store.py; the memory objects' state dict and undo in agents/memnet_memory.py.
Reads never see this call's own writes, so acting one token at a time with writes off gives exactly the
logits of the learning forward over the chunk; and one position's reads do not depend on another's, so a call
that reads at some positions only (`read_at`: acting at the last, learning at the scored ones) gives exactly
the full call's logits there. Gradients do not cross calls, so the write paths learn from the
regularisers and from parameters they share with the read paths.

With every memory part off (`agent=transformer`) MemNet is the plain controller: h -> LayerNorm -> logits.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from agents.controller import WindowedTransformer
from agents.memnet_memory import MemoryObjects
from agents.memnet_store import (
    TOKEN_CODE_SEED,
    StorePath,
    diverged_on_overflow,
    init_lag_pairs,
    lane_clock,
    zero_last_columns,
)
from agents.models import AgentModel, ModelConfig, check_inputs, check_lanes, check_read_at
from memory.attention import MemoryAttention
from memory.cache import TieredKVCache
from memory.checks import all_finite, check_batch_size
from memory.fusion import Fusion
from memory.internal import build_internal_memory
from memory.losses import memory_regularisers
from memory.metrics import memory_bytes as bytes_of
from memory.metrics import read_entropy, store_hit_rate, write_rate
from memory.slots import MultiHeadMemoryBank, SlotState, WriteInfo
from memory.store import FaissStore

COPY_FLOOR = 1e-6  # added to the copy mixture before the log: a token neither source names stays finite


class MemNet(MemoryObjects, StorePath, AgentModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        m = cfg.memory
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.controller = WindowedTransformer(cfg)
        self.bank = MultiHeadMemoryBank(m) if m.slots > 0 else None
        self.internal = build_internal_memory(m)
        if m.store:
            self.store_norm = nn.LayerNorm(cfg.dim)
            self.store_attn = MemoryAttention(m, dropout=cfg.dropout, key_in=m.key_blocks * cfg.dim,
                                              query_in=m.query_blocks * cfg.dim)
            with torch.no_grad():
                init_lag_pairs(self.store_attn, m.lag_pairs, cfg.dim, context=m.context_decay > 0,
                               context_scale=m.context_scale)
            if m.context_decay > 0 and m.context_fixed:  # the context block (last D columns) is not trained
                for proj in (self.store_attn.k_proj, self.store_attn.q_proj):
                    proj.weight.register_hook(partial(zero_last_columns, cfg.dim))
            if m.key_source == "token":  # fixed N(0, 1) codes (norm ~ sqrt(D), like LN(h)); W_k / W_q learn on them
                codes = torch.randn(cfg.vocab_size, cfg.dim, generator=torch.Generator().manual_seed(TOKEN_CODE_SEED))
                self.register_buffer("token_codes", codes)  # (V, D); in the checkpoint, so a run resumes the same
        sources = (self.bank is not None) + (self.internal is not None) + m.store
        self.fusion = Fusion(m, sources) if sources else None
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        # Long-term memory objects (not parameters, not in `state`): made for the lane count on first use.
        self.store: FaissStore | None = None
        self.cache: TieredKVCache | None = None

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int) -> dict[str, Tensor]:
        """Flat dict of tensors: ctrl.k<l> / ctrl.v<l> (B, H, W-1+slack, d) per layer (append buffers, see
        agents/controller.py), ctrl.end (), ctrl.mark (1,), ctrl.pos (B,), slot.<field>
        (B, N, ...), internal (B, S, D); store path: window.inputs (B, W-1, D), window.keys (B, W-1, K D) (key
        inputs, K = memory.key_blocks), window.recent (B, max(a, b) - 1, D) (the last addresses, for lagged keys
        and queries), window.context (B, D) (the running mean of the addresses, with memory.context_decay > 0),
        window.tokens (B, W-1) long (what the window positions hold, for the copy read-out)."""
        batch_size = check_batch_size(batch_size)
        dev = self.device
        state = {f"ctrl.{k}": t for k, t in self.controller.initial_state(batch_size, dev).items()}
        if self.bank is not None:
            slots = self.bank.initial_state(batch_size, dev)
            state.update({f"slot.{k}": t for k, t in slots._asdict().items()})
        if self.internal is not None:
            with torch.no_grad():  # a constant copy: the state is detached between chunks anyway (TBPTT), so
                # init_slots stays at its initialisation in MemNet (README "Internal memories")
                state["internal"] = self.internal.initial_state(batch_size, dev)
        m = self.cfg.memory
        if m.store:  # the store path's window of inputs and key inputs, and the last LN(h)s (lagged inputs)
            C, D = self.controller.context, self.cfg.dim
            state["window.inputs"] = torch.zeros(batch_size, C, D, device=dev)
            state["window.keys"] = torch.zeros(batch_size, C, m.key_blocks * D, device=dev)
            state["window.recent"] = torch.zeros(batch_size, max(m.key_inputs, m.query_inputs) - 1, D, device=dev)
            if m.context_decay > 0:  # running mean of the addresses through the last position
                state["window.context"] = torch.zeros(batch_size, D, device=dev)
            state["window.tokens"] = torch.zeros(batch_size, self.controller.context, dtype=torch.long, device=dev)
        return state

    def _slot_state(self, state: dict) -> SlotState:
        return SlotState(**{f: state[f"slot.{f}"] for f in SlotState._fields})

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: Tensor, state: dict, writes: Tensor | None = None,
                meta: dict | None = None, read_at: Tensor | None = None) -> tuple[Tensor, dict, dict]:
        """tokens (B, T) long; writes (B, T) bool (None = no writes); meta: field -> (B, T) int (episode,
        position, task) recorded with store entries (not step, token or prev: MemNet records those itself);
        read_at (T',) long: the positions whose outputs are
        needed (`check_read_at`; None = all). Returns logits (B, T', V) at those positions, the new state and
        aux: aux["losses"]: weighted regularisers (only when grad is enabled), aux["metrics"]: read/write infos,
        store ids (B, T', k), memory_share (B, T'), hidden (B, T, D), all detached; for chunk calls (T > 1; with
        read_at given, those that write or learn) also floats read_entropy, write_rate, store_hit_rate,
        memory_share_mean (the read metrics over the positions read, when there are any), store_entries.

        Every position still runs the controller, updates the state and makes its writes; only the memory
        reads, fusion and head run at `read_at` alone, which gives the same logits there as a full call (the
        reads of one position do not depend on another's). Acting needs the last position only, learning
        the scored ones, an evaluation's chunk call (writes only) none."""
        writes = check_inputs(tokens, writes, self.cfg.vocab_size, state)
        B, T = tokens.shape
        self.check_state(state, B)
        check_meta(meta)
        read_at = check_read_at(read_at, T, tokens.device)
        pick = (lambda t: t) if read_at is None else (lambda t: t[:, read_at])  # (B, T, ...) -> (B, T', ...)
        any_write = bool(writes.any())
        h, ctrl = self.controller(self.embed(tokens), _controller_part(state))
        new_state = {f"ctrl.{k}": t for k, t in ctrl.items()}
        hq = pick(h)  # (B, T', D): the positions read
        reads, losses, metrics = [], {}, {"hidden": h.detach()}
        copy = self.cfg.memory.copy if self.cfg.memory.store else 0.0  # the copy read-out points into the store path
        copy_probs = None  # (B, T', V) when copy > 0

        if self.bank is not None:
            slots = self._slot_state(state)
            # a write's bookkeeping (usage) and the regularisers see the reads of every position
            every = read_at is None or any_write or (torch.is_grad_enabled() and self.learns_without_targets())
            slot_read, read_info = self.bank.read(h if every else hq, slots)  # (B, T or T', D)
            reads.append(pick(slot_read) if every else slot_read)
            if any_write:
                slots, write_info = self.bank.write(h, slots, writes, read_info)
            else:  # an all-False mask changes nothing; skip the allocation work (acting calls)
                write_info = WriteInfo(gate=h.new_zeros(B, T), slot_ids=torch.full((B, T), -1, device=h.device))
            if torch.is_grad_enabled():
                losses.update(memory_regularisers(self.cfg.memory, read_info, write_info, slots))
            new_state.update({f"slot.{k}": t for k, t in slots._asdict().items()})
            metrics.update(read_info=_detached(read_info), write_info=_detached(write_info))

        if self.internal is not None:
            mem = state["internal"]
            reads.append(self.internal.read_out(hq, mem))  # (B, T', D) from the incoming state
            if any_write:  # positions without write permission take no part in the update (lanes without any: none)
                mem = self.internal.updated_state(h, mem, writes)
            new_state["internal"] = mem

        if self.cfg.memory.store:
            # [window ; call]: inputs xs (B, W-1+T, D), key inputs ks (B, W-1+T, a D); query inputs us (B, T, b D)
            xs, ks, us, store_state = self._store_inputs(h, tokens, state)
            new_state.update(store_state)
            toks = torch.cat((state["window.tokens"], tokens), dim=1)  # (B, W-1+T)
            new_state["window.tokens"] = toks[:, toks.shape[1] - self.controller.context:]
            C = self.controller.context
            at = torch.arange(T, device=h.device) if read_at is None else read_at
            with diverged_on_overflow():
                store_read, ids, share, copy_probs = self._read_store(xs, ks, us, toks, state["ctrl.pos"], at)
            reads.append(store_read)
            metrics.update(store_ids=ids, memory_share=share.detach().float())
            # diverged weights: say so, not the store's or the cache's refusal (everything a write stores is checked:
            # h can stay finite while the embeddings behind the cached inputs overflow)
            if any_write and not all(all_finite(t) for t in (h, xs[:, C:], ks[:, C:])):
                raise FloatingPointError("MemNet: non-finite hidden states (NaN or inf) reached the memory writes")
            if any_write:  # the token before each position (-1 at a lane's stream start): replacement's address
                prev = toks[:, C - 1:-1] if C else torch.cat((torch.full_like(tokens[:, :1], -1), tokens[:, :-1]), 1)
                prev = torch.where(lane_clock(state["ctrl.pos"], T) > 0, prev, -1)  # (B, T)
                with diverged_on_overflow():
                    self._write_store(xs[:, C:], ks[:, C:], h, tokens, prev, writes, meta, state["ctrl.pos"])

        z = self.fusion(hq, torch.stack(reads, dim=2)) if reads else hq  # (B, T', D)
        logits = self.head(self.ln_f(z))  # (B, T', V)
        if copy_probs is not None:  # mixture of the model's prediction and the copy distribution, as log-probs
            mixed = (1 - copy) * torch.softmax(logits.float(), -1) + copy * copy_probs
            logits = torch.log(mixed + COPY_FLOOR)  # (B, T', V); a valid logit vector (CE re-normalises)
        if T > 1 and (read_at is None or any_write or torch.is_grad_enabled()):  # chunk calls report floats too
            # (acting calls, which read one position and write nothing, skip those host syncs)
            metrics.update(self._scalar_metrics(metrics))
        return logits, new_state, {"losses": losses, "metrics": metrics}

    def _scalar_metrics(self, metrics: dict) -> dict[str, float]:
        """The chunk's memory metrics as floats: names as `agents.tb_tags` lists them (SLOT_METRICS, STORE_METRICS),
        which a sweep's reports are keyed by."""
        out = {}
        if "read_info" in metrics:
            entropy = read_entropy(metrics["read_info"])
            if not math.isnan(entropy):  # some head read a slot (a fresh bank's first chunk reads none)
                out["read_entropy"] = entropy
            out["write_rate"] = write_rate(metrics["write_info"])
        if "store_ids" in metrics:
            if metrics["store_ids"].shape[1]:
                out["store_hit_rate"] = store_hit_rate(metrics["store_ids"])
                out["memory_share_mean"] = float(metrics["memory_share"].float().mean())
            out["store_entries"] = float(len(self.store)) if self.store is not None else 0.0
        return out

    # ------------------------------------------------------------------ interface
    def reset_memory(self, state: dict, lanes) -> dict:
        """Clear everything that carries information across the boundary in the lanes where `lanes` (B,) is
        True: controller window, slot bank, internal memory and those lanes' store entries."""
        B = state["ctrl.pos"].shape[0]
        lanes = check_lanes(lanes, B, state["ctrl.pos"].device)
        ctrl = WindowedTransformer.reset_lanes(_controller_part(state), lanes)
        out = dict(state)
        out.update({f"ctrl.{k}": t for k, t in ctrl.items()})
        fresh = self.initial_state(B)
        for name, t in state.items():
            if name.startswith(("slot.", "window.")) or name == "internal":
                out[name] = torch.where(lanes.view(B, *[1] * (t.dim() - 1)), fresh[name], t)
        if self.store is not None and bool(lanes.any()):
            # The cleared ids are never returned by a search again (ids are not reused): their K/V leave the cache
            # too, as a store eviction's do, instead of holding hot-tier room until they age out.
            gone = self.store.clear(lanes=lanes.nonzero().flatten().cpu().numpy())
            self.cache.remove(gone)
        return out

    def allocate_memory(self, batch_size: int) -> None:
        if self.cfg.memory.store:  # the store and cache (otherwise made at the first forward)
            self._memory_objects(batch_size)

    def no_weight_decay(self) -> set[str]:
        """Also the gated fusion's gate biases (one row per source: biases, though 2-d; they were decayed), and W_k and
        W_q of the store attention when their context columns are fixed (memory.context_fixed): a zero gradient keeps
        those columns, weight decay would shrink them."""
        names = super().no_weight_decay()
        if self.fusion is not None and self.fusion.strategy == "gated":
            names.add("fusion.gate_b")
        m = self.cfg.memory
        if m.store and m.context_decay > 0 and m.context_fixed:
            names |= {"store_attn.k_proj.weight", "store_attn.q_proj.weight"}
        return names

    def learns_without_targets(self) -> bool:
        m = self.cfg.memory
        return self.bank is not None and max(m.util_weight, m.pressure_weight, m.sparsity_weight) > 0

    def memory_bytes(self, state: dict) -> int:
        """Bytes of everything that carries information across steps: state tensors (window, slots, internal)
        + store + cache RAM tiers."""
        total = bytes_of(state)
        if self.store is not None:
            total += self.store.nbytes + self.cache.nbytes
        return total


OWN_META = {"step": "its clock (the recency term's ages)", "token": "the token it holds (the copy read-out's pointer)",
            "prev": "the token before it (replacement's address)"}  # what MemNet records with each memory itself


def check_meta(meta) -> None:
    """meta: None or a dict of the store's caller fields but MemNet's own (OWN_META): a passed `token` or `prev`
    replaced what the copy read-out and replacement read, silently (other logits later)."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise ValueError(f"meta: a dict of field -> (B, T) ints (episode, position, task), got {type(meta).__name__}")
    own = next((name for name in OWN_META if name in meta), None)
    if own is not None:
        raise ValueError(f"meta[{own!r}]: MemNet records {OWN_META[own]} with each memory itself; do not pass it")


def _controller_part(state: dict) -> dict:
    """The controller's entries of a MemNet state, without the "ctrl." prefix."""
    return {k[5:]: t for k, t in state.items() if k.startswith("ctrl.")}


def _detached(info):
    """A ReadInfo / WriteInfo without graph, floating fields in float32 (also under bf16 autocast)."""
    return type(info)(*(t.detach().float() if t.is_floating_point() else t.detach() for t in info))
