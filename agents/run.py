"""`python -m agents.run env=<id> agent=<name> seed=<n> key=value ...`: train, evaluate, write a run folder.

    python -m agents.run env=ContinualShift-v0
    python -m agents.run env=NeedleRecall-v0 agent=transformer seed=3 memory.slots=64
    python -m agents.run resume=runs/ContinualShift-v0/memnet/2026-11-22_10-00-00_s0
    python -m agents.run config=runs/ContinualShift-v0/memnet/2026-11-22_10-00-00_s0/config.yaml seed=1
    python -m agents.run --help
"""

from __future__ import annotations

from agents.startup import end_startup, finish, guard_startup

if __name__ == "__main__":  # Ctrl+C or SIGTERM while torch, Hydra and matplotlib import (~1.5 s): one line
    guard_startup("nothing was written")
    import sys

    from agents.run_config import early_answer  # imports no torch: --help and a bad line are answered in ~1 s

    if (_answer := early_answer(sys.argv[1:])) is not None:
        finish(_answer)

import shlex  # noqa: E402
import sys  # noqa: E402  (after the guard above: these imports are the slow part of starting)
from contextlib import suppress  # noqa: E402
from pathlib import Path  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from agents.checkpoint import (  # noqa: E402
    RUN_SECTIONS,
    CheckpointError,
    config_difference,
    folder_config,
)
from agents.checkpoint_paths import shell_arg  # noqa: E402
from agents.cli_args import override_key  # noqa: E402
from agents.config import ALLOCATION_ERRORS, ConfigError, allocation_failure, does_not_fit, to_yaml  # noqa: E402
from agents.config_messages import error_line  # noqa: E402
from agents.inert_notes import inert_note  # noqa: E402
from agents.interrupts import sigterm_as_interrupt  # noqa: E402
from agents.new_folders import claim_new_folder, first_free, stamped_names, time_stamp  # noqa: E402
from agents.report import (  # noqa: E402
    failure_recorded,
    final_metrics,
    finished_report,
    mean_accuracy,
    summary_table,
    write_report,
    write_text_atomic,
)
from agents.run_config import config_for, help_answer  # noqa: E402
from agents.run_failures import file_failure, is_file_failure  # noqa: E402
from agents.run_lock import RunLocks, remove_unstarted  # noqa: E402
from agents.threads import threads_note  # noqa: E402
from memory.cache_cold_dirs import ColdTierError  # noqa: E402


def new_run_dir(cfg, create: bool = False) -> Path:
    """run_dir= as given, else <runs_root>/<env>/<agent>/<time>_s<seed>, with -1, -2 ... after the time where that
    folder exists. create=True claims a generated folder by making it: mkdir fails on one that exists, so runs
    started in the same second, in parallel too, each get their own (an exists() check let two share one)."""
    if cfg.run_dir:
        return Path(cfg.run_dir).resolve()
    names = stamped_names(Path(cfg.runs_root).resolve() / cfg.env.id / cfg.agent.name,
                          time_stamp(), f"_s{cfg.seed}")
    return claim_new_folder(names)[0] if create else first_free(names)


def fit(trainer, logger, config: dict, progress: bool = True, on_eval=None) -> dict:
    """Train to `total_episodes`, evaluating and checkpointing on schedule; returns the final metrics.

    `on_eval(trainer, values)` is called after every evaluation, the untrained one at episode 0 included (and after
    the checkpoint that may follow it), with the tag -> value dict that went to TensorBoard: the evaluation's
    (`eval/task_<j>/accuracy`, `cl/*`, `recall/*`) and, after a training episode, that episode's (`train/*`,
    `perf/*`, `memory/*`); Ray Tune trials report through it.
    """
    from agents.progress import progress_bar

    bar = progress_bar(trainer.total_episodes, trainer.episode, f"{trainer.cfg.env.id}/{trainer.cfg.agent.name}",
                       progress)  # a bar on a terminal, a line per evaluation in a log file
    try:  # closed also when a run stops (divergence, a full disk): its error line starts on a line of its own
        if trainer.episode == 0 and not trainer.curves[0]:  # untrained accuracy b[j], for FWT
            bar.set_postfix_str("evaluating every task before training")  # (can take a while: say so)
            untrained = trainer.evaluate_all()  # one evaluation of every task, the first point of each curve
            trainer.b[:] = [untrained[j] for j in range(trainer.num_tasks)]
            values = log_eval(trainer, logger)
            if on_eval is not None:  # a sweep's progress.csv starts, as the TensorBoard curves do, at b[j]
                on_eval(trainer, values)
            bar.reset()  # the rate (s/ep) counts training from here
            bar.set_postfix_str("")
        _train(trainer, logger, config, on_eval, bar)
    finally:
        bar.close()
    if not (trainer.run_dir / "checkpoints" / "last.pt").is_file():  # train.episodes=0: still a run to evaluate
        logger.flush()
        trainer.save(config)
    return final_metrics(trainer)


def _train(trainer, logger, config: dict, on_eval, bar) -> None:
    """fit's loop: train episodes, evaluate and checkpoint on schedule, until the budget is spent."""
    cfg = trainer.cfg.train
    while trainer.episode < trainer.total_episodes:
        task = trainer.current_task()
        stats = trainer.train_episode()
        trained = train_scalars(trainer, stats)
        logger.scalars(trained, trainer.train_steps)
        last = trainer.episode == trainer.total_episodes
        boundary = last or trainer.current_task() != task
        if boundary or trainer.episode % cfg.eval_every == 0:
            bar.set_postfix_str("evaluating every task")
            ev = trainer.evaluate_all()
            if boundary:  # R's row of the block just trained
                trainer.R[trainer.block_of(trainer.episode - 1)] = [ev[j] for j in range(trainer.num_tasks)]
                trainer.task_boundaries.append(trainer.train_steps)
            trainer.record_memory_usage()
        values = log_eval(trainer, logger) if boundary or trainer.episode % cfg.eval_every == 0 else None
        if last or trainer.episode % cfg.checkpoint_every == 0:
            logger.flush()  # first: a checkpoint's step keeps its points on resume, so they must be on disk
            trainer.save(config)
        if values is not None and on_eval is not None:
            on_eval(trainer, trained | values)
        bar.set_postfix(acc=_pct(stats.accuracy), loss=f"{stats.loss:.3f}" if stats.loss is not None else "-",
                        eval=_pct(mean_accuracy(trainer.last_eval.values())), task=task)
        bar.update(1)


def train_scalars(trainer, stats) -> dict:
    """A training episode's scalars (`agents.tb_tags.TRAIN_TAGS`, memory/<name>), as TensorBoard gets them."""
    return ({"train/loss": stats.loss, "train/accuracy": stats.accuracy,
             "perf/tokens_per_s": trainer.train_tokens / max(trainer.train_seconds, 1e-9)}
            | {f"perf/{k}": v for k, v in stats.milliseconds.items()}
            | {f"memory/{k}": v for k, v in stats.memory.items()})


def log_eval(trainer, logger) -> dict:
    """The evaluation scalars (README "TensorBoard" tags), written to TensorBoard and returned."""
    from agents.tb_tags import delay_tag, distance_tag, eval_accuracy_tag

    values = {eval_accuracy_tag(j): a for j, a in trainer.last_eval.items()}
    values["eval/accuracy"] = mean_accuracy(trainer.last_eval.values())
    values |= {f"cl/{k}": v for k, v in trainer.continual_metrics().items()}
    values |= {distance_tag(k): v for k, v in trainer.by_distance.result().items()}
    values |= {delay_tag(k): v for k, v in trainer.by_delay.result().items()}
    logger.scalars(values, trainer.train_steps)
    return values


def _interrupted(run_dir: Path | None) -> int:
    """Ctrl+C or SIGTERM: one line, no traceback, exit 130; the last checkpoint is whole (written atomically)."""
    saved = run_dir is not None and (run_dir / "checkpoints" / "last.pt").is_file()
    started = run_dir is not None and (run_dir / "config.yaml").is_file()  # (else: while the model and env were made)
    if saved:
        line = f"continue from the last checkpoint with: python -m agents.run {shell_arg('resume', run_dir)}"
    elif started:
        line = ("no checkpoint was written yet; start it again with: python -m agents.run "
                f"{shell_arg('config', run_dir / 'config.yaml')} {shell_arg('run_dir', run_dir)}")
    else:
        line = "nothing was written"
    print(f"\ninterrupted; {line}", file=sys.stderr)
    return 130


def check_rerun(cfg, run_dir: Path) -> None:
    """A fresh run in a folder holding a finished run's report but no checkpoint may only be that run again (the
    restart `resume=` names, `config=<run>/config.yaml run_dir=<run>`: the same numbers); another run's there wrote
    its metrics.json, config.yaml and plots over the finished run's, and its curves into the same TensorBoard run."""
    folder = folder_config(run_dir)
    differ = None if folder is None else config_difference(OmegaConf.to_container(cfg, resolve=True), folder)
    if folder is None or differ is not None:
        what = "with no readable config.yaml" if folder is None else \
            f"of another config (its config.yaml has {differ[0]}={differ[2]!r}, this run {differ[1]!r})"
        raise ConfigError(f"run_dir={str(run_dir)!r} holds a finished run {what}; a fresh run there would overwrite "
                          "its metrics.json, config.yaml and plots: choose a new run_dir")


def check_fresh_folder(cfg, run_dir: Path) -> None:
    """A new run's folder holds no run (`run_dir=`): no checkpoint, no other run's report, no config.yaml of
    another kind."""
    if (run_dir / "checkpoints" / "last.pt").exists():  # (a run stopped before its first checkpoint has nothing
        # to lose: starting it afresh in its folder is the way to rerun it)
        raise ConfigError(f"run_dir={str(run_dir)!r} already holds a run; continue it with "
                          f"{shell_arg('resume', run_dir)}, or choose a new run_dir (a fresh run there would "
                          "overwrite its checkpoint and metrics)")
    if (run_dir / "metrics.json").exists():  # a finished run without its checkpoints/ (removed: the big files)
        check_rerun(cfg, run_dir)  # was overwritten by any run given its folder
    if (run_dir / "config.yaml").exists() and \
            not set(RUN_SECTIONS) <= set(folder_config(run_dir) or {}):  # a project's own config.yaml
        raise ConfigError(f"run_dir={str(run_dir)!r} holds a config.yaml that is no run's; a run writes its own "
                          "config.yaml there and would overwrite it: choose a new run_dir")


def _keeps_sizes(run_dir: Path) -> str:
    return f" (a resumed run keeps its sizes: start a new run with config={run_dir}/config.yaml and smaller ones)"


def closing_line(run_dir: Path, runs_root: str) -> str:
    """A run's last line: its folder and the command that shows it in TensorBoard. The logdir is runs_root where the
    run lies inside it (a new run; a resumed one, or run_dir=, there): with a lone run folder as its logdir,
    TensorBoard's HParams tab shows no metric values (README "TensorBoard"). A run folder elsewhere is shown alone,
    not its parent folder (a temp folder, a home folder), which may hold anything."""
    root = Path(runs_root)
    logdir = root if root.resolve() in Path(run_dir).resolve().parents else run_dir
    return f"run folder: {run_dir}  (tensorboard --logdir {shlex.quote(str(logdir))})"  # quoted: a command to paste


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> int:
    """SIGTERM (a scheduler's stop, `kill`) ends a run as Ctrl+C does: one line, and the cleanup that a plain
    SIGTERM skips (the cache's cold-tier temp folders were left in /tmp)."""
    end_startup()  # started: Ctrl+C is KeyboardInterrupt again, caught below with what to do next
    said: list[str] = []  # the interruption's line, once printed
    try:
        with sigterm_as_interrupt(), RunLocks() as locks:  # the run folder's lock, released when the run ends
            return _main(sys.argv[1:] if argv is None else argv, locks, said)
    except KeyboardInterrupt:  # a signal while the command ended: after a first one, a second (a benchmark's
        # SIGTERM after the terminal's Ctrl+C to its process group lands in the closing flush) was a traceback
        if not said:
            print("\ninterrupted while the command ended; what it printed above stands", file=sys.stderr)
        return 130


def _main(argv: list[str], locks: RunLocks, said: list[str]) -> int:
    run_dir = cfg = resume_dir = trainer = logger = None
    made = False
    try:
        if any(a in ("-h", "--help") for a in argv):  # the keys as this command line sets them
            return help_answer(argv)
        cfg, resume_dir, checkpoint = config_for(argv, locks)
        from agents.tb_logger import TBLogger
        from agents.trainer import Trainer

        run_dir = resume_dir or new_run_dir(cfg)
        if resume_dir is None and cfg.run_dir and (run_dir / "checkpoints").is_dir():  # first: a run still going
            locks.hold(run_dir)  # there is refused as in use (not "already holds a run", which names resume=)
        if resume_dir is None:
            check_fresh_folder(cfg, run_dir)
        if resume_dir is not None:  # (held already where config_for found a run folder)
            locks.hold(run_dir)
        trainer = Trainer(cfg, run_dir)  # first: a config it refuses (device=cuda without CUDA) leaves no folder
        config = OmegaConf.to_container(cfg, resolve=True)
        if resume_dir is not None:
            trainer.restore(checkpoint, config)  # with the run's own torch thread count unless train.threads is given
            if note := threads_note(trainer.saved_threads, cfg.train.threads, "train.threads"):
                print(note, flush=True)
            if trainer.episode >= trainer.total_episodes:
                n = trainer.total_episodes
                trained = f"all its {n} episodes" if n != 1 else "its 1 episode"
                if (done := finished_report(run_dir, trainer)) is not None:  # each resume wrote its report
                    # again, in a new TensorBoard event file: nothing of it changes
                    if not set(RUN_SECTIONS) <= set(folder_config(run_dir) or {}):  # damaged: it stayed so
                        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
                        print("note: its config.yaml was damaged or incomplete; written again from its checkpoint",
                              flush=True)
                    print(f"this run is finished: it trained {trained} and wrote its report; "
                          "nothing to do (its summary, from metrics.json:)", flush=True)
                    print(summary_table(done))
                    print(closing_line(run_dir, cfg.runs_root))
                    return 0
                print(f"note: this run had trained {trained} but was stopped while "
                      "writing its report; nothing is left to train, so only its report (metrics.json, plots, "
                      "summary) is written", flush=True)
        made = resume_dir is None and (not cfg.run_dir or not run_dir.exists())  # removed if stopped before config
        try:
            if resume_dir is None and not cfg.run_dir:  # a generated name: claimed now, the trainer told
                run_dir = trainer.run_dir = new_run_dir(cfg, create=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            if resume_dir is None:  # run_dir= of a run that is starting in another process is refused
                locks.hold(run_dir)
        except OSError as exc:  # a file in the way, no permission, read-only disk
            why = "a file stands there, not a folder" if isinstance(exc, FileExistsError) else exc.strerror or exc
            raise ConfigError(f"cannot create the run folder {str(run_dir)!r} ({why}); choose "
                              "another runs_root= or run_dir=") from None
        if resume_dir is None and cfg.run_dir:  # again, now held: a run there may have ended since the check above
            check_fresh_folder(cfg, run_dir)  # (while this one made its model), and this run wrote over it
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        logger = TBLogger(run_dir, resume_step=trainer.train_steps if resume_dir else None)
        params = sum(p.numel() for p in trainer.model.parameters())
        lanes, episodes = cfg.train.lanes, trainer.total_episodes
        print(f"memstream: {cfg.env.id} / {cfg.agent.name} ({params:,} parameters), {lanes} lane{'s' * (lanes != 1)}, "
              f"{episodes} episode{'s' * (episodes != 1)} -> {run_dir}", flush=True)
        if note := inert_note(cfg, map(override_key, argv), trainer.venv):  # keys changing nothing
            print(note, flush=True)
        with failure_recorded(trainer, logger):  # diverged, a full disk: the HParams tab lists it as Failure
            metrics = fit(trainer, logger, config, progress=cfg.train.progress)
            write_report(trainer, metrics, logger)
        logger.close()
    except (ConfigError, CheckpointError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if made and run_dir is not None:  # a folder this run made, stopped before its config.yaml: not left behind
            remove_unstarted(run_dir, locks.holds(run_dir))
        code = _interrupted(run_dir)
        said.append("interrupted")  # (after the line: a signal between the two may repeat it, never drop it)
        return code
    except FloatingPointError as exc:  # a model's own check of its activations (weights that overflowed)
        print(error_line(trainer.diverged(str(exc)) if trainer is not None else exc), file=sys.stderr)
        return 2
    except ColdTierError as exc:  # the cache's cold-tier file: made with the trainer, before the run folder
        kept = f"{exc.problem}; a resumed run keeps its memory.cache_cold ({exc.size}): set TMPDIR to a folder on a " \
            f"bigger disk, or start a new run with config={run_dir}/config.yaml and a lower one"
        print(error_line(kept if resume_dir is not None else exc), file=sys.stderr)
        return 2
    except ALLOCATION_ERRORS as exc:  # sizes that do not fit: slot bank, store, cache ...
        if cfg is None or not allocation_failure(exc):  # any other RuntimeError is a bug: keep its traceback
            raise
        again = _keeps_sizes(run_dir) if resume_dir is not None else ""
        print(error_line(f"{does_not_fit(cfg, exc)}{again}"), file=sys.stderr)
        return 2
    except OSError as exc:  # the checkpoint's write says so itself (CheckpointError); this is every other file's
        # (no permission is met also before the run folder is known, looking into a folder without search (x)
        # permission: resume=, run_dir= or runs_root= of one was a PermissionError traceback)
        if not is_file_failure(exc, run_dir):
            raise
        print(error_line(file_failure(exc, run_dir)), file=sys.stderr)
        return 2
    finally:  # a run stopped early: the points it logged reach its event file (the writer's thread dies with us)
        if logger is not None:
            with suppress(OSError):  # a full disk: the run's own line (above) says what matters
                logger.close()
    print(summary_table(metrics))
    print(closing_line(run_dir, cfg.runs_root))
    return 0


if __name__ == "__main__":
    finish(main())
