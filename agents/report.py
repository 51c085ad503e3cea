"""What a finished run leaves behind: metrics.json, plots/*.png, TensorBoard images + hparams, a summary table."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from agents import plots
from agents.baselines import CELLS
from agents.benchmark_report import chance_level
from memory.persist import atomic_file


def _clean(x):
    """JSON-safe: NaN -> None, numpy scalars -> python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text atomically (`memory.persist.atomic_file`): never half a file."""
    with atomic_file(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(_clean(data), indent=2))


def final_metrics(trainer) -> dict:
    """The continual-learning numbers (README "Continual-learning metrics") of a finished (or resumed) run.

    Metrics that do not apply to an env are null: BWT/FWT/forgetting need >= 2 tasks, recall_by_delay needs an env
    that reports delays (NeedleRecall), accuracy_by_distance needs distances.
    """
    cl = trainer.continual_metrics()
    by_distance, by_delay = measured(trainer.by_distance), measured(trainer.by_delay)
    params = sum(p.numel() for p in trainer.model.parameters())
    return {
        "env": trainer.cfg.env.id, "agent": trainer.cfg.agent.name, "seed": trainer.cfg.seed,
        "episodes": trainer.episode, "ACC": cl["ACC"], "BWT": cl["BWT"], "FWT": cl["FWT"],
        "forgetting": cl["forgetting"], "accuracy_matrix": trainer.R, "accuracy_matrix_tasks": trainer.block_tasks,
        "untrained_accuracy": trainer.b,
        "accuracy": mean_accuracy(trainer.last_eval.values()),
        "accuracy_by_distance": by_distance or None, "recall_by_delay": by_delay or None,
        "scored_by_distance": scored(trainer.by_distance) or None, "scored_by_delay": scored(trainer.by_delay) or None,
        "tokens_per_s": trainer.train_tokens / trainer.train_seconds if trainer.train_seconds else None,
        "params": params, "memory_bytes": int(trainer.model.memory_bytes(trainer.state)),
        "forgetting_curves": {j: c for j, c in trainer.curves.items()},
        "task_boundaries": trainer.task_boundaries, "partial_block": partial_block(trainer),
    }


def partial_block(trainer) -> dict | None:
    """The last trained block when the run stopped inside it (`train.episodes` shorter than the env's schedule):
    {"block": k, "task": its task, "episodes": trained, "of": the block's length}; None when every trained block
    was finished or the env has no schedule. Its row of the accuracy matrix is then a partly trained task."""
    if trainer.episode == 0 or trainer.schedule_episodes is None:
        return None
    k = trainer.block_of(trainer.episode - 1)
    start, starts = int(trainer.block_starts[k]), trainer.block_starts
    end = int(starts[k + 1]) if k + 1 < len(starts) else trainer.schedule_episodes
    if trainer.episode >= end:
        return None
    return {"block": k, "task": int(trainer.block_tasks[k]), "episodes": trainer.episode - start, "of": end - start}


def mean_accuracy(accuracies) -> float | None:
    """The mean of per-task accuracies, leaving out NaN (a task with no scored query); None when none is left."""
    scored = [float(a) for a in accuracies if not math.isnan(a)]
    return sum(scored) / len(scored) if scored else None


def measured(by_key) -> dict:
    """An AccuracyByKey's {key: accuracy} without the keys that saw no scored step."""
    return {k: v for k, v in by_key.result().items() if v is not None}


def scored(by_key) -> dict:
    """An AccuracyByKey's {key: scored steps}, for the keys of `measured` (how much each accuracy rests on)."""
    return {k: total for k, (_, total) in by_key.counts().items() if total}


def attention_window(cfg) -> int | None:
    """W, marked on the accuracy-vs-distance plot: the tokens MemNet's controller or the transformer attends to;
    None for the LSTM and GRU, which have no window (their plots marked one at model.window, a setting they ignore)."""
    return None if cfg.agent.name in CELLS else int(cfg.model.window)


def write_report(trainer, metrics: dict, logger=None) -> None:
    """The plots, TensorBoard's images and hparams, then metrics.json: written last, so that a run folder holding it
    holds the whole report (`finished_report`); a run stopped before it still has its numbers in its checkpoint,
    and `resume=` writes the report again."""
    run_dir = Path(trainer.run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    p = run_dir / "plots"
    chance = chance_level(trainer.cfg.env.id, OmegaConf.to_container(trainer.cfg.env.kwargs, resolve=True))
    plots.plot_forgetting_curves(trainer.curves, trainer.task_boundaries, p / "forgetting_curves.png",
                                 labels=boundary_labels(trainer.block_tasks, len(trainer.task_boundaries)))
    plots.plot_accuracy_matrix(trainer.R, p / "accuracy_matrix.png", tasks=trainer.block_tasks)
    plots.plot_accuracy_vs_distance(metrics["accuracy_by_distance"] or {}, p / "accuracy_vs_distance.png",
                                    window=attention_window(trainer.cfg), counts=metrics["scored_by_distance"],
                                    chance=chance)
    names = report_plots(trainer, metrics)
    if "recall_vs_delay" in names:
        plots.plot_recall_vs_delay(metrics["recall_by_delay"], p / "recall_vs_delay.png",
                                   counts=metrics["scored_by_delay"], chance=chance)
    if "slot_usage" in names:  # (a slot bank that took no snapshot: the plot says so)
        steps = trainer.usage_steps if len(trainer.usage_steps) == len(trainer.usage_history) else None
        plots.plot_slot_usage_heatmap(np.array(trainer.usage_history), p / "slot_usage.png", steps=steps)
    if "slot_survival" in names:
        lifetimes = trainer.slot_lifetimes()
        # the tracker's clock: every training chunk, written or not (NeedleRecall's recall chunks write nothing), of up
        # to train.chunk steps (an episode's last chunk is cut at its end)
        unit = f"training chunks (up to {trainer.cfg.train.chunk} env steps each)"
        plots.plot_slot_survival(lifetimes[0], p / "slot_survival.png", observed=lifetimes[1], unit=unit,
                                 counts=lifetimes[2])
    if logger is not None:
        for name in ("accuracy_matrix", "slot_usage", "slot_survival"):
            if name in names:  # the file as written (its figure drawn again changed ~6% of the pixels)
                logger.image(f"plots/{name}", plots.png_pixels(p / f"{name}.png"), trainer.train_steps)
        logger.hparams(hparams_of(trainer.cfg), {f"cl/{k}": metrics[k] for k in ("ACC", "BWT", "FWT", "forgetting")}
                       | {"eval/accuracy": metrics["accuracy"]})
        logger.flush()  # on disk before metrics.json says the report is whole
    write_json_atomic(run_dir / "metrics.json", metrics)


def report_plots(trainer, metrics: dict) -> list[str]:
    """The plots/<name>.png that `write_report` writes for this run (`metrics`: its final metrics)."""
    names = ["forgetting_curves", "accuracy_matrix", "accuracy_vs_distance"]
    if metrics["recall_by_delay"]:
        names.append("recall_vs_delay")
    if trainer.usage_history or trainer.lifetimes is not None:
        names.append("slot_usage")
    if trainer.lifetimes is not None:  # (`slot_lifetimes` is None exactly then)
        names.append("slot_survival")
    return names


def finished_report(run_dir: Path, trainer) -> dict | None:
    """The metrics.json of a run whose report is whole (`write_report` writes it last) after the trainer's
    training episodes, else None (none yet, another run's, unreadable: the report is to be written). Its plots are
    there too: versions before 2026-12-02 wrote metrics.json first, so a run of theirs stopped while writing its
    report holds it without the plots that followed."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        summary_table(metrics)  # the summary the command prints: a file of an older format may lack its keys
        if metrics.get("episodes") != trainer.episode:
            return None
        plots = report_plots(trainer, metrics)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None
    return metrics if all((Path(run_dir) / "plots" / f"{name}.png").is_file() for name in plots) else None


def boundary_labels(block_tasks, count: int) -> list[str]:
    """What follows each of the `count` boundaries (one per block trained, in order): the task of the next block,
    and "end" for the last one (training stops there, whether or not the schedule was finished)."""
    return [f"task {int(block_tasks[n + 1])}" if n + 1 < count else "end" for n in range(count)]


@contextmanager
def failure_recorded(trainer, logger):
    """An exception inside (the run diverged, a full disk, sizes that do not fit) records the run's HParams session
    with status Failure, its config and its latest points as its metrics, and is raised on: such a run or sweep
    trial had recorded nothing, so the HParams tab did not list it. A run that had recorded its end (its report's
    Success) keeps it; a Ctrl+C, or Tune stopping a trial (SystemExit), is no failure. A writer that fails too (a
    full disk) does not hide the first error."""
    try:
        yield
    except Exception:
        with suppress(OSError):
            logger.hparams(hparams_of(trainer.cfg), {}, status="failure")
        raise


def hparams_of(cfg) -> dict:
    """The config for TensorBoard's HParams tab (TBLogger.hparams flattens it: `memory.slots`, `env.kwargs.delay`),
    less the paths, the device and the progress bar. `env` stays the id, as before; the env's
    options go under `env.kwargs`, so a sweep over one of them can be compared there too."""
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    return {"agent": c["agent"]["name"], "env": c["env"]["id"], "env.kwargs": c["env"]["kwargs"], "seed": c["seed"],
            "model": c["model"], "memory": c["memory"],
            "train": {k: v for k, v in c["train"].items() if k != "progress"}}


def three_places(v: float) -> str:
    """A metric to 3 decimals; a rounding residue of an exact 0 (forgetting -6.9e-18) is 0.000, not -0.000."""
    return f"{v:.3f}".replace("-0.000", "0.000")


def with_count(accuracy: float, count: int | None) -> str:
    """An accuracy to 3 decimals with the scored steps it rests on: `0.793 (n=512)`."""
    return three_places(accuracy) + ("" if count is None else f" (n={count})")


def summary_table(metrics: dict) -> str:
    def fmt(v):
        return "n/a" if v is None else (three_places(v) if isinstance(v, float) else str(v))

    rows = [("ACC", metrics["ACC"]), ("BWT", metrics["BWT"]), ("FWT", metrics["FWT"]),
            ("forgetting", metrics["forgetting"]), ("eval accuracy", metrics["accuracy"]),
            ("tokens/s (train)", None if metrics["tokens_per_s"] is None else round(metrics["tokens_per_s"])),
            ("parameters", metrics["params"]), ("memory bytes", metrics["memory_bytes"])]
    for name, accuracies, steps in (("acc @ distance <=", "accuracy_by_distance", "scored_by_distance"),
                                    ("recall @ delay", "recall_by_delay", "scored_by_delay")):
        counts = metrics.get(steps) or {}  # absent in metrics.json files of older runs
        rows += [(f"{name} {k}", with_count(v, counts.get(k))) for k, v in (metrics[accuracies] or {}).items()]
    width = max(len(r[0]) for r in rows)
    lines = [f"{metrics['env']} / {metrics['agent']} / seed {metrics['seed']}"]
    lines += [f"  {name.ljust(width)}  {fmt(v)}" for name, v in rows]
    R = np.array(metrics["accuracy_matrix"], dtype=float)  # (K, T)
    tasks = metrics.get("accuracy_matrix_tasks")  # (K,); absent in metrics.json files of older runs
    sequential = tasks is None or list(tasks) == list(range(R.shape[1]))
    if R.shape[0] > 1:
        if sequential:
            lines.append("  accuracy matrix (row i: after training task i; column j: task j)")
        else:
            lines.append("  accuracy matrix (row k: after training block k (its task in brackets); column j: task j)")
        for k, row in enumerate(R):
            # "-": not evaluated yet; as wide as a number ("0.96"), so the columns stay in line
            cells = " ".join("  - " if math.isnan(x) else f"{x:.2f}" for x in row)
            lines.append("    " + cells if sequential else f"    {k:>2} [{int(tasks[k])}]  {cells}")
    part = metrics.get("partial_block")  # absent in metrics.json files of older runs
    if part:
        lines.append(f"  note: training stopped in task {part['task']} after {part['episodes']} of its {part['of']} "
                     f"episodes: row {part['block']} is a partly trained task")
    return "\n".join(lines)
