"""The two Gymnasium faces of a source: a scalar `gymnasium.Env` and a native `gymnasium.vector.VectorEnv`.

Both generate a whole episode at `reset` (see `envs.stream`) and then step by indexing precomputed arrays: the
scalar env keeps Python lists (cheapest per step through `gymnasium.make`), the vector env lane-major arrays
of shape (B, L + 1) whose columns are copied into fresh `info` arrays each step.

The stream is open loop: observations never depend on the actions; actions only earn rewards.
"""

from __future__ import annotations

import inspect
import numbers
import operator

import numpy as np
from gymnasium import Env, spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.options import SEED_LIMIT, check_int, check_seed, parse_reset_options
from envs.stream import Episodes, StreamSource, eval_stream

RENDER_TOKENS = 32  # how many recent observations `render` names
MAX_LANES = 65_536  # num_envs bound, like every other size option's (10^12 lanes failed deep in numpy)
MAX_STEPS = 2**31 - 1  # upcoming(steps) bound: more than any episode holds


def option_names(source_cls: type[StreamSource]) -> list[str]:
    """The options (constructor keywords) of an env's stream source, in their order."""
    return [p for p in inspect.signature(source_cls.__init__).parameters if p != "self"]


def build_source(source_cls: type[StreamSource], options: dict) -> StreamSource:
    """Construct a source; an option it does not know becomes a ValueError naming it and the allowed ones."""
    allowed = option_names(source_cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {source_cls.env_id}; allowed: {', '.join(allowed)}")
    return source_cls(**options)


def check_render_mode(render_mode) -> None:
    if render_mode not in (None, "ansi"):
        raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")


def render_stream(source: StreamSource, tokens, t: int, phase: str, env_id: str) -> str:
    """The last RENDER_TOKENS observations up to step t, structure tokens named."""
    start = max(0, t + 1 - RENDER_TOKENS)
    names = " ".join(source.token_name(int(tok)) for tok in tokens[start:t + 1])
    return f"[{env_id} {phase} step {t}/{source.episode_length}] {names}"


class SourceAttributes:
    """The contract attributes, read from the source (same names on the scalar env and the vector env)."""

    _source: StreamSource

    @property
    def vocab_size(self) -> int:
        return self._source.vocab_size

    @property
    def num_tasks(self) -> int:
        return self._source.num_tasks

    def inert_options(self) -> dict[str, str]:
        """Options that change nothing under the others, each with why (StreamSource.inert_options)."""
        return self._source.inert_options()

    def start_evaluation(self) -> None:
        """The next eval reset begins a complete evaluation (StreamSource.start_evaluation)."""
        self._source.start_evaluation()

    @property
    def episode_length(self) -> int:
        """Steps per episode: the number of `step` calls from `reset` until `terminated`."""
        return self._source.episode_length

    @property
    def eval_episodes(self) -> int:
        """Consecutive eval resets that make one complete evaluation of a task."""
        return self._source.eval_episodes

    @property
    def max_distance(self) -> int:
        """A bound on `info['distance']` (for accuracy-vs-distance buckets): no reported distance exceeds it;
        ContinualShift's within its schedule and an evaluation after it (training past the schedule reaches further:
        `distance_bound`). Reached only by LongDependency without cross-episode queries (its largest `distances`);
        across episodes the largest reported is below it (README "What every env has in common")."""
        return self._source.max_distance

    def distance_bound(self, train_episodes: int, eval_in_a_row: int = 1) -> int:
        """A bound on `info['distance']` within a lane's first `train_episodes` training episodes and
        `eval_in_a_row` consecutive eval episodes after them (the buckets of a run of that length): `max_distance`
        for envs whose distances stay inside a bounded span; ContinualShift's grow with the stream."""
        return self._source.distance_bound(check_int("train_episodes", train_episodes, 0),
                                           check_int("eval_in_a_row", eval_in_a_row, 0))

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._source.special_tokens)

    def _made_as(self) -> str:
        """The id the env was made under (a preset's, through gym.make), else its class's."""
        spec = getattr(self, "spec", None)
        return spec.id if spec is not None else self._source.env_id


class TokenStreamEnv(SourceAttributes, Env):
    """Scalar env over a source with one lane; subclasses set `source_cls` and the docstring."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    source_cls: type[StreamSource]

    def __init__(self, render_mode: str | None = None, **options):
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self._source = build_source(self.source_cls, options)
        self._vocab = self._source.vocab_size
        self._length = self._source.episode_length
        self.observation_space = spaces.Discrete(self._vocab)
        self.action_space = spaces.Discrete(self._vocab)
        self._started = False  # the stream restarts on the first reset and on every seeded reset
        self._t = -1  # step within the episode; -1 before the first reset

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        phase, task_id = parse_reset_options(options, self._source.num_tasks)
        super().reset(seed=None if seed is None else check_seed(seed))
        if seed is not None or not self._started:
            self._source.restart()
            self._eval_rng = eval_stream(self.np_random)
            self._started = True
        self._load(self._source.generate([self.np_random if phase == "train" else self._eval_rng], phase, task_id))
        return self._obs[0], self._info(0)

    def _load(self, ep: Episodes) -> None:
        self._obs = ep.obs[0].tolist()
        self._target = ep.target[0].tolist()
        self._scored = (ep.target[0] >= 0).tolist()
        self._task = ep.task_id[0].tolist()
        self._distance = ep.distance[0].tolist()
        self._phase, self._writes, self._delay = ep.phase, ep.memory_writes, ep.delay
        self._t = 0

    def _info(self, t: int) -> dict:
        return {"target": self._target[t], "scored": self._scored[t], "task_id": self._task[t],
                "distance": self._distance[t], "phase": self._phase, "memory_writes": self._writes,
                "delay": self._delay}

    def step(self, action):
        t = self._t
        if not 0 <= t < self._length:
            raise RuntimeError("step() needs a running episode: call reset() first (also after terminated=True)")
        if isinstance(action, (bool, np.bool_)):  # operator.index(True) is 1; the vector env refuses bools too
            raise ValueError(f"action must be an integer in [0, {self._vocab - 1}] (Discrete({self._vocab})), "
                             f"not a bool, got {action!r}")
        try:
            a = operator.index(action)
        except TypeError:  # ValueError, as the vector env and every other refused action: one exception to catch
            raise ValueError(f"action must be an integer in [0, {self._vocab - 1}] (Discrete({self._vocab})), "
                             f"got {action!r}") from None
        if not 0 <= a < self._vocab:
            raise ValueError(f"action must be in [0, {self._vocab - 1}] (Discrete({self._vocab})), got {a}")
        reward = 1.0 if a == self._target[t] else 0.0  # unscored steps have target -1: never rewarded
        t += 1
        self._t = t
        return self._obs[t], reward, t == self._length, False, {
            "target": self._target[t], "scored": self._scored[t], "task_id": self._task[t],
            "distance": self._distance[t], "phase": self._phase, "memory_writes": self._writes,
            "delay": self._delay}

    def render(self):
        if self.render_mode != "ansi" or self._t < 0:
            return None
        return render_stream(self._source, self._obs, self._t, self._phase, self._made_as())


class TokenStreamVectorEnv(SourceAttributes, VectorEnv):
    """Native vector env: B lanes of one source, all lanes with the same episode length.

    Lane i seeded s equals the scalar env seeded s + i. `reset(seed=[s_0, ..., s_{B-1}])` seeds lanes one by one.
    A seeded reset also seeds `np_random` with s (s_0), as Gymnasium's VectorEnv does; episodes never use it.
    Autoreset (NEXT_STEP): the `step` after the one that terminated resets every lane to its next training
    episode and ignores its actions (reward 0). Callers that reset themselves never see it.
    `upcoming(n)` shows the observations and infos (without `target`) of the next n steps: the stream is open loop.
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}
    source_cls: type[StreamSource]

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **options):
        self.num_envs = check_int("num_envs", num_envs, 1, MAX_LANES)
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self._source = build_source(self.source_cls, options)
        self._vocab = self._source.vocab_size
        self._length = self._source.episode_length
        self.single_observation_space = spaces.Discrete(self._vocab)
        self.single_action_space = spaces.Discrete(self._vocab)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator] | None = None  # per lane: training episodes
        self._eval_rngs: list[np.random.Generator] | None = None  # per lane: eval episodes (`eval_stream`)
        self._t = -1
        self._autoreset = False

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        phase, task_id = parse_reset_options(options, self._source.num_tasks)
        if seed is not None:
            seeds = self._lane_seeds(seed)
            rngs = [seeding.np_random(s)[0] for s in seeds]  # may refuse a seed: before any state changes
            # np_random / np_random_seed as Gymnasium's VectorEnv sets them for an int seed; a list seeds them
            # with lane 0's seed, so reset(seed=s) and reset(seed=[s, s + 1, ...]) agree. Episodes come from
            # the lanes' own generators, never from np_random.
            super().reset(seed=seeds[0])
            self._rngs = rngs
            self._source.restart()
        elif self._rngs is None:
            self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
            self._source.restart()
        if seed is not None or self._eval_rngs is None:
            self._eval_rngs = [eval_stream(rng) for rng in self._rngs]
        self._load(self._source.generate(self._rngs if phase == "train" else self._eval_rngs, phase, task_id))
        return self._obs[:, 0].copy(), self._info(0)

    def _lane_seeds(self, seed) -> list[int]:
        """One int seed per lane: s, s + 1, ... for an int s; a list is taken as is (bools and floats refused).
        Each below SEED_LIMIT, as a scalar env's: lane i is the scalar env seeded s + i."""
        usage = f"seed must be an int in [0, 2^32) or a list of {self.num_envs} such ints"
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            seed = check_seed(seed)  # a Python int: numpy's np.uint32 wrapped around in the sum below
            if seed + self.num_envs > SEED_LIMIT:
                last = seed + self.num_envs - 1
                raise ValueError(f"seed {seed} seeds the {self.num_envs} lanes with {seed} .. {last}, past 2^32 - 1; "
                                 f"use a seed <= {SEED_LIMIT - self.num_envs}")
            return [seed + i for i in range(self.num_envs)]
        if not isinstance(seed, (list, tuple, np.ndarray)) or np.ndim(seed) != 1:
            raise ValueError(f"{usage}, got {seed!r}")
        if len(seed) != self.num_envs:
            raise ValueError(f"{usage}, got {len(seed)} seeds")
        for i, s in enumerate(seed):  # int(1.9) would silently seed lane i with 1
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or not 0 <= s < SEED_LIMIT:
                raise ValueError(f"{usage}, got seed[{i}]={s!r}")
        return [int(s) for s in seed]

    def _load(self, ep: Episodes) -> None:
        # lane-major (B, L+1) arrays are indexed by column: as fast as time-major rows and needs no transpose
        B = self.num_envs
        self._obs, self._target, self._task, self._distance = ep.obs, ep.target, ep.task_id, ep.distance
        self._scored = ep.target >= 0  # (B, L+1)
        self._phase = ep.phase
        self._phase_row = np.full(B, ep.phase)  # (B,) str
        self._writes_row = np.full(B, ep.memory_writes)  # (B,) bool
        self._delay_row = np.full(B, ep.delay, dtype=np.int64)  # (B,)
        self._done_rows = (np.zeros(B, dtype=bool), np.ones(B, dtype=bool))  # terminated False / True
        self._t = 0
        self._autoreset = False

    def _info(self, t: int) -> dict:
        return {"target": self._target[:, t].copy(), "scored": self._scored[:, t].copy(),
                "task_id": self._task[:, t].copy(), "distance": self._distance[:, t].copy(),
                "phase": self._phase_row.copy(), "memory_writes": self._writes_row.copy(),
                "delay": self._delay_row.copy()}

    def step(self, actions):
        B = self.num_envs
        if self._autoreset:
            self._load(self._source.generate(self._rngs, "train", -1))
            return (self._obs[:, 0].copy(), np.zeros(B), self._done_rows[0].copy(), self._done_rows[0].copy(),
                    self._info(0))
        if self._t < 0:
            raise RuntimeError("step() needs a running episode: call reset() first")
        a = np.asarray(actions)
        if a.shape != (B,) or a.dtype.kind not in "iu":
            raise ValueError(f"actions must be an integer array of shape ({B},), got shape {a.shape} "
                             f"dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if a.view(np.uint64).max() >= self._vocab:  # negatives read as huge unsigned: one check for both ends
            bad = np.asarray(actions)
            raise ValueError(f"actions must lie in [0, {self._vocab - 1}] (Discrete({self._vocab})), "
                             f"got min {bad.min()} max {bad.max()}")
        t = self._t
        reward = (a == self._target[:, t]).astype(np.float64)  # (B,); unscored target -1 never matches
        t += 1
        self._t = t
        done = t == self._length
        self._autoreset = done
        return (self._obs[:, t].copy(), reward, self._done_rows[done].copy(), self._done_rows[0].copy(),
                self._info(t))

    def upcoming(self, steps: int) -> tuple[np.ndarray, dict]:
        """What the next `steps` calls to `step` will return, whatever their actions (the stream is open loop):
        observations (B, n) and their `info` fields (B, n) without `target`, n = min(steps, steps left in the
        episode); the last of them is the terminal observation when n reaches the episode's end. Answers
        (`target`) and rewards are not shown. For agents that act on a block of observations with one forward
        (agents/episodes.py); `step` still takes every action and pays every reward."""
        steps = check_int("steps", steps, 1, MAX_STEPS)
        if self._t < 0 or self._autoreset:
            raise RuntimeError("upcoming() needs a running episode: call reset() first" if self._t < 0 else
                               "upcoming() needs a running episode: the last one ended; the next step() starts "
                               "the next (autoreset) and takes no action")
        cols = slice(self._t + 1, min(self._t + 1 + steps, self._length + 1))
        n = cols.stop - cols.start
        info = {"scored": self._scored[:, cols].copy(), "task_id": self._task[:, cols].copy(),
                "distance": self._distance[:, cols].copy(), "phase": np.repeat(self._phase_row[:, None], n, 1),
                "memory_writes": np.repeat(self._writes_row[:, None], n, 1),
                "delay": np.repeat(self._delay_row[:, None], n, 1)}
        return self._obs[:, cols].copy(), info

    def render(self):
        if self.render_mode != "ansi" or self._t < 0:
            return None
        return "\n".join(render_stream(self._source, self._obs[b], self._t, self._phase, self._made_as())
                         for b in range(min(self.num_envs, 4)))
