"""A saved run config (a run folder's config.yaml, a sweep's best_config.yaml) read back as a run's config, with
`key=value` overrides on top read as a command line reads them (`config=` of agents.run, agents.tune's best
trial)."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agents.cli_args import check_overrides, hydra_reason, shortened, text_values_kept
from agents.config import (
    ConfigError,
    check_sections,
    compose,
    group_options,
    holder_of,
    select_unresolved,
    validate,
)
from agents.config_messages import (
    SECTIONS,
    adds_existing,
    check_env_option,
    env_option_names,
    one_line,
    printable,
    unknown_key,
)
from agents.run_schema import RunSchema


def from_yaml_file(path: str, overrides: list[str] | None = None) -> DictConfig:
    """A saved `config.yaml` (a run folder's, a sweep's best_config.yaml) with `key=value` overrides on top,
    validated like a fresh config: what `python -m agents.run config=<file>` starts a new run from. The saved
    run_dir and resume are dropped (they name the old run); env= and agent= are refused (the saved config is
    one env's and one agent's, composed; switching them, env.id= and agent.name= too, is a fresh command line);
    the overrides get the checks of a fresh command line (check_overrides). `path` may name a run folder: its
    config.yaml (as resume= takes a run folder; `--help config=<run folder>` was "no such file")."""
    path = os.path.expanduser(path) if isinstance(path, str) else path  # config=~/x.yaml (resume= expands it too)
    if os.path.isdir(path):  # (isdir, unlike Path.is_dir, is False for a name too long to look up)
        if not os.path.isfile(os.path.join(path, "config.yaml")):
            raise ConfigError(f"config={path}: a folder without a config.yaml; point it at a run folder, a run's "
                              "config.yaml or a sweep's best_config.yaml")
        path = os.path.join(path, "config.yaml")
    try:
        loaded = OmegaConf.load(path)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"config={path}: no such file; point it at a run folder, a run's config.yaml or a "
                          "sweep's best_config.yaml") from None
    except OSError as exc:  # a name too long for the file system, no permission: was "not valid YAML (OSError)"
        raise ConfigError(f"config={shortened(path, 80)}: cannot be read "
                          f"({exc.strerror or exc}); point it at a run's config.yaml") from None
    except Exception as exc:
        raise ConfigError(f"config={path}: not valid YAML ({exc.__class__.__name__}); point it at a run's "
                          "config.yaml or a sweep's best_config.yaml") from None
    if not isinstance(loaded, DictConfig) or not loaded:  # an empty file loads as {}: it started a default run
        raise ConfigError(f"config={path}: holds no mapping of keys; point it at a run's config.yaml")
    if not set(map(str, loaded)) & set(RunSchema.__dataclass_fields__) or any(  # metrics.json: env: <id>
            k in loaded and not isinstance(loaded._get_node(k), DictConfig) for k in ("env", "agent", *SECTIONS[:3])):
        raise ConfigError(f"config={path}: is no run config (a run's config.yaml has env, agent, model and train "
                          "sections); point it at a run's config.yaml or a sweep's best_config.yaml")
    # as on a fresh command line (runs_root=2026_12_03 as given), and env= / agent= (.name, .id) refused
    parsed = check_overrides(text_values_kept(list(overrides or [])),
                             {group: group_options(group) for group in ("env", "agent")}, saved=True)
    # dropped unread: `pop` resolved the value, and `run_dir: ${nope}` in a file was OmegaConf's traceback
    for holder, key in ((loaded, "run_dir"), (loaded, "resume"), (loaded._get_node("memory"), "dim")):
        if isinstance(holder, DictConfig) and key in holder:  # memory.dim: tied to model.dim as in agents/conf
            del holder[key]
    loaded = _over_shipped_defaults(loaded)
    check_sections(loaded)  # before an override sets a key inside one
    for override in parsed:  # Hydra's grammar, as on a fresh command line ("3:0" is a string, [1,2] a list)
        key, add = override.key_or_group, override.is_add() or override.is_force_add()  # +key=, ++key=: as Hydra
        holder, name = holder_of(loaded, key)  # there unresolved too (`seed: ${nope}` in the file, seed=1 given)
        there = holder is not None and name in holder
        if override.is_add() and there:
            raise ConfigError(adds_existing(key))
        if key.startswith("env.kwargs.") and (not there or add):  # an env's options are its keywords
            env_id = str(select_unresolved(loaded, "env.id"))
            options = env_option_names(env_id)
            check_env_option(key, env_id, options)
            add = add or options is not None  # an option an older config.yaml lacks (was "unknown config key") is set
        elif not there and not add:  # OmegaConf named its first part only ('foo' of foo.bar)
            raise ConfigError(unknown_key(key, RunSchema))
        try:
            OmegaConf.update(loaded, key, override.value(), merge=True, force_add=add)
        except OmegaConfBaseException as exc:
            raise ConfigError(one_line(exc, RunSchema)) from None
    return validate(loaded)


def read_override_value(text: str, where: str):
    """A command-line value read by Hydra's override grammar, as `key=value` reads it ("3:0" and "010" are strings,
    [1,2] a list, null None; YAML 1.1 read them as 180, 8); a value it cannot read is one ConfigError line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([f"value={text}"])[0].value()
    except HydraException as exc:
        why = hydra_reason(exc) or "Hydra's override grammar cannot read it; quote a text"
        raise ConfigError(f"{printable(where)}: {text!r} is not a value ({why})") from None  # (where echoes text)


def _over_shipped_defaults(loaded: DictConfig) -> DictConfig:
    """A saved (or hand-written) config on top of what agents/conf composes for its env and agent: a key the file
    lacks takes the shipped value for that env and agent (ContinualShift's copy=0.85, MemNet's lr ...), not the
    schema's plain default. The file's env.kwargs replace the shipped ones whole (another env's options would not
    fit a preset id)."""
    env_id, agent = select_unresolved(loaded, "env.id"), select_unresolved(loaded, "agent.name")
    groups = [f"env={env_id}"] if env_id in group_options("env") else []
    groups += [f"agent={agent}"] if agent in group_options("agent") else []
    base = compose(groups)
    kwargs = select_unresolved(loaded, "env.kwargs")
    if kwargs is not None:  # replaced whole below: merged into the shipped ones, an option they lack was refused
        del loaded.env["kwargs"]
    try:
        merged = OmegaConf.merge(base, loaded)
    except OmegaConfBaseException as exc:
        raise ConfigError(one_line(exc, RunSchema)) from None
    if kwargs is not None or (env_id is not None and env_id not in group_options("env")):
        merged.env.kwargs = kwargs if kwargs is not None else {}
    return merged
