"""`python -m agents.evaluate checkpoint=<run dir or .pt>`: re-evaluate a saved run on every task.

Loads the run's checkpoint (weights and persisting memory), evaluates every task the way the trainer does
(on a copy of the memory) on the same eval episodes as the run's final evaluation (the env is replayed to that
point), prints a table and writes `eval.json` into the run folder. The checkpoint is not modified.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from agents.checkpoint import CheckpointError, load_checkpoint
from agents.config import ConfigError, validate
from agents.report import write_json_atomic

USAGE = "usage: python -m agents.evaluate checkpoint=<run folder or checkpoints/last.pt> [device=cpu|cuda|auto]"


def evaluate(checkpoint: str | Path, device: str | None = None) -> dict:
    from agents.trainer import Trainer

    checkpoint = Path(checkpoint).resolve()
    body = load_checkpoint(checkpoint)
    cfg = validate(OmegaConf.create(body["config"]))
    if device is not None:
        cfg.device = device
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent.parent
    trainer = Trainer(cfg, run_dir)
    trainer.restore(checkpoint, OmegaConf.to_container(cfg, resolve=True), rewind_eval=True)
    accuracy = trainer.evaluate_all()
    result = {
        "checkpoint": str(checkpoint), "env": cfg.env.id, "agent": cfg.agent.name, "episodes_trained": trainer.episode,
        "accuracy_by_task": accuracy, "accuracy": sum(accuracy.values()) / len(accuracy),
        "accuracy_by_distance": {k: v for k, v in trainer.by_distance.result().items() if v is not None} or None,
        "recall_by_delay": {k: v for k, v in trainer.by_delay.result().items() if v is not None} or None,
    }
    write_json_atomic(Path(run_dir) / "eval.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a] + [k for k in args if k not in ("checkpoint", "device")]
    if bad or "checkpoint" not in args:
        print(f"error: expected checkpoint=<path>{f', got {bad[0]!r}' if bad else ''}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        result = evaluate(args["checkpoint"], args.get("device"))
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['env']} / {result['agent']} after {result['episodes_trained']} episodes")
    for task, acc in result["accuracy_by_task"].items():
        print(f"  task {task}: {acc:.3f}")
    print(f"  mean: {result['accuracy']:.3f}")
    for k, v in (result["accuracy_by_distance"] or {}).items():
        print(f"  distance <= {k}: {v:.3f}")
    for k, v in (result["recall_by_delay"] or {}).items():
        print(f"  delay {k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
