"""Hydra's compose of `agents/conf/`, done once per choice of config files in a process.

A Hydra compose builds its search path, its defaults tree and the merge of the chosen files anew at every call:
~0.1-0.2 s on the 2-core machine, the cost of every `load_config`. A sweep, the benchmark's plan, `--help` and the
tests compose hundreds of times with the same env and agent and other keys. So the overrides that choose files
(`env=`, `agent=`, `+sweep=`, a package, Hydra's own groups) are composed by Hydra and the result is kept; the
`key=value` overrides are then applied to a copy of it by Hydra's own code for that step, in their order, as its
compose does after the merge (`ConfigLoaderImpl._apply_overrides_to_config`; tests/test_config_compose.py checks
that both ways give the same config and the same errors). A copy costs ~4 ms. An edited config file is read
again (`files_stamp`).
"""

from __future__ import annotations

import copy
from functools import cache, lru_cache
from pathlib import Path

from omegaconf import DictConfig


def conf_folder() -> Path:
    """agents/conf/, where the config files are."""
    import agents.conf

    return Path(agents.conf.__file__).parent


@cache
def config_groups() -> frozenset[str]:
    """The config groups shipped in agents/conf/ (its folders: env, agent, sweep, benchmark)."""
    return frozenset(p.name for p in conf_folder().iterdir() if p.is_dir() and not p.name.startswith("_"))


def chooses_files(override) -> bool:
    """Whether a parsed override (Hydra's `Override`) takes part in choosing the config files, which only a whole
    compose does: a group (`env=`, `~agent`, `+sweep=`), a package (`env@x=`), Hydra's own (`hydra/...`,
    `hydra.*`). Anything else sets a key of the composed config."""
    key = override.key_or_group
    return override.package is not None or key in config_groups() or key.startswith("hydra") or "/" in key


def files_stamp() -> tuple:
    """Every config file under agents/conf/ with its size and modification time: a file edited, added or removed
    while a process runs (a notebook, a sweep's driver) makes the next compose read the files again."""
    root = conf_folder()
    return tuple(sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size)
                        for p in root.rglob("*.yaml")))


@lru_cache(maxsize=32)
def _files_composed(config_name: str, choices: tuple[str, ...], stamp: tuple = ()) -> DictConfig:
    """Hydra's compose of `config_name` with the file-choosing overrides `choices` (kept: never handed out);
    `stamp`: `files_stamp()`, part of the cache's key."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="agents.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=list(choices))


def override_step():
    """Hydra's step that applies key=value overrides to a composed config, or None in a Hydra without it."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:
        return None
    return getattr(ConfigLoaderImpl, "_apply_overrides_to_config", None)


def hydra_compose(overrides: list[str], parsed: list, config_name: str = "config") -> DictConfig:
    """What `hydra.compose(config_name, overrides)` returns, Hydra's exceptions included. `parsed`: the overrides
    as Hydra's parser reads them, one per item (`cli_args.check_overrides`)."""
    apply = override_step()
    if apply is None:  # a Hydra without that step (it is not public API): its whole compose, every time
        return _files_composed.__wrapped__(config_name, tuple(overrides))
    choices = tuple(item for item, override in zip(overrides, parsed, strict=True) if chooses_files(override))
    cfg = copy.deepcopy(_files_composed(config_name, choices, files_stamp()))
    apply([o for o in parsed if not chooses_files(o)], cfg)
    return cfg
