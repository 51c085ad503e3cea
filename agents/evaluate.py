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
    import sys

    from agents.evaluate_args import early_answer  # imports no torch: --help and a bad line are answered in ~1 s

    if (_answer := early_answer(sys.argv[1:])) is not None:
        finish(_answer)

import math  # noqa: E402  (after the guard above: these imports are the slow part of starting)
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from agents.checkpoint import (
    CheckpointError,
    check_compatible,
    check_own_run,
    check_saved_config,
    checkpoint_file,
    load_checkpoint,
    run_dir_of,
)
from agents.checkpoint_fields import agent_entry, check_env_files_there
from agents.checkpoint_paths import as_given
from agents.config import (
    ALLOCATION_ERRORS,
    ConfigError,
    absolute_path,
    allocation_failure,
    does_not_fit,
    validate,
)
from agents.config_messages import check_env_option, env_option_names, error_line
from agents.eval_out import check_out_file, write_out_file
from agents.evaluate_args import (  # noqa: F401  (EVAL_MEMORY_KEYS, override_grid: this module's names too)
    ENV_PREFIX,
    EVAL_MEMORY_KEYS,
    MEMORY_PREFIX,
    USAGE,
    check_memory_key,
    check_not_empty,
    check_plain,
    override_grid,
    parse,
)
from agents.inert_notes import inert_note
from agents.interrupts import interrupt
from agents.report import mean_accuracy, measured, scored, with_count
from agents.run_config import override_spelling
from agents.schedule_note import schedule_note
from agents.threads import threads_note
from memory.cache_cold_dirs import ColdTierError
from memory.config import MAX_THREADS


def evaluate(checkpoint: str | Path, device: str | None = None, env_kwargs: dict | None = None,
             out: str | None = "eval.json", memory: dict | None = None, note: bool | set = True,
             threads: int | None = None) -> dict:
    """Evaluate every task from the checkpoint; `env_kwargs` replaces env options of the run's config, `memory`
    memory settings among EVAL_MEMORY_KEYS; `threads`: torch threads (None: the run's own, which gives its numbers
    exactly). Torch's thread count is set back when it returns. `note`: print the `note:` lines (the threads', the
    inert keys'); a set: those not in it, which are added (a sweep's evaluations say each once).

    Writes the result to `out` (relative: inside the run folder; None: nowhere) and returns it."""
    import torch

    from agents.trainer import Trainer
    from agents.tune_space import plain

    # numpy scalars as the values they hold (a loop over np.arange): threads=np.int64(1) was "pass a count in [1,
    # 1024]", a numpy option value OmegaConf's multi-line UnsupportedValueType
    threads = plain(threads)
    env_kwargs, memory = ({k: plain(v) for k, v in d.items()} if isinstance(d, Mapping) else d
                          for d in (env_kwargs, memory))
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
    if env_kwargs:  # a file option from this folder, as agents.run saves it: the JSON lands in the run folder
        env_kwargs = {k: absolute_path(v) if str(k).endswith("_path") else v for k, v in env_kwargs.items()}
    check_not_empty("checkpoint", checkpoint)
    for key, path in (("checkpoint", checkpoint), ("out", out)):  # '${...}' in out= made a folder of that name
        check_plain(key, str(path) if path is not None else "")
    given = as_given(checkpoint)  # checkpoints/ may link to another disk
    checkpoint = given.resolve()  # ~ as agents.run's paths (was a folder named ~)
    body = load_checkpoint(checkpoint, purpose="evaluate")
    agent_entry(body, checkpoint)  # an Agent save's record, damaged: one line, as Agent.from_checkpoint says it
    run_dir = run_dir_of(given)
    if out is not None:
        check_not_empty("out", out)
        check_out_file(out, run_dir, checkpoint)  # as given: a trailing / names a folder
        out = Path(out).expanduser()
    cfg = evaluation_config(body, given, device, env_kwargs, memory, threads)
    caller_threads = torch.get_num_threads()  # the trainer sets the run's (or `threads`): not left to the caller
    try:
        trainer = Trainer(cfg, run_dir)
        if env_kwargs:  # the restore's line named the matrix's shape, not the option or the run's value
            check_restorable(body, (int(trainer.venv.vocab_size), tuple(trainer.R.shape)), env_kwargs)
        trainer.restore(checkpoint, OmegaConf.to_container(cfg, resolve=True), rewind_eval=True)
        trainer.loop_task = last_trained_task(body)  # memory.reset=task's reference, whatever the env's schedule
        say(threads_note(trainer.saved_threads, cfg.train.threads, "threads"), note)
        accuracy = trainer.evaluate_all()
    except ColdTierError as exc:  # the run's memory.cache_cold, where the temp folder's disk has less room
        raise ConfigError(cold_tier_line(exc)) from None
    except FloatingPointError as exc:  # a model's own check of its activations: the saved weights overflow them
        raise ConfigError(f"checkpoint {str(checkpoint)!r}: its weights diverged ({exc}); evaluate an earlier run, or "
                          "re-run it with a lower train.lr") from None
    except ALLOCATION_ERRORS as exc:  # the run's sizes, where less memory is free
        if not allocation_failure(exc):  # any other RuntimeError (or ValueError) is a bug: keep its traceback
            raise
        raise ConfigError(does_not_fit(cfg, exc, "evaluating this checkpoint", "the evaluation needs the run's "
                                       "sizes: run it where more memory is free (device=cpu if a GPU's ran out)")) \
            from None
    finally:
        torch.set_num_threads(caller_threads)
    given = [MEMORY_PREFIX + k for k in memory or {}] + [ENV_PREFIX + k for k in env_kwargs or {}]
    say(inert_note(cfg, given, env=trainer.venv), note)
    say(schedule_note(body["config"]["env"], env_kwargs, trainer.venv), note)
    result = {
        "checkpoint": str(checkpoint), "env": cfg.env.id, "agent": cfg.agent.name,
        "episodes_trained": episodes_trained(body, trainer),
        "env_kwargs": dict(env_kwargs or {}), "memory": dict(memory or {}),
        "accuracy_by_task": accuracy, "accuracy": mean_accuracy(accuracy.values()),
        "accuracy_by_distance": measured(trainer.by_distance) or None,
        "recall_by_delay": measured(trainer.by_delay) or None,
        "scored_by_distance": scored(trainer.by_distance) or None, "scored_by_delay": scored(trainer.by_delay) or None,
    }
    if out is not None:
        write_out_file(run_dir / out, result)
    return result


def say(line: str | None, note: bool | set) -> None:
    """Print a `note:` line per `evaluate`'s `note` (True: print; False: not; a set: once, remembered there)."""
    if line and (line not in note if isinstance(note, set) else note):
        print(line, flush=True)
        if isinstance(note, set):
            note.add(line)


def episodes_trained(body: dict, trainer) -> int:
    """The episodes the checkpoint's agent trained: an Agent's save counts its loop's (the trainer's stays 0)."""
    own = body.get("agent")  # (checked by agent_entry as the checkpoint was read)
    return own["episodes"] if own is not None else trainer.episode


def last_trained_task(body: dict) -> int | None:
    """The task memory.reset=task compares each evaluated task with: the one the checkpoint's agent trained last (an
    Agent's loop: its saved `last_task`; a run: its last training reset), not the one the evaluated env's schedule puts
    at its episode (a changed episodes_per_task or shift cleared another task; an Agent's save cleared none). None
    before any training."""
    from agents.trainer import TRAIN

    own = body.get("agent")  # (checked by agent_entry as the checkpoint was read)
    if own is not None and own["last_task"] >= 0:
        return own["last_task"]
    trained = [task for phase, task in body["trainer"]["reset_log"] if phase == TRAIN]
    return int(trained[-1]) if trained else None


def evaluation_config(body: dict, checkpoint: Path, device: str | None, env_kwargs: dict | None,
                      memory: dict | None, threads: int | None) -> DictConfig:
    """The checked config of an evaluation: the checkpoint's (`body`, read from `checkpoint`) with the env options,
    memory settings, device and threads given; a setting it refuses is one ConfigError line."""
    run_dir = run_dir_of(checkpoint)
    cfg = OmegaConf.create(body["config"])
    if env_kwargs:  # agents.run's line for a typo (the env's own error named the env twice, with no guess)
        env_id = OmegaConf.select(cfg, "env.id")
        options = env_option_names(env_id) if isinstance(env_id, str) else None
        for key in env_kwargs:
            check_env_option(f"{ENV_PREFIX}{key}", env_id, options)
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
    check_env_files_there(cfg.env.kwargs, checkpoint, evaluating=True, given=env_kwargs or {})
    inert = [k for k in memory or {} if k.startswith("store_") and (cfg.agent.name != "memnet" or not cfg.memory.store)]
    if inert:  # was accepted, and recorded in the JSON as if it had changed the evaluation
        raise ConfigError(f"memory.{inert[0]}: this run ({cfg.agent.name}, memory.store={cfg.memory.store}) has no "
                          "store, so it would change nothing; drop it")
    return cfg


def check_sweep(cmd) -> None:
    """Each evaluation of a sweep (`cmd.grid`) as `evaluate` checks it before it runs, its env built with one lane:
    a setting refused is one ConfigError line before any evaluation (each takes seconds to minutes), and so is an
    env whose vocabulary or task schedule the checkpoint's weights and accuracy matrix cannot be restored on (its
    restore refused it only after the evaluations before it had run, and they were lost)."""
    from agents.cl_metrics import accuracy_shape
    from agents.episodes import make_vector_env

    checkpoint = as_given(cmd.checkpoint)  # (a linked checkpoints/)
    body = load_checkpoint(checkpoint, purpose="evaluate")
    for env_kwargs, memory in cmd.grid:
        cfg = evaluation_config(body, checkpoint, cmd.device, env_kwargs, memory, cmd.threads)
        venv = make_vector_env(cfg.env.id, 1, dict(cfg.env.kwargs))
        here = int(venv.vocab_size), accuracy_shape(venv)
        venv.close()
        check_restorable(body, here, env_kwargs)


def check_restorable(body: dict, here: tuple[int, tuple[int, int]], env_kwargs: dict | None) -> None:
    """One ConfigError line where the env that `env_kwargs` make (`here`: its vocab_size and (K, T) of R) is not
    the one the checkpoint's weights and accuracy matrix were trained on; it names the options given and the run's
    own values of them. Without env options (the run's own env, as in a sweep over memory.* alone), the restore's
    own line for a checkpoint whose R does not fit it, e.g. a revisiting run saved before R had a row per block."""
    trained = trained_shapes(body)
    if trained is None or not env_kwargs or here == trained:
        return
    shown = " ".join(f"env.kwargs.{k}={override_spelling(v)}" for k, v in env_kwargs.items())
    try:
        own = dict(body["config"]["env"]["kwargs"])
    except (KeyError, TypeError, ValueError):
        own = {}
    runs = [f"env.kwargs.{k}={override_spelling(own[k])}" for k, v in env_kwargs.items() if k in own and own[k] != v]
    raise ConfigError(f"{shown}: the run was trained on vocab_size={trained[0]} with {trained[1][0]} "
                      f"training block(s) of {trained[1][1]} task(s), this env has vocab_size={here[0]} and "
                      f"{here[1][0]} of {here[1][1]}; its weights and accuracy matrix cannot be restored on "
                      "it: keep vocab_size and the task schedule (num_tasks, revisit)"
                      + (f", as the run's {' '.join(runs)}" if runs else ""))


def trained_shapes(body: dict) -> tuple[int, tuple[int, int]] | None:
    """(vocab_size, (K, T) of R) as the checkpoint holds them, which its restore needs the env to match: read from
    its weights and accuracy matrix, not from the run's env made again (its haystack_path may be gone, the very case
    a sweep over env.kwargs.haystack_path is for). None where they are not plain (the restore names the fault)."""
    try:
        R = body["trainer"]["R"]
        vocab = int(body["model"]["embed.weight"].shape[0])
        if not isinstance(R, list) or not R or not all(isinstance(row, list) for row in R) \
                or len({len(row) for row in R}) > 1:
            return None
        return vocab, (len(R), len(R[0]))
    except (KeyError, TypeError, AttributeError, IndexError):
        return None


def cold_tier_line(exc: ColdTierError) -> str:
    """ColdTierError's line with the fix an evaluation has: it needs the run's memory.cache_cold (any other value
    is refused), so only a temp folder on a bigger disk helps."""
    return f"{exc.problem}; an evaluation keeps the run's memory.cache_cold: set TMPDIR to a folder on a bigger disk"


def main(argv: list[str] | None = None) -> int:
    end_startup()  # Ctrl+C is KeyboardInterrupt again, caught below
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        cmd = parse(argv)  # (checked already while the command started: __main__ below)
        if len(cmd.grid) == 1:
            results = [evaluate(cmd.checkpoint, cmd.device, cmd.grid[0][0], cmd.out, cmd.grid[0][1],
                                threads=cmd.threads)]
        else:  # one file for the sweep: each evaluation names the env options and memory settings it used
            check_sweep(cmd)  # every evaluation's settings, before the first runs (a bad last value lost the others)
            said = set()  # each note once; an evaluation after the first may have its own (shift=gradual,abrupt: the
            # abrupt one's inert shift_window went unsaid when only the first evaluation's notes were printed)
            results = [evaluate(cmd.checkpoint, cmd.device, env, None, memory, note=said, threads=cmd.threads)
                       for env, memory in cmd.grid]
            write_out_file(cmd.out_file, {"evaluations": results})
    except (ConfigError, CheckpointError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM (__main__): the results are written at the end, so none yet
        print("\ninterrupted; no evaluation was written (the run and its checkpoint are untouched)", file=sys.stderr)
        return 130
    for result in results:
        shown = " ".join([f"{k}={v}" for k, v in result["env_kwargs"].items()]
                         + [f"memory.{k}={v}" for k, v in result["memory"].items()])
        n = result["episodes_trained"]
        print(f"{result['env']} / {result['agent']} after {n} episode{'s' * (n != 1)}"
              + (f" ({shown})" if shown else ""))
        for task, acc in result["accuracy_by_task"].items():
            print(f"  task {task}: {acc:.3f}" if not math.isnan(acc) else f"  task {task}: n/a (no query scored)")
        print(f"  mean: {result['accuracy']:.3f}" if result["accuracy"] is not None else "  mean: n/a")
        for k, v in (result["accuracy_by_distance"] or {}).items():
            print(f"  distance <= {k}: {with_count(v, result['scored_by_distance'][k])}")
        for k, v in (result["recall_by_delay"] or {}).items():
            print(f"  delay {k}: {with_count(v, result['scored_by_delay'][k])}")
    print(f"written to {cmd.out_file}")  # a relative out= lands in the run folder, not where the command ran
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)  # a scheduler's stop reads as Ctrl+C: one line, the cache cleaned up
    finish(main())
