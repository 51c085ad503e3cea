"""Run configuration: Hydra composition of `agents/conf/` + command-line overrides, checked against a typed schema.

We use Hydra's compose API rather than `@hydra.main` so that the working directory never changes, no `outputs/`
folder appears, and every bad override ends in one line that names the key (`ConfigError`), not a traceback.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from memory.config import MemoryConfig

AGENTS = ("memnet", "transformer", "lstm", "gru")
TRAIN_MODES = ("supervised", "reinforce")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A bad config or override; its message is one line that names the key and the fix."""


# ---- typed schema: OmegaConf checks types and unknown keys against these dataclasses ----
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


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf errors span several lines (message, full_key, object_type): keep what a user needs."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
    msg = next((ln for ln in lines if not ln.startswith(("full_key:", "object_type:", "reference_type"))), "")
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        where = key or msg
        return f"unknown config key {where!r}; run `python -m agents.run --help` to list the keys"
    return f"{key}: {msg}" if key and key not in msg else msg


def compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose `agents/conf/<config_name>.yaml` with Hydra overrides (`key=value`, `env=<id>`, `agent=<name>`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="agents.conf", version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except Exception as exc:  # Hydra raises several types; all mean "your override is wrong"
        raise ConfigError(_explain_hydra_error(exc)) from None
    return cfg


def _explain_hydra_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Could not find 'env/" in text or "Could not find 'agent/" in text:
        group = "env" if "'env/" in text else "agent"
        name = text.split(f"'{group}/", 1)[1].split("'", 1)[0]
        return f"unknown {group} {name!r}; choose one of: {', '.join(group_options(group))}"
    if text.startswith("Error parsing override"):
        return f"{text}: overrides are key=value (e.g. seed=3, memory.slots=64, env=NeedleRecall-v0)"
    if "Could not override" in text or "Key '" in text:
        key = text.split("'")[1] if "'" in text else text
        return f"unknown config key {key!r}; run `python -m agents.run --help` to list the keys"
    return text


def validate(cfg: DictConfig) -> DictConfig:
    """Merge into the typed schema (types, unknown keys), then check values; returns a resolved DictConfig."""
    try:
        schema = OmegaConf.structured(RunSchema)
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc)) from None
    m, t = merged.model, merged.train

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    for section in ("model", "train"):  # inf / nan pass the range checks below (inf > 0) and fail mid-run
        for key, value in merged[section].items():
            need(not isinstance(value, float) or math.isfinite(value), f"{section}.{key}={value}: must be a finite "
                 "number")
    need(0 <= merged.seed < 2**32, f"seed={merged.seed}: must be in [0, 2^32) (numpy and Gymnasium take non-negative "
         "seeds; torch's end at 2^64)")
    need(merged.runs_root.strip() != "", "runs_root= is empty: name the folder for run folders (default runs)")
    need(merged.agent.name in AGENTS, f"agent.name={merged.agent.name!r}: choose one of {AGENTS}")
    need(merged.device in DEVICES, f"device={merged.device!r}: choose one of {DEVICES}")
    from agents.models import ModelConfig

    mem = memory_config(merged)  # MemoryConfig.validate names the memory.* key
    try:  # ModelConfig.validate is the one list of model.* rules (the env's vocab_size is checked with the env)
        ModelConfig(vocab_size=2, memory=mem, **{k: m[k] for k in m})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    need(t.mode in TRAIN_MODES, f"train.mode={t.mode!r}: choose one of {TRAIN_MODES}")
    need(t.episodes is None or t.episodes >= 0, f"train.episodes={t.episodes}: must be >= 0")
    need(t.lanes >= 1, f"train.lanes={t.lanes}: must be >= 1")
    need(1 <= t.chunk <= m.window, f"train.chunk={t.chunk}: must be in [1, model.window={m.window}]")
    need(t.lr > 0, f"train.lr={t.lr}: must be > 0")
    need(t.eval_every >= 1, f"train.eval_every={t.eval_every}: must be >= 1")
    need(t.eval_repeats >= 1, f"train.eval_repeats={t.eval_repeats}: must be >= 1")
    need(t.checkpoint_every >= 1, f"train.checkpoint_every={t.checkpoint_every}: must be >= 1")
    need(t.grad_clip >= 0 and t.weight_decay >= 0 and t.entropy_coef >= 0, "train.grad_clip, train.weight_decay, "
         "train.entropy_coef must be >= 0")
    need(0.0 <= t.baseline_decay < 1.0, f"train.baseline_decay={t.baseline_decay}: must be in [0, 1)")
    need(t.threads >= 0, f"train.threads={t.threads}: must be >= 0")
    if merged.agent.name == "memnet" and mem.store:  # a chunk call adds its memories to the store in one go
        per_call = t.chunk * (t.lanes if mem.store_scope == "shared" else 1)
        need(mem.store_capacity >= per_call, f"memory.store_capacity={mem.store_capacity}: a chunk call writes up "
             f"to {per_call} memories into one {mem.store_scope} store partition at once (train.chunk={t.chunk}"
             + (f" x train.lanes={t.lanes}" if mem.store_scope == "shared" else "")
             + "); raise memory.store_capacity or lower train.chunk")
    return merged


# the allocator's own words for a failed allocation: torch's CPU allocator raises a plain RuntimeError ("...
# DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"), FAISS a RuntimeError with bad_alloc
_ALLOCATION_FAILED = ("can't allocate memory", "Cannot allocate memory", "std::bad_alloc", "out of memory")
# sizes whose byte count overflows before anything is asked for (torch: RuntimeError; numpy: ValueError)
_SIZE_OVERFLOWED = ("Storage size calculation overflowed", "array is too big", "Maximum allowed dimension exceeded")


def allocation_failure(exc: BaseException) -> bool:
    """A failed memory allocation: MemoryError (numpy's too), torch's OutOfMemoryError (CUDA), or a RuntimeError /
    ValueError in the allocator's words. Any other RuntimeError or ValueError is a bug and keeps its traceback."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, (RuntimeError, ValueError)) and any(
        words in str(exc) for words in _ALLOCATION_FAILED + _SIZE_OVERFLOWED)


def does_not_fit(cfg: DictConfig, exc: BaseException, what: str = "the run", fix: str = "lower them") -> str:
    """One line for an allocation failure of `what`: how much was asked (when the error says), the config's sizes
    with their values (the keys to lower) and `fix`."""
    text = str(exc)
    in_bytes = re.search(r"allocate (\d+) bytes", text)  # torch's words; numpy's: "Unable to allocate 2.18 PiB"
    in_units = re.search(r"allocate ([\d.]+ ?[KMGTPE]?i?B)\b", text)
    size = _bytes(int(in_bytes[1])) if in_bytes else in_units[1].replace(". ", " ") if in_units else None
    keys = ["train.lanes", "model.dim", "model.layers", "model.window", "model.mlp_ratio"]
    if cfg.agent.name == "memnet":  # the memory's sizes exist only in MemNet (a store only with memory.store)
        keys += ["memory.slots"] + (["memory.store_capacity", "memory.cache_hot", "memory.cache_warm",
                                     "memory.cache_cold"] if cfg.memory.store else [])
    sizes = ", ".join(f"{k}={OmegaConf.select(cfg, k)}" for k in keys)
    why = (f"an allocation of {size} failed" if size else "sizes beyond what can be allocated"
           if any(words in text for words in _SIZE_OVERFLOWED) else "out of memory")
    return f"{what} does not fit in memory ({why}) with the sizes {sizes}; {fix}"


def _bytes(n: int) -> str:
    """A size in the unit that reads best (37.3 GiB, 364 TiB)."""
    exp, unit = next((e, u) for e, u in ((50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB"), (0, "B"))
                     if n >= 2**e or e == 0)
    return f"{n / 2**exp:.3g} {unit}"


def absolute_path(value):
    """A non-empty path string made absolute (~ expanded); anything else as it is."""
    return os.path.abspath(os.path.expanduser(value)) if isinstance(value, str) and value else value


def absolute_env_paths(cfg: DictConfig) -> dict[str, str]:
    """The env options that name a file (`*_path`, e.g. NeedleRecall's haystack_path) and are relative, made
    absolute from the working folder of this command: the config is saved with the run, and resume=, config=,
    agents.evaluate and Tune's trials read it from other folders, where a relative path names nothing."""
    return {str(option): absolute_path(value) for option, value in cfg.env.kwargs.items()
            if str(option).endswith("_path") and absolute_path(value) != value}


def memory_config(cfg: DictConfig) -> MemoryConfig:
    """The MemoryConfig of a run: `memory.*` with `dim` tied to `model.dim` (one width for the whole agent)."""
    fields_ = OmegaConf.to_container(cfg.memory, resolve=True)
    if fields_["dim"] != cfg.model.dim:
        raise ConfigError(f"memory.dim={fields_['dim']} must equal model.dim={cfg.model.dim}; set model.dim only")
    try:
        return MemoryConfig(**fields_)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_config(overrides: list[str]) -> DictConfig:
    """Compose + validate: the one entry point for every CLI (run, evaluate, tune, benchmark)."""
    return validate(compose(overrides))


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml_file(path: str, overrides: list[str] | None = None) -> DictConfig:
    """A saved `config.yaml` (a run folder's, a sweep's best_config.yaml) with `key=value` overrides on top,
    validated like a fresh config: what `python -m agents.run config=<file>` starts a new run from. The saved
    run_dir and resume are dropped (they name the old run); env= and agent= are refused (the saved config is
    one env's and one agent's, composed; switching them is a fresh command line)."""
    try:
        loaded = OmegaConf.load(path)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"config={path}: no such file; point it at a run's config.yaml or a sweep's "
                          "best_config.yaml") from None
    except Exception as exc:
        raise ConfigError(f"config={path}: not valid YAML ({exc.__class__.__name__}); point it at a run's "
                          "config.yaml or a sweep's best_config.yaml") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config={path}: holds no mapping of keys; point it at a run's config.yaml")
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for key in ("run_dir", "resume"):
        loaded.pop(key, None)
    if isinstance(loaded.get("memory"), DictConfig):
        loaded.memory.pop("dim", None)  # tied to model.dim as in agents/conf (the file holds the resolved number)
    loaded = _over_shipped_defaults(loaded)
    parser = OverridesParser.create()
    for item in overrides or []:
        try:  # Hydra's grammar, as on a fresh command line ("3:0" is a string, [1,2] a list, null None)
            (override,) = parser.parse_overrides([item])
        except HydraException as exc:
            raise ConfigError(f"{item}: {str(exc).splitlines()[0]}; overrides are key=value (e.g. seed=3)") from None
        key = override.key_or_group
        if key in ("env", "agent"):
            raise ConfigError(f"{item}: config= keeps the saved run's env and agent; to switch {key}, start from a "
                              f"command line ({key}=<name> key=value ...), or set its keys ({key}.*) here")
        if override.is_sweep_override() or override.is_delete():
            raise ConfigError(f"{item}: config= takes one key=value per key (no sweeps, no deletions)")
        try:
            OmegaConf.update(loaded, key, override.value(), merge=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(_one_line(exc)) from None
    return validate(loaded)


def override_value(text: str, where: str):
    """A command-line value read by Hydra's override grammar, as `key=value` reads it ("3:0" and "010" are strings,
    [1,2] a list, null None; YAML 1.1 read them as 180, 8); a value it cannot read is one ConfigError line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([f"value={text}"])[0].value()
    except HydraException as exc:
        raise ConfigError(f"{where}: {text!r} is not a value ({str(exc).splitlines()[0]})") from None


def _over_shipped_defaults(loaded: DictConfig) -> DictConfig:
    """A saved (or hand-written) config on top of what agents/conf composes for its env and agent: a key the file
    lacks takes the shipped value for that env and agent (ContinualShift's copy=0.85, MemNet's lr ...), not the
    schema's plain default. The file's env.kwargs replace the shipped ones whole (another env's options would not
    fit a preset id)."""
    env_id, agent = OmegaConf.select(loaded, "env.id"), OmegaConf.select(loaded, "agent.name")
    groups = [f"env={env_id}"] if env_id in group_options("env") else []
    groups += [f"agent={agent}"] if agent in group_options("agent") else []
    base = compose(groups)
    kwargs = OmegaConf.select(loaded, "env.kwargs")
    try:
        merged = OmegaConf.merge(base, loaded)
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc)) from None
    if kwargs is not None or (env_id is not None and env_id not in group_options("env")):
        merged.env.kwargs = kwargs if kwargs is not None else {}
    return merged


def group_options(group: str) -> list[str]:
    """The config files of a group (`env`, `agent`, `sweep`) shipped in agents/conf/."""
    from importlib.resources import files

    return sorted(p.name[:-5] for p in (files("agents.conf") / group).iterdir() if p.name.endswith(".yaml"))


def help_text(overrides: list[str] | None = None) -> str:
    """`--help`: config groups and every key with its value for the given overrides (`env=`, `agent=`, keys, or
    `config=<saved config.yaml>` and keys): the values that run would use."""
    envs, agents = group_options("env"), group_options("agent")
    overrides = list(overrides or [])
    saved = next((o.split("=", 1)[1] for o in overrides if o.startswith("config=")), None)
    cfg = (load_config(overrides) if saved is None
           else from_yaml_file(saved, [o for o in overrides if not o.startswith("config=")]))
    lines = ["usage: python -m agents.run [env=<id>] [agent=<name>] [key=value ...] | resume=<run dir> | "
             "config=<saved config.yaml> [key=value ...]", "",
             f"config groups:\n  env:   {', '.join(envs)}\n  agent: {', '.join(agents)}", "", "keys (defaults):"]
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    lines += [f"  {k}={v}" for k, v in flat.items()]
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "kwargs":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
