"""Benchmark suite files (`agents/conf/benchmark/<name>.yaml`): their schema and loading, checked in one line.

A suite holds every budget of a benchmark, so it can be retuned without code changes:
    description, seeds (the default of seeds=), timeout_s (per run, probes included; null: none)
    overrides   run-config overrides for every run
    envs        {env id: {overrides: [...], probes: {variants: [...], vary: {env option: [values]}}}}
    variants    {name: {agent: memnet|transformer|lstm|gru, overrides: [...]}}
    targets     {chance_margin: "at chance" means mean accuracy <= chance + this}
`probes` re-evaluate the named variants' final checkpoints with one env option changed at a time
(`python -m agents.evaluate ... env.kwargs.<option>=v1,v2,...`), e.g. NeedleRecall's capacity curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from agents.benchmark_report import DEFAULT_CHANCE_MARGIN
from agents.cli_args import check_values_once, shortened, unusable_path
from agents.config import AGENTS, ConfigError, group_options, positive_int_setting
from agents.unique_yaml import load_yaml

# seeds 10^11 built every run's plan in memory (it grew ~40 MB/s, no line); workers 10^8 started every run at once
LIMITS = {"seeds": 10_000, "workers": 1_024}
MAX_TIMEOUT_S = 10_000_000  # timeout_s: 116 days (a run's timer takes at most threading.TIMEOUT_MAX)


def bounded(key: str, value: int) -> int:
    """`value` of seeds= / workers= at most LIMITS[key], or one ConfigError line."""
    if value > LIMITS[key]:
        raise ConfigError(f"{key}={value}: must be at most {LIMITS[key]:,}")
    return value


@dataclass
class ProbeSpec:
    variants: list[str] = field(default_factory=list)
    vary: dict[str, list[Any]] = field(default_factory=dict)  # env option -> values


@dataclass
class EnvSpec:
    overrides: list[str] = field(default_factory=list)
    probes: ProbeSpec = field(default_factory=ProbeSpec)


@dataclass
class VariantSpec:
    agent: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class TargetSpec:
    chance_margin: float = DEFAULT_CHANCE_MARGIN  # "at chance": mean accuracy <= chance + this


@dataclass
class SuiteSpec:
    """A suite file's schema: OmegaConf checks field names and types against it (as agents/config.py does)."""

    description: str = ""
    seeds: int = 3
    timeout_s: float | None = None
    overrides: list[str] = field(default_factory=list)
    envs: dict[str, EnvSpec] = field(default_factory=dict)
    variants: dict[str, VariantSpec] = field(default_factory=dict)
    targets: TargetSpec = field(default_factory=TargetSpec)


def check_variant_name(variant: str) -> None:
    """A variant's name is a folder of each run (`<out>/<env>/<variant>/s<seed>`) and an item of agents=: '..' wrote
    every env's runs into one folder (the second env's refused as a used run folder), 'a/b' a folder in a folder, ''
    the env's folder itself, and a comma could not be chosen with agents=."""
    if variant in ("", ".", "..") or variant != variant.strip() or any(c in variant for c in '/\\,\0'):
        raise ConfigError(f"variants.{variant!r}: a variant's name is a folder of its runs and an item of agents=; use "
                          "letters, digits, '-', '_' or '.' (e.g. memnet-no-store)")


RUN_ONLY = {"env": "use envs=", "agent": "use agents=", "seed": "use seeds=",  # set per run by the benchmark
            "run_dir": "choose the benchmark's folder with out= (each run writes <out>/<env>/<variant>/s<seed>)",
            "runs_root": "choose the benchmark's folder with out= (each run writes <out>/<env>/<variant>/s<seed>)"}


def suite_overrides(where: str, items: list[str]) -> list[str]:
    if not all(isinstance(o, str) and "=" in o for o in items):  # (a list item: "=" in ['='] held)
        raise ConfigError(f"{where}: overrides are key=value strings; got {items!r}")
    chosen = next((o for o in items if o.lstrip("+~").split("=", 1)[0] in ("env", "agent", "env.id", "agent.name")),
                  None)  # it won over the run's own env= / agent=: another env or agent ran under this row's name
    if chosen is not None:
        raise ConfigError(f"{where}: {chosen}: each run's env and agent come from the suite (an envs: entry, a "
                          "variant's agent:); drop it")
    own = next((o for o in items if o.lstrip("+~").split("=", 1)[0] in (*RUN_ONLY, "resume")), None)
    if own is not None:  # seed=, run_dir=, runs_root= lost to each run's own silently; resume= failed every run
        key = own.lstrip("+~").split("=", 1)[0]
        why = f"{key}= is set per run by the benchmark; drop it and {RUN_ONLY[key]}" if key in RUN_ONLY else \
            "a benchmark starts every run afresh; drop it"
        raise ConfigError(f"{where}: {own}: {why}")
    return [f"++{o.lstrip('+')}" if o.lstrip("+").startswith("env.kwargs.") else o for o in items]  # ++: add or set


def comma_list(key: str, value: str) -> list[str]:
    """envs= / agents=: names separated by commas. An empty item is refused (it was dropped, and `agents=,` then
    meant the whole suite), like an empty list."""
    items = [x.strip() for x in value.split(",")]
    example = {"envs": "envs=NeedleRecall-v0,LongDependency-v0", "agents": "agents=memnet,transformer"}[key]
    if not value.strip():
        raise ConfigError(f"{key}= is empty; name at least one ({example}), or leave {key}= out for all of the "
                          "suite's")
    if not all(items):
        raise ConfigError(f"{key}={value}: item {items.index('') + 1} is empty; separate the names with single "
                          f"commas ({example})")
    check_values_once(f"{key}={value}", items, f" ({example})")  # was taken once, silently
    return items


def load_suite(name: str) -> SuiteSpec:
    """The suite `agents/conf/benchmark/<name>.yaml` (or a path to a yaml), checked; bad input: one line."""
    from importlib.resources import files

    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if why := unusable_path(str(path.absolute())):  # (path.is_file() was an OSError traceback)
            raise ConfigError(f"suite file {shortened(name)!r}: {why}")
        if not path.is_file():
            raise ConfigError(f"suite file {name!r} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
            raise ConfigError(f"suite file {name!r} cannot be read ({why}); a suite is a YAML text file") from None
    elif name in group_options("benchmark"):
        text = (files("agents.conf") / "benchmark" / f"{name}.yaml").read_text()
    else:
        raise ConfigError(f"unknown suite {name!r}; choose one of: {', '.join(group_options('benchmark'))} "
                          "(or a path to a suite .yaml)")
    raw = load_yaml(f"suite {name!r}", text) or {}
    if not isinstance(raw, dict):  # OmegaConf would raise a bare ValueError for it
        known = ", ".join(f.name for f in fields(SuiteSpec))
        raise ConfigError(f"suite {name!r}: the file must be a mapping of fields ({known}); got a {type(raw).__name__}")
    try:
        suite = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SuiteSpec), raw))
    except OmegaConfBaseException as exc:  # a wrong type, or a field the schema lacks: name it and the fields
        schema = getattr(exc, "object_type", None)
        if isinstance(exc, ConfigKeyError) and is_dataclass(schema):
            known = ", ".join(f.name for f in fields(schema))
            raise ConfigError(f"suite {name!r}: {exc.full_key} is not a field (fields: {known})") from None
        raise ConfigError(f"suite {name!r}: {exc.full_key or 'file'}: {str(exc.msg).splitlines()[0]}") from None
    suite.seeds = bounded("seeds", positive_int_setting("seeds", suite.seeds))
    # NaN timed every run out at once; .inf or 1e300 was a thread's OverflowError traceback per run, and no limit
    if suite.timeout_s is not None and not 0 < suite.timeout_s <= MAX_TIMEOUT_S:
        raise ConfigError(f"suite {name!r}: timeout_s={suite.timeout_s}: must be > 0 and at most {MAX_TIMEOUT_S:,} "
                          "seconds, or null for none")
    margin = suite.targets.chance_margin  # NaN judged no baseline at chance, -1 none and 5 every one
    if not 0 <= margin < 1:
        raise ConfigError(f"suite {name!r}: targets.chance_margin={margin}: must be a number in [0, 1) (an accuracy "
                          f"above chance; default {DEFAULT_CHANCE_MARGIN})")
    suite.overrides = suite_overrides("overrides", suite.overrides)
    for env, spec in suite.envs.items():
        spec.overrides = suite_overrides(f"envs.{env}.overrides", spec.overrides)
        if not all(spec.probes.vary.values()):
            raise ConfigError(f"envs.{env}.probes.vary: each env option needs a non-empty list of values")
        if not all(isinstance(v, str) for v in spec.probes.variants):  # OmegaConf lets [[memnet]] into a list[str]
            raise ConfigError(f"envs.{env}.probes.variants: a list of variant names (variants: [memnet]); got "
                              f"{spec.probes.variants}")
        check_values_once(f"envs.{env}.probes.variants", spec.probes.variants)
        for key, values in spec.probes.vary.items():  # [2, 2] evaluated every probed run twice on the same env
            check_values_once(f"envs.{env}.probes.vary.{key}", values, " (each value is one probe)")
        if set(spec.probes.variants) - set(suite.variants):
            raise ConfigError(f"envs.{env}.probes.variants: {sorted(set(spec.probes.variants) - set(suite.variants))}"
                              f" are not variants of the suite ({', '.join(suite.variants)})")
    for variant, spec in suite.variants.items():
        check_variant_name(variant)
        spec.overrides = suite_overrides(f"variants.{variant}.overrides", spec.overrides)
        if spec.agent not in AGENTS:
            raise ConfigError(f"variants.{variant}.agent={spec.agent!r}: choose one of {AGENTS}")
    if not suite.envs or not suite.variants:
        raise ConfigError(f"suite {name!r} needs at least one entry under envs: and under variants:")
    suite.description = suite.description or name
    return suite
