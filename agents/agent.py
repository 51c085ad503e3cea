"""An agent for your own loop, push style: `act` on what the env showed, `observe` what it paid.

    from agents.agent import Agent

    agent = Agent.from_config(["env=LongDependency-v0", "train.lanes=4"])  # a new MemNet, learning online
    env = agent.make_env()                                                 # the config's vector env: 4 lanes
    obs, info = env.reset(seed=0)
    while agent.episodes < 3:                                              # the env resets itself (autoreset)
        actions = agent.act(obs, info)                                     # (4,) int64
        obs, reward, terminated, truncated, info = env.step(actions)
        agent.observe(reward, terminated, truncated)
    print(agent.last_episode.accuracy)

It is the trainer's step acting (`train.acting=step`, agents/episodes.py), pushed a step at a time instead of pulled
by the trainer's loop, with the same code: at a step scored in some lane `act` runs the cached incremental forward
(no gradients, memory writes off) on the observations since its last call; unscored steps get action 0 without a
forward (memstream envs ignore those actions). Every `train.chunk` steps, and when an episode ends, `observe` runs
the chunk forward from the chunk's start state: it applies the chunk's memory writes (where `info["memory_writes"]`)
and, with `learn=True`, takes the trainer's optimiser step on its loss (`train.mode`). An Agent stepped through the
trainer's episodes therefore ends in the trainer's state: weights, recurrent state, store and cache
(tests/test_agent.py). Memory persists across episodes; `memory.reset=episode|task` clears it at an episode's first
step (task: when `info["task_id"]` differs from the last episode's).

The env: any with B = `train.lanes` lanes (with 1 lane a single env too: a scalar observation gets an int action)
whose observations are tokens below the config env's vocabulary, whose lanes start and end episodes together, and
whose `info` has `scored`, `memory_writes` and `target` (-1 where unscored) per lane, `task_id` optionally (memstream's
envs have them all). Bad input (an observation of another shape or out of the vocabulary, a missing info key, lanes
ending apart, `act` twice without `observe`) is one ValueError or RuntimeError line.

Episode ends. A Gymnasium 1.x vector env (memstream's included) resets itself at its next step (autoreset NEXT_STEP):
after the step that ended an episode it shows the terminal observation, and the next `step` takes no action, pays
nothing and shows the next episode's first observation. The Agent knows this by default (`autoreset=None`): for a
vector env (array observations) its `act` right after an episode's end reads nothing and answers zeros, and the
`observe` after it learns nothing. A single env (a scalar observation) is reset by hand: its next `act` is on the
new episode's first observation, as with a SAME_STEP autoreset env (`info["final_obs"]`: the step that ended an
episode shows the next one's first observation). A loop that resets its vector env by hand says `autoreset=False`.

Saving. `agent.save(folder)` writes a run folder (the trainer's checkpoint with the agent's own count, and
config.yaml) between episodes; `Agent.from_checkpoint(folder)` goes on from it exactly, `agents.evaluate` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agents.episodes import INFO_COLUMNS, EpisodeStats, make_vector_env

REQUIRED = ("scored", "memory_writes", "target")  # info keys the acting and learning read, per lane
OPTIONAL = {"task_id": 0, "distance": -1, "delay": -1}  # info keys an env may leave out, and what stands for them
FLAGS = ("scored", "memory_writes")  # info keys of bools (or 0/1 ints); the others are ints


class Agent:
    """A model of `agents.models` with its trainer's acting, learning and memory, for a loop that is not the trainer's.

    Made with `Agent.from_config(overrides)` (a new model) or `Agent.from_checkpoint(path)` (a run's weights, memory
    and optimiser). `learn=False` only acts and writes memory; `learn=True` also updates the weights.
    Attributes: `episodes` (episodes finished, counting on from a checkpoint's), `last_episode` (the `EpisodeStats` of
    the last finished one: accuracy, loss, steps, timings), `trainer` (the `agents.trainer.Trainer` it runs on:
    `agent.trainer.evaluate_all()` evaluates on the config's env), `model`."""

    def __init__(self, trainer, learn: bool = True, autoreset: bool | None = None):
        if autoreset not in (None, True, False):
            raise ValueError(f"Agent: autoreset={autoreset!r}; pass None (vector envs reset themselves, single envs "
                             "by hand), True or False")
        self.trainer, self.model, self.learn, self.autoreset = trainer, trainer.model, bool(learn), autoreset
        self.runner, self.cfg = trainer.runner, trainer.cfg
        self.lanes, self.vocab = int(trainer.cfg.train.lanes), int(trainer.venv.vocab_size)
        self.episodes = trainer.episode  # the episode number store entries record
        self.last_episode: EpisodeStats | None = None
        self._stats = EpisodeStats()  # the episode under way
        self._episode_start_pending = True  # the next act() is an episode's first step
        self._ended = False  # the last observe() ended an episode: the next act() may be on its terminal observation
        self._resetting = False  # the act/observe pair under way is the env's autoreset step (read nothing)
        self._acted = False  # act() was called and its observe() is due
        self._saved: set[Path] = set()  # the folders this agent saved to (it may write over its own checkpoint only)
        self._new_chunk()

    # ---------------------------------------------------------------- making one
    @classmethod
    def from_config(cls, overrides: Sequence[str] = (), learn: bool = True, autoreset: bool | None = None) -> Agent:
        """A new model from `python -m agents.run`'s overrides (`["env=NeedleRecall-v0", "agent=memnet", ...]`):
        the same config groups, keys and checks (an unknown key or a bad value is one ConfigError line), `config=`
        a saved config, env file options made absolute (the save is read from other folders)."""
        from agents.config import ConfigError
        from agents.run_config import config_for, path_arg
        from agents.trainer import Trainer

        if isinstance(overrides, str):
            raise TypeError(f"Agent.from_config: overrides={overrides!r}; pass a list of key=value strings")
        overrides = list(overrides)
        if path_arg(overrides, "resume") is not None:  # it made a fresh model, the run's weights unread
            raise ConfigError("Agent.from_config: resume= continues a run; load it with "
                              "Agent.from_checkpoint(<run folder>, learn=True)")
        cfg = config_for(overrides)[0]  # as agents.run reads it (config= was "unknown config key 'config'")
        return cls(Trainer(cfg, Path(cfg.run_dir or ".")), learn, autoreset)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, learn: bool = False, device: str | None = None,
                        autoreset: bool | None = None) -> Agent:
        """A saved run (its folder or a checkpoint file) as it was when saved: weights, optimiser, recurrent state
        and memory (store, cache, slots); its episodes count on from the run's. A missing, damaged or foreign file is
        one CheckpointError line, as for `agents.evaluate`. It starts at an episode's first observation: an env that
        still shows the terminal observation of the episode the save followed is stepped once first (README)."""
        from omegaconf import OmegaConf

        from agents.checkpoint import load_checkpoint, run_dir_of
        from agents.checkpoint_fields import agent_entry
        from agents.checkpoint_paths import as_given
        from agents.evaluate import evaluation_config
        from agents.trainer import Trainer

        given = as_given(checkpoint)  # its checkpoints/ may link to another disk
        path = given.resolve()
        body = load_checkpoint(path, purpose="evaluate")
        cfg = evaluation_config(body, given, device, None, None, None)
        trainer = Trainer(cfg, run_dir_of(given))
        trainer.restore(path, OmegaConf.to_container(cfg, resolve=True))
        agent = cls(trainer, learn, autoreset)
        own = agent_entry(body, path)  # an Agent's save: its own episode count and last task; a run's has none
        if own is not None:
            agent.episodes = own["episodes"]
            trainer.loop_task = own["last_task"] if own["last_task"] >= 0 else None  # memory.reset=task's reference
            agent._saved.add(run_dir_of(given))  # an Agent's folder: saving back there goes on with it (a run's stays)
        return agent

    def save(self, folder: str | Path) -> Path:
        """The agent as a run folder: `<folder>/checkpoints/last.pt` (the trainer's checkpoint, written atomically:
        weights, optimiser, recurrent state, memory, RNG, and the agent's episode count) and `<folder>/config.yaml`.
        `Agent.from_checkpoint(folder)` takes it back, `python -m agents.evaluate checkpoint=<folder>` evaluates it.
        Between episodes only (a chunk's steps learn and write at its end: a save inside an episode would lose them
        or start the next agent mid-episode); a folder holding a checkpoint this agent did not write is refused.
        Returns the checkpoint's path."""
        from omegaconf import OmegaConf

        from agents.config import to_yaml
        from agents.report import write_text_atomic

        if not self._episode_start_pending or self._acted:
            raise RuntimeError("Agent.save: an episode is under way; save after the observe() that ends it")
        folder = Path(folder).expanduser().resolve()
        # a run's config.yaml or metrics.json too: a finished run whose checkpoints were deleted lost its config, and
        # `resume=` then trained this agent in its folder, over its metrics and plots
        found = [name for name in ("checkpoints/last.pt", "config.yaml", "metrics.json") if (folder / name).exists()]
        ran = "metrics.json" in found or any(folder.glob("events.out.tfevents*"))  # a run's: resume= of a save went
        if found and (folder not in self._saved or ran):  # on there, and this agent's next save replaced its checkpoint
            raise FileExistsError(f"Agent.save: {str(folder)!r} holds {', '.join(found)} this agent did not write (a "
                                  "run's or another agent's); save to a new folder")
        cfg = self.cfg.copy()
        cfg.run_dir = str(folder)
        t, own = self.trainer, self.trainer.run_dir
        t.run_dir = folder
        try:
            path = t.save(OmegaConf.to_container(cfg, resolve=True),
                          agent={"episodes": self.episodes, "last_task": -1 if self.trainer.loop_task is None else
                                 self.trainer.loop_task})
        finally:
            t.run_dir = own
        write_text_atomic(folder / "config.yaml", to_yaml(cfg))
        self._saved.add(folder)
        return path

    def make_env(self):
        """A fresh native vector env of the config: its env id and options, `train.lanes` lanes."""
        return make_vector_env(self.cfg.env.id, self.lanes, dict(self.cfg.env.kwargs))

    # ---------------------------------------------------------------- the loop
    def act(self, obs, info: dict):
        """The actions (B,) int64 for the observations `obs` (B,) that `info` describes (an int for a single env).
        On an autoreset env's terminal observation it returns zeros (the env resets on them), not reading `info`."""
        if self._acted:
            raise RuntimeError("Agent.act: called twice without observe(); pass each step's reward to observe() "
                               "before acting on the next observation")
        single = self.lanes == 1 and np.ndim(obs) == 0
        tokens = np.asarray([obs] if single else obs)
        if tokens.shape != (self.lanes,) or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"Agent.act: obs has shape {tokens.shape} and dtype {tokens.dtype}; this agent acts for "
                             f"{self.lanes} lane(s) (train.lanes): pass integer tokens of shape ({self.lanes},)")
        outside = tokens[(tokens < 0) | (tokens >= self.vocab)]
        if outside.size:
            raise ValueError(f"Agent.act: obs holds token {int(outside[0])}, outside this model's vocabulary "
                             f"[0, {self.vocab}) (the config env's)")
        # a SAME_STEP autoreset env (gymnasium marks it with final_obs) shows the next episode's first observation
        same_step = isinstance(info, dict) and "final_obs" in info  # at once: skipping it lost that step each time
        if self._ended and self.autoreset and same_step:
            raise ValueError("Agent.act: info holds 'final_obs': this env resets a lane at the step that ends it "
                             "(autoreset SAME_STEP), so this is the next episode's first observation; pass "
                             "autoreset=None or False")
        if self._ended and (self.autoreset if self.autoreset is not None else not (single or same_step)):
            self._ended, self._acted, self._resetting = False, True, True  # the terminal observation: the env's
            return 0 if single else np.zeros(self.lanes, dtype=np.int64)  # next step starts the next episode
        step = {"tokens": tokens} | {k: self._info(info, key, single) for k, key in INFO_COLUMNS.items()}
        self._check_targets(step["targets"], step["scored"])
        self._ended = False
        if not self._cols["tokens"]:  # the chunk's first step: a new episode may clear the memory first
            self._episode_start(int(step["task"][0]))
        cols = self._cols
        for k, value in step.items():
            cols[k].append(value)
        action = self._act(len(cols["tokens"]) - 1, cols)  # (B,) int64
        cols["actions"].append(action)
        self._acted = True
        return int(action[0]) if single else action.copy()

    def observe(self, reward, terminated, truncated=False) -> None:
        """What the env paid for the last actions and whether the episode ended; learns at a chunk's or an episode's
        end."""
        if not self._acted:
            raise RuntimeError("Agent.observe: no act() before it; call act(obs, info) on each observation first")
        reward, terminated, truncated = (self._lane_values(name, value, kind) for name, value, kind in
                                         (("reward", reward, "iuf"), ("terminated", terminated, "b"),
                                          ("truncated", truncated, "b")))
        ended = terminated | truncated
        done = bool(ended.all())
        if ended.any() and not done:
            raise ValueError(f"Agent.observe: lanes {np.flatnonzero(ended).tolist()} ended and the others did not; an "
                             "Agent steps lanes that start and end their episodes together (memstream's vector envs)")
        self._acted = False
        if self._resetting:  # the env's autoreset step: it took no action and paid nothing
            self._resetting = False
            return
        self._cols["rewards"].append(reward.copy())
        if not done and len(self._cols["tokens"]) < self.runner.chunk:
            return
        self._learn_chunk()
        if done:
            self.last_episode, self._stats = self._stats, EpisodeStats()
            self.episodes += 1
            self._episode_start_pending = self._ended = True
        self._new_chunk()  # acting goes on from the state after the chunk

    def close(self) -> None:
        """Drop the model's store and cache (the cache's cold-tier file is deleted)."""
        if hasattr(self.model, "close"):
            self.model.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- inside
    def _info(self, info: dict, key: str, single: bool) -> np.ndarray:
        if not isinstance(info, dict):
            raise ValueError(f"Agent.act: info is a {type(info).__name__}; pass the dict the env returned with obs")
        if key not in info:
            if key in OPTIONAL:
                return np.full(self.lanes, OPTIONAL[key], dtype=np.int64)
            raise ValueError(f"Agent.act: info has no {key!r}; the env must give {', '.join(map(repr, REQUIRED))} "
                             "per lane (memstream's envs do)")
        value = np.asarray([info[key]] if single else info[key])
        if value.shape != (self.lanes,) or value.dtype.kind not in ("biu" if key in FLAGS else "iu"):
            raise ValueError(f"Agent.act: info[{key!r}] is {value.dtype} of shape {value.shape}; pass one "
                             f"{'bool' if key in FLAGS else 'int'} per lane ({self.lanes},)")
        if key in FLAGS:
            return value.astype(bool)
        value = value.astype(np.int64)  # (a uint64 past 2^63 wraps negative: refused below too)
        if key == "task_id" and (value < 0).any():  # the store refused it at every later observe()
            lane = int(np.flatnonzero(value < 0)[0])
            raise ValueError(f"Agent.act: info['task_id'] is {int(value[lane])} on lane {lane}; pass task ids >= 0 (an "
                             "env without tasks leaves the key out: task 0)")
        return value

    def _check_targets(self, targets: np.ndarray, scored: np.ndarray) -> None:
        """info["target"] (B,): a token of the vocabulary where the step is scored (the loss and the accuracy read
        it), -1 or such a token where not; else one ValueError line here, before the step joins the chunk (a target
        out of range failed in the chunk's cross-entropy, and every later observe() failed again on the same chunk)."""
        bad = np.flatnonzero((targets >= self.vocab) | (targets < np.where(scored, 0, -1)))
        if bad.size:
            lane = int(bad[0])
            raise ValueError(f"Agent.act: info['target'] is {int(targets[lane])} on lane {lane}, which is "
                             f"{'scored' if scored[lane] else 'not scored'}; pass a token in [0, {self.vocab}) where "
                             "scored, -1 where not")

    def _lane_values(self, name: str, value, kinds: str) -> np.ndarray:
        """observe()'s `value`, one per lane (B,) (a scalar stands for every lane) of a numpy kind in `kinds` (i/u int,
        f float, b bool), or one ValueError line (a (3,) reward for 2 lanes failed inside numpy's broadcasting)."""
        array = np.asarray(value)
        if array.dtype.kind not in kinds or array.shape not in ((), (self.lanes,)):
            what = "numbers" if "f" in kinds else "bools"
            raise ValueError(f"Agent.observe: {name} is {array.dtype} of shape {array.shape}; pass {what}, one per "
                             f"lane ({self.lanes},), as the env's step() returns them")
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused just below
            out = np.broadcast_to(array.astype(np.float32 if "f" in kinds else bool), (self.lanes,))
        if "f" in kinds and not np.isfinite(out).all():  # a NaN/inf reward made REINFORCE's loss and baseline
            lane = int(np.flatnonzero(~np.isfinite(out))[0])  # non-finite: "training diverged ... lower train.lr"
            raise ValueError(f"Agent.observe: {name} is {array.flat[lane if array.ndim else 0]} on lane {lane} (as "
                             "float32); pass finite numbers")
        return out

    def _new_chunk(self) -> None:
        self._cols: dict[str, list] = {k: [] for k in ("tokens", *INFO_COLUMNS, "actions", "rewards")}  # as _play's
        sample = self.learn and self.cfg.train.mode == "reinforce"
        self._act = self.runner.policy(self.trainer.state, sample, self._stats)  # acting state: the chunk's start

    def _episode_start(self, task: int) -> None:
        """memory.reset at an episode's first step, as the trainer's `train_episode` does."""
        if not self._episode_start_pending:
            return
        reset = self.cfg.memory.reset
        # the trainer's rule, on the tasks this loop met (its evaluate_all() then starts another task cleared too)
        if reset == "episode" or (reset == "task" and self.trainer._task_switch(task)):
            self.trainer.state = self.trainer._cleared(self.trainer.state)
            if self.trainer.lifetimes is not None:
                self.trainer.lifetimes.reset()
            self._new_chunk()  # act from the cleared state
        self.trainer.loop_task, self._episode_start_pending = task, False

    def _learn_chunk(self) -> None:
        """The chunk forward on what the env showed: memory writes, and the optimiser step when learning."""
        arr = {k: np.stack(v, axis=1) for k, v in self._cols.items()}  # (B, C) each
        t = self.trainer
        sample = self.learn and self.cfg.train.mode == "reinforce"
        # the trainer's own count stays its (its checkpoint's reset log holds its episodes, not the loop's); while
        # learning it is the agent's, which the trainer's line for a diverged loss names
        own, t.episode = t.episode, self.episodes
        try:
            t.state = self.runner.learn_played(t.state, arr, self.episodes, self._stats,
                                               learner=t._learn if self.learn else None, sample=sample,
                                               on_aux=t._observe_writes)
        finally:
            t.episode = own
