"""Sweep plans for `python -m agents.tune`: sweep files, search spaces, trial configs (its command line is parsed
by `agents/tune_command_line.py`).

Nothing here starts Ray (the unit tests run without it); `agents.tune` turns a `SweepPlan` into a Tune run.

A sweep file `agents/conf/sweep/<name>.yaml` holds:
    search_space   {dotted config key: {kind: args}}; kinds: grid [values], choice [values],
                   uniform [low, high], loguniform [low, high], randint [low, high), lograndint [low, high)
    metric, mode   the metric Tune optimises (null: the env's default, see `default_metric`) and max | min
    num_samples    Tune's num_samples: repeats of the grid, each drawing the random dimensions afresh
    scheduler      {type: asha | fifo, grace_period, reduction_factor, max_t (null: the longest trial's episodes)}
    resources      {cpus: CPUs reserved per trial, gpus: GPUs (0.5: two trials share one; Ray hides the GPUs from
                   a trial that reserves none), threads: torch and FAISS threads inside a trial}
    max_concurrent trials at once (0: as many as the CPUs allow);  max_failures: retries of a crashed trial
    overrides      `key=value` overrides of the run config for every trial (the command line's come after)
    env_overrides  {env id or family (e.g. LongDependency): [key=value, ...]}: added for that env only
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from agents.cli_args import check_value_kind
from agents.config import MAX_THREADS, ConfigError, group_options, positive_int_setting, validate
from agents.config_file import read_override_value
from agents.config_messages import printable, wrong_type
from agents.run_schema import RunSchema
from agents.unique_yaml import load_yaml

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "lograndint")
SCHEDULERS = ("asha", "fifo")
MODES = ("max", "min")
SWEEP_PREFIX = "sweep."  # `sweep.<field>=value` edits the sweep file's fields from the command line
SPACE_PREFIX = "sweep.search_space."  # `sweep.search_space.<key>=<kind>:[args]` (or `=none` to drop the key)


@dataclass
class SweepPlan:
    """Everything a sweep needs; saved as `sweep.yaml` in the sweep folder so `resume=` can rebuild it."""

    name: str
    search_space: dict[str, dict[str, list]]
    metric: str | None = None
    mode: str = "max"
    num_samples: int = 1
    scheduler: dict = field(default_factory=lambda: {"type": "asha", "grace_period": 1, "reduction_factor": 2,
                                                     "max_t": None})
    resources: dict = field(default_factory=lambda: {"cpus": 1, "gpus": 0, "threads": 1})
    max_concurrent: int = 0
    max_failures: int = 1
    overrides: list[str] = field(default_factory=list)  # run-config overrides: sweep file's, then the CLI's
    env_overrides: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def load_sweep(name: str, sweep_overrides: list[str] = (), num_samples: int | None = None) -> SweepPlan:
    """Read `agents/conf/sweep/<name>.yaml`, apply `sweep.*` command-line edits, check every field."""
    from importlib.resources import files

    options = group_options("sweep")
    if name not in options:
        raise ConfigError(f"unknown sweep {name!r}; choose one of: {', '.join(options)} "
                          "(files in agents/conf/sweep/)")
    text = (files("agents.conf") / "sweep" / f"{name}.yaml").read_text()
    raw = load_yaml(f"sweep file {name}.yaml", text) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {name}.yaml must be a mapping of fields; got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    raw.setdefault("search_space", {})
    for arg in sweep_overrides:
        key, value = arg.split("=", 1)
        if key.startswith(SPACE_PREFIX):
            param = key[len(SPACE_PREFIX):]
            raw["search_space"] = {} if raw["search_space"] is None else raw["search_space"]  # null: emptied
            if not isinstance(raw["search_space"], dict):
                raise ConfigError(f"{printable(arg)}: the search space is {raw['search_space']!r}, not a mapping of "
                                  "keys; set its keys one by one (sweep.search_space.<key>=<kind>:[...])")
            if value.strip().lower() in ("none", "null"):
                if param not in (raw["search_space"] or {}):  # a misspelt key would leave the real one swept
                    raise ConfigError(f"{printable(arg)}: {param!r} is not in the search space of sweep {name!r}; "
                                      f"its keys: {', '.join(raw['search_space'] or {}) or '(none)'}")
                raw["search_space"].pop(param)
            else:
                raw["search_space"][param] = parse_space_value(param, value)
            continue
        path = key[len(SWEEP_PREFIX):].split(".")
        target = raw
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{printable(key)}: {part!r} is not a group of fields in sweep {name!r}")
        target[path[-1]] = load_yaml(key, value)  # a sweep file's field, as the file writes it (lists of overrides)
    if num_samples is not None:
        raw["num_samples"] = num_samples
    return make_plan(name, raw)


def parse_space_value(param: str, text: str) -> dict[str, list]:
    """`grid:[16,64]` / `loguniform:[1e-4,1e-1]` (command-line form) -> {"grid": [16, 64]}."""
    kind, sep, args = text.partition(":")
    if not sep or kind not in SPACE_KINDS:
        raise ConfigError(f"sweep.search_space.{param}={text!r}: write <kind>:[values], kind one of "
                          f"{SPACE_KINDS} (e.g. grid:[16,64] or loguniform:[1e-4,1e-1]), or none to drop it")
    values = read_override_value(args, f"sweep.search_space.{param}={text}")
    if not isinstance(values, list):  # `grid:8,16` reads as Hydra's sweep object, `grid:8` as one number
        raise ConfigError(f"sweep.search_space.{param}={text}: write the values in brackets: "
                          f"{kind}:[{args.strip().strip('[]') or '...'}]")
    return {kind: values}


def make_plan(name: str, raw: dict) -> SweepPlan:
    """A SweepPlan from a sweep file's mapping; unknown fields and bad values raise one ConfigError line."""
    known = set(SweepPlan.__dataclass_fields__) - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"sweep {name!r}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
    given = {k: copy.deepcopy(v) for k, v in raw.items() if v is not None or k == "metric"}  # null: default
    plan = SweepPlan(name=name, **{"search_space": {}, **given})
    if not isinstance(plan.search_space, dict) or not plan.search_space:
        raise ConfigError(f"sweep {name!r} has an empty search space; add sweep.search_space.<key>=grid:[...]"
                          " or entries under search_space: in its file")
    plan.search_space = {key: check_space_entry(key, spec) for key, spec in plan.search_space.items()}
    if plan.mode not in MODES:
        raise ConfigError(f"sweep.mode={plan.mode!r}: choose one of {MODES}")
    plan.num_samples = positive_int_setting("num_samples", plan.num_samples)
    plan.scheduler = _group(name, "scheduler", plan.scheduler)
    s = plan.scheduler
    if s["type"] not in SCHEDULERS:
        raise ConfigError(f"sweep.scheduler.type={s['type']!r}: choose one of {SCHEDULERS}")
    s["grace_period"] = positive_int_setting("sweep.scheduler.grace_period", s["grace_period"])
    if s["max_t"] is not None:
        s["max_t"] = positive_int_setting("sweep.scheduler.max_t", s["max_t"])
    if not _number(s["reduction_factor"]) or s["reduction_factor"] <= 1:
        raise ConfigError(f"sweep.scheduler.reduction_factor={s['reduction_factor']!r}: must be a number > 1")
    plan.resources = _group(name, "resources", plan.resources)
    if not _number(plan.resources["cpus"]) or plan.resources["cpus"] <= 0:
        raise ConfigError(f"sweep.resources.cpus={plan.resources['cpus']!r}: must be a number > 0 (CPUs per trial)")
    if not _number(plan.resources["gpus"]) or plan.resources["gpus"] < 0:
        raise ConfigError(f"sweep.resources.gpus={plan.resources['gpus']!r}: must be a number >= 0 (GPUs per trial)")
    plan.resources["threads"] = positive_int_setting("sweep.resources.threads", plan.resources["threads"])
    if plan.resources["threads"] > MAX_THREADS:  # every trial's train.threads, refused in the trial
        raise ConfigError(f"sweep.resources.threads={plan.resources['threads']}: must be <= {MAX_THREADS}")
    if not _number(plan.max_concurrent, int) or plan.max_concurrent < 0:
        raise ConfigError(f"sweep.max_concurrent={plan.max_concurrent!r}: must be an integer >= 0 (0: no limit)")
    if not _number(plan.max_failures, int) or plan.max_failures < -1:
        raise ConfigError(f"sweep.max_failures={plan.max_failures!r}: must be an integer >= -1 "
                          "(-1: retry forever)")
    if not isinstance(plan.overrides, list) or not all(isinstance(o, str) and "=" in o
                                                       for o in plan.overrides):
        raise ConfigError(f"sweep {name!r}: overrides must be a list of key=value strings; "
                          f"got {plan.overrides!r}")
    if not isinstance(plan.env_overrides, dict) or not all(
            isinstance(v, list) and all(isinstance(o, str) and "=" in o for o in v)
            for v in plan.env_overrides.values()):
        raise ConfigError(f"sweep {name!r}: env_overrides must map env ids to lists of key=value strings")
    check_env_override_ids(plan.env_overrides)
    if isinstance(plan.description, (int, float)) and not isinstance(plan.description, bool):
        plan.description = str(plan.description)  # description: 2026 reads as a number
    if not isinstance(plan.description, str):  # a list or mapping was saved in sweep.yaml as the sweep's description
        raise ConfigError(f"sweep.description={plan.description!r}: must be a line of text; quote it: "
                          "sweep.description='...'")
    return plan


def check_env_override_ids(env_overrides: dict) -> None:
    """env_overrides are keyed by a registered env id or its family (the id before the first `-`): any other key
    never matches an env, so its overrides would be dropped without a word."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the memstream ids)

    ids = sorted(k for k, spec in gym.registry.items() if str(spec.entry_point).startswith("envs."))
    families = sorted({i.split("-")[0] for i in ids})
    for key in env_overrides:
        if key not in ids and key not in families:
            raise ConfigError(f"sweep.env_overrides.{key}: unknown env id {key!r}; choose one of: {', '.join(ids)}, "
                              f"or a family: {', '.join(families)}")


def _group(name: str, group: str, given) -> dict:
    """The sub-fields of `scheduler` / `resources` over their defaults: checked by name, since a misspelt one
    would otherwise be carried along while the default silently applies."""
    defaults = getattr(SweepPlan(name, {}), group)
    if not isinstance(given, dict):
        raise ConfigError(f"sweep.{group}={given!r}: must be a group of fields ({', '.join(defaults)}); set "
                          f"one as sweep.{group}.<field>=<value>")
    unknown = sorted(set(map(str, given)) - set(defaults))
    if unknown:
        raise ConfigError(f"sweep.{group}.{unknown[0]}: unknown field; fields of sweep.{group}: {', '.join(defaults)}")
    return defaults | given


def _number(value, kind=(int, float)) -> bool:
    """A finite number of `kind`: YAML's true is an int to Python, and its .nan and .inf are floats."""
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)


def check_space_entry(key: str, spec) -> dict[str, list]:
    """One search-space entry `{kind: args}`, checked: kind known, args a non-empty list, ranges ordered."""
    where = f"sweep.search_space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}={spec!r}: write one {{kind: [args]}} with kind one of {SPACE_KINDS}")
    (kind, args), = spec.items()
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r}; choose one of {SPACE_KINDS}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}.{kind}={args!r}: must be a non-empty list")
    if kind in ("grid", "choice"):
        values = [plain(v) for v in args]
        twice = [v for i, v in enumerate(values) if kind == "grid" and v in values[:i]]  # a choice may repeat one
        if twice:  # a grid value is a trial: listed twice, it ran the same trials twice
            raise ConfigError(f"{where}.grid={values!r}: {twice[0]!r} is listed twice and would run the same trials "
                              "twice; list each value once (sweep.num_samples repeats the grid)")
        if kind == "choice" and len(values) > 1 and all(v == values[0] for v in values):  # choice:[64,64]: a repeat
            # weighs a value against the others; with none it is a slip (64,32 meant?), and the key is fixed
            from agents.tune_overrides import override_value as written  # (it imports this module)
            one = printable(written(values[0]))  # printable: a value's own newline broke the line
            raise ConfigError(f"{where}.choice={values!r}: draws only {values[0]!r} (a repeated value is drawn more "
                              "often than the others, and there are none); list the other values, or fix the key: "
                              f"grid:[{one}] or {key}={one} on the command line")
        return {kind: values}
    if len(args) != 2:
        raise ConfigError(f"{where}.{kind}={args!r}: must be [low, high]")
    ints = kind in ("randint", "lograndint")
    try:  # YAML 1.1 reads 1e-4 (no dot) as a string
        low, high = (float(a) if isinstance(a, str) and not ints else a for a in args)
    except ValueError:
        low = high = None
    if not all(_number(v, int if ints else (int, float)) for v in (low, high)):  # randint:[1.5, 4] drew from 1
        raise ConfigError(f"{where}.{kind}={args!r}: low and high must be finite "
                          f"{'integers' if ints else 'numbers'}")
    low, high = (v if ints else float(v) for v in (low, high))
    if not low < high:
        raise ConfigError(f"{where}.{kind}=[{low}, {high}]: low must be < high")
    if kind in ("loguniform", "lograndint") and low <= 0:
        raise ConfigError(f"{where}.{kind}=[{low}, {high}]: a log range needs low > 0")
    return {kind: [low, high]}


def build_param_space(search_space: dict[str, dict[str, list]]) -> dict:
    """Checked search-space entries -> Tune's param_space {dotted key: grid_search(...) | Domain}."""
    from ray import tune

    makers = {"grid": tune.grid_search, "choice": tune.choice, "uniform": tune.uniform,
              "loguniform": tune.loguniform, "randint": tune.randint, "lograndint": tune.lograndint}
    space = {}
    for key, spec in search_space.items():
        (kind, args), = check_space_entry(key, spec).items()
        space[key] = makers[kind](args) if kind in ("grid", "choice") else makers[kind](*args)
    return space


def plain(value):
    """numpy scalars (Tune samples them) -> python, so OmegaConf, YAML and JSON accept them."""
    return value.item() if isinstance(value, np.generic) else value


COMBINATIONS_CHECKED = 256  # swept values checked together up to this many combinations (~18 ms each)


def check_space_keys(plan: SweepPlan, base: DictConfig) -> None:
    """Every swept key names a leaf of the run config, and the values at the ends of each range are valid
    (env options too: the env is built with each, as the benchmark checks its probes, so no trial crashes), alone
    and, up to COMBINATIONS_CHECKED combinations, together (model.dim=grid:[32,24] with model.heads=grid:[2,8]:
    each valid alone, the trial of 24 and 8 failed inside Ray, max_failures times)."""
    from agents.preflight import env_source

    edges = {}  # key -> the values checked alone
    for key, spec in plan.search_space.items():
        if key in ("env.id", "agent.name"):  # the other env's options and budgets
            raise ConfigError(f"sweep.search_space.{key}: the env and agent cannot be swept (a trial would keep the "
                              "other one's settings); run one sweep per env and agent, chosen with env= and agent=")
        if key == "train.progress":  # every trial runs without its bar (agents/tune_trial.py): the same trial twice
            raise ConfigError(f"sweep.search_space.{key}: cannot be swept, every trial runs without its progress bar "
                              "(train.progress=false); drop it")
        if key in ("run_dir", "resume", "runs_root"):  # runs_root: accepted, unread, the same trial twice
            raise ConfigError(f"sweep.search_space.{key}: cannot be swept, each trial writes its own folder under "
                              "the sweep folder; drop it")
        env_option = key.startswith("env.kwargs.")
        missing = OmegaConf.select(base, key, default="<missing>") == "<missing>" and \
            not env_option  # env options are free-form; env_source below checks them
        if missing or isinstance(OmegaConf.select(base, key), DictConfig):
            raise ConfigError(f"sweep.search_space.{key}: {key!r} is not a key of the run config "
                              "(`python -m agents.run --help` lists them)")
        (kind, args), = spec.items()
        if kind in ("grid", "choice"):
            edge_values = args
        else:  # randint's high is exclusive
            edge_values = [args[0], args[1] - 1 if "randint" in kind else args[1]]
        edges[key] = list(edge_values)
        for value in edge_values:
            check_value_kind(f"{key}={value}", key, value)  # 0 / 1 for a boolean ran, but a rerun of it was refused
            cfg = trial_config(base, {key: value})
            if env_option:
                try:
                    env_source(cfg.env.id, OmegaConf.to_container(cfg.env.kwargs, resolve=True))
                except ConfigError as exc:
                    raise ConfigError(f"sweep.search_space.{key}={value!r}: {exc}") from None
    if len(edges) > 1 and math.prod(map(len, edges.values())) <= COMBINATIONS_CHECKED:
        for combo in itertools.product(*edges.values()):
            params = dict(zip(edges, combo, strict=True))
            try:
                trial_config(base, params)
            except ConfigError as exc:
                together = " ".join(f"{k}={v!r}" for k, v in params.items())
                raise ConfigError(f"sweep.search_space: the trial of {together} is no valid run ({exc}); choose "
                                  "values that are valid together") from None


def trial_threads(threads: int) -> dict:
    """What every trial runs with besides its swept values: `sweep.resources.threads` torch and FAISS threads."""
    return {"train.threads": threads, "memory.store_threads": threads}


def trial_config(base: DictConfig, params: dict) -> DictConfig:
    """The run config of one trial: `base` with each swept `{dotted key: value}` set, validated again."""
    cfg = copy.deepcopy(base)
    for key, value in params.items():
        try:
            with open_dict(cfg):  # new keys (env.kwargs.*) may be added; validate() rejects unknown ones
                OmegaConf.update(cfg, key, plain(value), merge=True)
        except Exception as exc:  # OmegaConf validation errors (type of the field)
            reason = str(exc).splitlines()[0]
            raise ConfigError(wrong_type(key, reason, RunSchema) or f"{key}={value!r}: {reason}") from None
    if "model.dim" in params:  # memory.dim is model.dim (agents/conf: ${model.dim}), which `base` holds resolved: a
        cfg.memory.dim = cfg.model.dim  # swept model.dim was "memory.dim=32 must equal model.dim=64; set model.dim
        # only"
    return validate(cfg)
