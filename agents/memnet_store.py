"""MemNet's store path: addresses (lagged key and query inputs), writes, candidate re-scoring, the copy pointer.

`StorePath` is a mixin of `MemNet` (agents/memnet.py): the methods here read and write `self.store`,
`self.cache`, `self.store_attn`, `self.store_norm` and `self.cfg`; MemNet's module doc has the whole read path.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from agents.controller import window_mask
from memory.attention import MemoryAttention
from memory.cache import TieredKVCache
from memory.retrieval import recency_rescore, remove_replaced, retrieve_memory_kv, write_memory
from memory.store import CodedKeys, FaissStore
from memory.store_lookup import META_FIELDS, NormRangeError, checked_array


@contextmanager
def diverged_on_overflow():
    """The store refusing MemNet's search vectors or keys as too large for float32 inner products means finite but
    diverged weights: said as the non-finite check says it (agents.run: "training diverged ...; lower train.lr"), not
    as the store's "scale them down, or use metric='cosine'"."""
    try:
        yield
    except NormRangeError as err:
        raise FloatingPointError(f"MemNet: store {err.what} of norm {err.norm:.3g} overflow float32 inner products "
                                 "(the weights diverged)") from None


QUERY_SCALE = 4.0  # initial query projection = QUERY_SCALE x key projection (induction prior, sharp)
TOKEN_CODE_SEED = 0  # memory.key_source=token: the codes come from their own generator (the global RNG is untouched)
BOS = 0  # every memstream env's first observation of an episode (envs/stream.py): where the context restarts
FETCH_FACTOR = 4  # the store search returns FETCH_FACTOR x store_top_k candidates, re-ranked to store_top_k


class StorePath:
    """The store-path methods of MemNet."""

    def _rescorer(self, clock: np.ndarray):
        """Re-score the store's candidates as the attention will see them: with the recency term on an ip store,
        the head-mean logit q.k / (H sqrt(d)) minus mean_h softplus(r_h) log(1 + age); memories still in the
        window dropped. Without it, a context seen in many old episodes fills the k slots with stale copies."""
        attn, m = self.store_attn, self.cfg.memory
        if m.store_metric != "ip":  # cosine scores are not logits: no recency term here
            return recency_rescore(self.store, clock, self.controller.context, 1.0, 0.0)
        slope = float(torch.nn.functional.softplus(attn.recency.detach()).mean()) if m.recency else 0.0
        return recency_rescore(self.store, clock, self.controller.context, 1 / (attn.heads * attn.head_dim ** 0.5),
                               slope)

    def _read_store(self, xs: Tensor, ks: Tensor, us: Tensor, toks: Tensor, pos: Tensor, at: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The store attention's read at positions `at` (T',) long of this call. xs (B, C+T, D) and ks (B, C+T, a D):
        inputs and key inputs of [window ; call]; us (B, T, b D): the call's query inputs; toks (B, C+T): the
        tokens those positions hold; pos (B,): the lanes' clocks at the call's start. Returns the read (B, T', D),
        store ids (B, T', k) (-1 = none), memory share (B, T') and the copy distribution (B, T', V) (None with
        memory.copy = 0). Keys and values are the whole [window ; call]: a position's read is what a full call
        computes there."""
        m, C = self.cfg.memory, self.controller.context
        (B, S, D), Tq, k = xs.shape, len(at), m.store_top_k
        T = S - C
        store, cache = self._memory_objects(B)  # made on first use (the writes after the read need them too)
        ids = torch.full((B, Tq, k), -1, dtype=torch.long, device=xs.device)
        if Tq == 0:  # nothing to read (an evaluation's chunk call: its writes are all it is for)
            copy_probs = xs.new_zeros(B, 0, self.cfg.vocab_size, dtype=torch.float32) if m.copy > 0 else None
            return xs.new_zeros(B, 0, D), ids, xs.new_zeros(B, 0), copy_probs
        x, u = xs[:, C:][:, at], us[:, at]  # (B, T', D), (B, T', b D)
        # the store attention's own context is the window (cached inputs) and the call, as the controller's is
        kw = {"attn_mask": window_mask(pos, T, C)[:, :, at], "context": xs, "key_input": ks, "query_input": u,
              "return_probs": m.copy > 0, "queries_in_context": True}  # mask (B, 1, T', C+T)
        if m.recency:  # steps from each position of [window ; call] to each query: C + t - i
            kw["context_age"] = C + at[:, None] - torch.arange(S, device=xs.device)  # (T', C+T)
        if len(store):
            clock = lane_clock(pos, T)[:, at].cpu().numpy()  # (B, T'): each query's step on its lane's clock
            # the store holds key *inputs* s (K = W_k s is projected at read time), so q.k = (W_k^T q).s: the
            # search vector that ranks entries exactly as the attention's logits, with today's weights
            search = self.store_attn.q_proj(u) @ self.store_attn.k_proj.weight  # (B, T', a D)
            kin, xin, mem_mask, ids = retrieve_memory_kv(store, cache, search, k, fetch=FETCH_FACTOR * k,
                                                         rescore=self._rescorer(clock))  # (B, T', k, H, .)
            if m.recency:
                age = clock[..., None] - store.meta_of(ids.cpu().numpy(), "step")  # (B, T', k)
                kw["mem_age"] = torch.from_numpy(age).to(xs.device)
            # the memories' key inputs (B, T', k, a D) and inputs (B, T', k, D), projected inside (folded)
            read, info = self.store_attn(x, kin.flatten(-2), xin.flatten(-2), mem_mask, mem_inputs=True, **kw)
        else:  # nothing stored yet: identical to all-masked memory, without the search
            read, info = self.store_attn(x, **kw)
        copy_probs = None
        if m.copy > 0:  # what each attended position holds: window/call tokens, then the memories' tokens
            held = toks[:, None].expand(B, Tq, -1)  # (B, T', C+T)
            if len(store):
                mem_toks = torch.from_numpy(store.meta_of(ids.cpu().numpy(), "token")).to(xs.device)  # (B, T', k)
                held = torch.cat((held, mem_toks), dim=-1)  # (B, T', C+T+k)
            copy_probs = self._copy_distribution(info["probs"], held)
        return read, ids, info["memory_share"], copy_probs

    def _copy_distribution(self, probs: Tensor, held: Tensor) -> Tensor:
        """probs (B, T, P) attention weights, held (B, T, P) token ids (-1 = none) -> (B, T, V) float32: the
        attention mass on each token id (sums to <= 1; positions holding nothing carry no mass)."""
        probs = probs.float() * (held >= 0)
        out = probs.new_zeros(*held.shape[:2], self.cfg.vocab_size)
        return out.scatter_add_(-1, held.clamp(min=0), probs)

    def _store_inputs(self, h: Tensor, tokens: Tensor, state: dict) -> tuple[Tensor, Tensor, Tensor, dict]:
        """h (B, T, D), tokens (B, T) -> the store path's inputs x = LN(h) (values) and key inputs, both for
        [window ; this call] ((B, W-1+T, D) and (B, W-1+T, a D)), this call's query inputs (B, T, b D), and the
        state entries of the next call. With addresses e_t = x_t (memory.key_source=hidden) or the token's fixed
        code (token), the key input of position t is [e_t ; e_{t-1} ; ... ; e_{t-a+1}] (a = memory.key_inputs),
        the query input likewise with b = memory.query_inputs; addresses before a lane's stream start are 0. With
        memory.context_decay > 0 both end with one more block, the context (`_contexts`).

        Lag pair o:p starts W_k reading e_{t-o} and W_q reading 4 x the same map of e_{t-p} (`init_lag_pairs`):
        with "1:0" (token shift, as in RWKV) a query for the current token finds the positions that came right
        after the same token before, and their values hold what followed it, an induction (copy) circuit from
        the first step, which training then reshapes. W_k and W_q see every lag up to a and b, so training can
        move weight between them: stored memories keep their inputs, not their keys (`_write_store`).

        Token codes do not drift: a contextual x_t written long ago came from an older controller, and queries
        trained against such stale addresses miss the fresh ones (README, NeedleRecall)."""
        x = self.store_norm(h)  # (B, T, D)
        m, T = self.cfg.memory, x.shape[1]
        address = x if m.key_source == "hidden" else self.token_codes[tokens].to(x.dtype)  # (B, T, D)
        recent = state["window.recent"].to(x.dtype)  # (B, R, D): the last R addresses
        R = recent.shape[1]
        ext = torch.cat((recent, address), dim=1)  # (B, R+T, D): e_{t-R} ... e_{t+T-1}
        keys = [ext[:, R - o:R - o + T] for o in range(m.key_inputs)]  # a x (B, T, D)
        queries = [ext[:, R - p:R - p + T] for p in range(m.query_inputs)]  # b x (B, T, D)
        nxt = {}
        if m.context_decay > 0:  # a key gets the context through the position before it, a query the one now
            restart = tokens == BOS if m.context_restart else None  # (B, T)
            # in float32 at least, autocast off: under bf16 the call's matmul and a step's carry, rounded to bf16 at
            # every step, drifted apart (logits 2.6 off, other actions), and acting must equal the chunk forward
            wide = torch.promote_types(address.dtype, torch.float32)
            with torch.autocast(address.device.type, enabled=False):
                before, nxt["window.context"] = self._contexts(address.to(wide), state["window.context"].to(wide),
                                                               restart)
            before = before.to(x.dtype)
            keys.append(before[:, :-1])
            queries.append(before[:, 1:])
        keys_in, queries_in = torch.cat(keys, dim=-1), torch.cat(queries, dim=-1)  # (B, T, a D), (B, T, b D)
        xs = torch.cat((state["window.inputs"].to(x.dtype), x), dim=1)  # (B, W-1+T, D)
        ks = torch.cat((state["window.keys"].to(x.dtype), keys_in), dim=1)  # (B, W-1+T, a D)
        C = self.controller.context
        keep = slice(xs.shape[1] - C, None)  # the newest C columns (none when W = 1; xs[:, -0:] would keep all)
        nxt.update({"window.recent": ext[:, ext.shape[1] - R:], "window.inputs": xs[:, keep],
                    "window.keys": ks[:, keep]})
        return xs, ks, queries_in, {name: t.float() for name, t in nxt.items()}

    def _contexts(self, address: Tensor, last: Tensor, restart: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """address (B, T, D), last (B, D): the running mean m through the position before the call -> the contexts
        c_{t-1} ... c_{T-1} (B, T+1, D), c = sqrt(D) m / |m| (0 while m is), and the new running mean (B, D).
        m_t = lam m_{t-1} + (1 - lam) e_t, lam = memory.context_decay: one matmul over the call. restart (B, T)
        bool: m starts again at those positions (m_t = (1 - lam) e_t; memory.context_restart, at each BOS)."""
        lam, (T, D) = self.cfg.memory.context_decay, address.shape[1:]
        weights, powers = decay_tables(T, lam, address.dtype, address.device)  # (T, T), (T,)
        carry = powers[None, :, None] * last[:, None]  # (B, T, D): what m_{-1} still adds to m_t
        if restart is not None and bool(restart.any()):  # no weight across a restart, per lane
            segment = restart.long().cumsum(dim=1)  # (B, T): restarts at or before t
            weights = weights * (segment[:, :, None] == segment[:, None, :])  # (B, T, T)
            carry = carry * (segment == 0)[..., None]
        means = carry + weights @ address  # (B, T, D): m_0 ... m_{T-1}
        means = torch.cat((last[:, None], means), dim=1)  # (B, T+1, D)
        norm = means.norm(dim=-1, keepdim=True)
        contexts = torch.where(norm > 0, means * D ** 0.5 / norm.clamp(min=1e-12), torch.zeros_like(means))
        return contexts, means[:, -1]

    def _write_store(self, x: Tensor, key_in: Tensor, h: Tensor, tokens: Tensor, prev: Tensor, writes: Tensor,
                     meta: dict | None, pos: Tensor) -> None:
        """Add the written positions to the store (search key = the attention key's input s, value h; "step" =
        the lane's clock, ctrl.pos + t, which the recency term measures ages on) and the attention K/V *inputs*
        (s, x) to the cache, projected at read time. With memory.store_replace > 0, replaced memories go first:
        their context (s without the position's own input x_t, unless s is x_t alone) is compared."""
        with torch.no_grad():
            key_in, x = key_in.float(), x.float()  # (B, T, a D), (B, T, D)
            b, t = writes.nonzero(as_tuple=True)  # (n,), (n,)
            lanes, before = b.cpu().numpy(), prev[b, t].cpu().numpy()  # (n,) each
            # what the entry holds (the copy read-out's pointer), what came before it (replacement's address)
            # and when (the recency term's clock); the caller's meta and the store's capacity are checked before
            # the replaced memories go: a write refused after the removals lost them
            cols = {"token": tokens[b, t].cpu().numpy(), "prev": before, "step": (pos[b] + t).cpu().numpy()}
            if meta is not None:
                rows = (b.cpu().numpy(), t.cpu().numpy())
                for name, col in meta.items():
                    col = checked_array(col, f"meta[{name!r}]", np.int64)  # (B, T); the store's refusal of floats
                    if tuple(col.shape) != tuple(writes.shape):
                        raise ValueError(f"meta[{name!r}]: expected shape {tuple(writes.shape)}, "
                                         f"got {tuple(col.shape)}")
                    cols[name] = col[rows]
            self.store.partition_counts(lanes)  # (its refusal)
            if self.cfg.memory.store_replace > 0 and len(self.store):
                context = slice(self.cfg.dim, None) if self.cfg.memory.key_blocks > 1 else slice(None)
                remove_replaced(self.store, self.cache, key_in[b, t].cpu().numpy(), before, lanes,
                                self.cfg.memory.store_replace, part=context)
            H = self.store_attn.heads
            kin, xin = key_in[b, t], x[b, t]  # (n, a D), (n, D): cached per head as (n, H, a d), (n, H, d)
            write_memory(self.store, self.cache, kin, h[b, t], kin.unflatten(-1, (H, -1)), xin.unflatten(-1, (H, -1)),
                         lanes, meta=cols)

    def _check_saved_tokens(self, store_state) -> None:
        """A saved store's "token" and "prev" of its entries within this model's vocabulary (prev: -1 at a lane's
        stream start), or one ValueError line: a token past it failed in the copy read-out's scatter, a traceback.
        (The store checks the rest of its state itself; a state it cannot read is left to it.)"""
        meta, row_id = (store_state.get(k) if isinstance(store_state, dict) else None for k in ("meta", "row_id"))
        if not (isinstance(meta, Tensor) and isinstance(row_id, Tensor) and meta.dim() == 2
                and meta.shape[0] == row_id.numel() and meta.shape[1] == len(META_FIELDS)):
            return
        live = meta[row_id.reshape(-1) >= 0]
        for field, low in (("token", 0), ("prev", -1)):
            ids = live[:, META_FIELDS.index(field)]
            if ids.numel() and not (low <= int(ids.min()) and int(ids.max()) < self.cfg.vocab_size):
                raise ValueError(f"memory state: the store's entries hold {field} ids outside [{low}, "
                                 f"{self.cfg.vocab_size}), this model's vocabulary; it is damaged or another env's")

    def _coded_keys(self) -> CodedKeys | None:
        """With token codes as addresses, a key's first blocks are the codes of its token and of the one before it
        (the "token" and "prev" it is stored with), so exact search looks their scores up and scans only the rest
        (`memory/store_search.py`), where that rest is at most half the key (ContinualShift, LongDependency; with
        NeedleRecall's 4 more lag blocks the lookups cost more than they save, `benchmarks/memory.py --only
        coded`). Not with a 1-token window: there "prev" is not known at a call's first position."""
        m = self.cfg.memory
        fields = ("token", "prev")[:m.key_inputs]
        if (m.key_source != "token" or m.store_metric != "ip" or m.store_index != "flat"
                or not self.controller.context or 2 * (m.key_blocks - len(fields)) > m.key_blocks):
            return None
        return CodedKeys(self.token_codes, fields)

    def _memory_objects(self, batch_size: int) -> tuple[FaissStore, TieredKVCache]:
        """The store and cache, made on first use for `batch_size` lanes."""
        if self.store is not None and self.store.lanes != batch_size:
            if len(self.store):
                raise ValueError(f"batch size {batch_size}: this MemNet's store holds memories of "
                                 f"{self.store.lanes} lanes; run with the same number of lanes")
            self.close()
        if self.store is None:
            m = self.cfg.memory  # keys are key inputs (m.key_blocks x D: addresses, context), projected at read time
            self.store = FaissStore.from_config(m, lanes=batch_size, value_dim=self.cfg.dim,
                                                key_dim=m.key_blocks * self.cfg.dim, coded=self._coded_keys())
            # promote_after=0: reads never move entries between tiers. Tier moves on reads made every acting
            # step re-quantise entries (the dominant cost of a step) and made acting and the learning forward
            # see different int8 noise; tiers are still chosen by the policy (lru: last read) on each write.
            self.cache = TieredKVCache.from_config(m, promote_after=0, key_dim=m.key_blocks * m.head_dim)
        return self.store, self.cache


def init_lag_pairs(attn: MemoryAttention, pairs: tuple[tuple[int, int], ...], dim: int, context: bool = False,
                   context_scale: float = 1.0) -> None:
    """Start the store attention's W_k (over [e_t ; ... e_{t-a+1}]) and W_q (over [e_t ; ...]) so that lag pair
    o:p matches a memory whose address o steps back equals the query's address p steps back: one random
    orthogonal map G_j per pair (x 3^-1/2, the default init's scale), W_k[:, block o] += G_j and
    W_q[:, block p] += QUERY_SCALE G_j.

    x QUERY_SCALE = 4: one matching pair scores ~8 on the softmax logits against ~+-1 for a non-match, so from the
    first step most attention lands on the match and the memory's prediction is worth learning from. A memory
    matching m pairs scores ~8 m: the pairs' evidence adds up, which is what singles out a fact from the
    haystack's chance matches of one token (NeedleRecall after 20 episodes: 0.53 when the pairs shared the scale
    of one, 0.81 with each at full scale, README). Cross terms of independent G_j add noise (~+-1.3 per pair).
    With one pair, W_k^T W_k = I / 3 on its block: the search in key-input space (W_k^T q).s ranks as q.k.
    With `context`, the last blocks (the context) are matched like one more pair, its query map x context_scale
    (memory.context_scale: a context cosine of 1 then scores ~8 context_scale)."""
    k, q = attn.k_proj.weight, attn.q_proj.weight  # (D, a D), (D, b D)
    k.zero_()
    q.zero_()
    blocks = [(o, p, 1.0) for o, p in pairs]
    if context:  # the context block is the last of each
        blocks.append((k.shape[1] // dim - 1, q.shape[1] // dim - 1, context_scale))
    for o, p, scale in blocks:
        g = nn.init.orthogonal_(torch.empty(dim, dim), gain=3 ** -0.5)
        k[:, o * dim:(o + 1) * dim] += g
        q[:, p * dim:(p + 1) * dim] += QUERY_SCALE * scale * g


def zero_last_columns(dim: int, grad: Tensor) -> Tensor:
    """A gradient hook: grad (D, n) with its last `dim` columns zeroed (memory.context_fixed). A function of the
    gradient alone, so it follows the weight to any device and pickles (a mask tensor made at init stayed on
    the CPU when the model moved to CUDA)."""
    grad = grad.clone()
    grad[:, -dim:] = 0
    return grad


@functools.lru_cache(maxsize=64)
def decay_tables(T: int, lam: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """The running mean's weights over a call of T steps: (T, T) with (1 - lam) lam^(t - s) for s <= t (0 above
    the diagonal) and the carried powers lam^(t + 1) (T,). Cached (read-only): every acting call of a run has
    the same T, and building them anew was ~12 small ops per call."""
    t = torch.arange(T, device=device, dtype=dtype)
    gap = t[:, None] - t[None, :]  # (T, T)
    weights = torch.where(gap >= 0, (1 - lam) * lam ** gap.clamp(min=0), torch.zeros_like(gap))
    return weights, lam ** (t + 1)


def lane_clock(pos: Tensor, T: int) -> Tensor:
    """pos (B,) -> (B, T): each position's step on its lane's clock (tokens seen since the last memory reset)."""
    return pos[:, None] + torch.arange(T, device=pos.device)
