"""Validation of constructor and reset options: one clear one-line `ValueError` per bad value.

Every message names the option, the value given and the allowed range, so that a typo in a Hydra override
(`env.kwargs.delay=-3`) fails at construction instead of deep inside a numpy call later.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

PHASES = ("train", "eval")  # what reset(options={"phase": ...}) accepts; envs may report finer phases in info


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high] (high=None: no upper bound); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer in {_range(low, high)}, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in {_range(low, high)}, got {value}")
    return value


# every seed (a reset's, each lane's, world_seed, a run's `seed`) is below this: numpy takes any int >= 0, but a
# run's seed also seeds torch, which refuses 2^64, and the 32-bit seeds are what the CLI always accepted; one bound
# for all, so that no seed the env takes is one that a run of it refuses
SEED_LIMIT = 2**32


def check_seed(value: Any, name: str = "seed") -> int:
    """A reset seed: an int in [0, SEED_LIMIT) (numpy integers too); bools and floats are refused (int(1.9) would
    seed 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2^32) or None, got {value!r}")
    return int(value)


def check_world_seed(value: Any) -> int:
    """The world_seed option: an int in [0, SEED_LIMIT), as every seed."""
    return check_int("world_seed", value, 0, SEED_LIMIT - 1)


def check_float(name: str, value: Any, low: float, high: float) -> float:
    """`value` as a finite float in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:  # also refuses NaN; compared before float(), which overflows on an int like 10**400
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """True or False (numpy's bools too); 1, 0 and "yes" are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_int_tuple(name: str, value: Any, low: int, high: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence (or 1-D numpy array) of integers in [low, high], returned sorted without duplicates."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list of integers in {_range(low, high)}, got {value!r}")
    items = [check_int(f"{name}[{i}]", v, low, high) for i, v in enumerate(value)]
    return tuple(sorted(set(items)))


def check_vocab(name: str, vocab_size: int, needed: int, why: str) -> None:
    """Refuse a vocabulary smaller than `needed` tokens; `why` says what the tokens are for."""
    if vocab_size < needed:
        raise ValueError(f"{name}={vocab_size} is too small for {why}: needs at least {needed}")


def parse_reset_options(options: Any, num_tasks: int) -> tuple[str, int]:
    """`reset(options=...)` -> (phase, task_id).

    None or {} or {"phase": "train"}: the next training episode (task_id -1: the schedule decides).
    {"phase": "eval", "task_id": j}: an eval episode of task j (task_id defaults to 0).
    """
    if options is None:
        return "train", -1
    if not isinstance(options, dict):
        raise ValueError(f"reset options must be a dict or None, got {type(options).__name__}")
    unknown = sorted(set(options) - {"phase", "task_id"}, key=str)
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; allowed: 'phase' ('train'|'eval'), 'task_id'")
    phase = check_choice("reset option 'phase'", options.get("phase", "train"), PHASES)
    if phase == "train":
        if "task_id" in options:
            raise ValueError("reset option 'task_id' selects an eval episode: pass phase='eval' with it "
                             "(training episodes follow the env's schedule)")
        return "train", -1
    task_id = check_int("reset option 'task_id'", options.get("task_id", 0), 0, num_tasks - 1)
    return "eval", task_id


def _range(low: int, high: int | None) -> str:
    return f"[{low}, {high}]" if high is not None else f"[{low}, inf)"
