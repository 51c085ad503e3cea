"""The run config's typed schema: agents/config.py merges each composed config into these dataclasses, so OmegaConf
checks every key's type and refuses keys they do not name. The values a run starts from are agents/conf/'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memory.config import MemoryConfig


@dataclass
class EnvSchema:
    id: str = "ContinualShift-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentSchema:
    name: str = "memnet"


@dataclass
class ModelSchema:
    dim: int = 128
    layers: int = 2
    heads: int = 4
    window: int = 64
    mlp_ratio: int = 4
    dropout: float = 0.0


@dataclass
class TrainSchema:
    mode: str = "supervised"
    episodes: int | None = None
    lanes: int = 16
    chunk: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 10
    eval_repeats: int = 1
    checkpoint_every: int = 20
    entropy_coef: float = 0.01
    baseline_decay: float = 0.99
    amp: bool = False
    acting: str = "auto"
    threads: int = 0
    progress: bool = True


@dataclass
class RunSchema:
    env: EnvSchema = field(default_factory=EnvSchema)
    agent: AgentSchema = field(default_factory=AgentSchema)
    seed: int = 0
    device: str = "auto"
    runs_root: str = "runs"
    run_dir: str | None = None
    resume: str | None = None
    model: ModelSchema = field(default_factory=ModelSchema)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainSchema = field(default_factory=TrainSchema)
