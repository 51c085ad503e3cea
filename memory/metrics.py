"""Memory metrics: plain floats and numpy arrays for logs, plots and TensorBoard (no gradients kept).

slot_usage, read_entropy, write_rate, SlotLifetimeTracker (survival curves), pattern_similarity,
context_influence, store_hit_rate, memory_bytes, memory_share_of_params.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from memory.checks import check_batch_size, is_number
from memory.losses import entropy
from memory.slots import ReadInfo, SlotState, WriteInfo


def _np(t) -> np.ndarray:
    """A tensor (or array-like) as a numpy array; bfloat16 (autocast's write gates, a bank moved to bf16) as float32,
    which numpy has no type for."""
    if not isinstance(t, Tensor):
        return np.asarray(t)
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()


def slot_usage(state: SlotState, mean_over_lanes: bool = False) -> np.ndarray:
    """Decayed access count of every slot: (B, N), or (N,) averaged over lanes (for a heatmap row)."""
    usage = _np(state.usage).astype(np.float64)
    return usage.mean(axis=0) if mean_over_lanes else usage


def read_entropy(read_info: ReadInfo) -> float:
    """Mean entropy (nats) of a head's weights over its k selected slots; 0 = one slot, log k = uniform. Heads
    that read nothing (all weights 0: every slot they selected is empty, as in a fresh bank) are left out, and NaN
    when none read (no position, a T = 0 block, an empty bank): a mean over nothing, not 0 (a perfectly sharp
    read; a fresh bank's first chunk read 0, pulling the episode's mean down under memory.reset=episode)."""
    with torch.no_grad():
        weights = read_info.weights  # (..., k)
        read = weights.sum(dim=-1) > 0  # (...)
        return float(entropy(weights)[read].mean()) if bool(read.any()) else float("nan")


def write_rate(write_info: WriteInfo) -> float:
    """Mean write gate over all candidate positions (B, M); masked positions count as 0. 1 = every
    position wrote with a fully open gate. NaN when there was no position (a T = 0 block), without numpy's
    empty-mean warning."""
    gate = _np(write_info.gate)
    return float(gate.astype(np.float64).mean()) if gate.size else float("nan")


class SlotLifetimeTracker:
    """How long each slot's content survives before a write replaces it, measured in observe() calls.

    Call `observe(write_info)` once per write step. A write with gate >= `min_gate` that lands in a slot
    ends the content living there (a completed lifetime) and starts a new one. `reset(lanes)` ends the
    contents of those lanes (memory reset). `survival_curve()` gives the Kaplan-Meier estimate S(t) = P(a
    content survives more than t steps), with contents still alive counted as censored.
    """

    def __init__(self, batch_size: int, slots: int, min_gate: float = 0.0):
        batch_size, slots = check_batch_size(batch_size), check_batch_size(slots, "slots")
        if not (is_number(min_gate) and 0.0 <= min_gate <= 1.0):
            raise ValueError(f"min_gate={min_gate!r}: must be a number in [0, 1]")
        self.min_gate = min_gate
        self.step = 0
        self.born = np.full((batch_size, slots), -1, dtype=np.int64)  # step the live content was written
        # completed lifetimes as a histogram (count per lifetime): a list of every lifetime grew by B x writes per
        # step (~130 MB per million steps of 16 lanes) and went into every checkpoint again
        self._counts = np.zeros(0, dtype=np.int64)

    def observe(self, write_info: WriteInfo) -> None:
        ids, gate = _np(write_info.slot_ids), _np(write_info.gate)  # (B, M)
        if ids.shape[0] != self.born.shape[0]:
            raise ValueError(f"write_info has {ids.shape[0]} lanes, tracker was built for {self.born.shape[0]}")
        if ids.ndim != 2 or (ids.size and int(ids.max()) >= self.born.shape[1]):
            reach = int(ids.max()) if ids.size else "?"
            raise ValueError(f"write_info.slot_ids {ids.shape} reach slot {reach}, the tracker was built for "
                             f"{self.born.shape[1]} slots ((B, M) ids); build it with the bank's slots")
        self.step += 1
        lanes, cols = np.nonzero((ids >= 0) & (gate >= self.min_gate))
        slots = ids[lanes, cols]
        born = self.born[lanes, slots]
        self._end(self.step - born[born >= 0])
        self.born[lanes, slots] = self.step

    def reset(self, lanes=None) -> None:
        rows = slice(None) if lanes is None else np.asarray(lanes)
        born = self.born[rows]
        self._end(self.step - born[born >= 0])
        self.born[rows] = -1

    def _end(self, lifetimes: np.ndarray) -> None:
        """Count these completed lifetimes into the histogram."""
        if lifetimes.size:
            new = np.bincount(lifetimes, minlength=self._counts.size)
            new[: self._counts.size] += self._counts
            self._counts = new

    def state_dict(self) -> dict:
        """Tensors and ints only (fits a `torch.load(weights_only=True)` checkpoint)."""
        return {"step": self.step, "born": torch.from_numpy(self.born.copy()),
                "done_counts": torch.from_numpy(self._counts.copy())}

    def load_state_dict(self, d: dict) -> None:
        if tuple(d["born"].shape) != self.born.shape:
            raise ValueError(f"slot lifetime state has shape {tuple(d['born'].shape)}, tracker expects "
                             f"{self.born.shape} (lanes, slots); load it into a tracker built the same way")
        self.step, self.born = int(d["step"]), d["born"].numpy().copy()
        if "done_counts" in d:
            self._counts = d["done_counts"].numpy().astype(np.int64)
        else:  # saved before the histogram: the list of lifetimes
            self._counts = np.bincount(d["done"].numpy().astype(np.int64)).astype(np.int64)

    def lifetimes(self) -> np.ndarray:
        """Completed lifetimes (steps), ascending. Expands the histogram: `lifetime_counts` for long runs."""
        return np.repeat(np.arange(self._counts.size), self._counts)

    def lifetime_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(lifetimes, counts): each distinct completed lifetime and how many contents lived it."""
        values = np.flatnonzero(self._counts)
        return values, self._counts[values]

    def alive_ages(self) -> np.ndarray:
        """Ages of the contents still in memory (censored observations)."""
        return self.step - self.born[self.born >= 0]

    def survival_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(t, S(t)): Kaplan-Meier survival of slot contents (steps), censoring the contents still alive."""
        (done, counts), alive = self.lifetime_counts(), self.alive_ages()
        return kaplan_meier(np.concatenate([done, alive]),
                            np.concatenate([np.ones(done.size, bool), np.zeros(alive.size, bool)]),
                            counts=np.concatenate([counts, np.ones(alive.size, np.int64)]))


def pattern_similarity(state: SlotState, hidden: Tensor) -> np.ndarray:
    """Cosine of every slot to the lane's mean hidden state: hidden (B, T, D) or (B, D) -> (B, N).
    Empty (all-zero) slots give 0."""
    with torch.no_grad():
        mean_h = hidden.mean(dim=1) if hidden.dim() == 3 else hidden  # (B, D)
        if mean_h.shape != (state.memory.shape[0], state.memory.shape[2]):
            raise ValueError(f"hidden shape {tuple(hidden.shape)}: expected (B, T, D) or (B, D) with "
                             f"B, D = {state.memory.shape[0]}, {state.memory.shape[2]}")
        cos = torch.nn.functional.cosine_similarity(state.memory, mean_h.unsqueeze(1), dim=-1, eps=1e-8)
        return _np(cos)


def context_influence(out_total: Tensor, out_memory: Tensor) -> float:
    """Share of a layer's output due to memory: mean over tokens of |m| / (|m| + |c|), where m is the
    memory contribution and c = out_total - m the rest (norms over the last dim). 0 = memory ignored,
    1 = output is all memory."""
    if out_total.shape != out_memory.shape:
        raise ValueError(f"out_total {tuple(out_total.shape)} and out_memory {tuple(out_memory.shape)} "
                         "must have the same shape")
    with torch.no_grad():
        m = out_memory.norm(dim=-1)
        c = (out_total - out_memory).norm(dim=-1)
        return float((m / (m + c).clamp(min=1e-12)).mean())


def store_hit_rate(ids) -> float:
    """Share of queries with at least one retrieved id; ids (..., k) with -1 = missing. NaN when there was no
    query (ids (B, 0, k)), without numpy's empty-mean warning."""
    arr = _np(ids)
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"ids shape {arr.shape}: expected (..., k) with k >= 1")
    hit = (arr >= 0).any(axis=-1)
    return float(hit.mean()) if hit.size else float("nan")


BYTE_UNITS = ((50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB"), (0, "B"))


def byte_unit(n: float) -> tuple[str, float]:
    """The unit that reads best for n bytes and its size: ("GiB", 2.0**30). A unit is left at 1000 of it, not
    1024 (999.5: what rounds to 1000), so 3 significant digits never turn to an exponent (1.01e+03 GiB is
    0.986 TiB); PiB takes any size."""
    exp, unit = next((e, u) for e, u in BYTE_UNITS if n >= 999.5 / 1024 * 2**e or e == 0)
    return unit, 2.0**exp


def format_bytes(n: float) -> str:
    """A size in the unit that reads best, 3 significant digits: 37.3 GiB, 364 TiB, 512 B, 0.986 TiB; thousands
    of PiB in full (1,234 PiB)."""
    unit, size = byte_unit(n)
    v = n / size
    return f"{v:.3g} {unit}" if v < 999.5 else f"{v:,.0f} {unit}"


def memory_bytes(obj) -> int:
    """Bytes held by a tensor, numpy array, an object with an `nbytes` attribute (e.g. FaissStore,
    TieredKVCache), or a (named) tuple / list / dict of those."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(memory_bytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(memory_bytes(v) for v in obj)
    nbytes = getattr(obj, "nbytes", None)
    if nbytes is not None:
        return int(nbytes() if callable(nbytes) else nbytes)
    raise TypeError(f"memory_bytes: cannot size a {type(obj).__name__}; pass tensors, arrays, tuples/dicts "
                    "of them, or an object with an nbytes attribute")


def memory_share_of_params(memory_bytes: int, model: nn.Module) -> float:
    """memory_bytes / bytes of the model's parameters."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if param_bytes == 0:
        raise ValueError("memory_share_of_params: the model has no parameters")
    return memory_bytes / param_bytes


def kaplan_meier(durations, observed=None, counts=None) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival estimate, e.g. of how long a slot's content survives before being overwritten.

    durations: (n,) time each content lived (steps); observed: (n,) bool, False = still present at the end
    (censored: lived at least that long); None = all observed; counts: (n,) how many contents each entry stands
    for (a histogram of lifetimes; None = one each).
    Returns (times, survival): (m+1,) distinct event times with a leading 0, and S(t) just after each time
    (survival[0] = 1), for a post-step plot. O(n log n): one sort, no (times x contents) table."""
    durations = np.asarray(durations, dtype=np.float64).ravel()  # (n,)
    observed = np.ones(durations.shape, bool) if observed is None else np.asarray(observed, bool).ravel()
    counts = np.ones(durations.shape, np.int64) if counts is None else np.asarray(counts).ravel()
    if observed.shape != durations.shape or counts.shape != durations.shape:
        raise ValueError(f"observed and counts must match durations in length; got {observed.size}, "
                         f"{counts.size} and {durations.size}")
    if durations.size and (np.isnan(durations).any() or durations.min() < 0):
        raise ValueError("durations must be non-negative numbers (lifetimes in steps); got a negative or NaN")
    if counts.size and (not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0):
        raise ValueError("counts must be non-negative integers (contents per duration)")
    values, where = np.unique(durations, return_inverse=True)  # (u,) every distinct duration, ascending
    total = np.bincount(where, weights=counts, minlength=values.size)  # (u,) contents with that duration
    died = np.bincount(where, weights=counts * observed, minlength=values.size)  # (u,) of them overwritten
    at_risk = np.cumsum(total[::-1])[::-1]  # (u,) contents that lived at least that long
    event = died > 0
    survival = np.cumprod(1.0 - died[event] / at_risk[event])  # (m,)
    return np.concatenate([[0.0], values[event]]), np.concatenate([[1.0], survival])
