"""What `python -m agents.evaluate` makes of its command line, before any checkpoint is read: the arguments'
checks, the evaluations a comma list asks for, the out= file, and `early_answer`.

Nothing here loads torch or matplotlib, so agents/evaluate.py answers --help and refuses a bad line (an unknown
argument, a missing checkpoint, an out= that names one of the run's files, a bad sweep) while it starts, before its
slow imports: in about 1 s, where it came after ~5 s of loading them.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import NamedTuple

from agents.checkpoint_paths import existing_checkpoint, resolved, run_dir_of
from agents.cli_args import (
    answer_early,
    check_given_once,
    check_values_once,
    find_interpolation,
    hydra_reason,
    text_values_kept,
    unquoted,
)
from agents.config import ConfigError, absolute_path
from agents.eval_out import check_out_file
from memory.config import MAX_THREADS, MEMORY_RUNTIME_KEYS, MemoryConfig

USAGE = ("usage: python -m agents.evaluate checkpoint=<run folder or checkpoints/last.pt> [device=cpu|cuda|auto] "
         "[env.kwargs.<option>=<value or comma list> ...] [memory.<key>=<value or comma list> ...] "
         "[out=<file, default eval.json; relative: inside the run folder>] [threads=<n, default: the run's own>]")
OWN_KEYS = ("checkpoint", "device", "out", "threads")  # evaluate's own arguments (besides env.kwargs.*, memory.*)
ENV_PREFIX, MEMORY_PREFIX = "env.kwargs.", "memory."
MAX_EVALUATIONS = 10_000  # of one sweep: each one replays the env and evaluates every task
# memory keys an evaluation may set: those a checkpoint loads under (MEMORY_RUNTIME_KEYS) that act without learning
EVAL_MEMORY_KEYS = tuple(sorted(MEMORY_RUNTIME_KEYS - {"util_weight", "pressure_weight", "sparsity_weight"}))


def check_plain(key: str, value) -> None:
    """A value without '${': evaluate's values are not interpolated (resolved against the run's saved config, e.g.
    env.kwargs.delay=${seed}, they were evaluated with a value the JSON did not record), and agents.run refuses a
    literal '${' in a value. Inside a list or mapping, the line names the item (`key[0]`, `key.k`)."""
    found = find_interpolation(value, key)
    if found:
        raise ConfigError(f"{found[0]}={found[1]!r}: an evaluation takes plain values, not interpolations "
                          "('${...}'); write the value itself")


def check_not_empty(key: str, value) -> None:
    """checkpoint= / out= with nothing after the `=`: Path("") is the working folder, a path never given."""
    if isinstance(value, (str, Path)) and not str(value).strip():
        fix = "point it at a run folder (or its checkpoints/last.pt)" if key == "checkpoint" else \
            "name a file (the default is eval.json)"
        raise ConfigError(f"{key}= is empty; {fix}")


def check_memory_key(key: str) -> None:
    """A memory key an evaluation may set, or one ConfigError line saying which it may."""
    if key not in MemoryConfig.__dataclass_fields__:
        raise ConfigError(f"unknown config key 'memory.{key}'; run `python -m agents.run --help` to list the keys")
    if key not in EVAL_MEMORY_KEYS:
        raise ConfigError(f"memory.{key}: the trained weights and saved memory were made with the run's value; an "
                          f"evaluation may change memory.{{{','.join(EVAL_MEMORY_KEYS)}}} only")


def override_grid(items: list[str]) -> list[tuple[dict, dict]]:
    """`env.kwargs.<k>=<v>` and `memory.<k>=<v>` overrides -> one ({env option: value}, {memory key: value}) per
    combination (a comma list is a sweep, as in Hydra's multirun); values are parsed by Hydra's override grammar
    (`[1,2]` is a list, `true` a bool)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Override
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    items = text_values_kept(items)  # env.kwargs.haystack_path=2026_12_03 is that file, not 20261203
    for item in items:
        try:
            parsed += parser.parse_overrides([item])
        except HydraException as exc:
            fix = "memory.<key>=<value> or a comma list (memory.reset=never,episode)" if item.startswith(
                MEMORY_PREFIX) else "env.kwargs.<option>=<value> or a comma list (env.kwargs.facts_per_episode=1,2,4)"
            raise ConfigError(f"{item}: {hydra_reason(exc) or 'its value cannot be read'}; "
                              f"write {fix}, and quote a value with spaces or '~': key='a b'") from None
    names = [o.key_or_group for o in parsed]
    check_given_once(names, items, sweep_hint)
    for name in names:
        if name.startswith(MEMORY_PREFIX):
            check_memory_key(name[len(MEMORY_PREFIX):])
    values = []
    for item, override in zip(items, parsed, strict=True):
        try:
            # each value as value() gives it: the iterator kept a quoted item Hydra's QuotedString (`memory.reset=
            # 'never',task` evaluated reset=QuotedString(text='never'), refused as not a str)
            values.append(list(itertools.islice(override.sweep_iterator(Override._convert_value), MAX_EVALUATIONS + 1))
                          if override.is_sweep_override() else [override.value()])
        except HydraException:  # interval() and glob() name no values to evaluate (was Hydra's traceback)
            raise ConfigError(f"{item}: a sweep here names its values: a comma list, range() or choice() "
                              f"({names[len(values)]}=1,2,4)") from None
    for item, name, options in zip(items, names, values, strict=True):  # range(1,3),2: an omegaconf traceback
        if any(holds_sweep(option) for option in options):
            raise ConfigError(f"{item}: a range() or choice() inside a comma list, a list or a mapping is no value; "
                              f"write the values as one comma list ({name}=a,b,c) or one range()")
    if math.prod(map(len, values)) > MAX_EVALUATIONS:  # range(1,10**9) was a MemoryError traceback
        sizes = " x ".join(f"{len(v):,}{'+' if len(v) > MAX_EVALUATIONS else ''}" for v in values)
        raise ConfigError(f"{' '.join(items)}: {sizes} evaluations; a sweep runs at most {MAX_EVALUATIONS:,}: give "
                          "fewer values")
    for item, name, options in zip(items, names, values, strict=True):  # 1,1 evaluated the same setting twice;
        # a file option as evaluate() reads it, absolute (hay.txt and ./hay.txt are one file)
        check_values_once(item, [absolute_path(v) for v in options] if name.endswith("_path") else options,
                          " (each value of a comma list is one evaluation)")
    for name, options in zip(names, values, strict=True):  # before the first evaluation of a sweep
        for option in options:  # each a value of `name` (an index would name a list value's item)
            check_plain(name, option)
    grid = []
    for combo in itertools.product(*values):
        env = {n[len(ENV_PREFIX):]: v for n, v in zip(names, combo, strict=True) if n.startswith(ENV_PREFIX)}
        memory = {n[len(MEMORY_PREFIX):]: v for n, v in zip(names, combo, strict=True) if n.startswith(MEMORY_PREFIX)}
        grid.append((env, memory))
    return grid or [({}, {})]


def holds_sweep(value) -> bool:
    """Whether a parsed value is, or holds, one of Hydra's sweep objects (`[range(1,3)]`, `{a: choice(1,2)}`)."""
    from hydra.core.override_parser.types import Sweep

    if isinstance(value, dict):
        return any(holds_sweep(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_sweep(v) for v in value)
    return isinstance(value, Sweep)


def thread_count(text: str | None) -> int | None:
    """threads=<n> as an int in [1, MAX_THREADS] (checked here, while the command starts, as `evaluate` checks
    its argument), None when not given."""
    if text is None:
        return None
    try:
        threads = int(text)
    except ValueError:
        raise ConfigError(f"threads={text}: not an integer; give a torch thread count, e.g. threads=2 (default: the "
                          "run's own)") from None
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"threads={text}: give a torch thread count in [1, {MAX_THREADS}] (default: the run's "
                          "own)")
    return threads


def sweep_hint(key: str) -> str:
    """check_given_once's fix for a repeated env or memory key here: a comma list evaluates several values."""
    return f" (a comma list evaluates several values: {key}=1,2)" if key.startswith((ENV_PREFIX, MEMORY_PREFIX)) else ""


def check_argument(arg: str) -> None:
    """One line for an argument evaluate does not take (was "expected checkpoint=<path>" and the usage: two lines)."""
    key, has_value, _ = arg.partition("=")
    if key in OWN_KEYS and has_value or key.startswith((ENV_PREFIX, MEMORY_PREFIX)) and \
            has_value and key not in (ENV_PREFIX, MEMORY_PREFIX):
        return
    plain = key.lstrip("+~")
    if plain != key and (plain in OWN_KEYS or plain.startswith((ENV_PREFIX, MEMORY_PREFIX))):
        fix = f"set it: {plain}=<value>" if key.startswith("~") else f"drop the {key[:len(key) - len(plain)]!r}: " \
            f"write {arg.lstrip('+')}"
        raise ConfigError(f"{arg}: an evaluation neither adds nor deletes keys; {fix}")
    if not has_value and (key in OWN_KEYS or key.startswith((ENV_PREFIX, MEMORY_PREFIX))):
        raise ConfigError(f"{arg}: no value; write {key}=<value>")
    if not has_value and (key.endswith(".pt") or os.sep in key or Path(key).exists()):
        raise ConfigError(f"{arg!r}: arguments are key=value; write checkpoint={arg}")
    raise ConfigError(f"{arg!r} is not an argument of agents.evaluate (the run's other settings are its checkpoint's); "
                      "it takes checkpoint=, device=, out=, threads=, env.kwargs.<option>= and memory.<key>= (--help)")


class Command(NamedTuple):
    """A checked command line: what `agents.evaluate.main` runs."""
    checkpoint: str  # as given, `~` expanded
    device: str | None
    out: str  # as given (relative: inside the run folder)
    out_file: Path  # where it lands
    threads: int | None
    grid: list[tuple[dict, dict]]  # one (env options, memory settings) per evaluation


def parse(argv: list[str]) -> Command:
    """The checks of a command line that need no checkpoint read, in this order: the arguments, the checkpoint's
    existence, out=, threads=, the sweep; one ConfigError / CheckpointError line for the first that fails. (Before
    2026-12-02 out=, threads= and the sweep were checked first and a missing checkpoint only once torch had loaded.)"""
    if tuple(argv) in _checked:
        return _checked.pop(tuple(argv))
    prefixes = (ENV_PREFIX, MEMORY_PREFIX)
    own = [a for a in argv if "=" in a and not a.startswith(prefixes)]
    args = {k: os.path.expanduser(unquoted(v)) if k in ("checkpoint", "out") else unquoted(v)  # threads='2' too
            for k, v in (a.split("=", 1) for a in own)}
    for arg in argv:
        check_argument(arg)
    if "checkpoint" not in args:
        raise ConfigError("checkpoint= is missing; name the run to evaluate: checkpoint=<run folder or its "
                          "checkpoints/last.pt> (--help lists the arguments)")
    check_given_once([a.split("=", 1)[0] for a in own], own)
    check_not_empty("checkpoint", args["checkpoint"])
    out = args.get("out", "eval.json")
    check_not_empty("out", out)
    check_plain("out", args.get("out", ""))  # evaluate() checks its paths; a sweep's one file is written here
    check_plain("checkpoint", args["checkpoint"])
    checkpoint = resolved(args["checkpoint"])
    existing_checkpoint(checkpoint, "evaluate")
    run_dir = run_dir_of(args["checkpoint"])  # as given: its checkpoints/ may link to another disk
    # before the first evaluation: a sweep writes its one file at the end
    check_out_file(out, run_dir, checkpoint)
    threads = thread_count(args.get("threads"))
    grid = override_grid([a for a in argv if a.startswith(prefixes) and "=" in a])
    return Command(args["checkpoint"], args.get("device"), out, run_dir / out, threads, grid)


def early_answer(argv: list[str]) -> int | None:
    """The exit code of a command line answered before the slow imports: --help (0), or a line that `parse`
    refuses (2, after its one `error:` line, exactly as `agents.evaluate.main` prints it); None: go on."""
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    return answer_early(parse, argv, _checked)


# the command early_answer checked, which main()'s parse of the same line takes instead of checking it again
_checked: dict[tuple[str, ...], Command] = {}
