"""Recurrent baselines: embedding -> LSTM or GRU (L layers) -> logits, with the AgentModel interface.

The hidden size is the one whose parameter count comes closest to the memory-free transformer of the same
config (`agent=transformer`), so comparisons are at equal size. `writes` and `meta` are accepted and ignored:
a recurrent net's only memory is its hidden state, which it always updates.

State (tensors only): h (L, B, Hh) and, for the LSTM, c (L, B, Hh).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agents.model_config import RECURRENT
from agents.models import (
    AgentModel,
    ModelConfig,
    check_inputs,
    check_lanes,
    check_read_at,
    memory_free,
)
from memory.checks import check_batch_size

CELLS = dict(zip(RECURRENT, ((nn.LSTM, 4), (nn.GRU, 3)), strict=True))  # module, gates per layer


def recurrent_param_count(cell: str, vocab_size: int, hidden: int, layers: int) -> int:
    """Parameters of RecurrentAgent: embedding V*h + per layer gates*(2h^2 + 2h) + head h*V + V."""
    gates = CELLS[cell][1]
    return vocab_size * hidden + layers * gates * (2 * hidden * hidden + 2 * hidden) + hidden * vocab_size + vocab_size


def matched_hidden_size(cell: str, cfg: ModelConfig) -> int:
    """The hidden size whose parameter count is closest to the memory-free transformer's."""
    from agents.memnet import MemNet  # imported here: memnet is heavier (memory components)

    target = MemNet(memory_free(cfg)).num_params()
    sizes = range(1, 8 * cfg.dim + 1)
    return min(sizes, key=lambda h: abs(recurrent_param_count(cell, cfg.vocab_size, h, cfg.layers) - target))


class RecurrentAgent(AgentModel):
    def __init__(self, cfg: ModelConfig, cell: str = "lstm", hidden: int | None = None):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r}: choose one of {tuple(CELLS)}")
        self.cfg, self.cell = cfg, cell
        # torch's own refusal of 0 ("input_size must be greater than zero") did not name `hidden`
        self.hidden = check_batch_size(hidden, "hidden") if hidden is not None else matched_hidden_size(cell, cfg)
        self.embed = nn.Embedding(cfg.vocab_size, self.hidden)
        self.rnn = CELLS[cell][0](self.hidden, self.hidden, num_layers=cfg.layers, batch_first=True,
                                  dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Linear(self.hidden, cfg.vocab_size)

    def initial_state(self, batch_size: int) -> dict[str, Tensor]:
        zeros = torch.zeros(self.cfg.layers, check_batch_size(batch_size), self.hidden, device=self.device)
        return {"h": zeros, "c": zeros.clone()} if self.cell == "lstm" else {"h": zeros}

    def forward(self, tokens: Tensor, state: dict, writes: Tensor | None = None,
                meta: dict | None = None, read_at: Tensor | None = None) -> tuple[Tensor, dict, dict]:
        """tokens (B, T) long -> logits (B, T', V) at positions read_at (None = all), new state, aux (no memory
        losses or metrics)."""
        check_inputs(tokens, writes, self.cfg.vocab_size, state)
        read_at = check_read_at(read_at, tokens.shape[1], tokens.device)
        self.check_state(state, tokens.shape[0])
        if tokens.shape[1] == 0:  # nothing to step (torch's RNNs refuse an empty sequence); MemNet does the same
            return self.head.weight.new_zeros(tokens.shape[0], 0, self.cfg.vocab_size), dict(state), \
                {"losses": {}, "metrics": {}}
        x = self.embed(tokens)  # (B, T, Hh)
        if self.cell == "lstm":
            # CPU autocast (train.amp) sends nn.LSTM to oneDNN's bfloat16 kernel, which a CPU without bf16 support
            # cannot build ("could not create a primitive descriptor"): it runs in float32 there, as nn.GRU does
            with torch.autocast("cpu", enabled=False):
                y, (h, c) = self.rnn(x.float(), (state["h"].float(), state["c"].float()))
            new_state = {"h": h.float(), "c": c.float()}
        else:
            y, h = self.rnn(x, state["h"].to(x.dtype))
            new_state = {"h": h.float()}
        return self.head(y if read_at is None else y[:, read_at]), new_state, {"losses": {}, "metrics": {}}

    def reset_memory(self, state: dict, lanes) -> dict:
        """Zero the hidden state of the lanes where `lanes` (B,) bool is True (a recurrent net's memory)."""
        lanes = check_lanes(lanes, state["h"].shape[1], state["h"].device)
        keep = (~lanes).to(state["h"].dtype)[None, :, None]
        return {name: t * keep for name, t in state.items()}

    def memory_bytes(self, state: dict) -> int:
        return sum(t.numel() * t.element_size() for t in state.values())
