"""`ModelConfig`: the sizes every agent is built from, and the agent names. Plain Python (no torch), so the
command-line checks (agents/config.py's `validate`) run before torch loads; `agents.models` re-exports it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from memory.config import MemoryConfig

AGENTS = ("memnet", "transformer", "lstm", "gru")
RECURRENT = ("lstm", "gru")  # no attention: sized to the transformer of the same config, its heads and window unused
MAX_WINDOW = 65_536  # model.window bound: longer than any memstream episode by default, 1 GiB of K/V at 16 lanes


@dataclass
class ModelConfig:
    vocab_size: int
    dim: int = 128  # D: width of the controller (and of memory: memory.dim must equal it)
    layers: int = 2
    heads: int = 4  # attention heads of the controller; dim // heads must be even (rotary pairs)
    window: int = 64  # W: each token attends to itself and the W - 1 tokens before it
    mlp_ratio: int = 4
    dropout: float = 0.0
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self) -> None:
        if isinstance(self.memory, dict):
            self.memory = MemoryConfig(**self.memory)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, the value given and what is allowed."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"model.{msg}")

        for name in ("vocab_size", "dim", "layers", "heads", "window", "mlp_ratio"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name}={v!r}: expected int")
        need(isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool),
             f"dropout={self.dropout!r}: expected float")
        need(self.vocab_size >= 2, f"vocab_size={self.vocab_size}: must be >= 2")
        need(self.dim >= 2, f"dim={self.dim}: must be >= 2")
        need(self.layers >= 1, f"layers={self.layers}: must be >= 1")
        need(self.heads >= 1 and self.dim % self.heads == 0, f"heads={self.heads}: must divide dim={self.dim}")
        need((self.dim // max(self.heads, 1)) % 2 == 0,
             f"heads={self.heads}: dim // heads = {self.dim // max(self.heads, 1)} must be even (rotary positions)")
        # the cached K/V grow with W (lanes x layers x 2 x W x dim floats): 10^6 was an OOM kill, no message
        need(1 <= self.window <= MAX_WINDOW, f"window={self.window}: must be in [1, {MAX_WINDOW}]")
        need(self.mlp_ratio >= 1, f"mlp_ratio={self.mlp_ratio}: must be >= 1")
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout}: must be in [0, 1)")
        if not isinstance(self.memory, MemoryConfig):
            raise TypeError(f"model.memory={type(self.memory).__name__}: expected memory.config.MemoryConfig")
        if self.memory.dim != self.dim:
            raise ValueError(f"memory.dim={self.memory.dim}: must equal model.dim={self.dim} "
                             "(memory reads and writes the controller's hidden states)")

    def to_dict(self) -> dict:
        return asdict(self)


def model_fields(cfg) -> dict:
    """The ModelConfig fields of a run (`model.*`). The LSTM and GRU read no heads (sized to the transformer's
    parameter count, the same for every heads that fits): for them heads that do not fit an even model.dim are
    taken as 1. `agent=lstm model.dim=18` was refused for model.heads=4, which no part of it reads."""
    fields_ = {k: cfg.model[k] for k in cfg.model}
    dim, heads = fields_["dim"], fields_["heads"]
    if (cfg.agent.name in RECURRENT and isinstance(dim, int) and dim >= 2 and dim % 2 == 0 and isinstance(heads, int)
            and heads >= 1 and not (dim % heads == 0 and (dim // heads) % 2 == 0)):
        fields_["heads"] = 1
    return fields_
