"""MultiHeadMemoryBank: a per-lane bank of N slots x D, read by H top-k cosine heads, written through a
semantic bottleneck with a write gate, an erase vector, stale/least-used allocation and slot-wise decay.

POPGym style: the module holds parameters only; the memory itself is a `SlotState` of tensors that the
caller passes in and gets back, so a checkpoint is a dict of tensors and lanes are independent.

Shapes: B lanes, N slots, D width, H read heads, k slots per head (top_k, at most N), Q reads, M writes.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memory.checks import check_batch_size, check_rows, is_number
from memory.config import MemoryConfig
from memory.persist import atomic_torch_save, checked_torch_load
from memory.ram import check_fits

SLOT_STATE_FORMAT = "memstream.slot_state.v1"
_MASKED_LOGIT = -1e9  # finite, so a head that selected only empty slots gets zeros, not NaN (float16: its -65,504)
# cosines lie in [-1, 1], so logits are within +-sharpness: they must stay far above _MASKED_LOGIT (else a masked
# slot outranks a written one and the weights no longer sum to 1); past ~1e4 a head is a hard max anyway
_MAX_SHARPNESS = 1e6


class SlotState(NamedTuple):
    """All per lane; tensors only (so a checkpoint is a dict of tensors)."""

    memory: Tensor  # (B, N, D) slot contents
    usage: Tensor  # (B, N) decayed access counts (reads add their weight mass, writes add 1)
    age: Tensor  # (B, N) write() steps since the slot was last written
    written: Tensor  # (B, N) bool, the slot has held content (empty slots are never read)


class ReadInfo(NamedTuple):
    weights: Tensor  # (B, Q, H, k) softmax over the k selected slots (0 on empty slots)
    slot_ids: Tensor  # (B, Q, H, k) long


class WriteInfo(NamedTuple):
    gate: Tensor  # (B, M) write gate in [0, 1] (0 where masked)
    slot_ids: Tensor  # (B, M) long, slot each write landed in (-1 where masked)


class MultiHeadMemoryBank(nn.Module):
    """N slots x D per lane with H top-k cosine read heads and gated, allocated writes.

    Read (pure): the query is projected and split into H parts of D/H, as in multi-head attention; head h
    takes the cosine of its part with the h-th D/H-wide part of every written slot, keeps the top k slots
    and softmaxes over those k with a learned sharpness, and reads the weighted h-th parts. The H reads side
    by side (B, Q, D) are projected, layer-normed and added to the query (residual read path):
    reads = query + LN(W_o [r_1 .. r_H]).

    Write: content x goes through a residual semantic-bottleneck MLP, a = x + up(gelu(down(x))), with `up`
    zero-initialised so an untrained bank stores what it is given. A scalar gate g = sigmoid(w.x + b) and an
    erase vector e = sigmoid(W_e x + b_e) give the NTM-style erase/add update with the add tied to the erase:
    m <- m * (1 - g e) + g e * a. What a write erases it replaces, channel by channel: each channel c of a slot
    is a convex mix of 0 and channel c of the writes it received (decay only shrinks it), so |m_c| <= max |a_c|
    over those writes (no blow-up over long streams). The bound is per channel, not on the norm: writes of
    e_1 .. e_4 that each erase only their own channel leave [1, 1, 1, 1], norm 2 against writes of norm 1.
    Allocation sends the M candidate writes of a lane to M distinct slots: never-written slots first, then
    least `usage`, ties broken by the largest `age` (with equal access history that is least recently used).
    Slots shrink by (1 - sigmoid(rho_i)) x (1 - min(this step's read + write mass on them, 1)): untouched ones fully.
    """

    def __init__(self, cfg: MemoryConfig, *, usage_decay: float = 0.95, init_sharpness: float = 10.0,
                 init_retention: float = 0.999):
        super().__init__()
        if cfg.slots < 1:
            raise ValueError(f"memory.slots={cfg.slots}: the slot bank needs slots >= 1 (0 switches it off; "
                             "do not build it then)")
        if not (is_number(usage_decay) and 0.0 <= usage_decay < 1.0):  # a string failed at the comparison
            raise ValueError(f"usage_decay={usage_decay!r}: must be a number in [0, 1)")
        if cfg.dim % cfg.read_heads:
            raise ValueError(f"memory.read_heads={cfg.read_heads}: must divide memory.dim={cfg.dim} (each head "
                             "reads a dim/read_heads-wide part of the slots)")
        # NaN passed `<= 0` and made every read NaN; so large a value that float32 rounds it to inf does the same
        if not (is_number(init_sharpness) and 0 < init_sharpness <= _MAX_SHARPNESS):
            raise ValueError(f"init_sharpness={init_sharpness!r}: must be a number in (0, {_MAX_SHARPNESS:g}]")
        if not (is_number(init_retention) and 0.0 < init_retention < 1.0):
            raise ValueError(f"init_retention={init_retention!r}: must be a number in (0, 1)")
        self.cfg = cfg
        self.slots, self.dim, self.heads = cfg.slots, cfg.dim, cfg.read_heads
        self.k = min(cfg.top_k, cfg.slots)  # a head cannot select more slots than exist
        self.usage_decay, D, H = usage_decay, self.dim, self.heads

        # read path, multi-head style: head h addresses and reads the h-th D/H-wide part of every slot, so
        # H heads cost what one full-width head would. The query projection starts at identity, so an
        # untrained bank is content-addressable (a query like a stored pattern finds it).
        self.head_dim = D // H
        self.query_proj = nn.Linear(D, D)
        with torch.no_grad():
            self.query_proj.weight.copy_(torch.eye(D) + torch.randn(D, D) * (0.1 / math.sqrt(D)))
            self.query_proj.bias.zero_()
        self.sharpness_raw = nn.Parameter(torch.full((H,), _softplus_inverse(init_sharpness)))
        self.read_out = nn.Linear(D, D)
        nn.init.zeros_(self.read_out.bias)  # an empty bank reads exactly 0 (LN(0) = 0), so reads == query
        self.read_norm = nn.LayerNorm(D)

        # write path
        self.bottleneck_down = nn.Linear(D, cfg.bottleneck)
        self.bottleneck_up = nn.Linear(cfg.bottleneck, D)
        nn.init.zeros_(self.bottleneck_up.weight)
        nn.init.zeros_(self.bottleneck_up.bias)
        self.write_gate, self.erase = nn.Linear(D, 1), nn.Linear(D, D)  # (made in this order: the same init draws)
        with torch.no_grad():
            self.erase.weight.mul_(0.1)
            self.erase.bias.fill_(2.0)  # writes start by mostly replacing the slot (e ~ 0.88)
        logit = math.log(init_retention / (1.0 - init_retention))
        self.decay_logit = nn.Parameter(torch.full((cfg.slots,), logit)) if cfg.decay else None

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int, device=None) -> SlotState:
        B, N, w = check_batch_size(batch_size), self.slots, self.read_out.weight
        dtype, device = w.dtype, w.device if device is None else device
        if torch.device(device).type == "cpu":  # weighed first: torch fills them at once (memory/ram.py)
            check_fits(B * N * ((self.dim + 2) * dtype.itemsize + 1), f"the slot bank's {N:,} slots in {B:,} lanes")
        return SlotState(
            memory=torch.zeros(B, N, self.dim, dtype=dtype, device=device),
            usage=torch.zeros(B, N, dtype=dtype, device=device),
            age=torch.zeros(B, N, dtype=dtype, device=device),
            written=torch.zeros(B, N, dtype=torch.bool, device=device),
        )

    def check_state(self, state: SlotState) -> int:
        """Raise ValueError unless `state` fits this bank; return its batch size."""
        if not isinstance(state, SlotState):
            raise TypeError(f"state: expected SlotState, got {type(state).__name__}")
        m = state.memory
        if m.dim() != 3 or m.shape[1:] != (self.slots, self.dim):
            raise ValueError(f"state.memory shape {tuple(m.shape)}: expected (B, {self.slots}, {self.dim}) "
                             "(memory.slots, memory.dim)")
        for name in ("usage", "age", "written"):
            t = getattr(state, name)
            if t.shape != m.shape[:2]:
                raise ValueError(f"state.{name} shape {tuple(t.shape)}: expected {tuple(m.shape[:2])}")
        if bad := _check_slot_tensors(state):  # a float `written` failed at `~` inside the write
            raise ValueError(f"state.{bad}; pass the state the bank's initial_state or forward returned")
        want = self.read_out.weight.dtype  # another failed inside a matmul ("expected scalar type Double ...")
        if bad := next((f for f in ("memory", "usage", "age") if getattr(state, f).dtype != want), None):
            raise ValueError(f"state.{bad} is {getattr(state, bad).dtype}, the bank computes in {want}: pass the "
                             f"state its initial_state made, or convert its float tensors with .to({want})")
        return m.shape[0]

    # ------------------------------------------------------------------ read
    def address(self, query: Tensor, state: SlotState) -> tuple[Tensor, ReadInfo]:
        """Top-k cosine addressing, pure. query (B, Q, D) -> raw reads (B, Q, D) (the H heads' D/H-wide
        reads side by side) and ReadInfo with weights and slot ids (B, Q, H, k)."""
        B = self.check_state(state)
        check_rows(query, "query", B, self.dim, self.query_proj.weight)
        Q, H, N, dh, k = query.shape[1], self.heads, self.slots, self.head_dim, self.k
        q = F.normalize(self.query_proj(query).view(B, Q, H, dh), dim=-1)  # (B, Q, H, dh), unit per head
        memory = state.memory  # (B, N, D)
        floor = max(1e-12, torch.finfo(memory.dtype).tiny)  # float16 rounds 1e-12 to 0: empty slots' 1/0 made NaN
        inv_norm = memory.view(B, N, H, dh).norm(dim=-1).clamp(min=floor).reciprocal().transpose(1, 2)  # (B, H, N)
        empty_bias = (~state.written).to(q.dtype).mul(-3.0).view(B, 1, 1, N)  # empty slots rank below all others
        # Two layouts for the same product: a few queries (acting step by step) use one block-diagonal bmm
        # on the memory as it lies, avoiding a head-major copy of it; many queries (a chunk) pay that copy
        # once and use per-head bmms, H times fewer multiply-adds.
        few_queries = Q <= dh
        if few_queries:
            eye = torch.eye(H, dtype=q.dtype, device=q.device).view(1, 1, H, H, 1)
            q_blocks = (q.unsqueeze(3) * eye).reshape(B, Q * H, H * dh)  # (B, Q*H, D), head h's part only
            dots = torch.bmm(q_blocks, memory.transpose(1, 2)).view(B, Q, H, N).transpose(1, 2)  # (B, H, Q, N)
            cos = torch.addcmul(empty_bias, dots, inv_norm.unsqueeze(2))
        else:
            heads_memory = memory.view(B, N, H, dh).transpose(1, 2).reshape(B * H, N, dh)  # (B*H, N, dh)
            # the empty-slot bias rides along as an extra column (query side 1), so the (B*H, Q, N) scores
            # are written once by the bmm instead of being pre-filled with the broadcast bias
            bias_col = empty_bias.expand(B, H, 1, N).reshape(B * H, N, 1)
            keys = torch.cat([heads_memory * inv_norm.reshape(B * H, N, 1), bias_col], dim=-1)  # (B*H, N, dh+1)
            q_heads = F.pad(q.transpose(1, 2).reshape(B * H, Q, dh), (0, 1), value=1.0)  # (B*H, Q, dh+1)
            cos = torch.bmm(q_heads, keys.transpose(1, 2)).view(B, H, Q, N)
        top_cos, slot_ids = topk_last_dim(cos, k)  # (B, H, Q, k)
        selected_written = top_cos > -2.0
        beta = F.softplus(self.sharpness_raw).view(1, H, 1, 1)
        logits = (beta * top_cos).masked_fill(~selected_written, max(_MASKED_LOGIT, torch.finfo(top_cos.dtype).min))
        weights = logits.softmax(dim=-1) * selected_written  # (B, H, Q, k)
        # dense (B, H, Q, N) weights times the memory: a bmm, cheaper on CPU than gathering the selected rows
        dense = weights.new_zeros(B, H, Q, N).scatter_(3, slot_ids, weights)
        if few_queries:
            out = torch.bmm(dense.transpose(1, 2).reshape(B, Q * H, N), memory).view(B, Q, H, H, dh)
            reads = out.diagonal(dim1=2, dim2=3).transpose(2, 3).reshape(B, Q, H * dh)  # head h's part of read h
        else:
            reads = torch.bmm(dense.view(B * H, Q, N), heads_memory).view(B, H, Q, dh).transpose(1, 2)
            reads = reads.reshape(B, Q, H * dh)
        return reads, ReadInfo(weights=weights.transpose(1, 2), slot_ids=slot_ids.transpose(1, 2))  # (B, Q, H, k)

    def read(self, query: Tensor, state: SlotState) -> tuple[Tensor, ReadInfo]:
        """query (B, Q, D) -> reads (B, Q, D) = query + LN(W_o raw_reads); state untouched."""
        raw, info = self.address(query, state)
        return query + self.read_norm(self.read_out(raw)), info

    # ------------------------------------------------------------------ write
    def write_vectors(self, content: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """content (B, M, D) -> add vectors (B, M, D), erase vectors (B, M, D) in [0, 1], gates (B, M)."""
        add = content + self.bottleneck_up(F.gelu(self.bottleneck_down(content)))
        erase = torch.sigmoid(self.erase(content))
        gate = torch.sigmoid(self.write_gate(content)).squeeze(-1)
        return add, erase, gate

    def allocation_order(self, state: SlotState) -> Tensor:
        """(B, N) slot ids, best write target first: never written, then least usage, then oldest."""
        by_age = torch.sort(state.age, dim=-1, descending=True, stable=True).indices
        key = torch.where(state.written, state.usage, torch.full_like(state.usage, -1.0)).gather(1, by_age)
        return by_age.gather(1, torch.sort(key, dim=-1, stable=True).indices)

    def write(self, content: Tensor, state: SlotState, mask: Tensor,
              read_info: ReadInfo | None = None) -> tuple[SlotState, WriteInfo]:
        """content (B, M, D), mask (B, M) bool -> new SlotState, WriteInfo.

        The j-th unmasked write of a lane lands in the j-th slot of `allocation_order` (computed after this
        step's reads refreshed `usage`). If a lane has more than N unmasked writes only its last N land.
        Bookkeeping (usage from `read_info`, age, decay) happens only in lanes with at least one unmasked
        write; other lanes come back bit-for-bit unchanged.
        """
        B = self.check_state(state)
        check_rows(content, "content", B, self.dim, self.query_proj.weight)
        M, N, D = content.shape[1], self.slots, self.dim
        if not isinstance(mask, Tensor) or mask.shape != (B, M) or mask.dtype != torch.bool:
            # a None or list mask failed with an AttributeError on .shape
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected a bool tensor of shape {(B, M)}, got {got}")
        lane_active = mask.any(dim=1)  # (B,)
        with torch.no_grad():  # usage / age / allocation are bookkeeping, not part of the gradient path
            read_total = torch.zeros_like(state.usage)  # (B, N): read weight summed over heads and queries
            if read_info is not None:
                w = read_info.weights.detach()
                read_total.scatter_add_(1, read_info.slot_ids.reshape(B, -1), w.reshape(B, -1))
            read_mass = read_total / self.heads  # usage counts a read of all H heads as one
            usage = state.usage * self.usage_decay + read_mass
            order = self.allocation_order(state._replace(usage=usage))  # (B, N)
            n_active = mask.sum(dim=1, keepdim=True)  # (B, 1)
            rank = mask.long().cumsum(dim=1) - 1 - (n_active - N).clamp(min=0)  # drop all but the last N
            lands = mask & (rank >= 0)  # (B, M)
            slot_ids = torch.where(lands, order.gather(1, rank.clamp(0, N - 1)), -1)
            write_mass = torch.zeros_like(usage).scatter_add_(1, slot_ids.clamp(min=0), lands.to(usage.dtype))
            written_now = write_mass > 0  # (B, N)

        add, erase, gate = self.write_vectors(content)
        gate = gate * lands
        coef = gate.unsqueeze(-1) * erase  # (B, M, D), 0 on masked / dropped writes

        if self.decay_logit is not None:  # slots shrink by their retention, as far as this step did not access them
            # one head reading a slot with weight 1 touches it fully (per-head weights, not usage's 1/H share)
            access = (read_total + write_mass).clamp(max=1.0)  # (B, N)
            shrink = (1.0 - torch.sigmoid(self.decay_logit)) * (1.0 - access) * lane_active.unsqueeze(1)
            memory = state.memory * (1.0 - shrink).unsqueeze(-1)  # a new tensor: updated in place below
        else:
            memory = state.memory.clone()
        memory = memory.contiguous()  # a permuted memory's reshape would be a copy that index_add_ writes and drops
        # m <- m + c (a - m) on the rows that were written, and nowhere else: frozen lanes (decay factor 1.0,
        # no rows added) come back bit-for-bit without a full-size torch.where over the memory
        lands_flat = lands.reshape(-1)  # (B*M,)
        rows = (slot_ids + torch.arange(B, device=content.device).unsqueeze(1) * N).reshape(-1)[lands_flat]
        memory_rows = memory.view(B * N, D)  # a view: the writes below land in `memory`
        delta = coef.reshape(-1, D)[lands_flat] * (add.reshape(-1, D)[lands_flat] - memory_rows[rows])
        memory_rows.index_add_(0, rows, delta)  # memory (B, N, D) now holds the written rows

        keep = ~lane_active
        new = SlotState(
            memory=memory,
            usage=torch.where(keep.view(B, 1), state.usage, usage + write_mass),
            age=torch.where(keep.view(B, 1), state.age, torch.where(written_now, 0.0, state.age + 1.0)),
            written=state.written | written_now,
        )
        return new, WriteInfo(gate=gate, slot_ids=slot_ids)

    def forward(self, x: Tensor, state: SlotState,
                write_mask: Tensor) -> tuple[Tensor, SlotState, ReadInfo, WriteInfo]:
        """x (B, T, D): all T reads see the incoming state, then the T tokens are written (block-recurrent)."""
        reads, read_info = self.read(x, state)
        new_state, write_info = self.write(x, state, write_mask, read_info)
        return reads, new_state, read_info, write_info


def topk_last_dim(x: Tensor, k: int, group: int = 4) -> tuple[Tensor, Tensor]:
    """torch.topk(x, k, dim=-1) (values sorted, descending), computed in two smaller steps.

    CPU topk dominates a chunked read. The k best of a row lie in the k groups (of `group`) with the largest maxima
    (any other group's maximum is below the k-th best), so topk over the N/group maxima, then over the k*group
    candidates, gives the same result, faster for 4 k group <= N <= 32 k (README): shorter rows gain nothing, and on
    longer ones torch.topk itself is fast (N=256, k=4: ~50% slower grouped; N=512, k=16: ~45% faster).
    """
    N = x.shape[-1]
    if N % group or N < 4 * k * group or N > 32 * k:  # outside the range where grouping gains: plain topk
        return x.topk(k, dim=-1)
    stride = N // group  # group j = elements j, j + stride, j + 2 stride, ... (a max over contiguous rows)
    group_max = x.unflatten(-1, (group, stride)).amax(dim=-2)  # (..., N/group)
    best_groups = group_max.topk(k, dim=-1).indices  # (..., k)
    candidates = (best_groups.unsqueeze(-1) + stride * torch.arange(group, device=x.device)).flatten(-2)
    values, pick = x.gather(-1, candidates).topk(k, dim=-1)  # (..., k)
    return values, candidates.gather(-1, pick)


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


# ---------------------------------------------------------------------- files
def _check_slot_tensors(state: SlotState) -> str | None:
    """What makes `state` no slot state of any bank (shapes, dtypes), as a phrase, or None."""
    m = state.memory
    if m.dim() != 3 or not m.is_floating_point():
        return f"memory is {m.dtype} {tuple(m.shape)}, expected floating (B, N, D)"
    for name in ("usage", "age", "written"):
        t = getattr(state, name)
        if t.shape != m.shape[:2] or (t.dtype != torch.bool if name == "written" else not t.is_floating_point()):
            kind = "bool" if name == "written" else "floating"
            return f"{name} is {t.dtype} {tuple(t.shape)}, expected {kind} {tuple(m.shape[:2])}"
    return None


def save_slot_state(path: str | os.PathLike, state: SlotState) -> None:
    """Write a SlotState as a dict of tensors (detached: a state read back is no part of the graph that made it),
    atomically. A state that no bank could load (wrong shapes or dtypes) is refused before anything is written."""
    if not isinstance(state, SlotState) or not all(isinstance(t, Tensor) for t in state):
        got = type(state).__name__ if not isinstance(state, SlotState) else "a SlotState of non-tensors"
        raise TypeError(f"save_slot_state: state must be a SlotState of tensors (from bank.initial_state or a bank "
                        f"call), got {got}")
    bad = _check_slot_tensors(state)
    if bad is not None:
        raise ValueError(f"save_slot_state: state.{bad}; pass the state a bank returned")
    atomic_torch_save({"format": SLOT_STATE_FORMAT, **{f: t.detach() for f, t in state._asdict().items()}}, path)


def load_slot_state(path: str | os.PathLike, bank: MultiHeadMemoryBank, device=None) -> SlotState:
    """Read a SlotState written by `save_slot_state`; it must fit `bank` (slots, dim)."""
    obj = checked_torch_load(path, "slot state", SLOT_STATE_FORMAT, writer="save_slot_state")
    missing = [f for f in SlotState._fields if not isinstance(obj.get(f), Tensor)]
    if missing:
        raise ValueError(f"slot state file {os.fspath(path)!r}: missing tensors {missing}")
    state = SlotState(**{f: obj[f].to(device) if device is not None else obj[f] for f in SlotState._fields})
    if (bad := _check_slot_tensors(state)) is not None:
        raise ValueError(f"slot state file {os.fspath(path)!r} is damaged: {bad}")
    dtype = next(bank.parameters()).dtype  # (a float64 state loaded, then failed inside the bank's first call)
    for name, t in (("memory", state.memory), ("usage", state.usage), ("age", state.age)):
        if t.dtype != dtype or not bool(torch.isfinite(t).all()):
            raise ValueError(f"slot state file {os.fspath(path)!r}: its {name} " + (
                f"is {t.dtype}, the bank computes in {dtype}" if t.dtype != dtype else "holds NaN or inf (damaged)"))
    try:
        bank.check_state(state)
    except ValueError as err:
        raise ValueError(f"slot state file {os.fspath(path)!r} does not fit this bank: {err}") from None
    return state
