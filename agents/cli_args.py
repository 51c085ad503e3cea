"""Command-line helpers: argparse types for the benchmark scripts (benchmarks/*.py: a bad number is argparse's
usage line at once, not a traceback or a table of zeros later), and the checks of `key=value` overrides before Hydra
composes them."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Mapping, Sequence

from omegaconf import OmegaConf

from agents.allocation import ALLOCATION_ERRORS, allocation_failure, allocation_reason
from agents.config_messages import SECTIONS, error_line, section_as_value, unknown_key
from agents.run_schema import RunSchema


def counted(n: int, noun: str) -> str:
    """`n` and the noun, plural unless n is 1: "1 run", "2 runs" (was "1 runs")."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def thread_count(text: str) -> int:
    """A script's --threads: 1 .. MAX_THREADS (torch.set_num_threads(100000) is a segmentation fault, no line)."""
    from memory.config import MAX_THREADS

    return _number(text, int, lambda v: 1 <= v <= MAX_THREADS, f"an integer in [1, {MAX_THREADS}]")


def lane_count(text: str) -> int:
    """A script's --lanes: 1 .. MAX_LANES, the vector env's limit (train.lanes's too), so a measuring process that
    would refuse it is never started."""
    from envs.token_env import MAX_LANES

    return _number(text, int, lambda v: 1 <= v <= MAX_LANES, f"an integer in [1, {MAX_LANES:,}] (the vector env's "
                   "limit)")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


MAX_TIMED_S = 600.0  # one timed run of a script: 10 min (benchmarks/envs.py --seconds 1e9 started 18 runs of 32 years)


def timed_seconds(text: str) -> float:
    """A script's --seconds, the length of one timed run: > 0 and at most MAX_TIMED_S."""
    return _number(text, float, lambda v: 0 < v <= MAX_TIMED_S, f"a number of seconds > 0 and <= {MAX_TIMED_S:g}")


def _number(text: str, kind, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
    return value


def check_overrides(overrides: list[str], groups: dict[str, list[str]], saved: bool = False) -> list:
    """Refuse, in one ConfigError line that names the override and the fix, what Hydra's compose would take without
    meaning it (a deleted key falls back to the schema's default, not the env's or agent's; `hydra.*` is never read;
    `env.id=` / `agent.name=` keep the other env's or agent's settings) or refuse in words that name no fix (syntax,
    sweeps). `groups`: the config files of `env` and `agent`; `saved`: the overrides go on top of a saved config
    (config=), which is one env's and one agent's: env=, agent=, env.id=, agent.name= are refused. Returns the
    parsed overrides (Hydra's Override objects), one per item."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from agents.config import ConfigError

    parser, parsed = OverridesParser.create(), []
    for item in overrides:
        try:
            (override,) = parser.parse_overrides([item])
            key, why = override.key_or_group, None
        except HydraException as exc:
            key, why = "", hydra_reason(exc)
        except ValueError as exc:  # Python's int() of a number over 4,300 digits (Hydra converts it): a traceback
            raise ConfigError(f"{shortened(item.split('=', 1)[0])}: {str(exc).split(';')[0].lower()}: no key takes "
                              "a number that long; give a smaller one") from None
        if not key and not item.isprintable() and (why := unusable_path(item)):  # an unquoted newline: the character
            raise ConfigError(f"{shortened(item)}: {why}; choose another")  # is at fault, quoting it fixes nothing
        if not key:
            raise ConfigError(f"{item!r} is not a key=value override{f' ({why})' if why else ''}; write key=value "
                              "(e.g. seed=3) and quote a value with spaces, '=', '~' or non-ASCII letters: "
                              "key='a=b'")
        if override.is_delete():
            raise ConfigError(f"{item}: a key cannot be deleted (~key): every key has a value; set it with key=value "
                              "(`python -m agents.run --help` lists the keys and their defaults)")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(f"{item}: Hydra's own settings (hydra.*) are not used here (no outputs/ folder, no "
                              "change of working folder); choose where runs go with runs_root= or run_dir=")
        if override.is_sweep_override():
            raise ConfigError(f"{item}: one value per key (a comma list, range() or choice() is a sweep: python -m "
                              "agents.tune sweep.search_space.<key>=grid:[a,b]); write a list as [a,b] or quote a "
                              "text: key='a,b'")
        if key in SECTIONS:  # `memory={}` replaced the section (its keys then came from the schema), `env.kwargs=3`
            raise ConfigError(section_as_value(item, key))
        group = key.split(".")[0]
        if saved and key in ("env", "agent", "env.id", "agent.name"):
            raise ConfigError(f"{item}: config= keeps the saved run's env and agent; to switch the {group}, start "
                              f"from {group}=<name> key=value ... instead (without config=)")
        if key in ("env.id", "agent.name"):
            raise ConfigError(f"{item}: choose the {group} with {group}=<name> ({', '.join(groups[group])}): its "
                              f"config file sets the {group}'s other settings with it")
        if override.package is not None and key not in groups:  # `a@b=`: Hydra's package syntax (config groups)
            raise ConfigError(unknown_key(override_key(item), RunSchema))
        if key in groups and (override.is_add() or override.is_force_add()):  # Hydra: "Multiple values for agent.
            # To override a value use 'override agent: gru'", the syntax of a defaults list no one writes here
            raise ConfigError(f"{item}: {key} is a config group, there already: choose it with {key}=<name> (without "
                              f"'+'): {', '.join(groups[key])}")
        if key in groups and override.package is None and override.value() not in groups[key]:
            raise ConfigError(f"unknown {key} {override.value()!r}; choose one of: {', '.join(groups[key])}")
        check_value_kind(item, key, override.value())
        parsed.append(override)
    return parsed


def check_value_kind(item: str, key: str, value) -> None:
    """A boolean key given a number (train.amp=2 ran as true: OmegaConf takes any int), or a key of one value given
    a list or a mapping (run_dir=[a,b]: "Cannot convert 'ListConfig' to string"): one ConfigError line."""
    from omegaconf.nodes import BooleanNode, ValueNode

    from agents.config import ConfigError

    node = run_schema()
    for part in key.split("."):
        node = node._get_node(part) if OmegaConf.is_dict(node) and part in node else None
        if node is None:  # not a key of the schema (env.kwargs.*, or unknown: refused when composed)
            return
    if isinstance(node, BooleanNode) and isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(f"{key}: {item.split('=', 1)[1]} is not a boolean; give one, e.g. {key}=false")
    if isinstance(node, ValueNode) and isinstance(value, (list, dict)):
        raise ConfigError(f"{key}: {item.split('=', 1)[1]} is a {type(value).__name__}, and {key} takes one value; "
                          f"give one (`python -m agents.run --help` shows each key's default)")


def unquoted(value: str) -> str:
    """A path value read as the Hydra-parsed keys read theirs: without one pair of enclosing quotes. `runs_root=~/runs`
    is refused by Hydra's grammar, which asks for `runs_root='~/runs'`; the same quotes on a path read as it is given
    (resume=, config=, agents.evaluate's checkpoint= and out=, agents.tune's resume=, agents.benchmark's out= and
    suite=) stayed in the name: `out='/tmp/e.json'` wrote `<run>/'/tmp/e.json'`, a folder named `'` in the run."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def text_values_kept(overrides: list[str]) -> list[str]:
    """`overrides` with the value of a text key (a path: runs_root=, run_dir=, env.kwargs.*_path=; any key the schema
    types as text) quoted where Hydra's grammar reads it as a number or a boolean, so the key gets the text as given:
    `runs_root=2026_12_03` wrote the runs under `20261203/`, `run_dir=1e-3` into `0.001/`, `runs_root=true` into
    `True/`. Items that do not parse are left for `check_overrides` to refuse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.nodes import StringNode

    parser, kept = OverridesParser.create(), []
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            (override,) = parser.parse_overrides([item])
            value = override.value()
        except (HydraException, ValueError):  # check_overrides says what is wrong with it, in one line
            kept.append(item)
            continue
        name, node = override.key_or_group, run_schema()
        for part in name.split("."):
            node = node._get_node(part) if OmegaConf.is_dict(node) and part in node else None
            if node is None:
                break
        text_key = isinstance(node, StringNode) or name.startswith("env.kwargs.") and name.endswith("_path")
        parsed_number = isinstance(value, (bool, int, float)) and not override.is_sweep_override()
        kept.append(f"{key}='{text.strip()}'" if text_key and parsed_number and "'" not in text else item)
    return kept


def override_key(item: str) -> str:
    """The config key of an override: `+env.kwargs.delay=3` and `env.kwargs.delay=5` set the same key."""
    return item.split("=", 1)[0].lstrip("+~")


def check_given_once(keys: list[str], items: list[str], hint=lambda key: "") -> None:
    """Each key once (keys[i] is the key of items[i]); `hint(key)` adds an entry point's own fix. A second `key=`
    used to be dropped silently (evaluate's checkpoint=, out=) or to win silently (agents.run's train.lanes=)."""
    from agents.config import ConfigError

    for key in dict.fromkeys(keys):
        if keys.count(key) > 1:
            values = ", ".join(repr(i.partition("=")[2]) for k, i in zip(keys, items, strict=True) if k == key)
            raise ConfigError(f"{key}= is given {keys.count(key)} times ({values}); give it once{hint(key)}")


def check_values_once(where: str, values: Sequence, fix: str = "") -> None:
    """Each value of a list once (`where`: the key=value or field that gave them; `fix`: the entry point's note): a
    value given twice ran the same evaluation, run or probe twice. 1 and 1.0 are one value here; True is not 1."""
    from agents.config import ConfigError

    hashed, other = set(), []  # a sweep's range() may give 10,000 values: a set, where they hash
    for value in values:
        kind = float if type(value) in (int, float) else type(value)  # a float key holds 1 as 1.0 (and they hash alike)
        try:
            twice = (kind, value) in hashed
            hashed.add((kind, value))
        except TypeError:  # a list value ([1,2]): compared one by one
            twice = any(type(value) is type(seen) and value == seen for seen in other)
            other.append(value)
        if twice:
            raise ConfigError(f"{where}: {value!r} is given twice; give each value once{fix}")


def hydra_reason(exc: BaseException) -> str | None:
    """What Hydra's override grammar found wrong, in one line without ANTLR's noise (the "Error parsing" header, the
    link, the lexer's class name, the caret line, the list of every token it expected); None if nothing is left."""
    why = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(
        ("Error parsing", "See https", "LexerNoViableAlt", "^"))]
    return why[0].split(" expecting {")[0] if why else None


def find_interpolation(value, key: str = "") -> tuple[str, str] | None:
    """The first (key, text) in `value` whose text holds '${', walking mappings (`key.k`) and lists (`key[i]`)
    (OmegaConf's too: a DictConfig's values are resolved as read); None if there is none."""
    if isinstance(value, Mapping):
        items = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        return (key, value) if isinstance(value, str) and "${" in value else None
    return next(filter(None, (find_interpolation(v, k) for k, v in items)), None)


def measured_or_usage(parser: argparse.ArgumentParser, measure, lower: str, what: str = ""):
    """`measure()` of a benchmark script (benchmarks/*.py); sizes past this machine's memory are the parser's usage
    line (exit 2) naming the flags to `lower`, not numpy's or torch's traceback. `what`: the section measured."""
    try:
        return measure()
    except ALLOCATION_ERRORS as exc:
        if not allocation_failure(exc):  # any other error is a bug: keep its traceback
            raise
        parser.error(f"{what}does not fit in memory ({allocation_reason(exc)}); lower {lower}")


NAME_MAX, PATH_MAX = 255, 4095  # bytes in one file name and in a whole path (Linux's limits; macOS has these too)


def unusable_path(path: str) -> str | None:
    """Why `path` cannot be used (over the file system's limits, or a newline or other unprintable character: a legal
    name, but paths are echoed in one-line messages and commands to copy, e.g. resume=), or None. A lone surrogate
    (undecodable bytes) is left to the UTF-8 check, which says so."""
    if odd := next((c for c in path if not c.isprintable() and not "\ud800" <= c <= "\udfff"), None):
        return f"it holds the character {odd!r}, which no one-line message or printed command can show"
    longest = max((len(os.fsencode(part)) for part in path.split(os.sep)), default=0)
    if longest > NAME_MAX:
        return f"a name in it is {longest} bytes, over the {NAME_MAX} a file name may have"
    if len(os.fsencode(path)) > PATH_MAX:
        return f"it is {len(os.fsencode(path))} bytes, over the {PATH_MAX} a path may have"
    try:  # a symlink loop on the way: Path.resolve() raised RuntimeError (a traceback) before Python 3.13
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link in it leads round in a loop"
    return None


def shortened(text: str, keep: int = 60) -> str:
    """`text` for a one-line message: its first `keep` characters and "..." when it is longer."""
    return text if len(text) <= keep else text[:keep] + "..."


def answer_early(make, argv: list[str], made: dict) -> int | None:
    """While a command starts, before its slow imports (agents.run, agents.tune, agents.evaluate): `make(argv)`, the
    checks of its command line (no torch), kept in `made` for main(), which takes it rather than making it again
    (a config= file is read once, a note printed once); a ConfigError (or CheckpointError: evaluate's checkpoint=
    names none) is main()'s own `error:` line and exit 2."""
    from agents.checkpoint_paths import CheckpointError
    from agents.config import ConfigError

    try:
        made[tuple(argv)] = make(argv)
    except (ConfigError, CheckpointError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    return None


@functools.lru_cache(maxsize=1)
def run_schema():
    """The run config's typed schema, made once (~20 ms each), read only: `check_value_kind` reads a node per
    override, `config.validate` merges each config into it (OmegaConf.merge copies its first config)."""
    return OmegaConf.structured(RunSchema)
