"""The trainer: B lanes of a native vector env, online learning, evaluation on every task, checkpoints.

Schedule. Training episodes follow the env's own schedule (`reset()`); ContinualShift moves through its tasks.
Before training, every task is evaluated once (b[j], for FWT); then every `train.eval_every` episodes and at
each task boundary every task is evaluated (forgetting curves; R[k][j] at the boundary after training block k).
Eval runs `train.eval_repeats` x `venv.eval_episodes` consecutive `reset(options={"phase": "eval", "task_id": j})`
episodes from the memory as it was, put back afterwards: weights and memory are as before the eval when it returns.

Resume. The trainer logs the env's resets (`reset_log`; the env is a function of its seed and them) and replays them.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch

from agents.checkpoint import CheckpointError, check_compatible, load_checkpoint, load_model_weights, save_checkpoint
from agents.checkpoint_fields import check_env_files, check_trainer_fields, env_files, garbled
from agents.checkpoint_tensors import check_lane_state, check_optimizer_state
from agents.cl_metrics import AccuracyByKey, accuracy_shape, continual_metrics, env_schedule, run_distance_buckets
from agents.config import ConfigError
from agents.episodes import Chunk, EpisodeRunner, EpisodeStats, make_vector_env
from agents.interrupts import interrupts_held
from agents.models import build_agent
from agents.objectives import TrainingDiverged, chunk_loss, overflowing_weight
from agents.threads import adopt_saved_threads
from memory.metrics import SlotLifetimeTracker, slot_usage
from memory.slots import SlotState

TRAIN, EVAL = 0, 1  # reset_log phases


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        ("cpu" if name == "auto" else name))


class Trainer:
    def __init__(self, cfg, run_dir: str | Path, logger=None):
        self.cfg, self.run_dir, self.logger, t = cfg, Path(run_dir), logger, cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.venv = make_vector_env(cfg.env.id, t.lanes, dict(cfg.env.kwargs))
        self.num_tasks = int(self.venv.num_tasks)
        # now: a store or cache too big fails before the run folder is made
        self.model_cfg, self.model = build_agent(cfg, int(self.venv.vocab_size), self.device)
        # fused: one kernel over all parameters instead of ~12 ops per tensor (MemNet's 59 tensors: an update
        # 2.9 -> 0.8 ms on 2 CPU cores; the same AdamW arithmetic)
        with interrupts_held():  # it imports torch._dynamo (~2.5 s): a Ctrl+C in it ended 1 run in 4 by SIGINT (-2)
            self.optimizer = torch.optim.AdamW(self.model.optimizer_groups(t.weight_decay), lr=t.lr, fused=True)
        self.params = list(self.model.parameters())  # once: walking the modules at every update cost ~1 ms a chunk
        self.runner = EpisodeRunner(self.venv, self.model, self.device, t.chunk, amp=t.amp, acting=t.acting,
                                    reinforce=t.mode == "reinforce")
        self.state = self.model.initial_state(t.lanes)
        sched = env_schedule(self.venv)  # (block starts, block tasks, episodes); None: an env without a schedule
        self.schedule_episodes = None if sched is None else sched[2]  # training episodes of the env's schedule
        self.total_episodes = self._default_episodes() if t.episodes is None else int(t.episodes)
        self.loop_task: int | None = None  # the task an outside loop last trained on (`_task_switch`; an Agent's save)
        # trainer state (all of it goes into the checkpoint)
        self.episode = 0  # training episodes done (per lane)
        self.evaluating = False  # inside evaluate_all
        self.lane_steps = 0  # env steps per lane, train episodes (reported with the trainer state)
        self.train_steps = 0  # training env steps per lane: the x-axis of every curve
        self.train_tokens, self.train_seconds, self.reward_baseline = 0, 0.0, 0.0
        self.reset_log: list[tuple[int, int]] = []
        self.saved_threads: int | None = None  # the torch thread count of a restored checkpoint's run
        # one row of R per training block (a run of consecutive episodes on one task), not per task: a schedule
        # that revisits tasks (0, 1, 0, 1) would otherwise overwrite its first pass (cl_metrics' docstring)
        self.block_starts, self.block_tasks = sched[:2] if sched is not None else (np.zeros(1, np.int64),) * 2  # one
        self.R = np.full(accuracy_shape(self.venv), np.nan)  # (K, T)
        self.b = np.full(self.num_tasks, np.nan)
        self.curves: dict[int, list[tuple[int, float]]] = {j: [] for j in range(self.num_tasks)}
        self.task_boundaries: list[int] = []
        self.last_eval: dict[int, float] = {}
        self.usage_history: list[list[float]] = []
        self.usage_steps: list[int] = []  # the training step of each usage row (the heatmap's x axis)
        self.by_distance = AccuracyByKey(run_distance_buckets(self.venv, self.total_episodes, t.eval_repeats))
        self.by_delay = AccuracyByKey(None)
        has_slots = cfg.agent.name == "memnet" and cfg.memory.slots > 0
        self.lifetimes = SlotLifetimeTracker(t.lanes, cfg.memory.slots) if has_slots else None

    def _default_episodes(self) -> int:
        if self.schedule_episodes is None:
            raise ConfigError(f"train.episodes is not set for {self.cfg.env.id}; set train.episodes=<n>")
        return self.schedule_episodes

    # ---------------------------------------------------------------- env resets (logged for replay)
    def _reset(self, phase: int, task: int):
        options = {"phase": "train"} if phase == TRAIN else {"phase": "eval", "task_id": task}
        seed = self.cfg.seed if not self.reset_log else None
        self.reset_log.append((phase, task))
        return self.venv.reset(seed=seed, options=options)

    def current_task(self) -> int:
        """The task of the next training episode (past the schedule's end its last task; 0 without a schedule)."""
        return int(self.block_tasks[self.block_of(self.episode)])

    # ---------------------------------------------------------------- learning
    def _learn(self, chunk: Chunk, logits: torch.Tensor, aux: dict) -> float | None:
        t = self.cfg.train
        mask = chunk.scored
        if not bool(mask.any()) and not aux.get("losses"):
            return None  # nothing to learn from (most of a sparse task's chunks): no step, no loss to report
        loss, baseline, terms = chunk_loss(t, logits, chunk, aux.get("losses", {}), self.reward_baseline)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise self.diverged(f"the loss is {value}", terms)
        self.reward_baseline = baseline  # only once the loss is finite: a refused chunk left it NaN for good
        if loss.requires_grad:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
            self.optimizer.step()
            # an update that overflowed the weights would surface later as NaN memories refused deep in the store,
            # or as NaN weights at 0 accuracy. foreach: Parameters otherwise take a norm-per-tensor loop (~1 ms)
            if not torch.isfinite(torch.nn.utils.get_total_norm(self.params, foreach=True)):
                raise self.diverged("an update made weights non-finite", terms)
        return value

    def diverged(self, what: str, terms: dict | None = None) -> TrainingDiverged:
        # an evaluation runs after `episode` episodes (counted already): the weights it found overflowed the memory
        where = (f"in episode {self.episode + 1}" if not self.evaluating else
                 f"by the evaluation after episode {self.episode}" if self.episode else "before training")
        if blame := overflowing_weight(terms or {}, self.cfg):  # a loss weight, not the learning rate
            return TrainingDiverged(f"training stopped {where}: {blame} (checkpoints written before it are kept)")
        return TrainingDiverged(f"training diverged {where} ({what}; train.lr={self.cfg.train.lr}, "
                           f"train.grad_clip={self.cfg.train.grad_clip}); lower train.lr (checkpoints written before "
                           "it are kept)")

    def train_episode(self) -> EpisodeStats:
        task = self.current_task()
        if self.cfg.memory.reset == "episode" or (self.cfg.memory.reset == "task" and self._task_switch(task)):
            self.state = self._cleared(self.state)
            if self.lifetimes is not None:
                self.lifetimes.reset()
        obs, info = self._reset(TRAIN, task)
        t0 = time.perf_counter()
        self.state, stats = self.runner.run(self.state, obs, info, self.episode,
                                            learner=self._learn, sample=self.cfg.train.mode == "reinforce",
                                            on_aux=self._observe_writes)
        self.train_seconds += time.perf_counter() - t0
        self.lane_steps += stats.steps
        self.train_steps += stats.steps
        self.train_tokens += stats.steps * self.cfg.train.lanes
        self.episode += 1
        return stats

    def _observe_writes(self, aux: dict) -> None:
        """Feed the chunk's slot writes to the lifetime tracker (slot survival curves)."""
        if self.lifetimes is not None and (info := aux.get("metrics", {}).get("write_info")) is not None:
            self.lifetimes.observe(info)

    def record_memory_usage(self) -> None:
        """One row of the slot-usage heatmap: each slot's usage, averaged over lanes."""
        if self.lifetimes is not None:
            bank = SlotState(**{f: self.state[f"slot.{f}"] for f in SlotState._fields})
            self.usage_history.append(slot_usage(bank, mean_over_lanes=True).tolist())
            self.usage_steps.append(self.train_steps)

    def slot_lifetimes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(lifetimes, observed, counts): each distinct finished lifetime with how many contents lived it, then
        the censored ages of contents still in memory (count 1 each)."""
        if self.lifetimes is None:
            return None
        (done, counts), alive = self.lifetimes.lifetime_counts(), self.lifetimes.alive_ages()
        return (np.concatenate([done, alive]), np.concatenate([np.ones(done.size, bool), np.zeros(alive.size, bool)]),
                np.concatenate([counts, np.ones(alive.size, np.int64)]))

    def block_of(self, episode: int) -> int:
        """The training block (row of R) of a training episode: the last block starting at or before it (episodes
        past the schedule's end belong to its last block; `schedule_blocks`)."""
        return int(np.searchsorted(self.block_starts, episode, side="right")) - 1

    def _task_switch(self, task: int) -> bool:
        """memory.reset=task clears the memory when the agent meets `task` after training on another: the task an
        outside loop (agents.agent.Agent) last trained, `loop_task`, else the last training episode's (block_of)."""
        before = self.loop_task if self.loop_task is not None else \
            int(self.block_tasks[self.block_of(self.episode - 1)]) if self.episode else None
        return before is not None and task != before

    def _cleared(self, state: dict) -> dict:
        return self.model.reset_memory(state, torch.ones(self.cfg.train.lanes, dtype=torch.bool))

    # ---------------------------------------------------------------- evaluation
    def evaluate_task(self, task: int) -> float:
        """Accuracy on scored steps over `train.eval_repeats` complete evaluations of `task`, one after the other on
        one copy of the memory; memory and weights untouched (the memory is put back: `model.memory_undo`)."""
        with self.model.memory_undo():
            return self._evaluate(task)

    def _evaluate(self, task: int) -> float:  # evaluate_task's episodes: the caller puts the memory back
        state = {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in self.state.items()}
        correct = scored = 0
        self.venv.start_evaluation()  # at a cycle's start (a re-evaluation's replay under another delay may not be)
        reset = self.cfg.memory.reset  # evaluation episodes see the memory a training episode would
        if reset == "task" and self._task_switch(task):
            state = self._cleared(state)
        for _ in range(int(self.venv.eval_episodes) * self.cfg.train.eval_repeats):
            if reset == "episode":
                state = self._cleared(state)
            obs, info = self._reset(EVAL, task)
            state, stats = self.runner.run(state, obs, info, self.episode,
                                           by_distance=self.by_distance, by_delay=self.by_delay)
            correct, scored = correct + stats.correct, scored + stats.scored
        return correct / scored if scored else math.nan

    def evaluate_all(self) -> dict[int, float]:
        """Evaluate every task, each from the memory as it is now; accuracy by distance / delay then describe this
        evaluation."""
        self.by_distance.reset()
        self.by_delay.reset()
        self.evaluating = True  # stays set when an evaluation fails, for `diverged` to say where
        accuracy = {}
        with self.model.memory_undo() as undo:  # one mark for all tasks (memory/undo.py); its exit undoes the last
            for j in range(self.num_tasks):
                if j:
                    undo()
                accuracy[j] = self._evaluate(j)
        self.last_eval, self.evaluating = accuracy, False
        for j, a in self.last_eval.items():
            self.curves[j].append((self.train_steps, a))
        return self.last_eval

    def continual_metrics(self) -> dict:
        """ACC/BWT/FWT/forgetting over the blocks finished so far, on the columns of the tasks they trained (every
        block and task at the end; sequentially after block k that is R[:k+1, :k+1] and b[:k+1])."""
        recorded = np.flatnonzero(~np.isnan(self.R).all(axis=1))  # rows are filled in block order
        done = int(recorded[-1]) + 1 if recorded.size else 0
        if done == 0:
            return {"ACC": None, "BWT": None, "FWT": None, "forgetting": None}
        tasks = self.block_tasks[:done]
        columns = np.unique(tasks)  # (T',) the tasks trained so far, ascending
        return continual_metrics(self.R[:done][:, columns], self.b[columns], tasks=np.searchsorted(columns, tasks))

    # ---------------------------------------------------------------- checkpoint
    def trainer_state(self) -> dict:
        return {
            "episode": self.episode, "lane_steps": self.lane_steps, "train_steps": self.train_steps,
            "train_tokens": self.train_tokens, "train_seconds": self.train_seconds,
            "reward_baseline": self.reward_baseline, "reset_log": [list(x) for x in self.reset_log],
            "R": self.R.tolist(), "b": self.b.tolist(), "task_boundaries": list(self.task_boundaries),
            "curves": {str(j): [list(p) for p in c] for j, c in self.curves.items()},
            "last_eval": {str(j): a for j, a in self.last_eval.items()},
            "usage_history": self.usage_history, "usage_steps": self.usage_steps,
            "total_episodes": self.total_episodes,
            "by_distance": self.by_distance.state_dict(), "by_delay": self.by_delay.state_dict(),
            "slot_lifetimes": self.lifetimes.state_dict() if self.lifetimes is not None else None,
            "torch_threads": torch.get_num_threads(),  # the count its floats were computed with (train.threads=0 too)
        }

    def save(self, config: dict, **extra) -> Path:  # extra: more top-level entries (agents.agent.Agent's own)
        path = self.run_dir / "checkpoints" / "last.pt"
        save_checkpoint(path, extra | {
            "config": config, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "state": self.state, "memory": self.model.memory_state_dict(), "trainer": self.trainer_state(),
            "rng": {"torch": torch.get_rng_state()}
            | ({"cuda": torch.cuda.get_rng_state_all()} if self.device.type == "cuda" else {}),
            "env_files": env_files(self.venv, self.cfg.env.kwargs),  # haystack_path's sha256: a changed file is refused
        })
        return path

    def restore(self, path: str | Path, config: dict, rewind_eval: bool = False) -> None:
        """Load a checkpoint written by `save` and bring the env to the same point by replaying its resets.

        `rewind_eval` stops the replay before the evaluation episodes that followed the last training episode, so
        a re-evaluation sees exactly the episodes of the run's final evaluation (`agents.evaluate`); the saved
        accuracy-by-distance/delay counts are then not loaded: the re-evaluation recomputes them. An env file (the
        haystack_path) that now holds other text under the run's path is refused (`check_env_files`).
        """
        body = load_checkpoint(path)
        check_compatible(body["config"], config, path)
        check_env_files(body.get("env_files"), env_files(self.venv, self.cfg.env.kwargs), path, rewind_eval)
        try:
            log = self._load_body(body, path, rewind_eval)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            # a file that loads but lacks or garbles a field (hand-edited, another memstream's): one line, no trace
            detail = (str(exc).splitlines() or [""])[0][:160] or type(exc).__name__
            raise garbled(path, f"{type(exc).__name__}: {detail}") from None
        self.reset_log = []
        try:
            for phase, task in log:  # replay: regenerates exactly the episodes the env had produced
                self._reset(phase, task)
        except ValueError as exc:  # the env options changed (agents.evaluate env.kwargs.*) so that a reset is refused
            raise CheckpointError(f"checkpoint {str(path)!r}: this env cannot replay the run's episodes "
                                  f"({str(exc).splitlines()[0][:160]}); keep the env options the run was trained "
                                  "with (e.g. env.kwargs.num_tasks)") from None

    def _load_body(self, body: dict, path, rewind_eval: bool) -> list[tuple[int, int]]:
        """Weights, optimizer, state, memory and trainer fields of a checkpoint; returns the resets to replay."""
        # first, before anything is loaded: every trainer field's type, shape and range, named in one line
        check_trainer_fields(body["trainer"], path, shape=self.R.shape, lanes=self.cfg.train.lanes,
                             slots=None if self.lifetimes is None else self.cfg.memory.slots,
                             edges=self.by_distance.edges.tolist(), counts=not rewind_eval)
        load_model_weights(self.model, body["model"], path)
        try:
            self.optimizer.load_state_dict(body["optimizer"])
        except ValueError as exc:  # e.g. parameter groups made before train.weight_decay skipped biases and norms
            raise CheckpointError(f"checkpoint {str(path)!r}: its optimizer state does not fit this run's optimizer "
                                  f"({str(exc).splitlines()[0][:120]}); re-run the experiment") from None
        check_optimizer_state(self.optimizer, {id(p): n for n, p in self.model.named_parameters()}, path)
        check_lane_state(body["state"], self.state, body["memory"], self.model, self.cfg.train.lanes,
                         trained=body["trainer"]["train_steps"] > 0)  # (checked: an int)
        self.state = {k: v.to(self.state[k].device) for k, v in body["state"].items()}  # load maps to the CPU
        self.model.load_memory_state_dict(body["memory"])
        torch.set_rng_state(body["rng"]["torch"])
        if "cuda" in body["rng"] and self.device.type == "cuda":  # sampled actions (reinforce) draw from it
            torch.cuda.set_rng_state_all(body["rng"]["cuda"])
        tr = body["trainer"]
        for k in ("episode", "lane_steps", "train_steps", "train_tokens", "train_seconds", "reward_baseline",
                  "usage_history", "total_episodes"):
            setattr(self, k, tr[k])
        self.usage_steps = list(tr.get("usage_steps", []))  # absent in checkpoints from before it was kept
        self.R, self.b = np.array(tr["R"], dtype=float), np.array(tr["b"], dtype=float)  # shapes checked above
        self.task_boundaries = list(tr["task_boundaries"])
        self.curves = {int(j): [tuple(p) for p in c] for j, c in tr["curves"].items()}
        self.last_eval = {int(j): a for j, a in tr["last_eval"].items()}
        if not rewind_eval:  # a re-evaluation recomputes these (its env may even bucket distances differently)
            self.by_distance.load_state_dict(tr["by_distance"])
            self.by_delay.load_state_dict(tr["by_delay"])
        # the thread count changes the last bits of reductions: a resume (or evaluation) computes with the run's
        # own unless train.threads names another (absent in checkpoints from before it was kept)
        self.saved_threads = tr.get("torch_threads")
        adopt_saved_threads(self.saved_threads, self.cfg.train.threads)
        if self.lifetimes is not None and tr.get("slot_lifetimes") is not None:
            self.lifetimes.load_state_dict(tr["slot_lifetimes"])
        log = [tuple(x) for x in tr["reset_log"]]
        if rewind_eval:
            while log and log[-1][0] == EVAL:  # all of them in a run that never trained (the first reset re-seeds)
                log.pop()
            # buckets for the distances of the replayed episodes (env.kwargs.* may have shortened the schedule)
            trained = sum(phase == TRAIN for phase, _ in log)
            self.by_distance = AccuracyByKey(run_distance_buckets(self.venv, trained, self.cfg.train.eval_repeats))
        return log
