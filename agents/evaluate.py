"""`python -m agents.evaluate checkpoint=<run dir or .pt>`: re-evaluate a saved run on every task.

Loads the run's checkpoint (weights and persisting memory), evaluates every task the way the trainer does
(on a copy of the memory) on the same eval episodes as the run's final evaluation (the env is replayed to that
point), prints a table and writes `eval.json` into the run folder. The checkpoint is not modified.

`env.kwargs.<option>=<value>` evaluates the trained agent on a changed env instead (e.g. more facts per episode
for NeedleRecall's capacity curve); `memory.<key>=<value>` with a memory setting that leaves the saved state
valid (`EVAL_MEMORY_KEYS`: e.g. `memory.reset=episode`, no memory across episodes; `memory.store_hnsw_ef_search`,
the search's breadth) evaluates the trained memory used another way. A comma list
(`env.kwargs.facts_per_episode=1,2,4`) gives one evaluation per value (several lists: every combination),
written as `{"evaluations": [...]}`. `out=<file>` names the output (relative paths: inside the run folder; never a
file the run wrote: its checkpoint, checkpoints/, metrics.json, config.yaml, TensorBoard events, plots/; an existing
file only if it is an earlier evaluation's JSON). `threads=<n>` sets torch's thread count (default: the run's
own, recorded in its checkpoint, which gives its numbers exactly). Values are plain: no `${...}` interpolation.
"""

from __future__ import annotations

from agents.startup import end_startup, finish, guard_startup

if __name__ == "__main__":  # Ctrl+C or SIGTERM while torch and the trainer import (~2 s): one line
    guard_startup("no evaluation was written")

import itertools  # noqa: E402  (after the guard above: these imports are the slow part of starting)
import math
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from agents.checkpoint import (
    MEMORY_RUNTIME_KEYS,
    CheckpointError,
    check_compatible,
    check_own_run,
    check_saved_config,
    checkpoint_file,
    load_checkpoint,
    run_dir_of,
)
from agents.cli_args import check_given_once, find_interpolation, hydra_reason, inert_note
from agents.config import ConfigError, allocation_failure, does_not_fit, validate
from agents.eval_out import check_out_file, write_out_file
from agents.interrupts import interrupt
from agents.report import mean_accuracy, measured, scored, with_count
from agents.threads import threads_note
from memory.cache_cold_dirs import ColdTierError
from memory.config import MAX_THREADS, MemoryConfig

USAGE = ("usage: python -m agents.evaluate checkpoint=<run folder or checkpoints/last.pt> [device=cpu|cuda|auto] "
         "[env.kwargs.<option>=<value or comma list> ...] [memory.<key>=<value or comma list> ...] "
         "[out=<file, default eval.json; relative: inside the run folder>] [threads=<n, default: the run's own>]")
OWN_KEYS = ("checkpoint", "device", "out", "threads")  # evaluate's own arguments (besides env.kwargs.*, memory.*)
ENV_PREFIX, MEMORY_PREFIX = "env.kwargs.", "memory."
MAX_EVALUATIONS = 10_000  # of one sweep: each one replays the env and evaluates every task
# memory keys an evaluation may set: those a checkpoint loads under (MEMORY_RUNTIME_KEYS) that act without learning
EVAL_MEMORY_KEYS = tuple(sorted(MEMORY_RUNTIME_KEYS - {"util_weight", "pressure_weight", "sparsity_weight"}))


def evaluate(checkpoint: str | Path, device: str | None = None, env_kwargs: dict | None = None,
             out: str | None = "eval.json", memory: dict | None = None, note: bool = True,
             threads: int | None = None) -> dict:
    """Evaluate every task from the checkpoint; `env_kwargs` replaces env options of the run's config, `memory`
    memory settings among EVAL_MEMORY_KEYS; `threads`: torch threads (None: the run's own, which gives its numbers
    exactly). Torch's thread count is set back when it returns.

    Writes the result to `out` (relative: inside the run folder; None: nowhere) and returns it."""
    import torch

    from agents.trainer import Trainer

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= MAX_THREADS):
        raise ConfigError(f"evaluate: threads={threads!r}; pass a torch thread count in [1, {MAX_THREADS}] (default: "
                          "the run's own)")

    for name, value in (("env_kwargs", env_kwargs), ("memory", memory)):
        if value is not None and not isinstance(value, Mapping):  # a dict, or an OmegaConf DictConfig
            raise ConfigError(f"evaluate: {name} is a {type(value).__name__}; pass a dict of option -> value")
    if not isinstance(checkpoint, (str, Path)):
        raise ConfigError(f"evaluate: checkpoint={checkpoint!r}; pass the run folder or its checkpoint file (a path)")
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"evaluate: out={out!r}; pass a file name (str), or None to write nothing")
    for key, value in (memory or {}).items():
        check_memory_key(key)
        check_plain(f"{MEMORY_PREFIX}{key}", value)
    for key, value in (env_kwargs or {}).items():
        check_plain(f"{ENV_PREFIX}{key}", value)
    check_not_empty("checkpoint", checkpoint)
    for key, path in (("checkpoint", checkpoint), ("out", out)):  # '${...}' in out= made a folder of that name
        check_plain(key, str(path) if path is not None else "")
    checkpoint = Path(checkpoint).expanduser().resolve()  # ~ as agents.run's paths (was a folder named ~)
    body = load_checkpoint(checkpoint, purpose="evaluate")
    run_dir = run_dir_of(checkpoint)
    if out is not None:
        check_not_empty("out", out)
        check_out_file(out, run_dir, checkpoint)  # as given: a trailing / names a folder
        out = Path(out).expanduser()
    cfg = OmegaConf.create(body["config"])
    with open_dict(cfg):
        if env_kwargs:
            cfg.env.kwargs = OmegaConf.merge(cfg.env.kwargs, env_kwargs)
        if memory:
            cfg.memory = OmegaConf.merge(cfg.memory, memory)
        if device is not None:  # before validate, which checks it
            cfg.device = device
        if threads is not None:
            cfg.train.threads = threads
    try:
        cfg = validate(cfg)
    except ConfigError:  # the saved part's fault (an edited checkpoint) is the file's line, not a command line's
        check_saved_config(body["config"], checkpoint, "evaluate")
        raise
    # before the trainer (whose restore checks it again, worded for a caller's own config): a saved config this
    # memstream reads as another model names the fix an evaluation has
    check_compatible(body["config"], OmegaConf.to_container(cfg, resolve=True), checkpoint, purpose="evaluate")
    check_own_run(body["config"], run_dir, checkpoint_file(checkpoint), "evaluate")  # a valid config, but another run's
    inert = [k for k in memory or {} if k.startswith("store_") and (cfg.agent.name != "memnet" or not cfg.memory.store)]
    if inert:  # was accepted, and recorded in the JSON as if it had changed the evaluation
        raise ConfigError(f"memory.{inert[0]}: this run ({cfg.agent.name}, memory.store={cfg.memory.store}) has no "
                          "store, so it would change nothing; drop it")
    caller_threads = torch.get_num_threads()  # the trainer sets the run's (or `threads`): not left to the caller
    try:
        trainer = Trainer(cfg, run_dir)
        trainer.restore(checkpoint, OmegaConf.to_container(cfg, resolve=True), rewind_eval=True)
        if note and (line := threads_note(trainer.saved_threads, cfg.train.threads, "threads")):
            print(line, flush=True)
        accuracy = trainer.evaluate_all()
    except ColdTierError as exc:  # the run's memory.cache_cold, where the temp folder's disk has less room
        raise ConfigError(cold_tier_line(exc)) from None
    except FloatingPointError as exc:  # a model's own check of its activations: the saved weights overflow them
        raise ConfigError(f"checkpoint {str(checkpoint)!r}: its weights diverged ({exc}); evaluate an earlier run, or "
                          "re-run it with a lower train.lr") from None
    except (MemoryError, RuntimeError, ValueError) as exc:  # the run's sizes, where less memory is free
        if not allocation_failure(exc):  # any other RuntimeError (or ValueError) is a bug: keep its traceback
            raise
        raise ConfigError(does_not_fit(cfg, exc, "evaluating this checkpoint", "the evaluation needs the run's "
                                       "sizes: run it where more memory is free (device=cpu if a GPU's ran out)")) \
            from None
    finally:
        torch.set_num_threads(caller_threads)
    if note and (line := inert_note(cfg, [MEMORY_PREFIX + k for k in memory or {}])):  # (note=False: said once)
        print(line, flush=True)
    result = {
        "checkpoint": str(checkpoint), "env": cfg.env.id, "agent": cfg.agent.name, "episodes_trained": trainer.episode,
        "env_kwargs": dict(env_kwargs or {}), "memory": dict(memory or {}),
        "accuracy_by_task": accuracy, "accuracy": mean_accuracy(accuracy.values()),
        "accuracy_by_distance": measured(trainer.by_distance) or None,
        "recall_by_delay": measured(trainer.by_delay) or None,
        "scored_by_distance": scored(trainer.by_distance) or None, "scored_by_delay": scored(trainer.by_delay) or None,
    }
    if out is not None:
        write_out_file(run_dir / out, result)
    return result


def check_plain(key: str, value) -> None:
    """A value without '${': evaluate's values are not interpolated (resolved against the run's saved config, e.g.
    env.kwargs.delay=${seed}, they were evaluated with a value the JSON did not record), and agents.run refuses a
    literal '${' in a value. Inside a list or mapping, the line names the item (`key[0]`, `key.k`)."""
    found = find_interpolation(value, key)
    if found:
        raise ConfigError(f"{found[0]}={found[1]!r}: an evaluation takes plain values, not interpolations "
                          "('${...}'); write the value itself")


def cold_tier_line(exc: ColdTierError) -> str:
    """ColdTierError's line with the fix an evaluation has: it needs the run's memory.cache_cold (any other value
    is refused), so only a temp folder on a bigger disk helps."""
    return f"{exc.problem}; an evaluation keeps the run's memory.cache_cold: set TMPDIR to a folder on a bigger disk"


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
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
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
            values.append(list(itertools.islice(override.sweep_iterator(), MAX_EVALUATIONS + 1))
                          if override.is_sweep_override() else [override.value()])
        except HydraException:  # interval() and glob() name no values to evaluate (was Hydra's traceback)
            raise ConfigError(f"{item}: a sweep here names its values: a comma list, range() or choice() "
                              f"({names[len(values)]}=1,2,4)") from None
    if math.prod(map(len, values)) > MAX_EVALUATIONS:  # range(1,10**9) was a MemoryError traceback
        sizes = " x ".join(f"{len(v):,}{'+' if len(v) > MAX_EVALUATIONS else ''}" for v in values)
        raise ConfigError(f"{' '.join(items)}: {sizes} evaluations; a sweep runs at most {MAX_EVALUATIONS:,}: give "
                          "fewer values")
    for name, options in zip(names, values, strict=True):  # before the first evaluation of a sweep
        for option in options:  # each a value of `name` (an index would name a list value's item)
            check_plain(name, option)
    grid = []
    for combo in itertools.product(*values):
        env = {n[len(ENV_PREFIX):]: v for n, v in zip(names, combo, strict=True) if n.startswith(ENV_PREFIX)}
        memory = {n[len(MEMORY_PREFIX):]: v for n, v in zip(names, combo, strict=True) if n.startswith(MEMORY_PREFIX)}
        grid.append((env, memory))
    return grid or [({}, {})]


def thread_count(text: str | None) -> int | None:
    """threads=<n> as an int (range checked by `evaluate`), None when not given."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"threads={text}: not an integer; give a torch thread count, e.g. threads=2 (default: the "
                          "run's own)") from None


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


def main(argv: list[str] | None = None) -> int:
    end_startup()  # Ctrl+C is KeyboardInterrupt again, caught below
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    prefixes = (ENV_PREFIX, MEMORY_PREFIX)
    own = [a for a in argv if "=" in a and not a.startswith(prefixes)]
    args = {k: os.path.expanduser(v) if k in ("checkpoint", "out") else v for k, v in (a.split("=", 1) for a in own)}
    grid_items = [a for a in argv if a.startswith(prefixes) and "=" in a]
    try:
        for arg in argv:
            check_argument(arg)
        if "checkpoint" not in args:
            raise ConfigError("checkpoint= is missing; name the run to evaluate: checkpoint=<run folder or its "
                              "checkpoints/last.pt> (--help lists the arguments)")
        check_given_once([a.split("=", 1)[0] for a in own], own)
        check_not_empty("checkpoint", args["checkpoint"])
        check_not_empty("out", args.get("out", "eval.json"))
        check_plain("out", args.get("out", ""))  # evaluate() checks its paths; a sweep's one file is written here
        run_dir = run_dir_of(args["checkpoint"])
        out_file = run_dir / args.get("out", "eval.json")
        # before the first evaluation: a sweep writes its one file at the end
        check_out_file(args.get("out", "eval.json"), run_dir, Path(args["checkpoint"]).resolve())
        threads = thread_count(args.get("threads"))
        grid = override_grid(grid_items)
        if len(grid) == 1:
            results = [evaluate(args["checkpoint"], args.get("device"), grid[0][0], args.get("out", "eval.json"),
                                grid[0][1], threads=threads)]
        else:  # one file for the sweep: each evaluation names the env options and memory settings it used
            results = [evaluate(args["checkpoint"], args.get("device"), env, None, memory, note=not i, threads=threads)
                       for i, (env, memory) in enumerate(grid)]
            write_out_file(out_file, {"evaluations": results})
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM (__main__): the results are written at the end, so none yet
        print("\ninterrupted; no evaluation was written (the run and its checkpoint are untouched)", file=sys.stderr)
        return 130
    for result in results:
        shown = " ".join([f"{k}={v}" for k, v in result["env_kwargs"].items()]
                         + [f"memory.{k}={v}" for k, v in result["memory"].items()])
        print(f"{result['env']} / {result['agent']} after {result['episodes_trained']} episodes"
              + (f" ({shown})" if shown else ""))
        for task, acc in result["accuracy_by_task"].items():
            print(f"  task {task}: {acc:.3f}" if not math.isnan(acc) else f"  task {task}: n/a (no query scored)")
        print(f"  mean: {result['accuracy']:.3f}" if result["accuracy"] is not None else "  mean: n/a")
        for k, v in (result["accuracy_by_distance"] or {}).items():
            print(f"  distance <= {k}: {with_count(v, result['scored_by_distance'][k])}")
        for k, v in (result["recall_by_delay"] or {}).items():
            print(f"  delay {k}: {with_count(v, result['scored_by_delay'][k])}")
    print(f"written to {out_file}")  # a relative out= lands in the run folder, not where the command ran
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)  # a scheduler's stop reads as Ctrl+C: one line, the cache cleaned up
    finish(main())
