"""What a sweep folder saved, read without starting Ray: the plan and base config it started with (`resume=`),
whether it stopped before its first trial, and whether every planned trial ended."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from agents.config import ConfigError, validate
from agents.run_lock import RUN_LOCK
from agents.tune_preflight import check_tune_state, damaged, ray_log_while
from agents.tune_signals import TUNER_STATE, tune_saved_trials
from agents.tune_space import SweepPlan, make_plan

PLAN_FILE = "sweep.yaml"


def load_saved_plan(sweep_dir: Path) -> tuple[SweepPlan, dict]:
    """The plan and base config a sweep folder was started with (`resume=`)."""
    from ray.tune import Tuner

    path = sweep_dir / PLAN_FILE
    if before_any_trial(sweep_dir) or Tuner.can_restore(str(sweep_dir)) and not tune_saved_trials(sweep_dir):
        # killed (SIGKILL) while Ray or Tune started: its folder stays (Ctrl+C and SIGTERM remove it); resume= of it
        # said "is not a sweep folder", or, with Tune's tuner.pkl and no trials saved, ran one trial of none of the
        # swept values, then failed on its null memory.slots
        raise ConfigError(f"sweep folder {str(sweep_dir)!r} holds no trial: the sweep was stopped before its first "
                          "trial started (while Ray and Tune started), so nothing is there to continue; start the "
                          "sweep again with its own command line")
    if not path.is_file() or not Tuner.can_restore(str(sweep_dir)):
        empty = sweep_dir.is_dir() and not any(sweep_dir.iterdir())
        raise ConfigError(f"resume={str(sweep_dir)!r} is not a sweep folder (needs {PLAN_FILE} and Tune's "
                          "experiment state); point it at runs/sweeps/<sweep>/<time>" + (
                              " (an empty one is what a sweep killed while Ray started leaves: start it again)"
                              if empty else ""))
    try:
        saved = yaml.safe_load(path.read_text())
        plan = make_plan(saved["plan"].pop("name"), saved["plan"])
        base = OmegaConf.to_container(validate(OmegaConf.create(saved["base"])), resolve=True)
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ConfigError(damaged(path)) from None
    check_tune_state(sweep_dir)
    return plan, base


def before_any_trial(sweep_dir: Path) -> bool:
    """A sweep folder as a sweep leaves it after Ray started, before Tune saved its state (its first
    experiment_state-*.json, written as its first trials are made): ray.log and sweep.yaml (or its temp file), and
    what Tune writes as its Tuner is made (tuner.pkl, a storage marker); no trial folder. (An empty folder may be any
    folder: its line only adds the case.)"""
    try:
        names = [p.name for p in sweep_dir.iterdir() if not p.is_dir()] if sweep_dir.is_dir() else None
        folders = any(p.is_dir() for p in sweep_dir.iterdir()) if names is not None else True
    except OSError:
        return False
    early = ("ray.log", PLAN_FILE, TUNER_STATE, ".validate_storage_marker", RUN_LOCK)
    return bool(names) and not folders and all(n in early or n.startswith(f".{PLAN_FILE}.") for n in names)


def finished_trials(sweep_dir: Path, plan: SweepPlan) -> list | None:
    """The trials of a sweep folder whose every planned trial ended (read without starting Ray), or None: some trial
    is to run or go on, or one failed (resume= retries it), or the saved state does not read (the restore says why).
    Tune makes trials only as places free up (max_concurrent), so the saved ones may all have ended while others
    were never made: all of `planned_trials` must be there."""
    from ray.tune import ExperimentAnalysis

    try:  # before Ray starts, Ray's logger still prints (Tune warned in 3 lines of trials that had not reported yet)
        with ray_log_while(sweep_dir):
            trials = ExperimentAnalysis(str(sweep_dir)).trials
    except Exception:  # noqa: BLE001  (Tune.restore reads the same state and names what is wrong with it)
        return None
    ended = len(trials) == planned_trials(plan) and all(t.status == "TERMINATED" for t in trials)
    return trials if ended else None


def planned_trials(plan: SweepPlan) -> int:
    """How many trials the sweep makes: num_samples x the size of every grid (random dimensions draw per trial)."""
    grids = [len(args) for spec in plan.search_space.values() for kind, args in spec.items() if kind == "grid"]
    return plan.num_samples * math.prod(grids)
