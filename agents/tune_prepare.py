"""What `python -m agents.tune` checks before Ray starts (`prepare`: the sweep file, the run config, the swept keys
and values, the metric), and `early_answer`, which runs it while the command starts: nothing here loads torch,
matplotlib or Ray, so agents/tune.py refuses a bad sweep in ~0.6 s, where the line came after ~5 s of imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from agents.cli_args import answer_early, override_key
from agents.config import ConfigError, absolute_env_paths, absolute_path, check_utf8_texts, load_config
from agents.inert_notes import baseline_model_keys, inert_note, train_inert_keys
from agents.new_folders import first_free, stamped_names, time_stamp
from agents.tune_command_line import parse_command_line
from agents.tune_metrics import LOWER_IS_BETTER, check_metric, default_metric, missing_in, sweep_facts
from agents.tune_overrides import merge_overrides, override_value, pin_swept_keys, resolve_overrides
from agents.tune_space import SweepPlan, check_space_keys, load_sweep, trial_threads


def early_answer(argv: list[str]) -> int | None:
    """2 after the one `error:` line of a new sweep's command line that `prepare` refuses (as `agents.tune.main`
    prints it); None: go on (a valid line, --help, or a `resume=`, which reads the saved sweep with Ray)."""
    if any(a in ("-h", "--help") for a in argv):
        return None
    try:
        if parse_command_line(argv).resume is not None:
            return None
    except ConfigError:  # prepare's own first check: its line comes from there
        pass
    return answer_early(prepare, argv, _checked)


# what early_answer prepared, which main()'s prepare of the same line takes: its notes are printed once
_checked: dict[tuple[str, ...], tuple] = {}


def prepare(argv: list[str]) -> tuple[SweepPlan, dict, Path]:
    """Everything checked before Ray starts: sweep file, run config, swept keys and values, metric. Its notes are
    printed once all of it passed: a refused line is the one `error:` line (a note printed before it made two)."""
    if tuple(argv) in _checked:
        return _checked.pop(tuple(argv))
    cli = parse_command_line(argv)
    plan = load_sweep(cli.sweep, cli.sweep_overrides, cli.num_samples)
    pinned = pin_swept_keys(plan, cli.run_overrides)
    notes = [f"note: {', '.join(pinned)} fixed on the command line, not swept"] if pinned else []
    check_num_samples(plan)  # after pinning: a pinned random key leaves fewer settings to draw
    plan.overrides = resolve_overrides(plan, cli.run_overrides)
    plan.env_overrides = {}  # applied: plan.overrides is now the full list
    base = load_config(plan.overrides)
    check_thread_keys(plan, base)
    check_utf8_texts({f"env.kwargs.{k}": v for k, v in base.env.kwargs.items()})  # the trials' TensorBoard hparams
    absolute_paths(plan, base)
    check_space_keys(plan, base)
    # a baseline's trials differ in nothing a swept memory.* key sets, nor the LSTM's and GRU's in a swept model.heads
    # or model.window, nor supervised ones in REINFORCE's settings. MemNet's inert memory keys depend on each trial's
    # values, so its note leaves them out, and no note names a key whose inertness a swept key decides
    decided_by = {"model.dropout": ("model.layers", "train.mode", "train.acting"),
                  "train.entropy_coef": ("train.mode",), "train.baseline_decay": ("train.mode",)}
    memnet = base.agent.name == "memnet"
    keys = [k for k in [*plan.search_space, *map(override_key, cli.run_overrides)]
            if not any(d in plan.search_space for d in decided_by.get(k, ())) and
            not (memnet and k.startswith("memory."))]
    if note := inert_note(base, keys):
        inert = baseline_model_keys(base, keys) | train_inert_keys(base, keys)
        live = [k for k in plan.search_space if k not in inert
                and (memnet or not k.startswith("memory.") or k == "memory.reset")]
        notes.append(f"{note} (the trials differ only in {', '.join(live)})" if live else
                     f"{note} (every trial of this sweep runs the same settings)")
    corners, facts, episodes = sweep_facts(plan.search_space, base)  # what each trial length and env reports
    plan.metric = check_metric(plan.metric or default_metric(facts), facts)
    missing = missing_in(plan.metric, corners, facts)
    if missing:
        notes.append(f"note: sweep.metric={plan.metric}: trials with {'; '.join(map(_corner_text, missing))} do not "
                     "report it (NaN: they cannot be the best trial)")
    if plan.metric in LOWER_IS_BETTER and plan.mode == "max":  # the sweep files' mode: the best was the worst
        notes.append(f"note: sweep.metric={plan.metric} is better lower, and sweep.mode=max ranks its largest value "
                     "best; add sweep.mode=min")
    s = plan.scheduler
    limit = f"sweep.scheduler.max_t={s['max_t']}" if s["max_t"] is not None else \
        f"the episodes of the longest trial ({episodes})"
    if s["max_t"] is None:
        s["max_t"] = episodes
    if s["type"] == "asha" and s["grace_period"] > s["max_t"]:  # fifo: unused
        raise ConfigError(f"sweep.scheduler.grace_period={s['grace_period']} must be <= {limit}; set "
                          f"sweep.scheduler.grace_period={s['max_t']} or less, or sweep.scheduler.type=fifo (no "
                          "early stopping)")
    root = Path(base.runs_root).resolve() / "sweeps" / plan.name
    sweep_dir = root / "<stamp>"
    try:  # the name to show; run_sweep claims one as it makes it (`make_sweep_folder`)
        sweep_dir = first_free(stamped_names(root, time_stamp()))
    except OSError as exc:  # runs_root without search permission: Path.exists raised it, a traceback
        raise ConfigError(f"cannot create the sweep folder {str(sweep_dir)!r} ({exc.strerror or exc}); choose "
                          "another runs_root=") from None
    for line in notes:
        print(line, file=sys.stderr)
    return plan, OmegaConf.to_container(base, resolve=True), sweep_dir


def check_thread_keys(plan: SweepPlan, base) -> None:
    """`train.threads=` / `memory.store_threads=` that a trial would not run with (each runs with
    sweep.resources.threads of both), on the command line, in the sweep file's overrides or swept: one line with the
    fix. They were dropped silently (a swept train.threads ran the same trial under two labels)."""
    threads = plan.resources["threads"]
    for key in trial_threads(threads):  # what every trial sets to sweep.resources.threads
        if key in plan.search_space:
            raise ConfigError(f"sweep.search_space.{key}: cannot be swept, every trial runs with "
                              f"sweep.resources.threads={threads} torch and FAISS threads; drop it")
        value = OmegaConf.select(base, key)
        if key in map(override_key, plan.overrides) and value != threads:
            fix = f"set sweep.resources.threads={value} instead" if value >= 1 else \
                "drop it (sweep.resources.threads=N sets the trials' threads)"
            raise ConfigError(f"{key}={value}: every trial of a sweep runs with sweep.resources.threads={threads} "
                              f"torch and FAISS threads; {fix}")


def check_num_samples(plan: SweepPlan) -> None:
    """num_samples no larger than the distinct settings the random dimensions can draw for a grid point: every trial
    runs with the same seed, so two draws of the same settings are the same trial run twice (deterministic on a
    CPU), which the rule for a grid value listed twice already refuses. No random dimension: one setting, so
    num_samples=2 of an all-grid space (the smoke sweep with its random key pinned) repeated every trial.
    Only this bound: with a uniform or loguniform dimension each draw differs, and a long random search is a
    valid sweep; Tune makes its trials one by one (num_samples=10**30 plans nothing up front), the status line
    counts them, and Ctrl+C then resume= keeps what ran."""
    draws, sizes = 1, []
    for key, spec in plan.search_space.items():
        ((kind, args),) = spec.items()
        if kind in ("uniform", "loguniform"):
            return
        if kind in ("choice", "randint", "lograndint"):  # an integer range is [low, high)
            # a choice's distinct values as a grid counts them (==): a float key holds 1 and 1.0 as one value (their
            # reprs differ: choice:[0.5,1,1.0] let num_samples=3 repeat a trial); true and 1 fit no key both
            n = sum(v not in args[:i] for i, v in enumerate(args)) if kind == "choice" else args[1] - args[0]
            draws, sizes = draws * n, [*sizes, f"{key}: {n:,}"]
    if plan.num_samples > draws:
        space = f"its random dimensions draw at most {draws:,} distinct settings ({', '.join(sizes)})" if sizes \
            else "its search space has no random dimension (grid only): one setting"
        raise ConfigError(f"num_samples={plan.num_samples:,}: {space} per grid point, and every trial runs with "
                          f"the same seed, so some trials would repeat another exactly; give num_samples={draws:,}"
                          f"{' or less' if draws > 1 else ''} (to repeat each setting with other seeds, sweep the "
                          "seed: sweep.search_space.seed=grid:[0,1,2])")


def _corner_text(corner: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in corner.items())


def absolute_paths(plan: SweepPlan, base) -> None:
    """Env options that name a file (`*_path`) made absolute in the base config, the plan's overrides
    (best_overrides.txt) and the swept values: Ray runs each trial in its own working directory."""
    for option, path in absolute_env_paths(base).items():
        base.env.kwargs[option] = path
        plan.overrides = merge_overrides(plan.overrides, [f"++env.kwargs.{option}={override_value(path)}"])
    for key, spec in plan.search_space.items():
        (kind, args), = spec.items()
        if key.startswith("env.kwargs.") and key.endswith("_path") and kind in ("grid", "choice"):
            plan.search_space[key] = {kind: [absolute_path(v) for v in args]}
