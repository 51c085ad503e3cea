"""MemNet: windowed transformer controller + explicit memory that persists across episodes.

    tokens (B, T) -> embedding -> WindowedTransformer (window W, cached) -> h (B, T, D)
      reads, all from memory as it was when the call started (block-recurrent):
        slot bank     MultiHeadMemoryBank.read(h)                               (memory.slots > 0)
        internal      LM2Memory / LinformerMemory read-out                      (memory.internal != none)
        store         q = W_q LN(h) -> FaissStore.search -> TieredKVCache K/V
                      -> MemoryAttention(LN(h), retrieved K/V)                  (memory.store)
      -> Fusion(h, reads) -> LayerNorm -> logits (B, T, V)
    writes, at the end of the call, only where `writes` (B, T) is True:
        slot bank  write(h);  internal memory  update from h (other positions zeroed);
        store      key = W_k LN(h), value = h, attention K/V = project_kv(LN(h)) into the cache.

Why the store can recall a value shown far outside the window: the hidden state at a value's position has
the key in its window, so its stored key W_k LN(h) carries the key; at a later query the controller sees
the key again, and W_q LN(h) there searches for it. W_q and W_k are MemoryAttention's own query/key
projections, so the search ranks entries as the attention will score them, and the attention's gradient
(which raises the logits of useful memories) trains the search too (as in Memorizing Transformers).

Reads never see this call's own writes, so acting one token at a time with writes off gives exactly the
logits of the learning forward over the chunk from the same starting state. Gradients do not cross calls
(the trainer detaches the state between chunks), so the write paths learn from the regularisers and from
parameters they share with the read paths; at initialisation every write path already stores what it gets.

With every memory part off (`agent=transformer`) MemNet is the plain controller: h -> LayerNorm -> logits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from agents.controller import WindowedTransformer
from agents.models import AgentModel, ModelConfig, check_inputs, check_lanes
from memory.attention import MemoryAttention
from memory.cache import TieredKVCache
from memory.fusion import Fusion
from memory.internal import build_internal_memory
from memory.losses import memory_regularisers
from memory.metrics import memory_bytes as bytes_of
from memory.metrics import read_entropy, store_hit_rate, write_rate
from memory.retrieval import retrieve_memory_kv, write_memory
from memory.slots import MultiHeadMemoryBank, SlotState, WriteInfo
from memory.store import FaissStore


class MemNet(AgentModel):
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
            self.store_attn = MemoryAttention(m, dropout=cfg.dropout)
            with torch.no_grad():  # tied at the start: a context seen again finds its own entry (cosine 1)
                self.store_attn.k_proj.weight.copy_(self.store_attn.q_proj.weight)
        sources = (self.bank is not None) + (self.internal is not None) + m.store
        self.fusion = Fusion(m, sources) if sources else None
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        # Long-term memory objects (not parameters, not in `state`): made for the lane count on first use.
        self.store: FaissStore | None = None
        self.cache: TieredKVCache | None = None

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int) -> dict[str, Tensor]:
        """Flat dict of tensors: ctrl.k<l> / ctrl.v<l> (B, H, W-1, d) per layer, ctrl.pos (B,), slot.<field>
        (B, N, ...),
        internal (B, S, D)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be an int >= 1")
        dev = self.device
        state = {f"ctrl.{k}": t for k, t in self.controller.initial_state(batch_size, dev).items()}
        if self.bank is not None:
            slots = self.bank.initial_state(batch_size, dev)
            state.update({f"slot.{k}": t for k, t in slots._asdict().items()})
        if self.internal is not None:
            with torch.no_grad():  # the learned start is a constant copy; its parameter is trained by reads
                state["internal"] = self.internal.initial_state(batch_size, dev)
        return state

    def _slot_state(self, state: dict) -> SlotState:
        return SlotState(**{f: state[f"slot.{f}"] for f in SlotState._fields})

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: Tensor, state: dict, writes: Tensor | None = None,
                meta: dict | None = None) -> tuple[Tensor, dict, dict]:
        """tokens (B, T) long; writes (B, T) bool (None = no writes); meta: field -> (B, T) int (episode,
        position, step, task) recorded with store entries. Returns logits (B, T, V), the new state and aux:
        aux["losses"]: weighted regularisers (only when grad is enabled), aux["metrics"]: read/write infos,
        store ids (B, T, k), memory_share (B, T), hidden (B, T, D), all detached; for chunk calls (T > 1) also
        floats read_entropy, write_rate, store_hit_rate, memory_share_mean, store_entries."""
        writes = check_inputs(tokens, writes, self.cfg.vocab_size)
        B, T = tokens.shape
        any_write = bool(writes.any())
        h, ctrl = self.controller(self.embed(tokens), _controller_part(state))
        new_state = {f"ctrl.{k}": t for k, t in ctrl.items()}
        reads, losses, metrics = [], {}, {"hidden": h.detach()}

        if self.bank is not None:
            slots = self._slot_state(state)
            slot_read, read_info = self.bank.read(h, slots)  # (B, T, D)
            reads.append(slot_read)
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
            reads.append(self.internal.read_out(h, mem))  # (B, T, D) from the incoming state
            if any_write:  # positions without write permission contribute nothing to the update
                updated = self.internal.updated_state(h * writes[..., None].to(h.dtype), mem)
                mem = torch.where(writes.any(1)[:, None, None], updated, mem)
            new_state["internal"] = mem

        if self.cfg.memory.store:
            x = self.store_norm(h)
            store, cache = self._memory_objects(B)
            queries = self.store_attn.q_proj(x)  # (B, T, D): all heads' queries, searched as one vector
            k = self.cfg.memory.store_top_k
            eye = torch.eye(T, dtype=torch.bool, device=h.device)  # own context = itself: chunk == step by step
            if len(store):
                mem_k, mem_v, mem_mask, ids = retrieve_memory_kv(store, cache, queries, k)
                store_read, info = self.store_attn(x, mem_k, mem_v, mem_mask, attn_mask=eye)
            else:  # nothing stored yet: identical to all-masked memory, without the search
                store_read, info = self.store_attn(x, attn_mask=eye)
                ids = torch.full((B, T, k), -1, dtype=torch.long, device=h.device)
            reads.append(store_read)
            metrics.update(store_ids=ids, memory_share=info["memory_share"].detach().float())
            if any_write:
                self._write_store(x, h, writes, meta)

        z = self.fusion(h, torch.stack(reads, dim=2)) if reads else h  # (B, T, D)
        if T > 1:  # chunk calls also report plain floats (single-token acting calls skip the host syncs)
            metrics.update(self._scalar_metrics(metrics))
        return self.head(self.ln_f(z)), new_state, {"losses": losses, "metrics": metrics}

    def _scalar_metrics(self, metrics: dict) -> dict[str, float]:
        out = {}
        if "read_info" in metrics:
            out["read_entropy"] = read_entropy(metrics["read_info"])
            out["write_rate"] = write_rate(metrics["write_info"])
        if "store_ids" in metrics:
            out["store_hit_rate"] = store_hit_rate(metrics["store_ids"])
            out["memory_share_mean"] = float(metrics["memory_share"].float().mean())
            out["store_entries"] = float(len(self.store))
        return out

    def _write_store(self, x: Tensor, h: Tensor, writes: Tensor, meta: dict | None) -> None:
        """Add the written positions to the store (key W_k x, value h) and their attention K/V to the cache."""
        with torch.no_grad():
            b, t = writes.nonzero(as_tuple=True)  # (n,), (n,)
            xw = x[b, t].float()  # (n, D)
            mem_k, mem_v = self.store_attn.project_kv(xw)  # (n, H, d)
            cols = None
            if meta is not None:
                cols = {}
                for name, col in meta.items():
                    col = torch.as_tensor(np.asarray(col) if not isinstance(col, Tensor) else col)
                    if tuple(col.shape) != tuple(writes.shape):
                        raise ValueError(f"meta[{name!r}]: expected shape {tuple(writes.shape)}, "
                                         f"got {tuple(col.shape)}")
                    cols[name] = col.to(b.device)[b, t].cpu().numpy()
            write_memory(self.store, self.cache, mem_k.flatten(1), h[b, t], mem_k, mem_v, b.cpu().numpy(), meta=cols)

    def _memory_objects(self, batch_size: int) -> tuple[FaissStore, TieredKVCache]:
        """The store and cache, made on first use for `batch_size` lanes."""
        if self.store is not None and self.store.lanes != batch_size:
            if len(self.store):
                raise ValueError(f"batch size {batch_size}: this MemNet's store holds memories of "
                                 f"{self.store.lanes} lanes; run with the same number of lanes")
            self.close()
        if self.store is None:
            self.store = FaissStore.from_config(self.cfg.memory, lanes=batch_size, value_dim=self.cfg.dim)
            # promote_after=0: reads never move entries between tiers. Tier moves on reads made every acting
            # step re-quantise entries (the dominant cost of a step) and made acting and the learning forward
            # see different int8 noise; tiers are still chosen by the policy (lru: last read) on each write.
            self.cache = TieredKVCache.from_config(self.cfg.memory, promote_after=0)
        return self.store, self.cache

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
            if name.startswith("slot.") or name == "internal":
                out[name] = torch.where(lanes.view(B, *[1] * (t.dim() - 1)), fresh[name], t)
        if self.store is not None and bool(lanes.any()):
            # The cleared ids are never returned by a search again (ids are not reused); their cache entries
            # age out under the cache's eviction policy.
            self.store.clear(lanes=lanes.nonzero().flatten().cpu().numpy())
        return out

    def memory_state_dict(self) -> dict:
        """Store + cache state (tensors and python scalars), {} before the first forward or with store off."""
        if self.store is None:
            return {}
        return {"lanes": self.store.lanes, "store": self.store.state_dict(), "cache": self.cache.state_dict()}

    def load_memory_state_dict(self, d: dict) -> None:
        if not d:
            self.close()
            return
        if not self.cfg.memory.store:
            raise ValueError("memory state holds a store, but this model has memory.store=false")
        if not {"lanes", "store", "cache"} <= set(d):
            raise ValueError(f"memory state: expected keys lanes, store, cache; got {sorted(d)}")
        self.close()
        self._memory_objects(int(d["lanes"]))
        self.store.load_state_dict(d["store"])
        self.cache.load_state_dict(d["cache"])

    def memory_bytes(self, state: dict) -> int:
        """Bytes of everything that carries information across steps: state tensors (window, slots, internal)
        + store + cache RAM tiers."""
        total = bytes_of(state)
        if self.store is not None:
            total += self.store.nbytes + self.cache.nbytes
        return total

    def close(self) -> None:
        """Drop the store and cache (the cache's cold-tier file is deleted)."""
        if self.cache is not None:
            self.cache.close()
        self.store = self.cache = None


def _controller_part(state: dict) -> dict:
    """The controller's entries of a MemNet state, without the "ctrl." prefix."""
    return {k[5:]: t for k, t in state.items() if k.startswith("ctrl.")}


def _detached(info):
    """A ReadInfo / WriteInfo without graph, floating fields in float32 (also under bf16 autocast)."""
    return type(info)(*(t.detach().float() if t.is_floating_point() else t.detach() for t in info))
