"""The trainer fields of a checkpoint (`Trainer.trainer_state`), checked before any of them is used; its env files.

A field that loads but holds the wrong type, shape or range (hand-edited, another memstream's) failed deep inside
a resumed run or a re-evaluation (`KeyError: 1` from curves, FaissStore refusing a negative episode, `'<' not
supported` from a string counter); `check_trainer_fields` names the field in the checkpoint's one line instead.

`env_files` records the content of the files a run's episodes were made from (NeedleRecall's haystack_path), and
`check_env_files` refuses a restore whose file under the same path now holds other content: the env is not pickled
but rebuilt from its config, so an edited file made a resumed run go on in another world without a word.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from agents.checkpoint import CheckpointError, run_dir_of
from memory.config import MAX_THREADS

TRAIN, EVAL = 0, 1  # reset_log phases (agents.trainer)


def agent_entry(body: dict, path: str | Path) -> dict | None:
    """An Agent save's own record ({"episodes": n >= 0, "last_task": task or -1}), None in a run's checkpoint; a
    damaged one is the garbled-checkpoint line (agents.evaluate read past it and cleared other tasks)."""
    own = body.get("agent")
    if own is not None and not (isinstance(own, dict) and isinstance(own.get("episodes"), int) and own["episodes"] >= 0
                                and isinstance(own.get("last_task"), int) and own["last_task"] >= -1):
        raise garbled(path, f"agent: {str(own)[:80]}, not an Agent's episode count and last task")
    return own


def garbled(path: str | Path, detail: str) -> CheckpointError:
    """The one line for a checkpoint that loads but does not hold what this memstream saves."""
    return CheckpointError(f"checkpoint {str(path)!r} does not hold what this memstream saves ({detail}); it is "
                           "damaged or foreign: re-run the experiment")


class _Bad(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(f"trainer.{field}: {problem}")


def _show(value) -> str:
    """A short one-line description of a value for the message."""
    if torch.is_tensor(value):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_acc(v) -> bool:  # an accuracy, or NaN (nothing scored / not evaluated)
    return _is_num(v) and (math.isnan(v) or 0.0 <= v <= 1.0)


def _count(tr: dict, field: str) -> int:
    v = tr[field]
    if not _is_int(v) or v < 0:
        raise _Bad(field, f"{_show(v)}, not an int >= 0")
    return v


def _list(value, field: str) -> list:
    if not isinstance(value, list):
        raise _Bad(field, f"{_show(value)}, not a list")
    return value


def _ints(value, field: str, what: str = "ints >= 0") -> list[int]:
    """A list of ints >= 0 in increasing order (steps)."""
    value = _list(value, field)
    if not all(_is_int(v) and v >= 0 for v in value) or any(a > b for a, b in zip(value[:-1], value[1:], strict=True)):
        raise _Bad(field, f"{_show(value)}, not a list of increasing {what}")
    return value


def _accuracies(value, field: str, n: int) -> None:
    if not isinstance(value, list) or len(value) != n or not all(_is_acc(a) for a in value):
        raise _Bad(field, f"{_show(value)}, not a list of {n} accuracies in [0, 1] (or NaN)")


def _task_map(value, field: str, tasks: int, empty: bool) -> dict:
    """A mapping from every task id ('0'..'T-1', strings) to a value; `empty`: or no task at all."""
    if not isinstance(value, dict):
        raise _Bad(field, f"{_show(value)}, not a mapping of task ids")
    if set(value) != {str(j) for j in range(tasks)} and not (empty and not value):
        raise _Bad(field, f"has keys {_show(sorted(value, key=str))}, not the task ids 0..{tasks - 1}")
    return value


def _by_key(value, field: str, edges: list[int] | None, exact: bool) -> None:
    """An AccuracyByKey.state_dict(); `exact`: its edges must be `edges` (it is loaded, not recomputed)."""
    if not isinstance(value, dict) or set(value) != {"edges", "keys", "correct", "total"}:
        raise _Bad(field, f"{_show(value)}, not accuracy counts (edges, keys, correct, total)")
    if value["edges"] is not None:
        _ints(value["edges"], f"{field}.edges")
    if exact and value["edges"] != edges:
        raise _Bad(f"{field}.edges", f"{_show(value['edges'])}, this env buckets by {edges}")
    keys, correct, total = (_list(value[k], f"{field}.{k}") for k in ("keys", "correct", "total"))
    if not len(keys) == len(correct) == len(total):
        raise _Bad(field, f"keys, correct and total have lengths {len(keys)}, {len(correct)}, {len(total)}")
    if value["edges"] is not None and keys != value["edges"]:
        raise _Bad(f"{field}.keys", f"{_show(keys)}, not its edges {_show(value['edges'])}")
    _ints(keys, f"{field}.keys", "distinct ints >= 0")
    if len(set(keys)) != len(keys):
        raise _Bad(f"{field}.keys", f"{_show(keys)}, not distinct")
    for c, t in zip(correct, total, strict=True):
        if not (_is_int(c) and _is_int(t) and 0 <= c <= t):
            raise _Bad(field, f"correct {_show(c)} of total {_show(t)}, not counts with 0 <= correct <= total")


def _lifetimes(value, lanes_slots: tuple[int, int] | None) -> None:
    field = "slot_lifetimes"
    if lanes_slots is None or value is None:  # no slot bank; None: a checkpoint from before it was kept
        if value is not None:
            raise _Bad(field, f"{_show(value)}, but this run has no slot bank (None)")
        return
    if not isinstance(value, dict) or "step" not in value or "born" not in value or \
            not ({"done_counts", "done"} & set(value)):
        raise _Bad(field, f"{_show(value)}, not a slot lifetime state (step, born, done_counts)")
    step = value["step"]
    if not _is_int(step) or step < 0:
        raise _Bad(f"{field}.step", f"{_show(step)}, not an int >= 0")
    born = value["born"]
    if not torch.is_tensor(born) or born.dtype != torch.int64 or tuple(born.shape) != lanes_slots:
        raise _Bad(f"{field}.born", f"{_show(born)}, not an int64 tensor of shape {lanes_slots} (lanes, slots)")
    if born.numel() and (int(born.min()) < -1 or int(born.max()) > step):
        raise _Bad(f"{field}.born", f"holds steps outside -1..{step} (its step)")
    name = "done_counts" if "done_counts" in value else "done"
    done = value[name]
    if not torch.is_tensor(done) or done.dim() != 1 or done.dtype.is_floating_point or done.dtype == torch.bool \
            or done.is_complex() or (done.numel() and int(done.min()) < 0):
        raise _Bad(f"{field}.{name}", f"{_show(done)}, not a 1-D tensor of ints >= 0")


def check_trainer_fields(tr, path: str | Path, *, shape: tuple[int, int], lanes: int, slots: int | None,
                         edges: list[int], counts: bool) -> None:
    """Raise the checkpoint's one line naming the first trainer field of `tr` that is missing or out of type,
    shape or range. shape: this run's (blocks, tasks) of R; slots: the slot bank's size (None: none, no usage
    rows or lifetimes); edges: this env's distance buckets; counts: the accuracy-by-key counts are loaded (resume)
    rather than recomputed (evaluate), so their edges must be this env's."""
    if not isinstance(tr, dict):
        raise garbled(path, f"trainer: {_show(tr)}, not a mapping")
    blocks, tasks = shape
    try:
        missing = [k for k in ("episode", "lane_steps", "train_steps", "train_tokens", "train_seconds",
                               "reward_baseline", "reset_log", "R", "b", "task_boundaries", "curves", "last_eval",
                               "usage_history", "total_episodes", "by_distance", "by_delay") if k not in tr]
        if missing:
            raise garbled(path, f"no trainer.{', trainer.'.join(missing)}")
        R = _list(tr["R"], "R")
        if not all(isinstance(row, list) for row in R) or len({len(row) for row in R}) > 1:
            raise _Bad("R", f"{_show(R)}, not a (blocks, tasks) matrix")
        got = (len(R), len(R[0]) if R else 0)
        # first (task ids below are checked against this T): another env (evaluate's env.kwargs.num_tasks), or
        # a checkpoint saved before R had one row per block of a revisiting schedule
        if got != shape:
            raise CheckpointError(f"checkpoint {str(path)!r}: its accuracy matrix has shape {got}, this run's "
                                  f"schedule needs {shape} (blocks x tasks); keep the env options the run was "
                                  "trained with, or start a new run (a revisiting run saved before R had a row "
                                  "per block)")
        episode, total = _count(tr, "episode"), _count(tr, "total_episodes")
        steps = _count(tr, "train_steps")
        _count(tr, "lane_steps")
        _count(tr, "train_tokens")
        if episode > total:
            raise _Bad("episode", f"{episode}, more than its total_episodes {total}")
        for field in ("train_seconds", "reward_baseline"):
            v = tr[field]
            if not _is_num(v) or not math.isfinite(v) or (field == "train_seconds" and v < 0):
                raise _Bad(field, f"{_show(v)}, not a finite number{' >= 0' * (field == 'train_seconds')}")
        log = _list(tr["reset_log"], "reset_log")
        for entry in log:
            if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in (TRAIN, EVAL)
                    and all(_is_int(x) for x in entry) and 0 <= entry[1] < tasks):
                raise _Bad("reset_log", f"holds {_show(entry)}, not a [phase 0/1, task id 0..{tasks - 1}] pair")
        trained = sum(phase == TRAIN for phase, _ in log)
        if trained != episode:
            raise _Bad("episode", f"{episode}, but its reset_log holds {trained} training episodes")
        for row in R:
            _accuracies(row, "R", tasks)
        _accuracies(tr["b"], "b", tasks)
        boundaries = _ints(tr["task_boundaries"], "task_boundaries")
        if boundaries and boundaries[-1] > steps:
            raise _Bad("task_boundaries", f"{_show(boundaries)}, past its train_steps {steps}")
        for j, curve in _task_map(tr["curves"], "curves", tasks, empty=False).items():
            if not isinstance(curve, list) or not all(
                    isinstance(p, list) and len(p) == 2 and _is_int(p[0]) and 0 <= p[0] <= steps and _is_acc(p[1])
                    for p in curve):
                raise _Bad(f"curves[{j}]", f"{_show(curve)}, not a list of [step 0..{steps}, accuracy] pairs")
        for j, a in _task_map(tr["last_eval"], "last_eval", tasks, empty=True).items():
            if not _is_acc(a):
                raise _Bad(f"last_eval[{j}]", f"{_show(a)}, not an accuracy in [0, 1] (or NaN)")
        history = _list(tr["usage_history"], "usage_history")
        for row in history:
            if slots is None or not isinstance(row, list) or len(row) != slots or \
                    not all(_is_num(u) and math.isfinite(u) and u >= 0 for u in row):
                raise _Bad("usage_history", f"holds {_show(row)}, not a row of {slots or 0} slot usages >= 0")
        if "usage_steps" in tr:  # absent in checkpoints from before it was kept
            usage_steps = _ints(tr["usage_steps"], "usage_steps")
            if len(usage_steps) != len(history) or (usage_steps and usage_steps[-1] > steps):
                raise _Bad("usage_steps", f"{_show(usage_steps)}, not the steps (<= {steps}) of its "
                                          f"{len(history)} usage rows")
        if "torch_threads" in tr and not (_is_int(tr["torch_threads"]) and 1 <= tr["torch_threads"] <= MAX_THREADS):
            raise _Bad("torch_threads", f"{_show(tr['torch_threads'])}, not a thread count in [1, {MAX_THREADS}]")
        whole = isinstance(tr["by_distance"], dict) and set(tr["by_distance"]) == {"edges", "keys", "correct", "total"}
        saved = tr["by_distance"]["edges"] if whole else None  # counts of another bucketing, otherwise sound:
        if counts and isinstance(saved, list) and saved and all(_is_int(e) for e in saved) and saved != edges:
            raise CheckpointError(f"checkpoint {str(path)!r} buckets accuracy by distance up to {saved[-1]} steps, "
                                  f"this memstream up to {edges[-1]} for this run (ContinualShift's distances reach "
                                  "across episodes since 2026-12-01): resume it with the memstream that wrote it, "
                                  "re-evaluate it with agents.evaluate, or start a new run")
        _by_key(tr["by_distance"], "by_distance", edges, exact=counts)
        _by_key(tr["by_delay"], "by_delay", None, exact=counts)
        _lifetimes(tr.get("slot_lifetimes"), None if slots is None else (lanes, slots))
    except _Bad as exc:
        raise garbled(path, str(exc)) from None


def env_files(venv, env_kwargs) -> dict[str, dict[str, str]]:
    """{option: {"path", "sha256"}} for each env option naming a file (`<name>_path`) whose content the env reports
    as `<name>_sha256` (NeedleRecall: haystack_path, haystack_sha256): the checkpoint's `env_files`."""
    files = {}
    for option, value in env_kwargs.items():
        option = str(option)
        digest = getattr(venv, f"{option.removesuffix('_path')}_sha256", None) if option.endswith("_path") else None
        if value is not None and digest is not None:
            files[option] = {"path": str(value), "sha256": str(digest)}
    return files


def check_env_files(saved, files: dict, path: str | Path, evaluating: bool) -> None:
    """Refuse, in one line, a file that the run's episodes were made from and that now holds other content under
    the same path (`files`: this env's `env_files`; `saved`: the checkpoint's, None in checkpoints from before it;
    `evaluating`: agents.evaluate's restore, else a resume). Another path (agents.evaluate's
    env.kwargs.haystack_path=<other file>) or none is a changed env asked for, and is not checked."""
    if saved is None:
        return
    if not isinstance(saved, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("path"), str) and isinstance(v.get("sha256"), str)
            for v in saved.values()):
        raise garbled(path, f"env_files: {_show(saved)}, not a mapping of option -> path and sha256")
    for option, then in saved.items():
        now = files.get(option)
        if now is None or os.path.realpath(now["path"]) != os.path.realpath(then["path"]) \
                or now["sha256"] == then["sha256"]:
            continue
        fix = (f"start a new run with config={run_dir_of(path) / 'config.yaml'}" if not evaluating else
               f"evaluate on the new text under another path (env.kwargs.{option}=<a copy of it>)")
        raise CheckpointError(f"checkpoint {str(path)!r}: the {option.removesuffix('_path')} file {now['path']!r} "
                              f"changed since the run was trained (sha256 {then['sha256'][:12]}... then, "
                              f"{now['sha256'][:12]}... now); restore that file or {fix}")


def check_env_files_there(kwargs, checkpoint: str | Path, evaluating: bool, given=()) -> None:
    """Refuse, in one line with the fix, a file option (`*_path`) of the run's env whose file is gone (the project
    folder moved or renamed): the env's own line, "haystack_path=...: no such file", named no fix. `given`: options
    the caller set anew (agents.evaluate's env.kwargs.haystack_path=<copy>), which the env checks itself."""
    for option, value in dict(kwargs).items():
        if not str(option).endswith("_path") or option in given or not isinstance(value, str) or os.path.exists(value):
            continue
        fix = (f"put it back there, or evaluate on a copy elsewhere with env.kwargs.{option}=<copy>" if evaluating else
               f"put it back there, then resume (or start a new run with env.kwargs.{option}=<its new path>)")
        raise CheckpointError(f"checkpoint {str(checkpoint)!r}: the {option.removesuffix('_path')} file {value!r} the "
                              f"run was trained on is not there any more (moved or deleted); {fix}")
