"""The interface every agent implements and `build_model` (the one place agents are made); the model config lives
in agents/model_config.py (plain Python, re-exported here).

The trainer only ever talks to an `AgentModel`:

    state = model.initial_state(B)                        # recurrent state: a flat dict of tensors
    logits, state, aux = model(tokens, state, writes, meta)  # tokens (B, T) long, writes (B, T) bool
    logits, state, aux = model(tokens, state, writes, meta, read_at)  # logits (B, T', V) at positions read_at
    state = model.detach_state(state)                     # truncated BPTT between chunks
    state = model.reset_memory(state, lanes)              # memory.reset=episode|task
    model.memory_state_dict() / model.load_memory_state_dict(d)   # objects outside `state` (store, cache)
    with model.memory_undo() as undo: ...                 # an evaluation: undo() puts those objects back
    model.memory_bytes(state)

`state` holds tensors only, so it can be saved inside one checkpoint dict (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from agents.model_config import AGENTS, ModelConfig
from memory.config import MemoryConfig


class AgentModel(nn.Module, metaclass=abc.ABCMeta):
    """What the trainer calls. Subclasses: MemNet (agents/memnet.py), RecurrentAgent (agents/baselines.py)."""

    cfg: ModelConfig

    @abc.abstractmethod
    def initial_state(self, batch_size: int) -> dict[str, Tensor]:
        """The per-lane recurrent state for `batch_size` lanes: a flat dict of tensors."""

    @abc.abstractmethod
    def forward(self, tokens: Tensor, state: dict, writes: Tensor | None = None,
                meta: dict | None = None, read_at: Tensor | None = None) -> tuple[Tensor, dict, dict]:
        """tokens (B, T) -> (logits (B, T', V), new state, aux). Every position advances the state; logits come only
        at the positions `read_at` (T',) (None = all of them), which are exactly a full call's logits there."""

    @abc.abstractmethod
    def reset_memory(self, state: dict, lanes: Tensor) -> dict:
        """Clear the memory (and recurrent context) of the lanes where `lanes` (B,) is True."""

    def detach_state(self, state: dict) -> dict:
        return {name: t.detach() for name, t in state.items()}

    def check_state(self, state: dict, batch_size: int) -> None:
        """`state` has the entries and shapes this model's `initial_state(batch_size)` makes, or one ValueError line:
        a state of a model with another window, width, head or layer count, memory sizes or parts was used silently
        (wrong logits: a smaller window's buffer was sliced where its columns are not) or failed deep inside."""
        shapes = self.__dict__.setdefault("_state_shapes", {})  # made once per batch size and parameter dtype
        key = (batch_size, next(self.parameters()).dtype)  # (not a module field); .double() changes the dtypes
        if key not in shapes:
            made = self.initial_state(batch_size)
            shapes[key] = ({k: tuple(t.shape) for k, t in made.items()}, {k: t.dtype for k, t in made.items()})
        expected, dtypes = shapes[key]
        if set(state) != set(expected):
            missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            raise ValueError(f"state: {f'lacks {missing}' if missing else ''}{' and ' if missing and extra else ''}"
                             f"{f'has {extra}, which this model does not make' if extra else ''}: a state of another "
                             f"model; make it with this model's initial_state(B)")
        for name, want in expected.items():
            got = tuple(state[name].shape) if isinstance(state[name], Tensor) else None
            if got == want:
                continue
            differ = [i for i, (g, w) in enumerate(zip(got or (), want, strict=False)) if g != w]
            if got is not None and len(got) == len(want) and len(differ) == 1 and want[differ[0]] == batch_size:
                # the lanes differ (a resized batch), not the model
                raise ValueError(f"state: made for {got[differ[0]]} lanes, but tokens have batch size {batch_size}")
            raise ValueError(f"state[{name!r}] is {got if got is not None else type(state[name]).__name__}, this "
                             f"model makes {want}: a state of a model with other sizes; make it with this model's "
                             "initial_state(B)")
        wrong = next((name for name, dtype in dtypes.items() if state[name].dtype != dtype), None)
        if wrong is not None:  # a float64 state failed inside the slot bank, a float clock inside the store's meta
            raise ValueError(f"state[{wrong!r}] is {state[wrong].dtype}, this model makes {dtypes[wrong]}: keep the "
                             "state's dtypes as initial_state(B) makes them (the model's own dtype: model.to(...))")

    def allocate_memory(self, batch_size: int) -> None:
        """Make the long-term memory objects for `batch_size` lanes now rather than at the first forward, so that a
        size that does not fit fails before a run has written anything (no memory objects here)."""

    def memory_state_dict(self, compact: bool = True) -> dict:
        """compact=False: as fast to take and load as can be, for a snapshot kept in memory (an evaluation's),
        rather than as small (a checkpoint's)."""
        return {}

    def load_memory_state_dict(self, d: dict) -> None:
        if d:
            raise ValueError(f"{type(self).__name__} has no memory objects, but the checkpoint holds {sorted(d)}")

    @contextlib.contextmanager
    def memory_undo(self) -> Iterator[Callable[[], None]]:
        """Within: the memory objects may change, and the `undo()` yielded puts them back as they were at entry, as
        often as called; the exit does too, also on an error (an evaluation: every task from the same memory, and
        that memory afterwards). Here by a whole snapshot; MemNet's store and cache undo to a mark instead."""
        saved = self.memory_state_dict(compact=False)

        def undo() -> None:
            self.load_memory_state_dict(saved)
        try:
            yield undo
        finally:
            undo()

    def memory_bytes(self, state: dict) -> int:
        return 0

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that train.weight_decay leaves alone: every 1-d one (biases, norm gains,
        per-head scalars such as the store attention's recency slopes; as in GPT-2
        training); subclasses add parameters that must keep part of their values."""
        return {name for name, p in self.named_parameters() if p.dim() < 2}

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: one group without weight decay (the layout of every checkpoint made so), or the
        decayed parameters and `no_weight_decay()` at 0."""
        if weight_decay == 0:
            return [{"params": list(self.parameters()), "weight_decay": 0.0}]
        keep = self.no_weight_decay()
        named = list(self.named_parameters())
        return [{"params": [p for n, p in named if n not in keep], "weight_decay": weight_decay},
                {"params": [p for n, p in named if n in keep], "weight_decay": 0.0}]

    def learns_without_targets(self) -> bool:
        """Whether the loss has terms of its own (memory regularisers), so a chunk with no scored step still
        trains; when it has none, the runner makes such a chunk's call without autograd."""
        return False

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def check_inputs(tokens: Tensor, writes: Tensor | None, vocab_size: int, state=None) -> Tensor:
    """Validate a forward call's arguments; returns writes as a (B, T) bool tensor (all False when None)."""
    if not isinstance(state, dict):  # None here was an AttributeError deep inside the forward
        raise ValueError(f"state: expected the dict of tensors that initial_state(B) or a previous call returns, got "
                         f"{type(state).__name__}")
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32):
        got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens: expected a (B, T) integer tensor, got {got}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"tokens: ids must lie in [0, {vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")
    if writes is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    if not isinstance(writes, Tensor) or tuple(writes.shape) != tuple(tokens.shape):
        got = tuple(writes.shape) if isinstance(writes, Tensor) else type(writes).__name__
        raise ValueError(f"writes: expected a bool tensor shaped like tokens {tuple(tokens.shape)}, got {got}")
    if writes.dtype != torch.bool:  # a float mask of 0.3 was cast to True: a write at every position
        raise ValueError(f"writes: expected a bool tensor, got {writes.dtype}; pass a mask (e.g. writes > 0)")
    return writes.to(device=tokens.device)


def check_read_at(read_at, T: int, device: torch.device) -> Tensor | None:
    """A forward call's `read_at`: None (every position) or distinct increasing positions in [0, T) -> (T',) long
    tensor on `device`."""
    if read_at is None:
        return None
    at = torch.as_tensor(read_at, device=device)
    if at.dim() == 1 and at.numel() == 0:  # [] reads nowhere (as_tensor makes an empty list float32)
        at = at.long()
    if at.dim() != 1 or at.dtype not in (torch.long, torch.int32) or (
            at.numel() and (int(at.min()) < 0 or int(at.max()) >= T or bool((at[1:] <= at[:-1]).any()))):
        raise ValueError(f"read_at: expected increasing distinct positions in [0, {T}) as a 1-d integer tensor, "
                         f"got {at.tolist() if at.dim() <= 1 else tuple(at.shape)}")
    return at.long()


def check_lanes(lanes, batch_size: int, device: torch.device) -> Tensor:
    """lanes for reset_memory: (B,) bool mask -> (B,) bool tensor on `device`."""
    lanes = torch.as_tensor(lanes, device=device)
    if lanes.dtype != torch.bool or tuple(lanes.shape) != (batch_size,):
        raise ValueError(f"lanes: expected a ({batch_size},) bool mask, got {lanes.dtype} {tuple(lanes.shape)}")
    return lanes


def build_model(agent: str, cfg: ModelConfig) -> AgentModel:
    """agent in memnet | transformer | lstm | gru. `transformer` is MemNet with every memory part off;
    lstm/gru get the hidden size whose parameter count is closest to that transformer's."""
    # Imported here: memnet/baselines import ModelConfig and AgentModel from this module.
    from agents.baselines import RecurrentAgent
    from agents.memnet import MemNet

    if agent not in AGENTS:
        raise ValueError(f"agent={agent!r}: choose one of {AGENTS}")
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model: cfg is a {type(cfg).__name__}; pass an agents.models.ModelConfig")
    if agent == "memnet":
        return MemNet(cfg)
    if agent == "transformer":
        return MemNet(memory_free(cfg))
    return RecurrentAgent(cfg, cell=agent)


def build_agent(cfg, vocab_size: int, device: torch.device) -> tuple[ModelConfig, AgentModel]:
    """A run config's (`cfg`: agents.config.load_config's) model on `device`, its memory allocated for
    train.lanes lanes: sizes that do not fit fail here, as the allocator's error (`agents.config.does_not_fit`)."""
    from agents.config import memory_config
    from agents.model_config import model_fields

    model_cfg = ModelConfig(vocab_size=vocab_size, memory=memory_config(cfg), **model_fields(cfg))
    model = build_model(cfg.agent.name, model_cfg).to(device)
    model.allocate_memory(cfg.train.lanes)
    return model_cfg, model


def memory_free(cfg: ModelConfig) -> ModelConfig:
    """The same model config with the slot bank, internal memory and store switched off."""
    mem = MemoryConfig(**{**cfg.memory.to_dict(), "slots": 0, "store": False, "internal": "none"})
    return ModelConfig(**{**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "memory": mem})
