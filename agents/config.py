"""Run configuration: Hydra composition of `agents/conf/` + command-line overrides, checked against a typed schema.

We use Hydra's compose API rather than `@hydra.main` so that the working directory never changes, no `outputs/`
folder appears, and every bad override ends in one line that names the key (`ConfigError`), not a traceback.
"""

from __future__ import annotations

import math
import os
import re

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from agents.allocation import (  # noqa: F401  (for run, evaluate)
    ALLOCATION_ERRORS,
    allocation_failure,
    does_not_fit,
)
from agents.cli_args import (
    PATH_MAX,
    check_overrides,
    find_interpolation,
    run_schema,
    shortened,
    text_values_kept,
    unusable_path,
)
from agents.config_messages import (
    SECTIONS,
    OneLineError,
    adds_existing,
    check_env_option,
    env_option_names,
    explain_hydra_error,
    huge_int_key,
    one_line,
    section_as_value,
    type_reason,
)
from agents.model_config import AGENTS, MAX_WINDOW, RECURRENT, ModelConfig, model_fields
from agents.run_schema import RunSchema
from envs.options import SEED_LIMIT
from envs.token_env import MAX_LANES
from memory.config import MAX_THREADS, MemoryConfig

RUN_FILE_ROOM = 160  # bytes below a run folder: checkpoints/ and a temp file's name, an event file's (hostname)

TRAIN_MODES = ("supervised", "reinforce")
ACTING = ("auto", "step", "chunk")  # train.acting (agents/episodes.py)
DEVICES = ("auto", "cpu", "cuda")
VECTOR_KEYWORDS = frozenset({"num_envs", "vectorization_mode", "vector_kwargs", "wrappers"})  # make_vec()'s keywords


class ConfigError(OneLineError):
    """A bad config or override; its message is one line that names the key and the fix."""


def positive_int_setting(name: str, value) -> int:
    """A setting that counts something (`num_samples`, a sweep's `max_t`, a benchmark's `seeds`): an int >= 1;
    True, 2.5 and YAML's .inf are refused in one line naming `name`."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: YAML's .inf
        raise ConfigError(f"{name}={value!r}: must be an integer >= 1") from None
    if number < 1 or isinstance(value, bool) or (isinstance(value, float) and value != number):
        raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
    return number


def compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose `agents/conf/<config_name>.yaml` with Hydra overrides (`key=value`, `env=<id>`, `agent=<name>`)."""
    from agents.config_compose import hydra_compose
    from agents.env_presets import register_presets

    overrides = text_values_kept(overrides)  # runs_root=2026_12_03 is that folder, not 20261203
    parsed = check_overrides(overrides, {group: group_options(group) for group in ("env", "agent")})
    register_presets()  # env=<preset>: its base env's file with the preset's options (agents/env_presets.py)
    try:
        cfg = hydra_compose(overrides, parsed, config_name)
    except Exception as exc:  # Hydra raises several types; all mean "your override is wrong"
        raise ConfigError(explain_hydra_error(exc, RunSchema, lambda: _env_options(overrides))) from None
    added = [o.lstrip("+").split("=", 1)[0] for o in overrides if o.startswith("+") and "=" in o]
    added = [key for key in added if key.startswith("env.kwargs.")  # every option is in the env's file: a typo
             and key.removeprefix("env.kwargs.") not in VECTOR_KEYWORDS]  # (validate's own line for those)
    if added:  # (the env refused it only when made, after torch loaded, in its own words)
        env_id, options = str(cfg.env.id), _option_names(cfg.env)  # (the composed env: no second compose)
        for key in added:
            check_env_option(key, env_id, options)
        # +key= of an option the env's file sets: Hydra merged it (the env's file comes in after the overrides), as
        # a config= file refused it and `+seed=` is refused (the file's keys, without the env.kwargs.* items)
        once = [k for k in added if any(o.startswith(f"+{k}=") for o in overrides)]  # (not ++key=)
        there = compose([o for o in overrides if not o.lstrip("+~").startswith("env.kwargs.")]).env.kwargs if once \
            else {}
        if key := next((k for k in once if k.removeprefix("env.kwargs.") in there), None):
            raise ConfigError(adds_existing(key))
    return cfg


def _env_options(overrides: list[str]) -> tuple[str, list[str]]:
    """The env id and its options (env.kwargs) that `overrides` pick, without their env.kwargs.* items."""
    env = compose([o for o in overrides if not o.lstrip("+~").startswith("env.kwargs.")]).env
    return str(env.id), _option_names(env)


def _option_names(env: DictConfig) -> list[str]:
    """A composed env section's options: its env's keywords (render_mode too), else the keys its file sets."""
    return env_option_names(str(env.id)) or [str(option) for option in env.kwargs]


def select_unresolved(cfg: DictConfig, key: str, **kwargs):
    """`key`'s value, None where it is an interpolation that does not resolve (`agent: {name: ${nope}}` in a file):
    `validate` names that one in one line, where OmegaConf.select raised a traceback."""
    return OmegaConf.select(cfg, key, throw_on_resolution_failure=False, **kwargs)


def holder_of(cfg: DictConfig, key: str) -> tuple[DictConfig | None, str]:
    """The mapping that holds dotted `key` (None where there is none) and the key's last part, resolving nothing:
    `name in holder` then counts a value that is an interpolation which does not resolve (`${nope}`) as there."""
    parent, _, name = key.rpartition(".")
    holder = select_unresolved(cfg, parent) if parent else cfg
    return (holder if isinstance(holder, DictConfig) else None), name


def check_sections(cfg: DictConfig) -> None:
    """Each section there (model, memory, train, env.kwargs) a mapping: `model=3` or `env.kwargs: ${nope}` in a config
    file was OmegaConf's "Merge error: int is not a subclass", or an override's key set inside a broken section."""
    for key in SECTIONS:
        holder, name = holder_of(cfg, key)
        if holder is not None and name in holder and not isinstance(holder._get_node(name), DictConfig):
            raise ConfigError(section_as_value(f"{key}={holder._get_node(name)._value()}", key))


def validate(cfg: DictConfig) -> DictConfig:
    """Merge into the typed schema (types, unknown keys), then check values; returns a resolved DictConfig."""
    check_sections(cfg)
    try:
        merged = OmegaConf.merge(run_schema(), cfg)
        OmegaConf.resolve(merged)
    except InterpolationResolutionError as exc:  # names no key: find the one that does not resolve
        raise ConfigError(_unresolvable(OmegaConf.merge(run_schema(), cfg), exc)) from None
    except OmegaConfBaseException as exc:
        raise ConfigError(one_line(exc, RunSchema)) from None
    except OverflowError:  # an int past float range for a float key: OmegaConf's float() names no key
        raise ConfigError(f"{huge_int_key(OmegaConf.to_container(cfg, resolve=False), RunSchema)}: an "
                          "integer beyond float range; give a finite number") from None
    # read back from config.yaml or a checkpoint, a literal '${' (escaped `\${...}`) would resolve again
    literal = find_interpolation(OmegaConf.to_container(merged, resolve=False))
    if literal:
        raise ConfigError(f"{literal[0]}={literal[1]!r}: a value may not hold a literal '${{' (config.yaml and the "
                          "checkpoint would read it back as an interpolation); choose another")
    m, t = merged.model, merged.train

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    for section in ("model", "train"):  # inf / nan pass the range checks below (inf > 0) and fail mid-run
        for key, value in merged[section].items():
            need(not isinstance(value, float) or math.isfinite(value), f"{section}.{key}={value}: must be a finite "
                 "number")
    need(0 <= merged.seed < SEED_LIMIT, f"seed={merged.seed}: must be in [0, 2^32), as every seed of the envs")
    vector = sorted(VECTOR_KEYWORDS & set(map(str, merged.env.kwargs)))
    need(not vector, f"env.kwargs.{(vector or [''])[0]}: the env's lanes are train.lanes, and the trainer makes the "
         "vector env itself; drop it")  # was make_vec()'s "got multiple values for keyword argument"
    need(merged.runs_root.strip() != "", "runs_root= is empty: name the folder for run folders (default runs)")
    for key in ("runs_root", "run_dir"):  # a name the file system cannot hold was an OSError traceback mid-start
        if isinstance(merged[key], str) and merged[key].startswith("~"):  # a quoted '~/runs' made a folder named ~
            merged[key] = os.path.expanduser(merged[key])
        why = None if merged[key] is None else unusable_path(str(merged[key]))
        need(why is None, f"{key}={shortened(str(merged[key]))}: {why}; choose another")
        if merged[key] is not None:  # its files' paths must fit too: checkpoints/.last.pt.<tag>-<pid>.<x>.tmp, the
            # event files (hostname inside), and under runs_root the generated <env>/<agent>/<time>-<n>_s<seed>
            full = len(os.fsencode(os.path.abspath(str(merged[key])))) + RUN_FILE_ROOM + (
                len(f"/{merged.env.id}/{merged.agent.name}/{'T' * len('YYYY-mm-dd_HH-MM-SS-999')}_s{merged.seed}")
                if key == "runs_root" else 0)
            need(full <= PATH_MAX, f"{key}={shortened(str(merged[key]))}: too long for the run's files in it (their "
                 f"paths would pass the {PATH_MAX} bytes a path may have); choose a shorter one")
    check_utf8_texts({key: merged[key] for key in ("runs_root", "run_dir")})
    need(merged.run_dir is None or str(merged.run_dir).strip() != "", "run_dir= is empty: name the folder to write "
         "the run into, or leave run_dir out (a new folder under runs_root)")
    need(merged.agent.name in AGENTS, f"agent.name={merged.agent.name!r}: choose one of {AGENTS}")
    need(merged.device in DEVICES, f"device={merged.device!r}: choose one of {DEVICES}")
    mem = memory_config(merged)  # MemoryConfig.validate names the memory.* key
    try:  # ModelConfig.validate is the one list of model.* rules (the env's vocab_size is checked with the env)
        ModelConfig(vocab_size=2, memory=mem, **model_fields(merged))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    need(t.mode in TRAIN_MODES, f"train.mode={t.mode!r}: choose one of {TRAIN_MODES}")
    need(t.acting in ACTING, f"train.acting={t.acting!r}: choose one of {ACTING}")
    need(t.episodes is None or t.episodes >= 0, f"train.episodes={t.episodes}: must be >= 0")
    need(1 <= t.lanes <= MAX_LANES, f"train.lanes={t.lanes}: must be in [1, {MAX_LANES}]")
    # lane i is seeded seed + i: each below 2^32 too (the env refused the last lanes' at the run's first reset)
    need(merged.seed + t.lanes <= SEED_LIMIT, f"seed={merged.seed}: the {t.lanes} lanes are seeded {merged.seed} .. "
         f"{merged.seed + t.lanes - 1}, past 2^32 - 1; use seed <= {SEED_LIMIT - t.lanes}")
    limit, name = (MAX_WINDOW, MAX_WINDOW) if merged.agent.name in RECURRENT else (m.window, f"model.window={m.window}")
    need(1 <= t.chunk <= limit, f"train.chunk={t.chunk}: must be in [1, {name}]")  # (the LSTM and GRU: no window)
    need(t.lr > 0, f"train.lr={t.lr}: must be > 0")
    need(t.eval_every >= 1, f"train.eval_every={t.eval_every}: must be >= 1")
    need(t.eval_repeats >= 1, f"train.eval_repeats={t.eval_repeats}: must be >= 1")
    need(t.checkpoint_every >= 1, f"train.checkpoint_every={t.checkpoint_every}: must be >= 1")
    for key in ("grad_clip", "weight_decay", "entropy_coef"):
        need(t[key] >= 0, f"train.{key}={t[key]}: must be >= 0")
    need(0.0 <= t.baseline_decay < 1.0, f"train.baseline_decay={t.baseline_decay}: must be in [0, 1)")
    need(0 <= t.threads <= MAX_THREADS, f"train.threads={t.threads}: must be in [0, {MAX_THREADS}] (0: torch's "
         "default)")
    if merged.agent.name == "memnet" and mem.store:  # a chunk call adds its memories to the store in one go
        per_call = t.chunk * (t.lanes if mem.store_scope == "shared" else 1)
        need(mem.store_capacity >= per_call, f"memory.store_capacity={mem.store_capacity}: a chunk call writes up "
             f"to {per_call} memories into one {mem.store_scope} store partition at once (train.chunk={t.chunk}"
             + (f" x train.lanes={t.lanes}" if mem.store_scope == "shared" else "")
             + "); raise memory.store_capacity or lower train.chunk")
    return merged


def _unresolvable(cfg: DictConfig | ListConfig, exc: Exception, prefix: str = "") -> str:
    """The one line for an interpolation (`seed=${nope}`, `env.kwargs.distances=[1,${nope}]`) that does not resolve:
    the first key that fails, its text, OmegaConf's reason."""
    in_list = isinstance(cfg, ListConfig)
    for key in range(len(cfg)) if in_list else cfg:
        name = f"{prefix}[{key}]" if in_list else f"{prefix}.{key}" if prefix else str(key)
        if OmegaConf.is_interpolation(cfg, key):
            try:
                cfg[key]
            except OmegaConfBaseException as why:  # OmegaConf's "While dereferencing interpolation '${..}': " dropped
                reason = re.sub(r"^While dereferencing interpolation '.*?': ", "", str(why).splitlines()[0])
                typed = type_reason(name, reason, RunSchema)  # resolved to a value of the wrong type
                return f"{name}={cfg._get_node(key)._value()}: {typed or reason}"
        elif isinstance(cfg._get_node(key), (DictConfig, ListConfig)):
            found = _unresolvable(cfg[key], exc, name)
            if found:
                return found
    return str(exc).splitlines()[0] if prefix == "" else ""


def utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8: an argument's undecodable bytes reach Python as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_utf8_texts(texts: dict) -> None:
    """One ConfigError line for a `{key: text}` that is not UTF-8 (a run's folders, and its env options: agents.run
    and agents.tune; agents.evaluate writes JSON, which takes them): TensorBoard's writer raised UnicodeEncodeError
    on them after the run had made its folder (its hparams, for env.kwargs.*_path, after training)."""
    for key, text in texts.items():
        if isinstance(text, str) and not utf8(text):
            raise ConfigError(f"{key}={shortened(text)!r}: not UTF-8 text (bytes the locale does not decode); "
                              "TensorBoard's writer and Ray take UTF-8 names only: choose one")


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
    if cfg.agent.name != "memnet":  # a baseline builds no memory part (agents.models.build_model, memory_free) and
        # its memory.* change nothing (a note says so): `agent=lstm memory.slots=64 model.dim=18` was refused for
        # memory.read_heads=4, which no part of it reads
        fields_.update(slots=0, store=False, internal="none")
    if fields_["dim"] != cfg.model.dim:
        raise ConfigError(f"memory.dim={fields_['dim']} must equal model.dim={cfg.model.dim}; set model.dim only")
    try:
        return MemoryConfig(**fields_)
    except ValueError as exc:  # memory.dim is model.dim (checked above): name the key one sets, not "memory.dim=-4:
        msg = str(exc)  # must be >= 1" or "memory.read_heads=4: must ... divide dim=6" (keys the line never gave)
        if msg.startswith("memory.dim="):
            raise ConfigError(f"model.{msg[len('memory.'):]}") from None
        raise ConfigError(re.sub(r"(?<![\w.])dim=", "model.dim=", msg)) from None


def load_config(overrides: list[str]) -> DictConfig:
    """Compose + validate: the one entry point for every CLI (run, evaluate, tune, benchmark)."""
    return validate(compose(overrides))


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def group_options(group: str) -> list[str]:
    """The config files of a group (`env`, `agent`, `sweep`) shipped in agents/conf/; for `env` the registered
    presets too (agents/env_presets.py)."""
    from importlib.resources import files

    from agents.env_presets import preset_bases

    names = [p.name[:-5] for p in (files("agents.conf") / group).iterdir() if p.name.endswith(".yaml")]
    return sorted(names + (list(preset_bases()) if group == "env" else []))


def flatten_config(d: dict, prefix: str = "") -> dict:
    """{dotted key: value}; env.kwargs stays one value (the env's options, as one key of the schema)."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "kwargs":
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
