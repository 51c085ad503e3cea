"""One-line messages for OmegaConf's refusals of a config: an unknown key (with the nearest known one) and a value
of the wrong type (what the key takes, with an example). OmegaConf's own text spans several lines and names its
types (`Value 'abc' of type 'str' could not be converted to Float`)."""

from __future__ import annotations

import dataclasses
import difflib
import re

HELP = "run `python -m agents.run --help` to list the keys"
SECTIONS = ("model", "memory", "train", "env.kwargs")  # mappings of keys: set key by key, never as one value
# OmegaConf's wording for a value its node type refuses -> what that type takes
# (DOTALL: a value holds any character, a newline too; it is shown escaped, with repr)
_CONVERT = re.compile(r"Value '(?P<value>.*?)' (of type '\w+' )?could not be converted to (?P<type>Integer|Float)",
                      re.DOTALL)
_BOOL = re.compile(r"Value '(?P<value>.*?)' is not a valid bool", re.DOTALL)
_NONE = re.compile(r"Incompatible value 'None' for field of type '(?P<type>\w+)'")  # key=null for a typed key
_MERGE = re.compile(r"Cannot merge (?P<given>Dict|List)Config with (?P<kept>Dict|List)Config")  # {} for a list
_TAKES = {"Integer": "a whole number", "Float": "a number"}
_NAMED = {"int": "a whole number", "float": "a number", "bool": "a boolean", "str": "a text"}


def printable(text: str) -> str:
    """`text` with each character Python does not print as itself (a newline, a tab, a terminal's escape, a lone
    surrogate from undecodable bytes) written as repr writes it (`\\n`, `\\x1b`): an argument echoed into a message
    keeps the message on one line, as the house rule wants (`$'env=Continual\\nShift-v0'` printed two lines)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class OneLineError(ValueError):
    """A refusal whose message is one line: an argument echoed into it raw (`seed=` with a newline) is escaped here,
    once for every raise, so `str(exc)` is one line wherever the exception is shown, not only in `error_line`."""

    def __init__(self, message="", *args):
        super().__init__(printable(str(message)), *args)


def error_line(exc) -> str:
    """The `error: ...` line of a refusal (a ConfigError, a CheckpointError) or a failure, on one line: every entry
    point prints its errors with this, so no echoed argument can break the line wherever the message quoted it."""
    return f"error: {printable(str(exc))}"


def schema_keys(schema, prefix: str = "") -> list[str]:
    """Every dotted key of a schema dataclass (nested dataclasses expanded; a dict field is its own key)."""
    keys = []
    for f in dataclasses.fields(schema):
        nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            keys += schema_keys(nested, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def default_of(schema, key: str):
    """The schema's default for a dotted key (None if it has none)."""
    obj = schema()
    for part in key.split("."):
        obj = getattr(obj, part, None)
    return obj


def unknown_key(key: str, schema) -> str:
    """`unknown config key 'train.episode'; did you mean 'train.episodes'? run ...`"""
    near = difflib.get_close_matches(key, schema_keys(schema), n=1, cutoff=0.8)
    guess = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown config key {key!r}; {guess}{HELP}"


def explain_hydra_error(exc: Exception, schema, env_options) -> str:
    """Hydra's first line, with the fix (syntax, unknown env and agent names: `check_overrides`, before Hydra).
    env_options() -> (env id, its option names): for an unknown env.kwargs.* key."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("Error merging override") and exc.__cause__ is not None:  # OmegaConf's reason, with its key
        return one_line(exc.__cause__, schema)  # (`env.kwargs.distances={}` was "Error merging override ...")
    if text.startswith("Could not append to config"):  # +key=value for a key that is there
        return adds_existing(text.split("'")[1])
    if "Could not override" in text or "Key '" in text:
        key = text.split("'")[1] if "'" in text else text
        return (key.startswith("env.kwargs.") and unknown_env_option(key, env_options)) or unknown_key(key, schema)
    return text


def adds_existing(key: str) -> str:
    return f"+{key}= adds a key, and {key} is there already; set it with {key}=<value>"


def env_option_names(env_id: str) -> list[str] | None:
    """The options (env.kwargs) of a registered memstream env: its stream source's keywords, then the env's own
    (render_mode); None for an id that is not one (whoever makes the env says so)."""
    import inspect

    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import envs  # noqa: F401  (registers the ids)
    from envs.token_env import option_names

    try:
        env_cls = load_env_creator(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return None
    source_cls = getattr(env_cls, "source_cls", None)
    if source_cls is None:
        return None
    own = [name for name, p in inspect.signature(env_cls.__init__).parameters.items()
           if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    return option_names(source_cls) + own


def check_env_option(key: str, env_id: str, options: list[str] | None) -> None:
    """`env.kwargs.<name>` one of `options` (None: not known, nothing checked), or `unknown_env_option`'s line as a
    ConfigError: the one check of a command line's, a saved config's and an evaluation's env option names."""
    from agents.config import ConfigError

    if options is not None and key.removeprefix("env.kwargs.") not in options:
        raise ConfigError(unknown_env_option(key, lambda: (env_id, options)))


def unknown_env_option(key: str, env_options) -> str | None:
    """`unknown config key 'env.kwargs.num_task': ContinualShift-v0 has no option 'num_task'; did you mean
    'num_tasks'? its options: ...`. Every option of a shipped env is in its config file, so a key Hydra did not find
    there is a typo. None when the options cannot be listed (another override is wrong too: that one is said)."""
    from agents.config import ConfigError

    try:
        env_id, options = env_options()
    except ConfigError:
        return None
    name = key.removeprefix("env.kwargs.")
    if name in options:  # an option the env's config file does not set (render_mode): it was "has no option
        # 'render_mode'; did you mean 'render_mode'? its options: ..., render_mode"
        return (f"env.kwargs.{name} is an option of {env_id} that its config does not set; add it with "
                f"+env.kwargs.{name}=<value>")
    near = difflib.get_close_matches(name, options, n=1, cutoff=0.75)
    guess = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown config key {key!r}: {env_id} has no option {name!r}; {guess}its options: {', '.join(options)}"


def section_as_value(item: str, key: str) -> str:
    """`model=3: model is a section of keys; set model.<key>=<value> one key at a time (...)` (key in SECTIONS)."""
    return (f"{item}: {key} is a section of keys; set {key}.<key>=<value> one key at a time (`python -m agents.run "
            "--help` lists them)")


def type_reason(key: str, msg: str, schema) -> str | None:
    """Why OmegaConf's `msg` refused `key`'s value, with the fix: "'abc' is not a number; give one, e.g.
    train.lr=0.003" (null too, where the key needs a value), or None when `msg` is another refusal."""
    default = default_of(schema, key)
    default = str(default).lower() if isinstance(default, bool) else default
    if m := _CONVERT.search(msg):
        example = f", e.g. {key}={default}" if isinstance(default, (int, float)) else ""
        value = m["value"].lower() if m["value"] in ("True", "False") else m["value"]  # as typed (Python's spelling
        # was "memory.slots: 'True' is not a whole number" for memory.slots=true)
        return f"{value!r} is not {_TAKES[m['type']]}; give one{example}"
    if m := _BOOL.search(msg):
        return f"{m['value']!r} is not a boolean; give {key}=true or {key}=false"
    if m := _NONE.search(msg):
        return f"null is not {_NAMED.get(m['type'], m['type'])}; give one, e.g. {key}={default}"
    if m := _MERGE.search(msg):
        given, kept = ("a mapping" if m[k] == "Dict" else "a list" for k in ("given", "kept"))
        return f"{given} cannot replace its {kept[2:]}; give {kept} (`python -m agents.run --help` shows its value)"
    return None


def wrong_type(key: str, msg: str, schema) -> str | None:
    """`train.lr: 'abc' is not a number; give one, e.g. train.lr=0.003`, or None (`type_reason`)."""
    reason = type_reason(key, msg, schema)
    return None if reason is None else f"{key}: {reason}"


def one_line(exc: BaseException, schema) -> str:
    """Hydra/OmegaConf errors span several lines (message, full_key, object_type): keep what a user needs."""
    # the message, then its indented fields; split at those, not at every newline: a value's own newline cut the
    # line in two ("train.lr: Value 'ab" for train.lr='ab<newline>c', its reason and fix lost)
    msg, *fields = re.split(r"\n[ \t]+(?=full_key:|object_type|reference_type)", str(exc).strip())
    key = next((f.split(":", 1)[1].strip() for f in fields if f.startswith("full_key:")), "")
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return unknown_key(key or msg, schema)
    if key and (typed := wrong_type(key, msg, schema)):
        return typed
    return f"{key}: {msg}" if key and key not in msg else msg


def huge_int_key(node, schema, prefix: str = "") -> str:
    """The dotted key of the first float key of `schema` whose value in `node` (a container) is an int too large for a
    float (an int key holds any int: `model.dim=<huge> train.lr=<huge>` named model.dim), or "a key"."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, int) and not isinstance(v, bool) and isinstance(default_of(schema, key), float):
            try:
                float(v)
            except OverflowError:
                return key
        if isinstance(v, (dict, list)) and (found := huge_int_key(v, schema, key + ".")) != "a key":
            return found
    return "a key"
