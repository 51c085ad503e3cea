"""`python -m agents.tune env=<id> [sweep=<name>] [num_samples=N] [key=value ...]`: a Ray Tune sweep.

    python -m agents.tune env=ContinualShift-v0                         # sweep "memory", ASHA on cl/ACC
    python -m agents.tune env=ContinualShift-v0 sweep=smoke             # 4 tiny trials
    python -m agents.tune env=LongDependency-v0 sweep.search_space.memory.slots=grid:[8,32] train.episodes=40
    python -m agents.tune resume=runs/sweeps/memory/2026-11-22_10-00-00 # continue an interrupted sweep

Arguments: `sweep=`, `num_samples=`, `resume=` are this command's; `sweep.<field>=value` edits the sweep
file (`sweep.metric=cl/BWT`, `sweep.mode=min`, `sweep.resources.cpus=2`, `sweep.scheduler.type=fifo`, ...);
every other `key=value` goes to the run config of every trial (checked before Ray starts; not run_dir=, as each
trial writes its own folder). Results go to `<runs_root>/sweeps/<sweep>/<time>/` (the Tune experiment
folder): one trial folder each (a full run folder: TensorBoard events, checkpoints, metrics.json),
results.csv/json, best_config.yaml, best_overrides.txt, plots/, ray.log. Ray: local when RAY_ADDRESS is
unset, the cluster at RAY_ADDRESS when set.
"""

from __future__ import annotations

from agents.startup import end_startup, finish, guard_startup

if __name__ == "__main__":  # Ctrl+C or SIGTERM while its imports load (seconds): one line
    guard_startup("nothing was written")
    import sys

    from agents.tune_prepare import early_answer  # loads no torch or Ray: a bad sweep is refused in ~0.6 s

    if (_answer := early_answer(sys.argv[1:])) is not None:
        finish(_answer)

import logging  # noqa: E402  (after the guard above)
import os
import pickle
import shlex
import signal
import sys
import warnings
from pathlib import Path

from agents.checkpoint import CheckpointError
from agents.checkpoint_paths import shell_arg
from agents.cli_args import counted
from agents.config import ConfigError
from agents.config_messages import error_line
from agents.interrupts import sigterm_as_interrupt
from agents.tune_command_line import parse_command_line
from agents.tune_preflight import (
    check_local_resources,
    check_reachable,
    connect_error,
    damaged,
    lock_sweep,
    log_ray_to,
    make_sweep_folder,
    readable_sweep,
    remove_unstarted_sweep,
    unlock_sweep,
    write_plan,
)
from agents.tune_prepare import prepare
from agents.tune_restore import check_ray_lock_folder, stop_on_failed_restore
from agents.tune_results import (
    DIVERGED,
    ERROR,
    UNFINISHED,
    format_table,
    rerun_command,
    result_rows,
    write_results,
)
from agents.tune_saved import PLAN_FILE, before_any_trial, finished_trials, load_saved_plan, planned_trials
from agents.tune_signals import (
    INTERRUPTED,
    catch_sigterm,
    init_ray_held,
    interrupted_line,
    restore_handlers,
    saved_handlers,
)
from agents.tune_space import SweepPlan


def start_ray(sweep_dir: Path) -> bool:
    """Connect to RAY_ADDRESS or start a local Ray, quietly: Ray's log lines go to <sweep dir>/ray.log.
    Returns whether this call started Ray (then the caller shuts it down)."""
    import ray

    started = not ray.is_initialized()
    address = os.environ.get("RAY_ADDRESS") or None  # empty is unset (it was ray.init's "Invalid address" traceback)
    if started:  # errors still reach the terminal while Ray starts; the rest of its chatter does not
        check_reachable(address)
        try:
            # unset: "local", a new Ray of this sweep's own; ray.init(address=None) joined the cluster a `ray start`
            # left in /tmp/ray/ray_current_cluster (another user's too), where the local CPU check meant nothing
            init_ray_held(address=address or "local", include_dashboard=False, log_to_driver=False,
                          configure_logging=True, logging_level=logging.ERROR)
        except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
            raise ConfigError(connect_error(address, exc)) from None
        except ValueError as exc:  # ray.init parses the address before it connects; our other arguments are fixed
            if not address:
                raise
            why = " ".join(str(exc).split())  # one line: Ray's words for an http:// address span four
            raise ConfigError(f"RAY_ADDRESS={address!r}: not a Ray address ({why}); set it to host:port of a "
                              "cluster's head (e.g. 127.0.0.1:6379) or unset it for a local Ray") from None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log_ray_to(sweep_dir)
    return started


def _trainable(plan: SweepPlan, base: dict, sweep_dir: Path):
    from ray import tune

    from agents.tune_trial import run_trial

    trainable = tune.with_parameters(run_trial, base=base, sweep_dir=str(sweep_dir),
                                     threads=plan.resources["threads"], metric=plan.metric)
    return tune.with_resources(trainable, {"cpu": plan.resources["cpus"], "gpu": plan.resources["gpus"]})


def build_tuner(plan: SweepPlan, base: dict, sweep_dir: Path, callbacks=()):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from agents.tune_csv import ProgressCSV, ResultJSON
    from agents.tune_progress import ProgressLine
    from agents.tune_space import build_param_space
    from agents.tune_trial import trial_dirname

    s = plan.scheduler
    scheduler = FIFOScheduler()
    if s["type"] == "asha":  # metric and mode are set once, in TuneConfig; ASHA's clock is training episodes
        scheduler = ASHAScheduler(time_attr="episode", max_t=s["max_t"], grace_period=s["grace_period"],
                                  reduction_factor=s["reduction_factor"])
    # the same seed draws the same trials; the limit lives in the searcher: Tune ignores TuneConfig's
    # max_concurrent_trials when it is given one (it said so only in ray.log, and ran two trials at once)
    searcher = BasicVariantGenerator(random_state=base["seed"], max_concurrent=plan.max_concurrent)
    tune_config = tune.TuneConfig(metric=plan.metric, mode=plan.mode, scheduler=scheduler,
                                  search_alg=searcher, num_samples=plan.num_samples, reuse_actors=True,
                                  trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=sweep_dir.name, storage_path=str(sweep_dir.parent), verbose=0, log_to_file=True,
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        # no Tune TensorBoard logger (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): each trial writes its own run
        callbacks=[ProgressCSV(), ResultJSON(),
                   ProgressLine(plan.metric, plan.mode, planned_trials(plan)),
                   *callbacks])
    return tune.Tuner(_trainable(plan, base, sweep_dir), param_space=build_param_space(plan.search_space),
                      tune_config=tune_config, run_config=run_config)


def run_sweep(plan: SweepPlan, base: dict, sweep_dir: Path, restore: bool = False, callbacks=()) -> int:
    """Run (or restore) the sweep, then print the table and write the results; returns the exit code."""
    os.environ.update(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AIR_NEW_OUTPUT="0")  # build_tuner; verbose=0: quiet
    check_local_resources(plan.resources, base, plan.search_space)
    check_ray_lock_folder()  # before Ray starts: a resume takes a lock there
    previous = saved_handlers()  # put back at the end: ray.init and Tune install their own
    (sweep_dir, made), lock = make_sweep_folder(sweep_dir, new=not restore), None
    try:
        lock = lock_sweep(sweep_dir)  # before Ray starts: a resume= of a sweep still running is one line
        started = start_ray(sweep_dir)
    except BaseException as exc:  # Ray did not start (bad address, auth, Ctrl+C): no empty sweep folder left behind
        unlock_sweep(lock, sweep_dir, made)
        if isinstance(exc, KeyboardInterrupt):  # main's line names this folder (not the name prepare showed)
            exc.sweep_dir = sweep_dir
        raise
    catch_sigterm()  # after ray.init: SIGTERM does what Ctrl+C does (agents.tune_signals)
    try:
        try:
            trials = _fit(plan, base, sweep_dir, restore, callbacks)
        finally:
            restore_handlers({signal.SIGINT: previous[signal.SIGINT]})  # Tune's, unless it fired
            if started:
                import ray

                ray.shutdown()
        return _report(trials, plan, base, sweep_dir)
    except (KeyboardInterrupt, ConfigError) as exc:  # after Ray started, before Tune saved its state: no trial ran
        if not restore and before_any_trial(sweep_dir):  # its line says so, and the folder goes, as while Ray starts
            remove_unstarted_sweep(sweep_dir, made)
        if isinstance(exc, KeyboardInterrupt):
            exc.sweep_dir = sweep_dir
        raise
    finally:
        unlock_sweep(lock, sweep_dir, [])
        restore_handlers(previous)


def _fit(plan: SweepPlan, base: dict, sweep_dir: Path, restore: bool, callbacks) -> list:
    """Run (or restore) the sweep on the Ray started; returns its trials as saved."""
    from ray.tune import ExperimentAnalysis, Tuner

    if not restore:
        write_plan(sweep_dir / PLAN_FILE, {"plan": plan.to_dict(), "base": base})
    cpus, gpus = plan.resources["cpus"], plan.resources["gpus"]
    print(f"memstream sweep {plan.name!r}: {', '.join(plan.search_space)} -> {plan.metric} ({plan.mode}), "
          f"{cpus} CPU(s){f' and {gpus:g} GPU(s)' if gpus else ''} per trial -> {sweep_dir}", flush=True)
    if restore:
        trainable = _trainable(plan, base, sweep_dir)
        try:
            tuner = Tuner.restore(str(sweep_dir), trainable=trainable, resume_errored=True)
        except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as exc:
            # what unpickling a cut-short or overwritten tuner.pkl raises; Tune's own ValueErrors here
            # (a saved state this trainable does not match) also mean a folder we cannot continue
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            raise ConfigError(damaged(sweep_dir / "tuner.pkl", why)) from None
    else:
        tuner = build_tuner(plan, base, sweep_dir, callbacks)
    # ASHA's quantile of a rung whose metric is still NaN (cl/ACC before a task ends) warns: not ours to show
    with warnings.catch_warnings(), stop_on_failed_restore(sweep_dir, restore):
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        tuner.fit()
    # the saved experiment state, not fit()'s in-memory trials: after an interruption those read
    # TERMINATED, while the saved state keeps them RUNNING / PENDING for resume=
    return ExperimentAnalysis(str(sweep_dir)).trials


def _report(trials: list, plan: SweepPlan, base: dict, sweep_dir: Path) -> int:
    """The table, the results files and the closing lines; returns the exit code."""
    rows = result_rows(trials, plan, plan.metric)
    finished = all(r["status"] != UNFINISHED for r in rows)
    try:  # a full disk at the end: one line (the trials' results stay in Ray's state, resume= writes them again)
        best = write_results(sweep_dir, rows, plan, base, plan.metric)
    except OSError as exc:
        fix = "make it writable" if isinstance(exc, PermissionError) else "free space"  # (it said free space)
        print(error_line(f"cannot write the results in {sweep_dir} ({exc.strerror or exc}); {fix}, then write "
                         f"them again with: python -m agents.tune {shell_arg('resume', sweep_dir)}"), file=sys.stderr)
        return 2
    print(format_table(rows, list(plan.search_space), plan.metric, best, plan.mode))
    if not finished:
        print(f"sweep interrupted; continue it with: python -m agents.tune {shell_arg('resume', sweep_dir)}")
        return INTERRUPTED
    if best is None:
        print(f"no trial reported {plan.metric}: no trial failed, {_never_measured(plan.metric)}; pick another with "
              f"sweep.metric= (Ray's log: {sweep_dir}/ray.log)"
              if not any(r["status"] in (ERROR, DIVERGED) for r in rows) else
              f"no trial reported {plan.metric}; see {sweep_dir}/ray.log and the trials' error.txt")
        return 1
    failed = [r for r in rows if r["status"] == ERROR]
    if failed:
        n = plan.max_failures  # -1: Ray retries without limit
        retries = f"{n} retr{'y' if n == 1 else 'ies'}" if n >= 0 else "retries without limit"
        print(f"{len(failed)} trial(s) failed after {retries}; see <trial folder>/error.txt")
    if diverged := [r for r in rows if r["status"] == DIVERGED]:
        print(f"{len(diverged)} trial(s) diverged, not retried (the same again from their checkpoint): their lines "
              "above say which setting to lower")
    print(f"best: trial {best['trial']} {plan.metric}={best[plan.metric]:.4g}")
    print(f"best config: {sweep_dir / 'best_config.yaml'}\n"
          f"  rerun it:  {rerun_command(sweep_dir)}\n"
          f"  curves:    tensorboard --logdir {shlex.quote(str(sweep_dir))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    end_startup()  # Ctrl+C is KeyboardInterrupt again, caught below
    with sigterm_as_interrupt():  # and SIGTERM (before Ray starts: it killed the command silently, exit 143)
        return _main(sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    sweep_dir = None
    try:
        cli = parse_command_line(argv)
        if cli.resume is not None:
            sweep_dir = Path(cli.resume).resolve()  # first: a Ctrl+C in the check's import of Ray Tune continues it
            readable_sweep(sweep_dir)
            plan, base = load_saved_plan(sweep_dir)
            if (trials := finished_trials(sweep_dir, plan)) is not None:  # Ray started (~30 s) to find nothing to run
                ended = f"{'its' if len(trials) == 1 else 'all'} {counted(len(trials), 'trial')} ended"
                print(f"note: this sweep had finished: {ended}, so nothing is resumed; its results are written again",
                      flush=True)
                return _report(trials, plan, base, sweep_dir)
            return run_sweep(plan, base, sweep_dir, restore=True)
        plan, base, sweep_dir = prepare(argv)
        return run_sweep(plan, base, sweep_dir)
    except (ConfigError, CheckpointError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl+C or SIGTERM outside Tune's own handling (agents.tune_signals)
        print(f"\n{interrupted_line(getattr(exc, 'sweep_dir', sweep_dir))}", file=sys.stderr)
        return INTERRUPTED


def _never_measured(metric: str) -> str:
    """Why a sweep whose trials all finished has no value of `metric`, as a phrase."""
    if metric.startswith("recall/accuracy_d"):  # a bucket fills only where some evaluation query falls in it
        which = "delay" if metric.startswith("recall/accuracy_delay") else "distance bucket"
        return (f"so no evaluation query fell in that {which}: the env's options may not reach it, or the "
                "evaluations sampled too few queries (raise train.lanes or train.eval_repeats)")
    return "so this env never measures it"


if __name__ == "__main__":
    finish(main())
