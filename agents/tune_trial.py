"""One Ray Tune trial: the `agents.run` trainer in a Tune function trainable, reporting at every evaluation.

The trial's run folder is its Tune trial folder inside the sweep folder (absolute: Tune changes the working
directory of a trial), so `tensorboard --logdir <sweep dir>` shows one run per trial. Every evaluation is
reported under its TensorBoard tags (`cl/ACC`, `eval/accuracy`, `recall/accuracy_d<b>`, ...), with the training
episode's before it (`train/loss`, `perf/tokens_per_s`, `memory/<name>`; NaN at the untrained evaluation and
wherever a value is None, so Ray's progress.csv, which keeps the first result's columns, has them all), plus
`episode`, `total_episodes` and `train_steps`; the sweep's metric is always there
(NaN where this trial's run length or env does not report it: Tune refuses a result without it). A report that
follows a fresh `checkpoints/last.pt` carries that folder as the Tune checkpoint (model, optimiser, memory,
trainer state), so a crashed or interrupted trial resumes from it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from agents.tune_space import trial_config, trial_threads


class TuneReporter:
    """`on_eval` callback of `agents.run.fit`: sends each evaluation to Tune, with the checkpoint if new.

    Before the last report it writes the run's report (metrics.json, plots, hparams): Tune may end the trial
    as soon as it sees the final result (ASHA stops a trial that reaches max_t). A trial stopped at an earlier
    report records its hparams only."""

    def __init__(self, checkpoint_dir: Path, logger, metric: str):
        self.checkpoint_dir, self.logger, self.metric = checkpoint_dir, logger, metric
        self._reported_stamp = self._stamp()  # a checkpoint restored from is not reported again
        self.report_written = False

    def _stamp(self):
        """Identity of the current last.pt (`file_stamp`: every save makes a new one)."""
        from memory.persist import file_stamp

        return file_stamp(self.checkpoint_dir / "last.pt")

    def finish(self, trainer) -> None:
        from agents.report import final_metrics, write_report

        if not self.report_written:
            write_report(trainer, final_metrics(trainer), self.logger)
            self.logger.close()
            self.report_written = True

    def __call__(self, trainer, values: dict) -> None:
        from ray import tune

        from agents.tb_tags import TRAIN_TAGS, memory_tags

        memory = trainer.cfg.memory
        keys = (self.metric, *TRAIN_TAGS, *memory_tags(trainer.cfg.agent.name, memory.slots, memory.store))
        metrics = dict.fromkeys(keys, math.nan) | {tag: math.nan if v is None else float(v)
                                                   for tag, v in values.items()}
        metrics |= {"episode": trainer.episode, "total_episodes": trainer.total_episodes,
                    "train_steps": trainer.train_steps}
        if trainer.episode >= trainer.total_episodes:
            self.finish(trainer)
        stamp = self._stamp()
        try:
            if stamp is not None and stamp != self._reported_stamp:
                self._reported_stamp = stamp
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.checkpoint_dir)))
            else:
                tune.report(metrics)
        except SystemExit:  # how Tune stops a trial at a report (ASHA, a stopped sweep): its session's sys.exit
            self.stopped(trainer)
            raise

    def diverged(self, trainer, why: str) -> None:
        """The trial's last report: its metric NaN (it cannot be the best) and `diverged`, the run's one line, which
        the results table shows as the status `diverged` (`agents.tune_results.trial_status`)."""
        from ray import tune

        tune.report({self.metric: math.nan, "diverged": why, "episode": trainer.episode,
                     "total_episodes": trainer.total_episodes, "train_steps": trainer.train_steps})

    def stopped(self, trainer) -> None:
        """A trial Tune stopped before its end records its hparams all the same (its latest points are its metrics
        there): the HParams tab listed only the trials that wrote their report, so a sweep's table lacked exactly
        the trials ASHA stopped. It records no end: the tab reads its status as unknown, not success (it did not
        finish). A trial resumed later keeps this record and adds its end when it finishes (TBLogger.hparams)."""
        from agents.report import hparams_of

        if not self.report_written:
            self.logger.hparams(hparams_of(trainer.cfg), {}, status=None)


def run_trial(params: dict, *, base: dict, sweep_dir: str, threads: int, metric: str) -> None:
    """Tune function trainable. params: the swept `{dotted key: value}`; base: the resolved run config of
    every trial; sweep_dir: absolute sweep folder; threads: torch and FAISS threads of this trial; metric: the
    sweep's metric."""
    import faiss
    import torch
    from ray import tune

    from agents.config import to_yaml
    from agents.objectives import TrainingDiverged
    from agents.report import failure_recorded, write_text_atomic
    from agents.run import fit
    from agents.run_lock import RunLocks
    from agents.tb_logger import TBLogger
    from agents.trainer import Trainer

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    run_dir = Path(sweep_dir) / Path(tune.get_context().get_trial_dir()).name  # the trial folder in storage
    cfg = trial_config(OmegaConf.create(base), dict(params) | trial_threads(threads) | {
        "run_dir": str(run_dir), "train.progress": False})
    trainer = Trainer(cfg, run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.restore(Path(folder) / "last.pt", config)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLocks() as locks:  # a trial folder is a run folder: one writer (an agents.run resume= of it is refused)
        locks.hold(run_dir)
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        # a trial stopped early (ASHA, a failure, Ctrl+C) closes its writer too: its last points reach the event file
        with TBLogger(run_dir, resume_step=trainer.train_steps if checkpoint else None) as logger:
            reporter = TuneReporter(run_dir / "checkpoints", logger, metric)
            try:
                with failure_recorded(trainer, logger):  # a trial that crashed is listed as Failure (a retry drops it)
                    fit(trainer, logger, config, progress=False, on_eval=reporter)
                    reporter.finish(trainer)  # when restored at the very end, fit has nothing left to evaluate
            except (TrainingDiverged, FloatingPointError) as exc:  # a retry from the same checkpoint and seed
                # diverges again (under sweep.max_failures=-1 for ever): the trial ends, saying so. FloatingPointError:
                # MemNet's overflow check, which agents.run says as the trainer's "training diverged ..." line too
                why = exc if isinstance(exc, TrainingDiverged) else trainer.diverged(str(exc))
                reporter.diverged(trainer, str(why))


def trial_dirname(trial) -> str:
    """`<trial id>_<key>=<value>_...`: short enough for TensorBoard's run list, unique by the trial id."""
    parts = [trial.trial_id] + [f"{k.split('.')[-1]}={_short(v)}" for k, v in sorted(trial.config.items())]
    return "_".join(parts)[:120]


def _short(v) -> str:
    """A swept value as a folder name's part: a file path by its name, characters other than letters, digits, `.`,
    `+` and `-` as `_` (Tune refuses a `/` there: a sweep of env.kwargs.haystack_path, whose values are made
    absolute, crashed with "Trial dirname must not contain '/'" as its first trial was made)."""
    if isinstance(v, float):
        return f"{v:.3g}"
    text = os.path.basename(v.rstrip(os.sep)) or v if isinstance(v, str) else str(v)
    return re.sub(r"[^\w.+-]+", "_", text).strip("_") or "_"  # [1, 4] -> 1_4
